//! The CPU transcoding ladder end to end: ffmpeg publishes over RTMP, Ladder
//! decodes, scales and encodes the rungs, and ffprobe reads what the origin
//! serves for every rendition.

mod common;

use common::*;
use std::time::Duration;

const PACKAGING: &str = "segment_seconds = 2.0\npart_seconds = 0.5\nwindow_segments = 20";

/// One rendition as served: its playlist, and the packets of each listed
/// segment (pts, dts, keyframe), probed segment by segment with its init.
struct Served {
    playlist: MediaPlaylist,
    segments: Vec<Vec<(f64, f64, bool)>>,
    /// Bytes of the listed segments.
    bytes: usize,
    /// ffprobe of the whole rendition (init + every segment).
    probe: serde_json::Value,
}

fn served(ladder: &Ladder, channel: &str, track: &str, dir: &tempdir::Dir) -> Served {
    let whole = dir.join(&format!("{track}.mp4"));
    // a failed download shows Ladder's log (a panic in the origin closes the
    // connection: the client only sees the connection end)
    let download = || download_track(ladder, channel, track, &whole);
    let playlist = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(download)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "downloading {track} failed; Ladder's log:\n{}",
                ladder.log()
            );
            std::panic::resume_unwind(e)
        }
    };
    let probe = ffprobe(&whole);
    let (s, _, init) = get(&ladder.url(&format!("/live/{channel}/{track}/{}", playlist.map[0])));
    assert_eq!(s, 200);
    let mut segments = Vec::new();
    let mut bytes = 0;
    for (msn, uri, _, _) in &playlist.segments {
        let (s, _, body) = get(&ladder.url(&format!("/live/{channel}/{track}/{uri}")));
        assert_eq!(s, 200, "{track} {uri}");
        bytes += body.len();
        let f = dir.join(&format!("{track}-{msn}.mp4"));
        let mut data = init.clone();
        data.extend_from_slice(&body);
        std::fs::write(&f, data).unwrap();
        segments.push(packets(&ffprobe(&f), "video"));
    }
    Served {
        playlist,
        segments,
        bytes,
        probe,
    }
}

/// The tests here measure what real-time encoding keeps: one at a time, so
/// that they do not take each other's CPU (cargo runs a file's tests in
/// parallel).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Publish `src` to a fresh Ladder with `renditions`, wait until the publish
/// and the rungs' drain ended.
fn run(src: &Source, renditions: &str, rungs: usize) -> Ladder {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ladder = Ladder::start(&config_with_ladder(true, PACKAGING, renditions, ""));
    let ff = publish(src, &ladder.rtmp_url("cam"), None);
    let (code, err) = wait(ff, Duration::from_secs(120));
    assert_eq!(code, Some(0), "ffmpeg failed: {err}");
    assert!(
        ladder.wait_log("publish ended", Duration::from_secs(10)),
        "{}",
        ladder.log()
    );
    // every rung logs one line when its pipeline has drained
    let t = std::time::Instant::now();
    while ladder.log().matches("rung ended").count() < rungs {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "rungs did not end:\n{}",
            ladder.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ladder
}

/// The `rung ended` log line of a rung: `key=value` fields.
fn rung_line(log: &str, rung: &str) -> std::collections::HashMap<String, String> {
    let line = log
        .lines()
        .find(|l| l.contains("rung ended") && l.contains(&format!("rung={rung} ")))
        .unwrap_or_else(|| panic!("no rung ended line for {rung}:\n{log}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn num(fields: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {fields:?}"))
}

#[test]
fn every_rendition_is_as_configured_and_aligned_with_the_source() {
    let src = Source {
        size: "1280x720",
        rate: 30,
        seconds: 10.0,
        x264: "-preset veryfast -profile:v high -bf 2 -g 60 -keyint_min 60 -sc_threshold 0",
        audio: true,
    };
    let ladder = run(
        &src,
        r#"{ name = "source", passthrough = true },
           { name = "480p", height = 480, bitrate_kbps = 900, profile = "main" },
           { name = "240p", height = 240, bitrate_kbps = 300, profile = "baseline", preset = "veryfast" }"#,
        2,
    );
    let (s, master) = get_text(&ladder.url("/live/cam/master.m3u8"));
    assert_eq!(s, 200);
    // the ladder's order, one variant each, sharing the audio group
    let uris: Vec<&str> = master
        .lines()
        .filter(|l| l.ends_with("/index.m3u8") && !l.starts_with('#'))
        .collect();
    assert_eq!(
        uris,
        ["source/index.m3u8", "480p/index.m3u8", "240p/index.m3u8"],
        "{master}"
    );
    assert_eq!(master.matches("AUDIO=\"audio\"").count(), 3, "{master}");

    let dir = tempdir::Dir::new("ladder");
    let source = served(&ladder, "cam", "source", &dir);
    let audio = download_track(&ladder, "cam", "audio", &dir.join("audio.mp4"));
    let first_audio = packets(&ffprobe(&dir.join("audio.mp4")), "audio")[0].0;
    let first_video = |s: &Served| {
        s.segments[0]
            .iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
    };
    let frame = 1.0 / 30.0;
    let mut parts = Vec::new();
    let mut any_dropped = false;
    for (rung, height, kbps, profile) in [
        ("480p", 480, 900.0, "Main"),
        ("240p", 240, 300.0, "Baseline"),
    ] {
        let r = served(&ladder, "cam", rung, &dir);
        // A rung drops pictures only when the machine cannot keep up (counted
        // in its log line); then its segments hold fewer pictures.
        let f = rung_line(&ladder.log(), rung);
        let dropped = num(&f, "dropped_queue_full");
        // A/V sync: against the shared audio, the rung starts where the
        // source does, within one frame (a dropped first picture is a frame)
        let rung_av = first_video(&r) - first_audio;
        let source_av = first_video(&source) - first_audio;
        assert!(
            (rung_av - source_av).abs() <= frame + 0.001,
            "{rung}: video starts {rung_av:.3} s after the audio, the source's {source_av:.3} s"
        );
        if dropped > 0 {
            eprintln!("{rung}: {dropped} pictures dropped on this machine: {f:?}");
        }
        let v = stream(&r.probe, "video");
        assert_eq!(v["codec_name"], "h264", "{rung}");
        assert!(
            v["profile"].as_str().unwrap().contains(profile),
            "{rung}: profile {}",
            v["profile"]
        );
        assert_eq!(v["height"], height, "{rung}");
        let w = v["width"].as_i64().unwrap();
        assert_eq!(w % 2, 0, "{rung}: even width");
        assert!(
            (w as f64 / height as f64 - 16.0 / 9.0).abs() < 0.01,
            "{rung}: aspect kept, {w}x{height}"
        );
        assert!(
            master.contains(&format!("RESOLUTION={w}x{height}")),
            "{master}"
        );

        // same segments, numbers and durations as the source
        let msns = |s: &Served| s.playlist.segments.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(msns(&r), msns(&source), "{rung}: sequence numbers");
        assert!(
            r.segments.len() >= 4,
            "{rung}: {} segments",
            r.segments.len()
        );
        for (i, (a, b)) in r
            .playlist
            .segments
            .iter()
            .zip(&source.playlist.segments)
            .enumerate()
        {
            // (a picture dropped at a segment start moves the rung's IDR)
            assert!(
                dropped > 0 || (a.2 - b.2).abs() <= 0.002,
                "{rung}: segment {} lasts {} s, the source's {} s",
                a.0,
                a.2,
                b.2
            );
            // same pictures: count, and the first presented at the same time
            let (rs, ss) = (&r.segments[i], &source.segments[i]);
            if dropped == 0 {
                assert_eq!(rs.len(), ss.len(), "{rung}: pictures in segment {}", a.0);
            } else {
                assert!(rs.len() <= ss.len(), "{rung}: pictures in segment {}", a.0);
            }
            assert!(rs[0].2, "{rung}: segment {} starts with an IDR", a.0);
            let first = ss.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
            assert!(
                dropped > 0 || (rs[0].0 - first).abs() < frame,
                "{rung}: segment {} presents from {} s, the source from {} s",
                a.0,
                rs[0].0,
                first
            );
            // no B-frames in low-latency mode: decode order is presentation order
            assert!(rs.windows(2).all(|w| w[1].0 > w[0].0), "{rung}: reordered");
        }
        // parts: never longer than the target, the same on every rung
        for line in r
            .playlist
            .text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
        {
            let d: f64 = line["#EXT-X-PART:DURATION=".len()..]
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(d <= 0.502, "{rung}: {line}");
        }
        // (duration, URI) of each part: a rung that dropped pictures under
        // load has the same parts, some shorter
        any_dropped |= dropped > 0;
        parts.push(
            r.playlist
                .text
                .lines()
                .filter(|l| l.starts_with("#EXT-X-PART:"))
                .map(|l| {
                    let (d, uri) = l.split_once(",URI=").unwrap();
                    (d.to_string(), uri.to_string())
                })
                .collect::<Vec<_>>(),
        );

        // bitrate within 15% of the target over the whole rendition
        let secs: f64 = r.playlist.segments.iter().map(|s| s.2).sum();
        let got = r.bytes as f64 * 8.0 / secs / 1000.0;
        assert!(
            (got - kbps).abs() / kbps <= 0.15,
            "{rung}: {got:.0} kbit/s for a {kbps} kbit/s target"
        );
        // frame rate: every source picture, 30 per second
        let pictures: usize = r.segments.iter().map(|s| s.len()).sum();
        let fps = (pictures as u64 + dropped) as f64 / secs;
        assert!(
            (fps - 30.0).abs() < 0.5,
            "{rung}: {pictures} pictures in {secs} s"
        );
        assert_eq!(num(&f, "pictures"), num(&f, "encoded"), "{rung}: {f:?}");
    }
    if parts.iter().all(|p| !p.is_empty()) {
        let uris = |p: &[(String, String)]| p.iter().map(|x| x.1.clone()).collect::<Vec<_>>();
        assert_eq!(
            uris(&parts[0]),
            uris(&parts[1]),
            "the rungs' parts are the same"
        );
        if !any_dropped {
            assert_eq!(parts[0], parts[1], "the rungs' parts last as long");
        }
    }
    // audio shares the numbers, so a player switching rungs keeps its audio
    assert_eq!(
        audio.segments.iter().map(|s| s.0).collect::<Vec<_>>(),
        source
            .playlist
            .segments
            .iter()
            .map(|s| s.0)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_frame_rate_cap_halves_a_60_fps_source() {
    let src = Source {
        size: "1920x1080",
        rate: 60,
        seconds: 6.0,
        x264: "-preset ultrafast -profile:v high -g 120 -keyint_min 120 -sc_threshold 0",
        audio: true,
    };
    let ladder = run(
        &src,
        r#"{ name = "source", passthrough = true },
           { name = "360p", height = 360, bitrate_kbps = 600, fps_max = 30, preset = "ultrafast" }"#,
        1,
    );
    let dir = tempdir::Dir::new("fps");
    let r = served(&ladder, "cam", "360p", &dir);
    let source = served(&ladder, "cam", "source", &dir);
    let secs: f64 = r.playlist.segments.iter().map(|s| s.2).sum();
    let pictures: usize = r.segments.iter().map(|s| s.len()).sum();
    assert!(
        (pictures as f64 / secs - 30.0).abs() < 0.5,
        "{pictures} pictures in {secs} s"
    );
    let src_pictures: usize = source.segments.iter().map(|s| s.len()).sum();
    assert_eq!(pictures * 2, src_pictures, "every other picture");
    for (i, seg) in r.segments.iter().enumerate() {
        assert!(seg[0].2, "segment {i} starts with an IDR");
        // evenly spaced at 1/30 s
        for w in seg.windows(2) {
            assert!(
                (w[1].0 - w[0].0 - 1.0 / 30.0).abs() < 0.002,
                "segment {i}: {} -> {}",
                w[0].0,
                w[1].0
            );
        }
    }
    let (_, master) = get_text(&ladder.url("/live/cam/master.m3u8"));
    assert!(master.contains("FRAME-RATE=30.000"), "{master}");
    let f = rung_line(&ladder.log(), "360p");
    assert_eq!(
        num(&f, "dropped_fps_cap") as usize,
        src_pictures / 2,
        "{f:?}"
    );
}

#[test]
fn a_rung_too_slow_for_real_time_drops_frames_and_nothing_else_suffers() {
    let src = Source {
        size: "1280x720",
        rate: 30,
        seconds: 8.0,
        x264: "-preset ultrafast -profile:v high -g 60 -keyint_min 60 -sc_threshold 0",
        audio: true,
    };
    // 720p at x264's slowest preset on one thread is far slower than real
    // time on any machine; 144p ultrafast is far faster
    let ladder = run(
        &src,
        r#"{ name = "source", passthrough = true },
           { name = "slow", height = 720, bitrate_kbps = 2000, preset = "placebo", threads = 1 },
           { name = "fast", height = 144, bitrate_kbps = 150, preset = "ultrafast", threads = 1 }"#,
        2,
    );
    let log = ladder.log();
    let slow = rung_line(&log, "slow");
    let fast = rung_line(&log, "fast");
    assert!(num(&slow, "dropped_queue_full") > 0, "{slow:?}");
    assert_eq!(num(&fast, "dropped_queue_full"), 0, "{fast:?}");
    assert_eq!(num(&fast, "encoded"), num(&fast, "pictures"), "{fast:?}");

    let dir = tempdir::Dir::new("slow");
    let source = served(&ladder, "cam", "source", &dir);
    let fast_served = served(&ladder, "cam", "fast", &dir);
    let slow_served = served(&ladder, "cam", "slow", &dir);
    // ingest and the fast rung kept every picture, segment for segment
    let count = |s: &Served| s.segments.iter().map(|x| x.len()).sum::<usize>();
    assert_eq!(count(&source), 240, "the source lost nothing");
    assert_eq!(
        count(&fast_served),
        count(&source),
        "the fast rung lost nothing"
    );
    assert!(
        count(&slow_served) < count(&source),
        "the slow rung dropped"
    );
    // the slow rung missed no segment: its numbers follow each other (a
    // forced IDR lost in its queue once left a hole the origin served wrong)
    let numbers: Vec<u64> = slow_served
        .playlist
        .segments
        .iter()
        .map(|(_, uri, _, _)| {
            uri.trim_start_matches("seg-")
                .trim_end_matches(".m4s")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "slow rung segments {numbers:?}"
    );
    // the slow rung still starts each segment it has with an IDR, same numbers
    for (i, seg) in slow_served.segments.iter().enumerate() {
        assert!(
            seg.first().map(|p| p.2).unwrap_or(false),
            "slow segment {i}"
        );
    }
}

#[test]
fn an_av1_rung_plays_decodes_with_dav1d_and_is_aligned_with_the_source() {
    let src = Source {
        size: "640x360",
        rate: 30,
        seconds: 6.0,
        x264: "-preset ultrafast -profile:v high -g 60 -keyint_min 60 -sc_threshold 0",
        audio: true,
    };
    let ladder = run(
        &src,
        r#"{ name = "source", passthrough = true },
           { name = "av1", codec = "av1", height = 360, bitrate_kbps = 500 }"#,
        1,
    );
    let (_, master) = get_text(&ladder.url("/live/cam/master.m3u8"));
    // AV1 Main profile, main tier, 8-bit: av01.0.<level>M.08 (AV1-ISOBMFF codecs parameter)
    let variant = master
        .lines()
        .find(|l| l.contains("CODECS=\"av01."))
        .unwrap_or_else(|| panic!("no av01 variant:\n{master}"));
    let codecs = variant.split("CODECS=\"").nth(1).unwrap();
    let av01 = codecs.split(['"', ',']).next().unwrap();
    let fields: Vec<&str> = av01.split('.').collect();
    assert_eq!(fields.len(), 4, "{av01}");
    assert_eq!(fields[1], "0", "main profile: {av01}");
    assert!(
        fields[2].len() == 3 && fields[2].ends_with('M'),
        "level and main tier: {av01}"
    );
    assert_eq!(fields[3], "08", "8-bit: {av01}");
    assert!(codecs.contains("mp4a.40.2"), "with the audio: {variant}");
    // DASH: AV1 in an AdaptationSet of its own beside the H.264 one and audio
    let (_, mpd) = get_text(&ladder.url("/live/cam/manifest.mpd"));
    assert_eq!(mpd.matches("<AdaptationSet").count(), 3, "{mpd}");
    assert!(mpd.contains(&format!("codecs=\"{av01}\"")), "{mpd}");

    let dir = tempdir::Dir::new("av1");
    let source = served(&ladder, "cam", "source", &dir);
    let r = served(&ladder, "cam", "av1", &dir);
    let v = stream(&r.probe, "video");
    assert_eq!(v["codec_name"], "av1");
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(640), Some(360))
    );
    // the same segments as the source, each opening with a key frame at the
    // source's first presentation time
    let msns = |s: &Served| s.playlist.segments.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(msns(&r), msns(&source));
    for (i, (seg, src_seg)) in r.segments.iter().zip(&source.segments).enumerate() {
        assert!(seg[0].2, "segment {i} starts with a key frame: {seg:?}");
        assert!(
            (seg[0].0 - src_seg[0].0).abs() < 0.001,
            "segment {i} starts at {} where the source's does at {}",
            seg[0].0,
            src_seg[0].0
        );
        assert!(seg.iter().all(|p| p.0 == p.1), "AV1 has pts = dts: {seg:?}");
    }
    // libdav1d decodes every listed picture without an error
    let whole = dir.join("av1.mp4");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-c:v", "libdav1d", "-i"])
        .arg(&whole)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dav1d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let listed: usize = r.segments.iter().map(|s| s.len()).sum();
    assert_eq!(decoded, listed, "every listed picture decodes");
    // what the encoder made is what is listed; pictures it could not take in
    // time are counted, not lost silently (rav1e is at the limit of real
    // time at 360p on 2 cores)
    let line = rung_line(&ladder.log(), "av1");
    let encoded = num(&line, "encoded");
    let dropped = num(&line, "dropped_queue_full");
    let pictures = num(&line, "pictures");
    // (pictures: what reached the rung; dropped_queue_full: what did not)
    assert_eq!(pictures + dropped, 180, "{line:?}");
    assert_eq!(encoded, pictures, "{line:?}");
    assert_eq!(num(&line, "errors"), 0, "{line:?}");
    let source_listed: usize = source.segments.iter().map(|s| s.len()).sum();
    assert!(
        listed as u64 <= encoded && source_listed as u64 - listed as u64 <= dropped,
        "listed {listed}, encoded {encoded}, dropped {dropped}, source {source_listed}"
    );
    // (how many it kept depends on the machine's load: no threshold here)
    assert!(encoded > 0, "{line:?}");
}

/// `backend = "gpu"` on a box with no GPU: the ladder's `fallback` decides at
/// publish. `fail` refuses the publisher with a reason; `degrade` keeps the
/// source passed through and leaves the rungs out; both are logged once.
#[test]
fn a_gpu_ladder_without_a_gpu_follows_its_fallback_at_publish() {
    if ladder::pipeline::gpu::driver::open_library(
        ladder::pipeline::gpu::driver::LIBCUDA,
        &[ladder::pipeline::gpu::driver::LIBCUDA],
    )
    .is_ok()
    {
        eprintln!("skipped: libcuda.so.1 loads here, so this is not a no-GPU box");
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = format!(
        r#"
[server]
rtmp_listen  = "127.0.0.1:0"
http_listen  = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[auth]
open = false

[packaging]
{PACKAGING}

[[channels]]
name = "strict"
key = "k-strict"
ladder = "strict"

[[channels]]
name = "lenient"
key = "k-lenient"
ladder = "lenient"

[ladders.strict]
backend = "gpu"
fallback = "fail"
renditions = [ {{ name = "source", passthrough = true }}, {{ name = "360p", height = 360, bitrate_kbps = 700 }} ]

[ladders.lenient]
backend = "gpu"
fallback = "degrade"
renditions = [ {{ name = "source", passthrough = true }}, {{ name = "360p", height = 360, bitrate_kbps = 700 }} ]
"#
    );
    let ladder = Ladder::start(&config);
    let src = Source {
        size: "640x360",
        rate: 30,
        seconds: 3.0,
        x264: "-preset ultrafast -g 30 -keyint_min 30 -sc_threshold 0",
        audio: true,
    };
    let (code, err) = wait(
        publish(&src, &ladder.rtmp_url("k-strict"), None),
        Duration::from_secs(60),
    );
    assert_ne!(code, Some(0), "the strict publish is refused: {err}");
    assert!(
        ladder.wait_log("publish refused", Duration::from_secs(5)),
        "{}",
        ladder.log()
    );
    let log = ladder.log();
    let refused = log.lines().find(|l| l.contains("publish refused")).unwrap();
    assert!(
        refused.contains("channel=strict")
            && refused.contains("no NVIDIA driver (libcuda.so.1 not found)"),
        "{refused}"
    );
    assert!(!log.contains("k-strict"), "the key is never logged:\n{log}");

    let (code, err) = wait(
        publish(&src, &ladder.rtmp_url("k-lenient"), None),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "the lenient publish is accepted: {err}");
    assert!(ladder.wait_log("publish ended", Duration::from_secs(10)));
    let log = ladder.log();
    let started = log
        .lines()
        .find(|l| l.contains("publish started") && l.contains("channel=lenient"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        started.contains("rungs=0") && started.contains("keeps only the source passed through"),
        "{started}"
    );
    let (_, master) = get_text(&ladder.url("/live/lenient/master.m3u8"));
    assert!(master.contains("source/index.m3u8"), "{master}");
    assert!(!master.contains("360p"), "the rung was left out:\n{master}");
}
