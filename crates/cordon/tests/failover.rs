//! Failover through the real binary against real upstreams on 127.0.0.1: only among the decision's
//! permitted endpoints, never across a border.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::post as route_post;
use common::*;

/// An OpenAI-compatible upstream that counts its requests and names itself in the answer.
async fn upstream(name: &'static str) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        route_post(move |body: axum::Json<serde_json::Value>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if body.0["stream"] == true {
                    let sse = format!(
                        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{name}\"}}}}]}}\n\ndata: [DONE]\n\n"
                    );
                    return ([("content-type", "text/event-stream")], sse);
                }
                let json = serde_json::json!({
                    "id": "x", "object": "chat.completion", "model": body.0["model"],
                    "choices": [{ "index": 0, "message": { "role": "assistant", "content": name }, "finish_reason": "stop" }],
                    "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 }
                });
                ([("content-type", "application/json")], json.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), hits)
}

/// A port on 127.0.0.1 with nothing listening (connection refused).
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

fn policy(eu_primary: &str, eu_secondary: &str, us: &str) -> String {
    format!(
        r#"
gateway: {{ id: failover-test, development: true }}
identity:
  issuers:
    - {{ issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }}
limits: {{ eject_after_failures: 1, eject_cooldown_ms: 600000, connect_timeout_ms: 1000 }}
models:
  chat:
    endpoints:
      - {{ id: eu-primary, provider: openai, url: "{eu_primary}", regions: [aws:eu-central-1], priority: 1 }}
      - {{ id: eu-secondary, provider: openai, url: "{eu_secondary}", regions: [aws:eu-west-1], priority: 2 }}
      - {{ id: us-east, provider: openai, url: "{us}", regions: [aws:us-east-1], priority: 1 }}
audit: {{ root: audit }}
"#
    )
}

fn start(tmp: &std::path::Path, yaml: &str) -> Gateway {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Creates data/dev-key + data/dev-jwks.json, which the policy's issuer trusts.
    token(&data, "warmup", "DE");
    let cfg = tmp.join("cordon.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_primary_down_eu_secondary_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let (secondary, secondary_hits) = upstream("eu-secondary").await;
    let (us, us_hits) = upstream("us-east").await;
    let gw = start(tmp.path(), &policy(&closed_port(), &secondary, &us));
    let de = token(&gw.data_dir, "alice", "DE");

    let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("chat", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "eu-secondary");
    assert_eq!(header(&h, "x-cordon-processing-region"), "aws:eu-west-1");
    let id = header(&h, "x-cordon-decision-id");

    // Streaming through the secondary as well (the primary is now ejected).
    let mut req = chat("chat", "hi");
    req["stream"] = serde_json::json!(true);
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&de)
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("eu-secondary"));

    assert_eq!(secondary_hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        us_hits.load(Ordering::SeqCst),
        0,
        "an EU request reached the US endpoint"
    );

    // The completion record names the endpoint that finally served, and the attempts.
    let completion = completion_record(&gw.data_dir.join("audit/EU"), &id).expect("completion record");
    assert_eq!(completion.model_endpoint.as_deref(), Some("eu-secondary"));
    assert_eq!(completion.attempts, 2);
    assert_eq!(completion.processing_regions, ["aws:eu-west-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_eu_down_is_503_and_never_reaches_the_us() {
    let tmp = tempfile::tempdir().unwrap();
    let (us, us_hits) = upstream("us-east").await;
    let gw = start(tmp.path(), &policy(&closed_port(), &closed_port(), &us));
    let de = token(&gw.data_dir, "alice", "DE");
    let usr = token(&gw.data_dir, "bob", "US");

    for _ in 0..3 {
        let (status, h, body) = post(&gw.url, "/v1/chat/completions", Some(&de), chat("chat", "hi")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["type"], "service_unavailable");
        assert_eq!(body["error"]["code"], "all_permitted_endpoints_unavailable");
        assert!(!header(&h, "x-cordon-decision-id").is_empty());
    }
    assert_eq!(
        us_hits.load(Ordering::SeqCst),
        0,
        "an EU request reached the US endpoint"
    );

    // The US endpoint itself is fine: US subjects are served by it.
    let (status, h, _) = post(&gw.url, "/v1/chat/completions", Some(&usr), chat("chat", "hi")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-cordon-processing-region"), "aws:us-east-1");
    assert_eq!(us_hits.load(Ordering::SeqCst), 1);

    let (code, out) = cli(&[
        "audit",
        "verify",
        "--config",
        tmp.path().join("cordon.yaml").to_str().unwrap(),
        "--data-dir",
        gw.data_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
}
