//! The one check every URL passes before a secret or a token is sent to it.
//!
//! Credentials travel to two places: the token endpoint (client secret, refresh token) and
//! Partner Center (bearer token). Both URLs are parsed once, here, and every link the client
//! follows is checked against the parsed base. The rules:
//!
//! - `https://` anywhere; plain `http://` only to loopback: an IP literal in `127.0.0.0/8`,
//!   `[::1]`, or the exact host `localhost` (the simulator). Anything else in clear text
//!   would expose the secret on the network.
//! - No userinfo (`user:pass@host`): `http://127.0.0.1:80@example.com` names `example.com`
//!   as its host, and a reader of the text would think otherwise.
//! - No query or fragment on a base URL.
//!
//! Decided by parsing, never by comparing prefixes: `http://localhost.evil.example` and
//! `http://127.0.0.1.evil.example` start like loopback and are not.

use std::net::IpAddr;

use reqwest::Url;

/// A URL that passed [`checked_url`]: safe to send credentials to.
pub type CheckedUrl = Url;

/// Parses `text` and applies the rules of the module docs. `what` names the setting in the
/// error (`partner_center.base_url (PCSAGA_BASE_URL)`).
pub fn checked_url(what: &str, text: &str) -> Result<CheckedUrl, String> {
    let url =
        Url::parse(text.trim()).map_err(|e| format!("{what} = {text:?} is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{what} = {text:?} carries a user name or password before the host; remove it (credentials come from the environment or files, never from a URL)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{what} = {text:?} has a query or fragment; give the plain URL"
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "{what} = {text:?}: plain http is allowed only to loopback (127.0.0.0/8, [::1] or localhost), so that no secret crosses a network in clear text; use https://"
            ))
        }
        other => {
            return Err(format!(
                "{what} = {text:?}: scheme {other:?} is not supported; use https://"
            ))
        }
    }
    if url.host().is_none() {
        return Err(format!("{what} = {text:?} has no host"));
    }
    Ok(url)
}

/// Whether the URL's host is loopback by the module's rules.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether `link` may be followed with the token meant for `base`: same scheme, host and
/// port, no userinfo, and a path under the base's path.
pub fn same_origin(base: &Url, link: &Url) -> bool {
    link.scheme() == base.scheme()
        && link.host() == base.host()
        && link.port_or_known_default() == base.port_or_known_default()
        && link.username().is_empty()
        && link.password().is_none()
        && link.path().starts_with(base.path().trim_end_matches('/'))
}
