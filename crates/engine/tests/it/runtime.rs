//! The runtime: timers, retries, intents, fencing, leases and operator actions.

use std::time::Duration;

use pcsaga_engine::store::{Change, Commit, SagaUpdate, Writer};
use pcsaga_engine::{Clock, Error, SagaStatus, Store, StoreError};

use crate::support::{harness, harness_on, Answer, Backend};

// The runtime's rules hold on both stores: each test below runs on SQLite and on PostgreSQL.
crate::on_both_stores!(
    a_saga_runs_to_its_timer_and_the_clock_moves_it_on,
    the_same_idempotency_key_returns_the_first_saga,
    side_effecting_calls_commit_their_intent_first_and_reuse_it_on_retry,
    exhausted_retries_follow_the_policy,
    a_stale_worker_cannot_commit,
    a_dead_workers_saga_is_picked_up_after_its_lease,
    operators_resume_and_cancel_only_what_is_safe,
    operators_cannot_write_over_a_live_lease,
    two_engines_on_one_file_never_run_a_saga_twice,
    a_worker_stalled_past_its_lease_is_fenced,
    an_id_or_a_unique_prefix_names_a_saga,
    claims_keep_room_for_other_customers_while_one_holds_its_share,
);

async fn a_saga_runs_to_its_timer_and_the_clock_moves_it_on<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k1").await;
    h.answer(&[Answer::Ok, Answer::NotYet, Answer::Ok]);
    assert_eq!(h.engine.run_due().await.expect("run"), 1);
    let saga = h.engine.get(&id).await.expect("saga");
    assert_eq!(
        (saga.state.as_str(), saga.status),
        ("Wait", SagaStatus::Active)
    );
    assert!(saga
        .wait_reason
        .as_deref()
        .is_some_and(|w| w.contains("not yet")));
    assert!(saga.lease_owner.is_none(), "a waiting saga holds no lease");
    // Nothing is due until the poll interval passes; no task sleeps meanwhile.
    assert_eq!(h.engine.run_due().await.expect("run"), 0);
    h.clock.advance(Duration::from_secs(10));
    assert_eq!(h.engine.run_due().await.expect("run"), 1);
    assert_eq!(
        h.engine.get(&id).await.expect("saga").status,
        SagaStatus::Succeeded
    );
    let kinds: Vec<String> = h
        .engine
        .history(&id)
        .await
        .expect("history")
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "submitted",
            "claimed",
            "transition",
            "intent",
            "transition",
            "transition",
            "claimed",
            "transition"
        ]
    );
}

async fn the_same_idempotency_key_returns_the_first_saga<B: Backend>() {
    let h = B::harness("w1").await;
    let first = h
        .engine
        .submit("same", "{}".into(), &Default::default(), None)
        .await
        .expect("submit");
    let second = h
        .engine
        .submit("same", "{\"other\":1}".into(), &Default::default(), None)
        .await
        .expect("submit");
    assert!(first.created && !second.created);
    assert_eq!(first.saga.id, second.saga.id);
    assert_eq!(second.saga.input, "{}");
}

async fn side_effecting_calls_commit_their_intent_first_and_reuse_it_on_retry<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k").await;
    h.answer(&[
        Answer::Transient,
        Answer::Throttled(Duration::from_secs(20)),
        Answer::Ok,
        Answer::Ok,
    ]);
    h.engine.run_due().await.expect("run");
    let saga = h.engine.get(&id).await.expect("saga");
    assert_eq!((saga.state.as_str(), saga.attempt), ("Pay", 1));
    assert_eq!(
        saga.next_run_at,
        Some(crate::support::t0() + chrono::Duration::seconds(1)),
        "1s backoff"
    );
    h.clock.advance(Duration::from_secs(1));
    h.engine.run_due().await.expect("run");
    // Retry-After (20s) beats the 2s backoff.
    assert_eq!(
        h.engine.get(&id).await.expect("saga").next_run_at,
        Some(crate::support::t0() + chrono::Duration::seconds(21))
    );
    h.clock.advance(Duration::from_secs(19));
    assert_eq!(
        h.engine.run_due().await.expect("run"),
        0,
        "not before Retry-After"
    );
    h.clock.advance(Duration::from_secs(1));
    h.engine.run_due().await.expect("run");
    let pays: Vec<_> = h.calls().into_iter().filter(|c| c.0 == "pay").collect();
    assert_eq!(pays.len(), 3);
    assert!(
        pays.iter().all(|c| c.2),
        "every pay call had its intent committed before it ran"
    );
    assert!(
        pays.iter().all(|c| c.1 == pays[0].1),
        "one request id for every retry"
    );
    let history = h.engine.history(&id).await.expect("history");
    assert_eq!(history.iter().filter(|r| r.kind == "intent").count(), 3);
    assert_eq!(
        h.engine.get(&id).await.expect("saga").status,
        SagaStatus::Succeeded
    );
}

async fn exhausted_retries_follow_the_policy<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k").await;
    h.answer(&[Answer::Transient; 4]);
    for _ in 0..4 {
        h.engine.run_due().await.expect("run");
        h.clock.advance(Duration::from_secs(60));
    }
    let saga = h.engine.get(&id).await.expect("saga");
    assert_eq!(
        saga.status,
        SagaStatus::NeedsAttention,
        "Pay parks when its attempts run out"
    );
    assert!(saga
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("4 attempts in Pay failed")));
    assert!(saga.next_run_at.is_none());
}

async fn a_stale_worker_cannot_commit<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k").await;
    let now = h.clock.now();
    let lease_until = now + chrono::Duration::seconds(30);
    let claimed = h
        .store
        .claim_due("stale", now, lease_until, 10)
        .await
        .expect("claim");
    let saga = claimed.into_iter().next().expect("claimed");
    // Its lease runs out; another worker claims and commits.
    h.clock.advance(Duration::from_secs(31));
    let now = h.clock.now();
    let fresh = h
        .store
        .claim_due("fresh", now, now + chrono::Duration::seconds(30), 10)
        .await
        .expect("claim");
    assert_eq!(fresh.len(), 1, "an expired lease makes the saga due again");
    let update = SagaUpdate {
        state: "Done".into(),
        status: SagaStatus::Succeeded,
        context: saga.context.clone(),
        attempt: 0,
        total_attempts: 1,
        state_entered_at: now,
        next_run_at: None,
        last_error: None,
        wait_reason: None,
        definition: 1,
        context_schema: 1,
    };
    let stale = Commit {
        id: id.clone(),
        expected_version: saga.version,
        writer: Writer::Worker {
            owner: "stale".into(),
            lease_until: None,
        },
        now,
        change: Change::Saga(update.clone()),
        events: vec![],
    };
    assert!(matches!(
        h.store.commit(stale).await,
        Err(StoreError::Fenced { .. })
    ));
    // Even with the right version, a lease that expired cannot commit.
    let expired = Commit {
        id: id.clone(),
        expected_version: fresh[0].version,
        writer: Writer::Worker {
            owner: "fresh".into(),
            lease_until: None,
        },
        now: now + chrono::Duration::seconds(31),
        change: Change::Saga(update),
        events: vec![],
    };
    assert!(matches!(
        h.store.commit(expired).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        h.engine.get(&id).await.expect("saga").status,
        SagaStatus::Active
    );
}

async fn a_dead_workers_saga_is_picked_up_after_its_lease<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k").await;
    let now = h.clock.now();
    h.store
        .claim_due("dead", now, now + chrono::Duration::seconds(30), 10)
        .await
        .expect("claim");
    assert_eq!(
        h.engine.run_due().await.expect("run"),
        0,
        "leased elsewhere"
    );
    h.clock.advance(Duration::from_secs(31));
    h.answer(&[Answer::Ok, Answer::Ok]);
    assert_eq!(h.engine.run_due().await.expect("run"), 1);
    assert_eq!(
        h.engine.get(&id).await.expect("saga").status,
        SagaStatus::Succeeded
    );
}

async fn operators_resume_and_cancel_only_what_is_safe<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k").await;
    // Not failed: nothing to resume.
    assert!(matches!(
        h.engine.resume(&id, None, "why").await,
        Err(Error::Refused(_))
    ));
    h.answer(&[Answer::Permanent]);
    h.engine.run_due().await.expect("run");
    let failed = h.engine.get(&id).await.expect("saga");
    assert_eq!(failed.status, SagaStatus::Failed);
    // A request id was persisted: the workflow refuses cancellation.
    let refused = h.engine.cancel(&id, "customer changed their mind").await;
    assert!(
        matches!(&refused, Err(Error::Refused(r)) if r.contains("payment may have been sent")),
        "{refused:?}"
    );
    assert!(
        matches!(h.engine.resume(&id, Some("Nowhere"), "x").await, Err(Error::Refused(r)) if r.contains("no state"))
    );
    let resumed = h
        .engine
        .resume(&id, None, "fixed the cause")
        .await
        .expect("resume");
    assert_eq!(
        (resumed.status, resumed.state.as_str(), resumed.attempt),
        (SagaStatus::Active, "Pay", 0)
    );
    let last = h
        .engine
        .history(&id)
        .await
        .expect("history")
        .pop()
        .expect("row");
    assert_eq!(
        (last.kind.as_str(), last.detail.as_deref()),
        ("operator", Some("resume: fixed the cause"))
    );

    let other = h.submit("k2").await;
    let cancelled = h
        .engine
        .cancel(&other, "duplicate order")
        .await
        .expect("cancel before anything was sent");
    assert_eq!(cancelled.status, SagaStatus::Cancelled);
    assert_eq!(
        h.engine.run_due().await.expect("run"),
        1,
        "only the resumed saga runs"
    );
}

async fn operators_cannot_write_over_a_live_lease<B: Backend>() {
    let h = B::harness("w1").await;
    let id = h.submit("k").await;
    let now = h.clock.now();
    h.store
        .claim_due("busy", now, now + chrono::Duration::seconds(30), 10)
        .await
        .expect("claim");
    let refused = h.engine.cancel(&id, "stop").await;
    assert!(
        matches!(&refused, Err(Error::Refused(r)) if r.contains("being worked on")),
        "{refused:?}"
    );
}

async fn two_engines_on_one_file_never_run_a_saga_twice<B: Backend>() {
    // Few sagas per claim, so the two engines' claims interleave and both do work.
    let first = B::harness("setup").await;
    let h1 = B::another(&first, "w1", |c| c.concurrency = 4).await;
    let h2 = B::another(&first, "w2", |c| c.concurrency = 4).await;
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(h1.submit(&format!("k{n}")).await);
    }
    h1.answer(&[Answer::Ok; 80]);
    h2.answer(&[Answer::Ok; 80]);
    // The first engine's first call stalls while it holds its claim of four; the second
    // engine runs meanwhile. Both must then have worked, and nothing twice.
    let stall = std::sync::Arc::new(tokio::sync::Notify::new());
    h1.script
        .lock()
        .expect("script")
        .stall
        .push_back(stall.clone());
    let first = {
        let engine = h1.engine.clone();
        tokio::spawn(async move { engine.run_due().await })
    };
    crate::support::until("the first engine's call", || !h1.calls().is_empty()).await;
    h2.engine.run_due().await.expect("run 2");
    stall.notify_one();
    first.await.expect("task").expect("run 1");
    h1.clock.advance(Duration::from_secs(10));
    let pays_1 = h1.calls().into_iter().filter(|c| c.0 == "pay").count();
    let pays_2 = h2.calls().into_iter().filter(|c| c.0 == "pay").count();
    assert_eq!(
        pays_1 + pays_2,
        40,
        "each saga paid exactly once across both engines"
    );
    assert!(
        pays_1 > 0 && pays_2 > 0,
        "both engines worked: {pays_1} and {pays_2} payments"
    );
}

/// Goal: a worker stalled past its lease cannot commit what it did. Method: the first worker's
/// call stalls; the clock passes the lease; a second worker claims the saga and finishes it;
/// then the first worker's call returns and its commit must be refused (fenced).
async fn a_worker_stalled_past_its_lease_is_fenced<B: Backend>() {
    let h = B::harness("slow").await;
    let id = h.submit("k").await;
    let stall = std::sync::Arc::new(tokio::sync::Notify::new());
    h.script
        .lock()
        .expect("script")
        .stall
        .push_back(stall.clone());
    let now = h.clock.now();
    let claimed = h
        .store
        .claim_due("slow", now, now + chrono::Duration::seconds(30), 1)
        .await
        .expect("claim");
    let saga = claimed.into_iter().next().expect("claimed");
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let engine = h.engine.clone();
    let slow = tokio::spawn(async move { engine.drive(saga, &shutdown).await });
    // Let the slow worker reach its stalled call (it commits Start -> Pay and the intent first).
    crate::support::until("the first call", || !h.calls().is_empty()).await;
    h.clock.advance(Duration::from_secs(31));
    let fast = harness_on(
        tempfile::tempdir().expect("dir"),
        h.store.clone(),
        "fast",
        h.clock.clone(),
    )
    .await;
    fast.answer(&[Answer::Ok, Answer::Ok]);
    assert_eq!(fast.engine.run_due().await.expect("run"), 1);
    assert_eq!(
        h.engine.get(&id).await.expect("saga").status,
        SagaStatus::Succeeded
    );
    stall.notify_one();
    let outcome = slow.await.expect("task").expect("drive");
    assert_eq!(
        outcome,
        pcsaga_engine::Driven::Fenced,
        "the stalled worker's commit was refused"
    );
    assert_eq!(
        h.engine.get(&id).await.expect("saga").status,
        SagaStatus::Succeeded,
        "and changed nothing"
    );
}

/// Goal: a saga waiting for a call slot keeps its lease, so its call's outcome can be
/// committed. Method: one call slot; A's call stalls while B waits; the clock moves 25 s of
/// B's 30 s lease; A is released, B gets the slot and renews its lease before calling; B's
/// call stalls past the original lease; B's outcome still commits.
#[tokio::test]
async fn a_saga_waiting_for_a_call_slot_keeps_its_lease() {
    let dir = tempfile::tempdir().expect("dir");
    let store =
        pcsaga_engine::SqliteStore::open(pcsaga_engine::SqliteConfig::new(dir.path().join("t.db")))
            .await
            .expect("store");
    let clock = std::sync::Arc::new(pcsaga_engine::ManualClock::at(crate::support::t0()));
    let h = crate::support::harness_with(dir, store, "w", clock, |c| {
        c.max_calls_in_flight = 1;
        c.concurrency = 2;
    })
    .await;
    let a = h.submit("a").await;
    let b = h.submit("b").await;
    let (stall_a, stall_b) = (
        std::sync::Arc::new(tokio::sync::Notify::new()),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    h.script
        .lock()
        .expect("script")
        .stall
        .extend([stall_a.clone(), stall_b.clone()]);
    let engine = h.engine.clone();
    let run = tokio::spawn(async move { engine.run_due().await });
    crate::support::until("the first call", || !h.calls().is_empty()).await;
    h.clock.advance(Duration::from_secs(25));
    stall_a.notify_one();
    crate::support::until("the second call", || h.calls().len() >= 2).await;
    h.clock.advance(Duration::from_secs(10));
    stall_b.notify_one();
    h.answer(&[Answer::Ok; 4]);
    run.await.expect("task").expect("run");
    let (first, second) = (
        h.engine.get(&a).await.expect("a"),
        h.engine.get(&b).await.expect("b"),
    );
    // Neither lost its lease: each was claimed once and committed everything in that claim.
    for saga in [&first, &second] {
        let history = h.engine.history(&saga.id).await.expect("history");
        let claims = history.iter().filter(|r| r.kind == "claimed").count();
        assert_eq!(
            claims, 1,
            "{} was fenced and claimed again: {history:#?}",
            saga.idempotency_key
        );
    }
    assert!(
        [first.status, second.status]
            .iter()
            .all(|s| *s == SagaStatus::Succeeded),
        "both finished: {:?} {:?} / {:?} {:?}",
        first.status,
        first.last_error,
        second.status,
        second.last_error
    );
}

async fn an_id_or_a_unique_prefix_names_a_saga<B: Backend>() {
    let h = B::harness("w1").await;
    let ids = [
        h.submit("a").await,
        h.submit("b").await,
        h.submit("c").await,
    ];
    for id in &ids {
        assert_eq!(&h.engine.resolve(id).await.expect("exact"), id);
        let prefix = &id[..id.len() - 1];
        assert_eq!(&h.engine.resolve(prefix).await.expect("prefix"), id);
    }
    // Time-ordered ids of sagas submitted together share their first characters.
    let common = &ids[0][..1];
    match h.engine.resolve(common).await {
        Err(pcsaga_engine::Error::Ambiguous { matches, more, .. }) => {
            let mut sorted = ids.to_vec();
            sorted.sort();
            assert_eq!(matches, sorted);
            assert!(!more);
        }
        other => panic!("expected an ambiguous prefix, got {other:?}"),
    }
    assert!(matches!(
        h.engine.resolve("zz").await,
        Err(pcsaga_engine::Error::NotFound(_))
    ));
    assert!(matches!(
        h.engine.resolve(" ").await,
        Err(pcsaga_engine::Error::NotFound(_))
    ));
}

/// Goal: one customer's large batch does not hold every slot of the daemon while another
/// customer's purchases are due. Method: 20 sagas of `big`, then one each of three small
/// customers, all due at once; four slots; every call stalls until the test releases it, one
/// at a time, so what is in flight when each claim happens is fixed. Oldest-first claiming
/// alone would start the small customers' sagas after all 20 of `big`.
async fn claims_keep_room_for_other_customers_while_one_holds_its_share<B: Backend>() {
    let first = B::harness("setup").await;
    let h = B::another(&first, "fair", |c| c.concurrency = 4).await;
    let mut owners = std::collections::HashMap::new();
    for i in 0..20 {
        owners.insert(
            h.submit_for(&format!("big-{i}"), "big").await,
            "big".to_owned(),
        );
    }
    for small in ["s1", "s2", "s3"] {
        owners.insert(h.submit_for(small, small).await, small.to_owned());
    }
    // Two calls per saga (pay, look), each stalled until released.
    let gates: Vec<_> = (0..owners.len() * 2)
        .map(|_| std::sync::Arc::new(tokio::sync::Notify::new()))
        .collect();
    h.script.lock().expect("script").stall = gates.iter().cloned().collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = h.engine.clone();
    let daemon = tokio::spawn(async move { engine.run(stopped).await });
    for (released, gate) in gates.iter().enumerate() {
        let script = h.script.clone();
        crate::support::until("the next call starts", || {
            script.lock().expect("script").sagas.len() > released
        })
        .await;
        gate.notify_one();
    }
    for _ in 0..1000 {
        let counts = h.store.count_by_status().await.expect("counts");
        if counts.get(&SagaStatus::Succeeded) == Some(&23) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).expect("stop");
    daemon.await.expect("task").expect("run");
    let sagas = h.script.lock().expect("script").sagas.clone();
    // The customers in the order their sagas made their first call.
    let mut first: Vec<&str> = Vec::new();
    for id in &sagas {
        if !first.contains(&id.as_str()) {
            first.push(id);
        }
    }
    let order: Vec<&str> = first.iter().map(|id| owners[*id].as_str()).collect();
    let last_small = order
        .iter()
        .rposition(|o| *o != "big")
        .expect("the small customers ran");
    // Four slots: `big` fills them first; from then on each freed slot goes to a customer
    // under its share (slots freed together are filled together, so `big` may get one of them).
    assert!(
        last_small < 10,
        "every small customer started among the first 10 sagas, not after the big batch: {order:?}"
    );
    assert_eq!(order.len(), 23);
}

/// Rewrites a saga's row as another release would have: `state` and `definition`, due now.
async fn written_by_another_release(
    h: &crate::support::Harness,
    id: &str,
    state: &str,
    definition: u32,
) {
    let saga = h.engine.get(id).await.expect("saga");
    let now = h.clock.now();
    let commit = Commit {
        id: id.to_owned(),
        expected_version: saga.version,
        writer: Writer::Operator,
        now,
        change: Change::Saga(SagaUpdate {
            state: state.into(),
            status: SagaStatus::Active,
            context: saga.context.clone(),
            attempt: 0,
            total_attempts: 0,
            state_entered_at: now,
            next_run_at: Some(now),
            last_error: None,
            wait_reason: None,
            definition,
            context_schema: 1,
        }),
        events: vec![],
    };
    h.store.commit(commit).await.expect("written");
}

/// Goal: a saga this binary cannot continue (a state it does not know, or a newer release's
/// definition) is parked without any call, keeps what it had for the release that can, and
/// is listed by `incompatible` (what `check-upgrade` prints). Method: rows written through
/// the store as another release would; then the engine runs what is due.
#[tokio::test]
async fn sagas_this_binary_cannot_continue_are_parked_without_a_call() {
    let h = harness("w1").await;
    let renamed = h.submit("renamed").await;
    let newer = h.submit("newer").await;
    let fine = h.submit("fine").await;
    written_by_another_release(&h, &renamed, "Settle", 1).await;
    written_by_another_release(&h, &newer, "Pay", 2).await;
    let listed: Vec<(String, String)> = h
        .engine
        .incompatible()
        .await
        .expect("incompatible")
        .into_iter()
        .map(|(s, why)| (s.id, why))
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|(id, why)| id == &renamed
                && why.contains("\"Settle\" is not one this binary knows"))
    );
    assert!(listed
        .iter()
        .any(|(id, why)| id == &newer && why.contains("newer release (workflow definition 2")));

    h.engine.run_due().await.expect("run");
    for (id, why) in [(&renamed, "Settle"), (&newer, "definition 2")] {
        let saga = h.engine.get(id).await.expect("saga");
        assert_eq!(saga.status, SagaStatus::NeedsAttention);
        let reason = saga.last_error.unwrap_or_default();
        assert!(
            reason.contains("cannot continue the saga") && reason.contains(why),
            "{reason}"
        );
    }
    let calls = h.calls();
    assert_eq!(
        calls.len(),
        2,
        "only the compatible saga called (pay, look): {calls:?}"
    );
    assert_eq!(
        h.engine.get(&fine).await.expect("saga").status,
        SagaStatus::Succeeded
    );
    // Parking kept the newer release's definition: an older binary never passes it off as its own.
    assert_eq!(h.engine.get(&newer).await.expect("saga").definition, 2);
    let refused = h
        .engine
        .resume(&newer, Some("Pay"), "try")
        .await
        .expect_err("a newer release's purchase");
    assert!(refused.to_string().contains("newer release"), "{refused}");
}

/// Goal: an idle daemon on PostgreSQL wakes when another process submits work, rather than
/// at its next poll. Method: engine A runs with an idle poll of an hour; engine B, on another
/// handle of the database, submits a saga; A claims and finishes it (bounded wait of 20 s: a
/// missed notification would leave it asleep for the hour).
#[tokio::test]
async fn an_idle_daemon_on_postgres_wakes_when_work_is_submitted_elsewhere() {
    use crate::support::{Backend, Postgres};
    let first = Postgres::harness("setup").await;
    let idle = Postgres::another(&first, "idle", |c| {
        c.idle_poll = Duration::from_secs(3600);
    })
    .await;
    let submitter = Postgres::another(&first, "other", |_| {}).await;
    idle.answer(&[Answer::Ok, Answer::Ok]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = {
        let engine = idle.engine.clone();
        tokio::spawn(async move { engine.run(stopped).await })
    };
    // Let the idle engine reach its wait (it finds nothing due).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = submitter.submit("late").await;
    let finished = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let saga = submitter.engine.get(&id).await.expect("saga");
            if saga.status == SagaStatus::Succeeded {
                return saga;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = stop.send(true);
    runner.await.expect("task").expect("run");
    let saga = finished.expect("the idle engine woke on the notification and finished the saga");
    assert_eq!(saga.status, SagaStatus::Succeeded);
    assert_eq!(idle.calls().len(), 2, "the idle engine made the calls");
}
