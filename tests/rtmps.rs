//! RTMPS ingest (SPEC.md, "URLs": `rtmps://HOST:1936/live/<key>`) with real
//! peers: ffmpeg publishes over TLS to a certificate made here, ffprobe reads
//! what the origin serves; a plain RTMP publisher on the TLS port, garbage on
//! it, an RTMP and an RTMPS publisher live at once, shutdown; and the startup
//! errors a bad certificate or key gives (`ladder serve` exits 1 naming the
//! file).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PACKAGING: &str = "segment_seconds = 2.0\npart_seconds = 0.5\nwindow_segments = 10";

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as
/// PEM files in `dir`.
fn certificate(dir: &tempdir::Dir) -> (PathBuf, PathBuf) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// The `[server]` lines that turn RTMPS on, on an ephemeral port.
fn rtmps_lines(cert: &Path, key: &Path) -> String {
    format!(
        "rtmps_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// [`common::config`] with RTMPS on.
fn rtmps_config(open: bool, cert: &Path, key: &Path, extra: &str) -> String {
    config(open, PACKAGING, extra).replacen(
        "[server]\n",
        &format!("[server]\n{}", rtmps_lines(cert, key)),
        1,
    )
}

/// The RTMPS listener's address, from the "ladder started" line.
fn rtmps_addr(ladder: &Ladder) -> SocketAddr {
    // (the harness learns the other addresses just before it logs the line)
    assert!(ladder.wait_log("ladder started", Duration::from_secs(10)));
    let log = ladder.log();
    let line = log
        .lines()
        .find(|l| l.contains("ladder started"))
        .expect("no start line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("rtmps="))
        .unwrap_or_else(|| panic!("no rtmps= on {line}"))
        .parse()
        .unwrap_or_else(|e| panic!("rtmps= on {line}: {e}"))
}

/// ffmpeg publishing to an RTMPS URL verifies the server's certificate
/// against `ca` (GnuTLS in Debian's ffmpeg does not verify by default).
fn publish_verified(src: &Source, url: &str, ca: &Path) -> std::process::Child {
    let args = format!(
        "-hide_banner -loglevel error -re -f lavfi -i testsrc2=size={}:rate={}:duration={} \
         -f lavfi -i sine=frequency=440:sample_rate=48000:duration={} \
         -c:v libx264 -pix_fmt yuv420p {} -c:a aac -b:a 96k -ac 2 \
         -tls_verify 1 -ca_file {} -f flv {url}",
        src.size,
        src.rate,
        src.seconds,
        src.seconds,
        src.x264,
        ca.display()
    );
    Command::new("ffmpeg")
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// ffmpeg publishes over RTMPS, verifying Ladder's certificate (and refusing
/// it against another CA); the channel's
/// video and audio come out of the origin as ffprobe reads them, with every
/// frame sent; the key never appears in the log.
#[test]
fn ffmpeg_publishes_over_rtmps_and_the_origin_serves_the_channel() {
    let dir = tempdir::Dir::new("rtmps-tls");
    let (cert, key) = certificate(&dir);
    let extra = "[[channels]]\nname = \"secure\"\nkey = \"tls-s3cr3t-789\"\n";
    let ladder = Ladder::start(&rtmps_config(false, &cert, &key, extra));
    let rtmps = rtmps_addr(&ladder);
    assert_ne!(rtmps, ladder.rtmp, "RTMPS has its own port");
    let src = Source::baseline();
    // the publisher really checks the certificate: against another CA it
    // refuses to publish
    let other = tempdir::Dir::new("rtmps-other");
    let (other_ca, _) = certificate(&other);
    let mut short = src.clone();
    short.seconds = 1.0;
    let (code, _) = wait(
        publish_verified(
            &short,
            &format!("rtmps://{rtmps}/live/tls-s3cr3t-789"),
            &other_ca,
        ),
        Duration::from_secs(30),
    );
    assert_ne!(
        code,
        Some(0),
        "ffmpeg accepted a certificate it cannot verify"
    );
    assert!(
        !ladder.log().contains("publish started"),
        "{}",
        ladder.log()
    );
    let ff = publish_verified(&src, &format!("rtmps://{rtmps}/live/tls-s3cr3t-789"), &cert);
    let master = wait_200(
        &ladder.url("/live/secure/master.m3u8"),
        Duration::from_secs(20),
    );
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "ffmpeg over RTMPS failed: {err}\n{}",
        ladder.log()
    );
    assert!(
        ladder.wait_log("publish ended", Duration::from_secs(10)),
        "{}",
        ladder.log()
    );

    let video = dir.join("video.mp4");
    let audio = dir.join("audio.mp4");
    download_track(&ladder, "secure", "source", &video);
    download_track(&ladder, "secure", "audio", &audio);
    let got_v = ffprobe(&video);
    let got_a = ffprobe(&audio);
    let vs = stream(&got_v, "video");
    assert_eq!(vs["codec_name"], "h264");
    assert_eq!(vs["profile"], "Constrained Baseline");
    assert_eq!(vs["width"], 320);
    assert_eq!(vs["height"], 240);
    let as_ = stream(&got_a, "audio");
    assert_eq!(as_["codec_name"], "aac");
    assert_eq!(as_["sample_rate"], "48000");
    // every frame sent (5 s at 30 fps) was served, in decode order
    let frames = packets(&got_v, "video");
    let sent = (src.seconds * src.rate as f64) as i64;
    assert!(
        (frames.len() as i64 - sent).abs() <= 1,
        "sent {sent} frames, served {}",
        frames.len()
    );
    assert!(
        frames.windows(2).all(|w| w[1].1 > w[0].1),
        "DTS not monotonic"
    );

    let log = ladder.log();
    assert!(!log.contains("tls-s3cr3t-789"), "key in log:\n{log}");
    let started = log.lines().find(|l| l.contains("publish started")).unwrap();
    assert!(
        started.contains("channel=secure") && started.contains("peer=127.0.0.1:"),
        "{started}"
    );
    assert_eq!(log.matches("publish started").count(), 1, "{log}");
}

/// A plain `rtmp://` publisher on the RTMPS port is refused (its connection
/// closed, a log line saying why), and so is garbage; then an RTMP and an
/// RTMPS publisher are live at once on the same server, and SIGTERM ends
/// both sessions and the process cleanly.
#[test]
fn plain_rtmp_on_the_tls_port_is_refused_and_both_listeners_serve_at_once() {
    let dir = tempdir::Dir::new("rtmps-mixed");
    let (cert, key) = certificate(&dir);
    let ladder = Ladder::start(&rtmps_config(true, &cert, &key, ""));
    let rtmps = rtmps_addr(&ladder);

    let mut short = Source::baseline();
    short.seconds = 2.0;
    let (code, err) = wait(
        publish(&short, &format!("rtmp://{rtmps}/live/wrongport"), None),
        Duration::from_secs(30),
    );
    assert_ne!(
        code,
        Some(0),
        "plain RTMP was accepted on the RTMPS port: {err}"
    );
    assert!(
        ladder.wait_log("the peer speaks plain RTMP", Duration::from_secs(5)),
        "{}",
        ladder.log()
    );
    // bytes that are neither TLS nor RTMP: the TLS handshake fails, the
    // connection is closed by the server
    let mut s = TcpStream::connect(rtmps).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue, // a TLS alert
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    assert!(
        ladder.wait_log("TLS handshake failed", Duration::from_secs(5)),
        "{}",
        ladder.log()
    );
    assert!(!ladder.log().contains("publish started"));

    let mut long = Source::baseline();
    long.seconds = 60.0;
    let plain = publish(&long, &ladder.rtmp_url("plain"), None);
    let tls = publish(&long, &format!("rtmps://{rtmps}/live/secure"), None);
    wait_200(
        &ladder.url("/live/plain/master.m3u8"),
        Duration::from_secs(20),
    );
    wait_200(
        &ladder.url("/live/secure/master.m3u8"),
        Duration::from_secs(20),
    );
    // both have complete segments while neither publish has ended
    for channel in ["plain", "secure"] {
        let url = ladder.url(&format!("/live/{channel}/source/index.m3u8"));
        let t = std::time::Instant::now();
        loop {
            let (_, text) = get_text(&url);
            if text.starts_with("#EXTM3U") && !parse_media_playlist(&text).segments.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{channel}: no segment\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let log = ladder.log();
    assert_eq!(log.matches("publish started").count(), 2, "{log}");
    assert_eq!(log.matches("publish ended").count(), 0, "{log}");

    let (code, log) = ladder.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches("reason=server shutting down").count(),
        2,
        "{log}"
    );
    for ff in [plain, tls] {
        let _ = wait(ff, Duration::from_secs(10));
    }
}

/// `ladder serve` with an RTMPS certificate or key it cannot use: exit 1 and
/// a message naming the file and the fault.
#[test]
fn a_missing_certificate_or_an_unparsable_key_stops_serve_with_exit_1() {
    let dir = tempdir::Dir::new("rtmps-bad");
    let (cert, key) = certificate(&dir);
    let missing = dir.join("no-such-cert.pem");
    let not_a_key = dir.join("not-a-key.pem");
    std::fs::write(&not_a_key, "this is not a private key\n").unwrap();
    let cases = [
        (
            &missing,
            &key,
            format!(
                "cannot start RTMPS: cannot read TLS certificate {}: ",
                missing.display()
            ),
        ),
        (
            &cert,
            &not_a_key,
            format!(
                "cannot start RTMPS: TLS key {} holds no PEM private key",
                not_a_key.display()
            ),
        ),
    ];
    for (i, (cert, key, expected)) in cases.iter().enumerate() {
        let cfg = dir.join(&format!("bad{i}.toml"));
        std::fs::write(&cfg, rtmps_config(true, cert, key, "")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (code, stderr) = wait(child, Duration::from_secs(20));
        assert_eq!(code, Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("ladder: {expected}")),
            "expected `ladder: {expected}...`, got:\n{stderr}"
        );
        assert!(!stderr.contains("ladder started"), "{stderr}");
    }
}
