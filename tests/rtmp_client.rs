//! The RTMP client (`ladder::ingest::client`) against real peers:
//!
//! - nginx with the RTMP module, with ffprobe playing what our client
//!   publishes, and ffmpeg publishing what our client plays;
//! - nginx refusing (an unknown application, a stream that does not exist, a
//!   name already published);
//! - RTMPS: a tokio-rustls server with an rcgen certificate in front of
//!   Ladder's own `ServerSession`.

mod common;

use bytes::Bytes;
use common::nginx::Nginx;
use common::tempdir::Dir;
use common::{test_pki, TestPki};
use ladder::ingest::client::{connect, ClientError, ConnectOptions, ErrorKind, TlsOptions};
use ladder::ingest::rtmp::amf0::Amf0Value;
use ladder::ingest::rtmp::client::{status, ClientEvent, ClientMode, Stage};
use ladder::ingest::rtmp::handshake::{HandshakeProgress, ServerHandshake};
use ladder::ingest::rtmp::session::{ServerEvent, ServerSession, SessionConfig};
use ladder::ingest::rtmp::RtmpUrl;
use ladder::media::RtmpTimestamp;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One FLV tag: type (8 audio, 9 video, 18 script), timestamp, body.
#[derive(Debug, Clone)]
struct Tag {
    kind: u8,
    timestamp: u32,
    body: Bytes,
}

/// The tags of an FLV file (header, then tag + previous-tag-size pairs).
fn read_flv(path: &Path) -> Vec<Tag> {
    let data = Bytes::from(std::fs::read(path).unwrap());
    assert_eq!(&data[..3], b"FLV", "{} is not FLV", path.display());
    let header_len = u32::from_be_bytes(data[5..9].try_into().unwrap()) as usize;
    let mut pos = header_len + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = data.slice(pos + 11..pos + 11 + size);
        tags.push(Tag {
            kind: h[0] & 0x1f,
            timestamp,
            body,
        });
        pos += 11 + size + 4;
    }
    tags
}

/// A 4-second H.264 + AAC FLV made by ffmpeg, as the brief's command line.
fn make_clip(dir: &Dir) -> PathBuf {
    assert!(common::have("ffmpeg"), "ffmpeg is required");
    let out = dir.join("clip.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine", "-t", "4"])
        .args(["-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "flv"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    out
}

/// Waits for a child whose stdout and stderr are piped, draining both (a
/// large JSON on a full pipe would block it); killed after `timeout`.
fn run_to_end(mut child: Child, timeout: Duration) -> (Option<i32>, String, String) {
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let t = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, out.join().unwrap(), err.join().unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn url(s: &str) -> RtmpUrl {
    RtmpUrl::parse(s).unwrap()
}

/// Our client publishes an ffmpeg-made FLV to nginx, in real time; ffprobe
/// plays it from nginx and reports codecs, size, and every packet.
#[test]
fn publish_to_nginx_and_ffprobe_plays_it() {
    let dir = Dir::new("rtmp-client-publish");
    let tags = read_flv(&make_clip(&dir));
    let nginx = Nginx::start();
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-of",
            "json",
        ])
        .arg(nginx.url("live/clip"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffprobe");
    // Publish only once ffprobe is subscribed, so it sees the first frame.
    nginx.wait_log("play: name='clip'");

    let stats = runtime().block_on(async {
        let mut conn = connect(
            &url(&nginx.url("live/clip")),
            ClientMode::Publish,
            &ConnectOptions::default(),
        )
        .await
        .unwrap();
        let start = tokio::time::Instant::now();
        for tag in &tags {
            // Real time, as ffmpeg -re: nginx drops frames for a player
            // whose queue overflows, and a burst would overflow it.
            tokio::time::sleep_until(start + Duration::from_millis(tag.timestamp.into())).await;
            let ts = RtmpTimestamp(tag.timestamp);
            match tag.kind {
                9 => conn.send_video(ts, tag.body.clone()).await.unwrap(),
                8 => conn.send_audio(ts, tag.body.clone()).await.unwrap(),
                18 => {
                    let values = Amf0Value::decode_all(&tag.body).unwrap();
                    assert_eq!(values[0].as_str(), Some("onMetaData"));
                    conn.send_metadata(values[1].clone()).await.unwrap();
                }
                other => panic!("tag type {other}"),
            }
        }
        let stats = conn.stats();
        conn.close().await.unwrap();
        stats
    });

    let (code, stdout, stderr) = run_to_end(probe, Duration::from_secs(60));
    assert_eq!(code, Some(0), "ffprobe: {stderr}");
    let probe: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let video = common::stream(&probe, "video");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_i64(), video["height"].as_i64()),
        (Some(320), Some(240))
    );
    assert_eq!(common::stream(&probe, "audio")["codec_name"], "aac");

    // Every frame arrived, in order, with its size: FLV bodies less their
    // 5-byte (AVC) and 2-byte (AAC) headers; sequence headers are not packets.
    let sent_video: Vec<usize> = tags
        .iter()
        .filter(|t| t.kind == 9 && t.body[1] == 1)
        .map(|t| t.body.len() - 5)
        .collect();
    let sent_audio: Vec<usize> = tags
        .iter()
        .filter(|t| t.kind == 8 && t.body[1] == 1)
        .map(|t| t.body.len() - 2)
        .collect();
    let sizes = |kind: &str| -> Vec<usize> {
        let index = common::stream(&probe, kind)["index"].as_i64().unwrap();
        probe["packets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["stream_index"].as_i64() == Some(index))
            .map(|p| p["size"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(sizes("video"), sent_video);
    assert_eq!(sizes("audio"), sent_audio);
    assert_eq!(sent_video.len(), 100, "4 s at 25 fps");
    // 4 seconds of video: 100 frames at 25 fps, first at 0.
    let video_packets = common::packets(&probe, "video");
    let dts: Vec<f64> = video_packets.iter().map(|p| p.1).collect();
    assert_eq!(dts.first().copied(), Some(0.0));
    let duration = dts.last().unwrap() + 0.04;
    assert!((duration - 4.0).abs() < 1e-6, "video lasts {duration} s");
    assert!(dts.windows(2).all(|w| w[1] > w[0]), "DTS not increasing");
    assert_eq!(
        video_packets.iter().filter(|p| p.2).count(),
        4,
        "a keyframe each second (-g 25)"
    );
    // Sequence header, frames, end of sequence: every video tag went out.
    assert_eq!(
        stats.video_sent as usize,
        tags.iter().filter(|t| t.kind == 9).count()
    );
    assert!(stats.bytes_sent > tags.iter().map(|t| t.body.len() as u64).sum::<u64>());
}

/// ffmpeg publishes a test pattern to nginx; our client plays it.
#[test]
fn play_from_nginx() {
    let nginx = Nginx::start();
    let src = common::Source::baseline();
    let events = runtime().block_on(async {
        let mut conn = connect(
            &url(&nginx.url("live/feed")),
            ClientMode::Play,
            &ConnectOptions::default(),
        )
        .await
        .unwrap();
        // Subscribed (Play.Start): now the publisher may start.
        let publisher = common::publish(&src, &nginx.url("live/feed"), None);
        let mut events = Vec::new();
        loop {
            match conn.next_event().await.unwrap() {
                Some(ClientEvent::Unpublished(st)) => {
                    assert_eq!(st.code, status::PLAY_UNPUBLISH_NOTIFY);
                    break;
                }
                Some(ev) => events.push(ev),
                None => panic!("nginx closed the connection"),
            }
        }
        let (code, err) =
            tokio::task::spawn_blocking(move || common::wait(publisher, Duration::from_secs(60)))
                .await
                .unwrap();
        assert_eq!(code, Some(0), "ffmpeg: {err}");
        conn.close().await.unwrap();
        events
    });

    let video: Vec<(u32, Bytes)> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Video { timestamp, payload } => Some((timestamp.0, payload.clone())),
            _ => None,
        })
        .collect();
    let audio: Vec<(u32, Bytes)> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Audio { timestamp, payload } => Some((timestamp.0, payload.clone())),
            _ => None,
        })
        .collect();
    // The first video message is the AVC sequence header (keyframe, AVC,
    // packet type 0) holding an avcC (version 1).
    let (_, first) = &video[0];
    assert_eq!(&first[..2], &[0x17, 0x00], "first video: {first:02x?}");
    assert_eq!(first[5], 1, "avcC configurationVersion");
    // ffmpeg's FLV muxer ends with an AVC end-of-sequence message.
    let (_, last) = video.last().unwrap();
    assert_eq!(&last[..2], &[0x17, 0x02], "last video: {last:02x?}");
    let frames = &video[1..video.len() - 1];
    // 5 s at 30 fps, a keyframe every second.
    assert_eq!(frames.len(), 150);
    let keyframes = frames
        .iter()
        .filter(|(_, p)| p[0] == 0x17 && p[1] == 1)
        .count();
    assert_eq!(keyframes, 5);
    assert!(frames.iter().all(|(_, p)| p[1] == 1 && p[0] & 0x0f == 7));
    // Baseline, no B-frames: decode timestamps strictly increase.
    assert!(
        frames.windows(2).all(|w| w[1].0 > w[0].0),
        "{:?}",
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    // Audio: AAC sequence header, then AAC frames with rising timestamps.
    assert_eq!(&audio[0].1[..2], &[0xaf, 0x00]);
    assert!(audio.len() > 200, "{} audio messages", audio.len());
    assert!(audio[1..].iter().all(|(_, p)| p[..2] == [0xaf, 0x01]));
    assert!(audio[1..].windows(2).all(|w| w[1].0 > w[0].0));
    // Metadata with the picture size.
    let meta = events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Metadata { values, .. } => Some(values[1].clone()),
            _ => None,
        })
        .expect("onMetaData");
    assert_eq!(
        meta.get("width").and_then(Amf0Value::as_number),
        Some(320.0)
    );
    assert_eq!(
        meta.get("height").and_then(Amf0Value::as_number),
        Some(240.0)
    );
}

/// nginx refuses: an unknown application (it closes the connection), a stream
/// nobody publishes on an `idle_streams off` application (Play.StreamNotFound),
/// a name already published (Publish.BadName). Each is a typed refusal.
#[test]
fn nginx_refusals_are_typed() {
    let nginx = Nginx::start();
    runtime().block_on(async {
        let o = ConnectOptions::default();
        let refusal = |e: ClientError| {
            assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
            e.refusal().unwrap().clone()
        };

        let e = connect(&url(&nginx.url("nosuchapp/SECRET")), ClientMode::Play, &o)
            .await
            .unwrap_err();
        assert_eq!(refusal(e).stage, Stage::Connect);

        let e = connect(&url(&nginx.url("strict/SECRET")), ClientMode::Play, &o)
            .await
            .unwrap_err();
        let r = refusal(e);
        assert_eq!(
            (r.stage, r.code.as_str()),
            (Stage::Play, status::PLAY_STREAM_NOT_FOUND)
        );

        let first = connect(&url(&nginx.url("live/SECRET")), ClientMode::Publish, &o)
            .await
            .unwrap();
        let e = connect(&url(&nginx.url("live/SECRET")), ClientMode::Publish, &o)
            .await
            .unwrap_err();
        let r = refusal(e);
        assert_eq!(
            (r.stage, r.code.as_str()),
            (Stage::Publish, "NetStream.Publish.BadName")
        );
        first.close().await.unwrap();
    });
}

/// A TLS listener in front of Ladder's `ServerSession` that accepts one
/// publish and returns what the session reported, up to Unpublished.
async fn tls_ladder_server(
    leaf: rustls_pki_types::CertificateDer<'static>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> (
    u16,
    tokio::task::JoinHandle<Result<Vec<ServerEvent>, String>>,
) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            // A client that fails TLS (the tests without our CA) is skipped.
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            return serve_ladder(&mut tls).await;
        }
    });
    (port, task)
}

async fn serve_ladder(
    io: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> Result<Vec<ServerEvent>, String> {
    let mut buf = vec![0u8; 65536];
    let mut hs = ServerHandshake::new(0, 7);
    let mut session = ServerSession::new(SessionConfig::default());
    let mut events = Vec::new();
    let mut handshaking = true;
    loop {
        let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("client closed early; events: {events:?}"));
        }
        if handshaking {
            let progress = hs.feed(&buf[..n]).map_err(|e| e.to_string())?;
            if let Some(out) = hs.take_output() {
                io.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            match progress {
                HandshakeProgress::InProgress => continue,
                HandshakeProgress::Done { remaining } => {
                    handshaking = false;
                    session.feed(&remaining).map_err(|e| e.to_string())?;
                }
            }
        } else {
            session.feed(&buf[..n]).map_err(|e| e.to_string())?;
        }
        while let Some(ev) = session.poll_event() {
            if let ServerEvent::PublishRequested { stream_id, .. } = &ev {
                session.accept_publish(*stream_id);
            }
            let done = matches!(ev, ServerEvent::Unpublished { .. });
            events.push(ev);
            if done {
                return Ok(events);
            }
        }
        while let Some(out) = session.take_output() {
            io.write_all(&out).await.map_err(|e| e.to_string())?;
            io.flush().await.map_err(|e| e.to_string())?;
        }
    }
}

/// RTMPS to a TLS server whose certificate chains to a CA added as an extra
/// root: the handshake, connect and publish go through, and Ladder's server
/// session receives the media byte for byte. Without the CA, or under another
/// name, the TLS handshake fails with a TLS error.
#[test]
fn rtmps_publish_to_ladders_server_session() {
    let TestPki {
        ca_der: ca,
        leaf,
        key,
        ..
    } = test_pki();
    runtime().block_on(async {
        let (port, server) = tls_ladder_server(leaf, key).await;
        let options = ConnectOptions {
            tls: TlsOptions {
                extra_roots: vec![ca],
            },
            ..ConnectOptions::default()
        };

        // Not trusted without the CA; "127.0.0.1" is not the certificate's name.
        for (u, opts) in [
            (format!("rtmps://localhost:{port}/live/SECRET"), ConnectOptions::default()),
            (format!("rtmps://127.0.0.1:{port}/live/SECRET"), options.clone()),
        ] {
            let e = connect(&url(&u), ClientMode::Publish, &opts)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Tls, "{u}: {e}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }

        let u = url(&format!("rtmps://localhost:{port}/live/SECRET"));
        let mut conn = connect(&u, ClientMode::Publish, &options).await.unwrap();
        let meta = Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]);
        conn.send_metadata(meta.clone()).await.unwrap();
        let video = Bytes::from((0..50_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        conn.send_video(RtmpTimestamp(0), video.clone()).await.unwrap();
        conn.send_audio(RtmpTimestamp(0x0100_0000), Bytes::from_static(b"\xaf\x01\x21"))
            .await
            .unwrap();
        conn.close().await.unwrap();

        let events = server.await.unwrap().unwrap();
        assert!(
            matches!(&events[..2], [
                ServerEvent::Connected { app, tc_url: Some(tc) },
                ServerEvent::PublishRequested { stream_name, .. },
            ] if app == "live" && *tc == format!("rtmps://localhost:{port}/live") && stream_name == "SECRET"),
            "{events:?}"
        );
        assert_eq!(
            events[2..],
            [
                ServerEvent::Metadata {
                    stream_id: 1,
                    values: vec![Amf0Value::String("onMetaData".into()), meta],
                },
                ServerEvent::Video {
                    stream_id: 1,
                    timestamp: RtmpTimestamp(0),
                    payload: video,
                },
                ServerEvent::Audio {
                    stream_id: 1,
                    timestamp: RtmpTimestamp(0x0100_0000),
                    payload: Bytes::from_static(b"\xaf\x01\x21"),
                },
                ServerEvent::Unpublished { stream_id: 1 },
            ]
        );
    });
}
