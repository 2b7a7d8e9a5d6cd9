//! Crash safety: the gateway is killed with SIGKILL under load; after a restart every decision a
//! client got a 200 for is in its jurisdiction's log, and verification passes.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use cordon_audit::{Record, read_records};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_decision() {
    sigkill_under_load(false).await;
}

/// The same with `overlapped` durability: the response waits for the record's fsync, which runs
/// while the upstream works, so a 200 still means the decision is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_decision_when_overlapped() {
    sigkill_under_load(true).await;
}

async fn sigkill_under_load(overlapped: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The built-in policy, or the same with tier 1 overlapped (in the data dir, beside the
    // development JWKS its `jwks_file` names).
    let cfg = data.join("overlapped.yaml");
    let extra: Vec<&str> = if overlapped {
        let yaml = format!(
            "{}\ntiers:\n  1: {{ audit_payload: digest, durability: overlapped }}\n",
            include_str!("../../../examples/quickstart/cordon.yaml")
        );
        std::fs::write(&cfg, yaml).unwrap();
        vec!["--config", cfg.to_str().unwrap()]
    } else {
        Vec::new()
    };
    // Minting the tokens first writes the development JWKS the policy file names.
    let de = token(&data, "alice", "DE");
    let us = token(&data, "bob", "US");
    let mut gw = Gateway::start(&data, &extra, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (url, tok, stop) = (
            gw.url.clone(),
            if w % 2 == 0 { de.clone() } else { us.clone() },
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut acknowledged = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let sent = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&tok)
                    .json(&chat("chat-small", "crash test"))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status() == 200 {
                    let id = header(resp.headers(), "x-cordon-decision-id");
                    // Only a complete answer counts as acknowledged.
                    if resp.bytes().await.is_ok() {
                        acknowledged.push(id);
                    }
                }
            }
            acknowledged
        }));
    }
    // Let the load run until enough requests were served, then kill without warning.
    let eu_dir = data.join("audit/EU");
    let deadline = Instant::now() + Duration::from_secs(15);
    while read_records(&eu_dir).map(|r| r.len()).unwrap_or(0) < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The mode under test is the one in effect.
    let metrics = metrics(&gw.url).await;
    let mode = if overlapped { "overlapped" } else { "strict" };
    assert!(
        metrics.contains(&format!(
            "cordon_audit_wait_seconds_count{{durability=\"{mode}\"}}"
        )),
        "{metrics}"
    );
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashSet::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "too little load before the kill: {}",
        acked.len()
    );

    // Restart on the same data dir: stores recover (a torn tail is cut back), then verify.
    drop(gw);
    let gw = Gateway::start(&data, &extra, &[]);
    let (status, _, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-small", "after"),
    )
    .await;
    assert_eq!(status, 200);
    drop(gw);
    let (code, out) = cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let mut logged = HashSet::new();
    for j in ["EU", "US"] {
        for (_, r) in read_records(&data.join("audit").join(j)).unwrap() {
            if let Record::Decision(d) = r {
                logged.insert(d.decision_id.to_string());
            }
        }
    }
    let missing: Vec<_> = acked.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged decisions missing after the crash: {missing:?}",
        missing.len()
    );
}

/// A torn tail in a store that gets no request after the restart: the gateway cuts it back when it
/// starts (not on that jurisdiction's next request), so verification passes right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_cut_at_start_even_in_a_store_nobody_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gw = Gateway::start(&data, &[], &[]);
    let us = token(&data, "bob", "US");
    let (status, _, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&us),
        chat("chat-small", "hi"),
    )
    .await;
    assert_eq!(status, 200);
    let us_dir = data.join("audit/US");
    // The completion record is committed within the deferred delay; wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_records(&us_dir).map(|r| r.len()).unwrap_or(0) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = read_records(&us_dir).unwrap().len();
    drop(gw); // SIGKILL

    // Tear: the start of a frame (a length, a CRC, a few body bytes) right after the last record,
    // as a crash in the middle of a write leaves it.
    let mut segments: Vec<_> = std::fs::read_dir(&us_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let mut bytes = std::fs::read(last).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let torn = [200u8, 0, 0, 0, 1, 2, 3, 4, b'{', b'"', b'i'];
    if bytes.len() < end + torn.len() {
        bytes.resize(end + torn.len(), 0);
    }
    bytes[end..end + torn.len()].copy_from_slice(&torn);
    std::fs::write(last, &bytes).unwrap();
    let (code, out) = cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_ne!(code, 0, "the tear should show before recovery: {out}");

    // Restart and ask nothing of the US store.
    let gw = Gateway::start(&data, &[], &[]);
    drop(gw);
    let (code, out) = cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(read_records(&us_dir).unwrap().len(), before);
}
