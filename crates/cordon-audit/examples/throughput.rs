//! Rough throughput check (not a test): N concurrent appenders, each awaiting its ack before the
//! next append, against a fresh store in a temporary directory (or `$AUDIT_DIR`).
//!
//! `BATCH_DELAY_US=0 cargo run --release -p cordon-audit --example throughput -- [writers] [per_writer]`

use std::sync::Arc;
use std::time::Instant;

use cordon_audit::{
    AuditStore, CallerRecord, DecisionRecord, FileStore, Outcome, RECORD_VERSION, Record, StoreOptions,
    digest, new_decision_id, now_rfc3339_micros, verify_store,
};

fn record(n: u64) -> Record {
    Record::Decision(DecisionRecord {
        v: RECORD_VERSION,
        decision_id: new_decision_id(),
        ts: now_rfc3339_micros(),
        gateway_id: "gw-bench".into(),
        gateway_region: Some("eu-central-1".into()),
        policy_version: "sha256:0123456789abcdef".into(),
        subject: Some(format!("ps:{n:032x}")),
        caller: Some(CallerRecord::User {
            issuer: "https://idp.example".into(),
        }),
        data_subject_jurisdiction: Some("EU".into()),
        data_subject_country: Some("DE".into()),
        residency_source: Some("claim:country".into()),
        request_origin_region: None,
        tier: Some(2),
        tier_declared: None,
        operation: "chat".into(),
        model: Some("m-small".into()),
        outcome: Outcome::Allowed,
        reason: None,
        reasons: vec!["eu-1: permitted".into(), "eu-2: permitted".into()],
        model_endpoint: Some("eu-1".into()),
        provider: Some("echo".into()),
        operator: None,
        processing_regions: vec!["eu-central-1".into()],
        processing_jurisdictions: vec!["EU".into()],
        transfer_mechanism: None,
        transfer_reference: None,
        audit_storage_region: Some("eu-central-1".into()),
        payload: digest(&n.to_le_bytes()),
        pii: None,
    })
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
