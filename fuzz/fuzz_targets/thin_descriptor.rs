#![no_main]
//! Arbitrary bytes as a thin-image descriptor (JSON, OCI config, artifact).

libfuzzer_sys::fuzz_target!(|data: &[u8]| stratum_thin_image::fuzzing::descriptor_bytes(data));
