//! What the client counts, through the `metrics` facade (a no-op until the binary installs a
//! recorder): every HTTP request it sends, so the figures can be checked against Partner
//! Center's own request log, one for one. Labels are bounded: the host, the method and the
//! status; never a path, an id or a token.

use metrics::{counter, describe_counter};

pub const REQUESTS: &str = "pcsaga_http_requests_total";

/// Describes the client's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests sent, by host (partner_center, graph, token), method and status (none: no reply)."
    );
}

pub(crate) fn request(host: crate::client::Host, method: &reqwest::Method, status: Option<u16>) {
    let host = match host {
        crate::client::Host::PartnerCenter => "partner_center",
        crate::client::Host::Graph => "graph",
    };
    record(host, method.as_str(), status);
}

pub(crate) fn token_request(status: Option<u16>) {
    record("token", "POST", status);
}

fn record(host: &'static str, method: &str, status: Option<u16>) {
    let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
    counter!(REQUESTS, "host" => host, "method" => method.to_owned(), "status" => status)
        .increment(1);
}
