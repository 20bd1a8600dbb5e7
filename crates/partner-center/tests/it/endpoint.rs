//! The URL guard (`endpoint.rs`): which URLs credentials may go to, decided by parsing.

use pcsaga_partner_center::checked_url;
use pcsaga_partner_center::endpoint::same_origin;
use reqwest::Url;

#[track_caller]
fn check(text: &str, accepted: bool, says: &str) {
    let result = checked_url("base", text);
    assert_eq!(result.is_ok(), accepted, "{text}: {result:?}");
    if let Err(e) = result {
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn only_https_or_loopback_http_without_userinfo() {
    check("https://api.partnercenter.microsoft.com", true, "");
    check("http://127.0.0.1:18084", true, "");
    check("http://127.8.9.10", true, "");
    check("http://[::1]:80", true, "");
    check("http://localhost:9", true, "");
    check("http://LOCALHOST", true, "");
    check(
        "http://10.1.2.3:8080/oauth2/token",
        false,
        "only to loopback",
    );
    check("http://localhost.evil.example", false, "only to loopback");
    check("http://127.0.0.1.evil.example", false, "only to loopback");
    check("http://[::ffff:127.0.0.1]", false, "only to loopback");
    check("http://127.0.0.1:18084@127.0.0.2:18099", false, "user name");
    check(
        "https://user@api.partnercenter.microsoft.com",
        false,
        "user name",
    );
    check("ftp://127.0.0.1", false, "scheme");
    check("https://example.com/?a=b", false, "query");
    check("not a url", false, "not a URL");
}

#[test]
fn links_stay_on_the_base_origin() {
    let base = checked_url("base", "http://127.0.0.1:18084").expect("a loopback base is allowed");
    let ok = |s: &str| same_origin(&base, &Url::parse(s).expect("url"));
    assert!(ok("http://127.0.0.1:18084/v1/customers"));
    assert!(!ok("http://127.0.0.1:18085/v1/customers"));
    assert!(!ok("http://127.0.0.2:18084/v1/customers"));
    assert!(!ok("https://127.0.0.1:18084/v1/customers"));
    assert!(!ok("http://a:b@127.0.0.1:18084/v1/customers"));
    let nested = checked_url("base", "https://example.com/pc").expect("ok");
    assert!(same_origin(
        &nested,
        &Url::parse("https://example.com/pc/v1/x").expect("url")
    ));
    assert!(!same_origin(
        &nested,
        &Url::parse("https://example.com/other").expect("url")
    ));
}
