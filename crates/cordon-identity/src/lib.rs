//! Cordon's identity check: who is the data subject, and where do they reside?
//!
//! [`Verifier::verify`] takes a bearer credential and returns a verified [`Identity`]: for a JWT
//! (three dot-separated parts) after checking its signature against the issuer's JWKS (or HS256
//! secret), its algorithm against the issuer's pinned list, and `exp`/`nbf`/`iss`/`aud` against the
//! `now` passed in; for anything else, as a workload API key compared by SHA-256 digest. Every
//! failure is an [`AuthError`] with a wire [`cordon_types::ReasonCode`].
//!
//! Decisions worth knowing: a token without `kid` is accepted only when exactly one key of the
//! issuer's set fits its algorithm (otherwise `unknown_key`); JWKS `oct` keys are never used (HS256
//! uses only the secret named by `hs256_secret_env`, at least 32 bytes); RSA keys under 2048 bits
//! are ignored; a `jwks_file` must be readable with a usable key at construction (a `jwks_url` may
//! be down: it loads on first use); verified tokens are cached by SHA-256 for
//! `token_cache_seconds`, never past `exp`.
//!
//! Modules: [`error`] (errors), `claims` (untrusted decoding and claim checks), `jwt` (issuers,
//! algorithm pinning, signatures), `jwks` (key sets, fetching, rotation), `apikey` (workload keys),
//! `cache` (verified-token cache), `verifier` (the entry point tying them together).

mod apikey;
mod cache;
mod claims;
pub mod error;
mod jwks;
mod jwt;
mod verifier;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::fmt;

use cordon_types::{Country, Jurisdiction, Tier};

pub use apikey::hash_api_key;
pub use error::{AuthError, ConfigError};
pub use jwks::{FETCH_TIMEOUT, MAX_JWKS_BYTES, ed25519_jwk};
pub use verifier::{DEFAULT_REFRESH_INTERVAL, Verifier};

/// Who is calling: a user (a JWT of a configured issuer) or a workload (an API key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    User { issuer: String },
    Workload { key_id: String },
}

impl Caller {
    /// What a subject's pseudonym is computed from: the raw id qualified by who vouches for it
    /// (`u␟<issuer>␟<sub>` for users, `w␟<key id>` for workloads, ␟ = U+001F). The same `sub` from
    /// two issuers, or a `sub` shaped like an API key's subject, are then two subjects, with two
    /// pseudonyms and two data keys: an export or a shred for one never touches the other.
    pub fn subject_key(&self, subject: &str) -> String {
        match self {
            Caller::User { issuer } => format!("u\u{1f}{issuer}\u{1f}{subject}"),
            Caller::Workload { key_id } => format!("w\u{1f}{key_id}"),
        }
    }
}

/// Where the subject resides, as far as the credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Residency {
    /// The raw claim value as given (`DE` or `EU`); the gateway maps it to a jurisdiction.
    Claim(String),
    /// Fixed by configuration (API keys).
    Fixed {
        jurisdiction: Jurisdiction,
        country: Option<Country>,
    },
}

/// A verified identity.
///
/// `Debug` redacts `subject`: it is a raw subject id, which the gateway pseudonymizes and never logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub caller: Caller,
    /// Raw subject id (never log it).
    pub subject: String,
    pub residency: Residency,
    /// The claim path (`address.country`) or `api_key:<id>`.
    pub residency_source: String,
    /// Users: [`Tier::Personal`]; API keys: their configured tier.
    pub tier: Tier,
    /// The token's `exp` (unix seconds); `None` for API keys.
    pub expires_at: Option<u64>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("caller", &self.caller)
            .field("subject", &"[redacted]")
            .field("residency", &self.residency)
            .field("residency_source", &self.residency_source)
            .field("tier", &self.tier)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
