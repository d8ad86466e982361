//! Test harness: the real `ladder` binary, real ffmpeg publishers, ffprobe.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod hls_rules;
pub mod nginx;
pub mod raw_rtmp;

pub const BIN: &str = env!("CARGO_BIN_EXE_ladder");

/// The `ladder` binary [`Ladder::start`] runs: `$LADDER_TEST_BIN` when set
/// (a copy of this checkout's build, where several checkouts share one
/// target directory and another's build may replace `target/debug/ladder`
/// mid-run), else cargo's [`BIN`].
pub fn bin() -> String {
    std::env::var("LADDER_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A running `ladder serve` on loopback ports chosen by the OS.
pub struct Ladder {
    child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub dir: tempdir::Dir,
}

pub mod tempdir {
    use std::path::PathBuf;
    /// A temporary directory removed on drop.
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "ladder-test-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
        pub fn join(&self, s: &str) -> PathBuf {
            self.0.join(s)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A config on ephemeral loopback ports; `extra` is appended (channels, ladders).
pub fn config(open: bool, packaging: &str, extra: &str) -> String {
    config_with_ladder(
        open,
        packaging,
        r#"{ name = "source", passthrough = true }"#,
        extra,
    )
}

/// [`config`] with the default ladder's renditions given (TOML inline tables,
/// comma separated).
pub fn config_with_ladder(open: bool, packaging: &str, renditions: &str, extra: &str) -> String {
    format!(
        r#"
[server]
rtmp_listen  = "127.0.0.1:0"
http_listen  = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[auth]
open = {open}

[packaging]
{packaging}

[ladders.default]
backend = "cpu"
renditions = [ {renditions} ]
{extra}
"#
    )
}

impl Ladder {
    pub fn start(config_text: &str) -> Ladder {
        Ladder::start_with_env(config_text, &[])
    }

    /// [`Ladder::start`] with environment variables set (after the harness's
    /// own `RUST_LOG=info` and `NO_COLOR`, so they may override them); a
    /// value of `None` removes the variable.
    pub fn start_with_env(config_text: &str, env: &[(&str, Option<&str>)]) -> Ladder {
        let dir = tempdir::Dir::new("ladder");
        let cfg = dir.join("ladder.toml");
        std::fs::write(&cfg, config_text).unwrap();
        let mut command = Command::new(bin());
        command
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ladder");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("ladder started") {
                        if let (Some(r), Some(h)) = (field(&line, "rtmp"), field(&line, "http")) {
                            let _ = tx.send((r.parse().unwrap(), h.parse().unwrap()));
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let (rtmp, http) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(x) => x,
            Err(_) => {
                let _ = child.kill();
                panic!("ladder did not start:\n{}", log.lock().unwrap());
            }
        };
        Ladder {
            child,
            rtmp,
            http,
            log,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The process id, for [`proc_figures`].
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{}", self.rtmp, key)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Send a signal (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Occurrences of `needle` in the log.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Wait until the log contains `needle` at least `n` times; panics with
    /// the log after `timeout`.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        let t = Instant::now();
        while self.count_log(needle) < n {
            assert!(
                t.elapsed() < timeout,
                "{n} x {needle:?} expected in the log, found {}:\n{}",
                self.count_log(needle),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(String::from)
            .collect()
    }

    /// SIGTERM, then wait for exit.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.log());
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                return (None, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ladder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics, naming the line, if any of `secrets` (stream keys) is in `log`.
pub fn assert_no_secrets(log: &str, secrets: &[&str]) {
    for secret in secrets {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("a stream key ({secret}) is in the log:\n{line}");
        }
    }
}

/// `key=value` from a tracing log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&pat))
        .map(|v| v.trim_matches('"'))
}

/// What an ffmpeg publisher sends.
#[derive(Clone, Debug)]
pub struct Source {
    pub size: &'static str,
    pub rate: u32,
    pub seconds: f64,
    /// x264 options: profile, B-frames, GOP.
    pub x264: &'static str,
    pub audio: bool,
}

impl Source {
    pub fn high_bframes() -> Source {
        Source {
            size: "640x360",
            rate: 30,
            seconds: 6.0,
            x264: "-preset veryfast -profile:v high -bf 2 -g 60 -keyint_min 60 -sc_threshold 0",
            audio: true,
        }
    }
    pub fn baseline() -> Source {
        Source {
            size: "320x240",
            rate: 30,
            seconds: 5.0,
            x264: "-preset ultrafast -profile:v baseline -g 30 -keyint_min 30 -sc_threshold 0",
            audio: true,
        }
    }
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Start ffmpeg publishing `src` to `url` in real time; with `copy_to`, the
/// exact stream sent is also written there as FLV (the reference to compare with).
pub fn publish(src: &Source, url: &str, copy_to: Option<&Path>) -> Child {
    assert!(have("ffmpeg"), "ffmpeg is required (make test installs it)");
    let mut args: Vec<String> = vec![
        "-hide_banner".into(),
        "-loglevel".into(),
        "error".into(),
        "-re".into(),
    ];
    args.extend(
        format!(
            "-f lavfi -i testsrc2=size={}:rate={}:duration={}",
            src.size, src.rate, src.seconds
        )
        .split(' ')
        .map(String::from),
    );
    if src.audio {
        args.extend(
            format!(
                "-f lavfi -i sine=frequency=440:sample_rate=48000:duration={}",
                src.seconds
            )
            .split(' ')
            .map(String::from),
        );
    }
    args.extend("-c:v libx264 -pix_fmt yuv420p".split(' ').map(String::from));
    args.extend(src.x264.split(' ').map(String::from));
    if src.audio {
        args.extend("-c:a aac -b:a 96k -ac 2".split(' ').map(String::from));
    }
    match copy_to {
        Some(p) => {
            args.extend(["-map".into(), "0:v".into()]);
            if src.audio {
                args.extend(["-map".into(), "1:a".into()]);
            }
            // the tee muxer needs global headers, or FLV gets an empty avcC
            args.extend(["-flags".into(), "+global_header".into()]);
            args.extend(["-flvflags".into(), "no_duration_filesize".into()]);
            args.extend([
                "-f".into(),
                "tee".into(),
                format!("[f=flv]{url}|[f=flv]{}", p.display()),
            ]);
        }
        None => args.extend(["-f".into(), "flv".into(), url.into()]),
    }
    Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Wait for a child with a timeout; returns its exit code and stderr.
pub fn wait(mut child: Child, timeout: Duration) -> (Option<i32>, String) {
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (status.code(), err);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "timed out".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A single-threaded runtime for a test's blocking HTTP calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP client whose requests give up after `timeout`.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// Blocking HTTP GET: (status, headers, body).
pub fn get(url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let rt = runtime();
    rt.block_on(async {
        let client = http_client(Duration::from_secs(15));
        let r = client.get(url).send().await.expect("GET");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        (status, headers, body)
    })
}

pub fn get_text(url: &str) -> (u16, String) {
    let (s, _, b) = get(url);
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// Poll `url` until it answers 200.
pub fn wait_200(url: &str, timeout: Duration) -> String {
    let t = Instant::now();
    loop {
        let (s, body) = get_text(url);
        if s == 200 {
            return body;
        }
        assert!(
            t.elapsed() < timeout,
            "{url} did not become available: last status {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A media playlist, parsed enough for the tests.
#[derive(Debug, Default)]
pub struct MediaPlaylist {
    pub text: String,
    pub map: Vec<String>,
    /// (msn, uri, duration, discontinuity-before)
    pub segments: Vec<(u64, String, f64, bool)>,
    pub media_sequence: u64,
    /// Parts listed after the last complete segment (the open one).
    pub open_parts: usize,
}

pub fn parse_media_playlist(text: &str) -> MediaPlaylist {
    assert!(text.starts_with("#EXTM3U"), "not a playlist: {text}");
    let mut p = MediaPlaylist {
        text: text.to_string(),
        ..Default::default()
    };
    let mut dur = None;
    let mut disc = false;
    let mut msn = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.trim().parse().unwrap();
            msn = p.media_sequence;
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            msn += v.trim().parse::<u64>().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:URI=") {
            p.map.push(v.trim_matches('"').to_string());
        } else if line.starts_with("#EXT-X-PART:") {
            p.open_parts += 1;
        } else if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            dur = Some(
                v.trim_end_matches(',')
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<f64>()
                    .unwrap(),
            );
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            p.segments
                .push((msn, line.to_string(), dur.take().unwrap_or(0.0), disc));
            p.open_parts = 0;
            disc = false;
            msn += 1;
        }
    }
    p
}

/// ffprobe a file: JSON with streams and packets.
pub fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Packets of one stream type: (pts, dts, keyframe) in seconds.
pub fn packets(probe: &serde_json::Value, kind: &str) -> Vec<(f64, f64, bool)> {
    let idx: Vec<i64> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == kind)
        .map(|s| s["index"].as_i64().unwrap())
        .collect();
    probe["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| idx.contains(&p["stream_index"].as_i64().unwrap()))
        .map(|p| {
            let f = |k: &str| {
                p[k].as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            (
                f("pts_time"),
                f("dts_time"),
                p["flags"].as_str().unwrap_or("").contains('K'),
            )
        })
        .collect()
}

pub fn stream<'a>(probe: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream"))
}

/// Packets of one kind: (pts, dts, keyframe, size); times in seconds.
pub fn sized_packets(probe: &serde_json::Value, kind: &str) -> Vec<(f64, f64, bool, u64)> {
    let index = stream(probe, kind)["index"].as_i64().unwrap();
    probe["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["stream_index"].as_i64() == Some(index))
        .map(|p| {
            let f = |k: &str| {
                p[k].as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            (
                f("pts_time"),
                f("dts_time"),
                p["flags"].as_str().unwrap_or("").contains('K'),
                p["size"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Download a track's init + segments as listed and write them to one file.
pub fn download_track(ladder: &Ladder, channel: &str, track: &str, out: &Path) -> MediaPlaylist {
    let (s, text) = get_text(&ladder.url(&format!("/live/{channel}/{track}/index.m3u8")));
    assert_eq!(s, 200, "{track} playlist");
    let pl = parse_media_playlist(&text);
    assert!(!pl.map.is_empty(), "no EXT-X-MAP in\n{text}");
    let mut file = Vec::new();
    let (s, _, init) = get(&ladder.url(&format!("/live/{channel}/{track}/{}", pl.map[0])));
    assert_eq!(s, 200);
    file.extend_from_slice(&init);
    for (_, uri, _, _) in &pl.segments {
        let (s, _, body) = get(&ladder.url(&format!("/live/{channel}/{track}/{uri}")));
        assert_eq!(s, 200, "{uri}");
        file.extend_from_slice(&body);
    }
    std::fs::write(out, &file).unwrap();
    pl
}

pub fn tmpfile(dir: &tempdir::Dir, name: &str) -> PathBuf {
    dir.join(name)
}

/// What the `ladder` process holds, read from /proc/<pid>.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// Resident memory (VmRSS), KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

impl Ladder {
    /// Its resident memory and open descriptors now.
    pub fn resources(&self) -> Resources {
        let f = proc_figures(self.pid());
        Resources {
            rss_kib: f.rss_kib,
            fds: f.fds,
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A process's resources as /proc shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcFigures {
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open descriptors (entries of `/proc/<pid>/fd`).
    pub fds: usize,
    /// Threads (`Threads`).
    pub threads: u64,
}

/// [`ProcFigures`] of `pid`; panics if /proc cannot be read (the process died).
pub fn proc_figures(pid: u32) -> ProcFigures {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count();
    ProcFigures {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
}

/// A test CA and a certificate for "localhost" signed by it (rcgen), for
/// the TLS tests' own endpoints.
pub struct TestPki {
    /// The CA certificate, PEM (for `SSL_CERT_FILE`).
    pub ca_pem: String,
    /// The CA certificate, DER (for a rustls root store).
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    /// The "localhost" certificate.
    pub leaf: rustls_pki_types::CertificateDer<'static>,
    /// Its key.
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
}

/// A fresh [`TestPki`].
pub fn test_pki() -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Ladder test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        leaf: leaf.der().clone(),
        key: rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}
