//! Bundle suite: export from a real store, verify offline in a fresh directory, tampering named;
//! and the fuzz-target bodies over deterministic mutated inputs (stable stand-in for `fuzz/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::record::tests::{sample_completion, sample_decision};
use crate::{AuditStore, FileStore, StoreOptions};

const ALICE: &str = "ps:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "ps:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn opts() -> StoreOptions {
    StoreOptions {
        checkpoint_every: 4,
        ..StoreOptions::default()
    }
}

fn decision(subject: Option<&str>, ts: &str, outcome: Outcome, payload: Payload) -> (Record, uuid::Uuid) {
    let Record::Decision(mut d) = sample_decision(0) else {
        unreachable!()
    };
    d.subject = subject.map(str::to_owned);
    d.ts = ts.into();
    d.outcome = outcome;
    d.payload = payload;
    if outcome == Outcome::Refused {
        d.reason = Some("tier_not_permitted".into());
        d.processing_regions.clear();
    }
    if subject.is_none() {
        d.data_subject_jurisdiction = None;
    }
    let id = d.decision_id;
    (Record::Decision(d), id)
}

fn completion(id: uuid::Uuid, ts: &str, region: &str) -> Record {
    let Record::Completion(mut c) = sample_completion() else {
        unreachable!()
    };
    c.decision_id = id;
    c.ts = ts.into();
    c.processing_regions = vec![region.into()];
    Record::Completion(c)
}

struct Fixture {
    _root: tempfile::TempDir,
    store: PathBuf,
    keys: Keystore,
}

/// Alice: 6 allowed decisions (days 1..6, encrypted payloads) each with a completion. Bob: 2
/// allowed (encrypted, completions in eu-west-1) and 1 refused (digest). One unauthenticated
/// decision. 18 records; the store is closed, so a final checkpoint covers them all.
async fn populate() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let store_dir = root.path().join("EU");
    let keys = Keystore::open(&root.path().join("keys"), [9u8; 32]).unwrap();
    let store = FileStore::open(&store_dir, opts()).unwrap();
    let mut recs = Vec::new();
    for day in 1..=6 {
        let ts = format!("2026-01-0{day}T10:00:00.000000Z");
        let sealed = keys
            .seal("EU", ALICE, format!("alice message {day}").as_bytes())
            .unwrap();
        let (d, id) = decision(Some(ALICE), &ts, Outcome::Allowed, sealed);
        recs.push(d);
        if day == 3 {
            let sealed = keys.seal("EU", BOB, b"bob secret").unwrap();
            let (b, bid) = decision(Some(BOB), &ts, Outcome::Allowed, sealed);
            recs.push(b);
            recs.push(completion(bid, &ts, "eu-west-1"));
            let (r, _) = decision(Some(BOB), &ts, Outcome::Refused, crate::digest(b"x"));
            recs.push(r);
            let (u, _) = decision(None, &ts, Outcome::Refused, Payload::None);
            recs.push(u);
        }
        recs.push(completion(id, &ts, "eu-central-1"));
    }
    let sealed = keys.seal("EU", BOB, &[0xff, 0xfe, 0x00]).unwrap();
    let (b, bid) = decision(Some(BOB), "2026-01-07T10:00:00.000000Z", Outcome::Allowed, sealed);
    recs.push(b);
    recs.push(completion(bid, "2026-01-07T10:00:01.000000Z", "eu-west-1"));
    assert_eq!(recs.len(), 18);
    for r in &recs {
        store.append(r).unwrap().await.unwrap();
    }
    drop(store);
    Fixture {
        _root: root,
        store: store_dir,
        keys,
    }
}

fn filter(subject: Option<&str>) -> ExportFilter {
    ExportFilter {
        subject: subject.map(str::to_owned),
        ..ExportFilter::default()
    }
}

fn tampered_what(r: Result<BundleSummary, BundleError>) -> String {
    match r {
        Err(BundleError::Tampered { what }) => what,
        other => panic!("expected Tampered, got {other:?}"),
    }
}

#[tokio::test]
async fn export_verifies_offline_in_a_fresh_directory() {
    let fx = populate().await;
    let vkey = crate::read_verifier_key(&fx.store).unwrap();
    let bundle = export(&fx.store, &[], "EU", &filter(None), None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let written = out.path().join("eu.bundle.json");
    write_bundle(&bundle, &written).unwrap();
    // Copy it to a fresh directory and remove the store: nothing but the bundle remains.
    let fresh = tempfile::tempdir().unwrap();
    let copy = fresh.path().join("copy.json");
    fs::copy(&written, &copy).unwrap();
    drop(out);
    drop(fx);
    let back = read_bundle(&copy).unwrap();
    assert_eq!(back, bundle);
    let s = verify_bundle(&back).unwrap();
    // Not decrypted: no keys, and the file has no `keys` field at all (the format as before).
    assert!(back.keys.is_empty());
    assert_eq!(s.data_keys, 0);
    let file: Value = serde_json::from_slice(&fs::read(&copy).unwrap()).unwrap();
    assert!(file.get("keys").is_none());
    // Everything but the unauthenticated decision: 17 records.
    assert_eq!((s.records, s.decisions, s.completions), (17, 9, 8));
    assert_eq!((s.allowed, s.refused), (8, 1));
    assert_eq!(s.refused_by_reason.get("tier_not_permitted"), Some(&1));
    assert_eq!(s.checkpoint_size, 18);
    assert_eq!(s.store_records, 18);
    assert_eq!(s.unattested_excluded, 0);
    assert_eq!(s.payloads_encrypted, 8);
    assert_eq!(
        s.processing_regions
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["eu-central-1", "eu-west-1"]
    );
    assert_eq!(s.first_ts.as_deref(), Some("2026-01-01T10:00:00.000000Z"));
    assert_eq!(s.last_ts.as_deref(), Some("2026-01-07T10:00:01.000000Z"));
    assert_eq!(s.vkey, vkey);
    assert!(verify_bundle_with_key(&back, &vkey).is_ok());
    let text = s.to_string();
    for want in [
        "17 records (9 decisions, 8 completions) of jurisdiction EU",
        &s.origin,
        "size 18",
        "8 allowed, 1 refused (tier_not_permitted: 1)",
        "eu-central-1, eu-west-1",
        "2026-01-01T10:00:00.000000Z .. 2026-01-07T10:00:01.000000Z",
        "not decrypted",
    ] {
        assert!(text.contains(want), "summary lacks {want:?}:\n{text}");
    }
    // Each record is the leaf as stored, with its record readable alongside.
    let r0 = &back.records[0];
    let leaf = String::from_utf8(B64.decode(&r0.leaf).unwrap()).unwrap();
    assert!(leaf.starts_with(&format!("{{\"i\":{},\"prev\":\"", r0.index)));
    assert_eq!(r0.record["kind"], "decision");
}

#[tokio::test]
async fn subject_filter_picks_only_that_subject_and_its_completions() {
    let fx = populate().await;
    let b = export(&fx.store, &[], "EU", &filter(Some(BOB)), None).unwrap();
    let s = verify_bundle(&b).unwrap();
    assert_eq!((s.records, s.decisions, s.completions), (5, 3, 2));
    let ids: HashSet<&Value> = b
        .records
        .iter()
        .filter(|r| r.record["kind"] == "decision")
        .map(|r| {
            assert_eq!(r.record["subject"], BOB);
            &r.record["decision_id"]
        })
        .collect();
    for r in b.records.iter().filter(|r| r.record["kind"] == "completion") {
        assert!(ids.contains(&r.record["decision_id"]));
    }
    let a = verify_bundle(&export(&fx.store, &[], "EU", &filter(Some(ALICE)), None).unwrap()).unwrap();
    assert_eq!((a.records, a.decisions, a.completions), (12, 6, 6));
    // Nobody: an empty bundle that still verifies.
    let none = export(&fx.store, &[], "EU", &filter(Some("ps:nobody")), None).unwrap();
    assert_eq!(verify_bundle(&none).unwrap().records, 0);
    // Unauthenticated decisions are exported under their own name; another jurisdiction: none.
    let u = export(&fx.store, &[], UNAUTHENTICATED_JURISDICTION, &filter(None), None).unwrap();
    assert_eq!(verify_bundle(&u).unwrap().records, 1);
    assert_eq!(
        verify_bundle(&export(&fx.store, &[], "US", &filter(None), None).unwrap())
            .unwrap()
            .records,
        0
    );
}

#[tokio::test]
async fn period_filter_is_inclusive_and_validated() {
    let fx = populate().await;
    let f = ExportFilter {
        subject: Some(ALICE.into()),
        from: Some("2026-01-02T10:00:00Z".into()),
        to: Some("2026-01-04T11:00:00+01:00".into()),
        decrypt: false,
    };
    let s = verify_bundle(&export(&fx.store, &[], "EU", &f, None).unwrap()).unwrap();
    assert_eq!((s.decisions, s.completions), (3, 3));
    assert_eq!(s.first_ts.as_deref(), Some("2026-01-02T10:00:00.000000Z"));
    assert_eq!(s.last_ts.as_deref(), Some("2026-01-04T10:00:00.000000Z"));
    for (from, to) in [
        (Some("yesterday"), None),
        (Some("2026-01-05T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
    ] {
        let f = ExportFilter {
            from: from.map(Into::into),
            to: to.map(Into::into),
            ..ExportFilter::default()
        };
        assert!(matches!(
            export(&fx.store, &[], "EU", &f, None),
            Err(BundleError::InvalidFilter(_))
        ));
    }
}

#[tokio::test]
async fn decrypt_gives_plaintext_and_after_shred_the_payload_is_unavailable_but_verifies() {
    let fx = populate().await;
    let f = ExportFilter {
        decrypt: true,
        ..filter(Some(ALICE))
    };
    assert!(matches!(
        export(&fx.store, &[], "EU", &f, None),
        Err(BundleError::InvalidFilter(_))
    ));
    let before = export(&fx.store, &[], "EU", &f, Some(&fx.keys)).unwrap();
    let s = verify_bundle(&before).unwrap();
    assert_eq!(
        (s.payloads_encrypted, s.payloads_decrypted, s.payloads_unavailable),
        (6, 6, 0)
    );
    let plain: Vec<&str> = before
        .records
        .iter()
        .filter_map(|r| match &r.payload {
            Some(PayloadExport::Decrypted { encoding, data }) if encoding == "utf8" => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        plain,
        (1..=6).map(|d| format!("alice message {d}")).collect::<Vec<_>>()
    );
    let text = s.to_string();
    for want in [
        "6 encrypted: 6 decrypted, each verified against its record's ciphertext; 0 unavailable",
        "1 subject key(s) included",
        "handle this bundle as the personal data it contains",
        "and every decrypted payload is its record's plaintext",
        "not proven   that no matching record was left out",
    ] {
        assert!(text.contains(want), "summary lacks {want:?}:\n{text}");
    }
    // Alice's key, and only hers, travels with her decrypted payloads.
    assert_eq!(s.data_keys, 1);
    assert_eq!(
        before
            .keys
            .iter()
            .map(|k| (k.jurisdiction.as_str(), k.key_id.as_str()))
            .collect::<Vec<_>>(),
        [("EU", ALICE)]
    );
    assert_eq!(
        B64.decode(&before.keys[0].key).unwrap(),
        fx.keys.export_data_key("EU", ALICE).unwrap().unwrap().0
    );
    // Completions carry no payload field; the sealed payload stays in the leaf.
    for r in &before.records {
        assert_eq!(r.payload.is_some(), r.record["kind"] == "decision");
        if r.record["kind"] == "decision" {
            assert_eq!(r.record["payload"]["mode"], "encrypted");
        }
    }

    assert!(fx.keys.shred("EU", ALICE).unwrap());
    let after = export(&fx.store, &[], "EU", &f, Some(&fx.keys)).unwrap();
    let s = verify_bundle(&after).unwrap();
    assert_eq!((s.payloads_decrypted, s.payloads_unavailable), (0, 6));
    // Nothing decrypted, so no key: the shredded subject's bundle carries none, and says that the
    // unavailable payloads are not verifiable.
    assert!(after.keys.is_empty());
    assert!(
        !String::from_utf8(serde_json::to_vec(&after).unwrap())
            .unwrap()
            .contains("\"keys\"")
    );
    let text = s.to_string();
    assert!(
        text.contains("6 unavailable (key shredded or missing: not verifiable)"),
        "{text}"
    );
    assert!(!text.contains("data keys"), "{text}");
    for (a, b) in after.records.iter().zip(&before.records) {
        assert_eq!((a.index, &a.leaf, &a.proof), (b.index, &b.leaf, &b.proof));
        if let Some(p) = &a.payload {
            let PayloadExport::Unavailable { reason } = p else {
                panic!("decrypted after shred: {p:?}")
            };
            assert!(reason.contains("shredded"), "{reason}");
            assert!(!reason.contains(ALICE));
        }
    }
    // Bob's key is untouched; his binary payload comes out as base64.
    let bob = export(
        &fx.store,
        &[],
        "EU",
        &ExportFilter {
            decrypt: true,
            ..filter(Some(BOB))
        },
        Some(&fx.keys),
    )
    .unwrap();
    let payloads: Vec<_> = bob.records.iter().filter_map(|r| r.payload.clone()).collect();
    assert_eq!(
        payloads,
        [
            PayloadExport::Decrypted {
                encoding: "utf8".into(),
                data: "bob secret".into()
            },
            PayloadExport::Decrypted {
                encoding: "base64".into(),
                data: B64.encode([0xff, 0xfe, 0x00])
            },
        ]
    );
    assert_eq!(verify_bundle(&bob).unwrap().payloads_decrypted, 2);
}

/// Rewrite the bundle file through `f` (on its JSON), read it back and verify it.
fn tamper(file: &Path, f: impl FnOnce(&mut Value)) -> Result<BundleSummary, BundleError> {
    let mut v: Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
    f(&mut v);
    let changed = file.with_extension("tampered.json");
    fs::write(&changed, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    verify_bundle(&read_bundle(&changed)?)
}

fn edit_b64(s: &mut Value, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = B64.decode(s.as_str().unwrap()).unwrap();
    f(&mut bytes);
    *s = Value::String(B64.encode(bytes));
}

fn edit_str(s: &mut Value, f: impl FnOnce(&str) -> String) {
    let new = f(s.as_str().unwrap());
    assert_ne!(Some(new.as_str()), s.as_str(), "the edit changed nothing");
    *s = Value::String(new);
}

#[tokio::test]
async fn tampering_with_the_bundle_file_is_detected_and_named() {
    let fx = populate().await;
    let bundle = export(
        &fx.store,
        &[],
        "EU",
        &ExportFilter {
            decrypt: true,
            ..filter(Some(BOB))
        },
        Some(&fx.keys),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.json");
    write_bundle(&bundle, &file).unwrap();
    assert!(verify_bundle(&read_bundle(&file).unwrap()).is_ok());
    let idx = |k: usize| bundle.records[k].index;
    let i2 = idx(2);
    let other_key = {
        let other = tempfile::tempdir().unwrap();
        drop(FileStore::open(other.path(), StoreOptions::default()).unwrap());
        crate::read_verifier_key(other.path()).unwrap()
    };
    let sig_b64 = bundle
        .checkpoint
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();

    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "a byte of a leaf (record still well-formed)",
            Box::new(|v| {
                edit_b64(&mut v["records"][3]["leaf"], |b| {
                    let at = b.windows(7).position(|w| w == b"gw-test").unwrap();
                    b[at + 6] = b'T';
                })
            }),
            format!(
                "record {}: inclusion proof does not match checkpoint root",
                idx(3)
            ),
        ),
        (
            "a leaf's framing",
            Box::new(|v| edit_b64(&mut v["records"][0]["leaf"], |b| b[1] = b'x')),
            format!("record {}: leaf is not a record envelope", idx(0)),
        ),
        (
            "a byte of a proof hash",
            Box::new(|v| edit_b64(&mut v["records"][2]["proof"][0], |b| b[5] ^= 0x40)),
            format!(
                "record {}: inclusion proof does not match checkpoint root",
                idx(2)
            ),
        ),
        (
            "a proof hash made malformed",
            Box::new(|v| edit_b64(&mut v["records"][2]["proof"][1], |b| b.truncate(31))),
            format!("record {}: proof hash 1 is not base64 of 32 bytes", idx(2)),
        ),
        (
            "the checkpoint root",
            Box::new(|v| {
                edit_str(&mut v["checkpoint"], |c| {
                    let mut lines: Vec<String> = c.split('\n').map(str::to_owned).collect();
                    let first = lines[2].remove(0);
                    lines[2].insert(0, if first == 'A' { 'B' } else { 'A' });
                    lines.join("\n")
                })
            }),
            "checkpoint: does not verify with the bundled vkey: invalid signature".into(),
        ),
        (
            "the signature",
            Box::new(move |v| {
                edit_str(&mut v["checkpoint"], |c| {
                    let mut sig = B64.decode(&sig_b64).unwrap();
                    sig[20] ^= 1;
                    c.replace(&sig_b64, &B64.encode(sig))
                })
            }),
            "checkpoint: does not verify with the bundled vkey: invalid signature".into(),
        ),
        (
            "a byte of the vkey",
            Box::new(|v| {
                edit_str(&mut v["vkey"], |k| {
                    // name+id+key; the base64 key may itself contain '+'.
                    let mut parts = k.splitn(3, '+');
                    let (name, id, key) = (
                        parts.next().unwrap(),
                        parts.next().unwrap(),
                        parts.next().unwrap(),
                    );
                    let mut raw = B64.decode(key).unwrap();
                    raw[7] ^= 1;
                    format!("{name}+{id}+{}", B64.encode(raw))
                })
            }),
            "vkey: malformed verifier key: key id does not match the key".into(),
        ),
        (
            "the vkey replaced by another store's",
            Box::new(move |v| v["vkey"] = Value::String(other_key)),
            "checkpoint: does not verify with the bundled vkey".into(),
        ),
        (
            "a record removed, counts not fixed",
            Box::new(|v| {
                v["records"].as_array_mut().unwrap().pop();
            }),
            "manifest: counts.records says 5 but the bundle holds 4".into(),
        ),
        (
            "the manifest jurisdiction",
            Box::new(|v| v["manifest"]["jurisdiction"] = "US".into()),
            format!(
                "record {}: decision of jurisdiction EU in a bundle of jurisdiction US",
                idx(0)
            ),
        ),
        (
            "the manifest subject",
            Box::new(|v| v["manifest"]["filter"]["subject"] = ALICE.into()),
            format!("record {}: decision of another subject", idx(0)),
        ),
        (
            "the readable copy",
            Box::new(|v| v["records"][0]["record"]["outcome"] = "refused".into()),
            format!(
                "record {}: the readable copy `record` differs from the attested leaf",
                idx(0)
            ),
        ),
        (
            "a claimed index",
            Box::new(move |v| v["records"][2]["index"] = (i2 + 1).into()),
            format!("record {}: leaf is the envelope of record {}", i2 + 1, i2),
        ),
        (
            "two records swapped",
            Box::new(|v| v["records"].as_array_mut().unwrap().swap(0, 1)),
            format!("record {}: out of order", idx(0)),
        ),
        (
            "a decrypted payload dropped",
            Box::new(|v| {
                v["records"][0].as_object_mut().unwrap().remove("payload");
            }),
            format!(
                "record {}: the decrypted payload (or why it is unavailable) is missing",
                idx(0)
            ),
        ),
        (
            "the checkpoint size in the manifest",
            Box::new(|v| v["manifest"]["checkpoint_size"] = 99.into()),
            "manifest: checkpoint_size 99 but the checkpoint is at size 18".into(),
        ),
    ];
    for (name, edit, want) in cases {
        let what = tampered_what(tamper(&file, edit));
        assert!(what.contains(&want), "{name}: got {what:?}, want {want:?}");
    }
    // A trusted key that is not the bundle's.
    let other = tempfile::tempdir().unwrap();
    drop(FileStore::open(other.path(), StoreOptions::default()).unwrap());
    let what = tampered_what(verify_bundle_with_key(
        &bundle,
        &crate::read_verifier_key(other.path()).unwrap(),
    ));
    assert!(what.contains("not the trusted key"), "{what}");
    // Not a bundle at all.
    assert!(matches!(
        tamper(&file, |v| v["extra"] = 1.into()),
        Err(BundleError::Malformed(_))
    ));
    assert!(matches!(
        tamper(&file, |v| v["manifest"]["format"] =
            "cordon-audit-bundle/9".into()),
        Err(BundleError::Malformed(_))
    ));
}

/// Move one decrypted payload to `unavailable` in the manifest's counts too (the manifest is not
/// signed, so a forger fixes them up).
fn recount_as_unavailable(v: &mut Value, n: u64) {
    let c = &mut v["manifest"]["counts"];
    c["payloads_decrypted"] = (c["payloads_decrypted"].as_u64().unwrap() - n).into();
    c["payloads_unavailable"] = (c["payloads_unavailable"].as_u64().unwrap() + n).into();
}

/// The reviewer's finding: a decrypted payload is checked against the proven ciphertext with the
/// bundled key, so editing the plaintext, the key, or withholding a payload that the key opens is
/// refused and named.
#[tokio::test]
async fn decrypted_payloads_are_verified_against_the_attested_ciphertext() {
    let fx = populate().await;
    let f = ExportFilter {
        decrypt: true,
        ..filter(Some(BOB))
    };
    let bundle = export(&fx.store, &[], "EU", &f, Some(&fx.keys)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bob.json");
    write_bundle(&bundle, &file).unwrap();
    let s = verify_bundle(&read_bundle(&file).unwrap()).unwrap();
    assert_eq!(
        (s.payloads_decrypted, s.payloads_unavailable, s.data_keys),
        (2, 0, 1)
    );
    // Where Bob's two decrypted payloads are (text, then binary as base64), and their decision ids.
    let at: Vec<usize> = (0..bundle.records.len())
        .filter(|&k| bundle.records[k].payload.is_some())
        .collect();
    let [text, bin] = at[..] else { panic!("{at:?}") };
    let name = |k: usize| {
        format!(
            "record {}: decision {}: ",
            bundle.records[k].index,
            bundle.records[k].record["decision_id"].as_str().unwrap()
        )
    };
    let alice_key = B64.encode(fx.keys.export_data_key("EU", ALICE).unwrap().unwrap().0);

    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "the plaintext of a decrypted payload",
            Box::new(move |v| v["records"][text]["payload"]["data"] = "I consent to everything".into()),
            format!(
                "{}decrypted payload does not match the record's ciphertext",
                name(text)
            ),
        ),
        (
            "a byte of a base64 decrypted payload",
            Box::new(move |v| edit_b64(&mut v["records"][bin]["payload"]["data"], |b| b[0] ^= 1)),
            format!(
                "{}decrypted payload does not match the record's ciphertext",
                name(bin)
            ),
        ),
        (
            "a byte appended to a decrypted payload",
            Box::new(move |v| edit_str(&mut v["records"][text]["payload"]["data"], |d| format!("{d}!"))),
            format!(
                "{}decrypted payload does not match the record's ciphertext",
                name(text)
            ),
        ),
        (
            "a bit of the bundled key",
            Box::new(|v| edit_b64(&mut v["keys"][0]["key"], |b| b[31] ^= 0x80)),
            format!(
                "{}the bundle's data key for key id {BOB} does not open the record's ciphertext",
                name(text)
            ),
        ),
        (
            "the key replaced by another subject's",
            Box::new(move |v| v["keys"][0]["key"] = alice_key.clone().into()),
            format!(
                "{}the bundle's data key for key id {BOB} does not open the record's ciphertext",
                name(text)
            ),
        ),
        (
            "the key removed",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("keys");
            }),
            format!(
                "{}no key in the bundle for a decrypted payload (key id {BOB})",
                name(text)
            ),
        ),
        (
            "a decrypted payload marked unavailable (counts fixed), key still there",
            Box::new(move |v| {
                v["records"][text]["payload"] =
                    serde_json::json!({"status": "unavailable", "reason": "shredded"});
                recount_as_unavailable(v, 1);
            }),
            format!(
                "{}payload marked unavailable, but the bundle carries its key and it decrypts the record's ciphertext",
                name(text)
            ),
        ),
        (
            "a key that no payload uses",
            Box::new(move |v| {
                let extra =
                    serde_json::json!({"jurisdiction": "EU", "key_id": ALICE, "key": B64.encode([1u8; 32])});
                v["keys"].as_array_mut().unwrap().push(extra);
            }),
            format!("keys: the data key for key id {ALICE} decrypts no payload shown in the bundle"),
        ),
        (
            "a key listed twice",
            Box::new(|v| {
                let k = v["keys"][0].clone();
                v["keys"].as_array_mut().unwrap().push(k);
            }),
            format!("keys[1] (key id {BOB}): a second key for the same key id"),
        ),
        (
            "a key of another jurisdiction",
            Box::new(|v| v["keys"][0]["jurisdiction"] = "US".into()),
            format!("keys[0] (key id {BOB}): a key of jurisdiction US in a bundle of jurisdiction EU"),
        ),
        (
            "a key that is not 32 bytes",
            Box::new(|v| edit_b64(&mut v["keys"][0]["key"], |b| b.truncate(16))),
            format!("keys[0] (key id {BOB}): key is not base64 of 32 bytes"),
        ),
    ];
    for (name, edit, want) in cases {
        let what = tampered_what(tamper(&file, edit));
        assert!(what.contains(&want), "{name}: got {what:?}, want {want:?}");
    }

    // The same bytes in the other encoding are the same plaintext: it verifies.
    let s = tamper(&file, |v| {
        v["records"][text]["payload"] = serde_json::json!({"status": "decrypted", "encoding": "base64",
            "data": B64.encode("bob secret")});
    })
    .unwrap();
    assert_eq!(s.payloads_decrypted, 2);

    // The limit, documented: withholding *every* payload of a subject together with its key
    // (counts fixed) looks like a shredded key; it verifies, and the summary says that the
    // unavailable payloads were not verified.
    let s = tamper(&file, |v| {
        for k in [text, bin] {
            v["records"][k]["payload"] = serde_json::json!({"status": "unavailable", "reason": "shredded"});
        }
        v.as_object_mut().unwrap().remove("keys");
        recount_as_unavailable(v, 2);
    })
    .unwrap();
    assert_eq!(
        (s.payloads_decrypted, s.payloads_unavailable, s.data_keys),
        (0, 2, 0)
    );
    assert!(
        s.to_string()
            .contains("2 unavailable (key shredded or missing: not verifiable)")
    );

    // Keys in a bundle that did not ask for decryption.
    let plain = export(&fx.store, &[], "EU", &filter(Some(BOB)), None).unwrap();
    assert!(plain.keys.is_empty());
    let plain_file = dir.path().join("plain.json");
    write_bundle(&plain, &plain_file).unwrap();
    let what = tampered_what(tamper(&plain_file, |v| {
        v["keys"] = serde_json::json!([{"jurisdiction": "EU", "key_id": BOB, "key": B64.encode([0u8; 32])}]);
    }));
    assert!(
        what.contains("keys: the bundle carries data keys but decryption was not asked"),
        "{what}"
    );
}

/// A subject shredded and then seen again: the old payloads (under the destroyed key) are
/// unavailable, the new one is decrypted and verified with the new key, which the bundle carries;
/// the old ones are accepted as unavailable because that key does not open them.
#[tokio::test]
async fn a_shredded_then_returning_subject_has_old_payloads_unavailable_and_new_ones_verified() {
    let fx = populate().await;
    assert!(fx.keys.shred("EU", ALICE).unwrap());
    let sealed = fx.keys.seal("EU", ALICE, b"alice is back").unwrap();
    let (d, _) = decision(
        Some(ALICE),
        "2026-01-08T10:00:00.000000Z",
        Outcome::Allowed,
        sealed,
    );
    let store = FileStore::open(&fx.store, opts()).unwrap();
    store.append(&d).unwrap().await.unwrap();
    drop(store);
    let f = ExportFilter {
        decrypt: true,
        ..filter(Some(ALICE))
    };
    let b = export(&fx.store, &[], "EU", &f, Some(&fx.keys)).unwrap();
    let s = verify_bundle(&b).unwrap();
    assert_eq!(
        (
            s.payloads_encrypted,
            s.payloads_decrypted,
            s.payloads_unavailable,
            s.data_keys
        ),
        (7, 1, 6, 1)
    );
    let payloads: Vec<&PayloadExport> = b.records.iter().filter_map(|r| r.payload.as_ref()).collect();
    for p in &payloads[..6] {
        let PayloadExport::Unavailable { reason } = p else {
            panic!("{p:?}")
        };
        assert!(reason.contains("earlier key, since shredded"), "{reason}");
    }
    assert_eq!(
        payloads[6],
        &PayloadExport::Decrypted {
            encoding: "utf8".into(),
            data: "alice is back".into()
        }
    );
    // Marking the new one unavailable too is caught: the bundled key opens it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alice.json");
    write_bundle(&b, &file).unwrap();
    let last = b.records.iter().rposition(|r| r.payload.is_some()).unwrap();
    let what = tampered_what(tamper(&file, |v| {
        v["records"][last]["payload"] = serde_json::json!({"status": "unavailable", "reason": "shredded"});
        recount_as_unavailable(v, 1);
    }));
    assert!(
        what.contains("payload marked unavailable, but the bundle carries its key"),
        "{what}"
    );
}

#[tokio::test]
async fn unattested_records_are_excluded_and_counted_and_no_checkpoint_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("EU");
    let slow = StoreOptions {
        checkpoint_every: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let store = FileStore::open(&dir, slow.clone()).unwrap();
    for day in 1..=3 {
        let (d, _) = decision(
            Some(ALICE),
            &format!("2026-02-0{day}T00:00:00Z"),
            Outcome::Allowed,
            Payload::None,
        );
        store.append(&d).unwrap().await.unwrap();
    }
    assert!(matches!(
        export(&dir, &[], "EU", &filter(None), None),
        Err(BundleError::NoCheckpoint { .. })
    ));
    drop(store); // writes the final checkpoint (size 3)
    let store = FileStore::open(&dir, slow).unwrap();
    for day in 4..=5 {
        let (d, _) = decision(
            Some(ALICE),
            &format!("2026-02-0{day}T00:00:00Z"),
            Outcome::Allowed,
            Payload::None,
        );
        store.append(&d).unwrap().await.unwrap();
    }
    let b = export(&dir, &[], "EU", &filter(Some(ALICE)), None).unwrap();
    let s = verify_bundle(&b).unwrap();
    assert_eq!(
        (
            s.records,
            s.checkpoint_size,
            s.store_records,
            s.unattested_excluded
        ),
        (3, 3, 5, 2)
    );
    assert!(
        s.to_string()
            .contains("2 matching record(s) after the checkpoint not included")
    );
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = verify_bundle(&export(&dir, &[], "EU", &filter(Some(ALICE)), None).unwrap()).unwrap();
        if s.checkpoint_size == 5 || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((s.records, s.unattested_excluded), (5, 0));
}

#[tokio::test]
async fn a_damaged_store_is_not_exported() {
    let fx = populate().await;
    let seg = crate::store_tests::segments(&fx.store).remove(0);
    let mut data = fs::read(&seg).unwrap();
    let at = data.len() / 2;
    data[at] ^= 1;
    fs::write(&seg, data).unwrap();
    assert!(matches!(
        export(&fx.store, &[], "EU", &filter(None), None),
        Err(BundleError::Store(_))
    ));
}

#[test]
fn parse_is_strict_and_size_capped() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    fs::File::create(&big)
        .unwrap()
        .set_len(MAX_BUNDLE_BYTES + 1)
        .unwrap();
    assert!(matches!(read_bundle(&big), Err(BundleError::TooLarge { .. })));
    assert!(matches!(parse_bundle(b"{}"), Err(BundleError::Malformed(_))));
    assert!(matches!(parse_bundle(b"\xff"), Err(BundleError::Malformed(_))));
    let deep = "[".repeat(100_000);
    assert!(matches!(
        parse_bundle(deep.as_bytes()),
        Err(BundleError::Malformed(_))
    ));
    assert!(matches!(
        read_bundle(&dir.path().join("missing")),
        Err(BundleError::Io { .. })
    ));
}

#[test]
fn batched_proofs_equal_single_proofs() {
    let leaves: Vec<Hash> = (0u32..37).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
    for n in 1..=leaves.len() {
        let l = &leaves[..n];
        let targets: Vec<usize> = (0..n).filter(|i| i % 3 != 1).collect();
        let mut paths = vec![Vec::new(); targets.len()];
        assert_eq!(root_and_paths(l, 0, &targets, &mut paths), merkle::root(l));
        for (t, p) in targets.iter().zip(&paths) {
            assert_eq!(*p, merkle::inclusion_proof(l, *t as u64).unwrap(), "n={n} t={t}");
        }
    }
    assert_eq!(root_and_paths(&[], 0, &[], &mut []), merkle::empty_root());
}

// ---- fuzz smoke: the bodies of fuzz/fuzz_targets/* over deterministic inputs ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Byte-level mutations: flip, overwrite, truncate, insert, delete, splice, duplicate a range.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(len + 1)),
            3 => {
                let i = rng.below(len + 1);
                let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                v.splice(i..i, extra);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                v.drain(a..b);
            }
            5 | 6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    v
}

fn valid_segment(n: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut prev = segment::ZERO_HASH;
    for k in 0..n {
        let rec = if k % 3 == 2 {
            sample_completion()
        } else {
            sample_decision(k)
        };
        prev = segment::encode_frame(&mut buf, k, &prev, &serde_json::to_vec(&rec).unwrap())
            .unwrap()
            .0;
    }
    buf
}

/// Re-frame every frame with a correct CRC (reaches the envelope / chain / record checks behind
/// the CRC). Stops at the first frame that does not frame.
fn fix_crcs(data: &mut [u8]) {
    let mut pos = 0;
    while pos + segment::HEADER <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + segment::HEADER + len;
        if len == 0 || end > data.len() {
            break;
        }
        let crc = crc32c::crc32c(&data[pos + segment::HEADER..end]);
        data[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

#[test]
fn fuzz_smoke_segment_reader() {
    let valid = valid_segment(12);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(segment::segment_name(0)), &valid).unwrap();
    assert_eq!(crate::verify_store(dir.path()).unwrap().records, 12);
    fuzz::segment_reader(&valid);
    fuzz::segment_reader(b"");
    let mut rng = Rng(0x00c0_ffee_d15e_a5e5);
    for i in 0..3000 {
        let mut input = if i % 10 == 9 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, &valid)
        };
        if i % 2 == 0 {
            fix_crcs(&mut input);
        }
        fuzz::segment_reader(&input);
    }
    // Still valid after all that (the bodies leave nothing behind that matters).
    assert_eq!(crate::verify_store(dir.path()).unwrap().records, 12);
}

/// Structured mutation of a bundle's JSON: change one string / number somewhere.
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = rng.below(m.len());
            if let Some((_, child)) = m.iter_mut().nth(k) {
                mutate_json(rng, child);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let k = rng.below(a.len());
            if rng.below(8) == 0 {
                a.remove(k);
            } else {
                mutate_json(rng, &mut a[k]);
            }
        }
        Value::String(s) => {
            let mut b = s.clone().into_bytes();
            let m = mutate(rng, &b);
            b = m;
            *s = String::from_utf8_lossy(&b).into_owned();
        }
        Value::Number(_) => *v = Value::from(rng.next() % 64),
        Value::Bool(b) => *b = !*b,
        _ => *v = Value::from(rng.next()),
    }
}

#[tokio::test]
async fn fuzz_smoke_bundle_reader() {
    let fx = populate().await;
    let bundle = export(
        &fx.store,
        &[],
        "EU",
        &ExportFilter {
            decrypt: true,
            ..filter(Some(BOB))
        },
        Some(&fx.keys),
    )
    .unwrap();
    let valid = serde_json::to_vec(&bundle).unwrap();
    assert!(verify_bundle(&parse_bundle(&valid).unwrap()).is_ok());
    fuzz::bundle_reader(&valid);
    let value: Value = serde_json::from_slice(&valid).unwrap();
    let mut rng = Rng(0x5eed_0fb0_0d1e);
    let mut verified = 0;
    for i in 0..3000 {
        let input = if i % 2 == 0 {
            mutate(&mut rng, &valid)
        } else {
            let mut v = value.clone();
            mutate_json(&mut rng, &mut v);
            serde_json::to_vec(&v).unwrap()
        };
        fuzz::bundle_reader(&input);
        if parse_bundle(&input).is_ok_and(|b| verify_bundle(&b).is_ok()) {
            verified += 1;
        }
    }
    // Some mutations are harmless (e.g. the created timestamp); most are caught.
    assert!(verified < 1500, "{verified} of 3000 mutated bundles verified");
    assert!(verify_bundle(&parse_bundle(&valid).unwrap()).is_ok());
}

/// Seed corpora for `fuzz/`: with `CORDON_FUZZ_SEEDS=<dir>`, writes a valid segment and a valid
/// bundle under `<dir>/{segment_reader,bundle_reader}/` (otherwise does nothing).
#[tokio::test]
async fn write_fuzz_seeds_when_asked() {
    let Some(dir) = std::env::var_os("CORDON_FUZZ_SEEDS").map(PathBuf::from) else {
        return;
    };
    let seg = dir.join("segment_reader");
    let bun = dir.join("bundle_reader");
    fs::create_dir_all(&seg).unwrap();
    fs::create_dir_all(&bun).unwrap();
    fs::write(seg.join("valid-6.log"), valid_segment(6)).unwrap();
    let fx = populate().await;
    let all = fs::read(&crate::store_tests::segments(&fx.store)[0]).unwrap();
    fs::write(seg.join("store-18.log"), all).unwrap();
    let f = ExportFilter {
        decrypt: true,
        ..filter(Some(BOB))
    };
    let b = export(&fx.store, &[], "EU", &f, Some(&fx.keys)).unwrap();
    fs::write(bun.join("bob-decrypted.json"), serde_json::to_vec(&b).unwrap()).unwrap();
    let b = export(&fx.store, &[], "EU", &filter(Some("ps:nobody")), None).unwrap();
    fs::write(bun.join("empty.json"), serde_json::to_vec(&b).unwrap()).unwrap();
}

/// A key wrapper that cannot run (a KMS outage).
struct DownKms;

impl crate::KeyWrap for DownKms {
    fn wrap(&self, _: &[u8], _: &[u8; 32]) -> Result<Vec<u8>, crate::KeyWrapError> {
        Err(crate::KeyWrapError::Unavailable("kms unreachable".into()))
    }
    fn unwrap(&self, _: &[u8], _: &[u8]) -> Result<[u8; 32], crate::KeyWrapError> {
        Err(crate::KeyWrapError::Unavailable("kms unreachable".into()))
    }
}

#[tokio::test]
async fn a_keystore_outage_fails_a_decrypting_export_instead_of_calling_payloads_erased() {
    let fx = populate().await;
    let f = ExportFilter {
        decrypt: true,
        ..filter(Some(ALICE))
    };
    let down = Keystore::open_with(&fx._root.path().join("keys"), std::sync::Arc::new(DownKms)).unwrap();
    assert!(matches!(
        export(&fx.store, &[], "EU", &f, Some(&down)),
        Err(BundleError::Keystore(AuditError::Io { .. }))
    ));
}
