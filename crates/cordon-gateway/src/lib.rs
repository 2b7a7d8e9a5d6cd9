//! Cordon's HTTP surface. A request's path through this crate:
//!
//! `routes` (axum handlers) → `pipeline::authenticate` (cordon-identity) → `pipeline::decide`
//! (cordon-policy, pure) → `pipeline::record` (cordon-audit, before anything is forwarded) →
//! `forward` (cordon-upstream, failover only among the decision's candidates) → response with the
//! `x-cordon-*` headers → completion record.
//!
//! Shared state lives in [`state::AppState`]; the policy, identity verifier and endpoint health are
//! one [`runtime::Runtime`] swapped atomically on reload.

mod audit_metrics;
pub mod audit_set;
pub mod error;
mod forward;
pub mod health;
pub mod metrics;
mod pipeline;
pub mod reload;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod state;

pub use server::{ServeConfig, Server};
