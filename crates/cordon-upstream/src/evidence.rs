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
    evidence_of(op, &parse(body)?)
}

/// The fields [`extract_usage_and_evidence`] reads; everything else is skipped without building a
/// tree.
#[derive(serde::Deserialize)]
struct Probe {
    usage: Option<Value>,
    region: Option<Value>,
}

/// [`extract_usage`] and [`extract_evidence`] in one pass over the body.
pub fn extract_usage_and_evidence(op: Operation, body: &[u8]) -> (Option<Value>, Option<Value>) {
    // A derived struct would also accept an array (fields by position): probe objects only.
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let probed = if is_object {
        serde_json::from_slice::<Probe>(body).ok()
    } else {
        None
    };
    let value = match probed {
        Some(p) => {
            let mut obj = Map::new();
            if let Some(u) = p.usage {
                obj.insert("usage".to_string(), u);
            }
            if let Some(r) = p.region {
                obj.insert("region".to_string(), r);
            }
            Value::Object(obj)
        }
        // Not an object, or an odd one (e.g. a duplicated key): read it the general way.
        None => match parse(body) {
            Some(v) => v,
            None => return (None, None),
        },
    };
    let usage = value.get("usage").filter(|u| u.is_object()).cloned();
    (usage, evidence_of(op, &value))
}

pub(crate) fn evidence_of(op: Operation, value: &Value) -> Option<Value> {
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
    fn one_pass_agrees_with_the_two() {
        let bodies: [&[u8]; 7] = [
            br#"{"usage":{"input_tokens":1,"inference_geo":"us"},"region":"eu"}"#,
            br#"{"object":"chat.completion","choices":[],"region":null}"#,
            br#"{"usage":3,"region":{"a":1}}"#,
            br#"{"usage":{"a":1},"usage":{"b":2}}"#,
            br#"[1,2]"#,
            b"not json",
            br#"{"id":"x","usage":{"prompt_tokens":1},"nested":{"usage":{"x":1}}}"#,
        ];
        for body in bodies {
            for op in [Operation::Chat, Operation::Embeddings, Operation::Messages] {
                assert_eq!(
                    extract_usage_and_evidence(op, body),
                    (extract_usage(op, body), extract_evidence(op, body)),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
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
