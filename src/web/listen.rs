//! Where the listener binds and the token it demands: `--listen` (`PCSAGA_LISTEN`,
//! `daemon.listen`), `PCSAGA_LISTEN_TOKEN` or `daemon.listen_token_file`.

use std::net::SocketAddr;
use std::path::Path;

/// The daemon's default: loopback, Prometheus's port range for exporters.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Shortest token accepted: a guessable token protects nothing.
const MIN_TOKEN_CHARS: usize = 16;

/// The listener's settings, checked.
#[derive(Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    token: Option<String>,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Listen {
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The settings from the flag's text (`off` for none), the token from the environment's
    /// value or else the file. `setting` names where the address came from, for errors.
    pub fn parse(
        setting: &str,
        text: &str,
        token_env: Option<&str>,
        token_file: Option<&Path>,
    ) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!("{setting} = {text:?}: give an address and port, e.g. 127.0.0.1:9464 or [::1]:9464 (0.0.0.0:9464 for every interface, with a token), or `off`")
        })?;
        let token = match (token_env, token_file) {
            (Some(token), _) => Some(checked_token("PCSAGA_LISTEN_TOKEN", token)?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "daemon.listen_token_file = {}: cannot read it ({e})",
                        path.display()
                    )
                })?;
                Some(checked_token(
                    &format!("daemon.listen_token_file = {}", path.display()),
                    &text,
                )?)
            }
            (None, None) => None,
        };
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(format!(
                "{setting} = {addr} is reachable from other machines: set a bearer token first (PCSAGA_LISTEN_TOKEN, or daemon.listen_token_file naming a file readable by the daemon only), or listen on loopback, `--listen 127.0.0.1:9464`"
            ));
        }
        Ok(Some(Self { addr, token }))
    }
}

fn checked_token(what: &str, text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "{what}: the token must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{what}: the token must be printable ASCII without spaces (it travels in an HTTP header)"
        ));
    }
    Ok(token.to_owned())
}

/// The listener of `setting` (its text, or `default`), with the token from the environment
/// or the configuration's file; the error is the operator's to fix.
pub fn resolve(
    setting: &str,
    text: Option<&str>,
    default: &str,
    file: &crate::config::FileConfig,
) -> Result<Option<Listen>, crate::exit::Failed> {
    let token = std::env::var("PCSAGA_LISTEN_TOKEN").ok();
    Listen::parse(
        setting,
        text.unwrap_or(default),
        token.as_deref().filter(|t| !t.is_empty()),
        file.daemon.listen_token_file.as_deref(),
    )
    .map_err(|e| {
        crate::exit::Failed::new(
            crate::exit::Exit::InvalidInput,
            crate::config::ConfigError(e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, token: Option<&str>, expect: Result<Option<&str>, &str>) {
        let got = Listen::parse("--listen", text, token, None);
        match (got, expect) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got.map(|l| l.addr.to_string()).as_deref(), want, "{text}")
            }
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn listen_settings() {
        check("127.0.0.1:9464", None, Ok(Some("127.0.0.1:9464")));
        check("[::1]:0", None, Ok(Some("[::1]:0")));
        check("off", None, Ok(None));
        check("OFF", None, Ok(None));
        check("0.0.0.0:9464", None, Err("reachable from other machines"));
        check(
            "0.0.0.0:9464",
            Some("0123456789abcdef0123"),
            Ok(Some("0.0.0.0:9464")),
        );
        check("0.0.0.0:9464", Some("short"), Err("at least 16"));
        check(
            "0.0.0.0:9464",
            Some("0123456789abcdef 0123"),
            Err("printable ASCII"),
        );
        check("localhost:9464", None, Err("give an address and port"));
        check("9464", None, Err("give an address and port"));
    }

    #[test]
    fn the_token_is_never_printed() {
        let listen = Listen::parse(
            "--listen",
            "0.0.0.0:1",
            Some("0123456789abcdef-secret"),
            None,
        )
        .expect("valid")
        .expect("on");
        assert!(!format!("{listen:?}").contains("secret"));
    }
}
