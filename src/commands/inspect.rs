//! `pcsaga list` and `pcsaga show`.

use chrono::{Duration, Utc};
use pcsaga_engine::{ListFilter, SagaRecord, SagaStatus};
use pcsaga_purchase::{PurchaseContext, State};
use serde_json::{json, Value};

use crate::cli::{Global, ListArgs, ShowArgs};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};
use crate::output::{clip, print, print_json, when, Table};

/// Longest `--since`: a hundred years.
const MAX_AGE_S: i64 = 36_500 * 86_400;

/// Parses `30m`, `24h`, `7d`, `90s`.
pub fn parse_age(text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number.parse().map_err(|_| {
        ConfigError(format!(
            "--since {text:?}: use a number and a unit, e.g. 30m, 24h, 7d"
        ))
    })?;
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86_400,
        _ => {
            return Err(ConfigError(format!(
                "--since {text:?}: the unit must be s, m, h or d"
            )))
        }
    };
    match n.checked_mul(seconds_per) {
        Some(seconds) if seconds <= MAX_AGE_S => Ok(Duration::seconds(seconds)),
        _ => Err(ConfigError(format!(
            "--since {text:?}: at most 36500d (a hundred years)"
        ))),
    }
}

fn summary(saga: &SagaRecord) -> Value {
    json!({
        "id": saga.id,
        "idempotencyKey": saga.idempotency_key,
        "customerId": saga.customer_id,
        "state": saga.state,
        "status": saga.status,
        "attempts": saga.total_attempts,
        "createdAt": saga.created_at,
        "updatedAt": saga.updated_at,
        "nextRunAt": saga.next_run_at,
        "waitingFor": saga.wait_reason,
        "lastError": saga.last_error,
    })
}

/// The filter of `list` (and of the bulk operator actions), from the command line.
pub fn filter_of(
    status: Option<&str>,
    state: Option<&str>,
    customer: Option<&str>,
    since: Option<&str>,
    limit: u32,
) -> Result<ListFilter, Failed> {
    let status = match status {
        Some(s) => Some(SagaStatus::parse(s).ok_or_else(|| {
            Failed::new(
                Exit::InvalidInput,
                ConfigError(format!(
                    "--status {s:?}: use active, succeeded, failed, needs_attention or cancelled"
                )),
            )
        })?),
        None => None,
    };
    let state = match state {
        Some(s) => Some(
            State::parse(s)
                .ok_or_else(|| {
                    Failed::new(
                        Exit::InvalidInput,
                        ConfigError(format!(
                            "--state {s:?}: use one of {}",
                            pcsaga_purchase::STATE_NAMES.join(", ")
                        )),
                    )
                })?
                .name()
                .to_owned(),
        ),
        None => None,
    };
    let created_after = match since {
        Some(age) => {
            Some(Utc::now() - parse_age(age).map_err(|e| Failed::new(Exit::InvalidInput, e))?)
        }
        None => None,
    };
    Ok(ListFilter {
        status,
        state,
        customer_id: customer.map(str::to_owned),
        created_after,
        stuck: None,
        workflow: Some(pcsaga_purchase::WORKFLOW_NAME.to_owned()),
        limit,
    })
}

/// What `--stuck` selects: per state, the instant before which a purchase that entered it is
/// past its poll deadline (a purchase that retried is stuck anyway).
pub fn stuck_bounds(
    policies: &pcsaga_engine::Policies,
    now: chrono::DateTime<Utc>,
) -> Vec<(String, chrono::DateTime<Utc>)> {
    pcsaga_purchase::STATE_NAMES
        .iter()
        .map(|state| {
            let deadline = Duration::from_std(policies.get(state).poll.deadline)
                .unwrap_or(Duration::days(36_500));
            ((*state).to_owned(), now - deadline)
        })
        .collect()
}

/// Counting the matches of a cut `list` stops here: the count costs at most this many index
/// entries, whatever the table's size.
const COUNT_CAP: u64 = 10_000;

/// `list --billing STATUS`: the purchases the last reconciliation gave that status, with the
/// other filters applied to them.
async fn by_billing(
    store: &pcsaga_engine::AnyStore,
    path: &std::path::Path,
    text: &str,
    filter: &ListFilter,
) -> Result<Vec<pcsaga_engine::SagaRecord>, Failed> {
    let Some(status) = pcsaga_billing::BillingStatus::parse(text) else {
        return Err(Failed::new(
            Exit::Usage,
            ConfigError(format!(
                "--billing {text:?}: use one of {}",
                pcsaga_billing::BillingStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ));
    };
    let ledger = crate::app::ledger(store, path, true)
        .await
        .map_err(|e| Failed::new(Exit::Database, e))?;
    let limit = if filter.limit == 0 {
        u32::MAX
    } else {
        filter.limit
    };
    let ids = ledger
        .with_status(status.as_str(), limit)
        .await
        .map_err(|e| Failed::new(Exit::Database, e))?;
    let mut sagas = Vec::new();
    for id in ids {
        let Some(saga) = pcsaga_engine::Store::get(store, &id).await? else {
            continue;
        };
        let keep = filter.status.is_none_or(|s| s == saga.status)
            && filter
                .state
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&saga.state))
            && filter
                .customer_id
                .as_ref()
                .is_none_or(|c| saga.customer_id.as_deref() == Some(c.as_str()))
            && filter.created_after.is_none_or(|t| saga.created_at >= t);
        if keep {
            sagas.push(saga);
        }
    }
    sagas.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    Ok(sagas)
}

pub async fn list(global: &Global, args: &ListArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let mut filter = filter_of(
        args.status.as_deref(),
        args.state.as_deref(),
        args.customer.as_deref(),
        args.since.as_deref(),
        args.limit,
    )?;
    if args.stuck {
        if filter.status.is_some_and(|s| s != SagaStatus::Active) {
            return Err(Failed::new(
                Exit::Usage,
                ConfigError("--stuck lists active purchases; leave out --status".into()),
            ));
        }
        let policies = crate::app::policies(args.workflow.as_deref())?;
        filter.stuck = Some(stuck_bounds(&policies, Utc::now()));
    }
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let sagas = match &args.billing {
        None => pcsaga_engine::Store::list(&store, &filter).await?,
        Some(text) => by_billing(&store, &path, text, &filter).await?,
    };
    // Said whenever the limit cut the result: `list` never hides work silently.
    let cut = filter.limit != 0 && sagas.len() as u64 >= u64::from(filter.limit);
    let total = if cut {
        Some(pcsaga_engine::Store::count(&store, &filter, COUNT_CAP + 1).await?)
    } else {
        None
    };
    let showing = match total {
        Some(t) if t > COUNT_CAP => Some(format!(
            "showing the newest {} of more than {COUNT_CAP}; narrow with --status, --state, --customer or --since, or raise --limit",
            sagas.len()
        )),
        Some(t) if t > sagas.len() as u64 => Some(format!(
            "showing the newest {} of {t}; narrow with --status, --state, --customer or --since, or raise --limit",
            sagas.len()
        )),
        _ => None,
    };
    if args.json {
        print_json(&Value::Array(sagas.iter().map(summary).collect()));
        if let Some(note) = &showing {
            say!("{note}");
        }
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "ID",
        "IDEMPOTENCY KEY",
        "CUSTOMER",
        "STATE",
        "STATUS",
        "ATTEMPTS",
        "UPDATED",
        "WAITING FOR / LAST ERROR",
    ]);
    for saga in &sagas {
        let note = match (&saga.wait_reason, &saga.last_error) {
            (Some(wait), Some(error)) => format!("{wait}; last error: {error}"),
            (Some(one), None) | (None, Some(one)) => one.clone(),
            (None, None) => String::new(),
        };
        table.row(vec![
            saga.id.clone(),
            saga.idempotency_key.clone(),
            saga.customer_id.clone().unwrap_or_default(),
            saga.state.clone(),
            saga.status.to_string(),
            saga.total_attempts.to_string(),
            when(saga.updated_at),
            clip(&note, 70),
        ]);
    }
    if table.is_empty() {
        print("no purchases match\n");
    } else {
        print(&table.render());
    }
    if let Some(note) = &showing {
        print(&format!("{note}\n"));
    }
    Ok(Exit::Ok)
}

/// What the last reconciliation found for a purchase, with its billing lines; a line saying
/// why not when nothing is known.
pub(crate) async fn billing_section(
    store: &pcsaga_engine::AnyStore,
    path: &std::path::Path,
    id: &str,
    context: Option<&PurchaseContext>,
    db: &str,
) -> String {
    let Ok(ledger) = crate::app::ledger(store, path, true).await else {
        return String::new();
    };
    let mut out = String::new();
    match ledger.status_of(id).await {
        Ok(Some(row)) => {
            out.push_str(&format!(
                "billing       {}{} (run {}, {})\n",
                row.status,
                if row.final_ { ", final" } else { "" },
                row.run_id,
                when(row.updated_at)
            ));
            if let Some(orders) = row.detail.as_array() {
                for order in orders {
                    if let Some(text) = order["explanation"].as_str() {
                        out.push_str(&format!("              {text}\n"));
                    }
                }
            }
        }
        Ok(None) => out.push_str(&format!(
            "billing       not reconciled yet (`pcsaga{db} reconcile`)\n"
        )),
        Err(e) => out.push_str(&format!("billing       unreadable: {e}\n")),
    }
    let orders: Vec<String> = context
        .map(|c| {
            c.orders
                .iter()
                .flat_map(|o| std::iter::once(o.id.clone()).chain(o.alternate_id.clone()))
                .collect()
        })
        .unwrap_or_default();
    if let Ok(lines) = ledger.lines_of(&orders).await {
        for l in lines {
            out.push_str(&format!(
                "billing line  {}#{} {} {} × {}:{} {} {} (order {})\n",
                l.source,
                l.seq,
                l.line.charge_type.as_str(),
                l.line.billable_quantity,
                l.line.product_id,
                l.line.sku_id,
                l.line.total,
                l.line.currency,
                l.line.order_id
            ));
        }
    }
    out
}

pub async fn show(global: &Global, args: &ShowArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let engine = crate::app::offline_engine(store);
    let id = engine.resolve(&args.id).await?;
    let saga = engine.get(&id).await?;
    let history = engine.history(&id).await?;
    let context: Option<PurchaseContext> =
        pcsaga_purchase::context::decode(saga.context_schema, &saga.context, &saga.input).ok();
    if args.json {
        let mut out = summary(&saga);
        out["leaseOwner"] = json!(saga.lease_owner);
        out["leaseExpiresAt"] = json!(saga.lease_expires_at);
        out["request"] = serde_json::from_str(&saga.input).unwrap_or(Value::Null);
        out["context"] = serde_json::from_str(&saga.context).unwrap_or(Value::Null);
        out["history"] = serde_json::to_value(&history).unwrap_or(Value::Null);
        out["next"] = json!(next_steps(
            &crate::output::db_flag(global),
            &saga,
            context.as_ref()
        ));
        if let Ok(ledger) = crate::app::ledger(engine.store(), &path, true).await {
            if let Ok(status) = ledger.status_of(&saga.id).await {
                out["billing"] = crate::output::to_json(&status, "the billing status")?;
            }
        }
        print_json(&out);
        return Ok(Exit::Ok);
    }
    let mut out = String::new();
    out.push_str(&format!("purchase      {}\n", saga.id));
    out.push_str(&format!("idempotency   {}\n", saga.idempotency_key));
    out.push_str(&format!(
        "customer      {}\n",
        saga.customer_id.as_deref().unwrap_or("-")
    ));
    out.push_str(&format!(
        "status        {} in {}\n",
        saga.status, saga.state
    ));
    out.push_str(&format!(
        "created       {}   updated {}   attempts {}\n",
        when(saga.created_at),
        when(saga.updated_at),
        saga.total_attempts
    ));
    if saga.status == SagaStatus::Active {
        match (&saga.lease_owner, saga.lease_expires_at) {
            (Some(owner), Some(until)) if until > Utc::now() => out.push_str(&format!(
                "running       on {owner} (lease until {})\n",
                when(until)
            )),
            _ => out.push_str(&format!(
                "waiting for   {}\n              until {}\n",
                saga.wait_reason.as_deref().unwrap_or("its next step"),
                saga.next_run_at.map(when).unwrap_or_else(|| "-".into())
            )),
        }
    }
    if let Some(error) = &saga.last_error {
        out.push_str(&format!("last error    {error}\n"));
    }
    if let Some(ctx) = &context {
        out.push_str(&format!(
            "correlation   {} (MS-CorrelationId)   token {}\n",
            ctx.correlation_id, ctx.token
        ));
        for (i, (item, state)) in ctx.request.items.iter().zip(&ctx.items).enumerate() {
            out.push_str(&format!(
                "item {i}        {}:{} x{}{}{}\n",
                item.product_id,
                item.sku_id,
                item.quantity,
                item.term_duration
                    .as_ref()
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default(),
                state
                    .catalog_item_id
                    .as_ref()
                    .map(|c| format!(" -> {c}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(intent) = &ctx.pending {
            out.push_str(&format!(
                "in doubt      {} sent with MS-RequestId {} and no reply recorded yet; it is sent again with the same id\n",
                intent.call, intent.request_id
            ));
        }
        if let Some(cart) = &ctx.cart {
            out.push_str(&format!(
                "cart          {}{}\n",
                cart.id,
                cart.expires_at
                    .map(|e| format!(" (expires {})", when(e)))
                    .unwrap_or_default()
            ));
        }
        if let Some(direct) = &ctx.direct {
            // The order as it is sent, byte for byte, on every send (README "Two purchase
            // paths"), and what pcsaga knows of its sends.
            out.push_str(&format!(
                "direct order  MS-RequestId {}, {} line(s){}{}{}\n",
                direct.request_id,
                direct.body.line_items.len(),
                direct
                    .last_sent_at
                    .map(|at| format!(", last sent {}", when(at)))
                    .unwrap_or_else(|| ", not sent yet".to_owned()),
                if direct.resends > 0 {
                    format!(
                        ", sent again {} time(s) after proven absence",
                        direct.resends
                    )
                } else {
                    String::new()
                },
                if direct.nothing_found {
                    ", the last look at the order list found nothing"
                } else {
                    ""
                }
            ));
            for line in &direct.body.line_items {
                out.push_str(&format!(
                    "  line {}       {} x{} as {:?}\n",
                    line.line_item_number,
                    line.offer_id,
                    line.quantity,
                    line.friendly_name.as_deref().unwrap_or("")
                ));
            }
        }
        if ctx.checkout.attempted {
            out.push_str(&format!(
                "checkout      sent {} time(s), answered {}{}{}\n",
                ctx.checkout.sent,
                ctx.checkout.answered,
                if ctx.checkout.confirmed {
                    ", confirmed"
                } else {
                    ", not confirmed"
                },
                ctx.checkout
                    .reconcile_reason
                    .as_ref()
                    .map(|r| format!("; reconciled because {r}"))
                    .unwrap_or_default()
            ));
        }
        for order in &ctx.orders {
            out.push_str(&format!("order         {} {}\n", order.id, order.status));
        }
        for error in &ctx.order_errors {
            out.push_str(&format!(
                "order error   group {}: {} {}\n",
                error.group, error.code, error.description
            ));
        }
        for e in &ctx.entitlements {
            let reservations: Vec<String> = e
                .artifacts
                .iter()
                .filter_map(|a| a.reservation_ids.clone())
                .flatten()
                .collect();
            out.push_str(&format!(
                "entitlement   order {} line {}: {} x{}{}\n",
                e.order_id,
                e.line_item_id,
                e.kind.as_deref().unwrap_or("?"),
                e.quantity,
                if reservations.is_empty() {
                    String::new()
                } else {
                    format!(" reservations {}", reservations.join(", "))
                }
            ));
        }
    }
    out.push_str(
        &billing_section(
            engine.store(),
            &path,
            &saga.id,
            context.as_ref(),
            &crate::output::db_flag(global),
        )
        .await,
    );
    let next = next_steps(&crate::output::db_flag(global), &saga, context.as_ref());
    if !next.is_empty() {
        out.push_str("\nnext\n");
        for step in &next {
            out.push_str(&format!("  {step}\n"));
        }
    }
    out.push_str("\ntimeline\n");
    let mut table = Table::new(&[
        "TIME",
        "EVENT",
        "STATE",
        "CALL",
        "HTTP",
        "MS",
        "MS-REQUESTID",
        "DETAIL",
    ]);
    let width = terminal_width();
    let folded = fold(&history);
    let skipped = args.tail.map_or(0, |n| folded.len().saturating_sub(n));
    if skipped > 0 {
        out.push_str(&format!(
            "({skipped} earlier rows; leave out --tail to see them)\n"
        ));
    }
    for (row, repeats) in folded.into_iter().skip(skipped) {
        let state = match (&row.state, &row.to_state) {
            (Some(a), Some(b)) if a != b => format!("{a} -> {b}"),
            (Some(a), _) => a.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => String::new(),
        };
        let detail = match (&row.error_class, &row.error, &row.detail) {
            (Some(class), Some(error), Some(detail)) => format!("{class}: {error}; {detail}"),
            (Some(class), Some(error), None) => format!("{class}: {error}"),
            (_, _, Some(detail)) => detail.clone(),
            _ => String::new(),
        };
        table.row(vec![
            row.at.format("%H:%M:%S%.3f").to_string(),
            if repeats > 1 {
                format!("{} ×{repeats}", row.kind)
            } else {
                row.kind.clone()
            },
            state,
            row.call.clone().unwrap_or_default(),
            row.http_status.map(|s| s.to_string()).unwrap_or_default(),
            row.latency_ms.map(|s| s.to_string()).unwrap_or_default(),
            row.request_id.clone().unwrap_or_default(),
            clip(&detail, width.saturating_sub(110).max(40)),
        ]);
    }
    out.push_str(&table.render());
    print(&out);
    Ok(Exit::Ok)
}

/// History rows whose error classes `status` counts.
const STATUS_RECENT_ROWS: u32 = 10_000;

/// `pcsaga status`.
pub async fn status(global: &Global, json_out: bool, file: &FileConfig) -> Result<Exit, Failed> {
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let now = Utc::now();
    let purchases = pcsaga_engine::Store::scoped(&store, pcsaga_purchase::WORKFLOW_NAME);
    let counts = pcsaga_engine::Store::count_by_status(&purchases).await?;
    let active = pcsaga_engine::Store::count_active_by_state(&purchases, now).await?;
    let runs = pcsaga_engine::Store::list(
        &store,
        &ListFilter {
            workflow: Some(pcsaga_billing::WORKFLOW_NAME.to_owned()),
            limit: 1,
            ..ListFilter::default()
        },
    )
    .await?;
    let snapshot = store.status_snapshot(now, STATUS_RECENT_ROWS).await?;
    let daemons = store.daemons().await?;
    let alive: Vec<&pcsaga_engine::DaemonRow> = daemons
        .iter()
        .filter(|d| crate::commands::operator::is_alive(d, now))
        .collect();
    if json_out {
        print_json(&json!({
            "database": path,
            "daemons": daemons.iter().map(|d| json!({
                "id": d.id, "host": d.host, "pid": d.pid, "startedAt": d.started_at,
                "heartbeatAt": d.heartbeat_at, "stoppedAt": d.stopped_at,
                "alive": alive.iter().any(|a| a.id == d.id),
                "governor": governor_of(d),
            })).collect::<Vec<_>>(),
            "byStatus": counts.iter().map(|(k, v)| json!({"status": k, "count": v})).collect::<Vec<_>>(),
            "activeByState": active.iter().map(|(k, (n, due))| json!({"state": k, "active": n, "due": due})).collect::<Vec<_>>(),
            "oldestDue": snapshot.oldest_due.as_ref().map(|(id, at)| json!({"id": id, "dueSince": at, "ageSeconds": (now - *at).num_seconds()})),
            "waitingOnThrottling": snapshot.throttled,
            "heldForCredentials": snapshot.held,
            "recentErrorsByClass": snapshot.recent_errors,
            "lastReconciliation": runs.first().map(|r| json!({"id": r.id, "status": r.status, "state": r.state, "createdAt": r.created_at, "updatedAt": r.updated_at})),
        }));
        return Ok(Exit::Ok);
    }
    let mut out = format!("database      {}\n", path.display());
    if alive.is_empty() {
        out.push_str(&format!(
            "daemons       none running: start one with `pcsaga{} daemon`\n",
            crate::output::db_flag(global)
        ));
    }
    for d in &alive {
        let age = d.heartbeat_at.map_or(0, |at| (now - at).num_seconds());
        out.push_str(&format!(
            "daemon        {} (pid {} on {}), up since {}, heartbeat {age}s ago\n",
            d.id,
            d.pid,
            d.host,
            when(d.started_at)
        ));
    }
    let statuses: Vec<String> = [
        "active",
        "succeeded",
        "failed",
        "needs_attention",
        "cancelled",
    ]
    .iter()
    .map(|name| {
        let n = SagaStatus::parse(name)
            .and_then(|s| counts.get(&s).copied())
            .unwrap_or(0);
        format!("{name} {n}")
    })
    .collect();
    out.push_str(&format!("purchases     {}\n", statuses.join(", ")));
    for state in pcsaga_purchase::STATE_NAMES {
        if let Some((n, due)) = active.get(*state) {
            out.push_str(&format!("  {state:<24} {n} active, {due} due now\n"));
        }
    }
    match runs.first() {
        Some(run) => out.push_str(&format!(
            "billing       last reconciliation run {} {} (started {}); `pcsaga{} reconcile --report {}`\n",
            run.id,
            if run.status == SagaStatus::Active { format!("running, in {}", run.state) } else { run.status.to_string() },
            when(run.created_at),
            crate::output::db_flag(global),
            run.id
        )),
        None => out.push_str(&format!(
            "billing       never reconciled: `pcsaga{} reconcile`\n",
            crate::output::db_flag(global)
        )),
    }
    match &snapshot.oldest_due {
        Some((id, at)) => out.push_str(&format!(
            "oldest due    {id}, due for {}s\n",
            (now - *at).num_seconds().max(0)
        )),
        None => out.push_str("oldest due    none: nothing is overdue\n"),
    }
    out.push_str(&format!(
        "throttled     {} purchase(s) waiting after a 429\n",
        snapshot.throttled
    ));
    if snapshot.held > 0 {
        out.push_str(&format!(
            "HELD          {} purchase(s) wait because the token service refuses the credentials: fix PCSAGA_CLIENT_SECRET (or the refresh token); the daemon retries by itself\n",
            snapshot.held
        ));
    }
    for d in &alive {
        out.push_str(&governor_table(d, now));
    }
    if !snapshot.recent_errors.is_empty() {
        let errors: Vec<String> = snapshot
            .recent_errors
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        out.push_str(&format!(
            "recent errors {} (last {STATUS_RECENT_ROWS} steps)\n",
            errors.join(", ")
        ));
    }
    print(&out);
    Ok(Exit::Ok)
}

/// A daemon's rate governor as its last heartbeat recorded it.
pub(crate) fn governor_of(
    daemon: &pcsaga_engine::DaemonRow,
) -> Option<Vec<pcsaga_engine::ClassSnapshot>> {
    serde_json::from_str(daemon.governor.as_deref()?).ok()
}

/// The governor of one daemon, per call class: what it may send, what waits, what paused it.
fn governor_table(daemon: &pcsaga_engine::DaemonRow, now: chrono::DateTime<Utc>) -> String {
    let Some(classes) = governor_of(daemon) else {
        return String::new();
    };
    let age = daemon.heartbeat_at.map_or(0, |at| (now - at).num_seconds());
    let mut table = crate::output::Table::new(&[
        "  CLASS",
        "BUDGET/MIN",
        "ALLOWED/MIN",
        "WAITING",
        "PAUSED",
        "CALLS",
        "429s",
        "LAST 429",
    ]);
    for c in classes
        .iter()
        .filter(|c| c.class != pcsaga_engine::governor::UNCLASSIFIED || c.granted > 0)
    {
        table.row(vec![
            format!("  {}", c.class),
            c.budget_per_minute.to_string(),
            format!("{:.0}", c.allowed_per_minute.min(1e12)),
            c.waiting.to_string(),
            if c.paused_ms > 0 {
                format!("{:.1}s", c.paused_ms as f64 / 1000.0)
            } else {
                "-".to_owned()
            },
            c.granted.to_string(),
            c.throttled.to_string(),
            c.last_throttled_at.map_or_else(
                || "-".to_owned(),
                |at| {
                    format!(
                        "{} (Retry-After {})",
                        when(at),
                        c.last_retry_after_s
                            .map_or_else(|| "none".to_owned(), |s| format!("{s}s"))
                    )
                },
            ),
        ]);
    }
    format!(
        "governor      of {} (as of its heartbeat {age}s ago): calls per minute for the tenant, by class\n{}",
        daemon.id,
        table.render()
    )
}

/// The commands an operator can run next for this purchase, exactly as they run.
/// `db` is the `--db` flag as the commands must carry it ([`crate::output::db_flag`]).
pub fn next_steps(db: &str, saga: &SagaRecord, ctx: Option<&PurchaseContext>) -> Vec<String> {
    let id = &saga.id;
    let reason = "--reason \"…\"";
    let mut out = Vec::new();
    match saga.status {
        SagaStatus::Failed => {
            out.push(format!(
                "nothing was bought. Fix the cause above, then: `pcsaga{db} resume {id} {reason}`"
            ));
            out.push(format!("the request cannot be changed: `pcsaga{db} cancel {id} {reason}`, then submit a corrected request with a new idempotencyKey"));
        }
        SagaStatus::NeedsAttention => match ctx {
            Some(c) if c.checkout.attempted && c.orders.is_empty() && c.direct.is_some() => {
                out.push(format!(
                    "a direct order was sent and whether it exists is not known: look in Partner Center for customer {}'s orders whose lines carry {}; if you find it: `pcsaga{db} attach-order {id} --order ORDER_ID {reason}`",
                    c.request.customer_id, c.token
                ));
                out.push(format!("to look for it once more (nothing is sent again unless the order list proves it absent with sends left): `pcsaga{db} resume {id} --from Checkout {reason}`"));
            }
            Some(c) if c.checkout.attempted && c.orders.is_empty() => {
                out.push(format!(
                    "a checkout was sent and its orders are not known: look in Partner Center for customer {}'s orders whose lines carry {}; if you find them: `pcsaga{db} attach-order {id} --order ORDER_ID {reason}`",
                    c.request.customer_id, c.token
                ));
                out.push(format!("to keep looking for them (same cart, never a new one): `pcsaga{db} resume {id} --from Checkout {reason}`"));
            }
            Some(c) if !c.order_errors.is_empty() => {
                out.push(format!("to re-attempt the failed order groups on the same cart: `pcsaga{db} resume {id} --from Checkout {reason}`"));
            }
            _ => out.push(format!(
                "once the cause above is fixed: `pcsaga{db} resume {id} {reason}`"
            )),
        },
        SagaStatus::Active => {
            let now = Utc::now();
            let waiting = saga.next_run_at.is_some_and(|at| at > now)
                && saga.lease_expires_at.is_none_or(|at| at <= now);
            if waiting {
                out.push(format!(
                    "to try now instead of waiting: `pcsaga{db} retry {id} {reason}`"
                ));
            }
        }
        SagaStatus::Succeeded | SagaStatus::Cancelled => {}
    }
    out
}

/// The width to fit: `COLUMNS` when set, else the terminal's, else 200 (a pipe or a file).
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .or_else(|| {
            terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
        })
        .filter(|c| (40..=1000).contains(c))
        .unwrap_or(200)
}

/// Folds runs of the same step (the same call answered the same way with the same decision,
/// numbers aside: attempt counts, waits, times) into their last row and a count, so a purchase
/// that retried 90 times reads as a few rows.
fn fold(history: &[pcsaga_engine::HistoryRow]) -> Vec<(pcsaga_engine::HistoryRow, usize)> {
    let shape = |r: &pcsaga_engine::HistoryRow| {
        let text: String = format!(
            "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
            r.kind,
            r.state,
            r.to_state,
            r.call,
            r.http_status,
            r.error_class,
            r.error.as_deref().unwrap_or(""),
            r.detail.as_deref().unwrap_or("")
        );
        // Ids (request ids in error texts) and numbers change from one attempt to the next.
        text.split_whitespace()
            .map(|token| {
                if token.chars().filter(char::is_ascii_hexdigit).count() >= 16 {
                    "<id>".to_owned()
                } else {
                    token.chars().filter(|c| !c.is_ascii_digit()).collect()
                }
            })
            .collect::<Vec<String>>()
            .join(" ")
    };
    let mut out: Vec<(pcsaga_engine::HistoryRow, usize)> = Vec::new();
    for row in history {
        match out.last_mut() {
            Some((last, n)) if row.kind != "intent" && shape(last) == shape(row) => {
                *last = row.clone();
                *n += 1;
            }
            _ => out.push((row.clone(), 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, detail: &str, error: Option<&str>) -> pcsaga_engine::HistoryRow {
        pcsaga_engine::HistoryRow {
            seq,
            saga_id: "s".into(),
            at: Utc::now(),
            kind: "transition".into(),
            state: Some("Discovery".into()),
            to_state: Some("Discovery".into()),
            call: Some("get_product".into()),
            http_status: Some(503),
            latency_ms: Some(seq as u64),
            request_id: Some(format!("{seq:032x}")),
            error_class: Some("transient".into()),
            error: error.map(str::to_owned),
            detail: Some(detail.into()),
        }
    }

    #[test]
    fn identical_attempts_fold_into_one_row_with_a_count() {
        let history = vec![
            row(
                1,
                "retry in 2s: HTTP 503",
                Some("MS-RequestId=0a8e6a52-6b4e-4f40-9c8e-1f2d3c4b5a69 down"),
            ),
            row(
                2,
                "retry in 4s: HTTP 503",
                Some("MS-RequestId=9b8e6a52-6b4e-4f40-9c8e-1f2d3c4b5a70 down"),
            ),
            row(
                3,
                "retry in 8s: HTTP 503",
                Some("MS-RequestId=1c8e6a52-6b4e-4f40-9c8e-1f2d3c4b5a71 down"),
            ),
            row(4, "product of items[0] found", None),
        ];
        let folded = fold(&history);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            (folded[0].0.seq, folded[0].1),
            (3, 3),
            "the last of three, counted"
        );
        assert_eq!(folded[1].1, 1);
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30m").expect("ok"), Duration::minutes(30));
        assert_eq!(parse_age("7d").expect("ok"), Duration::days(7));
        assert_eq!(parse_age("12").expect("ok"), Duration::hours(12));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("3w").is_err());
    }
}
