//! Workload API keys. The policy file holds only `sha256:<64 hex>` of each secret; a presented key
//! is hashed and looked up by digest. A digest is not secret-equivalent (SHA-256 is preimage
//! resistant), so a map lookup by digest leaks nothing useful through timing; the final equality is
//! still checked in constant time.

use std::collections::HashMap;

use aws_lc_rs::digest;
use cordon_policy::file::ApiKeySpec;
use cordon_types::{Country, Jurisdiction, Tier};

use crate::error::{AuthError, ConfigError};
use crate::{Caller, Identity, Residency};

/// `sha256:<hex>` of an API key secret: the value that goes in the policy file.
pub fn hash_api_key(secret: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(digest::digest(&digest::SHA256, secret.as_bytes()))
    )
}

struct KeyEntry {
    id: String,
    digest: [u8; 32],
    jurisdiction: Jurisdiction,
    country: Option<Country>,
    tier: Tier,
}

/// The configured API keys, by digest.
pub(crate) struct ApiKeys {
    by_digest: HashMap<[u8; 32], KeyEntry>,
}

fn parse_hash(id: &str, hash: &str) -> Result<[u8; 32], ConfigError> {
    let bad = |detail: &str| ConfigError::ApiKeyHash {
        id: id.to_string(),
        detail: detail.to_string(),
    };
    let hexpart = hash
        .strip_prefix("sha256:")
        .ok_or_else(|| bad("it does not start with 'sha256:'"))?;
    if hexpart.len() != 64 {
        return Err(bad(&format!(
            "found {} characters after 'sha256:'",
            hexpart.len()
        )));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hexpart, &mut out)
        .map_err(|_| bad("it contains characters that are not hex digits"))?;
    Ok(out)
}

impl ApiKeys {
    pub fn new(specs: &[ApiKeySpec]) -> Result<ApiKeys, ConfigError> {
        let mut by_digest = HashMap::with_capacity(specs.len());
        let mut ids = std::collections::HashSet::new();
        for s in specs {
            if s.id.is_empty() {
                return Err(ConfigError::DuplicateApiKey {
                    detail: "an entry has an empty id".into(),
                });
            }
            if !ids.insert(s.id.as_str()) {
                return Err(ConfigError::DuplicateApiKey {
                    detail: format!("id '{}' is listed twice", s.id),
                });
            }
            let d = parse_hash(&s.id, &s.hash)?;
            let entry = KeyEntry {
                id: s.id.clone(),
                digest: d,
                jurisdiction: s.jurisdiction,
                country: s.country,
                tier: s.tier,
            };
            if let Some(prev) = by_digest.insert(d, entry) {
                return Err(ConfigError::DuplicateApiKey {
                    detail: format!(
                        "'{}' and '{}' have the same hash (the same secret)",
                        prev.id, s.id
                    ),
                });
            }
        }
        Ok(ApiKeys { by_digest })
    }

    pub fn verify(&self, secret: &str) -> Result<Identity, AuthError> {
        let d = digest::digest(&digest::SHA256, secret.as_bytes());
        let mut presented = [0u8; 32];
        presented.copy_from_slice(d.as_ref());
        let entry = self.by_digest.get(&presented).ok_or(AuthError::UnknownApiKey)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(&entry.digest, &presented)
            .map_err(|_| AuthError::UnknownApiKey)?;
        Ok(Identity {
            caller: Caller::Workload {
                key_id: entry.id.clone(),
            },
            subject: format!("apikey:{}", entry.id),
            residency: Residency::Fixed {
                jurisdiction: entry.jurisdiction,
                country: entry.country,
            },
            residency_source: format!("api_key:{}", entry.id),
            tier: entry.tier,
            expires_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, hash: String) -> ApiKeySpec {
        ApiKeySpec {
            id: id.into(),
            hash,
            jurisdiction: "EU".parse().unwrap(),
            country: Some("DE".parse().unwrap()),
            tier: Tier::NotPersonal,
        }
    }

    #[test]
    fn hash_format() {
        let h = hash_api_key("abc");
        assert_eq!(
            h,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn known_and_unknown_keys() {
        let keys = ApiKeys::new(&[spec("nightly", hash_api_key("s3cret-value"))]).unwrap();
        let id = keys.verify("s3cret-value").unwrap();
        assert_eq!(
            id.caller,
            Caller::Workload {
                key_id: "nightly".into()
            }
        );
        assert_eq!(id.subject, "apikey:nightly");
        assert_eq!(id.residency_source, "api_key:nightly");
        assert_eq!(id.tier, Tier::NotPersonal);
        assert_eq!(
            keys.verify("other").unwrap_err().reason(),
            cordon_types::ReasonCode::UnknownApiKey
        );
    }

    #[test]
    fn bad_hashes_and_duplicates_are_config_errors() {
        for h in [
            "abc",
            "sha256:zz",
            "md5:00",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(
                    ApiKeys::new(&[spec("a", h.to_string())]),
                    Err(ConfigError::ApiKeyHash { .. })
                ),
                "{h}"
            );
        }
        let upper = hash_api_key("x").to_uppercase().replace("SHA256:", "sha256:");
        assert!(ApiKeys::new(&[spec("a", upper)]).is_ok());
        assert!(matches!(
            ApiKeys::new(&[spec("a", hash_api_key("x")), spec("b", hash_api_key("x"))]),
            Err(ConfigError::DuplicateApiKey { .. })
        ));
        assert!(matches!(
            ApiKeys::new(&[spec("a", hash_api_key("x")), spec("a", hash_api_key("y"))]),
            Err(ConfigError::DuplicateApiKey { .. })
        ));
    }
}
