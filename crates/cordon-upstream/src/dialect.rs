//! How each network provider is addressed: the URL shape and the headers, as a table, plus the
//! request-body rewrite every provider shares (the public model name becomes the upstream one).

use cordon_policy::{Endpoint, ProviderKind};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use crate::error::UpstreamError;
use crate::operation::{Operation, supports};
use crate::placement;

/// Azure OpenAI `api-version` when the endpoint names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";
/// Anthropic `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Where the operation path goes.
#[derive(Clone, Copy)]
enum Route {
    /// `{url}/{op path}`.
    Base,
    /// `{url}/openai/deployments/{deployment}/{op path}?api-version={v}`.
    AzureDeployment,
}

/// How the credential is sent.
#[derive(Clone, Copy)]
enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `<name>: <secret>`.
    Header(&'static str),
}

struct Dialect {
    provider: ProviderKind,
    route: Route,
    auth: Auth,
    fixed_headers: &'static [(&'static str, &'static str)],
}

const DIALECTS: &[Dialect] = &[
    Dialect {
        provider: ProviderKind::Openai,
        route: Route::Base,
        auth: Auth::Bearer,
        fixed_headers: &[],
    },
    Dialect {
        provider: ProviderKind::AzureOpenai,
        route: Route::AzureDeployment,
        auth: Auth::Header("api-key"),
        fixed_headers: &[],
    },
    Dialect {
        provider: ProviderKind::Anthropic,
        route: Route::Base,
        auth: Auth::Header("x-api-key"),
        fixed_headers: &[("anthropic-version", ANTHROPIC_VERSION)],
    },
];

/// The path of an operation below the provider's base.
fn op_path(op: Operation) -> &'static [&'static str] {
    match op {
        Operation::Chat => &["chat", "completions"],
        Operation::Embeddings => &["embeddings"],
        Operation::Messages => &["messages"],
    }
}

/// A request ready to send.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub uri: hyper::Uri,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The model name sent upstream.
pub(crate) fn upstream_model(endpoint: &Endpoint) -> &str {
    endpoint.spec.upstream_model.as_deref().unwrap_or(&endpoint.model)
}

/// A 400 in the operation's own error envelope (OpenAI's, or Anthropic's on Messages).
pub(crate) fn invalid_request(op: Operation, message: &str) -> UpstreamError {
    let body = match op {
        Operation::Messages => json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message}
        }),
        Operation::Chat | Operation::Embeddings => json!({
            "error": {"type": "invalid_request_error", "code": "invalid_request", "message": message, "param": null}
        }),
    };
    UpstreamError::Status {
        status: 400,
        body: body.to_string().into_bytes().into(),
    }
}

/// The client's body with `model` rewritten and `stream: true` set on stream requests.
pub(crate) fn rewrite_body(
    endpoint: &Endpoint,
    op: Operation,
    body: &Value,
    stream: bool,
) -> Result<Value, UpstreamError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid_request(op, "the request body must be a JSON object"));
    };
    let mut obj = obj.clone();
    obj.insert(
        "model".to_string(),
        Value::String(upstream_model(endpoint).to_string()),
    );
    if stream && op != Operation::Embeddings {
        obj.insert("stream".to_string(), Value::Bool(true));
    }
    obj.retain(|k, _| !placement::is_placement_field(k));
    if let Some((field, value)) = placement::for_endpoint(endpoint) {
        obj.insert(field.to_string(), Value::String(value.to_string()));
    }
    Ok(Value::Object(obj))
}

/// The client's body with `model` rewritten and `stream: true` set on stream requests, serialized
/// straight from the parsed request (no copy of the request's JSON tree): the same object as
/// [`rewrite_body`] produces (keys already present keep their place, added ones come last).
pub(crate) fn encode_body(
    endpoint: &Endpoint,
    op: Operation,
    body: &Value,
    stream: bool,
) -> Result<Vec<u8>, UpstreamError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid_request(op, "the request body must be a JSON object"));
    };
    let rewritten = Rewritten {
        obj,
        model: upstream_model(endpoint),
        stream: stream && op != Operation::Embeddings,
        placement: placement::for_endpoint(endpoint),
    };
    serde_json::to_vec(&rewritten)
        .map_err(|e| UpstreamError::Config(format!("cannot encode the request body: {e}")))
}

struct Rewritten<'a> {
    obj: &'a serde_json::Map<String, Value>,
    model: &'a str,
    stream: bool,
    /// The placement field Cordon sets (see [`placement`]); the client's is dropped either way.
    placement: Option<(&'static str, &'a str)>,
}

impl serde::Serialize for Rewritten<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let has_model = self.obj.contains_key("model");
        let has_stream = self.obj.contains_key("stream");
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.obj {
            match k.as_str() {
                "model" => m.serialize_entry(k, self.model)?,
                "stream" if self.stream => m.serialize_entry(k, &true)?,
                k if placement::is_placement_field(k) => {}
                _ => m.serialize_entry(k, v)?,
            }
        }
        if let Some((field, value)) = self.placement {
            m.serialize_entry(field, value)?;
        }
        if !has_model {
            m.serialize_entry("model", self.model)?;
        }
        if self.stream && !has_stream {
            m.serialize_entry("stream", &true)?;
        }
        m.end()
    }
}

/// Where and how a network endpoint is called for one operation: built once per policy (see
/// [`crate::Targets`]), not per request.
#[derive(Debug)]
pub(crate) struct Target {
    pub uri: hyper::Uri,
    pub headers: HeaderMap,
}

/// The request URI for `url`, and an `Authorization: Basic` value when the URL carries user info
/// (which never goes on the wire as part of the URI).
pub(crate) fn uri(url: &Url) -> Result<(hyper::Uri, Option<HeaderValue>), UpstreamError> {
    let auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        use base64::Engine as _;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(url.username());
        let pass = url.password().map(decode).unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| UpstreamError::Config("url user info is not usable".into()))?;
        value.set_sensitive(true);
        Some(value)
    };
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    // The URL itself is never echoed: it may carry userinfo.
    let uri = bare
        .as_str()
        .parse::<hyper::Uri>()
        .map_err(|_| UpstreamError::Config("url is not a valid request URI".into()))?;
    Ok((uri, auth))
}

/// Build the URL and headers for a network provider. `secret` resolves a credential variable.
pub(crate) fn target(
    endpoint: &Endpoint,
    op: Operation,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Target, UpstreamError> {
    let spec = &endpoint.spec;
    let provider = spec.provider;
    if !supports(provider, op) {
        return Err(UpstreamError::Config(format!(
            "endpoint '{}': provider {} does not serve {op}",
            spec.id,
            provider.as_str()
        )));
    }
    let dialect = DIALECTS.iter().find(|d| d.provider == provider).ok_or_else(|| {
        UpstreamError::Config(format!(
            "endpoint '{}': provider {} has no network dialect",
            spec.id,
            provider.as_str()
        ))
    })?;

    let url = build_url(endpoint, dialect.route, op)?;

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in dialect.fixed_headers {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    if let Some(var) = &spec.api_key_env {
        let key = secret(var).ok_or_else(|| {
            UpstreamError::Config(format!(
                "endpoint '{}': environment variable {var} is not set",
                spec.id
            ))
        })?;
        let (name, text) = match dialect.auth {
            Auth::Bearer => (AUTHORIZATION, format!("Bearer {key}")),
            Auth::Header(name) => (HeaderName::from_static(name), key),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            UpstreamError::Config(format!(
                "endpoint '{}': the value of {var} is not a valid header value",
                spec.id
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let (uri, auth) = uri(&url)?;
    if let Some(auth) = auth {
        headers.entry(AUTHORIZATION).or_insert(auth);
    }
    Ok(Target { uri, headers })
}

/// Build the URL, headers and body for a network provider. `secret` resolves a credential variable.
pub(crate) fn prepare(
    endpoint: &Endpoint,
    op: Operation,
    body: &Value,
    stream: bool,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Prepared, UpstreamError> {
    let Target { uri, headers } = target(endpoint, op, secret)?;
    Ok(Prepared {
        uri,
        headers,
        body: rewrite_body(endpoint, op, body, stream)?,
    })
}

fn build_url(endpoint: &Endpoint, route: Route, op: Operation) -> Result<Url, UpstreamError> {
    let spec = &endpoint.spec;
    let config = |what: &str| UpstreamError::Config(format!("endpoint '{}': {what}", spec.id));
    let base = spec.url.as_deref().ok_or_else(|| config("has no url"))?;
    // The URL itself is never echoed: it may carry userinfo.
    let mut url = Url::parse(base.trim_end_matches('/')).map_err(|_| config("url is not a valid URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(config("url must be http or https"));
    }
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|_| config("url cannot take a path"))?;
        segments.pop_if_empty();
        if let Route::AzureDeployment = route {
            let deployment = spec
                .deployment
                .as_deref()
                .ok_or_else(|| config("azure_openai needs a deployment"))?;
            segments.extend(["openai", "deployments", deployment]);
        }
        segments.extend(op_path(op));
    }
    if let Route::AzureDeployment = route {
        let version = spec.api_version.as_deref().unwrap_or(DEFAULT_AZURE_API_VERSION);
        url.query_pairs_mut().append_pair("api-version", version);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::endpoint;

    #[test]
    fn user_info_becomes_basic_auth_and_leaves_the_uri() {
        let url = Url::parse("https://us%65r:p%40ss@example.test/v1/chat/completions").unwrap();
        let (u, auth) = uri(&url).unwrap();
        assert_eq!(u.to_string(), "https://example.test/v1/chat/completions");
        // base64("user:p@ss")
        assert_eq!(auth.unwrap().to_str().unwrap(), "Basic dXNlcjpwQHNz");
        let (u, auth) = uri(&Url::parse("http://127.0.0.1:9/v1").unwrap()).unwrap();
        assert_eq!((u.to_string().as_str(), auth), ("http://127.0.0.1:9/v1", None));
    }

    fn no_secret(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn openai_url_and_bearer() {
        let mut ep = endpoint(ProviderKind::Openai, Some("http://127.0.0.1:9000/v1/"));
        ep.spec.api_key_env = Some("KEY".into());
        ep.spec.upstream_model = Some("gpt-up".into());
        let p = prepare(
            &ep,
            Operation::Chat,
            &json!({"model": "m", "messages": []}),
            true,
            &|v| (v == "KEY").then(|| "sk-test".to_string()),
        )
        .unwrap();
        assert_eq!(p.uri.to_string(), "http://127.0.0.1:9000/v1/chat/completions");
        assert_eq!(p.headers["authorization"], "Bearer sk-test");
        assert!(p.headers["authorization"].is_sensitive());
        assert_eq!(p.body["model"], "gpt-up");
        assert_eq!(p.body["stream"], true);
        let p = prepare(&ep, Operation::Embeddings, &json!({"input": "x"}), false, &|_| {
            Some("k".into())
        })
        .unwrap();
        assert_eq!(p.uri.to_string(), "http://127.0.0.1:9000/v1/embeddings");
        assert!(p.body.get("stream").is_none());
    }

    #[test]
    fn azure_url_has_deployment_and_version() {
        let mut ep = endpoint(ProviderKind::AzureOpenai, Some("https://x.openai.azure.com"));
        ep.spec.deployment = Some("gpt4o-eu".into());
        let p = prepare(&ep, Operation::Chat, &json!({"messages": []}), false, &no_secret).unwrap();
        assert_eq!(
            p.uri.to_string(),
            "https://x.openai.azure.com/openai/deployments/gpt4o-eu/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(p.body["model"], "m");
        ep.spec.api_version = Some("2025-01-01-preview".into());
        let p = prepare(&ep, Operation::Embeddings, &json!({}), false, &no_secret).unwrap();
        assert_eq!(
            p.uri.to_string(),
            "https://x.openai.azure.com/openai/deployments/gpt4o-eu/embeddings?api-version=2025-01-01-preview"
        );
    }

    #[test]
    fn missing_secret_and_unsupported_op_are_config_errors() {
        let mut ep = endpoint(ProviderKind::Anthropic, Some("http://h/v1"));
        ep.spec.api_key_env = Some("CORDON_TEST_SURELY_UNSET".into());
        let e = prepare(&ep, Operation::Messages, &json!({}), false, &no_secret).unwrap_err();
        assert!(
            matches!(&e, UpstreamError::Config(m) if m.contains("CORDON_TEST_SURELY_UNSET")),
            "{e:?}"
        );
        let e = prepare(&ep, Operation::Chat, &json!({}), false, &no_secret).unwrap_err();
        assert!(matches!(e, UpstreamError::Config(_)));
        let e = prepare(&ep, Operation::Messages, &json!([1]), false, &|_| {
            Some("k".into())
        })
        .unwrap_err();
        assert!(matches!(e, UpstreamError::Status { status: 400, .. }));
    }

    #[test]
    fn the_client_never_chooses_where_anthropic_runs() {
        let mut ep = endpoint(ProviderKind::Anthropic, Some("http://h"));
        let body = json!({"model": "m", "messages": [], "inference_geo": "global"});
        let sent = |ep: &Endpoint| {
            let bytes = encode_body(ep, Operation::Messages, &body, false).unwrap();
            let got: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, rewrite_body(ep, Operation::Messages, &body, false).unwrap());
            got
        };
        // Declared at one of Anthropic's geographies: Cordon sets it, whatever the client said.
        ep.location.regions = vec!["anthropic:us".parse().unwrap()];
        assert_eq!(sent(&ep)["inference_geo"], "us");
        let quiet = json!({"model": "m", "messages": []});
        let bytes = encode_body(&ep, Operation::Messages, &quiet, false).unwrap();
        let got: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got["inference_geo"], "us", "set even when the client sent none");
        // Anywhere else (a cloud region, or several geographies): the client's value is dropped.
        ep.location.regions = vec!["aws:us-east-1".parse().unwrap()];
        assert_eq!(sent(&ep).get("inference_geo"), None);
        ep.location.regions = vec![
            "anthropic:us".parse().unwrap(),
            "anthropic:global".parse().unwrap(),
        ];
        assert_eq!(sent(&ep).get("inference_geo"), None);
        // Other providers never get the client's value either.
        let oa = endpoint(ProviderKind::Openai, Some("http://h/v1"));
        let bytes = encode_body(&oa, Operation::Chat, &body, false).unwrap();
        let got: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got.get("inference_geo"), None);
        assert_eq!(got["messages"], json!([]));
    }

    #[test]
    fn encoded_body_is_the_rewritten_body() {
        let mut ep = endpoint(ProviderKind::Openai, Some("http://h/v1"));
        for (upstream, body, op, stream) in [
            (
                None,
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                Operation::Chat,
                false,
            ),
            (
                Some("up"),
                json!({"messages": [], "stream": false, "model": "x"}),
                Operation::Chat,
                true,
            ),
            (
                Some("up"),
                json!({"input": "x", "stream": false}),
                Operation::Embeddings,
                true,
            ),
            (None, json!({"max_tokens": 3}), Operation::Messages, true),
        ] {
            ep.spec.upstream_model = upstream.map(str::to_string);
            let bytes = encode_body(&ep, op, &body, stream).unwrap();
            let got: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, rewrite_body(&ep, op, &body, stream).unwrap());
        }
        let e = encode_body(&ep, Operation::Chat, &json!([1]), false).unwrap_err();
        assert!(matches!(e, UpstreamError::Status { status: 400, .. }));
    }

    #[test]
    fn bad_url_error_does_not_echo_it() {
        let ep = endpoint(ProviderKind::Openai, Some("not a url secret-token"));
        let e = prepare(&ep, Operation::Chat, &json!({}), false, &no_secret).unwrap_err();
        assert!(!e.to_string().contains("secret-token"));
    }
}
