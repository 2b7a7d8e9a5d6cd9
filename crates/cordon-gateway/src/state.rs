//! Shared state of a running gateway.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cordon_audit::{Keystore, Pseudonymizer};

use crate::audit_set::AuditSet;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

pub struct AppState {
    pub runtime: ArcSwap<Runtime>,
    pub audit: AuditSet,
    pub pseudonyms: Pseudonymizer,
    /// Shared with blocking threads: a subject's first seal creates its key there.
    pub keystore: Arc<Keystore>,
    pub metrics: Metrics,
    pub data_dir: PathBuf,
}

pub type SharedState = Arc<AppState>;
