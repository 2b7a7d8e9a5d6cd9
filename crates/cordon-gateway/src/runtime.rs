//! What a policy load produces: the compiled policy, the identity verifier built from it, health
//! slots for its endpoints, and the upstream client with its limits. Swapped as one value on reload, so a request sees one consistent
//! policy from start to end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cordon_identity::Verifier;
use cordon_policy::quickstart::{QUICKSTART_ORIGIN, QUICKSTART_YAML};
use cordon_policy::{Overrides, Policy};

use cordon_types::Jurisdiction;

use crate::audit_set::{AuditSet, StoreLocation};
use crate::health::Health;

pub struct Runtime {
    pub policy: Policy,
    pub verifier: Verifier,
    pub health: Health,
    /// Each endpoint's prepared upstream URL and headers (built on first use, per policy).
    pub targets: cordon_upstream::Targets,
    /// The upstream client with this policy's `limits` (timeouts): per policy, so a reload that
    /// changes a timeout takes effect. Its connection pool starts empty on each load.
    pub upstreams: cordon_upstream::Upstreams,
    /// Each jurisdiction's store location under this policy, resolved on first use (the location
    /// also caches its open store, so the request path neither allocates nor takes a global lock).
    locations: RwLock<HashMap<Jurisdiction, Option<Arc<StoreLocation>>>>,
}

impl Runtime {
    /// Where a jurisdiction's records go under this policy (see [`AuditSet::location`]).
    pub fn location(&self, audit: &AuditSet, j: Jurisdiction) -> Option<Arc<StoreLocation>> {
        if let Some(l) = self.locations.read().unwrap_or_else(|p| p.into_inner()).get(&j) {
            return l.clone();
        }
        let l = audit.location(&self.policy, j).map(Arc::new);
        self.locations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(j)
            .or_insert(l)
            .clone()
    }
}

/// Where the policy comes from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// The built-in quickstart policy (relative paths resolve under the data dir).
    Quickstart,
    File(PathBuf),
}

impl PolicySource {
    pub fn describe(&self) -> String {
        match self {
            PolicySource::Quickstart => QUICKSTART_ORIGIN.to_string(),
            PolicySource::File(p) => p.display().to_string(),
        }
    }
}

/// After a reload: endpoints the new policy keeps exactly as they were (same model, id and
/// specification) keep their passive health, so an ejected endpoint stays ejected.
pub fn inherit_health(new: &Runtime, old: &Runtime) {
    let spec = |e: &cordon_policy::Endpoint| serde_json::to_string(&e.spec).ok();
    for e in &new.policy.endpoints {
        let same = old
            .policy
            .endpoints
            .iter()
            .find(|o| o.model == e.model && o.id() == e.id() && spec(o) == spec(e));
        if let Some(o) = same {
            new.health.inherit(e.index, &old.health, o.index);
        }
    }
}

/// Load and build a runtime. Every failure is a message for the operator.
pub fn load(source: &PolicySource, data_dir: &Path, overrides: &Overrides) -> Result<Runtime, String> {
    let (policy, base_dir) = match source {
        PolicySource::Quickstart => (
            Policy::from_yaml(QUICKSTART_YAML, QUICKSTART_ORIGIN, overrides).map_err(|e| e.to_string())?,
            data_dir.to_path_buf(),
        ),
        PolicySource::File(p) => {
            let base = p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (Policy::load(p, overrides).map_err(|e| e.to_string())?, base)
        }
    };
    let verifier = Verifier::new(&policy.file.identity, &base_dir).map_err(|e| format!("identity: {e}"))?;
    let limits = policy.file.limits;
    let health = Health::new(
        policy.endpoints.len(),
        limits.eject_after_failures,
        Duration::from_millis(limits.eject_cooldown_ms),
    );
    let targets = cordon_upstream::Targets::new(policy.endpoints.len());
    let upstreams = cordon_upstream::Upstreams::new(&limits).map_err(|e| format!("upstream client: {e}"))?;
    Ok(Runtime {
        policy,
        verifier,
        targets,
        upstreams,
        health,
        locations: RwLock::new(HashMap::new()),
    })
}
