//! CPU ladder vs ffmpeg doing the same four-rung ladder in one process (issue 3):
//! runs `benches/ladder.sh` on the release `ladder` that cargo built.
//!
//! `cargo bench --bench ladder` (`DUR` for the clip length in seconds, default 20;
//! `READRATE` for how fast the clip is published to Ladder, a multiple of real
//! time, default 0.5; `BENCH_INPUT_DIR` for where the generated 1080p input is
//! cached).

mod common;

use std::process::Command;

fn main() {
    if !common::should_run("ladder") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ladder.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(common::BIN)
        .status()
        .expect("run bash");
    assert!(status.success(), "ladder.sh failed: {status}");
}
