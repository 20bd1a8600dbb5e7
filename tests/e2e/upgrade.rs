//! Upgrades: a binary never continues a purchase it does not understand.

use std::time::Duration;

use pcsaga_simulator::SimConfig;

use crate::support::{self, Battery};

/// Goal: before a new binary takes over a database, `check-upgrade` names every active
/// purchase it could not continue; the daemon refuses such a database, and with
/// `--park-incompatible` parks exactly those, calling nothing for them. Method: three
/// purchases; one's context rewritten into a shape this binary cannot read, one marked as
/// written by a newer release's workflow definition; the third untouched.
#[tokio::test(flavor = "multi_thread")]
async fn check_upgrade_lists_what_cannot_be_continued_and_the_daemon_parks_only_those() {
    let mut b = Battery::new(SimConfig::default()).await;
    let requests: Vec<serde_json::Value> = ["damaged", "newer", "fine"]
        .iter()
        .map(|key| support::request(key, "DG7GMGF0DWTL", "0001", None))
        .collect();
    assert_eq!(b.submit(&requests).await, 3);
    {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", b.env.db.display()))
            .await
            .expect("open");
        sqlx::query("UPDATE sagas SET context = '{\"request\": \"renamed in a later release\"}' WHERE idempotency_key = 'damaged'")
            .execute(&mut db)
            .await
            .expect("damage");
        sqlx::query("UPDATE sagas SET definition = 7 WHERE idempotency_key = 'newer'")
            .execute(&mut db)
            .await
            .expect("newer");
    }
    let ids = |key: &str| {
        let output = support::run(b.env.pcsaga(None).args(["list", "--json"]));
        support::json(&output)
            .as_array()
            .expect("a list")
            .iter()
            .find(|s| s["idempotencyKey"] == key)
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .expect("listed")
    };
    let (damaged, newer, fine) = (ids("damaged"), ids("newer"), ids("fine"));

    let check = support::run(b.env.pcsaga(None).args(["check-upgrade", "--json"]));
    assert_eq!(check.status.code(), Some(10), "{}", support::stderr(&check));
    let report = support::json(&check);
    let listed: Vec<(String, String)> = report["incompatible"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or("").to_owned(),
                s["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed
        .iter()
        .any(|(id, why)| id == &damaged && why.contains("context cannot be read")));
    assert!(listed
        .iter()
        .any(|(id, why)| id == &newer && why.contains("workflow definition 7")));
    assert!(support::stderr(&check).contains("daemon --park-incompatible"));

    // The daemon refuses the database as it is, before any call.
    let mut refused = b.daemon("refused", &[], &["--exit-when-idle"]);
    let status = support::wait_with_deadline(&mut refused, Duration::from_secs(60))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(10), "{}", b.env.read("refused.err"));
    assert!(b.env.read("refused.err").contains("check-upgrade"));
    assert!(
        b.sim.requests().iter().all(|r| r.endpoint == "token"),
        "nothing called"
    );

    // Told to, it parks exactly those two and buys the third.
    let mut daemon = b.daemon("parking", &[], &["--exit-when-idle", "--park-incompatible"]);
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(120))
        .await
        .expect("exits");
    assert!(
        status.success(),
        "{}",
        support::tail(&b.env.read("parking.err"), 20)
    );
    let show = |id: &str| {
        support::json(&support::run(
            b.env.pcsaga(None).args(["show", id, "--json"]),
        ))
    };
    for id in [&damaged, &newer] {
        let shown = show(id);
        assert_eq!(shown["status"], "needs_attention", "{shown}");
        assert!(
            shown["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("cannot continue the saga")),
            "{shown}"
        );
    }
    assert_eq!(show(&fine)["status"], "succeeded");
    assert_eq!(b.sim.ledger().orders.len(), 1, "only the third was bought");
    let clean = support::run(b.env.pcsaga(None).arg("check-upgrade"));
    assert_eq!(
        clean.status.code(),
        Some(0),
        "nothing active is left that it cannot continue"
    );
}
