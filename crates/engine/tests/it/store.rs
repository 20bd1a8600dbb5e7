//! The SQLite store on its own: durability settings, permissions, integrity, group commit.

use pcsaga_engine::{SqliteConfig, SqliteStore, Store};

use crate::support::harness;

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
    while let Some(done) = tasks.join_next().await {
        assert!(done.expect("task").expect("submit").created);
    }
    let counts = h.store.count_by_status().await.expect("counts");
    assert_eq!(counts.values().sum::<u64>(), 200);
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let err = SqliteStore::open(SqliteConfig::new("/nonexistent-dir-for-pcsaga/x.db"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
