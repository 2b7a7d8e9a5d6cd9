//! Operating the gateway: hot reload (file change and SIGHUP) with an atomic swap that keeps the
//! old policy when the new one is invalid; request limits; the audit store failing closed.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn policy(models: &str) -> String {
    format!(
        r#"
gateway: {{ id: ops-test, development: true }}
identity:
  issuers:
    - {{ issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }}
limits: {{ max_body_bytes: 2048 }}
models:
{models}
audit: {{ root: audit }}
"#
    )
}

const ONE: &str =
    "  first:\n    endpoints:\n      - { id: eu, provider: echo, regions: [aws:eu-central-1] }\n";
const TWO: &str = "  first:\n    endpoints:\n      - { id: eu, provider: echo, regions: [aws:eu-central-1] }\n  second:\n    endpoints:\n      - { id: eu, provider: echo, regions: [aws:eu-west-1] }\n";

fn setup(tmp: &std::path::Path, yaml: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    token(&data, "warmup", "DE");
    let cfg = tmp.join("cordon.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    (data, cfg)
}

/// Poll `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz` answers 503 and its reason contains `why`.
async fn assert_not_ready_because(url: &str, why: &str) {
    let ready = client().get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains(why), "{body}");
}

async fn status_for(url: &str, token: &str, model: &str) -> u16 {
    post(url, "/v1/chat/completions", Some(token), chat(model, "hi"))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_change_and_sighup_keeps_old_policy_when_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cfg) = setup(tmp.path(), &policy(ONE));
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    assert_eq!(status_for(&gw.url, &de, "first").await, 200);
    assert_eq!(status_for(&gw.url, &de, "second").await, 404);
    let (_, h, _) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("first", "hi")).await;
    let v1 = header(&h, "x-cordon-policy-version");

    // A file change is picked up.
    std::fs::write(&cfg, policy(TWO)).unwrap();
    eventually("the new model is served", || async {
        status_for(&gw.url, &de, "second").await == 200
    })
    .await;
    let (_, h, _) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("second", "hi")).await;
    let v2 = header(&h, "x-cordon-policy-version");
    assert_ne!(v1, v2);

    // An invalid file is rejected; the old policy keeps serving.
    std::fs::write(
        &cfg,
        policy("  broken:\n    endpoints:\n      - { id: x, provider: echo, regions: [aws:nowhere-1] }\n"),
    )
    .unwrap();
    let url = gw.url.clone();
    eventually("the rejected reload is counted", || {
        let url = url.clone();
        async move {
            metrics(&url)
                .await
                .contains("cordon_policy_reloads_total{result=\"rejected\"}")
        }
    })
    .await;
    assert_eq!(status_for(&gw.url, &de, "second").await, 200);
    let (_, h, _) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("second", "hi")).await;
    assert_eq!(header(&h, "x-cordon-policy-version"), v2);
    assert!(
        gw.stderr().contains("aws:nowhere-1"),
        "the rejection names the problem: {}",
        gw.stderr()
    );

    // SIGHUP reloads too (back to one model).
    std::fs::write(&cfg, policy(ONE)).unwrap();
    let pid = gw.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually("the model is gone again", || async {
        status_for(&gw.url, &de, "second").await == 404
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_gateway_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, cfg) = setup(tmp.path(), &policy(ONE));
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");

    let big = chat("first", &"x".repeat(4096));
    let (status, _, body) = post(&gw.url, "/v1/chat/completions", Some(&de), big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&de)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("line 1"),
        "{body}"
    );

    let (status, _, body) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&de),
        serde_json::json!({"messages": []}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("model"),
        "{body}"
    );

    let (status, _, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("nope", "hi")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");

    // Anthropic route: Anthropic's error envelope, x-api-key accepted.
    let resp = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", "wrong")
        .json(&serde_json::json!({"model": "first", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["code"], "unknown_api_key");
    let (status, h, body) = post(
        &gw.url,
        "/v1/messages",
        Some(&de),
        serde_json::json!({"model": "first", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "echo: hi");
    assert_eq!(header(&h, "x-cordon-processing-region"), "aws:eu-central-1");

    // Still serving.
    assert_eq!(status_for(&gw.url, &de, "first").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_store_fails_closed_with_503() {
    let tmp = tempfile::tempdir().unwrap();
    // The audit root is a regular file: no store can be created under it.
    let yaml = policy(ONE).replace("audit: { root: audit }", "audit: { root: blocked }");
    let (data, cfg) = setup(tmp.path(), &yaml);
    std::fs::write(data.join("blocked"), b"not a directory").unwrap();
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("first", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "service_unavailable");
    assert_eq!(body["error"]["code"], "audit_unavailable");
    assert!(
        h.get("x-cordon-processing-region").is_none(),
        "nothing may be forwarded"
    );
    assert_eq!(
        client()
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client()
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_modes_are_measured_and_the_echo_delay_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let models = "  slow:\n    endpoints:\n      - { id: eu, provider: echo, regions: [aws:eu-central-1], delay_ms: 50 }\n";
    let yaml = policy(models).replace(
        "audit: { root: audit }",
        "audit: { root: audit }\ntiers:\n  1: { audit_payload: digest, durability: overlapped }",
    );
    let (data, cfg) = setup(tmp.path(), &yaml);
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    let started = Instant::now();
    assert_eq!(status_for(&gw.url, &de, "slow").await, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "the echo delay holds"
    );
    let metrics = metrics(&gw.url).await;
    assert!(
        metrics.contains("cordon_audit_wait_seconds_count{durability=\"overlapped\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_gateway_refuses_other_jurisdictions_and_names_their_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = r#"
gateway: { id: gw-fra-1, region: aws:eu-central-1, regional_gateways: { US: "https://us.ai.example.com" } }
identity:
  issuers:
    - { issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }
models:
  first:
    endpoints:
      - { id: eu, provider: echo, regions: [aws:eu-central-1] }
audit:
  stores:
    EU: { path: audit/eu, region: aws:eu-central-1 }
"#;
    let (data, cfg) = setup(tmp.path(), yaml);
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let us = token(&data, "bob", "US");
    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&us), chat("first", "hi")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "gateway_out_of_jurisdiction");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://us.ai.example.com"),
        "{body}"
    );
    let id = header(&h, "x-cordon-decision-id");
    // Recorded in the gateway's own store, without the subject and without payload.
    let rec = decision_record(&data.join("audit/eu"), &id).expect("the refusal is recorded");
    assert_eq!(rec.subject, None);
    assert_eq!(rec.data_subject_jurisdiction.as_deref(), Some("US"));
    assert_eq!(rec.payload, cordon_audit::Payload::None);
    // The model list says the same.
    let resp = client()
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(&us)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gateway_out_of_jurisdiction");
    // An EU subject is served.
    let de = token(&data, "alice", "DE");
    assert_eq!(status_for(&gw.url, &de, "first").await, 200);
    let (code, out) = cli(&[
        "audit",
        "verify",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
}

/// An upstream on 127.0.0.1 that answers a chat completion after `delay`.
async fn slow_upstream(delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            tokio::time::sleep(delay).await;
            (
                [("content-type", "application/json")],
                r#"{"id":"x","object":"chat.completion","choices":[]}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_upstream_timeouts() {
    let url = slow_upstream(Duration::from_millis(600)).await;
    let yaml = |first_byte_ms: u64| {
        format!(
            r#"
gateway: {{ id: ops-test, development: true }}
identity:
  issuers:
    - {{ issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }}
limits: {{ first_byte_timeout_ms: {first_byte_ms} }}
models:
  slow:
    endpoints:
      - {{ id: eu, provider: openai, url: "{url}", regions: [aws:eu-central-1] }}
audit: {{ root: audit }}
"#
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let (data, cfg) = setup(tmp.path(), &yaml(5_000));
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    assert_eq!(status_for(&gw.url, &de, "slow").await, 200);

    std::fs::write(&cfg, yaml(150)).unwrap();
    eventually("the shorter first-byte timeout applies", || async {
        status_for(&gw.url, &de, "slow").await == 504
    })
    .await;
    let (_, _, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("slow", "hi")).await;
    assert_eq!(body["error"]["code"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_audit_stores_fails_closed_until_the_first_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("data"), tmp.path().join("data-b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    let mut a = Gateway::start(&a_dir, &[], &[]);
    let de = token(&a_dir, "alice", "DE");
    assert_eq!(status_for(&a.url, &de, "chat-small").await, 200);

    // B serves the same data directory (so the same EU store); its stderr goes to its own log.
    std::os::unix::fs::symlink(&a_dir, &b_dir).unwrap();
    let b = Gateway::start(&b_dir, &[], &[]);
    assert_not_ready_because(&b.url, "another process").await;
    let (status, _, body) = post(
        &b.url,
        "/v1/chat/completions",
        Some(&de),
        chat("chat-small", "hi"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    // The first gateway keeps serving: one writer, one chain.
    assert_eq!(status_for(&a.url, &de, "chat-small").await, 200);

    // The lock dies with its process: B opens the store (recovering it) and serves.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    eventually("B becomes ready", || async {
        client()
            .get(format!("{}/readyz", b.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(status_for(&b.url, &de, "chat-small").await, 200);
    drop(b);
    let (code, out) = cli(&["audit", "verify", "--data-dir", a_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

/// The same with a store configured by path (opened at start): the second gateway still starts,
/// serves what it can, and fails that store closed instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_starts_when_a_configured_store_is_held() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = policy(ONE).replace(
        "audit: { root: audit }",
        "audit: { root: audit, stores: { EU: { path: eu-store, region: \"aws:eu-central-1\" } } }",
    );
    let (data, cfg) = setup(tmp.path(), &yaml);
    let cfg = cfg.to_str().unwrap();
    let a = Gateway::start(&data, &["--config", cfg], &[]);
    let de = token(&data, "alice", "DE");
    assert_eq!(status_for(&a.url, &de, "first").await, 200);
    let b_dir = tmp.path().join("data-b");
    std::os::unix::fs::symlink(&data, &b_dir).unwrap();
    let b = Gateway::start(&b_dir, &["--config", cfg], &[]);
    assert_not_ready_because(&b.url, "another process").await;
    assert_eq!(status_for(&b.url, &de, "first").await, 503);
    assert_eq!(status_for(&a.url, &de, "first").await, 200);
}

/// An upstream on 127.0.0.1 that refuses every chat completion with `status` (as a provider does
/// when the gateway's API key is wrong or lacks access).
async fn refusing_upstream(status: u16) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                r#"{"error":{"message":"Incorrect API key provided: sk-abc","type":"invalid_request_error"}}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_the_gateways_credentials_is_a_502_never_the_callers_401_or_403() {
    let (u401, u403) = (refusing_upstream(401).await, refusing_upstream(403).await);
    let models = format!(
        "  keyless:\n    endpoints:\n      - {{ id: a, provider: openai, url: \"{u401}\", regions: [aws:eu-central-1] }}\n      - {{ id: b, provider: openai, url: \"{u403}\", regions: [aws:eu-central-1] }}\n  fallback:\n    endpoints:\n      - {{ id: a, provider: openai, url: \"{u403}\", regions: [aws:eu-central-1] }}\n      - {{ id: b, provider: echo, regions: [aws:eu-west-1] }}\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (data, cfg) = setup(tmp.path(), &policy(&models));
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    // Both permitted endpoints refuse the gateway's key: 502 upstream_error, not 401/403 (which
    // the SDK would raise as a bad caller token or a residency refusal), and no upstream text.
    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("keyless", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert_ne!(body["error"]["type"], "residency_violation", "{body}");
    assert!(!body.to_string().contains("sk-abc"), "{body}");
    assert!(h.get("x-cordon-decision-id").is_some());
    // The decision allowed the request: the error says where it was sent.
    assert_eq!(h["x-cordon-processing-region"], "aws:eu-central-1");
    // One endpoint's bad key is that endpoint's problem: the next permitted endpoint serves.
    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("fallback", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-cordon-processing-region"], "aws:eu-west-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_stores_never_keep_a_jurisdictions_records_outside_its_permitted_area() {
    // A production gateway in the US with `audit.root` and an SCC rule that lets it process EU
    // subjects: a root store would put EU records on a US disk (condition 2). There is none: the
    // EU request fails closed, `policy check` says why, and US records carry their region.
    let tmp = tempfile::tempdir().unwrap();
    let yaml = r#"
gateway: { id: gw-iad-1, region: aws:us-east-1 }
identity:
  issuers:
    - { issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }
transfers:
  - { from: EU, to: US, tiers: [1], mechanism: scc, reference: SCC-2021/914, expires: 2030-01-01 }
models:
  first:
    endpoints:
      - { id: us, provider: echo, regions: [aws:us-east-1] }
audit: { root: audit }
"#;
    let (data, cfg) = setup(tmp.path(), yaml);
    let (code, out) = cli(&["policy", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("audit.root") && out.contains("outside the permitted area of") && out.contains("EU"),
        "{out}"
    );
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    let (status, _, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("first", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    assert!(
        !data.join("audit/EU").exists(),
        "an EU store was made on the US gateway's disk"
    );
    let us = token(&data, "bob", "US");
    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&us), chat("first", "hi")).await;
    assert_eq!(status, 200, "{body}");
    let id = header(&h, "x-cordon-decision-id");
    let rec = decision_record(&data.join("audit/US"), &id)
        .expect("the US decision is recorded in the US root store");
    assert_eq!(rec.audit_storage_region.as_deref(), Some("aws:us-east-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_a_route_its_provider_does_not_speak_is_a_400_not_a_residency_refusal() {
    let models = "  claude:\n    endpoints:\n      - { id: eu, provider: anthropic, url: \"http://127.0.0.1:9/v1\", regions: [aws:eu-central-1] }\n";
    let tmp = tempfile::tempdir().unwrap();
    let (data, cfg) = setup(tmp.path(), &policy(models));
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);
    let de = token(&data, "alice", "DE");
    let (status, _, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("claude", "hi")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("anthropic") && message.contains("chat"),
        "{message}"
    );
}
