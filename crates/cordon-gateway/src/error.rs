//! Error answers: the OpenAI error envelope (Anthropic's on `/v1/messages`), always with `type`,
//! `code`, an actionable `message` and the `decision_id`, plus the `x-cordon-*` headers when a
//! decision was reached.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cordon_types::ReasonCode;

/// Which envelope to answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ReasonCode,
    /// Overrides the code's default status (an upstream 4xx passed on).
    pub status: Option<u16>,
    pub message: String,
    pub decision_id: Option<uuid::Uuid>,
    pub policy_version: Option<String>,
    /// An allowed request whose upstream then failed: the processing region(s) of the last
    /// endpoint tried (`x-cordon-processing-region`), so the caller sees where it was sent.
    pub processing_region: Option<String>,
    pub dialect: Dialect,
}

impl ApiError {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: None,
            message: message.into(),
            decision_id: None,
            policy_version: None,
            processing_region: None,
            dialect: Dialect::OpenAi,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status.unwrap_or_else(|| self.code.http_status()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "type": self.code.error_type().as_str(),
            "code": self.code.as_str(),
            "message": self.message,
            "decision_id": self.decision_id.map(|d| d.to_string()),
        });
        match self.dialect {
            Dialect::OpenAi => {
                if let Some(o) = error.as_object_mut() {
                    o.insert("param".into(), serde_json::Value::Null);
                }
                serde_json::json!({ "error": error })
            }
            Dialect::Anthropic => serde_json::json!({ "type": "error", "error": error }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut headers = HeaderMap::new();
        if let Some(id) = self.decision_id
            && let Ok(v) = HeaderValue::from_str(&id.to_string())
        {
            headers.insert("x-cordon-decision-id", v);
        }
        if let Some(v) = self
            .policy_version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert("x-cordon-policy-version", v);
        }
        if let Some(v) = self
            .processing_region
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert("x-cordon-processing-region", v);
        }
        (status, headers, axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_type_code_message_and_decision_id() {
        let mut e = ApiError::new(ReasonCode::NoPermittedEndpoint, "no");
        e.decision_id = Some(uuid::Uuid::nil());
        let b = e.body();
        assert_eq!(b["error"]["type"], "residency_violation");
        assert_eq!(b["error"]["code"], "no_permitted_endpoint");
        assert_eq!(b["error"]["decision_id"], uuid::Uuid::nil().to_string());
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        e.dialect = Dialect::Anthropic;
        let b = e.body();
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["code"], "no_permitted_endpoint");
    }
}
