//! Errors: why a credential was refused ([`AuthError`], each mapped to its wire [`ReasonCode`]) and
//! why an identity configuration was rejected at startup ([`ConfigError`]).
//!
//! Messages are meant for the caller or operator to act on. They never carry the token, a secret,
//! or a subject id; values copied from an unverified token (issuer, kid, alg) are shortened and
//! escaped by [`sanitize`] before they go into a message.

use std::path::PathBuf;

use cordon_types::ReasonCode;

/// Why a bearer credential was not accepted. [`AuthError::reason`] is the wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no credentials: send 'Authorization: Bearer <JWT or API key>'")]
    MissingCredentials,
    #[error("malformed token: {detail}")]
    MalformedToken { detail: String },
    #[error("unsupported algorithm: {detail}")]
    UnsupportedAlgorithm { detail: String },
    #[error("token signature does not verify against the keys of issuer '{issuer}'")]
    BadSignature { issuer: String },
    #[error(
        "no key {} in the key set of issuer '{issuer}' (after refreshing it); the token may be signed by a key the issuer has not published yet",
        kid.as_deref().map(|k| format!("with kid '{k}'")).unwrap_or_else(|| "matching this token (it has no kid)".to_string())
    )]
    UnknownKey { issuer: String, kid: Option<String> },
    #[error("token expired at {exp} (unix seconds; now {now}, leeway {leeway}s): obtain a new token")]
    TokenExpired { exp: u64, now: u64, leeway: u64 },
    #[error(
        "token is not valid before {nbf} (unix seconds; now {now}, leeway {leeway}s): check the issuer's clock"
    )]
    TokenNotYetValid { nbf: u64, now: u64, leeway: u64 },
    #[error("token issuer '{issuer}' is not a configured issuer")]
    WrongIssuer { issuer: String },
    #[error("token audience is not accepted for issuer '{issuer}'; expected one of: {}", accepted.join(", "))]
    WrongAudience { issuer: String, accepted: Vec<String> },
    #[error("token is missing the required claim '{claim}' (or it has the wrong type)")]
    MissingClaim { claim: String },
    #[error(
        "token of issuer '{issuer}' has no residency claim '{claim}' holding a string (a country such as DE or a jurisdiction such as EU)"
    )]
    MissingResidency { issuer: String, claim: String },
    #[error("unknown API key: it matches no key configured in identity.api_keys")]
    UnknownApiKey,
}

impl AuthError {
    /// The wire reason code for this failure.
    pub fn reason(&self) -> ReasonCode {
        match self {
            AuthError::MissingCredentials => ReasonCode::MissingCredentials,
            AuthError::MalformedToken { .. } => ReasonCode::MalformedToken,
            AuthError::UnsupportedAlgorithm { .. } => ReasonCode::UnsupportedAlgorithm,
            AuthError::BadSignature { .. } => ReasonCode::BadSignature,
            AuthError::UnknownKey { .. } => ReasonCode::UnknownKey,
            AuthError::TokenExpired { .. } => ReasonCode::TokenExpired,
            AuthError::TokenNotYetValid { .. } => ReasonCode::TokenNotYetValid,
            AuthError::WrongIssuer { .. } => ReasonCode::WrongIssuer,
            AuthError::WrongAudience { .. } => ReasonCode::WrongAudience,
            AuthError::MissingClaim { .. } => ReasonCode::MissingClaim,
            AuthError::MissingResidency { .. } => ReasonCode::MissingResidency,
            AuthError::UnknownApiKey => ReasonCode::UnknownApiKey,
        }
    }

    pub(crate) fn malformed(detail: impl Into<String>) -> AuthError {
        AuthError::MalformedToken {
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(detail: impl Into<String>) -> AuthError {
        AuthError::UnsupportedAlgorithm {
            detail: detail.into(),
        }
    }

    pub(crate) fn missing_claim(claim: &str) -> AuthError {
        AuthError::MissingClaim {
            claim: claim.to_string(),
        }
    }
}

/// Why the identity section of the policy cannot be used. Raised by [`crate::Verifier::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "identity.api_keys '{id}': hash must be 'sha256:' followed by 64 hex digits (compute it with `cordon` or hash_api_key); {detail}"
    )]
    ApiKeyHash { id: String, detail: String },
    #[error("identity.api_keys: {detail}")]
    DuplicateApiKey { detail: String },
    #[error("identity.issuers: issuer '{issuer}' is listed twice")]
    DuplicateIssuer { issuer: String },
    #[error("identity.issuers '{issuer}': audiences is empty; list at least one accepted 'aud' value")]
    NoAudiences { issuer: String },
    #[error(
        "identity.issuers '{issuer}': algorithms is empty; list at least one of RS256, ES256, EdDSA, HS256"
    )]
    NoAlgorithms { issuer: String },
    #[error(
        "identity.issuers '{issuer}': unknown or unsupported algorithm '{alg}' (supported: RS256, ES256, EdDSA, HS256)"
    )]
    UnknownAlgorithm { issuer: String, alg: String },
    #[error("identity.issuers '{issuer}': no key source; set jwks_url or jwks_file (required for {algs})")]
    NoKeySource { issuer: String, algs: String },
    #[error("identity.issuers '{issuer}': set only one of jwks_url and jwks_file")]
    TwoKeySources { issuer: String },
    #[error(
        "identity.issuers '{issuer}': HS256 is listed but hs256_secret_env is not set; name the environment variable holding the shared secret"
    )]
    Hs256WithoutSecretEnv { issuer: String },
    #[error("identity.issuers '{issuer}': environment variable '{env}' (hs256_secret_env) is unset or empty")]
    Hs256SecretUnset { issuer: String, env: String },
    #[error(
        "identity.issuers '{issuer}': the HS256 secret in '{env}' is {len} bytes; use at least 32 random bytes"
    )]
    Hs256SecretTooShort { issuer: String, env: String, len: usize },
    #[error("identity.issuers '{issuer}': {field} is empty")]
    EmptyClaimPath { issuer: String, field: &'static str },
    #[error("identity.issuers '{issuer}': jwks_url '{url}' is not an http(s) URL: {detail}")]
    JwksUrl {
        issuer: String,
        url: String,
        detail: String,
    },
    #[error("identity.issuers '{issuer}': jwks_file '{}' cannot be used: {detail}", path.display())]
    JwksFile {
        issuer: String,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot build the HTTP client for JWKS fetches: {detail}")]
    HttpClient { detail: String },
}

/// Makes a value taken from an unverified token safe to put in a message or a log line: at most
/// 64 characters, control and non-ASCII characters escaped.
pub(crate) fn sanitize(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_auth_error_maps_to_an_authentication_code() {
        let all = [
            AuthError::MissingCredentials,
            AuthError::malformed("x"),
            AuthError::unsupported("x"),
            AuthError::BadSignature { issuer: "i".into() },
            AuthError::UnknownKey {
                issuer: "i".into(),
                kid: None,
            },
            AuthError::TokenExpired {
                exp: 1,
                now: 2,
                leeway: 0,
            },
            AuthError::TokenNotYetValid {
                nbf: 2,
                now: 1,
                leeway: 0,
            },
            AuthError::WrongIssuer { issuer: "i".into() },
            AuthError::WrongAudience {
                issuer: "i".into(),
                accepted: vec!["a".into()],
            },
            AuthError::missing_claim("sub"),
            AuthError::MissingResidency {
                issuer: "i".into(),
                claim: "country".into(),
            },
            AuthError::UnknownApiKey,
        ];
        for e in all {
            assert_eq!(e.reason().http_status(), 401, "{e}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn sanitize_bounds_and_escapes() {
        assert_eq!(sanitize("kid-1"), "kid-1");
        assert_eq!(sanitize("a\nb"), "a\\nb");
        let long = "x".repeat(200);
        assert_eq!(sanitize(&long).chars().count(), 65);
    }
}
