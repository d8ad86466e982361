//! Wiring: listeners, tasks, channels, admission, shutdown.
//!
//! - One tokio runtime does the I/O: the RTMP listener (`ingest::server`) and
//!   the HTTP origin (`origin`).
//! - Each channel has a [`ChannelRuntime`]: its segment store (what the origin
//!   reads) and its packager (what the live publisher writes). Packaging the
//!   passed-through source is a few memory copies per frame, done on the
//!   publisher's task; the transcoding ladder will run on its own threads.
//! - Admission: a semaphore caps publishers; a second publisher on a live
//!   channel is refused or replaces the first (`[ingest] duplicate_publisher`).
//! - Shutdown: one `watch` that every task selects on (SIGINT, SIGTERM).

use crate::control::config::{Backend, Config, ConfigSource, DuplicatePolicy, Fallback};
use crate::ingest::server::{self as ingest_server, IngestLimits};
use crate::origin::{self, OriginConfig};
use crate::packaging::packager::Packager;
use crate::packaging::store::{ChannelStore, Registry, StoreConfig};
use crate::pipeline::admission::{Admission as LadderAdmission, Grant, Placement, Refused};
use crate::pipeline::graph::{ChannelPipeline, DecodeBackend, PipelineOptions, RungPlan, RungSink};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{info, warn};

/// How long a channel's media stays servable after its publisher left; then the
/// channel is forgotten, so publishing once to many keys (open mode) cannot
/// grow memory without bound.
pub const CHANNEL_LINGER: Duration = Duration::from_secs(300);
/// How often idle channels are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(10);
/// How long shutdown waits for tasks to finish closing segments and connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("origin failed: {0}")]
    Origin(String),
}

/// The live publisher of a channel, as seen by others.
#[derive(Debug)]
pub struct PublisherHandle {
    /// Unique per session.
    pub session_id: u64,
    /// Peer address, for logs.
    pub peer: SocketAddr,
    /// Notified to make the session end (replaced by a newer publisher).
    pub kick: Arc<Notify>,
}

/// One channel: its store, its packager, and who publishes to it.
pub struct ChannelRuntime {
    pub name: String,
    pub store: Arc<ChannelStore>,
    pub packager: Mutex<Packager>,
    pub publisher: Mutex<Option<PublisherHandle>>,
    /// When the last publisher left (None while one is live, or never published).
    pub idle_since: Mutex<Option<std::time::Instant>>,
}

/// Where a channel's pipeline delivers encoded rungs: its packager, for one
/// publisher session (output arriving after the session ended is dropped).
struct RungWriter {
    channel: Arc<ChannelRuntime>,
    session: u64,
}

impl RungSink for RungWriter {
    fn rung_config(&self, rung: &str, config: Arc<crate::media::VideoConfig>) {
        let mut p = self
            .channel
            .packager
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.rung_config(self.session, rung, config);
    }

    fn rung_frame(&self, rung: &str, frame: crate::media::VideoFrame) {
        let mut p = self
            .channel
            .packager
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.push_rung(self.session, rung, frame);
    }

    fn pipeline_error(&self, message: String) {
        warn!(channel = %self.channel.name, "transcoding: {message}");
    }
}

/// Why a publish was refused, with the RTMP status the publisher gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    UnknownKey,
    BadName(String),
    AlreadyLive,
    TooManyPublishers,
}

impl Refusal {
    pub fn status(&self) -> (&'static str, String) {
        match self {
            Refusal::UnknownKey => (
                "NetStream.Publish.Unauthorized",
                "unknown stream key".into(),
            ),
            Refusal::BadName(why) => ("NetStream.Publish.BadName", why.clone()),
            Refusal::AlreadyLive => (
                "NetStream.Publish.BadName",
                "channel is already live".into(),
            ),
            Refusal::TooManyPublishers => (
                "NetStream.Publish.Rejected",
                "server is at its publisher limit".into(),
            ),
        }
    }
}

/// Shared state of the running appliance.
pub struct App {
    pub config: Config,
    pub registry: Arc<Registry>,
    channels: Mutex<HashMap<String, Arc<ChannelRuntime>>>,
    publishers: Arc<Semaphore>,
    next_session: std::sync::atomic::AtomicU64,
    /// Where each channel's ladder runs: the GPUs and what is charged to them.
    placement: LadderAdmission,
}

/// What a successful admission hands the publisher's session.
pub struct Admission {
    pub channel: Arc<ChannelRuntime>,
    pub session_id: u64,
    pub kick: Arc<Notify>,
    /// Held for the session's life; dropping it frees the publisher slot.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

impl App {
    /// The appliance on `config`, placing ladders with `placement` (over the
    /// GPUs probed at start; none: every ladder on the CPU).
    pub fn new(config: Config, placement: LadderAdmission) -> Arc<App> {
        let max = config.ingest.max_publishers.max(1);
        Arc::new(App {
            placement,
            config,
            registry: Registry::new(),
            channels: Mutex::new(HashMap::new()),
            publishers: Arc::new(Semaphore::new(max)),
            next_session: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            segment_target: self.config.packaging.segment_seconds,
            part_target: self.config.packaging.part_seconds,
            window_segments: self.config.packaging.window_segments,
        }
    }

    /// The channel's ladder: the passthrough rendition's name (None when the
    /// ladder has none: every rendition is encoded), and the encoded rungs.
    /// A channel without a ladder passes the source through as `source`.
    pub fn ladder_plan(&self, channel: &str) -> (Option<String>, Vec<RungPlan>) {
        let Some(ladder) = self.config.ladder_for(channel) else {
            return (Some("source".to_string()), Vec::new());
        };
        crate::pipeline::plan::ladder_plan(ladder)
    }

    /// Decide where the channel's ladder runs (issue 4 §5): `Ok(None)` when
    /// it has no encoded rung; `Err` when the ladder's `fallback` is `fail`
    /// and no GPU can take it. The grant holds the channel's share of a GPU
    /// until it is dropped.
    pub fn place_ladder(&self, channel: &str) -> Result<Option<Grant>, Refused> {
        let (source, rungs) = self.ladder_plan(channel);
        if rungs.is_empty() {
            return Ok(None);
        }
        let (backend, fallback) = self
            .config
            .ladder_for(channel)
            .map_or((Backend::Cpu, Fallback::Cpu), |l| (l.backend, l.fallback));
        self.placement
            .admit(backend, fallback, &rungs, source.is_some())
            .map(Some)
    }

    /// What a grant's pipeline decodes and scales on: NVDEC and CUDA on the
    /// granted GPU for a `hybrid` placement and for a `gpu` one too (NVENC is
    /// not in the graph yet: a `gpu` placement runs hybrid, x264 on the
    /// host), libavcodec and swscale otherwise.
    pub fn decode_backend(grant: &Grant) -> DecodeBackend {
        match grant.placement {
            Placement::Gpu { gpu } | Placement::Hybrid { gpu } => DecodeBackend::Nvdec { gpu },
            Placement::Cpu => DecodeBackend::Cpu,
        }
    }

    /// Start the transcoding pipeline of a publisher session with the rungs
    /// its grant kept, on [`App::decode_backend`]'s decoder (encoding is
    /// always on the host: x264, rav1e). A GPU that cannot be used or fails
    /// moves the channel to the CPU decoder (`gpu_fallbacks` in its stats).
    pub fn start_pipeline(
        &self,
        channel: &Arc<ChannelRuntime>,
        grant: &Grant,
    ) -> Option<ChannelPipeline> {
        if grant.rungs.is_empty() {
            return None;
        }
        let session = channel
            .packager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .session();
        let sink = Arc::new(RungWriter {
            channel: channel.clone(),
            session,
        });
        let options = PipelineOptions {
            decode: Self::decode_backend(grant),
            ..PipelineOptions::default()
        };
        Some(ChannelPipeline::start_with(
            &channel.name,
            grant.rungs.clone(),
            sink,
            options,
        ))
    }

    /// Map a stream key to a channel name, per the auth mode.
    pub fn channel_for_key(&self, key: &str) -> Result<String, Refusal> {
        if let Some(c) = self.config.channel_by_key(key) {
            return Ok(c.name.clone());
        }
        if !self.config.auth.open {
            return Err(Refusal::UnknownKey);
        }
        // open mode: the key is the channel name, which appears in URLs
        let ok = !key.is_empty()
            && key.len() <= 64
            && !key.starts_with('-')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Refusal::BadName(
                "in open mode the stream key is the channel name: use 1-64 of A-Z a-z 0-9 _ -"
                    .into(),
            ));
        }
        // a configured channel's name cannot be taken by publishing to it by name
        if self.config.channel_by_name(key).is_some() {
            return Err(Refusal::UnknownKey);
        }
        Ok(key.to_string())
    }

    fn channel(&self, name: &str) -> Arc<ChannelRuntime> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| {
                let store = self.registry.get_or_create(name, &self.store_config());
                let (source, rungs) = self.ladder_plan(name);
                let mut packager = Packager::new(
                    store.clone(),
                    source.as_deref().unwrap_or("source"),
                    SystemTime::now(),
                );
                let bitrates: Vec<(String, u32)> = rungs
                    .iter()
                    .map(|r| (r.name.clone(), r.bitrate_kbps))
                    .collect();
                packager.set_ladder(source.as_deref(), &bitrates);
                Arc::new(ChannelRuntime {
                    name: name.to_string(),
                    store,
                    packager: Mutex::new(packager),
                    publisher: Mutex::new(None),
                    idle_since: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Admit a publisher for a key. The caller logs the outcome.
    pub fn admit(&self, key: &str, peer: SocketAddr) -> Result<Admission, Refusal> {
        let name = self.channel_for_key(key)?;
        let permit = self
            .publishers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::TooManyPublishers)?;
        let channel = self.channel(&name);
        let session_id = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        let mut slot = channel.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.as_ref() {
            match self.config.ingest.duplicate_publisher {
                DuplicatePolicy::Refuse => return Err(Refusal::AlreadyLive),
                DuplicatePolicy::Replace => {
                    info!(channel = %name, old_peer = %old.peer, new_peer = %peer, "replacing the live publisher");
                    old.kick.notify_one();
                }
            }
        }
        *channel.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *slot = Some(PublisherHandle {
            session_id,
            peer,
            kick: kick.clone(),
        });
        drop(slot);
        Ok(Admission {
            channel,
            session_id,
            kick,
            permit,
        })
    }

    /// A publisher session ended: free the channel if it still holds it.
    pub fn release(&self, channel: &ChannelRuntime, session_id: u64) {
        let mut slot = channel.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().map(|p| p.session_id) == Some(session_id) {
            *slot = None;
            *channel.idle_since.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(std::time::Instant::now());
        }
    }

    /// Forget channels whose publisher left more than `linger` ago; returns
    /// their names.
    pub fn reap(&self, now: std::time::Instant, linger: Duration) -> Vec<String> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let idle: Vec<String> = map
            .values()
            .filter(|c| {
                let live = c
                    .publisher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some();
                let since = *c.idle_since.lock().unwrap_or_else(|e| e.into_inner());
                !live
                    && since
                        .map(|t| now.duration_since(t) >= linger)
                        .unwrap_or(false)
            })
            .map(|c| c.name.clone())
            .collect();
        for name in &idle {
            map.remove(name);
            self.registry.remove(name);
        }
        idle
    }
}

/// Run the appliance until SIGINT or SIGTERM.
pub fn run(config: Config, source: ConfigSource) -> Result<(), AppError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ladder-io")
        .build()
        .map_err(AppError::Runtime)?;
    rt.block_on(serve(config, source))
}

async fn serve(config: Config, source: ConfigSource) -> Result<(), AppError> {
    let rtmp_addr = config.server.rtmp_listen;
    let http_addr = config.server.http_listen;
    let rtmp = tokio::net::TcpListener::bind(rtmp_addr)
        .await
        .map_err(|e| AppError::Bind {
            what: "RTMP",
            addr: rtmp_addr,
            source: e,
        })?;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| AppError::Bind {
            what: "HTTP",
            addr: http_addr,
            source: e,
        })?;
    // the GPUs, once: what admission places ladders on
    let inventory = crate::pipeline::gpu::probe::probe();
    match &inventory.no_gpu {
        Some(reason) => info!(reason = %reason, "no GPU: every ladder runs on the CPU"),
        None => {
            for g in &inventory.gpus {
                let c = g.capacity();
                info!(
                    gpu = c.index,
                    name = %c.name,
                    memory_mib = c.memory >> 20,
                    nvdec_engines = c.nvdec_engines,
                    nvenc_engines = c.nvenc_engines,
                    "GPU found"
                );
            }
        }
    }
    let app = App::new(config, inventory.admission());
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        rtmp = %rtmp.local_addr().unwrap_or(rtmp_addr),
        http = %http.local_addr().unwrap_or(http_addr),
        mode = if app.config.auth.open { "open" } else { "closed" },
        channels = app.config.channels.len(),
        "ladder started"
    );
    for (name, ladder) in &app.config.ladders {
        let encoded = ladder.renditions.iter().filter(|r| !r.passthrough).count();
        match ladder.backend {
            Backend::Gpu | Backend::Hybrid if encoded > 0 => warn!(
                ladder = %name,
                backend = ?ladder.backend,
                "this build has no GPU backend yet: the ladder runs on the CPU (libavcodec, swscale, x264)"
            ),
            _ => {}
        }
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = IngestLimits::from_config(&app.config);
    let ingest = tokio::spawn(ingest_server::serve(
        rtmp,
        app.clone(),
        limits,
        shutdown_rx.clone(),
    ));
    let mut origin_shutdown = shutdown_rx.clone();
    let origin_task = tokio::spawn(origin::serve(
        http,
        app.registry.clone(),
        OriginConfig::default(),
        async move {
            let _ = origin_shutdown.wait_for(|v| *v).await;
        },
    ));

    let reaper = {
        let app = app.clone();
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|v| *v) => break,
                }
                for name in app.reap(std::time::Instant::now(), CHANNEL_LINGER) {
                    info!(channel = %name, linger_s = CHANNEL_LINGER.as_secs(), "channel idle: forgotten");
                }
            }
        })
    };

    wait_for_signal().await;
    info!("shutting down: closing publishers and open segments");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ingest).await;
    let _ = reaper.await;
    match tokio::time::timeout(SHUTDOWN_GRACE, origin_task).await {
        Ok(Ok(Err(e))) => return Err(AppError::Origin(e.to_string())),
        Ok(_) => {}
        Err(_) => warn!("origin did not stop within {:?}", SHUTDOWN_GRACE),
    }
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(open: bool) -> Arc<App> {
        let text = format!(
            "[auth]\nopen = {open}\n[[channels]]\nname = \"news\"\nkey = \"k1\"\n[ladders.default]\nbackend = \"cpu\"\nrenditions = [ {{ name = \"source\", passthrough = true }} ]\n"
        );
        App::new(
            Config::parse(&text, "test.toml").unwrap(),
            LadderAdmission::new(Vec::new()),
        )
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[tokio::test]
    async fn keys_map_to_channels_per_auth_mode() {
        let closed = app(false);
        assert_eq!(closed.channel_for_key("k1"), Ok("news".to_string()));
        assert_eq!(closed.channel_for_key("other"), Err(Refusal::UnknownKey));
        let open = app(true);
        assert_eq!(open.channel_for_key("k1"), Ok("news".to_string()));
        assert_eq!(open.channel_for_key("cam2"), Ok("cam2".to_string()));
        // a configured channel's name is not a key
        assert_eq!(open.channel_for_key("news"), Err(Refusal::UnknownKey));
        for bad in ["", "../x", "a?b", "a b", "-x", &"x".repeat(65)] {
            assert!(
                matches!(open.channel_for_key(bad), Err(Refusal::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_second_publisher_is_refused_and_the_slot_frees_on_release() {
        let app = app(true);
        let first = app.admit("cam", peer()).unwrap();
        assert_eq!(app.admit("cam", peer()).err(), Some(Refusal::AlreadyLive));
        // the refused attempt did not take a publisher slot
        app.release(&first.channel, first.session_id);
        drop(first);
        assert!(app.admit("cam", peer()).is_ok());
    }

    #[tokio::test]
    async fn idle_channels_are_forgotten_after_the_linger() {
        let app = app(true);
        let a = app.admit("cam", peer()).unwrap();
        let now = std::time::Instant::now();
        assert!(
            app.reap(now + Duration::from_secs(3600), CHANNEL_LINGER)
                .is_empty(),
            "live channel reaped"
        );
        app.release(&a.channel, a.session_id);
        assert!(app.reap(now, CHANNEL_LINGER).is_empty(), "reaped too early");
        assert!(app.registry.get("cam").is_some());
        let reaped = app.reap(std::time::Instant::now() + CHANNEL_LINGER, CHANNEL_LINGER);
        assert_eq!(reaped, vec!["cam".to_string()]);
        assert!(app.registry.get("cam").is_none());
    }
}
