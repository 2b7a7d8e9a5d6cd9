//! `cordon audit verify` and `cordon audit show`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use cordon_audit::{Record, read_records, verify_store};
use cordon_gateway::audit_set::{AuditSet, UNAUTHENTICATED_STORE};
use cordon_policy::Policy;

use crate::DataDir;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Verify every audit store of the policy: framing, checksums, the hash chain, and that every
    /// decision sits in its subject's jurisdiction's store. Exit 1 on any failure.
    Verify(Where),
    /// Print the records of one jurisdiction's store: a table for people, or JSON lines.
    Show {
        #[command(flatten)]
        at: Where,
        /// Jurisdiction (e.g. EU), or `_unauthenticated`.
        #[arg(long)]
        jurisdiction: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Erase a subject's audit payloads by destroying their data key. Records and proofs stay
    /// verifiable; the encrypted payloads become unreadable.
    Shred {
        #[command(flatten)]
        at: Where,
        /// The raw subject id (as in the token's subject claim); it is pseudonymized here.
        #[arg(long)]
        subject: String,
        /// The subject's jurisdiction (e.g. EU).
        #[arg(long)]
        jurisdiction: String,
    },
}

#[derive(clap::Args)]
pub struct Where {
    /// Policy file (default: the built-in quickstart policy).
    #[arg(long, env = "CORDON_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDir,
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Verify(w) => verify(&w),
        Command::Show {
            at,
            jurisdiction,
            json,
        } => show(&at, &jurisdiction, json),
        Command::Shred {
            at,
            subject,
            jurisdiction,
        } => shred(&at, &subject, &jurisdiction),
    }
}

/// Every store of the policy: `(label, path, expected jurisdiction)`. Stores under an audit root
/// are found by listing it.
fn stores(policy: &Policy, data_dir: &std::path::Path) -> Vec<(String, PathBuf, Option<String>)> {
    let set = AuditSet::new(data_dir);
    let mut out: BTreeMap<PathBuf, (String, Option<String>)> = BTreeMap::new();
    for j in policy.file.audit.stores.keys() {
        if let Some(loc) = set.location(policy, *j) {
            out.insert(loc.path, (j.to_string(), Some(j.to_string())));
        }
    }
    if let Some(root) = &policy.file.audit.root {
        let root = if root.is_absolute() {
            root.clone()
        } else {
            data_dir.join(root)
        };
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !e.path().is_dir() {
                    continue;
                }
                let expect = (name != UNAUTHENTICATED_STORE).then(|| name.clone());
                out.entry(e.path()).or_insert((name, expect));
            }
        }
    }
    let unauth = set.unauthenticated_location(policy).path;
    if unauth.exists() {
        out.entry(unauth)
            .or_insert((UNAUTHENTICATED_STORE.to_string(), None));
    }
    out.into_iter().map(|(p, (l, e))| (l, p, e)).collect()
}

fn verify(w: &Where) -> Result<ExitCode> {
    let policy = crate::policy_cmd::load(w.config.as_deref())?;
    let stores = stores(&policy, &w.data.data_dir);
    if stores.is_empty() {
        println!("no audit stores found under {}", w.data.data_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for (label, path, expect) in &stores {
        if !path.exists() {
            println!("{label:<18} {:<50} (not created yet)", path.display());
            continue;
        }
        match verify_store(path) {
            Ok(report) => {
                // Condition 2: every decision in this store belongs to this store's jurisdiction.
                let misplaced = read_records(path)?
                    .iter()
                    .filter(|(_, r)| match r {
                        Record::Decision(d) => d.data_subject_jurisdiction != *expect,
                        Record::Completion(_) => false,
                    })
                    .count();
                if misplaced > 0 {
                    failed += 1;
                    println!(
                        "{label:<18} {:<50} FAIL: {misplaced} decision(s) of another jurisdiction",
                        path.display()
                    );
                } else {
                    println!(
                        "{label:<18} {:<50} ok: {} records ({} decisions, {} completions), head {}",
                        path.display(),
                        report.records,
                        report.decisions,
                        report.completions,
                        &report.head_hash[..16.min(report.head_hash.len())]
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("{label:<18} {:<50} FAIL: {e}", path.display());
            }
        }
    }
    if failed > 0 {
        println!("{failed} store(s) failed verification");
        return Ok(ExitCode::from(1));
    }
    println!("all {} store(s) verified", stores.len());
    Ok(ExitCode::SUCCESS)
}

fn show(w: &Where, jurisdiction: &str, json: bool) -> Result<ExitCode> {
    let policy = crate::policy_cmd::load(w.config.as_deref())?;
    let Some((_, path, _)) = stores(&policy, &w.data.data_dir)
        .into_iter()
        .find(|(l, _, _)| l == jurisdiction)
    else {
        bail!("no audit store for '{jurisdiction}' under this policy and data dir");
    };
    let records = read_records(&path)?;
    if json {
        for (_, rec) in records {
            println!("{}", serde_json::to_string(&rec)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<27}  {:<10}  {:<8}  {:<14}  {:<16}  {:<22}  detail",
        "index", "ts", "kind", "outcome", "model", "endpoint", "regions"
    );
    for (i, rec) in records {
        match rec {
            Record::Decision(d) => println!(
                "{i:>6}  {:<27}  {:<10}  {:<8}  {:<14}  {:<16}  {:<22}  {} {}",
                d.ts,
                d.operation,
                match d.outcome {
                    cordon_audit::Outcome::Allowed => "allowed",
                    cordon_audit::Outcome::Refused => "refused",
                },
                d.model.as_deref().unwrap_or("-"),
                d.model_endpoint.as_deref().unwrap_or("-"),
                d.processing_regions.join(","),
                d.reason
                    .as_deref()
                    .or(d.transfer_mechanism.as_deref())
                    .unwrap_or(""),
                d.decision_id,
            ),
            Record::Completion(c) => println!(
                "{i:>6}  {:<27}  {:<10}  {:<8}  {:<14}  {:<16}  {:<22}  {} {}",
                c.ts,
                "completion",
                c.status,
                "",
                c.model_endpoint.as_deref().unwrap_or("-"),
                c.processing_regions.join(","),
                c.error.as_deref().unwrap_or(""),
                c.decision_id,
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn shred(w: &Where, subject: &str, jurisdiction: &str) -> Result<ExitCode> {
    let keys = w.data.data_dir.join("keys");
    let pseudonyms = cordon_audit::Pseudonymizer::open(&keys)?;
    let pseudonym = pseudonyms.subject(jurisdiction, subject)?;
    let master = match crate::serve::master_key()? {
        Some(k) => k,
        None => cordon_audit::load_or_create_master_key(&keys.join("master.key"))?,
    };
    let keystore = cordon_audit::Keystore::open(&keys, master)?;
    if keystore.shred(jurisdiction, &pseudonym)? {
        println!(
            "shredded the data key of {pseudonym} in {jurisdiction}: their audit payloads are now unreadable"
        );
    } else {
        println!("no data key for {pseudonym} in {jurisdiction}: nothing to shred");
    }
    Ok(ExitCode::SUCCESS)
}
