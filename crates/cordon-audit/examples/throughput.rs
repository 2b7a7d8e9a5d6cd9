//! Rough throughput check (not a test): N concurrent appenders, each awaiting its ack before the
//! next append, against a fresh store in a temporary directory (or `$AUDIT_DIR`).
//!
//! `BATCH_DELAY_US=0 cargo run --release -p cordon-audit --example throughput -- [writers] [per_writer]`

use std::sync::Arc;
use std::time::Instant;

use cordon_audit::{AuditStore, FileStore, Record, StoreOptions, verify_store};

fn record(n: u64) -> Record {
    cordon_audit::testing::sample_decision(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writers: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let per: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let tmp = tempfile::tempdir()?;
    let dir = std::env::var_os("AUDIT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("EU"));
    let delay_us: u64 = std::env::var("BATCH_DELAY_US")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0);
    let opts = StoreOptions {
        batch_delay: std::time::Duration::from_micros(delay_us),
        ..StoreOptions::default()
    };
    let store = Arc::new(FileStore::open(&dir, opts)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let start = Instant::now();
    rt.block_on(async {
        let mut handles = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                for k in 0..per {
                    store.append(&record(w * per + k))?.await?;
                }
                Ok::<_, cordon_audit::AuditError>(())
            }));
        }
        for h in handles {
            h.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let total = writers * per;
    println!(
        "{total} durable appends by {writers} writers in {secs:.2}s: {:.0}/s, {} fsyncs ({:.1} records/fsync)",
        total as f64 / secs,
        store.sync_count(),
        total as f64 / store.sync_count().max(1) as f64
    );
    drop(store);
    let t = Instant::now();
    let report = verify_store(&dir)?;
    println!(
        "verified {} records in {:.2}s",
        report.records,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
