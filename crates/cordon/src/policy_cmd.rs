//! `cordon policy check [FILE]` and `cordon policy test CASES`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use cordon_policy::cases::{CaseFile, run_cases};
use cordon_policy::quickstart::{QUICKSTART_ORIGIN, QUICKSTART_YAML};
use cordon_policy::{Day, Policy, Severity};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate a policy and report parity gaps, stores outside their jurisdiction, unknown regions,
    /// expired references and agreements. Exit 1 on errors.
    Check {
        /// Policy file (default: the built-in quickstart policy).
        file: Option<PathBuf>,
    },
    /// Check a table of expected decisions against a policy. Exit 1 on any mismatch.
    Test {
        /// YAML file: `cases: [{ residency: DE, model: chat-small, tier: 1, expect: allow, endpoint: eu-primary }, ...]`.
        cases: PathBuf,
        /// Policy file (default: the built-in quickstart policy).
        #[arg(long, env = "CORDON_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub fn today() -> Day {
    Day(time::OffsetDateTime::now_utc().date())
}

/// Load a policy file, or the quickstart policy, with the environment's overrides (a malformed
/// override is an error here as it is for `serve`: the CLI must judge the policy `serve` runs).
pub fn load(file: Option<&Path>) -> Result<Policy> {
    let overrides = crate::serve::overrides()?;
    Ok(match file {
        Some(p) => Policy::load(p, &overrides)?,
        None => Policy::from_yaml(QUICKSTART_YAML, QUICKSTART_ORIGIN, &overrides)?,
    })
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Check { file } => check(file.as_deref()),
        Command::Test { cases, config } => test(&cases, config.as_deref()),
    }
}

fn check(file: Option<&Path>) -> Result<ExitCode> {
    let policy = match load(file) {
        Ok(p) => p,
        Err(e) => {
            println!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let diags = policy.diagnostics(today());
    let origin = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| QUICKSTART_ORIGIN.to_string());
    println!("policy {origin}");
    println!("version {}", policy.version);
    match &policy.gateway {
        Some(g) => println!(
            "gateway {} in {} ({})",
            policy.file.gateway.id, g.region, g.jurisdiction
        ),
        None => println!(
            "gateway {}: development instance with no region; condition 3 (where the decision is made) is not judged",
            policy.file.gateway.id
        ),
    }
    println!(
        "models {}, endpoints {}",
        policy.models.len(),
        policy.endpoints.len()
    );
    for d in &diags {
        println!("{d}");
    }
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diags.iter().filter(|d| d.severity == Severity::Warning).count();
    println!("{errors} error(s), {warnings} warning(s)");
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn test(cases: &Path, config: Option<&Path>) -> Result<ExitCode> {
    let policy = load(config)?;
    let text = std::fs::read_to_string(cases).with_context(|| format!("reading {}", cases.display()))?;
    let file: CaseFile =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", cases.display()))?;
    let results = run_cases(&policy, &file, today());
    if results.is_empty() {
        println!("{}: no cases: nothing was tested", cases.display());
        return Ok(ExitCode::from(1));
    }
    let mut failed = 0;
    for r in &results {
        if r.passed {
            println!("ok    {}: {}", r.name, r.got);
        } else {
            failed += 1;
            println!("FAIL  {}: expected {}, got {}", r.name, r.expected, r.got);
        }
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
