//! Apple's players cannot run here, so the playlists are checked against the
//! Apple HLS authoring rules and RFC 8216bis with a validator of our own
//! (`common::hls_rules`, which lists every rule and its source).
//!
//! - The validator itself: deliberately broken playlists, each rule broken
//!   caught by name; conforming ones pass (a validator that flags
//!   everything, or nothing, fails here).
//! - The real thing: Ladder with an ffmpeg publisher; the master, every
//!   media playlist (video and audio), delta updates, blocking reloads and
//!   every URI they name, checked live, across a publisher reconnect (a
//!   discontinuity and a new init segment in the window).

mod common;

use common::hls_rules::{
    check_blocking_answer, check_media, check_multivariant, check_reload, check_renditions,
    validate_live, LiveOptions, MediaContext, Report, Violation,
};
use common::{config, publish, wait_200, Ladder, Source};
use std::collections::BTreeSet;
use std::time::Duration;

fn rules(v: &[Violation]) -> BTreeSet<&'static str> {
    v.iter().map(|x| x.rule).collect()
}

/// Every rule in `want` is among the violations (and the message names it).
fn assert_caught(found: &[Violation], want: &[&str]) {
    let got = rules(found);
    let missing: Vec<&&str> = want.iter().filter(|w| !got.contains(**w)).collect();
    assert!(
        missing.is_empty(),
        "rules not caught: {missing:?}\nfound:\n{}",
        found
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn assert_none(found: &[Violation], what: &str) {
    assert!(
        found.is_empty(),
        "{what}: unexpected violations:\n{}",
        found
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const GOOD_MASTER: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=1048728,AVERAGE-BANDWIDTH=974414,CODECS=\"avc1.42c00d,mp4a.40.2\",RESOLUTION=320x240,FRAME-RATE=30.000,AUDIO=\"audio\"
source/index.m3u8
";

/// Target duration 1 s, parts of 0.2 s: parts listed for the last 3 s only.
const GOOD_MEDIA: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6,PART-HOLD-BACK=0.6,HOLD-BACK=3
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI=\"init-1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-26T08:27:08.000Z
#EXTINF:1.00000,
seg-100.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-26T08:27:09.000Z
#EXTINF:1.00000,
seg-101.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-26T08:27:10.000Z
#EXT-X-PART:DURATION=0.20000,URI=\"part-510.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI=\"part-511.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"part-512.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"part-513.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"part-514.m4s\"
#EXTINF:1.00000,
seg-102.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-26T08:27:15.000Z
#EXT-X-PART:DURATION=0.20000,URI=\"part-540.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI=\"part-541.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"part-542.m4s\"
#EXT-X-PART:DURATION=0.20000,URI=\"part-543.m4s\"
#EXT-X-PART:DURATION=0.06700,URI=\"part-544.m4s\"
#EXTINF:0.86700,
seg-103.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-26T08:27:15.867Z
#EXT-X-PART:DURATION=0.20000,URI=\"part-545.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.10000,URI=\"part-546.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-547.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=104,LAST-PART=1
";

fn source_ctx() -> MediaContext {
    MediaContext {
        uri: "source/index.m3u8".into(),
        others: vec!["../audio/index.m3u8".into()],
    }
}

#[test]
fn conforming_playlists_pass() {
    assert_none(&check_multivariant(GOOD_MASTER), "master");
    assert_none(&check_media(GOOD_MEDIA, &source_ctx()), "media");
    // the same playlist a part later: segment 104 ended short (its last
    // part, 0.1 s, may be under 85 % of the part target), 105 began
    let later = GOOD_MEDIA.replace(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-547.m4s\"",
        "#EXTINF:0.30000,\nseg-104.m4s\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-26T08:27:16.167Z\n\
#EXT-X-PART:DURATION=0.20000,URI=\"part-547.m4s\",INDEPENDENT=YES\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-548.m4s\"",
    );
    assert_none(&check_media(&later, &source_ctx()), "media, later");
    assert_none(&check_reload(GOOD_MEDIA, &later), "reload");
    assert_none(&check_blocking_answer(104, Some(2), &later), "blocking");
    assert_none(
        &check_blocking_answer(103, None, &later),
        "blocking, segment",
    );
}

#[test]
fn a_broken_multivariant_playlist_breaks_each_rule_by_name() {
    let broken = "#EXT-X-VERSION:6
#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"a1\",DEFAULT=YES,URI=\"a1/index.m3u8\"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"a2\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"a2/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=1000,AVERAGE-BANDWIDTH=2000,CODECS=\"avc1.64001f\",AUDIO=\"aud\"
v1/index.m3u8
#EXT-X-STREAM-INF:CODECS=\"avc1.64001f,mp4a.40.2,xyz9\",RESOLUTION=640x360,FRAME-RATE=30,AUDIO=\"missing\"
";
    let found = check_multivariant(broken);
    assert_caught(
        &found,
        &[
            "extm3u-first",
            "independent-segments",
            "media-attrs",
            "media-default",
            "variant-bandwidth",
            "variant-average-bandwidth",
            "variant-codecs",
            "variant-resolution",
            "variant-frame-rate",
            "audio-group",
            "variant-uri",
        ],
    );
    // and what is not there is not invented
    assert!(!rules(&found).contains("version-present"), "{found:?}");
    let no_version = GOOD_MASTER.replace("#EXT-X-VERSION:9\n", "");
    assert_eq!(
        rules(&check_multivariant(&no_version)),
        BTreeSet::from(["version-present"])
    );
}

#[test]
fn a_broken_media_playlist_breaks_each_rule_by_name() {
    // Target duration 2 s, parts of 0.5 s. Broken: the version (MAP and SKIP
    // need 9), TARGETDURATION twice, a 3 s segment, no CAN-BLOCK-RELOAD,
    // CAN-SKIP-UNTIL, HOLD-BACK and PART-HOLD-BACK too small, a skip that
    // leaves less than CAN-SKIP-UNTIL (6.8 s of 8), no MAP before the first
    // two segments, parts 6.8 s from the end (over 3 x 2 s), a part over
    // PART-TARGET, a short part mid-segment, a date after a part and going
    // back in time, a part without URI, a hint for a listed part and two
    // hints, a report without LAST-PART, no report for a2, a report for
    // itself.
    let broken = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=8,HOLD-BACK=4,PART-HOLD-BACK=0.5
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-SKIP:SKIPPED-SEGMENTS=2
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXT-X-PART:DURATION=0.5,URI=\"part-x0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI=\"part-x1.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"part-x2.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"part-x3.m4s\"
#EXTINF:2.0,
seg-12.m4s
#EXT-X-PART:DURATION=0.5,URI=\"part-0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI=\"part-1.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"part-2.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"part-3.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"part-4.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"part-5.m4s\"
#EXTINF:3.0,
seg-13.m4s
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PART:DURATION=0.6,URI=\"part-6.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"part-7.m4s\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:00.000Z
#EXT-X-PART:DURATION=0.5,URI=\"part-8.m4s\"
#EXTINF:1.3,
seg-14.m4s
#EXT-X-PART:DURATION=0.5
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-8.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-10.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../a1/index.m3u8\",LAST-MSN=13
#EXT-X-RENDITION-REPORT:URI=\"../v1/index.m3u8\",LAST-MSN=13,LAST-PART=0
";
    let ctx = MediaContext {
        uri: "v1/index.m3u8".into(),
        others: vec!["../a1/index.m3u8".into(), "../a2/index.m3u8".into()],
    };
    let found = check_media(broken, &ctx);
    assert_caught(
        &found,
        &[
            "version-high-enough",
            "unique-tags",
            "target-duration",
            "can-block-reload",
            "can-skip-until",
            "hold-back",
            "part-hold-back",
            "delta-update",
            "map-in-effect",
            "parts-recent",
            "part-duration-max",
            "part-duration-min",
            "tags-before-parts",
            "program-date-time",
            "part-attrs",
            "preload-hint",
            "rendition-reports",
        ],
    );
    // the messages say what was wrong
    let text: Vec<String> = found.iter().map(|v| v.to_string()).collect();
    let all = text.join("\n");
    for needle in [
        "EXT-X-VERSION:3, but EXT-X-SKIP needs version 9",
        "segment 13 lasts 3 s",
        "PART-HOLD-BACK=0.5 < 3 x PART-TARGET (1.5)",
        "HOLD-BACK=4 < 3 x EXT-X-TARGETDURATION (6)",
        "CAN-SKIP-UNTIL=8 < 6 x EXT-X-TARGETDURATION (12)",
        "2 segments skipped but only 6.800 s listed after them",
        "segment 12 lists part-x0.m4s starting 6.800 s from the end",
        "part-6.m4s) lasts 0.6 s, over PART-TARGET=0.5",
        "part-7.m4s) lasts 0.2 s, under 85 %",
        "no EXT-X-RENDITION-REPORT for ../a2/index.m3u8",
        "has no LAST-PART",
        "a rendition report for the playlist itself",
        "2 EXT-X-PRELOAD-HINT of TYPE=PART",
        "the hinted part part-8.m4s is already listed",
        "segment 14 is dated",
        "segment 12 has no EXT-X-MAP",
        "segment 13 has no EXT-X-MAP",
        "segment 14: #EXT-X-PROGRAM-DATE-TIME after its first EXT-X-PART",
    ] {
        assert!(all.contains(needle), "no {needle:?} in\n{all}");
    }
    // only what is broken: the INDEPENDENT part over 85 %, the parts of
    // segment 13 (within 3 target durations), segment 14's MAP
    assert!(!all.contains("part-0.m4s) lasts"), "{all}");
    assert!(!all.contains("segment 13 lists"), "{all}");
    assert!(!all.contains("segment 14 has no EXT-X-MAP"), "{all}");

    // what is missing altogether
    let bare = "#EXTM3U\n#EXT-X-PART:DURATION=0.5,URI=\"p.m4s\"\n#EXTINF:1.0,\ns.m4s\n";
    assert_caught(
        &check_media(bare, &MediaContext::default()),
        &[
            "version-present",
            "target-duration",
            "media-sequence",
            "part-inf",
            "can-block-reload",
            "map-in-effect",
            "program-date-time",
        ],
    );
    // a long window without delta updates (Apple: over 2 minutes)
    let mut long = String::from(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n#EXT-X-MAP:URI=\"i.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:00.000Z\n",
    );
    for i in 0..70 {
        long.push_str(&format!("#EXTINF:2.0,\ns{i}.m4s\n"));
    }
    assert_eq!(
        rules(&check_media(&long, &MediaContext::default())),
        BTreeSet::from(["can-skip-until"])
    );
}

#[test]
fn broken_reloads_renditions_and_blocking_answers_are_caught() {
    let ctx = source_ctx();
    assert_none(&check_media(GOOD_MEDIA, &ctx), "good");
    // a reload that goes back, renames a segment, and shrinks the window
    // under 3 target durations
    let back = GOOD_MEDIA
        .replace("#EXT-X-MEDIA-SEQUENCE:100", "#EXT-X-MEDIA-SEQUENCE:99")
        .replace("seg-101.m4s", "seg-101b.m4s");
    assert_caught(
        &check_reload(GOOD_MEDIA, &back),
        &["sequence-monotonic", "segment-stable"],
    );
    let dsn_back = GOOD_MEDIA.replace(
        "#EXT-X-DISCONTINUITY-SEQUENCE:0",
        "#EXT-X-DISCONTINUITY-SEQUENCE:3",
    );
    assert_caught(
        &check_reload(&dsn_back, GOOD_MEDIA),
        &["sequence-monotonic"],
    );
    // 100, 101 and 102 leave: 1.867 s of complete segments stay (under 3 s)
    let mut short = String::new();
    let mut skip = false;
    for line in GOOD_MEDIA.lines() {
        if line == "#EXT-X-MEDIA-SEQUENCE:100" {
            short.push_str("#EXT-X-MEDIA-SEQUENCE:103\n");
            continue;
        }
        if line.starts_with("#EXT-X-MAP:URI=\"init-1") {
            skip = true;
        }
        if line == "#EXT-X-DISCONTINUITY" {
            skip = false;
            continue;
        }
        if !skip {
            short.push_str(line);
            short.push('\n');
        }
    }
    assert_caught(&check_reload(GOOD_MEDIA, &short), &["window-3td"]);
    assert!(!rules(&check_reload(GOOD_MEDIA, &short)).contains("sequence-monotonic"));

    // renditions that disagree
    let audio = GOOD_MEDIA
        .replace("#EXT-X-TARGETDURATION:1", "#EXT-X-TARGETDURATION:2")
        .replace("PART-HOLD-BACK=0.6", "PART-HOLD-BACK=0.9")
        .replace("PART-TARGET=0.2", "PART-TARGET=0.3")
        .replace("#EXT-X-DISCONTINUITY\n", "");
    let found = check_renditions(&[
        ("source/index.m3u8".into(), GOOD_MEDIA.into()),
        ("audio/index.m3u8".into(), audio),
    ]);
    assert_caught(
        &found,
        &[
            "same-target-duration",
            "same-server-control",
            "same-part-target",
            "same-discontinuity-numbering",
        ],
    );

    // a blocking answer without what was asked for
    assert_caught(
        &check_blocking_answer(104, Some(3), GOOD_MEDIA),
        &["blocking-reload"],
    );
    assert_caught(
        &check_blocking_answer(104, None, GOOD_MEDIA),
        &["blocking-reload"],
    );
}

#[test]
fn url_helpers() {
    use common::hls_rules::{number_plus, relative_to, resolve};
    let master = "http://127.0.0.1:8080/live/cam/master.m3u8";
    assert_eq!(
        resolve(master, "source/index.m3u8"),
        "http://127.0.0.1:8080/live/cam/source/index.m3u8"
    );
    let media = "http://127.0.0.1:8080/live/cam/source/index.m3u8?_HLS_msn=4";
    assert_eq!(
        resolve(media, "../audio/index.m3u8"),
        "http://127.0.0.1:8080/live/cam/audio/index.m3u8"
    );
    assert_eq!(
        resolve(media, "part-7.m4s?token=1.ab"),
        "http://127.0.0.1:8080/live/cam/source/part-7.m4s?token=1.ab"
    );
    assert_eq!(resolve(media, "/time"), "http://127.0.0.1:8080/time");
    assert_eq!(
        relative_to("source/index.m3u8", "audio/index.m3u8"),
        "../audio/index.m3u8"
    );
    assert_eq!(relative_to("a.m3u8", "b/c.m3u8"), "b/c.m3u8");
    assert_eq!(
        number_plus("part-35913641510.m4s", 5).as_deref(),
        Some("part-35913641515.m4s")
    );
    assert_eq!(
        number_plus("part-9.m4s?token=1.ab", 2).as_deref(),
        Some("part-11.m4s?token=1.ab")
    );
    assert_eq!(number_plus("part.m4s", 1), None);
}

// ---------------------------------------------------------------- live

/// Segments of 1 s, parts of 0.2 s, 12 segments in the window (so delta
/// updates, with CAN-SKIP-UNTIL = 6 s, skip something).
const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.2\nwindow_segments = 12";

fn source(seconds: f64) -> Source {
    Source {
        size: "320x240",
        rate: 30,
        seconds,
        x264: "-preset ultrafast -profile:v baseline -g 30 -keyint_min 30 -sc_threshold 0",
        audio: true,
    }
}

fn show(report: &Report) -> String {
    format!(
        "{} playlists, {} URIs checked; rules broken: {:?}",
        report.playlists_checked,
        report.uris_checked,
        report.rules()
    )
}

/// The real origin, live: the master, source and audio playlists, deltas,
/// blocking reloads and every URI, twice: while the first publisher is on,
/// and after it reconnected (a discontinuity and a new init segment in the
/// window, which the renditions must number alike).
#[test]
fn live_playlists_follow_the_apple_rules_across_a_reconnect() {
    let ladder = Ladder::start(&config(true, PACKAGING, ""));
    let master = ladder.url("/live/rules/master.m3u8");
    let media = ladder.url("/live/rules/source/index.m3u8");

    // long enough for the validation; stopped (killed) after it
    let mut first = publish(&source(60.0), &ladder.rtmp_url("rules"), None);
    wait_200(&master, Duration::from_secs(30));
    // wait for a window longer than CAN-SKIP-UNTIL (6 s) plus a segment
    common::hls_rules::wait_for_segments(&media, 8, Duration::from_secs(40));
    let report = validate_live(&master, &LiveOptions::default());
    eprintln!("first publisher: {}", show(&report));
    report.assert_clean();
    // it looked at something: the master, two media playlists, a delta and
    // 4 reloads each, every URI of the last answers
    assert!(report.playlists_checked > 2 * 6, "{}", show(&report));
    assert!(report.uris_checked >= 20, "{}", show(&report));
    // the last playlists before the publisher goes
    let before: Vec<(String, String)> = ["source", "audio"]
        .iter()
        .map(|r| {
            let url = ladder.url(&format!("/live/rules/{r}/index.m3u8"));
            (url.clone(), common::get_text(&url).1)
        })
        .collect();
    let _ = first.kill();
    let _ = first.wait();

    // the same key again: a discontinuity, a new init segment
    let mut second = publish(&source(60.0), &ladder.rtmp_url("rules"), None);
    let t = std::time::Instant::now();
    loop {
        let (s, text) = common::get_text(&media);
        if s == 200 && text.contains("#EXT-X-DISCONTINUITY\n") {
            let after = text.split("#EXT-X-DISCONTINUITY\n").nth(1).unwrap_or("");
            if after.matches("#EXTINF").count() >= 3 {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "no discontinuity with 3 segments after it:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = validate_live(&master, &LiveOptions::default());
    eprintln!("after the reconnect: {}", show(&report));
    report.assert_clean();
    // across the reconnect: nothing went backwards, nothing was renamed
    for (url, old) in &before {
        let (_, new) = common::get_text(url);
        assert_none(&check_reload(old, &new), url);
    }
    let (_, text) = common::get_text(&media);
    assert!(
        text.matches("#EXT-X-MAP:").count() >= 2,
        "two init segments in the window:\n{text}"
    );
    let _ = second.kill();
    let _ = second.wait();
}
