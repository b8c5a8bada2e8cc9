#![no_main]
//! Arbitrary bytes as a layer blob (plain, gzip, zstd) through LayerStream and ingest_layer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stratum_publisher::fuzzing::ingest_bytes(data));
