//! [`PgStore`]: one writer task per store (= per chain) that group-commits appends to PostgreSQL.
//!
//! `append` serializes the record and queues it; the writer task takes everything queued (up to
//! `batch_max`, optionally waiting `batch_delay` for more), chains and hashes the batch in memory
//! (body, entry hash, RFC 6962 leaf hash), and writes it in one binary `COPY` (a single statement
//! in autocommit: the batch commits or not as a whole). Every record of the batch is
//! acknowledged once the `COPY` has completed, i.e. committed (durable as the server's
//! `synchronous_commit` defines it). While one batch is in flight the next one accumulates, so
//! concurrent appends share one commit.
//!
//! A database error fails that batch's acks (the gateway answers 503 `audit_unavailable`), marks
//! the store unhealthy ([`PgStore::check_writable`]), drops the connection and forgets the chain
//! head; the next batch (or a probe every second while idle) takes a fresh connection from the
//! pool and reloads the head from the table, so a batch whose commit was lost in transit (it may
//! have committed) is never chained over twice. The rows the reload finds beyond the writer's own
//! must be exactly that batch: anything else (rows somebody else inserted with the writer role)
//! is refused, with a close marker at the writer's own records so that no later start adopts
//! them either (`checkpoints.rs`). Two writers on one chain id are kept apart by a session
//! advisory lock.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cordon_audit::{AuditError, MAX_BODY, Record};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::body::{self, ZERO_HASH};
use crate::checkpoints::{Ckpt, CkptCounters, CkptSql};
use crate::error::PgError;
use crate::schema::WRITER_ROLE;
use crate::url::{StoreUrl, checked_chain_id, checked_ident, redact_config};

/// Bytes a body adds around the record JSON (`{"i":<20 digits>,"prev":"<64 hex>","rec":` + `}`).
const ENVELOPE_OVERHEAD: usize = 5 + 20 + 9 + 64 + 8 + 1;
/// How often an unhealthy, idle writer retries the database.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How to open a [`PgStore`].
#[derive(Clone)]
pub struct PgStoreOptions {
    /// Connection settings (a `connect_timeout` of 5 s is applied when none is set).
    pub config: tokio_postgres::Config,
    /// TLS for the connections; it decides `config`'s `sslmode` (off: `disable`). Default: what
    /// `config`'s `sslmode` asks for ([`crate::Tls::for_config`]); [`PgStoreOptions::from_url`]
    /// takes the URL's.
    pub tls: crate::Tls,
    /// Schema created by [`crate::migrate`].
    pub schema: String,
    /// This replica's chain id, e.g. `gw-fra-1-a`. Exactly one live writer per chain id.
    pub chain_id: String,
    /// Role to `SET ROLE` to on every new connection. Default [`WRITER_ROLE`]; `None` to write
    /// with the login role's own privileges (which should then be only `SELECT, INSERT`).
    pub role: Option<String>,
    /// Most records per batch (one `COPY`). Default 8192.
    pub batch_max: usize,
    /// Extra time to wait for more records once a batch has started. Default zero: batches form
    /// naturally while the previous one is being committed.
    pub batch_delay: Duration,
    /// Connections in the pool (the writer uses one at a time). Default 2.
    pub pool_size: usize,
    /// At most this many task yields while forming a batch, so that callers just acknowledged
    /// by the previous batch can join this one instead of waiting for the next commit. Default 4;
    /// 0 disables it.
    pub regroup_yields: usize,
    /// How long opening waits for another writer's lock on the chain (e.g. the instance being
    /// replaced, still covering its chain with a last checkpoint). Default 30 s.
    pub lock_wait: Duration,
    /// Signed checkpoints of the chain, published elsewhere (see `checkpoints.rs`). `None`: the
    /// chain is written without checkpoints (verification then cannot tell a cut tail).
    pub checkpoints: Option<crate::PgCheckpointOptions>,
}

impl PgStoreOptions {
    pub fn new(config: tokio_postgres::Config, schema: &str, chain_id: &str) -> PgStoreOptions {
        PgStoreOptions {
            tls: crate::Tls::for_config(&config),
            config,
            schema: schema.to_string(),
            chain_id: chain_id.to_string(),
            role: Some(WRITER_ROLE.to_string()),
            batch_max: 8192,
            batch_delay: Duration::ZERO,
            pool_size: 2,
            regroup_yields: 4,
            lock_wait: Duration::from_secs(30),
            checkpoints: None,
        }
    }

    /// From a parsed store URL; `chain_id` is used when the URL names no `chain`, and the URL's
    /// `role` (if any) replaces the default.
    pub fn from_url(url: &StoreUrl, chain_id: &str) -> PgStoreOptions {
        let mut o = PgStoreOptions::new(
            url.config.clone(),
            &url.schema,
            url.chain_id.as_deref().unwrap_or(chain_id),
        );
        if let Some(role) = &url.role {
            o.role = Some(role.clone());
        }
        o.tls = url.tls.clone();
        o
    }
}

/// Counters, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgStoreStats {
    /// Batches committed.
    pub batches: u64,
    /// Records committed.
    pub records: u64,
    /// Batches that failed.
    pub failed_batches: u64,
}

struct Shared {
    store: String,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    batches: AtomicU64,
    records: AtomicU64,
    failed_batches: AtomicU64,
    ckpt: Arc<CkptCounters>,
    /// Test hook: the next committed batch is treated as if its answer was lost in transit.
    lose_next_answer: AtomicBool,
}

impl Shared {
    fn set_healthy(&self) {
        self.healthy.store(true, Ordering::Release);
    }

    fn set_failed(&self, e: &PgError) {
        let cause = e.cause();
        self.healthy.store(false, Ordering::Release);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(cause);
        }
    }

    /// Not written (or not known to be): the batch failed or the database is unreachable. The
    /// store itself stays usable: the next batch reconnects.
    fn write_failed(&self, cause: String) -> AuditError {
        AuditError::Io {
            path: self.store.clone().into(),
            op: "write",
            source: Arc::new(std::io::Error::other(cause)),
        }
    }

    fn stopped(&self) -> AuditError {
        AuditError::Stopped {
            store: self.store.clone(),
        }
    }
}

type AckTx = oneshot::Sender<Result<u64, AuditError>>;

struct Job {
    rec: Vec<u8>,
    ack: AckTx,
}

/// What the writer task is sent: records, or a request to cover everything committed so far with
/// a checkpoint (answered once it is signed, inserted and handed to the publisher).
enum Msg {
    Job(Job),
    Checkpoint(oneshot::Sender<()>),
    /// Stop: commit what is queued, cover it with a checkpoint and a close marker, and end the
    /// writer (answered once done; later appends fail).
    Close(oneshot::Sender<()>),
}

/// Resolves to the record's index in its chain once the batch holding it has committed, or to
/// why it did not (then the record is not acknowledged and the gateway must not forward).
#[must_use = "a record is only durable once its ack resolves to Ok"]
pub struct PgAck {
    rx: oneshot::Receiver<Result<u64, AuditError>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAck").finish_non_exhaustive()
    }
}

impl Future for PgAck {
    type Output = Result<u64, AuditError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.shared.stopped())),
        }
    }
}

/// A PostgreSQL audit store: one hash chain (`chain_id`) in a schema made by [`crate::migrate`].
pub struct PgStore {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    chain_id: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect, load this chain's head (verifying that the last row hashes to what it claims),
    /// and start the writer task. Fails if the database cannot be reached or the head is damaged.
    pub async fn open(opts: PgStoreOptions) -> Result<PgStore, PgError> {
        let schema = checked_ident("schema", &opts.schema)?.to_string();
        let chain_id = checked_chain_id(&opts.chain_id)?.to_string();
        if let Some(role) = &opts.role {
            checked_ident("role", role)?;
        }
        if opts.batch_max == 0 || opts.pool_size == 0 {
            return Err(PgError::InvalidInput {
                what: "store options",
                why: "batch_max and pool_size must be at least 1",
            });
        }
        let store = format!("{}?schema={schema} chain {chain_id}", redact_config(&opts.config));
        let mut config = opts.config.clone();
        crate::tls::apply(&mut config, &opts.tls);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let timeout = config.get_connect_timeout().copied();
        let mgr = Manager::from_config(
            config,
            crate::tls::connector(&opts.tls)?,
            ManagerConfig {
                // Connections are taken rarely (at start and after a failure): check them.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| PgError::Connect {
                store: store.clone(),
                cause: e.to_string(),
            })?;
        let shared = Arc::new(Shared {
            store: store.clone(),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new(None),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            ckpt: Arc::new(CkptCounters::default()),
            lose_next_answer: AtomicBool::new(false),
        });
        let copy_sql = format!(
            "COPY \"{schema}\".records (chain_id, idx, body, entry_hash, leaf_hash) FROM STDIN (FORMAT binary)"
        );
        let head_sql = format!(
            "SELECT idx, body, entry_hash, leaf_hash FROM \"{schema}\".records WHERE chain_id = $1 ORDER BY idx DESC LIMIT 1"
        );
        let mut writer = Writer {
            pool,
            role: opts.role.clone(),
            chain_id: chain_id.clone(),
            copy_sql,
            head_sql,
            lock_sql: "SELECT pg_try_advisory_lock(hashtextextended($1, 7243513358117101663))".into(),
            lock_key: format!("{schema}/{chain_id}"),
            conn: None,
            head: None,
            batch_max: opts.batch_max,
            batch_delay: opts.batch_delay,
            regroup_yields: opts.regroup_yields,
            shared: shared.clone(),
            jobs: Vec::new(),
            rows: Vec::new(),
            last_acked: 0,
            ckpt: opts
                .checkpoints
                .clone()
                .map(|c| Ckpt::new(c, &chain_id, shared.ckpt.clone())),
            ckpt_sql: CkptSql::new(&schema),
            flushes: Vec::new(),
            closes: Vec::new(),
            discarded_at: None,
            in_doubt: None,
        };
        // The chain may still be locked by a writer that is stopping (a restart in this process,
        // or an instance being replaced): wait a little for it before refusing.
        let deadline = tokio::time::Instant::now() + opts.lock_wait;
        loop {
            match writer.ensure_ready().await {
                Ok(()) => break,
                Err(PgError::ChainInUse { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(writer.run(rx));
        Ok(PgStore {
            tx,
            shared,
            task,
            chain_id,
        })
    }

    /// Queue `record`; the returned [`PgAck`] resolves to its index in this store's chain once
    /// committed. Fails at once if the record is too large or the writer has stopped.
    pub fn append(&self, record: &Record) -> Result<PgAck, AuditError> {
        let rec = record
            .to_json()
            .map_err(|e| AuditError::Serialize(format!("{:?} error", e.classify())))?;
        if rec.len() + ENVELOPE_OVERHEAD > MAX_BODY {
            return Err(AuditError::TooLarge {
                len: rec.len() + ENVELOPE_OVERHEAD,
                limit: MAX_BODY,
            });
        }
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Job { rec, ack }))
            .map_err(|_| self.shared.stopped())?;
        Ok(PgAck {
            rx,
            shared: self.shared.clone(),
        })
    }

    /// Non-blocking readiness: the writer's last known state (set by every batch and by the
    /// idle probe). `Err` while the last batch or connection attempt failed.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if self.task.is_finished() {
            return Err(self.shared.stopped());
        }
        if self.shared.healthy.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self
            .shared
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_else(|| "not connected".to_string());
        Err(self.shared.write_failed(cause))
    }

    /// `postgres://user@host:port/db?schema=S chain C` (never a password).
    pub fn describe(&self) -> String {
        self.shared.store.clone()
    }

    /// This store's chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Checkpoint counters: `written` = checkpoints inserted into the table, `failures` = those
    /// that could not be signed or inserted; publication and witness counters as for a file
    /// store. All zero without [`PgStoreOptions::checkpoints`].
    pub fn checkpoint_stats(&self) -> cordon_audit::CheckpointStats {
        self.shared.ckpt.snapshot()
    }

    pub fn stats(&self) -> PgStoreStats {
        PgStoreStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            records: self.shared.records.load(Ordering::Relaxed),
            failed_batches: self.shared.failed_batches.load(Ordering::Relaxed),
        }
    }

    /// Test hook: the next batch commits, but the writer acts as if the answer was lost with its
    /// connection (its appends fail; the reload must find exactly that batch in the table).
    #[doc(hidden)]
    pub fn lose_next_commit_answer(&self) {
        self.shared.lose_next_answer.store(true, Ordering::Relaxed);
    }

    /// Cover every record committed so far with a signed checkpoint (in the table and handed to
    /// the publisher), then wait up to `timeout` for the publisher to publish it. `false` if it did
    /// not finish in time (or the writer has stopped).
    pub async fn checkpoint_now(&self, timeout: Duration) -> bool {
        self.ask_and_flush(Msg::Checkpoint, timeout).await
    }

    /// A clean stop while others may still hold the store (the gateway's shutdown): the writer
    /// commits what is queued, covers it with a final checkpoint and a signed close marker, and
    /// ends (appends fail from then on); then wait up to `timeout` for the checkpoint's
    /// publication. `false` if that did not finish in time.
    pub async fn shut_down(&self, timeout: Duration) -> bool {
        self.ask_and_flush(Msg::Close, timeout).await
    }

    /// Send the writer `msg` and wait up to `timeout` for its answer, then as long again for the
    /// publisher to publish what it was handed.
    async fn ask_and_flush(&self, msg: fn(oneshot::Sender<()>) -> Msg, timeout: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(msg(done)).is_err() {
            return false;
        }
        if tokio::time::timeout(timeout, wait)
            .await
            .map_or(true, |r| r.is_err())
        {
            return false;
        }
        let Some(publisher) = self.shared.ckpt.publisher.get().cloned() else {
            return true;
        };
        tokio::task::spawn_blocking(move || publisher.flush(timeout))
            .await
            .unwrap_or(false)
    }

    /// Stop accepting appends, let the writer commit (or fail) everything queued, and wait for it.
    /// The writer covers what it committed with a final checkpoint, which is published (waiting
    /// up to 10 s for the publication target) before this returns.
    pub async fn close(self) {
        let PgStore { tx, task, shared, .. } = self;
        drop(tx);
        let _ = task.await;
        if let Some(publisher) = shared.ckpt.publisher.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(10))).await;
        }
    }
}

/// One row of the batch being built (buffers reused across batches).
#[derive(Default)]
struct Row {
    idx: i64,
    body: Vec<u8>,
    entry: [u8; 32],
    leaf: [u8; 32],
}

struct Conn {
    client: Object,
    copy: tokio_postgres::Statement,
}

struct Writer {
    pool: Pool,
    role: Option<String>,
    chain_id: String,
    copy_sql: String,
    head_sql: String,
    lock_sql: String,
    /// `<schema>/<chain>`: what the chain's advisory lock is keyed on.
    lock_key: String,
    conn: Option<Conn>,
    /// (next index, entry hash of the last record); `None` = reload from the table.
    head: Option<(u64, [u8; 32])>,
    batch_max: usize,
    batch_delay: Duration,
    regroup_yields: usize,
    shared: Arc<Shared>,
    jobs: Vec<Job>,
    rows: Vec<Row>,
    /// Records acknowledged by the last committed batch.
    last_acked: usize,
    ckpt: Option<Ckpt>,
    ckpt_sql: CkptSql,
    /// Checkpoint requests waiting for the batch being formed to commit.
    flushes: Vec<oneshot::Sender<()>>,
    /// Close requests: the writer stops after the batch being formed.
    closes: Vec<oneshot::Sender<()>>,
    /// When this writer last dropped its connection: its old session may hold the chain's lock a
    /// moment longer, so the next lock attempt waits for it briefly.
    discarded_at: Option<std::time::Instant>,
    /// Leaf hashes of the last batch whose commit failed after it was sent: it may have committed
    /// (the answer lost in transit). The next reload may find exactly it in the table, nothing
    /// else (`checkpoints.rs` `load`).
    in_doubt: Option<Vec<[u8; 32]>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let first = if self.shared.healthy.load(Ordering::Acquire) {
                match self.ckpt.as_ref().and_then(Ckpt::wait) {
                    // Records wait for a checkpoint: cut one when the interval is up.
                    Some(left) => match tokio::time::timeout(left, rx.recv()).await {
                        Ok(Some(msg)) => msg,
                        Ok(None) => break,
                        Err(_) => {
                            self.checkpoint(true).await;
                            continue;
                        }
                    },
                    None => match rx.recv().await {
                        Some(msg) => msg,
                        None => break,
                    },
                }
            } else {
                match tokio::time::timeout(PROBE_INTERVAL, rx.recv()).await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(_) => {
                        // Idle and unhealthy: probe, so /readyz recovers without traffic.
                        let _ = self.ensure_ready().await;
                        continue;
                    }
                }
            };
            self.jobs.clear();
            match first {
                Msg::Job(job) => self.jobs.push(job),
                Msg::Checkpoint(done) => self.flushes.push(done),
                Msg::Close(done) => self.closes.push(done),
            }
            self.drain(&mut rx);
            // The callers acknowledged by the previous batch are often about to append again
            // (they were woken by their acks and run on this runtime): give them a few yields
            // to join this batch instead of splitting the load into two alternating half-batches,
            // each paying a full commit. Stops as soon as a yield brings nothing new.
            let expected = self.jobs.len() + std::mem::take(&mut self.last_acked);
            for _ in 0..self.regroup_yields {
                if self.jobs.len() >= expected.min(self.batch_max) {
                    break;
                }
                let before = self.jobs.len();
                tokio::task::yield_now().await;
                self.drain(&mut rx);
                if self.jobs.len() == before {
                    break;
                }
            }
            if !self.batch_delay.is_zero() && self.jobs.len() < self.batch_max {
                let deadline = tokio::time::Instant::now() + self.batch_delay;
                while self.jobs.len() < self.batch_max {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(Msg::Job(job))) => self.jobs.push(job),
                        Ok(Some(Msg::Checkpoint(done))) => self.flushes.push(done),
                        Ok(Some(Msg::Close(done))) => self.closes.push(done),
                        _ => break,
                    }
                }
            }
            if !self.jobs.is_empty() {
                self.commit_batch().await;
            }
            if !self.flushes.is_empty() {
                self.checkpoint(true).await;
                for done in self.flushes.drain(..) {
                    let _ = done.send(());
                }
            }
            if !self.closes.is_empty() {
                break;
            }
        }
        // Stopping: cover what was committed, then say the stop was clean. A close request is
        // answered only when the close marker was written (else `shut_down` reports false).
        self.checkpoint(true).await;
        let closed = self.close_marker().await;
        for done in self.closes.drain(..) {
            if closed {
                let _ = done.send(());
            }
        }
    }

    /// The close marker of a clean stop (`markers.rs`), only when every committed record is in
    /// the tree and the connection is healthy; otherwise the next start sees a crash. `true` if
    /// written, or when the store signs nothing (no markers to write).
    async fn close_marker(&mut self) -> bool {
        let Some(ckpt) = self.ckpt.as_mut() else {
            return true;
        };
        let whole = self.head.is_some_and(|(next, _)| next == ckpt.size());
        let Some(conn) = self
            .conn
            .as_ref()
            .filter(|_| whole && self.shared.healthy.load(Ordering::Acquire))
        else {
            tracing::warn!(store = %self.shared.store,
                "audit store: stopping without a close marker (the chain is not in a known state); the next start treats it as a crash");
            return false;
        };
        ckpt.close(&conn.client, &self.ckpt_sql, &self.shared.store, &self.chain_id)
            .await
    }

    /// Cut a checkpoint if one is due (`interval_up`: or any records are uncovered).
    async fn checkpoint(&mut self, interval_up: bool) {
        let Some(ckpt) = self.ckpt.as_mut() else { return };
        if !(ckpt.due() || interval_up) {
            return;
        }
        // The head must be the last record of the tree (it is, unless a reload is pending). If
        // not, try again an interval later (never spin on the idle timer).
        let Some((_, head)) = self.head.filter(|(next, _)| *next == ckpt.size()) else {
            ckpt.postpone();
            return;
        };
        let client = self
            .conn
            .as_ref()
            .map(|c| -> &tokio_postgres::Client { &c.client });
        ckpt.cut(client, &self.ckpt_sql, &self.shared.store, &self.chain_id, &head)
            .await;
    }

    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        while self.jobs.len() < self.batch_max {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => self.jobs.push(job),
                Ok(Msg::Checkpoint(done)) => self.flushes.push(done),
                Ok(Msg::Close(done)) => {
                    self.closes.push(done);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    async fn commit_batch(&mut self) {
        let ready = self.ensure_ready().await;
        let sent = ready.is_ok();
        let result = match ready {
            Ok(()) => self.write_batch().await,
            Err(e) => Err(e),
        };
        // Test hook: a commit whose answer was lost in transit.
        let result = match result {
            Ok(_) if self.shared.lose_next_answer.swap(false, Ordering::Relaxed) => Err(PgError::Connect {
                store: self.shared.store.clone(),
                cause: "the commit's answer was lost (test hook)".into(),
            }),
            r => r,
        };
        match result {
            Ok((next, head)) => {
                self.head = Some((next, head));
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .records
                    .fetch_add(self.jobs.len() as u64, Ordering::Relaxed);
                let first = next - self.jobs.len() as u64;
                self.last_acked = self.jobs.len();
                if let Some(ckpt) = self.ckpt.as_mut() {
                    ckpt.committed(self.rows[..self.jobs.len()].iter().map(|r| r.leaf));
                }
                for (i, job) in self.jobs.drain(..).enumerate() {
                    // The appender may have stopped waiting; the record is committed anyway.
                    let _ = job.ack.send(Ok(first + i as u64));
                }
                self.checkpoint(false).await;
            }
            Err(e) => {
                let cause = e.cause();
                tracing::error!(store = %self.shared.store, error = %cause,
                    "audit batch failed; reconnecting for the next batch");
                self.shared.set_failed(&e);
                self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
                // The commit may or may not have happened: reload the head before chaining again,
                // and accept nothing new there but this batch.
                if sent {
                    self.in_doubt = Some(self.rows[..self.jobs.len()].iter().map(|r| r.leaf).collect());
                }
                self.discard_conn();
                for job in self.jobs.drain(..) {
                    let _ = job.ack.send(Err(self.shared.write_failed(cause.clone())));
                }
            }
        }
    }

    /// Chain, hash and COPY the batch; returns the new (next index, head) on commit.
    async fn write_batch(&mut self) -> Result<(u64, [u8; 32]), PgError> {
        let (mut next, mut head) = self.head.unwrap_or((0, ZERO_HASH));
        if self.rows.len() < self.jobs.len() {
            self.rows.resize_with(self.jobs.len(), Row::default);
        }
        for (job, row) in self.jobs.iter().zip(self.rows.iter_mut()) {
            body::encode_body(&mut row.body, next, &head, &job.rec);
            row.idx = i64::try_from(next).map_err(|_| PgError::InvalidInput {
                what: "chain index",
                why: "exceeds the bigint range",
            })?;
            (row.entry, row.leaf) = body::entry_and_leaf_hash(&head, &row.body);
            head = row.entry;
            next += 1;
        }
        let store = self.shared.store.clone();
        let Some(conn) = self.conn.as_ref() else {
            return Err(PgError::Connect {
                store,
                cause: "no connection".into(),
            });
        };
        let sink = conn
            .client
            .copy_in(&conn.copy)
            .await
            .map_err(PgError::db(&store, "COPY"))?;
        let mut writer = pin!(BinaryCopyInWriter::new(
            sink,
            &[Type::TEXT, Type::INT8, Type::BYTEA, Type::BYTEA, Type::BYTEA],
        ));
        let chain_id: &str = &self.chain_id;
        for row in &self.rows[..self.jobs.len()] {
            let body: &[u8] = &row.body;
            let entry: &[u8] = &row.entry;
            let leaf: &[u8] = &row.leaf;
            let values: [&(dyn ToSql + Sync); 5] = [&chain_id, &row.idx, &body, &entry, &leaf];
            writer
                .as_mut()
                .write(&values)
                .await
                .map_err(PgError::db(&store, "COPY"))?;
        }
        writer
            .as_mut()
            .finish()
            .await
            .map_err(PgError::db(&store, "COPY"))?;
        Ok((next, head))
    }

    /// Make sure there is a connection (role set, COPY prepared) and a loaded chain head.
    async fn ensure_ready(&mut self) -> Result<(), PgError> {
        let res = self.ensure_ready_inner().await;
        match &res {
            Ok(()) => self.shared.set_healthy(),
            Err(e) => {
                self.discard_conn();
                self.shared.set_failed(e);
            }
        }
        res
    }

    /// Forget the connection (detached from the pool, so a broken one is never handed out again)
    /// and the chain head.
    fn discard_conn(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn.client));
            self.discarded_at = Some(std::time::Instant::now());
        }
        self.head = None;
    }

    async fn ensure_ready_inner(&mut self) -> Result<(), PgError> {
        let store = self.shared.store.clone();
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.discard_conn();
        }
        if self.conn.is_none() {
            let client = self.pool.get().await.map_err(|e| PgError::Connect {
                store: store.clone(),
                cause: describe_pool_error(&e),
            })?;
            let role_sql = match &self.role {
                Some(role) => format!("SET ROLE \"{role}\""),
                None => "RESET ROLE".to_string(),
            };
            client
                .batch_execute(&role_sql)
                .await
                .map_err(PgError::db(&store, "SET ROLE"))?;
            // The chain's lock (below) lives as long as the server's session: have the server
            // notice a connection that died on the client's side within ~25 s (the kernel's
            // default is 2 h), or a reconnecting writer would find its own chain locked that long.
            client
                .batch_execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
                .await
                .map_err(PgError::db(&store, "set keepalives"))?;
            let copy = client
                .prepare_cached(&self.copy_sql)
                .await
                .map_err(PgError::db(&store, "prepare COPY"))?;
            // One writer per chain: a session advisory lock on (schema, chain), held while this
            // connection lives (the server drops it when the connection ends, crash included).
            // A second gateway with the same chain id fails closed until the first is gone,
            // instead of interleaving batches and publishing checkpoints that race each other.
            let try_lock = || async {
                client
                    .query_one(&self.lock_sql, &[&self.lock_key])
                    .await
                    .map_err(PgError::db(&store, "lock the chain"))?
                    .try_get::<_, bool>(0)
                    .map_err(PgError::db(&store, "lock the chain"))
            };
            let mut locked = try_lock().await?;
            // Just after this writer dropped its own connection, the lock may still be its old
            // session's (ended once the server has processed the close): wait for that briefly.
            if !locked
                && self
                    .discarded_at
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
            {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while !locked && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    locked = try_lock().await?;
                }
            }
            if !locked {
                return Err(PgError::ChainInUse {
                    store,
                    chain_id: self.chain_id.clone(),
                });
            }
            self.conn = Some(Conn { client, copy });
            self.head = None;
        }
        if self.head.is_none() {
            let Some(conn) = self.conn.as_ref() else {
                return Err(PgError::Connect {
                    store,
                    cause: "no connection".into(),
                });
            };
            let row = conn
                .client
                .query_opt(&self.head_sql, &[&self.chain_id])
                .await
                .map_err(PgError::db(&store, "load chain head"))?;
            let head = match row {
                None => (0, ZERO_HASH),
                Some(row) => self.check_head(&store, &row)?,
            };
            if let Some(ckpt) = self.ckpt.as_mut() {
                ckpt.load(
                    &conn.client,
                    &self.ckpt_sql,
                    &store,
                    &self.chain_id,
                    head.0,
                    self.in_doubt.as_deref(),
                )
                .await?;
            }
            self.in_doubt = None;
            self.head = Some(head);
        }
        Ok(())
    }

    /// The last row of the chain must hash to its stored entry hash before we chain onto it.
    fn check_head(&self, store: &str, row: &tokio_postgres::Row) -> Result<(u64, [u8; 32]), PgError> {
        let read = |e: tokio_postgres::Error| PgError::db(store, "load chain head")(e);
        let idx: i64 = row.try_get(0).map_err(read)?;
        let body: &[u8] = row.try_get(1).map_err(read)?;
        let stored: &[u8] = row.try_get(2).map_err(read)?;
        let stored_leaf: &[u8] = row.try_get(3).map_err(read)?;
        let corrupt = |why| PgError::CorruptHead {
            store: store.to_string(),
            chain_id: self.chain_id.clone(),
            index: idx.max(0) as u64,
            why,
        };
        let env = body::parse_body(body).ok_or_else(|| corrupt("not a record body"))?;
        if i64::try_from(env.index).ok() != Some(idx) {
            return Err(corrupt("the body names another index"));
        }
        let (computed, leaf) = body::entry_and_leaf_hash(&env.prev, body);
        if stored != computed || stored_leaf != leaf {
            return Err(corrupt("the body does not match its entry or leaf hash"));
        }
        Ok((env.index + 1, computed))
    }
}

fn describe_pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => crate::error::describe_pg_error(pg),
        other => other.to_string(),
    }
}

impl cordon_audit::AckSource for Shared {
    fn closed_error(&self) -> AuditError {
        self.stopped()
    }
}

/// The gateway's view: a PostgreSQL chain is an audit store like the file store.
impl cordon_audit::AuditStore for PgStore {
    fn append(&self, record: &Record) -> Result<cordon_audit::Ack, AuditError> {
        let PgAck { rx, shared } = PgStore::append(self, record)?;
        Ok(cordon_audit::Ack::new(rx, shared))
    }

    fn check_writable(&self) -> Result<(), AuditError> {
        PgStore::check_writable(self)
    }

    fn describe(&self) -> String {
        PgStore::describe(self)
    }
}
