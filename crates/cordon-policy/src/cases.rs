//! `cordon policy test CASES`: a table of expected decisions, checked against a policy. A case names
//! a residency (country or jurisdiction), a model and a tier, and expects `allow` (optionally with
//! the endpoint, mechanism and processing regions) or a refusal code.

use serde::Deserialize;

use crate::compile::Policy;
use crate::decide::{Decision, Request};
use crate::file::Day;
use cordon_types::Tier;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The date the cases are judged on (default: today).
    #[serde(default)]
    pub today: Option<Day>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    /// A country (`DE`) or a jurisdiction (`EU`).
    pub residency: String,
    pub model: String,
    #[serde(default = "one")]
    pub tier: Tier,
    /// `allow` or a refusal code (`no_permitted_endpoint`, ...).
    pub expect: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub mechanism: Option<String>,
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

fn one() -> Tier {
    Tier::Personal
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    /// What the policy decided, in the same words as `expect`.
    pub got: String,
    pub expected: String,
}

impl Case {
    fn label(&self, i: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("#{} {} {} tier {}", i + 1, self.residency, self.model, self.tier))
    }
}

/// Run every case; pure given `today`.
pub fn run_cases(policy: &Policy, file: &CaseFile, today: Day) -> Vec<CaseResult> {
    let today = file.today.unwrap_or(today);
    file.cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let mut expected = case.expect.clone();
            for (k, v) in [("endpoint", &case.endpoint), ("mechanism", &case.mechanism)] {
                if let Some(v) = v {
                    expected.push_str(&format!(" {k}={v}"));
                }
            }
            if let Some(r) = &case.regions {
                expected.push_str(&format!(" regions={}", r.join(",")));
            }
            let Some((jurisdiction, _)) = policy.resolve_residency(&case.residency) else {
                return CaseResult {
                    name: case.label(i),
                    passed: case.expect == "unknown_residency",
                    got: "unknown_residency".into(),
                    expected,
                };
            };
            let d = policy.decide_simple(&Request {
                jurisdiction,
                model: &case.model,
                tier: case.tier,
                today,
            });
            let (got, passed) = match d {
                Decision::Allow(a) => {
                    let c = &a.candidates[0];
                    let ep = &policy.endpoints[c.endpoint];
                    let regions: Vec<String> = ep.location.regions.iter().map(|r| r.to_string()).collect();
                    let got = format!(
                        "allow endpoint={} mechanism={} regions={}",
                        ep.id(),
                        c.mechanism,
                        regions.join(",")
                    );
                    let passed = case.expect == "allow"
                        && case.endpoint.as_deref().is_none_or(|e| e == ep.id())
                        && case
                            .mechanism
                            .as_deref()
                            .is_none_or(|m| m == c.mechanism.as_str())
                        && case.regions.as_ref().is_none_or(|r| *r == regions);
                    (got, passed)
                }
                Decision::Refuse(r) => (r.code.as_str().to_string(), case.expect == r.code.as_str()),
            };
            CaseResult {
                name: case.label(i),
                passed,
                got,
                expected,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Overrides;
    use crate::quickstart::QUICKSTART_YAML;

    #[test]
    fn quickstart_cases_pass_and_a_wrong_expectation_fails() {
        let p = Policy::from_yaml(QUICKSTART_YAML, "quickstart", &Overrides::default()).unwrap();
        let cases: CaseFile = serde_saphyr::from_str(
            r#"
today: 2026-11-25
cases:
  - { residency: DE, model: chat-small, expect: allow, endpoint: eu-primary, mechanism: in_jurisdiction, regions: [aws:eu-central-1] }
  - { residency: US, model: chat-small, expect: allow, endpoint: us-east }
  - { residency: DE, model: chat-large, expect: no_permitted_endpoint }
  - { residency: CN, model: chat-small, expect: no_permitted_endpoint }
  - { residency: DE, model: chat-large, tier: 3, expect: allow, mechanism: not_personal }
  - { residency: DE, model: chat-small, expect: allow, endpoint: us-east }
"#,
        )
        .unwrap();
        let today: Day = "2026-11-25".parse().unwrap();
        let results = run_cases(&p, &cases, today);
        let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, true, true, true, true, false], "{results:#?}");
        assert!(results[5].got.contains("eu-primary"));
    }
}
