//! SIGHUP reload and SIGTERM drain (issue 6 §3), on the real binary with ffmpeg
//! publishers: a reload applies new channels and keys without touching a live
//! channel, a broken file is refused and the running configuration stays, and
//! SIGTERM lets the transcoding pipeline deliver its last frames and close its
//! rungs' segments before the process exits.

mod common;

use common::*;
use std::time::Duration;

const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 6";

fn closed_config(channels: &str) -> String {
    config_with_ladder(
        false,
        PACKAGING,
        r#"{ name = "source", passthrough = true }, { name = "180p", height = 180, bitrate_kbps = 300, preset = "ultrafast" }"#,
        channels,
    )
}

fn channel(name: &str, key: &str) -> String {
    format!("[[channels]]\nname = \"{name}\"\nkey = \"{key}\"\n")
}

/// The newest media sequence number + segments of a media playlist.
fn last_msn(ladder: &Ladder, path: &str) -> u64 {
    let (_, text) = get_text(&ladder.url(path));
    let pl = parse_media_playlist(&text);
    pl.segments.last().map_or(0, |s| s.0)
}

#[test]
fn sighup_applies_new_channels_and_keys_and_keeps_the_live_channel() {
    let ladder = Ladder::start(&closed_config(&format!(
        "{}{}",
        channel("live", "k-live-1"),
        channel("gone", "k-gone-1")
    )));
    let cfg = ladder.dir.join("ladder.toml");
    let mut src = Source::baseline();
    src.seconds = 30.0;
    let live = publish(&src, &ladder.rtmp_url("k-live-1"), None);
    wait_200(
        &ladder.url("/live/live/180p/index.m3u8"),
        Duration::from_secs(20),
    );
    let before = last_msn(&ladder, "/live/live/180p/index.m3u8");

    // a new channel, a removed one, the live one unchanged
    std::fs::write(
        &cfg,
        closed_config(&format!(
            "{}{}",
            channel("live", "k-live-1"),
            channel("added", "k-added-1")
        )),
    )
    .unwrap();
    ladder.signal("HUP");
    // the notes follow the "configuration reloaded" line; this one is the last
    assert!(
        ladder.wait_log("channels removed: gone", Duration::from_secs(10)),
        "{}",
        ladder.log()
    );
    let log = ladder.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("channels added: added"), "{log}");
    assert!(log.contains("channels removed: gone"), "{log}");
    assert!(
        !log.contains("k-added-1") && !log.contains("k-gone-1"),
        "keys never logged"
    );

    // the new key publishes; the removed one is refused
    let mut short = Source::baseline();
    short.seconds = 4.0;
    let added = publish(&short, &ladder.rtmp_url("k-added-1"), None);
    wait_200(
        &ladder.url("/live/added/master.m3u8"),
        Duration::from_secs(20),
    );
    let (_, out) = wait(
        publish(&short, &ladder.rtmp_url("k-gone-1"), None),
        Duration::from_secs(20),
    );
    let refused = ladder.log();
    assert!(
        refused.contains("publish refused") && refused.contains("unknown stream key"),
        "{refused}\n{out}"
    );
    let _ = wait(added, Duration::from_secs(20));

    // a broken file: refused with its error, the running configuration stays
    std::fs::write(&cfg, "[server\nrtmp_listen = 1\n").unwrap();
    ladder.signal("HUP");
    assert!(
        ladder.wait_log("reload refused", Duration::from_secs(10)),
        "{}",
        ladder.log()
    );
    assert!(ladder.log().contains("ladder.toml:1:"), "{}", ladder.log());
    let again = publish(&short, &ladder.rtmp_url("k-added-1"), None);
    let (code, out) = wait(again, Duration::from_secs(20));
    assert_eq!(code, Some(0), "the reloaded key still publishes: {out}");

    // the live channel went on through both reloads, in one session
    let after = last_msn(&ladder, "/live/live/180p/index.m3u8");
    assert!(
        after > before,
        "the live channel's rung advanced: {before} -> {after}"
    );
    let log = ladder.log();
    assert_eq!(
        log.matches("publish started channel=live").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("publish ended channel=live"), "{log}");
    let (code, log) = ladder.stop();
    assert_eq!(code, Some(0), "{log}");
    let _ = wait(live, Duration::from_secs(10));
}

#[test]
fn sigterm_lets_the_ladder_drain_before_exiting() {
    let ladder = Ladder::start(&closed_config(&channel("news", "k-news-1")));
    let mut src = Source::baseline();
    src.seconds = 30.0;
    let ff = publish(&src, &ladder.rtmp_url("k-news-1"), None);
    wait_200(
        &ladder.url("/live/news/180p/index.m3u8"),
        Duration::from_secs(20),
    );
    let (code, log) = ladder.stop();
    assert_eq!(code, Some(0), "{log}");
    let ended = log.find("rung ended channel=news rung=180p").expect(&log);
    let stopped = log.rfind("stopped").expect(&log);
    assert!(ended < stopped, "the rung drained before the exit:\n{log}");
    assert!(!log.contains("still draining"), "{log}");
    let _ = wait(ff, Duration::from_secs(10));
}
