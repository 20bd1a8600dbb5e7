//! Errors, classified for the engine.
//!
//! The saga's next move depends on *what kind* of failure happened, not on its text, so every
//! failure is sorted into one [`ErrorClass`] (spec 5 and 9.10):
//!
//! | what came back | class |
//! |---|---|
//! | connection refused / DNS / TLS before the request left | `Transient` |
//! | timeout or connection lost after a side-effecting request was sent | `OutcomeUnknown` |
//! | the same on a read-only call (nothing to be unknown about) | `Transient` |
//! | 408, 5xx | `Transient` |
//! | 429 (any body) | `Throttled`, with `Retry-After` |
//! | 401 after one token refresh and one retry; token endpoint refusing our credentials | `AuthExpired` |
//! | code 800064 (cart being processed) or 800060 (order in progress), whatever the status, 2xx included | `InFlight` |
//! | code 800065 (cart already submitted), whatever the status | `AlreadySubmitted` |
//! | 404 | `NotFound` |
//! | other 4xx (400, 403, 409, 412, 417, ...) and 2xx carrying another error code | `Business` |
//! | a 2xx whose body cannot be read (malformed, truncated, too large) | `OutcomeUnknown` if side-effecting, else `Transient` |
//! | bad configuration on our side | `Config` |
//!
//! Every error keeps what support would ask for: method, path, HTTP status, Partner Center
//! error code and description, and the `MS-RequestId`/`MS-CorrelationId` of the call.

use std::fmt;
use std::time::Duration;

use crate::ids::{CorrelationId, RequestId};

/// What the engine should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Not processed, or safe to repeat: retry with backoff and the same `MS-RequestId`.
    Transient,
    /// 429: wait at least `Retry-After`, then go on at a lower rate (pcsaga's governor).
    Throttled,
    /// Credentials are refused even after a refresh: an operator must fix configuration.
    AuthExpired,
    /// 409/800064 or 409/800060: committed or in flight; reconcile, never build a new cart.
    InFlight,
    /// 400/800065: the cart was already submitted; reconcile through the orders.
    AlreadySubmitted,
    /// 404: the resource does not exist (or no longer does: an expired cart is 404/800008).
    NotFound,
    /// A permanent business error with a code and description; retrying will not help.
    Business,
    /// A side-effecting request may or may not have been processed.
    OutcomeUnknown,
    /// Our configuration is wrong (bad URL, missing credentials for an App+User call).
    Config,
}

impl ErrorClass {
    /// A short stable name, used in history rows and snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Throttled => "throttled",
            Self::AuthExpired => "auth_expired",
            Self::InFlight => "in_flight",
            Self::AlreadySubmitted => "already_submitted",
            Self::NotFound => "not_found",
            Self::Business => "business",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Config => "config",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What support needs to find a call: where it went, what came back, and its ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    pub method: String,
    /// The path under the base URL, without the query string.
    pub path: String,
    pub status: Option<u16>,
    /// Partner Center's error `code` (text; it is numeric in practice).
    pub code: Option<String>,
    pub description: Option<String>,
    pub request_id: Option<RequestId>,
    pub correlation_id: Option<CorrelationId>,
    /// `MS-CV` as echoed by the server, if any.
    pub correlation_vector: Option<String>,
    /// How long a 429 asked us to wait (`Retry-After`, or the 429 body's message).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(status) = self.status {
            write!(f, " -> HTTP {status}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " code {code}")?;
        }
        if let Some(description) = &self.description {
            write!(f, " ({description})")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " MS-RequestId={id}")?;
        }
        if let Some(id) = &self.correlation_id {
            write!(f, " MS-CorrelationId={id}")?;
        }
        if let Some(cv) = &self.correlation_vector {
            write!(f, " MS-CV={cv}")?;
        }
        Ok(())
    }
}

/// A failed Partner Center call: its class (what to do about it), what happened in words, and
/// where it went and what came back. One type from the HTTP layer to the saga's decisions: the
/// saga reads `class` and the context directly. See the module docs for the classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub class: ErrorClass,
    /// What happened, in words (a refusal leaves it empty: the code and description say it).
    pub detail: String,
    /// The call; empty for a configuration error found before anything was sent.
    pub context: Box<CallContext>,
}

impl Error {
    pub fn new(class: ErrorClass, detail: impl Into<String>, context: CallContext) -> Self {
        Self {
            class,
            detail: detail.into(),
            context: Box::new(context),
        }
    }

    /// Our configuration is wrong; nothing was sent.
    pub fn config(detail: impl Into<String>) -> Self {
        Self::new(ErrorClass::Config, detail, CallContext::default())
    }

    /// The class the engine acts on.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// How long the server asked us to wait, for throttled calls.
    pub fn retry_after(&self) -> Option<Duration> {
        self.context.retry_after
    }

    /// The call's context, when the error came from a call.
    pub fn context(&self) -> Option<&CallContext> {
        (self.class != ErrorClass::Config).then_some(&*self.context)
    }

    /// The HTTP status, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.context.status
    }

    /// Partner Center's error code, if the body carried one.
    pub fn code(&self) -> Option<&str> {
        self.context.code.as_deref()
    }

    /// Whether this reply settles the request it answers: Partner Center read the request and
    /// either processed it or refused it for a reason of its own (4xx other than 408 and 429,
    /// and the in-flight codes). Only then may the next call of the same kind use a new
    /// `MS-RequestId` (spec 9.2, ARCHITECTURE.md "the reply table").
    ///
    /// Not settled: timeouts and lost connections, 408 and 5xx (the request may have been
    /// processed), a 2xx whose body cannot be read (it was processed, we do not know how), a
    /// 429 or a refused token (the request was turned away, but an earlier attempt with the
    /// same id may still be in doubt, so the id is kept), and our own configuration errors.
    pub fn settles(&self) -> bool {
        matches!(
            self.class,
            ErrorClass::Business
                | ErrorClass::NotFound
                | ErrorClass::InFlight
                | ErrorClass::AlreadySubmitted
        )
    }

    /// Whether this reply proves what happened to *this* attempt of a call: it settled it, or
    /// turned it away before processing (429, 401). While an attempt is not answered, a later
    /// refusal proves nothing about it.
    pub fn answers_attempt(&self) -> bool {
        self.settles()
            || self.class == ErrorClass::Throttled
            || (self.class == ErrorClass::AuthExpired && self.status() == Some(401))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (detail, context) = (&self.detail, &self.context);
        match self.class {
            ErrorClass::Transient => write!(f, "Partner Center call failed transiently: {detail} [{context}]; it is safe to retry with the same MS-RequestId"),
            ErrorClass::Throttled => write!(f, "Partner Center throttled the call (429{}) [{context}]; the call's class waits until then and goes on at a lower rate (with pcsaga's daemon: for every purchase of the tenant; if 429s persist, lower the class's budget, governor.per_minute in the configuration)", context.retry_after.map(|d| format!(", Retry-After {}s", d.as_secs())).unwrap_or_default()),
            ErrorClass::AuthExpired => write!(f, "Partner Center refused our credentials: {detail} [{context}]; check the tenant, client id, client secret and refresh token"),
            ErrorClass::InFlight => write!(f, "Partner Center says the cart or order is already being processed [{context}]; reconcile through the orders, do not build a new cart"),
            ErrorClass::AlreadySubmitted => write!(f, "Partner Center says the cart was already submitted [{context}]; reconcile through the orders, do not build a new cart"),
            ErrorClass::NotFound => write!(f, "Partner Center found no such resource [{context}]"),
            ErrorClass::Business => write!(f, "Partner Center refused the request [{context}]; the code and description say what to fix"),
            ErrorClass::OutcomeUnknown => write!(f, "the outcome of a side-effecting Partner Center call is unknown: {detail} [{context}]; repeat the same call with the same MS-RequestId, or reconcile"),
            ErrorClass::Config => write!(f, "Partner Center client configuration error: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// Whether a call changes state at Partner Center. It decides how a lost reply is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads, and POSTs that only compute (check-inventory).
    ReadOnly,
    /// Registration, cart create/update, checkout, cancel.
    SideEffecting,
}

/// Classifies a response that arrived with a non-success status.
///
/// This is the single table the integration tests pin; keep the module docs in step.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    mut context: CallContext,
) -> Error {
    context.retry_after = retry_after;
    let code = context.code.as_deref().unwrap_or("");
    let (class, detail) = match (status, code) {
        (429, _) => (ErrorClass::Throttled, String::new()),
        // These codes say the request reached a cart or order already being processed or
        // submitted: whatever status carries them (a 200, a 400, a 5xx), money may have moved,
        // so they are never read as a plain refusal.
        (_, "800064" | "800060") => (ErrorClass::InFlight, String::new()),
        (_, "800065") => (ErrorClass::AlreadySubmitted, String::new()),
        (401, _) => (
            ErrorClass::AuthExpired,
            "HTTP 401 after one token refresh and one retry".to_owned(),
        ),
        (404, _) => (ErrorClass::NotFound, String::new()),
        (408, _) | (500..=599, _) => (ErrorClass::Transient, format!("HTTP {status}")),
        _ => (ErrorClass::Business, String::new()),
    };
    Error::new(class, detail, context)
}

/// Classifies a reply that could not be read (transport failure after sending, bad body).
pub(crate) fn classify_lost_reply(effect: Effect, detail: String, context: CallContext) -> Error {
    let class = match effect {
        Effect::SideEffecting => ErrorClass::OutcomeUnknown,
        Effect::ReadOnly => ErrorClass::Transient,
    };
    Error::new(class, detail, context)
}
