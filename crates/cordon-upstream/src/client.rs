//! [`Upstreams`]: one pooled HTTP client for every endpoint, sending a request in its provider's
//! dialect under the three deadlines (connect, first byte, total) and handing back either a complete
//! body or the upstream's stream, chunk by chunk as it arrives.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cordon_policy::file::Limits;
use cordon_policy::{Endpoint, ProviderKind};
use futures_util::Stream;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, timeout_at};

use crate::error::UpstreamError;
use crate::operation::Operation;
use crate::request::RequestBody;
use crate::{dialect, echo};

/// How much of a non-2xx response body is kept for [`UpstreamError::Status`].
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// The largest complete (non-stream) success body read into memory.
pub const MAX_FULL_BODY: usize = 64 * 1024 * 1024;

/// A stream of body chunks exactly as they arrive; it ends with `Err` on a mid-stream failure or
/// when the total deadline passes.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// A successful (2xx) upstream answer whose headers have arrived.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The upstream's status (2xx).
    pub status: u16,
    /// The upstream's `content-type` (`application/octet-stream` when it sent none).
    pub content_type: String,
    pub body: ResponseBody,
}

/// The body of an [`UpstreamResponse`].
pub enum ResponseBody {
    /// A complete body: the request was not a stream, or the upstream answered a stream request
    /// with something other than `text/event-stream` (it is then read whole).
    Full(Bytes),
    /// A `text/event-stream` body, passed through chunk by chunk.
    Stream(BodyStream),
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseBody::Full(b) => f.debug_tuple("Full").field(b).finish(),
            ResponseBody::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Each endpoint's URL and headers per operation, built on first use and kept for the life of a
/// policy (one per policy load: a reload builds a new one, so a changed URL or credential variable
/// takes effect with the policy that names it). Index = the endpoint's index in the policy.
pub struct Targets {
    slots: Vec<[OnceLock<Option<Arc<dialect::Target>>>; 3]>,
}

impl Targets {
    pub fn new(endpoints: usize) -> Targets {
        Targets {
            slots: (0..endpoints).map(|_| Default::default()).collect(),
        }
    }
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targets")
            .field("endpoints", &self.slots.len())
            .finish()
    }
}

fn op_slot(op: Operation) -> usize {
    match op {
        Operation::Chat => 0,
        Operation::Embeddings => 1,
        Operation::Messages => 2,
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

const USER_AGENT_VALUE: &str = concat!("cordon/", env!("CARGO_PKG_VERSION"));

/// Resolves a credential variable name to its value.
type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The upstream sender. Cheap to clone: the pooled client and the lookup are shared.
///
/// The client keeps a keep-alive pool, sets `TCP_NODELAY`, speaks HTTP/1.1 to plain-http
/// upstreams (HTTP/2 only where TLS negotiates it), and never follows redirects or uses a proxy
/// from the environment: a redirect or an unconfigured proxy could carry the request to a place
/// the residency decision did not permit. A 3xx is returned as [`UpstreamError::Status`].
#[derive(Clone)]
pub struct Upstreams {
    client: HttpClient,
    first_byte: Duration,
    total: Duration,
    secrets: SecretLookup,
}

impl fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstreams")
            .field("first_byte", &self.first_byte)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// A sender whose credentials come from the environment (`api_key_env`).
    pub fn new(limits: &Limits) -> Result<Upstreams, UpstreamError> {
        Upstreams::with_secrets(limits, Arc::new(|name: &str| std::env::var(name).ok()))
    }

    /// A sender with its own credential lookup (tests; no process-wide environment changes).
    pub(crate) fn with_secrets(limits: &Limits, secrets: SecretLookup) -> Result<Upstreams, UpstreamError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(limits.connect_timeout_ms)));
        // The scheme is checked when the endpoint's URL is built; https goes through rustls.
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| UpstreamError::Config(format!("cannot set up TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // No proxy from the environment and no redirects: this client has neither.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Upstreams {
            client,
            first_byte: Duration::from_millis(limits.first_byte_timeout_ms),
            total: Duration::from_millis(limits.total_timeout_ms),
            secrets,
        })
    }

    /// Send `body` (the client's JSON request, already parsed) to `endpoint` for `op`.
    ///
    /// Rewrites `model` to the endpoint's upstream model (or its public model name); on Azure the
    /// deployment also goes in the path. Returns once the response headers arrived: the body is
    /// complete (non-stream) or a stream. A non-2xx answer is `Err(Status)` with its body (capped
    /// at [`MAX_ERROR_BODY`]). The first-byte wait is bounded by the earlier of the first-byte and
    /// total deadlines and reported as `Timeout("first byte")`; after the headers, the total
    /// deadline is `Timeout("total")`.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        op: Operation,
        body: &serde_json::Value,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if endpoint.spec.provider == ProviderKind::Echo {
            if let Some(ms) = endpoint.spec.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            return echo::respond(endpoint, op, body, stream);
        }
        let prepared = dialect::prepare(endpoint, op, body, stream, &*self.secrets)?;
        let body = serde_json::to_vec(&prepared.body)
            .map_err(|e| UpstreamError::Config(format!("cannot encode the request body: {e}")))?;
        self.send_prepared(endpoint, op, prepared.uri, &prepared.headers, body.into(), stream)
            .await
    }

    /// [`Upstreams::send`] for the endpoint at `index` of the policy `targets` was built for: the
    /// URL and headers come from `targets` (built once), and the body goes as the client sent it
    /// when the endpoint takes the model under the same name (see [`RequestBody`]), else it is
    /// encoded once, straight from the parsed request, with `model` rewritten.
    pub async fn send_with(
        &self,
        targets: &Targets,
        index: usize,
        endpoint: &Endpoint,
        op: Operation,
        body: &RequestBody,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let target = match targets.slots.get(index) {
            Some(slots) if endpoint.spec.provider != ProviderKind::Echo => slots[op_slot(op)]
                .get_or_init(|| dialect::target(endpoint, op, &*self.secrets).ok().map(Arc::new))
                .clone(),
            _ => None,
        };
        // Echo, and endpoints whose target cannot be built (the slow path reports why).
        let Some(target) = target else {
            return self.send(endpoint, op, body.tree(), body.stream()).await;
        };
        let encoded = match body.verbatim_for(endpoint) {
            Some(raw) => raw,
            None => dialect::encode_body(endpoint, op, body.tree(), body.stream())?.into(),
        };
        self.send_prepared(
            endpoint,
            op,
            target.uri.clone(),
            &target.headers,
            encoded,
            body.stream(),
        )
        .await
    }

    async fn send_prepared(
        &self,
        endpoint: &Endpoint,
        op: Operation,
        uri: Uri,
        headers: &HeaderMap,
        body: Bytes,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let start = Instant::now();
        let deadline = start + self.total;
        let first_byte_deadline = (start + self.first_byte).min(deadline);
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let h = request.headers_mut();
        h.reserve(headers.len() + 1);
        for (name, value) in headers {
            h.append(name, value.clone());
        }
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));

        let response = match timeout_at(first_byte_deadline, self.client.request(request)).await {
            Err(_) => Err(UpstreamError::Timeout("first byte")),
            Ok(Err(e)) => Err(UpstreamError::from_send(&e)),
            Ok(Ok(r)) => Ok(r),
        };
        let response = response.inspect_err(|e| {
            tracing::debug!(endpoint = %endpoint.id(), op = %op, error = %e, "upstream request failed");
        })?;

        let status = response.status().as_u16();
        tracing::debug!(endpoint = %endpoint.id(), op = %op, status, "upstream answered");
        if !response.status().is_success() {
            // The status is what matters; a body cut short by the deadline is still worth passing on.
            let body = match read_capped(response.into_body(), MAX_ERROR_BODY, deadline).await {
                Ok(b) | Err((b, _)) => b,
            };
            return Err(UpstreamError::Status { status, body });
        }

        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let is_sse = content_type.to_ascii_lowercase().starts_with("text/event-stream");
        let body = if stream && is_sse {
            ResponseBody::Stream(passthrough(response.into_body(), deadline))
        } else {
            let bytes = read_capped(response.into_body(), MAX_FULL_BODY, deadline)
                .await
                .map_err(|(_, e)| e)?;
            ResponseBody::Full(bytes)
        };
        Ok(UpstreamResponse {
            status,
            content_type,
            body,
        })
    }
}

/// The next data chunk of a body (trailers and other frames are skipped), `None` at its end.
async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Read a whole body, at most `cap` bytes, before `deadline`. On failure, returns what was read.
async fn read_capped(
    mut body: Incoming,
    cap: usize,
    deadline: Instant,
) -> Result<Bytes, (Bytes, UpstreamError)> {
    let mut buf = BytesMut::new();
    loop {
        match timeout_at(deadline, next_chunk(&mut body)).await {
            Err(_) => return Err((buf.freeze(), UpstreamError::Timeout("total"))),
            Ok(Some(Err(e))) => return Err((buf.freeze(), UpstreamError::Body(UpstreamError::describe(&e)))),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Ok(chunk))) => {
                // A body that arrives in one piece is handed on without a copy.
                if buf.is_empty() && chunk.len() <= cap && body.is_end_stream() {
                    return Ok(chunk);
                }
                let room = cap - buf.len();
                if chunk.len() > room {
                    buf.extend_from_slice(&chunk[..room]);
                    return Err((
                        buf.freeze(),
                        UpstreamError::Body(format!("response body exceeds {cap} bytes")),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// The response body as a stream of chunks as they arrive, ending with `Err` on failure or when
/// `deadline` passes.
fn passthrough(body: Incoming, deadline: Instant) -> BodyStream {
    Box::pin(futures_util::stream::unfold(
        Some(body),
        move |state| async move {
            let mut body = state?;
            match timeout_at(deadline, next_chunk(&mut body)).await {
                Err(_) => Some((Err(UpstreamError::Timeout("total")), None)),
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(e))) => Some((Err(UpstreamError::Body(UpstreamError::describe(&e))), None)),
            }
        },
    ))
}

#[cfg(test)]
mod tests;
