//! Decision tables: regimes, adequacy, contracts, localisation, tiers, health and condition 3.

use cordon_policy::{Day, Decision, Overrides, Policy, PolicyError, Request, effective_tier};
use cordon_types::{ReasonCode, Tier, TransferMechanism};

const MODELS: &str = r#"
providers:
  acme-ai: { dpa: "DPA-2025-031", expires: 2027-01-31, dpf_certified: false }
  certified-ai: { dpa: "DPA-2025-040", dpf_certified: true }
models:
  chat:
    endpoints:
      - { id: eu-fra, provider: echo, operator: acme-ai, regions: [aws:eu-central-1], priority: 1 }
      - { id: eu-dub, provider: echo, operator: acme-ai, regions: [aws:eu-west-1], priority: 2 }
      - { id: us-east, provider: echo, operator: acme-ai, regions: [aws:us-east-1], priority: 1 }
  us-only:
    endpoints:
      - { id: us-east, provider: echo, operator: acme-ai, regions: [aws:us-east-1] }
  us-certified:
    endpoints:
      - { id: us-cert, provider: echo, operator: certified-ai, regions: [aws:us-east-1] }
  eu-profile:
    endpoints:
      - { id: bedrock-eu, provider: echo, operator: acme-ai, regions: [aws:bedrock-eu] }
  global:
    endpoints:
      - { id: anywhere, provider: echo, operator: acme-ai, regions: [azure:global] }
  cn-local:
    endpoints:
      - { id: cn, provider: echo, regions: [aws:cn-north-1] }
      - { id: sg, provider: echo, regions: [aws:ap-southeast-1] }
audit:
  root: audit
"#;

fn policy(extra: &str) -> Policy {
    let text = format!("gateway: {{ development: true }}\n{MODELS}\n{extra}");
    Policy::from_yaml(&text, "test", &Overrides::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

fn decide(p: &Policy, j: &str, model: &str, tier: u8, today: &str) -> Decision {
    p.decide_simple(&Request {
        jurisdiction: j.parse().unwrap(),
        model,
        tier: Tier::try_from(tier).unwrap(),
        today: day(today),
    })
}

/// (endpoint id, mechanism) of the first candidate, or the refusal code.
fn outcome(p: &Policy, d: &Decision) -> Result<(String, TransferMechanism), ReasonCode> {
    match d {
        Decision::Allow(a) => {
            let c = &a.candidates[0];
            Ok((p.endpoints[c.endpoint].id().to_string(), c.mechanism))
        }
        Decision::Refuse(r) => Err(r.code),
    }
}

const TODAY: &str = "2026-11-25";

#[test]
fn in_jurisdiction_routing_by_priority() {
    let p = policy("");
    let d = decide(&p, "EU", "chat", 1, TODAY);
    assert_eq!(
        outcome(&p, &d),
        Ok(("eu-fra".into(), TransferMechanism::InJurisdiction))
    );
    let Decision::Allow(a) = d else { unreachable!() };
    let ids: Vec<_> = a
        .candidates
        .iter()
        .map(|c| p.endpoints[c.endpoint].id())
        .collect();
    assert_eq!(
        ids,
        ["eu-fra", "eu-dub"],
        "failover list holds only EU endpoints, by priority"
    );
    assert_eq!(
        outcome(&p, &decide(&p, "US", "chat", 1, TODAY)),
        Ok(("us-east".into(), TransferMechanism::InJurisdiction))
    );
}

#[test]
fn eu_subject_to_us_refused_without_a_rule() {
    let p = policy("");
    let d = decide(&p, "EU", "us-only", 1, TODAY);
    assert_eq!(outcome(&p, &d), Err(ReasonCode::NoPermittedEndpoint));
    let Decision::Refuse(r) = d else { unreachable!() };
    assert!(r.message.contains("aws:us-east-1"), "{}", r.message);
    assert!(r.message.contains("EU"), "{}", r.message);
}

#[test]
fn uk_subject_in_eu_region_allowed_by_adequacy_rule() {
    let none = policy("");
    assert_eq!(
        outcome(&none, &decide(&none, "UK", "chat", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    let p = policy("transfers:\n  - { from: UK, to: EU, tiers: [1, 2], mechanism: adequacy }\n");
    assert_eq!(
        outcome(&p, &decide(&p, "UK", "chat", 1, TODAY)),
        Ok(("eu-fra".into(), TransferMechanism::Adequacy))
    );
    // Tier 2 is covered by the rule too; tier 1 rule does not leak to the US.
    assert_eq!(
        outcome(&p, &decide(&p, "UK", "us-only", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
}

#[test]
fn tier_2_follows_tier_1_until_the_policy_says_otherwise() {
    // Only tier-1 rules for the UK: tier 2 goes where tier 1 goes ("by default, as tier 1").
    let p = policy("transfers:\n  - { from: UK, to: EU, tiers: [1], mechanism: adequacy }\n");
    assert_eq!(
        outcome(&p, &decide(&p, "UK", "chat", 2, TODAY)),
        Ok(("eu-fra".into(), TransferMechanism::Adequacy))
    );
    // Once a rule out of the UK names tier 2, tier 2 has its own rules only.
    let p = policy(
        "transfers:\n  - { from: UK, to: EU, tiers: [1], mechanism: adequacy }\n  - { from: UK, to: CH, tiers: [2], mechanism: adequacy }\n",
    );
    assert_eq!(
        outcome(&p, &decide(&p, "UK", "chat", 2, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    assert_eq!(
        outcome(&p, &decide(&p, "UK", "chat", 1, TODAY)),
        Ok(("eu-fra".into(), TransferMechanism::Adequacy))
    );
}

#[test]
fn conditional_adequacy_needs_a_certified_operator() {
    let p = policy("transfers:\n  - { from: EU, to: US, tiers: [1], mechanism: adequacy }\n");
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-certified", 1, TODAY)),
        Ok(("us-cert".into(), TransferMechanism::Adequacy))
    );
}

#[test]
fn a_dpf_certification_does_not_meet_other_adequacy_conditions() {
    // EU→CA adequacy covers only PIPEDA recipients; `dpf_certified` says nothing about that.
    let text = "gateway: { development: true }\nproviders:\n  certified-ai: { dpa: D, dpf_certified: true }\n\
                models:\n  ca:\n    endpoints:\n      - { id: ca, provider: echo, operator: certified-ai, regions: [aws:ca-central-1] }\n\
                audit: { root: audit }\ntransfers:\n  - { from: EU, to: CA, tiers: [1], mechanism: adequacy }\n";
    let p = Policy::from_yaml(text, "test", &Overrides::default()).unwrap();
    let d = decide(&p, "EU", "ca", 1, TODAY);
    assert_eq!(outcome(&p, &d), Err(ReasonCode::NoPermittedEndpoint));
    let Decision::Refuse(r) = d else { unreachable!() };
    assert!(
        r.reasons.iter().any(|m| m.contains("conditional")),
        "{:?}",
        r.reasons
    );
}

#[test]
fn an_adequacy_override_keeps_the_reference_conditions() {
    // The policy restates which destinations are adequate for the EU; the US one stays
    // conditional on DPF certification.
    let p = policy(
        "jurisdictions:\n  EU: { adequate: [US, UK, CH] }\ntransfers:\n  - { from: EU, to: US, tiers: [1], mechanism: adequacy }\n",
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-certified", 1, TODAY)),
        Ok(("us-cert".into(), TransferMechanism::Adequacy))
    );
}

#[test]
fn scc_holds_until_it_expires() {
    let p = policy(
        "transfers:\n  - { from: EU, to: US, tiers: [1], mechanism: scc, reference: SCC-1/TIA-1, expires: 2026-12-31 }\n",
    );
    let d = decide(&p, "EU", "us-only", 1, "2026-12-31");
    assert_eq!(outcome(&p, &d), Ok(("us-east".into(), TransferMechanism::Scc)));
    let Decision::Allow(a) = d else { unreachable!() };
    assert_eq!(a.candidates[0].reference.as_deref(), Some("SCC-1/TIA-1"));
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 1, "2027-01-01")),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    // No rule out of the EU names tier 2: it goes where tier 1 goes, until the same day.
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 2, "2026-12-01")),
        Ok(("us-east".into(), TransferMechanism::Scc))
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 2, "2027-01-01")),
        Err(ReasonCode::NoPermittedEndpoint)
    );
}

#[test]
fn scc_without_reference_is_a_policy_error() {
    let text = format!(
        "gateway: {{ development: true }}\n{MODELS}\ntransfers:\n  - {{ from: EU, to: US, tiers: [1], mechanism: scc }}\n"
    );
    let err = Policy::from_yaml(&text, "test", &Overrides::default()).unwrap_err();
    assert!(matches!(err, PolicyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("transfers[0]"), "{err}");
}

#[test]
fn expired_processor_agreement_blocks_its_endpoints() {
    let p = policy("");
    assert!(matches!(
        decide(&p, "EU", "chat", 1, "2027-01-31"),
        Decision::Allow(_)
    ));
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "chat", 1, "2027-02-01")),
        Err(ReasonCode::NoPermittedEndpoint)
    );
}

#[test]
fn pseudonymized_rule_fails_closed_in_this_version() {
    let p = policy(
        "transfers:\n  - { from: EU, to: US, tiers: [1], mechanism: pseudonymized, reference: SCC-2, expires: 2027-06-30 }\n",
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
}

#[test]
fn tier_three_goes_anywhere_by_default() {
    let p = policy("");
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "us-only", 3, TODAY)),
        Ok(("us-east".into(), TransferMechanism::NotPersonal))
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "global", 3, TODAY)),
        Ok(("anywhere".into(), TransferMechanism::NotPersonal))
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "global", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
}

#[test]
fn a_processing_set_is_permitted_only_if_every_region_is() {
    // bedrock-eu includes London (UK) and Zurich (CH).
    let p = policy("");
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "eu-profile", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    let p = policy(
        "transfers:\n  - { from: EU, to: UK, tiers: [1], mechanism: adequacy }\n  - { from: EU, to: CH, tiers: [1], mechanism: adequacy }\n",
    );
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "eu-profile", 1, TODAY)),
        Ok(("bedrock-eu".into(), TransferMechanism::Adequacy))
    );
}

#[test]
fn localized_jurisdiction_stays_home() {
    let p = policy("");
    assert_eq!(
        outcome(&p, &decide(&p, "CN", "cn-local", 1, TODAY)),
        Ok(("cn".into(), TransferMechanism::InJurisdiction))
    );
    assert_eq!(
        outcome(&p, &decide(&p, "CN", "chat", 1, TODAY)),
        Err(ReasonCode::NoPermittedEndpoint)
    );
    // A rule out of CN must name the approval.
    let text = format!(
        "gateway: {{ development: true }}\n{MODELS}\ntransfers:\n  - {{ from: CN, to: EU, tiers: [1], mechanism: scc, expires: 2030-01-01 }}\n"
    );
    let err = Policy::from_yaml(&text, "test", &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("localized"), "{err}");
}

#[test]
fn health_never_fails_over_across_a_border() {
    let p = policy("");
    let req = Request {
        jurisdiction: "EU".parse().unwrap(),
        model: "chat",
        tier: Tier::Personal,
        today: day(TODAY),
    };
    let eu: Vec<usize> = p
        .endpoints
        .iter()
        .filter(|e| e.model == "chat" && e.id().starts_with("eu"))
        .map(|e| e.index)
        .collect();
    let primary_down = p.decide(&req, |i| i != eu[0], |_| None);
    assert_eq!(
        outcome(&p, &primary_down),
        Ok(("eu-dub".into(), TransferMechanism::InJurisdiction))
    );
    let all_down = p.decide(&req, |i| !eu.contains(&i), |_| None);
    assert_eq!(
        outcome(&p, &all_down),
        Err(ReasonCode::AllPermittedEndpointsUnavailable)
    );
}

#[test]
fn a_removal_hook_can_only_remove() {
    let p = policy("");
    let req = Request {
        jurisdiction: "EU".parse().unwrap(),
        model: "chat",
        tier: Tier::Personal,
        today: day(TODAY),
    };
    let d = p.decide(
        &req,
        |_| true,
        |e| (e.id() == "eu-fra").then(|| "hook".to_string()),
    );
    assert_eq!(
        outcome(&p, &d),
        Ok(("eu-dub".into(), TransferMechanism::InJurisdiction))
    );
    let d = p.decide(&req, |_| true, |_| Some("hook".to_string()));
    assert_eq!(outcome(&p, &d), Err(ReasonCode::NoPermittedEndpoint));
}

#[test]
fn gateway_out_of_jurisdiction_names_the_regional_gateway() {
    let text = format!(
        "gateway: {{ region: aws:us-east-1, regional_gateways: {{ EU: 'https://eu.ai.example.com' }} }}\n{MODELS}"
    );
    let p = Policy::from_yaml(&text, "test", &Overrides::default()).unwrap();
    let d = decide(&p, "EU", "chat", 1, TODAY);
    let Decision::Refuse(r) = &d else { panic!("{d:?}") };
    assert_eq!(r.code, ReasonCode::GatewayOutOfJurisdiction);
    assert!(r.message.contains("https://eu.ai.example.com"), "{}", r.message);
    assert!(matches!(decide(&p, "US", "chat", 1, TODAY), Decision::Allow(_)));
    // Condition 3 comes before the model lookup: an out-of-jurisdiction caller learns nothing
    // about which models exist, and is told where to go instead.
    let d = decide(&p, "EU", "no-such-model", 1, TODAY);
    let Decision::Refuse(r) = &d else { panic!("{d:?}") };
    assert_eq!(r.code, ReasonCode::GatewayOutOfJurisdiction);
    let Decision::Refuse(r) = decide(&p, "US", "no-such-model", 1, TODAY) else {
        panic!()
    };
    assert_eq!(r.code, ReasonCode::ModelNotFound);
    // The environment override moves the gateway into the EU.
    let p = Policy::from_yaml(
        &text,
        "test",
        &Overrides {
            gateway_region: Some("aws:eu-central-1".parse().unwrap()),
        },
    )
    .unwrap();
    assert!(matches!(decide(&p, "EU", "chat", 1, TODAY), Decision::Allow(_)));
}

#[test]
fn production_policy_without_region_is_an_error() {
    let err = Policy::from_yaml(MODELS, "test", &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("gateway.region"), "{err}");
}

#[test]
fn unknown_region_is_an_error_with_its_location() {
    let text = "gateway: { development: true }\nmodels:\n  m:\n    endpoints:\n      - { id: x, provider: echo, regions: [aws:eu-centrall-1] }\n";
    let err = Policy::from_yaml(text, "test", &Overrides::default()).unwrap_err();
    let s = err.to_string();
    assert!(
        s.contains("models.m.endpoints[x]") && s.contains("aws:eu-centrall-1"),
        "{s}"
    );
}

#[test]
fn model_not_found_and_unknown_fields() {
    let p = policy("");
    assert_eq!(
        outcome(&p, &decide(&p, "EU", "nope", 1, TODAY)),
        Err(ReasonCode::ModelNotFound)
    );
    let err = Policy::from_yaml(
        "gateway: { development: true, colour: red }\n",
        "test",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Parse { .. }), "{err}");
}

#[test]
fn declared_tier_may_only_be_stricter() {
    assert_eq!(
        effective_tier(Tier::NotPersonal, Some(Tier::Personal)),
        Ok(Tier::Personal)
    );
    assert_eq!(effective_tier(Tier::NotPersonal, None), Ok(Tier::NotPersonal));
    assert_eq!(
        effective_tier(Tier::Personal, Some(Tier::NotPersonal))
            .unwrap_err()
            .code,
        ReasonCode::LooserTierRequested
    );
}

#[test]
fn audit_replica_across_a_border_is_rejected() {
    let ok = "gateway: { region: aws:eu-central-1 }\naudit:\n  stores:\n    EU: { path: /tmp/a, region: aws:eu-west-1, replica: { path: /tmp/b, region: aws:eu-central-1 } }\n";
    assert!(Policy::from_yaml(ok, "t", &Overrides::default()).is_ok());
    let bad = "gateway: { region: aws:eu-central-1 }\naudit:\n  stores:\n    EU: { path: /tmp/a, region: aws:eu-west-1, replica: { path: /tmp/b, region: aws:us-east-1 } }\n";
    let err = Policy::from_yaml(bad, "t", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.stores.EU.replica") && err.contains("us-east-1"),
        "{err}"
    );
}

#[test]
fn an_audit_store_abroad_needs_an_adequacy_rule_not_any_rule() {
    let store = |rule: &str| {
        let yaml = format!(
            "gateway: {{ region: aws:eu-west-2 }}\ntransfers:\n  - {rule}\naudit:\n  stores:\n    \
             UK: {{ path: /tmp/uk, region: aws:eu-central-1 }}\n"
        );
        Policy::from_yaml(&yaml, "t", &Overrides::default()).map_err(|e| e.to_string())
    };
    assert!(store("{ from: UK, to: EU, tiers: [1], mechanism: adequacy }").is_ok());
    let err = store("{ from: UK, to: EU, tiers: [1], mechanism: scc, reference: S, expires: 2020-01-01 }")
        .unwrap_err();
    assert!(
        err.contains("audit.stores.UK") && err.contains("audit records would leave UK"),
        "{err}"
    );
}

#[test]
fn a_replica_directory_serves_one_primary() {
    let policy = |eu_replica: &str, us_path: &str, us_replica: &str| {
        let yaml = format!(
            "gateway: {{ region: aws:eu-central-1 }}\naudit:\n  stores:\n    \
             EU: {{ path: /tmp/a, region: aws:eu-west-1, replica: {{ path: {eu_replica}, region: aws:eu-central-1 }} }}\n    \
             US: {{ path: {us_path}, region: aws:us-east-1, replica: {{ path: {us_replica}, region: aws:us-east-2 }} }}\n"
        );
        Policy::from_yaml(&yaml, "t", &Overrides::default()).map_err(|e| e.to_string())
    };
    assert!(policy("/tmp/r-eu", "/tmp/us", "/tmp/r-us").is_ok());
    let err = policy("/tmp/r", "/tmp/us", "/tmp/r").unwrap_err();
    assert!(
        err.contains("audit.stores.US.replica") && err.contains("one primary per replica"),
        "{err}"
    );
    let err = policy("/tmp/us", "/tmp/us", "/tmp/r-us").unwrap_err();
    assert!(err.contains("audit.stores.US.path"), "{err}");
}

#[test]
fn version_ignores_formatting_but_not_meaning() {
    let a = policy("");
    let b = Policy::from_yaml(
        &format!("# a comment\ngateway:   {{ development: true }}\n{MODELS}"),
        "test",
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(a.version, b.version);
    let c = policy("transfers:\n  - { from: UK, to: EU, tiers: [1], mechanism: adequacy }\n");
    assert_ne!(a.version, c.version);
    assert!(a.version.starts_with("sha256:") && a.version.len() == 71);
}

/// Exhaustive: for every subject jurisdiction, tier and model of the example policies, an allowed
/// candidate recorded as in_jurisdiction really processes only in the subject's jurisdiction, judged
/// independently from the reference region → country → jurisdiction facts.
#[test]
fn in_jurisdiction_claims_hold_for_every_input() {
    let p = policy("transfers:\n  - { from: UK, to: EU, tiers: [1, 2], mechanism: adequacy }\n");
    let world = &p.world;
    let mut checked = 0;
    for &j in world.jurisdictions.keys() {
        for tier in Tier::ALL {
            for m in &p.models {
                let d = p.decide_simple(&Request {
                    jurisdiction: j,
                    model: &m.name,
                    tier,
                    today: day(TODAY),
                });
                if let Decision::Allow(a) = d {
                    for c in &a.candidates {
                        let ep = &p.endpoints[c.endpoint];
                        assert_eq!(ep.model, m.name);
                        if c.mechanism == TransferMechanism::InJurisdiction {
                            for r in &ep.location.regions {
                                let country = world.regions[r].country;
                                assert_eq!(
                                    world.country_jurisdiction.get(&country),
                                    Some(&j),
                                    "{} for {j}",
                                    ep.id()
                                );
                            }
                        }
                        if tier != Tier::NotPersonal {
                            assert_ne!(c.mechanism, TransferMechanism::NotPersonal);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 20, "{checked}");
}

#[test]
fn checkpoint_publication_is_for_postgres_stores_and_its_absence_is_flagged() {
    let policy = |store: &str| {
        let yaml = format!("gateway: {{ region: aws:eu-central-1 }}\naudit:\n  stores:\n    EU: {store}\n");
        Policy::from_yaml(&yaml, "t", &Overrides::default()).map_err(|e| e.to_string())
    };
    let pg = "postgres://gw@db.example/audit?schema=cordon";
    let published = policy(&format!(
        "{{ postgres: \"{pg}\", region: aws:eu-central-1, publish: /mnt/witness/eu }}"
    ))
    .unwrap();
    let flagged = |p: &Policy| {
        p.warnings
            .iter()
            .any(|d| d.at == "audit.stores.EU" && d.message.contains("no publish directory"))
    };
    assert!(!flagged(&published));
    let unpublished = policy(&format!("{{ postgres: \"{pg}\", region: aws:eu-central-1 }}")).unwrap();
    assert!(flagged(&unpublished));
    let shared = format!(
        "gateway: {{ region: aws:eu-central-1 }}\naudit:\n  stores:\n    \
         EU: {{ postgres: \"{pg}\", region: aws:eu-central-1, publish: /mnt/w }}\n    \
         US: {{ postgres: \"{pg}\", region: aws:us-east-1, publish: /mnt/w }}\n"
    );
    let err = Policy::from_yaml(&shared, "t", &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("one store per publish directory"), "{err}");
    let err = policy("{ path: /tmp/a, region: aws:eu-central-1, publish: /mnt/witness/eu }").unwrap_err();
    assert!(
        err.contains("audit.stores.EU") && err.contains("for PostgreSQL stores"),
        "{err}"
    );
}

#[test]
fn checkpoint_cadence_is_policy_and_checked() {
    let policy = |audit: &str| {
        let yaml = format!("gateway: {{ development: true }}\naudit: {{ root: audit, {audit} }}\n");
        Policy::from_yaml(&yaml, "t", &Overrides::default()).map_err(|e| e.to_string())
    };
    let p = policy("checkpoint_every: 64, checkpoint_interval_ms: 250").unwrap();
    assert_eq!(
        (p.file.audit.checkpoint_every, p.file.audit.checkpoint_interval_ms),
        (Some(64), Some(250))
    );
    let err = policy("checkpoint_every: 0").unwrap_err();
    assert!(err.contains("audit.checkpoint_every"), "{err}");
    let err = policy("checkpoint_interval_ms: 0").unwrap_err();
    assert!(err.contains("audit.checkpoint_interval_ms"), "{err}");
    let slow = policy("checkpoint_interval_ms: 600000").unwrap();
    assert!(
        slow.warnings
            .iter()
            .any(|d| d.at == "audit.checkpoint_interval_ms" && d.message.contains("unattested")),
        "{:?}",
        slow.warnings
    );
    let fine = policy("checkpoint_every: 2, checkpoint_interval_ms: 60000").unwrap();
    assert!(!fine.warnings.iter().any(|d| d.at.starts_with("audit.checkpoint")));
}
