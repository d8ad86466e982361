//! Hostile input against the real `ladder` binary, one class of the
//! "Hostile inputs" table of PROTOCOL-RULES.md per test, each with a live
//! channel published by ffmpeg beside the attack.
//!
//! Under each attack the test asserts three things a user would see:
//! - the attacker gets the documented answer (the connection closed, an
//!   onStatus error, 400, 404, 503...);
//! - the `ladder` process stays bounded: resident memory (VmRSS of
//!   /proc/<pid>/status) grows by less than a stated bound over the
//!   baseline taken before the attack, and its descriptors (/proc/<pid>/fd)
//!   come back to within [`FD_SLACK`] of the baseline once the attackers
//!   are gone;
//! - the live channel keeps playing: its media playlist's last segment or
//!   part advances during and after the attack, and ffprobe reads its
//!   newest segment.
//!
//! The parsers behind each class have unit tests of their own
//! (`src/ingest/rtmp/*.rs`, `src/media/*.rs`, `src/packaging/hls.rs`,
//! `src/origin/*.rs`, `src/packaging/store.rs`); here it is the process as a
//! whole. Two classes of the table are covered elsewhere, end to end:
//! - teardown races: `tests/e2e.rs`
//!   (`publisher_killed_mid_gop_with_a_viewer_waiting_and_republished_at_once`,
//!   `second_publisher_is_refused_or_replaces`);
//! - auth that fails open: `tests/admin.rs` (`every_webhook_failure_denies`,
//!   `an_unreachable_webhook_denies`), and the two-publishers-on-one-key case
//!   in `tests/e2e.rs` (`second_publisher_is_refused_or_replaces`).
//!
//! Resident memory only sees pages that were touched: a server that reserved
//! memory by a declared length without writing it would not show here (the
//! chunk decoder's unit tests check that it never does).

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::raw_rtmp::{RawRtmp, CSID_VIDEO};
use common::*;
use ladder::ingest::rtmp::amf0::Amf0Value;
use ladder::ingest::rtmp::chunk::{msg_type, MAX_BUFFERED_BYTES, MAX_CHUNK_STREAMS};
use ladder::ingest::server::{MAX_BYTES_BEFORE_PUBLISH, MAX_CONNECTIONS};
use ladder::origin::HEADER_READ_TIMEOUT;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// The live channel ffmpeg publishes.
const LIVE: &str = "live1";
/// `[origin] max_parked` of the test configuration.
const MAX_PARKED: usize = 100;
/// `[origin] max_connections` of the test configuration.
const MAX_VIEWERS: usize = 48;
/// `[packaging] max_channel_mib` of the test configuration.
const CHANNEL_MIB: u64 = 24;
/// Resident memory an attack may add (KiB), when nothing it does is
/// allowed to hold more than a few MiB.
const RSS_GROWTH_KIB: u64 = 64 * 1024;
/// Resident memory a publisher of huge frames may add (KiB): its channel's
/// store at the cap, plus what one channel has in flight outside the store
/// (the part being built and its serialisation, `MAX_PART_BYTES` each; the
/// one part the store takes over its cap; the chunk decoder's message of up
/// to 8 MiB and its buffer), about 88 MiB in all, plus the allocator's
/// slack: freed pages come back to the system seconds later, not at once
/// (see `check_recovered`). Measured: 80 to 122 MiB over the baseline on a
/// warm machine and up to 156 MiB in a run from a fresh clone, flat,
/// whether 100 MiB or 1 GiB is sent (without the caps, 1 GiB of audio before
/// a keyframe took 1 GiB). The attack sends over 1 GiB in all.
const CHANNEL_RSS_KIB: u64 = (CHANNEL_MIB + 192) * 1024;
/// Descriptors over the baseline once the attackers are gone: sockets the
/// server closes a moment after its peer.
const FD_SLACK: usize = 4;
/// Longest wait for the server to close a connection it must close at once
/// (the documented deadlines are longer where they apply).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for the live channel's playlist to advance.
const LIVE_WAIT: Duration = Duration::from_secs(15);

const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 6";

/// Ladder with one live channel, and the baseline of its resources.
struct Bed {
    ladder: Ladder,
    ffmpeg: Child,
    base: Resources,
}

impl Bed {
    fn start() -> Bed {
        let extra =
            format!("\n[origin]\nmax_connections = {MAX_VIEWERS}\nmax_parked = {MAX_PARKED}\n");
        let text = config(
            true,
            &format!("{PACKAGING}\nmax_channel_mib = {CHANNEL_MIB}"),
            &extra,
        );
        let ladder = Ladder::start(&text);
        let src = Source {
            size: "320x180",
            rate: 15,
            seconds: 600.0,
            x264: "-preset ultrafast -tune zerolatency -g 15 -keyint_min 15 -sc_threshold 0",
            audio: true,
        };
        let ffmpeg = publish(&src, &ladder.rtmp_url(LIVE), None);
        wait_200(
            &ladder.url(&format!("/live/{LIVE}/source/index.m3u8")),
            Duration::from_secs(20),
        );
        let mut bed = Bed {
            base: ladder.resources(),
            ladder,
            ffmpeg,
        };
        // the first look warms the origin and the allocator up: the
        // baseline comes after it
        bed.check_live("before the attack");
        bed.base = bed.ladder.resources();
        bed
    }

    fn rtmp(&self) -> SocketAddr {
        self.ladder.rtmp
    }

    /// The live channel's playlist advances and its newest segment plays.
    fn check_live(&self, when: &str) {
        let url = self.ladder.url(&format!("/live/{LIVE}/source/index.m3u8"));
        let position = || {
            let (s, text) = get_text(&url);
            assert_eq!(s, 200, "{when}: the live playlist answered {s}");
            let pl = parse_media_playlist(&text);
            let last = pl.segments.last().map(|s| s.0);
            ((last, pl.open_parts), pl)
        };
        let (first, _) = position();
        let started = Instant::now();
        let pl = loop {
            let (now, pl) = position();
            // (at the start, until a segment is complete, parts only)
            if now > first && !pl.segments.is_empty() {
                break pl;
            }
            assert!(
                started.elapsed() < LIVE_WAIT,
                "{when}: the live channel stopped at {first:?}\n{}",
                self.ladder.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let (_, uri, _, _) = pl.segments.last().expect("a complete segment").clone();
        let init = pl.map.last().expect("EXT-X-MAP").clone();
        let mut file = Vec::new();
        for name in [init, uri] {
            let (s, _, body) = get(&self.ladder.url(&format!("/live/{LIVE}/source/{name}")));
            assert_eq!(s, 200, "{when}: {name}");
            file.extend_from_slice(&body);
        }
        let path = self.ladder.dir.join("newest.mp4");
        std::fs::write(&path, &file).unwrap();
        let video = packets(&ffprobe(&path), "video");
        assert!(!video.is_empty(), "{when}: no video in the newest segment");
    }

    /// Resident memory grew by at most `growth_kib` over the baseline (now:
    /// call it during an attack, and after).
    fn check_memory(&self, when: &str, growth_kib: u64) -> Resources {
        let now = self.ladder.resources();
        let grown = now.rss_kib.saturating_sub(self.base.rss_kib);
        eprintln!(
            "{when}: RSS {} KiB (+{grown}), {} fds ({} before)",
            now.rss_kib, now.fds, self.base.fds
        );
        assert!(
            grown <= growth_kib,
            "{when}: resident memory grew by {grown} KiB (from {} to {} KiB), more than {growth_kib} KiB",
            self.base.rss_kib,
            now.rss_kib
        );
        now
    }

    /// Once the attackers are gone: descriptors back to within
    /// [`FD_SLACK`] of the baseline (waiting for the server to notice the
    /// closes, at most `within`), memory within `growth_kib`.
    fn check_recovered(&mut self, when: &str, growth_kib: u64, within: Duration) {
        assert!(
            self.ladder.alive(),
            "{when}: ladder exited\n{}",
            self.ladder.log()
        );
        let started = Instant::now();
        loop {
            let now = self.ladder.resources();
            if now.fds <= self.base.fds + FD_SLACK {
                break;
            }
            assert!(
                started.elapsed() < within,
                "{when}: {} descriptors open, {} before the attack",
                now.fds,
                self.base.fds
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // memory comes back within seconds, not at once: the ended channel's
        // teardown and the allocator's return of freed pages (seen: +100 MiB
        // right after the attacker left, +38 MiB 3-4 s later). Give it until
        // `within` too; a leak stays above the bound and still fails.
        let started = Instant::now();
        while self
            .ladder
            .resources()
            .rss_kib
            .saturating_sub(self.base.rss_kib)
            > growth_kib
            && started.elapsed() < within
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{when}: memory settled after {:?}", started.elapsed());
        self.check_memory(when, growth_kib);
        self.check_live(when);
    }

    /// The attacker channel's "publish ended" log line.
    fn ended(&self, channel: &str) -> String {
        self.line(&["publish ended", &format!("channel={channel} ")])
    }

    /// The first log line holding every one of `needles`, waiting for it
    /// (the log is read from the process's stderr a moment after it is
    /// written).
    fn line(&self, needles: &[&str]) -> String {
        let t = Instant::now();
        loop {
            if let Some(l) = self.ladder.log_lines(needles).into_iter().next() {
                return l;
            }
            assert!(
                t.elapsed() < LIVE_WAIT,
                "no log line with {needles:?}:\n{}",
                self.ladder.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The live channel's decoder configuration (avcC), from its init
    /// segment: attackers send it so that their frames get past the demuxer.
    fn avcc(&self) -> Bytes {
        let (_, text) = get_text(&self.ladder.url(&format!("/live/{LIVE}/source/index.m3u8")));
        let init = parse_media_playlist(&text).map.last().unwrap().clone();
        let (_, _, init) = get(&self.ladder.url(&format!("/live/{LIVE}/source/{init}")));
        let at = init
            .windows(4)
            .position(|w| w == b"avcC")
            .expect("avcC box");
        let size = u32::from_be_bytes(init[at - 4..at].try_into().unwrap()) as usize;
        Bytes::copy_from_slice(&init[at + 4..at - 4 + size])
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.ffmpeg.kill();
        let _ = self.ffmpeg.wait();
        if std::thread::panicking() || std::env::var_os("HOSTILE_LOG").is_some() {
            let log = self.ladder.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- ladder log (last {} lines) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// FLV tag bodies
// ---------------------------------------------------------------------------

/// AVC sequence header (FLV video tag: keyframe, AVC, packet type 0).
fn avc_header(record: &[u8]) -> Bytes {
    let mut b = vec![0x17, 0x00, 0, 0, 0];
    b.extend_from_slice(record);
    Bytes::from(b)
}

/// An AVC frame of the given NAL units (4-byte lengths).
fn avc_frame(keyframe: bool, nals: &[&[u8]]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_slice(&[if keyframe { 0x17 } else { 0x27 }, 0x01, 0, 0, 0]);
    for n in nals {
        b.put_u32(n.len() as u32);
        b.put_slice(n);
    }
    b.freeze()
}

/// An IDR (or non-IDR) slice NAL unit of `len` bytes, content made up.
fn slice(idr: bool, len: usize) -> Vec<u8> {
    let mut n = vec![0x5a; len.max(2)];
    n[0] = if idr { 0x65 } else { 0x41 };
    n
}

/// AMF0 string bytes as written, whatever they hold.
fn amf_string(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0x02];
    v.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

fn amf_number(n: f64) -> Vec<u8> {
    let mut v = vec![0x00];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

/// The first `sent` bytes of a video message declared `declared` bytes
/// long on `csid` (< 64), in chunks of `chunk` bytes: a half message
/// (`sent` a multiple of `chunk`, or the chunk stream goes out of step).
fn half_message(csid: u32, declared: u32, sent: usize, chunk: usize, stream_id: u32) -> Vec<u8> {
    let mut b = fmt0_header(csid, declared, msg_type::VIDEO, stream_id);
    for (i, piece) in vec![0x5au8; sent].chunks(chunk).enumerate() {
        if i > 0 {
            b.push(0xC0 | csid as u8);
        }
        b.extend_from_slice(piece);
    }
    b
}

/// A chunk header (fmt 0) on `csid` declaring a message of `len` bytes.
fn fmt0_header(csid: u32, len: u32, type_id: u8, stream_id: u32) -> Vec<u8> {
    let mut h = match csid {
        2..=63 => vec![csid as u8],
        64..=319 => vec![0, (csid - 64) as u8],
        _ => vec![1, ((csid - 64) & 0xff) as u8, ((csid - 64) >> 8) as u8],
    };
    h.extend_from_slice(&[0, 0, 0]);
    h.extend_from_slice(&len.to_be_bytes()[1..]);
    h.push(type_id);
    h.extend_from_slice(&stream_id.to_le_bytes());
    h
}

// ---------------------------------------------------------------------------
// Trusting length fields
// ---------------------------------------------------------------------------

#[test]
fn length_fields_are_never_trusted() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();

    // Set Chunk Size 0, or with the top bit set: a protocol error, closed
    for size in [0u32, 0x8000_0000] {
        let mut c = RawRtmp::handshaken(addr);
        c.set_chunk_size(size);
        assert!(
            c.closed_within(CLOSE_WAIT),
            "chunk size {size:#x}: connection left open"
        );
    }
    // 0x7FFFFFFF acts as 16,777,215 and 1 is legal: the connection works
    for size in [0x7FFF_FFFFu32, 1] {
        let mut c = RawRtmp::handshaken(addr);
        c.set_chunk_size(size);
        let reply = c.connect("live").expect("connection still open");
        assert_eq!(reply[0].as_str(), Some("_result"), "chunk size {size:#x}");
    }

    // a message length of 0xFFFFFF with 1-byte chunks: refused at the header
    let mut c = RawRtmp::handshaken(addr);
    c.set_chunk_size(1);
    let mut h = fmt0_header(CSID_VIDEO, 0xFF_FFFF, msg_type::VIDEO, 1);
    h.push(0x17);
    c.write(&h);
    assert!(c.closed_within(CLOSE_WAIT), "16 MiB message announced");

    // 200 connections each announcing the largest message allowed (8 MiB)
    // and sending a little of it a byte per chunk: nothing reserved for the
    // rest; they stay open (under the bytes-before-publish cap)
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut c = RawRtmp::handshaken(addr);
        c.set_chunk_size(1);
        let mut b = fmt0_header(CSID_VIDEO, 8 * 1024 * 1024 - 1, msg_type::VIDEO, 1);
        b.push(0x17);
        for _ in 0..2000 {
            b.extend_from_slice(&[0xC0 | CSID_VIDEO as u8, 0x5a]);
        }
        c.write(&b).expect("held open");
        held.push(c);
    }
    bed.check_memory("200 half 8 MiB messages", RSS_GROWTH_KIB);
    assert!(held[0].open_after(Duration::from_millis(100)));

    // thousands of chunk streams, each with a half message: closed past
    // MAX_CHUNK_STREAMS, from 40 connections at once
    let attackers: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = RawRtmp::handshaken(addr);
                let mut sent = 0;
                for csid in 3..3003u32 {
                    let mut b = fmt0_header(csid, 1000, msg_type::VIDEO, 1);
                    b.extend_from_slice(&[0x5a; 128]);
                    if c.write(&b).is_none() {
                        break;
                    }
                    sent += 1;
                }
                (sent, c.closed_within(CLOSE_WAIT))
            })
        })
        .collect();
    for a in attackers {
        let (sent, closed) = a.join().unwrap();
        assert!(closed, "3000 chunk streams: left open after {sent}");
    }
    bed.ladder.wait_log_count(
        &format!("more than {MAX_CHUNK_STREAMS} chunk streams on one connection"),
        40,
        CLOSE_WAIT,
    );

    // half messages up to the per-connection buffer cap, before publishing:
    // closed once past MAX_BYTES_BEFORE_PUBLISH
    let mut c = RawRtmp::handshaken(addr);
    c.set_chunk_size(65_536);
    let mut written = 0;
    for csid in 3..63u32 {
        let mut b = fmt0_header(csid, 300_000, msg_type::VIDEO, 1);
        b.extend_from_slice(&vec![0x5a; 65_536]);
        if c.write(&b).is_none() {
            break;
        }
        written += b.len();
        if written as u64 > 4 * MAX_BYTES_BEFORE_PUBLISH {
            break;
        }
    }
    assert!(c.closed_within(CLOSE_WAIT), "half messages before publish");

    // ...and, publishing, up to the chunk decoder's cap: closed past it
    let (mut c, id) = RawRtmp::publisher(addr, "buffered");
    c.set_chunk_size(65_536);
    // (whole chunks: a half message ends at a chunk boundary)
    let per_stream = 8 * 65_536;
    for csid in 7..(7 + MAX_BUFFERED_BYTES / per_stream + 2) as u32 {
        let b = half_message(csid, 1_000_000, per_stream, 65_536, id);
        if c.write(&b).is_none() {
            break;
        }
    }
    assert!(c.closed_within(CLOSE_WAIT), "16 MiB of half messages");
    let ended = bed.ended("buffered");
    assert!(ended.contains("unfinished messages"), "{ended}");

    bed.check_live("during the attack");
    bed.check_memory("after the buffers filled", RSS_GROWTH_KIB);
    drop(held);
    bed.check_recovered("after the attack", RSS_GROWTH_KIB, Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// Fixed-size name buffers
// ---------------------------------------------------------------------------

#[test]
fn hostile_names_are_refused_and_never_logged() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();
    let long255 = "k".repeat(255);
    let long256 = "k".repeat(256);
    let long65536 = "k".repeat(65_536);
    let refused = [
        long255.as_str(),
        long256.as_str(),
        long65536.as_str(),
        "a\0b",
        "../etc",
        "a/../../b",
        "..",
        "a&b",
        "",
    ];
    for name in refused {
        let mut c = RawRtmp::connected(addr, "live");
        let id = c.create_stream().expect("createStream");
        let code = c.publish(id, name);
        let shown = &name[..name.len().min(20)];
        match code.as_deref() {
            Some("NetStream.Publish.BadName") => {}
            // the 65,536-byte publish is also past what a connection may
            // send before publishing
            None if name.len() > 60_000 => {}
            other => panic!("name {shown:?} ({} bytes): {other:?}", name.len()),
        }
    }
    // not UTF-8: refused as malformed
    let mut c = RawRtmp::connected(addr, "live");
    let id = c.create_stream().unwrap();
    let mut payload = amf_string(b"publish");
    payload.extend(amf_number(5.0));
    payload.push(0x05);
    payload.extend(amf_string(&[0xff, 0xfe, b'k', 0xc3]));
    payload.extend(amf_string(b"live"));
    assert_eq!(
        c.publish_raw(id, Bytes::from(payload)).as_deref(),
        Some("NetStream.Publish.BadName")
    );
    // the connection stays usable after a refusal: a good name publishes,
    // and what follows `?` is not part of the key
    assert_eq!(
        c.publish(id, "named?x=1&y=../../z").as_deref(),
        Some("NetStream.Publish.Start")
    );
    drop(c);
    let ended = bed.ended("named");
    assert!(!ended.contains("x=1"), "{ended}");

    // app names: too long, traversal, NUL
    for app in [long65536.as_str(), "../live", "li\0ve"] {
        let mut c = RawRtmp::handshaken(addr);
        match c.connect(app) {
            Some(reply) => assert_eq!(
                reply[0].as_str(),
                Some("_error"),
                "app {:?}",
                &app[..app.len().min(20)]
            ),
            None => assert!(app.len() > 60_000),
        }
    }
    // an app that is not `live`: connected, but publishing is refused
    let mut c = RawRtmp::connected(addr, "other");
    let id = c.create_stream().unwrap();
    assert_eq!(
        c.publish(id, "good").as_deref(),
        Some("NetStream.Publish.BadName")
    );

    let log = bed.ladder.log();
    assert_no_secrets(&log, &[&long255, "a\0b", "named?x"]);
    assert!(!log.contains("panicked"), "{log}");
    bed.check_recovered("after the names", RSS_GROWTH_KIB, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// AMF parsing
// ---------------------------------------------------------------------------

/// Commands whose AMF0 cannot be decoded, each led by the name of a command
/// that would otherwise do something.
fn hostile_amf() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();
    // a string longer than the bytes left
    let mut p = vec![0x02, 0xff, 0xff];
    p.extend_from_slice(b"createStream");
    v.push(("string past the end", p));
    // a strict array claiming 0xFFFFFFFF elements
    let mut p = amf_string(b"createStream");
    p.extend(amf_number(9.0));
    p.extend([0x0a, 0xff, 0xff, 0xff, 0xff, 0x05]);
    v.push(("array count 0xFFFFFFFF", p));
    // an ECMA array claiming 0xFFFFFFFF entries
    let mut p = amf_string(b"createStream");
    p.extend(amf_number(9.0));
    p.extend([0x08, 0xff, 0xff, 0xff, 0xff]);
    v.push(("ECMA count 0xFFFFFFFF", p));
    // 10,000 objects deep
    let mut p = amf_string(b"createStream");
    p.extend(amf_number(9.0));
    for _ in 0..10_000 {
        p.extend([0x03, 0x00, 0x01, b'a']);
    }
    v.push(("10,000 deep", p));
    // unknown and unsupported markers
    for marker in [0x11u8, 0x0d, 0x20, 0xff, 0x07] {
        let mut p = amf_string(b"createStream");
        p.extend(amf_number(9.0));
        p.extend([marker, 0, 0, 0, 0]);
        v.push(("unknown marker", p));
    }
    // an object without its end
    let mut p = amf_string(b"createStream");
    p.extend(amf_number(9.0));
    p.extend([0x03, 0x00, 0x01, b'a']);
    p.extend(amf_number(1.0));
    v.push(("missing object end", p));
    v
}

#[test]
fn hostile_amf_is_ignored_and_the_connection_keeps_working() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();

    // before publishing: each ignored, the next createStream still answered
    for (what, payload) in hostile_amf() {
        let mut c = RawRtmp::connected(addr, "live");
        c.command_raw(0, Bytes::from(payload)).expect("open");
        assert!(c.create_stream().is_some(), "{what}: connection broken");
        // (replies come in order: one to the hostile command, transaction
        // 9, would be here by now)
        let answered = c
            .seen
            .iter()
            .any(|v| v.get(1).and_then(Amf0Value::as_number) == Some(9.0));
        assert!(!answered, "{what}: answered {:?}", c.seen);
    }
    // a connect whose object has no end: refused with _error
    let mut c = RawRtmp::handshaken(addr);
    let mut p = amf_string(b"connect");
    p.extend(amf_number(1.0));
    p.extend([0x03, 0x00, 0x03]);
    p.extend(b"app");
    p.extend(amf_string(b"live"));
    c.command_raw(0, Bytes::from(p));
    let reply = c
        .wait_command(|v| v[0].as_str() == Some("_error") || v[0].as_str() == Some("_result"))
        .expect("answered");
    assert_eq!(reply[0].as_str(), Some("_error"), "{reply:?}");

    // 20 connections at once sending the 10,000-deep command
    let deep = hostile_amf()
        .into_iter()
        .find(|(w, _)| *w == "10,000 deep")
        .unwrap()
        .1;
    let attackers: Vec<_> = (0..20)
        .map(|_| {
            let deep = deep.clone();
            std::thread::spawn(move || {
                let mut c = RawRtmp::connected(addr, "live");
                c.command_raw(0, Bytes::from(deep)).expect("open");
                c.create_stream().is_some()
            })
        })
        .collect();
    for a in attackers {
        assert!(a.join().unwrap(), "connection broken by deep nesting");
    }

    // while publishing: the same as metadata (@setDataFrame onMetaData),
    // ignored; the publish goes on
    let (mut c, id) = RawRtmp::publisher(addr, "amf");
    for _ in 0..20 {
        for (_, payload) in hostile_amf() {
            let mut data = amf_string(b"@setDataFrame");
            data.extend(amf_string(b"onMetaData"));
            data.extend_from_slice(&payload);
            c.media(id, msg_type::DATA_AMF0, 0, Bytes::from(data))
                .expect("publisher still connected");
        }
    }
    c.media(id, msg_type::VIDEO, 0, avc_header(&bed.avcc()))
        .expect("still publishing");
    assert!(c.open_after(Duration::from_millis(500)));
    bed.check_live("during the attack");
    bed.check_memory("during the attack", RSS_GROWTH_KIB);
    drop(c);
    bed.ended("amf");
    bed.check_recovered("after the attack", RSS_GROWTH_KIB, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// Codec payloads
// ---------------------------------------------------------------------------

/// An HEVC decoder configuration record (640x360 Main), from src/media/hevc.rs.
const HVCC: &str = "0101600000009000000000003ff000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003003f928090210001002a42010101600000030090000003000003003fa0050201696592a4932bc05a020000030002000003003c1022000100074401c172b46240";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn hostile_codec_payloads_are_dropped_and_an_unsupported_codec_ends_the_publish() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();
    let avcc = bed.avcc();
    let (mut c, id) = RawRtmp::publisher(addr, "codec");
    let ms = std::cell::Cell::new(0u32);
    let video = |c: &mut RawRtmp, body: Bytes| {
        ms.set(ms.get() + 33);
        c.media(id, msg_type::VIDEO, ms.get(), body)
            .expect("the publisher is still connected");
    };

    // video before the sequence header
    video(&mut c, avc_frame(true, &[&slice(true, 500)]));
    // avcC claiming 31 SPS that run past the buffer
    video(
        &mut c,
        avc_header(&[1, 0x42, 0, 0x1e, 0xff, 0xff, 0x00, 0x10, 0x67]),
    );
    // avcC with NALU length size 3 (lengthSizeMinusOne = 2), and one with
    // an absurd SPS (all ones)
    let mut odd = avcc.to_vec();
    odd[4] = 0xfc | 2;
    video(&mut c, avc_header(&odd));
    let mut absurd = avcc.to_vec();
    for b in &mut absurd[8..8 + 10] {
        *b = 0xff;
    }
    video(&mut c, avc_header(&absurd));
    // the real configuration, then empty NAL units and frames whose NAL
    // lengths run past the message
    video(&mut c, avc_header(&avcc));
    video(&mut c, avc_frame(true, &[&[], &[], &slice(true, 300)]));
    let mut past = avc_frame(true, &[&slice(true, 100)]).to_vec();
    past[5..9].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    video(&mut c, Bytes::from(past));
    video(&mut c, Bytes::from_static(&[0x17, 0x01, 0, 0]));
    video(&mut c, Bytes::from_static(&[0x17]));
    for _ in 0..10 {
        video(&mut c, avc_frame(false, &[&[]]));
    }
    // an empty AAC configuration, and AAC before any configuration
    c.media(
        id,
        msg_type::AUDIO,
        ms.get(),
        Bytes::from_static(&[0xaf, 0x00]),
    )
    .unwrap();
    c.media(
        id,
        msg_type::AUDIO,
        ms.get(),
        Bytes::from_static(&[0xaf, 0x01, 1, 2, 3]),
    )
    .unwrap();
    // codec change mid-stream: HEVC (Enhanced RTMP) then back to AVC
    let mut hevc = vec![0x90];
    hevc.extend_from_slice(b"hvc1");
    hevc.extend(unhex(HVCC));
    video(&mut c, Bytes::from(hevc));
    let mut frame = vec![0x93];
    frame.extend_from_slice(b"hvc1");
    frame.extend_from_slice(&[0, 0, 0, 20, 0x26, 0x01]);
    frame.extend_from_slice(&[0x5a; 18]);
    video(&mut c, Bytes::from(frame));
    video(&mut c, avc_header(&avcc));
    video(&mut c, avc_frame(true, &[&slice(true, 400)]));
    assert!(
        c.open_after(Duration::from_millis(300)),
        "malformed media closed the publish"
    );
    bed.check_live("during the attack");

    // a codec Ladder does not take (Sorenson H.263, codec id 2): the
    // publish ends, naming why
    c.media(
        id,
        msg_type::VIDEO,
        ms.get() + 33,
        Bytes::from_static(&[0x12, 0, 0, 0]),
    )
    .unwrap();
    assert!(
        c.closed_within(CLOSE_WAIT),
        "unsupported codec left the publish open"
    );
    let ended = bed.ended("codec");
    assert!(ended.contains("unsupported video codec"), "{ended}");
    let log = bed.ladder.log();
    assert!(
        !bed.ladder
            .log_lines(&["malformed media dropped", "channel=codec"])
            .is_empty(),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    bed.check_recovered("after the attack", RSS_GROWTH_KIB, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// Message order
// ---------------------------------------------------------------------------

#[test]
fn messages_out_of_order_are_ignored() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();
    let avcc = bed.avcc();
    let mut c = RawRtmp::connected(addr, "live");
    let id = c.create_stream().unwrap();
    // media before publish, on the stream and on stream 0
    for stream in [id, 0] {
        c.media(stream, msg_type::VIDEO, 0, avc_header(&avcc))
            .unwrap();
        c.media(
            stream,
            msg_type::VIDEO,
            0,
            avc_frame(true, &[&slice(true, 200)]),
        )
        .unwrap();
    }
    assert_eq!(
        c.publish(id, "order").as_deref(),
        Some("NetStream.Publish.Start")
    );
    // publish twice: on the same stream and on another one
    assert_eq!(
        c.publish(id, "order").as_deref(),
        Some("NetStream.Publish.BadName")
    );
    let other = c.create_stream().unwrap();
    assert_eq!(
        c.publish(other, "order2").as_deref(),
        Some("NetStream.Publish.BadName")
    );
    // publish on a stream createStream never made
    assert_eq!(
        c.publish(77, "order3").as_deref(),
        Some("NetStream.Publish.BadName")
    );
    // media on mismatched message stream ids: ignored
    c.media(id, msg_type::VIDEO, 0, avc_header(&avcc)).unwrap();
    for stream in [other, 0, 77] {
        for n in 0..5 {
            c.media(
                stream,
                msg_type::VIDEO,
                40 * n,
                avc_frame(true, &[&slice(true, 200)]),
            )
            .unwrap();
        }
    }
    // exactly three frames on the published stream
    for n in 0..3 {
        c.media(
            id,
            msg_type::VIDEO,
            40 * n,
            avc_frame(true, &[&slice(true, 200)]),
        )
        .unwrap();
    }
    // unknown message types, then deleteStream, then more media: ignored
    for t in [7u8, 13, 22, 0xff] {
        c.media(id, t, 200, Bytes::from_static(&[1, 2, 3])).unwrap();
    }
    c.command(
        0,
        &[
            Amf0Value::String("deleteStream".into()),
            Amf0Value::Number(9.0),
            Amf0Value::Null,
            Amf0Value::Number(f64::from(id)),
        ],
    )
    .unwrap();
    let ended = bed.ended("order");
    assert!(ended.contains("video_frames=3 "), "{ended}");
    assert!(ended.contains("publisher stopped publishing"), "{ended}");
    for n in 0..5 {
        c.media(
            id,
            msg_type::VIDEO,
            300 + 40 * n,
            avc_frame(true, &[&slice(true, 200)]),
        )
        .unwrap();
    }
    // the connection may publish again
    let again = c.create_stream().unwrap();
    assert_eq!(
        c.publish(again, "order").as_deref(),
        Some("NetStream.Publish.Start")
    );
    drop(c);
    bed.ladder.wait_log_count("publish ended", 2, LIVE_WAIT);
    let ended = bed.ladder.log_lines(&["publish ended", "channel=order "]);
    assert_eq!(ended.len(), 2, "{ended:?}");
    // what came after deleteStream reached neither session
    assert!(ended[1].contains("video_frames=0 "), "{}", ended[1]);
    assert!(bed.ladder.log_lines(&["channel=order2"]).is_empty());
    bed.check_recovered("after the attack", RSS_GROWTH_KIB, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// Slow-loris
// ---------------------------------------------------------------------------

#[test]
fn slow_connections_are_closed_and_the_connection_cap_holds() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();
    // the handshake must be done by its deadline (5 s)
    let handshake_deadline = Duration::from_secs(5) + CLOSE_WAIT;
    let only_c0 = std::thread::spawn(move || {
        let mut c = RawRtmp::tcp(addr);
        c.write(&[3]).unwrap();
        c.closed_within(handshake_deadline)
    });
    let short_c1 = std::thread::spawn(move || {
        let mut c = RawRtmp::tcp(addr);
        let mut b = vec![3u8];
        b.extend(vec![0u8; 1535]);
        c.write(&b).unwrap();
        c.closed_within(handshake_deadline)
    });
    let no_c2 = std::thread::spawn(move || {
        let mut c = RawRtmp::tcp(addr);
        let mut b = vec![3u8];
        b.extend(vec![0u8; 1536]);
        c.write(&b).unwrap();
        // S0 S1 S2 arrive; C2 never goes
        c.closed_within(handshake_deadline)
    });
    let byte_a_second = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        for _ in 0..20 {
            if s.write_all(&[3]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return true,
            }
            if started.elapsed() > handshake_deadline {
                break;
            }
        }
        false
    });
    // after the handshake, a byte a second and no publish: closed by the
    // publish deadline (30 s)
    let publish_deadline = Duration::from_secs(30) + CLOSE_WAIT;
    let trickle = std::thread::spawn(move || {
        let mut c = RawRtmp::handshaken(addr);
        let started = Instant::now();
        // a Window Acknowledgement Size message, a byte at a time, over and over
        let message = [0x02, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0, 0x10, 0, 0];
        for b in message.iter().cycle() {
            if c.write(&[*b]).is_none() {
                return true;
            }
            if !c.open_after(Duration::from_secs(1)) {
                return true;
            }
            if started.elapsed() > publish_deadline {
                return false;
            }
        }
        false
    });

    // connections up to the limit (handshaken, so that the handshake
    // deadline does not free slots while they are being opened)
    let openers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..MAX_CONNECTIONS / 4)
                    .filter_map(|_| RawRtmp::try_handshaken(addr))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let held: Vec<RawRtmp> = openers
        .into_iter()
        .flat_map(|o| o.join().unwrap())
        .collect();
    // the live publisher and the slow ones above hold slots too
    assert!(held.len() < MAX_CONNECTIONS, "{} held", held.len());
    // one more: accepted and closed at once, with a log line
    let mut extra = RawRtmp::tcp(addr);
    let _ = extra.write(&[3]);
    assert!(
        extra.closed_within(CLOSE_WAIT),
        "connection over the limit left open"
    );
    assert!(bed
        .ladder
        .wait_log("connection refused: connection limit reached", CLOSE_WAIT));
    bed.check_memory("connections at the limit", RSS_GROWTH_KIB);
    bed.check_live("connections at the limit");

    assert!(only_c0.join().unwrap(), "only C0: never closed");
    assert!(short_c1.join().unwrap(), "1535-byte C1: never closed");
    assert!(no_c2.join().unwrap(), "no C2: never closed");
    assert!(
        byte_a_second.join().unwrap(),
        "a byte a second: never closed"
    );
    // slots are free again once they leave: a publisher gets through
    drop(held);
    let started = Instant::now();
    let mut c = loop {
        if let Some(c) = RawRtmp::try_handshaken(addr) {
            break c;
        }
        assert!(started.elapsed() < CLOSE_WAIT, "no slot freed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(c.connect("live").unwrap()[0].as_str(), Some("_result"));
    let id = c.create_stream().unwrap();
    assert_eq!(
        c.publish(id, "after").as_deref(),
        Some("NetStream.Publish.Start")
    );
    drop(c);
    assert!(
        trickle.join().unwrap(),
        "trickled bytes kept a connection open"
    );
    bed.line(&["RTMP connection closed", "no publish within"]);
    bed.check_recovered("after the attack", RSS_GROWTH_KIB, Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// Origin abuse
// ---------------------------------------------------------------------------

/// The body of a 200 from `url`, retried while the origin refuses the
/// connection (at its connection cap, until it sees other viewers leave).
fn admitted(url: &str) -> String {
    let rt = runtime();
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = rt.block_on(async {
            let r = reqwest::get(url).await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), r.text().await?))
        }) {
            return body;
        }
        assert!(started.elapsed() < CLOSE_WAIT, "{url}: no slot freed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `get_text` from inside a runtime.
async fn get_text_async(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A raw HTTP/1.1 GET (paths as written, which an HTTP client would
/// normalise): the status and body.
fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    let text = String::from_utf8_lossy(&v).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status for {path}: {text:?}"));
    (status, text)
}

#[test]
fn origin_abuse_gets_4xx_or_503_and_the_caps_hold() {
    let mut bed = Bed::start();
    let http = bed.ladder.http;
    let playlist = format!("/live/{LIVE}/source/index.m3u8");
    let (_, text) = get_text(&bed.ladder.url(&playlist));
    let pl = parse_media_playlist(&text);
    let last = pl.segments.last().unwrap().0;

    // slow-loris: request heads a byte a second, closed by the header
    // timeout (HEADER_READ_TIMEOUT), whatever else goes on meanwhile
    let header_deadline = HEADER_READ_TIMEOUT + CLOSE_WAIT;
    let loris: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(http).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                let started = Instant::now();
                let mut buf = [0u8; 256];
                for b in b"GET /time HTTP/1.1\r\nX-Slow: "
                    .iter()
                    .chain([b'a'; 64].iter())
                    .cycle()
                {
                    if s.write_all(&[*b]).is_err() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    match s.read(&mut buf) {
                        Ok(_) => return true,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return true,
                    }
                    if started.elapsed() > header_deadline {
                        return false;
                    }
                }
                false
            })
        })
        .collect();

    // directives that can never be satisfied: 400 at once
    for q in [
        "_HLS_msn=9223372036854775808".to_string(),
        "_HLS_msn=18446744073709551616".to_string(),
        "_HLS_msn=-1".to_string(),
        "_HLS_msn=abc".to_string(),
        "_HLS_msn=1e3".to_string(),
        "_HLS_part=1".to_string(),
        format!("_HLS_msn={}", last + 100),
        format!("_HLS_msn={}&_HLS_part=1000", last + 1),
        format!("_HLS_msn={last}&_HLS_part=-1"),
    ] {
        let (s, _) = raw_get(http, &format!("{playlist}?{q}"));
        assert_eq!(s, 400, "{q}");
    }
    // media that is neither there nor hinted, and path traversal: 404
    for p in [
        format!("/live/{LIVE}/source/part-99999999999.m4s"),
        format!("/live/{LIVE}/source/seg-{}.m4s", last + 1000),
        format!("/live/{LIVE}/source/seg-18446744073709551616.m4s"),
        "/live/../../../etc/passwd".to_string(),
        format!("/live/{LIVE}/../../etc/passwd"),
        format!("/live/{LIVE}/source/..%2f..%2f..%2fetc%2fpasswd"),
        "/live/%2e%2e/%2e%2e/etc/passwd".to_string(),
        format!("/live/{LIVE}/source/%00.m4s"),
        format!("/live/{LIVE}/{}/index.m3u8", "a".repeat(300)),
    ] {
        let (s, body) = raw_get(http, &p);
        assert!(s == 404 || s == 400, "{p}: {s}");
        assert!(!body.contains("root:"), "{p}");
    }

    // blocking requests up to max_parked, then past it: 503 at once
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (parked, refused) = rt.block_on(async {
        let h2 = || {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        };
        let (parking, extra) = (h2(), h2());
        // a probe that finds a slot free parks until it gives up, which
        // frees the slot again
        let probe = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        // connections up before the race begins
        for c in [&parking, &extra] {
            c.get(bed.ladder.url("/time")).send().await.unwrap();
        }
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < LIVE_WAIT * 2,
                "the park cap never refused"
            );
            // the segment after the one being written: a second or two away
            let (_, text) = get_text_async(&bed.ladder.url(&playlist)).await;
            let next = parse_media_playlist(&text).segments.last().unwrap().0 + 2;
            let url = bed.ladder.url(&format!("{playlist}?_HLS_msn={next}"));
            let mut requests = tokio::task::JoinSet::new();
            for _ in 0..MAX_PARKED {
                let (c, url) = (parking.clone(), url.clone());
                requests.spawn(async move { c.get(&url).send().await.unwrap().status().as_u16() });
            }
            // one more is refused at once once they are all parked (a probe
            // that finds a slot free waits with them)
            let mut refused = 0;
            loop {
                match probe.get(&url).send().await {
                    Ok(r) if r.status() == 503 => {
                        assert!(r.headers().get("retry-after").is_some());
                        refused += 1;
                        break;
                    }
                    // parked: not all of them are yet
                    Err(e) if e.is_timeout() => continue,
                    // the segment came first: again, with the next one
                    Ok(_) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if refused == 0 {
                while requests.join_next().await.is_some() {}
                continue;
            }
            // a thousand more, all at once: refused too (unless the segment
            // came meanwhile and answers them)
            let mut more = tokio::task::JoinSet::new();
            for _ in 0..1000 {
                let (c, url) = (extra.clone(), url.clone());
                more.spawn(async move {
                    let r = c.get(&url).send().await.unwrap();
                    (
                        r.status().as_u16(),
                        r.headers().get("retry-after").is_some(),
                    )
                });
            }
            while let Some(r) = more.join_next().await {
                let (status, retry_after) = r.unwrap();
                assert!(status == 503 || status == 200, "{status}");
                if status == 503 {
                    assert!(retry_after, "503 without Retry-After");
                    refused += 1;
                }
            }
            // the parked ones are answered when their segment comes (a few may
            // have been refused while the probe held a slot)
            let mut parked = 0;
            while let Some(r) = requests.join_next().await {
                let status = r.unwrap();
                assert!(status == 200 || status == 503, "{status}");
                parked += usize::from(status == 200);
            }
            break (parked, refused);
        }
    });
    eprintln!("past max_parked: {refused} refused, {parked} parked and answered");
    assert!(parked > 0, "no parked request was answered");
    assert!(refused > 0);
    drop(rt);
    bed.check_memory("parked requests", RSS_GROWTH_KIB);

    // viewer connections past max_connections: those over it are closed at
    // once, the others served
    let mut viewers: Vec<TcpStream> = (0..MAX_VIEWERS + 8)
        .map(|_| TcpStream::connect(http).unwrap())
        .collect();
    let mut served = 0;
    for v in &mut viewers {
        v.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
        let _ = v.write_all(b"GET /time HTTP/1.1\r\nHost: o\r\n\r\n");
        let mut buf = [0u8; 64];
        match v.read(&mut buf) {
            Ok(n) if n > 0 => {
                assert!(buf.starts_with(b"HTTP/1.1 200"));
                served += 1;
            }
            _ => {}
        }
    }
    assert!(served <= MAX_VIEWERS, "{served} viewers served at once");
    assert!(served > 0, "no viewer served");
    // once they leave, the slots are free again (as soon as the server has
    // seen the closes) and the channel went on meanwhile
    drop(viewers);
    let text = admitted(&bed.ladder.url(&playlist));
    assert!(parse_media_playlist(&text).segments.last().unwrap().0 > last);
    for l in loris {
        // (answered with an error, or closed)
        assert!(
            l.join().unwrap(),
            "a request head trickled for {header_deadline:?}"
        );
    }
    bed.check_recovered("after the attack", RSS_GROWTH_KIB, Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// Memory per channel
// ---------------------------------------------------------------------------

#[test]
fn huge_frames_and_endless_gops_stay_under_the_channel_cap() {
    let mut bed = Bed::start();
    let addr = bed.rtmp();
    let avcc = bed.avcc();
    let (mut c, id) = RawRtmp::publisher(addr, "huge");
    c.set_chunk_size(0x00ff_ffff);
    let mut peak = 0;
    // 4 MiB audio frames (AAC LC, 48 kHz stereo) before any video
    // configuration, then before the first keyframe: what is held for the
    // video to come is capped in bytes, the rest packaged or dropped
    let audio = |n: u32| {
        let mut b = vec![0xafu8, 0x01];
        b.extend(vec![0x21u8; 4 << 20]);
        (21 * n, Bytes::from(b))
    };
    c.media(
        id,
        msg_type::AUDIO,
        0,
        Bytes::from_static(&[0xaf, 0x00, 0x11, 0x90]),
    )
    .unwrap();
    for n in 0..120 {
        if n == 60 {
            c.media(id, msg_type::VIDEO, 21 * n, avc_header(&avcc))
                .unwrap();
        }
        let (ms, body) = audio(n);
        c.media(id, msg_type::AUDIO, ms, body)
            .expect("publisher connected");
        if n % 10 == 0 {
            peak = peak.max(bed.check_memory("huge audio", CHANNEL_RSS_KIB).rss_kib);
        }
    }
    // 256 KiB frames at 60 fps with a keyframe a second: 15 MiB segments,
    // more than the cap holds; the oldest go
    let mut ms = 3000u32;
    for n in 0..300u32 {
        let key = n % 60 == 0;
        c.media(
            id,
            msg_type::VIDEO,
            ms,
            avc_frame(key, &[&slice(key, 256 * 1024)]),
        )
        .expect("publisher connected");
        ms += 17;
        if n % 30 == 0 {
            peak = peak.max(bed.check_memory("huge frames", CHANNEL_RSS_KIB).rss_kib);
        }
    }
    // then 4 MiB frames a millisecond apart that never reach a keyframe: the
    // open segment is cut at the cap and what follows dropped
    for n in 0..120 {
        c.media(
            id,
            msg_type::VIDEO,
            ms + n,
            avc_frame(false, &[&slice(false, 4 << 20)]),
        )
        .expect("publisher connected");
        if n % 10 == 0 {
            peak = peak.max(bed.check_memory("endless GOP", CHANNEL_RSS_KIB).rss_kib);
        }
    }
    for what in ["segments_dropped=1 ", "segments_cut=1 "] {
        bed.line(&["channel memory cap reached", "channel=huge", what]);
    }
    assert!(
        c.open_after(Duration::from_millis(200)),
        "the publisher was dropped"
    );
    // the attacker's channel still serves its playlist
    let (s, _) = get_text(&bed.ladder.url("/live/huge/source/index.m3u8"));
    assert_eq!(s, 200);
    bed.check_live("during the attack");
    eprintln!("peak RSS {} KiB, baseline {} KiB", peak, bed.base.rss_kib);
    drop(c);
    bed.ended("huge");
    bed.check_recovered(
        "after the attack",
        (CHANNEL_MIB + 64) * 1024,
        Duration::from_secs(10),
    );
}
