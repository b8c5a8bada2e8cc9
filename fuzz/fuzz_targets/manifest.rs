#![no_main]
//! Arbitrary bytes as a signed manifest: parse, verify, canonical form.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stratum_catalog::fuzzing::manifest_bytes(data));
