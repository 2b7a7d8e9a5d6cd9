//! The input is written as the only segment file of a fresh store directory; `verify_store` and
//! `read_records` must return Ok or Err (never panic) and agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cordon_audit::bundle::fuzz::segment_reader(data);
});
