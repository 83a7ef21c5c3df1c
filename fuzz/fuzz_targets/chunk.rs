//! Fuzz target: see `rimage::fuzzing::chunk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::chunk(data));
