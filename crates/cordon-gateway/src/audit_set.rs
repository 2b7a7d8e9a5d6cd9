//! The audit stores of one gateway: one per data-subject jurisdiction (explicit in the policy, or
//! `<audit.root>/<JURISDICTION>` on first use), plus a store for records with no verified subject
//! (authentication failures). Stores are opened once and kept across policy reloads, keyed by path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon_audit::{AuditError, AuditStore, FileStore, StoreOptions};
use cordon_policy::Policy;
use cordon_types::Jurisdiction;

/// Directory name of the store for unauthenticated requests (not a jurisdiction id: ids are capitals).
pub const UNAUTHENTICATED_STORE: &str = "_unauthenticated";

pub struct AuditSet {
    data_dir: PathBuf,
    open: Mutex<HashMap<PathBuf, Arc<FileStore>>>,
}

/// Where a jurisdiction's records go under a policy.
#[derive(Debug, Clone)]
pub struct StoreLocation {
    pub path: PathBuf,
    pub region: Option<String>,
}

impl AuditSet {
    pub fn new(data_dir: &Path) -> AuditSet {
        AuditSet {
            data_dir: data_dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }

    /// The store location for a jurisdiction, if the policy has one.
    pub fn location(&self, policy: &Policy, j: Jurisdiction) -> Option<StoreLocation> {
        if let Some(s) = policy.file.audit.stores.get(&j) {
            return Some(StoreLocation {
                path: self.resolve(&s.path),
                region: s.region.as_ref().map(|r| r.to_string()),
            });
        }
        let root = policy.file.audit.root.as_ref()?;
        Some(StoreLocation {
            path: self.resolve(root).join(j.as_str()),
            region: None,
        })
    }

    /// Where records with no verified subject go: the gateway's own jurisdiction's store when it has
    /// one, else `<root or data dir>/audit/_unauthenticated`.
    pub fn unauthenticated_location(&self, policy: &Policy) -> StoreLocation {
        if let Some(g) = &policy.gateway
            && let Some(loc) = self.location(policy, g.jurisdiction)
        {
            return loc;
        }
        let base = match &policy.file.audit.root {
            Some(r) => self.resolve(r),
            None => self.data_dir.join("audit"),
        };
        StoreLocation {
            path: base.join(UNAUTHENTICATED_STORE),
            region: policy.file.gateway.region.as_ref().map(|r| r.to_string()),
        }
    }

    /// Open (once) the store at a location.
    pub fn store(&self, loc: &StoreLocation, batch_delay: Duration) -> Result<Arc<FileStore>, AuditError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(&loc.path) {
            return Ok(s.clone());
        }
        let s = Arc::new(FileStore::open(
            &loc.path,
            StoreOptions {
                batch_delay,
                ..StoreOptions::default()
            },
        )?);
        open.insert(loc.path.clone(), s.clone());
        Ok(s)
    }

    /// After an append failed: a store whose writer failed (disk full, I/O error) stays failed until
    /// reopened, so forget it; the next request reopens it (recovering the chain head and cutting a
    /// torn tail), and the gateway recovers once the disk does.
    pub fn invalidate(&self, loc: &StoreLocation) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&loc.path).is_some_and(|s| s.check_writable().is_err()) {
            tracing::warn!(store = %loc.path.display(), "audit store failed; it will be reopened");
            open.remove(&loc.path);
        }
    }

    /// Open every explicitly configured store now (so a bad path fails at startup, not mid-request).
    pub fn open_configured(&self, policy: &Policy) -> Result<(), AuditError> {
        let delay = batch_delay(policy);
        for j in policy.file.audit.stores.keys() {
            if let Some(loc) = self.location(policy, *j) {
                self.store(&loc, delay)?;
            }
        }
        Ok(())
    }

    /// Readiness: every configured (or already opened) store is writable, and the root is creatable.
    pub fn check_ready(&self, policy: &Policy) -> Result<(), String> {
        for j in policy.file.audit.stores.keys() {
            let Some(loc) = self.location(policy, *j) else {
                continue;
            };
            let store = self
                .store(&loc, batch_delay(policy))
                .map_err(|e| format!("audit store {j}: {e}"))?;
            store
                .check_writable()
                .map_err(|e| format!("audit store {j}: {e}"))?;
        }
        let open: Vec<Arc<FileStore>> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in open {
            s.check_writable()
                .map_err(|e| format!("audit store {}: {e}", s.describe()))?;
        }
        if let Some(root) = &policy.file.audit.root {
            let root = self.resolve(root);
            std::fs::create_dir_all(&root).map_err(|e| format!("audit root {}: {e}", root.display()))?;
        }
        Ok(())
    }
}

pub fn batch_delay(policy: &Policy) -> Duration {
    Duration::from_micros(policy.file.audit.batch_delay_us.unwrap_or(0))
}
