//! Fuzz target: see `rimage::fuzzing::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::image(data));
