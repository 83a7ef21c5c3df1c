//! Fuzz target: see `rimage::fuzzing::header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::header(data));
