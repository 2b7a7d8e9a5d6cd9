//! The audit stores of one gateway: one per data-subject jurisdiction (explicit in the policy, or
//! `<audit.root>/<JURISDICTION>`: opened at start when it exists, else created on first use), plus
//! a store for records with no verified subject
//! (authentication failures). A store is a directory (the file store, with signed checkpoints
//! published to its DR replica) or a PostgreSQL chain. Stores are opened once and kept across
//! policy reloads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use cordon_audit::{AuditError, AuditStore, FileStore, Replicator, StoreOptions};
use cordon_audit_pg::{PgCheckpointOptions, PgStore, PgStoreOptions, parse_store_url};
use cordon_policy::Policy;
use cordon_types::Jurisdiction;

/// Directory name of the store for unauthenticated requests (not a jurisdiction id: ids are capitals).
pub const UNAUTHENTICATED_STORE: &str = "_unauthenticated";

/// What a store is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreKey {
    Dir(PathBuf),
    /// A PostgreSQL URL and the chain this instance writes.
    Postgres {
        url: String,
        chain: String,
    },
}

/// Where a jurisdiction's records go under a policy.
#[derive(Debug)]
pub struct StoreLocation {
    pub key: StoreKey,
    pub region: Option<String>,
    /// The DR replica directory, which receives every signed checkpoint.
    pub replica: Option<PathBuf>,
    /// The witness / timestamp hook run after every checkpoint (empty: none).
    pub witness: Vec<String>,
    /// PostgreSQL stores: where the chain's signed checkpoints are published, and its key.
    pub publish: Option<PathBuf>,
    pub checkpoint_key: Option<PathBuf>,
    /// The jurisdiction an explicitly configured store serves (names its default key directory).
    pub jurisdiction: Option<Jurisdiction>,
    /// The open store last resolved for this location, with the [`AuditSet`] generation it was
    /// resolved at (a failed store bumps the generation, so a stale entry is never used).
    cached: ArcSwapOption<(u64, OpenStore)>,
}

impl Clone for StoreLocation {
    fn clone(&self) -> Self {
        let mut c = StoreLocation::new(self.key.clone(), self.region.clone(), self.replica.clone())
            .with_witness(self.witness.clone());
        c.publish = self.publish.clone();
        c.checkpoint_key = self.checkpoint_key.clone();
        c.jurisdiction = self.jurisdiction;
        c
    }
}

/// An open store; `file` is set for directory stores (which take deferred records), `pg` for
/// PostgreSQL chains (for their metrics and shutdown checkpoint).
#[derive(Clone)]
pub struct OpenStore {
    pub store: Arc<dyn AuditStore>,
    pub file: Option<Arc<FileStore>>,
    pub pg: Option<OpenPg>,
}

/// An open PostgreSQL chain, with what it was opened with.
#[derive(Clone)]
pub struct OpenPg {
    pub store: Arc<PgStore>,
    /// The jurisdiction it serves (its metrics label).
    pub jurisdiction: Jurisdiction,
    pub publish: Option<PathBuf>,
    pub checkpoint_key: Option<PathBuf>,
}

impl std::fmt::Debug for OpenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.store.describe())
    }
}

impl OpenStore {
    /// Append a record nobody waits for (a completion record). Directory stores commit it with the
    /// next batch (no wake-up, no fsync of its own; durable within ~10 ms even when idle); other
    /// stores append it and a task logs a failure.
    pub fn append_deferred(
        &self,
        record: &cordon_audit::Record,
        on_failure: impl FnOnce(AuditError) + Send + 'static,
    ) -> Result<(), AuditError> {
        if let Some(f) = &self.file {
            return f.append_deferred(record);
        }
        let ack = self.store.append(record)?;
        tokio::spawn(async move {
            if let Err(e) = ack.await {
                on_failure(e);
            }
        });
        Ok(())
    }
}

impl StoreLocation {
    pub fn new(key: StoreKey, region: Option<String>, replica: Option<PathBuf>) -> StoreLocation {
        StoreLocation {
            key,
            region,
            replica,
            witness: Vec::new(),
            publish: None,
            checkpoint_key: None,
            jurisdiction: None,
            cached: ArcSwapOption::empty(),
        }
    }

    pub fn with_witness(mut self, witness: Vec<String>) -> StoreLocation {
        self.witness = witness;
        self
    }

    pub fn dir(&self) -> Option<&Path> {
        match &self.key {
            StoreKey::Dir(p) => Some(p),
            StoreKey::Postgres { .. } => None,
        }
    }
}

pub struct AuditSet {
    data_dir: PathBuf,
    open: Mutex<HashMap<StoreKey, OpenStore>>,
    /// Held while a directory store is opened (the map lock is not: lookups never wait on an open).
    opening: Mutex<()>,
    /// Bumped whenever a store is forgotten; [`StoreLocation`] caches older than this are stale.
    generation: AtomicU64,
    replicators: Mutex<Vec<Replicator>>,
    /// The last failed open of each store, answered again for [`REOPEN_BACKOFF`]: opening runs
    /// crash recovery and rebuilds the tree (reading the whole store), which every request for a
    /// broken store, and every `/readyz` probe, would otherwise repeat.
    failed: Mutex<HashMap<StoreKey, (Instant, AuditError)>>,
}

/// How long a failed store open is answered from memory before it is tried again.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// How often new segment bytes and checkpoints are shipped to a DR replica.
const REPLICATION_INTERVAL: Duration = Duration::from_secs(1);

impl AuditSet {
    pub fn new(data_dir: &Path) -> AuditSet {
        AuditSet {
            data_dir: data_dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
            generation: AtomicU64::new(0),
            replicators: Mutex::new(Vec::new()),
            failed: Mutex::new(HashMap::new()),
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
            let key = match (&s.path, &s.postgres) {
                (_, Some(url)) => StoreKey::Postgres {
                    url: url.clone(),
                    chain: s.chain.clone().unwrap_or_else(|| policy.file.gateway.id.clone()),
                },
                (Some(p), None) => StoreKey::Dir(self.resolve(p)),
                (None, None) => return None,
            };
            let mut loc = StoreLocation::new(
                key,
                s.region.as_ref().map(|r| r.to_string()),
                s.replica.as_ref().map(|r| self.resolve(&r.path)),
            )
            .with_witness(s.witness.clone().unwrap_or_default());
            loc.publish = s.publish.as_ref().map(|p| self.resolve(p));
            loc.checkpoint_key = s.checkpoint_key.as_ref().map(|p| self.resolve(p));
            loc.jurisdiction = Some(j);
            return Some(loc);
        }
        // A root store lives on this gateway's disk: only for jurisdictions whose records may be
        // kept where the gateway runs (condition 2; `Policy::root_store_permitted`).
        let root = policy.file.audit.root.as_ref()?;
        if !policy.root_store_permitted(j) {
            return None;
        }
        Some(StoreLocation::new(
            StoreKey::Dir(self.resolve(root).join(j.as_str())),
            policy.gateway.as_ref().map(|g| g.region.to_string()),
            None,
        ))
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
        StoreLocation::new(
            StoreKey::Dir(base.join(UNAUTHENTICATED_STORE)),
            policy.file.gateway.region.as_ref().map(|r| r.to_string()),
            None,
        )
    }

    /// The open store at a location; directory stores are opened on first use. PostgreSQL stores
    /// are opened (asynchronously) by [`AuditSet::open_configured`].
    pub fn store(
        &self,
        loc: &StoreLocation,
        settings: CommitSettings,
    ) -> Result<Arc<dyn AuditStore>, AuditError> {
        self.open_store(loc, settings).map(|s| s.store)
    }

    /// [`AuditSet::store`] with the concrete file store, if it is one. The hot path: a location
    /// that was resolved before (and whose store has not failed since) costs one atomic load.
    pub fn open_store(&self, loc: &StoreLocation, settings: CommitSettings) -> Result<OpenStore, AuditError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(c) = loc.cached.load().as_ref()
            && c.0 == generation
        {
            return Ok(c.1.clone());
        }
        let s = match self.lookup(&loc.key) {
            Some(s) => s,
            None => {
                if let Some(e) = self.recent_failure(&loc.key) {
                    return Err(e);
                }
                // Opening runs crash recovery, creates files and fsyncs: keep it off the async
                // worker.
                let opened = off_the_worker(|| self.lookup_or_open(loc, settings));
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                match opened {
                    Ok(s) => {
                        failed.remove(&loc.key);
                        s
                    }
                    Err(e) => {
                        failed.insert(loc.key.clone(), (Instant::now(), e.clone()));
                        return Err(e);
                    }
                }
            }
        };
        loc.cached.store(Some(Arc::new((generation, s.clone()))));
        Ok(s)
    }

    /// The error of an open of `key` that failed less than [`REOPEN_BACKOFF`] ago.
    fn recent_failure(&self, key: &StoreKey) -> Option<AuditError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .get(key)
            .filter(|(at, _)| at.elapsed() < REOPEN_BACKOFF)
            .map(|(_, e)| e.clone())
    }

    fn lookup(&self, key: &StoreKey) -> Option<OpenStore> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn lookup_or_open(&self, loc: &StoreLocation, settings: CommitSettings) -> Result<OpenStore, AuditError> {
        if let Some(s) = self.lookup(&loc.key) {
            return Ok(s);
        }
        let StoreKey::Dir(path) = &loc.key else {
            return Err(AuditError::InvalidInput {
                what: "audit store",
                why: "the PostgreSQL store is not connected",
            });
        };
        // One open at a time (a second open of the same directory would be refused), without
        // holding the map lock: requests for stores that are already open never wait on it.
        let _opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.lookup(&loc.key) {
            return Ok(s);
        }
        let opts = StoreOptions {
            batch_delay: settings.batch_delay,
            checkpoint_every: settings.checkpoint_every,
            checkpoint_interval: settings.checkpoint_interval,
            // Checkpoints also go to the DR copy, a place this gateway does not rewrite.
            publish_to: loc.replica.iter().cloned().collect(),
            witness_command: loc.witness.clone(),
            ..StoreOptions::default()
        };
        let f = Arc::new(FileStore::open(path, opts)?);
        let s = OpenStore {
            store: f.clone(),
            file: Some(f),
            pg: None,
        };
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(loc.key.clone(), s.clone());
        if let Some(replica) = &loc.replica {
            self.start_replication(path, replica);
        }
        Ok(s)
    }

    /// Ship a store's segments and checkpoints to its DR replica in the background (once per
    /// replica). A replica that diverges halts shipping and is reported; appends never wait on it.
    fn start_replication(&self, store: &Path, replica: &Path) {
        let mut reps = self.replicators.lock().unwrap_or_else(|p| p.into_inner());
        if reps.iter().any(|r| r.replica_dir() == replica) {
            return;
        }
        match Replicator::start(store, replica, REPLICATION_INTERVAL) {
            Ok(r) => reps.push(r),
            Err(e) => {
                tracing::error!(replica = %replica.display(), error = %e, "cannot start DR replication")
            }
        }
    }

    /// Replication status per DR replica, labelled as [`AuditSet::file_stores`] labels the store
    /// it copies (for `/metrics`).
    pub fn replication(&self) -> Vec<(String, cordon_audit::ReplicaStatus)> {
        let stores = self.file_stores();
        let reps = self.replicators.lock().unwrap_or_else(|p| p.into_inner());
        reps.iter()
            .map(|r| {
                // A store that failed is out of `file_stores` until it reopens while its
                // replicator goes on: it keeps its directory's name then (no path).
                let label = stores
                    .iter()
                    .find(|(_, s)| s.dir() == r.store_dir())
                    .map(|(l, _)| l.clone())
                    .or_else(|| {
                        r.store_dir()
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                    })
                    .unwrap_or_default();
                (label, r.status())
            })
            .collect()
    }

    /// After an append failed: a directory store whose writer failed (disk full, I/O error) stays
    /// failed until reopened, so forget it; the next request reopens it (recovering the chain head
    /// and cutting a torn tail), and the gateway recovers once the disk does. PostgreSQL stores
    /// reconnect by themselves.
    pub fn invalidate(&self, loc: &StoreLocation) {
        if !matches!(loc.key, StoreKey::Dir(_)) {
            return;
        }
        let removed = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let failed = open
                .get(&loc.key)
                .is_some_and(|s| s.store.check_writable().is_err());
            let removed = if failed { open.remove(&loc.key) } else { None };
            if removed.is_some() {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            removed
        };
        loc.cached.store(None);
        if removed.is_some() {
            tracing::warn!(store = ?loc.key, "audit store failed; it will be reopened");
        }
        // `removed` (maybe the last handle: its drop joins the writer) is dropped outside the lock.
    }

    /// Open every explicitly configured store now (so a bad path or an unreachable database fails
    /// at startup, not mid-request).
    pub async fn open_configured(&self, policy: &Policy) -> Result<(), String> {
        let settings = commit_settings(policy);
        for j in policy.file.audit.stores.keys() {
            let Some(loc) = self.location(policy, *j) else {
                continue;
            };
            match &loc.key {
                StoreKey::Dir(_) => match self.store(&loc, settings) {
                    Ok(_) => {}
                    // Another gateway holds it (e.g. the old instance during a rolling restart):
                    // serve the other jurisdictions, fail this one closed, and take it over when
                    // the lock is released (`/readyz` names it meanwhile).
                    Err(e @ AuditError::Locked { .. }) => {
                        tracing::warn!(store = %j, error = %e, "audit store held by another process");
                    }
                    Err(e) => return Err(format!("audit store {j}: {e}")),
                },
                StoreKey::Postgres { url, chain } => {
                    let already = self
                        .open
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&loc.key)
                        .and_then(|s| s.pg.clone());
                    if let Some(open) = already {
                        if open.publish != loc.publish || open.checkpoint_key != loc.checkpoint_key {
                            tracing::warn!(store = %j,
                                "audit store {j}: publish / checkpoint_key changed; the open chain keeps its old ones until a restart");
                        }
                        continue;
                    }
                    let parsed = parse_store_url(url).map_err(|e| format!("audit store {j}: {e}"))?;
                    let mut opts = PgStoreOptions::from_url(&parsed, chain);
                    opts.batch_delay = settings.batch_delay;
                    opts.checkpoints = Some(
                        self.pg_checkpoints(&loc, *j, &parsed.schema, &opts.chain_id, settings)
                            .await
                            .map_err(|e| format!("audit store {j}: {e}"))?,
                    );
                    let store = PgStore::open(opts)
                        .await
                        .map_err(|e| format!("audit store {j}: {e}"))?;
                    let store = Arc::new(store);
                    self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(
                        loc.key.clone(),
                        OpenStore {
                            store: store.clone(),
                            file: None,
                            pg: Some(OpenPg {
                                store,
                                jurisdiction: *j,
                                publish: loc.publish.clone(),
                                checkpoint_key: loc.checkpoint_key.clone(),
                            }),
                        },
                    );
                }
            }
        }
        self.open_existing_root_stores(policy, settings);
        Ok(())
    }

    /// How a PostgreSQL store's chain signs and publishes checkpoints: its key (configured, or
    /// `<data dir>/audit-keys/<J>/<chain>/checkpoint.key`, created on first use; origin
    /// `cordon/<schema>/<chain>`), the publication directory and the witness hook.
    async fn pg_checkpoints(
        &self,
        loc: &StoreLocation,
        j: Jurisdiction,
        schema: &str,
        chain: &str,
        settings: CommitSettings,
    ) -> Result<PgCheckpointOptions, String> {
        // The chain id names directories: check it before building any path.
        let chain = cordon_audit_pg::checked_chain_id(chain).map_err(|e| e.to_string())?;
        let key_dir = self.data_dir.join("audit-keys").join(j.as_str()).join(chain);
        let origin = format!("cordon/{schema}/{chain}");
        let key_path = loc.checkpoint_key.clone();
        // Key files are read (or created and synced) off the async workers.
        let signer = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&key_dir).map_err(AuditError::io(&key_dir, "create key directory"))?;
            cordon_audit::load_checkpoint_signer(&key_dir, key_path.as_deref(), Some(&origin))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut c = PgCheckpointOptions::new(signer);
        c.every = settings.checkpoint_every;
        c.interval = settings.checkpoint_interval;
        c.publish_to = loc.publish.iter().cloned().collect();
        c.witness = loc.witness.clone();
        Ok(c)
    }

    /// Open the stores that already exist under `audit.root` now rather than on first use: opening
    /// runs crash recovery (a torn tail cut back to the last whole record), which must not wait
    /// for that jurisdiction's next request. A store that cannot be opened is logged, and its
    /// jurisdiction answers `audit_unavailable` (and `/readyz` fails) until it can; the others
    /// serve.
    fn open_existing_root_stores(&self, policy: &Policy, settings: CommitSettings) {
        for (name, loc) in self.existing_root_stores(policy) {
            if let Err(e) = self.store(&loc, settings) {
                tracing::error!(store = %name, error = %e, "audit store under the root could not be opened");
            }
        }
    }

    /// The store directories that exist under `audit.root` and are this policy's (by name).
    fn existing_root_stores(&self, policy: &Policy) -> Vec<(String, StoreLocation)> {
        let Some(root) = &policy.file.audit.root else {
            return Vec::new();
        };
        let root = self.resolve(root);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let loc = if name == UNAUTHENTICATED_STORE {
                Some(self.unauthenticated_location(policy))
            } else {
                name.parse::<Jurisdiction>()
                    .ok()
                    .and_then(|j| self.location(policy, j))
            };
            // Only the directory itself: a jurisdiction whose store the policy moved elsewhere is
            // not this one.
            if let Some(loc) = loc.filter(|l| l.key == StoreKey::Dir(root.join(name))) {
                out.push((name.to_string(), loc));
            }
        }
        out
    }

    /// The open directory stores, named by their directory (e.g. `EU`, `_unauthenticated`), for
    /// `/metrics`; by their whole path where two share a name (`/d/eu/audit`, `/d/uk/audit`), so
    /// that no two series collide. A snapshot: stores opened later appear in the next one.
    pub fn file_stores(&self) -> Vec<(String, Arc<FileStore>)> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let stores: Vec<(&PathBuf, Arc<FileStore>)> = open
            .iter()
            .filter_map(|(key, s)| match key {
                StoreKey::Dir(dir) => Some((dir, s.file.clone()?)),
                StoreKey::Postgres { .. } => None,
            })
            .collect();
        let short = |dir: &Path| dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut out: Vec<(String, Arc<FileStore>)> = stores
            .iter()
            .map(|(dir, store)| {
                let name = short(dir);
                let shared = stores.iter().filter(|(d, _)| short(d) == name).count() > 1;
                let label = match name {
                    Some(n) if !shared => n,
                    _ => dir.display().to_string(),
                };
                (label, store.clone())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The open PostgreSQL chains, labelled by the jurisdiction they serve (never the URL: it
    /// may hold a password), sorted.
    pub fn pg_stores(&self) -> Vec<(String, Arc<PgStore>)> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, Arc<PgStore>)> = open
            .values()
            .filter_map(|s| s.pg.as_ref())
            .map(|p| (p.jurisdiction.to_string(), p.store.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// At shutdown: stop every PostgreSQL chain's writer cleanly (its committed records covered
    /// by a signed checkpoint and a close marker) and wait (up to `timeout` each) for the
    /// checkpoint's publication. Directory stores do the same when dropped.
    pub async fn shutdown(&self, timeout: Duration) {
        for (name, store) in self.pg_stores() {
            if !store.shut_down(timeout).await {
                tracing::warn!(store = %name,
                    "audit store: the chain did not stop cleanly in time (no close marker, or its final checkpoint not yet published; earlier errors say why)");
            }
        }
    }

    /// Readiness: every configured (or already opened) store is writable, and the root is creatable.
    pub fn check_ready(&self, policy: &Policy) -> Result<(), String> {
        for j in policy.file.audit.stores.keys() {
            let Some(loc) = self.location(policy, *j) else {
                continue;
            };
            let store = self
                .store(&loc, commit_settings(policy))
                .map_err(|e| format!("audit store {j}: {e}"))?;
            store
                .check_writable()
                .map_err(|e| format!("audit store {j}: {e}"))?;
        }
        let open: Vec<Arc<dyn AuditStore>> = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.store.clone())
            .collect();
        for s in open {
            s.check_writable()
                .map_err(|e| format!("audit store {}: {e}", s.describe()))?;
        }
        // A store that exists but could not be opened (damaged, or held by another process) is
        // not in `open`: it is tried again here, so readiness fails until it opens.
        for (name, loc) in self.existing_root_stores(policy) {
            self.store(&loc, commit_settings(policy))
                .map_err(|e| format!("audit store {name}: {e}"))?;
        }
        if let Some(root) = &policy.file.audit.root {
            let root = self.resolve(root);
            std::fs::create_dir_all(&root).map_err(|e| format!("audit root {}: {e}", root.display()))?;
        }
        Ok(())
    }
}

/// Run blocking `f` (file I/O, fsyncs) from synchronous code that may be on an async worker: on
/// the multi-threaded runtime the worker first hands its other tasks to another thread
/// (`block_in_place`), so the requests it was serving are not held up; elsewhere (no runtime, a
/// blocking thread, a current-thread runtime) `f` just runs.
fn off_the_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The policy's group-commit and checkpoint settings (`audit.batch_delay_us`,
/// `audit.checkpoint_every`, `audit.checkpoint_interval_ms`), applied when a store opens: a reload
/// that changes them reaches stores opened after it (a restart, for the ones already open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitSettings {
    pub batch_delay: Duration,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
}

impl Default for CommitSettings {
    fn default() -> Self {
        let d = StoreOptions::default();
        CommitSettings {
            batch_delay: d.batch_delay,
            checkpoint_every: d.checkpoint_every,
            checkpoint_interval: d.checkpoint_interval,
        }
    }
}

pub fn commit_settings(policy: &Policy) -> CommitSettings {
    let a = &policy.file.audit;
    let d = CommitSettings::default();
    CommitSettings {
        batch_delay: a.batch_delay_us.map_or(d.batch_delay, Duration::from_micros),
        checkpoint_every: a.checkpoint_every.unwrap_or(d.checkpoint_every),
        checkpoint_interval: a
            .checkpoint_interval_ms
            .map_or(d.checkpoint_interval, Duration::from_millis),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        AuditSet, CommitSettings, REOPEN_BACKOFF, StoreKey, StoreLocation, commit_settings, off_the_worker,
    };
    use std::sync::Arc;

    #[test]
    fn commit_settings_come_from_the_policy_with_the_stores_defaults() {
        let load = |audit: &str| {
            let yaml = format!("gateway: {{ development: true }}\naudit: {{ root: audit{audit} }}\n");
            cordon_policy::Policy::from_yaml(&yaml, "t", &cordon_policy::Overrides::default()).unwrap()
        };
        assert_eq!(commit_settings(&load("")), CommitSettings::default());
        let s = commit_settings(&load(
            ", batch_delay_us: 200, checkpoint_every: 8, checkpoint_interval_ms: 50",
        ));
        assert_eq!(s.batch_delay, std::time::Duration::from_micros(200));
        assert_eq!(s.checkpoint_every, 8);
        assert_eq!(s.checkpoint_interval, std::time::Duration::from_millis(50));
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// Wait (with a deadline) inside `off_the_worker` for another task of the same one-worker
    /// runtime to run: it can only run if the worker was handed off.
    fn blocks_until_other_task_ran(flag: &AtomicBool) -> bool {
        off_the_worker(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !flag.load(Ordering::Acquire) {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocking_open_lets_the_worker_serve_other_tasks() {
        // Both tasks run on the runtime's only worker (the test body itself does not).
        let waited = tokio::spawn(async {
            let ran = Arc::new(AtomicBool::new(false));
            let other = tokio::spawn({
                let ran = ran.clone();
                async move { ran.store(true, Ordering::Release) }
            });
            let ok = blocks_until_other_task_ran(&ran);
            other.await.unwrap();
            ok
        });
        assert!(
            waited.await.unwrap(),
            "the other task never ran while the worker was blocked"
        );
    }

    /// A store that failed to open is not reopened (recovery reads the whole store) on every
    /// request: the failure is answered for a second, then the open is tried again.
    #[test]
    fn a_failed_open_is_answered_from_memory_for_a_while_then_retried() {
        let tmp = tempfile::tempdir().unwrap();
        let set = AuditSet::new(tmp.path());
        let dir = tmp.path().join("EU");
        std::fs::write(&dir, b"a file where the store directory should be").unwrap();
        let loc = StoreLocation::new(StoreKey::Dir(dir.clone()), None, None);
        let delay = CommitSettings::default();
        let first = set
            .open_store(&loc, delay)
            .err()
            .unwrap_or_else(|| panic!("opened over a file"));
        // Fixed at once, but the next request within the backoff gets the same answer.
        std::fs::remove_file(&dir).unwrap();
        let again = set
            .open_store(&loc, delay)
            .err()
            .unwrap_or_else(|| panic!("reopened within the backoff"));
        assert_eq!(again.to_string(), first.to_string());
        let deadline = Instant::now() + REOPEN_BACKOFF + Duration::from_secs(10);
        while set.open_store(&loc, delay).is_err() {
            assert!(Instant::now() < deadline, "never reopened after the backoff");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn store_names_for_metrics_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let set = AuditSet::new(tmp.path());
        let dirs = [
            tmp.path().join("EU"),
            tmp.path().join("eu/audit"),
            tmp.path().join("uk/audit"),
        ];
        for dir in &dirs {
            let loc = StoreLocation::new(StoreKey::Dir(dir.clone()), None, None);
            set.open_store(&loc, CommitSettings::default()).unwrap();
        }
        let mut names: Vec<String> = set.file_stores().into_iter().map(|(n, _)| n).collect();
        names.sort();
        let mut want = vec![
            "EU".to_string(),
            dirs[1].display().to_string(),
            dirs[2].display().to_string(),
        ];
        want.sort();
        assert_eq!(names, want);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_a_current_thread_runtime_it_just_runs() {
        assert_eq!(off_the_worker(|| 7), 7);
    }
}
