//! The policy version: a hash of the policy's canonical form. Canonical = the parsed file serialised
//! as JSON with every default filled in and maps in key order, so formatting, comments and key order
//! in the YAML do not change the version, while any change of meaning does.

use crate::file::PolicyFile;

pub fn policy_version(file: &PolicyFile) -> String {
    // Serialising plain data structs to JSON cannot fail; fall back to Debug output just in case.
    let canonical = serde_json::to_vec(file).unwrap_or_else(|_| format!("{file:?}").into_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
    format!("sha256:{}", hex::encode(digest.as_ref()))
}
