//! `cordon audit verify | show | prove | shred`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use cordon_audit::{Record, VerifyOptions, read_records, verify_store_with};
use cordon_gateway::audit_set::{AuditSet, StoreKey, UNAUTHENTICATED_STORE};
use cordon_policy::Policy;

use crate::DataDir;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Verify every audit store of the policy: framing, checksums, the hash chain, the Merkle tree
    /// against every signed checkpoint (local and published to the DR replica), and that every
    /// decision sits in its subject's jurisdiction's store. Exit 1 on any failure, naming where.
    Verify {
        #[command(flatten)]
        at: Where,
        /// Verify only this store: a directory or a `postgres://…?schema=…` URL.
        #[arg(long)]
        store: Option<String>,
        /// With --store: also check it against the checkpoints published in this directory (a
        /// PostgreSQL store's `publish`, a directory store's replica). Repeatable.
        #[arg(long, requires = "store")]
        published: Vec<PathBuf>,
    },
    /// Prove a record's inclusion under the newest signed checkpoint, or the consistency of two
    /// checkpoints; prints a JSON bundle that verifies offline with the store's public key.
    Prove {
        #[command(flatten)]
        at: Where,
        /// Jurisdiction (e.g. EU), or `_unauthenticated`.
        #[arg(long)]
        jurisdiction: String,
        /// The record index to prove ...
        #[arg(long, conflicts_with_all = ["decision_id", "consistency"])]
        index: Option<u64>,
        /// ... or the decision id (the `x-cordon-decision-id` of a request) ...
        #[arg(long, conflicts_with = "consistency")]
        decision_id: Option<String>,
        /// ... or two checkpoint sizes OLD NEW.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
        consistency: Option<Vec<u64>>,
        /// PostgreSQL stores: the chain (gateway replica). Default: this gateway's.
        #[arg(long)]
        chain: Option<String>,
    },
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
        /// PostgreSQL stores: the chain (gateway replica) to show. Default: this gateway's.
        #[arg(long)]
        chain: Option<String>,
    },
    /// Create (idempotently) the PostgreSQL audit schema, its append-only triggers and the writer
    /// role (INSERT/SELECT only). Connect as an administrator; the gateway then connects with
    /// `role=cordon_writer` (or as a member of it).
    InitPostgres {
        /// `postgres://admin@host:port/db?schema=…` (the role in `role=` is the writer role to create).
        #[arg(long)]
        store: String,
    },
    /// Write a bundle for a regulator: the selected records with inclusion proofs, the signed
    /// checkpoint and the store's public key. `verify-bundle` checks it offline.
    Export {
        #[command(flatten)]
        at: Where,
        /// Jurisdiction (e.g. EU).
        #[arg(long)]
        jurisdiction: String,
        /// Only this subject (the raw id; it is pseudonymized here, as in the records).
        #[arg(long)]
        subject: Option<String>,
        #[command(flatten)]
        vouched: VouchedBy,
        /// Period start, RFC 3339 (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Period end, RFC 3339 (inclusive).
        #[arg(long)]
        to: Option<String>,
        /// Include decrypted payloads where the subject's key still exists, and each such
        /// subject's data key, with which `verify-bundle` checks the plaintext against the proven
        /// ciphertext. The key also decrypts that subject's other payloads in this jurisdiction
        /// (for whoever holds their records): handle the bundle as the personal data it contains.
        #[arg(long)]
        decrypt: bool,
        /// PostgreSQL stores: the chain (gateway replica) to export; each chain is its own log and
        /// bundle. Default: this gateway's chain.
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an exported bundle offline and print a readable summary: every record is in the
    /// signed log and every decrypted payload is its record's plaintext (not: that no record was
    /// left out). Also checks a proof `prove` printed. Exit 1 if it fails.
    VerifyBundle {
        file: PathBuf,
        /// The store's verifier key obtained separately (else the key inside the bundle is used).
        #[arg(long)]
        vkey: Option<String>,
    },
    /// Erase a subject's audit payloads by destroying their data key. Records and proofs stay
    /// verifiable; the encrypted payloads become unreadable.
    Shred {
        #[command(flatten)]
        at: Where,
        /// The raw subject id (as in the token's subject claim); it is pseudonymized here.
        #[arg(long)]
        subject: String,
        #[command(flatten)]
        vouched: VouchedBy,
        /// The subject's jurisdiction (e.g. EU).
        #[arg(long)]
        jurisdiction: String,
    },
}

/// Who vouches for `--subject`: subjects are scoped by their issuer (see
/// `cordon_identity::Caller::subject_key`).
#[derive(clap::Args)]
pub struct VouchedBy {
    /// The issuer of the subject's tokens (default: the policy's only issuer).
    #[arg(long, conflicts_with = "workload")]
    issuer: Option<String>,
    /// `--subject` is a workload's API key id, not a user.
    #[arg(long)]
    workload: bool,
    /// Export: select by the pseudonym of records written before subjects were scoped by issuer
    /// (the raw id alone). `shred` always destroys both keys.
    #[arg(long)]
    legacy_pseudonym: bool,
}

impl VouchedBy {
    /// The pseudonym input for `subject` under the policy of `w`.
    fn subject_key(&self, w: &Where, subject: &str) -> Result<String> {
        let caller = if self.workload {
            cordon_identity::Caller::Workload {
                key_id: subject.to_string(),
            }
        } else {
            let issuer = match &self.issuer {
                Some(i) => i.clone(),
                None => {
                    let policy = crate::policy_cmd::load(w.config.as_deref())?;
                    match policy.file.identity.issuers.as_slice() {
                        [only] => only.issuer.clone(),
                        [] => bail!(
                            "the policy has no token issuer: give --issuer, or --workload for an API key"
                        ),
                        _ => bail!("the policy has several token issuers: name the subject's with --issuer"),
                    }
                }
            };
            cordon_identity::Caller::User { issuer }
        };
        Ok(caller.subject_key(subject))
    }

    /// What records written before subjects were scoped by issuer were pseudonymized from: the
    /// raw `sub`, or `apikey:<id>` for a workload.
    fn legacy_input(&self, subject: &str) -> String {
        if self.workload {
            format!("apikey:{subject}")
        } else {
            subject.to_string()
        }
    }

    /// The pseudonym input `export --subject` selects by.
    fn export_input(&self, w: &Where, subject: &str) -> Result<String> {
        if self.legacy_pseudonym {
            Ok(self.legacy_input(subject))
        } else {
            self.subject_key(w, subject)
        }
    }
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
        Command::Verify { at, store, published } => verify(&at, store.as_deref(), &published),
        Command::Export {
            at,
            jurisdiction,
            subject,
            vouched,
            from,
            to,
            decrypt,
            chain,
            out,
        } => {
            let subject = subject.map(|s| vouched.export_input(&at, &s)).transpose()?;
            let filter = Filter {
                subject: subject.as_deref(),
                from,
                to,
                decrypt,
            };
            export(&at, &jurisdiction, filter, chain.as_deref(), &out)
        }
        Command::VerifyBundle { file, vkey } => verify_bundle(&file, vkey.as_deref()),
        Command::InitPostgres { store } => init_postgres(&store),
        Command::Prove {
            at,
            jurisdiction,
            index,
            decision_id,
            consistency,
            chain,
        } => prove(
            &at,
            &jurisdiction,
            chain.as_deref(),
            index,
            decision_id.as_deref(),
            consistency.as_deref(),
        ),
        Command::Show {
            at,
            jurisdiction,
            json,
            chain,
        } => show(&at, &jurisdiction, json, chain.as_deref()),
        Command::Shred {
            at,
            subject,
            vouched,
            jurisdiction,
        } => {
            // Both pseudonyms: the scoped one, and the one of records written before scoping.
            let inputs = [
                vouched.subject_key(&at, &subject)?,
                vouched.legacy_input(&subject),
            ];
            shred(&at, &inputs, &jurisdiction)
        }
    }
}

/// One store to verify.
struct StoreRef {
    label: String,
    key: StoreKey,
    /// The jurisdiction every decision in it must belong to (`None`: unauthenticated records).
    expect: Option<String>,
    /// Places holding published checkpoints (the DR replica; a PostgreSQL store's `publish`).
    external: Vec<PathBuf>,
}

/// Every store of the policy. Stores under an audit root are found by listing it.
fn stores(policy: &Policy, data_dir: &std::path::Path) -> Vec<StoreRef> {
    let set = AuditSet::new(data_dir);
    let mut out: BTreeMap<String, StoreRef> = BTreeMap::new();
    for j in policy.file.audit.stores.keys() {
        if let Some(loc) = set.location(policy, *j) {
            let external = loc.replica.iter().chain(loc.publish.iter()).cloned().collect();
            out.insert(
                j.to_string(),
                StoreRef {
                    label: j.to_string(),
                    key: loc.key,
                    expect: Some(j.to_string()),
                    external,
                },
            );
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
                if !e.path().is_dir() || out.contains_key(&name) {
                    continue;
                }
                let expect = (name != UNAUTHENTICATED_STORE).then(|| name.clone());
                out.insert(
                    name.clone(),
                    StoreRef {
                        label: name,
                        key: StoreKey::Dir(e.path()),
                        expect,
                        external: Vec::new(),
                    },
                );
            }
        }
    }
    let unauth = set.unauthenticated_location(policy);
    if let StoreKey::Dir(p) = &unauth.key
        && p.exists()
        && !out.values().any(|s| s.key == unauth.key)
    {
        out.insert(
            UNAUTHENTICATED_STORE.to_string(),
            StoreRef {
                label: UNAUTHENTICATED_STORE.into(),
                key: unauth.key.clone(),
                expect: None,
                external: Vec::new(),
            },
        );
    }
    // A jurisdiction with a pseudonym key has had records written for it: its store is listed
    // even when its directory is gone, so that `verify` reports it missing instead of not seeing it.
    if let Ok(entries) = std::fs::read_dir(data_dir.join("keys")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(j) = name.parse::<cordon_types::Jurisdiction>() else {
                continue;
            };
            if out.contains_key(&name) || !e.path().join(PSEUDONYM_KEY).exists() {
                continue;
            }
            if let Some(loc) = set.location(policy, j) {
                out.insert(
                    name.clone(),
                    StoreRef {
                        label: name.clone(),
                        key: loc.key,
                        expect: Some(name),
                        external: loc.replica.iter().cloned().collect(),
                    },
                );
            }
        }
    }
    out.into_values().collect()
}

/// The per-jurisdiction pseudonym key file (`<data>/keys/<J>/pseudonym.key`): created when the
/// first record about a subject of that jurisdiction is written.
const PSEUDONYM_KEY: &str = "pseudonym.key";

/// Why a store directory that does not exist should: what shows that records were written to it
/// (its DR replica or publication target holds data, or its jurisdiction has a pseudonym key).
fn evidence_of_records(s: &StoreRef, data_dir: &std::path::Path) -> Option<String> {
    for r in &s.external {
        let holds = |p: PathBuf| p.exists();
        if holds(r.join("latest.ckpt")) || holds(r.join("checkpoints")) || holds(r.join("checkpoint.vkey")) {
            return Some(format!("its DR replica {} holds its checkpoints", r.display()));
        }
    }
    let j = s.expect.as_deref()?;
    data_dir
        .join("keys")
        .join(j)
        .join(PSEUDONYM_KEY)
        .exists()
        .then(|| format!("{j} has a pseudonym key (the gateway decided about subjects of {j})"))
}

/// The store of `jurisdiction` under the policy and data dir.
fn find_store(w: &Where, jurisdiction: &str) -> Result<StoreRef> {
    let policy = crate::policy_cmd::load(w.config.as_deref())?;
    match stores(&policy, &w.data.data_dir)
        .into_iter()
        .find(|s| s.label == jurisdiction)
    {
        Some(s) => Ok(s),
        None => bail!("no audit store for '{jurisdiction}' under this policy and data dir"),
    }
}

/// A progress line on stderr for long verifications (only when stderr is a terminal), counting
/// segment bytes (directory stores) or rows (PostgreSQL).
fn progress(label: &str, bytes: bool) -> impl Fn(u64, u64) + '_ {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |done: u64, total: u64| {
        if tty && total > 0 {
            let pct = done.saturating_mul(100) / total;
            match bytes {
                true => eprint!("\r{label}: {pct:>3}% of {} MiB", total >> 20),
                false => eprint!("\r{label}: {pct:>3}% of {total} records"),
            }
            if done >= total {
                eprint!("\r\x1b[K");
            }
        }
    }
}

fn verify(w: &Where, only: Option<&str>, published: &[PathBuf]) -> Result<ExitCode> {
    let policy = crate::policy_cmd::load(w.config.as_deref())?;
    let mut list = stores(&policy, &w.data.data_dir);
    if let Some(only) = only {
        let key = if only.starts_with("postgres://") || only.starts_with("postgresql://") {
            StoreKey::Postgres {
                url: only.to_string(),
                chain: String::new(),
            }
        } else {
            StoreKey::Dir(PathBuf::from(only))
        };
        // A PostgreSQL store is named by its URL (the policy's key also holds this gateway's chain).
        let known = list.iter().position(|s| match (&s.key, &key) {
            (StoreKey::Postgres { url: a, .. }, StoreKey::Postgres { url: b, .. }) => a == b,
            (a, b) => a == b,
        });
        list = match known {
            Some(i) => vec![list.swap_remove(i)],
            None => vec![StoreRef {
                label: only.to_string(),
                key,
                expect: None,
                external: Vec::new(),
            }],
        };
        if let Some(s) = list.first_mut() {
            if only.contains("://") {
                s.label = "postgres".into();
            }
            s.external.extend(published.iter().cloned());
        }
    }
    if list.is_empty() {
        println!("no audit stores found under {}", w.data.data_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for s in &list {
        let outcome = match &s.key {
            StoreKey::Dir(path) => verify_dir(s, path, only.is_none(), &w.data.data_dir),
            StoreKey::Postgres { url, .. } => verify_pg(
                url,
                &s.label,
                s.expect.as_deref().filter(|_| only.is_none()),
                &s.external,
            ),
        };
        match outcome {
            Ok(line) => println!("{:<18} {line}", s.label),
            Err(line) => {
                failed += 1;
                println!("{:<18} FAIL: {line}", s.label);
            }
        }
    }
    if failed > 0 {
        println!("{failed} store(s) failed verification");
        return Ok(ExitCode::from(1));
    }
    println!("all {} store(s) verified", list.len());
    Ok(ExitCode::SUCCESS)
}

fn verify_dir(
    s: &StoreRef,
    path: &std::path::Path,
    check_placement: bool,
    data_dir: &std::path::Path,
) -> Result<String, String> {
    if !path.exists() {
        // A store that never received a record may not exist yet; one that did and is gone has
        // been removed (all its records at once): that is the worst tampering, not a pass.
        // (`check_placement` is off when the store was named on the command line: then a missing
        // directory is simply an error.)
        return match evidence_of_records(s, data_dir) {
            Some(why) => Err(format!(
                "{} is missing, but {why}: the store was removed, or never became writable",
                path.display()
            )),
            None if !check_placement => Err(format!("{}: no such store", path.display())),
            None => Ok(format!("{} (not created yet)", path.display())),
        };
    }
    let show = progress(&s.label, true);
    let opts = VerifyOptions {
        external: s.external.clone(),
        progress: Some(&show),
    };
    let report = verify_store_with(path, &opts).map_err(|e| e.to_string())?;
    if check_placement {
        // Condition 2: every decision in this store belongs to this store's jurisdiction.
        let misplaced = read_records(path)
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|(_, r)| match r {
                // A decision about a (pseudonymous) subject must sit in that subject's store.
                // Records without a subject (authentication failures, refusals of callers this
                // gateway holds no store for) carry nothing about a person and stay with the gateway.
                Record::Decision(d) => d.subject.is_some() && d.data_subject_jurisdiction != s.expect,
                Record::Completion(_) => false,
            })
            .count();
        if misplaced > 0 {
            return Err(format!(
                "{}: {misplaced} decision(s) of another jurisdiction",
                path.display()
            ));
        }
    }
    // The DR replica must be a prefix of this store (same key, same leaves, consistent checkpoints).
    let mut replica_note = String::new();
    for r in &s.external {
        if !r.exists() {
            continue;
        }
        let rep =
            cordon_audit::verify_replica(path, r).map_err(|e| format!("replica {}: {e}", r.display()))?;
        replica_note.push_str(&format!(
            "; replica {} is a verified prefix ({} of {} records, lag {})",
            r.display(),
            rep.replica_records,
            rep.primary_records,
            rep.lag_records
        ));
    }
    // Records after the newest signed checkpoint carry no signature: normal while the store is
    // being written or after a crash, but nothing proves they are not forged.
    let warning = if report.unattested > 0 {
        format!(
            "\n{:<18} warning: records {}..{} are not covered by a signed checkpoint: they cannot be \
             proven unforged (normal only while the store is written, or after a crash; a restart \
             of the gateway signs them)",
            "",
            report.records - report.unattested,
            report.records
        )
    } else {
        String::new()
    };
    Ok(format!(
        "{} ok: {} records ({} decisions, {} completions), {} checkpoints{}, {} unattested, root {}{replica_note}{warning}",
        path.display(),
        report.records,
        report.decisions,
        report.completions,
        report.checkpoints,
        if s.external.is_empty() {
            String::new()
        } else {
            format!(" (published copies checked in {})", s.external.len())
        },
        report.unattested,
        &report.tree_root[..16.min(report.tree_root.len())]
    ))
}

/// `expect`: the jurisdiction every subject's decision in this store must belong to (condition 2,
/// as for directory stores); `None` when the store was named on the command line.
/// Run one PostgreSQL operation of the CLI on a single-threaded runtime.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

fn verify_pg(url: &str, label: &str, expect: Option<&str>, published: &[PathBuf]) -> Result<String, String> {
    let show = progress(label, false);
    let report = block_on(cordon_audit_pg::verify_url_with_progress(
        url,
        published,
        Some(&show),
    ))
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if let Some(j) = expect {
        let misplaced: u64 = report
            .subject_jurisdictions
            .iter()
            .filter(|(k, _)| k.as_str() != j)
            .map(|(_, n)| n)
            .sum();
        if misplaced > 0 {
            return Err(format!(
                "{}: {misplaced} decision(s) of another jurisdiction",
                report.store
            ));
        }
    }
    Ok(report.to_string())
}

fn prove(
    w: &Where,
    jurisdiction: &str,
    chain: Option<&str>,
    index: Option<u64>,
    decision_id: Option<&str>,
    consistency: Option<&[u64]>,
) -> Result<ExitCode> {
    let store = find_store(w, jurisdiction)?;
    let dir = match &store.key {
        StoreKey::Dir(_) if chain.is_some() => bail!("--chain is for PostgreSQL stores"),
        StoreKey::Dir(dir) => dir.clone(),
        StoreKey::Postgres { url, chain: own } => {
            let parsed = cordon_audit_pg::parse_store_url(url)?;
            let chain = chain.or(parsed.chain_id.as_deref()).unwrap_or(own);
            let (config, tls, schema) = (&parsed.config, &parsed.tls, &parsed.schema);
            let target = match (index, decision_id, consistency) {
                (_, _, Some([old, new])) => {
                    let (vkey, b) = block_on(cordon_audit_pg::prove_chain_consistency(
                        config,
                        tls,
                        schema,
                        chain,
                        &store.external,
                        *old,
                        *new,
                    ))??;
                    let out = serde_json::json!({ "verifier_key": vkey, "consistency": b });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    return Ok(ExitCode::SUCCESS);
                }
                (Some(i), _, _) => cordon_audit_pg::ProveTarget::Index(i),
                (None, Some(id), _) => cordon_audit_pg::ProveTarget::Decision(id.to_string()),
                _ => bail!("give --index, --decision-id or --consistency OLD NEW"),
            };
            let (vkey, b) = block_on(cordon_audit_pg::prove_chain_inclusion(
                config,
                tls,
                schema,
                chain,
                &store.external,
                &target,
            ))??;
            let out = serde_json::json!({ "verifier_key": vkey, "inclusion": b });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let json = match (index, decision_id, consistency) {
        (_, _, Some([old, new])) => {
            let b = cordon_audit::prove_consistency(&dir, &store.external, *old, *new)?;
            let vkey = cordon_audit::read_verifier_key(&dir)?;
            cordon_audit::verify_consistency_bundle(&b, &vkey)?;
            serde_json::to_string_pretty(&serde_json::json!({ "verifier_key": vkey, "consistency": b }))?
        }
        (Some(i), _, _) => inclusion(&dir, &store.external, i)?,
        (None, Some(id), _) => {
            let found = read_records(&dir)?.into_iter().find_map(|(i, r)| match r {
                Record::Decision(d) if d.decision_id.to_string() == id => Some(i),
                _ => None,
            });
            let Some(i) = found else {
                bail!("decision {id} is not in the {jurisdiction} store")
            };
            inclusion(&dir, &store.external, i)?
        }
        _ => bail!("give --index, --decision-id or --consistency OLD NEW"),
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

fn inclusion(dir: &std::path::Path, external: &[std::path::PathBuf], index: u64) -> Result<String> {
    let b = cordon_audit::prove_inclusion(dir, external, index)?;
    let vkey = cordon_audit::read_verifier_key(dir)?;
    cordon_audit::verify_inclusion_bundle(&b, &vkey)?;
    let out = serde_json::json!({ "verifier_key": vkey, "inclusion": b });
    Ok(serde_json::to_string_pretty(&out)?)
}

fn show(w: &Where, jurisdiction: &str, json: bool, chain: Option<&str>) -> Result<ExitCode> {
    let store = find_store(w, jurisdiction)?;
    let records = match &store.key {
        StoreKey::Dir(_) if chain.is_some() => bail!("--chain is for PostgreSQL stores"),
        // Verified first, against the published checkpoints too: what is shown is the log.
        StoreKey::Dir(path) => cordon_audit::read_verified_records(
            path,
            &VerifyOptions {
                external: store.external.clone(),
                progress: None,
            },
        )?,
        StoreKey::Postgres { url, chain: own } => {
            let parsed = cordon_audit_pg::parse_store_url(url)?;
            block_on(cordon_audit_pg::read_chain_records(
                &parsed.config,
                &parsed.tls,
                &parsed.schema,
                chain.or(parsed.chain_id.as_deref()).unwrap_or(own),
                &store.external,
            ))??
        }
    };
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

fn init_postgres(url: &str) -> Result<ExitCode> {
    let parsed = cordon_audit_pg::parse_store_url(url)?;
    let role = parsed
        .role
        .clone()
        .unwrap_or_else(|| cordon_audit_pg::WRITER_ROLE.to_string());
    block_on(async {
        let client = cordon_audit_pg::connect(&parsed.config, &parsed.tls).await?;
        cordon_audit_pg::migrate_with_role(&client, &parsed.schema, &role).await?;
        anyhow::Ok(())
    })??;
    println!(
        "audit schema '{}' ready: append-only (triggers), writer role '{role}' may only INSERT and SELECT",
        parsed.schema
    );
    Ok(ExitCode::SUCCESS)
}

fn keystore(w: &Where) -> Result<cordon_audit::Keystore> {
    let keys = w.data.data_dir.join("keys");
    let master = match crate::serve::master_key()? {
        Some(k) => k,
        None => cordon_audit::load_or_create_master_key(&keys.join("master.key"))?,
    };
    Ok(cordon_audit::Keystore::open(&keys, master)?)
}

/// What `audit export` selects.
struct Filter<'a> {
    /// The pseudonym input (`VouchedBy::subject_key`), not the raw id.
    subject: Option<&'a str>,
    from: Option<String>,
    to: Option<String>,
    decrypt: bool,
}

fn export(
    w: &Where,
    jurisdiction: &str,
    f: Filter<'_>,
    chain: Option<&str>,
    out: &std::path::Path,
) -> Result<ExitCode> {
    let store = find_store(w, jurisdiction)?;
    let subject = match f.subject {
        Some(raw) => {
            let p = cordon_audit::Pseudonymizer::open(&w.data.data_dir.join("keys"))?;
            // A lookup: never create a pseudonym key (verify reads one as a sign of records).
            match p.existing(jurisdiction, raw) {
                Some(ps) => Some(ps),
                None => bail!("{jurisdiction} has no pseudonym key: no record there is about any subject"),
            }
        }
        None => None,
    };
    let filter = cordon_audit::bundle::ExportFilter {
        subject,
        from: f.from,
        to: f.to,
        decrypt: f.decrypt,
    };
    let ks = if f.decrypt { Some(keystore(w)?) } else { None };
    let bundle = match &store.key {
        StoreKey::Dir(_) if chain.is_some() => bail!("--chain is for PostgreSQL stores"),
        StoreKey::Dir(dir) => {
            cordon_audit::bundle::export(dir, &store.external, jurisdiction, &filter, ks.as_ref())?
        }
        StoreKey::Postgres { url, chain: own } => {
            let parsed = cordon_audit_pg::parse_store_url(url)?;
            let chain = chain.or(parsed.chain_id.as_deref()).unwrap_or(own);
            block_on(cordon_audit_pg::export_chain(
                &parsed.config,
                &parsed.tls,
                &parsed.schema,
                chain,
                &store.external,
                jurisdiction,
                &filter,
                ks.as_ref(),
            ))??
        }
    };
    cordon_audit::bundle::write_bundle(&bundle, out)?;
    let summary = cordon_audit::bundle::verify_bundle(&bundle)?;
    println!("wrote {}\n{summary}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// A proof printed by `cordon audit prove`: `{"verifier_key": …, "inclusion" | "consistency": …}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PrintedProof {
    verifier_key: String,
    inclusion: Option<cordon_audit::InclusionBundle>,
    consistency: Option<cordon_audit::ConsistencyBundle>,
}

/// Check a proof `cordon audit prove` printed, against `vkey` (else the key it carries). `None`:
/// the file is not such a proof (then it is read as a bundle).
fn verify_printed_proof(file: &std::path::Path, vkey: Option<&str>) -> Option<Result<String, String>> {
    let bytes = std::fs::read(file).ok()?;
    let p: PrintedProof = serde_json::from_slice(&bytes).ok()?;
    let key = vkey.unwrap_or(&p.verifier_key);
    Some(match (&p.inclusion, &p.consistency) {
        (Some(b), None) => cordon_audit::verify_inclusion_bundle(b, key)
            .map(|()| {
                format!(
                    "proof OK: record {} is in the log of {} records under the signed checkpoint",
                    b.index, b.tree_size
                )
            })
            .map_err(|e| e.to_string()),
        (None, Some(b)) => cordon_audit::verify_consistency_bundle(b, key)
            .map(|()| {
                format!(
                    "proof OK: the log at {} records is a prefix of the log at {} records (both checkpoints signed)",
                    b.old_size, b.new_size
                )
            })
            .map_err(|e| e.to_string()),
        _ => Err("a proof holds exactly one of inclusion and consistency".into()),
    })
}

fn verify_bundle(file: &std::path::Path, vkey: Option<&str>) -> Result<ExitCode> {
    if let Some(checked) = verify_printed_proof(file, vkey) {
        return Ok(match checked {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("FAIL: {}: {e}", file.display());
                ExitCode::from(1)
            }
        });
    }
    let bundle = match cordon_audit::bundle::read_bundle(file) {
        Ok(b) => b,
        Err(e) => {
            println!("FAIL: {}: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let result = match vkey {
        Some(k) => cordon_audit::bundle::verify_bundle_with_key(&bundle, k),
        None => cordon_audit::bundle::verify_bundle(&bundle),
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("FAIL: {}: {e}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn shred(w: &Where, inputs: &[String], jurisdiction: &str) -> Result<ExitCode> {
    let keys = w.data.data_dir.join("keys");
    let pseudonyms = cordon_audit::Pseudonymizer::open(&keys)?;
    // A typo must not pass for an erasure: the jurisdiction must be one Cordon knows (from its
    // reference data) or one that has subjects here (a pseudonym key: a policy's own
    // jurisdiction). Neither needs the policy, so an unrelated policy error never blocks it.
    let reference = cordon_policy::reference::World::reference()?.jurisdictions;
    let known = jurisdiction
        .parse::<cordon_types::Jurisdiction>()
        .is_ok_and(|j| reference.contains_key(&j))
        || pseudonyms.existing(jurisdiction, "").is_some();
    if !known {
        let names: Vec<String> = reference.keys().map(|j| j.to_string()).collect();
        bail!(
            "unknown jurisdiction {jurisdiction:?} (known: {})",
            names.join(", ")
        );
    }
    let keystore = keystore(w)?;
    let mut shredded = 0;
    for input in inputs {
        // A lookup: a jurisdiction without a pseudonym key has no subject's payloads to shred.
        let Some(pseudonym) = pseudonyms.existing(jurisdiction, input) else {
            continue;
        };
        if keystore.shred(jurisdiction, &pseudonym)? {
            shredded += 1;
            println!(
                "shredded the data key of {pseudonym} in {jurisdiction}: their audit payloads are now unreadable"
            );
        }
    }
    if shredded == 0 {
        // Exit 1: an erasure request that erased nothing must not look like one that did.
        println!(
            "nothing to shred: no data key for this subject in {jurisdiction} (already shredded, no sealed \
             payload was ever written for them, or another subject id or issuer)"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
