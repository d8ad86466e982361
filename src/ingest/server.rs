//! The RTMP listener: the only ingest file that touches sockets.
//!
//! Each connection runs on its own task: handshake (with a deadline), then the
//! sans-IO [`ServerSession`] fed from the socket, its output written back, its
//! events turned into admission decisions and media for the channel's packager.
//! Nothing here waits on viewers: the packager writes the in-memory store and
//! returns.
//!
//! Limits (named, with the attack each one stops):
//! - [`MAX_CONNECTIONS`]: open connections, so a flood cannot exhaust file
//!   descriptors (over it, a connection is accepted and closed at once).
//! - the handshake deadline (`rtmp::handshake::HANDSHAKE_TIMEOUT`): a peer that
//!   sends only C0, or 1535 bytes of C1, or never C2, is closed.
//! - [`PUBLISH_DEADLINE`]: a connection that has not begun publishing this long
//!   after its handshake is closed, however many bytes or small messages it
//!   trickles in (slow-loris: one byte a second, or endless pings).
//! - `idle_timeout` (config): a publisher that delivers no media message for that
//!   long is closed, whatever else it sends.
//! - bytes buffered per connection, chunk streams, message size, chunk size:
//!   enforced by the chunk decoder (`rtmp::chunk`).
//! - publishers: the app's admission semaphore (`[ingest] max_publishers`).

use super::rtmp::handshake::{self, HandshakeProgress, ServerHandshake};
use super::rtmp::session::{ServerEvent, ServerSession, SessionConfig};
use crate::app::ChannelRuntime;
use crate::app::{Admission, App};
use crate::control::config::Config;
use crate::media::flv::Demuxer;
use crate::media::MediaEvent;
use crate::packaging::packager::{PackagerNotice, Pushed};
use crate::pipeline::admission::Grant;
use crate::pipeline::graph::ChannelPipeline;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error, info, warn};

/// Time from the end of the handshake to an accepted publish.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// Open RTMP connections at most (publishers are capped separately).
pub const MAX_CONNECTIONS: usize = 1024;
/// Socket read buffer per connection.
const READ_BUFFER: usize = 64 * 1024;
/// The only application name publishers use: `rtmp://HOST/live/<key>`.
pub const APP_NAME: &str = "live";
/// Longest wait after an accept error (file descriptors exhausted, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(2);
/// Media warnings (malformed frames, timestamp jumps) logged per session, at most.
const MAX_MEDIA_WARNINGS: u32 = 20;

/// Ingest limits from the configuration.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

impl IngestLimits {
    pub fn from_config(config: &Config) -> Self {
        IngestLimits {
            idle_timeout: Duration::from_secs_f64(config.ingest.idle_timeout.max(0.1)),
            handshake_timeout: handshake::HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Accept RTMP connections until shutdown, then wait for every connection to
/// finish (each closes its channel's open segments); the caller bounds the wait.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: IngestLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
                warn!(error = %e, "RTMP accept failed; backing off {:?}", backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = limits.max_connections, "RTMP connection refused: connection limit reached");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            Connection::new(app, peer, limits)
                .run(socket, shutdown)
                .await;
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Why a connection ended, for the unpublish log line.
#[derive(Debug)]
enum End {
    PeerClosed,
    Unpublished,
    Idle,
    NoPublish,
    HandshakeTimeout,
    Protocol(String),
    Io(std::io::Error),
    Kicked,
    Shutdown,
    Media(String),
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
            End::Protocol(e) => write!(f, "protocol error: {e}"),
            End::Io(e) => write!(f, "connection error: {e}"),
            End::Kicked => write!(f, "replaced by a new publisher"),
            End::Shutdown => write!(f, "server shutting down"),
            End::Media(e) => write!(f, "{e}"),
        }
    }
}

/// A live publishing session on a connection.
struct Live {
    admission: Admission,
    stream_id: u32,
    demuxer: Demuxer,
    started: Instant,
    warnings: u32,
    /// The transcoding pipeline, when the ladder has encoded rungs.
    pipeline: Option<ChannelPipeline>,
    /// Where the ladder was placed; its GPU share is held until the
    /// pipeline has drained.
    grant: Option<Grant>,
    /// The packager session the pipeline writes for.
    session: u64,
}

struct Connection {
    app: Arc<App>,
    peer: SocketAddr,
    limits: IngestLimits,
    live: Option<Live>,
}

impl Connection {
    fn new(app: Arc<App>, peer: SocketAddr, limits: IngestLimits) -> Self {
        Connection {
            app,
            peer,
            limits,
            live: None,
        }
    }

    async fn run(mut self, mut socket: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; READ_BUFFER];
        let leftover = match self.handshake(&mut socket, &mut buf).await {
            Ok(rest) => rest,
            Err(end) => {
                debug!(peer = %self.peer, reason = %end, "RTMP connection closed during handshake");
                return;
            }
        };
        let mut session = ServerSession::new(SessionConfig::default());
        let end = self
            .session(&mut socket, &mut buf, &mut session, leftover, &mut shutdown)
            .await;
        self.finish(end);
        let _ = socket.shutdown().await;
    }

    async fn handshake(&self, socket: &mut TcpStream, buf: &mut [u8]) -> Result<Bytes, End> {
        let deadline = tokio::time::Instant::now() + self.limits.handshake_timeout;
        let mut hs = ServerHandshake::new(handshake_time_ms(), handshake_seed(self.peer));
        loop {
            let n = match tokio::time::timeout_at(deadline, socket.read(buf)).await {
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
                write_all(socket, &out, deadline).await?;
            }
            if let HandshakeProgress::Done { remaining } = outcome {
                return Ok(remaining);
            }
        }
    }

    async fn session(
        &mut self,
        socket: &mut TcpStream,
        buf: &mut [u8],
        session: &mut ServerSession,
        leftover: Bytes,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        if !leftover.is_empty() {
            if let Err(e) = session.feed(&leftover) {
                return End::Protocol(e.to_string());
            }
            if let Err(end) = self.pump(socket, session).await {
                return end;
            }
        }
        let connected = tokio::time::Instant::now();
        let mut last_media = connected;
        let mut media_seen = session.stats().media_forwarded;
        loop {
            let kick = self.live.as_ref().map(|l| l.admission.kick.clone());
            // Progress, not bytes, keeps a connection open: media while
            // publishing, and a publish within PUBLISH_DEADLINE before that.
            let deadline = if self.live.is_some() {
                last_media + self.limits.idle_timeout
            } else {
                // from the connection, or from the end of its last publish
                last_media.max(connected) + PUBLISH_DEADLINE
            };
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, socket.read(buf)) => r,
                _ = async { match &kick { Some(k) => k.notified().await, None => std::future::pending().await } } => {
                    return End::Kicked;
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
            if let Err(end) = self.pump(socket, session).await {
                return end;
            }
            let media = session.stats().media_forwarded;
            if media != media_seen || was_live != self.live.is_some() {
                media_seen = media;
                last_media = tokio::time::Instant::now();
            }
        }
    }

    /// Write the session's output and act on its events.
    async fn pump(
        &mut self,
        socket: &mut TcpStream,
        session: &mut ServerSession,
    ) -> Result<(), End> {
        loop {
            let mut progressed = false;
            while let Some(event) = session.poll_event() {
                progressed = true;
                self.on_event(event, session)?;
            }
            let deadline = tokio::time::Instant::now() + self.limits.idle_timeout;
            while let Some(out) = session.take_output() {
                progressed = true;
                write_all(socket, &out, deadline).await?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn on_event(&mut self, event: ServerEvent, session: &mut ServerSession) -> Result<(), End> {
        match event {
            ServerEvent::Connected { app, .. } => {
                debug!(peer = %self.peer, %app, "RTMP connect");
            }
            ServerEvent::PublishRequested {
                stream_id,
                app,
                stream_name,
                ..
            } => self.on_publish(session, stream_id, &app, &stream_name),
            ServerEvent::Video {
                stream_id,
                timestamp,
                payload,
            } => {
                if let Some(live) = self.live.as_mut().filter(|l| l.stream_id == stream_id) {
                    let r = live.demuxer.video(timestamp, payload);
                    self.media(r)?;
                }
            }
            ServerEvent::Audio {
                stream_id,
                timestamp,
                payload,
            } => {
                if let Some(live) = self.live.as_mut().filter(|l| l.stream_id == stream_id) {
                    let r = live.demuxer.audio(timestamp, payload);
                    self.media(r)?;
                }
            }
            ServerEvent::Metadata { .. } => {}
            ServerEvent::Unpublished { stream_id } => {
                if self.live.as_ref().map(|l| l.stream_id) == Some(stream_id) {
                    self.finish(End::Unpublished);
                }
            }
            ServerEvent::PlayRefused { .. } => {
                info!(peer = %self.peer, "RTMP play refused: playback is over HTTP (LL-HLS, LL-DASH)");
            }
        }
        Ok(())
    }

    fn on_publish(
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
        match self.app.admit(key, peer) {
            Ok(admission) => {
                let grant = match self.app.place_ladder(&admission.channel.name) {
                    Ok(grant) => grant,
                    Err(refused) => {
                        warn!(channel = %admission.channel.name, %peer, reason = %refused, "publish refused");
                        session.reject_publish(
                            stream_id,
                            "NetStream.Publish.Rejected",
                            "no GPU capacity for this channel's ladder",
                        );
                        self.app.release(&admission.channel, admission.session_id);
                        return;
                    }
                };
                let (start, packager_session) = {
                    let mut p = admission
                        .channel
                        .packager
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    (p.start_session(SystemTime::now()), p.session())
                };
                let pipeline = grant
                    .as_ref()
                    .and_then(|g| self.app.start_pipeline(&admission.channel, g));
                match &grant {
                    Some(g) => info!(
                        channel = %admission.channel.name,
                        %peer,
                        rungs = g.rungs.len(),
                        placement = %g.placement,
                        placement_reason = %g.reason,
                        // (NVENC is not in the graph yet: a gpu placement runs hybrid)
                        runs_on = %crate::app::App::decode_backend(g),
                        "publish started"
                    ),
                    None => info!(channel = %admission.channel.name, %peer, "publish started"),
                }
                session.accept_publish(stream_id);
                self.live = Some(Live {
                    admission,
                    stream_id,
                    demuxer: Demuxer::new(start),
                    started: Instant::now(),
                    warnings: 0,
                    pipeline,
                    grant,
                    session: packager_session,
                });
            }
            Err(refusal) => {
                let (code, description) = refusal.status();
                // never log the key
                warn!(%peer, reason = %description, "publish refused");
                session.reject_publish(stream_id, code, &description);
            }
        }
    }

    /// Hand a demuxed event to the packager; log what deserves it.
    fn media(
        &mut self,
        r: Result<Option<crate::media::MediaEvent>, crate::media::flv::MediaError>,
    ) -> Result<(), End> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let channel = live.admission.channel.clone();
        // A replaced publisher must not write after its successor began.
        let current = channel
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.session_id);
        if current != Some(live.admission.session_id) {
            return Err(End::Kicked);
        }
        match r {
            Ok(Some(event)) => {
                // what the transcoding pipeline needs of it (cheap clones)
                let forward = match (&live.pipeline, &event) {
                    (Some(_), MediaEvent::VideoConfig(c)) => {
                        Some(MediaEvent::VideoConfig(c.clone()))
                    }
                    (Some(_), MediaEvent::Video(f)) => Some(MediaEvent::Video(f.clone())),
                    _ => None,
                };
                let mut p = channel.packager.lock().unwrap_or_else(|e| e.into_inner());
                let pushed = match p.push(event, SystemTime::now()) {
                    Ok(pushed) => pushed,
                    Err(e) => {
                        if live.warnings < MAX_MEDIA_WARNINGS {
                            live.warnings += 1;
                            warn!(channel = %channel.name, peer = %self.peer, error = %e, "frame dropped");
                        }
                        Pushed::default()
                    }
                };
                for n in p.take_notices() {
                    match n {
                        PackagerNotice::LongGop {
                            gop_secs,
                            target_secs,
                        } => warn!(
                            channel = %channel.name, peer = %self.peer,
                            "publisher keyframe interval is {gop_secs:.1} s, longer than segment_seconds {target_secs:.1}: segments and latency grow; set the encoder's keyframe interval to {target_secs} s"
                        ),
                        PackagerNotice::Discontinuity { msn, reason } => {
                            info!(channel = %channel.name, msn, reason, "discontinuity")
                        }
                    }
                }
                drop(p);
                if let Some(pipeline) = &live.pipeline {
                    match forward {
                        Some(MediaEvent::VideoConfig(c)) => pipeline.video_config(c),
                        Some(MediaEvent::Video(f)) if pushed.accepted => {
                            pipeline.video_frame(f, pushed.segment_start)
                        }
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            Err(e) if e.is_unsupported() => {
                error!(channel = %channel.name, peer = %self.peer, error = %e, "publish stopped: unsupported media");
                return Err(End::Media(e.to_string()));
            }
            Err(e) => {
                if live.warnings < MAX_MEDIA_WARNINGS {
                    live.warnings += 1;
                    warn!(channel = %channel.name, peer = %self.peer, error = %e, "malformed media dropped");
                }
            }
        }
        for n in live.demuxer.take_notices() {
            if live.warnings < MAX_MEDIA_WARNINGS {
                live.warnings += 1;
                warn!(channel = %channel.name, peer = %self.peer, notice = ?n, "publisher timestamps");
            }
        }
        Ok(())
    }

    /// End the live session, if any: close its segments and log one line.
    fn finish(&mut self, end: End) {
        let Some(mut live) = self.live.take() else {
            match end {
                End::PeerClosed | End::Shutdown | End::Unpublished => {
                    debug!(peer = %self.peer, reason = %end, "RTMP connection closed")
                }
                _ => info!(peer = %self.peer, reason = %end, "RTMP connection closed"),
            }
            return;
        };
        let channel = &live.admission.channel;
        {
            let mut p = channel.packager.lock().unwrap_or_else(|e| e.into_inner());
            // Only the current publisher closes the channel's segments; a kicked
            // one already lost them to its replacement.
            if !matches!(end, End::Kicked) {
                p.end_session();
            }
        }
        self.app.release(channel, live.admission.session_id);
        if let Some(pipeline) = live.pipeline.take() {
            drain_pipeline(channel.clone(), pipeline, live.session, live.grant.take());
        }
        let stats = live.demuxer.stats();
        info!(
            channel = %channel.name,
            peer = %self.peer,
            duration_s = format!("{:.1}", live.started.elapsed().as_secs_f64()),
            video_frames = stats.video.frames,
            audio_frames = stats.audio.frames,
            bytes = stats.video.bytes + stats.audio.bytes,
            reason = %end,
            "publish ended"
        );
    }
}

/// Let the transcoding pipeline finish what it holds (on a thread of its own:
/// flushing encoders takes a few frame intervals), then close the rungs'
/// segments and log one line per rung.
fn drain_pipeline(
    channel: Arc<ChannelRuntime>,
    pipeline: ChannelPipeline,
    session: u64,
    grant: Option<Grant>,
) {
    let name = channel.name.clone();
    let spawned = std::thread::Builder::new()
        .name("ladder-drain".into())
        .spawn(move || {
            let stats = pipeline.finish();
            // the ladder's GPU share is free once its pipeline has stopped
            drop(grant);
            channel
                .packager
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end_rungs(session);
            for r in &stats.rungs {
                let speed = if r.encode_seconds > 0.0 {
                    r.media_seconds / r.encode_seconds
                } else {
                    0.0
                };
                info!(
                    channel = %channel.name,
                    rung = %r.name,
                    size = format!("{}x{}", r.width, r.height),
                    pictures = r.pictures_in,
                    encoded = r.encoded,
                    dropped_queue_full = r.dropped_queue_full,
                    dropped_fps_cap = r.dropped_fps_cap,
                    errors = r.errors,
                    speed = format!("{speed:.2}x"),
                    "rung ended"
                );
            }
            info!(
                channel = %channel.name,
                access_units = stats.decode.access_units,
                pictures = stats.decode.pictures,
                pool_pictures = stats.decode.pool_pictures,
                "decode ended"
            );
            if stats.decode.dropped_queue_full > 0
                || stats.decode.errors > 0
                || stats.decode.gpu_fallbacks > 0
            {
                warn!(
                    channel = %channel.name,
                    dropped = stats.decode.dropped_queue_full,
                    errors = stats.decode.errors,
                    gpu_fallbacks = stats.decode.gpu_fallbacks,
                    "decoder fell behind, met errors or left the GPU"
                );
            }
        });
    if let Err(e) = spawned {
        error!(channel = %name, error = %e, "cannot start a thread to finish the transcoding pipeline");
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

async fn write_all(
    socket: &mut TcpStream,
    data: &[u8],
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    match tokio::time::timeout_at(deadline, socket.write_all(data)).await {
        Err(_) => Err(End::Idle),
        Ok(Err(e)) => Err(End::Io(e)),
        Ok(Ok(())) => Ok(()),
    }
}
