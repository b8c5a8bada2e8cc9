#![no_main]
//! Arbitrary bytes as a wishlist YAML (and an image reference, a thin pattern).

libfuzzer_sys::fuzz_target!(|data: &[u8]| stratum_publisher::fuzzing::wishlist_bytes(data));
