//! [`RequestBody`]: a client's JSON request as received, with the two fields the gateway decides on
//! (`model`, `stream`), and the parsed tree only when something needs it.
//!
//! Most requests go upstream unchanged: the endpoint serves the model under the name the client
//! asked for, and `stream` is already what the client sent. Parsing such a body into a
//! `serde_json::Value` and writing it out again costs an allocation per key and value on every
//! request, for nothing. So [`RequestBody::parse`] first reads only `model` and `stream` (while still
//! checking that the whole body is valid JSON), and the bytes are forwarded as they came.
//!
//! That shortcut is taken only when the body is unambiguous: one JSON object with exactly one
//! top-level `model` (a string) and at most one `stream` (a bool or null). A body with a duplicated
//! `model` key could otherwise be decided under one model and served by an upstream that reads the
//! other, so it goes the slow way: parsed whole, and re-encoded with the single `model` Cordon
//! decided on.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// Why a request body cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the request body must be a JSON object")]
    NotObject,
    #[error("the request has no 'model' (a string)")]
    NoModel,
}

/// A client's request body (see the module docs).
#[derive(Debug)]
pub struct RequestBody {
    raw: Bytes,
    model: String,
    stream: bool,
    /// `raw` may be forwarded as-is to an endpoint that takes `model` under the same name.
    verbatim: bool,
    tree: OnceLock<Value>,
}

/// What the fast path reads. Other keys are skipped (serde_json still checks their syntax), and a
/// derived struct rejects a duplicated field, which is what keeps ambiguous bodies off the verbatim
/// path.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    /// A field that chooses the processing location ([`crate::placement`]): its presence keeps
    /// the body off the verbatim path, so the rewrite drops it. One field here per entry of that
    /// table (a test checks it); serde matches keys after unescaping, so `"inference\u005fgeo"`
    /// is caught too.
    #[serde(default)]
    inference_geo: Present,
}

/// Whether a key was there at all, whatever its value (`Option` would read `null` as absent).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// serde_json checks the escapes of a string it skips, but not whether a `\uD800`-`\uDFFF` escape is
/// paired, as it does for a string it keeps. A body that may hold one takes the full parse, so the
/// fast path accepts nothing the full parse rejects.
fn may_hold_surrogate_escape(raw: &[u8]) -> bool {
    raw.windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && (w[2] == b'd' || w[2] == b'D'))
}

impl RequestBody {
    /// Read `model` and `stream` from a client's body; errors say what is wrong and where.
    pub fn parse(raw: Bytes) -> Result<RequestBody, BodyError> {
        let head = (!may_hold_surrogate_escape(&raw))
            .then(|| serde_json::from_slice::<Head<'_>>(&raw).ok())
            .flatten()
            .map(|h| {
                let placement = h.inference_geo.0;
                (h.model.into_owned(), h.stream.unwrap_or(false), placement)
            });
        if let Some((model, stream, placement)) = head {
            return Ok(RequestBody {
                raw,
                model,
                stream,
                verbatim: !placement,
                tree: OnceLock::new(),
            });
        }
        // The slow path decides, and words the error.
        let tree: Value = serde_json::from_slice(&raw).map_err(|e| BodyError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
        let obj = tree.as_object().ok_or(BodyError::NotObject)?;
        let model = obj
            .get("model")
            .and_then(Value::as_str)
            .ok_or(BodyError::NoModel)?
            .to_string();
        let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        Ok(RequestBody {
            raw,
            model,
            stream,
            verbatim: false,
            tree: OnceLock::from(tree),
        })
    }

    /// The model the client asked for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the client asked for a stream (`"stream": true`).
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The body as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The parsed body (parsed on first use when the fast path was taken).
    pub fn tree(&self) -> &Value {
        self.tree.get_or_init(|| {
            // `raw` was checked to be a JSON object by `parse`; a failure here cannot happen, and
            // an empty object would then be refused upstream rather than panic.
            serde_json::from_slice(&self.raw).unwrap_or_else(|_| Value::Object(Default::default()))
        })
    }

    /// The bytes to send unchanged to `endpoint`, if that needs no rewrite: it takes the model
    /// under the client's name and Cordon sets no placement field for it.
    pub(crate) fn verbatim_for(&self, endpoint: &cordon_policy::Endpoint) -> Option<Bytes> {
        (self.verbatim
            && crate::dialect::upstream_model(endpoint) == self.model
            && crate::placement::for_endpoint(endpoint).is_none())
        .then(|| self.raw.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::endpoint;
    use cordon_policy::ProviderKind;

    /// An OpenAI endpoint serving the client's model under `upstream` (None: the same name).
    fn to(model: &str) -> cordon_policy::Endpoint {
        let mut ep = endpoint(ProviderKind::Openai, Some("http://h/v1"));
        ep.model = "m".into();
        ep.spec.upstream_model = Some(model.to_string());
        ep
    }

    fn parse(s: &str) -> Result<RequestBody, BodyError> {
        RequestBody::parse(Bytes::from(s.to_string()))
    }

    #[test]
    fn plain_body_is_forwarded_verbatim() {
        let b = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#).unwrap();
        assert_eq!((b.model(), b.stream()), ("m", true));
        assert_eq!(b.verbatim_for(&to("m")).as_deref(), Some(b.raw().as_ref()));
        assert_eq!(
            b.verbatim_for(&to("other")),
            None,
            "a renamed model needs the rewrite"
        );
        assert_eq!(b.tree()["messages"][0]["content"], "hi");
    }

    #[test]
    fn escaped_model_name_is_read_unescaped() {
        let b = parse(r#"{"model":"a\u002db"}"#).unwrap();
        assert_eq!(b.model(), "a-b");
        assert!(b.verbatim_for(&to("a-b")).is_some());
        // A surrogate pair is fine; it takes the full parse (see `may_hold_surrogate_escape`).
        let b = parse(r#"{"model":"m","x":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(b.tree()["x"], "\u{1f600}");
        assert_eq!(b.verbatim_for(&to("m")), None);
    }

    #[test]
    fn duplicated_model_is_never_forwarded_verbatim() {
        // serde_json's tree keeps the last one; the upstream then gets exactly that one.
        let b = parse(r#"{"model":"eu-ok","messages":[],"model":"us-only"}"#).unwrap();
        assert_eq!(b.model(), "us-only");
        assert_eq!(b.verbatim_for(&to("us-only")), None);
        assert_eq!(b.verbatim_for(&to("eu-ok")), None);
        let b = parse(r#"{"model":"m","stream":false,"stream":true}"#).unwrap();
        assert!(b.stream());
        assert_eq!(b.verbatim_for(&to("m")), None);
    }

    #[test]
    fn odd_stream_values_mean_no_stream_as_before() {
        for (body, verbatim) in [
            (r#"{"model":"m","stream":null}"#, true),
            (r#"{"model":"m","stream":"yes"}"#, false),
            (r#"{"model":"m","stream":1}"#, false),
        ] {
            let b = parse(body).unwrap();
            assert!(!b.stream(), "{body}");
            assert_eq!(b.verbatim_for(&to("m")).is_some(), verbatim, "{body}");
        }
    }

    #[test]
    fn errors_are_those_of_the_full_parse() {
        assert_eq!(parse("[1]").unwrap_err(), BodyError::NotObject);
        assert_eq!(parse(r#"{"messages":[]}"#).unwrap_err(), BodyError::NoModel);
        assert_eq!(parse(r#"{"model":7}"#).unwrap_err(), BodyError::NoModel);
        assert_eq!(parse(r#"{"model":null}"#).unwrap_err(), BodyError::NoModel);
        assert_eq!(
            parse("{\"model\":\"m\",\n\"x\":}").unwrap_err(),
            BodyError::NotJson { line: 2, column: 5 }
        );
        assert!(matches!(
            parse(r#"{"model":"m"} trailing"#).unwrap_err(),
            BodyError::NotJson { .. }
        ));
        assert!(matches!(
            parse(r#"{"model":"m","x":"\ud800"}"#).unwrap_err(),
            BodyError::NotJson { .. }
        ));
    }

    #[test]
    fn a_placement_field_keeps_the_body_off_the_verbatim_path() {
        for field in crate::placement::fields() {
            for body in [
                format!(r#"{{"model":"m","{field}":"global"}}"#),
                format!(r#"{{"model":"m","{field}":null}}"#),
                // serde matches the key after unescaping it.
                format!(r#"{{"model":"m","{}":"global"}}"#, field.replace('_', "\\u005f")),
            ] {
                let b = parse(&body).unwrap();
                assert_eq!(b.verbatim_for(&to("m")), None, "{body}");
            }
        }
        // An Anthropic endpoint at one of Anthropic's geographies always gets the field set.
        let mut ep = endpoint(ProviderKind::Anthropic, Some("http://h"));
        ep.location.regions = vec!["anthropic:us".parse().unwrap()];
        let b = parse(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(b.verbatim_for(&ep), None);
        ep.location.regions = vec!["aws:us-east-1".parse().unwrap()];
        assert!(b.verbatim_for(&ep).is_some());
    }
}
