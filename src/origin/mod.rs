//! The HTTP origin: what CDN edges and players pull (SPEC.md, "URLs").
//!
//! hyper 1.x through `hyper_util::server::conn::auto`: HTTP/1.1 and HTTP/2 with
//! prior knowledge (h2c, RFC 9113 §3.3) on one port. Everything is served from the
//! segment store in memory ([`crate::packaging::store`]); no path is ever
//! resolved against a filesystem.
//!
//! | path under `/live/<ch>/` | answer |
//! | --- | --- |
//! | `master.m3u8` | LL-HLS multivariant playlist (404 until there is media) |
//! | `<track>/index.m3u8` | media playlist; `_HLS_msn`/`_HLS_part` block (RFC 8216bis §6.2.5.2) |
//! | `manifest.mpd` | LL-DASH MPD |
//! | `<track>/init-<id>.mp4` | init segment |
//! | `<track>/part-<seq>.m4s` | one part; the hinted part blocks until complete (§4.4.5.3) |
//! | `<track>/seg-<msn>.m4s` | a segment; while being written it streams part by part |
//!
//! and `/time`, the origin's clock for DASH `UTCTiming` (`urn:mpeg:dash:utc:http-iso:2014`).
//!
//! With `[auth] playback_secret` set, every path under `/live/<ch>/` needs a
//! signed token ([`signed`]): 403 without a valid one, and playlists and
//! MPDs are answered with the request's token on every URI they hold.
//! Answers are counted by status class ([`RequestCounters`], for
//! `/metrics`).
//!
//! Parts of the module:
//! - [`route`]: raw path to route, pure; the only place names are checked.
//! - `handler`: one request to one response; parking on the store's change
//!   notification; status codes and cache headers.
//! - `body`: response bodies, including the growing segment.
//! - [`signed`]: signed playback URLs, pure.
//!
//! Admission, in the style of mini-redis: a semaphore on accepted connections
//! ([`OriginConfig::max_connections`]; over it, the connection is accepted and
//! closed at once), another on parked requests ([`OriginConfig::max_parked`];
//! over it, 503 at once), exponential backoff when `accept` fails, and one
//! shutdown signal that stops accepting, answers parked requests with 503, cuts
//! growing bodies and lets connections finish for at most [`DRAIN_TIMEOUT`].

network_input! {
    pub mod route;
    pub mod signed;
}

mod body;
mod handler;

pub use handler::{
    BLOCKING_CACHE_TARGET_DURATIONS, MAX_PARK, MAX_PREFLIGHT_HEADERS_BYTES, PARK_TARGET_DURATIONS,
};

use crate::packaging::store::Registry;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a client may take to send a request head (HTTP/1.1). Attack:
/// slow-loris, a byte at a time, holding a connection slot forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head buffered (HTTP/1.1 read buffer; HTTP/2 header list).
/// Attack: huge header blocks to exhaust memory per connection. Requests to the
/// origin are a path and a few headers; cookies of a player's page fit easily.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Concurrent HTTP/2 streams per connection. Attack: one connection opening
/// thousands of parked streams to get around `max_connections`. A player needs
/// a handful (playlist, part, rendition reports); parked requests are also
/// capped globally by `max_parked`.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// HTTP/2 PING interval and timeout: a peer that vanished without closing (NAT
/// timeout, pulled cable) stops holding a connection slot after this.
pub const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// First pause after a failed `accept` (EMFILE, ENFILE, ENOBUFS...); doubles
/// up to [`ACCEPT_BACKOFF_MAX`]. Retrying at once would spin a core while the
/// process is out of descriptors.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);

/// Longest pause between `accept` retries.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// `accept` failing without a single success for this long means the listener
/// is broken, not busy: [`serve`] gives up with [`OriginError::Accept`].
pub const ACCEPT_GIVE_UP: Duration = Duration::from_secs(64);

/// After shutdown, how long connections may take to finish their responses
/// before they are dropped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`OriginConfig::max_connections`] (`[origin] max_connections`):
/// viewer connections open at once. Attack: a flood of connections (idle,
/// or slow-loris under [`HEADER_READ_TIMEOUT`]) exhausting descriptors and
/// memory. Each costs a descriptor and its buffers (a few tens of KiB): 16,384
/// is a few hundred MiB at worst, far under the package's `LimitNOFILE`
/// (1,048,576); behind a CDN the edges need a handful each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Default [`OriginConfig::max_parked`] (`[origin] max_parked`): blocking
/// requests (playlist reloads, hinted parts, the next segment) parked at
/// once. Attack: thousands of requests for the future, each holding a task
/// and a waiter. One player parks about one request per rendition it plays;
/// at this many, memory stays in the tens of MiB (tests/origin.rs parks
/// 10,000).
pub const DEFAULT_MAX_PARKED: usize = 16_384;

/// Origin limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginConfig {
    /// Open connections at once; more are accepted and closed at once. Each
    /// costs a descriptor and some buffers; keep it under `LimitNOFILE`.
    pub max_connections: usize,
    /// Requests parked at once (blocking playlist reloads, hinted parts, the
    /// next segment); more get 503 at once, so a flood of future requests cannot
    /// grow memory without bound.
    pub max_parked: usize,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_parked: DEFAULT_MAX_PARKED,
        }
    }
}

/// Who broke it (pingora style): what logs and metrics group errors by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The publisher (or the packager behind it) stopped delivering.
    Publisher,
    /// The viewer (player, CDN edge) was too slow or asked for the impossible.
    Viewer,
    /// This machine: sockets, descriptors, shutdown.
    Internal,
}

/// Everything that can go wrong in the origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The listening socket kept failing for [`ACCEPT_GIVE_UP`].
    #[error("accept kept failing: {0}")]
    Accept(#[source] std::io::Error),
    /// A growing segment got no new part within 3 x target duration; its body
    /// is cut so no cache keeps a truncated segment.
    #[error("segment {msn} of {channel}/{track} stalled while streaming")]
    SegmentStalled {
        channel: String,
        track: String,
        msn: u64,
    },
    /// The segment left the store before this reader had all of it.
    #[error("segment {msn} of {channel}/{track} left the store while streaming")]
    SegmentEvicted {
        channel: String,
        track: String,
        msn: u64,
    },
    /// The origin is shutting down; a growing body is cut.
    #[error("origin shutting down")]
    ShuttingDown,
}

impl OriginError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            OriginError::Accept(_) | OriginError::ShuttingDown => Fault::Internal,
            OriginError::SegmentStalled { .. } => Fault::Publisher,
            OriginError::SegmentEvicted { .. } => Fault::Viewer,
        }
    }
}

/// Answers by status class (1xx to 5xx) of an HTTP server: the origin's,
/// and the admin server's. Lock-free; shared by every connection.
#[derive(Debug, Default)]
pub struct RequestCounters {
    classes: [AtomicU64; 5],
}

impl RequestCounters {
    /// Count one answer.
    pub fn count(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100);
        if let Some(c) = class.checked_sub(1).and_then(|i| self.classes.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `("1xx", n)` to `("5xx", n)`.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        const NAMES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        std::array::from_fn(|i| (NAMES[i], self.classes[i].load(Ordering::Relaxed)))
    }
}

/// What the origin shares with the rest of the appliance beyond the store:
/// its request counters, and the playback token checker when playback is
/// signed.
#[derive(Debug, Clone, Default)]
pub struct OriginServices {
    /// Answers by status class (read by `/metrics`).
    pub requests: Arc<RequestCounters>,
    /// Set: every `/live/<ch>/` request needs a valid token.
    pub playback: Option<Arc<signed::PlaybackAuth>>,
}

/// What every request handler shares.
struct Shared {
    registry: Arc<Registry>,
    /// Counters and the token checker.
    services: OriginServices,
    /// Permits for parked requests (`max_parked`).
    parked: Arc<Semaphore>,
    /// Becomes `true` at shutdown.
    shutdown: watch::Receiver<bool>,
}

/// Serve until `shutdown` resolves. HTTP/1.1 and HTTP/2 (h2c prior knowledge)
/// on the same port.
///
/// On shutdown: stop accepting, answer parked requests with 503, cut growing
/// bodies, let connections finish for at most [`DRAIN_TIMEOUT`], return `Ok`.
/// Returns [`OriginError::Accept`] only if `accept` fails for [`ACCEPT_GIVE_UP`]
/// without a success.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: OriginConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OriginError> {
    serve_with(
        listener,
        registry,
        config,
        OriginServices::default(),
        shutdown,
    )
    .await
}

/// [`serve`], counting answers in `services.requests` and checking playback
/// tokens when `services.playback` is set.
pub async fn serve_with(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: OriginConfig,
    services: OriginServices,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OriginError> {
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        services,
        registry,
        parked: Arc::new(Semaphore::new(
            config.max_parked.min(Semaphore::MAX_PERMITS),
        )),
        shutdown: stopped.clone(),
    });
    let connections = Arc::new(Semaphore::new(
        config.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let builder = Arc::new(builder());
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failing_since: Option<Instant> = None;
    let mut result = Ok(());
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => {
                backoff = ACCEPT_BACKOFF_MIN;
                failing_since = None;
                s
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ACCEPT_GIVE_UP {
                    tracing::error!(error = %e, "origin: accept keeps failing, giving up");
                    result = Err(OriginError::Accept(e));
                    break;
                }
                tracing::warn!(error = %e, ?backoff, "origin: accept failed, backing off");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "origin: connection limit reached, closing");
            drop(stream);
            continue;
        };
        // Parts are small writes that must leave at once (low latency).
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    let response = handler::handle(&shared, req).await;
                    shared.services.requests.count(response.status());
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let finished = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stopped.wait_for(|stop| *stop) => None,
            };
            let r = match finished {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "origin: connection ended with an error");
            }
        });
    }

    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "origin: connections still open after the drain timeout, dropping them"
        );
        tasks.abort_all();
    }
    result
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_REQUEST_HEAD_BYTES as u32)
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE);
    b
}
