//! JSON Web Key Sets: parsing JWKs into verification keys, and each issuer's live key set.
//!
//! Keys come from a `jwks_url` (HTTP GET, body capped at [`MAX_JWKS_BYTES`], [`FETCH_TIMEOUT`]) or
//! a `jwks_file`. The current set sits in an [`ArcSwap`], so verification reads it without locks.
//! A refresh happens on an unknown `kid`, at most once per issuer per refresh interval (while no
//! set has ever loaded, at most once per [`MIN_RETRY`]); concurrent callers wait for the one fetch
//! in flight. A `jwks_url` set is also re-fetched in the background once it is older than
//! [`DEFAULT_MAX_AGE`] (on the next verification that needs a key; requests keep using the current
//! set meanwhile), so a key the identity provider withdrew stops verifying even when tokens keep
//! naming it: an unknown-`kid` refresh alone would never notice. A re-fetch that returns the same
//! document keeps the same set, so it does not empty the verified-token cache. A failed fetch, or
//! a document with no usable key, keeps the last good set, so keys
//! rotate without a restart and an IdP outage does not lock everyone out. A `jwks_file` is also
//! re-read when its modification time or length changes (checked at most once per refresh
//! interval, on the verification path, without waiting).
//!
//! Usable keys: RSA (`n`, `e`, at least 2048 bits), EC P-256 (`x`, `y`), OKP Ed25519 (`x`), with
//! `use` absent or `sig`. Symmetric (`oct`) keys are never taken from a JWKS. Unusable keys are
//! skipped and logged at debug.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Timeout of one JWKS fetch (connect + body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// While an issuer has never loaded a key set, refresh attempts are allowed this often even if the
/// configured refresh interval is longer (so a failed startup fetch is retried on first use).
pub const MIN_RETRY: Duration = Duration::from_secs(1);

/// How old a `jwks_url` key set may get before it is re-fetched in the background (module docs).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// One verification key from a JWKS.
#[derive(Clone)]
pub(crate) struct VerKey {
    pub kid: Option<String>,
    pub family: AlgorithmFamily,
    /// The JWK's own `alg`, when it names one: a token must then use exactly that algorithm.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// An issuer's key set at one moment.
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<VerKey>,
}

/// What a key lookup found.
pub(crate) enum Lookup<'a> {
    Found(&'a VerKey),
    /// A key with this kid exists but is of another type than the token's algorithm.
    WrongType,
    /// Without a kid: more than one key could verify the token.
    Ambiguous,
    NotFound,
}

impl KeySet {
    /// Key selection. With a `kid`: the key with that kid (several keys may share a kid across
    /// types; the one whose type matches wins). Without a `kid`: the one key whose type matches the
    /// algorithm, if there is exactly one; otherwise the token is ambiguous and not accepted.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let fits = |k: &VerKey| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => {
                let mut same_kid = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let first = same_kid.next();
                if let Some(k) = first.into_iter().chain(same_kid).find(|k| fits(k)) {
                    Lookup::Found(k)
                } else if first.is_some() {
                    Lookup::WrongType
                } else {
                    Lookup::NotFound
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| fits(k));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Lookup::Found(k),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                    _ => Lookup::NotFound,
                }
            }
        }
    }
}

/// Parses a JWKS document. Errors only when the document itself is unusable; single bad keys are
/// skipped.
pub(crate) fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Some(Value::Array(keys)) = doc.get("keys") else {
        return Err("not a JWKS: no 'keys' array".to_string());
    };
    let mut set = KeySet::default();
    for (i, jwk) in keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(k) => set.keys.push(k),
            Err(why) => {
                let kid = jwk.get("kid").and_then(Value::as_str).map(crate::error::sanitize);
                tracing::debug!(
                    index = i,
                    kid = kid.as_deref().unwrap_or("-"),
                    why,
                    "skipping unusable JWK"
                );
            }
        }
    }
    Ok(set)
}

fn b64_field(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no '{name}'"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("'{name}' is not base64url"))
}

fn parse_jwk(jwk: &Value) -> Result<VerKey, String> {
    let str_field = |n: &str| jwk.get(n).and_then(Value::as_str);
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("'use' is not 'sig'".into());
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("'key_ops' does not include 'verify'".into());
        }
    }
    let alg = match str_field("alg") {
        None => None,
        Some(a) => Some(crate::jwt::supported_algorithm(a).ok_or_else(|| format!("unsupported alg '{a}'"))?),
    };
    let kid = str_field("kid").map(str::to_string);
    let (family, key) = match str_field("kty") {
        Some("RSA") => {
            let n = b64_field(jwk, "n")?;
            let e = b64_field(jwk, "e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!("RSA key of about {bits} bits; at least 2048 required"));
            }
            (AlgorithmFamily::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        Some("EC") => {
            if str_field("crv") != Some("P-256") {
                return Err("EC curve is not P-256".into());
            }
            let x = b64_field(jwk, "x")?;
            let y = b64_field(jwk, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (AlgorithmFamily::Ec, DecodingKey::from_ec_der(&point))
        }
        Some("OKP") => {
            if str_field("crv") != Some("Ed25519") {
                return Err("OKP curve is not Ed25519".into());
            }
            let x = b64_field(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            (AlgorithmFamily::Ed, DecodingKey::from_ed_der(&x))
        }
        Some("oct") => return Err("symmetric keys are never taken from a JWKS".into()),
        Some(other) => return Err(format!("unsupported kty '{}'", crate::error::sanitize(other))),
        None => return Err("no 'kty'".into()),
    };
    if let Some(a) = alg
        && a.family() != family
    {
        return Err("'alg' does not match 'kty'".into());
    }
    Ok(VerKey {
        kid,
        family,
        alg,
        key,
    })
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Url(String),
    File(PathBuf),
    /// HS256-only issuer: no key set.
    None,
}

/// When refreshes are allowed, and what was last read from a `jwks_file`.
struct RefreshState {
    last_attempt: Option<Instant>,
    ever_loaded: bool,
    /// When the current set was last fetched successfully, and the document it came from (a
    /// re-fetch of the same bytes keeps the current set).
    loaded_at: Option<Instant>,
    last_doc: Option<Vec<u8>>,
    /// `jwks_file` only: when its metadata was last compared, and the (mtime, length) last loaded.
    last_file_check: Option<Instant>,
    file_stamp: Option<FileStamp>,
}

type FileStamp = (Option<std::time::SystemTime>, u64);

/// One issuer's live key set.
pub(crate) struct IssuerKeys {
    issuer: String,
    source: KeySource,
    keys: ArcSwap<KeySet>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl IssuerKeys {
    /// `initial`: a set already loaded (from a `jwks_file`, with the file's stamp taken before the
    /// read).
    pub fn new(issuer: &str, source: KeySource, initial: Option<(KeySet, Option<FileStamp>)>) -> IssuerKeys {
        let ever_loaded = initial.is_some();
        let (set, file_stamp) = initial.unwrap_or_default();
        IssuerKeys {
            issuer: issuer.to_string(),
            source,
            keys: ArcSwap::from_pointee(set),
            refresh: tokio::sync::Mutex::new(RefreshState {
                last_attempt: None,
                ever_loaded,
                loaded_at: ever_loaded.then(Instant::now),
                last_doc: None,
                last_file_check: Some(Instant::now()),
                file_stamp,
            }),
        }
    }

    pub fn is_url(&self) -> bool {
        matches!(self.source, KeySource::Url(_))
    }

    /// Do both sets come from the same `jwks_url`?
    pub fn same_url(&self, other: &IssuerKeys) -> bool {
        matches!((&self.source, &other.source), (KeySource::Url(a), KeySource::Url(b)) if a == b)
    }

    /// Has a key set ever been loaded (a `jwks_file` at construction, a `jwks_url` once fetched)?
    pub async fn ever_loaded(&self) -> bool {
        self.refresh.lock().await.ever_loaded
    }

    /// The current key set (lock-free).
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Reloads the key set unless one was attempted less than `interval` ago. Concurrent callers
    /// queue behind the fetch in flight and then see its result via [`IssuerKeys::current`].
    pub async fn refresh(&self, client: Option<&reqwest::Client>, interval: Duration) {
        let mut state = self.refresh.lock().await;
        let allowed_every = if state.ever_loaded {
            interval
        } else {
            interval.min(MIN_RETRY)
        };
        if let Some(last) = state.last_attempt
            && last.elapsed() < allowed_every
        {
            return;
        }
        state.last_attempt = Some(Instant::now());
        self.load(client, &mut state).await;
    }

    /// `jwks_url` only: whether the current set is older than `max_age`, no fetch is in flight and
    /// none was attempted within `interval` (never waits). Then [`IssuerKeys::refresh_stale`]
    /// should run, in the background.
    pub fn is_stale(&self, max_age: Duration, interval: Duration) -> bool {
        if !self.is_url() {
            return false;
        }
        self.refresh.try_lock().is_ok_and(|state| {
            state.ever_loaded
                && state.loaded_at.is_none_or(|t| t.elapsed() >= max_age)
                && state.last_attempt.is_none_or(|t| t.elapsed() >= interval)
        })
    }

    /// Re-fetches a `jwks_url` set older than `max_age`, unless a fetch was attempted less than
    /// `interval` ago (a failing identity provider is not hammered) or one is in flight.
    pub async fn refresh_stale(
        &self,
        client: Option<&reqwest::Client>,
        max_age: Duration,
        interval: Duration,
    ) {
        let Ok(mut state) = self.refresh.try_lock() else {
            return;
        };
        if !state.ever_loaded || state.loaded_at.is_some_and(|t| t.elapsed() < max_age) {
            return;
        }
        if state.last_attempt.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        state.last_attempt = Some(Instant::now());
        tracing::debug!(issuer = %self.issuer, "JWKS older than its maximum age; re-fetching");
        self.load(client, &mut state).await;
    }

    /// `jwks_file` only: re-reads the file when its modification time or length changed, checking
    /// at most once per `interval`. Never waits: if a refresh is in flight, this is skipped. So a
    /// key removed from the file stops verifying without a restart or an unknown `kid`.
    pub async fn reload_file_if_changed(&self, interval: Duration) {
        let KeySource::File(path) = &self.source else {
            return;
        };
        let Ok(mut state) = self.refresh.try_lock() else {
            return;
        };
        if state.last_file_check.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        state.last_file_check = Some(Instant::now());
        let stamp = tokio::fs::metadata(path).await.ok().map(|m| stamp_of(&m));
        if stamp.is_some() && stamp != state.file_stamp {
            tracing::debug!(issuer = %self.issuer, "jwks_file changed; reloading");
            self.load(None, &mut state).await;
        }
    }

    async fn load(&self, client: Option<&reqwest::Client>, state: &mut RefreshState) {
        let mut stamp = None;
        let fetched = match &self.source {
            KeySource::Url(url) => match client {
                Some(c) => fetch_url(c, url).await,
                None => Err("no HTTP client".to_string()),
            },
            KeySource::File(path) => {
                // Stamp before reading: a write racing the read shows up as a change next time.
                stamp = tokio::fs::metadata(path).await.ok().map(|m| stamp_of(&m));
                read_file(path).await
            }
            KeySource::None => return,
        };
        let bytes = match fetched {
            Ok(b) if state.ever_loaded && state.last_doc.as_deref() == Some(b.as_slice()) => {
                // Unchanged: keep the set (and the tokens cached against it).
                state.loaded_at = Some(Instant::now());
                return;
            }
            Ok(b) => Ok(b),
            Err(e) => Err(e),
        };
        match bytes.and_then(|b| parse_jwks(&b).map(|set| (set, b))) {
            Ok((set, _)) if set.keys.is_empty() => {
                tracing::warn!(issuer = %self.issuer, "JWKS has no usable key; keeping the last good key set");
            }
            Ok((set, doc)) => {
                tracing::info!(issuer = %self.issuer, keys = set.keys.len(), "JWKS loaded");
                self.keys.store(Arc::new(set));
                state.ever_loaded = true;
                state.loaded_at = Some(Instant::now());
                state.last_doc = Some(doc);
                if stamp.is_some() {
                    state.file_stamp = stamp;
                }
            }
            Err(why) => {
                tracing::warn!(issuer = %self.issuer, error = %why, "JWKS refresh failed; keeping the last good key set");
            }
        }
    }
}

fn stamp_of(meta: &std::fs::Metadata) -> FileStamp {
    (meta.modified().ok(), meta.len())
}

/// GET a JWKS with a size cap.
pub(crate) async fn fetch_url(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .send()
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET returned HTTP {status}"));
    }
    if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading body failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err(format!("file larger than {MAX_JWKS_BYTES} bytes"));
    }
    tokio::fs::read(path).await.map_err(|e| e.to_string())
}

/// Synchronous file load, for construction time. Returns the set and the file's stamp.
pub(crate) fn load_file_now(path: &std::path::Path) -> Result<(KeySet, Option<FileStamp>), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err(format!("file larger than {MAX_JWKS_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let set = parse_jwks(&bytes)?;
    if set.keys.is_empty() {
        return Err("the JWKS has no usable key (RSA >= 2048 bits, EC P-256, or Ed25519)".to_string());
    }
    Ok((set, Some(stamp_of(&meta))))
}

/// An OKP (Ed25519) JWK for a raw 32-byte public key: what the dev-token CLI publishes.
pub fn ed25519_jwk(kid: &str, public_key: &[u8]) -> Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(public_key),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn parses_usable_keys_and_skips_the_rest() {
        let n = URL_SAFE_NO_PAD.encode([0xC5u8; 256]);
        let small_n = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let c32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let set = parse_jwks(&doc(vec![
            json!({"kty":"RSA","kid":"r","n":n,"e":"AQAB","alg":"RS256"}),
            json!({"kty":"RSA","kid":"small","n":small_n,"e":"AQAB"}),
            json!({"kty":"EC","kid":"e","crv":"P-256","x":c32,"y":c32}),
            json!({"kty":"EC","kid":"e384","crv":"P-384","x":c32,"y":c32}),
            ed25519_jwk("o", &[9u8; 32]),
            json!({"kty":"oct","kid":"h","k":"c2VjcmV0"}),
            json!({"kty":"RSA","kid":"enc","n":n,"e":"AQAB","use":"enc"}),
            json!({"kty":"RSA","kid":"mismatch","n":n,"e":"AQAB","alg":"ES256"}),
            json!("not an object"),
        ]))
        .unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["r", "e", "o"]);
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"nope").is_err());
    }

    #[test]
    fn lookup_by_kid_and_without() {
        let c32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let set = parse_jwks(&doc(vec![
            json!({"kty":"EC","kid":"e","crv":"P-256","x":c32,"y":c32}),
            ed25519_jwk("o", &[9u8; 32]),
            ed25519_jwk("o2", &[8u8; 32]),
        ]))
        .unwrap();
        assert!(matches!(set.find(Some("e"), Algorithm::ES256), Lookup::Found(_)));
        assert!(matches!(set.find(Some("e"), Algorithm::RS256), Lookup::WrongType));
        assert!(matches!(set.find(Some("zz"), Algorithm::ES256), Lookup::NotFound));
        assert!(matches!(set.find(None, Algorithm::ES256), Lookup::Found(_)));
        assert!(matches!(set.find(None, Algorithm::EdDSA), Lookup::Ambiguous));
        assert!(matches!(set.find(None, Algorithm::RS256), Lookup::NotFound));
    }
}
