//! The HTTP listener of `pcsaga daemon` and `pcsaga console`: `/metrics`, `/healthz`,
//! `/readyz` and the read-only web console.
//!
//! Built on hyper directly, like the simulator: a handful of GET routes need no router
//! framework. Everything served is read-only: a method other than GET or HEAD is refused
//! (405), so the console can never change a purchase; operators act through the CLI, which
//! records their reason.
//!
//! Architecture invariant: on an address that is not loopback, every request must carry the
//! bearer token (`PCSAGA_LISTEN_TOKEN` or `daemon.listen_token_file`); such an address without
//! a token is refused at start. The token is compared in constant time and never logged.

mod assets;
mod console;
mod health;
mod html;
pub mod listen;
pub mod metrics;
mod timeline;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

pub use listen::Listen;

/// Connections served at once; more wait in the kernel's backlog. A console is looked at by a
/// few people and scraped by a few monitors: this bounds what a misbehaving client can hold.
const MAX_CONNECTIONS: usize = 64;

/// Longest request target accepted (the console's filters fit in a few hundred bytes).
const MAX_TARGET_BYTES: usize = 4096;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the listener serves from.
#[derive(Clone)]
pub struct Site {
    pub store: pcsaga_engine::AnyStore,
    /// The database as the operator named it (the billing tables are read from its file).
    pub db_path: std::path::PathBuf,
    /// The `--db` flag the CLI commands shown on the pages carry.
    pub db_flag: String,
    pub policies: pcsaga_engine::Policies,
    /// The daemon's engine and row, for readiness; `None` in `pcsaga console`.
    pub daemon: Option<health::Daemon>,
    /// The recorder's handle (`None`: no metrics in this process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("db_path", &self.db_path)
            .field("daemon", &self.daemon.is_some())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

pub use health::Daemon;

impl Site {
    pub fn new(
        store: pcsaga_engine::AnyStore,
        db_path: std::path::PathBuf,
        db_flag: String,
        policies: pcsaga_engine::Policies,
        listen: &Listen,
    ) -> Self {
        Self {
            store,
            db_path,
            db_flag,
            policies,
            daemon: None,
            metrics: None,
            token: listen.token().map(Arc::from),
        }
    }
}

/// Binds the listener: its failure is the operator's to fix (another process on the port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot listen on {addr} ({e}): another process (another pcsaga daemon?) holds it. Give each daemon its own address, `--listen 127.0.0.1:PORT`, or run without the listener, `--listen off`"
        )
    })
}

/// Serves until `shutdown` turns true, then lets requests in flight finish (briefly).
pub async fn serve(listener: TcpListener, site: Site, mut shutdown: watch::Receiver<bool>) {
    let site = Arc::new(site);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let site = site.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        connection(stream, site, shutdown).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Transient (descriptors exhausted, ...): pause instead of spinning.
                    tracing::warn!(%error, "the listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(stream: TcpStream, site: Arc<Site>, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request: Request<Incoming>| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(handle(&site, &request).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// A response ready to send.
pub(crate) type Reply = Response<Full<Bytes>>;

pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(crate) fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

async fn handle(site: &Site, request: &Request<Incoming>) -> Reply {
    let mut response = route(site, request).await;
    if request.method() == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

async fn route(site: &Site, request: &Request<Incoming>) -> Reply {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "read-only: this listener only answers GET and HEAD; operators act through the CLI (`pcsaga resume`, `pcsaga cancel`, ...), which records a reason"}),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if let Some(token) = &site.token {
        if !authorized(request, token) {
            let mut response = json_reply(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "this listener needs `Authorization: Bearer TOKEN` (the token the daemon was given in PCSAGA_LISTEN_TOKEN or daemon.listen_token_file)"}),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pcsaga\""),
            );
            return response;
        }
    }
    let uri = request.uri();
    if uri.to_string().len() > MAX_TARGET_BYTES {
        return json_reply(
            StatusCode::URI_TOO_LONG,
            &serde_json::json!({"error": format!("request target longer than {MAX_TARGET_BYTES} bytes")}),
        );
    }
    let query = uri.query().unwrap_or("");
    match uri.path() {
        "/healthz" => health::healthz(),
        "/readyz" => health::readyz(site).await,
        "/metrics" => metrics::scrape(site).await,
        "/" | "/purchases" => console::list(site, query).await,
        path if path.starts_with("/purchases/") => {
            console::purchase(site, &path["/purchases/".len()..]).await
        }
        path if path.starts_with("/assets/") => assets::serve(&path["/assets/".len()..]),
        _ => console::not_found(uri.path()),
    }
}

/// Whether the request carries the bearer token (compared in constant time).
fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
        assert!(!super::constant_time_eq(b"", b"x"));
    }
}
