//! End to end with real ffmpeg publishing over RTMP and ffprobe reading what the
//! origin serves: the bytes a player receives.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PACKAGING: &str = "segment_seconds = 2.0\npart_seconds = 0.5\nwindow_segments = 10";

/// Publish `src`, then compare what the origin serves with the exact stream sent.
fn round_trip(src: Source, profile: &str) {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let dir = tempdir::Dir::new("rt");
    let reference = dir.join("sent.flv");
    let ff = publish(&src, &ladder.rtmp_url("cam1"), Some(&reference));
    let master = wait_200(
        &ladder.url("/live/cam1/master.m3u8"),
        Duration::from_secs(15),
    );
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffmpeg failed: {err}");
    assert!(
        ladder.wait_log("publish ended", Duration::from_secs(10)),
        "{}",
        ladder.log()
    );

    let sent = ffprobe(&reference);
    let video_out = dir.join("video.mp4");
    let audio_out = dir.join("audio.mp4");
    let vpl = download_track(&ladder, "cam1", "source", &video_out);
    let apl = download_track(&ladder, "cam1", "audio", &audio_out);
    let got_v = ffprobe(&video_out);
    let got_a = ffprobe(&audio_out);

    // codec, profile, resolution
    let vs = stream(&got_v, "video");
    assert_eq!(vs["codec_name"], "h264");
    assert_eq!(vs["profile"], profile);
    let (w, h) = src.size.split_once('x').unwrap();
    assert_eq!(vs["width"].as_i64().unwrap().to_string(), w);
    assert_eq!(vs["height"].as_i64().unwrap().to_string(), h);
    let as_ = stream(&got_a, "audio");
    assert_eq!(as_["codec_name"], "aac");
    assert_eq!(as_["sample_rate"], "48000");
    assert_eq!(as_["channels"], 2);

    // every frame sent arrives, in order, with its timestamps
    let sv = packets(&sent, "video");
    let gv = packets(&got_v, "video");
    assert!(
        (sv.len() as i64 - gv.len() as i64).abs() <= 1,
        "video frames: sent {}, served {}",
        sv.len(),
        gv.len()
    );
    assert!(gv.windows(2).all(|w| w[1].1 > w[0].1), "DTS not monotonic");
    let frame = 1.0 / src.rate as f64;
    let t0 = sv[0].1 - gv[0].1; // the served timeline may be offset; the shape must match
    for (s, g) in sv.iter().zip(gv.iter()) {
        assert!(
            (s.0 - t0 - g.0).abs() < 0.002,
            "pts {} vs {}",
            s.0 - t0,
            g.0
        );
        assert_eq!(s.2, g.2, "keyframe flag at pts {}", s.0);
    }
    let sa = packets(&sent, "audio");
    let ga = packets(&got_a, "audio");
    assert!(
        (sa.len() as i64 - ga.len() as i64).abs() <= 1,
        "audio frames: sent {}, served {}",
        sa.len(),
        ga.len()
    );
    // durations within one frame
    let dur = |p: &[(f64, f64, bool)]| p.last().unwrap().0 - p.first().unwrap().0;
    assert!(
        (dur(&sv) - dur(&gv)).abs() <= frame,
        "video duration {} vs {}",
        dur(&sv),
        dur(&gv)
    );
    // A/V sync: the offset between the first video and first audio timestamps is
    // what the publisher sent, within one frame
    let sent_offset = sv[0].0 - sa[0].0;
    let got_offset = gv[0].0 - ga[0].0;
    assert!(
        (sent_offset - got_offset).abs() <= frame,
        "A/V offset sent {sent_offset:.3} s, served {got_offset:.3} s"
    );

    // every segment starts with an IDR: probe init + each segment alone
    let (_, _, init) = get(&ladder.url(&format!("/live/cam1/source/{}", vpl.map[0])));
    for (msn, uri, d, _) in &vpl.segments {
        let (_, _, seg) = get(&ladder.url(&format!("/live/cam1/source/{uri}")));
        let f = dir.join(&format!("seg{msn}.mp4"));
        let mut bytes = init.clone();
        bytes.extend_from_slice(&seg);
        std::fs::write(&f, bytes).unwrap();
        let p = packets(&ffprobe(&f), "video");
        assert!(p[0].2, "segment {msn} does not start with a keyframe");
        assert!(*d > 0.0);
    }
    // the two playlists list the same sequence numbers
    let vm: Vec<u64> = vpl.segments.iter().map(|s| s.0).collect();
    let am: Vec<u64> = apl.segments.iter().map(|s| s.0).collect();
    assert_eq!(vm, am);

    // one log line per publish and unpublish, never the key... (the key is the
    // channel name in open mode, so check the closed-mode test for secrecy)
    let log = ladder.log();
    assert_eq!(log.matches("publish started").count(), 1, "{log}");
    assert_eq!(log.matches("publish ended").count(), 1, "{log}");
    let ended = log.lines().find(|l| l.contains("publish ended")).unwrap();
    for f in [
        "duration_s=",
        "video_frames=",
        "audio_frames=",
        "bytes=",
        "reason=",
    ] {
        assert!(ended.contains(f), "{ended}");
    }
}

#[test]
fn high_profile_with_b_frames_and_aac_round_trip() {
    round_trip(Source::high_bframes(), "High");
}

#[test]
fn baseline_round_trip() {
    round_trip(Source::baseline(), "Constrained Baseline");
}

/// Closed mode: a wrong key is refused with an RTMP error and a log line naming
/// the peer, never the key; the right key publishes.
#[test]
fn wrong_key_is_refused_and_never_logged() {
    let extra = r#"
[[channels]]
name = "news"
key = "s3cr3t-key-123"
"#;
    let ladder = Ladder::start(&config(false, PACKAGING, extra));
    let mut src = Source::baseline();
    src.seconds = 2.0;
    let ff = publish(&src, &ladder.rtmp_url("wrong-key-456"), None);
    let (code, _) = wait(ff, Duration::from_secs(30));
    assert_ne!(
        code,
        Some(0),
        "ffmpeg should fail to publish with a wrong key"
    );
    assert!(ladder.wait_log("publish refused", Duration::from_secs(5)));
    let ff = publish(&src, &ladder.rtmp_url("s3cr3t-key-123"), None);
    wait_200(
        &ladder.url("/live/news/master.m3u8"),
        Duration::from_secs(15),
    );
    let _ = wait(ff, Duration::from_secs(30));
    let log = ladder.log();
    assert!(!log.contains("wrong-key-456"), "key in log:\n{log}");
    assert!(!log.contains("s3cr3t-key-123"), "key in log:\n{log}");
    let refused = log.lines().find(|l| l.contains("publish refused")).unwrap();
    assert!(refused.contains("peer=127.0.0.1:"), "{refused}");
    // the channel name, not the key, is in the URLs
    let (s, _) = get_text(&ladder.url("/live/s3cr3t-key-123/master.m3u8"));
    assert_eq!(s, 404);
}

/// A publisher that reconnects continues the same playlists behind a
/// discontinuity; sequence numbers never go back.
#[test]
fn reconnect_gives_a_discontinuity_and_monotonic_sequence_numbers() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let mut src = Source::high_bframes();
    src.seconds = 4.5;
    let ff = publish(&src, &ladder.rtmp_url("re"), None);
    wait_200(&ladder.url("/live/re/master.m3u8"), Duration::from_secs(15));
    let _ = wait(ff, Duration::from_secs(30));
    assert!(ladder.wait_log("publish ended", Duration::from_secs(10)));
    let (_, before) = get_text(&ladder.url("/live/re/source/index.m3u8"));
    let before = parse_media_playlist(&before);
    let ff = publish(&src, &ladder.rtmp_url("re"), None);
    let _ = wait(ff, Duration::from_secs(30));
    let t = Instant::now();
    while ladder.log().matches("publish ended").count() < 2 && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for track in ["source", "audio"] {
        let (s, text) = get_text(&ladder.url(&format!("/live/re/{track}/index.m3u8")));
        assert_eq!(s, 200);
        let pl = parse_media_playlist(&text);
        assert!(pl.media_sequence >= before.media_sequence);
        let msns: Vec<u64> = pl.segments.iter().map(|s| s.0).collect();
        assert!(
            msns.windows(2).all(|w| w[1] == w[0] + 1),
            "{track}: {msns:?}"
        );
        let disc: Vec<_> = pl.segments.iter().filter(|s| s.3).collect();
        assert_eq!(disc.len(), 1, "{track}: one discontinuity expected\n{text}");
        assert!(disc[0].0 > before.segments.last().unwrap().0);
        assert!(
            pl.map.len() >= 2,
            "{track}: a new EXT-X-MAP after the discontinuity\n{text}"
        );
    }
}

/// Garbage, an HTTP request and a truncated handshake on the RTMP port close
/// those connections while a live channel keeps playing.
#[test]
fn bad_rtmp_connections_do_not_harm_a_live_channel() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let mut src = Source::baseline();
    src.seconds = 10.0;
    let ff = publish(&src, &ladder.rtmp_url("live1"), None);
    wait_200(
        &ladder.url("/live/live1/master.m3u8"),
        Duration::from_secs(15),
    );

    let rtmp = ladder.rtmp;
    let closed_after = move |payload: Vec<u8>| {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(rtmp).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&payload).unwrap();
            let t = Instant::now();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            t.elapsed()
        })
    };
    // an HTTP request: version byte 'P' (80)
    let http = closed_after(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    // garbage
    let garbage = closed_after(vec![0xffu8; 3000]);
    // a version-3 handshake, then a chunk claiming a 16 MiB message (fmt 0, csid 3,
    // length 0xFFFFFF): refused at the header, before any allocation
    let mut hs = vec![3u8];
    hs.extend(std::iter::repeat_n(0u8, 1536 * 2));
    hs.extend_from_slice(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0]);
    let huge = closed_after(hs);
    // a truncated handshake: C0 and part of C1, then silence: closed by the deadline
    let truncated = closed_after(vec![3u8; 100]);

    // the live channel kept going: its playlist still advances
    let msn = |t: &str| {
        parse_media_playlist(t)
            .segments
            .last()
            .map(|s| s.0)
            .unwrap_or(0)
    };
    let (_, a) = get_text(&ladder.url("/live/live1/source/index.m3u8"));
    std::thread::sleep(Duration::from_millis(2500));
    let (_, b) = get_text(&ladder.url("/live/live1/source/index.m3u8"));
    assert!(msn(&b) > msn(&a), "playlist stalled:\n{a}\n---\n{b}");
    // closed by the checks themselves, not by the handshake deadline (5 s,
    // HANDSHAKE_TIMEOUT) that closes the truncated one
    for (what, took) in [("http", http), ("garbage", garbage), ("huge", huge)] {
        let took = took.join().unwrap();
        assert!(took < Duration::from_secs(5), "{what} held {took:?}");
    }
    let took = truncated.join().unwrap();
    assert!(
        took < Duration::from_secs(9),
        "truncated handshake held {took:?}"
    );
    let (code, err) = wait(ff, Duration::from_secs(30));
    assert_eq!(code, Some(0), "the live publisher was harmed: {err}");
    let log = ladder.log();
    assert_eq!(log.matches("publish started").count(), 1, "{log}");
}

/// LL-HLS blocking reload and LL-DASH chunked delivery against a live stream.
#[test]
fn blocking_reload_and_chunked_segments_on_a_live_stream() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let mut src = Source::high_bframes();
    src.seconds = 12.0;
    let ff = publish(&src, &ladder.rtmp_url("ll"), None);
    wait_200(&ladder.url("/live/ll/master.m3u8"), Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(2500));

    // _HLS_part without _HLS_msn: 400
    let (s, _) = get_text(&ladder.url("/live/ll/source/index.m3u8?_HLS_part=1"));
    assert_eq!(s, 400);
    // far-future msn: 400 at once
    let (s, _) = get_text(&ladder.url("/live/ll/source/index.m3u8?_HLS_msn=9223372036854775808"));
    assert_eq!(s, 400);

    // ask for the part after the last one listed: the answer waits for it
    let (_, text) = get_text(&ladder.url("/live/ll/source/index.m3u8"));
    let pl = parse_media_playlist(&text);
    let open = pl.segments.last().unwrap().0 + 1;
    let next_part = pl.open_parts;
    let t = Instant::now();
    let (s, blocked) = get_text(&ladder.url(&format!(
        "/live/ll/source/index.m3u8?_HLS_msn={open}&_HLS_part={next_part}"
    )));
    let waited = t.elapsed();
    assert_eq!(s, 200);
    assert!(
        waited > Duration::from_millis(50),
        "answered at once ({waited:?}) for a future part\n{text}"
    );
    // a 200, not the 503 that ends a park after 3 target durations: the
    // part it waited for released it
    let after = parse_media_playlist(&blocked);
    let grew = after.segments.last().map(|s| s.0) > pl.segments.last().map(|s| s.0)
        || after.open_parts > next_part;
    assert!(
        grew,
        "the answer does not hold the part it waited for:\n{blocked}"
    );

    // the growing segment arrives chunk by chunk (LL-DASH): time the chunks
    let (_, text) = get_text(&ladder.url("/live/ll/source/index.m3u8"));
    let pl = parse_media_playlist(&text);
    // the segment after the open one: not begun yet, so the request is parked,
    // then streamed as it is written
    let next = pl.segments.last().unwrap().0 + 2;
    let rt = runtime();
    let arrivals = rt.block_on(async {
        let mut r = reqwest::get(ladder.url(&format!("/live/ll/source/seg-{next}.m4s")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut times = Vec::new();
        let t = Instant::now();
        while let Some(chunk) = r.chunk().await.unwrap() {
            times.push((t.elapsed(), chunk.len()));
        }
        times
    });
    assert!(
        arrivals.len() >= 3,
        "segment came in {} pieces",
        arrivals.len()
    );
    let spread = arrivals.last().unwrap().0 - arrivals.first().unwrap().0;
    assert!(
        spread > Duration::from_millis(900),
        "chunks not delivered as written: {arrivals:?}"
    );

    // DASH manifest
    let (s, mpd) = get_text(&ladder.url("/live/ll/manifest.mpd"));
    assert_eq!(s, 200);
    for f in [
        "type=\"dynamic\"",
        "availabilityTimeOffset",
        "availabilityTimeComplete=\"false\"",
        "UTCTiming",
        "$Number$",
    ] {
        assert!(mpd.contains(f), "MPD lacks {f}:\n{mpd}");
    }
    let _ = wait(ff, Duration::from_secs(30));
}

/// Path traversal and odd names on the origin: 404.
#[test]
fn origin_path_traversal_is_404() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    for p in [
        "/live/../etc/passwd",
        "/live/x/%2e%2e/%2e%2e/etc/passwd",
        "/../../etc/passwd",
        "/live/x/source/seg-1.m4s",
        "/etc/passwd",
    ] {
        let (s, _) = get_text(&ladder.url(p));
        assert_eq!(s, 404, "{p}");
    }
}

/// Two publishers on one key: the second is refused and the first goes on; with
/// `duplicate_publisher = "replace"` the second takes over.
#[test]
fn second_publisher_is_refused_or_replaces() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let mut src = Source::baseline();
    src.seconds = 6.0;
    let first = publish(&src, &ladder.rtmp_url("dup"), None);
    wait_200(
        &ladder.url("/live/dup/master.m3u8"),
        Duration::from_secs(15),
    );
    let mut short = src.clone();
    short.seconds = 2.0;
    let (code, _) = wait(
        publish(&short, &ladder.rtmp_url("dup"), None),
        Duration::from_secs(30),
    );
    assert_ne!(code, Some(0), "the second publisher should be refused");
    let (code, err) = wait(first, Duration::from_secs(30));
    assert_eq!(code, Some(0), "the first publisher was harmed: {err}");
    let log = ladder.log();
    assert!(log.contains("channel is already live"), "{log}");
    drop(ladder);

    let ladder = Ladder::start(&config(
        true,
        PACKAGING,
        "[ingest]\nduplicate_publisher = \"replace\"\n",
    ));
    let first = publish(&src, &ladder.rtmp_url("dup"), None);
    wait_200(
        &ladder.url("/live/dup/master.m3u8"),
        Duration::from_secs(15),
    );
    let (code, err) = wait(
        publish(&short, &ladder.rtmp_url("dup"), None),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "the replacing publisher failed: {err}");
    let _ = wait(first, Duration::from_secs(30));
    assert!(
        ladder.wait_log("replaced by a new publisher", Duration::from_secs(5)),
        "{}",
        ladder.log()
    );
    let (_, text) = get_text(&ladder.url("/live/dup/source/index.m3u8"));
    let pl = parse_media_playlist(&text);
    assert!(
        pl.segments.iter().any(|s| s.3),
        "replacement starts a discontinuity\n{text}"
    );
}

/// A publisher killed mid-GOP while a viewer waits on a growing segment, and the
/// same key republished at once: the viewer's answer ends, the new session is
/// accepted, the playlists continue behind a discontinuity.
#[test]
fn publisher_killed_mid_gop_with_a_viewer_waiting_and_republished_at_once() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let mut src = Source::high_bframes();
    src.seconds = 20.0;
    let mut first = publish(&src, &ladder.rtmp_url("k"), None);
    wait_200(&ladder.url("/live/k/master.m3u8"), Duration::from_secs(15));
    // wait for a complete segment; the one after it is being written
    let t = Instant::now();
    let open = loop {
        let (status, text) = get_text(&ladder.url("/live/k/source/index.m3u8"));
        assert_eq!(
            status,
            200,
            "video playlist missing while the master is served:\n{}\n{}",
            get_text(&ladder.url("/live/k/master.m3u8")).1,
            ladder.log()
        );
        if let Some(s) = parse_media_playlist(&text).segments.last() {
            break s.0 + 1;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no segment completed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let url = ladder.url(&format!("/live/k/source/seg-{open}.m4s"));
    let viewer = std::thread::spawn(move || {
        let t = Instant::now();
        let (status, _, body) = get(&url);
        (status, body.len(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    first.kill().unwrap();
    let _ = first.wait();
    let mut again = src.clone();
    again.seconds = 4.5;
    let second = publish(&again, &ladder.rtmp_url("k"), None);
    let (status, len, took) = viewer.join().unwrap();
    assert_eq!(status, 200);
    assert!(len > 0);
    assert!(
        took < Duration::from_secs(8),
        "viewer held {took:?} after the publisher died"
    );
    let (code, err) = wait(second, Duration::from_secs(30));
    assert_eq!(code, Some(0), "republish failed: {err}\n{}", ladder.log());
    let log = ladder.log();
    assert_eq!(log.matches("publish started").count(), 2, "{log}");
    assert!(!log.contains("publish refused"), "{log}");
    let (_, text) = get_text(&ladder.url("/live/k/source/index.m3u8"));
    let pl = parse_media_playlist(&text);
    let msns: Vec<u64> = pl.segments.iter().map(|s| s.0).collect();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    assert_eq!(pl.segments.iter().filter(|s| s.3).count(), 1, "{text}");
    // the killed session's last segment ended where the publisher died
    let disc = pl.segments.iter().position(|s| s.3).unwrap();
    assert!(disc > 0);
    assert!(pl.segments[disc - 1].2 > 0.0);
}

/// SIGTERM: the live session ends with its segments closed, and the process
/// exits 0 within the drain bound.
#[test]
fn sigterm_drains_and_exits() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let mut src = Source::baseline();
    src.seconds = 30.0;
    let ff = publish(&src, &ladder.rtmp_url("t"), None);
    wait_200(&ladder.url("/live/t/master.m3u8"), Duration::from_secs(15));
    let t = Instant::now();
    let (code, log) = ladder.stop();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "drain took {:?}",
        t.elapsed()
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("reason=server shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    let _ = wait(ff, Duration::from_secs(10));
}
