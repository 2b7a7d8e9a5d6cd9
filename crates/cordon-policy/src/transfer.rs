//! Is a transfer from the subject's jurisdiction to one destination jurisdiction lawful under this
//! policy, and by which mechanism? The one place that reads `transfers` rules, adequacy findings,
//! localisation and the processor register together.

use cordon_types::{Jurisdiction, Tier, TransferMechanism};

use crate::file::{Day, OperatorSpec, PolicyFile, TransferRule};
use crate::reference::World;

/// A mechanism found for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    pub mechanism: TransferMechanism,
    pub reference: Option<String>,
    /// Last day the permit holds (a rule's `expires`), if it expires.
    pub valid_until: Option<Day>,
}

/// Who receives the data at the destination: an endpoint's operator, or the gateway itself.
#[derive(Clone, Copy)]
pub enum Recipient<'a> {
    Operator(Option<&'a OperatorSpec>),
    /// The gateway sees the raw prompt, so pseudonymization cannot help and conditional adequacy
    /// (which depends on a processor's certification) is not assumed.
    Gateway,
}

/// Whether this build can pseudonymize content before it leaves the jurisdiction. It cannot yet
/// (the scrubber is a later issue), so a `pseudonymized` rule never permits a transfer: fail closed.
pub const PSEUDONYMIZATION_AVAILABLE: bool = false;

/// The mechanism permitting (subject → dest) at `tier`, or why none does.
pub fn permit(
    world: &World,
    file: &PolicyFile,
    subject: Jurisdiction,
    dest: Jurisdiction,
    tier: Tier,
    recipient: Recipient<'_>,
) -> Result<Permit, String> {
    if subject == dest {
        return Ok(Permit {
            mechanism: TransferMechanism::InJurisdiction,
            reference: None,
            valid_until: None,
        });
    }
    let localized = world.is_localized(subject);
    let mut why_not: Vec<String> = Vec::new();
    let mut best: Option<Permit> = None;
    // Tier 2 goes where the policy says, "by default, as tier 1": while no rule out of `subject`
    // lists tier 2, tier 2 follows the tier-1 rules.
    let rule_tier = if tier == Tier::Derived && !has_rules_for_tier(file, subject, tier) {
        Tier::Personal
    } else {
        tier
    };
    let rules = file
        .transfers
        .iter()
        .filter(|r| r.from == subject && r.to == dest && r.tiers.contains(&rule_tier));
    for rule in rules {
        match rule_permit(world, rule, tier, localized, recipient) {
            Ok(p) => {
                // Prefer the permit that lasts longest (None = no expiry), then file order: if the
                // longest-lived one has expired, so has every other.
                let better = match (&best, &p.valid_until) {
                    (None, _) => true,
                    (Some(b), mine) => match (b.valid_until, mine) {
                        (Some(_), None) => true,
                        (Some(a), Some(m)) => *m > a,
                        _ => false,
                    },
                };
                if better {
                    best = Some(p);
                }
            }
            Err(e) => why_not.push(e),
        }
    }
    if let Some(p) = best {
        return Ok(p);
    }
    // Tier 3 carries no personal data: by default it may go anywhere.
    if tier == Tier::NotPersonal && !has_rules_for_tier(file, subject, tier) {
        return Ok(Permit {
            mechanism: TransferMechanism::NotPersonal,
            reference: None,
            valid_until: None,
        });
    }
    if why_not.is_empty() {
        if localized {
            return Err(format!(
                "{subject} is localized: only in-jurisdiction processing unless a rule names an approval"
            ));
        }
        return Err(format!("no transfer rule {subject}→{dest} for tier {tier}"));
    }
    Err(why_not.join("; "))
}

/// Whether the policy has explicit rules for `tier` out of `subject` (tier 3: then they restrict
/// it; tier 2: then it no longer follows tier 1).
fn has_rules_for_tier(file: &PolicyFile, subject: Jurisdiction, tier: Tier) -> bool {
    file.transfers
        .iter()
        .any(|r| r.from == subject && r.tiers.contains(&tier))
}

fn rule_permit(
    world: &World,
    rule: &TransferRule,
    tier: Tier,
    localized: bool,
    recipient: Recipient<'_>,
) -> Result<Permit, String> {
    let (from, to) = (rule.from, rule.to);
    if localized && rule.reference.is_none() {
        return Err(format!(
            "{from} is localized: a rule to {to} must name the regulator's approval (reference)"
        ));
    }
    let ok = |mechanism| Permit {
        mechanism,
        reference: rule.reference.clone(),
        valid_until: rule.expires,
    };
    match rule.mechanism {
        TransferMechanism::InJurisdiction => Err(format!(
            "rule {from}→{to}: in_jurisdiction is not a transfer mechanism"
        )),
        TransferMechanism::NotPersonal if tier == Tier::NotPersonal => Ok(ok(TransferMechanism::NotPersonal)),
        TransferMechanism::NotPersonal => {
            Err(format!("rule {from}→{to}: not_personal applies to tier 3 only"))
        }
        TransferMechanism::Scc => match (&rule.reference, rule.expires) {
            (Some(_), Some(_)) => Ok(ok(TransferMechanism::Scc)),
            _ => Err(format!(
                "rule {from}→{to}: scc needs a reference and an expires date"
            )),
        },
        TransferMechanism::Pseudonymized if matches!(recipient, Recipient::Gateway) => Err(format!(
            "rule {from}→{to}: the gateway itself sees the raw prompt, so pseudonymization cannot cover it"
        )),
        TransferMechanism::Pseudonymized if !PSEUDONYMIZATION_AVAILABLE => Err(format!(
            "rule {from}→{to}: pseudonymized transfer needs the content scrubber, which this version lacks (fails closed)"
        )),
        TransferMechanism::Pseudonymized => Ok(ok(TransferMechanism::Pseudonymized)),
        TransferMechanism::Adequacy => {
            let finding = adequacy_finding(world, from, to).ok_or_else(|| {
                format!("rule {from}→{to}: {from}'s regime has no adequacy finding for {to}")
            })?;
            if let Some(condition) = &finding.condition {
                let Some((_, attestation, met)) =
                    CONDITION_ATTESTATIONS.iter().find(|(d, _, _)| *d == to.as_str())
                else {
                    return Err(format!(
                        "adequacy {from}→{to} is conditional ({condition}) and a policy cannot attest that an operator meets it: use another mechanism"
                    ));
                };
                let attested = matches!(recipient, Recipient::Operator(Some(op)) if met(op));
                if !attested {
                    return Err(format!(
                        "adequacy {from}→{to} is conditional ({condition}) and the operator is not marked {attestation}"
                    ));
                }
            }
            Ok(ok(TransferMechanism::Adequacy))
        }
    }
}

/// Conditional adequacy a policy can attest per operator: `(destination, the operator flag, how to
/// read it)`. The EU-US Data Privacy Framework (and its UK and Swiss extensions) covers certified
/// US organisations: `dpf_certified`. Other conditions (PIPEDA for Canada, APPI for Japan, PIPA for
/// Korea) have no attestation here, so conditional adequacy to those destinations is never
/// counted (a DPF certification says nothing about them); a policy uses another mechanism.
type OperatorFlag = fn(&OperatorSpec) -> bool;
const CONDITION_ATTESTATIONS: &[(&str, &str, OperatorFlag)] =
    &[("US", "dpf_certified", |op| op.dpf_certified)];

fn adequacy_finding(
    world: &World,
    regime: Jurisdiction,
    dest: Jurisdiction,
) -> Option<&crate::reference::Adequacy> {
    world.adequacy.get(&regime)?.get(&dest)
}
