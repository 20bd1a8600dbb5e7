//! `pcsaga bench`: runs the benchmark harness and prints its figures (see BENCHMARKS.md).

use serde_json::json;

use crate::bench::run;
use crate::cli::BenchArgs;
use crate::exit::{Exit, Failed};
use crate::output::{print, print_json, Table};

const ALL: &[&str] = &[
    "raw",
    "orchestration",
    "e2e",
    "backlog",
    "recovery",
    "inspect",
    "throttled",
    "reconcile",
    "postgres",
];

pub async fn run(args: &BenchArgs) -> Result<Exit, Failed> {
    let only: Vec<String> = match &args.only {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .collect(),
        None => ALL.iter().map(|s| (*s).to_owned()).collect(),
    };
    if let Some(bad) = only.iter().find(|s| !ALL.contains(&s.as_str())) {
        return Err(Failed::new(
            Exit::InvalidInput,
            crate::config::ConfigError(format!("--only {bad:?}: choose from {}", ALL.join(", "))),
        ));
    }
    let n = args.n.max(10);
    let wants = |name: &str| only.iter().any(|s| s == name);
    let mut table = Table::new(&["MEASUREMENT", "FIGURE", "RATIO TO RAW"]);
    let mut out = json!({"n": n});
    // The ceilings are always measured: every ratio needs them.
    say!("bench: raw SQLite ceiling (WAL, synchronous=FULL)...");
    let scratch = run::Scratch::new("raw")?;
    let (single, batched) = run::raw(&scratch).await?;
    drop(scratch);
    table.row(vec![
        "raw: single-row commits/s".into(),
        format!("{single:.0}"),
        "1.00".into(),
    ]);
    table.row(vec![
        "raw: rows/s, one 100-row INSERT per commit".into(),
        format!("{batched:.0}"),
        format!("{:.2}", batched / single),
    ]);
    out["raw"] = json!({"singleCommitsPerSecond": single, "batchedRowsPerSecond": batched});
    let commit_us = 1e6 / single;
    let high = args.concurrency.max(1);
    // The engine's own SQL, no engine: the reference of the orchestration figures.
    let mut engine_sql = std::collections::BTreeMap::new();
    if wants("orchestration") {
        for batch in [1, high] {
            say!("bench: the engine's batch SQL alone, {batch} saga(s) per commit...");
            let rounds = if batch == 1 { 2_000 } else { 400 };
            let tps = run::engine_sql(batch, rounds).await?;
            table.row(vec![
                format!("engine SQL alone, {batch} per commit: transitions/s"),
                format!("{tps:.0}"),
                format!("{:.2}", tps / single),
            ]);
            out[format!("engineSqlBatch{batch}")] = json!({"transitionsPerSecond": tps});
            engine_sql.insert(batch, tps);
        }
    }
    if wants("orchestration") {
        let c1_n = n.min(1000);
        let label_high = format!("concurrency {high}");
        for (label, purchases, concurrency) in
            [("concurrency 1", c1_n, 1), (label_high.as_str(), n, high)]
        {
            say!("bench: orchestration, {purchases} no-op purchases at {label}...");
            let o = run::orchestration(purchases, concurrency).await?;
            let tps = o.transitions as f64 / o.seconds;
            let sql = engine_sql.get(&concurrency).copied().unwrap_or(single);
            table.row(vec![
                format!("orchestration {label}: purchases/s (n={purchases})"),
                format!("{:.0}", purchases as f64 / o.seconds),
                String::new(),
            ]);
            table.row(vec![
                format!("orchestration {label}: transitions/s (ratio: to the engine SQL alone)"),
                format!("{tps:.0}"),
                format!("{:.2}", tps / sql),
            ]);
            // One commit of the engine SQL alone at this batch size: what a transition waits
            // for at the least.
            let sql_us = 1e6 * concurrency as f64 / sql;
            table.row(vec![
                format!("orchestration {label}: per-transition p50 / p99 (ratio: to the engine SQL alone)"),
                format!("{:.0} µs / {:.0} µs", o.p50_us, o.p99_us),
                format!("{:.2} / {:.2}", o.p50_us / sql_us, o.p99_us / sql_us),
            ]);
            out[format!("orchestrationC{concurrency}")] = json!({"purchases": purchases, "seconds": o.seconds, "transitionsPerSecond": tps, "p50Micros": o.p50_us, "p99Micros": o.p99_us, "ratioToEngineSql": tps / sql});
        }
    }
    // The light measurements come first and end to end last: RSS is per process, and the
    // allocator keeps what the end-to-end phase (simulator included) used.
    if wants("backlog") {
        for parked in [1_000, 10_000, 100_000] {
            say!("bench: backlog of {parked} parked sagas...");
            let b = run::backlog(parked, 200).await?;
            table.row(vec![
                format!("backlog {parked}: claim a due saga p50 / p99"),
                format!("{:.0} µs / {:.0} µs", b.claim_p50_us, b.claim_p99_us),
                format!(
                    "{:.2} / {:.2}",
                    b.claim_p50_us / commit_us,
                    b.claim_p99_us / commit_us
                ),
            ]);
            table.row(vec![
                format!("backlog {parked}: RSS"),
                format!("{:.0} MB", b.rss_mb),
                String::new(),
            ]);
            out[format!("backlog{parked}")] = json!({"claimP50Micros": b.claim_p50_us, "claimP99Micros": b.claim_p99_us, "rssMb": b.rss_mb});
        }
    }
    if wants("inspect") {
        for purchases in [100_000_u64, 1_000_000] {
            say!("bench: list and show on {purchases} purchases (filling the database)...");
            let i = run::inspect(purchases, 20).await?;
            for (filter, p50, p99) in &i.list {
                table.row(vec![
                    format!("list {filter}, {purchases} purchases: p50 / p99"),
                    format!("{p50:.1} ms / {p99:.1} ms"),
                    format!("{:.1}", p50 * 1e3 / commit_us),
                ]);
            }
            table.row(vec![
                format!("show, {purchases} purchases: p50 / p99"),
                format!("{:.2} ms / {:.2} ms", i.show_p50_ms, i.show_p99_ms),
                format!("{:.1}", i.show_p50_ms * 1e3 / commit_us),
            ]);
            out[format!("inspect{purchases}")] = json!({
                "list": i.list.iter().map(|(f, p50, p99)| json!({"filter": f, "p50Ms": p50, "p99Ms": p99})).collect::<Vec<_>>(),
                "showP50Ms": i.show_p50_ms, "showP99Ms": i.show_p99_ms,
            });
        }
    }
    if wants("recovery") {
        say!("bench: recovery with 10000 sagas in flight...");
        let r = run::recovery(10_000).await?;
        table.row(vec![
            "recovery 10000 in flight: first step after start".into(),
            format!("{:.0} ms", r.first_step_ms),
            String::new(),
        ]);
        table.row(vec![
            "recovery 10000 in flight: all due work claimed".into(),
            format!("{:.0} ms", r.all_claimed_ms),
            String::new(),
        ]);
        out["recovery"] = json!({"inFlight": r.in_flight, "firstStepMs": r.first_step_ms, "allClaimedMs": r.all_claimed_ms});
    }
    if wants("e2e") {
        for (latency, purchases) in [(0, n), (50, (n / 20).clamp(50, 500))] {
            say!("bench: end to end, {purchases} purchases, {latency} ms latency per call...");
            let e = run::end_to_end(purchases, latency).await?;
            table.row(vec![
                format!(
                    "e2e {latency} ms: purchases/s (n={purchases}, {} succeeded)",
                    e.succeeded
                ),
                format!("{:.0}", purchases as f64 / e.seconds),
                format!("{:.3}", purchases as f64 / e.seconds / single),
            ]);
            table.row(vec![
                format!("e2e {latency} ms: Partner Center calls/s"),
                format!("{:.0}", e.calls as f64 / e.seconds),
                format!("{:.2}", e.calls as f64 / e.seconds / single),
            ]);
            table.row(vec![
                format!("e2e {latency} ms: purchase latency p50 / p99"),
                format!("{:.3} s / {:.3} s", e.p50_s, e.p99_s),
                String::new(),
            ]);
            table.row(vec![
                format!("e2e {latency} ms: peak RSS (process, simulator included)"),
                format!("{:.0} MB", e.peak_rss_mb),
                String::new(),
            ]);
            out[format!("e2e{latency}ms")] = json!({"purchases": purchases, "succeeded": e.succeeded, "seconds": e.seconds, "calls": e.calls, "p50Seconds": e.p50_s, "p99Seconds": e.p99_s, "peakRssMb": e.peak_rss_mb});
        }
    }
    if wants("throttled") {
        throttled_phase(n, &mut table, &mut out).await?;
    }
    if wants("postgres") {
        let p = crate::bench::postgres::measure(n, high).await?;
        for (label, figure) in [
            (
                format!("orchestration c{high}, one daemon on SQLite: transitions/s"),
                p.sqlite_one,
            ),
            (
                format!("orchestration c{high}, one daemon on PostgreSQL: transitions/s"),
                p.postgres_one,
            ),
            (
                format!("orchestration c{high}, three daemons on PostgreSQL: transitions/s"),
                p.postgres_three,
            ),
        ] {
            table.row(vec![
                label,
                format!("{figure:.0}"),
                format!("{:.2}", figure / single),
            ]);
        }
        table.row(vec![
            "three daemons on PostgreSQL / one daemon on SQLite (bar: >= 1)".into(),
            format!("{:.2}", p.postgres_three / p.sqlite_one),
            String::new(),
        ]);
        table.row(vec![
            format!(
                "e2e, one daemon: purchases/s on SQLite / on PostgreSQL (n={})",
                n.min(2000)
            ),
            format!("{:.0} / {:.0}", p.e2e_sqlite, p.e2e_postgres),
            format!(
                "{:.3} / {:.3}",
                p.e2e_sqlite / single,
                p.e2e_postgres / single
            ),
        ]);
        out["postgres"] = json!({"sqliteOneTps": p.sqlite_one, "postgresOneTps": p.postgres_one, "postgresThreeTps": p.postgres_three, "e2eSqlitePerSecond": p.e2e_sqlite, "e2ePostgresPerSecond": p.e2e_postgres});
    }
    if wants("reconcile") {
        // 100,000 lines against 10,000 purchases at the default n.
        let purchases = n;
        for (label, graph) in [("v1 pages (E26)", false), ("Graph export (E29)", true)] {
            say!(
                "bench: reconcile {} lines against {purchases} purchases through {label}...",
                purchases * 10
            );
            let r = crate::bench::reconcile::reconcile(purchases, 10, graph).await?;
            let rate = r.lines as f64 / r.seconds;
            table.row(vec![
                format!(
                    "reconcile, {label}: {} lines / {} purchases, all matched",
                    r.lines, r.purchases
                ),
                format!("{:.1} s ({rate:.0} lines/s)", r.seconds),
                format!("{:.3}", rate / batched),
            ]);
            table.row(vec![
                format!("reconcile, {label}: peak RSS during the run (pcsaga; the simulator runs apart)"),
                format!("{:.0} MB (at its start {:.0} MB)", r.peak_rss_mb, r.start_rss_mb),
                String::new(),
            ]);
            out[if graph {
                "reconcileGraph"
            } else {
                "reconcileV1"
            }] = json!({"purchases": r.purchases, "lines": r.lines, "matched": r.matched, "seconds": r.seconds, "linesPerSecond": rate, "peakRssMb": r.peak_rss_mb, "startRssMb": r.start_rss_mb, "setupSeconds": r.setup_seconds});
        }
    }
    let (_, peak) = run::rss_mb();
    out["peakRssMb"] = json!(peak);
    if args.json {
        print_json(&out);
    } else {
        print(&format!("{}\nmachine: {} cores; ratios: rates are divided by raw single-row commits/s, times by one raw commit ({commit_us:.0} µs)\n", table.render(), std::thread::available_parallelism().map_or(0, |n| n.get())));
    }
    Ok(Exit::Ok)
}

/// The `throttled` phase: `n` purchases (10,000 by default) against a throttling simulator,
/// then the mixed load (one customer with 2,000, fifty with 5). Bars in BENCHMARKS.md.
async fn throttled_phase(
    n: usize,
    table: &mut Table,
    out: &mut serde_json::Value,
) -> Result<(), Failed> {
    use crate::bench::throttled::throttled;
    say!("bench: throttled, {n} purchases against budgets per call class, 20-80 ms latency...");
    let t = throttled(n, false).await?;
    let calls = t.calls();
    let share_429 = t.throttled() as f64 / calls.max(1) as f64;
    table.row(vec![
        format!(
            "throttled n={}: completion / least the budgets allow",
            t.purchases
        ),
        format!(
            "{:.1} s / {:.1} s (strict bound {:.1} s)",
            t.seconds, t.minimum_s, t.bound_s
        ),
        format!("{:.3}x", t.seconds / t.minimum_s.max(1e-9)),
    ]);
    table.row(vec![
        "throttled: calls answered 429".into(),
        format!("{} of {calls} ({:.2}%)", t.throttled(), share_429 * 100.0),
        String::new(),
    ]);
    table.row(vec![
        "throttled: calls per purchase (answered)".into(),
        format!(
            "{:.2}",
            (calls - t.throttled()) as f64 / t.purchases.max(1) as f64
        ),
        String::new(),
    ]);
    table.row(vec![
        "throttled: purchases by status; stopped for throttling".into(),
        format!(
            "{}; {}",
            t.by_status
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            t.stopped_for_throttling
        ),
        String::new(),
    ]);
    for c in &t.classes {
        table.row(vec![
            format!("throttled: {} calls (budget {}/min)", c.class, c.per_minute),
            format!("{} answered, {} 429", c.needed, c.throttled),
            format!(
                "{:.1} s",
                c.needed as f64 / (f64::from(c.per_minute) / 60.0)
            ),
        ]);
    }
    out["throttled"] = json!({
        "purchases": t.purchases, "seconds": t.seconds, "minimumSeconds": t.minimum_s,
        "boundSeconds": t.bound_s, "calls": calls, "throttled": t.throttled(),
        "byStatus": t.by_status, "stoppedForThrottling": t.stopped_for_throttling,
        "classes": t.classes.iter().map(|c| json!({"class": c.class, "answered": c.needed, "throttled": c.throttled, "perMinute": c.per_minute})).collect::<Vec<_>>(),
    });
    let big = (n / 5).max(10);
    say!("bench: throttled, mixed load: one customer with {big} purchases, 50 with 5 each...");
    let m = throttled(big, true).await?;
    if let Some((done, total)) = m.big_done_at_last_small {
        table.row(vec![
            format!(
                "mixed: big customer's purchases done when the last of 50 small customers finished"
            ),
            format!(
                "{done} of {total} ({:.1}%)",
                done as f64 * 100.0 / total.max(1) as f64
            ),
            String::new(),
        ]);
        table.row(vec![
            "mixed: completion / least the budgets allow; 429s".into(),
            format!(
                "{:.1} s / {:.1} s; {} of {}",
                m.seconds,
                m.minimum_s,
                m.throttled(),
                m.calls()
            ),
            format!("{:.3}x", m.seconds / m.minimum_s.max(1e-9)),
        ]);
        out["throttledMixed"] = json!({"bigDone": done, "bigTotal": total, "seconds": m.seconds, "minimumSeconds": m.minimum_s, "byStatus": m.by_status, "throttled": m.throttled(), "calls": m.calls()});
    }
    Ok(())
}
