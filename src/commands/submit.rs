//! `pcsaga submit FILE|-`: one request or NDJSON of many.

use std::io::Read;

use pcsaga_purchase::{parse_request, PurchaseRequest, RequestError};
use serde_json::json;

use crate::cli::{Global, SubmitArgs};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};
use crate::output::{clip, print, print_json, Table};

/// Largest input read, in bytes.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

struct Line {
    number: usize,
    parsed: Result<PurchaseRequest, RequestError>,
}

/// Splits the input: a single JSON document, or NDJSON (every non-empty line a request).
fn split(text: &str) -> Vec<Line> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let ndjson = serde_json::from_str::<serde_json::Value>(first).is_ok()
        && text.lines().filter(|l| !l.trim().is_empty()).count() > 1;
    if !ndjson {
        return vec![Line {
            number: 1,
            parsed: parse_request(text),
        }];
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Line {
            number: i + 1,
            parsed: parse_request(l),
        })
        .collect()
}

fn read_input(file: &str) -> Result<String, Failed> {
    let mut text = String::new();
    let result = if file == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_string(&mut text))
    };
    result.map_err(|e| {
        Failed::new(
            Exit::InvalidInput,
            ConfigError(format!("cannot read {file}: {e}")),
        )
    })?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!(
                "{file} is larger than {MAX_INPUT_BYTES} bytes; split it"
            )),
        ));
    }
    if text.trim().is_empty() {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!("{file} is empty: nothing to submit")),
        ));
    }
    Ok(text)
}

pub async fn run(global: &Global, args: &SubmitArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let text = read_input(&args.file)?;
    let lines = split(&text);
    let valid = lines.iter().filter(|l| l.parsed.is_ok()).count();
    let mut results = Vec::new();
    let mut failure = None;
    if valid > 0 {
        // Open the database only when there is something to write.
        let (store, _) = crate::app::open_store(global.db.as_deref(), file).await?;
        let engine = crate::app::offline_engine(store);
        (results, failure) = write_all(&engine, &lines, valid).await;
    }
    let (results, conflicts) = split_conflicts(&lines, results);
    let rejected: Vec<&Line> = lines.iter().filter(|l| l.parsed.is_err()).collect();
    if args.json {
        let mut out = Vec::new();
        for (number, s) in &results {
            out.push(json!({"line": number, "id": s.saga.id, "idempotencyKey": s.saga.idempotency_key, "result": if s.created { "created" } else { "existing" }, "status": s.saga.status, "state": s.saga.state}));
        }
        for line in &rejected {
            if let Err(e) = &line.parsed {
                out.push(json!({"line": line.number, "result": "rejected", "field": e.field, "error": e.problem}));
            }
        }
        for c in &conflicts {
            out.push(json!({"line": c.line, "result": "conflict", "id": c.saga.id, "idempotencyKey": c.saga.idempotency_key, "fields": c.fields, "error": c.message()}));
        }
        out.sort_by_key(|v| v["line"].as_u64().unwrap_or(0));
        if lines.len() == 1 && out.len() == 1 {
            print_json(&out[0]);
        } else {
            print_json(&serde_json::Value::Array(out));
        }
    } else {
        let mut table = Table::new(&["LINE", "RESULT", "ID", "IDEMPOTENCY KEY", "DETAIL"]);
        for (number, s) in &results {
            let detail = if s.created {
                "queued".to_owned()
            } else {
                format!("already submitted: {} in {}", s.saga.status, s.saga.state)
            };
            table.row(vec![
                number.to_string(),
                if s.created {
                    "created".into()
                } else {
                    "existing".into()
                },
                s.saga.id.clone(),
                s.saga.idempotency_key.clone(),
                detail,
            ]);
        }
        for line in &rejected {
            if let Err(e) = &line.parsed {
                table.row(vec![
                    line.number.to_string(),
                    "rejected".into(),
                    "-".into(),
                    "-".into(),
                    clip(&e.to_string(), 160),
                ]);
            }
        }
        for c in &conflicts {
            table.row(vec![
                c.line.to_string(),
                "conflict".into(),
                c.saga.id.clone(),
                c.saga.idempotency_key.clone(),
                clip(&format!("differs in {}", c.fields.join(", ")), 160),
            ]);
        }
        print(&table.render());
    }
    for c in &conflicts {
        say!(
            "line {}: conflict, nothing written for it: {}",
            c.line,
            c.message()
        );
    }
    for line in &rejected {
        if let Err(e) = &line.parsed {
            say!(
                "line {}: rejected, nothing written for it: {e}",
                line.number
            );
        }
    }
    if let Some(error) = failure {
        let written = results.len();
        // The engine error stays the cause, so the exit code is the database's.
        return Err(Failed::from(anyhow::Error::new(error).context(format!(
            "submit stopped after writing {written} of {valid} valid requests (listed above; the \
             others were not written). Once the cause is fixed, submit the same input again: \
             requests already written come back as `existing`, never twice. The cause"
        ))));
    }
    Ok(
        match (
            results.is_empty(),
            rejected.is_empty(),
            conflicts.is_empty(),
        ) {
            (_, true, true) => Exit::Ok,
            (false, _, _) => Exit::Partial,
            (true, false, _) => Exit::InvalidInput,
            (true, true, false) => Exit::Conflict,
        },
    )
}

/// A request whose `idempotencyKey` already names a different request.
struct Conflict {
    line: usize,
    /// The purchase the key names; it stands unchanged.
    saga: pcsaga_engine::SagaRecord,
    fields: Vec<String>,
}

impl Conflict {
    fn message(&self) -> String {
        format!(
            "idempotencyKey {:?} already names purchase {} ({} in {}), submitted with another request: it differs in {}. A request cannot be changed: if the purchase should not go ahead, `pcsaga cancel {} --reason \"…\"`, then submit the corrected request with a new idempotencyKey",
            self.saga.idempotency_key,
            self.saga.id,
            self.saga.status,
            self.saga.state,
            self.fields.join(", "),
            self.saga.id
        )
    }
}

/// Separates the lines answered with an existing purchase whose stored request differs from
/// theirs: resubmitting the same request is safe and returns the first purchase; a changed
/// request under the same key is refused, never silently taken for the first.
fn split_conflicts(
    lines: &[Line],
    results: Vec<(usize, pcsaga_engine::Submitted)>,
) -> (Vec<(usize, pcsaga_engine::Submitted)>, Vec<Conflict>) {
    let by_number: std::collections::HashMap<usize, &PurchaseRequest> = lines
        .iter()
        .filter_map(|l| l.parsed.as_ref().ok().map(|r| (l.number, r)))
        .collect();
    let mut kept = Vec::with_capacity(results.len());
    let mut conflicts = Vec::new();
    for (number, submitted) in results {
        let fields = match (submitted.created, by_number.get(&number)) {
            (false, Some(request)) => {
                match serde_json::from_str::<PurchaseRequest>(&submitted.saga.input) {
                    Ok(stored) => pcsaga_purchase::differing_fields(&stored, request),
                    Err(_) => vec!["$ (the stored request cannot be read)".to_owned()],
                }
            }
            _ => Vec::new(),
        };
        if fields.is_empty() {
            kept.push((number, submitted));
        } else {
            conflicts.push(Conflict {
                line: number,
                saga: submitted.saga,
                fields,
            });
        }
    }
    (kept, conflicts)
}

/// Submissions in flight at once: they share the store's commits, so a batch of thousands
/// takes seconds instead of one fsync each.
const IN_FLIGHT: usize = 64;

/// Writes every valid line, [`IN_FLIGHT`] at a time, and reports them in line order. After the
/// first failure nothing new is started; submissions already under way finish and are reported,
/// so the list of what was written is exact.
async fn write_all<S: pcsaga_engine::Store>(
    engine: &pcsaga_engine::Engine<pcsaga_purchase::PurchaseWorkflow, S>,
    lines: &[Line],
    valid: usize,
) -> (
    Vec<(usize, pcsaga_engine::Submitted)>,
    Option<pcsaga_engine::Error>,
) {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    let failed = AtomicBool::new(false);
    let mut results = Vec::with_capacity(valid);
    let mut failure = None;
    // A key repeated in the input is written once, by its first line; the later lines are
    // answered like a resubmission. Concurrent writes would otherwise let either line win.
    let mut first_line = std::collections::HashMap::new();
    let mut repeats = Vec::new();
    let mut unique = Vec::with_capacity(valid);
    for line in lines {
        let Ok(request) = &line.parsed else { continue };
        match first_line.entry(request.idempotency_key.as_str()) {
            std::collections::hash_map::Entry::Occupied(first) => {
                repeats.push((line.number, *first.get()));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(line.number);
                unique.push((line.number, request));
            }
        }
    }
    let mut progress = Progress::new(unique.len());
    let mut written = futures_util::stream::iter(unique)
        .map(|(number, request)| {
            let failed = &failed;
            async move {
                if failed.load(Ordering::SeqCst) {
                    return (number, None);
                }
                let outcome = pcsaga_purchase::submit(engine, request).await;
                if outcome.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                (number, Some(outcome))
            }
        })
        .buffered(IN_FLIGHT);
    while let Some((number, outcome)) = written.next().await {
        match outcome {
            Some(Ok(submitted)) => {
                results.push((number, submitted));
                progress.tick(results.len());
            }
            Some(Err(error)) => {
                failure.get_or_insert(error);
            }
            None => {}
        }
    }
    let by_line: std::collections::HashMap<usize, usize> = results
        .iter()
        .enumerate()
        .map(|(index, (number, _))| (*number, index))
        .collect();
    for (number, first) in repeats {
        // A repeat of a line that was not written (the batch stopped first) is not reported.
        if let Some(&index) = by_line.get(&first) {
            let mut again = results[index].1.clone();
            again.created = false;
            results.push((number, again));
        }
    }
    results.sort_by_key(|(number, _)| *number);
    (results, failure)
}

/// A line on stderr now and then while a large batch is written.
struct Progress {
    total: usize,
    last: std::time::Instant,
}

impl Progress {
    /// Batches smaller than this finish too fast to need progress.
    const FROM: usize = 1_000;

    fn new(total: usize) -> Self {
        Self {
            total,
            last: std::time::Instant::now(),
        }
    }

    fn tick(&mut self, done: usize) {
        if self.total >= Self::FROM
            && (done == self.total || self.last.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.last = std::time::Instant::now();
            say!("submit: {done} of {} written", self.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_or_ndjson() {
        let pretty = "{\n  \"idempotencyKey\": \"a\"\n}\n";
        assert_eq!(split(pretty).len(), 1);
        let ndjson = "{\"idempotencyKey\":\"a\"}\n\n{\"idempotencyKey\":\"b\"}\nnot json\n";
        let lines = split(ndjson);
        assert_eq!(
            lines.iter().map(|l| l.number).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        assert_eq!(lines[2].parsed.as_ref().expect_err("bad line").field, "$");
    }
}
