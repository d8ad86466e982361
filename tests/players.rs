//! Real players in headless Chromium (issue 9 §1, §2): hls.js, dash.js and Shaka
//! Player, pinned in tests/players/package-lock.json (`make players-deps` runs
//! `npm ci`), each play a live channel for more than 60 s from a page served over
//! http by tests/players/run.js (a different origin from Ladder's, so the origin's
//! CORS headers are what the browser checks), through nginx as a CDN edge with the
//! shipped packaging/nginx-edge.conf in front of the origin (issue 9 §3), as
//! viewers play in production. Mid-run, DevTools network emulation
//! throttles the page twice (below the top rung, then below the middle one) and lifts
//! the throttle, so the player must go down the ladder and climb back.
//!
//! Asserted, per player: no fatal error; no stall longer than [`MAX_STALL_SECONDS`]
//! outside the throttle windows (a stall caused by cutting the bandwidth under the
//! player is reported, not hidden: see the log line) and after start-up (a stall in
//! the first 3 s after the first frame, while the player settles at the live edge,
//! is start-up time, reported as `max_stall_startup`; on a loaded 2-core machine
//! Shaka once stalled 0.501 s there); every rung of the ladder was
//! shown (the decoded picture's height); every request went to the edge, and the
//! edge asked the origin about once per object (the ratio is printed and written
//! to the figures). The live latency each player reports, and
//! the latency of the frame shown against the wall clock (EXT-X-PROGRAM-DATE-TIME,
//! DASH availabilityStartTime), are written with p50/p90 to
//! `target/tmp/players-latency.json`: latency is a performance target, reported in
//! docs/PERFORMANCE.md, not asserted here.
//!
//! `LADDER_PLAYERS_PART` sets `part_seconds` (default 0.5, the shipped default);
//! `LADDER_PLAYERS=hls,dash` runs only those players (default: all three);
//! `LADDER_PLAYERS_THROTTLE=0` plays without throttling, for latency figures on a
//! good network (docs/PERFORMANCE.md): the rung assertion is then skipped, and
//! says so.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest stall tolerated outside the deliberate throttle windows (issue 9 §1).
pub const MAX_STALL_SECONDS: f64 = 0.5;

/// Seconds each player plays from its first frame: the issue asks for at least 60.
pub const PLAY_SECONDS: u32 = 78;

/// Seconds allowed to one run.js beyond [`PLAY_SECONDS`]: Chromium's launch, the
/// wait for the first frame (run.js gives up after 30 s), and its exit.
pub const RUN_SLACK_SECONDS: u64 = 90;

/// The throttle schedule, in seconds after the first frame : kbit/s (0 lifts it).
/// 700 kbit/s carries the 240p rung (300 kbit/s + 64 kbit/s audio) but not the
/// source (about 1.1 Mbit/s); 250 kbit/s carries only 144p (100 + 64). 18 s per
/// step: the players' bandwidth estimates on low-latency parts move slowly. Lifted
/// at 48 s: 30 s left to climb back to the top.
pub const SCHEDULE: &str = "12:700,30:250,48:0";
/// The deepest step of [`SCHEDULE`], in kbit/s: only the lowest rung fits.
const DEEPEST_KBPS: u64 = 250;

/// The ladder: the source passed through (640x360, 1 Mbit/s), and two x264 rungs
/// far apart in bitrate so each switch is unambiguous. Heights are what the test
/// checks the browser decoded.
const RENDITIONS: &str = r#"{ name = "source", passthrough = true },
  { name = "240p", height = 240, bitrate_kbps = 300, preset = "veryfast" },
  { name = "144p", height = 144, bitrate_kbps = 100, preset = "veryfast" }"#;
const HEIGHTS: [u64; 3] = [360, 240, 144];

fn players_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/players")
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|b| Path::new(b).exists())
}

/// A 20 s 640x360 30 fps source with 1 s GOPs (x264 veryfast, zerolatency) and AAC,
/// encoded once; publishing loops it with `-c copy`, so the publisher costs no CPU.
fn pre_encode(dir: &Path) -> PathBuf {
    let out = dir.join("source.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=20",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=20",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args(["-profile:v", "main", "-pix_fmt", "yuv420p"])
        .args(["-b:v", "1000k", "-maxrate", "1000k", "-bufsize", "1000k"])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2", "-f", "flv"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "pre-encoding the source failed");
    out
}

fn publish_loop(file: &Path, url: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
        ])
        .arg("-i")
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Kills the child on drop (a failed assertion must not leave ffmpeg publishing).
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    player: &'static str,
    manifest: &'static str,
}

#[test]
fn hls_js_dash_js_and_shaka_play_the_live_ladder_and_switch_every_rung() {
    let ci = std::env::var_os("CI").is_some();
    let node_modules = players_dir().join("node_modules");
    let (Some(browser), true, true) = (chromium(), have_node(), node_modules.is_dir()) else {
        // make test installs chromium and nodejs and runs `npm ci`: in CI a
        // missing piece is a failure
        assert!(
            !ci,
            "chromium, node and tests/players/node_modules are required (make players-deps)"
        );
        eprintln!("SKIP: chromium, node or tests/players/node_modules missing (make players-deps)");
        return;
    };
    let part = std::env::var("LADDER_PLAYERS_PART").unwrap_or_else(|_| "0.5".into());
    let only = std::env::var("LADDER_PLAYERS").ok();
    let throttle = std::env::var("LADDER_PLAYERS_THROTTLE").map_or(true, |v| v != "0");
    let schedule = if throttle { SCHEDULE } else { "" };
    if !throttle {
        eprintln!("LADDER_PLAYERS_THROTTLE=0: no throttling; every-rung assertion skipped");
    }
    let runs: Vec<Run> = [
        Run {
            player: "hls",
            manifest: "master.m3u8",
        },
        Run {
            player: "dash",
            manifest: "manifest.mpd",
        },
        // Shaka plays LL-DASH: on LL-HLS (Shaka 5.2.12) its video SourceBuffer
        // kept only some parts of each 1 s GOP, playback jumping the holes
        // (docs/PERFORMANCE.md, section 11); hls.js covers LL-HLS
        Run {
            player: "shaka",
            manifest: "manifest.mpd",
        },
    ]
    .into_iter()
    .filter(|r| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == r.player))
    })
    .collect();

    let ladder = Ladder::start(&config_with_ladder(
        true,
        &format!("segment_seconds = 2.0\npart_seconds = {part}"),
        RENDITIONS,
        "",
    ));
    let source = pre_encode(ladder.dir.path());
    let _ff = KillOnDrop(publish_loop(&source, &ladder.rtmp_url("players")));
    wait_200(
        &ladder.url("/live/players/144p/index.m3u8"),
        Duration::from_secs(30),
    );

    // the players play through a CDN edge, as in production
    let edge = nginx::Edge::start(ladder.http);
    wait_200(
        &edge.url("/live/players/144p/index.m3u8"),
        Duration::from_secs(10),
    );

    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for run in &runs {
        let src = edge.url(&format!("/live/players/{}", run.manifest));
        let seen_before = edge.access_log().len();
        let out = tmp.join(format!("players-{}.json", run.player));
        let _ = std::fs::remove_file(&out);
        let node = Command::new("node")
            .arg(players_dir().join("run.js"))
            .args(["--player", run.player, "--src", &src])
            .args(["--seconds", &PLAY_SECONDS.to_string()])
            .args(["--schedule", schedule, "--chromium", browser])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node");
        // bounded: the play time, plus start-up and Chromium's launch and exit
        let (code, _) = wait(
            node,
            Duration::from_secs(u64::from(PLAY_SECONDS) + RUN_SLACK_SECONDS),
        );
        assert_eq!(code, Some(0), "{}: run.js failed or timed out", run.player);
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).expect("run.js output")).unwrap();
        let mut s = result["summary"].clone();
        let p = run.player;
        let through_edge = EdgeCounts::of(&edge.access_log()[seen_before..]);
        eprintln!("{p} through the edge: {through_edge:?}");
        if through_edge.requests == 0 {
            failures.push(format!("{p}: no request reached the edge"));
        }
        s["edge"] = serde_json::json!({
            "requests": through_edge.requests,
            "objects": through_edge.objects,
            "origin_requests": through_edge.origin_requests,
            "origin_requests_per_object": through_edge.per_object(),
            "errors": through_edge.errors,
        });
        let (lp, lw) = (&s["latency"]["player"], &s["latency"]["wallclock"]);
        eprintln!(
            "{p}: played {}s, {} stalls (longest {}s, {}s outside the throttle and start-up, {}s in start-up), heights {}, \
             back on the top rung after the throttle was lifted: {} s; latency before any \
             throttle: player p50 {} p90 {}, wall clock p50 {} p90 {}; after recovery: \
             player p50 {}, wall clock p50 {}",
            s["played_seconds"],
            s["stalls_total"],
            s["max_stall"],
            s["max_stall_outside_throttle"],
            s["max_stall_startup"],
            s["heights"],
            s["top_after_lift"],
            lp["steady"]["p50"],
            lp["steady"]["p90"],
            lw["steady"]["p50"],
            lw["steady"]["p90"],
            lp["recovered"]["p50"],
            lw["recovered"]["p50"],
        );
        if s["started"].is_null() {
            failures.push(format!(
                "{p}: never showed a frame; fatal {}; console {}",
                s["fatal"], result["console"]
            ));
            summaries.push(s);
            continue;
        }
        if !s["fatal"].as_array().is_some_and(|a| a.is_empty()) {
            failures.push(format!("{p}: fatal errors {}", s["fatal"]));
        }
        let played = s["played_seconds"].as_f64().unwrap_or(0.0);
        if played < 60.0 {
            failures.push(format!("{p}: played only {played} s of media (60 wanted)"));
        }
        let stall = s["max_stall_outside_throttle"].as_f64().unwrap_or(f64::MAX);
        if stall > MAX_STALL_SECONDS {
            failures.push(format!(
                "{p}: a stall of {stall} s outside the throttle windows and start-up; stalls {}",
                result["report"]["stalls"]
            ));
        }
        let heights: Vec<u64> = s["heights"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_u64()).collect())
            .unwrap_or_default();
        for h in HEIGHTS.into_iter().filter(|_| throttle) {
            if !heights.contains(&h) {
                failures.push(format!(
                    "{p}: the {h}p rung was never shown; renditions over time {}, throttles {}",
                    result["report"]["renditions"], s["throttles"]
                ));
            }
        }
        // the throttle did it: the lowest rung was on screen after the deepest step
        // began (a player drifting down on its own would pass the check above)
        if throttle {
            let deepest = s["throttles"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["kbps"].as_u64() == Some(DEEPEST_KBPS)))
                .and_then(|t| t["t"].as_f64());
            let lowest = HEIGHTS[HEIGHTS.len() - 1];
            let reached = deepest.is_some_and(|from| shown_since(&result["report"], lowest, from));
            if !reached {
                failures.push(format!(
                    "{p}: not on the {lowest}p rung after the {DEEPEST_KBPS} kbit/s throttle \
                     (at {deepest:?} s); renditions over time {}",
                    result["report"]["renditions"]
                ));
            }
        }
        summaries.push(s);
    }

    let latency = serde_json::json!({
        "part_seconds": part,
        "segment_seconds": 2.0,
        "throttle_schedule": schedule,
        "players": summaries,
    });
    let file = tmp.join(format!("players-latency-part{part}.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&latency).unwrap()).unwrap();
    eprintln!("latency figures: {}", file.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What one player's requests did at the edge.
#[derive(Debug, Default)]
struct EdgeCounts {
    /// Requests the player made (all through the edge).
    requests: usize,
    /// Distinct media objects (init, part, segment: path and part query) asked for.
    objects: usize,
    /// Of those objects' requests, how many nginx passed to the origin.
    origin_requests: usize,
    /// Answers of 5xx, or 4xx other than 404 (a 404 for a part the player asked
    /// ahead of time is normal).
    errors: usize,
}

impl EdgeCounts {
    fn of(log: &[nginx::Access]) -> EdgeCounts {
        let media: Vec<&nginx::Access> = log
            .iter()
            .filter(|a| a.path().ends_with(".m4s") || a.path().ends_with(".mp4"))
            .collect();
        let objects: std::collections::HashSet<&str> =
            media.iter().map(|a| a.target.as_str()).collect();
        EdgeCounts {
            requests: log.len(),
            objects: objects.len(),
            origin_requests: media.iter().filter(|a| a.reached_origin()).count(),
            errors: log
                .iter()
                .filter(|a| a.status >= 500 || (a.status >= 400 && a.status != 404))
                .count(),
        }
    }

    fn per_object(&self) -> f64 {
        if self.objects == 0 {
            0.0
        } else {
            self.origin_requests as f64 / self.objects as f64
        }
    }
}

/// Whether `height` was on screen at some time from `from` (page seconds) on: shown
/// then already, or switched to later.
fn shown_since(report: &serde_json::Value, height: u64, from: f64) -> bool {
    let Some(changes) = report["renditions"].as_array() else {
        return false;
    };
    let at = |c: &serde_json::Value| c["t"].as_f64().unwrap_or(0.0);
    let before = changes.iter().rev().find(|c| at(c) <= from);
    before.is_some_and(|c| c["height"].as_u64() == Some(height))
        || changes
            .iter()
            .any(|c| at(c) > from && c["height"].as_u64() == Some(height))
}

fn have_node() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
