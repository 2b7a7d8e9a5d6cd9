//! Cordon's policy: the reference facts (regions, jurisdictions, adequacy), the policy file, and the
//! residency decision.
//!
//! The decision is pure: [`Policy::decide`] is a function of its inputs (subject jurisdiction, model,
//! tier, gateway region, endpoint health, and today's date passed in as a value). No I/O, no clock,
//! no globals, so it is exhaustively testable and fast. Loading a file is the one I/O edge here
//! ([`Policy::load`]); everything after it works on values.

pub mod cases;
pub mod check;
pub mod compile;
pub mod decide;
pub mod error;
pub mod file;
pub mod quickstart;
pub mod reference;
pub mod transfer;
pub mod version;

pub use check::{Diagnostic, Severity};
pub use compile::{Endpoint, GatewayLocation, Model, Overrides, Policy, ProcessingLocation, Verdict};
pub use decide::{Allow, Candidate, Decision, Refusal, Request, effective_tier};
pub use error::PolicyError;
pub use file::{Day, Durability, PayloadMode, PolicyFile, ProviderKind, TierSpec};
pub use reference::World;
