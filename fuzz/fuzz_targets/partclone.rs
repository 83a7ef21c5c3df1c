//! Fuzz target: see `rimage::fuzzing::partclone`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::partclone(data));
