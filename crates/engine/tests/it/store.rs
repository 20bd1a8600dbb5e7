//! The SQLite store on its own: durability settings, permissions, integrity, group commit.

use pcsaga_engine::{SqliteConfig, SqliteStore, Store, StoreError};

use crate::support::{harness, Backend};

// The store's contract, on both stores.
crate::on_both_stores!(
    a_batch_of_commits_applies_each_fences_the_stale_one_and_keeps_history_order,
    a_lease_change_writes_the_lease_columns_only,
    concurrent_claims_never_hand_out_a_saga_twice,
    an_engine_claims_only_its_own_workflows_sagas,
    lists_counts_and_due_times_agree,
);

/// Goal: the reads operators rely on give the same answers on both stores. Method: sagas of
/// two customers, one claimed and moved on; every filter of `list`, the bounded count, the due
/// time and the counts by status and state.
async fn lists_counts_and_due_times_agree<B: Backend>() {
    use pcsaga_engine::{ListFilter, SagaStatus};
    let h = B::harness("w1").await;
    for n in 0..5 {
        h.submit_for(&format!("a{n}"), "alpha").await;
    }
    for n in 0..3 {
        h.submit_for(&format!("b{n}"), "beta").await;
    }
    let now = crate::support::t0();
    assert_eq!(h.store.next_due().await.expect("due"), Some(now));
    let list = |filter: ListFilter| {
        let store = h.store.clone();
        async move { store.list(&filter).await.expect("list") }
    };
    assert_eq!(list(ListFilter::default()).await.len(), 8);
    let beta = list(ListFilter {
        customer_id: Some("beta".into()),
        ..ListFilter::default()
    })
    .await;
    assert_eq!(beta.len(), 3);
    assert!(
        beta.windows(2)
            .all(|w| (w[0].created_at, &w[0].id) >= (w[1].created_at, &w[1].id)),
        "newest first"
    );
    let limited = ListFilter {
        status: Some(SagaStatus::Active),
        limit: 2,
        ..ListFilter::default()
    };
    assert_eq!(list(limited.clone()).await.len(), 2);
    assert_eq!(h.store.count(&limited, 100).await.expect("count"), 8);
    assert_eq!(
        h.store.count(&limited, 5).await.expect("count"),
        5,
        "capped"
    );
    assert_eq!(
        list(ListFilter {
            workflow: Some("test".into()),
            state: Some("Start".into()),
            created_after: Some(now),
            ..ListFilter::default()
        })
        .await
        .len(),
        8
    );
    let by_status = h.store.count_by_status().await.expect("counts");
    assert_eq!(by_status.get(&SagaStatus::Active), Some(&8));
    let by_state = h.store.count_active_by_state(now).await.expect("by state");
    assert_eq!(by_state.get("Start"), Some(&(8, 8)));
    let stuck = list(ListFilter {
        stuck: Some(vec![("Start".into(), now + chrono::Duration::seconds(1))]),
        ..ListFilter::default()
    })
    .await;
    assert_eq!(stuck.len(), 8, "entered Start before the bound");
    let first = &beta[0].id;
    let ids = h
        .store
        .ids_with_prefix(&first[..first.len() - 2], 10)
        .await
        .expect("ids");
    assert!(ids.contains(first), "{ids:?}");
    assert!(h
        .store
        .ids_with_prefix("zz", 10)
        .await
        .expect("none")
        .is_empty());
}

/// Goal: daemons claiming at once never both get a saga (PostgreSQL: `FOR UPDATE SKIP
/// LOCKED`; SQLite: one writer). Method: 300 due sagas; four claimers on two handles of the
/// database claim ten at a time, concurrently, until nothing is due; every saga is handed out
/// exactly once and its history has exactly one `claimed` row.
async fn concurrent_claims_never_hand_out_a_saga_twice<B: Backend>() {
    let h = B::harness("setup").await;
    let other = B::another(&h, "other", |_| {}).await;
    for n in 0..300 {
        h.submit(&format!("k{n}")).await;
    }
    let now = crate::support::t0();
    let mut tasks = tokio::task::JoinSet::new();
    for claimer in 0..4 {
        let store = if claimer % 2 == 0 {
            h.store.clone()
        } else {
            other.store.clone()
        };
        tasks.spawn(async move {
            let owner = format!("c{claimer}");
            let mut got = Vec::new();
            loop {
                let claimed = store
                    .claim_due(&owner, now, now + chrono::Duration::seconds(30), 10)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return got;
                }
                assert!(claimed
                    .iter()
                    .all(|s| s.lease_owner.as_deref() == Some(owner.as_str())));
                got.extend(claimed.into_iter().map(|s| s.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("task"));
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (300, 300), "each saga claimed once");
    for id in all.iter().take(20) {
        let claims = h
            .store
            .history(id)
            .await
            .expect("history")
            .iter()
            .filter(|r| r.kind == "claimed")
            .count();
        assert_eq!(claims, 1, "{id}");
    }
}

/// Goal: one table, several workflows, and an engine's store claims only its workflow's
/// sagas. Method: sagas of the test workflow and of another; a handle scoped to each.
async fn an_engine_claims_only_its_own_workflows_sagas<B: Backend>() {
    use pcsaga_engine::store::{EventKind, HistoryEvent, NewSaga};
    let h = B::harness("w1").await;
    let now = crate::support::t0();
    let ours = h.submit("ours").await;
    let theirs = NewSaga {
        id: "theirs".into(),
        workflow: "another".into(),
        idempotency_key: "ours".into(),
        state: "Begin".into(),
        context: "{}".into(),
        input: "{}".into(),
        customer_id: None,
        now,
        definition: 1,
        context_schema: 1,
    };
    h.store
        .insert(theirs, HistoryEvent::new(EventKind::Submitted))
        .await
        .expect("insert");
    let lease = now + chrono::Duration::seconds(30);
    let another = h.store.scoped("another");
    let claimed = another.claim_due("x", now, lease, 10).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["theirs"]
    );
    let test = h.store.scoped("test");
    let claimed = test.claim_due("y", now, lease, 10).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        [ours]
    );
    let counts = another.count_by_status().await.expect("counts");
    assert_eq!(
        counts.values().sum::<u64>(),
        1,
        "a scoped count sees its workflow only"
    );
}

#[tokio::test]
async fn the_database_is_private_in_wal_mode_and_sound() {
    let h = harness("w1").await;
    for n in 0..10 {
        h.submit(&format!("k{n}")).await;
    }
    let path = h.dir.path().join("test.db");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by its owner only");
    }
    assert!(
        h.dir.path().join("test.db-wal").exists(),
        "write-ahead log in use"
    );
    assert_eq!(h.store.integrity_check().await.expect("check"), "ok");
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_all_land() {
    let h = harness("w1").await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200 {
        let engine = h.engine.clone();
        tasks.spawn(async move {
            engine
                .submit(&format!("k{n}"), "{}".into(), &Default::default(), None)
                .await
        });
    }
    let before = h.store.write_batches();
    while let Some(done) = tasks.join_next().await {
        assert!(done.expect("task").expect("submit").created);
    }
    let counts = h.store.count_by_status().await.expect("counts");
    assert_eq!(counts.values().sum::<u64>(), 200);
    // Shared: 200 submissions in flight at once took far fewer transactions than writes.
    let batches = h.store.write_batches() - before;
    assert!(
        batches < 100,
        "200 concurrent submissions took {batches} transactions: commits were not shared"
    );
}

/// A burst of submissions writes its `submitted` rows together; a claim in the same batch must
/// still come after them in each saga's history.
#[tokio::test]
async fn submissions_and_claims_in_one_batch_keep_each_history_in_order() {
    let h = harness("w1").await;
    let now = crate::support::t0();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100 {
        let engine = h.engine.clone();
        tasks.spawn(async move {
            engine
                .submit(&format!("k{n}"), "{}".into(), &Default::default(), None)
                .await
                .map(|_| ())
        });
        if n % 10 == 9 {
            let store = h.store.clone();
            tasks.spawn(async move {
                store
                    .claim_due("w1", now, now + chrono::Duration::seconds(30), 5)
                    .await
                    .map(|_| ())
                    .map_err(pcsaga_engine::Error::from)
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("write");
    }
    let sagas = h
        .store
        .list(&pcsaga_engine::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(sagas.len(), 100);
    let mut claimed = 0;
    for saga in sagas {
        let kinds: Vec<String> = h
            .store
            .history(&saga.id)
            .await
            .expect("history")
            .into_iter()
            .map(|r| r.kind)
            .collect();
        match kinds.as_slice() {
            [submitted] if submitted == "submitted" => {}
            [submitted, claim] if submitted == "submitted" && claim == "claimed" => claimed += 1,
            other => panic!("history of {}: {other:?}", saga.id),
        }
    }
    assert!(claimed > 0, "some sagas were claimed");
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let err = SqliteStore::open(SqliteConfig::new("/nonexistent-dir-for-pcsaga/x.db"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// Commits of many sagas sent at once share one batch: a size that is not a power of two (the
/// statements are padded), a stale version among them, and two history rows per commit whose
/// order must survive.
async fn a_batch_of_commits_applies_each_fences_the_stale_one_and_keeps_history_order<
    B: Backend,
>() {
    use pcsaga_engine::store::{Change, Commit, EventKind, HistoryEvent, SagaUpdate, Writer};

    let h = B::harness("w1").await;
    let sagas = 37;
    for n in 0..sagas {
        h.submit(&format!("k{n}")).await;
    }
    let now = crate::support::t0();
    let lease_until = now + chrono::Duration::seconds(30);
    let claimed = h
        .store
        .claim_due("w1", now, lease_until, 100)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), sagas);
    let stale = claimed[5].id.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, saga) in claimed.iter().enumerate() {
        let store = h.store.clone();
        let expected_version = if saga.id == stale {
            saga.version - 1
        } else {
            saga.version
        };
        let commit = Commit {
            id: saga.id.clone(),
            expected_version,
            writer: Writer::Worker {
                owner: "w1".into(),
                lease_until: Some(lease_until),
            },
            now,
            change: Change::Saga(SagaUpdate {
                state: "Pay".into(),
                status: saga.status,
                context: format!("{{\"polls\":{n}}}"),
                attempt: 0,
                total_attempts: 0,
                state_entered_at: now,
                next_run_at: Some(lease_until),
                last_error: None,
                wait_reason: None,
                definition: 1,
                context_schema: 1,
            }),
            events: vec![
                HistoryEvent::new(EventKind::Transition)
                    .state("Start")
                    .to_state("Pay"),
                HistoryEvent::new(EventKind::Intent)
                    .state("Pay")
                    .detail(format!("call {n}")),
            ],
        };
        tasks.spawn(async move { (commit.id.clone(), store.commit(commit).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (id, result) = done.expect("task");
        let saga = h.store.get(&id).await.expect("read").expect("saga");
        let history = h.store.history(&id).await.expect("history");
        let kinds: Vec<&str> = history.iter().map(|r| r.kind.as_str()).collect();
        if id == stale {
            assert!(
                matches!(result, Err(StoreError::Fenced { .. })),
                "{result:?}"
            );
            assert_eq!(saga.state, "Start", "a fenced write changes nothing");
            assert_eq!(kinds, ["submitted", "claimed"]);
        } else {
            assert_eq!(result.expect("applied"), saga.version);
            assert_eq!(saga.state, "Pay");
            assert_eq!(kinds, ["submitted", "claimed", "transition", "intent"]);
            let n: usize = saga.context[9..saga.context.len() - 1].parse().expect("n");
            assert_eq!(history[3].detail.as_deref(), Some(&*format!("call {n}")));
        }
    }
}

#[tokio::test]
async fn a_checkpoint_copies_every_committed_page_into_the_database() {
    let h = harness("w1").await;
    for n in 0..50 {
        h.submit(&format!("k{n}")).await;
    }
    // The store's own checkpointer runs every 100 ms on another connection: while it holds
    // the checkpoint lock, ours is turned away (SQLite reports -1 frames). That is its answer
    // to a busy lock, not a copy that fell short, so ask again, a bounded number of times.
    let mut done = h.store.checkpoint().await.expect("checkpoint");
    for _ in 0..100 {
        if done.log_frames >= 0 {
            break;
        }
        tokio::task::yield_now().await;
        done = h.store.checkpoint().await.expect("checkpoint");
    }
    assert!(done.log_frames > 0, "the submissions went through the WAL");
    assert_eq!(
        done.copied_frames, done.log_frames,
        "with no reader or writer busy, every frame is copied"
    );
    assert_eq!(h.store.integrity_check().await.expect("check"), "ok");
}

/// Each filter of `list` uses its index, newest first, without scanning the table: the plan
/// is pinned for every filter (a `(? IS NULL OR column = ?)` query scanned and sorted all).
#[tokio::test]
async fn every_list_filter_uses_an_index() {
    use pcsaga_engine::{ListFilter, SagaStatus};
    let h = harness("w1").await;
    let t = crate::support::t0();
    let cases: Vec<(&str, ListFilter, &str)> = vec![
        ("no filter", ListFilter::default(), "sagas_created"),
        (
            "status",
            ListFilter {
                status: Some(SagaStatus::Failed),
                ..Default::default()
            },
            "sagas_status",
        ),
        (
            "state",
            ListFilter {
                state: Some("Checkout".into()),
                ..Default::default()
            },
            "sagas_state",
        ),
        (
            "customer",
            ListFilter {
                customer_id: Some("c".into()),
                ..Default::default()
            },
            "sagas_customer",
        ),
        (
            "since",
            ListFilter {
                created_after: Some(t),
                ..Default::default()
            },
            "sagas_created",
        ),
        (
            "stuck",
            ListFilter {
                stuck: Some(vec![("Checkout".into(), t)]),
                ..Default::default()
            },
            "sagas_status",
        ),
    ];
    for (name, filter, index) in cases {
        let plan = pcsaga_engine::list_plan(&h.store, &filter)
            .await
            .expect("plan");
        assert!(plan.contains(index), "{name}: {plan}");
        // A scan only through the index (newest first, stopping at the limit), never of the table.
        assert!(
            !plan.split("; ").any(|step| step == "SCAN sagas"),
            "{name}: {plan}"
        );
        assert!(
            !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
            "{name} sorts the whole result: {plan}"
        );
    }
}

/// A renewal or a release (`Change::Lease`) sends no other column and rewrites none: the
/// context, state, counters, reasons, definition and schema stay as the last step left them,
/// while the lease, the due time and the version move; a stale one is fenced like any write.
async fn a_lease_change_writes_the_lease_columns_only<B: Backend>() {
    use pcsaga_engine::store::{Change, Commit, Writer};

    let h = B::harness("w1").await;
    h.submit("lease-only").await;
    let now = crate::support::t0();
    let claimed = h
        .store
        .claim_due("w1", now, now + chrono::Duration::seconds(30), 1)
        .await
        .expect("claim");
    let before = claimed.into_iter().next().expect("claimed");
    let later = now + chrono::Duration::seconds(90);
    let renew = |expected_version| Commit {
        id: before.id.clone(),
        expected_version,
        writer: Writer::Worker {
            owner: "w1".into(),
            lease_until: Some(later),
        },
        now: now + chrono::Duration::seconds(10),
        change: Change::Lease {
            next_run_at: Some(later),
        },
        events: Vec::new(),
    };
    let version = h
        .store
        .commit(renew(before.version))
        .await
        .expect("renewed");
    let after = h.store.get(&before.id).await.expect("read").expect("saga");
    assert_eq!(version, before.version + 1);
    assert_eq!(after.version, version);
    assert_eq!(
        (
            after.lease_owner.as_deref(),
            after.lease_expires_at,
            after.next_run_at
        ),
        (Some("w1"), Some(later), Some(later))
    );
    assert_eq!(
        (
            &after.state,
            after.status,
            &after.context,
            after.attempt,
            after.total_attempts,
            after.state_entered_at,
            &after.last_error,
            &after.wait_reason,
            after.definition,
            after.context_schema,
        ),
        (
            &before.state,
            before.status,
            &before.context,
            before.attempt,
            before.total_attempts,
            before.state_entered_at,
            &before.last_error,
            &before.wait_reason,
            before.definition,
            before.context_schema,
        ),
        "nothing but the lease moved"
    );
    assert!(matches!(
        h.store.commit(renew(before.version)).await,
        Err(StoreError::Fenced { .. })
    ));
}
