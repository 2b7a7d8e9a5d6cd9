//! The reference facts Cordon ships as data (`data/*.toml`): which country each cloud region is in,
//! processing sets, which countries form each jurisdiction, and which destinations each regime
//! treats as adequate. Parsed into a [`World`], which a policy may then extend or override.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cordon_types::{Country, Jurisdiction, Region};
use serde::Deserialize;

use crate::error::PolicyError;

const REGIONS_TOML: &str = include_str!("../../../data/regions.toml");
const JURISDICTIONS_TOML: &str = include_str!("../../../data/jurisdictions.toml");
const ADEQUACY_TOML: &str = include_str!("../../../data/adequacy.toml");

/// The reference data compiled into this build, in a fixed order (part of the policy version).
pub(crate) const SHIPPED_DATA: [&str; 3] = [REGIONS_TOML, JURISDICTIONS_TOML, ADEQUACY_TOML];

/// What we know about one region.
#[derive(Debug, Clone)]
pub struct RegionInfo {
    pub country: Country,
    pub city: Option<String>,
    pub partition: Option<String>,
    pub verified: bool,
}

/// A named processing set (`aws:bedrock-eu`, `azure:datazone-eu`).
#[derive(Debug, Clone)]
pub enum SetMembers {
    /// An explicit list of regions.
    Regions(Vec<Region>),
    /// Anywhere in these countries.
    Countries(BTreeSet<Country>),
    /// Anywhere the provider operates.
    Anywhere,
}

#[derive(Debug, Clone)]
pub struct SetInfo {
    pub members: SetMembers,
    pub verified: bool,
}

#[derive(Debug, Clone)]
pub struct JurisdictionInfo {
    pub name: String,
    pub regime: String,
    pub countries: BTreeSet<Country>,
    pub localized: bool,
    pub verified: bool,
}

/// One adequacy finding: `regime` treats `destination` as adequate, maybe on a condition.
#[derive(Debug, Clone)]
pub struct Adequacy {
    pub since: Option<String>,
    /// Adequacy covers only part of the destination (e.g. DPF-certified organisations).
    pub condition: Option<String>,
    pub verified: bool,
}

/// All the facts a decision may rely on.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub regions: HashMap<Region, RegionInfo>,
    pub sets: HashMap<Region, SetInfo>,
    pub groups: HashMap<String, BTreeSet<Country>>,
    pub jurisdictions: BTreeMap<Jurisdiction, JurisdictionInfo>,
    pub country_jurisdiction: HashMap<Country, Jurisdiction>,
    /// regime (jurisdiction id) → destination (jurisdiction id, or country code when the country
    /// belongs to no jurisdiction) → finding.
    pub adequacy: HashMap<Jurisdiction, HashMap<Jurisdiction, Adequacy>>,
}

#[derive(Deserialize)]
struct RawRegion {
    country: Country,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    partition: Option<String>,
    #[serde(default = "yes")]
    verified: bool,
}

#[derive(Deserialize)]
struct RawSet {
    #[serde(default)]
    regions: Option<Vec<Region>>,
    #[serde(default)]
    within: Option<String>,
    #[serde(default = "yes")]
    verified: bool,
}

#[derive(Deserialize)]
struct RawJurisdiction {
    name: String,
    countries: Vec<String>,
    #[serde(default)]
    regime: String,
    #[serde(default)]
    localized: bool,
    #[serde(default = "yes")]
    verified: bool,
}

#[derive(Deserialize)]
struct RawJurisdictions {
    groups: HashMap<String, Vec<String>>,
    jurisdictions: BTreeMap<Jurisdiction, RawJurisdiction>,
}

fn yes() -> bool {
    true
}

fn data_err(file: &str, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::ReferenceData {
        file: file.to_string(),
        message: e.to_string(),
    }
}

impl World {
    /// The facts shipped with this build.
    pub fn reference() -> Result<World, PolicyError> {
        let mut w = World::default();
        w.load_jurisdictions(JURISDICTIONS_TOML)?;
        w.load_regions(REGIONS_TOML)?;
        w.load_adequacy(ADEQUACY_TOML)?;
        Ok(w)
    }

    fn load_jurisdictions(&mut self, text: &str) -> Result<(), PolicyError> {
        let file = "jurisdictions.toml";
        let raw: RawJurisdictions = toml::from_str(text).map_err(|e| data_err(file, e))?;
        // Groups may name other groups (EEA = EU27 + IS, LI, NO): resolve in dependency order.
        let mut pending: Vec<(String, Vec<String>)> = raw.groups.into_iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut still = Vec::new();
            for (name, members) in pending {
                match self.expand_countries(&members) {
                    Ok(set) => {
                        self.groups.insert(name, set);
                    }
                    Err(_) => still.push((name, members)),
                }
            }
            if still.len() == before {
                let names: Vec<_> = still.iter().map(|(n, _)| n.as_str()).collect();
                return Err(data_err(
                    file,
                    format!("groups that cannot be resolved: {}", names.join(", ")),
                ));
            }
            pending = still;
        }
        for (id, j) in raw.jurisdictions {
            let countries = self
                .expand_countries(&j.countries)
                .map_err(|e| data_err(file, e))?;
            self.add_jurisdiction(
                id,
                JurisdictionInfo {
                    name: j.name,
                    regime: j.regime,
                    countries,
                    localized: j.localized,
                    verified: j.verified,
                },
            )
            .map_err(|e| data_err(file, e))?;
        }
        Ok(())
    }

    /// Add (or replace) a jurisdiction; a country may belong to only one.
    pub fn add_jurisdiction(&mut self, id: Jurisdiction, info: JurisdictionInfo) -> Result<(), String> {
        if let Some(old) = self.jurisdictions.get(&id) {
            for c in &old.countries {
                self.country_jurisdiction.remove(c);
            }
        }
        for c in &info.countries {
            if let Some(other) = self.country_jurisdiction.get(c)
                && *other != id
            {
                return Err(format!("country {c} is in both {other} and {id}"));
            }
            self.country_jurisdiction.insert(*c, id);
        }
        self.jurisdictions.insert(id, info);
        Ok(())
    }

    /// Countries named directly, by group (`EU27`), or by jurisdiction id (`US`).
    pub fn expand_countries(&self, names: &[String]) -> Result<BTreeSet<Country>, String> {
        let mut out = BTreeSet::new();
        for n in names {
            if let Some(g) = self.groups.get(n) {
                out.extend(g.iter().copied());
            } else if let Some(j) = n
                .parse::<Jurisdiction>()
                .ok()
                .and_then(|j| self.jurisdictions.get(&j))
            {
                out.extend(j.countries.iter().copied());
            } else {
                out.insert(n.parse::<Country>().map_err(|e| e.to_string())?);
            }
        }
        Ok(out)
    }

    fn load_regions(&mut self, text: &str) -> Result<(), PolicyError> {
        let file = "regions.toml";
        let table: toml::Table = toml::from_str(text).map_err(|e| data_err(file, e))?;
        for (cloud, entries) in table {
            let toml::Value::Table(entries) = entries else {
                return Err(data_err(file, format!("'{cloud}' is not a table")));
            };
            if cloud == "sets" {
                for (name, v) in entries {
                    let set: RawSet = v
                        .try_into()
                        .map_err(|e| data_err(file, format!("set {name}: {e}")))?;
                    let id: Region = name.parse().map_err(|e| data_err(file, e))?;
                    let members = match (set.regions, set.within) {
                        (Some(r), None) => SetMembers::Regions(r),
                        (None, Some(w)) if w == "*" => SetMembers::Anywhere,
                        (None, Some(w)) => SetMembers::Countries(
                            self.expand_countries(&[w])
                                .map_err(|e| data_err(file, format!("set {name}: {e}")))?,
                        ),
                        _ => {
                            return Err(data_err(
                                file,
                                format!("set {name}: give exactly one of regions, within"),
                            ));
                        }
                    };
                    self.sets.insert(
                        id,
                        SetInfo {
                            members,
                            verified: set.verified,
                        },
                    );
                }
                continue;
            }
            for (name, v) in entries {
                let r: RawRegion = v
                    .try_into()
                    .map_err(|e| data_err(file, format!("{cloud}:{name}: {e}")))?;
                let id: Region = format!("{cloud}:{name}").parse().map_err(|e| data_err(file, e))?;
                self.regions.insert(
                    id,
                    RegionInfo {
                        country: r.country,
                        city: r.city,
                        partition: r.partition,
                        verified: r.verified,
                    },
                );
            }
        }
        // A set's explicit regions must all be known.
        for (id, s) in &self.sets {
            if let SetMembers::Regions(rs) = &s.members
                && let Some(bad) = rs.iter().find(|r| !self.regions.contains_key(*r))
            {
                return Err(data_err(file, format!("set {id} names unknown region {bad}")));
            }
        }
        Ok(())
    }

    fn load_adequacy(&mut self, text: &str) -> Result<(), PolicyError> {
        let file = "adequacy.toml";
        let table: toml::Table = toml::from_str(text).map_err(|e| data_err(file, e))?;
        for (regime, entries) in table {
            let regime: Jurisdiction = regime.parse().map_err(|e| data_err(file, e))?;
            let toml::Value::Table(entries) = entries else {
                continue;
            };
            let mut map = HashMap::new();
            for (dest, v) in entries {
                // Scalars (source, note, verified) describe the regime; tables are destinations.
                let toml::Value::Table(t) = v else { continue };
                let dest: Jurisdiction = dest.parse().map_err(|e| data_err(file, e))?;
                let get_str = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
                let since = t.get("since").map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                map.insert(
                    dest,
                    Adequacy {
                        since,
                        condition: get_str("condition"),
                        verified: t.get("verified").and_then(|v| v.as_bool()).unwrap_or(true),
                    },
                );
            }
            self.adequacy.insert(regime, map);
        }
        Ok(())
    }

    /// The jurisdiction a country belongs to; a country in none is its own (`AD` → `AD`).
    pub fn jurisdiction_of_country(&self, c: Country) -> Jurisdiction {
        match self.country_jurisdiction.get(&c) {
            Some(j) => *j,
            // Two capital letters always parse as a jurisdiction id.
            None => c.as_str().parse().unwrap_or_else(|_| unreachable_jurisdiction()),
        }
    }

    /// Resolve a residency value: a country (`DE`) first, else a jurisdiction id (`EU`).
    pub fn resolve_residency(&self, value: &str) -> Option<(Jurisdiction, Option<Country>)> {
        let v = value.trim();
        if let Ok(c) = v.to_ascii_uppercase().parse::<Country>()
            && let Some(j) = self.country_jurisdiction.get(&c)
        {
            return Some((*j, Some(c)));
        }
        let j: Jurisdiction = v.to_ascii_uppercase().parse().ok()?;
        self.jurisdictions.contains_key(&j).then_some((j, None))
    }

    pub fn is_localized(&self, j: Jurisdiction) -> bool {
        self.jurisdictions.get(&j).is_some_and(|i| i.localized)
    }
}

fn unreachable_jurisdiction() -> Jurisdiction {
    // `Country` is two ASCII capitals, which is always a valid jurisdiction id; keep a total function.
    match "XX".parse() {
        Ok(j) => j,
        Err(_) => unreachable!("XX is a valid jurisdiction id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jurisdiction {
        s.parse().unwrap()
    }

    #[test]
    fn reference_data_loads_and_maps_countries() {
        let w = World::reference().unwrap();
        assert_eq!(
            w.resolve_residency("DE"),
            Some((j("EU"), Some("DE".parse().unwrap())))
        );
        assert_eq!(
            w.resolve_residency("NO"),
            Some((j("EU"), Some("NO".parse().unwrap())))
        );
        assert_eq!(w.resolve_residency("GB").map(|x| x.0), Some(j("UK")));
        assert_eq!(w.resolve_residency("EU"), Some((j("EU"), None)));
        assert_eq!(w.resolve_residency("UK"), Some((j("UK"), None)));
        assert_eq!(w.resolve_residency("ZZ"), None);
        assert!(w.is_localized(j("CN")));
        let r: Region = "aws:eu-central-1".parse().unwrap();
        assert_eq!(w.regions[&r].country.as_str(), "DE");
        assert!(w.adequacy[&j("EU")][&j("UK")].condition.is_none());
        assert!(w.adequacy[&j("EU")][&j("US")].condition.is_some());
        let eu_set: Region = "azure:datazone-eu".parse().unwrap();
        assert!(matches!(w.sets[&eu_set].members, SetMembers::Countries(ref c) if c.len() == 27));
    }
}
