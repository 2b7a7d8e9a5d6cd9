//! What can go wrong talking to an upstream, how the gateway should react (reason code, failover),
//! and what may be shown to a client. Messages never carry credentials or request URLs.

use bytes::Bytes;
use cordon_types::ReasonCode;

/// A failed upstream exchange.
#[derive(thiserror::Error, Debug)]
pub enum UpstreamError {
    /// The upstream could not be reached (DNS, TCP, TLS). Carries a description without the URL.
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    /// A deadline passed: `"connect"`, `"first byte"` (no response headers in time) or `"total"`.
    #[error("the upstream did not answer in time ({0} timeout)")]
    Timeout(&'static str),
    /// The upstream answered with a non-2xx status; `body` is its response body (capped).
    #[error("the upstream answered with status {status}")]
    Status { status: u16, body: Bytes },
    /// The response body failed after the headers arrived (mid-stream, or while reading it).
    #[error("the upstream response failed: {0}")]
    Body(String),
    /// The endpoint's configuration cannot be used (a missing credential variable, an operation the
    /// provider does not serve, a missing url or deployment). An operator error.
    #[error("the upstream endpoint is misconfigured: {0}")]
    Config(String),
}

impl UpstreamError {
    /// The reason code the gateway reports: timeouts are `upstream_timeout` (504), everything else
    /// `upstream_error` (502).
    pub fn reason(&self) -> ReasonCode {
        match self {
            UpstreamError::Timeout(_) => ReasonCode::UpstreamTimeout,
            _ => ReasonCode::UpstreamError,
        }
    }

    /// May the gateway try the next *permitted* endpoint?
    ///
    /// - `Connect`, `Timeout("connect")`, `Timeout("first byte")`: yes, nothing was received.
    /// - `Timeout("total")`: no, the response had started (a stream may be half delivered).
    /// - `Status`: yes for 5xx and 429, and for 401/403: those answer the *gateway's* provider
    ///   credentials, an operator error on this endpoint (never passed on as the client's 401/403,
    ///   which mean a bad caller token or a residency refusal). No for other statuses (the
    ///   client's request is wrong, or the upstream redirected, which Cordon never follows): pass
    ///   it on.
    /// - `Body`: no, the upstream accepted and may have processed the request.
    /// - `Config`: yes. It is an operator error on this endpoint only; another permitted endpoint
    ///   may serve the request. The gateway should still log it loudly.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Timeout(phase) => *phase != "total",
            UpstreamError::Status { status, .. } => matches!(*status, 500..|429| 401 | 403),
            UpstreamError::Body(_) => false,
            UpstreamError::Config(_) => true,
        }
    }

    /// Was the endpoint unreachable: refused, or no connection within the connect timeout (a host
    /// that drops packets)? When every permitted endpoint failed this way the gateway answers 503
    /// `all_permitted_endpoints_unavailable`. An endpoint that accepted the connection but did not
    /// answer in time is up but slow: that stays `upstream_timeout` (504).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::Timeout("connect")
        )
    }

    /// A message safe to show a client: no credentials, no URLs, no upstream body (an upstream's
    /// error text can echo a partial key).
    pub fn public_message(&self) -> String {
        match self {
            UpstreamError::Connect(_) => "the model endpoint could not be reached".to_string(),
            UpstreamError::Timeout(phase) => {
                format!("the model endpoint did not answer in time ({phase} timeout)")
            }
            UpstreamError::Status { status, .. } => {
                format!("the model endpoint answered with status {status}")
            }
            UpstreamError::Body(_) => "the model endpoint's response was interrupted".to_string(),
            UpstreamError::Config(_) => "the model endpoint is misconfigured on the gateway".to_string(),
        }
    }

    /// Describe an error with its sources ("client error (Connect): tcp connect error: ...").
    /// hyper's errors never carry the request URL.
    pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        text
    }

    /// Classify an error from sending a request (before any response byte).
    pub(crate) fn from_send(err: &hyper_util::client::legacy::Error) -> UpstreamError {
        if err.is_connect() {
            if has_timed_out(err) {
                UpstreamError::Timeout("connect")
            } else {
                UpstreamError::Connect(UpstreamError::describe(err))
            }
        } else {
            // The request could not be sent or the connection closed before an answer: nothing
            // was received, so another permitted endpoint may be tried.
            UpstreamError::Connect(UpstreamError::describe(err))
        }
    }
}

/// Whether an I/O timeout is among the error's sources (the connector's connect timeout).
fn has_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_retry_rules() {
        assert_eq!(
            UpstreamError::Timeout("first byte").reason(),
            ReasonCode::UpstreamTimeout
        );
        assert_eq!(
            UpstreamError::Connect("x".into()).reason(),
            ReasonCode::UpstreamError
        );
        let status = |s| UpstreamError::Status {
            status: s,
            body: Bytes::new(),
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(404).is_retryable());
        // The gateway's own provider credentials were refused: another endpoint may serve.
        assert!(status(401).is_retryable());
        assert!(status(403).is_retryable());
        assert!(!status(302).is_retryable());
        assert!(UpstreamError::Timeout("connect").is_retryable());
        assert!(UpstreamError::Timeout("first byte").is_retryable());
        assert!(!UpstreamError::Timeout("total").is_retryable());
        assert!(!UpstreamError::Body("reset".into()).is_retryable());
        assert!(UpstreamError::Config("missing".into()).is_retryable());
    }

    #[test]
    fn unreachable_means_nothing_was_received() {
        assert!(UpstreamError::Connect("refused".into()).is_unreachable());
        assert!(UpstreamError::Timeout("connect").is_unreachable());
        assert!(!UpstreamError::Timeout("first byte").is_unreachable());
        assert!(!UpstreamError::Timeout("total").is_unreachable());
        let status = UpstreamError::Status {
            status: 503,
            body: Bytes::new(),
        };
        assert!(!status.is_unreachable());
        assert!(!UpstreamError::Config("missing".into()).is_unreachable());
    }

    #[test]
    fn public_message_hides_details() {
        let e = UpstreamError::Connect("tcp connect error to https://user:secret@host".into());
        assert!(!e.public_message().contains("secret"));
        let e = UpstreamError::Status {
            status: 401,
            body: Bytes::from_static(b"Incorrect API key sk-abc"),
        };
        assert!(!e.public_message().contains("sk-abc"));
        assert!(e.public_message().contains("401"));
    }
}
