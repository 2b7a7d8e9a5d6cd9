//! Erasable payloads in an immutable log: `cordon audit shred` destroys one subject's data key; their
//! sealed payloads become unreadable, other subjects' stay readable, and verification still passes.

mod common;

use common::*;
use cordon_audit::{Keystore, Payload, Record, load_or_create_master_key, read_records};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_erases_one_subject_and_keeps_the_log_verifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gw = Gateway::start(&data, &[], &[]);
    let alice = token(&data, "alice", "DE");
    let bob = token(&data, "bob", "FR");
    for (t, text) in [(&alice, "alice's secret"), (&bob, "bob's note")] {
        let (status, _, _) = post(&gw.url, "/v1/chat/completions", Some(t), chat("chat-small", text)).await;
        assert_eq!(status, 200);
    }
    drop(gw);

    // Tier 1: the payload is sealed under the subject's key.
    let eu = data.join("audit/EU");
    let sealed: Vec<(String, Payload)> = read_records(&eu)
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Record::Decision(d) => Some((d.subject.unwrap(), d.payload)),
            Record::Completion(_) => None,
        })
        .collect();
    assert_eq!(sealed.len(), 2);
    assert!(sealed.iter().all(|(_, p)| matches!(p, Payload::Encrypted { .. })));
    let keys = data.join("keys");
    let master = load_or_create_master_key(&keys.join("master.key")).unwrap();
    let readable = |ks: &Keystore| -> Vec<bool> {
        sealed
            .iter()
            .map(|(_, p)| ks.open_payload("EU", p).is_ok())
            .collect()
    };
    let before = Keystore::open(&keys, master).unwrap();
    assert_eq!(readable(&before), [true, true]);
    let plain = String::from_utf8(before.open_payload("EU", &sealed[0].1).unwrap()).unwrap();
    assert!(plain.contains("alice's secret"), "{plain}");
    drop(before);

    let dir = data.to_str().unwrap();
    // Subjects are scoped by their issuer: "alice" of another issuer is somebody else.
    let (code, out) = cli(&[
        "audit",
        "shred",
        "--subject",
        "alice",
        "--issuer",
        "another-idp",
        "--jurisdiction",
        "EU",
        "--data-dir",
        dir,
    ]);
    assert_eq!(code, 1, "an erasure that erased nothing is not a success: {out}");
    assert!(out.contains("nothing to shred"), "{out}");
    // Nor is a jurisdiction Cordon does not know.
    let (code, out) = cli(&[
        "audit",
        "shred",
        "--subject",
        "alice",
        "--jurisdiction",
        "XX",
        "--data-dir",
        dir,
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("unknown jurisdiction"), "{out}");
    let untouched = Keystore::open(&keys, master).unwrap();
    assert_eq!(readable(&untouched), [true, true]);
    drop(untouched);

    let (code, out) = cli(&[
        "audit",
        "shred",
        "--subject",
        "alice",
        "--jurisdiction",
        "EU",
        "--data-dir",
        dir,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("shredded"), "{out}");
    assert!(!out.contains("alice"), "the raw subject id is not echoed: {out}");

    let after = Keystore::open(&keys, master).unwrap();
    assert_eq!(readable(&after), [false, true], "alice unreadable, bob readable");
    drop(after);

    // A payload written before subjects were scoped by issuer (sealed under the pseudonym of the
    // raw id alone) is shredded by the same command.
    let pseudonyms = cordon_audit::Pseudonymizer::open(&keys).unwrap();
    let legacy = pseudonyms.existing("EU", "bob").unwrap();
    let old = Keystore::open(&keys, master)
        .unwrap()
        .seal("EU", &legacy, b"bob, long ago")
        .unwrap();
    assert!(
        Keystore::open(&keys, master)
            .unwrap()
            .open_payload("EU", &old)
            .is_ok()
    );
    let (code, out) = cli(&[
        "audit",
        "shred",
        "--subject",
        "bob",
        "--jurisdiction",
        "EU",
        "--data-dir",
        dir,
    ]);
    assert_eq!(code, 0, "{out}");
    let after = Keystore::open(&keys, master).unwrap();
    assert!(
        after.open_payload("EU", &old).is_err(),
        "the legacy payload is unreadable"
    );
    assert_eq!(readable(&after), [false, false], "and so is bob's current one");
    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["audit", "show", "--jurisdiction", "EU", "--data-dir", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chat-small") && out.contains("eu-primary"), "{out}");
}
