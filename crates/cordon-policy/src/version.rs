//! The policy version: a hash of the policy's canonical form and of the reference data it is
//! judged with. Canonical = the parsed file serialised as JSON with every default filled in and
//! maps in key order, so formatting, comments and key order in the YAML do not change the version,
//! while any change of meaning does. The reference data (regions, jurisdictions, adequacy: shipped
//! in the binary) is part of the meaning: the same file under a build with newer adequacy facts can
//! decide differently, so it gets another version.

use crate::file::PolicyFile;

pub fn policy_version(file: &PolicyFile) -> String {
    // Serialising plain data structs to JSON cannot fail; fall back to Debug output just in case.
    let canonical = serde_json::to_vec(file).unwrap_or_else(|_| format!("{file:?}").into_bytes());
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&canonical);
    for data in crate::reference::SHIPPED_DATA {
        // Length-prefixed, so no two different inputs concatenate to the same bytes.
        ctx.update(&(data.len() as u64).to_be_bytes());
        ctx.update(data.as_bytes());
    }
    format!("sha256:{}", hex::encode(ctx.finish().as_ref()))
}
