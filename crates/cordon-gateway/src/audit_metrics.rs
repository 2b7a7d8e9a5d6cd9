//! The audit stores' own figures on `/metrics`, read from each open directory store at scrape
//! time: group commits, records, the `fdatasync` latency of each commit (the "disk's own fsync"
//! that `strict` durability is judged against, measured on the store's file under the real load),
//! and the checkpoint, publication and witness counters that show whether tamper evidence is
//! still leaving the machine. Labelled by store name only (a jurisdiction id, `_unauthenticated`,
//! or a configured directory's name): no subject, no path.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use cordon_audit::{CheckpointStats, CommitSnapshot, FileStore, ReplicaStatus};
use cordon_audit_pg::PgStore;

use crate::audit_set::AuditSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

/// One store's figures at scrape time.
#[derive(Debug)]
struct StoreFigures {
    labels: StoreLabels,
    /// Group commits (an `fdatasync`, or a PostgreSQL `COPY`) and the records they made durable.
    batches: u64,
    records: u64,
    /// Deferred records lost (directory stores), or failed batches (PostgreSQL).
    lost: u64,
    ckpt: CheckpointStats,
    /// Directory stores: the per-commit `fdatasync` histogram.
    fsync: Option<CommitSnapshot>,
}

/// One scrape's worth of figures.
#[derive(Debug)]
struct Snapshot {
    stores: Vec<StoreFigures>,
    /// DR replicas, by the store they copy.
    replicas: Vec<(StoreLabels, ReplicaStatus)>,
}

/// The gauges exposed per DR replica: name, help, and how to read them.
type ReadReplica = fn(&ReplicaStatus) -> i64;
const REPLICA_GAUGES: &[(&str, &str, ReadReplica)] = &[
    (
        "cordon_audit_replica_halted",
        "1 when the DR replica diverged from its store and shipping stopped (an operator must look)",
        |r| i64::from(r.halted),
    ),
    (
        "cordon_audit_replica_lag_bytes",
        "Store segment bytes not yet in the DR replica, as of the replicator's last pass",
        |r| i64::try_from(r.lag_bytes).unwrap_or(i64::MAX),
    ),
    (
        "cordon_audit_replica_records",
        "Whole records in the DR replica",
        |r| i64::try_from(r.replica_records).unwrap_or(i64::MAX),
    ),
    (
        "cordon_audit_replica_failed_passes",
        "Replication passes that failed (I/O, a damaged store, or a halt) since start",
        |r| i64::try_from(r.failed_passes).unwrap_or(i64::MAX),
    ),
];

/// The counters exposed per store: name, help, and how to read it from a snapshot.
type Read = fn(&StoreFigures) -> u64;
const COUNTERS: &[(&str, &str, Read)] = &[
    (
        "cordon_audit_commits",
        "Group commits of the audit store (one fdatasync each; one COPY for PostgreSQL)",
        |f| f.batches,
    ),
    (
        "cordon_audit_records",
        "Records made durable in the audit store",
        |f| f.records,
    ),
    (
        "cordon_audit_records_lost",
        "Deferred (completion) records lost because their batch failed (PostgreSQL: failed batches)",
        |f| f.lost,
    ),
    ("cordon_audit_checkpoints", "Signed checkpoints written", |f| {
        f.ckpt.written
    }),
    (
        "cordon_audit_checkpoint_failures",
        "Checkpoint writes that failed",
        |f| f.ckpt.failures,
    ),
    (
        "cordon_audit_checkpoint_publications",
        "Checkpoints published to an external target (DR replica, PostgreSQL publish directory)",
        |f| f.ckpt.published,
    ),
    (
        "cordon_audit_checkpoint_publish_failures",
        "Checkpoint publications that failed with an I/O error (retried with the next checkpoint)",
        |f| f.ckpt.publish_failures,
    ),
    (
        "cordon_audit_checkpoint_publish_rejected",
        "Checkpoint publications refused by the compare-and-swap (fork attempt or foreign log)",
        |f| f.ckpt.rejected,
    ),
    (
        "cordon_audit_witness_failures",
        "Witness hook runs that failed",
        |f| f.ckpt.witness_failures,
    ),
];

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.replicas.is_empty() {
            for (name, help, read) in REPLICA_GAUGES {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for (labels, status) in &self.replicas {
                    ConstGauge::new(read(status)).encode(family.encode_family(labels)?)?;
                }
            }
        }
        if self.stores.is_empty() {
            return Ok(());
        }
        for (name, help, read) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for f in &self.stores {
                let counter = ConstCounter::new(read(f));
                counter.encode(family.encode_family(&f.labels)?)?;
            }
        }
        if !self.stores.iter().any(|f| f.fsync.is_some()) {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "cordon_audit_fsync_seconds",
            "fdatasync latency of each group commit of the audit store",
            None,
            MetricType::Histogram,
        )?;
        for (labels, commits) in self
            .stores
            .iter()
            .filter_map(|f| Some((&f.labels, f.fsync.as_ref()?)))
        {
            family.encode_family(labels)?.encode_histogram::<StoreLabels>(
                commits.sync_seconds_sum,
                commits.batches,
                &commits.sync_buckets,
                None,
            )?;
        }
        Ok(())
    }
}

fn snapshot(
    stores: &[(String, Arc<FileStore>)],
    pg: &[(String, Arc<PgStore>)],
    replicas: Vec<(String, ReplicaStatus)>,
) -> Snapshot {
    let files = stores.iter().map(|(name, s)| {
        let commits = s.commit_stats();
        StoreFigures {
            labels: StoreLabels { store: name.clone() },
            batches: commits.batches,
            records: commits.records,
            lost: s.deferred_lost(),
            ckpt: s.checkpoint_stats(),
            fsync: Some(commits),
        }
    });
    let pgs = pg.iter().map(|(name, s)| {
        let stats = s.stats();
        StoreFigures {
            labels: StoreLabels { store: name.clone() },
            batches: stats.batches,
            records: stats.records,
            lost: stats.failed_batches,
            ckpt: s.checkpoint_stats(),
            fsync: None,
        }
    });
    Snapshot {
        stores: files.chain(pgs).collect(),
        replicas: replicas
            .into_iter()
            .map(|(store, status)| (StoreLabels { store }, status))
            .collect(),
    }
}

/// Append the audit stores' metric families (OpenMetrics text, without `# EOF`) to `out`.
pub fn encode(audit: &AuditSet, out: &mut String) {
    encode_stores(&audit.file_stores(), &audit.pg_stores(), audit.replication(), out);
}

fn encode_stores(
    stores: &[(String, Arc<FileStore>)],
    pg: &[(String, Arc<PgStore>)],
    replicas: Vec<(String, ReplicaStatus)>,
    out: &mut String,
) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot(stores, pg, replicas)));
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_audit::{AuditStore, StoreOptions};

    #[tokio::test]
    async fn a_store_reports_its_commits_and_fsync_histogram() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(tmp.path(), StoreOptions::default()).unwrap());
        for n in 0..3 {
            let rec = cordon_audit::testing::sample_decision(n);
            store.append(&rec).unwrap().await.unwrap();
        }
        let mut text = String::new();
        encode_stores(&[("EU".to_string(), store.clone())], &[], Vec::new(), &mut text);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        let commits = store.sync_count() as f64;
        assert!(commits >= 1.0);
        assert_eq!(line("cordon_audit_commits_total{store=\"EU\"}"), commits);
        assert_eq!(line("cordon_audit_records_total{store=\"EU\"}"), 3.0);
        assert_eq!(line("cordon_audit_fsync_seconds_count{store=\"EU\"}"), commits);
        assert_eq!(
            line("cordon_audit_fsync_seconds_bucket{le=\"+Inf\",store=\"EU\"}"),
            commits
        );
        assert!(line("cordon_audit_fsync_seconds_sum{store=\"EU\"}") > 0.0);
        assert!(text.contains("# TYPE cordon_audit_fsync_seconds histogram"));
        assert_eq!(
            line("cordon_audit_checkpoint_publish_failures_total{store=\"EU\"}"),
            0.0
        );
    }

    #[test]
    fn no_store_no_families() {
        let mut text = String::new();
        encode_stores(&[], &[], Vec::new(), &mut text);
        assert_eq!(text, "");
    }

    #[test]
    fn a_halted_replica_shows() {
        let status = ReplicaStatus {
            halted: true,
            lag_bytes: 4096,
            replica_records: 7,
            failed_passes: 2,
            ..ReplicaStatus::default()
        };
        let mut text = String::new();
        encode_stores(&[], &[], vec![("EU".into(), status)], &mut text);
        for line in [
            "cordon_audit_replica_halted{store=\"EU\"} 1",
            "cordon_audit_replica_lag_bytes{store=\"EU\"} 4096",
            "cordon_audit_replica_records{store=\"EU\"} 7",
            "cordon_audit_replica_failed_passes{store=\"EU\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
