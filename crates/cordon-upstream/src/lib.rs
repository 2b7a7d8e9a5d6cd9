//! Cordon's upstream providers: OpenAI-compatible, Azure OpenAI, Anthropic Messages, and the
//! built-in echo.
//!
//! The gateway has already decided *which* endpoint may serve a request; this crate sends it there
//! in the provider's dialect ([`Upstreams::send`]) and hands back the answer, streaming SSE through
//! chunk by chunk. Errors say how the gateway should react ([`UpstreamError::reason`],
//! [`UpstreamError::is_retryable`]) and what a client may see ([`UpstreamError::public_message`]).

mod client;
mod dialect;
mod echo;
mod error;
mod evidence;
mod operation;
mod placement;
mod request;
mod stream_tap;

#[cfg(test)]
mod testutil;

pub use client::{
    BodyStream, MAX_ERROR_BODY, MAX_FULL_BODY, ResponseBody, Targets, UpstreamResponse, Upstreams,
};
pub use dialect::{ANTHROPIC_VERSION, DEFAULT_AZURE_API_VERSION};
pub use error::UpstreamError;
pub use evidence::{extract_evidence, extract_usage, extract_usage_and_evidence};
pub use operation::{Operation, supports};
pub use request::{BodyError, RequestBody};
pub use stream_tap::StreamTap;
