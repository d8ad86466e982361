//! Channels per box (and per GPU): `ladder bench` side by side with ffmpeg
//! doing the same ladder on the same machine in the same run (issue 7).
//!
//! For each source (`LADDER_BENCH_SOURCES`, default `1080p30 720p30`):
//!
//! 1. `ladder bench --json --write-source S.flv` (the release binary cargo
//!    built): Ladder's channel count on every criterion, the ladder as it ran
//!    (rung sizes, bitrates, presets, threads) and the backend it used; the
//!    source loop it fed is written as FLV. Then again with `--criteria
//!    throughput` (speed, drops, feed; part availability measured but not
//!    judged): the count to compare with ffmpeg's, which has no latency
//!    target to meet.
//! 2. ffmpeg on that very FLV: N concurrent processes, each one the whole
//!    ladder for one channel (`-stream_loop -1`: the loop, as fast as it can),
//!    ramped exactly as Ladder's (1, 2, 4, ... then bisection, the same cap).
//!    A trial passes when every process keeps at least 1.2x real time over
//!    the window (its `-progress` `out_time` gained per wall second): with N
//!    processes sharing the box as fast as they can, that is "N channels in
//!    real time with 20 % headroom". ffmpeg has no drop or part-availability
//!    criterion to meet (it does not drop; it slows down).
//!    - CPU (and what each process does): decode, `split`, swscale bicubic
//!      with accurate rounding (as Ladder's scaler), libx264 per rung with the
//!      rung's preset, `-tune zerolatency`, ABR at the rung's bitrate with a
//!      VBV of maxrate and one second of buffer, IDRs at the source's
//!      (`-force_key_frames source`, keyint infinite, scenecut off), the
//!      source and the audio copied; every rendition into its own fMP4 HLS
//!      output (2 s segments, 8 listed) on tmpfs (/dev/shm when there is one).
//!      Threads are ffmpeg's own choice, as in `benches/ladder.sh`: ffmpeg
//!      5.1 runs its filters and encoders one after the other on one thread,
//!      so with Ladder's thread counts (one decode thread, one x264 thread up
//!      to 720p) a 1080p ladder reached 0.79x real time in one process on an
//!      idle 2-core box; with its own, x264 slices each picture over the
//!      cores and the decoder uses frame threads.
//!    - hybrid (a GPU without NVENC, H100/H200): `-hwaccel cuda
//!      -hwaccel_output_format cuda`, `scale_cuda`, `hwdownload` to NV12, libx264.
//!    - gpu: the same with `h264_nvenc` (x264 preset mapped to P1-P4 as Ladder
//!      maps it, `-tune ll`, no B-frames, CBR when maxrate = bitrate).
//! 3. Prints the counts and the ratio Ladder/ffmpeg (both on throughput), and
//!    what one channel costs on each side, from the one-channel trials: CPU
//!    seconds per content second (Ladder's process CPU at real-time pace;
//!    the ffmpeg process's CPU over the content it encoded), and their ratio:
//!    on a box that carries one or two channels the counts are too coarse to
//!    compare. The JSON of every side goes to
//!    `$CARGO_TARGET_DIR/bench-channels/` (or `target/`).
//!
//! Environment: `LADDER_BENCH_SOURCES`, `LADDER_BENCH_SECS` (window, default
//! 20), `LADDER_BENCH_WARMUP` (default 5), `LADDER_BENCH_MAX_CHANNELS`
//! (default 64), `LADDER_BENCH_BACKEND` (default: the ladder's own),
//! `LADDER_BENCH_LADDER` (default `default`), `LADDER_BENCH_CONFIG` (a
//! config file for the ladders; default the embedded one). Does nothing
//! without `--bench` (`cargo bench --bench channels`).

mod common;

use ladder::bench::ramp::Ramp;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Least speed of every ffmpeg process (the same as Ladder's rungs').
const SPEED_MIN: f64 = 1.2;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn out_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    let dir = base.join("bench-channels");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// NVENC's preset for an x264 preset name, as `pipeline::gpu::encode` maps it.
fn nvenc_preset(x264: &str) -> &'static str {
    match x264 {
        "ultrafast" | "superfast" => "p1",
        "veryfast" => "p2",
        "faster" | "fast" => "p3",
        _ => "p4",
    }
}

/// One channel's ffmpeg command line (after `ffmpeg`), for the ladder as
/// `ladder bench` reported it.
fn ffmpeg_args(report: &Value, source: &Path, out: &Path, progress: &Path) -> Vec<String> {
    let backend = report["backend"]["used"].as_str().unwrap_or("cpu");
    let gpu = backend != "cpu";
    let mut a: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        .map(String::from)
        .to_vec();
    if gpu {
        a.extend(["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"].map(String::from));
    }
    a.extend(["-stream_loop", "-1", "-i"].map(String::from));
    a.push(source.display().to_string());
    let renditions = report["ladder"]["renditions"].as_array().unwrap();
    let encoded: Vec<&Value> = renditions
        .iter()
        .filter(|r| r["kind"] == "encoded")
        .collect();
    if !encoded.is_empty() {
        let mut graph = format!("[0:v]split={}", encoded.len());
        for i in 0..encoded.len() {
            graph.push_str(&format!("[s{i}]"));
        }
        for (i, r) in encoded.iter().enumerate() {
            let (w, h) = (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap());
            let fps = r["fps_max"]
                .as_f64()
                .map_or_else(String::new, |f| format!(",fps={f}"));
            let chain = match backend {
                "gpu" => format!("scale_cuda={w}:{h}{fps}"),
                "hybrid" => format!("scale_cuda={w}:{h},hwdownload,format=nv12{fps}"),
                _ => format!("scale={w}:{h}:flags=bicubic+accurate_rnd{fps}"),
            };
            graph.push_str(&format!(";[s{i}]{chain}[o{i}]"));
        }
        a.extend(["-filter_complex".to_owned(), graph]);
    }
    let hls = |a: &mut Vec<String>, name: &str| {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        a.extend(
            [
                "-f",
                "hls",
                "-hls_time",
                "2",
                "-hls_list_size",
                "8",
                "-hls_flags",
                "delete_segments",
                "-hls_segment_type",
                "fmp4",
            ]
            .map(String::from),
        );
        a.push(dir.join("index.m3u8").display().to_string());
    };
    let mut encoded_index = 0;
    for r in renditions {
        let name = r["name"].as_str().unwrap();
        if r["kind"] == "passthrough" {
            a.extend(["-map", "0:v", "-c:v", "copy"].map(String::from));
            hls(&mut a, name);
            continue;
        }
        if r["codec"] != "h264" {
            panic!("rendition {name}: the ffmpeg side of this comparison encodes H.264 only");
        }
        let kbps = r["bitrate_kbps"].as_u64().unwrap();
        let maxrate = r["maxrate_kbps"].as_u64().unwrap_or(kbps);
        let bufsize = r["bufsize_kbits"].as_u64().unwrap_or(maxrate);
        let preset = r["preset"].as_str().unwrap_or("veryfast");
        a.extend([
            "-map".to_owned(),
            format!("[o{encoded_index}]"),
            "-b:v".to_owned(),
            format!("{kbps}k"),
            "-maxrate".to_owned(),
            format!("{maxrate}k"),
            "-bufsize".to_owned(),
            format!("{bufsize}k"),
            "-force_key_frames".to_owned(),
            "source".to_owned(),
        ]);
        encoded_index += 1;
        if backend == "gpu" {
            a.extend([
                "-c:v".to_owned(),
                "h264_nvenc".to_owned(),
                "-preset".to_owned(),
                nvenc_preset(preset).to_owned(),
                "-tune".to_owned(),
                "ll".to_owned(),
                "-bf".to_owned(),
                "0".to_owned(),
                "-zerolatency".to_owned(),
                "1".to_owned(),
                "-forced-idr".to_owned(),
                "1".to_owned(),
                "-g".to_owned(),
                "1000000".to_owned(),
            ]);
            if maxrate == kbps {
                a.extend(["-rc".to_owned(), "cbr".to_owned()]);
            }
        } else {
            a.extend([
                "-c:v".to_owned(),
                "libx264".to_owned(),
                "-preset".to_owned(),
                preset.to_owned(),
                "-tune".to_owned(),
                "zerolatency".to_owned(),
                "-x264-params".to_owned(),
                "keyint=infinite:scenecut=0".to_owned(),
            ]);
        }
        if let Some(p) = r["profile"].as_str() {
            a.extend(["-profile:v".to_owned(), p.to_owned()]);
        }
        hls(&mut a, name);
    }
    if report["source"]["audio"].is_object() {
        a.extend(["-map", "0:a", "-c:a", "copy"].map(String::from));
        hls(&mut a, "audio");
    }
    a.extend(["-progress".to_owned(), progress.display().to_string()]);
    a
}

/// The last `out_time_us` in a `-progress` file, seconds.
fn out_time(progress: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(progress).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("out_time_us="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|us| us / 1e6)
}

/// Host CPU ticks (busy, total) from /proc/stat.
fn host_ticks() -> Option<(u64, u64)> {
    let t = ladder::bench::host::cpu_ticks()?;
    Some((t.busy, t.total))
}

/// One ffmpeg trial of `n` processes: (pass, min speed, speeds, host CPU %).
fn ffmpeg_trial(
    report: &Value,
    source: &Path,
    scratch: &Path,
    n: u32,
    warmup: f64,
    window: f64,
) -> Value {
    let mut procs = Vec::new();
    let mut progress = Vec::new();
    for i in 0..n {
        let out = scratch.join(format!("c{i}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let p = out.join("progress.txt");
        let args = ffmpeg_args(report, source, &out, &p);
        let stderr = std::fs::File::create(out.join("stderr.txt")).unwrap();
        let child = Command::new("ffmpeg")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ffmpeg");
        procs.push(common::Proc(child));
        progress.push(p);
    }
    // CPU seconds of the processes (utime + stime)
    let cpu_of = |procs: &[common::Proc]| -> f64 {
        procs
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).ok())
            .filter_map(|t| ladder::bench::host::parse_task_stat(&t))
            .map(|(_, s)| s)
            .sum()
    };
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let t1 = Instant::now();
    let a: Vec<Option<f64>> = progress.iter().map(|p| out_time(p)).collect();
    let h1 = host_ticks();
    let c1 = cpu_of(&procs);
    std::thread::sleep(Duration::from_secs_f64(window));
    let b: Vec<Option<f64>> = progress.iter().map(|p| out_time(p)).collect();
    let h2 = host_ticks();
    let c2 = cpu_of(&procs);
    let wall = t1.elapsed().as_secs_f64();
    let mut speeds = Vec::new();
    let mut failed = Vec::new();
    let mut content = 0.0;
    for (i, proc) in procs.iter_mut().enumerate() {
        let alive = proc.alive();
        let speed = a[i].zip(b[i]).map(|(a, b)| (b - a) / wall);
        content += speed.unwrap_or(0.0) * wall;
        if !alive {
            let err = std::fs::read_to_string(scratch.join(format!("c{i}/stderr.txt")))
                .unwrap_or_default();
            failed.push(format!("process {i} exited: {}", err.trim()));
        }
        match speed {
            Some(s) if s >= SPEED_MIN => {}
            Some(s) => failed.push(format!("process {i}: {s:.2}x real time")),
            None => failed.push(format!("process {i}: no progress")),
        }
        speeds.push(speed);
    }
    drop(procs);
    let cpu = h1
        .zip(h2)
        .filter(|(a, b)| b.1 > a.1)
        .map(|(a, b)| 100.0 * (b.0 - a.0) as f64 / (b.1 - a.1) as f64);
    let min = speeds
        .iter()
        .map(|s| s.unwrap_or(0.0))
        .fold(f64::INFINITY, f64::min);
    json!({
        "processes": n,
        "pass": failed.is_empty(),
        "speed_min": min,
        "speeds": speeds,
        "host_cpu_busy_percent": cpu,
        // CPU seconds per content second, per channel: what one channel costs
        "cpu_seconds_per_content_second": (content > 0.0).then(|| (c2 - c1) / content),
        "failures": failed,
    })
}

fn main() {
    if !common::should_run("channels") {
        return;
    }
    assert!(common::have("ffmpeg"), "ffmpeg is required");
    let sources = env_or("LADDER_BENCH_SOURCES", "1080p30 720p30");
    let window = env_or("LADDER_BENCH_SECS", "20");
    let warmup = env_or("LADDER_BENCH_WARMUP", "5");
    let max = env_or("LADDER_BENCH_MAX_CHANNELS", "64");
    let backend = std::env::var("LADDER_BENCH_BACKEND").ok();
    let ladder = env_or("LADDER_BENCH_LADDER", "default");
    let config = std::env::var("LADDER_BENCH_CONFIG").ok();
    let dir = out_dir();
    let scratch_base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let scratch =
        common::TempDir(scratch_base.join(format!("ladder-bench-channels-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let mut summary = Vec::new();
    for source in sources.split_whitespace() {
        let flv = dir.join(format!("{source}.flv"));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "== channels per box: ladder {ladder:?}, source {source}; {} CPUs, load {}",
            ladder::bench::host::cpus(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let run_ladder = |criteria: &str, tag: &str| -> Value {
            let mut cmd = Command::new(common::BIN);
            cmd.args(["bench", "--json", "--ladder", &ladder, "--source", source])
                .args(["--duration", &window, "--warmup", &warmup])
                .args(["--max-channels", &max, "--criteria", criteria])
                .arg("--write-source")
                .arg(&flv)
                .stderr(Stdio::inherit());
            if let Some(b) = &backend {
                cmd.args(["--backend", b]);
            }
            if let Some(c) = &config {
                cmd.args(["--config", c]);
            }
            let out = cmd.output().expect("run ladder bench");
            assert!(out.status.success(), "ladder bench failed: {}", out.status);
            std::fs::write(dir.join(format!("{source}.{tag}.json")), &out.stdout).unwrap();
            let report: Value = serde_json::from_slice(&out.stdout).expect("ladder bench JSON");
            println!(
                "ladder ({criteria} criteria): {} channel(s) on {} (limited by {}{})",
                report["result"]["channels"],
                report["backend"]["used"].as_str().unwrap_or("?"),
                report["result"]["limited_by"].as_str().unwrap_or("?"),
                report["result"]["first_failing"]["channels"]
                    .as_u64()
                    .map_or_else(String::new, |n| format!(
                        ": {} at {n}",
                        report["result"]["first_failing"]["criteria"]
                    )),
            );
            for t in report["trials"].as_array().unwrap() {
                let tracks = t["tracks"].as_array().unwrap();
                println!(
                    "  ladder trial {:>3} channel(s): {} host CPU {:.0} %, worst speed {:.2}x, worst part availability p99 {:.0} ms",
                    t["channels"],
                    if t["pass"] == true { "pass" } else { "FAIL" },
                    t["host"]["cpu_busy_percent"].as_f64().unwrap_or(f64::NAN),
                    tracks
                        .iter()
                        .filter_map(|k| k["speed_min"].as_f64())
                        .fold(f64::INFINITY, f64::min),
                    tracks
                        .iter()
                        .filter_map(|k| k["availability_p99_ms"].as_f64())
                        .fold(0.0, f64::max)
                );
            }
            report
        };
        let all = run_ladder("all", "ladder");
        let report = run_ladder("throughput", "ladder-throughput");
        let used = report["backend"]["used"].as_str().unwrap_or("?").to_owned();
        let ladder_all = all["result"]["channels"].as_u64().unwrap_or(0);
        let ladder_channels = report["result"]["channels"].as_u64().unwrap_or(0);
        let args = ffmpeg_args(
            &report,
            &flv,
            &scratch.0.join("example"),
            &scratch.0.join("p.txt"),
        );
        println!("ffmpeg per channel: ffmpeg {}", args.join(" "));

        let (w, wu) = (
            window.parse::<f64>().unwrap_or(20.0),
            warmup.parse::<f64>().unwrap_or(5.0),
        );
        let mut ramp = Ramp::new(max.parse().unwrap_or(64));
        let mut trials = Vec::new();
        while let Some(n) = ramp.next() {
            if !trials.is_empty() {
                std::thread::sleep(Duration::from_secs(2));
            }
            let t = ffmpeg_trial(&report, &flv, &scratch.0, n, wu, w);
            let pass = t["pass"] == true;
            println!(
                "  ffmpeg trial {n:>3} process(es): {} host CPU {:.0} %, slowest {:.2}x",
                if pass { "pass" } else { "FAIL" },
                t["host_cpu_busy_percent"].as_f64().unwrap_or(f64::NAN),
                t["speed_min"].as_f64().unwrap_or(0.0)
            );
            ramp.record(n, pass);
            trials.push(t);
        }
        let ffmpeg_channels = ramp.channels();
        let ratio = if ffmpeg_channels > 0 {
            format!("{:.2}", ladder_channels as f64 / f64::from(ffmpeg_channels))
        } else {
            "n/a (ffmpeg: 0)".to_owned()
        };
        println!(
            "ffmpeg: {ffmpeg_channels} channel(s) (limited by {})",
            ramp.limit().name()
        );
        // What one channel costs, from each side's one-channel trial: CPU
        // seconds per content second (Ladder runs at real-time pace, so its
        // process's cores are that; ffmpeg's CPU over the content it encoded).
        let ladder_cpu = report["trials"][0]["host"]["process_cpu_cores"]
            .as_f64()
            .zip(report["trials"][0]["channels"].as_f64())
            .map(|(c, n)| c / n);
        let ffmpeg_cpu = trials[0]["cpu_seconds_per_content_second"].as_f64();
        let cpu_ratio = ladder_cpu
            .zip(ffmpeg_cpu)
            .map_or_else(|| "n/a".to_owned(), |(l, f)| format!("{:.2}", l / f));
        println!(
            "CPU per channel (CPU-s per content-s, one channel): Ladder {}, ffmpeg {}, Ladder/ffmpeg {cpu_ratio}",
            ladder_cpu.map_or("n/a".into(), |c| format!("{c:.2}")),
            ffmpeg_cpu.map_or("n/a".into(), |c| format!("{c:.2}")),
        );
        println!(
            "RESULT {source} ({used}): Ladder {ladder_all} on every criterion, {ladder_channels} on throughput; ffmpeg {ffmpeg_channels}; Ladder/ffmpeg (throughput) {ratio}; CPU per channel Ladder/ffmpeg {cpu_ratio}"
        );
        let side = json!({
            "source": source,
            "backend": used,
            "ladder_channels_all_criteria": ladder_all,
            "ladder_cpu_seconds_per_content_second": ladder_cpu,
            "ffmpeg_cpu_seconds_per_content_second": ffmpeg_cpu,
            "ladder_channels": ladder_channels,
            "ffmpeg_channels": ffmpeg_channels,
            "ffmpeg_limited_by": ramp.limit().name(),
            "ffmpeg_command": args,
            "ffmpeg_trials": trials,
        });
        std::fs::write(
            dir.join(format!("{source}.ffmpeg.json")),
            serde_json::to_string_pretty(&side).unwrap(),
        )
        .unwrap();
        summary.push(format!(
            "{source} ({used}): Ladder {ladder_all} on every criterion, {ladder_channels} on throughput; ffmpeg {ffmpeg_channels}; Ladder/ffmpeg (throughput) {ratio}; CPU per channel Ladder/ffmpeg {cpu_ratio}"
        ));
    }
    println!("== summary (JSON in {}):", dir.display());
    for s in summary {
        println!("  {s}");
    }
}
