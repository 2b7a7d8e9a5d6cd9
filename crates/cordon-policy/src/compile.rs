//! Turning a [`PolicyFile`] into a [`Policy`]: resolve every endpoint's processing location to
//! regions and jurisdictions, judge every (model, subject jurisdiction, tier) once, and keep the
//! verdicts in a lookup table. The table is the routing truth the decision reads.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use cordon_types::{Country, Jurisdiction, Region, Tier, TransferMechanism};

use crate::check::{Diagnostic, Severity};
use crate::error::PolicyError;
use crate::file::{Day, EndpointSpec, PolicyFile, ProviderKind, TierSpec};
use crate::reference::{JurisdictionInfo, RegionInfo, SetMembers, World};
use crate::transfer::{Permit, Recipient, permit};

/// Where an endpoint may process: the regions (for the record) and the jurisdictions they are in.
#[derive(Debug, Clone)]
pub struct ProcessingLocation {
    /// Concrete regions, or the set names when a set is "anywhere in these countries".
    pub regions: Vec<Region>,
    /// `None` means anywhere the provider operates.
    pub jurisdictions: Option<BTreeSet<Jurisdiction>>,
}

impl ProcessingLocation {
    pub fn region_list(&self) -> String {
        self.regions
            .iter()
            .map(Region::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn jurisdiction_list(&self) -> Vec<String> {
        match &self.jurisdictions {
            Some(js) => js.iter().map(|j| j.to_string()).collect(),
            None => vec!["*".to_string()],
        }
    }
}

/// An upstream endpoint, resolved.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Index into [`Policy::endpoints`]: the key for health state.
    pub index: usize,
    pub model: String,
    pub spec: EndpointSpec,
    pub location: ProcessingLocation,
}

impl Endpoint {
    pub fn id(&self) -> &str {
        &self.spec.id
    }
    pub fn provider(&self) -> ProviderKind {
        self.spec.provider
    }
}

/// The verdict on one endpoint for one (subject jurisdiction, tier).
#[derive(Debug, Clone)]
pub enum Verdict {
    Permitted {
        mechanism: TransferMechanism,
        reference: Option<String>,
        valid_until: Option<Day>,
        why: String,
    },
    Refused {
        why: String,
    },
}

/// A compiled model: endpoints by priority.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// Indices into [`Policy::endpoints`], in priority order (stable for equal priorities).
    pub endpoints: Vec<usize>,
}

/// The gateway's own location (condition 3).
#[derive(Debug, Clone)]
pub struct GatewayLocation {
    pub region: Region,
    pub jurisdiction: Jurisdiction,
}

/// A loaded, validated policy, ready to decide.
#[derive(Debug)]
pub struct Policy {
    pub file: PolicyFile,
    /// `sha256:<hex>` of the canonical form: the policy version stored in every record.
    pub version: String,
    pub world: World,
    pub endpoints: Vec<Endpoint>,
    pub models: Vec<Model>,
    pub(crate) model_index: HashMap<String, usize>,
    /// Where this instance runs; `None` on a development instance.
    pub gateway: Option<GatewayLocation>,
    /// (model, subject jurisdiction, tier) → verdict per endpoint of the model, in priority order.
    pub(crate) table: HashMap<(usize, Jurisdiction, Tier), Vec<Verdict>>,
    /// (subject jurisdiction, tier) → may this gateway process for them?
    pub(crate) gateway_table: HashMap<(Jurisdiction, Tier), Result<Permit, String>>,
    /// Warnings found while compiling (errors abort compilation).
    pub warnings: Vec<Diagnostic>,
}

/// Values that override the file at load time.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `CORDON_GATEWAY_REGION`.
    pub gateway_region: Option<Region>,
}

impl Policy {
    /// Read and compile a policy file.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_yaml(&text, &path.display().to_string(), overrides)
    }

    /// Parse and compile policy text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str, overrides: &Overrides) -> Result<Policy, PolicyError> {
        let file: PolicyFile = serde_saphyr::from_str(text).map_err(|e| PolicyError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Policy::compile(file, origin, overrides)
    }

    /// Validate and compile a parsed policy.
    pub fn compile(mut file: PolicyFile, origin: &str, overrides: &Overrides) -> Result<Policy, PolicyError> {
        if let Some(r) = &overrides.gateway_region {
            file.gateway.region = Some(r.clone());
        }
        let version = crate::version::policy_version(&file);
        let mut diags = Vec::new();
        let world = build_world(&file, &mut diags)?;

        let mut endpoints = Vec::new();
        let mut models = Vec::new();
        let mut model_index = HashMap::new();
        for (name, spec) in &file.models {
            let mut ids = BTreeSet::new();
            let mut idx = Vec::new();
            for ep in &spec.endpoints {
                let at = format!("models.{name}.endpoints[{}]", ep.id);
                if !ids.insert(ep.id.clone()) {
                    diags.push(Diagnostic::error(
                        &at,
                        format!("duplicate endpoint id '{}'", ep.id),
                    ));
                }
                if let Some(op) = &ep.operator
                    && !file.providers.contains_key(op)
                {
                    diags.push(Diagnostic::error(
                        &at,
                        format!("operator '{op}' is not in the providers register"),
                    ));
                }
                if ep.provider != ProviderKind::Echo && ep.url.is_none() {
                    diags.push(Diagnostic::error(
                        &at,
                        "needs a url (only the echo provider has none)",
                    ));
                }
                if ep.provider != ProviderKind::Echo && ep.delay_ms.is_some() {
                    diags.push(Diagnostic::error(&at, "delay_ms is for the echo provider only"));
                }
                if ep.provider == ProviderKind::AzureOpenai && ep.deployment.is_none() {
                    diags.push(Diagnostic::error(&at, "azure_openai needs a deployment"));
                }
                let location = match resolve_location(&world, &ep.regions) {
                    Ok(l) => l,
                    Err(e) => {
                        diags.push(Diagnostic::error(&at, e));
                        continue;
                    }
                };
                idx.push(endpoints.len());
                endpoints.push(Endpoint {
                    index: endpoints.len(),
                    model: name.clone(),
                    spec: ep.clone(),
                    location,
                });
            }
            // Stable sort: equal priorities keep file order.
            idx.sort_by_key(|i| endpoints[*i].spec.priority);
            model_index.insert(name.clone(), models.len());
            models.push(Model {
                name: name.clone(),
                endpoints: idx,
            });
        }

        let gateway = match &file.gateway.region {
            Some(r) => match world.regions.get(r) {
                Some(info) => Some(GatewayLocation {
                    region: r.clone(),
                    jurisdiction: world.jurisdiction_of_country(info.country),
                }),
                None => {
                    diags.push(Diagnostic::error(
                        "gateway.region",
                        format!("unknown region '{r}'"),
                    ));
                    None
                }
            },
            None => {
                if !file.gateway.development {
                    diags.push(Diagnostic::error(
                        "gateway.region",
                        "missing: a production gateway must declare where it runs (or set development: true)",
                    ));
                }
                None
            }
        };

        for t in file.tiers.keys() {
            if Tier::try_from(*t).is_err() {
                diags.push(Diagnostic::error(format!("tiers.{t}"), "tiers are 1, 2 or 3"));
            }
        }
        for k in &file.identity.api_keys {
            if !world.jurisdictions.contains_key(&k.jurisdiction) {
                diags.push(Diagnostic::error(
                    format!("identity.api_keys[{}]", k.id),
                    format!("unknown jurisdiction '{}'", k.jurisdiction),
                ));
            }
        }
        crate::check::static_checks(&file, &world, &mut diags);

        let (errors, warnings): (Vec<_>, Vec<_>) =
            diags.into_iter().partition(|d| d.severity == Severity::Error);
        if !errors.is_empty() {
            return Err(PolicyError::Invalid {
                origin: origin.to_string(),
                errors,
            });
        }

        let mut table = HashMap::new();
        let mut gateway_table = HashMap::new();
        let subjects: Vec<Jurisdiction> = world.jurisdictions.keys().copied().collect();
        for &subject in &subjects {
            for tier in Tier::ALL {
                for (mi, model) in models.iter().enumerate() {
                    let verdicts = model
                        .endpoints
                        .iter()
                        .map(|&e| judge(&world, &file, &endpoints[e], subject, tier))
                        .collect();
                    table.insert((mi, subject, tier), verdicts);
                }
                if let Some(g) = &gateway {
                    gateway_table.insert(
                        (subject, tier),
                        permit(&world, &file, subject, g.jurisdiction, tier, Recipient::Gateway),
                    );
                }
            }
        }

        Ok(Policy {
            file,
            version,
            world,
            endpoints,
            models,
            model_index,
            gateway,
            table,
            gateway_table,
            warnings,
        })
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.model_index.get(name).map(|&i| &self.models[i])
    }

    /// Audit handling for a tier.
    pub fn tier_spec(&self, tier: Tier) -> TierSpec {
        self.file
            .tiers
            .get(&tier.number())
            .copied()
            .unwrap_or_else(|| TierSpec::default_for(tier))
    }

    /// Map a residency claim value (`DE` or `EU`) to a jurisdiction.
    pub fn resolve_residency(&self, value: &str) -> Option<(Jurisdiction, Option<Country>)> {
        self.world.resolve_residency(value)
    }

    /// The jurisdiction a region is in, if the region is known.
    pub fn region_jurisdiction(&self, r: &Region) -> Option<Jurisdiction> {
        self.world
            .regions
            .get(r)
            .map(|i| self.world.jurisdiction_of_country(i.country))
    }
}

/// Judge one endpoint for one (subject, tier), ignoring dates (they are checked at decision time
/// against `valid_until`).
fn judge(world: &World, file: &PolicyFile, ep: &Endpoint, subject: Jurisdiction, tier: Tier) -> Verdict {
    let operator = ep.spec.operator.as_ref().and_then(|o| file.providers.get(o));
    let regions = ep.location.region_list();
    let Some(dests) = &ep.location.jurisdictions else {
        return match permit_anywhere(file, subject, tier) {
            Some(p) => Verdict::Permitted {
                mechanism: p.mechanism,
                reference: p.reference,
                valid_until: p.valid_until,
                why: format!(
                    "{}: permitted anywhere ({regions}) as {}",
                    ep.spec.id, p.mechanism
                ),
            },
            None => Verdict::Refused {
                why: format!(
                    "{}: may process anywhere the provider operates ({regions})",
                    ep.spec.id
                ),
            },
        };
    };
    let mut mechanism = TransferMechanism::InJurisdiction;
    let mut reference = None;
    let mut valid_until: Option<Day> = operator.and_then(|o| o.expires);
    for &dest in dests {
        match permit(world, file, subject, dest, tier, Recipient::Operator(operator)) {
            Ok(p) => {
                if p.mechanism > mechanism {
                    mechanism = p.mechanism;
                    reference = p.reference.clone();
                }
                valid_until = match (valid_until, p.valid_until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Err(e) => {
                return Verdict::Refused {
                    why: format!("{}: {regions} is in {dest}: {e}", ep.spec.id),
                };
            }
        }
    }
    let js: Vec<String> = dests.iter().map(|j| j.to_string()).collect();
    Verdict::Permitted {
        mechanism,
        reference,
        valid_until,
        why: format!(
            "{}: {regions} ({}) permitted as {mechanism}",
            ep.spec.id,
            js.join(",")
        ),
    }
}

/// An endpoint that may process anywhere is permitted only for data that is not personal.
fn permit_anywhere(file: &PolicyFile, subject: Jurisdiction, tier: Tier) -> Option<Permit> {
    let restricted = file
        .transfers
        .iter()
        .any(|r| r.from == subject && r.tiers.contains(&tier));
    (tier == Tier::NotPersonal && !restricted).then_some(Permit {
        mechanism: TransferMechanism::NotPersonal,
        reference: None,
        valid_until: None,
    })
}

/// Resolve the endpoint's `regions` (regions and set names) to a processing location.
pub(crate) fn resolve_location(world: &World, names: &[Region]) -> Result<ProcessingLocation, String> {
    if names.is_empty() {
        return Err("regions is empty: an endpoint must say where it processes".to_string());
    }
    let mut regions = Vec::new();
    let mut js = BTreeSet::new();
    let mut anywhere = false;
    for n in names {
        if let Some(info) = world.regions.get(n) {
            regions.push(n.clone());
            js.insert(world.jurisdiction_of_country(info.country));
        } else if let Some(set) = world.sets.get(n) {
            match &set.members {
                SetMembers::Regions(rs) => {
                    for r in rs {
                        if let Some(info) = world.regions.get(r) {
                            regions.push(r.clone());
                            js.insert(world.jurisdiction_of_country(info.country));
                        }
                    }
                }
                SetMembers::Countries(cs) => {
                    regions.push(n.clone());
                    js.extend(cs.iter().map(|c| world.jurisdiction_of_country(*c)));
                }
                SetMembers::Anywhere => {
                    regions.push(n.clone());
                    anywhere = true;
                }
            }
        } else {
            return Err(format!(
                "unknown region or processing set '{n}' (declare it under `regions:`)"
            ));
        }
    }
    regions.dedup();
    Ok(ProcessingLocation {
        regions,
        jurisdictions: (!anywhere).then_some(js),
    })
}

/// Reference facts plus the policy's own regions and jurisdictions.
fn build_world(file: &PolicyFile, diags: &mut Vec<Diagnostic>) -> Result<World, PolicyError> {
    let mut world = World::reference()?;
    for (id, spec) in &file.jurisdictions {
        let at = format!("jurisdictions.{id}");
        let existing = world.jurisdictions.get(id).cloned();
        let countries = match &spec.countries {
            Some(names) => match world.expand_countries(names) {
                Ok(c) => c,
                Err(e) => {
                    diags.push(Diagnostic::error(&at, e));
                    continue;
                }
            },
            None => existing.as_ref().map(|e| e.countries.clone()).unwrap_or_default(),
        };
        if existing.is_none() && countries.is_empty() {
            diags.push(Diagnostic::error(&at, "a new jurisdiction needs countries"));
            continue;
        }
        let info = JurisdictionInfo {
            name: spec
                .name
                .clone()
                .or(existing.as_ref().map(|e| e.name.clone()))
                .unwrap_or_else(|| id.to_string()),
            regime: existing.as_ref().map(|e| e.regime.clone()).unwrap_or_default(),
            countries,
            localized: spec
                .localized
                .or(existing.as_ref().map(|e| e.localized))
                .unwrap_or(false),
            verified: true,
        };
        if let Err(e) = world.add_jurisdiction(*id, info) {
            diags.push(Diagnostic::error(&at, e));
        }
        if let Some(adequate) = &spec.adequate {
            // The list says which destinations are adequate; what the reference data knows about
            // one of them (a condition such as DPF certification, the date it took effect) still
            // holds: an override must not turn conditional adequacy into unconditional.
            let known = world.adequacy.get(id).cloned().unwrap_or_default();
            let map = adequate
                .iter()
                .map(|d| {
                    let fact = known.get(d).cloned().unwrap_or(crate::reference::Adequacy {
                        since: None,
                        condition: None,
                        verified: true,
                    });
                    (*d, fact)
                })
                .collect();
            world.adequacy.insert(*id, map);
        }
    }
    for (id, spec) in &file.regions {
        world.regions.insert(
            id.clone(),
            RegionInfo {
                country: spec.country,
                city: spec.city.clone(),
                partition: None,
                verified: true,
            },
        );
    }
    Ok(world)
}
