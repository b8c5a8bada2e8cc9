#![no_main]
//! Arbitrary bytes as a decoded catalog object: open, then every query.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stratum_catalog::fuzzing::catalog_bytes(data));
