//! Ingest-to-availability latency of parts, source passed through.
//!
//! `cargo bench --bench latency` (`LADDER_BENCH_SECS=N` per run, default 60).
//!
//! ffmpeg publishes a 640x360 30 fps test pattern with 48 kHz AAC in real time
//! (`-re`, x264 `-tune zerolatency`, 2 s GOP) to the release `ladder`. Two
//! followers (video `source` and `audio`) each read the preload hint once and
//! then request the hinted part over and over: `part-N.m4s` parks until part N
//! is written, then `part-N+1.m4s` is asked at once. When a response's body is
//! complete at wall time T, the part's `prft` gives the wall-clock ingest time
//! of its first sample (the packager stamps it with the time the RTMP message
//! was handed over); `trun` gives its duration. Reported per track:
//! - T - prft: first sample in to part out;
//! - T - prft - part duration: the overhead. The first sample of a part cannot
//!   leave before the part is complete, one part duration later, so this is
//!   what the packager, store, origin and loopback HTTP add.
//!
//! Runs at part_seconds 0.5 (default) and 0.2.

mod common;

use common::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds between 1900 (NTP era 0) and 1970.
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
/// Parts skipped at the start of each follow (the first parts of a session).
const WARMUP_PARTS: usize = 4;

fn main() {
    if !should_run("latency") {
        return;
    }
    header("ingest-to-availability latency");
    let secs = bench_secs(60);
    for part in [0.5, 0.2] {
        run(part, secs);
    }
}

fn run(part_seconds: f64, secs: u64) {
    let ladder = Ladder::start(&format!(
        "segment_seconds = 2.0\npart_seconds = {part_seconds}\nwindow_segments = 8"
    ));
    let _ffmpeg = publish_testsrc(
        &ladder.rtmp_url("latency"),
        "640x360",
        secs + 30,
        "-preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 -b:v 1500k",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (video, audio) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let base = ladder.url("/live/latency");
        let until = Instant::now() + Duration::from_secs(secs + 3);
        let v = tokio::spawn(follow(
            client.clone(),
            format!("{base}/source"),
            until,
            90_000,
        ));
        let a = tokio::spawn(follow(client, format!("{base}/audio"), until, 48_000));
        (v.await.unwrap(), a.await.unwrap())
    });
    println!("part_seconds = {part_seconds}, {secs} s:");
    for (name, samples) in [("video", video), ("audio", audio)] {
        report(name, samples);
    }
}

/// Per part, in ms: (T - prft, part duration, T - next part's prft).
type Samples = Vec<(f64, f64, f64)>;

fn report(name: &str, samples: Samples) {
    let mut total: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut over: Vec<f64> = samples.iter().map(|s| s.0 - s.1).collect();
    let mut dur: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let mut trigger: Vec<f64> = samples.iter().map(|s| s.2).collect();
    for v in [&mut total, &mut over, &mut dur, &mut trigger] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let line = |v: &[f64]| {
        format!(
            "p50 {:7.1}  p99 {:7.1}  max {:7.1} ms",
            quantile(v, 0.5),
            quantile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!(
        "  {name}: {} parts, duration p50 {:.1} ms",
        samples.len(),
        quantile(&dur, 0.5)
    );
    println!("    T - prft             {}", line(&total));
    println!("    T - prft - duration  {}", line(&over));
    println!("    T - next prft        {}", line(&trigger));
}

async fn follow(client: reqwest::Client, base: String, until: Instant, timescale: u64) -> Samples {
    let mut samples = Vec::new();
    let mut next: Option<u64> = None;
    let mut seen = 0usize;
    // the previous part: (T, its prft, duration ms), waiting for the next prft
    let mut prev: Option<(SystemTime, SystemTime, f64)> = None;
    while Instant::now() < until {
        let Some(n) = next else {
            prev = None;
            next = hint(&client, &base).await;
            if next.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        let r = match client.get(format!("{base}/part-{n}.m4s")).send().await {
            Ok(r) => r,
            Err(_) => {
                next = None;
                continue;
            }
        };
        if r.status() != 200 {
            // behind the window, or ahead of the hint: start again from the playlist
            next = None;
            continue;
        }
        let Ok(body) = r.bytes().await else {
            next = None;
            continue;
        };
        let t = SystemTime::now();
        next = Some(n + 1);
        seen += 1;
        if seen <= WARMUP_PARTS {
            continue;
        }
        let (Some(prft), Some(ticks)) = (prft_wall(&body), trun_duration(&body)) else {
            prev = None;
            continue;
        };
        // Part n was written when the first sample of part n+1 came in: that
        // sample's ingest time is part n+1's prft.
        if let Some((pt, pprft, pdur)) = prev.take() {
            samples.push((ms_between(pprft, pt), pdur, ms_between(prft, pt)));
        }
        prev = Some((t, prft, ticks as f64 * 1e3 / timescale as f64));
    }
    samples
}

/// `b - a` in ms (negative when b is earlier).
fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// The part number of the playlist's preload hint.
async fn hint(client: &reqwest::Client, base: &str) -> Option<u64> {
    let text = client
        .get(format!("{base}/index.m3u8"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))?;
    let uri = line.split("URI=\"part-").nth(1)?;
    uri.split('.').next()?.parse().ok()
}

/// Top-level boxes (size, type, payload) of a CMAF chunk; descends into moof/traf.
fn find_box<'a>(mut data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    let (want, rest) = path.split_first()?;
    while data.len() >= 8 {
        let size = u32::from_be_bytes(data[0..4].try_into().ok()?) as usize;
        if size < 8 || size > data.len() {
            return None;
        }
        if &data[4..8] == *want {
            let payload = &data[8..size];
            return if rest.is_empty() {
                Some(payload)
            } else {
                find_box(payload, rest)
            };
        }
        data = &data[size..];
    }
    None
}

/// `prft`'s NTP timestamp as wall-clock time.
fn prft_wall(part: &[u8]) -> Option<SystemTime> {
    let p = find_box(part, &[b"prft"])?;
    // version/flags 4, reference_track_ID 4, ntp 8
    let ntp = u64::from_be_bytes(p.get(8..16)?.try_into().ok()?);
    let secs = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_SECS)?;
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// Sum of the `trun` sample durations, in track ticks.
fn trun_duration(part: &[u8]) -> Option<u64> {
    let t = find_box(part, &[b"moof", b"traf", b"trun"])?;
    let flags = u32::from_be_bytes([0, t[1], t[2], t[3]]);
    let count = u32::from_be_bytes(t.get(4..8)?.try_into().ok()?) as usize;
    let mut at = 8;
    if flags & 0x1 != 0 {
        at += 4; // data_offset
    }
    if flags & 0x4 != 0 {
        at += 4; // first_sample_flags
    }
    let fields = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|f| flags & **f != 0)
        .count();
    if flags & 0x100 == 0 {
        return None;
    }
    let mut sum = 0u64;
    for i in 0..count {
        let o = at + i * fields * 4;
        sum += u64::from(u32::from_be_bytes(t.get(o..o + 4)?.try_into().ok()?));
    }
    Some(sum)
}
