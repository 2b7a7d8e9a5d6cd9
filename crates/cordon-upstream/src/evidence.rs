//! What a complete (non-stream) response body says about itself: its `usage`, and what the
//! upstream reported about where it ran (processing evidence for the audit record).

use serde_json::{Map, Value};

use crate::operation::Operation;

/// Body fields that report where the upstream processed the request: (JSON pointer, evidence key).
const EVIDENCE: &[(Operation, &str, &str)] = &[
    // Anthropic Messages: where inference ran ("us", "global", ...).
    (Operation::Messages, "/usage/inference_geo", "inference_geo"),
    // OpenAI-compatible services that report a region in the body.
    (Operation::Chat, "/region", "region"),
    (Operation::Embeddings, "/region", "region"),
];

fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// The `usage` object of a complete response body; `None` when absent or not JSON.
pub fn extract_usage(_op: Operation, body: &[u8]) -> Option<Value> {
    parse(body)?.get("usage").filter(|u| u.is_object()).cloned()
}

/// What the upstream reported about where it ran, as an object (`{"inference_geo": "us"}`);
/// `None` when the body reports nothing.
pub fn extract_evidence(op: Operation, body: &[u8]) -> Option<Value> {
    let value = parse(body)?;
    let found: Map<String, Value> = EVIDENCE
        .iter()
        .filter(|(o, _, _)| *o == op)
        .filter_map(|(_, pointer, key)| {
            let v = value.pointer(pointer)?;
            (!v.is_null()).then(|| (key.to_string(), v.clone()))
        })
        .collect();
    (!found.is_empty()).then_some(Value::Object(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anthropic_usage_and_inference_geo() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "usage": {"input_tokens": 12, "output_tokens": 3, "inference_geo": "us"}
        })
        .to_string();
        let usage = extract_usage(Operation::Messages, body.as_bytes()).unwrap();
        assert_eq!(usage["input_tokens"], 12);
        assert_eq!(usage["inference_geo"], "us");
        assert_eq!(
            extract_evidence(Operation::Messages, body.as_bytes()),
            Some(json!({"inference_geo": "us"}))
        );
    }

    #[test]
    fn absent_is_none() {
        let body = br#"{"object":"chat.completion","choices":[]}"#;
        assert_eq!(extract_usage(Operation::Chat, body), None);
        assert_eq!(extract_evidence(Operation::Chat, body), None);
        assert_eq!(extract_usage(Operation::Chat, b"not json"), None);
        assert_eq!(
            extract_evidence(Operation::Messages, br#"{"usage":{"input_tokens":1}}"#),
            None
        );
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert_eq!(extract_usage(Operation::Chat, body).unwrap()["total_tokens"], 3);
    }
}
