//! Access tokens shaped like Entra ID's: JWTs (`header.claims.signature`, base64url) with the
//! claims clients read (`aud`, `iss`, `tid`, `appid`, `iat`, `nbf`, `exp`, and for app+user
//! tokens `oid` and `scp`), so a client that caches a token until its `exp` does so here too.
//!
//! Signed with HS256 and a key the simulator draws at start. Clients do not verify Entra ID's
//! signatures either (only the resource server does); the simulator checks a token by looking
//! it up among those it issued, and can check the signature (tests do).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How every access token the simulator issues begins (`{"typ":"JWT"` in base64url): what
/// tests search logs, databases and snapshots for.
pub const TOKEN_PREFIX: &str = "eyJ0eXAiOiJKV1Qi";

/// Signs and reads the simulator's tokens.
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Default for Signer {
    fn default() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self { key }
    }
}

impl Signer {
    fn mac(&self, signing_input: &str) -> Vec<u8> {
        // HMAC takes keys of any length, so the error case is empty: an empty signature
        // would only make the token unverifiable, never accepted.
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// A signed token carrying `claims`.
    pub fn issue(&self, claims: &Value) -> String {
        // Written out, in Entra ID's order (`typ` first): JSON maps here sort their keys.
        let header = r#"{"typ":"JWT","alg":"HS256","kid":"pcsaga-simulator"}"#;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&input));
        format!("{input}.{signature}")
    }

    /// The claims of a token this signer issued; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let (input, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        mac.update(input.as_bytes());
        mac.verify_slice(&signature).ok()?;
        claims(token)
    }
}

/// The claims of any JWT, unverified (what a client reads).
pub fn claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, claims) = (parts.next()?, parts.next()?);
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_carries_its_claims_and_only_its_signer_accepts_it() {
        let signer = Signer::default();
        let token = signer.issue(&serde_json::json!({"exp": 1_800_000_000, "tid": "t"}));
        assert_eq!(token.split('.').count(), 3);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(claims(&token).expect("claims")["exp"], 1_800_000_000);
        assert_eq!(signer.verify(&token).expect("verified")["tid"], "t");
        assert!(Signer::default().verify(&token).is_none(), "another key");
        let mut forged = token.clone();
        forged.replace_range(token.len() - 2.., "AA");
        assert!(signer.verify(&forged).is_none());
    }
}
