//! Parked blocking requests: the origin's memory per 10,000.
//!
//! `cargo bench --bench parked` (`LADDER_BENCH_PARKED=N` to change the count).
//!
//! The release `ladder` runs with one live channel (ffmpeg publishing a small
//! 150 kbit/s test pattern with 2 s GOPs) and 6 s segments of three 2 s parts,
//! so that a part three parts ahead (the Advance Part Limit for parts of a
//! second or more) is about 6 s away and every request can be opened and
//! measured before it appears; parks last up to 3 x 6 s.
//!
//! Each phase waits for a segment to complete (a blocking reload), then opens
//! N blocking reloads `index.m3u8?_HLS_msn=M&_HLS_part=2` for the last part of
//! the segment that has just opened, reads the ladder process's VmRSS while they
//! are parked, and checks that every one is answered 200 when the part appears.
//! Phase "h2": HTTP/2 prior knowledge, 250 streams per connection (the origin
//! allows 256). Phase "h1": HTTP/1.1, one connection per request (bounded by
//! the open-file limit).

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHANNEL: &str = "parked";
const STREAMS_PER_CONNECTION: usize = 250;

fn main() {
    if !should_run("parked") {
        return;
    }
    header("parked blocking requests");
    let n: usize = std::env::var("LADDER_BENCH_PARKED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let ladder = Ladder::start("segment_seconds = 6.0\npart_seconds = 2.0\nwindow_segments = 3");
    let _ffmpeg = publish_testsrc(
        &ladder.rtmp_url(CHANNEL),
        "320x240",
        600,
        "-preset ultrafast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 \
         -b:v 150k -maxrate 150k -bufsize 300k",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = ladder.url(&format!("/live/{CHANNEL}/source/index.m3u8"));
        let client = reqwest::Client::new();
        let t = Instant::now();
        loop {
            // wait for a complete segment
            if let Ok(r) = client.get(&base).send().await {
                if r.status() == 200 && r.text().await.unwrap_or_default().contains("\nseg-") {
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(40), "no segment:\n{}", ladder.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pid = ladder.pid();
        let h1_max = (nofile_limit() as usize).saturating_sub(200);
        for phase in ["h2", "h1"] {
            let count = if phase == "h1" { n.min(h1_max) } else { n };
            let target = sync(&client, &base).await;
            let url = format!("{base}?_HLS_msn={target}&_HLS_part=2");
            let rss0 = rss_bytes(pid);
            let cpu0 = cpu_ticks(pid);
            let done = Arc::new(AtomicUsize::new(0));
            let ok = Arc::new(AtomicUsize::new(0));
            let opened = Instant::now();
            let tasks = if phase == "h2" {
                open_h2(&url, count, done.clone(), ok.clone())
            } else {
                open_h1(ladder.http, &url, count, done.clone(), ok.clone()).await
            };
            let open_secs = opened.elapsed().as_secs_f64();
            // let the origin take the last requests in
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let rss1 = rss_bytes(pid);
            let early = done.load(Ordering::Relaxed);
            let cpu1 = cpu_ticks(pid);
            let parked_at = Instant::now();
            let mut first: Option<f64> = None;
            while done.load(Ordering::Relaxed) < count && opened.elapsed() < Duration::from_secs(40)
            {
                if first.is_none() && done.load(Ordering::Relaxed) > early {
                    first = Some(parked_at.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let all = parked_at.elapsed().as_secs_f64();
            let cpu2 = cpu_ticks(pid);
            for t in tasks {
                t.abort();
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss2 = rss_bytes(pid);
            if rss2 == 0 {
                let log = ladder.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!("ladder exited; its last log lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            let done = done.load(Ordering::Relaxed);
            let ok = ok.load(Ordering::Relaxed);
            println!(
                "{phase}: {count} parked (opened in {open_secs:.2} s, {early} answered before the RSS reading)"
            );
            println!(
                "{phase}:   VmRSS before {:.1} MiB, parked {:.1} MiB, 3 s after the last answer {:.1} MiB => {:.0} bytes per parked request",
                rss0 as f64 / 1048576.0,
                rss1 as f64 / 1048576.0,
                rss2 as f64 / 1048576.0,
                (rss1 as f64 - rss0 as f64) / count as f64
            );
            println!(
                "{phase}:   answered {done}/{count}, {ok} with 200; first answer {:.2} s after the reading, last {:.2} s",
                first.unwrap_or(f64::NAN),
                all
            );
            println!(
                "{phase}:   ladder CPU {} ms while opening, {} ms from the reading to the last answer",
                (cpu1 - cpu0) * 10,
                (cpu2 - cpu1) * 10
            );
        }
    });
}

/// Wait for the open segment to complete; return the msn of the one that
/// opens then.
async fn sync(client: &reqwest::Client, base: &str) -> u64 {
    // A plain reload answers 404 for a part duration after each segment
    // boundary (docs/PERFORMANCE.md, "Found while measuring"): retry.
    let mut last_complete = None;
    for _ in 0..100 {
        let text = client.get(base).send().await.unwrap().text().await.unwrap();
        last_complete = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("seg-")?
                    .strip_suffix(".m4s")?
                    .parse::<u64>()
                    .ok()
            })
            .max();
        if last_complete.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = last_complete.expect("a complete segment in the playlist") + 1;
    let r = client
        .get(format!("{base}?_HLS_msn={open}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "sync reload");
    let _ = r.bytes().await;
    open + 1
}

fn open_h2(
    url: &str,
    count: usize,
    done: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(count);
    let mut client = None;
    for i in 0..count {
        if i % STREAMS_PER_CONNECTION == 0 {
            // a client per connection: its pool holds one h2 connection
            client = Some(
                reqwest::Client::builder()
                    .http2_prior_knowledge()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap(),
            );
        }
        let c = client.clone().unwrap();
        let url = url.to_string();
        let (done, ok) = (done.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let r = c.get(&url).send().await;
            if let Ok(r) = r {
                let status = r.status();
                if r.bytes().await.is_ok() && status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    tasks
}

/// One connection per request; returns once every request is written.
async fn open_h1(
    addr: std::net::SocketAddr,
    url: &str,
    count: usize,
    done: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let path = url.splitn(4, '/').nth(3).unwrap_or("").to_string();
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let written = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let request = request.clone();
        let (done, ok, written) = (done.clone(), ok.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = false;
            let r = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(request.as_bytes()).await?;
                sent = true;
                written.fetch_add(1, Ordering::Relaxed);
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await?;
                Ok::<_, std::io::Error>(buf.starts_with(b"HTTP/1.1 200"))
            }
            .await;
            if matches!(r, Ok(true)) {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            if !sent {
                written.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
        // pace the connects a little: the listen backlog is finite
        tokio::task::yield_now().await;
    }
    let t = Instant::now();
    while written.load(Ordering::Relaxed) < count && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tasks
}
