//! What reaches the upstream, byte for byte, through the real binary: a plain body goes as the
//! client sent it; a body with a duplicated `model` is decided on the model serde_json reads (the
//! last) and the upstream gets exactly that one, so a request can never be decided under one model
//! and served under another. The client never chooses where Anthropic runs inference: its
//! `inference_geo` is replaced by the endpoint's declared geography.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post as route_post;
use common::*;

type Seen = Arc<Mutex<Vec<bytes::Bytes>>>;

/// A handler that keeps the request body in `seen` and answers `answer`.
fn recording(seen: &Seen, answer: serde_json::Value) -> axum::routing::MethodRouter {
    let seen = seen.clone();
    route_post(move |body: bytes::Bytes| {
        seen.lock().unwrap().push(body);
        let answer = answer.to_string();
        async move { ([("content-type", "application/json")], answer) }
    })
}

/// An OpenAI-compatible (and Anthropic Messages) upstream that keeps every request body it
/// receives, as bytes.
async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let chat = serde_json::json!({
        "id": "x", "object": "chat.completion",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "ok" }, "finish_reason": "stop" }]
    });
    let message = serde_json::json!({
        "id": "msg", "type": "message", "role": "assistant",
        "content": [{ "type": "text", "text": "ok" }],
        "usage": { "input_tokens": 1, "output_tokens": 1, "inference_geo": "us" }
    });
    let app = Router::new()
        .route("/v1/chat/completions", recording(&seen, chat))
        .route("/v1/messages", recording(&seen, message));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

async fn post_raw(url: &str, token: &str, body: &'static str) -> (u16, serde_json::Value) {
    post_to(url, "chat/completions", token, body).await
}

async fn post_to(url: &str, path: &str, token: &str, body: &'static str) -> (u16, serde_json::Value) {
    let resp = client()
        .post(format!("{url}/v1/{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_reach_the_upstream_verbatim_or_with_the_decided_model_only() {
    let (eu_url, eu_seen) = upstream().await;
    let (us_url, us_seen) = upstream().await;
    let (renamed_url, renamed_seen) = upstream().await;
    let (anthropic_url, anthropic_seen) = upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let de = token(&data, "alice", "DE");
    let us = token(&data, "bob", "US");
    let cfg = tmp.path().join("cordon.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
gateway: {{ id: body-test, development: true }}
identity:
  issuers:
    - {{ issuer: cordon-dev, audiences: [cordon], jwks_file: data/dev-jwks.json, algorithms: [EdDSA] }}
models:
  eu-chat:
    endpoints:
      - {{ id: eu, provider: openai, url: "{eu_url}", regions: [aws:eu-central-1] }}
  us-chat:
    endpoints:
      - {{ id: us, provider: openai, url: "{us_url}", regions: [aws:us-east-1] }}
  renamed:
    endpoints:
      - {{ id: eu-renamed, provider: openai, url: "{renamed_url}", regions: [aws:eu-west-1], upstream_model: gpt-x }}
  claude:
    endpoints:
      - {{ id: anthropic-us, provider: anthropic, url: "{anthropic_url}", regions: [anthropic:us] }}
audit: {{ root: audit }}
"#
        ),
    )
    .unwrap();
    let gw = Gateway::start(&data, &["--config", cfg.to_str().unwrap()], &[]);

    // A plain body: the upstream receives the client's bytes unchanged.
    const PLAIN: &str =
        r#"{ "messages": [{"role":"user","content":"hi"}], "model": "eu-chat", "temperature": 0.5 }"#;
    let (status, body) = post_raw(&gw.url, &de, PLAIN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(eu_seen.lock().unwrap().as_slice(), [PLAIN.as_bytes()]);

    // Duplicated model, the permitted one first: decided on the last (US-only) one, refused, and
    // nothing reaches either upstream.
    const EU_THEN_US: &str = r#"{"model":"eu-chat","messages":[],"model":"us-chat"}"#;
    let (status, body) = post_raw(&gw.url, &de, EU_THEN_US).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "residency_violation");
    assert_eq!(eu_seen.lock().unwrap().len(), 1);
    assert!(us_seen.lock().unwrap().is_empty());

    // Duplicated model, the permitted one last: served in the EU, and the upstream gets one
    // `model`, the decided one.
    const US_THEN_EU: &str = r#"{"model":"us-chat","messages":[],"model":"eu-chat"}"#;
    let (status, body) = post_raw(&gw.url, &de, US_THEN_EU).await;
    assert_eq!(status, 200, "{body}");
    let got = eu_seen.lock().unwrap()[1].clone();
    let text = std::str::from_utf8(&got).unwrap();
    assert_eq!(text.matches("\"model\"").count(), 1, "{text}");
    assert!(!text.contains("us-chat"), "{text}");
    let parsed: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(parsed["model"], "eu-chat");
    assert!(us_seen.lock().unwrap().is_empty());

    // An endpoint with its own name for the model gets that name.
    let (status, body) = post_raw(&gw.url, &de, r#"{"model":"renamed","messages":[]}"#).await;
    assert_eq!(status, 200, "{body}");
    let got: serde_json::Value = serde_json::from_slice(&renamed_seen.lock().unwrap()[0]).unwrap();
    assert_eq!(got["model"], "gpt-x");

    // Anthropic declared at `anthropic:us`: the client asks for inference anywhere, the upstream
    // is told "us"; and "us" is set when the client says nothing.
    for body in [
        r#"{"model":"claude","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"inference_geo":"global"}"#,
        r#"{"model":"claude","max_tokens":8,"messages":[],"inference_geo":null,"inference_geo":"eu"}"#,
        r#"{"model":"claude","max_tokens":8,"messages":[]}"#,
    ] {
        let (status, answer) = post_to(&gw.url, "messages", &us, body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        let got = anthropic_seen.lock().unwrap().last().unwrap().clone();
        let text = std::str::from_utf8(&got).unwrap();
        assert_eq!(text.matches("inference_geo").count(), 1, "{text}");
        let parsed: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(parsed["inference_geo"], "us", "{text}");
    }
    assert_eq!(anthropic_seen.lock().unwrap().len(), 3);
}
