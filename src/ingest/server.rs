//! The RTMP and RTMPS listeners: the only ingest file that touches sockets
//! (SPEC.md, "URLs": `rtmp://HOST:1935/live/<key>`, `rtmps://HOST:1936/live/<key>`).
//!
//! Each connection runs on its own task: for RTMPS the TLS handshake first,
//! then the RTMP handshake (both under one deadline), then the sans-IO
//! [`ServerSession`] fed from the stream, its output written back, its
//! events turned into a [`Publish`] session (admission, packaging, the
//! transcoding pipeline: `ingest::publish`). The same connection code
//! serves TCP and TLS: it is generic over the stream. Nothing here waits on
//! viewers: the packager writes the in-memory store and returns.
//!
//! Limits (named, with the attack each one stops):
//! - [`MAX_CONNECTIONS`]: open connections, RTMP and RTMPS together (one
//!   cap: both spend the same file descriptors), so a flood cannot exhaust
//!   them (over it, a connection is accepted and closed at once).
//! - the handshake deadline (`rtmp::handshake::HANDSHAKE_TIMEOUT`), from the
//!   accept: a peer that sends only C0, or 1535 bytes of C1, or never C2, or
//!   (RTMPS) never finishes its TLS handshake, is closed.
//! - [`PUBLISH_DEADLINE`]: a connection that has not begun publishing this long
//!   after its handshake is closed, however many bytes or small messages it
//!   trickles in (slow-loris: one byte a second, or endless pings).
//! - `idle_timeout` (config): a publisher that delivers no media message for that
//!   long is closed, whatever else it sends.
//! - [`CLOSE_DEADLINE`]-bounded close: a peer that stops reading cannot hold
//!   a closing connection.
//! - [`MAX_BYTES_BEFORE_PUBLISH`]: what a connection may send while it is not
//!   publishing, so that unauthenticated connections cannot each fill the
//!   chunk decoder's buffer.
//! - bytes buffered per connection, chunk streams, message size, chunk size:
//!   enforced by the chunk decoder (`rtmp::chunk`).
//! - publishers: the app's admission semaphore (`[ingest] max_publishers`).

use super::publish::{Publish, Stop};
use super::rtmp::handshake::{self, HandshakeProgress, ServerHandshake, RTMP_VERSION};
use super::rtmp::session::{ServerEvent, ServerSession, SessionConfig};
use crate::app::App;
use crate::control::config::Config;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Time from the end of the handshake to an accepted publish.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// Open RTMP and RTMPS connections at most, together (publishers are capped
/// separately).
pub const MAX_CONNECTIONS: usize = 1024;
/// Socket read buffer per connection.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes a connection may send while it is not publishing (before its
/// publish is accepted, or after it ended); past it, it is closed. Attack:
/// connections that never publish, each filling the chunk decoder's
/// per-connection buffer (`rtmp::chunk::MAX_BUFFERED_BYTES`, 16 MiB) with
/// half-sent messages: x [`MAX_CONNECTIONS`] that is 16 GiB before anyone is
/// authenticated; with this cap at most 128 MiB (the cap and one read
/// buffer each). A publisher sends connect, releaseStream, FCPublish,
/// createStream and publish before its media: a few KiB, even with every
/// name at `rtmp::session::MAX_NAME_LEN`.
pub const MAX_BYTES_BEFORE_PUBLISH: u64 = 64 * 1024;
/// The only application name publishers use: `rtmp://HOST/live/<key>`.
pub const APP_NAME: &str = "live";
/// Longest wait after an accept error (file descriptors exhausted, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait to close a connection gracefully (for RTMPS, writing TLS's
/// close_notify). Attack: a peer that stops reading would otherwise keep the
/// closing connection, and its slot, forever; past it the socket is dropped.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Ingest limits from the configuration.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// A publisher without a media message this long is closed (`[ingest] idle_timeout`).
    pub idle_timeout: Duration,
    /// From the accept to the end of the RTMP handshake (TLS included).
    pub handshake_timeout: Duration,
    /// Open connections, RTMP and RTMPS together.
    pub max_connections: usize,
}

impl IngestLimits {
    /// The limits `config` sets, and the built-in ones.
    pub fn from_config(config: &Config) -> Self {
        IngestLimits {
            idle_timeout: Duration::from_secs_f64(config.ingest.idle_timeout.max(0.1)),
            handshake_timeout: handshake::HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// What a listener's connections carry RTMP over.
#[derive(Clone)]
pub enum Transport {
    /// RTMP over TCP.
    Plain,
    /// RTMPS: TLS over TCP (the acceptor holds the certificate, see
    /// `ingest::tls`), then RTMP. Shared so that a reload can put a renewed
    /// certificate in place for the connections that follow.
    Tls(Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>),
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Plain => "RTMP",
            Transport::Tls(_) => "RTMPS",
        }
    }
}

/// What the RTMP and RTMPS listeners share: the app, the limits and the one
/// connection cap. Clone it for each listener.
#[derive(Clone)]
pub struct Ingest {
    app: Arc<App>,
    limits: IngestLimits,
    /// Connection slots, shared by every listener.
    slots: Arc<Semaphore>,
}

impl Ingest {
    /// Listeners for `app` under `limits`.
    pub fn new(app: Arc<App>, limits: IngestLimits) -> Ingest {
        Ingest {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            app,
            limits,
        }
    }

    /// Accept connections on `listener` until shutdown, then wait for every
    /// connection to finish (each closes its channel's open segments); the
    /// caller bounds the wait.
    pub async fn serve(
        self,
        listener: TcpListener,
        transport: Transport,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let what = transport.name();
        let mut backoff = Duration::from_millis(10);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            // reap finished connections so the set stays as small as the live ones
            while tasks.try_join_next().is_some() {}
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|v| *v) => break,
            };
            let (socket, peer) = match accepted {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    warn!(error = %e, "{what} accept failed; backing off {:?}", backoff);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                warn!(%peer, limit = self.limits.max_connections, "{what} connection refused: connection limit reached");
                drop(socket);
                continue;
            };
            let _ = socket.set_nodelay(true);
            let app = self.app.clone();
            let limits = self.limits.clone();
            let shutdown = shutdown.clone();
            let transport = transport.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let deadline = Instant::now() + limits.handshake_timeout;
                // A panic outside the publish session's own boundary (which
                // names the channel) ends this connection alone, logged once.
                let served = crate::app::contain::catch_async(async move {
                    match transport {
                        Transport::Plain => {
                            Connection::new(socket, app, peer, limits)
                                .run(deadline, shutdown)
                                .await
                        }
                        Transport::Tls(acceptor) => {
                            let acceptor =
                                acceptor.read().unwrap_or_else(|e| e.into_inner()).clone();
                            if let Some(tls) = tls_accept(&acceptor, socket, peer, deadline).await {
                                Connection::new(tls, app, peer, limits)
                                    .run(deadline, shutdown)
                                    .await
                            }
                        }
                    }
                })
                .await;
                if let Err(panic) = served {
                    error!(%peer, "{what} connection task panicked: {panic}; connection closed");
                }
            });
        }
        drop(listener);
        while tasks.join_next().await.is_some() {}
    }
}

/// The TLS handshake of an RTMPS connection, by `deadline`. A failure is
/// logged with the peer and closes the connection; nothing else notices.
async fn tls_accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    // A plain RTMP publisher on this port opens with C0 (the RTMP version
    // byte); a TLS client with a handshake record (22). Tell the operator
    // which mistake it is rather than a TLS parse error.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, socket.peek(&mut first)).await {
        Err(_) => {
            debug!(%peer, "RTMPS connection closed: nothing sent before the handshake deadline");
            return None;
        }
        Ok(Ok(0)) | Ok(Err(_)) => {
            debug!(%peer, "RTMPS connection closed before the TLS handshake");
            return None;
        }
        Ok(Ok(_)) if first[0] == RTMP_VERSION => {
            info!(%peer, "RTMPS connection refused: the peer speaks plain RTMP (use rtmps:// on this port, rtmp:// on the RTMP port)");
            return None;
        }
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            info!(%peer, error = %e, "RTMPS connection closed: TLS handshake failed");
            None
        }
        Err(_) => {
            info!(%peer, "RTMPS connection closed: TLS handshake not completed in time");
            None
        }
    }
}

/// Why a connection ended, for the unpublish log line.
#[derive(Debug)]
enum End {
    PeerClosed,
    Unpublished,
    Idle,
    NoPublish,
    HandshakeTimeout,
    /// More than [`MAX_BYTES_BEFORE_PUBLISH`] sent while not publishing.
    TooMuchBeforePublish,
    Protocol(String),
    Io(std::io::Error),
    Shutdown,
    /// The publish session stopped: replaced, kicked by the admin API, or
    /// unsupported media.
    Stopped(Stop),
}

impl From<Stop> for End {
    fn from(stop: Stop) -> End {
        End::Stopped(stop)
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed => write!(f, "publisher closed the connection"),
            End::Unpublished => write!(f, "publisher stopped publishing"),
            End::Idle => write!(f, "no media from the publisher within the idle timeout"),
            End::NoPublish => write!(
                f,
                "no publish within {} s of connecting",
                PUBLISH_DEADLINE.as_secs()
            ),
            End::HandshakeTimeout => write!(f, "handshake not completed in time"),
            End::TooMuchBeforePublish => write!(
                f,
                "more than {} KiB sent without publishing",
                MAX_BYTES_BEFORE_PUBLISH / 1024
            ),
            End::Protocol(e) => write!(f, "protocol error: {e}"),
            End::Io(e) => write!(f, "connection error: {e}"),
            End::Shutdown => write!(f, "server shutting down"),
            End::Stopped(stop) => write!(f, "{stop}"),
        }
    }
}

/// A connection: the handshake, then the RTMP session over `S` (a TCP
/// stream, or TLS over one), its publish handed to a [`Publish`].
struct Connection<S> {
    socket: S,
    app: Arc<App>,
    peer: SocketAddr,
    limits: IngestLimits,
    /// The accepted publication: its message stream id and its session.
    live: Option<(u32, Publish)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection<S> {
    fn new(socket: S, app: Arc<App>, peer: SocketAddr, limits: IngestLimits) -> Self {
        Connection {
            socket,
            app,
            peer,
            limits,
            live: None,
        }
    }

    /// Serve the connection to its end. `handshake_deadline` bounds the
    /// RTMP handshake (and, for RTMPS, was already running during the TLS
    /// handshake).
    async fn run(mut self, handshake_deadline: Instant, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; READ_BUFFER];
        let leftover = match self.handshake(&mut buf, handshake_deadline).await {
            Ok(rest) => rest,
            Err(end) => {
                debug!(peer = %self.peer, reason = %end, "RTMP connection closed during handshake");
                return;
            }
        };
        let mut session = ServerSession::new(SessionConfig::default());
        let end = self
            .session(&mut buf, &mut session, leftover, &mut shutdown)
            .await;
        self.finish(end);
        let _ = tokio::time::timeout(CLOSE_DEADLINE, self.socket.shutdown()).await;
    }

    async fn handshake(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Bytes, End> {
        let mut hs = ServerHandshake::new(handshake_time_ms(), handshake_seed(self.peer));
        loop {
            let n = match tokio::time::timeout_at(deadline, self.socket.read(buf)).await {
                Err(_) => return Err(End::HandshakeTimeout),
                Ok(Err(e)) => return Err(End::Io(e)),
                Ok(Ok(0)) => return Err(End::PeerClosed),
                Ok(Ok(n)) => n,
            };
            let outcome = hs.feed(&buf[..n]).map_err(|e| {
                info!(peer = %self.peer, error = %e, "RTMP handshake refused");
                End::Protocol(e.to_string())
            })?;
            if let Some(out) = hs.take_output() {
                write_all(&mut self.socket, &out, deadline).await?;
            }
            if let HandshakeProgress::Done { remaining } = outcome {
                return Ok(remaining);
            }
        }
    }

    async fn session(
        &mut self,
        buf: &mut [u8],
        session: &mut ServerSession,
        leftover: Bytes,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        if !leftover.is_empty() {
            if let Err(e) = session.feed(&leftover) {
                return End::Protocol(e.to_string());
            }
            if let Err(end) = self.pump(session).await {
                return end;
            }
        }
        let connected = Instant::now();
        let mut last_media = connected;
        let mut media_seen = session.stats().media_forwarded;
        // bytes received since the connection last published (or began)
        let mut not_publishing = leftover.len() as u64;
        loop {
            let replaced = self.live.as_ref().map(|(_, p)| p.replaced());
            // Progress, not bytes, keeps a connection open: media while
            // publishing, and a publish within PUBLISH_DEADLINE before that.
            let deadline = if self.live.is_some() {
                last_media + self.limits.idle_timeout
            } else {
                // from the connection, or from the end of its last publish
                last_media.max(connected) + PUBLISH_DEADLINE
            };
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.socket.read(buf)) => r,
                stop = async { match replaced { Some(r) => r.await, None => std::future::pending().await } } => {
                    return End::Stopped(stop);
                }
                _ = shutdown.wait_for(|v| *v) => return End::Shutdown,
            };
            let n = match read {
                Err(_) if self.live.is_some() => return End::Idle,
                Err(_) => return End::NoPublish,
                Ok(Err(e)) => return End::Io(e),
                Ok(Ok(0)) => return End::PeerClosed,
                Ok(Ok(n)) => n,
            };
            let was_live = self.live.is_some();
            if let Err(e) = session.feed(&buf[..n]) {
                return End::Protocol(e.to_string());
            }
            if let Err(end) = self.pump(session).await {
                return end;
            }
            // counted after the read is handled: the read that carries the
            // publish (and media an encoder sends right behind it) is the
            // publisher's
            if self.live.is_some() {
                not_publishing = 0;
            } else {
                not_publishing += n as u64;
                if not_publishing > MAX_BYTES_BEFORE_PUBLISH {
                    return End::TooMuchBeforePublish;
                }
            }
            let media = session.stats().media_forwarded;
            if media != media_seen || was_live != self.live.is_some() {
                media_seen = media;
                last_media = Instant::now();
            }
        }
    }

    /// Write the session's output and act on its events.
    async fn pump(&mut self, session: &mut ServerSession) -> Result<(), End> {
        loop {
            let mut progressed = false;
            while let Some(event) = session.poll_event() {
                progressed = true;
                self.on_event(event, session).await?;
            }
            let deadline = Instant::now() + self.limits.idle_timeout;
            while let Some(out) = session.take_output() {
                progressed = true;
                write_all(&mut self.socket, &out, deadline).await?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// The live publish on `stream_id`, if that is the accepted one.
    fn live_on(&mut self, stream_id: u32) -> Option<&mut Publish> {
        self.live
            .as_mut()
            .filter(|(id, _)| *id == stream_id)
            .map(|(_, p)| p)
    }

    async fn on_event(
        &mut self,
        event: ServerEvent,
        session: &mut ServerSession,
    ) -> Result<(), End> {
        match event {
            ServerEvent::Connected { app, .. } => {
                debug!(peer = %self.peer, %app, "RTMP connect");
            }
            ServerEvent::PublishRequested {
                stream_id,
                app,
                stream_name,
                ..
            } => {
                self.on_publish(session, stream_id, &app, &stream_name)
                    .await
            }
            ServerEvent::Video {
                stream_id,
                timestamp,
                payload,
            } => {
                if let Some(publish) = self.live_on(stream_id) {
                    publish.video(timestamp, payload).map_err(End::from)?;
                }
            }
            ServerEvent::Audio {
                stream_id,
                timestamp,
                payload,
            } => {
                if let Some(publish) = self.live_on(stream_id) {
                    publish.audio(timestamp, payload).map_err(End::from)?;
                }
            }
            ServerEvent::Metadata { stream_id, values } => {
                if let Some(publish) = self.live_on(stream_id) {
                    publish.metadata(&values).map_err(End::from)?;
                }
            }
            ServerEvent::Unpublished { stream_id } => {
                if self.live_on(stream_id).is_some() {
                    self.finish(End::Unpublished);
                }
            }
            ServerEvent::PlayRefused { .. } => {
                info!(peer = %self.peer, "RTMP play refused: playback is over HTTP (LL-HLS, LL-DASH)");
            }
        }
        Ok(())
    }

    /// The connection-level checks (one publish per connection, the `live`
    /// application), then the publish session's admission (which asks the
    /// publish webhook first when one is configured: the connection waits
    /// for it, within the webhook's timeout).
    async fn on_publish(
        &mut self,
        session: &mut ServerSession,
        stream_id: u32,
        app: &str,
        stream_name: &str,
    ) {
        let peer = self.peer;
        if self.live.is_some() {
            session.reject_publish(
                stream_id,
                "NetStream.Publish.BadName",
                "already publishing on this connection",
            );
            return;
        }
        if app != APP_NAME {
            info!(%peer, app = %app, "publish refused: unknown application (publish to rtmp://HOST/live/<key>)");
            session.reject_publish(
                stream_id,
                "NetStream.Publish.BadName",
                "unknown application: use /live/<key>",
            );
            return;
        }
        // Query parameters after the key (`key?foo=bar`) are not part of it.
        let key = stream_name.split('?').next().unwrap_or("");
        match Publish::start_push(&self.app, app, key, peer).await {
            Ok(publish) => {
                session.accept_publish(stream_id);
                self.live = Some((stream_id, publish));
            }
            Err(refusal) => {
                let (code, description) = refusal.status();
                session.reject_publish(stream_id, code, &description);
            }
        }
    }

    /// End the live publish, if any (its one "publish ended" line), or log
    /// the connection's end.
    fn finish(&mut self, end: End) {
        match self.live.take() {
            Some((_, publish)) => publish.finish(end),
            None => match end {
                End::PeerClosed | End::Shutdown | End::Unpublished => {
                    debug!(peer = %self.peer, reason = %end, "RTMP connection closed")
                }
                _ => info!(peer = %self.peer, reason = %end, "RTMP connection closed"),
            },
        }
    }
}

/// S1's time field: milliseconds, wrapping (RTMP §5.2.3 leaves its epoch to us).
fn handshake_time_ms() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u32)
        .unwrap_or(0)
}

/// Seed for S1's random bytes: not a secret, only needs to differ per connection.
fn handshake_seed(peer: SocketAddr) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    peer.hash(&mut h);
    handshake_time_ms().hash(&mut h);
    h.finish()
}

async fn write_all<S: AsyncWrite + Unpin>(
    socket: &mut S,
    data: &[u8],
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    match tokio::time::timeout_at(deadline, socket.write_all(data)).await {
        Err(_) => Err(End::Idle),
        Ok(Err(e)) => Err(End::Io(e)),
        Ok(Ok(())) => Ok(()),
    }
}
