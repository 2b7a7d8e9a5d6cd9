//! The input is parsed as an export bundle (`parse_bundle`) and, if it parses, verified
//! (`verify_bundle`): Ok or Err, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_audit::bundle::fuzz::bundle_reader(data);
});
