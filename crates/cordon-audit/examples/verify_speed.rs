//! Verification speed (not a test): write N records into a fresh store, then time `verify_store`
//! (framing, CRC, record schema, hash chain, Merkle tree and every signed checkpoint).
//!
//! `RECORDS=small` (default): completion records, ~400 bytes per frame.
//! `RECORDS=mixed`: alternating decision and completion records, as the gateway writes (~640
//! bytes per frame on average).
//!
//! `cargo run --release -p cordon-audit --example verify_speed -- [records] [runs]`
//! (`$AUDIT_DIR`: where to write the store, or an existing store to verify.)

use std::sync::Arc;
use std::time::Instant;

use cordon_audit::testing::{bench_completion, bench_decision};
use cordon_audit::{AuditStore, FileStore, Record, StoreOptions, verify_store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let runs: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let tmp = tempfile::tempdir()?;
    let mixed = std::env::var("RECORDS").is_ok_and(|v| v == "mixed");
    let dir = std::env::var_os("AUDIT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("EU"));
    let dir = match dir.exists() {
        true => dir,
        false => {
            let store = Arc::new(FileStore::open(&dir, StoreOptions::default())?);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()?;
            let t = Instant::now();
            rt.block_on(async {
                let writers = 128u64;
                let mut handles = Vec::new();
                for w in 0..writers {
                    let store = store.clone();
                    handles.push(tokio::spawn(async move {
                        for k in (w..n).step_by(writers as usize) {
                            let rec = if mixed && k % 2 == 0 {
                                Record::Decision(bench_decision(k))
                            } else {
                                Record::Completion(bench_completion())
                            };
                            store.append(&rec)?.await?;
                        }
                        Ok::<_, cordon_audit::AuditError>(())
                    }));
                }
                for h in handles {
                    h.await??;
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            })?;
            drop(store);
            println!("wrote the store in {:.2}s", t.elapsed().as_secs_f64());
            dir
        }
    };
    let bytes: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let report = verify_store(&dir)?;
        let secs = t.elapsed().as_secs_f64();
        best = best.min(secs);
        println!(
            "verified {} records ({} MB, {} checkpoints, {} unattested) in {secs:.3}s: {:.0} records/s",
            report.records,
            bytes >> 20,
            report.checkpoints,
            report.unattested,
            report.records as f64 / secs
        );
    }
    println!("best: {best:.3}s");
    Ok(())
}
