//! `ladder bench` (issue 7) run as a user runs it: the built binary on tiny
//! sources, its JSON checked for the schema and for consistency (every trial
//! listed as the ramp runs them, counts and verdicts agreeing with the
//! criteria), the source it wrote checked with ffprobe, a file source made
//! by ffmpeg, and the exit statuses of bad usage. Whether a trial passes
//! depends on the box and its load: the tests accept either verdict and
//! check that it is explained, never a timing.

mod common;

use common::{ffprobe, packets, stream, tempdir, BIN};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The embedded default's ladder and packaging, on the CPU backend.
const CONFIG: &str = r#"
[packaging]
segment_seconds = 2.0
part_seconds    = 0.5
window_segments = 8

[ladders.default]
backend = "auto"
renditions = [
  { name = "source", passthrough = true },
  { name = "720p", height = 720, bitrate_kbps = 3000 },
  { name = "480p", height = 480, bitrate_kbps = 1200 },
  { name = "360p", height = 360, bitrate_kbps = 700 },
]

[ladders.small]
backend = "cpu"
renditions = [
  { name = "source", passthrough = true },
  { name = "180p", height = 180, bitrate_kbps = 300, preset = "ultrafast" },
]
"#;

const CRITERIA: [&str; 4] = ["speed", "drops", "availability", "feed"];

fn config(dir: &tempdir::Dir) -> String {
    let path = dir.join("ladder.toml");
    std::fs::write(&path, CONFIG).unwrap();
    path.to_str().unwrap().to_owned()
}

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .env_remove("LADDER_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "ladder bench failed; stderr:\n{}",
        text(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            text(&o.stdout)
        )
    })
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// Every trial is consistent with the criteria it reports, and the trials
/// are the ramp's: 1, then 2 when 1 passed (`--max-channels 2`).
fn check_trials(r: &Value, max: u64, tracks: &[&str], encoded: &[&str]) {
    let trials = r["trials"].as_array().unwrap();
    let limit_ms = f(&r["settings"]["availability_limit_ms"]);
    let speed_min = f(&r["settings"]["speed_min"]);
    let judged = r["settings"]["criteria"].as_array().unwrap();
    let availability = judged.contains(&"availability".into());
    assert!(!trials.is_empty());
    let mut expected = 1u64;
    let mut answer = 0u64;
    for (i, t) in trials.iter().enumerate() {
        let n = t["channels"].as_u64().unwrap();
        assert_eq!(n, expected, "trial {i} of {trials:#?}");
        let pass = t["pass"].as_bool().unwrap();
        let failed: Vec<&str> = t["failed_criteria"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let failures = t["failures"].as_array().unwrap();
        assert_eq!(pass, failed.is_empty(), "{t:#}");
        assert_eq!(pass, failures.is_empty(), "{t:#}");
        for fl in failures {
            let c = fl["criterion"].as_str().unwrap();
            assert!(CRITERIA.contains(&c) && failed.contains(&c), "{fl}");
            assert!(judged.contains(&c.into()), "{fl}");
            assert!(!fl["message"].as_str().unwrap().is_empty());
            assert!(fl["channel"].as_str().unwrap().starts_with('b'));
        }
        for c in &failed {
            assert!(CRITERIA.contains(c), "{c}");
        }
        assert!(f(&t["window_seconds"]) > 0.0);
        assert_eq!(t["placement"]["cpu"].as_u64(), Some(n));
        assert_eq!(t["placement"]["gpu"].as_u64(), Some(0));
        assert_eq!(names(&t["tracks"]), tracks);
        assert_eq!(names(&t["stages"]["rungs"]), encoded);
        assert_eq!(t["stages"]["decode"]["name"], "decode");
        for k in t["tracks"].as_array().unwrap() {
            let kind = k["kind"].as_str().unwrap();
            if kind == "encoded" {
                assert_eq!(k["encoder"], "x264", "{k}");
            }
            if pass {
                // what passing means, per track
                if availability {
                    assert!(k["parts"].as_u64().unwrap() > 0, "{k}");
                    assert!(f(&k["availability_p99_ms"]) <= limit_ms, "{k}");
                }
                assert_eq!(k["dropped"].as_u64(), Some(0), "{k}");
                if kind == "encoded" {
                    assert!(f(&k["speed_min"]) >= speed_min, "{k}");
                }
            }
        }
        if pass {
            answer = n;
            if n == max {
                assert_eq!(i + 1, trials.len());
            }
            expected = (n * 2).min(max);
        } else {
            assert_eq!(i + 1, trials.len(), "a failure at {n} ends this ramp");
        }
    }
    let result = &r["result"];
    assert_eq!(result["channels"].as_u64(), Some(answer), "{result}");
    assert!(result["channels_per_gpu"].is_null());
    assert_eq!(result["gpus_used"].as_u64(), Some(0));
    let last = trials.last().unwrap();
    if last["pass"].as_bool().unwrap() {
        assert_eq!(result["limited_by"], "max-channels");
        assert!(result["first_failing"].is_null());
        assert!(result["memory_per_channel_bytes"].as_u64().unwrap() > 0);
    } else {
        // an honest answer below the cap names what failed
        assert_eq!(result["limited_by"], "criteria");
        let ff = &result["first_failing"];
        assert_eq!(ff["channels"], last["channels"]);
        assert_eq!(ff["criteria"], last["failed_criteria"]);
        assert!(!ff["reasons"].as_array().unwrap().is_empty());
    }
}

#[test]
fn a_tiny_cpu_bench_reports_its_json_schema() {
    let dir = tempdir::Dir::new("bench-json");
    let cfg = config(&dir);
    let flv = dir.join("source.flv");
    let o = bench(&[
        "--config",
        &cfg,
        "--backend",
        "cpu",
        "--source",
        "360p30",
        "--max-channels",
        "2",
        "--duration",
        "3",
        "--json",
        "--write-source",
        flv.to_str().unwrap(),
    ]);
    let r = json(&o);
    let err = text(&o.stderr);
    assert!(
        err.contains("ladder bench: trial 1: 1 channel(s):"),
        "{err}"
    );

    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["tool"], "ladder bench");
    assert!(r["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["backend"]["requested"], "cpu");
    assert_eq!(r["backend"]["used"], "cpu");

    let m = &r["machine"];
    assert!(m["cpus"].as_u64().unwrap() >= 1);
    if m["nvml"] == false {
        assert!(
            m["nvml_reason"].as_str().unwrap().starts_with("no NVML"),
            "{m}"
        );
    }
    if m["gpus"].as_array().unwrap().is_empty() {
        assert!(m["no_gpu"].is_string(), "{m}");
    }

    let s = &r["source"];
    assert_eq!(s["kind"], "synthetic");
    assert_eq!(s["name"], "360p30");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(f(&s["fps"]), 30.0);
    assert_eq!(f(&s["gop_seconds"]), 2.0);
    assert_eq!(f(&s["loop_seconds"]), 8.0);
    assert_eq!(s["b_frames"], false);
    assert!(s["video_codec"].as_str().unwrap().starts_with("avc1.64"));
    assert_eq!(s["audio"]["codec"], "mp4a.40.2");
    assert_eq!(s["audio"]["sample_rate"], 48000);
    // x264 ABR at 800 kbit/s over 8 s; AAC at 128 kbit/s
    let kbps = f(&s["video_kbps"]);
    assert!((400.0..1600.0).contains(&kbps), "{kbps}");
    let akbps = f(&s["audio"]["kbps"]);
    assert!((64.0..256.0).contains(&akbps), "{akbps}");

    let l = &r["ladder"];
    assert_eq!(l["name"], "default");
    assert_eq!(names(&l["renditions"]), ["source", "720p", "480p", "360p"]);
    for rd in l["renditions"].as_array().unwrap() {
        // a 360p source is never upscaled: every rung is 640x360
        assert_eq!(
            (rd["width"].as_u64(), rd["height"].as_u64()),
            (Some(640), Some(360)),
            "{rd}"
        );
        if rd["kind"] == "encoded" {
            assert_eq!(rd["codec"], "h264");
            assert_eq!(rd["preset"], "veryfast");
            assert_eq!(rd["maxrate_kbps"], rd["bitrate_kbps"]);
            assert_eq!(rd["threads"], 1);
        } else {
            assert_eq!(rd["kind"], "passthrough");
        }
    }
    let st = &r["settings"];
    assert_eq!(st["max_channels"], 2);
    assert_eq!(f(&st["duration_seconds"]), 3.0);
    assert_eq!(f(&st["speed_min"]), 1.2);
    assert_eq!(f(&st["availability_limit_ms"]), 600.0);
    assert_eq!(
        st["criteria"],
        serde_json::json!(["speed", "drops", "availability", "feed"])
    );

    check_trials(
        &r,
        2,
        &["source", "720p", "480p", "360p", "audio"],
        &["720p", "480p", "360p"],
    );

    // the loop it fed, as ffmpeg will read it: 8 s, 240 pictures, IDR every 60
    let p = ffprobe(&flv);
    let v = stream(&p, "video");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(stream(&p, "audio")["codec_name"], "aac");
    let video = packets(&p, "video");
    assert_eq!(video.len(), 240);
    let keys: Vec<usize> = video
        .iter()
        .enumerate()
        .filter(|(_, p)| p.2)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keys, [0, 60, 120, 180]);
    assert_eq!(packets(&p, "audio").len(), 375);
}

#[test]
fn a_file_source_is_read_as_ffprobe_sees_it() {
    assert!(
        common::have("ffmpeg"),
        "ffmpeg is required (make test installs it)"
    );
    let dir = tempdir::Dir::new("bench-file");
    let cfg = config(&dir);
    // MPEG-TS: Annex B H.264 with B-frames and ADTS AAC, 3 s, IDR every 15
    let ts = dir.join("in.ts");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=3",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=3",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "15",
        ])
        .args([
            "-keyint_min",
            "15",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .arg(&ts)
        .status()
        .unwrap();
    assert!(made.success());
    let o = bench(&[
        "--config",
        &cfg,
        "--ladder",
        "small",
        "--source",
        ts.to_str().unwrap(),
        "--max-channels",
        "1",
        "--warmup",
        "2",
        "--duration",
        "2",
        "--criteria",
        "throughput",
        "--json",
    ]);
    let r = json(&o);
    let probe = ffprobe(&ts);
    let s = &r["source"];
    assert_eq!(s["kind"], "file");
    assert_eq!(s["name"], "in.ts");
    assert_eq!(s["path"], ts.to_str().unwrap());
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(s["b_frames"], true);
    assert_eq!(f(&s["fps"]), 30.0);
    assert_eq!(f(&s["gop_seconds"]), 0.5);
    assert_eq!(f(&s["loop_seconds"]), 3.0);
    let frames = packets(&probe, "video").len();
    assert_eq!(frames, 90);
    assert_eq!(s["audio"]["sample_rate"], 44100);
    assert_eq!(s["audio"]["channels"], 1);
    assert_eq!(s["audio"]["codec"], "mp4a.40.2");
    assert_eq!(r["backend"]["used"], "cpu");
    // availability is measured, not judged
    assert_eq!(
        r["settings"]["criteria"],
        serde_json::json!(["speed", "drops", "feed"])
    );
    for t in r["trials"].as_array().unwrap() {
        assert!(!t["failed_criteria"]
            .as_array()
            .unwrap()
            .contains(&"availability".into()));
    }
    assert_eq!(names(&r["ladder"]["renditions"]), ["source", "180p"]);
    let rung = &r["ladder"]["renditions"][1];
    assert_eq!(
        (rung["width"].as_u64(), rung["height"].as_u64()),
        (Some(240), Some(180))
    );
    assert_eq!(rung["preset"], "ultrafast");
    check_trials(&r, 1, &["source", "180p", "audio"], &["180p"]);

    // the same file as MP4 (avcC, AudioSpecificConfig), and the table for people
    let mp4 = dir.join("in.mp4");
    let remux = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
        .arg(&ts)
        .args(["-c", "copy"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(remux.success());
    let o = bench(&[
        "--config",
        &cfg,
        "--ladder",
        "small",
        "--source",
        mp4.to_str().unwrap(),
        "--max-channels",
        "1",
        "--warmup",
        "1",
        "--duration",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    assert!(
        table.contains("source: in.mp4 (file, 320x240 30 fps, H.264 ")
            && table.contains(" with B-frames, AAC "),
        "{table}"
    );
    assert!(
        table.contains("ladder \"small\" [source (passthrough), 180p 240x180 300 kbit/s] on cpu"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.trim_start().starts_with("1  pass") || l.trim_start().starts_with("1  FAIL")), "{table}");
    assert!(table.contains("result: "), "{table}");
    assert!(Path::new(&mp4).exists());
}

#[test]
fn bad_usage_exits_2_and_says_why() {
    let dir = tempdir::Dir::new("bench-usage");
    let cfg = config(&dir);
    let o = bench(&["--config", &cfg, "--ladder", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("no ladder \"nosuch\"")
            && text(&o.stderr).contains("(ladders: default, small)"),
        "{}",
        text(&o.stderr)
    );
    for args in [
        ["--source", "/no/such/file.mp4"],
        ["--max-channels", "0"],
        ["--duration", "0"],
        ["--warmup", "-1"],
        ["--backend", "tpu"],
    ] {
        let mut all = vec!["--config", &cfg];
        all.extend(args);
        let o = bench(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty());
    }
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[packaging]\nnosuch = 1\n").unwrap();
    let o = bench(&["--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn a_gpu_backend_without_a_gpu_is_a_runtime_failure() {
    let doctor = Command::new(BIN)
        .args(["doctor", "--json"])
        .env_remove("LADDER_CONFIG")
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    if !d["gpus"].as_array().is_some_and(|g| g.is_empty()) {
        eprintln!("skipped: this box has a GPU (make test-gpu runs the bench there)");
        return;
    }
    let dir = tempdir::Dir::new("bench-gpu");
    let cfg = config(&dir);
    for backend in ["gpu", "hybrid"] {
        let o = bench(&["--config", &cfg, "--backend", backend, "--source", "360p30"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains(&format!(
                "ladder bench: backend \"{backend}\" cannot run here: "
            )),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }
}
