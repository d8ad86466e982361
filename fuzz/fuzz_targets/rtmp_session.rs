#![no_main]
use ladder::fuzzing::{run, Target};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(Target::RtmpSession, data));
