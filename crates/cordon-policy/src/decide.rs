//! The residency decision: a pure function from values to a value.
//!
//! Inputs: the subject's jurisdiction, the model, the tier, endpoint health, today's date, and an
//! optional filter that may only *remove* candidates (so "never across a border" holds by
//! construction: nothing outside the compiled table can be added). The gateway's own region is part
//! of the compiled policy.

use cordon_types::{Jurisdiction, ReasonCode, Tier, TransferMechanism};

use crate::compile::{Endpoint, Policy, Verdict};
use crate::file::Day;

/// What is being asked.
pub struct Request<'a> {
    pub jurisdiction: Jurisdiction,
    pub model: &'a str,
    pub tier: Tier,
    /// Today (UTC), for `expires` dates.
    pub today: Day,
}

/// One permitted endpoint, in failover order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub endpoint: usize,
    pub mechanism: TransferMechanism,
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Permitted and healthy endpoints, priority order; the first is tried first. Failover may only
    /// walk this list.
    pub candidates: Vec<Candidate>,
    /// A short why per endpoint of the model.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ReasonCode,
    pub message: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Refuse(Refusal),
}

impl Decision {
    pub fn refusal(code: ReasonCode, message: impl Into<String>) -> Decision {
        Decision::Refuse(Refusal {
            code,
            message: message.into(),
            reasons: Vec::new(),
        })
    }
}

/// The tier a request runs at: the identity's, or a stricter one the caller declared.
pub fn effective_tier(identity: Tier, declared: Option<Tier>) -> Result<Tier, Refusal> {
    match declared {
        None => Ok(identity),
        Some(d) if d.is_stricter_or_equal(identity) => Ok(d),
        Some(d) => Err(Refusal {
            code: ReasonCode::LooserTierRequested,
            message: format!(
                "x-cordon-tier {d} is looser than this identity's tier {identity}; a caller may only declare a stricter tier"
            ),
            reasons: Vec::new(),
        }),
    }
}

impl Policy {
    /// Decide with every endpoint healthy and no extra filter.
    pub fn decide_simple(&self, req: &Request<'_>) -> Decision {
        self.decide(req, |_| true, |_| None)
    }

    /// The decision. `healthy(endpoint index)` reports passive health; `remove(endpoint)` may return
    /// a reason to drop a permitted candidate (a policy hook, or "this provider does not speak this
    /// API"); it can never add one.
    pub fn decide(
        &self,
        req: &Request<'_>,
        healthy: impl Fn(usize) -> bool,
        remove: impl Fn(&Endpoint) -> Option<String>,
    ) -> Decision {
        // Condition 3 first: a gateway that may not process this subject's data at all says so
        // whatever the model (and tells an out-of-jurisdiction caller nothing about its models).
        if let Some(g) = &self.gateway {
            let verdict = self.gateway_table.get(&(req.jurisdiction, req.tier));
            let ok = matches!(verdict, Some(Ok(p)) if p.valid_until.is_none_or(|d| req.today <= d));
            if !ok {
                let mut message = format!(
                    "this gateway runs in {} ({}), which is not permitted for jurisdiction {} (tier {})",
                    g.region, g.jurisdiction, req.jurisdiction, req.tier
                );
                if let Some(url) = self.file.gateway.regional_gateways.get(&req.jurisdiction) {
                    message.push_str(&format!("; use the {} gateway at {url}", req.jurisdiction));
                }
                let reasons = match verdict {
                    Some(Err(e)) => vec![e.clone()],
                    _ => Vec::new(),
                };
                return Decision::Refuse(Refusal {
                    code: ReasonCode::GatewayOutOfJurisdiction,
                    message,
                    reasons,
                });
            }
        }
        let Some(&mi) = self.model_index.get(req.model) else {
            return Decision::refusal(
                ReasonCode::ModelNotFound,
                format!("model '{}' is not served by this gateway", req.model),
            );
        };
        let model = &self.models[mi];
        let Some(verdicts) = self.table.get(&(mi, req.jurisdiction, req.tier)) else {
            return Decision::refusal(
                ReasonCode::UnknownResidency,
                format!("jurisdiction {} is not known to this policy", req.jurisdiction),
            );
        };

        let mut reasons = Vec::with_capacity(verdicts.len());
        let mut permitted: Vec<Candidate> = Vec::with_capacity(verdicts.len());
        let mut unhealthy: Vec<&str> = Vec::new();
        for (&ei, verdict) in model.endpoints.iter().zip(verdicts) {
            let ep = &self.endpoints[ei];
            match verdict {
                Verdict::Permitted {
                    valid_until: Some(d), ..
                } if req.today > *d => {
                    reasons.push(format!("{}: permit expired on {d}", ep.id()));
                }
                Verdict::Permitted {
                    mechanism,
                    reference,
                    why,
                    ..
                } => {
                    if let Some(r) = remove(ep) {
                        reasons.push(format!("{}: removed: {r}", ep.id()));
                    } else if !healthy(ei) {
                        reasons.push(format!("{why}; currently unavailable"));
                        unhealthy.push(ep.id());
                    } else {
                        reasons.push(why.clone());
                        permitted.push(Candidate {
                            endpoint: ei,
                            mechanism: *mechanism,
                            reference: reference.clone(),
                        });
                    }
                }
                Verdict::Refused { why } => reasons.push(why.clone()),
            }
        }
        if !permitted.is_empty() {
            return Decision::Allow(Allow {
                candidates: permitted,
                reasons,
            });
        }
        if !unhealthy.is_empty() {
            return Decision::Refuse(Refusal {
                code: ReasonCode::AllPermittedEndpointsUnavailable,
                message: format!(
                    "every endpoint of model '{}' permitted for jurisdiction {} (tier {}) is unavailable ({}); Cordon does not fail over across a border",
                    model.name,
                    req.jurisdiction,
                    req.tier,
                    unhealthy.join(", ")
                ),
                reasons,
            });
        }
        let served_in: Vec<String> = model
            .endpoints
            .iter()
            .map(|&e| self.endpoints[e].location.region_list())
            .collect();
        Decision::Refuse(Refusal {
            code: ReasonCode::NoPermittedEndpoint,
            message: format!(
                "model '{}' has no endpoint in a region permitted for jurisdiction {} (tier {}); it is served in {} only",
                model.name,
                req.jurisdiction,
                req.tier,
                served_in.join(", ")
            ),
            reasons,
        })
    }
}
