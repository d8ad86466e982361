//! Pull ingest: a channel with `pull = "rtmp(s)://host/app/stream"` connects to
//! that server as a client, plays the stream, and feeds what it receives through
//! the same publish session as a pushed stream ([`Publish`]).
//!
//! One task per pull channel, for the life of the server:
//!
//! - connect and play (`ingest::client`, TCP or TLS, every step under a
//!   deadline); on failure wait ([`crate::restream::backoff`]: exponential with
//!   jitter, reset after a connection that stayed up) and try again, forever;
//! - the publish session starts at the first media message, not at the
//!   connection (a remote stream that is not live yet holds no session), and
//!   ends when the remote publisher stops (`Play.UnpublishNotify`), the server
//!   ends the playback or closes, or nothing arrives for the read deadline.
//!   Media after an unpublish notice starts a new session on the same
//!   connection. Each new session is a new packager session: the playlists
//!   continue with a discontinuity;
//! - a session refused (a pushed publisher already holds the channel under
//!   `duplicate_publisher = "refuse"`) is retried like a failed connection;
//! - a connection on which nothing is live (nginx-rtmp answers Play.Start
//!   for a stream nobody publishes, and then sends nothing) is made again
//!   each time the read deadline passes in silence, quietly: that checks the
//!   server is still there, and an idle source costs no log line.
//!
//! Logs name the channel and the URL redacted (the stream name is a key):
//! one line per connection made or lost, one per change of failure while the
//! source cannot be reached (repeats at debug level); the quiet reconnections
//! of an idle source at debug level.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::client::{self, ClientError, ConnectOptions, ErrorKind, RtmpClientConnection};
use super::publish::{Peer, Publish, Target};
use super::rtmp::client::{ClientEvent, ClientMode};
use super::rtmp::url::RtmpUrl;
use crate::app::App;
use crate::restream::backoff::{jitter_seed, Backoff};

/// Why a connection to the source ended.
enum Ended {
    /// The server shut down (the session was finished with that reason).
    Shutdown,
    /// The connection ended; try again.
    Lost(String),
    /// Nothing was live on the connection and the server said nothing for
    /// the read deadline: connect again (quietly).
    Idle,
}

/// Pull `url` into `channel` until `shutdown`.
pub async fn run(app: Arc<App>, channel: String, url: String, shutdown: watch::Receiver<bool>) {
    run_with(app, channel, url, ConnectOptions::default(), shutdown).await
}

/// [`run`] with the client's deadlines and TLS trust given.
pub async fn run_with(
    app: Arc<App>,
    channel: String,
    url: String,
    options: ConnectOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let parsed = match RtmpUrl::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            // config validation checks the scheme and host; anything else here
            warn!(%channel, "pull disabled: {e}");
            return;
        }
    };
    let source = parsed.redacted();
    let mut backoff = Backoff::new();
    let mut random = jitter_seed();
    let mut logged: Option<String> = None;
    // the last connection ended idle: the next one is not news
    let mut idle = false;
    loop {
        let connected = tokio::select! {
            r = client::connect(&parsed, ClientMode::Play, &options) => r,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        match connected {
            Err(e) => {
                idle = false;
                let text = e.to_string();
                if logged.as_deref() != Some(text.as_str()) {
                    warn!(%channel, %source, error = %text, "pull cannot connect; retrying with backoff");
                } else {
                    debug!(%channel, %source, error = %text, "pull cannot connect");
                }
                logged = Some(text);
            }
            Ok(conn) => {
                if idle {
                    debug!(%channel, %source, peer = %conn.peer_addr(), "pull connected again");
                } else {
                    info!(%channel, %source, peer = %conn.peer_addr(), "pull connected");
                }
                logged = None;
                let up = Instant::now();
                let ended = play(&app, &channel, &source, conn, &mut shutdown).await;
                backoff.connection_ended(up.elapsed());
                idle = matches!(ended, Ended::Idle);
                match ended {
                    Ended::Shutdown => return,
                    Ended::Lost(why) => {
                        warn!(%channel, %source, reason = %why, "pull connection ended; reconnecting")
                    }
                    Ended::Idle => {
                        debug!(%channel, %source, "pull: nothing live and the server silent; connecting again")
                    }
                }
            }
        }
        random = random
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = backoff.next_delay(random >> 11);
        debug!(%channel, %source, "pull: next attempt in {delay:?}");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

/// Play one connection: media into publish sessions until it ends.
async fn play(
    app: &Arc<App>,
    channel: &str,
    source: &str,
    mut conn: RtmpClientConnection,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let mut publish: Option<Publish> = None;
    // a refused session is not retried on every message of this connection
    let mut refused_at: Option<Instant> = None;
    let ended = loop {
        let replaced = publish.as_ref().map(Publish::replaced);
        let event = tokio::select! {
            e = conn.next_event() => e,
            _ = shutdown.wait_for(|v| *v) => break Ended::Shutdown,
            stop = async { match replaced { Some(r) => r.await, None => std::future::pending().await } } => {
                // replaced, or kicked by the admin API: the next media
                // message starts a new session
                if let Some(p) = publish.take() {
                    p.finish(stop);
                }
                continue;
            }
        };
        let event = match event {
            Ok(Some(e)) => e,
            Ok(None) => break Ended::Lost("the server closed the connection".into()),
            // silence with nothing live is how an idle source looks
            Err(e) if e.kind() == ErrorKind::Timeout && publish.is_none() => break Ended::Idle,
            Err(e) => break Ended::Lost(describe(&e)),
        };
        let is_media = matches!(
            event,
            ClientEvent::Video { .. } | ClientEvent::Audio { .. } | ClientEvent::Metadata { .. }
        );
        if is_media && publish.is_none() {
            if refused_at.is_some_and(|t| t.elapsed() < REFUSED_RETRY) {
                continue;
            }
            match Publish::start(app, Target::Channel(channel), Peer::Pull(source.to_owned())) {
                Ok(p) => {
                    refused_at = None;
                    publish = Some(p);
                }
                // logged by Publish::start
                Err(_) => {
                    refused_at = Some(Instant::now());
                    continue;
                }
            }
        }
        let result = match (&mut publish, event) {
            (Some(p), ClientEvent::Video { timestamp, payload }) => p.video(timestamp, payload),
            (Some(p), ClientEvent::Audio { timestamp, payload }) => p.audio(timestamp, payload),
            (Some(p), ClientEvent::Metadata { values, .. }) => p.metadata(&values),
            (_, ClientEvent::Unpublished(status)) => {
                if let Some(p) = publish.take() {
                    p.finish(format!("the source's publisher stopped ({})", status.code));
                }
                continue;
            }
            (_, ClientEvent::Stopped(status)) => {
                break Ended::Lost(format!("the server stopped the playback ({})", status.code));
            }
            _ => continue,
        };
        if let Err(stop) = result {
            if let Some(p) = publish.take() {
                p.finish(&stop);
            }
            break Ended::Lost(stop.to_string());
        }
    };
    match (&ended, publish.take()) {
        (Ended::Shutdown, Some(p)) => p.finish("server shutting down"),
        (Ended::Lost(why), Some(p)) => p.finish(format!("pull connection ended: {why}")),
        (Ended::Idle, Some(p)) => p.finish("pull connection ended"),
        (_, None) => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
    ended
}

/// How long after a refused session the same connection tries again.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

fn describe(e: &ClientError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Config;
    use crate::ingest::client::Timeouts;
    use crate::ingest::rtmp::amf0::{object, Amf0Value};
    use crate::ingest::rtmp::chunk::{msg_type, ChunkDecoder, ChunkEncoder, RtmpMessage};
    use crate::ingest::rtmp::handshake::{HandshakeProgress, ServerHandshake};
    use crate::media::RtmpTimestamp;
    use crate::pipeline::admission::Admission as LadderAdmission;
    use bytes::BytesMut;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const KEY: &str = "SECRET-pull-key";

    fn amf(csid: u32, stream_id: u32, values: &[Amf0Value]) -> RtmpMessage {
        let mut p = BytesMut::new();
        Amf0Value::encode_all(values, &mut p).unwrap();
        RtmpMessage {
            csid,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::COMMAND_AMF0,
            stream_id,
            payload: p.freeze(),
        }
    }

    /// An RTMP server with nothing live, as nginx-rtmp is for a stream
    /// nobody publishes: it answers connect, createStream and play
    /// (Play.Start), then says nothing. Counts connections.
    async fn idle_source() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("rtmp://{}/live/{KEY}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut hs = ServerHandshake::new(0, 5);
                    let mut rest = loop {
                        let Ok(n @ 1..) = sock.read(&mut buf).await else {
                            return;
                        };
                        let progress = hs.feed(&buf[..n]).unwrap();
                        if let Some(out) = hs.take_output() {
                            sock.write_all(&out).await.unwrap();
                        }
                        if let HandshakeProgress::Done { remaining } = progress {
                            break remaining.to_vec();
                        }
                    };
                    let (mut dec, mut enc) = (ChunkDecoder::new(), ChunkEncoder::new());
                    loop {
                        dec.feed(&rest).unwrap();
                        while let Some(m) = dec.next_message() {
                            if m.type_id != msg_type::COMMAND_AMF0 {
                                continue;
                            }
                            let v = Amf0Value::decode_all(&m.payload).unwrap();
                            let s = |x: &str| Amf0Value::String(x.into());
                            let txn = v[1].clone();
                            let reply = match v[0].as_str().unwrap_or_default() {
                                "connect" => amf(
                                    3,
                                    0,
                                    &[s("_result"), txn, Amf0Value::Null, Amf0Value::Null],
                                ),
                                "createStream" => amf(
                                    3,
                                    0,
                                    &[s("_result"), txn, Amf0Value::Null, Amf0Value::Number(1.0)],
                                ),
                                "play" => amf(
                                    5,
                                    1,
                                    &[
                                        s("onStatus"),
                                        Amf0Value::Number(0.0),
                                        Amf0Value::Null,
                                        object([
                                            ("level", s("status")),
                                            ("code", s("NetStream.Play.Start")),
                                            ("description", s("Start live")),
                                        ]),
                                    ],
                                ),
                                _ => continue,
                            };
                            let mut out = BytesMut::new();
                            enc.encode(&reply, &mut out).unwrap();
                            sock.write_all(&out).await.unwrap();
                        }
                        let Ok(n @ 1..) = sock.read(&mut buf).await else {
                            return;
                        };
                        rest = buf[..n].to_vec();
                    }
                });
            }
        });
        (url, connections)
    }

    /// What the pull task logs, captured.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A source with nothing live and a silent server: the pull connects
    /// again each time the read deadline passes, and logs one line in all
    /// (the first connection), not a warning per deadline.
    #[tokio::test]
    async fn an_idle_source_is_reconnected_quietly() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let _logs = tracing::subscriber::set_default(subscriber);
        let config = "[[channels]]\nname = \"feed\"\nkey = \"k\"\n[ladders.default]\nbackend = \"cpu\"\nrenditions = [ { name = \"source\", passthrough = true } ]\n";
        let app = App::new(
            Config::parse(config, "test.toml").unwrap(),
            LadderAdmission::new(Vec::new()),
        );
        let (url, connections) = idle_source().await;
        let options = ConnectOptions {
            timeouts: Timeouts {
                read: Duration::from_millis(200),
                ..Timeouts::default()
            },
            ..ConnectOptions::default()
        };
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run_with(app.clone(), "feed".into(), url, options, shutdown));
        // until the third connection got as far as its log line (its
        // accept alone is not enough: under load the stop could win)
        let t = Instant::now();
        let again = || {
            String::from_utf8_lossy(&capture.0.lock().unwrap())
                .matches("pull connected again")
                .count()
        };
        while connections.load(Ordering::SeqCst) < 3 || again() < 2 {
            assert!(t.elapsed() < Duration::from_secs(20), "no reconnection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines = |level: &str, what: &str| {
            log.lines()
                .filter(|l| l.contains(level) && l.contains(what))
                .count()
        };
        assert_eq!(lines(" INFO ", "pull connected"), 1, "{log}");
        assert_eq!(lines(" WARN ", ""), 0, "{log}");
        assert!(lines("DEBUG", "pull connected again") >= 2, "{log}");
        assert!(!log.contains(KEY), "{log}");
        assert!(!log.contains("publish started"), "{log}");
    }
}
