//! Wiring: listeners, tasks, channels, admission, shutdown.
//!
//! - One tokio runtime does the I/O: the RTMP and RTMPS listeners
//!   (`ingest::server`), the HTTP origin (`origin`) and the admin server
//!   (`control::admin`: API, metrics, health), which starts first and
//!   stops last so `/readyz` can say 503 while the others close.
//! - Each channel has a [`ChannelRuntime`]: its segment store (what the origin
//!   reads) and its packager (what the live publisher writes). Packaging the
//!   passed-through source is a few memory copies per frame, done on the
//!   publisher's task; the transcoding ladder will run on its own threads.
//! - Admission: a semaphore caps publishers; a second publisher on a live
//!   channel is refused or replaces the first (`[ingest] duplicate_publisher`).
//! - Shutdown: one `watch` that every task selects on (SIGINT, SIGTERM).
//! - systemd: READY once the listeners are bound, WATCHDOG pings, STOPPING
//!   (`control::systemd`).
//! - Panics: one channel's panic is caught where its work runs, logged once
//!   with the channel's name, and the channel restarts ([`contain`]).

pub mod contain;

use crate::control::config::{Backend, Config, ConfigSource, DuplicatePolicy, Fallback};
use crate::control::meter::InputMeter;
use crate::control::webhook::Webhook;
use crate::ingest::publish::Peer;
use crate::ingest::server::{Ingest, IngestLimits, Transport};
use crate::ingest::tls::{self, TlsError};
use crate::origin::{self, OriginConfig, OriginServices};
use crate::packaging::packager::Packager;
use crate::packaging::store::{ChannelStore, Registry, StoreConfig};
use crate::pipeline::admission::GpuUsage;
use crate::pipeline::admission::{Admission as LadderAdmission, Grant, Placement, Refused};
use crate::pipeline::graph::{
    ChannelPipeline, DecodeBackend, PipelineOptions, PipelineStatsHandle, RungPlan, RungSink,
    StagePanic,
};
use crate::restream::Restream;
use contain::TestPanics;
use std::collections::{BTreeSet, HashMap};
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
    #[error("cannot start RTMPS: {0}")]
    Tls(#[from] TlsError),
}

/// Why a live publish session is told to end from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    /// A newer publisher took the channel (`duplicate_publisher = "replace"`).
    Replaced,
    /// `POST /api/v1/channels/{name}/kick`.
    Admin,
}

/// What ends a live publish session from outside: a newer publisher, or the
/// admin API. The session's driver waits on [`Kick::kicked`] beside its
/// socket.
#[derive(Debug, Default)]
pub struct Kick {
    notify: Notify,
    /// The first reason given.
    reason: Mutex<Option<KickReason>>,
}

impl Kick {
    /// Tell the session to end (the first reason given is the one kept).
    pub fn kick(&self, reason: KickReason) {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        // a permit is stored if the driver is not waiting yet
        self.notify.notify_one();
    }

    /// Resolves once [`Kick::kick`] was called (before or after), with why.
    pub async fn kicked(&self) -> KickReason {
        self.notify.notified().await;
        self.reason().unwrap_or(KickReason::Replaced)
    }

    /// Why the session was kicked, if it was.
    pub fn reason(&self) -> Option<KickReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The live publisher of a channel, as seen by others (the admin API reads
/// its figures here).
#[derive(Debug)]
pub struct PublisherHandle {
    /// Unique per session.
    pub session_id: u64,
    /// Who publishes (an address, or a redacted pull URL), for logs.
    pub peer: Peer,
    /// Makes the session end (replaced by a newer publisher, or the admin API).
    pub kick: Arc<Kick>,
    /// When the session was admitted.
    pub since: SystemTime,
    /// What the publisher sends, over a sliding window.
    pub input: Arc<InputMeter>,
    /// Where its ladder runs and its live counters, once placed
    /// ([`App::note_placement`]); `None` before, and for a ladder with no
    /// encoded rung.
    pub transcode: Option<Transcode>,
}

/// A live session's transcoding, as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Transcode {
    /// Where admission placed the ladder.
    pub placement: Placement,
    /// Admission's reason, in words.
    pub reason: String,
    /// What the decode stage runs on (the placement's backend).
    pub runs_on: DecodeBackend,
    /// Encoded rungs `degrade` left out.
    pub dropped: Vec<String>,
    /// The pipeline's live counters (`None` when the grant kept no rung).
    pub stats: Option<PipelineStatsHandle>,
}

/// One channel: its store, its packager, and who publishes to it.
pub struct ChannelRuntime {
    pub name: String,
    pub store: Arc<ChannelStore>,
    pub packager: Mutex<Packager>,
    pub publisher: Mutex<Option<PublisherHandle>>,
    /// When the last publisher left (None while one is live, or never published).
    pub idle_since: Mutex<Option<std::time::Instant>>,
    /// The restream destinations of the current (or last) publish session.
    pub restream: Mutex<Option<Arc<Restream>>>,
    /// The ladder the channel was made with: its packager's renditions. A
    /// reload changes ladders for channels made after it.
    pub ladder: Option<crate::control::config::LadderConfig>,
    /// The source's latest keyframe and its configuration (the status page's
    /// thumbnail: `pipeline::cpu::thumbnail`). A reference to the frame's bytes.
    pub latest_keyframe: Mutex<Option<(Arc<crate::media::VideoConfig>, crate::media::VideoFrame)>>,
}

impl ChannelRuntime {
    /// This channel's ladder: the passthrough rendition's name and the
    /// encoded rungs (see [`App::ladder_plan`]).
    pub fn ladder_plan(&self) -> (Option<String>, Vec<RungPlan>) {
        plan_of(self.ladder.as_ref())
    }
}

/// A ladder's plan; no ladder: the source passed through as `source`.
fn plan_of(
    ladder: Option<&crate::control::config::LadderConfig>,
) -> (Option<String>, Vec<RungPlan>) {
    match ladder {
        Some(l) => crate::pipeline::plan::ladder_plan(l),
        None => (Some("source".to_string()), Vec::new()),
    }
}

/// Where a channel's pipeline delivers encoded rungs: its packager, for one
/// publisher session (output arriving after the session ended is dropped).
struct RungWriter {
    channel: Arc<ChannelRuntime>,
    session: u64,
    /// Destinations that send a rung, when the session has any.
    restream: Option<Arc<Restream>>,
}

impl RungSink for RungWriter {
    fn rung_config(&self, rung: &str, config: Arc<crate::media::VideoConfig>) {
        let mut p = self
            .channel
            .packager
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.rung_config(self.session, rung, config.clone());
        // a pipeline replaced in mid-session (a panic) still drains: only
        // the current one feeds the destinations
        let current = p.session() == self.session;
        drop(p);
        if let Some(r) = self.restream.as_ref().filter(|_| current) {
            r.rung_config(rung, &config);
        }
    }

    fn rung_frame(&self, rung: &str, frame: crate::media::VideoFrame) {
        let mut p = self
            .channel
            .packager
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let current = p.session() == self.session;
        match self.restream.as_ref().filter(|_| current) {
            Some(r) => {
                p.push_rung(self.session, rung, frame.clone());
                drop(p);
                r.rung_frame(rung, &frame);
            }
            None => p.push_rung(self.session, rung, frame),
        }
    }

    fn pipeline_error(&self, message: String) {
        warn!(channel = %self.channel.name, "transcoding: {message}");
    }

    /// The one line a stage's panic gets; the publish session rebuilds the
    /// pipeline at its next video frame (`ingest::publish`), unless it has
    /// ended (a pipeline still draining).
    fn pipeline_panicked(&self, panic: &StagePanic) {
        let current = self
            .channel
            .packager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .session()
            == self.session
            && self.channel.store.read().live;
        let then = if current {
            "restarting the channel"
        } else {
            "its publish session had already ended"
        };
        tracing::error!(channel = %self.channel.name, "{panic}; {then}");
    }
}

/// Why a publish was refused, with the RTMP status the publisher gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Closed mode, and no channel has this key.
    UnknownKey,
    /// The key cannot be a channel name (open mode); why.
    BadName(String),
    /// `duplicate_publisher = "refuse"` and the channel has a publisher.
    AlreadyLive,
    /// `[ingest] max_publishers` are live.
    TooManyPublishers,
    /// A pull named a channel that is not configured.
    UnknownChannel,
    /// The ladder's `fallback` is `fail` and no GPU can take it.
    NoCapacity,
    /// The publish webhook denied the key (or could not be asked: fail
    /// closed). Why is logged, not told to the publisher.
    WebhookDenied,
}

impl Refusal {
    /// The RTMP onStatus code and description the publisher gets (neither
    /// holds the key).
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
            Refusal::UnknownChannel => (
                "NetStream.Publish.BadName",
                "no such channel in the configuration".into(),
            ),
            Refusal::NoCapacity => (
                "NetStream.Publish.Rejected",
                "no GPU capacity for this channel's ladder".into(),
            ),
            Refusal::WebhookDenied => (
                "NetStream.Publish.Unauthorized",
                "publish not authorized".into(),
            ),
        }
    }
}

/// Shared state of the running appliance.
pub struct App {
    /// The configuration in force; replaced whole by a reload ([`App::reload`]).
    config: std::sync::RwLock<Arc<Config>>,
    pub registry: Arc<Registry>,
    channels: Mutex<HashMap<String, Arc<ChannelRuntime>>>,
    publishers: Arc<Semaphore>,
    /// The publisher cap (`[ingest] max_publishers`, at least 1).
    max_publishers: usize,
    next_session: std::sync::atomic::AtomicU64,
    /// Where each channel's ladder runs: the GPUs and what is charged to them.
    placement: LadderAdmission,
    /// Pipelines still draining after their publisher left.
    pub drains: Arc<Drains>,
    /// Where the HTTP origin listens, once bound.
    origin_addr: std::sync::OnceLock<SocketAddr>,
    /// The publish webhook, when `[auth] publish_webhook` is set (a reload
    /// replaces it).
    webhook: std::sync::RwLock<Option<Webhook>>,
    /// Restream destinations paused by the admin API, by channel name and
    /// index in the channel's `restream` list; applied to every new publish
    /// session. Only configured channels have destinations, so this is
    /// bounded by the configuration.
    paused: Mutex<HashMap<String, BTreeSet<usize>>>,
    /// Test only: panics to inject ([`contain::TEST_PANIC_ENV`]), set once
    /// at start; unset in every real run.
    test_panics: std::sync::OnceLock<TestPanics>,
}

/// Transcoding pipelines draining after their publish session ended (on
/// threads of their own: encoders flush, the rungs' last segments close).
/// Shutdown waits for them, within a bound.
#[derive(Debug, Default)]
pub struct Drains {
    running: std::sync::atomic::AtomicUsize,
    done: Notify,
}

/// Held by a draining pipeline's thread; counts it out when dropped.
#[derive(Debug)]
pub struct DrainGuard(Arc<Drains>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

impl Drains {
    /// One more pipeline draining, until the guard drops.
    pub fn start(self: &Arc<Self>) -> DrainGuard {
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        DrainGuard(self.clone())
    }

    /// Pipelines draining now.
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until none drains, at most `bound`; whether none does.
    pub async fn wait(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.running() == 0;
            }
        }
    }
}

/// What a successful admission hands the publisher's session.
pub struct Admission {
    pub channel: Arc<ChannelRuntime>,
    pub session_id: u64,
    pub kick: Arc<Kick>,
    /// Where the session records what it receives (the admin API reads it).
    pub input: Arc<InputMeter>,
    /// Held for the session's life; dropping it frees the publisher slot.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

impl App {
    /// The configuration in force (a reload replaces it; what a caller holds
    /// stays consistent).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Put `new` in force (SIGHUP). Live channels go on untouched: their
    /// ladder, packaging and destinations are the ones they started with.
    /// New publishes see the new channels, keys, auth mode, ladders and
    /// destinations. What only a restart applies (listen addresses, the
    /// publisher cap) is said in the notes returned, as is what changed
    /// (channel names, never keys).
    pub fn reload(&self, new: Config) -> Vec<String> {
        let old = self.config();
        let mut notes = Vec::new();
        let s = (&old.server, &new.server);
        for (what, changed) in [
            ("server.rtmp_listen", s.0.rtmp_listen != s.1.rtmp_listen),
            ("server.http_listen", s.0.http_listen != s.1.http_listen),
            ("server.admin_listen", s.0.admin_listen != s.1.admin_listen),
            ("server.rtmps_listen", s.0.rtmps_listen != s.1.rtmps_listen),
            (
                "ingest.max_publishers",
                old.ingest.max_publishers != new.ingest.max_publishers,
            ),
            ("origin", old.origin != new.origin),
        ] {
            if changed {
                notes.push(format!(
                    "{what} changed: it takes effect at the next restart"
                ));
            }
        }
        if old.packaging != new.packaging {
            notes.push(
                "packaging changed: channels made from now on use it; live ones keep theirs".into(),
            );
        }
        let names =
            |c: &Config| -> Vec<String> { c.channels.iter().map(|c| c.name.clone()).collect() };
        let (was, now) = (names(&old), names(&new));
        let added: Vec<&String> = now.iter().filter(|n| !was.contains(n)).collect();
        let removed: Vec<&String> = was.iter().filter(|n| !now.contains(n)).collect();
        let changed: Vec<&String> = now
            .iter()
            .filter(|n| {
                old.channel_by_name(n)
                    .zip(new.channel_by_name(n))
                    .is_some_and(|(a, b)| a != b)
            })
            .collect();
        for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !list.is_empty() {
                let list: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
                notes.push(format!(
                    "channels {what}: {} (a live channel keeps its session until it ends)",
                    list.join(", ")
                ));
            }
        }
        let ladders: Vec<&str> = new
            .ladders
            .iter()
            .filter(|(n, l)| old.ladders.get(*n) != Some(*l))
            .map(|(n, _)| n.as_str())
            .collect();
        if !ladders.is_empty() {
            notes.push(format!(
                "ladders new or changed: {} (channels made from now on use them; live ones keep theirs)",
                ladders.join(", ")
            ));
        }
        if old.auth != new.auth {
            notes.push("auth changed: new publishes are admitted by it".into());
        }
        if old.auth.playback_secret != new.auth.playback_secret
            || old.auth.playback_token_param != new.auth.playback_token_param
        {
            notes.push(
                "auth.playback_secret or playback_token_param changed: it takes effect at the next restart"
                    .into(),
            );
        }
        *self.webhook.write().unwrap_or_else(|e| e.into_inner()) = new
            .auth
            .publish_webhook
            .as_deref()
            .map(|url| Webhook::new(url, new.auth.publish_webhook_timeout));
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        notes
    }

    /// The appliance on `config`, placing ladders with `placement` (over the
    /// GPUs probed at start; none: every ladder on the CPU).
    pub fn new(config: Config, placement: LadderAdmission) -> Arc<App> {
        let max = config.ingest.max_publishers.max(1);
        let webhook = config
            .auth
            .publish_webhook
            .as_deref()
            .map(|url| Webhook::new(url, config.auth.publish_webhook_timeout));
        Arc::new(App {
            placement,
            config: std::sync::RwLock::new(Arc::new(config)),
            registry: Registry::new(),
            channels: Mutex::new(HashMap::new()),
            publishers: Arc::new(Semaphore::new(max)),
            max_publishers: max,
            next_session: std::sync::atomic::AtomicU64::new(1),
            drains: Arc::default(),
            origin_addr: std::sync::OnceLock::new(),
            webhook: std::sync::RwLock::new(webhook),
            paused: Mutex::new(HashMap::new()),
            test_panics: std::sync::OnceLock::new(),
        })
    }

    /// Test only: the panics to inject ([`contain::TEST_PANIC_ENV`]); the
    /// first call wins.
    #[doc(hidden)]
    pub fn set_test_panics(&self, panics: TestPanics) {
        let _ = self.test_panics.set(panics);
    }

    /// Test only: the panics to inject into `channel`'s work (none in a
    /// real run).
    #[doc(hidden)]
    pub fn test_panics(&self, channel: &str) -> TestPanics {
        self.test_panics
            .get()
            .map(|t| t.for_channel(channel))
            .unwrap_or_default()
    }

    /// Where the HTTP origin listens (after `serve` bound it).
    pub fn origin_addr(&self) -> Option<SocketAddr> {
        self.origin_addr.get().copied()
    }

    /// The publish webhook, when one is configured: it decides every pushed
    /// publish (`ingest::publish::Publish::start_push`).
    pub fn webhook(&self) -> Option<Webhook> {
        self.webhook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The channels that have a runtime (published since start, not yet
    /// forgotten), in no particular order.
    pub fn channels(&self) -> Vec<Arc<ChannelRuntime>> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// A channel's runtime, if it has one.
    pub fn channel_runtime(&self, name: &str) -> Option<Arc<ChannelRuntime>> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Publisher slots in use, and the cap.
    pub fn publishers(&self) -> (usize, usize) {
        let free = self.publishers.available_permits();
        (
            self.max_publishers.saturating_sub(free),
            self.max_publishers,
        )
    }

    /// The GPUs and what admission has charged to each.
    pub fn gpu_usage(&self) -> Vec<GpuUsage> {
        self.placement.usage()
    }

    /// End channel `name`'s live publish session (the admin API): its
    /// driver stops with "kicked by the admin API". Returns the peer that
    /// was kicked, or `None` when the channel has no live publisher.
    pub fn kick(&self, name: &str) -> Option<Peer> {
        let channel = self.channel_runtime(name)?;
        let slot = channel.publisher.lock().unwrap_or_else(|e| e.into_inner());
        let live = slot.as_ref()?;
        live.kick.kick(KickReason::Admin);
        Some(live.peer.clone())
    }

    /// Pause or resume restream destination `index` of channel `name` (the
    /// admin API): remembered for the channel's next sessions too, and
    /// applied to the live one. `None`: the channel has no such
    /// destination in the configuration.
    pub fn set_destination_paused(&self, name: &str, index: usize, paused: bool) -> Option<()> {
        let count = self.config().channel_by_name(name)?.restream.len();
        if index >= count {
            return None;
        }
        {
            let mut map = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            let set = map.entry(name.to_owned()).or_default();
            if paused {
                set.insert(index);
            } else {
                set.remove(&index);
            }
        }
        if let Some(channel) = self.channel_runtime(name) {
            let restream = channel
                .restream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(r) = restream {
                r.set_paused(index, paused);
            }
        }
        Some(())
    }

    /// The indices of channel `name`'s paused restream destinations.
    pub fn paused_destinations(&self, name: &str) -> BTreeSet<usize> {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Record where a live session's ladder runs, for the admin API; a
    /// no-op when `session_id` no longer holds the channel.
    pub fn note_placement(&self, channel: &ChannelRuntime, session_id: u64, transcode: Transcode) {
        let mut slot = channel.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = slot.as_mut().filter(|p| p.session_id == session_id) {
            p.transcode = Some(transcode);
        }
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            segment_target: self.config().packaging.segment_seconds,
            part_target: self.config().packaging.part_seconds,
            window_segments: self.config().packaging.window_segments,
            max_bytes: self.config().packaging.max_channel_bytes,
        }
    }

    /// The channel's ladder: the passthrough rendition's name (None when the
    /// ladder has none: every rendition is encoded), and the encoded rungs.
    /// A channel without a ladder passes the source through as `source`.
    pub fn ladder_plan(&self, channel: &str) -> (Option<String>, Vec<RungPlan>) {
        plan_of(self.config().ladder_for(channel))
    }

    /// Decide where the channel's ladder runs (issue 4 §5): `Ok(None)` when
    /// it has no encoded rung; `Err` when the ladder's `fallback` is `fail`
    /// and no GPU can take it. The grant holds the channel's share of a GPU
    /// until it is dropped.
    pub fn place_ladder(&self, channel: &ChannelRuntime) -> Result<Option<Grant>, Refused> {
        let (source, rungs) = channel.ladder_plan();
        if rungs.is_empty() {
            return Ok(None);
        }
        let (backend, fallback) = channel
            .ladder
            .as_ref()
            .map_or((Backend::Cpu, Fallback::Cpu), |l| (l.backend, l.fallback));
        self.placement
            .admit(backend, fallback, &rungs, source.is_some())
            .map(Some)
    }

    /// What a grant's pipeline runs on: NVDEC, CUDA and NVENC on the granted
    /// GPU for a `gpu` placement (AV1 rungs still on rav1e), NVDEC and CUDA
    /// with x264 on the host for a `hybrid` one, libavcodec, swscale and x264
    /// otherwise.
    pub fn decode_backend(grant: &Grant) -> DecodeBackend {
        match grant.placement {
            Placement::Gpu { gpu } => DecodeBackend::Gpu { gpu },
            Placement::Hybrid { gpu } => DecodeBackend::Nvdec { gpu },
            Placement::Cpu => DecodeBackend::Cpu,
        }
    }

    /// Start the transcoding pipeline of a publisher session with the rungs
    /// its grant kept, on [`App::decode_backend`]. A GPU that cannot be used
    /// or fails moves the channel to the CPU decoder, and a rung whose NVENC
    /// fails to x264 (`gpu_fallbacks` in the decode's and the rung's stats).
    pub fn start_pipeline(
        &self,
        channel: &Arc<ChannelRuntime>,
        grant: &Grant,
        restream: Option<Arc<Restream>>,
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
            restream: restream.filter(|r| r.wants_rungs()),
        });
        let options = PipelineOptions {
            decode: Self::decode_backend(grant),
            test_panics: self.test_panics(&channel.name),
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
        if let Some(c) = self.config().channel_by_key(key) {
            return Ok(c.name.clone());
        }
        if !self.config().auth.open {
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
        if self.config().channel_by_name(key).is_some() {
            return Err(Refusal::UnknownKey);
        }
        Ok(key.to_string())
    }

    fn channel(&self, name: &str) -> Arc<ChannelRuntime> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| {
                let store = self.registry.get_or_create(name, &self.store_config());
                let ladder = self.config().ladder_for(name).cloned();
                let (source, rungs) = plan_of(ladder.as_ref());
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
                    restream: Mutex::new(None),
                    ladder,
                    latest_keyframe: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Admit a publisher for a key. The caller logs the outcome
    /// (`ingest::publish::Publish::start` does).
    pub fn admit(&self, key: &str, peer: impl Into<Peer>) -> Result<Admission, Refusal> {
        let name = self.channel_for_key(key)?;
        self.admit_named(name, peer.into())
    }

    /// Admit a configured channel by name, for a pull (the channel connects
    /// to its source itself: there is no key to check). The same publisher
    /// cap, slot and `duplicate_publisher` policy as [`App::admit`]: a push
    /// with the channel's key while its pull is live is refused or replaces
    /// it, and the other way round. The caller logs the outcome.
    pub fn admit_channel(&self, name: &str, peer: impl Into<Peer>) -> Result<Admission, Refusal> {
        if self.config().channel_by_name(name).is_none() {
            return Err(Refusal::UnknownChannel);
        }
        self.admit_named(name.to_string(), peer.into())
    }

    /// Admit a push for the channel the publish webhook named (already
    /// checked as a channel name by `control::webhook`): a configured
    /// channel or not, with the same cap, slot and duplicate policy as
    /// [`App::admit`]. The caller logs the outcome.
    pub fn admit_approved(&self, name: &str, peer: impl Into<Peer>) -> Result<Admission, Refusal> {
        self.admit_named(name.to_string(), peer.into())
    }

    fn admit_named(&self, name: String, peer: Peer) -> Result<Admission, Refusal> {
        let permit = self
            .publishers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::TooManyPublishers)?;
        let channel = self.channel(&name);
        let session_id = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kick = Arc::new(Kick::default());
        let input = Arc::new(InputMeter::new());
        let mut slot = channel.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.as_ref() {
            match self.config().ingest.duplicate_publisher {
                DuplicatePolicy::Refuse => return Err(Refusal::AlreadyLive),
                DuplicatePolicy::Replace => {
                    info!(channel = %name, old_peer = %old.peer, new_peer = %peer, "replacing the live publisher");
                    old.kick.kick(KickReason::Replaced);
                }
            }
        }
        *channel.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *slot = Some(PublisherHandle {
            session_id,
            peer,
            kick: kick.clone(),
            since: SystemTime::now(),
            input: input.clone(),
            transcode: None,
        });
        drop(slot);
        Ok(Admission {
            channel,
            session_id,
            kick,
            input,
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
    // a channel's panic is logged once, by what catches it (`contain`)
    contain::install_hook();
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
    // RTMPS: the certificate and key first, so that a bad file is named
    // before anything listens
    let rtmps = match (
        config.server.rtmps_listen,
        &config.server.tls_cert,
        &config.server.tls_key,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(cert, key)?);
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| AppError::Bind {
                        what: "RTMPS",
                        addr,
                        source: e,
                    })?;
            Some((listener, acceptor))
        }
        // (config validation: rtmps_listen needs both files)
        _ => None,
    };
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| AppError::Bind {
            what: "HTTP",
            addr: http_addr,
            source: e,
        })?;
    let admin_addr = config.server.admin_listen;
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| AppError::Bind {
            what: "admin",
            addr: admin_addr,
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
    match TestPanics::from_env() {
        Ok(panics) if panics.is_empty() => {}
        Ok(panics) => {
            warn!(
                "{} is set: panics will be injected (for tests only)",
                contain::TEST_PANIC_ENV
            );
            app.set_test_panics(panics);
        }
        Err(e) => warn!("ignored: {e}"),
    }
    let _ = app.origin_addr.set(http.local_addr().unwrap_or(http_addr));
    let origin_services = OriginServices {
        playback: app.config().auth.playback_secret.as_ref().map(|secret| {
            Arc::new(origin::signed::PlaybackAuth::new(
                secret.as_bytes(),
                &app.config().auth.playback_token_param,
            ))
        }),
        ..OriginServices::default()
    };
    let admin_state = crate::control::admin::AdminState::new(
        app.clone(),
        inventory,
        origin_services.requests.clone(),
    );
    let admin_local = admin.local_addr().unwrap_or(admin_addr);
    let (admin_stop, mut admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(crate::control::admin::serve(
        admin,
        admin_state.clone(),
        async move {
            let _ = admin_stopped.wait_for(|v| *v).await;
        },
    ));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        rtmp = %rtmp.local_addr().unwrap_or(rtmp_addr),
        rtmps = %rtmps
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
            .map_or_else(|| "off".to_string(), |a| a.to_string()),
        http = %http.local_addr().unwrap_or(http_addr),
        admin = %admin_local,
        mode = if app.config().auth.open { "open" } else { "closed" },
        signed_playback = app.config().auth.playback_secret.is_some(),
        publish_webhook = app.config().auth.publish_webhook.is_some(),
        channels = app.config().channels.len(),
        "ladder started"
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = IngestLimits::from_config(&app.config());
    // one connection cap for RTMP and RTMPS together
    let ingest = Ingest::new(app.clone(), limits);
    let rtmp_task = tokio::spawn(
        ingest
            .clone()
            .serve(rtmp, Transport::Plain, shutdown_rx.clone()),
    );
    let tls_acceptor = rtmps
        .as_ref()
        .map(|(_, acceptor)| Arc::new(std::sync::RwLock::new(acceptor.clone())));
    let rtmps_task = rtmps
        .zip(tls_acceptor.clone())
        .map(|((listener, _), acceptor)| {
            tokio::spawn(ingest.clone().serve(
                listener,
                Transport::Tls(acceptor),
                shutdown_rx.clone(),
            ))
        });
    // channels that pull their source: one task each, kept in step with the
    // configuration by reloads
    let mut pulls = Pulls::default();
    pulls.sync(&app);
    let mut origin_shutdown = shutdown_rx.clone();
    let origin_task = tokio::spawn(origin::serve_with(
        http,
        app.registry.clone(),
        OriginConfig {
            max_connections: app.config().origin.max_connections,
            max_parked: app.config().origin.max_parked,
        },
        origin_services,
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

    // systemd (Type=notify): ready now that every listener is bound
    let systemd = crate::control::systemd::Notifier::from_env();
    systemd.ready(&format!("serving: RTMP {rtmp_addr}, HTTP {http_addr}"));
    let _watchdog = systemd.spawn_watchdog(shutdown_rx.clone());
    // every listener is bound and serving
    admin_state.set_ready(true);
    // SIGHUP reloads; SIGINT or SIGTERM stops
    let mut hangup = hangups();
    loop {
        tokio::select! {
            _ = wait_for_signal() => break,
            _ = next_hangup(&mut hangup) => {
                systemd.reloading("reloading the configuration");
                reload(&app, &source, tls_acceptor.as_deref());
                pulls.sync(&app);
                systemd.ready(&format!("serving: RTMP {rtmp_addr}, HTTP {http_addr}"));
            }
        }
    }
    systemd.stopping();
    info!("shutting down: closing publishers and open segments");
    admin_state.set_ready(false);
    let _ = shutdown_tx.send(true);
    pulls.stop_all();
    // both listeners and the pulls end within one grace period
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = rtmp_task.await;
        if let Some(t) = rtmps_task {
            let _ = t.await;
        }
        while pulls.tasks.join_next().await.is_some() {}
    })
    .await;
    // then the transcoding pipelines deliver their last frames and close
    // their rungs' segments
    if !app.drains.wait(SHUTDOWN_GRACE).await {
        warn!(
            pipelines = app.drains.running(),
            "transcoding pipelines still draining after {:?}: their last segments are cut short",
            SHUTDOWN_GRACE
        );
    }
    let _ = reaper.await;
    match tokio::time::timeout(SHUTDOWN_GRACE, origin_task).await {
        Ok(Ok(Err(e))) => return Err(AppError::Origin(e.to_string())),
        Ok(_) => {}
        Err(_) => warn!("origin did not stop within {:?}", SHUTDOWN_GRACE),
    }
    // the admin server last: /readyz said 503 all through the shutdown
    let _ = admin_stop.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, admin_task).await;
    info!("stopped");
    Ok(())
}

/// The pull tasks, one per channel with `pull`, each with its own stop.
#[derive(Default)]
struct Pulls {
    /// channel -> (URL, stop)
    running: HashMap<String, (String, watch::Sender<bool>)>,
    tasks: tokio::task::JoinSet<()>,
}

impl Pulls {
    /// Start the pulls the configuration has and this set lacks, stop those it
    /// no longer has (or whose URL changed: stopped, then started anew).
    fn sync(&mut self, app: &Arc<App>) {
        let config = app.config();
        let wanted: HashMap<&str, &str> = config
            .channels
            .iter()
            .filter_map(|c| c.pull.as_deref().map(|u| (c.name.as_str(), u)))
            .collect();
        self.running.retain(|name, (url, stop)| {
            let keep = wanted.get(name.as_str()) == Some(&url.as_str());
            if !keep {
                info!(channel = %name, "pull stopped (configuration changed)");
                let _ = stop.send(true);
            }
            keep
        });
        for (name, url) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            self.tasks.spawn(supervise_pull(
                app.clone(),
                name.to_owned(),
                url.to_owned(),
                rx,
            ));
            self.running.insert(name.to_owned(), (url.to_owned(), tx));
        }
        while self.tasks.try_join_next().is_some() {}
    }

    fn stop_all(&mut self) {
        for (_, (_, stop)) in self.running.drain() {
            let _ = stop.send(true);
        }
    }
}

/// How long a pull whose task panicked waits before it starts again (so that
/// a panic at every start cannot spin).
pub const PULL_RESTART_DELAY: Duration = Duration::from_secs(1);

/// A channel's pull (`ingest::pull::run`) until it is stopped, started again
/// if it panics: a panic inside its publish session already only ends that
/// session (the pull reconnects); one anywhere else in the pull is logged
/// once here, naming the channel (never the URL: it holds a key).
async fn supervise_pull(
    app: Arc<App>,
    channel: String,
    url: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let pull =
            crate::ingest::pull::run(app.clone(), channel.clone(), url.clone(), stop.clone());
        match contain::catch_async(pull).await {
            Ok(()) => return,
            Err(message) => {
                tracing::error!(channel = %channel, "channel {channel}: pull task panicked: {message}; restarting the pull");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PULL_RESTART_DELAY) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

/// SIGHUP: re-read the configuration file and apply it (see [`App::reload`]);
/// an invalid file is refused with its errors and the running configuration
/// stays. The RTMPS certificate and key are re-read too (a renewed
/// certificate at the same paths), for the connections that follow.
fn reload(
    app: &App,
    source: &ConfigSource,
    tls: Option<&std::sync::RwLock<tokio_rustls::TlsAcceptor>>,
) {
    if source.path().is_none() {
        info!("reload: running on the embedded default configuration; nothing to re-read");
        return;
    }
    let config = match Config::load_from(source.clone()) {
        Ok((config, _)) => config,
        Err(errors) => {
            for e in &errors.0 {
                warn!("reload refused: {e}");
            }
            warn!(config = %source, "reload refused: the running configuration stays");
            return;
        }
    };
    // the certificate first: a reload that cannot read it is refused whole
    if let (Some(tls), Some(cert), Some(key)) = (
        tls,
        config.server.tls_cert.as_deref(),
        config.server.tls_key.as_deref(),
    ) {
        match tls::server_config(cert, key) {
            Ok(c) => {
                *tls.write().unwrap_or_else(|e| e.into_inner()) = tokio_rustls::TlsAcceptor::from(c)
            }
            Err(e) => {
                warn!("reload refused: {e}; the running configuration stays");
                return;
            }
        }
    }
    let notes = app.reload(config);
    info!(config = %source, "configuration reloaded");
    for n in notes {
        info!("reload: {n}");
    }
}

/// SIGHUP, as a stream (none where signals cannot be installed).
#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot handle SIGHUP: reload needs a restart");
            None
        }
    }
}

#[cfg(unix)]
async fn next_hangup(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangups() -> Option<()> {
    None
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) {
    std::future::pending().await
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
    async fn the_admin_api_kicks_live_publishers_only() {
        let app = app(true);
        assert_eq!(app.kick("cam"), None, "unknown channel");
        let a = app.admit("cam", peer()).unwrap();
        assert_eq!(a.kick.reason(), None);
        assert_eq!(app.kick("cam"), Some(Peer::Addr(peer())));
        assert_eq!(a.kick.reason(), Some(KickReason::Admin));
        // the driver's wait resolves with the reason (bounded only so a bug
        // cannot hang the test)
        let why = tokio::time::timeout(Duration::from_secs(10), a.kick.kicked()).await;
        assert_eq!(why, Ok(KickReason::Admin));
        app.release(&a.channel, a.session_id);
        assert_eq!(app.kick("cam"), None, "not live any more");
    }

    #[tokio::test]
    async fn paused_destinations_are_remembered_per_configured_channel() {
        let text = "[[channels]]\nname = \"news\"\nkey = \"k1\"\nrestream = [\"rtmp://a.example/live/x\", \"rtmp://b.example/live/y\"]\n[ladders.default]\nbackend = \"cpu\"\nrenditions = [ { name = \"source\", passthrough = true } ]\n";
        let app = App::new(
            Config::parse(text, "test.toml").unwrap(),
            LadderAdmission::new(Vec::new()),
        );
        assert_eq!(app.set_destination_paused("news", 1, true), Some(()));
        assert_eq!(app.set_destination_paused("news", 2, true), None);
        assert_eq!(app.set_destination_paused("other", 0, true), None);
        assert_eq!(app.paused_destinations("news"), BTreeSet::from([1]));
        assert_eq!(app.set_destination_paused("news", 1, false), Some(()));
        assert!(app.paused_destinations("news").is_empty());
    }

    #[tokio::test]
    async fn publisher_slots_in_use_are_reported() {
        let app = app(true);
        let (used, max) = app.publishers();
        assert_eq!((used, max), (0, 64));
        let a = app.admit("cam", peer()).unwrap();
        assert_eq!(app.publishers().0, 1);
        assert_eq!(app.channels().len(), 1);
        assert!(app.channel_runtime("cam").is_some());
        app.release(&a.channel, a.session_id);
        drop(a);
        assert_eq!(app.publishers().0, 0);
    }

    /// Release builds keep what containment needs: overflow checks (an
    /// overflow from network input panics, and is contained, rather than
    /// wrapping into a wrong length) and unwinding panics.
    #[test]
    fn the_release_profile_keeps_overflow_checks_and_unwinding() {
        let manifest: toml::Table = toml::from_str(include_str!("../Cargo.toml")).unwrap();
        let release = &manifest["profile"]["release"];
        assert_eq!(
            release.get("overflow-checks"),
            Some(&toml::Value::Boolean(true))
        );
        assert!(
            release
                .get("panic")
                .is_none_or(|p| p.as_str() == Some("unwind")),
            "{release:?}"
        );
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
