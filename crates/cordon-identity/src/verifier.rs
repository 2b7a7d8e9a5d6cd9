//! The entry point: [`Verifier`] holds the configured issuers, API keys, the verified-token cache and
//! the HTTP client for JWKS fetches, and routes each credential to the right check.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cordon_policy::file::IdentitySection;

use crate::apikey::ApiKeys;
use crate::cache::{self, TokenCache};
use crate::claims;
use crate::error::{AuthError, ConfigError, sanitize};
use crate::jwks::FETCH_TIMEOUT;
use crate::jwt::Issuer;
use crate::{Caller, Identity};

/// Default minimum time between two JWKS refreshes of one issuer (on unknown `kid`).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Verifies bearer credentials. `Send + Sync`; share it in an `Arc`. Rebuild it when the policy
/// changes (the key sets and token cache belong to one configuration).
pub struct Verifier {
    pub(crate) issuers: HashMap<String, Issuer>,
    pub(crate) api_keys: ApiKeys,
    pub(crate) cache: TokenCache,
    pub(crate) client: Option<reqwest::Client>,
    pub(crate) refresh_interval: Duration,
    pub(crate) jwks_max_age: Duration,
}

impl Verifier {
    /// Builds from the policy's identity section. `base_dir` resolves relative `jwks_file` paths;
    /// a `jwks_file` is read now (an unreadable file or one with no usable key is an error).
    /// `jwks_url` key sets load in [`Verifier::prefetch`] or on first use.
    pub fn new(section: &IdentitySection, base_dir: &Path) -> Result<Verifier, ConfigError> {
        // Pin jsonwebtoken to the aws-lc-rs backend even if another crate in the build enables a
        // second backend; an Err only means a provider is already installed.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

        let mut issuers = HashMap::with_capacity(section.issuers.len());
        for spec in &section.issuers {
            if issuers.contains_key(&spec.issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: spec.issuer.clone(),
                });
            }
            issuers.insert(spec.issuer.clone(), Issuer::new(spec, base_dir)?);
        }
        let client = if issuers.values().any(|i| i.keys.is_url()) {
            let c = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .map_err(|e| ConfigError::HttpClient {
                    detail: e.to_string(),
                })?;
            Some(c)
        } else {
            None
        };
        Ok(Verifier {
            issuers,
            api_keys: ApiKeys::new(&section.api_keys)?,
            cache: TokenCache::new(section.token_cache_seconds, cache::DEFAULT_CAPACITY),
            client,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            jwks_max_age: crate::jwks::DEFAULT_MAX_AGE,
        })
    }

    /// Sets the minimum time between two JWKS refreshes of one issuer (default
    /// [`DEFAULT_REFRESH_INTERVAL`]).
    pub fn with_refresh_interval(mut self, interval: Duration) -> Verifier {
        self.refresh_interval = interval;
        self
    }

    /// Sets how old a `jwks_url` key set may get before it is re-fetched in the background
    /// (default [`crate::jwks::DEFAULT_MAX_AGE`]).
    pub fn with_jwks_max_age(mut self, max_age: Duration) -> Verifier {
        self.jwks_max_age = max_age;
        self
    }

    /// Overrides the verified-token cache: `ttl_seconds` 0 disables it; `capacity` is the number of
    /// entries before it is cleared (default 10 000).
    pub fn with_token_cache(mut self, ttl_seconds: u64, capacity: usize) -> Verifier {
        self.cache = TokenCache::new(ttl_seconds, capacity);
        self
    }

    /// Verifies a bearer credential: a JWT (three dot-separated parts) or a workload API key
    /// (anything else). `now_unix` is the current time in unix seconds.
    pub async fn verify(&self, credential: &str, now_unix: u64) -> Result<Identity, AuthError> {
        if credential.trim().is_empty() {
            return Err(AuthError::MissingCredentials);
        }
        if credential.bytes().filter(|b| *b == b'.').count() != 2 {
            return self.api_keys.verify(credential);
        }

        let key = cache::key(credential);
        if let Some(identity) = self.cached(&key, now_unix) {
            return Ok(identity);
        }
        let jwt = claims::parse(credential)?;
        let iss = claims::issuer(&jwt.claims)?;
        let issuer = self.issuers.get(iss).ok_or_else(|| AuthError::WrongIssuer {
            issuer: sanitize(iss),
        })?;
        let (identity, keys) = issuer
            .verify(
                credential,
                &jwt,
                now_unix,
                self.client.as_ref(),
                crate::jwt::Refresh {
                    interval: self.refresh_interval,
                    max_age: self.jwks_max_age,
                },
            )
            .await?;
        if let Some(exp) = identity.expires_at {
            self.cache.insert(key, &identity, keys, now_unix, exp);
        }
        Ok(identity)
    }

    /// A cache hit for the token with cache key `key`, valid at `now` and verified with its issuer's
    /// current key set.
    pub(crate) fn cached(&self, key: &[u8; 32], now: u64) -> Option<Identity> {
        self.cache.get(key, now, |id| match &id.caller {
            Caller::User { issuer } => self.issuers.get(issuer).map(|i| i.current_keys()),
            Caller::Workload { .. } => None,
        })
    }

    /// Takes over `previous`'s live key sets for the issuers whose keys come from the same
    /// `jwks_url` (a policy reload builds a new verifier): the last good keys, their age and the
    /// refresh rate limit survive the reload, so an identity provider that is down when the
    /// policy changes locks nobody out ("a failed JWKS fetch keeps the last good keys"). Issuers
    /// that are new, or whose URL changed, start empty: [`Verifier::prefetch`] loads them.
    pub fn inherit_keys(&mut self, previous: &Verifier) {
        for (name, issuer) in &mut self.issuers {
            if let Some(old) = previous.issuers.get(name)
                && issuer.keys.same_url(&old.keys)
            {
                issuer.keys = old.keys.clone();
            }
        }
    }

    /// Fetches every `jwks_url` set not loaded yet, one issuer after the other (at startup, and
    /// before a reloaded policy is swapped in). Failures are logged, not fatal: the keys load on
    /// first use.
    pub async fn prefetch(&self) {
        for issuer in self.issuers.values().filter(|i| i.keys.is_url()) {
            if !issuer.keys.ever_loaded().await {
                issuer.keys.refresh(self.client.as_ref(), Duration::ZERO).await;
            }
        }
    }
}
