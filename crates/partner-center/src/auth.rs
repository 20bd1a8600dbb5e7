//! Entra ID (Azure AD) tokens for Partner Center (spec section 2).
//!
//! Two grants are supported, against the v1 token endpoint
//! `{authority}/{tenant}/oauth2/token` with `resource={audience}`:
//! - app-only: `grant_type=client_credentials`;
//! - app+user (Secure Application Model): `grant_type=refresh_token` with a stored refresh token.
//!
//! Tokens are cached and refreshed before they expire: when less than five minutes are left, or
//! a quarter of the token's lifetime for short-lived tokens. Refreshes are single-flight: the
//! cache sits behind one async mutex, so a burst of calls triggers one token request.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show the value.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{CallContext, Error, ErrorClass};

/// A secret string (client secret, refresh token, access token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The source of "now" for token expiry; injected so tests can move time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Which grant a token source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// Client credentials: app-only.
    AppOnly,
    /// Refresh token: app+user.
    AppUser,
}

/// Everything needed to obtain tokens for one partner tenant.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The full token endpoint URL, e.g. `https://login.microsoftonline.com/{tenant}/oauth2/token`.
    pub token_url: String,
    /// The audience (`resource`) of the tokens, e.g. `https://api.partnercenter.microsoft.com`.
    pub resource: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Present for app+user calls (entitlements, provisioning status).
    pub refresh_token: Option<Secret>,
}

#[derive(Debug, Clone)]
struct CachedToken {
    value: Secret,
    expires_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

/// A cached, self-refreshing token for one grant.
#[derive(Debug)]
pub struct TokenSource {
    kind: GrantKind,
    http: reqwest::Client,
    credentials: Credentials,
    clock: Arc<dyn Clock>,
    cache: Mutex<Option<CachedToken>>,
}

/// The v1 token response; numbers arrive as strings (`"expires_in":"3600"`).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(
        default,
        deserialize_with = "crate::models::lenient::de::opt_string_or_number"
    )]
    expires_in: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// Upper bound on how long before expiry a token is refreshed.
const REFRESH_MARGIN_MAX: Duration = Duration::from_secs(300);
/// Used when the token endpoint omits `expires_in`: the documented one hour, minus margin.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Token responses are small; anything bigger is not a token response.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

impl TokenSource {
    pub(crate) fn new(
        kind: GrantKind,
        http: reqwest::Client,
        credentials: Credentials,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            kind,
            http,
            credentials,
            clock,
            cache: Mutex::new(None),
        }
    }

    /// The grant this source uses.
    pub fn kind(&self) -> GrantKind {
        self.kind
    }

    /// A valid access token: the cached one while it is fresh, else a new one.
    ///
    /// `rejected` is the token a 401 came back for: if the cache still holds it, it is
    /// dropped and a new one fetched; if another task already replaced it, that one is used.
    pub(crate) async fn token(&self, rejected: Option<&Secret>) -> Result<Secret, Error> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        if let Some(cached) = cache.as_ref() {
            let was_rejected = rejected.is_some_and(|r| r == &cached.value);
            if !was_rejected && now < cached.refresh_at && now < cached.expires_at {
                return Ok(cached.value.clone());
            }
        }
        let fresh = self.fetch(now).await?;
        let value = fresh.value.clone();
        *cache = Some(fresh);
        Ok(value)
    }

    /// Fetches a new token whatever the cache holds: a probe of the credentials.
    pub(crate) async fn refresh(&self) -> Result<(), Error> {
        let mut cache = self.cache.lock().await;
        let fresh = self.fetch(self.clock.now()).await?;
        *cache = Some(fresh);
        Ok(())
    }

    async fn fetch(&self, now: DateTime<Utc>) -> Result<CachedToken, Error> {
        let c = &self.credentials;
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", &c.client_id),
            ("client_secret", c.client_secret.expose()),
            ("resource", &c.resource),
        ];
        match self.kind {
            GrantKind::AppOnly => form.push(("grant_type", "client_credentials")),
            GrantKind::AppUser => {
                let refresh = c.refresh_token.as_ref().ok_or_else(|| {
                    Error::config(
                        "app+user call without a refresh token: set PCSAGA_REFRESH_TOKEN (or refresh_token_file)",
                    )
                })?;
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh.expose()));
                form.push(("scope", "openid"));
            }
        }
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| Error::config(format!("cannot encode the token request: {e}")))?;
        let context = || CallContext {
            method: "POST".to_owned(),
            path: token_path(&c.token_url),
            ..CallContext::default()
        };
        let response = self
            .http
            .post(&c.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .inspect(|r| crate::metrics::token_request(Some(r.status().as_u16())))
            .inspect_err(|_| crate::metrics::token_request(None))
            .map_err(|e| {
                let detail = format!(
                    "token endpoint unreachable: {}",
                    crate::client::describe_reqwest(&e)
                );
                Error::new(ErrorClass::Transient, detail, context())
            })?;
        let status = response.status().as_u16();
        let bytes = crate::client::read_limited(response, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|detail| {
                let context = CallContext {
                    status: Some(status),
                    ..context()
                };
                let detail = format!("token response unreadable: {detail}");
                Error::new(ErrorClass::Transient, detail, context)
            })?;
        if !(200..300).contains(&status) {
            let parsed: TokenErrorResponse = serde_json::from_slice(&bytes).unwrap_or_default();
            let context = CallContext {
                status: Some(status),
                code: parsed.error.clone(),
                description: parsed.error_description.clone(),
                ..context()
            };
            let detail = format!(
                "token endpoint answered HTTP {status} ({})",
                parsed.error.as_deref().unwrap_or("no error code")
            );
            let class = if status >= 500 || status == 408 || status == 429 {
                ErrorClass::Transient
            } else {
                ErrorClass::AuthExpired
            };
            return Err(Error::new(class, detail, context));
        }
        let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
            let context = CallContext {
                status: Some(status),
                ..context()
            };
            let detail = format!("token response is not a token: {e}");
            Error::new(ErrorClass::Transient, detail, context)
        })?;
        let lifetime = parsed
            .expires_in
            .as_deref()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let margin = REFRESH_MARGIN_MAX.min(lifetime / 4);
        let expires_at = now + chrono_duration(lifetime);
        Ok(CachedToken {
            value: Secret::new(parsed.access_token),
            expires_at,
            refresh_at: expires_at - chrono_duration(margin),
        })
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The token URL without scheme and host, for error contexts.
fn token_path(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");
    }
}
