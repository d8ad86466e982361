//! A panic in one channel is contained (issue 8 §5): the process lives, the
//! panic is logged once with the channel's name, the other channel plays on
//! untouched, and the hit channel plays again without an operator.
//!
//! The panics are injected into the real binary with its test-only hook
//! (`LADDER_TEST_PANIC`, `app::contain`): one in a rung's encode thread
//! (the pipeline is rebuilt in place, the publisher stays connected), then
//! one in the publish session on the connection's task (the publisher is
//! disconnected; like OBS, the test's encoder connects again).

mod common;

use common::*;
use std::process::Child;
use std::time::{Duration, Instant};

const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 60";
const RENDITIONS: &str = r#"{ name = "source", passthrough = true }, { name = "low", height = 120, bitrate_kbps = 200, preset = "ultrafast" }"#;
/// The rung `low` of channel `alpha` panics at its 90th picture (3 s in);
/// alpha's publish session at its 450th video message (15 s in).
const INJECT: &str = "alpha:low@90,alpha:ingest@450";

/// What a media playlist says about a channel's history.
#[derive(Debug)]
struct Track {
    /// Discontinuities so far: EXT-X-DISCONTINUITY-SEQUENCE plus the tags
    /// still in the window.
    discontinuities: u64,
    /// Complete segments after the last discontinuity in the window (all of
    /// them when there is none).
    since_last: usize,
    /// The last complete segment's sequence number.
    last_msn: Option<u64>,
    playlist: MediaPlaylist,
}

fn track(ladder: &Ladder, channel: &str, rendition: &str) -> Track {
    let url = ladder.url(&format!("/live/{channel}/{rendition}/index.m3u8"));
    let (status, text) = get_text(&url);
    assert_eq!(status, 200, "{url}: {text}\n{}", ladder.log());
    parse_track(&text)
}

fn parse_track(text: &str) -> Track {
    let sequence: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let playlist = parse_media_playlist(text);
    let tags = playlist.segments.iter().filter(|s| s.3).count();
    let since_last = match playlist.segments.iter().rposition(|s| s.3) {
        Some(i) => playlist.segments.len() - i,
        None => playlist.segments.len(),
    };
    Track {
        discontinuities: sequence + tags as u64,
        since_last,
        last_msn: playlist.segments.last().map(|s| s.0),
        playlist,
    }
}

/// Wait (bounded) until `what` holds of `channel`'s `rendition` playlist.
fn wait_track(
    ladder: &Ladder,
    channel: &str,
    rendition: &str,
    what: &str,
    done: impl Fn(&Track) -> bool,
) -> Track {
    let url = ladder.url(&format!("/live/{channel}/{rendition}/index.m3u8"));
    let t = Instant::now();
    loop {
        let (status, text) = get_text(&url);
        let now = (status == 200).then(|| parse_track(&text));
        if let Some(now) = now.filter(&done) {
            return now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{channel}/{rendition}: {what} did not happen (status {status}):\n{text}\n{}",
            ladder.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Beta plays on: each of its renditions gets a newer segment than at the
/// last checkpoint, and never a discontinuity.
fn beta_advances(ladder: &Ladder, last: &mut Vec<u64>) {
    for (i, rendition) in ["source", "low", "audio"].into_iter().enumerate() {
        let before = last.get(i).copied();
        let now = wait_track(ladder, "beta", rendition, "a newer segment", |t| {
            t.last_msn.is_some() && t.last_msn > before
        });
        assert_eq!(
            now.discontinuities, 0,
            "beta/{rendition} was touched:\n{}",
            now.playlist.text
        );
        let msn = now.last_msn.unwrap();
        match last.get_mut(i) {
            Some(m) => *m = msn,
            None => last.push(msn),
        }
    }
}

fn publisher(ladder: &Ladder, channel: &str, seconds: f64) -> Child {
    let mut src = Source::baseline();
    src.seconds = seconds;
    publish(&src, &ladder.rtmp_url(channel), None)
}

#[test]
fn a_panicking_channel_restarts_and_the_other_plays_on() {
    let ladder = Ladder::start_with_env(
        &config_with_ladder(true, PACKAGING, RENDITIONS, ""),
        &[("LADDER_TEST_PANIC", Some(INJECT))],
    );
    let mut beta = publisher(&ladder, "beta", 60.0);
    let alpha = publisher(&ladder, "alpha", 60.0);
    let mut beta_last = Vec::new();
    beta_advances(&ladder, &mut beta_last);

    // 1. alpha's rung panics: its pipeline is rebuilt in place, every
    // rendition of alpha continues after one discontinuity, the publisher
    // stays connected
    ladder.wait_log_count("transcoding pipeline restarted", 1, Duration::from_secs(60));
    for rendition in ["low", "source", "audio"] {
        wait_track(
            &ladder,
            "alpha",
            rendition,
            "two segments after the restart's discontinuity",
            |t| t.discontinuities == 1 && t.since_last >= 2,
        );
    }
    beta_advances(&ladder, &mut beta_last);

    // 2. alpha's publish session panics: the publisher is disconnected
    ladder.wait_log_count("publish session panicked", 1, Duration::from_secs(60));
    let (code, _) = wait(alpha, Duration::from_secs(30));
    assert_ne!(code, Some(0), "alpha's encoder was not disconnected");
    beta_advances(&ladder, &mut beta_last);
    // its encoder connects again (as OBS does): alpha plays again after a
    // second discontinuity
    let mut again = publisher(&ladder, "alpha", 60.0);
    for rendition in ["low", "source", "audio"] {
        wait_track(
            &ladder,
            "alpha",
            rendition,
            "two segments after the reconnection's discontinuity",
            |t| t.discontinuities == 2 && t.since_last >= 2,
        );
    }
    beta_advances(&ladder, &mut beta_last);

    // beta was never touched: one session, never restarted, its playlists
    // contiguous and without a discontinuity
    let log = ladder.log();
    for rendition in ["source", "low", "audio"] {
        let t = track(&ladder, "beta", rendition);
        let msns: Vec<u64> = t.playlist.segments.iter().map(|s| s.0).collect();
        assert!(
            msns.windows(2).all(|w| w[1] == w[0] + 1),
            "beta/{rendition}: {msns:?}"
        );
        assert_eq!(t.discontinuities, 0, "{}", t.playlist.text);
    }
    let beta_lines = |needle: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("channel=beta") && l.contains(needle))
            .map(String::from)
            .collect()
    };
    assert_eq!(beta_lines("publish started").len(), 1, "{log}");
    assert!(beta_lines("publish ended").is_empty(), "{log}");
    assert!(beta_lines("panicked").is_empty(), "{log}");
    assert!(beta_lines("restarted").is_empty(), "{log}");

    // each panic is one clear line naming the channel and the message; the
    // standard hook's "thread '...' panicked at" stays out of the log
    let rung = ladder.log_lines(&[
        "channel alpha: pipeline thread 'encode low'",
        "panicked: panic injected by LADDER_TEST_PANIC (alpha:low@90)",
        "restarting the channel",
    ]);
    assert_eq!(rung.len(), 1, "{log}");
    let session = ladder.log_lines(&[
        "channel alpha: publish session panicked: panic injected by LADDER_TEST_PANIC (alpha:ingest@450)",
        "disconnecting the publisher",
    ]);
    assert_eq!(session.len(), 1, "{log}");
    assert!(!log.contains("panicked at"), "{log}");
    assert_eq!(
        ladder
            .log_lines(&["channel=alpha", "transcoding pipeline restarted"])
            .len(),
        1
    );
    assert_eq!(
        ladder
            .log_lines(&["channel=alpha", "publish started"])
            .len(),
        2,
        "{log}"
    );

    // the process lived through both: it stops cleanly now
    let _ = beta.kill();
    let _ = beta.wait();
    let _ = again.kill();
    let _ = again.wait();
    let (code, log) = ladder.stop();
    assert_eq!(code, Some(0), "{log}");
}
