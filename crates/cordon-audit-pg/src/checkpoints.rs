//! Signed checkpoints of one PostgreSQL chain, cut by its writer task.
//!
//! Each chain is its own append-only RFC 6962 tree. The writer keeps the tree's right edge
//! ([`Frontier`]) and, every [`PgCheckpointOptions::every`] records or
//! [`PgCheckpointOptions::interval`] (and when it stops), signs a C2SP tlog checkpoint of it with
//! the chain's Ed25519 key, inserts it into `checkpoints` (with the chain head), and hands it to a
//! [`CheckpointPublisher`], which publishes it to directories the gateway cannot rewrite
//! (`<target>/<chain id>/`, compare-and-swap `latest.ckpt` as for a file store) and runs the
//! witness hook. The table copy lets anyone with read access check a chain; the published copy is
//! what makes a database administrator's rewrite evident: the rows, the table's checkpoints and
//! even the triggers can be changed by whoever owns the database, the published checkpoints
//! cannot ([`crate::verify_with_published`]).
//!
//! The chain's verifier key is written once to `chain_keys` and to every target: a writer whose
//! key differs is refused (one chain, one key). At open the writer also refuses a chain that is
//! shorter than a checkpoint of it, in the table or published: records were removed.
//!
//! The tree is rebuilt from the stored leaf hashes (32 bytes a row, not the bodies); a leaf hash
//! rewritten along with its body is not caught here but by verification and by the first
//! publication, whose consistency proof against the target's `latest.ckpt` then fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cordon_audit::checkpoint::Checkpoint;
use cordon_audit::merkle::{Frontier, Hash};
use cordon_audit::note::{NoteSigner, NoteVerifier};
use cordon_audit::{CheckpointPublisher, CheckpointStats, publish_verifier_key, published_size};
use futures_util::TryStreamExt;

use crate::error::PgError;

/// How a PostgreSQL store signs and publishes checkpoints of its chain.
#[derive(Clone, Debug)]
pub struct PgCheckpointOptions {
    /// The chain's signing key; its name is the checkpoint origin (e.g. `cordon/<schema>/<chain>`).
    pub signer: NoteSigner,
    /// Cut a checkpoint once this many records are committed since the last one. Default 1024.
    pub every: u64,
    /// ... or once this long has passed with records not yet covered. Default 1 s.
    pub interval: Duration,
    /// Publication targets: each receives this chain's checkpoints in `<dir>/<chain id>/`.
    pub publish_to: Vec<PathBuf>,
    /// A witness / timestamp hook run after every checkpoint (see
    /// `cordon_audit::StoreOptions::witness_command`). Empty: none.
    pub witness: Vec<String>,
}

impl PgCheckpointOptions {
    pub fn new(signer: NoteSigner) -> PgCheckpointOptions {
        PgCheckpointOptions {
            signer,
            every: 1024,
            interval: Duration::from_secs(1),
            publish_to: Vec::new(),
            witness: Vec::new(),
        }
    }
}

/// Counters shared with the store handle.
#[derive(Default)]
pub(crate) struct CkptCounters {
    pub inserted: AtomicU64,
    pub insert_failures: AtomicU64,
    pub last_size: AtomicU64,
    pub publisher: std::sync::OnceLock<Arc<CheckpointPublisher>>,
}

impl CkptCounters {
    pub(crate) fn snapshot(&self) -> CheckpointStats {
        let mut s = self.publisher.get().map(|p| p.stats()).unwrap_or_default();
        s.written = self.inserted.load(Ordering::Relaxed);
        s.last_size = self.last_size.load(Ordering::Relaxed);
        s.failures = self.insert_failures.load(Ordering::Relaxed);
        s
    }
}

/// The writer's checkpoint state.
pub(crate) struct Ckpt {
    opts: PgCheckpointOptions,
    counters: Arc<CkptCounters>,
    targets: Vec<PathBuf>,
    tree: Frontier,
    /// Leaf hashes since the last submitted checkpoint (kept only with a publisher).
    since: Vec<Hash>,
    last_size: u64,
    last_at: Instant,
    /// The tree has been loaded once (the publisher started).
    started: bool,
    /// The sequence number the chain's next close/open marker takes (`markers.rs`).
    next_marker: u64,
    /// A close marker was written at a refusal of foreign rows (once is enough).
    refusal_marked: bool,
}

/// SQL text, built once per store.
pub(crate) struct CkptSql {
    pub leaves: String,
    pub last_checkpoint: String,
    pub insert: String,
    pub register_key: String,
    pub read_key: String,
    pub row_note: String,
    pub markers: crate::markers::MarkerSql,
}

impl CkptSql {
    pub(crate) fn new(schema: &str) -> CkptSql {
        CkptSql {
            leaves: format!(
                "SELECT idx, leaf_hash FROM \"{schema}\".records WHERE chain_id = $1 AND idx >= $2 ORDER BY idx"
            ),
            // Signed rows only: an unsigned one is anybody's with the writer role (see verify.rs).
            last_checkpoint: format!(
                "SELECT max(tree_size) FROM \"{schema}\".checkpoints WHERE chain_id = $1 AND note IS NOT NULL"
            ),
            insert: format!(
                "INSERT INTO \"{schema}\".checkpoints (chain_id, tree_size, root_hash, entry_hash, note) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (chain_id, tree_size) DO NOTHING"
            ),
            register_key: format!(
                "INSERT INTO \"{schema}\".chain_keys (chain_id, vkey) VALUES ($1, $2) ON CONFLICT (chain_id) DO NOTHING"
            ),
            read_key: format!("SELECT vkey FROM \"{schema}\".chain_keys WHERE chain_id = $1"),
            row_note: format!(
                "SELECT note FROM \"{schema}\".checkpoints WHERE chain_id = $1 AND tree_size = $2"
            ),
            markers: crate::markers::MarkerSql::new(schema),
        }
    }
}

impl Ckpt {
    pub(crate) fn new(opts: PgCheckpointOptions, chain_id: &str, counters: Arc<CkptCounters>) -> Ckpt {
        let targets = opts.publish_to.iter().map(|t| t.join(chain_id)).collect();
        Ckpt {
            opts,
            counters,
            targets,
            tree: Frontier::new(),
            since: Vec::new(),
            last_size: 0,
            last_at: Instant::now(),
            started: false,
            next_marker: 1,
            refusal_marked: false,
        }
    }

    /// Bring the tree up to the chain's `next` records, after the head was (re)loaded. The first
    /// time: register the key, check the chain against its checkpoints, and start publishing.
    /// After a failure, rows found beyond the tree must be exactly `in_doubt` (the leaves of the
    /// batch whose commit failed after it was sent, which may have committed): anything else was
    /// written by someone else while this writer held the chain, and is refused.
    pub(crate) async fn load(
        &mut self,
        client: &tokio_postgres::Client,
        sql: &CkptSql,
        store: &str,
        chain_id: &str,
        next: u64,
        in_doubt: Option<&[Hash]>,
    ) -> Result<(), PgError> {
        let refuse = |why: String| PgError::Checkpoint {
            store: store.to_string(),
            chain_id: chain_id.to_string(),
            why,
        };
        if self.tree.size() > next {
            return Err(refuse(format!(
                "the chain has {next} records but this writer committed {}: records were removed",
                self.tree.size()
            )));
        }
        if !self.started {
            let verifier = self.opts.signer.verifier();
            // What the targets hold, read off the async workers (a target may be a slow mount).
            // A key of another chain or a checkpoint longer than the chain refuses; a target that
            // cannot be read does not (publication to it is retried, and counted, later).
            let seen = {
                let (targets, v) = (self.targets.clone(), verifier.clone());
                tokio::task::spawn_blocking(move || {
                    targets
                        .iter()
                        .map(|t| (check_target_key(t, &v), published_size(t)))
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| refuse(format!("reading the publication targets failed: {e}")))?
            };
            let mut keep_from = next;
            for (t, (key, size)) in self.targets.iter().zip(seen) {
                match key {
                    Ok(()) => {}
                    Err(TargetKey::Other(why)) => return Err(refuse(why)),
                    Err(TargetKey::Unreadable(why)) => {
                        tracing::warn!(store, target = %t.display(), error = %why,
                            "audit checkpoint target unreadable at open; publication will retry");
                    }
                }
                match size {
                    Ok(Some(p)) if p > next => {
                        return Err(refuse(format!(
                            "{} holds a checkpoint of {p} records, the chain has {next}: records were removed",
                            t.display()
                        )));
                    }
                    Ok(Some(p)) => keep_from = keep_from.min(p),
                    Ok(None) => {}
                    Err(e) => {
                        // Unknown: keep enough leaves to prove from a target up to ~1 M records
                        // behind (32 MiB at most).
                        tracing::warn!(store, target = %t.display(), error = %e,
                            "audit checkpoint target's latest.ckpt unreadable at open");
                        keep_from = keep_from.min(next.saturating_sub(1 << 20));
                    }
                }
            }
            self.register_key(client, sql, store, chain_id).await?;
            let written = {
                let (targets, v) = (self.targets.clone(), verifier.clone());
                tokio::task::spawn_blocking(move || {
                    targets
                        .iter()
                        .map(|t| publish_verifier_key(t, &v))
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| refuse(format!("writing the publication targets failed: {e}")))?
            };
            for (t, w) in self.targets.iter().zip(written) {
                match w {
                    Ok(()) => {}
                    Err(e @ cordon_audit::AuditError::Key { .. }) => return Err(refuse(e.to_string())),
                    Err(e) => tracing::warn!(store, target = %t.display(), error = %e,
                        "audit checkpoint target: writing the verifier key failed; publication will retry"),
                }
            }
            let row = client
                .query_one(&sql.last_checkpoint, &[&chain_id])
                .await
                .map_err(PgError::db(store, "read checkpoints"))?;
            let in_table: Option<i64> = row.try_get(0).map_err(PgError::db(store, "read checkpoints"))?;
            let in_table = in_table.map_or(0, |s| s.max(0) as u64);
            if in_table > next {
                return Err(refuse(format!(
                    "a checkpoint in the table covers {in_table} records, the chain has {next}: records were removed"
                )));
            }
            // The tree at the smallest size a target holds, and the leaves after it: what the
            // publisher needs to prove that its next checkpoint extends the published one.
            let mut base = Frontier::new();
            let mut tail = Vec::new();
            self.stream_leaves(client, sql, store, chain_id, 0, next, |i, h| {
                if i < keep_from {
                    base.push_hash(h);
                } else {
                    tail.push(h);
                }
            })
            .await?;
            let mut tree = base.clone();
            for h in &tail {
                tree.push_hash(*h);
            }
            // Rows beyond a clean shutdown's close marker are refused before anything is signed.
            self.next_marker = crate::markers::at_open(
                client,
                &sql.markers,
                store,
                chain_id,
                &self.opts.signer,
                &self.targets,
                next,
                tree.root(),
                in_table,
            )
            .await?;
            self.tree = tree;
            self.last_size = in_table;
            self.counters.last_size.store(in_table, Ordering::Relaxed);
            if !self.targets.is_empty() || !self.opts.witness.is_empty() {
                let publisher = CheckpointPublisher::start(
                    store,
                    self.opts.signer.clone(),
                    self.targets.clone(),
                    self.opts.witness.clone(),
                    base,
                    tail,
                )
                .map_err(|e| refuse(e.to_string()))?;
                // Set once per store (only the first load gets here).
                let _ = self.counters.publisher.set(Arc::new(publisher));
            }
            self.started = true;
            // The interval counts from here, not from before the load (which can take a while).
            self.last_at = Instant::now();
            return Ok(());
        }
        // A reload after a failure: a batch whose commit was lost in transit may have committed.
        let from = self.tree.size();
        let mut added = Vec::new();
        self.stream_leaves(client, sql, store, chain_id, from, next, |_, h| added.push(h))
            .await?;
        if !added.is_empty() && in_doubt != Some(added.as_slice()) {
            // The writer role can insert well-linked rows into any chain: a batch that failed
            // on the primary key, or a lost connection, must not make this writer adopt (and
            // sign) them. A close marker at its own records makes the refusal outlive this
            // process: any later start names the rows forged instead of adopting them.
            if !self.refusal_marked {
                self.refusal_marked = self.close(client, sql, store, chain_id).await;
            }
            return Err(refuse(format!(
                "records {from}..{next} were written by someone else while this writer held the chain \
                 (they are not its batch whose commit was in doubt): refusing to adopt or sign them"
            )));
        }
        self.committed(added);
        Ok(())
    }

    async fn register_key(
        &self,
        client: &tokio_postgres::Client,
        sql: &CkptSql,
        store: &str,
        chain_id: &str,
    ) -> Result<(), PgError> {
        let vkey = self.opts.signer.verifier().to_string();
        client
            .execute(&sql.register_key, &[&chain_id, &vkey])
            .await
            .map_err(PgError::db(store, "register the chain's checkpoint key"))
            .map_err(|e| match e.code() {
                // undefined_table: a store made before signed checkpoints.
                Some("42P01") => PgError::Checkpoint {
                    store: store.to_string(),
                    chain_id: chain_id.to_string(),
                    why: "the store's schema predates signed checkpoints (no chain_keys table): \
                          run `cordon audit init-postgres --store <its URL>` as its administrator"
                        .into(),
                },
                _ => e,
            })?;
        let row = client
            .query_one(&sql.read_key, &[&chain_id])
            .await
            .map_err(PgError::db(store, "read the chain's checkpoint key"))?;
        let stored: String = row
            .try_get(0)
            .map_err(PgError::db(store, "read the chain's checkpoint key"))?;
        if stored.trim_end() != vkey {
            return Err(PgError::Checkpoint {
                store: store.to_string(),
                chain_id: chain_id.to_string(),
                why: "the chain's checkpoints are signed by another key (chain_keys); configure that key or write a new chain".into(),
            });
        }
        Ok(())
    }

    /// Leaf hashes of records `from..next` in order, each checked to be the next index.
    #[allow(clippy::too_many_arguments)]
    async fn stream_leaves(
        &self,
        client: &tokio_postgres::Client,
        sql: &CkptSql,
        store: &str,
        chain_id: &str,
        from: u64,
        next: u64,
        mut visit: impl FnMut(u64, Hash),
    ) -> Result<(), PgError> {
        let read = |e| PgError::db(store, "read leaf hashes")(e);
        let corrupt = |index: u64, why: &'static str| PgError::CorruptHead {
            store: store.to_string(),
            chain_id: chain_id.to_string(),
            index,
            why,
        };
        let from_i = i64::try_from(from).unwrap_or(i64::MAX);
        let stream = client
            .query_raw(
                &sql.leaves,
                [&chain_id as &(dyn tokio_postgres::types::ToSql + Sync), &from_i],
            )
            .await
            .map_err(read)?;
        let mut stream = std::pin::pin!(stream);
        let mut expected = from;
        while expected < next {
            let Some(row) = stream.try_next().await.map_err(read)? else {
                return Err(corrupt(expected, "a record below the head is missing"));
            };
            let idx: i64 = row.try_get(0).map_err(read)?;
            let leaf: &[u8] = row.try_get(1).map_err(read)?;
            if u64::try_from(idx).ok() != Some(expected) {
                return Err(corrupt(expected, "a record below the head is missing"));
            }
            let leaf: Hash = leaf
                .try_into()
                .map_err(|_| corrupt(expected, "a stored leaf hash is not 32 bytes"))?;
            visit(expected, leaf);
            expected += 1;
        }
        Ok(())
    }

    /// At a clean stop, once every committed record is covered: sign a close marker for the
    /// tree, insert it and publish it (the final checkpoint's publication is the caller's to wait
    /// for; the marker is a signed claim of the same size and root by itself). `false` (and
    /// logged) if no close marker was written: the next start then treats the stop as a crash.
    pub(crate) async fn close(
        &mut self,
        client: &tokio_postgres::Client,
        sql: &CkptSql,
        store: &str,
        chain_id: &str,
    ) -> bool {
        if !self.started {
            return false;
        }
        let m = cordon_audit::marker::Marker {
            kind: cordon_audit::marker::MarkerKind::Closed,
            seq: self.next_marker,
            size: self.tree.size(),
            root: self.tree.root(),
        };
        match crate::markers::write(
            client,
            &sql.markers,
            store,
            chain_id,
            &self.opts.signer,
            &self.targets,
            &m,
        )
        .await
        {
            Ok(seq) => {
                self.next_marker = seq + 1;
                true
            }
            Err(e) => {
                tracing::error!(store, error = %e,
                    "audit store: writing the close marker failed; the next start will treat this stop as a crash");
                false
            }
        }
    }

    /// Restart the interval without cutting (the writer cannot cut one right now).
    pub(crate) fn postpone(&mut self) {
        self.last_at = Instant::now();
    }

    /// Records in the tree.
    pub(crate) fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Records committed: extend the tree.
    pub(crate) fn committed(&mut self, leaves: impl IntoIterator<Item = Hash>) {
        let publishing = self.counters.publisher.get().is_some();
        for h in leaves {
            self.tree.push_hash(h);
            if publishing {
                self.since.push(h);
            }
        }
    }

    /// Records not yet covered by a checkpoint, and enough of them (or for long enough).
    pub(crate) fn due(&self) -> bool {
        let pending = self.tree.size() - self.last_size;
        pending > 0 && (pending >= self.opts.every || self.last_at.elapsed() >= self.opts.interval)
    }

    /// How long until the interval makes a checkpoint due, when records are waiting for one.
    pub(crate) fn wait(&self) -> Option<Duration> {
        (self.started && self.tree.size() > self.last_size)
            .then(|| (self.last_at + self.opts.interval).saturating_duration_since(Instant::now()))
    }

    /// Sign the tree at its current size (whose last record's entry hash is `head`), insert it
    /// into the table (when a connection is given) and publish it. Failures are logged and
    /// counted; they never fail appends.
    pub(crate) async fn cut(
        &mut self,
        client: Option<&tokio_postgres::Client>,
        sql: &CkptSql,
        store: &str,
        chain_id: &str,
        head: &Hash,
    ) {
        self.last_at = Instant::now();
        let size = self.tree.size();
        if !self.started || size == self.last_size {
            return;
        }
        let root = self.tree.root();
        let note = match Checkpoint::new(self.opts.signer.name(), size, root).sign(&self.opts.signer) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(store, error = %e, "audit checkpoint: signing failed");
                self.counters.insert_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.last_size = size;
        if let Some(client) = client {
            let size_i = i64::try_from(size).unwrap_or(i64::MAX);
            let inserted = client
                .execute(
                    &sql.insert,
                    &[&chain_id, &size_i, &root.as_slice(), &head.as_slice(), &note],
                )
                .await;
            match inserted {
                Ok(0) => {
                    // A row for this size already: this writer's, if an earlier insert's answer
                    // was lost with its connection; otherwise somebody else's, inserted with the
                    // writer role to keep the signed row out (the published copy still carries
                    // it). Counted as a failure then, for the alert.
                    let existing: Option<String> = client
                        .query_opt(&sql.row_note, &[&chain_id, &size_i])
                        .await
                        .ok()
                        .flatten()
                        .and_then(|r| r.try_get(0).ok());
                    if existing.as_deref() != Some(note.as_str()) {
                        tracing::error!(
                            store,
                            size,
                            "audit checkpoint: the checkpoints table holds a row for this size that this writer did not sign (inserted by someone else?); the signed checkpoint is only published"
                        );
                        self.counters.insert_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {
                    self.counters.inserted.fetch_add(1, Ordering::Relaxed);
                    self.counters.last_size.store(size, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(store, size, error = %crate::error::describe_pg_error(&e),
                        "audit checkpoint: inserting into the checkpoints table failed (the next one covers it)");
                    self.counters.insert_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(p) = self.counters.publisher.get() {
            p.submit(size, root, note, std::mem::take(&mut self.since));
        }
    }
}

/// Why a target's key cannot be taken as this chain's.
enum TargetKey {
    /// It names another key (or is not a key): refuse.
    Other(String),
    /// It could not be read: go on, publication retries.
    Unreadable(String),
}

/// A target that already names a key must name `verifier` (read only; see
/// [`publish_verifier_key`] for the write).
fn check_target_key(target: &std::path::Path, verifier: &NoteVerifier) -> Result<(), TargetKey> {
    match cordon_audit::check_verifier_key(target, verifier) {
        Ok(_) => Ok(()),
        Err(e @ cordon_audit::AuditError::Key { .. }) => Err(TargetKey::Other(e.to_string())),
        Err(e) => Err(TargetKey::Unreadable(e.to_string())),
    }
}
