//! Ingest capacity, side by side with nginx-rtmp: runs
//! `benches/ingest_capacity.sh` on the release `ladder` that cargo built.
//!
//! `cargo bench --bench ingest_capacity` (`LADDER_BENCH_PUBLISHERS="10 25 50"`,
//! `WINDOW`, `WARMUP` to change the counts and the window).

mod common;

use std::process::Command;

fn main() {
    if !common::should_run("ingest_capacity") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ingest_capacity.sh");
    let ns = std::env::var("LADDER_BENCH_PUBLISHERS").unwrap_or_else(|_| "10 25 50".into());
    let status = Command::new("bash")
        .arg(script)
        .arg(common::BIN)
        .args(ns.split_whitespace())
        .status()
        .expect("run bash");
    assert!(status.success(), "ingest_capacity.sh failed: {status}");
}
