//! The decision's cost on the hot path: a compiled-table lookup plus a walk over the model's endpoints.

use std::hint::black_box;

use cordon_policy::quickstart::QUICKSTART_YAML;
use cordon_policy::{Overrides, Policy, Request};
use cordon_types::Tier;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let p = Policy::from_yaml(QUICKSTART_YAML, "bench", &Overrides::default()).expect("quickstart loads");
    let today = "2026-11-25".parse().expect("date");
    let eu = "EU".parse().expect("jurisdiction");
    c.bench_function("decide/allow_eu_chat", |b| {
        b.iter(|| {
            p.decide_simple(black_box(&Request {
                jurisdiction: eu,
                model: "chat-small",
                tier: Tier::Personal,
                today,
            }))
        })
    });
    c.bench_function("decide/refuse_eu_large", |b| {
        b.iter(|| {
            p.decide_simple(black_box(&Request {
                jurisdiction: eu,
                model: "chat-large",
                tier: Tier::Personal,
                today,
            }))
        })
    });
    c.bench_function("decide/resolve_residency", |b| {
        b.iter(|| p.resolve_residency(black_box("DE")))
    });
    c.bench_function("policy/compile_quickstart", |b| {
        b.iter(|| Policy::from_yaml(black_box(QUICKSTART_YAML), "bench", &Overrides::default()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
