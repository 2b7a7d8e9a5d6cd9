//! Test helpers: endpoints, collecting a body, parsing SSE frames.

use bytes::{Bytes, BytesMut};
use cordon_policy::file::EndpointSpec;
use cordon_policy::{Endpoint, ProcessingLocation, ProviderKind};
use futures_util::StreamExt;

use crate::client::ResponseBody;
use crate::error::UpstreamError;

/// An endpoint of model `m` for `provider` at `url`, with no credential.
pub fn endpoint(provider: ProviderKind, url: Option<&str>) -> Endpoint {
    Endpoint {
        index: 0,
        model: "m".to_string(),
        spec: EndpointSpec {
            id: format!("test-{}", provider.as_str()),
            provider,
            operator: None,
            url: url.map(str::to_string),
            regions: vec!["aws:eu-central-1".parse().unwrap()],
            priority: 1,
            api_key_env: None,
            upstream_model: None,
            deployment: None,
            api_version: None,
            delay_ms: None,
        },
        location: ProcessingLocation {
            regions: vec!["aws:eu-central-1".parse().unwrap()],
            jurisdictions: None,
        },
    }
}

/// The whole body, or the stream's first error.
pub async fn collect(body: ResponseBody) -> Result<Bytes, UpstreamError> {
    match body {
        ResponseBody::Full(b) => Ok(b),
        ResponseBody::Stream(mut s) => {
            let mut buf = BytesMut::new();
            while let Some(chunk) = s.next().await {
                buf.extend_from_slice(&chunk?);
            }
            Ok(buf.freeze())
        }
    }
}

/// SSE frames as (event name, data). Asserts every frame is well formed and ends with a blank line.
pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    assert!(text.ends_with("\n\n"), "SSE text must end with a blank line");
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|frame| {
            let mut name = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per frame: {frame:?}");
                    data = Some(d.to_string());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (
                name,
                data.unwrap_or_else(|| panic!("frame without data: {frame:?}")),
            )
        })
        .collect()
}
