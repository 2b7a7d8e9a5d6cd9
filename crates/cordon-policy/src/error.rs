//! Errors of loading and compiling a policy.

use std::path::PathBuf;

use crate::check::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("policy {origin} is not valid YAML for a Cordon policy: {message}")]
    Parse { origin: String, message: String },
    #[error("reference data {file} is invalid: {message}")]
    ReferenceData { file: String, message: String },
    #[error("policy {origin} has {} error(s):\n{}", .errors.len(), render(.errors))]
    Invalid { origin: String, errors: Vec<Diagnostic> },
}

fn render(errors: &[Diagnostic]) -> String {
    errors
        .iter()
        .map(|d| format!("  - {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}
