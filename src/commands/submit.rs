//! `pcsaga submit FILE|-`: one request or NDJSON of many.
//!
//! NDJSON is streamed: lines are read, checked and written 64 at a time and reported in line
//! order as they finish, so memory does not grow with the batch (a million lines stay under
//! 150 MB). The report of a batch of more than [`TABLE_ROWS`] lines goes to a file, one JSON
//! object per line, and the terminal gets a summary; `--json` streams a JSON array to stdout.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use pcsaga_purchase::{check_for_partner, parse_request, PurchaseRequest, RequestError};
use serde_json::{json, Value};

use crate::cli::{Global, SubmitArgs};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};
use crate::output::{clip, print, Table};

/// Largest single JSON document read, in bytes.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest NDJSON line, in bytes (a request is far smaller).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Reports of at most this many lines are printed as a table; longer ones go to a file.
const TABLE_ROWS: usize = 1_000;
/// Submissions in flight at once: they share the store's commits, so a batch of thousands
/// takes seconds instead of one fsync each.
const IN_FLIGHT: usize = 64;

/// What happened to one line.
#[derive(Debug, Clone)]
enum Outcome {
    Written {
        id: String,
        key: String,
        created: bool,
        status: String,
        state: String,
    },
    Rejected(RequestError),
    /// The key names another request; the first stands.
    Conflict {
        id: String,
        key: String,
        fields: Vec<String>,
        message: String,
    },
    /// Not written: the batch stopped at a database error first.
    NotWritten,
}

impl Outcome {
    fn json(&self, line: usize) -> Value {
        match self {
            Self::Written {
                id,
                key,
                created,
                status,
                state,
            } => {
                json!({"line": line, "id": id, "idempotencyKey": key, "result": if *created { "created" } else { "existing" }, "status": status, "state": state})
            }
            Self::Rejected(e) => {
                json!({"line": line, "result": "rejected", "field": e.field, "error": e.problem})
            }
            Self::Conflict {
                id,
                key,
                fields,
                message,
            } => {
                json!({"line": line, "result": "conflict", "id": id, "idempotencyKey": key, "fields": fields, "error": message})
            }
            Self::NotWritten => json!({"line": line, "result": "not_written"}),
        }
    }

    fn row(&self, line: usize) -> Vec<String> {
        match self {
            Self::Written {
                id,
                key,
                created,
                status,
                state,
            } => vec![
                line.to_string(),
                if *created { "created" } else { "existing" }.into(),
                id.clone(),
                key.clone(),
                if *created {
                    "queued".to_owned()
                } else {
                    format!("already submitted: {status} in {state}")
                },
            ],
            Self::Rejected(e) => vec![
                line.to_string(),
                "rejected".into(),
                "-".into(),
                "-".into(),
                clip(&e.to_string(), 160),
            ],
            Self::Conflict {
                id, key, fields, ..
            } => vec![
                line.to_string(),
                "conflict".into(),
                id.clone(),
                key.clone(),
                clip(&format!("differs in {}", fields.join(", ")), 160),
            ],
            Self::NotWritten => vec![
                line.to_string(),
                "not written".into(),
                "-".into(),
                "-".into(),
                "the batch stopped before this line".into(),
            ],
        }
    }
}

/// The counts of a batch.
#[derive(Debug, Default)]
struct Counts {
    created: usize,
    existing: usize,
    rejected: usize,
    conflicts: usize,
    not_written: usize,
}

/// Where the report goes: a table (small batches), a file (large ones), or a JSON array on
/// stdout (`--json`), always in line order.
struct Report {
    json: bool,
    /// Rows held until the batch proves small (table) or large (file).
    held: Vec<(usize, Outcome)>,
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    /// Where a large report goes.
    path: PathBuf,
    /// `--json`: elements printed so far (the array is opened with the second).
    printed: usize,
    first: Option<Value>,
    counts: Counts,
    /// The command that submits the batch again with a new report file.
    again: String,
}

impl Report {
    fn new(json: bool, path: PathBuf, again: String) -> Self {
        Self {
            json,
            held: Vec::new(),
            file: None,
            path,
            printed: 0,
            first: None,
            counts: Counts::default(),
            again,
        }
    }

    fn add(&mut self, line: usize, outcome: Outcome) -> Result<(), Failed> {
        match &outcome {
            Outcome::Written { created: true, .. } => self.counts.created += 1,
            Outcome::Written { .. } => self.counts.existing += 1,
            Outcome::Rejected(e) => {
                self.counts.rejected += 1;
                say!("line {line}: rejected, nothing written for it: {e}");
            }
            Outcome::Conflict { message, .. } => {
                self.counts.conflicts += 1;
                say!("line {line}: conflict, nothing written for it: {message}");
            }
            Outcome::NotWritten => {
                // Reported by count only: the report lists exactly what was written.
                self.counts.not_written += 1;
                return Ok(());
            }
        }
        if self.json {
            let value = outcome.json(line);
            match (self.printed, self.first.take()) {
                (0, None) => self.first = Some(value),
                (0, Some(first)) => {
                    crate::output::print(&format!("[\n{first},\n{value}"));
                    self.printed = 2;
                }
                _ => {
                    crate::output::print(&format!(",\n{value}"));
                    self.printed += 1;
                }
            }
            return Ok(());
        }
        if let Some((path, file)) = &mut self.file {
            return write_line(path, file, &outcome.json(line), &self.again);
        }
        self.held.push((line, outcome));
        if self.held.len() > TABLE_ROWS {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
                .map_err(|e| report_error("create", &self.path, &e, &self.again))?;
            let mut file = std::io::BufWriter::new(file);
            for (line, outcome) in self.held.drain(..) {
                write_line(&self.path, &mut file, &outcome.json(line), &self.again)?;
            }
            self.file = Some((self.path.clone(), file));
        }
        Ok(())
    }

    /// Prints what is left: the table, the JSON array's end, or the summary and the file.
    fn finish(mut self) -> Result<Counts, Failed> {
        if self.json {
            match (self.printed, self.first.take()) {
                (0, Some(first)) => crate::output::print(&format!("{first}\n")),
                (0, None) => crate::output::print("[]\n"),
                _ => crate::output::print("\n]\n"),
            }
            return Ok(self.counts);
        }
        if let Some((path, mut file)) = self.file.take() {
            std::io::Write::flush(&mut file)
                .map_err(|e| report_error("write", &path, &e, &self.again))?;
            let c = &self.counts;
            print(&format!(
                "{} created, {} existing, {} rejected, {} conflicts{}; every line's result is in {}\n",
                c.created,
                c.existing,
                c.rejected,
                c.conflicts,
                if c.not_written > 0 {
                    format!(", {} not written", c.not_written)
                } else {
                    String::new()
                },
                path.display()
            ));
            return Ok(self.counts);
        }
        let mut table = Table::new(&["LINE", "RESULT", "ID", "IDEMPOTENCY KEY", "DETAIL"]);
        for (line, outcome) in &self.held {
            if !matches!(outcome, Outcome::NotWritten) {
                table.row(outcome.row(*line));
            }
        }
        print(&table.render());
        Ok(self.counts)
    }
}

fn report_error(verb: &str, path: &std::path::Path, e: &std::io::Error, again: &str) -> Failed {
    Failed::new(
        Exit::Failure,
        anyhow::anyhow!(
            "cannot {verb} the report file {} ({e}). Requests already written stay written and come back as `existing`: submit again with a report file that can be written, `{again}`",
            path.display()
        ),
    )
}

fn write_line(
    path: &std::path::Path,
    file: &mut std::io::BufWriter<std::fs::File>,
    value: &Value,
    again: &str,
) -> Result<(), Failed> {
    std::io::Write::write_all(file, format!("{value}\n").as_bytes())
        .map_err(|e| report_error("write", path, &e, again))
}

fn input_error(file: &str, problem: impl std::fmt::Display) -> Failed {
    Failed::new(
        Exit::InvalidInput,
        ConfigError(format!("cannot read {file}: {problem}")),
    )
}

fn open_input(file: &str) -> Result<Box<dyn BufRead + Send>, Failed> {
    if file == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let opened = std::fs::File::open(file).map_err(|e| input_error(file, e))?;
    Ok(Box::new(BufReader::new(opened)))
}

/// Reads one line (without its end), at most [`MAX_LINE_BYTES`]; `None` at the end.
fn read_line(input: &mut dyn BufRead, file: &str) -> Result<Option<String>, Failed> {
    let mut bytes = Vec::new();
    let read = input
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| input_error(file, e))?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.len() > MAX_LINE_BYTES && !bytes.ends_with(b"\n") {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!(
                "{file}: a line is longer than {MAX_LINE_BYTES} bytes; each NDJSON line is one request"
            )),
        ));
    }
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The input: one JSON document (possibly over many lines), or NDJSON (every non-empty line a
/// request), told apart by whether the first non-empty line is a JSON document by itself.
enum Input {
    Document(String),
    Lines {
        /// The first non-empty line and its number.
        first: (usize, String),
        rest: Box<dyn BufRead + Send>,
        /// Lines read so far.
        number: usize,
    },
}

fn classify(file: &str) -> Result<Input, Failed> {
    let mut input = open_input(file)?;
    let mut number = 0;
    let mut skipped = String::new();
    loop {
        let Some(line) = read_line(input.as_mut(), file)? else {
            return Err(Failed::new(
                Exit::InvalidInput,
                ConfigError(format!("{file} is empty: nothing to submit")),
            ));
        };
        number += 1;
        if line.trim().is_empty() {
            skipped.push_str(&line);
            skipped.push('\n');
            continue;
        }
        if serde_json::from_str::<Value>(&line).is_ok() {
            return Ok(Input::Lines {
                first: (number, line),
                rest: input,
                number,
            });
        }
        // One document over several lines: read it whole (bounded).
        let mut text = skipped;
        text.push_str(&line);
        text.push('\n');
        input
            .take(MAX_INPUT_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| input_error(file, e))?;
        if text.len() as u64 > MAX_INPUT_BYTES {
            return Err(Failed::new(
                Exit::InvalidInput,
                ConfigError(format!(
                    "{file} is larger than {MAX_INPUT_BYTES} bytes as one document; send NDJSON (one request per line) or split it"
                )),
            ));
        }
        return Ok(Input::Document(text));
    }
}

/// Reads the NDJSON lines on a thread of their own (file and stdin reads block) into a bounded
/// channel: memory holds what is in flight, not the batch.
fn line_reader(
    file: String,
    first: (usize, String),
    mut rest: Box<dyn BufRead + Send>,
    mut number: usize,
) -> tokio::sync::mpsc::Receiver<Result<(usize, String), Failed>> {
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT * 4);
    std::thread::spawn(move || {
        if tx.blocking_send(Ok(first)).is_err() {
            return;
        }
        loop {
            match read_line(rest.as_mut(), &file) {
                Ok(Some(line)) => {
                    number += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    if tx.blocking_send(Ok((number, line))).is_err() {
                        return; // the writer stopped
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Where the report of a large batch goes: `--report`, else beside the input (or in the
/// working directory for standard input), named by the time, never over an existing file.
fn report_path(args: &SubmitArgs) -> PathBuf {
    if let Some(path) = &args.report {
        return path.clone();
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    if args.file == "-" {
        PathBuf::from(format!("pcsaga-submit-{stamp}.report.ndjson"))
    } else {
        PathBuf::from(format!("{}.{stamp}.report.ndjson", args.file))
    }
}

pub async fn run(global: &Global, args: &SubmitArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let again = format!(
        "pcsaga{} submit {} --report {}",
        crate::output::db_flag(global),
        args.file,
        std::env::temp_dir()
            .join(format!(
                "pcsaga-submit-{}.report.ndjson",
                uuid::Uuid::new_v4().simple()
            ))
            .display()
    );
    let mut report = Report::new(args.json, report_path(args), again);
    let public =
        crate::config::public_cloud(file).map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    let own =
        crate::config::own_partner_id(file).map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    let checks = (public, own.as_deref());
    let failure = match classify(&args.file)? {
        Input::Document(text) => {
            let outcome = match parse_request(&text)
                .and_then(|r| check_for_partner(&r, checks.0, checks.1).map(|()| r))
            {
                Ok(request) => {
                    let (store, _) = crate::app::open_store(global.db.as_deref(), file).await?;
                    let engine = crate::app::offline_engine(store);
                    match write_one(&engine, &request, &Locks::default()).await {
                        Ok(outcome) => outcome,
                        Err(error) => return Err(stopped(error, 0)),
                    }
                }
                Err(e) => Outcome::Rejected(e),
            };
            report.add(1, outcome)?;
            None
        }
        Input::Lines {
            first,
            rest,
            number,
        } => {
            let lines = line_reader(args.file.clone(), first, rest, number);
            // The database is opened with the first valid line: a batch of bad lines only
            // touches nothing.
            let engine = tokio::sync::OnceCell::new();
            let open = || async {
                let (store, _) = crate::app::open_store(global.db.as_deref(), file).await?;
                Ok::<_, Failed>(crate::app::offline_engine(store))
            };
            write_lines(&engine, open, lines, (&mut report, checks)).await?
        }
    };
    let written = report.counts.created + report.counts.existing;
    let counts = report.finish()?;
    if let Some(error) = failure {
        return Err(stopped(error, written));
    }
    Ok(
        match (
            counts.created + counts.existing == 0,
            counts.rejected == 0,
            counts.conflicts == 0,
        ) {
            (_, true, true) => Exit::Ok,
            (false, _, _) => Exit::Partial,
            (true, false, _) => Exit::InvalidInput,
            (true, true, false) => Exit::Conflict,
        },
    )
}

/// The error of a batch that stopped: the engine error stays the cause, so the exit code is
/// the database's.
fn stopped(error: pcsaga_engine::Error, written: usize) -> Failed {
    Failed::from(anyhow::Error::new(error).context(format!(
        "submit stopped after writing {written} valid requests (listed; the lines after them \
         were not written). Once the cause is fixed, submit the same input again: requests \
         already written come back as `existing`, never twice. The cause"
    )))
}

/// The keys being written now: a key repeated in the input is written by its first line, and
/// a later line with it waits for that write, then is answered like a resubmission (or a
/// conflict). Only keys in flight are held, never the whole batch's.
#[derive(Default)]
struct Locks {
    in_flight:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Locks {
    fn of(&self, key: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key.to_owned()).or_default().clone()
    }

    fn release(&self, key: &str) {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the last holder removes it (the map's own reference is the other one).
        if map
            .get(key)
            .is_some_and(|lock| std::sync::Arc::strong_count(lock) <= 2)
        {
            map.remove(key);
        }
    }
}

/// Writes one request: created, existing (the same request again), or a conflict (the key
/// names another request, which stands unchanged).
async fn write_one<S: pcsaga_engine::Store>(
    engine: &pcsaga_engine::Engine<pcsaga_purchase::PurchaseWorkflow, S>,
    request: &PurchaseRequest,
    locks: &Locks,
) -> Result<Outcome, pcsaga_engine::Error> {
    let lock = locks.of(&request.idempotency_key);
    let submitted = {
        let _held = lock.lock().await;
        pcsaga_purchase::submit(engine, request).await
    };
    drop(lock);
    locks.release(&request.idempotency_key);
    let submitted = submitted?;
    let saga = submitted.saga;
    let fields = if submitted.created {
        Vec::new()
    } else {
        match serde_json::from_str::<PurchaseRequest>(&saga.input) {
            Ok(stored) => pcsaga_purchase::differing_fields(&stored, request),
            Err(_) => vec!["$ (the stored request cannot be read)".to_owned()],
        }
    };
    if fields.is_empty() {
        return Ok(Outcome::Written {
            id: saga.id,
            key: saga.idempotency_key,
            created: submitted.created,
            status: saga.status.to_string(),
            state: saga.state,
        });
    }
    let message = format!(
        "idempotencyKey {:?} already names purchase {} ({} in {}), submitted with another request: it differs in {}. A request cannot be changed: if the purchase should not go ahead, `pcsaga cancel {} --reason \"…\"`, then submit the corrected request with a new idempotencyKey",
        saga.idempotency_key,
        saga.id,
        saga.status,
        saga.state,
        fields.join(", "),
        saga.id
    );
    Ok(Outcome::Conflict {
        id: saga.id,
        key: saga.idempotency_key,
        fields,
        message,
    })
}

/// Checks and writes the lines as they come, [`IN_FLIGHT`] at a time, reporting each in line
/// order. After the first database error nothing new is started; writes under way finish and
/// are reported, so the report of what was written is exact. Returns that error.
async fn write_lines<S, O, F>(
    engine: &tokio::sync::OnceCell<pcsaga_engine::Engine<pcsaga_purchase::PurchaseWorkflow, S>>,
    open: O,
    lines: tokio::sync::mpsc::Receiver<Result<(usize, String), Failed>>,
    (report, checks): (&mut Report, (bool, Option<&str>)),
) -> Result<Option<pcsaga_engine::Error>, Failed>
where
    S: pcsaga_engine::Store,
    O: Fn() -> F,
    F: std::future::Future<
        Output = Result<pcsaga_engine::Engine<pcsaga_purchase::PurchaseWorkflow, S>, Failed>,
    >,
{
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    let failed = AtomicBool::new(false);
    let locks = Locks::default();
    let source = futures_util::stream::unfold(lines, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let outcomes = source
        .map(|item| {
            let (failed, locks, open) = (&failed, &locks, &open);
            async move {
                let (number, text) = item?;
                let request = match parse_request(&text)
                    .and_then(|r| check_for_partner(&r, checks.0, checks.1).map(|()| r))
                {
                    Ok(request) => request,
                    Err(e) => return Ok((number, Ok(Outcome::Rejected(e)))),
                };
                if failed.load(Ordering::SeqCst) {
                    return Ok((number, Ok(Outcome::NotWritten)));
                }
                let engine = engine.get_or_try_init(open).await?;
                let outcome = write_one(engine, &request, locks).await;
                if outcome.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                Ok::<_, Failed>((number, outcome))
            }
        })
        .buffered(IN_FLIGHT);
    let mut outcomes = std::pin::pin!(outcomes);
    let mut failure = None;
    let mut progress = Progress::default();
    while let Some(item) = outcomes.next().await {
        let (number, outcome) = item?;
        match outcome {
            Ok(outcome) => report.add(number, outcome)?,
            Err(error) => {
                report.add(number, Outcome::NotWritten)?;
                failure.get_or_insert(error);
            }
        }
        progress.tick(&report.counts, false);
        if failure.is_some() && report.counts.not_written >= IN_FLIGHT * 4 {
            // Stop reading: what follows would only be reported as not written.
            break;
        }
    }
    progress.tick(&report.counts, true);
    Ok(failure)
}

/// A line on stderr every second while a large batch is written, and one at the end of it.
struct Progress {
    last: std::time::Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            last: std::time::Instant::now(),
        }
    }
}

impl Progress {
    /// Batches smaller than this finish too fast to need progress.
    const FROM: usize = 1_000;

    fn tick(&mut self, counts: &Counts, end: bool) {
        let written = counts.created + counts.existing;
        let valid = written + counts.conflicts + counts.not_written;
        if end {
            if valid + counts.rejected >= Self::FROM {
                say!("submit: {written} of {valid} written");
            }
        } else if self.last.elapsed() >= std::time::Duration::from_secs(1) {
            self.last = std::time::Instant::now();
            say!(
                "submit: {written} written, {} rejected so far",
                counts.rejected
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(text: &str) -> Input {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("in.json");
        std::fs::write(&path, text).expect("write");
        match classify(path.to_str().expect("utf-8")) {
            Ok(input) => input,
            Err(_) => panic!("classified"),
        }
    }

    #[test]
    fn one_document_or_ndjson() {
        let pretty = "\n{\n  \"idempotencyKey\": \"a\"\n}\n";
        assert!(matches!(classified(pretty), Input::Document(t) if t.contains("\"a\"")));
        let ndjson = "\n{\"idempotencyKey\":\"a\"}\n\n{\"idempotencyKey\":\"b\"}\nnot json\n";
        let Input::Lines {
            first,
            mut rest,
            number,
        } = classified(ndjson)
        else {
            panic!("NDJSON")
        };
        assert_eq!((first.0, number), (2, 2), "line numbers count blank lines");
        let mut lines = Vec::new();
        while let Ok(Some(line)) = read_line(rest.as_mut(), "in") {
            lines.push(line);
        }
        assert_eq!(lines, vec!["", "{\"idempotencyKey\":\"b\"}", "not json"]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused() {
        let long = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let mut input = std::io::Cursor::new(long.into_bytes());
        assert!(read_line(&mut input, "in").is_err());
        let mut ok = std::io::Cursor::new(b"abc\r\ndef".to_vec());
        assert_eq!(
            read_line(&mut ok, "in").ok().flatten().as_deref(),
            Some("abc")
        );
        assert_eq!(
            read_line(&mut ok, "in").ok().flatten().as_deref(),
            Some("def")
        );
        assert!(matches!(read_line(&mut ok, "in"), Ok(None)));
    }
}
