//! Fuzz target: see `rimage::fuzzing::ext_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::ext_scan(data));
