//! Restream: republishing a channel to third-party RTMP/RTMPS destinations
//! (YouTube, Facebook, any RTMP server) while it is live.
//!
//! ```text
//! publish session ──► Restream::source_event ─┬─► [queue] ─► destination task ─► RTMP(S) client ─► YouTube
//! rung sink ──────► Restream::rung_frame ─────┴─► [queue] ─► destination task ─► RTMP(S) client ─► Facebook
//! ```
//!
//! - A channel's `restream` entries ([`RestreamTarget`]) send the source as
//!   published, or one rendition of its ladder with the source's audio.
//! - One [`Destination`] per entry and publish session: a bounded queue
//!   ([`queue`]: drops to the next keyframe on overflow, counted), and a task
//!   (`destination`) that connects, publishes and reconnects with backoff and
//!   jitter ([`backoff`]) forever, until the publish session ends.
//! - A failing or slow destination never affects ingest, packaging or the
//!   others: the publish path only pushes into queues (never waits), and each
//!   destination has its own task, socket and queue.
//! - [`DestinationStatus`] (state, bytes, reconnects, last error, drops) is what
//!   the admin API and metrics read.
//! - Pause and resume (the admin API, [`Restream::set_paused`]): a paused
//!   destination unpublishes politely and closes, then stays paused (no
//!   reconnection) while its queue takes nothing: what the channel sends it
//!   meanwhile is dropped and counted in `dropped`. Resume connects at once
//!   and starts again at the next keyframe.
//! - [`tags`]: media back into FLV tag bodies (H.264 legacy tags, HEVC and AV1 in
//!   the Enhanced RTMP form, AAC).
//!
//! Stream keys are in the URLs: logs and status show [`redact`]ed URLs only.

pub mod backoff;
pub mod destination;
pub mod queue;
pub mod tags;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::control::config::RestreamTarget;
use crate::ingest::client::ConnectOptions;
use crate::media::{MediaEvent, VideoConfig, VideoFrame};
use queue::{DestinationQueue, Outgoing, QueueStats, DESTINATION_QUEUE};

/// A URL with its stream key hidden: `scheme://host[:port]/app/<key>` (the last
/// path segment and any query are the key); for logs and status.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // credentials in the authority are secrets too
    let host = authority.rsplit('@').next().unwrap_or_default();
    let app = path.rsplit_once('/').map(|(app, _)| app).unwrap_or("");
    let mut out = format!("{scheme}://{host}/");
    if !app.is_empty() {
        out.push_str(app);
        out.push('/');
    }
    out.push_str("<key>");
    out
}

/// Where a destination is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    /// Opening the connection (TCP, TLS, RTMP handshake, publish).
    Connecting,
    /// Publishing.
    Live,
    /// Waiting before the next attempt.
    Waiting,
    /// Paused by the admin API: disconnected, not reconnecting.
    Paused,
    /// The publish session ended.
    Stopped,
}

/// A destination's status, for the admin API and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DestinationStatus {
    /// The URL, redacted.
    pub target: String,
    /// The rendition sent; `None` for the source.
    pub rendition: Option<String>,
    pub state: DestinationState,
    /// Bytes written to the destination, over every connection.
    pub bytes: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// The last failure, redacted.
    pub last_error: Option<String>,
    /// Since when the current connection is live.
    #[serde(skip)]
    pub live_since: Option<SystemTime>,
    /// Media messages dropped: by the queue (overflow, waiting for a
    /// keyframe) and while paused.
    pub dropped: u64,
    /// Times the queue overflowed.
    pub overflows: u64,
    /// Paused by the admin API (the state turns `paused` once the
    /// connection is closed).
    pub paused: bool,
}

/// What a destination's publisher side and its task share.
#[derive(Debug)]
pub struct Destination {
    pub target: RestreamTarget,
    pub queue: Mutex<DestinationQueue>,
    /// Woken on each push.
    pub ready: tokio::sync::Notify,
    pub status: Mutex<DestinationStatus>,
    /// Paused by the admin API; the task watches it.
    pub paused: tokio::sync::watch::Sender<bool>,
    /// Media messages dropped because the destination was paused.
    paused_drops: AtomicU64,
    /// The channel's name, for log lines (set when the task starts).
    channel: OnceLock<String>,
    /// An overflow was logged at warning level since the destination last
    /// went live: the next ones of that connection go to debug level.
    overflow_warned: AtomicBool,
}

impl Destination {
    pub fn new(target: RestreamTarget) -> Arc<Destination> {
        Arc::new(Destination {
            status: Mutex::new(DestinationStatus {
                target: redact(&target.url),
                rendition: target.rendition.clone(),
                state: DestinationState::Connecting,
                bytes: 0,
                reconnects: 0,
                last_error: None,
                live_since: None,
                dropped: 0,
                overflows: 0,
                paused: false,
            }),
            target,
            queue: Mutex::new(DestinationQueue::new(DESTINATION_QUEUE)),
            ready: tokio::sync::Notify::new(),
            paused: tokio::sync::watch::Sender::new(false),
            paused_drops: AtomicU64::new(0),
            channel: OnceLock::new(),
            overflow_warned: AtomicBool::new(false),
        })
    }

    fn push(&self, item: Outgoing) {
        let media = matches!(item, Outgoing::Video(_) | Outgoing::Audio(_));
        if media && self.is_paused() {
            // paused: nothing is queued (configurations are: the queue
            // keeps the latest for the resume); counted
            self.paused_drops.fetch_add(1, Ordering::Relaxed);
            let stats = self.queue.lock().unwrap_or_else(|e| e.into_inner()).stats();
            self.note_queue(stats);
            return;
        }
        let (before, stats) = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let before = q.stats();
            q.push(item);
            (before, q.stats())
        };
        self.note_queue(stats);
        if stats.overflows > before.overflows {
            self.log_overflow(stats);
        }
        self.ready.notify_one();
    }

    /// One line per overflow: the first of a live connection at warning
    /// level (the destination takes less than the stream), the next ones of
    /// that connection, and those while it is not connected (its queue
    /// fills by design; "restream cannot connect" said why), at debug level.
    /// A destination that stays slow for hours costs a line, not one every
    /// few seconds; `/metrics` counts them all.
    fn log_overflow(&self, stats: QueueStats) {
        let channel = self.channel.get().map(String::as_str).unwrap_or("");
        let status = self.status();
        let target = &status.target;
        if status.state != DestinationState::Live
            || self.overflow_warned.swap(true, Ordering::Relaxed)
        {
            tracing::debug!(%channel, destination = %target, overflows = stats.overflows, dropped = stats.dropped, "restream queue overflowed");
        } else {
            tracing::warn!(%channel, destination = %target, overflows = stats.overflows, dropped = stats.dropped, "restream queue overflowed: the destination takes less than the stream; dropping to the next keyframe");
        }
    }

    /// The destination went live: its next overflow is news again.
    pub(crate) fn went_live(&self) {
        self.overflow_warned.store(false, Ordering::Relaxed);
    }

    fn note_queue(&self, stats: QueueStats) {
        let paused = self.paused_drops.load(Ordering::Relaxed);
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.dropped = stats.dropped + paused;
        s.overflows = stats.overflows;
    }

    /// Whether the admin API paused this destination.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pause (the task unpublishes and closes, then waits; what is queued
    /// is dropped and counted) or resume (the task connects at once).
    /// Returns whether this changed anything.
    pub fn set_paused(&self, paused: bool) -> bool {
        let changed = self
            .paused
            .send_if_modified(|p| std::mem::replace(p, paused) != paused);
        if changed && paused {
            let stats = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let mut media = 0u64;
                while let Some(item) = q.pop() {
                    if matches!(item, Outgoing::Video(_) | Outgoing::Audio(_)) {
                        media += 1;
                    }
                }
                // the configurations stay, for the resume
                q.restart();
                self.paused_drops.fetch_add(media, Ordering::Relaxed);
                q.stats()
            };
            self.note_queue(stats);
        }
        self.set(|s| s.paused = paused);
        changed
    }

    /// Change the status.
    pub fn set(&self, change: impl FnOnce(&mut DestinationStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A snapshot of the status.
    pub fn status(&self) -> DestinationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rendition sent, `None` for the source.
    fn rung(&self) -> Option<&str> {
        self.target.rendition.as_deref()
    }
}

/// A publish session's destinations: where the publish path and the rung sink
/// hand media (never blocking).
#[derive(Debug, Default)]
pub struct Restream {
    destinations: Vec<Arc<Destination>>,
    /// Turns true to stop the destinations' tasks ([`Restream::stop`]).
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Restream {
    /// Destinations for `targets`. `source_rendition`: the name of the ladder's
    /// passthrough rendition, if any (a target naming it gets the source).
    pub fn new(targets: &[RestreamTarget], source_rendition: Option<&str>) -> Restream {
        let destinations = targets
            .iter()
            .map(|t| {
                let mut t = t.clone();
                if t.rendition.is_some() && t.rendition.as_deref() == source_rendition {
                    t.rendition = None;
                }
                Destination::new(t)
            })
            .collect();
        Restream {
            destinations,
            stop: None,
        }
    }

    /// Start a task per destination on the current tokio runtime, for
    /// `channel`; `encoded`: the rungs this session encodes (a destination
    /// for another rendition is not started: its status says why).
    pub fn start(&mut self, channel: &str, encoded: &[String], options: ConnectOptions) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(%channel, "restream not started: no async runtime (a bug)");
            return;
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        for d in &self.destinations {
            let _ = d.channel.set(channel.to_owned());
            if let Some(rung) = d.rung() {
                if !encoded.iter().any(|e| e == rung) {
                    let why = format!(
                        "rendition {rung:?} is not encoded in this session (not in the ladder's placement)"
                    );
                    tracing::warn!(%channel, destination = %d.status().target, "restream not started: {why}");
                    d.set(|s| {
                        s.state = DestinationState::Stopped;
                        s.last_error = Some(why);
                    });
                    continue;
                }
            }
            let (channel, d, rx, options) =
                (channel.to_owned(), d.clone(), rx.clone(), options.clone());
            let target = d.status().target;
            let dest = d.clone();
            runtime.spawn(supervise(
                channel.clone(),
                target,
                rx.clone(),
                move |panic| {
                    if let Some(message) = panic {
                        dest.set(|s| {
                            s.state = DestinationState::Waiting;
                            s.last_error = Some(format!("task panicked: {message}"));
                        });
                    }
                    destination::run(channel.clone(), d.clone(), rx.clone(), options.clone())
                },
            ));
        }
        self.stop = Some(tx);
    }

    /// Stop every destination (each unpublishes, briefly, and ends).
    pub fn stop(&self) {
        if let Some(tx) = &self.stop {
            let _ = tx.send(true);
        }
    }

    /// Pause or resume destination `index` (in the channel's `restream`
    /// order); see [`Destination::set_paused`]. `None`: no such destination.
    pub fn set_paused(&self, index: usize, paused: bool) -> Option<bool> {
        self.destinations.get(index).map(|d| d.set_paused(paused))
    }

    /// Every destination's status.
    pub fn status(&self) -> Vec<DestinationStatus> {
        self.destinations.iter().map(|d| d.status()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
    }

    /// A demuxed event of the source: all of it to the source's destinations,
    /// its audio to the rungs' too.
    pub fn source_event(&self, event: &MediaEvent) {
        for d in &self.destinations {
            let item = match (event, d.rung()) {
                (MediaEvent::VideoConfig(c), None) => Outgoing::VideoConfig(c.clone()),
                (MediaEvent::Video(f), None) => Outgoing::Video(f.clone()),
                (MediaEvent::AudioConfig(c), _) => Outgoing::AudioConfig(c.clone()),
                (MediaEvent::Audio(f), _) => Outgoing::Audio(f.clone()),
                _ => continue,
            };
            d.push(item);
        }
    }

    /// A rung's new configuration (its encoder's).
    pub fn rung_config(&self, rung: &str, config: &Arc<VideoConfig>) {
        for d in self.destinations.iter().filter(|d| d.rung() == Some(rung)) {
            d.push(Outgoing::VideoConfig(config.clone()));
        }
    }

    /// A rung's access unit.
    pub fn rung_frame(&self, rung: &str, frame: &VideoFrame) {
        for d in self.destinations.iter().filter(|d| d.rung() == Some(rung)) {
            d.push(Outgoing::Video(frame.clone()));
        }
    }

    /// Whether any destination sends a rung (the ladder's output must reach it).
    pub fn wants_rungs(&self) -> bool {
        self.destinations.iter().any(|d| d.rung().is_some())
    }
}

impl Drop for Restream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a destination whose task panicked waits before a new task.
pub const RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the task `make` returns on its own tokio task; when that panics, one
/// error line names the channel and the destination (redacted), and after
/// [`RESTART_DELAY`] `make` is called again with the panic's message, until a
/// task returns or `stop` turns true. A panicking destination restarts alone:
/// ingest, packaging and the other destinations never see it.
async fn supervise<F, Fut>(
    channel: String,
    target: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut panic = None;
    loop {
        match tokio::spawn(make(panic.take())).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                tracing::error!(%channel, destination = %target, "restream task panicked: {message}; restarting the destination in {} s", RESTART_DELAY.as_secs());
                panic = Some(message);
            }
            // cancelled: the runtime is shutting down
            Err(_) => return,
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_DELAY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_the_key_and_credentials() {
        assert_eq!(
            redact("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl"),
            "rtmp://a.rtmp.youtube.com/live2/<key>"
        );
        assert_eq!(
            redact("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=secret"),
            "rtmps://live-api-s.facebook.com:443/rtmp/<key>"
        );
        assert_eq!(
            redact("rtmp://user:pw@h/app/inst/k"),
            "rtmp://h/app/inst/<key>"
        );
        assert_eq!(redact("rtmp://h/k"), "rtmp://h/<key>");
    }

    fn target(url: &str, rendition: Option<&str>) -> RestreamTarget {
        RestreamTarget {
            url: url.into(),
            rendition: rendition.map(Into::into),
        }
    }

    #[test]
    fn media_reaches_the_destinations_that_asked_for_it() {
        use crate::media::{AudioFrame, Timestamp};
        use bytes::Bytes;
        let r = Restream::new(
            &[
                target("rtmp://a/live/1", None),
                target("rtmp://b/live/2", Some("720p")),
                target("rtmp://c/live/3", Some("source")),
            ],
            Some("source"),
        );
        assert!(r.wants_rungs());
        let key = VideoFrame {
            dts: Timestamp::from_millis(0),
            pts: Timestamp::from_millis(0),
            keyframe: true,
            data: Bytes::new(),
        };
        r.source_event(&MediaEvent::Video(key.clone()));
        r.source_event(&MediaEvent::Audio(AudioFrame {
            dts: Timestamp::from_millis(0),
            data: Bytes::new(),
        }));
        r.rung_frame("720p", &key);
        r.rung_frame("480p", &key);
        let kinds = |d: &Destination| {
            let mut q = d.queue.lock().unwrap();
            std::iter::from_fn(|| q.pop())
                .map(|i| match i {
                    Outgoing::Video(_) => 'v',
                    Outgoing::Audio(_) => 'a',
                    _ => 'c',
                })
                .collect::<String>()
        };
        let d = r.destinations();
        assert_eq!(kinds(&d[0]), "va", "source: its video and audio");
        // the 720p destination waits for its own keyframe: the source's
        // audio before it is dropped, then the rung's keyframe
        assert_eq!(kinds(&d[1]), "v");
        assert_eq!(
            kinds(&d[2]),
            "va",
            "naming the passthrough rendition = the source"
        );
        assert_eq!(d[1].status().target, "rtmp://b/live/<key>");
    }

    #[test]
    fn a_paused_destination_queues_nothing_and_counts_what_it_drops() {
        use crate::media::{AudioFrame, Timestamp};
        use bytes::Bytes;
        let r = Restream::new(&[target("rtmp://a/live/1", None)], None);
        let d = &r.destinations()[0];
        let video = |ms: i64, keyframe: bool| {
            MediaEvent::Video(VideoFrame {
                dts: Timestamp::from_millis(ms),
                pts: Timestamp::from_millis(ms),
                keyframe,
                data: Bytes::new(),
            })
        };
        let audio = |ms: i64| {
            MediaEvent::Audio(AudioFrame {
                dts: Timestamp::from_millis(ms),
                data: Bytes::new(),
            })
        };
        r.source_event(&video(0, true));
        r.source_event(&audio(0));
        r.source_event(&video(33, false));
        assert_eq!(d.queue.lock().unwrap().len(), 3);
        // pausing drops what is queued (counted), and everything after
        assert_eq!(r.set_paused(0, true), Some(true));
        assert_eq!(r.set_paused(0, true), Some(false), "already paused");
        assert_eq!(r.set_paused(1, true), None, "no such destination");
        assert!(d.queue.lock().unwrap().is_empty());
        assert_eq!(d.status().dropped, 3);
        assert!(d.status().paused);
        r.source_event(&video(66, true));
        r.source_event(&audio(66));
        assert!(d.queue.lock().unwrap().is_empty());
        assert_eq!(d.status().dropped, 5);
        // resumed: queued again from the next keyframe
        assert_eq!(r.set_paused(0, false), Some(true));
        assert!(!d.status().paused);
        r.source_event(&audio(99));
        r.source_event(&video(100, true));
        let mut q = d.queue.lock().unwrap();
        assert!(matches!(q.pop(), Some(Outgoing::Video(f)) if f.keyframe));
        assert!(q.pop().is_none());
        drop(q);
        assert_eq!(d.status().dropped, 6, "the audio before the keyframe");
    }

    #[tokio::test]
    async fn a_panicking_destination_task_is_restarted_until_it_returns() {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let runs = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (runs.clone(), seen.clone());
        supervise("ch".into(), "rtmp://x/app/<key>".into(), rx, move |panic| {
            s.lock().unwrap().push(panic);
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![None, Some("boom 0".to_owned()), Some("boom 1".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_stopped_destination_is_not_restarted() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let task = tokio::spawn(supervise("ch".into(), "t".into(), rx, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        }));
        tokio::time::sleep(RESTART_DELAY / 2).await;
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
