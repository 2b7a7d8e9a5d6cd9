//! Request fields through which a provider lets its caller choose where a request is processed
//! (Anthropic's `inference_geo`). Where a request is processed is Cordon's decision, so:
//!
//! * such a field from the client is never forwarded (the client could otherwise ask an endpoint
//!   declared as `anthropic:us` to run inference anywhere: the policy would allow the request as
//!   US and the evidence would only flag it after the data had left);
//! * an endpoint whose declared location is exactly one of the provider's own geographies
//!   (`regions: [anthropic:us]`) gets the field set to that geography (`"us"`) on every request,
//!   instead of relying on the account's default.
//!
//! Other endpoints of such a provider (a location that is not one of its geographies, or several)
//! get no field: the declared location is then the operator's statement about the account.

use cordon_policy::{Endpoint, ProviderKind};

/// `(provider, request field, the region prefix of the provider's geographies)`.
const FIELDS: &[(ProviderKind, &str, &str)] = &[(ProviderKind::Anthropic, "inference_geo", "anthropic")];

/// Whether `key` is a top-level request field that chooses the processing location (for any
/// provider): the client's value is dropped.
pub(crate) fn is_placement_field(key: &str) -> bool {
    FIELDS.iter().any(|(_, f, _)| *f == key)
}

/// The field Cordon sets for `endpoint`, and its value (`("inference_geo", "us")`).
pub(crate) fn for_endpoint(endpoint: &Endpoint) -> Option<(&'static str, &str)> {
    let (_, field, prefix) = FIELDS.iter().find(|(p, _, _)| *p == endpoint.provider())?;
    match endpoint.location.regions.as_slice() {
        [only] if only.cloud() == *prefix => {
            let geo = only.as_str().split_once(':').map(|(_, g)| g)?;
            Some((field, geo))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) fn fields() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(_, f, _)| *f)
}
