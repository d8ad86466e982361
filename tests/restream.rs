//! Restream (SPEC.md, "Data flow": restream --> YouTube, Facebook) with real
//! peers: ffmpeg publishes to Ladder, Ladder republishes to nginx-rtmp, nginx
//! records what it receives (`record all`) and ffprobe reads the recordings.
//!
//! - the source and a rung (`rendition = "360p"`) to two streams: codecs,
//!   sizes, duration, every source frame byte for byte with its timestamps,
//!   no gaps;
//! - RTMPS to a TLS endpoint whose certificate chains to a private CA, trusted
//!   through `SSL_CERT_FILE` (and refused without it);
//! - a destination killed (SIGKILL) and restarted mid-stream: Ladder
//!   reconnects, the other destination's recording has no gap, and the
//!   channel's own playlists keep advancing;
//! - no log line holds a stream key.

mod common;

use common::nginx::Nginx;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 1 s segments: the sources below have a keyframe every second.
const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 30";

/// The tests run real-time streams and one encodes a rung: one at a time, so
/// that they do not take each other's CPU (cargo runs a file's tests in
/// parallel).
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ladder's log filter: info, and debug for restream and the RTMP client (the
/// secrecy checks then cover the debug lines too).
const LOG_FILTER: &str = "info,ladder::restream=debug,ladder::ingest::client=debug";

/// A closed-mode config: channel `news` with publish key `key` and these
/// `restream` entries (TOML array items), on `renditions`.
fn channel_config(key: &str, restream: &str, renditions: &str) -> String {
    config_with_ladder(
        false,
        PACKAGING,
        renditions,
        &format!("[[channels]]\nname = \"news\"\nkey = \"{key}\"\nrestream = [ {restream} ]\n"),
    )
}

fn start_ladder(config: &str, env: &[(&str, Option<&str>)]) -> Ladder {
    let mut all = vec![("RUST_LOG", Some(LOG_FILTER))];
    all.extend_from_slice(env);
    Ladder::start_with_env(config, &all)
}

/// A light source: 320x240, 30 fps, a keyframe each second, AAC.
fn light(seconds: f64) -> Source {
    Source {
        size: "320x240",
        rate: 30,
        seconds,
        x264: "-preset ultrafast -profile:v baseline -g 30 -keyint_min 30 -sc_threshold 0",
        audio: true,
    }
}

/// The one recording of `name` in `nginx`, probed.
fn recording(nginx: &Nginx, name: &str) -> serde_json::Value {
    let files = nginx.recordings(name);
    assert_eq!(files.len(), 1, "recordings of {name}: {files:?}");
    ffprobe(&files[0])
}

fn size(probe: &serde_json::Value) -> (i64, i64) {
    let v = stream(probe, "video");
    (v["width"].as_i64().unwrap(), v["height"].as_i64().unwrap())
}

/// Video decode times step by at most 3 frame intervals (none missing in
/// between), and audio by at most 1.5 AAC frames: no gaps.
fn assert_no_gaps(what: &str, probe: &serde_json::Value, fps: f64, sample_rate: f64) {
    let video = sized_packets(probe, "video");
    let frame = 1.0 / fps;
    for w in video.windows(2) {
        let step = w[1].1 - w[0].1;
        assert!(
            step > 0.0 && step <= 3.0 * frame + 0.0015,
            "{what}: video dts {} -> {} ({step:.3} s)",
            w[0].1,
            w[1].1
        );
    }
    let audio = sized_packets(probe, "audio");
    let aac = 1024.0 / sample_rate;
    for w in audio.windows(2) {
        let step = w[1].1 - w[0].1;
        assert!(
            step > 0.0 && step <= 1.5 * aac,
            "{what}: audio dts {} -> {} ({step:.3} s)",
            w[0].1,
            w[1].1
        );
    }
}

/// The recording holds every video frame of the reference (what ffmpeg
/// sent), in order, byte counts and keyframe flags equal, timestamps equal
/// relative to the first frame; and the reference's audio from the first
/// video frame on (an AAC frame or two before it may be left out: a
/// destination starts at a keyframe).
fn assert_same_media(what: &str, sent: &serde_json::Value, got: &serde_json::Value) {
    let sv = sized_packets(sent, "video");
    let gv = sized_packets(got, "video");
    assert_eq!(gv.len(), sv.len(), "{what}: video frames recorded vs sent");
    let (s0, g0) = (sv[0].1, gv[0].1);
    for (i, (s, g)) in sv.iter().zip(&gv).enumerate() {
        assert_eq!(
            (s.2, s.3),
            (g.2, g.3),
            "{what}: frame {i} (keyframe, bytes)"
        );
        assert!(
            ((s.0 - s0) - (g.0 - g0)).abs() < 0.0015 && ((s.1 - s0) - (g.1 - g0)).abs() < 0.0015,
            "{what}: frame {i}: sent pts/dts {:.3}/{:.3}, recorded {:.3}/{:.3} (relative)",
            s.0 - s0,
            s.1 - s0,
            g.0 - g0,
            g.1 - g0
        );
    }
    let sa: Vec<(f64, u64)> = sized_packets(sent, "audio")
        .iter()
        .map(|p| (p.1 - s0, p.3))
        .collect();
    let ga: Vec<(f64, u64)> = sized_packets(got, "audio")
        .iter()
        .map(|p| (p.1 - g0, p.3))
        .collect();
    let skipped = sa.len().checked_sub(ga.len()).unwrap_or_else(|| {
        panic!(
            "{what}: {} audio frames recorded, {} sent",
            ga.len(),
            sa.len()
        )
    });
    assert!(
        skipped <= 2,
        "{what}: {skipped} of {} audio frames missing",
        sa.len()
    );
    for (i, (s, g)) in sa[skipped..].iter().zip(&ga).enumerate() {
        assert!(
            (s.0 - g.0).abs() < 0.0015 && s.1 == g.1,
            "{what}: audio frame {i}: sent {s:?}, recorded {g:?}"
        );
    }
}

/// Wait until `n` destinations logged "restream stopped", then until nginx
/// closed every connection (its recordings are complete).
fn wait_restream_done(ladder: &Ladder, n: usize, nginx: &[&Nginx]) {
    ladder.wait_log_count("restream stopped", n, Duration::from_secs(30));
    for x in nginx {
        x.wait_all_closed();
    }
}

/// ffmpeg publishes to Ladder; Ladder restreams the source to one nginx
/// stream and the 360p rung to another; what nginx recorded is what was
/// published.
#[test]
fn source_and_rung_to_nginx() {
    let _serial = one_at_a_time();
    const PUBLISH_KEY: &str = "pub-SECRET-a81f";
    const SOURCE_KEY: &str = "src-SECRET-77c2";
    const RUNG_KEY: &str = "rung-SECRET-5e0d";
    let nginx = Nginx::recording();
    let ladder = start_ladder(
        &channel_config(
            PUBLISH_KEY,
            &format!(
                "\"{}\", {{ url = \"{}\", rendition = \"360p\" }}",
                nginx.url(&format!("live/{SOURCE_KEY}")),
                nginx.url(&format!("live/{RUNG_KEY}"))
            ),
            r#"{ name = "source", passthrough = true },
               { name = "360p", height = 360, bitrate_kbps = 600, preset = "veryfast" }"#,
        ),
        &[],
    );
    let src = Source {
        size: "640x480",
        rate: 30,
        seconds: 6.0,
        x264: "-preset veryfast -profile:v high -bf 2 -g 30 -keyint_min 30 -sc_threshold 0",
        audio: true,
    };
    let dir = tempdir::Dir::new("restream");
    let reference = dir.join("sent.flv");
    let ff = publish(&src, &ladder.rtmp_url(PUBLISH_KEY), Some(&reference));
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffmpeg: {err}");
    ladder.wait_log_count("publish ended", 1, Duration::from_secs(15));
    wait_restream_done(&ladder, 2, &[&nginx]);

    let log = ladder.log();
    assert_eq!(log.matches("restream live").count(), 2, "{log}");
    assert!(!log.contains("restream connection lost"), "{log}");
    assert!(!log.contains("restream cannot connect"), "{log}");
    let port = nginx.port;
    for (rendition, _) in [("source", SOURCE_KEY), ("360p", RUNG_KEY)] {
        let live = ladder.log_lines(&["restream live", &format!("rendition=\"{rendition}\"")]);
        assert_eq!(live.len(), 1, "{log}");
        assert!(
            live[0].contains(&format!("destination=rtmp://127.0.0.1:{port}/live/<key>")),
            "{}",
            live[0]
        );
    }
    // no reconnections
    let stopped = ladder.log_lines(&["restream stopped"]);
    assert_eq!(stopped.len(), 2, "{log}");
    assert!(
        stopped.iter().all(|l| l.contains("reconnects=0")),
        "{stopped:?}"
    );

    let sent = ffprobe(&reference);
    let source = recording(&nginx, SOURCE_KEY);
    let rung = recording(&nginx, RUNG_KEY);
    for (what, p) in [("source", &source), ("360p", &rung)] {
        assert_eq!(stream(p, "video")["codec_name"], "h264", "{what}");
        assert_eq!(stream(p, "audio")["codec_name"], "aac", "{what}");
        assert_eq!(stream(p, "audio")["sample_rate"], "48000", "{what}");
        assert_eq!(stream(p, "audio")["channels"], 2, "{what}");
        assert_no_gaps(what, p, 30.0, 48000.0);
    }
    assert_eq!(size(&source), (640, 480));
    assert_eq!(stream(&source, "video")["profile"], "High");
    assert_eq!(size(&rung), (480, 360), "360p keeps the 4:3 aspect");
    // the source: every frame as published
    assert_same_media("source", &sent, &source);
    // the rung: as long as what was published (its first picture is the
    // source's first, the encoder keeps every picture), within two frames
    // Presentation times: each recording is on its own clock (the
    // connection's first decode time is its zero, and the rung's encoder
    // reorders differently from the source's), so compare spans, and audio
    // against the first picture.
    type Packets = [(f64, f64, bool, u64)];
    let first_pts = |p: &Packets| p.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let last_pts = |p: &Packets| p.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
    let sv = sized_packets(&sent, "video");
    let rv = sized_packets(&rung, "video");
    let span = |p: &Packets| last_pts(p) - first_pts(p);
    assert!(
        (span(&rv) - span(&sv)).abs() <= 2.0 / 30.0 + 0.0015,
        "360p shows {:.3} s ({} frames), the source {:.3} s ({} frames)",
        span(&rv),
        rv.len(),
        span(&sv),
        sv.len()
    );
    assert!(rv[0].2, "the rung's recording starts with a keyframe");
    // audio: the source's, on both, to the end, in sync with the pictures;
    // the rung's starts within a few AAC frames of its first picture (its
    // queue drops the source's audio until the rung's first keyframe, which
    // the encoder delivers a little later)
    let gv = sized_packets(&source, "video");
    let sa = sized_packets(&source, "audio");
    let ra = sized_packets(&rung, "audio");
    let audio_end = |a: &Packets, v: &Packets| a.last().unwrap().1 - first_pts(v);
    assert!(
        (audio_end(&ra, &rv) - audio_end(&sa, &gv)).abs() < 0.0015,
        "audio ends {:.3} s after the first picture on 360p, {:.3} s on the source",
        audio_end(&ra, &rv),
        audio_end(&sa, &gv)
    );
    assert!(
        ra[0].1 - first_pts(&rv) < 0.25,
        "360p: audio starts {:.3} s after the first picture",
        ra[0].1 - first_pts(&rv)
    );

    assert_no_secrets(&ladder.log(), &[PUBLISH_KEY, SOURCE_KEY, RUNG_KEY]);
}

/// A TLS endpoint on a loopback port (tokio-rustls, in this process): each
/// connection's decrypted bytes go to nginx's plain RTMP port and back, as
/// an RTMPS front end (Facebook's, say) does. Stops when dropped.
struct TlsFront {
    port: u16,
    /// TLS handshakes completed, and failed.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(
        leaf: rustls_pki_types::CertificateDer<'static>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        upstream: u16,
    ) -> TlsFront {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (ok, bad) = (accepted.clone(), failed.clone());
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (ok, bad) = (ok.clone(), bad.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(_) => {
                            bad.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            port,
            accepted,
            failed,
            _runtime: runtime,
        }
    }
}

/// Restream over RTMPS to a TLS endpoint whose certificate chains to a
/// private CA: trusted once `SSL_CERT_FILE` names the CA (rustls-native-certs
/// reads it in place of the system's store), refused without it.
#[test]
fn rtmps_destination_trusted_through_ssl_cert_file() {
    let _serial = one_at_a_time();
    const PUBLISH_KEY: &str = "pub-SECRET-3b9a";
    const TLS_KEY: &str = "tls-SECRET-c4d1";
    let nginx = Nginx::recording();
    let TestPki {
        ca_pem, leaf, key, ..
    } = test_pki();
    let front = TlsFront::start(leaf, key, nginx.port);
    let dir = tempdir::Dir::new("restream-tls");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let config = channel_config(
        PUBLISH_KEY,
        &format!("\"rtmps://localhost:{}/live/{TLS_KEY}\"", front.port),
        r#"{ name = "source", passthrough = true }"#,
    );
    let redacted = format!("destination=rtmps://localhost:{}/live/<key>", front.port);

    // without the CA: the certificate is not trusted
    {
        let ladder = start_ladder(&config, &[("SSL_CERT_FILE", None), ("SSL_CERT_DIR", None)]);
        let ff = publish(&light(2.0), &ladder.rtmp_url(PUBLISH_KEY), None);
        ladder.wait_log_count("restream cannot connect", 1, Duration::from_secs(20));
        let (code, err) = wait(ff, Duration::from_secs(60));
        assert_eq!(code, Some(0), "ffmpeg: {err}");
        ladder.wait_log_count("restream stopped", 1, Duration::from_secs(20));
        let failed = ladder.log_lines(&["restream cannot connect"]);
        assert!(
            failed[0].contains(&redacted) && failed[0].contains("TLS with localhost"),
            "{}",
            failed[0]
        );
        assert!(!ladder.log().contains("restream live"), "{}", ladder.log());
        assert!(front.failed.load(Ordering::SeqCst) >= 1);
        assert_eq!(front.accepted.load(Ordering::SeqCst), 0);
        assert!(nginx.recordings(TLS_KEY).is_empty());
        assert_no_secrets(&ladder.log(), &[PUBLISH_KEY, TLS_KEY]);
    }

    // with SSL_CERT_FILE naming it: live, and nginx records the stream
    let ladder = start_ladder(
        &config,
        &[("SSL_CERT_FILE", Some(ca_file.to_str().unwrap()))],
    );
    let reference = dir.join("sent.flv");
    let ff = publish(&light(5.0), &ladder.rtmp_url(PUBLISH_KEY), Some(&reference));
    let (code, err) = wait(ff, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffmpeg: {err}");
    ladder.wait_log_count("publish ended", 1, Duration::from_secs(15));
    wait_restream_done(&ladder, 1, &[&nginx]);
    let live = ladder.log_lines(&["restream live"]);
    assert_eq!(live.len(), 1, "{}", ladder.log());
    assert!(live[0].contains(&redacted), "{}", live[0]);
    assert!(
        !ladder.log().contains("restream cannot connect"),
        "{}",
        ladder.log()
    );
    assert_eq!(front.accepted.load(Ordering::SeqCst), 1);

    let got = recording(&nginx, TLS_KEY);
    assert_eq!(stream(&got, "video")["codec_name"], "h264");
    assert_eq!(stream(&got, "audio")["codec_name"], "aac");
    assert_eq!(size(&got), (320, 240));
    assert_no_gaps("rtmps", &got, 30.0, 48000.0);
    assert_same_media("rtmps", &ffprobe(&reference), &got);
    assert_no_secrets(&ladder.log(), &[PUBLISH_KEY, TLS_KEY]);
}

/// What a poller of the channel's media playlist saw: for each answer, the
/// status, whether the playlist had advanced past the previous answer, and
/// when it came.
#[derive(Debug, Clone)]
struct Poll {
    status: u16,
    advanced: bool,
    at: Instant,
    /// The publisher had already finished when the answer came.
    after_end: bool,
}

/// The last part a media playlist lists: (msn, part index).
fn last_part(p: &MediaPlaylist) -> (u64, usize) {
    let last = p.segments.last().map(|s| s.0);
    match (last, p.open_parts) {
        (Some(msn), 0) => (msn, usize::MAX),
        (Some(msn), n) => (msn + 1, n - 1),
        (None, n) => (p.media_sequence, n.saturating_sub(1)),
    }
}

/// Follow `url` (a media playlist) with blocking reloads, one part at a
/// time (`_HLS_msn`/`_HLS_part` of the part after the last listed): each
/// answer must list more than the previous one (a stall longer than the
/// origin's blocking limit, 3 target durations, is a 503). An answer that
/// does not advance ends the polling: it is the stream's end if `log` (the
/// ladder's) says "publish ended" soon after, a stall if not.
fn follow_playlist(
    url: String,
    end: Arc<AtomicBool>,
    log: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<Vec<Poll>> {
    std::thread::spawn(move || {
        let mut polls = Vec::new();
        let mut at = last_part(&parse_media_playlist(&wait_200(
            &url,
            Duration::from_secs(15),
        )));
        while !end.load(Ordering::SeqCst) {
            let (msn, part) = match at {
                (msn, usize::MAX) => (msn + 1, 0),
                (msn, part) => (msn, part + 1),
            };
            let (status, text) = get_text(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}"));
            let answered = Instant::now();
            let mut advanced = false;
            if status == 200 {
                // (msn, usize::MAX), a whole segment, comes after its parts
                let now = last_part(&parse_media_playlist(&text));
                advanced = now > at;
                at = now;
            }
            let mut after_end = end.load(Ordering::SeqCst);
            if !advanced && !after_end {
                // the end of the stream answers the parked request too
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(3) && !after_end {
                    after_end = log.lock().unwrap().contains("publish ended");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            polls.push(Poll {
                status,
                advanced,
                at: answered,
                after_end,
            });
            if !advanced {
                break;
            }
        }
        polls
    })
}

/// Two nginx destinations; one is killed (SIGKILL) mid-stream and started
/// again a few seconds later: Ladder reconnects to it, the other's recording
/// has every frame, and the channel's playlists advance the whole time.
#[test]
fn destination_killed_and_restarted_mid_stream() {
    let _serial = one_at_a_time();
    const PUBLISH_KEY: &str = "pub-SECRET-90e4";
    const STEADY_KEY: &str = "steady-SECRET-1a2b";
    const CRASHY_KEY: &str = "crashy-SECRET-3c4d";
    let steady = Nginx::recording();
    let mut crashy = Nginx::recording();
    let ladder = start_ladder(
        &channel_config(
            PUBLISH_KEY,
            &format!(
                "\"{}\", \"{}\"",
                steady.url(&format!("live/{STEADY_KEY}")),
                crashy.url(&format!("live/{CRASHY_KEY}"))
            ),
            r#"{ name = "source", passthrough = true }"#,
        ),
        &[],
    );
    let steady_dest = format!("destination=rtmp://127.0.0.1:{}/live/<key>", steady.port);
    let crashy_dest = format!("destination=rtmp://127.0.0.1:{}/live/<key>", crashy.port);
    let dir = tempdir::Dir::new("restream-kill");
    let reference = dir.join("sent.flv");
    let ff = publish(
        &light(12.0),
        &ladder.rtmp_url(PUBLISH_KEY),
        Some(&reference),
    );
    let end = Arc::new(AtomicBool::new(false));
    let poller = follow_playlist(
        ladder.url("/live/news/source/index.m3u8"),
        end.clone(),
        ladder.log.clone(),
    );

    ladder.wait_log_count("restream live", 2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    crashy.kill();
    let killed = Instant::now();
    ladder.wait_log_count("restream connection lost", 1, Duration::from_secs(15));
    // down long enough for two failed attempts (the backoff's first two
    // waits are at most 1 s and 2 s)
    std::thread::sleep(Duration::from_millis(3500));
    crashy.restart();
    let restarted = Instant::now();
    ladder.wait_log_count("restream live", 3, Duration::from_secs(20));

    let (code, err) = wait(ff, Duration::from_secs(60));
    end.store(true, Ordering::SeqCst);
    assert_eq!(code, Some(0), "ffmpeg: {err}");
    let polls = poller.join().unwrap();
    ladder.wait_log_count("publish ended", 1, Duration::from_secs(15));
    wait_restream_done(&ladder, 2, &[&steady, &crashy]);

    // the log: the lost connection, the retries (one line per change of
    // failure), live again; the other destination untouched
    let log = ladder.log();
    let lost = ladder.log_lines(&["restream connection lost"]);
    assert_eq!(lost.len(), 1, "{log}");
    assert!(lost[0].contains(&crashy_dest), "{}", lost[0]);
    assert_eq!(
        ladder.log_lines(&["restream live", &crashy_dest]).len(),
        2,
        "{log}"
    );
    assert_eq!(
        ladder.log_lines(&["restream live", &steady_dest]).len(),
        1,
        "{log}"
    );
    let cannot = ladder.log_lines(&["WARN", "restream cannot connect"]);
    assert_eq!(cannot.len(), 1, "one warning per change of failure: {log}");
    assert!(cannot[0].contains(&crashy_dest), "{}", cannot[0]);
    let again = ladder.log_lines(&["DEBUG", "restream cannot connect", &crashy_dest]);
    assert!(
        !again.is_empty(),
        "the repeated failure at debug level: {log}"
    );
    let stopped = ladder.log_lines(&["restream stopped", &steady_dest]);
    assert!(stopped[0].contains("reconnects=0"), "{}", stopped[0]);
    let stopped = ladder.log_lines(&["restream stopped", &crashy_dest]);
    assert!(!stopped[0].contains("reconnects=0"), "{}", stopped[0]);

    // the channel's playlists advanced at every answer while the stream was
    // live, before, during and after the outage
    let live: Vec<&Poll> = polls.iter().filter(|p| !p.after_end).collect();
    for p in &live {
        assert!(
            p.status == 200 && p.advanced,
            "playlist stalled: {p:?} in {polls:?}"
        );
    }
    assert!(
        live.iter().any(|p| p.at > killed && p.at < restarted),
        "no playlist answer during the outage: {polls:?}"
    );
    assert!(live.len() >= 12, "{} answers: {polls:?}", live.len());

    // the steady destination: every frame
    let sent = ffprobe(&reference);
    let got = recording(&steady, STEADY_KEY);
    assert_no_gaps("steady", &got, 30.0, 48000.0);
    assert_same_media("steady", &sent, &got);

    // the restarted one: a new recording, from a keyframe to the end, with
    // nothing missing after it
    let files = crashy.recordings(CRASHY_KEY);
    assert_eq!(files.len(), 2, "{files:?}");
    let after = ffprobe(&files[1]);
    assert_eq!(stream(&after, "video")["codec_name"], "h264");
    assert_eq!(stream(&after, "audio")["codec_name"], "aac");
    assert_no_gaps("after the restart", &after, 30.0, 48000.0);
    let av = sized_packets(&after, "video");
    assert!(av[0].2, "the reconnection starts with a keyframe");
    let sv = sized_packets(&sent, "video");
    assert!(av.len() >= 30, "{} frames after the restart", av.len());
    let tail: Vec<u64> = sv[sv.len() - av.len()..].iter().map(|p| p.3).collect();
    let resumed: Vec<u64> = av.iter().map(|p| p.3).collect();
    assert_eq!(
        resumed, tail,
        "the frames after the reconnection are the source's last ones"
    );

    assert_no_secrets(&ladder.log(), &[PUBLISH_KEY, STEADY_KEY, CRASHY_KEY]);
}
