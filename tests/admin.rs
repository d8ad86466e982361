//! The admin server, the publish webhook and signed playback against real
//! peers: the `ladder` binary, ffmpeg publishing, ffprobe playing, nginx-rtmp
//! as a restream destination, openssl computing playback signatures, and an
//! in-test hyper server as the webhook.

mod common;

use common::*;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 6";

/// A config on loopback ports with `auth` lines in `[auth]`; `extra` after
/// the ladder.
fn config_text(auth: &str, renditions: &str, extra: &str) -> String {
    format!(
        r#"
[server]
rtmp_listen  = "127.0.0.1:0"
http_listen  = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[auth]
{auth}

[packaging]
{PACKAGING}

[ladders.default]
backend = "cpu"
renditions = [ {renditions} ]
{extra}
"#
    )
}

const PASSTHROUGH: &str = r#"{ name = "source", passthrough = true }"#;

/// The admin address, from the "ladder started" line (`Ladder::start` has
/// seen it; the log may get it a moment later).
fn admin(ladder: &Ladder) -> SocketAddr {
    let line = until(
        "the started line in the log",
        Duration::from_secs(10),
        || {
            ladder
                .log()
                .lines()
                .find(|l| l.contains("ladder started"))
                .map(String::from)
        },
    );
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("no admin= on the started line: {line}"));
    value.trim_matches('"').parse().unwrap()
}

/// One HTTP request: (status, headers, body).
fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let rt = runtime();
    rt.block_on(async {
        let client = http_client(Duration::from_secs(15));
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        (status, headers, body)
    })
}

fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, headers, body) = request(method, &format!("http://{addr}{path}"), token);
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{method} {path}: {body}"
    );
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

/// Poll `check` until it returns Some (bounded, so a bug fails rather than
/// hangs).
fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A publisher that runs until killed (the test ends it).
fn long_source() -> Source {
    let mut s = Source::baseline();
    s.seconds = 600.0;
    s
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// Prometheus text, parsed strictly
// ---------------------------------------------------------------------------

/// A sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `{a="x",b="y"}` into labels; the rest of the line after it.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').unwrap();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let (name, after) = rest.split_once("=\"").expect("label=\"");
        assert!(label_name(name), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '"' => break i,
                '\\' => match chars.next().expect("escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other}"),
                },
                '\n' => panic!("newline in a label value"),
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} twice"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value {v:?}")),
    }
}

/// The text exposition format 0.0.4, strictly: every line a HELP, a TYPE or
/// a sample; every family HELP then TYPE once, before its samples, which are
/// together; counters end in `_total`; no series twice. Returns the samples.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut helped = HashSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut closed = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(metric_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {name}");
            if let Some(c) = current.replace(name.to_owned()) {
                closed.insert(c);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            assert_eq!(
                Some(name),
                current.as_deref(),
                "TYPE after its HELP: {line}"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        assert!(!line.is_empty(), "empty line");
        let name_end = line.find(['{', ' ']).expect("sample");
        let name = &line[..name_end];
        assert!(metric_name(name), "{line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest.strip_prefix(' ').expect("space before the value");
        assert!(!value.contains(' '), "no timestamps expected: {line}");
        let value = parse_value(value);
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample outside its family: {line}"
        );
        assert!(typed.contains_key(name), "no TYPE for {name}");
        assert!(!closed.contains(name), "family {name} split");
        assert!(
            series.insert((name.to_owned(), labels.clone())),
            "series twice: {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    assert_eq!(helped.len(), typed.len(), "every family has HELP and TYPE");
    samples
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels.len() == l.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

#[test]
fn the_strict_parser_rejects_what_is_not_the_format() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v\\\"\"} 1\n";
    assert_eq!(parse_prometheus(good).len(), 1);
    for bad in [
        "a 1\n",                                                         // no HELP/TYPE
        "# HELP a x\n# TYPE a gauge\na 1",                               // no final newline
        "# HELP a x\n# TYPE a gauge\na{l=v} 1\n",                        // unquoted
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",                        // twice
        "# HELP a x\n# TYPE a counter\na 1\n",                           // counter name
        "# HELP a x\n# TYPE a gauge\na one\n",                           // value
        "# HELP a x\n# TYPE a gauge\n# HELP b y\n# TYPE b gauge\na 1\n", // outside
    ] {
        let r = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// API, metrics, kick
// ---------------------------------------------------------------------------

/// Without or with a wrong token every API path is 401 with a Bearer
/// challenge; with it the API answers; health, readiness, metrics and the
/// status page need none. No answer holds a key.
#[test]
fn the_api_needs_the_token() {
    let extra = r#"
[[channels]]
name = "news"
key = "SECRET-news-key"
restream = ["rtmp://127.0.0.1:9/live/SECRET-dest-key"]
"#;
    let ladder = Ladder::start(&config_text(
        "open = false\napi_token = \"t0k3n-abc\"",
        PASSTHROUGH,
        extra,
    ));
    let a = admin(&ladder);
    for (method, path) in [
        ("GET", "/api/v1/channels"),
        ("GET", "/api/v1/channels/news"),
        ("GET", "/api/v1/version"),
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/channels/news/kick"),
        ("POST", "/api/v1/channels/news/destinations/0/pause"),
    ] {
        for token in [None, Some("t0k3n-ab"), Some("t0k3n-abcd"), Some("")] {
            let (status, headers, body) = request(method, &format!("http://{a}{path}"), token);
            assert_eq!(status, 401, "{method} {path} {token:?}: {body}");
            let challenge = headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].is_string());
        }
    }
    let (status, v) = api(a, "GET", "/api/v1/channels", Some("t0k3n-abc"));
    assert_eq!(status, 200);
    let news = &v["channels"][0];
    assert_eq!(news["name"], "news");
    assert_eq!(news["live"], false);
    assert_eq!(
        news["destinations"][0]["target"],
        "rtmp://127.0.0.1:9/live/<key>"
    );
    let (status, v) = api(a, "GET", "/api/v1/version", Some("t0k3n-abc"));
    assert_eq!(status, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["backends"].as_array().unwrap().contains(&"cpu".into()));
    assert!(v["gpu"]["gpus"].is_array(), "{v}");
    // the pause was refused above: nothing paused
    let (_, v) = api(a, "GET", "/api/v1/channels/news", Some("t0k3n-abc"));
    assert_eq!(v["destinations"][0]["paused"], false);

    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let (status, _, text) = request("GET", &format!("http://{a}{path}"), None);
        assert_eq!((status, text.as_str()), (200, body), "{path}");
    }
    let (status, headers, text) = request("GET", &format!("http://{a}/metrics"), None);
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    parse_prometheus(&text);
    let (status, _, html) = request("GET", &format!("http://{a}/"), None);
    assert_eq!(status, 200);
    assert!(html.contains("/api/v1/channels"));
    let (status, _, _) = request("GET", &format!("http://{a}/nothing"), None);
    assert_eq!(status, 404);
    let log = ladder.log();
    assert!(!log.contains("SECRET"), "a key in the log:\n{log}");
    assert!(!log.contains("t0k3n"), "the token in the log:\n{log}");
}

/// A live channel with a transcoded rung: the API shows the publisher, the
/// input rates, the placement and the rung's counters; /metrics parses
/// strictly and carries the same figures; a kick ends the publisher with
/// "kicked by the admin API".
#[test]
fn live_figures_metrics_and_kick() {
    let ladder = Ladder::start(&config_text(
        "open = true",
        &format!(
            "{PASSTHROUGH}, {{ name = \"180p\", height = 180, bitrate_kbps = 300, preset = \"ultrafast\" }}"
        ),
        "",
    ));
    let a = admin(&ladder);
    let ff = Killed(publish(&long_source(), &ladder.rtmp_url("cam"), None));
    let channel = until(
        "encoded pictures on the rung",
        Duration::from_secs(60),
        || {
            let (status, v) = api(a, "GET", "/api/v1/channels/cam", None);
            (status == 200
                && v["rungs"][0]["encoded"].as_u64().unwrap_or(0) > 0
                && v["input"]["video_fps"].as_f64().unwrap_or(0.0) > 0.0)
                .then_some(v)
        },
    );
    assert_eq!(channel["live"], true);
    assert_eq!(channel["configured"], false);
    assert_eq!(channel["source_rendition"], "source");
    let publisher = &channel["publisher"];
    assert_eq!(publisher["kind"], "push");
    assert!(publisher["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(publisher["since"].as_str().unwrap().ends_with('Z'));
    let input = &channel["input"];
    assert!(input["video_bitrate"].as_f64().unwrap() > 0.0, "{input}");
    assert!(input["audio_bitrate"].as_f64().unwrap() > 0.0, "{input}");
    assert!(input["video_frames"].as_u64().unwrap() > 0, "{input}");
    let transcode = &channel["transcode"];
    assert_eq!(transcode["backend"], "cpu");
    assert_eq!(transcode["gpu"], serde_json::Value::Null);
    assert_eq!(transcode["runs_on"], "cpu");
    let rung = &channel["rungs"][0];
    assert_eq!(rung["name"], "180p");
    assert_eq!(rung["encoder"], "x264");
    assert_eq!(rung["height"], 180);
    assert_eq!(rung["width"], 240, "320x240 source at 180 high");
    assert!(rung["speed"].as_f64().unwrap() > 0.0, "{rung}");
    // the list has it too
    let (_, list) = api(a, "GET", "/api/v1/channels", None);
    assert!(list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "cam" && c["live"] == true));

    // the origin served something, so its counters moved
    wait_200(
        &ladder.url("/live/cam/master.m3u8"),
        Duration::from_secs(30),
    );
    let (status, _, text) = request("GET", &format!("http://{a}/metrics"), None);
    assert_eq!(status, 200);
    let samples = parse_prometheus(&text);
    let cam = [("channel", "cam")];
    assert_eq!(sample(&samples, "ladder_channel_live", &cam), Some(1.0));
    assert_eq!(sample(&samples, "ladder_channels_live", &[]), Some(1.0));
    assert_eq!(sample(&samples, "ladder_publishers", &[]), Some(1.0));
    assert_eq!(sample(&samples, "ladder_ready", &[]), Some(1.0));
    let rung = [("channel", "cam"), ("rung", "180p")];
    assert!(sample(&samples, "ladder_rung_encoded_total", &rung).unwrap() > 0.0);
    assert!(sample(&samples, "ladder_rung_speed_ratio", &rung).unwrap() > 0.0);
    assert!(
        sample(
            &samples,
            "ladder_channel_input_bits_per_second",
            &[("channel", "cam"), ("media", "video")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(
            &samples,
            "ladder_rung_info",
            &[
                ("channel", "cam"),
                ("rung", "180p"),
                ("encoder", "x264"),
                ("size", "240x180")
            ]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &samples,
            "ladder_http_requests_total",
            &[("server", "origin"), ("class", "2xx")]
        )
        .unwrap()
            >= 1.0
    );
    let version = sample(
        &samples,
        "ladder_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("features", "ffmpeg"),
        ],
    );
    assert_eq!(version, Some(1.0));

    // kick: the publisher's connection ends, the channel is not live
    let (status, v) = api(a, "POST", "/api/v1/channels/cam/kick", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kicked"], publisher["peer"]);
    let mut ff = ff;
    let code = until("ffmpeg to end", Duration::from_secs(60), || {
        ff.0.try_wait().unwrap().map(|s| s.code())
    });
    assert_ne!(code, Some(0), "ffmpeg should see its connection cut");
    assert!(ladder.wait_log("kicked by the admin API", Duration::from_secs(10)));
    let ended = ladder
        .log()
        .lines()
        .find(|l| l.contains("publish ended"))
        .unwrap()
        .to_owned();
    assert!(ended.contains("reason=kicked by the admin API"), "{ended}");
    until("the channel to be idle", Duration::from_secs(20), || {
        let (_, v) = api(a, "GET", "/api/v1/channels/cam", None);
        (v["live"] == false).then_some(())
    });
    let (status, v) = api(a, "POST", "/api/v1/channels/cam/kick", None);
    assert_eq!(status, 409, "{v}");
}

// ---------------------------------------------------------------------------
// Restream pause and resume, against nginx-rtmp
// ---------------------------------------------------------------------------

// nginx-rtmp: tests/common/nginx.rs (its `strict` application refuses to
// play a stream nobody publishes, so ffprobe tells published from not).
use common::nginx::Nginx;

/// ffprobe's codec of the first video stream at `url`, or None if it cannot
/// play it.
fn probe_video(url: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args([
            "20",
            "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-of",
            "json",
            url,
        ])
        .output()
        .expect("ffprobe");
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == "video")
        .and_then(|s| s["codec_name"].as_str().map(String::from))
}

/// A paused destination unpublishes from nginx (a player cannot play it),
/// stays paused and counts what it drops; resumed, it publishes again.
#[test]
fn a_destination_pauses_and_resumes() {
    let nginx = Nginx::start();
    let extra = format!(
        "[[channels]]\nname = \"news\"\nkey = \"k1\"\nrestream = [\"{}\"]\n",
        nginx.url("strict/mirror")
    );
    let ladder = Ladder::start(&config_text("open = false", PASSTHROUGH, &extra));
    let a = admin(&ladder);
    let _ff = Killed(publish(&long_source(), &ladder.rtmp_url("k1"), None));
    let state = |v: &serde_json::Value| v["destinations"][0]["state"].as_str().unwrap().to_owned();
    until(
        "the destination to go live",
        Duration::from_secs(60),
        || {
            let (_, v) = api(a, "GET", "/api/v1/channels/news", None);
            (state(&v) == "live" && v["destinations"][0]["bytes"].as_u64() > Some(0)).then_some(())
        },
    );
    let mirror = nginx.url("strict/mirror");
    assert_eq!(
        until("nginx to play the mirror", Duration::from_secs(60), || {
            probe_video(&mirror)
        }),
        "h264"
    );

    let (status, v) = api(
        a,
        "POST",
        "/api/v1/channels/news/destinations/0/pause",
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["paused"], true);
    let paused = until(
        "the destination to be paused",
        Duration::from_secs(30),
        || {
            let (_, v) = api(a, "GET", "/api/v1/channels/news", None);
            (state(&v) == "paused").then_some(v)
        },
    );
    assert_eq!(paused["destinations"][0]["paused"], true);
    assert!(ladder.wait_log("restream paused", Duration::from_secs(10)));
    // nginx no longer has the stream
    until("nginx to drop the mirror", Duration::from_secs(30), || {
        probe_video(&mirror).is_none().then_some(())
    });
    // media keeps coming and is dropped, counted, while paused
    let dropped = paused["destinations"][0]["dropped"].as_u64().unwrap();
    until("drops to be counted", Duration::from_secs(30), || {
        let (_, v) = api(a, "GET", "/api/v1/channels/news", None);
        assert_eq!(state(&v), "paused", "a paused destination reconnected");
        (v["destinations"][0]["dropped"].as_u64().unwrap() > dropped).then_some(())
    });

    let (status, _) = api(
        a,
        "POST",
        "/api/v1/channels/news/destinations/0/resume",
        None,
    );
    assert_eq!(status, 200);
    let resumed = until(
        "the destination to be live again",
        Duration::from_secs(60),
        || {
            let (_, v) = api(a, "GET", "/api/v1/channels/news", None);
            (state(&v) == "live").then_some(v)
        },
    );
    assert_eq!(resumed["destinations"][0]["paused"], false);
    assert!(resumed["destinations"][0]["reconnects"].as_u64().unwrap() >= 1);
    assert_eq!(
        until(
            "nginx to play the mirror again",
            Duration::from_secs(60),
            || probe_video(&mirror)
        ),
        "h264"
    );
    assert!(ladder.wait_log("restream resumed", Duration::from_secs(10)));
}

// ---------------------------------------------------------------------------
// The publish webhook
// ---------------------------------------------------------------------------

/// What the in-test webhook received: method, content type, JSON body.
type Received = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

/// An in-test hyper webhook on a loopback port, on its own runtime thread.
/// What it answers depends on the key (see `answer`).
fn webhook_server() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let seen = seen.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (rx.recv().unwrap(), received)
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    seen: &Received,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let method = req.method().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    seen.lock()
        .unwrap()
        .push((method, content_type, json.clone()));
    let (status, body): (u16, &str) = match json["key"].as_str().unwrap_or("") {
        "SECRET-ok" => (200, r#"{"channel": "hooked"}"#),
        "SECRET-cfg" => (200, r#"{"channel": "news"}"#),
        "SECRET-500" => (500, r#"{"channel": "hooked"}"#),
        "SECRET-503" => (503, ""),
        "SECRET-403" => (403, r#"{"channel": "hooked"}"#),
        "SECRET-404" => (404, ""),
        "SECRET-html" => (200, "<html>yes</html>"),
        "SECRET-empty" => (200, ""),
        "SECRET-nochannel" => (200, r#"{"allow": true}"#),
        "SECRET-numeric" => (200, r#"{"channel": 7}"#),
        "SECRET-badname" => (200, r#"{"channel": "../etc"}"#),
        "SECRET-slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (200, r#"{"channel": "hooked"}"#)
        }
        _ => (400, ""),
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

/// Publish `key` for 2 s; ffmpeg's exit code.
fn try_publish(ladder: &Ladder, key: &str) -> Option<i32> {
    let mut src = Source::baseline();
    src.seconds = 2.0;
    let ff = publish(&src, &ladder.rtmp_url(key), None);
    wait(ff, Duration::from_secs(60)).0
}

/// Each way the webhook can fail to say yes denies the publish: 5xx, 4xx, a
/// timeout, non-JSON, an empty body, no channel, a non-string channel, an
/// invalid channel name; a yes goes live on the channel the hook named. The
/// hook gets the key, the app, the peer and the configured channel as a
/// hint; the log never has the key.
#[test]
fn every_webhook_failure_denies() {
    let (hook, received) = webhook_server();
    let extra = "[[channels]]\nname = \"news\"\nkey = \"SECRET-cfg\"\n";
    let ladder = Ladder::start(&config_text(
        &format!(
            "open = false\npublish_webhook = \"http://{hook}/on_publish?sig=SECRET-hook\"\npublish_webhook_timeout = 1.0"
        ),
        PASSTHROUGH,
        extra,
    ));
    let denials = [
        ("SECRET-500", "answered 500"),
        ("SECRET-503", "answered 503"),
        ("SECRET-403", "answered 403"),
        ("SECRET-404", "answered 404"),
        ("SECRET-html", "not JSON"),
        ("SECRET-empty", "empty body"),
        ("SECRET-nochannel", "(no \"channel\")"),
        ("SECRET-numeric", "is not a string"),
        ("SECRET-badname", "invalid channel"),
        ("SECRET-slow", "no answer within 1s"),
        ("SECRET-unknown", "answered 400"),
    ];
    for (i, (key, why)) in denials.iter().enumerate() {
        let code = try_publish(&ladder, key);
        assert_ne!(code, Some(0), "{key} published");
        let refused = until("the refusal line", Duration::from_secs(10), || {
            let log = ladder.log();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("publish refused by the publish webhook"))
                .map(String::from)
                .collect();
            (lines.len() > i).then(|| lines[i].clone())
        });
        assert!(refused.contains(why), "{key}: {refused}");
        assert!(refused.contains("peer=127.0.0.1:"), "{refused}");
    }
    assert!(
        !ladder.log().contains("publish started"),
        "{}",
        ladder.log()
    );

    // yes: live on the channel the hook named
    let mut src = Source::baseline();
    src.seconds = 3.0;
    let ff = publish(&src, &ladder.rtmp_url("SECRET-ok"), None);
    wait_200(
        &ladder.url("/live/hooked/master.m3u8"),
        Duration::from_secs(30),
    );
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    // a configured channel's key: the hint names it
    let ff = publish(&src, &ladder.rtmp_url("SECRET-cfg"), None);
    wait_200(
        &ladder.url("/live/news/master.m3u8"),
        Duration::from_secs(30),
    );
    let _ = wait(ff, Duration::from_secs(60));

    let received = received.lock().unwrap().clone();
    let ok = received
        .iter()
        .find(|(_, _, body)| body["key"] == "SECRET-ok")
        .expect("the hook was asked");
    assert_eq!(ok.0, "POST");
    assert_eq!(ok.1, "application/json");
    assert_eq!(ok.2["app"], "live");
    assert!(ok.2["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(ok.2["channel_hint"], serde_json::Value::Null);
    let cfg = received
        .iter()
        .find(|(_, _, body)| body["key"] == "SECRET-cfg")
        .unwrap();
    assert_eq!(cfg.2["channel_hint"], "news");
    let log = ladder.log();
    assert!(
        !log.contains("SECRET"),
        "a key or the hook URL in the log:\n{log}"
    );
}

/// A webhook that refuses connections denies every publish.
#[test]
fn an_unreachable_webhook_denies() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let ladder = Ladder::start(&config_text(
        &format!("open = false\npublish_webhook = \"http://127.0.0.1:{port}/hook\""),
        PASSTHROUGH,
        "",
    ));
    assert_ne!(try_publish(&ladder, "SECRET-any"), Some(0));
    assert!(ladder.wait_log(
        "publish refused by the publish webhook",
        Duration::from_secs(10)
    ));
    let log = ladder.log();
    let line = log
        .lines()
        .find(|l| l.contains("publish refused by the publish webhook"))
        .unwrap();
    assert!(line.contains("cannot reach the webhook"), "{line}");
    assert!(!log.contains("SECRET"), "{log}");
}

// ---------------------------------------------------------------------------
// Signed playback URLs
// ---------------------------------------------------------------------------

const PLAYBACK_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A token for `channel` until `exp`, signed by openssl (an implementation
/// independent of Ladder's).
fn openssl_token(channel: &str, exp: u64) -> String {
    assert!(have("openssl") || Path::new("/usr/bin/openssl").exists());
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", PLAYBACK_SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("/live/{channel}/{exp}").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(hex.len(), 64, "{text}");
    format!("{exp}.{hex}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Resolve a relative URI against a URL (path part only; the URI keeps its
/// own query).
fn resolve(base: &str, uri: &str) -> String {
    let base = base.split('?').next().unwrap();
    let dir = &base[..base.rfind('/').unwrap() + 1];
    let mut url = format!("{dir}{uri}");
    while let Some(i) = url.find("/../") {
        let start = url[..i].rfind('/').unwrap();
        url.replace_range(start..i + 3, "");
    }
    url
}

/// Every URI of an HLS playlist: URI lines and URI="..." attributes.
fn hls_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let mut rest = line;
            while let Some(i) = rest.find("URI=\"") {
                let after = &rest[i + 5..];
                let end = after.find('"').unwrap();
                out.push(after[..end].to_owned());
                rest = &after[end..];
            }
        } else if !line.trim().is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

/// With a playback secret, the channel's URLs need a valid token (403
/// without, expired, for another channel or tampered); playlists and the
/// MPD carry the token on every URI, so ffprobe plays the signed master
/// URL and every listed resource is reachable as written.
#[test]
fn signed_playback_urls() {
    let ladder = Ladder::start(&config_text(
        &format!("open = true\nplayback_secret = \"{PLAYBACK_SECRET}\""),
        PASSTHROUGH,
        "",
    ));
    let _ff = Killed(publish(&long_source(), &ladder.rtmp_url("cam"), None));
    let token = openssl_token("cam", unix_now() + 3600);
    let master_url = ladder.url(&format!("/live/cam/master.m3u8?token={token}"));
    let master = wait_200(&master_url, Duration::from_secs(30));

    // refused without a valid token, before anything else
    let expired = openssl_token("cam", unix_now() - 10);
    let other = openssl_token("sport", unix_now() + 3600);
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for (query, why) in [
        (String::new(), "missing"),
        (format!("?token={expired}"), "expired"),
        (format!("?token={other}"), "invalid"),
        (format!("?token={tampered}"), "invalid"),
        (format!("?token={token}&token={token}"), "malformed"),
        (format!("?tok={token}"), "missing"),
    ] {
        for path in ["master.m3u8", "manifest.mpd", "source/index.m3u8"] {
            let (status, body) = get_text(&ladder.url(&format!("/live/cam/{path}{query}")));
            assert_eq!(status, 403, "{path}{query}: {body}");
            assert!(body.contains(why), "{path}{query}: {body}");
        }
    }
    let (status, _) = get_text(&ladder.url("/time"));
    assert_eq!(status, 200, "/time needs no token");

    // every URI in the master, each media playlist and the MPD carries the token
    let uris = hls_uris(&master);
    assert!(uris.len() >= 2, "{master}");
    for uri in &uris {
        assert!(uri.ends_with(&format!("?token={token}")), "{uri}");
        let url = resolve(&master_url, uri);
        let (status, playlist) = get_text(&url);
        assert_eq!(status, 200, "{url}");
        let media_uris = hls_uris(&playlist);
        assert!(!media_uris.is_empty(), "{playlist}");
        for m in &media_uris {
            assert!(
                m.ends_with(&format!("?token={token}")),
                "{m} in\n{playlist}"
            );
        }
        // the init segment, a complete segment or part as written: reachable
        for m in media_uris
            .iter()
            .filter(|m| m.starts_with("init-") || m.starts_with("seg-"))
            .take(2)
        {
            let (status, _, body) = get(&resolve(&url, m));
            assert_eq!(status, 200, "{m}");
            assert!(!body.is_empty());
            // and the same without its token is not
            let bare = resolve(&url, m.split('?').next().unwrap());
            assert_eq!(get(&bare).0, 403, "{bare}");
        }
        // a blocking reload with the token beside the directives
        let msn = parse_media_playlist(&playlist).media_sequence;
        let (status, _) = get_text(&format!("{url}&_HLS_msn={msn}"));
        assert_eq!(status, 200);
    }
    let (status, mpd) = get_text(&ladder.url(&format!("/live/cam/manifest.mpd?token={token}")));
    assert_eq!(status, 200);
    assert!(
        mpd.contains(&format!("/seg-$Number$.m4s?token={token}\"")),
        "{mpd}"
    );
    assert!(mpd.contains(&format!(".mp4?token={token}\"")), "{mpd}");

    // a real player: ffprobe opens the signed URL and follows the URIs
    assert_eq!(probe_video(&master_url).as_deref(), Some("h264"));
}
