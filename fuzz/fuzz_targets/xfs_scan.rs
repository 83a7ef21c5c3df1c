//! Fuzz target: see `rimage::fuzzing::xfs_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rimage::fuzzing::xfs_scan(data));
