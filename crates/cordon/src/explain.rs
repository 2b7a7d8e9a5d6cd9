//! `cordon explain`: the decision for a model and an identity, with every reason; nothing is sent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use cordon_identity::{Residency, Verifier};
use cordon_policy::{Decision, Request};
use cordon_types::Tier;

use crate::DataDir;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub model: String,
    /// A token (JWT or API key) to verify and take the residency from ...
    #[arg(long, conflicts_with_all = ["country", "jurisdiction"])]
    pub token: Option<String>,
    /// ... or a country ...
    #[arg(long, conflicts_with = "jurisdiction")]
    pub country: Option<String>,
    /// ... or a jurisdiction.
    #[arg(long)]
    pub jurisdiction: Option<String>,
    /// Data tier (default: the identity's; 1 with --country/--jurisdiction).
    #[arg(long)]
    pub tier: Option<Tier>,
    /// Policy file (default: the built-in quickstart policy).
    #[arg(long, env = "CORDON_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataDir,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let policy = crate::policy_cmd::load(a.config.as_deref())?;
    let (residency, identity_tier) = match (&a.token, &a.country, &a.jurisdiction) {
        (Some(t), _, _) => {
            let base = match &a.config {
                Some(c) => c.parent().map(PathBuf::from).unwrap_or_default(),
                None => a.data.data_dir.clone(),
            };
            let verifier = Verifier::new(&policy.file.identity, &base)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let id = rt
                .block_on(verifier.verify(t, now))
                .map_err(|e| anyhow!("token rejected ({}): {e}", e.reason()))?;
            let r = match id.residency {
                Residency::Claim(c) => c,
                Residency::Fixed { jurisdiction, .. } => jurisdiction.to_string(),
            };
            (r, id.tier)
        }
        (None, Some(c), _) => (c.clone(), Tier::Personal),
        (None, None, Some(j)) => (j.clone(), Tier::Personal),
        (None, None, None) => bail!("give --token, --country or --jurisdiction"),
    };
    let Some((jurisdiction, country)) = policy.resolve_residency(&residency) else {
        println!("refuse unknown_residency: '{residency}' is neither a known country nor a jurisdiction");
        return Ok(ExitCode::from(1));
    };
    let tier = match cordon_policy::effective_tier(identity_tier, a.tier) {
        Ok(t) => t,
        Err(r) => {
            println!("refuse {}: {}", r.code, r.message);
            return Ok(ExitCode::from(1));
        }
    };
    let country = country.map(|c| format!(" (country {c})")).unwrap_or_default();
    println!(
        "subject jurisdiction {jurisdiction}{country}, tier {tier}, model {}",
        a.model
    );
    println!("policy {}", policy.version);
    let d = policy.decide_simple(&Request {
        jurisdiction,
        model: &a.model,
        tier,
        today: crate::policy_cmd::today(),
    });
    let (reasons, code) = match &d {
        Decision::Allow(allow) => {
            let c = &allow.candidates[0];
            let ep = &policy.endpoints[c.endpoint];
            println!(
                "allow endpoint {} in {} as {}{}",
                ep.id(),
                ep.location.region_list(),
                c.mechanism,
                c.reference
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            let failover: Vec<&str> = allow.candidates[1..]
                .iter()
                .map(|c| policy.endpoints[c.endpoint].id())
                .collect();
            if !failover.is_empty() {
                println!("failover (permitted only) {}", failover.join(", "));
            }
            (&allow.reasons, ExitCode::SUCCESS)
        }
        Decision::Refuse(r) => {
            println!("refuse {}: {}", r.code, r.message);
            (&r.reasons, ExitCode::from(1))
        }
    };
    for r in reasons {
        println!("  - {r}");
    }
    Ok(code)
}
