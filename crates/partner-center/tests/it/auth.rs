//! Tokens: both grants, caching, refresh before expiry and after a 401, refusals, secrecy.

use std::time::Duration;

use pcsaga_partner_center::{Client, Credentials, ErrorClass, Secret};
use pcsaga_simulator::SimConfig;

use crate::support::{self, cid, ManualClock, CUSTOMER};

#[tokio::test]
async fn tokens_are_cached_and_refreshed_before_they_expire() {
    let sim = support::sim(SimConfig::default()).await;
    let clock = ManualClock::new();
    let client = Client::with_clock(
        support::client_config(&sim),
        support::credentials(&sim, false),
        clock.clone(),
    )
    .expect("client");
    for _ in 0..3 {
        client
            .get_product(cid(), "DG7GMGF0DWTL", "US")
            .await
            .expect("served");
    }
    assert_eq!(
        support::requests_to(&sim, "token").len(),
        1,
        "one token for three calls"
    );
    // 56 minutes into a one-hour token: inside the five-minute margin, so refresh first.
    clock.advance(Duration::from_secs(56 * 60));
    client
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect("served");
    assert_eq!(support::requests_to(&sim, "token").len(), 2);
    assert!(
        sim.requests().iter().all(|r| r.status != Some(401)),
        "the refresh came before any 401"
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_after_the_401() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    client
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect("served");
    // The service's clock moves past the token's expiry; ours does not know.
    sim.advance_clock(Duration::from_secs(2 * 3600));
    let reply = client
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect("served after refresh");
    assert_eq!(reply.meta.http_requests, 2);
    assert_eq!(support::requests_to(&sim, "token").len(), 2);
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.status == Some(401))
            .count(),
        1
    );
}

#[tokio::test]
async fn app_user_calls_use_the_refresh_token_and_app_only_clients_refuse_them() {
    let sim = support::sim(SimConfig::default()).await;
    let app_user = support::client(&sim);
    app_user
        .list_entitlements(cid(), CUSTOMER, None, false)
        .await
        .expect("app+user may");
    let app_only = Client::new(
        support::client_config(&sim),
        support::credentials(&sim, false),
    )
    .expect("client");
    let err = app_only
        .list_entitlements(cid(), CUSTOMER, None, false)
        .await
        .expect_err("app-only may not");
    assert_eq!(err.class(), ErrorClass::Config);
    assert!(err.to_string().contains("PCSAGA_REFRESH_TOKEN"), "{err}");
}

#[tokio::test]
async fn refused_credentials_are_auth_errors_that_never_show_the_secret() {
    let sim = support::sim(SimConfig::default()).await;
    let wrong = Credentials {
        client_secret: Secret::new("not-the-secret-xyz"),
        ..support::credentials(&sim, true)
    };
    let client = Client::new(support::client_config(&sim), wrong.clone()).expect("client");
    let err = client
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect_err("refused");
    assert_eq!(err.class(), ErrorClass::AuthExpired);
    assert_eq!(err.code(), Some("invalid_client"));
    for shown in [
        err.to_string(),
        format!("{err:?}"),
        format!("{client:?}"),
        format!("{wrong:?}"),
    ] {
        assert!(
            !shown.contains("not-the-secret-xyz"),
            "secret leaked: {shown}"
        );
        assert!(
            !shown.contains(&sim.config().refresh_token),
            "refresh token leaked: {shown}"
        );
    }
    let bad_refresh = Credentials {
        refresh_token: Some(Secret::new("stale")),
        ..support::credentials(&sim, true)
    };
    let client = Client::new(support::client_config(&sim), bad_refresh).expect("client");
    let err = client
        .list_entitlements(cid(), CUSTOMER, None, false)
        .await
        .expect_err("refused");
    assert_eq!(
        (err.class(), err.code()),
        (ErrorClass::AuthExpired, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn links_to_other_hosts_are_never_followed() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    let link = pcsaga_partner_center::models::Link {
        uri: "https://evil.example/steal".to_owned(),
        ..Default::default()
    };
    let err = client
        .get_artifact_details(cid(), &link)
        .await
        .expect_err("refused");
    assert_eq!(err.class(), ErrorClass::Config);
    assert!(
        sim.requests().is_empty(),
        "nothing was sent, not even a token request"
    );
}
