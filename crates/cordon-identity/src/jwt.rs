//! One trusted issuer and the verification of its JWTs: algorithm pinning, key selection, the
//! signature check (jsonwebtoken with the aws-lc-rs backend), then the claim checks against `now`.
//!
//! The header's `alg` is trusted only as far as this: it must be in the issuer's configured list,
//! and it must match the type of the key that verifies it (an RSA key never verifies an HS256
//! token; HS256 uses only the configured secret, never a JWKS key). jsonwebtoken is asked to check
//! the signature and algorithm only; `exp`, `nbf`, `iss`, `aud` are checked here against the
//! caller's `now`, after [`crate::claims`] has rejected wrongly typed `exp`/`nbf`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cordon_policy::file::IssuerSpec;
use cordon_types::Tier;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::claims::{self, UnverifiedJwt};
use crate::error::{AuthError, ConfigError, sanitize};
use crate::jwks::{IssuerKeys, KeySet, KeySource, Lookup};
use crate::{Caller, Identity, Residency};

/// Algorithm names this gateway accepts in configuration and in JWK `alg`.
pub(crate) fn supported_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        "HS256" => Some(Algorithm::HS256),
        _ => None,
    }
}

/// When an issuer's key set is re-fetched: on an unknown `kid` at most once per `interval`, and in
/// the background once older than `max_age` (`jwks_url` only; see [`crate::jwks`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refresh {
    pub interval: Duration,
    pub max_age: Duration,
}

/// A configured issuer, ready to verify.
pub(crate) struct Issuer {
    pub issuer: String,
    audiences: Vec<String>,
    /// The pinned algorithms, each with a jsonwebtoken validation that checks signature and
    /// algorithm only.
    algorithms: Vec<(Algorithm, Validation)>,
    hs256_secret: Option<DecodingKey>,
    subject_claim: String,
    residency_claim: String,
    leeway: u64,
    pub keys: Arc<IssuerKeys>,
}

impl Issuer {
    pub fn new(spec: &IssuerSpec, base_dir: &Path) -> Result<Issuer, ConfigError> {
        let name = spec.issuer.clone();
        if spec.audiences.is_empty() {
            return Err(ConfigError::NoAudiences { issuer: name });
        }
        if spec.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithms { issuer: name });
        }
        if spec.subject_claim.trim().is_empty() {
            return Err(ConfigError::EmptyClaimPath {
                issuer: name,
                field: "subject_claim",
            });
        }
        if spec.residency_claim.trim().is_empty() {
            return Err(ConfigError::EmptyClaimPath {
                issuer: name,
                field: "residency_claim",
            });
        }
        let mut algorithms = Vec::new();
        for a in &spec.algorithms {
            let alg = supported_algorithm(a).ok_or_else(|| ConfigError::UnknownAlgorithm {
                issuer: name.clone(),
                alg: a.clone(),
            })?;
            if !algorithms.iter().any(|(x, _)| *x == alg) {
                algorithms.push((alg, signature_only(alg)));
            }
        }

        let hs256 = algorithms.iter().any(|(a, _)| *a == Algorithm::HS256);
        let hs256_secret = if hs256 {
            let env = spec
                .hs256_secret_env
                .as_deref()
                .filter(|e| !e.is_empty())
                .ok_or_else(|| ConfigError::Hs256WithoutSecretEnv { issuer: name.clone() })?;
            let secret = std::env::var_os(env).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::Hs256SecretUnset {
                    issuer: name.clone(),
                    env: env.to_string(),
                }
            })?;
            let secret = secret.as_encoded_bytes();
            if secret.len() < 32 {
                return Err(ConfigError::Hs256SecretTooShort {
                    issuer: name,
                    env: env.to_string(),
                    len: secret.len(),
                });
            }
            Some(DecodingKey::from_secret(secret))
        } else {
            if spec.hs256_secret_env.is_some() {
                tracing::warn!(issuer = %name, "hs256_secret_env is set but HS256 is not listed in algorithms; HS256 stays off");
            }
            None
        };

        let (source, initial) = match (&spec.jwks_url, &spec.jwks_file) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoKeySources { issuer: name }),
            (Some(url), None) => {
                let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::JwksUrl {
                    issuer: name.clone(),
                    url: url.clone(),
                    detail: e.to_string(),
                })?;
                if !matches!(parsed.scheme(), "https" | "http") {
                    return Err(ConfigError::JwksUrl {
                        issuer: name,
                        url: url.clone(),
                        detail: "scheme must be https (or http)".into(),
                    });
                }
                (KeySource::Url(url.clone()), None)
            }
            (None, Some(file)) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    base_dir.join(file)
                };
                let set = crate::jwks::load_file_now(&path).map_err(|detail| ConfigError::JwksFile {
                    issuer: name.clone(),
                    path: path.clone(),
                    detail,
                })?;
                (KeySource::File(path), Some(set))
            }
            (None, None) => {
                let asym: Vec<&str> = spec
                    .algorithms
                    .iter()
                    .map(String::as_str)
                    .filter(|a| *a != "HS256")
                    .collect();
                if !asym.is_empty() {
                    return Err(ConfigError::NoKeySource {
                        issuer: name,
                        algs: asym.join(", "),
                    });
                }
                (KeySource::None, None)
            }
        };

        Ok(Issuer {
            keys: Arc::new(IssuerKeys::new(&name, source, initial)),
            issuer: name,
            audiences: spec.audiences.clone(),
            algorithms,
            hs256_secret,
            subject_claim: spec.subject_claim.clone(),
            residency_claim: spec.residency_claim.clone(),
            leeway: spec.leeway_seconds,
        })
    }

    /// Verifies a parsed token of this issuer. `token` is the original compact form. Also returns
    /// the key set the signature was checked with (`None` for HS256's static secret).
    pub async fn verify(
        &self,
        token: &str,
        jwt: &UnverifiedJwt,
        now: u64,
        client: Option<&reqwest::Client>,
        refresh: Refresh,
    ) -> Result<(Identity, Option<Arc<KeySet>>), AuthError> {
        let Refresh {
            interval: refresh_interval,
            max_age,
        } = refresh;
        let (alg, validation) = self.pinned(&jwt.alg)?;
        let mut used = None;

        if alg == Algorithm::HS256 {
            let key = self.hs256_secret.as_ref().ok_or_else(|| {
                AuthError::unsupported(format!("HS256 is not configured for issuer '{}'", self.issuer))
            })?;
            self.check_signature(token, key, validation)?;
        } else {
            let kid = jwt.kid.as_deref();
            self.keys.reload_file_if_changed(refresh_interval).await;
            if self.keys.is_stale(max_age, refresh_interval) {
                let (keys, client) = (self.keys.clone(), client.cloned());
                tokio::spawn(async move {
                    keys.refresh_stale(client.as_ref(), max_age, refresh_interval)
                        .await;
                });
            }
            let mut keys = self.keys.current();
            if matches!(keys.find(kid, alg), Lookup::NotFound) {
                self.keys.refresh(client, refresh_interval).await;
                keys = self.keys.current();
            }
            match keys.find(kid, alg) {
                Lookup::Found(k) => {
                    self.check_signature(token, &k.key, validation)?;
                    used = Some(keys.clone());
                }
                Lookup::WrongType => {
                    return Err(AuthError::unsupported(format!(
                        "the token's algorithm {alg:?} does not match the type of key '{}' of issuer '{}'",
                        sanitize(kid.unwrap_or_default()),
                        self.issuer
                    )));
                }
                Lookup::Ambiguous => {
                    return Err(AuthError::UnknownKey {
                        issuer: self.issuer.clone(),
                        kid: None,
                    });
                }
                Lookup::NotFound => {
                    return Err(AuthError::UnknownKey {
                        issuer: self.issuer.clone(),
                        kid: kid.map(sanitize),
                    });
                }
            }
        }

        // The signature holds: now the claims can be believed.
        let exp = claims::check_times(jwt.exp, jwt.nbf, now, self.leeway)?;
        claims::check_audience(&jwt.claims, &self.audiences, &self.issuer)?;
        let subject = claims::string_at(&jwt.claims, &self.subject_claim)
            .ok_or_else(|| AuthError::missing_claim(&self.subject_claim))?;
        let residency = claims::string_at(&jwt.claims, &self.residency_claim).ok_or_else(|| {
            AuthError::MissingResidency {
                issuer: self.issuer.clone(),
                claim: self.residency_claim.clone(),
            }
        })?;
        let identity = Identity {
            caller: Caller::User {
                issuer: self.issuer.clone(),
            },
            subject: subject.to_string(),
            residency: Residency::Claim(residency.to_string()),
            residency_source: self.residency_claim.clone(),
            tier: Tier::Personal,
            expires_at: Some(exp),
        };
        Ok((identity, used))
    }

    /// The issuer's current key set (a cache hit is good only while this is the set it was
    /// verified with).
    pub fn current_keys(&self) -> Arc<KeySet> {
        self.keys.current()
    }

    /// The header's `alg`, if this issuer accepts it.
    fn pinned(&self, alg: &str) -> Result<(Algorithm, &Validation), AuthError> {
        let accepted = || {
            self.algorithms
                .iter()
                .map(|(a, _)| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(parsed) = supported_algorithm(alg) else {
            return Err(AuthError::unsupported(format!(
                "'{}' is not accepted for issuer '{}' (accepted: {})",
                sanitize(alg),
                self.issuer,
                accepted()
            )));
        };
        match self.algorithms.iter().find(|(a, _)| *a == parsed) {
            Some((a, v)) => Ok((*a, v)),
            None => Err(AuthError::unsupported(format!(
                "{parsed:?} is not accepted for issuer '{}' (accepted: {})",
                self.issuer,
                accepted()
            ))),
        }
    }

    fn check_signature(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
    ) -> Result<(), AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<serde::de::IgnoredAny>(token, key, validation) {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm
                | ErrorKind::UnsupportedAlgorithm => AuthError::unsupported(format!(
                    "the token's algorithm does not fit the key of issuer '{}'",
                    self.issuer
                )),
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    AuthError::malformed("the token could not be decoded")
                }
                _ => AuthError::BadSignature {
                    issuer: self.issuer.clone(),
                },
            }),
        }
    }
}

/// A jsonwebtoken validation that checks the signature and the algorithm, nothing else: claim
/// checks are ours, against the `now` the caller passes in.
fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}
