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

/// Credentials go only where the guard allows: a token URL or base URL in clear text to
/// another host, one with userinfo that hides the real host, or a host that merely starts
/// like loopback, is refused when the client is built; nothing is sent.
#[tokio::test]
async fn credentials_never_travel_in_clear_text_to_another_host() {
    let sim = support::sim(pcsaga_simulator::SimConfig::default()).await;
    let port = sim.base_url().rsplit(':').next().unwrap_or("1").to_owned();
    let bad_token_urls = [
        "http://10.1.2.3:18099/oauth2/token".to_owned(),
        format!("http://127.0.0.1:{port}@127.0.0.2:{port}/oauth2/token"),
        "http://localhost.evil.example/oauth2/token".to_owned(),
        "http://127.0.0.1.evil.example/oauth2/token".to_owned(),
    ];
    for url in &bad_token_urls {
        let mut credentials = support::credentials(&sim, true);
        credentials.token_url = url.clone();
        let error = pcsaga_partner_center::Client::new(support::client_config(&sim), credentials)
            .expect_err(url);
        assert_eq!(
            error.class(),
            pcsaga_partner_center::ErrorClass::Config,
            "{url}"
        );
    }
    let bad_bases = [
        format!("http://127.0.0.1:{port}@127.0.0.2:{port}"),
        "http://localhost.evil.example".to_owned(),
        "http://192.168.1.10:8080".to_owned(),
    ];
    for base in &bad_bases {
        let config = pcsaga_partner_center::ClientConfig::new(base.clone());
        let error = pcsaga_partner_center::Client::new(config, support::credentials(&sim, true))
            .expect_err(base);
        assert!(
            error.to_string().contains("the Partner Center base URL"),
            "{error}"
        );
    }
    assert!(sim.requests().is_empty(), "nothing was sent anywhere");
}

/// A link in a reply is followed only on the base URL's origin, decided by parsing: a link
/// whose text starts with the base but whose host is another (userinfo) is refused.
#[tokio::test]
async fn links_with_userinfo_are_not_followed() {
    let sim = support::sim(pcsaga_simulator::SimConfig::default()).await;
    let client = support::client(&sim);
    let base = sim.base_url();
    for uri in [
        format!("{base}@127.0.0.2:9/v1/customers/x/subscriptions/y"),
        "http://127.0.0.2:9/v1/customers/x".to_owned(),
    ] {
        let link = pcsaga_partner_center::models::Link {
            uri: uri.clone(),
            ..Default::default()
        };
        let error = client
            .get_artifact_details(support::cid(), &link)
            .await
            .expect_err(&uri);
        assert!(
            error.to_string().contains("refusing to follow a link"),
            "{uri}: {error}"
        );
    }
    assert!(sim.requests().is_empty(), "no request left the client");
}
