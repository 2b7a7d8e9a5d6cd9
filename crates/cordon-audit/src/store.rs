//! The store abstraction the gateway is written against, and the [`Ack`] that resolves when a
//! record is durable. [`crate::FileStore`] is the embedded implementation (hash chain, Merkle tree,
//! signed checkpoints).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::error::AuditError;
use crate::record::Record;

/// An append-only audit store for one jurisdiction.
pub trait AuditStore: Send + Sync + 'static {
    /// Enqueue a record. Returns at once with an [`Ack`] that resolves to the record's index when
    /// the record is durable (fsynced). An `Err` here or from the `Ack` means the record is NOT
    /// durable: the gateway then answers 503 `audit_unavailable` and forwards nothing.
    fn append(&self, record: &Record) -> Result<Ack, AuditError>;
    /// Cheap readiness probe (for `/readyz`): is the store open and writable?
    fn check_writable(&self) -> Result<(), AuditError>;
    /// What the store is (e.g. its path), for logs and errors. No personal data.
    fn describe(&self) -> String;
}

/// Why an ack channel closed without an answer, supplied by the store (public so that stores in
/// other crates, such as the PostgreSQL backend, can build an [`Ack`]).
pub trait AckSource: Send + Sync {
    fn closed_error(&self) -> AuditError;
}

/// Resolves to the index of the appended record once it is durable, or to the reason it is not.
#[must_use = "a record is only durable once its Ack resolves to Ok"]
pub struct Ack {
    rx: oneshot::Receiver<Result<u64, AuditError>>,
    source: Arc<dyn AckSource>,
}

impl Ack {
    /// An ack that resolves when the store's writer answers on `rx`; if the writer drops the
    /// sender without answering, `source` says why.
    pub fn new(rx: oneshot::Receiver<Result<u64, AuditError>>, source: Arc<dyn AckSource>) -> Self {
        Ack { rx, source }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack").finish_non_exhaustive()
    }
}

impl Future for Ack {
    type Output = Result<u64, AuditError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The writer dropped the request without answering: it stopped (or failed).
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.source.closed_error())),
        }
    }
}
