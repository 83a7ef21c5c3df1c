//! Fuzz target: see `rimage::fuzzing::serve_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::serve_request(data));
