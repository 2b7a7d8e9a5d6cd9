//! The verifiable audit log through the real binary: signed checkpoints and inclusion proofs for
//! served decisions, checkpoints published to the DR replica, and a PostgreSQL-backed store.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoints(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_decisions_are_provable_and_checkpoints_reach_the_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    token(&data, "warmup", "DE");
    let replica = tmp.path().join("dr-eu");
    let witnessed = tmp.path().join("witness");
    std::fs::create_dir_all(&witnessed).unwrap();
    let cfg = tmp.path().join("cordon.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
gateway: {{ id: gw-fra-1, region: aws:eu-central-1 }}
identity:
  issuers:
    - {{ issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }}
models:
  chat:
    endpoints:
      - {{ id: eu, provider: echo, regions: [aws:eu-central-1] }}
audit:
  stores:
    EU: {{ path: audit/eu, region: aws:eu-central-1, replica: {{ path: "{}", region: aws:eu-west-1 }},
          witness: ["sh", "-c", "cat > '{}'/$CORDON_CHECKPOINT_SIZE.ckpt"] }}
"#,
            replica.display(),
            witnessed.display()
        ),
    )
    .unwrap();
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, h, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&de),
            chat("chat", &format!("m{i}")),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(header(&h, "x-cordon-decision-id"));
    }
    let store = data.join("audit/eu");
    // Checkpoints are cut within a second of unattested records and published to the replica.
    wait_for("a local checkpoint", || checkpoints(&store) > 0);
    wait_for("a published checkpoint", || replica.join("latest.ckpt").exists());
    // The witness hook got the signed checkpoint too.
    wait_for("a witnessed checkpoint", || {
        std::fs::read_dir(&witnessed)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    // Segments are shipped to the replica in the background.
    wait_for("shipped segments", || {
        cordon_audit::read_records(&replica)
            .map(|r| r.len() >= 10)
            .unwrap_or(false)
    });
    // The replica's state is on /metrics, by the store it copies.
    let metrics = metrics(&gw.url).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "cordon_audit_replica_halted{store=\"eu\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cordon_audit_replica_records{store=\"eu\"} ")),
        "{metrics}"
    );

    let (cfg_s, dir) = (cfg.to_str().unwrap(), data.to_str().unwrap());
    let (code, out) = cli(&["audit", "verify", "--config", cfg_s, "--data-dir", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("published copies checked"), "{out}");
    assert!(out.contains("is a verified prefix"), "{out}");

    // An inclusion proof for a served decision, verifiable offline with the store's key.
    let (code, out) = cli(&[
        "audit",
        "prove",
        "--config",
        cfg_s,
        "--data-dir",
        dir,
        "--jurisdiction",
        "EU",
        "--decision-id",
        &ids[2],
    ]);
    assert_eq!(code, 0, "{out}");
    let proof: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vkey = proof["verifier_key"].as_str().unwrap();
    let bundle: cordon_audit::InclusionBundle = serde_json::from_value(proof["inclusion"].clone()).unwrap();
    cordon_audit::verify_inclusion_bundle(&bundle, vkey).unwrap();
    let mut forged = bundle.clone();
    forged.index += 1;
    assert!(
        cordon_audit::verify_inclusion_bundle(&forged, vkey).is_err(),
        "a moved leaf must not verify"
    );
    // The CLI checks a printed proof too (what a regulator runs), and refuses a moved leaf.
    let proof_file = data.join("proof.json");
    std::fs::write(&proof_file, &out).unwrap();
    let (code, checked) = cli(&["audit", "verify-bundle", proof_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{checked}");
    assert!(checked.contains("proof OK: record"), "{checked}");
    let mut moved = proof.clone();
    moved["inclusion"]["index"] = serde_json::json!(bundle.index + 1);
    std::fs::write(&proof_file, moved.to_string()).unwrap();
    let (code, checked) = cli(&["audit", "verify-bundle", proof_file.to_str().unwrap()]);
    assert_eq!(code, 1, "{checked}");
    assert!(checked.contains("FAIL"), "{checked}");

    // Dropping the newest records is caught against the checkpoint published to the replica.
    drop(gw);
    let segment = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let records = cordon_audit::read_records(&store).unwrap();
    assert!(records.len() >= 10);
    // Cut the file back to the first record's frame: a "clean" truncation the chain alone can't see.
    let bytes = std::fs::read(&segment).unwrap();
    let first_len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize + 8;
    std::fs::write(&segment, &bytes[..first_len]).unwrap();
    for e in std::fs::read_dir(store.join("checkpoints")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (code, out) = cli(&["audit", "verify", "--config", cfg_s, "--data-dir", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_audit_store_serves_the_gateway_and_verifies() {
    let conn = std::env::var("CORDON_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("cordon_gw_{}_{nanos}", std::process::id());
    let (admin, connection) = conn
        .parse::<cordon_audit_pg::tokio_postgres::Config>()
        .unwrap()
        .connect(cordon_audit_pg::tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test.sh starts it)");
    tokio::spawn(connection);
    let url = format!("postgres://postgres@127.0.0.1:5432/test?schema={schema}");
    // The operator's setup step: schema, append-only triggers, writer role.
    let (code, out) = cli(&["audit", "init-postgres", "--store", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("append-only"), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    token(&data, "warmup", "DE");
    // Where the chain's signed checkpoints go: out of the database administrator's reach.
    let published = tmp.path().join("published");
    let cfg = tmp.path().join("cordon.yaml");
    let eu_store = format!(
        "EU: {{ postgres: \"{url}\", region: aws:eu-central-1, publish: \"{}\" }}",
        published.display()
    );
    std::fs::write(
        &cfg,
        format!(
            r#"
gateway: {{ id: gw-fra-1, region: aws:eu-central-1 }}
identity:
  issuers:
    - {{ issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }}
models:
  chat:
    endpoints:
      - {{ id: eu, provider: echo, regions: [aws:eu-central-1] }}
audit:
  stores:
    {eu_store}
"#
        ),
    )
    .unwrap();
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    for i in 0..20 {
        let (status, _, body) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&de),
            chat("chat", &format!("m{i}")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let rows: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {schema}.records WHERE chain_id = 'gw-fra-1'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(rows >= 20, "decision records in PostgreSQL: {rows}");
    let (code, out) = cli(&["audit", "verify", "--store", &url]);
    assert_eq!(code, 0, "{out}");
    // Through the policy, the store is also checked to hold only its jurisdiction's decisions:
    // read as the US store, the same rows (EU subjects) fail.
    let d = data.to_str().unwrap();
    let verify_with = |policy: &std::path::Path| {
        cli(&[
            "audit",
            "verify",
            "--config",
            policy.to_str().unwrap(),
            "--data-dir",
            d,
        ])
    };
    let (code, out) = verify_with(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("published checkpoint(s) matched"), "{out}");
    let as_us = tmp.path().join("as-us.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &eu_store,
        &format!("US: {{ postgres: \"{url}\", region: aws:us-east-1 }}"),
    );
    std::fs::write(&as_us, text).unwrap();
    let (code, out) = verify_with(&as_us);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("decision(s) of another jurisdiction"), "{out}");
    // Within a checkpoint interval, a signed checkpoint over every record is published.
    let latest = published.join("gw-fra-1").join("latest.ckpt");
    let size = |text: String| text.lines().nth(1).and_then(|l| l.parse::<i64>().ok());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {schema}.records"), &[])
            .await
            .unwrap()
            .get(0);
        if std::fs::read_to_string(&latest).ok().and_then(size) == Some(now) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no published checkpoint over all {now} records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // /metrics shows the chain's commits and checkpoints, labelled by jurisdiction (never the URL).
    let metrics = metrics(&gw.url).await;
    let counter = |name: &str| counter(&metrics, &format!("{name}{{store=\"EU\"}}"));
    assert!(counter("cordon_audit_records_total") >= 20);
    assert!(counter("cordon_audit_checkpoints_total") >= 1);
    assert!(counter("cordon_audit_checkpoint_publications_total") >= 1);
    assert_eq!(counter("cordon_audit_checkpoint_publish_rejected_total"), 0);
    assert!(!metrics.contains("postgres://"), "{metrics}");
    // A graceful stop (SIGTERM) covers the records written since with a final, published
    // checkpoint.
    for i in 0..3 {
        let (status, _, body) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&de),
            chat("chat", &format!("late {i}")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut gw = gw;
    let pid = gw.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cordon serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {schema}.records"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        std::fs::read_to_string(&latest).ok().and_then(size),
        Some(all),
        "the shutdown checkpoint covers all {all} records"
    );
    drop(gw);
    // A regulator's bundle of the chain, checked offline.
    let bundle = tmp.path().join("eu-bundle.json");
    let cfg_s = cfg.to_str().unwrap();
    // `cordon audit CMD` on the EU store of this test's policy.
    let eu_cli = |cmd: &str, extra: &[&str]| {
        let mut args = vec![
            "audit",
            cmd,
            "--config",
            cfg_s,
            "--data-dir",
            d,
            "--jurisdiction",
            "EU",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, out) = eu_cli("export", &["--out", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["audit", "verify-bundle", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("cordon/{schema}/gw-fra-1")), "{out}");
    // And the records, for people and for machines.
    let (code, out) = eu_cli("show", &["--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count() as i64, all, "{out}");
    let (code, out) = eu_cli("show", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("allowed"), "{out}");
    // An inclusion proof of one decision, by id, under the chain's newest checkpoint.
    let some_id = out
        .lines()
        .find(|l| l.contains("allowed"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    let (code, out) = eu_cli("prove", &["--decision-id", &some_id]);
    assert_eq!(code, 0, "{out}");
    let proof: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        proof["inclusion"]["path"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{out}"
    );
    // A consistency proof from the chain's first checkpoint to the one written at the stop.
    let first: i64 = admin
        .query_one(
            &format!("SELECT min(tree_size) FROM {schema}.checkpoints WHERE note IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(first < all, "checkpoints at {first} and {all}");
    let (code, out) = eu_cli("prove", &["--consistency", &first.to_string(), &all.to_string()]);
    assert_eq!(code, 0, "{out}");
    let proof: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vkey = proof["verifier_key"].as_str().unwrap();
    let bundle: cordon_audit::ConsistencyBundle =
        serde_json::from_value(proof["consistency"].clone()).unwrap();
    assert_eq!((bundle.old_size, bundle.new_size), (first as u64, all as u64));
    cordon_audit::verify_consistency_bundle(&bundle, vkey).unwrap();
    let mut forged = bundle.clone();
    forged.new_checkpoint = forged.old_checkpoint.clone();
    assert!(cordon_audit::verify_consistency_bundle(&forged, vkey).is_err());
    // A database owner cuts the tail of the chain and the checkpoint and marker rows that covered
    // it. The database alone still verifies; against the published checkpoints it does not.
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.records DISABLE TRIGGER USER; ALTER TABLE {schema}.checkpoints DISABLE TRIGGER USER; \
             ALTER TABLE {schema}.markers DISABLE TRIGGER USER; \
             DELETE FROM {schema}.records WHERE idx >= 15; DELETE FROM {schema}.checkpoints WHERE tree_size > 15; \
             DELETE FROM {schema}.markers; \
             ALTER TABLE {schema}.records ENABLE TRIGGER USER; ALTER TABLE {schema}.checkpoints ENABLE TRIGGER USER; \
             ALTER TABLE {schema}.markers ENABLE TRIGGER USER;"
        ))
        .await
        .unwrap();
    let (code, out) = cli(&["audit", "verify", "--store", &url]);
    assert_eq!(code, 0, "the database alone cannot show its own cut: {out}");
    let (code, out) = cli(&[
        "audit",
        "verify",
        "--store",
        &url,
        "--published",
        published.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain gw-fra-1 record 15: truncated"), "{out}");
    let (code, out) = verify_with(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("truncated"), "{out}");
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_bundle_verifies_offline_and_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gw = Gateway::start(&data, &[], &[]);
    let alice = token(&data, "alice", "DE");
    let bob = token(&data, "bob", "FR");
    for (t, text) in [(&alice, "alice one"), (&bob, "bob one"), (&alice, "alice two")] {
        let (status, _, _) = post(&gw.url, "/v1/chat/completions", Some(t), chat("chat-small", text)).await;
        assert_eq!(status, 200);
    }
    // Wait until a signed checkpoint covers every record (checkpoints are cut within a second).
    let store = data.join("audit/EU");
    wait_for("a checkpoint over every record", || {
        let newest = std::fs::read_dir(store.join("checkpoints"))
            .map(|d| {
                d.filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_suffix(".ckpt")?
                        .parse::<usize>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
            })
            .unwrap_or(0);
        newest > 0
            && newest
                >= cordon_audit::read_records(&store)
                    .map(|r| r.len())
                    .unwrap_or(usize::MAX)
    });
    drop(gw);

    let out = tmp.path().join("alice.bundle.json");
    let dir = data.to_str().unwrap();
    let (code, text) = cli(&[
        "audit",
        "export",
        "--data-dir",
        dir,
        "--jurisdiction",
        "EU",
        "--subject",
        "alice",
        "--decrypt",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");

    // Offline, somewhere else: only the bundle.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("bundle.json");
    std::fs::copy(&out, &copy).unwrap();
    let (code, summary) = cli(&["audit", "verify-bundle", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{summary}");
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    let records = bundle["records"].as_array().unwrap();
    let decisions = records
        .iter()
        .filter(|r| r["record"]["kind"] == "decision")
        .count();
    assert!(decisions >= 1, "alice's decisions are in the bundle");
    let texts = serde_json::to_string(&bundle).unwrap();
    assert!(
        texts.contains("alice one") || texts.contains("alice two"),
        "decrypted payloads included"
    );
    assert!(
        !texts.contains("bob one"),
        "another subject's payload leaked into the bundle"
    );
    // The plaintext is checked against the proven ciphertext with Alice's key, which is bundled.
    for want in [
        "decrypted, each verified against its record's ciphertext",
        "1 subject key(s) included",
        "not proven   that no matching record was left out",
    ] {
        assert!(summary.contains(want), "summary lacks {want:?}:\n{summary}");
    }
    assert_eq!(bundle["keys"].as_array().map(Vec::len), Some(1), "{bundle}");

    // The reviewer's edit: a decrypted payload rewritten. Its record is named.
    let mut tampered = bundle.clone();
    let (k, r) = records
        .iter()
        .enumerate()
        .find(|(_, r)| r["payload"]["status"] == "decrypted")
        .unwrap();
    tampered["records"][k]["payload"]["data"] = "I consent to everything".into();
    std::fs::write(&copy, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let (code, text) = cli(&["audit", "verify-bundle", copy.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let named = format!(
        "record {}: decision {}: decrypted payload does not match the record's ciphertext",
        r["index"],
        r["record"]["decision_id"].as_str().unwrap()
    );
    assert!(text.contains("FAIL") && text.contains(&named), "{text}");

    // Tamper with one leaf: verification fails and names the record.
    let mut tampered = bundle.clone();
    let leaf = tampered["records"][0]["leaf"].as_str().unwrap().to_string();
    // Replace the first base64 character with a different one.
    let first = if leaf.starts_with('e') { "f" } else { "e" };
    let flipped = format!("{first}{}", leaf.get(1..).unwrap());
    tampered["records"][0]["leaf"] = serde_json::Value::String(flipped);
    std::fs::write(&copy, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let (code, text) = cli(&["audit", "verify-bundle", copy.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL") && text.contains("record"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_store_fails_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let de = token(&data, "alice", "DE");
    let gw = Gateway::start(&data, &[], &[]);
    let (status, _, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-small", "hi"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(gw);
    let dir = data.to_str().unwrap();
    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 0, "{out}");

    // Somebody removes the whole EU store (every record at once): verify must not pass.
    let eu = data.join("audit/EU");
    std::fs::rename(&eu, tmp.path().join("EU.gone")).unwrap();
    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("EU") && out.contains("missing"), "{out}");
    // Naming a store that does not exist is an error too.
    let (code, out) = cli(&[
        "audit",
        "verify",
        "--data-dir",
        dir,
        "--store",
        eu.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
}

/// Stop the gateway as an operator does (SIGTERM) and wait for it to exit.
fn stop_gracefully(mut gw: Gateway) {
    let pid = gw.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_forged_after_a_clean_shutdown_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let de = token(&data, "alice", "DE");
    let gw = Gateway::start(&data, &[], &[]);
    for i in 0..2 {
        let (status, _, body) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&de),
            chat("chat-small", &format!("m{i}")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    stop_gracefully(gw);
    let eu = data.join("audit/EU");
    let closed = std::fs::read_dir(eu.join("markers"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "closed")
        })
        .count();
    assert_eq!(closed, 1, "a clean shutdown leaves a close marker");
    let dir = data.to_str().unwrap();
    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "every record is attested: {out}");
    // Ordinary restarts (each cleanly closed, one with no request at all) are never taken for
    // forgery.
    for requests in [1, 0] {
        let gw = Gateway::start(&data, &[], &[]);
        for i in 0..requests {
            let (status, _, body) = post(
                &gw.url,
                "/v1/chat/completions",
                Some(&de),
                chat("chat-small", &format!("again {i}")),
            )
            .await;
            assert_eq!(status, 200, "after a clean restart: {body}");
        }
        stop_gracefully(gw);
        let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
        assert_eq!(code, 0, "{out}");
    }

    // Without the key: one more frame with a correct checksum and chain link.
    let report = cordon_audit::verify_store(&eu).unwrap();
    let mut head = [0u8; 32];
    for (k, b) in head.iter_mut().enumerate() {
        *b = u8::from_str_radix(&report.head_hash[2 * k..2 * k + 2], 16).unwrap();
    }
    let rec = serde_json::to_vec(&cordon_audit::testing::sample_completion()).unwrap();
    let mut body = Vec::new();
    cordon_audit::body::append_body(&mut body, report.records, &head, &rec);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    let segment = std::fs::read_dir(&eu)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&frame);
    std::fs::write(&segment, &bytes).unwrap();

    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("forged") && out.contains(&format!("record {}", report.records)),
        "{out}"
    );
    // The next start does not adopt (and sign) it: the jurisdiction is unavailable, others serve.
    let gw = Gateway::start(&data, &[], &[]);
    let (status, _, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-small", "after"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let us = token(&data, "bob", "US");
    let (status, _, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&us),
        chat("chat-small", "us"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(gw);
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "nothing cut");
    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 1, "{out}");
}
