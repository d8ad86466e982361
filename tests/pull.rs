//! Pull ingest (SPEC.md, "Data flow": remote RTMP server <-- pull) with real
//! peers: ffmpeg publishes to nginx-rtmp, a Ladder channel with
//! `pull = "rtmp://..."` plays it from there, and ffprobe reads what Ladder's
//! HTTP origin serves.
//!
//! - the remote stream becomes the channel: master playlist, the source and a
//!   rung; when the remote publisher stops and another starts, the playlists
//!   continue with a discontinuity and the log shows one session ending and
//!   the next starting, on the same connection;
//! - the remote server not running at start: Ladder retries (one warning per
//!   change of failure, the repeats at debug level) and picks the stream up
//!   once the server is there;
//! - no log line holds the pull URL's stream key, or the channel's.

mod common;

use common::nginx::{free_port, Nginx};
use common::*;
use std::sync::Mutex;
use std::time::Duration;

/// 1 s segments: the sources below have a keyframe every second.
const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 30";

/// Real-time streams, one of them transcoded: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Ladder's log filter: info, and debug for the pull task and the RTMP
/// client (the secrecy checks then cover the debug lines too).
const LOG_FILTER: &str = "info,ladder::ingest::pull=debug,ladder::ingest::client=debug";

/// A closed-mode config: channel `feed` (push key `key`) pulling `url`.
fn pull_config(key: &str, url: &str, renditions: &str) -> String {
    config_with_ladder(
        false,
        PACKAGING,
        renditions,
        &format!("[[channels]]\nname = \"feed\"\nkey = \"{key}\"\npull = \"{url}\"\n"),
    )
}

fn source(seconds: f64) -> Source {
    Source {
        size: "640x360",
        rate: 30,
        seconds,
        x264: "-preset ultrafast -profile:v baseline -g 30 -keyint_min 30 -sc_threshold 0",
        audio: true,
    }
}

/// A media playlist of channel `feed`.
fn playlist(ladder: &Ladder, track: &str) -> MediaPlaylist {
    let (s, text) = get_text(&ladder.url(&format!("/live/feed/{track}/index.m3u8")));
    assert_eq!(s, 200, "{track}: {text}");
    parse_media_playlist(&text)
}

/// ffprobe a track as served (init + every listed segment).
fn probe_track(ladder: &Ladder, track: &str, dir: &tempdir::Dir) -> serde_json::Value {
    let file = dir.join(&format!("{track}.mp4"));
    download_track(ladder, "feed", track, &file);
    ffprobe(&file)
}

/// The remote stream is the channel; a second remote publisher continues it
/// after a discontinuity.
#[test]
fn pull_serves_the_remote_stream_and_follows_its_publishers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PUSH_KEY: &str = "push-SECRET-6d1e";
    const PULL_KEY: &str = "pull-SECRET-f08b";
    let nginx = Nginx::start();
    let remote = nginx.url(&format!("live/{PULL_KEY}"));
    let ladder = Ladder::start_with_env(
        &pull_config(
            PUSH_KEY,
            &remote,
            r#"{ name = "source", passthrough = true },
               { name = "180p", height = 180, bitrate_kbps = 300, preset = "veryfast" }"#,
        ),
        &[("RUST_LOG", Some(LOG_FILTER))],
    );
    let redacted = format!("rtmp://127.0.0.1:{}/live/<key>", nginx.port);
    // connected and playing before anyone publishes to nginx
    ladder.wait_log_count("pull connected", 1, Duration::from_secs(15));
    nginx.wait_log(&format!("play: name='{PULL_KEY}'"));
    assert!(
        !ladder.log().contains("publish started"),
        "{}",
        ladder.log()
    );

    // the first remote publisher
    let ff = publish(&source(6.0), &remote, None);
    let master = wait_200(
        &ladder.url("/live/feed/master.m3u8"),
        Duration::from_secs(20),
    );
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    assert!(
        master.contains("source/index.m3u8") && master.contains("180p/index.m3u8"),
        "{master}"
    );
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffmpeg: {err}");
    ladder.wait_log_count("publish ended", 1, Duration::from_secs(15));
    ladder.wait_log_count("rung ended", 1, Duration::from_secs(30));

    let dir = tempdir::Dir::new("pull");
    for (track, size) in [("source", (640, 360)), ("180p", (320, 180))] {
        let p = probe_track(&ladder, track, &dir);
        let v = stream(&p, "video");
        assert_eq!(v["codec_name"], "h264", "{track}");
        assert_eq!(
            (v["width"].as_i64().unwrap(), v["height"].as_i64().unwrap()),
            size,
            "{track}"
        );
        // nginx starts a waiting player at the publisher's first keyframe:
        // every frame of 6 s at 30 fps
        let frames = packets(&p, "video");
        assert_eq!(frames.len(), 180, "{track}: frames served");
        assert!(frames.windows(2).all(|w| w[1].1 > w[0].1), "{track}: dts");
    }
    let audio = probe_track(&ladder, "audio", &dir);
    assert_eq!(stream(&audio, "audio")["codec_name"], "aac");
    let first = playlist(&ladder, "source");
    let first_last = first.segments.last().unwrap().0;
    assert!(
        !first.text.contains("#EXT-X-DISCONTINUITY\n"),
        "{}",
        first.text
    );

    // the remote publisher stops and another one starts: a new session on
    // the same connection
    let ff = publish(&source(4.0), &remote, None);
    ladder.wait_log_count("publish started", 2, Duration::from_secs(20));
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffmpeg: {err}");
    ladder.wait_log_count("publish ended", 2, Duration::from_secs(15));
    ladder.wait_log_count("rung ended", 2, Duration::from_secs(30));

    for track in ["source", "180p", "audio"] {
        let p = playlist(&ladder, track);
        assert!(
            p.media_sequence >= first.media_sequence,
            "{track}: media sequence {} after {}:\n{}\nsource before:\n{}\n{}",
            p.media_sequence,
            first.media_sequence,
            p.text,
            first.text,
            ladder.log()
        );
        let msns: Vec<u64> = p.segments.iter().map(|s| s.0).collect();
        assert!(
            msns.windows(2).all(|w| w[1] == w[0] + 1),
            "{track}: {msns:?}"
        );
        // the first segment of the second session follows a discontinuity,
        // and its numbers continue the first session's
        let (i, resumed) = p
            .segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.3)
            .unwrap_or_else(|| panic!("{track}: no discontinuity:\n{}", p.text));
        assert!(
            resumed.0 > first_last,
            "{track}: {} after {first_last}",
            resumed.0
        );
        assert!(
            i > 0,
            "{track}: the first session's segments are still listed"
        );
        assert_eq!(
            p.segments.iter().filter(|s| s.3).count(),
            1,
            "{track}:\n{}",
            p.text
        );
        assert!(p.text.contains("#EXT-X-DISCONTINUITY\n"), "{}", p.text);
    }
    // the second session is served too: about 4 s more of the source
    let both = packets(&probe_track(&ladder, "source", &dir), "video");
    assert!(
        both.len() >= 180 + 90,
        "{} frames over both sessions",
        both.len()
    );

    let log = ladder.log();
    assert_eq!(log.matches("pull connected").count(), 1, "{log}");
    assert!(!log.contains("pull connection ended"), "{log}");
    let started = ladder.log_lines(&["publish started"]);
    assert_eq!(started.len(), 2, "{log}");
    assert!(
        started
            .iter()
            .all(|l| l.contains("channel=feed") && l.contains(&format!("peer={redacted}"))),
        "{started:?}"
    );
    let ended = ladder.log_lines(&["publish ended"]);
    assert!(
        ended
            .iter()
            .all(|l| l.contains("the source's publisher stopped")),
        "{ended:?}"
    );
    assert_no_secrets(&log, &[PUSH_KEY, PULL_KEY]);
}

/// The remote server is not there when Ladder starts: it retries, logging
/// the failure once, and picks the stream up when the server comes.
#[test]
fn pull_retries_until_the_remote_server_starts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PUSH_KEY: &str = "push-SECRET-0c3a";
    const PULL_KEY: &str = "pull-SECRET-77e9";
    let port = free_port();
    let remote = format!("rtmp://127.0.0.1:{port}/live/{PULL_KEY}");
    let ladder = Ladder::start_with_env(
        &pull_config(
            PUSH_KEY,
            &remote,
            r#"{ name = "source", passthrough = true }"#,
        ),
        &[("RUST_LOG", Some(LOG_FILTER))],
    );
    // two failed attempts: the first logged as a warning, the second (the
    // same failure) at debug level only
    ladder.wait_log_count("pull cannot connect", 2, Duration::from_secs(15));
    let warned = ladder.log_lines(&["WARN", "pull cannot connect"]);
    assert_eq!(warned.len(), 1, "{}", ladder.log());
    assert!(
        warned[0].contains("channel=feed")
            && warned[0].contains(&format!("source=rtmp://127.0.0.1:{port}/live/<key>"))
            && warned[0].contains("Connection refused"),
        "{}",
        warned[0]
    );
    assert_eq!(ladder.log_lines(&["DEBUG", "pull cannot connect"]).len(), 1);

    let nginx = Nginx::start_on(port, false);
    let ff = publish(&source(8.0), &remote, None);
    ladder.wait_log_count("pull connected", 1, Duration::from_secs(15));
    let master = wait_200(
        &ladder.url("/live/feed/master.m3u8"),
        Duration::from_secs(20),
    );
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffmpeg: {err}");
    ladder.wait_log_count("publish ended", 1, Duration::from_secs(15));
    drop(nginx);

    let dir = tempdir::Dir::new("pull-retry");
    let p = probe_track(&ladder, "source", &dir);
    assert_eq!(stream(&p, "video")["codec_name"], "h264");
    assert!(!packets(&p, "video").is_empty());
    let log = ladder.log();
    assert_eq!(
        ladder.log_lines(&["WARN", "pull cannot connect"]).len(),
        1,
        "one warning for the whole outage: {log}"
    );
    assert_no_secrets(&log, &[PUSH_KEY, PULL_KEY]);
}
