//! AV1 (rav1e) encode speed per rung: does it keep real time?
//!
//! `cargo bench --bench av1` (`LADDER_BENCH_RUNS=N` runs per rung, default 5;
//! `LADDER_BENCH_FRAMES=N` frames per run, default 90; `LADDER_BENCH_THREADS=N`
//! threads per encoder instead of the encoder's choice, to compare).
//!
//! For 360p, 480p, 720p and 1080p it encodes `testsrc2` frames made by ffmpeg
//! (a moving test pattern; a synthetic moving ramp when there is no ffmpeg)
//! with `Av1Encoder` as the ladder runs it: speed 10, tiles and threads as
//! chosen by the encoder, a forced key frame every 60 frames (2-s segments at
//! 30 fps), and the rung's usual bitrate. Each run times `encode` of every
//! frame plus `flush`, one thread feeding the encoder as the pipeline does.
//! Reported per rung: the layout, the time to open the encoder (which
//! encodes one throwaway frame, see `pipeline::cpu::av1`), encode fps
//! (median, min, max over the runs), the bitrate it produced, and whether the
//! median keeps 30 and 60 fps. Figures: docs/PERFORMANCE.md, "AV1 (rav1e)
//! real time"; they feed `av1::MEASURED_FPS`.

mod common;

use common::*;
use ladder::media::{Timestamp, MILLIS};
use ladder::pipeline::cpu::av1::{Av1Encoder, Av1Settings};
use ladder::pipeline::frame::Picture;
use std::process::{Command, Stdio};
use std::time::Instant;

const FPS: f64 = 30.0;
/// (name, width, height, kbit/s): the default ladder's sizes and rates.
const RUNGS: [(&str, u32, u32, u32); 4] = [
    ("360p", 640, 360, 800),
    ("480p", 854, 480, 1200),
    ("720p", 1280, 720, 2500),
    ("1080p", 1920, 1080, 4500),
];
/// Key frame interval in frames (2-s segments at 30 fps).
const KEYINT: usize = 60;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn main() {
    if !should_run("av1") {
        return;
    }
    header("AV1 (rav1e) encode speed");
    let runs = env_usize("LADDER_BENCH_RUNS", 5);
    let frames = env_usize("LADDER_BENCH_FRAMES", 90);
    // 0 (unset) = the encoder's choice.
    let threads = env_usize("LADDER_BENCH_THREADS", 0);
    let source = if have("ffmpeg") {
        "ffmpeg testsrc2"
    } else {
        "synthetic ramp (no ffmpeg)"
    };
    println!("{frames} frames per run, {runs} runs per rung, source: {source}");
    println!(
        "rung   size       tiles thr level  open_ms  fps_median  fps_min  fps_max  kbit/s  30fps  60fps"
    );
    for (name, width, height, kbps) in RUNGS {
        let pictures = pictures(width, height, frames);
        let settings = Av1Settings {
            width,
            height,
            fps: FPS,
            bitrate_kbps: kbps,
            threads,
            speed: None,
        };
        let mut fps = Vec::new();
        let mut open_ms = Vec::new();
        let mut bits = 0usize;
        let mut layout = None;
        for _ in 0..runs {
            let opened = Instant::now();
            let mut enc = Av1Encoder::new(&settings).expect("encoder opens");
            open_ms.push(opened.elapsed().as_secs_f64() * 1000.0);
            layout = Some(enc.layout());
            let start = Instant::now();
            let mut out = Vec::with_capacity(frames);
            for (i, picture) in pictures.iter().enumerate() {
                out.extend(enc.encode(picture, i % KEYINT == 0).expect("encodes"));
            }
            out.extend(enc.flush().expect("flushes"));
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(out.len(), frames);
            fps.push(frames as f64 / secs);
            bits = out.iter().map(|f| f.data.len() * 8).sum();
        }
        fps.sort_by(f64::total_cmp);
        open_ms.sort_by(f64::total_cmp);
        let median = fps[fps.len() / 2];
        let layout = layout.expect("at least one run");
        let produced_kbps = bits as f64 / (frames as f64 / FPS) / 1000.0;
        let verdict = |target: f64| if median >= target { "yes" } else { "no" };
        println!(
            "{name:<6} {:<10} {}x{:<3} {:<3} {:<6} {:>7.0}  {:>10.1}  {:>7.1}  {:>7.1}  {:>6.0}  {:>5}  {:>5}",
            format!("{width}x{height}"),
            layout.tile_cols,
            layout.tile_rows,
            layout.threads,
            layout.level_idx,
            open_ms[open_ms.len() / 2],
            median,
            fps[0],
            fps[fps.len() - 1],
            produced_kbps,
            verdict(30.0),
            verdict(60.0),
        );
    }
}

/// `frames` I420 pictures of `testsrc2`, or a synthetic moving ramp.
fn pictures(width: u32, height: u32, frames: usize) -> Vec<Picture> {
    let raw = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=s={width}x{height}:r={FPS}"))
        .args(["-frames:v", &frames.to_string()])
        .args(["-pix_fmt", "yuv420p", "-f", "rawvideo", "-"])
        .stderr(Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout);
    let (w, h) = (width as usize, height as usize);
    let frame_len = w * h + 2 * w.div_ceil(2) * h.div_ceil(2);
    (0..frames)
        .map(|i| {
            let mut p = Picture::new(width, height);
            for (k, plane) in p.planes.iter_mut().enumerate() {
                let offset = if k == 0 {
                    0
                } else {
                    w * h + (k - 1) * (w / 2) * (h / 2)
                };
                for y in 0..plane.height {
                    let pw = plane.width;
                    let row = plane.row_mut(y);
                    match &raw {
                        Some(raw) if raw.len() == frame_len * frames => {
                            let at = i * frame_len + offset + y * pw;
                            row.copy_from_slice(&raw[at..at + pw]);
                        }
                        _ => {
                            for (x, v) in row.iter_mut().enumerate() {
                                *v = ((x + y + 4 * i) % 200 + 16) as u8;
                            }
                        }
                    }
                }
            }
            p.pts = Some(Timestamp::new(
                (i as f64 * 1000.0 / FPS).round() as i64,
                MILLIS,
            ));
            p
        })
        .collect()
}
