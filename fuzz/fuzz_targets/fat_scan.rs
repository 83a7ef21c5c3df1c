//! Fuzz target: see `rimage::fuzzing::fat_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::fat_scan(data));
