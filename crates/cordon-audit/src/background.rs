//! The store's own threads (writer, checkpointer, replica shipper) and how they are scheduled.
//!
//! They run as `SCHED_BATCH` on Linux: a woken writer then does not preempt the request-handling
//! thread that woke it (the default wake-up preemption does, twice per batch: on the append's
//! wake-up and again when its fsync completes). It runs as soon as that thread next blocks, and
//! by then more records have queued for the same fsync. Measured on one core shared with the
//! upstream (`docs/PERFORMANCE.md`, "Third pass"): context switches per
//! request 1.25 -> 0.7, Cordon's CPU per request -16%, and a lower 1-connection p99. An idle
//! core still runs the thread at once; this only changes who yields on a busy one.

use std::io;
use std::thread::{Builder, JoinHandle};

/// Spawn a store thread named `name` with the batch scheduling policy (best effort: a system
/// that refuses it leaves the thread at the default policy, which is only slower).
pub(crate) fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name.into()).spawn(move || {
        batch_policy();
        f()
    })
}

#[cfg(target_os = "linux")]
fn batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_BATCH, whose
    // only accepted priority is 0.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "audit thread stays at the default scheduling policy");
    }
}

#[cfg(not(target_os = "linux"))]
fn batch_policy() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn store_threads_run_with_the_batch_policy() {
        // SAFETY: sched_getscheduler(0) only reads the calling thread's policy.
        let caller = unsafe { libc::sched_getscheduler(0) };
        let policy = spawn("cordon-test", || unsafe { libc::sched_getscheduler(0) })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(policy, libc::SCHED_BATCH);
        // The caller's own policy is untouched.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, caller);
    }
}
