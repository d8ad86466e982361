//! The status page in a real browser (issue 6 §6): headless Chromium loads the
//! admin root while a channel is live and restreams nowhere; the rendered page
//! shows the channel as live with its rung and a thumbnail that loaded. The
//! screenshot is kept as a test artifact (`target/tmp/status-page.png`).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn admin_addr(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("ladder started"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("admin="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .expect("admin address in the start line")
}

fn browse(browser: &str, what: &[&str], url: &str) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,900",
            // page time: several polls and thumbnail loads
            "--virtual-time-budget=9000",
        ])
        .args(what)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[test]
fn the_status_page_shows_a_live_channel_with_its_thumbnail() {
    let Some(browser) = chromium() else {
        // make test installs chromium: in CI its absence is a failure
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required (make test installs it)"
        );
        eprintln!("SKIP: no chromium");
        return;
    };
    let ladder = Ladder::start(&config_with_ladder(
        true,
        "segment_seconds = 1.0\npart_seconds = 0.5",
        r#"{ name = "source", passthrough = true }, { name = "180p", height = 180, bitrate_kbps = 300, preset = "ultrafast" }"#,
        "",
    ));
    let mut src = Source::baseline();
    src.seconds = 30.0;
    let ff = publish(&src, &ladder.rtmp_url("studio"), None);
    wait_200(
        &ladder.url("/live/studio/180p/index.m3u8"),
        Duration::from_secs(20),
    );
    let admin = format!("http://{}/", admin_addr(&ladder.log()));

    let dom = browse(browser, &["--dump-dom"], &admin);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"id="ch-studio""#),
        "the channel's card:\n{dom}"
    );
    assert!(
        dom.contains(r#"class="badge live">LIVE<"#),
        "shown live:\n{dom}"
    );
    assert!(dom.contains("<td>180p</td>"), "its rung:\n{dom}");
    let thumb = dom
        .split("<img")
        .find(|t| t.contains("class=\"thumb\""))
        .unwrap_or_else(|| panic!("a thumbnail:\n{dom}"));
    assert!(
        thumb.contains("data-loaded=\"1\""),
        "the thumbnail loaded:\n{thumb}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = browse(
        browser,
        &[&format!("--screenshot={}", shot.display())],
        &admin,
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    eprintln!("screenshot: {}", shot.display());

    // the thumbnail itself: a JPEG of the asked width
    let (code, headers, body) = get(&format!("{admin}thumbnails/studio.jpg?w=320"));
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(&body[..2], &[0xFF, 0xD8]);
    let _ = wait(ff, Duration::from_secs(40));
}
