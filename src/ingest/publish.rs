//! The publish session: one source's media into one channel, whatever carries it.
//!
//! SPEC.md, "Data flow": a pushed RTMP or RTMPS publisher and a pulled remote
//! stream go through this same path: admission (the channel, the publisher
//! slot and its duplicate policy, the publisher cap), ladder placement,
//! the transcoding pipeline, then every FLV tag body through the demuxer into
//! the packager and the pipeline, and at the end the segments closed and the
//! pipeline drained. No socket and no RTMP session here: the RTMP server
//! connection (`ingest::server`) and the pull client drive a [`Publish`] with
//! the messages they receive.
//!
//! A [`MediaTap`] sees every media message and metadata as the source sent it,
//! in order, with its timestamp on the session's normalised timeline: the
//! place restream hangs its forwarders.
//!
//! A pushed publish with `[auth] publish_webhook` set is admitted through
//! [`Publish::start_push`], which asks the webhook first (`control::webhook`:
//! fail closed) and admits the channel it names.
//!
//! Logs name the channel and the [`Peer`] (an address, or a pull URL already
//! redacted), never a stream key.
//!
//! Panics (`app::contain`): the media calls ([`Publish::video`],
//! [`Publish::audio`], [`Publish::metadata`]) are a containment boundary. A
//! panic under one is logged once, naming the channel, and ends the session
//! with [`Stop::Panicked`]: the driver disconnects the publisher, whose
//! reconnection starts the channel again after a discontinuity. A stage of
//! the transcoding pipeline that panicked is rebuilt in place instead, at the
//! next video frame: a new packager session (a discontinuity in every
//! rendition) and a new pipeline, the publisher still connected; at most
//! [`MAX_PIPELINE_RESTARTS`] times per session.

use crate::app::contain::{self, TestPanics};
use crate::app::{Admission, App, ChannelRuntime, KickReason, Refusal, Transcode};
use crate::control::meter::Kind;
use crate::control::webhook::PublishQuery;
use crate::ingest::client::ConnectOptions;
use crate::ingest::rtmp::amf0::Amf0Value;
use crate::media::flv::{Demuxer, MediaError};
use crate::media::{MediaEvent, RtmpTimestamp, Timestamp, MILLIS};
use crate::packaging::packager::{PackagerNotice, Pushed};
use crate::pipeline::admission::Grant;
use crate::pipeline::graph::ChannelPipeline;
use crate::restream::Restream;
use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::{error, info, warn};

/// Media warnings (malformed frames, timestamp jumps, packager refusals)
/// logged per session, at most. Attack: a publisher sending garbage on every
/// frame would otherwise flood the log (the drops are still counted in the
/// demuxer's stats, which the "publish ended" line reports).
pub const MAX_MEDIA_WARNINGS: u32 = 20;

/// Audio messages (configurations and frames) a session holds at its start
/// while no video configuration has arrived; then, or once this many are
/// held, they go to the packager in order, after the video configuration.
/// Relays send each codec's sequence header just before its first frame
/// (nginx-rtmp gives a player the AAC header and a frame, then the AVC
/// header): delivered as they come, the packager would take the stream for
/// audio-only and start it over, with a discontinuity, when video appears.
/// About 1.4 s of 48 kHz AAC; bounded so that an audio-only publisher (or
/// one that never sends video) only delays its start by that much.
pub const MAX_AUDIO_BEFORE_VIDEO: usize = 64;

/// Times a session rebuilds its transcoding pipeline after a stage panicked
/// (each one a discontinuity); the next panic ends the session instead
/// ([`Stop::Panicked`]). Attack: a source that makes the ladder panic every
/// time would otherwise restart it, with a discontinuity, at every keyframe
/// for as long as it publishes.
pub const MAX_PIPELINE_RESTARTS: u32 = 3;

/// Bytes of audio held at a session's start (see [`MAX_AUDIO_BEFORE_VIDEO`]),
/// at most: the hold ends at whichever cap comes first. Attack: audio
/// messages of up to 8 MiB (the chunk layer's limit) held 64 at a time,
/// 512 MiB. 64 AAC frames are some 50 KB.
pub const MAX_AUDIO_BEFORE_VIDEO_BYTES: usize = 1024 * 1024;

/// Who is publishing, for logs and for the channel's publisher slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A pushing publisher's address (RTMP or RTMPS).
    Addr(SocketAddr),
    /// A pulled source: its URL *already redacted* by the caller
    /// (`rtmps://host:443/app/<redacted>`): the stream name is a key.
    Pull(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Addr(a) => a.fmt(f),
            Peer::Pull(url) => f.write_str(url),
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Peer::Addr(a)
    }
}

/// What a publish names: a pushed publisher gives a stream key; a pull
/// channel knows its own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A stream key, mapped to a channel per `[auth]` ([`App::channel_for_key`]).
    Key(&'a str),
    /// A configured channel, by name ([`App::admit_channel`]).
    Channel(&'a str),
    /// The channel the publish webhook named for a pushed key
    /// ([`App::admit_approved`]; [`Publish::start_push`] gets there).
    Approved(&'a str),
}

/// Why a live publish must stop, found while handling its media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A newer publisher took the channel (`duplicate_publisher = "replace"`).
    Replaced,
    /// The admin API ended the session (`POST .../kick`).
    Kicked,
    /// The source sent media Ladder cannot package (the demuxer's message).
    Unsupported(String),
    /// The session panicked (logged once, with the panic's message, where
    /// it was caught), or its transcoding pipeline did more than
    /// [`MAX_PIPELINE_RESTARTS`] times: the publisher is disconnected, and
    /// its reconnection restarts the channel.
    Panicked,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Replaced => f.write_str("replaced by a new publisher"),
            Stop::Kicked => f.write_str("kicked by the admin API"),
            Stop::Unsupported(e) => f.write_str(e),
            Stop::Panicked => f.write_str("the session panicked: the publisher is disconnected"),
        }
    }
}

impl From<KickReason> for Stop {
    fn from(reason: KickReason) -> Stop {
        match reason {
            KickReason::Replaced => Stop::Replaced,
            KickReason::Admin => Stop::Kicked,
        }
    }
}

/// One message of the source, as a [`MediaTap`] sees it.
///
/// `time` is on the session's normalised timeline, in milliseconds from the
/// session's first frame (0): 64-bit, never going back, wraps and jumps of
/// the publisher's 32-bit clock taken out (`media::timeline`). A frame's
/// `time` is its decode time as the packager got it (the packager's timeline
/// is [`Publish::timeline_start`] + `time`); a sequence header, a message
/// with nothing to package (end of sequence, a repeated header) and metadata
/// carry the time of the latest frame before them (0 before the first).
/// `raw` is the timestamp as the source sent it.
#[derive(Debug, Clone, Copy)]
pub enum TapMessage<'a> {
    /// An FLV video tag body (RTMP message type 9), as received.
    Video {
        /// On the session's normalised timeline (see the type's docs).
        time: Timestamp,
        /// As the source sent it.
        raw: RtmpTimestamp,
        /// The whole tag body: the FLV video tag header included.
        payload: &'a Bytes,
    },
    /// An FLV audio tag body (RTMP message type 8), as received.
    Audio {
        /// On the session's normalised timeline (see the type's docs).
        time: Timestamp,
        /// As the source sent it.
        raw: RtmpTimestamp,
        /// The whole tag body: the FLV audio tag header included.
        payload: &'a Bytes,
    },
    /// `onMetaData`, `@setDataFrame` stripped: `values[0]` is the string
    /// "onMetaData", `values[1]` usually an ECMA array.
    Metadata {
        /// The latest frame's time (see the type's docs).
        time: Timestamp,
        /// The data message's values after `@setDataFrame`.
        values: &'a [Amf0Value],
    },
}

/// An observer of a publish session's source messages (restream hangs its
/// forwarders here).
///
/// Called on the task that drives the session, for every message the
/// session accepted, in arrival order: messages the demuxer refused as
/// malformed or unsupported, and anything after the session was replaced,
/// are not shown. An implementation must not block: it copies what it needs
/// (a `Bytes` clone is a reference count) into a bounded queue of its own and
/// drops by its own policy on overflow, so that a slow destination never
/// slows ingest.
pub trait MediaTap: Send {
    /// One message, in order.
    fn message(&mut self, message: &TapMessage<'_>);
    /// The session ended (called once, from [`Publish::finish`]).
    fn end(&mut self) {}
}

/// A live publish session: admitted, placed, packaging. Drive it with
/// [`Publish::video`], [`Publish::audio`] and [`Publish::metadata`]; end it
/// with [`Publish::finish`] (dropping it unfinished finishes it too, with
/// the reason "session dropped").
pub struct Publish {
    app: Arc<App>,
    peer: Peer,
    admission: Admission,
    demuxer: Demuxer,
    /// The packager timeline's value at the session's first frame.
    start: Timestamp,
    /// For the duration on the "publish ended" line.
    started: Instant,
    warnings: u32,
    /// The transcoding pipeline, when the ladder has encoded rungs.
    pipeline: Option<ChannelPipeline>,
    /// Where the ladder was placed; its GPU share is held until the
    /// pipeline has drained.
    grant: Option<Grant>,
    /// The packager session the pipeline writes for.
    session: u64,
    /// Observers of the source's messages.
    taps: Vec<Box<dyn MediaTap>>,
    /// The latest frame's tap time (session-relative).
    last_time: Timestamp,
    /// finish ran (by the caller or on drop).
    finished: bool,
    /// The channel's restream destinations for this session, if any.
    restream: Option<Arc<Restream>>,
    /// While no video configuration has arrived: the audio received, with
    /// its arrival time ([`MAX_AUDIO_BEFORE_VIDEO`]); `None` once delivered.
    early_audio: Option<Vec<(MediaEvent, SystemTime)>>,
    /// A media call panicked: the session only ends from now on.
    panicked: bool,
    /// Pipelines rebuilt after a stage panicked ([`MAX_PIPELINE_RESTARTS`]).
    pipeline_restarts: u32,
    /// Test only: panics to inject (stage `ingest`; `app::contain`).
    test_panics: TestPanics,
    /// Video messages received, for `test_panics`.
    video_messages: u64,
}

impl Publish {
    /// Admit `target` for `peer`, place its ladder, open a packager session
    /// and start the transcoding pipeline; logs "publish started", or
    /// "publish refused" with the reason and returns the refusal (its
    /// [`Refusal::status`] is the RTMP onStatus code and description).
    pub fn start(app: &Arc<App>, target: Target<'_>, peer: Peer) -> Result<Publish, Refusal> {
        let admitted = match target {
            Target::Key(key) => app.admit(key, peer.clone()),
            Target::Channel(name) => app.admit_channel(name, peer.clone()),
            Target::Approved(name) => app.admit_approved(name, peer.clone()),
        };
        let admission = match admitted {
            Ok(a) => a,
            Err(refusal) => {
                let (_, description) = refusal.status();
                // never log the key: the refusal's description does not hold it
                match target {
                    Target::Key(_) => warn!(%peer, reason = %description, "publish refused"),
                    Target::Channel(name) | Target::Approved(name) => {
                        warn!(channel = %name, %peer, reason = %description, "publish refused")
                    }
                }
                return Err(refusal);
            }
        };
        let grant = match app.place_ladder(&admission.channel) {
            Ok(grant) => grant,
            Err(refused) => {
                warn!(channel = %admission.channel.name, %peer, reason = %refused, "publish refused");
                app.release(&admission.channel, admission.session_id);
                return Err(Refusal::NoCapacity);
            }
        };
        let (start, session) = {
            let mut p = admission
                .channel
                .packager
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            (p.start_session(SystemTime::now()), p.session())
        };
        let restream = start_restream(app, &admission.channel, grant.as_ref());
        *admission
            .channel
            .restream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = restream.clone();
        let pipeline = grant
            .as_ref()
            .and_then(|g| app.start_pipeline(&admission.channel, g, restream.clone()));
        if let Some(g) = &grant {
            app.note_placement(
                &admission.channel,
                admission.session_id,
                Transcode {
                    placement: g.placement,
                    reason: g.reason.clone(),
                    runs_on: App::decode_backend(g),
                    dropped: g.dropped.clone(),
                    stats: pipeline.as_ref().map(ChannelPipeline::stats_handle),
                },
            );
        }
        match &grant {
            Some(g) => info!(
                channel = %admission.channel.name,
                %peer,
                rungs = g.rungs.len(),
                placement = %g.placement,
                placement_reason = %g.reason,
                runs_on = %App::decode_backend(g),
                "publish started"
            ),
            None => info!(channel = %admission.channel.name, %peer, "publish started"),
        }
        let test_panics = app.test_panics(&admission.channel.name);
        Ok(Publish {
            app: app.clone(),
            peer,
            admission,
            demuxer: Demuxer::new(start),
            start,
            started: Instant::now(),
            warnings: 0,
            pipeline,
            grant,
            session,
            taps: Vec::new(),
            last_time: Timestamp::zero(MILLIS),
            finished: false,
            restream,
            early_audio: Some(Vec::new()),
            panicked: false,
            pipeline_restarts: 0,
            test_panics,
            video_messages: 0,
        })
    }

    /// The channel's name (public: it appears in playback URLs).
    pub fn channel(&self) -> &str {
        &self.admission.channel.name
    }

    /// Who publishes, as logged.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The packager timeline's value at this session's first frame: add a
    /// [`TapMessage`]'s `time` to it to compare with a rung's frames.
    pub fn timeline_start(&self) -> Timestamp {
        self.start
    }

    /// Resolves when the session must end from outside: a newer publisher
    /// took the channel ([`Stop::Replaced`]) or the admin API kicked it
    /// ([`Stop::Kicked`]). The driver selects on it beside its socket and
    /// then calls [`Publish::finish`] with the stop as the reason. Owns what
    /// it needs, so it does not borrow the session.
    pub fn replaced(&self) -> impl Future<Output = Stop> + Send + 'static {
        let kick = self.admission.kick.clone();
        async move { Stop::from(kick.kicked().await) }
    }

    /// Admit a pushed publish of `key` (RTMP application `rtmp_app`) from
    /// `peer`. Without a publish webhook this is [`Publish::start`] with
    /// [`Target::Key`]. With one, the webhook is asked first (the whole
    /// exchange bounded by its timeout) and the channel it names is admitted
    /// ([`Target::Approved`]); any failure to get a yes refuses the publish
    /// with [`Refusal::WebhookDenied`] and logs why (never the key).
    pub async fn start_push(
        app: &Arc<App>,
        rtmp_app: &str,
        key: &str,
        peer: SocketAddr,
    ) -> Result<Publish, Refusal> {
        let Some(hook) = app.webhook() else {
            return Publish::start(app, Target::Key(key), Peer::Addr(peer));
        };
        let hint = app.config().channel_by_key(key).map(|c| c.name.clone());
        let query = PublishQuery {
            key,
            app: rtmp_app,
            peer,
            channel_hint: hint.as_deref(),
        };
        match hook.ask(&query).await {
            Ok(channel) => Publish::start(app, Target::Approved(&channel), Peer::Addr(peer)),
            Err(denial) => {
                warn!(%peer, reason = %denial, "publish refused by the publish webhook");
                Err(Refusal::WebhookDenied)
            }
        }
    }

    /// Hang an observer on the source's messages, from the next one on.
    pub fn add_tap(&mut self, tap: Box<dyn MediaTap>) {
        self.taps.push(tap);
    }

    /// One FLV video tag body with its RTMP timestamp. `Err`: the session
    /// must end (call [`Publish::finish`] with the reason).
    pub fn video(&mut self, timestamp: RtmpTimestamp, payload: Bytes) -> Result<(), Stop> {
        self.contained(|p| p.on_video(timestamp, payload))
    }

    fn on_video(&mut self, timestamp: RtmpTimestamp, payload: Bytes) -> Result<(), Stop> {
        self.check_current()?;
        if !self.test_panics.is_empty() {
            self.video_messages += 1;
            self.test_panics.check("ingest", self.video_messages);
        }
        self.restart_failed_pipeline()?;
        let tapped = (!self.taps.is_empty()).then(|| payload.clone());
        let r = self.demuxer.video(timestamp, payload);
        let time = self.tap_time(&r);
        if let (Some(payload), Ok(_)) = (&tapped, &r) {
            self.tap(&TapMessage::Video {
                time,
                raw: timestamp,
                payload,
            });
        }
        self.media(r)
    }

    /// One FLV audio tag body with its RTMP timestamp; see [`Publish::video`].
    pub fn audio(&mut self, timestamp: RtmpTimestamp, payload: Bytes) -> Result<(), Stop> {
        self.contained(|p| p.on_audio(timestamp, payload))
    }

    fn on_audio(&mut self, timestamp: RtmpTimestamp, payload: Bytes) -> Result<(), Stop> {
        self.check_current()?;
        let tapped = (!self.taps.is_empty()).then(|| payload.clone());
        let r = self.demuxer.audio(timestamp, payload);
        let time = self.tap_time(&r);
        if let (Some(payload), Ok(_)) = (&tapped, &r) {
            self.tap(&TapMessage::Audio {
                time,
                raw: timestamp,
                payload,
            });
        }
        self.media(r)
    }

    /// `onMetaData` (`@setDataFrame` stripped). Nothing is packaged from it
    /// (the sequence headers describe the media); taps see it.
    pub fn metadata(&mut self, values: &[Amf0Value]) -> Result<(), Stop> {
        self.contained(|p| {
            p.check_current()?;
            let time = p.last_time;
            p.tap(&TapMessage::Metadata { time, values });
            Ok(())
        })
    }

    /// Run a media call as a containment boundary (`app::contain`): a panic
    /// is logged once, naming the channel, and ends the session
    /// ([`Stop::Panicked`]); so does every call after it.
    fn contained(&mut self, call: impl FnOnce(&mut Self) -> Result<(), Stop>) -> Result<(), Stop> {
        if self.panicked {
            return Err(Stop::Panicked);
        }
        match contain::catch(|| call(self)) {
            Ok(r) => r,
            Err(message) => {
                self.panicked = true;
                let channel = &self.admission.channel.name;
                error!(
                    channel = %channel,
                    peer = %self.peer,
                    "channel {channel}: publish session panicked: {message}; disconnecting the publisher, the channel restarts when it reconnects"
                );
                Err(Stop::Panicked)
            }
        }
    }

    /// A stage of the transcoding pipeline panicked (logged once by the
    /// pipeline's sink, `app::RungWriter`): rebuild the channel in place. The
    /// packager closes this session's segments and opens a new session
    /// (every rendition continues after a discontinuity, the source's and the
    /// audio at the next keyframe, the rungs at their first IDR there); the
    /// old pipeline drains on a thread of its own, its output dropped as
    /// late; a new one starts on the same grant, with the current video
    /// configuration. The demuxer and its timeline go on. Past
    /// [`MAX_PIPELINE_RESTARTS`], the session ends instead.
    fn restart_failed_pipeline(&mut self) -> Result<(), Stop> {
        if !self.pipeline.as_ref().is_some_and(ChannelPipeline::failed) {
            return Ok(());
        }
        let channel = self.admission.channel.clone();
        if self.pipeline_restarts >= MAX_PIPELINE_RESTARTS {
            error!(
                channel = %channel.name,
                peer = %self.peer,
                restarts = self.pipeline_restarts,
                "channel {}: the transcoding pipeline panicked again after {} restarts; disconnecting the publisher",
                channel.name,
                self.pipeline_restarts
            );
            self.panicked = true;
            return Err(Stop::Panicked);
        }
        self.pipeline_restarts += 1;
        let old_session = self.session;
        {
            let mut p = channel.packager.lock().unwrap_or_else(|e| e.into_inner());
            p.end_session();
            // (the returned start is for a new demuxer; this one goes on)
            let _ = p.start_session(SystemTime::now());
            self.session = p.session();
            // the configurations the packager was given, again (once the
            // audio held at the start was delivered: until then it has none)
            if self.early_audio.is_none() {
                let configs = [
                    self.demuxer
                        .video_config()
                        .map(|c| MediaEvent::VideoConfig(c.clone())),
                    self.demuxer
                        .audio_config()
                        .map(|c| MediaEvent::AudioConfig(c.clone())),
                ];
                for event in configs.into_iter().flatten() {
                    let _ = p.push(event, SystemTime::now());
                }
            }
        }
        if let Some(old) = self.pipeline.take() {
            drain_pipeline(
                channel.clone(),
                old,
                old_session,
                None,
                None,
                self.app.drains.start(),
            );
        }
        self.pipeline = self
            .grant
            .as_ref()
            .and_then(|g| self.app.start_pipeline(&channel, g, self.restream.clone()));
        if let Some(g) = &self.grant {
            self.app.note_placement(
                &channel,
                self.admission.session_id,
                Transcode {
                    placement: g.placement,
                    reason: g.reason.clone(),
                    runs_on: App::decode_backend(g),
                    dropped: g.dropped.clone(),
                    stats: self.pipeline.as_ref().map(ChannelPipeline::stats_handle),
                },
            );
        }
        if let (Some(pipeline), Some(config)) = (&self.pipeline, self.demuxer.video_config()) {
            pipeline.video_config(config.clone());
        }
        info!(
            channel = %channel.name,
            peer = %self.peer,
            restart = self.pipeline_restarts,
            "transcoding pipeline restarted: every rendition continues after a discontinuity"
        );
        Ok(())
    }

    /// End the session: close its segments (unless a newer publisher has
    /// the channel), free the publisher slot, drain the pipeline on a thread
    /// of its own (the ladder's GPU share is freed once it has stopped),
    /// and log one "publish ended" line with `reason`.
    pub fn finish(mut self, reason: impl fmt::Display) {
        self.end(&reason);
    }

    fn end(&mut self, reason: &dyn fmt::Display) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let channel = self.admission.channel.clone();
        // A panic here (after one in a media call, say) must not keep the
        // channel's publisher slot: it is released whatever happens.
        let closed = contain::catch(|| {
            for tap in &mut self.taps {
                tap.end();
            }
            // an audio-only session shorter than the hold still gets packaged
            self.deliver_early_audio();
            let mut p = channel.packager.lock().unwrap_or_else(|e| e.into_inner());
            // Only the current publisher closes the channel's segments; a
            // replaced one already lost them to its successor. Checked under
            // the packager's lock: the successor's admission changes the slot
            // before it opens its packager session, so this cannot close it.
            if self.is_current() {
                p.end_session();
            }
        });
        if let Err(message) = closed {
            error!(
                channel = %channel.name,
                peer = %self.peer,
                "channel {}: closing the publish session panicked: {message}",
                channel.name
            );
        }
        // the source's destinations stop now; a rung's once the pipeline
        // has drained (its last frames still go out)
        let restream = self.restream.take();
        if self.pipeline.is_none() {
            if let Some(r) = &restream {
                r.stop();
            }
        }
        self.app.release(&channel, self.admission.session_id);
        if let Some(pipeline) = self.pipeline.take() {
            drain_pipeline(
                channel.clone(),
                pipeline,
                self.session,
                self.grant.take(),
                restream,
                self.app.drains.start(),
            );
        }
        let stats = self.demuxer.stats();
        info!(
            channel = %channel.name,
            peer = %self.peer,
            duration_s = format!("{:.1}", self.started.elapsed().as_secs_f64()),
            video_frames = stats.video.frames,
            audio_frames = stats.audio.frames,
            bytes = stats.video.bytes + stats.audio.bytes,
            reason = %reason,
            "publish ended"
        );
    }

    /// Whether this session still holds its channel's publisher slot.
    fn is_current(&self) -> bool {
        self.admission
            .channel
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.session_id)
            == Some(self.admission.session_id)
    }

    /// A replaced publisher must not write after its successor began.
    fn check_current(&self) -> Result<(), Stop> {
        if self.is_current() {
            Ok(())
        } else {
            Err(Stop::Replaced)
        }
    }

    /// The tap time of a demuxed message: a frame's decode time from the
    /// session's start; otherwise the latest frame's.
    fn tap_time(&mut self, r: &Result<Option<MediaEvent>, MediaError>) -> Timestamp {
        let dts = match r {
            Ok(Some(MediaEvent::Video(f))) => Some(f.dts),
            Ok(Some(MediaEvent::Audio(f))) => Some(f.dts),
            _ => None,
        };
        if let Some(dts) = dts {
            self.last_time = (dts - self.start).rescale(MILLIS);
        }
        self.last_time
    }

    fn tap(&mut self, message: &TapMessage<'_>) {
        for tap in &mut self.taps {
            tap.message(message);
        }
    }

    /// Hand a demuxed event to the packager and the pipeline; log what
    /// deserves it.
    fn media(&mut self, r: Result<Option<MediaEvent>, MediaError>) -> Result<(), Stop> {
        let channel = self.admission.channel.clone();
        match r {
            Ok(Some(event)) => {
                let now = SystemTime::now();
                match (&mut self.early_audio, &event) {
                    (None, _) => self.deliver(event, now),
                    (Some(held), MediaEvent::AudioConfig(_) | MediaEvent::Audio(_))
                        if held.len() < MAX_AUDIO_BEFORE_VIDEO
                            && held_bytes(held) + event_bytes(&event)
                                <= MAX_AUDIO_BEFORE_VIDEO_BYTES =>
                    {
                        held.push((event, now));
                    }
                    (Some(_), MediaEvent::VideoConfig(_)) => {
                        // the video configuration first, then the audio held
                        self.deliver(event, now);
                        self.deliver_early_audio();
                    }
                    (Some(_), _) => {
                        self.deliver_early_audio();
                        self.deliver(event, now);
                    }
                }
            }
            Ok(None) => {}
            Err(e) if e.is_unsupported() => {
                error!(channel = %channel.name, peer = %self.peer, error = %e, "publish stopped: unsupported media");
                return Err(Stop::Unsupported(e.to_string()));
            }
            Err(e) => {
                if self.warnings < MAX_MEDIA_WARNINGS {
                    self.warnings += 1;
                    warn!(channel = %channel.name, peer = %self.peer, error = %e, "malformed media dropped");
                }
            }
        }
        for n in self.demuxer.take_notices() {
            if self.warnings < MAX_MEDIA_WARNINGS {
                self.warnings += 1;
                warn!(channel = %channel.name, peer = %self.peer, notice = ?n, "publisher timestamps");
            }
        }
        Ok(())
    }

    /// Deliver the audio held at the session's start ([`MAX_AUDIO_BEFORE_VIDEO`]),
    /// in order, and hold no more.
    fn deliver_early_audio(&mut self) {
        for (event, wall) in self.early_audio.take().unwrap_or_default() {
            self.deliver(event, wall);
        }
    }

    /// One demuxed event to the restream destinations, the packager and the
    /// transcoding pipeline; `wall`: when it arrived.
    fn deliver(&mut self, event: MediaEvent, wall: SystemTime) {
        let channel = self.admission.channel.clone();
        match &event {
            MediaEvent::Video(f) => {
                self.admission
                    .input
                    .record(Kind::Video, f.data.len(), Instant::now())
            }
            MediaEvent::Audio(f) => {
                self.admission
                    .input
                    .record(Kind::Audio, f.data.len(), Instant::now())
            }
            _ => {}
        }
        if let Some(r) = &self.restream {
            r.source_event(&event);
        }
        if let (MediaEvent::Video(f), Some(c)) = (&event, self.demuxer.video_config()) {
            if f.keyframe {
                *channel
                    .latest_keyframe
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((c.clone(), f.clone()));
            }
        }
        // what the transcoding pipeline needs of it (cheap clones)
        let forward = match (&self.pipeline, &event) {
            (Some(_), MediaEvent::VideoConfig(c)) => Some(MediaEvent::VideoConfig(c.clone())),
            (Some(_), MediaEvent::Video(f)) => Some(MediaEvent::Video(f.clone())),
            _ => None,
        };
        let mut p = channel.packager.lock().unwrap_or_else(|e| e.into_inner());
        let pushed = match p.push(event, wall) {
            Ok(pushed) => pushed,
            Err(e) => {
                if self.warnings < MAX_MEDIA_WARNINGS {
                    self.warnings += 1;
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
                PackagerNotice::RungMissedSegment { rung, msn } => {
                    if self.warnings < MAX_MEDIA_WARNINGS {
                        self.warnings += 1;
                        warn!(
                            channel = %channel.name, rung, msn,
                            "rung missed a segment: no keyframe between two cuts, its encoder is far behind; its playlist skips that number (give the rung a faster preset, or the machine more CPU)"
                        );
                    }
                }
            }
        }
        drop(p);
        if let Some(pipeline) = &self.pipeline {
            match forward {
                Some(MediaEvent::VideoConfig(c)) => pipeline.video_config(c),
                Some(MediaEvent::Video(f)) if pushed.accepted => {
                    pipeline.video_frame(f, pushed.segment_start)
                }
                _ => {}
            }
        }
    }
}

/// The media bytes of an event (a frame's data; configurations count 0).
fn event_bytes(event: &MediaEvent) -> usize {
    match event {
        MediaEvent::Audio(f) => f.data.len(),
        MediaEvent::Video(f) => f.data.len(),
        _ => 0,
    }
}

/// The media bytes held at a session's start.
fn held_bytes(held: &[(MediaEvent, SystemTime)]) -> usize {
    held.iter().map(|(e, _)| event_bytes(e)).sum()
}

impl Drop for Publish {
    fn drop(&mut self) {
        self.end(&"session dropped");
    }
}

/// The channel's restream destinations for a new session, started (`None`
/// when it has none). A destination for a rendition the grant does not
/// encode is not started; its status says so.
fn start_restream(
    app: &App,
    channel: &ChannelRuntime,
    grant: Option<&Grant>,
) -> Option<Arc<Restream>> {
    let config = app.config();
    let targets = &config.channel_by_name(&channel.name)?.restream;
    if targets.is_empty() {
        return None;
    }
    let (source, _) = channel.ladder_plan();
    let channel = channel.name.as_str();
    let encoded: Vec<String> = grant
        .map(|g| g.rungs.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default();
    let mut restream = Restream::new(targets, source.as_deref());
    // destinations the admin API paused stay paused in the new session
    for index in app.paused_destinations(channel) {
        restream.set_paused(index, true);
    }
    restream.start(channel, &encoded, ConnectOptions::default());
    Some(Arc::new(restream))
}

/// Let the transcoding pipeline finish what it holds (on a thread of its own:
/// flushing encoders takes a few frame intervals), then close the rungs'
/// segments and log one line per rung.
fn drain_pipeline(
    channel: Arc<ChannelRuntime>,
    pipeline: ChannelPipeline,
    session: u64,
    grant: Option<Grant>,
    restream: Option<Arc<Restream>>,
    draining: crate::app::DrainGuard,
) {
    let name = channel.name.clone();
    let spawned = std::thread::Builder::new()
        .name("ladder-drain".into())
        .spawn(move || {
            let _draining = draining;
            let stats = pipeline.finish();
            // the ladder's GPU share is free once its pipeline has stopped
            drop(grant);
            if let Some(r) = restream {
                r.stop();
            }
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
                    encoder = r.encoder,
                    gpu_fallbacks = r.gpu_fallbacks,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Config;
    use crate::pipeline::admission::Admission as LadderAdmission;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A passthrough-only appliance (no pipeline thread) with one channel,
    /// `news`, key `k1`.
    fn app(open: bool, ingest: &str) -> Arc<App> {
        let text = format!(
            "[auth]\nopen = {open}\n[ingest]\n{ingest}\n[[channels]]\nname = \"news\"\nkey = \"k1\"\n[ladders.default]\nbackend = \"cpu\"\nrenditions = [ {{ name = \"source\", passthrough = true }} ]\n"
        );
        App::new(
            Config::parse(&text, "test.toml").unwrap(),
            LadderAdmission::new(Vec::new()),
        )
    }

    fn pushed() -> Peer {
        Peer::Addr("127.0.0.1:5000".parse().unwrap())
    }

    const PULL_URL: &str = "rtmps://upstream.example:443/live/<redacted>";

    fn pulled() -> Peer {
        Peer::Pull(PULL_URL.into())
    }

    fn refusal(r: Result<Publish, Refusal>) -> Refusal {
        match r {
            Ok(p) => panic!("admitted {} for {}", p.channel(), p.peer()),
            Err(e) => e,
        }
    }

    /// Who holds the channel's publisher slot, as logged.
    fn slot(p: &Publish) -> Option<String> {
        p.admission
            .channel
            .publisher
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| h.peer.to_string())
    }

    #[tokio::test]
    async fn a_pull_is_admitted_by_channel_name_and_shares_the_slot_with_pushes() {
        let app = app(false, "");
        let pull = Publish::start(&app, Target::Channel("news"), pulled()).unwrap();
        assert_eq!(pull.channel(), "news");
        assert_eq!(slot(&pull).as_deref(), Some(PULL_URL));
        assert!(
            app.registry.get("news").is_some(),
            "no store for the channel"
        );
        // a push with the channel's key meets the pull in the same slot
        assert_eq!(
            refusal(Publish::start(&app, Target::Key("k1"), pushed())),
            Refusal::AlreadyLive
        );
        pull.finish("test over");
        let push = Publish::start(&app, Target::Key("k1"), pushed()).unwrap();
        assert_eq!(push.channel(), "news");
        assert_eq!(slot(&push).as_deref(), Some("127.0.0.1:5000"));
        // and the other way round
        assert_eq!(
            refusal(Publish::start(&app, Target::Channel("news"), pulled())),
            Refusal::AlreadyLive
        );
    }

    #[tokio::test]
    async fn refusals_carry_their_rtmp_status() {
        let closed = app(false, "");
        // a pull names a configured channel, in closed and in open mode
        let r = refusal(Publish::start(&closed, Target::Channel("other"), pulled()));
        assert_eq!(r, Refusal::UnknownChannel);
        assert_eq!(r.status().0, "NetStream.Publish.BadName");
        let open = app(true, "");
        assert_eq!(
            refusal(Publish::start(&open, Target::Channel("cam"), pulled())),
            Refusal::UnknownChannel
        );
        // a push with an unknown key, closed mode
        let r = refusal(Publish::start(&closed, Target::Key("nope"), pushed()));
        assert_eq!(r, Refusal::UnknownKey);
        assert_eq!(r.status().0, "NetStream.Publish.Unauthorized");
        // the publisher cap counts pulls and pushes together
        let capped = app(true, "max_publishers = 1");
        let live = Publish::start(&capped, Target::Channel("news"), pulled()).unwrap();
        let r = refusal(Publish::start(&capped, Target::Key("cam"), pushed()));
        assert_eq!(r, Refusal::TooManyPublishers);
        assert_eq!(r.status().0, "NetStream.Publish.Rejected");
        live.finish("test over");
        assert!(Publish::start(&capped, Target::Key("cam"), pushed()).is_ok());
    }

    #[tokio::test]
    async fn a_replaced_session_stops_and_leaves_its_successor_live() {
        let app = app(false, "duplicate_publisher = \"replace\"");
        let mut first = Publish::start(&app, Target::Key("k1"), pushed()).unwrap();
        let replaced = first.replaced();
        let second = Publish::start(&app, Target::Channel("news"), pulled()).unwrap();
        // the driver's select wakes (bounded wait only so a bug cannot hang the test)
        assert!(tokio::time::timeout(Duration::from_secs(10), replaced)
            .await
            .is_ok());
        assert_eq!(
            first.video(RtmpTimestamp(0), Bytes::from_static(&[0x17, 0, 0, 0, 0])),
            Err(Stop::Replaced)
        );
        assert_eq!(first.metadata(&[]), Err(Stop::Replaced));
        let store = second.admission.channel.store.clone();
        // the replaced session ends for whatever reason: the successor keeps
        // its slot and its open session
        first.finish("publisher closed the connection");
        assert!(store.read().live, "the successor's session was closed");
        assert_eq!(slot(&second).as_deref(), Some(PULL_URL));
        second.finish("test over");
        assert!(!store.read().live);
    }

    #[tokio::test]
    async fn a_kicked_session_learns_it_was_the_admin_api() {
        let app = app(false, "");
        let push = Publish::start(&app, Target::Key("k1"), pushed()).unwrap();
        let stopped = push.replaced();
        assert_eq!(app.kick("news"), Some(pushed()));
        // bounded only so a bug cannot hang the test
        let stop = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        assert_eq!(stop, Ok(Stop::Kicked));
        assert_eq!(Stop::Kicked.to_string(), "kicked by the admin API");
        push.finish(Stop::Kicked);
        assert_eq!(app.kick("news"), None);
    }

    /// A tap that panics: a panic on the connection's task, inside a
    /// media call.
    struct Bomb;

    impl MediaTap for Bomb {
        fn message(&mut self, _: &TapMessage<'_>) {
            panic!("tap exploded");
        }
    }

    #[tokio::test]
    async fn a_panic_in_a_media_call_ends_the_session_and_frees_the_channel() {
        let app = app(true, "");
        let mut p = Publish::start(&app, Target::Key("cam"), pushed()).unwrap();
        let store = p.admission.channel.store.clone();
        assert!(store.read().live);
        p.add_tap(Box::new(Bomb));
        let mut vseq = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        vseq.extend(hex("0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800"));
        assert_eq!(
            p.video(RtmpTimestamp(0), Bytes::from(vseq)),
            Err(Stop::Panicked)
        );
        // the session only ends from now on
        let aac = Bytes::from_static(&[0xaf, 0x01, 0x21, 0x10, 0x04]);
        assert_eq!(p.audio(RtmpTimestamp(0), aac), Err(Stop::Panicked));
        assert_eq!(p.metadata(&[]), Err(Stop::Panicked));
        p.finish(Stop::Panicked);
        assert!(!store.read().live, "the session's segments were not closed");
        // the channel's slot is free: its publisher reconnects at once
        let again = Publish::start(&app, Target::Key("cam"), pushed()).unwrap();
        assert!(store.read().live);
        again.finish("test over");
    }

    #[tokio::test]
    async fn the_input_meter_counts_what_the_publisher_sends() {
        let app = app(true, "");
        let mut p = Publish::start(&app, Target::Key("cam"), pushed()).unwrap();
        let mut vseq = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        vseq.extend(hex("0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800"));
        p.video(RtmpTimestamp(0), Bytes::from(vseq)).unwrap();
        p.audio(
            RtmpTimestamp(0),
            Bytes::from_static(&[0xaf, 0x00, 0x11, 0x90, 0x56, 0xe5, 0x00]),
        )
        .unwrap();
        let idr = vec![0x17, 0x01, 0, 0, 0, 0, 0, 0, 4, 0x65, 0x88, 0x84, 0x00];
        p.video(RtmpTimestamp(0), Bytes::from(idr)).unwrap();
        p.audio(
            RtmpTimestamp(10),
            Bytes::from_static(&[0xaf, 0x01, 0x21, 0x10, 0x04]),
        )
        .unwrap();
        let totals = p.admission.input.totals();
        // one video access unit (the headers are not frames), one AAC frame
        assert_eq!(totals.video_frames, 1);
        assert_eq!(totals.audio_frames, 1);
        assert_eq!(totals.audio_bytes, 3);
        assert!(totals.video_bytes > 0);
        p.finish("test over");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// What a tap saw: kind, time (ms), raw timestamp, payload.
    type Seen = Arc<Mutex<Vec<(&'static str, i64, u32, Vec<u8>)>>>;

    struct Recorder {
        seen: Seen,
        ended: Arc<Mutex<u32>>,
    }

    impl MediaTap for Recorder {
        fn message(&mut self, m: &TapMessage<'_>) {
            let row = match *m {
                TapMessage::Video { time, raw, payload } => {
                    ("video", time.as_millis(), raw.0, payload.to_vec())
                }
                TapMessage::Audio { time, raw, payload } => {
                    ("audio", time.as_millis(), raw.0, payload.to_vec())
                }
                TapMessage::Metadata { time, values } => (
                    "metadata",
                    time.as_millis(),
                    0,
                    format!("{values:?}").into_bytes(),
                ),
            };
            self.seen.lock().unwrap().push(row);
        }
        fn end(&mut self) {
            *self.ended.lock().unwrap() += 1;
        }
    }

    /// Each track's segments as the store lists them: (msn, discontinuity).
    fn segments(p: &Publish) -> Vec<(String, Vec<(u64, bool)>)> {
        let state = p.admission.channel.store.read();
        state
            .tracks
            .iter()
            .map(|t| {
                let list = t.segments.iter().map(|s| (s.msn, s.discontinuity));
                (t.info.id.clone(), list.collect())
            })
            .collect()
    }

    /// A relay's order (nginx-rtmp's to a player): the AAC header and a
    /// frame, then the AVC header and the keyframe. The audio waits for the
    /// video configuration: one stream, audio and video in the same
    /// segments, no discontinuity.
    #[tokio::test]
    async fn audio_before_the_video_configuration_waits_for_it() {
        let app = app(true, "");
        let mut p = Publish::start(&app, Target::Key("cam"), pushed()).unwrap();
        let mut vseq = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        vseq.extend(hex("0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800"));
        let aseq = Bytes::from_static(&[0xaf, 0x00, 0x11, 0x90, 0x56, 0xe5, 0x00]);
        let idr = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 4, 0x65, 0x88, 0x84, 0x00]);
        let inter = Bytes::from_static(&[0x27, 0x01, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9a, 0x21]);
        let aac = Bytes::from_static(&[0xaf, 0x01, 0x21, 0x10, 0x04]);
        p.audio(RtmpTimestamp(0), aseq).unwrap();
        p.audio(RtmpTimestamp(0), aac.clone()).unwrap();
        p.video(RtmpTimestamp(0), Bytes::from(vseq)).unwrap();
        // 5 s: an IDR every 2 s, a frame every 33 ms, AAC every 21 ms
        let (mut v, mut a) = (21u32, 21u32);
        while v < 5000 {
            if a <= v {
                p.audio(RtmpTimestamp(a), aac.clone()).unwrap();
                a += 21;
            } else {
                let body = if (v - 21) % 2000 < 33 { &idr } else { &inter };
                p.video(RtmpTimestamp(v), body.clone()).unwrap();
                v += 33;
            }
        }
        let before_end = segments(&p);
        p.finish("test over");
        let tracks: Vec<String> = before_end.iter().map(|t| t.0.clone()).collect();
        assert_eq!(tracks.len(), 2, "{before_end:?}");
        let (video, audio) = (&before_end[0].1, &before_end[1].1);
        assert!(video.len() >= 2, "{before_end:?}");
        assert_eq!(
            audio, video,
            "{tracks:?}: the same segments, no discontinuity"
        );
        assert!(video.iter().all(|s| !s.1), "{before_end:?}");
    }

    #[tokio::test]
    async fn taps_see_every_accepted_message_in_order_on_the_session_timeline() {
        let app = app(true, "");
        let mut p = Publish::start(&app, Target::Key("cam"), pushed()).unwrap();
        let seen: Seen = Arc::default();
        let ended = Arc::new(Mutex::new(0));
        p.add_tap(Box::new(Recorder {
            seen: seen.clone(),
            ended: ended.clone(),
        }));
        // FFmpeg's first tags for libx264 High 720p30 + AAC-LC (media::flv tests)
        let mut vseq = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        vseq.extend(hex("0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800"));
        let aseq = vec![0xaf, 0x00, 0x11, 0x90, 0x56, 0xe5, 0x00];
        let idr = vec![0x17, 0x01, 0, 0, 0, 0, 0, 0, 4, 0x65, 0x88, 0x84, 0x00];
        let inter = vec![0x27, 0x01, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9a, 0x21];
        let aac = vec![0xaf, 0x01, 0x21, 0x10, 0x04];
        let metadata = [
            Amf0Value::String("onMetaData".into()),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]),
        ];
        // the publisher's clock is about to wrap past 32 bits
        let t0 = 0xFFFF_FFF0u32;
        let b = |v: &Vec<u8>| Bytes::from(v.clone());
        p.metadata(&metadata).unwrap();
        p.video(RtmpTimestamp(t0), b(&vseq)).unwrap();
        p.audio(RtmpTimestamp(t0), b(&aseq)).unwrap();
        p.video(RtmpTimestamp(t0), b(&idr)).unwrap();
        p.audio(RtmpTimestamp(t0.wrapping_add(10)), b(&aac))
            .unwrap();
        // malformed (a truncated tag header): dropped, not shown to taps
        p.video(
            RtmpTimestamp(t0.wrapping_add(20)),
            Bytes::from_static(&[0x27]),
        )
        .unwrap();
        p.video(RtmpTimestamp(t0.wrapping_add(33)), b(&inter))
            .unwrap();
        // a repeated sequence header: nothing to package, still forwarded
        p.video(RtmpTimestamp(t0.wrapping_add(40)), b(&vseq))
            .unwrap();
        assert_eq!(*ended.lock().unwrap(), 0);
        p.finish("test over");
        assert_eq!(*ended.lock().unwrap(), 1, "end() once");
        let seen = seen.lock().unwrap().clone();
        let expected: Vec<(&str, i64, u32, Vec<u8>)> = vec![
            ("metadata", 0, 0, format!("{metadata:?}").into_bytes()),
            ("video", 0, t0, vseq.clone()),
            ("audio", 0, t0, aseq),
            ("video", 0, t0, idr),
            ("audio", 10, t0.wrapping_add(10), aac),
            ("video", 33, 0x11, inter),
            ("video", 33, 0x18, vseq),
        ];
        assert_eq!(seen, expected);
    }
}
