//! `cordon policy check`: what is wrong or risky in a policy, each with a location. Errors stop a
//! policy from loading; warnings and notes are printed by `policy check` and at startup.

use std::fmt;

use cordon_types::{Jurisdiction, Region, Tier, TransferMechanism};

use crate::compile::{Policy, Verdict};
use crate::file::{Day, PolicyFile};
use crate::reference::World;
use crate::transfer::PSEUDONYMIZATION_AVAILABLE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where in the policy (`models.chat.endpoints[us-east]`).
    pub at: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(at: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            at: at.into(),
            message: message.into(),
        }
    }
    pub fn warning(at: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            at: at.into(),
            message: message.into(),
        }
    }
    pub fn note(at: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Note,
            at: at.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{s}: {}: {}", self.at, self.message)
    }
}

/// Checks that need only the file and the facts (run during compilation).
pub(crate) fn static_checks(file: &PolicyFile, world: &World, diags: &mut Vec<Diagnostic>) {
    if file.audit.checkpoint_every == Some(0) {
        diags.push(Diagnostic::error(
            "audit.checkpoint_every",
            "must be at least 1 (records per signed checkpoint)",
        ));
    }
    match file.audit.checkpoint_interval_ms {
        Some(0) => diags.push(Diagnostic::error(
            "audit.checkpoint_interval_ms",
            "must be at least 1 ms",
        )),
        Some(ms) if ms > 60_000 => diags.push(Diagnostic::warning(
            "audit.checkpoint_interval_ms",
            format!(
                "records may stay unattested for up to {} s: until a signed checkpoint covers them, whoever can write the store can alter them undetected",
                ms / 1000
            ),
        )),
        _ => {}
    }
    for (i, rule) in file.transfers.iter().enumerate() {
        let at = format!("transfers[{i}] ({}→{})", rule.from, rule.to);
        for j in [rule.from, rule.to] {
            if !world.jurisdictions.contains_key(&j) {
                diags.push(Diagnostic::error(&at, format!("unknown jurisdiction '{j}'")));
            }
        }
        if rule.tiers.is_empty() {
            diags.push(Diagnostic::error(&at, "tiers is empty"));
        }
        match rule.mechanism {
            TransferMechanism::InJurisdiction => {
                diags.push(Diagnostic::error(&at, "in_jurisdiction is not a transfer mechanism"))
            }
            TransferMechanism::Scc if rule.reference.is_none() || rule.expires.is_none() => diags.push(
                Diagnostic::error(&at, "scc needs a reference (contract and TIA) and an expires date"),
            ),
            TransferMechanism::Pseudonymized if !PSEUDONYMIZATION_AVAILABLE => diags.push(Diagnostic::warning(
                &at,
                "pseudonymized transfers need the content scrubber, which this version does not have: the rule never permits (fails closed)",
            )),
            TransferMechanism::Adequacy => {
                let finding = world.adequacy.get(&rule.from).and_then(|m| m.get(&rule.to));
                match finding {
                    None => diags.push(Diagnostic::error(
                        &at,
                        format!("{}'s regime has no adequacy finding for {} in the reference data", rule.from, rule.to),
                    )),
                    Some(a) if !a.verified => diags.push(Diagnostic::note(
                        &at,
                        "relies on an adequacy fact marked unverified in the reference data",
                    )),
                    Some(_) => {}
                }
            }
            _ => {}
        }
        if world.is_localized(rule.from) && rule.reference.is_none() {
            diags.push(Diagnostic::error(
                &at,
                format!(
                    "{} is localized: a transfer out needs the regulator's approval named in `reference`",
                    rule.from
                ),
            ));
        }
    }
    // Audit stores and replicas must sit inside the jurisdiction they serve (or an adequate one).
    for (j, store) in &file.audit.stores {
        let at = format!("audit.stores.{j}");
        if !world.jurisdictions.contains_key(j) {
            diags.push(Diagnostic::error(&at, format!("unknown jurisdiction '{j}'")));
            continue;
        }
        if store.path.is_some() == store.postgres.is_some() {
            diags.push(Diagnostic::error(
                &at,
                "give exactly one of path (a directory) and postgres (a URL)",
            ));
        }
        if store.postgres.is_some() && store.replica.is_some() {
            diags.push(Diagnostic::error(
                &at,
                "replica is for directory stores; replicate PostgreSQL with the database's own tools",
            ));
        }
        if store.path.is_some() && (store.publish.is_some() || store.checkpoint_key.is_some()) {
            diags.push(Diagnostic::error(
                &at,
                "publish and checkpoint_key are for PostgreSQL stores; a directory store publishes its checkpoints to its replica",
            ));
        }
        if store.path.is_some() && store.replica.is_none() && !file.gateway.development {
            diags.push(Diagnostic::warning(
                &at,
                "no replica: the store's signed checkpoints and close markers stay on this disk, so whoever can rewrite it can also rewrite them, and tampering is not evident from outside",
            ));
        }
        if store.postgres.is_some() && store.publish.is_none() {
            diags.push(Diagnostic::warning(
                &at,
                "no publish directory: the chain's signed checkpoints stay in the database, so its owner can cut the tail of the log undetected",
            ));
        }
        match &store.region {
            Some(r) => storage_check(world, file, *j, r, &at, "store", diags),
            None if !file.gateway.development => diags.push(Diagnostic::warning(
                &at,
                "no region declared: cannot show the store is in-jurisdiction",
            )),
            None => {}
        }
        if let Some(rep) = &store.replica {
            storage_check(
                world,
                file,
                *j,
                &rep.region,
                &format!("{at}.replica"),
                "replica",
                diags,
            );
        }
    }
    // One primary per replica (and a replica is not itself a store): two writers in one directory
    // would interleave their segments. The replicator's lock refuses it at run time too.
    let mut dirs: std::collections::BTreeMap<&std::path::Path, String> = file
        .audit
        .stores
        .iter()
        .filter_map(|(j, s)| Some((s.path.as_deref()?, format!("audit.stores.{j}.path"))))
        .collect();
    for (j, store) in &file.audit.stores {
        let Some(rep) = &store.replica else { continue };
        let at = format!("audit.stores.{j}.replica");
        match dirs.get(rep.path.as_path()) {
            Some(other) => diags.push(Diagnostic::error(
                &at,
                format!("the same directory as {other}: one primary per replica"),
            )),
            None => {
                dirs.insert(&rep.path, format!("{at}.path"));
            }
        }
    }
    // One store per publish directory: chains are published by id alone, so two stores sharing
    // one would mix their chains (and verifying one would report the other's as its own).
    let mut published: std::collections::BTreeMap<&std::path::Path, Jurisdiction> = Default::default();
    for (j, store) in &file.audit.stores {
        let Some(p) = store.publish.as_deref() else {
            continue;
        };
        if let Some(other) = published.insert(p, *j) {
            diags.push(Diagnostic::error(
                format!("audit.stores.{j}.publish"),
                format!(
                    "the same directory as audit.stores.{other}.publish: one store per publish directory"
                ),
            ));
        }
    }
    if file.gateway.region.is_none() && file.gateway.development {
        diags.push(Diagnostic::note(
            "gateway.region",
            "development instance with no region: condition 3 (where the decision is made) is not judged",
        ));
    }
}

/// A store (or replica) in `region` for jurisdiction `j`: in-jurisdiction, or adequate for j's regime
/// under a policy rule, else an error.
fn storage_check(
    world: &World,
    file: &PolicyFile,
    j: Jurisdiction,
    region: &Region,
    at: &str,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if let Err(why) = storage_permitted(world, file, j, region, what) {
        diags.push(Diagnostic::error(at, why));
    }
}

/// May `j`'s audit records be kept in `region`? Inside `j`, or in a jurisdiction with
/// unconditional adequacy for `j` that the policy's transfer rules name for tier 1 with the
/// `adequacy` mechanism (an SCC rule for prompts says nothing about keeping the audit log there).
/// `Err` says why not, naming the `what` ("store", "replica").
pub(crate) fn storage_permitted(
    world: &World,
    file: &PolicyFile,
    j: Jurisdiction,
    region: &Region,
    what: &str,
) -> Result<(), String> {
    let Some(info) = world.regions.get(region) else {
        return Err(format!("unknown region '{region}'"));
    };
    let dest = world.jurisdiction_of_country(info.country);
    if dest == j {
        return Ok(());
    }
    let adequate = world
        .adequacy
        .get(&j)
        .and_then(|m| m.get(&dest))
        .is_some_and(|a| a.condition.is_none());
    let ruled = file.transfers.iter().any(|r| {
        r.from == j
            && r.to == dest
            && r.tiers.contains(&Tier::Personal)
            && r.mechanism == cordon_types::TransferMechanism::Adequacy
    });
    if adequate && ruled {
        Ok(())
    } else {
        Err(format!(
            "{what} region {region} is in {dest}, outside {j}'s permitted area: audit records would leave {j}"
        ))
    }
}

impl Policy {
    /// Everything `cordon policy check` reports, given today's date.
    pub fn diagnostics(&self, today: Day) -> Vec<Diagnostic> {
        let mut out = self.warnings.clone();
        for (name, op) in &self.file.providers {
            if let Some(d) = op.expires
                && today > d
            {
                out.push(Diagnostic::warning(
                    format!("providers.{name}"),
                    format!(
                        "agreement {} expired on {d}: its endpoints are not permitted",
                        op.dpa.as_deref().unwrap_or("(no dpa)")
                    ),
                ));
            }
        }
        for (i, rule) in self.file.transfers.iter().enumerate() {
            if let Some(d) = rule.expires
                && today > d
            {
                out.push(Diagnostic::warning(
                    format!("transfers[{i}] ({}→{})", rule.from, rule.to),
                    format!(
                        "reference {} expired on {d}",
                        rule.reference.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
        }
        for ep in &self.endpoints {
            for r in &ep.location.regions {
                let unverified = self.world.regions.get(r).is_some_and(|i| !i.verified)
                    || self.world.sets.get(r).is_some_and(|s| !s.verified);
                if unverified {
                    out.push(Diagnostic::note(
                        format!("models.{}.endpoints[{}]", ep.model, ep.id()),
                        format!("{r} is marked unverified in the reference data"),
                    ));
                }
            }
        }
        // `audit.root` stores sit where this gateway runs: a jurisdiction this gateway may serve
        // whose records may not be kept here has no store at all (its requests get 503).
        if let (Some(_), Some(g)) = (&self.file.audit.root, &self.gateway) {
            let homeless: Vec<String> = self
                .world
                .jurisdictions
                .keys()
                .filter(|j| !self.file.audit.stores.contains_key(j))
                .filter(|j| self.gateway_permits(**j, today) && !self.root_store_permitted(**j))
                .map(|j| j.to_string())
                .collect();
            if !homeless.is_empty() {
                out.push(Diagnostic::warning(
                    "audit.root",
                    format!(
                        "root stores are kept where this gateway runs ({}, in {}), which is outside the permitted area of {}: \
                         this gateway may process their subjects but has nowhere to record them, so their requests get 503 \
                         audit_unavailable; add audit.stores entries with a region inside each",
                        g.region,
                        g.jurisdiction,
                        homeless.join(", ")
                    ),
                ));
            }
        }
        if self.file.audit.root.is_some() && !self.file.gateway.development {
            out.push(Diagnostic::warning(
                "audit.root",
                "root stores have no replica: their signed checkpoints and close markers stay on this disk, so \
                 tampering by whoever can rewrite it is not evident from outside; declare audit.stores with a replica",
            ));
        }
        // Parity gaps: a model a served jurisdiction uses, with no permitted endpoint there.
        for j in self.served_jurisdictions() {
            for (mi, model) in self.models.iter().enumerate() {
                let Some(verdicts) = self.table.get(&(mi, j, Tier::Personal)) else {
                    continue;
                };
                let any = verdicts.iter().any(|v| match v {
                    Verdict::Permitted { valid_until, .. } => valid_until.is_none_or(|d| today <= d),
                    Verdict::Refused { .. } => false,
                });
                if !any {
                    out.push(Diagnostic::warning(
                        format!("models.{}", model.name),
                        format!("parity gap: no endpoint permitted for {j} at tier 1 (requests from {j} are refused)"),
                    ));
                }
            }
        }
        out.sort_by_key(|d| d.severity);
        out
    }

    /// May an `audit.root` store hold `j`'s records? Root stores live on the gateway's own disk,
    /// so only if the gateway's region is a permitted storage place for `j` (always, on a
    /// development instance, which declares no region). When not, `j` has no root store: its
    /// allowed requests fail closed (503 `audit_unavailable`) and its refusals are recorded,
    /// without subject, in the gateway's own jurisdiction's store.
    pub fn root_store_permitted(&self, j: Jurisdiction) -> bool {
        match &self.gateway {
            None => true,
            Some(g) => storage_permitted(&self.world, &self.file, j, &g.region, "store").is_ok(),
        }
    }

    /// Does condition 3 let this gateway process `j`'s subjects at some tier today?
    fn gateway_permits(&self, j: Jurisdiction, today: Day) -> bool {
        [Tier::Personal, Tier::Derived, Tier::NotPersonal].iter().any(|t| {
            matches!(self.gateway_table.get(&(j, *t)), Some(Ok(p)) if p.valid_until.is_none_or(|d| today <= d))
        })
    }

    /// Jurisdictions this gateway serves: those with an explicit audit store or an API key, and on a
    /// development instance with an audit root, every jurisdiction some endpoint processes in.
    pub fn served_jurisdictions(&self) -> Vec<Jurisdiction> {
        let mut js: std::collections::BTreeSet<Jurisdiction> =
            self.file.audit.stores.keys().copied().collect();
        js.extend(self.file.identity.api_keys.iter().map(|k| k.jurisdiction));
        if self.file.audit.root.is_some() {
            for ep in &self.endpoints {
                if let Some(ejs) = &ep.location.jurisdictions {
                    js.extend(ejs.iter().copied());
                }
            }
        }
        js.into_iter().collect()
    }
}
