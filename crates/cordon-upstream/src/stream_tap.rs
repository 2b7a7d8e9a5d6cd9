//! What a streamed (SSE) response says about itself, read while its chunks pass through untouched:
//! the `usage` and the processing evidence a complete body would carry, taken from the events that
//! carry them. OpenAI-compatible streams put `usage` on a final chunk (when the caller asked for
//! it); Anthropic's Messages stream puts it on `message_start` (`message.usage`, with
//! `inference_geo`) and updates it on `message_delta` (`usage`).
//!
//! Only `data:` lines that mention `usage` or `region` are parsed; a line longer than
//! [`MAX_LINE`] is skipped (never buffered whole), so the tap's memory stays bounded.

use serde_json::{Map, Value};

use crate::evidence::evidence_of;
use crate::operation::Operation;

/// The longest SSE line the tap keeps to parse.
pub const MAX_LINE: usize = 1 << 20;

/// Watches one streamed response (see the module docs).
#[derive(Debug)]
pub struct StreamTap {
    op: Operation,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The current line grew past [`MAX_LINE`]: skip to its end.
    skipping: bool,
    usage: Map<String, Value>,
    region: Option<Value>,
}

impl StreamTap {
    pub fn new(op: Operation) -> StreamTap {
        StreamTap {
            op,
            line: Vec::new(),
            skipping: false,
            usage: Map::new(),
            region: None,
        }
    }

    /// The next chunk of the stream, as sent to the client.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            if self.skipping {
                self.skipping = false;
            } else {
                self.line.extend_from_slice(&chunk[..i]);
                self.end_line();
            }
            self.line.clear();
            chunk = &chunk[i + 1..];
        }
        if self.skipping {
            return;
        }
        if self.line.len() + chunk.len() > MAX_LINE {
            self.skipping = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(chunk);
        }
    }

    fn end_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let at = |word: &[u8]| data.windows(word.len()).position(|w| w == word);
        // OpenAI-compatible streams asked for usage send `"usage":null` on every chunk but the
        // last: only a usage that is not null (or a region) is worth parsing the event for.
        let usage = at(b"\"usage\"").filter(|&i| {
            let rest = data[i + 7..].trim_ascii_start();
            let value = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
            !value.starts_with(b"null")
        });
        if usage.is_none() && at(b"\"region\"").is_none() {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii_start()) else {
            return;
        };
        for usage in [event.pointer("/message/usage"), event.get("usage")] {
            if let Some(Value::Object(u)) = usage {
                // Later events update earlier ones (message_delta's final output_tokens).
                self.usage.extend(u.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if let Some(r) = event.get("region").filter(|r| !r.is_null()) {
            self.region = Some(r.clone());
        }
    }

    /// What the stream reported: `(usage, evidence)`, as
    /// [`crate::extract_usage_and_evidence`] gives them for a complete body.
    pub fn finish(self) -> (Option<Value>, Option<Value>) {
        let mut whole = Map::new();
        if !self.usage.is_empty() {
            whole.insert("usage".into(), Value::Object(self.usage));
        }
        if let Some(r) = self.region {
            whole.insert("region".into(), r);
        }
        let whole = Value::Object(whole);
        let usage = whole.get("usage").cloned();
        (usage, evidence_of(self.op, &whole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feed `text` in pieces of `n` bytes (events split anywhere, as TCP may).
    fn tap(op: Operation, text: &str, n: usize) -> (Option<Value>, Option<Value>) {
        let mut t = StreamTap::new(op);
        for piece in text.as_bytes().chunks(n) {
            t.feed(piece);
        }
        t.finish()
    }

    const ANTHROPIC: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1,\"inference_geo\":\"us\"}}}\r\n\r\n\
event: content_block_delta\r\n\
data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"the word usage in text\"}}\r\n\r\n\
event: message_delta\r\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":42}}\r\n\r\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";

    #[test]
    fn anthropic_usage_and_inference_geo_are_read_however_the_stream_is_cut() {
        for n in [1, 2, 7, 64, 4096] {
            let (usage, evidence) = tap(Operation::Messages, ANTHROPIC, n);
            assert_eq!(
                usage,
                Some(json!({"input_tokens": 12, "output_tokens": 42, "inference_geo": "us"})),
                "pieces of {n}"
            );
            assert_eq!(evidence, Some(json!({"inference_geo": "us"})), "pieces of {n}");
        }
    }

    #[test]
    fn openai_final_usage_chunk_is_read() {
        let text = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8},\"region\":\"eu-west-1\"}\n\n\
data: [DONE]\n\n";
        let (usage, evidence) = tap(Operation::Chat, text, 5);
        assert_eq!(
            usage,
            Some(json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}))
        );
        assert_eq!(evidence, Some(json!({"region": "eu-west-1"})));
    }

    #[test]
    fn null_usage_chunks_are_not_parsed_and_do_not_clear_the_final_usage() {
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\": null}\n\n\
data: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\n\
data: {\"choices\":[],\"usage\":null}\n\n";
        let (usage, _) = tap(Operation::Chat, text, 9);
        assert_eq!(usage, Some(json!({"total_tokens": 4})));
    }

    #[test]
    fn a_stream_without_usage_reports_nothing_and_odd_lines_are_ignored() {
        let text = "data: {\"choices\":[]}\n\ndata: {\"usage\": not json\n: comment\n\ndata: [DONE]\n\n";
        assert_eq!(tap(Operation::Chat, text, 3), (None, None));
    }

    #[test]
    fn an_overlong_line_is_skipped_not_buffered() {
        let mut t = StreamTap::new(Operation::Chat);
        t.feed(b"data: {\"usage\":{\"x\":\"");
        t.feed(&vec![b'a'; MAX_LINE]);
        assert!(t.line.len() <= MAX_LINE);
        t.feed(b"\"}}\n\ndata: {\"usage\":{\"total_tokens\":1}}\n\n");
        assert_eq!(t.finish().0, Some(json!({"total_tokens": 1})));
    }
}
