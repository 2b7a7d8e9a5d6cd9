//! Wire codes: the `error.code` / audit `reason` values, the `error.type` they belong to, their
//! HTTP status, and the transfer mechanisms a decision records. One table, so the three can't drift.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `error.type` in the OpenAI error envelope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorType {
    Authentication,
    ResidencyViolation,
    InvalidRequest,
    Upstream,
    ServiceUnavailable,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Authentication => "authentication_error",
            ErrorType::ResidencyViolation => "residency_violation",
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Upstream => "upstream_error",
            ErrorType::ServiceUnavailable => "service_unavailable",
        }
    }
}

macro_rules! reason_codes {
    ($($variant:ident => $wire:literal, $ty:ident, $status:literal;)*) => {
        /// Why a request was refused (or failed). `as_str()` is the wire code.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum ReasonCode { $($variant,)* }

        impl ReasonCode {
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(ReasonCode::$variant => $wire,)* }
            }
            pub fn error_type(self) -> ErrorType {
                match self { $(ReasonCode::$variant => ErrorType::$ty,)* }
            }
            pub fn http_status(self) -> u16 {
                match self { $(ReasonCode::$variant => $status,)* }
            }
            pub fn from_wire(s: &str) -> Option<ReasonCode> {
                match s { $($wire => Some(ReasonCode::$variant),)* _ => None }
            }
        }
    };
}

reason_codes! {
    MissingCredentials => "missing_credentials", Authentication, 401;
    MalformedToken => "malformed_token", Authentication, 401;
    UnsupportedAlgorithm => "unsupported_algorithm", Authentication, 401;
    BadSignature => "bad_signature", Authentication, 401;
    UnknownKey => "unknown_key", Authentication, 401;
    TokenExpired => "token_expired", Authentication, 401;
    TokenNotYetValid => "token_not_yet_valid", Authentication, 401;
    WrongIssuer => "wrong_issuer", Authentication, 401;
    WrongAudience => "wrong_audience", Authentication, 401;
    MissingClaim => "missing_claim", Authentication, 401;
    MissingResidency => "missing_residency", Authentication, 401;
    UnknownResidency => "unknown_residency", Authentication, 401;
    UnknownApiKey => "unknown_api_key", Authentication, 401;
    NoPermittedEndpoint => "no_permitted_endpoint", ResidencyViolation, 403;
    GatewayOutOfJurisdiction => "gateway_out_of_jurisdiction", ResidencyViolation, 403;
    LooserTierRequested => "looser_tier_requested", ResidencyViolation, 403;
    InvalidRequest => "invalid_request", InvalidRequest, 400;
    ModelNotFound => "model_not_found", InvalidRequest, 404;
    PayloadTooLarge => "payload_too_large", InvalidRequest, 413;
    UpstreamError => "upstream_error", Upstream, 502;
    UpstreamTimeout => "upstream_timeout", Upstream, 504;
    AllPermittedEndpointsUnavailable => "all_permitted_endpoints_unavailable", ServiceUnavailable, 503;
    AuditUnavailable => "audit_unavailable", ServiceUnavailable, 503;
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReasonCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReasonCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ReasonCode::from_wire(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown reason code '{s}'")))
    }
}

/// What makes a processing location outside the subject's jurisdiction lawful.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMechanism {
    /// No transfer: every processing region is inside the subject's jurisdiction.
    InJurisdiction,
    /// The destination is adequate under the subject's regime.
    Adequacy,
    /// Standard contractual clauses (UK: IDTA) with a transfer impact assessment.
    Scc,
    /// Personal data replaced with keyed tokens before leaving the jurisdiction.
    Pseudonymized,
    /// Tier 3: no personal data.
    NotPersonal,
}

impl TransferMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMechanism::InJurisdiction => "in_jurisdiction",
            TransferMechanism::Adequacy => "adequacy",
            TransferMechanism::Scc => "scc",
            TransferMechanism::Pseudonymized => "pseudonymized",
            TransferMechanism::NotPersonal => "not_personal",
        }
    }
}

impl fmt::Display for TransferMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_a_consistent_status() {
        for &c in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_wire(c.as_str()), Some(c));
            let expected: &[u16] = match c.error_type() {
                ErrorType::Authentication => &[401],
                ErrorType::ResidencyViolation => &[403],
                ErrorType::InvalidRequest => &[400, 404, 413],
                ErrorType::Upstream => &[502, 504],
                ErrorType::ServiceUnavailable => &[503],
            };
            assert!(expected.contains(&c.http_status()), "{c}");
        }
        assert_eq!(ReasonCode::from_wire("nope"), None);
    }
}
