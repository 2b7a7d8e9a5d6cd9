//! A full disk under the audit store, through the real binary: the gateway answers 503
//! `audit_unavailable` and forwards nothing, keeps serving `/healthz`, and recovers by itself once
//! space returns, with every acknowledged decision in the log and the log verifying.
//!
//! The disk is a 2 MiB tmpfs mounted (as root, as the test machines run) over the quickstart's
//! audit directory and unmounted at the end.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use cordon_audit::{Record, read_records};

/// A small tmpfs mounted at a directory for the test's lifetime.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (the test machines run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system at `dir` with `filler` until a write fails for lack of space.
fn fill(filler: &Path) {
    let mut f = std::fs::File::create(filler).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_data()) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(ENOSPC), "{e}");
                return;
            }
        }
    }
}

/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_closed_and_the_gateway_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let disk = SmallDisk::mount(&data.join("audit"));
    let de = token(&data, "alice", "DE");
    let gw = Gateway::start(&data, &[], &[]);
    let mut acknowledged = Vec::new();
    let (status, h, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-small", "before"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    acknowledged.push(header(&h, "x-cordon-decision-id"));

    // The disk fills up (another tenant of the volume, a log gone wild).
    let filler = disk.0.join("filler");
    fill(&filler);
    let mut refused = None;
    for i in 0..200 {
        let (status, h, body) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&de),
            chat("chat-small", &format!("full {i}")),
        )
        .await;
        match status {
            200 => acknowledged.push(header(&h, "x-cordon-decision-id")),
            503 => {
                assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
                assert!(
                    h.get("x-cordon-processing-region").is_none(),
                    "nothing may be forwarded"
                );
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused.is_some(), "no 503 while the audit disk was full");
    // Still alive, and says why it is not ready.
    let c = client();
    assert_eq!(
        c.get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Space returns: the gateway serves again by itself (the failed store is reopened).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, h, body) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&de),
            chat("chat-small", "after"),
        )
        .await;
        if status == 200 {
            acknowledged.push(header(&h, "x-cordon-decision-id"));
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "still refusing 30 s after space returned: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.get(format!("{}/readyz", gw.url)).send().await.unwrap().status(),
        200
    );
    drop(gw);

    // Every decision a client got a 200 for is in the log, and the log verifies.
    let logged: Vec<String> = read_records(&data.join("audit/EU"))
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| match r {
            Record::Decision(d) => Some(d.decision_id.to_string()),
            _ => None,
        })
        .collect();
    for id in &acknowledged {
        assert!(
            logged.contains(id),
            "acknowledged decision {id} is missing from the log"
        );
    }
    let (code, out) = cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    drop(disk);
}

/// `overlapped` durability: the request is forwarded while the record's fsync runs, and the
/// response is released only once the record is durable. When it cannot become durable (the disk
/// filled up meanwhile), the upstream's answer is withheld and the client gets 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapped_durability_withholds_the_answer_when_the_record_cannot_be_made_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let disk = SmallDisk::mount(&data.join("audit"));
    let de = token(&data, "alice", "DE");
    let cfg = tmp.path().join("cordon.yaml");
    std::fs::write(
        &cfg,
        r#"
gateway: { id: overlapped-test, development: true }
identity:
  issuers:
    - { issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }
tiers:
  1: { audit_payload: digest, durability: overlapped }
models:
  slow:
    endpoints:
      - { id: eu, provider: echo, regions: [aws:eu-central-1], delay_ms: 20 }
audit: { root: audit }
"#,
    )
    .unwrap();
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("slow", "before")).await;
    assert_eq!(status, 200, "{body}");
    let acknowledged = header(&h, "x-cordon-decision-id");

    fill(&disk.0.join("filler"));
    let mut withheld = None;
    for i in 0..200 {
        let marker = format!("secret-answer-{i}");
        let (status, _, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("slow", &marker)).await;
        match status {
            200 => continue,
            503 => {
                assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
                assert!(
                    !body.to_string().contains(&marker),
                    "the upstream's answer leaked although its record was not durable: {body}"
                );
                withheld = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(withheld.is_some(), "no 503 while the audit disk was full");
    drop(gw);
    assert!(
        decision_record(&data.join("audit/EU"), &acknowledged).is_some(),
        "the acknowledged decision is in the log"
    );
    drop(disk);
}
