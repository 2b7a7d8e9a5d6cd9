//! The built-in `echo` provider: deterministic, no network. It answers Chat Completions, Embeddings
//! and Anthropic Messages in each API's own shape, stream or not, so the quickstart and tests run
//! the same code paths (including the stream passthrough) as a real upstream.

use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;
use cordon_policy::Endpoint;
use serde_json::{Value, json};

use crate::client::{ResponseBody, UpstreamResponse};
use crate::dialect::{invalid_request, rewrite_body, upstream_model};
use crate::error::UpstreamError;
use crate::operation::Operation;

/// Answer `body` for `op` as the echo provider would.
pub(crate) fn respond(
    endpoint: &Endpoint,
    op: Operation,
    body: &Value,
    stream: bool,
) -> Result<UpstreamResponse, UpstreamError> {
    let body = rewrite_body(endpoint, op, body, stream)?;
    let model = upstream_model(endpoint);
    let hash = hex16(&serde_json::to_vec(&body).unwrap_or_default());
    match op {
        Operation::Chat => chat(&body, model, &hash, stream),
        Operation::Embeddings => Ok(full(embeddings(&body, model)?)),
        Operation::Messages => messages(&body, model, &hash, stream),
    }
}

fn full(value: Value) -> UpstreamResponse {
    UpstreamResponse {
        status: 200,
        content_type: "application/json".to_string(),
        body: ResponseBody::Full(Bytes::from(value.to_string())),
    }
}

fn sse(events: Vec<Bytes>) -> UpstreamResponse {
    UpstreamResponse {
        status: 200,
        content_type: "text/event-stream".to_string(),
        body: ResponseBody::Stream(Box::pin(futures_util::stream::iter(events.into_iter().map(Ok)))),
    }
}

/// First 16 hex digits of the SHA-256 of `data`.
fn hex16(data: &[u8]) -> String {
    digest(&SHA256, data).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of a message's content: a string, or the `text` parts of an array, joined by a space.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The reply text and the prompt's word count, from a `messages` array.
fn reply(op: Operation, body: &Value) -> Result<(String, u64), UpstreamError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid_request(op, "'messages' must be a non-empty array"))?;
    let content = |m: &Value| text_of(m.get("content").unwrap_or(&Value::Null));
    let mut prompt_words: u64 = messages.iter().map(|m| words(&content(m))).sum();
    if let Some(system) = body.get("system") {
        prompt_words += words(&text_of(system));
    }
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content)
        .unwrap_or_default();
    Ok((format!("echo: {last_user}"), prompt_words))
}

/// Split `text` into one piece per word, each keeping the whitespace after it, so that the pieces
/// concatenate back to exactly `text`.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut in_word, mut after_word) = (false, false);
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                after_word = true;
                in_word = false;
            }
        } else {
            if after_word {
                out.push(&text[start..i]);
                start = i;
                after_word = false;
            }
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn data_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn named_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

fn chat(body: &Value, model: &str, hash: &str, stream: bool) -> Result<UpstreamResponse, UpstreamError> {
    let (text, prompt) = reply(Operation::Chat, body)?;
    let completion = words(&text);
    let id = format!("chatcmpl-echo-{hash}");
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    if !stream {
        return Ok(full(json!({
            "id": id,
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": usage
        })));
    }
    let chunk = |delta: Value, finish: Value| {
        data_event(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        }))
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    events.extend(
        pieces(&text)
            .into_iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    if include_usage {
        events.push(data_event(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": usage
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(sse(events))
}

/// Eight numbers in [-1, 1] from the SHA-256 of `input`.
fn vector(input: &str) -> Vec<f64> {
    let d = digest(&SHA256, input.as_bytes());
    d.as_ref()
        .chunks_exact(4)
        .take(8)
        .map(|c| {
            let n = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            f64::from(n) / f64::from(u32::MAX) * 2.0 - 1.0
        })
        .collect()
}

fn embeddings(body: &Value, model: &str) -> Result<Value, UpstreamError> {
    let bad = || {
        invalid_request(
            Operation::Embeddings,
            "'input' must be a string or a non-empty array of strings",
        )
    };
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let tokens: u64 = inputs.iter().map(|s| words(s)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": vector(s)}))
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
}

fn messages(body: &Value, model: &str, hash: &str, stream: bool) -> Result<UpstreamResponse, UpstreamError> {
    let (text, input) = reply(Operation::Messages, body)?;
    let output = words(&text);
    let id = format!("msg_echo_{hash}");
    if !stream {
        return Ok(full(json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output}
        })));
    }
    let mut events = vec![
        named_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": 0}
            }}),
        ),
        named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    events.extend(pieces(&text).into_iter().map(|p| {
        named_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        )
    }));
    events.push(named_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(named_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": output}}),
    ));
    events.push(named_event("message_stop", &json!({"type": "message_stop"})));
    Ok(sse(events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{collect, endpoint, parse_sse};
    use cordon_policy::ProviderKind;

    fn echo() -> Endpoint {
        let mut ep = endpoint(ProviderKind::Echo, None);
        ep.spec.upstream_model = Some("echo-1".into());
        ep
    }

    fn full_json(r: UpstreamResponse) -> Value {
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        match r.body {
            ResponseBody::Full(b) => serde_json::from_slice(&b).unwrap(),
            ResponseBody::Stream(_) => panic!("expected a full body"),
        }
    }

    #[test]
    fn pieces_concatenate_back() {
        assert_eq!(pieces("echo: hi  there"), vec!["echo: ", "hi  ", "there"]);
        assert_eq!(pieces("a"), vec!["a"]);
        assert!(pieces("").is_empty());
        for t in ["echo: a b\nc ", " x y", "echo: "] {
            assert_eq!(pieces(t).concat(), t);
        }
    }

    #[test]
    fn chat_non_stream() {
        let req = json!({"model": "public", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}, {"type": "text", "text": "world"}]}
        ]});
        let a = full_json(respond(&echo(), Operation::Chat, &req, false).unwrap());
        let b = full_json(respond(&echo(), Operation::Chat, &req, false).unwrap());
        assert_eq!(a, b, "deterministic");
        assert_eq!(a["object"], "chat.completion");
        assert_eq!(a["model"], "echo-1");
        assert_eq!(a["created"], 0);
        assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-echo-"));
        assert_eq!(a["id"].as_str().unwrap().len(), "chatcmpl-echo-".len() + 16);
        assert_eq!(a["choices"][0]["message"]["content"], "echo: hello world");
        assert_eq!(a["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            a["usage"],
            json!({"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9})
        );
    }

    #[tokio::test]
    async fn chat_stream() {
        let req = json!({"messages": [{"role": "user", "content": "the quick  brown fox"}],
                         "stream_options": {"include_usage": true}});
        let r = respond(&echo(), Operation::Chat, &req, true).unwrap();
        assert_eq!(r.content_type, "text/event-stream");
        let raw = collect(r.body).await.unwrap();
        let again = collect(respond(&echo(), Operation::Chat, &req, true).unwrap().body)
            .await
            .unwrap();
        assert_eq!(raw, again, "deterministic");
        let text = std::str::from_utf8(&raw).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let events = parse_sse(text);
        assert!(events.iter().all(|(name, _)| name.is_none()));
        let datas: Vec<&str> = events.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(*datas.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "echo-1")
        );
        let concat: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(concat, "echo: the quick  brown fox");
        // one chunk per word, plus role, stop and usage chunks
        assert_eq!(chunks.len(), 1 + 5 + 1 + 1);
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[7]["usage"]["completion_tokens"], 5);
        // the non-stream answer says the same
        let full = full_json(respond(&echo(), Operation::Chat, &req, false).unwrap());
        assert_eq!(full["choices"][0]["message"]["content"], concat.as_str());
    }

    #[test]
    fn embeddings_string_and_array() {
        let one =
            full_json(respond(&echo(), Operation::Embeddings, &json!({"input": "hello"}), false).unwrap());
        let two = full_json(
            respond(
                &echo(),
                Operation::Embeddings,
                &json!({"input": ["hello", "big world"]}),
                false,
            )
            .unwrap(),
        );
        assert_eq!(one["object"], "list");
        assert_eq!(one["model"], "echo-1");
        assert_eq!(two["data"].as_array().unwrap().len(), 2);
        assert_eq!(two["data"][1]["index"], 1);
        assert_eq!(
            one["data"][0]["embedding"], two["data"][0]["embedding"],
            "same input, same vector"
        );
        assert_ne!(two["data"][0]["embedding"], two["data"][1]["embedding"]);
        let v = one["data"][0]["embedding"].as_array().unwrap();
        assert_eq!(v.len(), 8);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(&x.as_f64().unwrap())));
        assert_eq!(two["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    }

    #[test]
    fn messages_non_stream() {
        let req = json!({"model": "claude", "max_tokens": 10, "system": "sys",
                         "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]});
        let a = full_json(respond(&echo(), Operation::Messages, &req, false).unwrap());
        assert_eq!(
            a,
            full_json(respond(&echo(), Operation::Messages, &req, false).unwrap())
        );
        assert!(a["id"].as_str().unwrap().starts_with("msg_echo_"));
        assert_eq!(a["type"], "message");
        assert_eq!(a["role"], "assistant");
        assert_eq!(a["model"], "echo-1");
        assert_eq!(a["content"], json!([{"type": "text", "text": "echo: hi there"}]));
        assert_eq!(a["stop_reason"], "end_turn");
        assert_eq!(a["usage"], json!({"input_tokens": 3, "output_tokens": 3}));
    }

    #[tokio::test]
    async fn messages_stream() {
        let req = json!({"messages": [{"role": "user", "content": "one two"}]});
        let raw = collect(respond(&echo(), Operation::Messages, &req, true).unwrap().body)
            .await
            .unwrap();
        let again = collect(respond(&echo(), Operation::Messages, &req, true).unwrap().body)
            .await
            .unwrap();
        assert_eq!(raw, again);
        let events = parse_sse(std::str::from_utf8(&raw).unwrap());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let datas: Vec<Value> = events
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        for (name, data) in names.iter().zip(&datas) {
            assert_eq!(data["type"], *name);
        }
        let concat: String = datas.iter().filter_map(|d| d["delta"]["text"].as_str()).collect();
        assert_eq!(concat, "echo: one two");
        assert_eq!(datas[0]["message"]["model"], "echo-1");
        assert_eq!(datas[6]["delta"]["stop_reason"], "end_turn");
        assert_eq!(datas[6]["usage"]["output_tokens"], 3);
    }

    #[test]
    fn invalid_shapes_are_400() {
        for (op, body) in [
            (Operation::Chat, json!({"model": "x"})),
            (Operation::Chat, json!({"messages": []})),
            (Operation::Chat, json!("just a string")),
            (Operation::Embeddings, json!({"input": [1, 2]})),
            (Operation::Embeddings, json!({})),
            (Operation::Messages, json!({"messages": "hi"})),
        ] {
            match respond(&echo(), op, &body, false) {
                Err(UpstreamError::Status { status: 400, body: b }) => {
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    assert_eq!(v["error"]["type"], "invalid_request_error", "{op}: {v}");
                    if op == Operation::Messages {
                        assert_eq!(v["type"], "error");
                    } else {
                        assert_eq!(v["error"]["code"], "invalid_request");
                    }
                }
                other => panic!("{op} {body}: expected a 400, got {:?}", other.map(|r| r.status)),
            }
        }
    }
}
