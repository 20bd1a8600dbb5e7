//! The console's pages: the purchase list (the filters of `pcsaga list`, counts by status, the
//! stuck view, the throttling state) and a purchase's page (its timeline, its history, its
//! billing status and the CLI commands that act on it). Rendered on the server from the same
//! store calls as the CLI; nothing here writes.

use std::fmt::Write as _;

use chrono::Utc;
use hyper::StatusCode;
use pcsaga_engine::{SagaStatus, Store};

use super::html::{attr, encode, escape, page, time};
use super::{reply, Reply, Site};

/// Rows of a list page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// History rows shown on a purchase page (the CLI's `show --json` has them all).
const MAX_HISTORY_ROWS: usize = 1000;

const HTML: &str = "text/html; charset=utf-8";

fn html_page(status: StatusCode, title: &str, body: &str) -> Reply {
    reply(status, HTML, page(title, body))
}

pub fn not_found(path: &str) -> Reply {
    html_page(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!(
            "<h1>Not found</h1><p>Nothing is served at <code>{}</code>. <a href=\"/\">The purchase list</a>.</p>",
            escape(path)
        ),
    )
}

fn problem(status: StatusCode, title: &str, text: &str) -> Reply {
    html_page(
        status,
        title,
        &format!(
            "<h1>{}</h1><p class=\"problem\">{}</p>",
            escape(title),
            escape(text)
        ),
    )
}

/// The list's filters, as the query string gives them.
#[derive(Debug, Default)]
struct Query {
    status: Option<String>,
    state: Option<String>,
    customer: Option<String>,
    since: Option<String>,
    stuck: bool,
    limit: u32,
}

fn parse_query(query: &str) -> Result<Query, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("the query is not readable: {e}"))?;
    let mut q = Query {
        limit: DEFAULT_LIMIT,
        ..Query::default()
    };
    for (key, value) in pairs {
        let value = value.trim().to_owned();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "status" => q.status = Some(value),
            "state" => q.state = Some(value),
            "customer" => q.customer = Some(value),
            "since" => q.since = Some(value),
            "stuck" => q.stuck = value != "0",
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit {value:?}: a number from 1 to {MAX_LIMIT}"))?
            }
            other => {
                return Err(format!(
                    "unknown filter {other:?}: use status, state, customer, since, stuck or limit"
                ))
            }
        }
    }
    Ok(q)
}

pub async fn list(site: &Site, query: &str) -> Reply {
    let q = match parse_query(query) {
        Ok(q) => q,
        Err(text) => return problem(StatusCode::BAD_REQUEST, "Bad filter", &text),
    };
    let filter = crate::commands::inspect::filter_of(
        q.status.as_deref(),
        q.state.as_deref(),
        q.customer.as_deref(),
        q.since.as_deref(),
        q.limit,
    );
    let mut filter = match filter {
        Ok(f) => f,
        Err(failed) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad filter",
                &format!("{:#}", failed.error),
            )
        }
    };
    if q.stuck {
        filter.status = Some(SagaStatus::Active);
        filter.stuck = Some(crate::commands::inspect::stuck_bounds(
            &site.policies,
            Utc::now(),
        ));
    }
    let store = site.store.scoped(pcsaga_purchase::WORKFLOW_NAME);
    let (sagas, counts, daemons) = match tokio::try_join!(
        site.store.list(&filter),
        store.count_by_status(),
        site.store.daemons(),
    ) {
        Ok(found) => found,
        Err(error) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                &format!("{error}. `pcsaga{} status` says more.", site.db_flag),
            )
        }
    };
    let mut body = String::new();
    body.push_str("<h1>Purchases</h1>");
    body.push_str(&counts_bar(&counts));
    body.push_str(&throttling(&daemons));
    body.push_str(&filter_form(&q));
    let title = if q.stuck {
        "Stuck purchases"
    } else {
        "Purchases"
    };
    let _ = write!(
        body,
        "<p class=\"shown\">{} shown{}, newest first. The same list in a terminal: <code>pcsaga{} list{}</code></p>",
        sagas.len(),
        if sagas.len() as u32 >= filter.limit {
            format!(" (the newest {}; narrow the filters or raise the limit)", filter.limit)
        } else {
            String::new()
        },
        site.db_flag,
        escape(&cli_flags(&q)),
    );
    body.push_str(&purchase_table(&sagas));
    html_page(StatusCode::OK, title, &body)
}

fn cli_flags(q: &Query) -> String {
    let mut out = String::new();
    for (flag, value) in [
        ("--status", &q.status),
        ("--state", &q.state),
        ("--customer", &q.customer),
        ("--since", &q.since),
    ] {
        if let Some(v) = value {
            let _ = write!(out, " {flag} {v}");
        }
    }
    if q.stuck {
        out.push_str(" --stuck");
    }
    if q.limit != DEFAULT_LIMIT {
        let _ = write!(out, " --limit {}", q.limit);
    }
    out
}

fn counts_bar(counts: &std::collections::BTreeMap<SagaStatus, u64>) -> String {
    let mut out = String::from("<ul class=\"counts\">");
    for status in [
        SagaStatus::Active,
        SagaStatus::Succeeded,
        SagaStatus::Failed,
        SagaStatus::NeedsAttention,
        SagaStatus::Cancelled,
    ] {
        let _ = write!(
            out,
            "<li class=\"count {s}\" data-status=\"{s}\"><a href=\"/?status={s}\"><span class=\"n\">{n}</span> {s}</a></li>",
            s = status.as_str(),
            n = counts.get(&status).copied().unwrap_or(0),
        );
    }
    out.push_str("</ul>");
    out
}

/// The rate governor of each live daemon: classes paused, waiting or below their budget.
fn throttling(daemons: &[pcsaga_engine::DaemonRow]) -> String {
    let now = Utc::now();
    let mut rows = String::new();
    for daemon in daemons.iter().filter(|d| {
        d.stopped_at.is_none()
            && d.heartbeat_at
                .is_some_and(|at| now - at < chrono::Duration::minutes(2))
    }) {
        let classes = crate::commands::inspect::governor_of(daemon).unwrap_or_default();
        for c in classes.iter().filter(|c| {
            c.paused_ms > 0
                || c.waiting > 0
                || c.allowed_per_minute + 0.5 < f64::from(c.budget_per_minute)
        }) {
            let _ = write!(
                rows,
                "<tr data-class=\"{cls}\"><td>{d}</td><td>{cls}</td><td>{allowed:.0} / {budget}</td><td>{waiting}</td><td>{paused}</td><td>{throttled}</td></tr>",
                d = escape(&daemon.id),
                cls = attr(&c.class),
                allowed = c.allowed_per_minute,
                budget = c.budget_per_minute,
                waiting = c.waiting,
                paused = if c.paused_ms > 0 { format!("{} ms", c.paused_ms) } else { "-".into() },
                throttled = c.throttled,
            );
        }
    }
    if rows.is_empty() {
        return "<p class=\"throttling calm\">Throttling: no live daemon reports a paused or slowed call class.</p>".into();
    }
    format!(
        "<section class=\"throttling\"><h2>Throttling</h2><table><thead><tr><th>daemon</th><th>class</th><th>allowed / budget per min</th><th>waiting</th><th>paused</th><th>429s</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
}

fn filter_form(q: &Query) -> String {
    let option = |value: &str, current: &Option<String>| {
        format!(
            "<option value=\"{v}\"{sel}>{v}</option>",
            v = attr(value),
            sel = if current.as_deref() == Some(value) {
                " selected"
            } else {
                ""
            }
        )
    };
    let statuses: String = [
        "active",
        "succeeded",
        "failed",
        "needs_attention",
        "cancelled",
    ]
    .iter()
    .map(|s| option(s, &q.status))
    .collect();
    let states: String = pcsaga_purchase::STATE_NAMES
        .iter()
        .map(|s| option(s, &q.state))
        .collect();
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/\">\
         <label>status <select name=\"status\"><option value=\"\">any</option>{statuses}</select></label>\
         <label>state <select name=\"state\"><option value=\"\">any</option>{states}</select></label>\
         <label>customer <input name=\"customer\" value=\"{customer}\" size=\"36\"></label>\
         <label>since <input name=\"since\" value=\"{since}\" size=\"5\" placeholder=\"24h\"></label>\
         <label><input type=\"checkbox\" name=\"stuck\" value=\"1\"{stuck}> stuck</label>\
         <label>limit <input name=\"limit\" value=\"{limit}\" size=\"4\"></label>\
         <button type=\"submit\">Filter</button></form>",
        customer = attr(q.customer.as_deref().unwrap_or("")),
        since = attr(q.since.as_deref().unwrap_or("")),
        stuck = if q.stuck { " checked" } else { "" },
        limit = q.limit,
    )
}

fn purchase_table(sagas: &[pcsaga_engine::SagaRecord]) -> String {
    if sagas.is_empty() {
        return "<p class=\"empty\">No purchase matches.</p>".into();
    }
    let mut out = String::from(
        "<table class=\"purchases\"><thead><tr><th>purchase</th><th>status</th><th>state</th><th>customer</th><th>attempts</th><th>created</th><th>updated</th><th>waiting for / last error</th></tr></thead><tbody>",
    );
    for s in sagas {
        let note = s
            .wait_reason
            .as_deref()
            .or(s.last_error.as_deref())
            .unwrap_or("");
        let _ = write!(
            out,
            "<tr class=\"purchase {status}\" data-id=\"{id}\"><td><a href=\"/purchases/{href}\">{id}</a><div class=\"key\">{key}</div></td>\
             <td><span class=\"badge {status}\">{status}</span></td><td>{state}</td><td>{customer}</td><td>{attempts}</td>\
             <td>{created}</td><td>{updated}</td><td class=\"note\">{note}</td></tr>",
            status = s.status,
            id = escape(&s.id),
            href = encode(&s.id),
            key = escape(&s.idempotency_key),
            state = escape(&s.state),
            customer = escape(s.customer_id.as_deref().unwrap_or("-")),
            attempts = s.total_attempts,
            created = time(s.created_at),
            updated = time(s.updated_at),
            note = escape(&crate::output::clip(note, 160)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub async fn purchase(site: &Site, id: &str) -> Reply {
    let id = match percent_decode(id) {
        Some(id) if !id.is_empty() && id.len() <= 200 => id,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad purchase id",
                "the link does not carry a readable purchase id",
            )
        }
    };
    let saga = match site.store.get(&id).await {
        Ok(Some(saga)) => saga,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "No such purchase",
                &format!("No purchase has the id {id:?}. `pcsaga{} list` lists them; `pcsaga{} show PREFIX` takes an id's start.", site.db_flag, site.db_flag),
            )
        }
        Err(error) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                &error.to_string(),
            )
        }
    };
    let history = match site.store.history(&saga.id).await {
        Ok(h) => h,
        Err(error) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                &error.to_string(),
            )
        }
    };
    let context =
        pcsaga_purchase::context::decode(saga.context_schema, &saga.context, &saga.input).ok();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Purchase <code>{id}</code> <span class=\"badge {status}\">{status}</span></h1>",
        id = escape(&saga.id),
        status = saga.status,
    );
    body.push_str(&facts(&saga));
    let next = crate::commands::inspect::next_steps(&site.db_flag, &saga, context.as_ref());
    if !next.is_empty() {
        body.push_str("<section class=\"next\"><h2>What to do</h2><ul>");
        for step in next {
            let _ = write!(body, "<li>{}</li>", code_spans(&step));
        }
        body.push_str("</ul></section>");
    }
    body.push_str("<section><h2>Timeline</h2>");
    body.push_str(&super::timeline::render(&saga, &history, Utc::now()));
    body.push_str(LEGEND);
    body.push_str("</section>");
    let billing = crate::commands::inspect::billing_section(
        &site.store,
        &site.db_path,
        &saga.id,
        context.as_ref(),
        &site.db_flag,
    )
    .await;
    if !billing.is_empty() {
        let _ = write!(
            body,
            "<section class=\"billing\"><h2>Billing</h2><pre>{}</pre></section>",
            escape(&billing)
        );
    }
    body.push_str(&history_table(&history));
    html_page(StatusCode::OK, &format!("Purchase {}", saga.id), &body)
}

const LEGEND: &str = "<p class=\"legend\"><span class=\"key ok\">call ok</span><span class=\"key failed\">call failed</span>\
<span class=\"key throttled\">429</span><span class=\"key unknown\">reply lost</span><span class=\"key backoff\">backoff</span>\
<span class=\"key poll\">poll or step wait</span><span class=\"key queue\">in the queue</span><span class=\"key checkout\">checkout sent</span>\
<span class=\"key operator\">operator action</span>\
<span class=\"axis-note\">time axis compressed: a long wait is drawn shorter than its share; the ticks give real times</span></p>";

fn facts(saga: &pcsaga_engine::SagaRecord) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    let mut fact = |name: &str, value: String| {
        let _ = write!(out, "<dt>{name}</dt><dd>{value}</dd>");
    };
    fact("idempotency key", escape(&saga.idempotency_key));
    fact(
        "customer",
        escape(saga.customer_id.as_deref().unwrap_or("-")),
    );
    fact("state", escape(&saga.state));
    fact(
        "attempts",
        format!("{} (in this state: {})", saga.total_attempts, saga.attempt),
    );
    fact("created", time(saga.created_at));
    fact("updated", time(saga.updated_at));
    if let Some(at) = saga
        .next_run_at
        .filter(|_| saga.status == SagaStatus::Active)
    {
        fact("next step", time(at));
    }
    if let Some(w) = &saga.wait_reason {
        fact("waiting for", escape(w));
    }
    if let Some(e) = &saga.last_error {
        fact(
            "last error",
            format!("<span class=\"error\">{}</span>", escape(e)),
        );
    }
    if let Some(owner) = &saga.lease_owner {
        fact("held by", escape(owner));
    }
    out.push_str("</dl>");
    out
}

/// Text with `backquoted` commands as `<code>` (the CLI's next steps).
fn code_spans(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

fn history_table(history: &[pcsaga_engine::HistoryRow]) -> String {
    let mut out = String::from(
        "<section><h2>History</h2><table class=\"history\"><thead><tr><th>#</th><th>at</th><th>kind</th><th>state</th><th>to</th><th>call</th><th>status</th><th>ms</th><th>class</th><th>detail / error</th></tr></thead><tbody>",
    );
    for row in history.iter().take(MAX_HISTORY_ROWS) {
        let text = row.error.as_deref().or(row.detail.as_deref()).unwrap_or("");
        let _ = write!(
            out,
            "<tr class=\"{kind}{err}\"><td>{seq}</td><td>{at}</td><td>{kind}</td><td>{state}</td><td>{to}</td><td>{call}</td><td>{status}</td><td>{ms}</td><td>{class}</td><td class=\"note\">{text}</td></tr>",
            kind = escape(&row.kind),
            err = if row.error_class.is_some() { " error" } else { "" },
            seq = row.seq,
            at = time(row.at),
            state = escape(row.state.as_deref().unwrap_or("")),
            to = escape(row.to_state.as_deref().unwrap_or("")),
            call = escape(row.call.as_deref().unwrap_or("")),
            status = row.http_status.map(|s| s.to_string()).unwrap_or_default(),
            ms = row.latency_ms.map(|s| s.to_string()).unwrap_or_default(),
            class = escape(row.error_class.as_deref().unwrap_or("")),
            text = escape(&crate::output::clip(text, 400)),
        );
    }
    out.push_str("</tbody></table>");
    if history.len() > MAX_HISTORY_ROWS {
        let _ = write!(
            out,
            "<p class=\"more\">{} more rows: <code>pcsaga show ID --json</code> has every one.</p>",
            history.len() - MAX_HISTORY_ROWS
        );
    }
    out.push_str("</section>");
    out
}

/// Decodes `%XX` escapes of a path segment; `None` when they do not make UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_from_the_query() {
        let q = super::parse_query("status=failed&state=&stuck=1&limit=20").expect("valid");
        assert_eq!(q.status.as_deref(), Some("failed"));
        assert_eq!(q.state, None);
        assert!(q.stuck);
        assert_eq!(q.limit, 20);
        assert!(super::parse_query("limit=0").is_err());
        assert!(super::parse_query("limit=100000").is_err());
        assert!(super::parse_query("colour=red").is_err());
        assert_eq!(super::percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(super::percent_decode("a%2"), None);
        assert_eq!(super::percent_decode("%FF"), None);
    }
}
