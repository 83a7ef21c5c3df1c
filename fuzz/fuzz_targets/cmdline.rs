//! Fuzz target: see `rimage::fuzzing::cmdline`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::cmdline(data));
