//! The quickstart, end to end through the real binary: what a newcomer sees in two minutes.

mod common;

use common::*;
use cordon_audit::{Outcome, Record, read_records};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_routes_refuses_and_audits_by_jurisdiction() {
    quickstart_scenario(&[]).await;
}

/// The same with one request thread: the single-threaded runtime (what one CPU gets by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_a_single_threaded_runtime() {
    quickstart_scenario(&["--workers", "1"]).await;
}

#[test]
fn zero_workers_is_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = cli(&[
        "serve",
        "--workers",
        "0",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--workers"), "{out}");
}

async fn quickstart_scenario(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gw = Gateway::start(&data, extra, &[]);
    let de = token(&data, "alice", "DE");
    let us = token(&data, "bob", "US");
    let cn = token(&data, "chen", "CN");

    // EU subject, common model: served in the EU.
    let (status, h, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-small", "hello"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-cordon-processing-region"), "aws:eu-central-1");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello");
    let eu_allowed = header(&h, "x-cordon-decision-id");
    assert!(header(&h, "x-cordon-policy-version").starts_with("sha256:"));

    // Residency attaches to the subject, not to where the request comes from: a German subject
    // calling from a US region is still served in the EU, and the origin is only recorded.
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&de)
        .header("x-request-origin-region", "aws:us-east-1")
        .json(&chat("chat-small", "from new york"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "x-cordon-processing-region"),
        "aws:eu-central-1"
    );
    let travelling = header(resp.headers(), "x-cordon-decision-id");

    // US subject: served in the US.
    let (status, h, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&us),
        chat("chat-small", "hi"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-cordon-processing-region"), "aws:us-east-1");
    let us_allowed = header(&h, "x-cordon-decision-id");

    // EU subject, model served only in the US: refused.
    let (status, h, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-large", "hi"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "residency_violation");
    assert_eq!(body["error"]["code"], "no_permitted_endpoint");
    assert_eq!(body["error"]["decision_id"], header(&h, "x-cordon-decision-id"));
    let eu_refused = header(&h, "x-cordon-decision-id");
    assert!(h.get("x-cordon-processing-region").is_none());

    // CN subject (localized, nothing served there): refused.
    let (status, _, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&cn),
        chat("chat-small", "hi"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "no_permitted_endpoint");

    // No token: 401.
    let (status, _, body) = post(&gw.url, "/v1/chat/completions", None, chat("chat-small", "hi")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "missing_credentials");

    // Embeddings, and the model list shows only what the caller may use.
    let (status, h, body) = post(
        &gw.url,
        "/v1/embeddings",
        Some(&de),
        serde_json::json!({"model": "embed-small", "input": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-cordon-processing-region"), "aws:eu-central-1");
    assert!(
        body["data"][0]["embedding"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    let models: serde_json::Value = client()
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(&de)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"chat-small") && ids.contains(&"embed-small"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"chat-large"),
        "EU caller must not see the US-only model: {ids:?}"
    );

    // Streaming: SSE passed through chunk by chunk, reassembling to the full text.
    let mut body = chat("chat-small", "stream me please");
    body["stream"] = serde_json::json!(true);
    body["stream_options"] = serde_json::json!({ "include_usage": true });
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&de)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "x-cordon-processing-region"),
        "aws:eu-central-1"
    );
    assert!(header(resp.headers(), "content-type").starts_with("text/event-stream"));
    let stream_id = header(resp.headers(), "x-cordon-decision-id");
    let text = resp.text().await.unwrap();
    let mut content = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, "echo: stream me please");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    // The stream's completion record carries the usage its final chunk reported, read as the
    // chunks went by (it is written within a second, riding on the next commit).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let completion = loop {
        if let Some(c) = completion_record(&data.join("audit/EU"), &stream_id) {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completion record for the stream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(completion.stream);
    let usage = completion.usage.expect("the stream's usage is recorded");
    assert!(
        usage["completion_tokens"].as_u64().is_some_and(|n| n > 0),
        "{usage}"
    );

    // Health and readiness.
    assert_eq!(
        client()
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = metrics(&gw.url).await;
    assert!(metrics.contains("cordon_requests_total{"), "{metrics}");
    assert!(metrics.contains("cordon_gateway_overhead_seconds"), "{metrics}");
    assert!(
        metrics.contains("cordon_audit_wait_seconds_count{durability=\"strict\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("alice"), "no subject ids in metrics");
    // The stores' own figures, collected at scrape time, sit before the closing `# EOF`.
    let counter = |series: &str| counter(&metrics, series);
    assert!(counter("cordon_audit_commits_total{store=\"EU\"}") >= 1);
    assert!(counter("cordon_audit_records_total{store=\"EU\"}") >= 2);
    assert!(counter("cordon_audit_fsync_seconds_count{store=\"EU\"}") >= 1);
    assert_eq!(metrics.lines().last(), Some("# EOF"), "{metrics}");

    // The audit: verify passes, and each decision sits in its jurisdiction's store.
    let dir = data.to_str().unwrap();
    let (code, out) = cli(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(code, 0, "{out}");
    let decisions = |j: &str| -> Vec<(String, Outcome, Option<String>)> {
        read_records(&data.join("audit").join(j))
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Decision(d) => {
                    Some((d.decision_id.to_string(), d.outcome, d.data_subject_jurisdiction))
                }
                Record::Completion(_) => None,
            })
            .collect()
    };
    let eu = decisions("EU");
    let us_store = decisions("US");
    assert!(
        eu.iter()
            .any(|(id, o, _)| *id == eu_allowed && *o == Outcome::Allowed)
    );
    assert!(
        eu.iter()
            .any(|(id, o, _)| *id == eu_refused && *o == Outcome::Refused)
    );
    assert!(eu.iter().all(|(_, _, j)| j.as_deref() == Some("EU")));
    let origin = decision_record(&data.join("audit/EU"), &travelling).map(|d| d.request_origin_region);
    assert_eq!(
        origin,
        Some(Some("aws:us-east-1".to_string())),
        "the origin region is recorded"
    );
    assert!(us_store.iter().any(|(id, _, _)| *id == us_allowed));
    assert!(
        !us_store.iter().any(|(id, _, _)| *id == eu_allowed),
        "EU decision leaked into the US store"
    );
    assert!(us_store.iter().all(|(_, _, j)| j.as_deref() == Some("US")));
    assert_eq!(decisions("CN").len(), 1);
    // The raw subject id never reaches the log.
    for entry in std::fs::read_dir(data.join("audit/EU")).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"alice"));
    }
}

#[test]
fn policy_check_and_explain_on_the_quickstart() {
    let (code, out) = cli(&["policy", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("condition 3"),
        "the quickstart says plainly that condition 3 is not judged: {out}"
    );
    let (code, out) = cli(&["explain", "--model", "chat-large", "--country", "DE"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no_permitted_endpoint") && out.contains("us-east"),
        "{out}"
    );
    let (code, out) = cli(&["explain", "--model", "chat-small", "--country", "FR"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("allow endpoint eu-primary") && out.contains("failover (permitted only) eu-secondary"),
        "{out}"
    );
}

#[test]
fn examples_pass_policy_check_and_their_cases() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for ex in ["regional-eu", "global"] {
        let file = format!("{root}/{ex}/cordon.yaml");
        let (code, out) = cli(&["policy", "check", &file]);
        assert_eq!(code, 0, "{ex}: {out}");
        let cases = format!("{root}/{ex}/cases.yaml");
        let (code, out) = cli(&["policy", "test", &cases, "--config", &file]);
        assert_eq!(code, 0, "{ex}: {out}");
        assert!(out.contains(" 0 failed"), "{out}");
    }
    // A case table with a wrong expectation fails.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "cases:\n  - { residency: DE, model: chat-large, expect: allow }\n",
    )
    .unwrap();
    let (code, out) = cli(&["policy", "test", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL"), "{out}");
    // An empty table tests nothing: that is a failure, not a pass.
    let empty = tmp.path().join("empty.yaml");
    std::fs::write(&empty, "cases: []\n").unwrap();
    let (code, out) = cli(&["policy", "test", empty.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no cases"), "{out}");
}

#[test]
fn the_cli_refuses_a_malformed_gateway_region_override_as_serve_does() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(["policy", "check"])
        .env("CORDON_GATEWAY_REGION", "not a region")
        .env_remove("CORDON_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CORDON_GATEWAY_REGION"), "{text}");
}
