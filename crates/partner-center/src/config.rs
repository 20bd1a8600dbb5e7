//! Where Partner Center is and how to reach it: clouds, URLs and limits.

use std::time::Duration;

/// A Partner Center instance (spec section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// The global service.
    Public,
    /// Partner Center for Microsoft Cloud for US Government: public API host, US Gov authority.
    UsGovernment,
    /// Partner Center operated by 21Vianet (China).
    China,
}

impl Cloud {
    /// Parses `public`, `usgov`/`us-government`, `china`/`21vianet` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "")
            .as_str()
        {
            "public" | "global" => Some(Self::Public),
            "usgov" | "usgovernment" => Some(Self::UsGovernment),
            "china" | "21vianet" => Some(Self::China),
            _ => None,
        }
    }

    /// The REST base URL (calls go under `{base}/v1`).
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Public | Self::UsGovernment => "https://api.partnercenter.microsoft.com",
            Self::China => "https://partner.partnercenterapi.microsoftonline.cn",
        }
    }

    /// The Entra ID authority host.
    pub fn authority(self) -> &'static str {
        match self {
            Self::Public => "https://login.microsoftonline.com",
            // Not in the Partner Center docs; the PowerShell module uses it (spec ambiguity 19).
            Self::UsGovernment => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The token audience (`resource`).
    pub fn resource(self) -> &'static str {
        match self {
            Self::Public | Self::UsGovernment => "https://api.partnercenter.microsoft.com",
            Self::China => "https://partner.partnercenterapi.microsoftonline.cn",
        }
    }

    /// The v1 token endpoint for a partner tenant.
    pub fn token_url(self, tenant_id: &str) -> String {
        format!("{}/{tenant_id}/oauth2/token", self.authority())
    }
}

/// Transport settings of the client. Every field has a limit on purpose: nothing waits forever
/// and nothing reads without bound.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL without `/v1`, e.g. `https://api.partnercenter.microsoft.com`.
    pub base_url: String,
    /// Whole-call timeout (connect, send, and read the reply). The SDK uses 3 minutes.
    pub timeout: Duration,
    /// Connect timeout; a call that never connected was never sent, so it is plainly transient.
    pub connect_timeout: Duration,
    /// Largest response body read; a larger one is an unreadable reply.
    pub max_response_bytes: usize,
    /// Largest number of pages followed through `links.next`.
    pub max_pages: usize,
    /// Sent as `MS-PartnerCenter-Application`.
    pub application_name: String,
    /// Microsoft Graph, for the billing export (E29): base URL with the version.
    pub graph_url: String,
    /// The audience of Graph tokens.
    pub graph_resource: String,
    /// Largest billing export file read, decompressed (addendum E29.4: 512 MiB).
    pub max_blob_bytes: u64,
    /// Largest invoice statement PDF read (E28: 20 MiB).
    pub max_statement_bytes: usize,
}

/// Microsoft Graph in the global cloud; the billing APIs exist nowhere else (addendum §3.1).
pub const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";
/// The audience of Graph tokens.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

impl ClientConfig {
    /// Defaults for a base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 16 * 1024 * 1024,
            max_pages: 1000,
            application_name: "pcsaga".to_owned(),
            graph_url: GRAPH_URL.to_owned(),
            graph_resource: GRAPH_RESOURCE.to_owned(),
            max_blob_bytes: 512 * 1024 * 1024,
            max_statement_bytes: 20 * 1024 * 1024,
        }
    }
}
