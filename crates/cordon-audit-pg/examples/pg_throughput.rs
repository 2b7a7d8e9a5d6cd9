//! PostgreSQL append throughput: W concurrent writers (default 64) each appending small decision
//! records and awaiting every ack (committed) before the next, for D seconds (default 5), into
//! one chain (one `PgStore`, i.e. one gateway replica) in a fresh schema that is dropped after.
//!
//! ```text
//! cargo run --release -p cordon-audit-pg --example pg_throughput -- [writers] [seconds] [chains] [batch_delay_us] [regroup_yields]
//! ```
//! Every ack waits for a commit, so with W writers each awaiting its ack the rate is bounded by
//! W / (commit latency): on a disk whose fdatasync takes ~4 ms, 64 writers cannot exceed ~16,000
//! rows/s whatever the database does; more writers in flight (more requests, more replicas) fill
//! bigger batches.
//! `CORDON_TEST_PG` overrides the connection string (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`, a superuser: it migrates the schema).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cordon_audit::{CallerRecord, DecisionRecord, Outcome, Payload, RECORD_VERSION, Record};
use cordon_audit_pg::{PgStore, PgStoreOptions, migrate};
use tokio_postgres::{Config, NoTls};

fn record(n: u64) -> Record {
    Record::Decision(DecisionRecord {
        v: RECORD_VERSION,
        decision_id: cordon_audit::new_decision_id(),
        ts: cordon_audit::now_rfc3339_micros(),
        gateway_id: "gw-bench".into(),
        gateway_region: Some("eu-central-1".into()),
        policy_version: "sha256:bench".into(),
        subject: Some(format!("ps:{n:032x}")),
        caller: Some(CallerRecord::Workload { key_id: "k1".into() }),
        data_subject_jurisdiction: Some("EU".into()),
        data_subject_country: None,
        residency_source: None,
        request_origin_region: None,
        tier: Some(1),
        tier_declared: None,
        operation: "chat".into(),
        model: Some("m".into()),
        outcome: Outcome::Allowed,
        reason: None,
        reasons: Vec::new(),
        model_endpoint: Some("eu-1".into()),
        provider: None,
        operator: None,
        processing_regions: vec!["eu-central-1".into()],
        processing_jurisdictions: vec!["EU".into()],
        transfer_mechanism: None,
        transfer_reference: None,
        audit_storage_region: None,
        payload: Payload::None,
        pii: None,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writers: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let chains: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1).max(1);
    let delay_us: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
    let regroup: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let conn = std::env::var("CORDON_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_string());
    let config = Config::from_str(&conn)?;
    let (admin, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let schema = format!("cordon_bench_{}_{nanos}", std::process::id());
    migrate(&admin, &schema).await?;

    // As the gateway runs a chain: signed checkpoints (every 1024 records or 1 s) into the table
    // and published to a directory.
    let published = tempfile::tempdir()?;
    let mut stores = Vec::new();
    for c in 0..chains {
        let chain = format!("gw-bench-{c}");
        let mut opts = PgStoreOptions::new(config.clone(), &schema, &chain);
        let signer =
            cordon_audit::note::NoteSigner::from_seed(&format!("cordon/{schema}/{chain}"), &[7; 32])?;
        let mut ckpt = cordon_audit_pg::PgCheckpointOptions::new(signer);
        ckpt.publish_to = vec![published.path().to_path_buf()];
        opts.checkpoints = Some(ckpt);
        opts.batch_delay = Duration::from_micros(delay_us);
        if let Some(r) = regroup {
            opts.regroup_yields = r;
        }
        stores.push(Arc::new(PgStore::open(opts).await?));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lat_ns = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = stores[(w % chains) as usize].clone();
        let (stop, done, failed, lat_ns) = (stop.clone(), done.clone(), failed.clone(), lat_ns.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = w << 40;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match store.append(&record(n)) {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                    lat_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rows = done.load(Ordering::Relaxed);
    let (mut batches, mut records) = (0, 0);
    for s in &stores {
        let st = s.stats();
        batches += st.batches;
        records += st.records;
    }
    println!(
        "writers={writers} chains={chains} batch_delay_us={delay_us} regroup_yields={regroup:?} seconds={elapsed:.2} rows={rows} failed={} rows/s={:.0} \
         mean_batch={:.1} mean_ack_latency_ms={:.3}",
        failed.load(Ordering::Relaxed),
        rows as f64 / elapsed,
        records as f64 / batches.max(1) as f64,
        lat_ns.load(Ordering::Relaxed) as f64 / rows.max(1) as f64 / 1e6,
    );
    for s in stores {
        if let Ok(s) = Arc::try_unwrap(s) {
            s.close().await;
        }
    }
    let t = Instant::now();
    let report = cordon_audit_pg::verify_with_published(
        &config,
        &cordon_audit_pg::Tls::for_config(&config),
        &schema,
        &[published.path().to_path_buf()],
    )
    .await?;
    println!(
        "verify: {} records in {:.2} s ({:.0} records/s); {} signed checkpoints, {} published",
        report.records,
        t.elapsed().as_secs_f64(),
        report.records as f64 / t.elapsed().as_secs_f64(),
        report.signed,
        report.published
    );
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
