//! Cordon's shared vocabulary. Every crate speaks in these types, so a jurisdiction is never a bare
//! string that could be a country, and a reason code is never a typo away from the wire format.

mod codes;
mod place;
mod tier;

pub use codes::{ErrorType, ReasonCode, TransferMechanism};
pub use place::{Country, Jurisdiction, ParseError, Region};
pub use tier::Tier;
