//! Tests of the network providers against mock upstreams (axum on 127.0.0.1:0), and of the
//! deadlines, error statuses and connection failures.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use cordon_policy::file::Limits;
use cordon_policy::{Endpoint, ProviderKind};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::*;
use crate::evidence::{extract_evidence, extract_usage};
use crate::testutil::{collect, endpoint};

/// What the mock saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Serve `router` on 127.0.0.1:0 in the background.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A mock that records every request and answers `status` with `body` as `content_type`.
async fn recording_mock(status: u16, content_type: &'static str, body: String) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let router = Router::new().fallback(move |uri: Uri, headers: HeaderMap, req: Bytes| {
        let seen = seen.clone();
        let body = body.clone();
        async move {
            seen.lock().unwrap().push(Seen {
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                headers,
                body: serde_json::from_slice(&req).unwrap_or(Value::Null),
            });
            Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(Body::from(body))
                .unwrap()
        }
    });
    (serve(router).await, log)
}

fn limits(first_byte_ms: u64, total_ms: u64) -> Limits {
    Limits {
        connect_timeout_ms: 2_000,
        first_byte_timeout_ms: first_byte_ms,
        total_timeout_ms: total_ms,
        ..Limits::default()
    }
}

/// A sender whose only credential is `KEY_VAR` = `sk-test-secret`.
fn upstreams(limits: &Limits) -> Upstreams {
    Upstreams::with_secrets(
        limits,
        Arc::new(|name: &str| (name == "KEY_VAR").then(|| "sk-test-secret".to_string())),
    )
    .unwrap()
}

fn keyed(provider: ProviderKind, url: &str) -> Endpoint {
    let mut ep = endpoint(provider, Some(url));
    ep.spec.api_key_env = Some("KEY_VAR".into());
    ep.spec.upstream_model = Some("up-model".into());
    ep
}

fn full(body: ResponseBody) -> Bytes {
    match body {
        ResponseBody::Full(b) => b,
        ResponseBody::Stream(_) => panic!("expected a full body"),
    }
}

#[tokio::test]
async fn openai_chat_path_auth_and_model_rewrite() {
    let answer = json!({"object": "chat.completion", "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
    let (addr, log) = recording_mock(200, "application/json", answer.to_string()).await;
    let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1/"));
    let req = json!({"model": "public", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5});
    let r = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Chat, &req, false)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    let body = full(r.body);
    assert_eq!(extract_usage(Operation::Chat, &body).unwrap()["total_tokens"], 3);

    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.query, None);
    assert_eq!(seen.headers["authorization"], "Bearer sk-test-secret");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.body["model"], "up-model");
    assert_eq!(seen.body["temperature"], 0.5);
    assert_eq!(seen.body["messages"], req["messages"]);
    assert!(seen.body.get("stream").is_none());
}

#[tokio::test]
async fn openai_embeddings_without_key_uses_public_model() {
    let (addr, log) = recording_mock(200, "application/json", r#"{"object":"list","data":[]}"#.into()).await;
    let ep = endpoint(ProviderKind::Openai, Some(&format!("http://{addr}/v1")));
    let r = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Embeddings, &json!({"input": "x"}), false)
        .await;
    assert_eq!(&full(r.unwrap().body)[..], br#"{"object":"list","data":[]}"#);
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/embeddings");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.body["model"], "m");
}

#[tokio::test]
async fn azure_deployment_path_api_version_and_api_key() {
    let (addr, log) = recording_mock(200, "application/json", "{}".into()).await;
    let mut ep = keyed(ProviderKind::AzureOpenai, &format!("http://{addr}"));
    ep.spec.deployment = Some("gpt4o-eu".into());
    let up = upstreams(&limits(5_000, 10_000));
    up.send(
        &ep,
        Operation::Chat,
        &json!({"messages": [], "model": "public"}),
        false,
    )
    .await
    .unwrap();
    ep.spec.api_version = Some("2025-01-01-preview".into());
    up.send(&ep, Operation::Embeddings, &json!({"input": ["a"]}), false)
        .await
        .unwrap();

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/openai/deployments/gpt4o-eu/chat/completions");
    assert_eq!(seen[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen[0].headers["api-key"], "sk-test-secret");
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(
        seen[0].body["model"], "up-model",
        "model rewritten, nothing dropped"
    );
    assert_eq!(seen[0].body["messages"], json!([]));
    assert_eq!(seen[1].path, "/openai/deployments/gpt4o-eu/embeddings");
    assert_eq!(seen[1].query.as_deref(), Some("api-version=2025-01-01-preview"));
}

#[tokio::test]
async fn anthropic_messages_headers_and_evidence() {
    let answer = json!({"type": "message", "content": [], "usage": {"input_tokens": 4, "output_tokens": 2, "inference_geo": "eu"}});
    let (addr, log) = recording_mock(200, "application/json", answer.to_string()).await;
    let ep = keyed(ProviderKind::Anthropic, &format!("http://{addr}/v1"));
    let req = json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Messages, &req, false)
        .await
        .unwrap();
    let body = full(r.body);
    assert_eq!(
        extract_evidence(Operation::Messages, &body),
        Some(json!({"inference_geo": "eu"}))
    );
    assert_eq!(
        extract_usage(Operation::Messages, &body).unwrap()["output_tokens"],
        2
    );

    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-test-secret");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.body["model"], "up-model");
    assert_eq!(seen.body["max_tokens"], 5);
}

/// A mock that streams `first`, then waits for `go` before sending `rest` (one chunk each) and
/// ending. Records the request body.
async fn gated_sse_mock(first: &'static str, rest: Vec<&'static str>, go: Arc<Notify>) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let router = Router::new().fallback(move |uri: Uri, headers: HeaderMap, req: Bytes| {
        let (seen, go, rest) = (seen.clone(), go.clone(), rest.clone());
        async move {
            seen.lock().unwrap().push(Seen {
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                headers,
                body: serde_json::from_slice(&req).unwrap_or(Value::Null),
            });
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                tx.send(Bytes::from_static(first.as_bytes())).await.unwrap();
                go.notified().await;
                for chunk in rest {
                    tx.send(Bytes::from_static(chunk.as_bytes())).await.unwrap();
                }
            });
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
    });
    (serve(router).await, log)
}

/// Stream through `ep`: the first chunk must arrive while the mock is still holding back the rest.
async fn assert_streams_unbuffered(provider: ProviderKind, op: Operation, path: &str) {
    let first = "data: {\"n\":1}\n\n";
    let rest = vec!["data: {\"n\":2}\n\n", "data: [DONE]\n\n"];
    let go = Arc::new(Notify::new());
    let (addr, log) = gated_sse_mock(first, rest.clone(), go.clone()).await;
    let ep = keyed(provider, &format!("http://{addr}/v1"));
    let r = upstreams(&limits(5_000, 10_000))
        .send(
            &ep,
            op,
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
            true,
        )
        .await
        .unwrap();
    assert_eq!(r.content_type, "text/event-stream");
    let ResponseBody::Stream(mut s) = r.body else {
        panic!("expected a stream")
    };
    // The mock sends the rest only after `go`: getting this chunk proves nothing is buffered.
    let got = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("first chunk must arrive before the upstream finishes")
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], first.as_bytes());
    go.notify_one();
    let mut tail = Vec::new();
    while let Some(chunk) = s.next().await {
        tail.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(tail, rest.concat().as_bytes());

    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.path, path);
    assert_eq!(seen.body["stream"], true);
    assert_eq!(seen.body["model"], "up-model");
}

#[tokio::test]
async fn openai_stream_passes_chunks_through_unbuffered() {
    assert_streams_unbuffered(ProviderKind::Openai, Operation::Chat, "/v1/chat/completions").await;
}

#[tokio::test]
async fn anthropic_stream_passes_chunks_through_unbuffered() {
    assert_streams_unbuffered(ProviderKind::Anthropic, Operation::Messages, "/v1/messages").await;
}

#[tokio::test]
async fn stream_ends_with_total_timeout() {
    // The mock never gets `go`: after the first chunk the stream stalls until the total deadline.
    let go = Arc::new(Notify::new());
    let (addr, _log) = gated_sse_mock("data: {}\n\n", vec!["data: [DONE]\n\n"], go).await;
    let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1"));
    let r = upstreams(&limits(5_000, 300))
        .send(&ep, Operation::Chat, &json!({}), true)
        .await
        .unwrap();
    let ResponseBody::Stream(mut s) = r.body else {
        panic!("expected a stream")
    };
    assert_eq!(&s.next().await.unwrap().unwrap()[..], b"data: {}\n\n");
    let err = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout("total")), "{err:?}");
    assert!(!err.is_retryable());
    assert!(s.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn non_2xx_is_status_with_body_and_retry_rule() {
    for (status, retryable) in [
        (400, false),
        // The gateway's own provider key refused: that endpoint's problem, try the next one.
        (401, true),
        (403, true),
        (404, false),
        (429, true),
        (500, true),
        (503, true),
    ] {
        let body = format!(r#"{{"error":{{"message":"status {status}"}}}}"#);
        let (addr, _) = recording_mock(status, "application/json", body.clone()).await;
        let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1"));
        let err = upstreams(&limits(5_000, 10_000))
            .send(&ep, Operation::Chat, &json!({}), false)
            .await
            .unwrap_err();
        match &err {
            UpstreamError::Status { status: s, body: b } => {
                assert_eq!(*s, status);
                assert_eq!(&b[..], body.as_bytes());
            }
            other => panic!("expected Status, got {other:?}"),
        }
        assert_eq!(err.is_retryable(), retryable, "status {status}");
        assert_eq!(err.reason(), cordon_types::ReasonCode::UpstreamError);
    }
}

#[tokio::test]
async fn error_body_is_capped() {
    let (addr, _) = recording_mock(500, "text/plain", "x".repeat(MAX_ERROR_BODY * 2)).await;
    let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1"));
    let err = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Chat, &json!({}), false)
        .await
        .unwrap_err();
    let UpstreamError::Status { status: 500, body } = err else {
        panic!("expected Status 500")
    };
    assert_eq!(body.len(), MAX_ERROR_BODY);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let router = Router::new().fallback(|| async {
        Response::builder()
            .status(302)
            .header("location", "http://127.0.0.1:1/elsewhere")
            .body(Body::empty())
            .unwrap()
    });
    let addr = serve(router).await;
    let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1"));
    let err = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Chat, &json!({}), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::Status { status: 302, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn connection_refused_is_connect_and_retryable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = keyed(ProviderKind::Openai, &format!("http://127.0.0.1:{port}/v1"));
    let err = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Chat, &json!({}), false)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.reason(), cordon_types::ReasonCode::UpstreamError);
    assert!(!err.to_string().contains("sk-test-secret"));
    assert!(
        !err.to_string().contains(&format!("127.0.0.1:{port}/v1")),
        "no URL in the message: {err}"
    );
}

#[tokio::test]
async fn silent_upstream_is_first_byte_timeout() {
    // Accept connections and read nothing, answer nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1"));
    let started = std::time::Instant::now();
    let err = upstreams(&limits(200, 10_000))
        .send(&ep, Operation::Chat, &json!({}), false)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout("first byte")), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.reason(), cordon_types::ReasonCode::UpstreamTimeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_credential_is_config_and_retryable() {
    let mut ep = keyed(ProviderKind::Openai, "http://127.0.0.1:1/v1");
    ep.spec.api_key_env = Some("CORDON_TEST_UNSET_VAR".into());
    let err = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Chat, &json!({}), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Config(m) if m.contains("CORDON_TEST_UNSET_VAR")),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn echo_goes_through_send_without_network() {
    let up = Upstreams::new(&Limits::default()).unwrap();
    let ep = endpoint(ProviderKind::Echo, None);
    let req = json!({"messages": [{"role": "user", "content": "ping"}]});
    let r = up.send(&ep, Operation::Chat, &req, false).await.unwrap();
    let v: Value = serde_json::from_slice(&full(r.body)).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: ping");
    let r = up.send(&ep, Operation::Chat, &req, true).await.unwrap();
    assert!(matches!(r.body, ResponseBody::Stream(_)));
    let text = collect(r.body).await.unwrap();
    assert!(text.ends_with(b"data: [DONE]\n\n"));
}

#[tokio::test]
async fn mid_stream_failure_ends_with_body_error() {
    // The mock fails its body only after the test has the first chunk (no race with a reset).
    let go = Arc::new(Notify::new());
    let gate = go.clone();
    let router = Router::new().fallback(move || {
        let gate = gate.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
            tokio::spawn(async move {
                tx.send(Ok(Bytes::from_static(b"data: {}\n\n"))).await.unwrap();
                gate.notified().await;
                tx.send(Err(std::io::Error::other("upstream died")))
                    .await
                    .unwrap();
            });
            let body =
                futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
    });
    let addr = serve(router).await;
    let ep = keyed(ProviderKind::Openai, &format!("http://{addr}/v1"));
    let r = upstreams(&limits(5_000, 10_000))
        .send(&ep, Operation::Chat, &json!({}), true)
        .await
        .unwrap();
    let ResponseBody::Stream(mut s) = r.body else {
        panic!("expected a stream")
    };
    assert_eq!(&s.next().await.unwrap().unwrap()[..], b"data: {}\n\n");
    go.notify_one();
    let err = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Body(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(s.next().await.is_none());
}
