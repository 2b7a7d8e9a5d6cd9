//! The verified-token cache: a successful JWT verification is remembered, keyed by SHA-256 of the
//! token (never the token itself), for at most `token_cache_seconds` and never past the token's
//! `exp`, so repeat requests skip the signature check. Bounded: when full it is cleared (cheap, and
//! the next requests simply verify again). Every hit is re-checked against the caller's `now`, and
//! the entry remembers the issuer key set it was verified against: once that set is replaced (a
//! JWKS refresh, e.g. after a rotation removed the key), the entry no longer answers.

use std::collections::HashMap;
use std::sync::Mutex;

use std::sync::Arc;

use aws_lc_rs::digest;

use crate::Identity;
use crate::jwks::KeySet;

/// Entries before the cache is cleared.
pub const DEFAULT_CAPACITY: usize = 10_000;

struct Entry {
    identity: Identity,
    /// The key set the signature was checked with (`None`: a static secret, HS256).
    keys: Option<Arc<KeySet>>,
    valid_from: u64,
    valid_until: u64,
}

pub(crate) struct TokenCache {
    ttl: u64,
    capacity: usize,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

/// The cache key of a token.
pub(crate) fn key(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl TokenCache {
    pub fn new(ttl_seconds: u64, capacity: usize) -> TokenCache {
        TokenCache {
            ttl: ttl_seconds,
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.ttl > 0 && self.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts/removes).
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached identity, if the entry is valid at `now` and `current(identity)` is still the
    /// key set it was verified with.
    pub fn get(
        &self,
        key: &[u8; 32],
        now: u64,
        current: impl FnOnce(&Identity) -> Option<Arc<KeySet>>,
    ) -> Option<Identity> {
        if !self.enabled() {
            return None;
        }
        let mut map = self.lock();
        let entry = map.get(key)?;
        let same_keys = match &entry.keys {
            None => true,
            Some(k) => current(&entry.identity).is_some_and(|c| Arc::ptr_eq(&c, k)),
        };
        if same_keys && entry.valid_from <= now && now < entry.valid_until {
            Some(entry.identity.clone())
        } else {
            map.remove(key);
            None
        }
    }

    /// Remembers a verified identity until `min(now + ttl, exp)`.
    pub fn insert(&self, key: [u8; 32], identity: &Identity, keys: Option<Arc<KeySet>>, now: u64, exp: u64) {
        if !self.enabled() {
            return;
        }
        let valid_until = now.saturating_add(self.ttl).min(exp);
        if valid_until <= now {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                identity: identity.clone(),
                keys,
                valid_from: now,
                valid_until,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Caller, Residency};
    use cordon_types::Tier;

    fn ident() -> Identity {
        Identity {
            caller: Caller::User { issuer: "i".into() },
            subject: "s".into(),
            residency: Residency::Claim("DE".into()),
            residency_source: "country".into(),
            tier: Tier::Personal,
            expires_at: Some(150),
        }
    }

    #[test]
    fn bounded_by_ttl_and_exp() {
        let c = TokenCache::new(30, 10);
        let k = key("t");
        c.insert(k, &ident(), None, 100, 150);
        assert!(c.get(&k, 100, |_| None).is_some());
        assert!(c.get(&k, 129, |_| None).is_some());
        assert!(c.get(&k, 130, |_| None).is_none());
        c.insert(k, &ident(), None, 140, 150);
        assert!(c.get(&k, 149, |_| None).is_some());
        assert!(c.get(&k, 150, |_| None).is_none());
        // before it was inserted (clock went back): not trusted
        c.insert(k, &ident(), None, 140, 150);
        assert!(c.get(&k, 139, |_| None).is_none());
    }

    #[test]
    fn clears_when_full_and_can_be_disabled() {
        let c = TokenCache::new(30, 2);
        for t in ["a", "b", "c"] {
            c.insert(key(t), &ident(), None, 100, 150);
        }
        assert_eq!(c.len(), 1);
        let off = TokenCache::new(0, 10);
        off.insert(key("a"), &ident(), None, 100, 150);
        assert!(off.get(&key("a"), 100, |_| None).is_none());
    }
}
