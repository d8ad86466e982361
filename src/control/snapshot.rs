//! What the admin API, `/metrics` and the status page show: a point-in-time
//! view of the running appliance, as plain serialisable data (issue 6 §4;
//! SPEC.md, "URLs": API, metrics).
//!
//! [`channels`], [`channel`], [`gpus`] and [`overview`] read the app
//! (channels, their publisher slot, input meter, pipeline counters and
//! restream destinations; the GPUs as admission sees them) without
//! stopping anything: every figure is a counter or a gauge
//! read under its own short lock. The JSON of each view is what
//! `GET /api/v1/channels` answers (fields documented on each struct and in
//! README.md, "Admin API"); `control::metrics` renders the same snapshot as
//! Prometheus text.
//!
//! No stream key is in a view: publisher peers are addresses or already
//! redacted pull URLs, destinations are redacted URLs
//! ([`crate::restream::redact`]).

use serde::Serialize;

/// The appliance as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
    /// Cargo features built in.
    pub features: Vec<&'static str>,
    /// When the process started serving (RFC 3339, UTC).
    pub started: String,
    /// Seconds since then.
    pub uptime_seconds: f64,
    /// `/readyz`: listeners bound and not shutting down.
    pub ready: bool,
    /// Publisher slots in use (pushes and pulls).
    pub publishers: usize,
    /// `[ingest] max_publishers`.
    pub max_publishers: usize,
    /// Channels with a live publisher.
    pub channels_live: usize,
    /// Channels known: configured, or published since start and not yet
    /// forgotten.
    pub channels: usize,
    /// The port of the HTTP origin (playlists and media), for players.
    pub origin_port: Option<u16>,
    /// The process's resources (what `make soak` watches for drift).
    pub process: ProcessView,
}

/// The process's resources, read from `/proc/self` and the tokio runtime;
/// a figure that cannot be read is `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessView {
    /// Resident memory (`VmRSS`), bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors (sockets included).
    pub open_fds: Option<u64>,
    /// OS threads (media threads, tokio workers, encoder threads).
    pub threads: Option<u64>,
    /// Tokio tasks alive (connections, requests, destinations, timers).
    pub tasks: Option<u64>,
}

impl ProcessView {
    /// The figures now. Called from within the runtime for `tasks`.
    pub fn collect() -> ProcessView {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        ProcessView {
            resident_bytes: field("VmRSS:").map(|kib| kib * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            threads: field("Threads:"),
            tasks: tokio::runtime::Handle::try_current()
                .ok()
                .map(|h| h.metrics().num_alive_tasks() as u64),
        }
    }
}

/// One channel (`GET /api/v1/channels/{name}`).
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// Its name (public: in playback URLs).
    pub name: String,
    /// A publisher holds it.
    pub live: bool,
    /// Listed in `[[channels]]`.
    pub configured: bool,
    /// The ladder's passthrough rendition, if it has one.
    pub source_rendition: Option<String>,
    /// The live publisher.
    pub publisher: Option<PublisherView>,
    /// What the live publisher sends.
    pub input: Option<InputView>,
    /// Where the live session's ladder runs (absent for a passthrough-only
    /// ladder).
    pub transcode: Option<TranscodeView>,
    /// The encoded rungs of the live session, in ladder order.
    pub rungs: Vec<RungView>,
    /// The restream destinations: the current (or last) session's; the
    /// configured ones, stopped, before any.
    pub destinations: Vec<DestinationView>,
    /// What the channel's store holds against its cap (`None` before the
    /// channel was first published).
    pub memory: Option<MemoryView>,
}

/// A channel's store: media held, its cap (`[packaging] max_channel_mib`),
/// and what the cap did since the channel was made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryView {
    /// Bytes of segments and parts held, every rendition together.
    pub bytes: u64,
    /// The cap.
    pub max_bytes: u64,
    /// Complete segments dropped before their time by the cap.
    pub segments_dropped: u64,
    /// Open segments the cap closed before their next keyframe.
    pub segments_cut: u64,
    /// Parts the cap refused.
    pub parts_dropped: u64,
}

/// Who publishes.
#[derive(Debug, Clone, Serialize)]
pub struct PublisherView {
    /// `push` (RTMP/RTMPS) or `pull`.
    pub kind: &'static str,
    /// The publisher's address, or the pulled URL redacted.
    pub peer: String,
    /// When it was admitted (RFC 3339, UTC).
    pub since: String,
    /// Seconds since then.
    pub uptime_seconds: f64,
}

/// What the publisher sends: rates over the last
/// [`crate::control::meter::WINDOW`], totals since it was admitted.
#[derive(Debug, Clone, Serialize)]
pub struct InputView {
    /// Video bits per second (elementary stream).
    pub video_bitrate: f64,
    /// Audio bits per second.
    pub audio_bitrate: f64,
    /// Video access units per second.
    pub video_fps: f64,
    /// Video access units since admitted.
    pub video_frames: u64,
    /// Video bytes since admitted.
    pub video_bytes: u64,
    /// Audio access units since admitted.
    pub audio_frames: u64,
    /// Audio bytes since admitted.
    pub audio_bytes: u64,
}

/// Where a ladder runs.
#[derive(Debug, Clone, Serialize)]
pub struct TranscodeView {
    /// `gpu`, `hybrid` or `cpu`.
    pub backend: &'static str,
    /// The GPU, for `gpu` and `hybrid`.
    pub gpu: Option<u32>,
    /// What decodes: `cpu`, `hybrid (GPU n)`, `gpu (GPU n)`.
    pub runs_on: String,
    /// Admission's reason.
    pub reason: String,
    /// Encoded rungs left out by `fallback = "degrade"`.
    pub dropped_rungs: Vec<String>,
    /// The decode stage's counters.
    pub decode: Option<DecodeView>,
}

/// The decode stage (`pipeline::graph::DecodeStageStats`).
#[derive(Debug, Clone, Serialize)]
pub struct DecodeView {
    /// Access units given to a decoder.
    pub access_units: u64,
    /// Pictures decoded.
    pub pictures: u64,
    /// Decode errors.
    pub errors: u64,
    /// Access units dropped at the full decode queue.
    pub dropped_queue_full: u64,
    /// Access units dropped with no usable decoder.
    pub dropped_no_decoder: u64,
    /// Times the GPU decoder moved to the CPU.
    pub gpu_fallbacks: u64,
}

/// One encoded rung (`pipeline::graph::RungStats`).
#[derive(Debug, Clone, Serialize)]
pub struct RungView {
    /// The rendition's name.
    pub name: String,
    /// Output size (0 before the first picture).
    pub width: u32,
    /// Output size (0 before the first picture).
    pub height: u32,
    /// `x264`, `rav1e`, `nvenc`, or empty before the first picture.
    pub encoder: &'static str,
    /// Pictures taken from the rung's queue.
    pub pictures: u64,
    /// Access units encoded and delivered.
    pub encoded: u64,
    /// Pictures dropped at the rung's full queue (it fell behind).
    pub dropped_queue_full: u64,
    /// Pictures dropped by the frame-rate cap.
    pub dropped_fps_cap: u64,
    /// Pictures refused by errors.
    pub errors: u64,
    /// Times its GPU encoder failed and it moved to x264.
    pub gpu_fallbacks: u64,
    /// Wall-clock seconds spent scaling and encoding.
    pub encode_seconds: f64,
    /// Seconds of content encoded.
    pub media_seconds: f64,
    /// `media_seconds / encode_seconds`: the encode speed as a multiple of
    /// real time (above 1 keeps up); `null` before anything was encoded.
    pub speed: Option<f64>,
}

/// One restream destination (`restream::DestinationStatus`).
#[derive(Debug, Clone, Serialize)]
pub struct DestinationView {
    /// Its index in the channel's `restream` list (the API's `{index}`).
    pub index: usize,
    /// The URL, redacted.
    pub target: String,
    /// The rendition sent; `null` for the source.
    pub rendition: Option<String>,
    /// `connecting`, `live`, `waiting`, `paused` or `stopped`.
    pub state: crate::restream::DestinationState,
    /// Paused by the admin API.
    pub paused: bool,
    /// Bytes sent, over every connection of the session.
    pub bytes: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// The last failure, redacted.
    pub last_error: Option<String>,
    /// Media messages dropped (queue overflow, waiting for a keyframe,
    /// paused).
    pub dropped: u64,
    /// Queue overflows.
    pub overflows: u64,
    /// Since when the current connection is live (RFC 3339, UTC).
    pub live_since: Option<String>,
}

/// One GPU as admission sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GpuView {
    /// CUDA device ordinal.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Device memory, bytes.
    pub memory_bytes: u64,
    /// NVDEC engines.
    pub nvdec_engines: u32,
    /// NVENC engines (0: none, as on H100/H200).
    pub nvenc_engines: u32,
    /// The driver's NVENC session cap, if it has one.
    pub nvenc_sessions_max: Option<u32>,
    /// Channels placed on it.
    pub channels: u32,
    /// NVENC sessions charged.
    pub nvenc_sessions: u32,
    /// Device memory charged, bytes (planning estimate).
    pub memory_charged_bytes: u64,
    /// Luma pixels per second charged to NVDEC.
    pub decode_pixels_per_second: f64,
    /// Luma pixels per second charged to NVENC.
    pub encode_pixels_per_second: f64,
}

/// Answers of one HTTP server by status class.
#[derive(Debug, Clone, Serialize)]
pub struct HttpView {
    /// `origin` or `admin`.
    pub server: &'static str,
    /// `1xx` to `5xx`.
    pub class: &'static str,
    /// Answers.
    pub count: u64,
}

/// Everything `/metrics` renders.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The appliance.
    pub overview: Overview,
    /// Every known channel, by name.
    pub channels: Vec<ChannelView>,
    /// The GPUs.
    pub gpus: Vec<GpuView>,
    /// HTTP answers.
    pub http: Vec<HttpView>,
}

/// The Cargo features this build has.
pub fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "ffmpeg") {
        f.push("ffmpeg");
    }
    f
}

/// RFC 3339 in UTC, milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(feature = "ffmpeg")]
pub use collect::*;

#[cfg(feature = "ffmpeg")]
mod collect {
    use super::*;
    use crate::app::{App, ChannelRuntime};
    use crate::ingest::publish::Peer;
    use crate::pipeline::admission::Placement;
    use std::collections::BTreeSet;
    use std::time::{Instant, SystemTime};

    /// Every known channel (configured, or with a runtime), by name.
    pub fn channels(app: &App) -> Vec<ChannelView> {
        let runtimes = app.channels();
        let config = app.config();
        let mut names: BTreeSet<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
        names.extend(runtimes.iter().map(|c| c.name.as_str()));
        names
            .into_iter()
            .map(|name| {
                let runtime = runtimes.iter().find(|c| c.name == name);
                view(app, name, runtime.map(|r| &**r))
            })
            .collect()
    }

    /// One channel, if known.
    pub fn channel(app: &App, name: &str) -> Option<ChannelView> {
        let runtime = app.channel_runtime(name);
        if runtime.is_none() && app.config().channel_by_name(name).is_none() {
            return None;
        }
        Some(view(app, name, runtime.as_deref()))
    }

    fn view(app: &App, name: &str, runtime: Option<&ChannelRuntime>) -> ChannelView {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut v = ChannelView {
            name: name.to_owned(),
            live: false,
            configured: app.config().channel_by_name(name).is_some(),
            source_rendition: app.ladder_plan(name).0,
            publisher: None,
            input: None,
            transcode: None,
            rungs: Vec::new(),
            destinations: Vec::new(),
            memory: None,
        };
        if let Some(rt) = runtime {
            {
                let state = rt.store.read();
                v.memory = Some(MemoryView {
                    bytes: state.bytes() as u64,
                    max_bytes: state.config.max_bytes as u64,
                    segments_dropped: state.cap.segments_dropped,
                    segments_cut: state.cap.segments_cut,
                    parts_dropped: state.cap.parts_dropped,
                });
            }
            let slot = rt.publisher.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = slot.as_ref() {
                v.live = true;
                v.publisher = Some(PublisherView {
                    kind: match p.peer {
                        Peer::Addr(_) => "push",
                        Peer::Pull(_) => "pull",
                    },
                    peer: p.peer.to_string(),
                    since: rfc3339(p.since),
                    uptime_seconds: wall
                        .duration_since(p.since)
                        .map_or(0.0, |d| d.as_secs_f64()),
                });
                let rates = p.input.rates(now);
                let totals = p.input.totals();
                v.input = Some(InputView {
                    video_bitrate: rates.video_bitrate,
                    audio_bitrate: rates.audio_bitrate,
                    video_fps: rates.video_fps,
                    video_frames: totals.video_frames,
                    video_bytes: totals.video_bytes,
                    audio_frames: totals.audio_frames,
                    audio_bytes: totals.audio_bytes,
                });
                if let Some(t) = &p.transcode {
                    let stats = t.stats.as_ref().map(|h| h.stats());
                    let (backend, gpu) = match t.placement {
                        Placement::Gpu { gpu } => ("gpu", Some(gpu)),
                        Placement::Hybrid { gpu } => ("hybrid", Some(gpu)),
                        Placement::Cpu => ("cpu", None),
                    };
                    v.transcode = Some(TranscodeView {
                        backend,
                        gpu,
                        runs_on: t.runs_on.to_string(),
                        reason: t.reason.clone(),
                        dropped_rungs: t.dropped.clone(),
                        decode: stats.as_ref().map(|s| DecodeView {
                            access_units: s.decode.access_units,
                            pictures: s.decode.pictures,
                            errors: s.decode.errors,
                            dropped_queue_full: s.decode.dropped_queue_full,
                            dropped_no_decoder: s.decode.dropped_no_decoder,
                            gpu_fallbacks: s.decode.gpu_fallbacks,
                        }),
                    });
                    v.rungs = stats
                        .map(|s| {
                            s.rungs
                                .into_iter()
                                .map(|r| RungView {
                                    speed: (r.encode_seconds > 0.0)
                                        .then(|| r.media_seconds / r.encode_seconds),
                                    name: r.name,
                                    width: r.width,
                                    height: r.height,
                                    encoder: r.encoder,
                                    pictures: r.pictures_in,
                                    encoded: r.encoded,
                                    dropped_queue_full: r.dropped_queue_full,
                                    dropped_fps_cap: r.dropped_fps_cap,
                                    errors: r.errors,
                                    gpu_fallbacks: r.gpu_fallbacks,
                                    encode_seconds: r.encode_seconds,
                                    media_seconds: r.media_seconds,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
            drop(slot);
            let restream = rt
                .restream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(r) = restream {
                v.destinations = r
                    .status()
                    .into_iter()
                    .enumerate()
                    .map(|(index, s)| DestinationView {
                        index,
                        target: s.target,
                        rendition: s.rendition,
                        state: s.state,
                        paused: s.paused,
                        bytes: s.bytes,
                        reconnects: s.reconnects,
                        last_error: s.last_error,
                        dropped: s.dropped,
                        overflows: s.overflows,
                        live_since: s.live_since.map(rfc3339),
                    })
                    .collect();
            }
        }
        if v.destinations.is_empty() {
            // no session yet: the configured destinations, stopped
            let paused = app.paused_destinations(name);
            if let Some(c) = app.config().channel_by_name(name) {
                v.destinations = c
                    .restream
                    .iter()
                    .enumerate()
                    .map(|(index, t)| DestinationView {
                        index,
                        target: crate::restream::redact(&t.url),
                        rendition: t.rendition.clone(),
                        state: if paused.contains(&index) {
                            crate::restream::DestinationState::Paused
                        } else {
                            crate::restream::DestinationState::Stopped
                        },
                        paused: paused.contains(&index),
                        bytes: 0,
                        reconnects: 0,
                        last_error: None,
                        dropped: 0,
                        overflows: 0,
                        live_since: None,
                    })
                    .collect();
            }
        }
        v
    }

    /// The GPUs as admission sees them.
    pub fn gpus(app: &App) -> Vec<GpuView> {
        app.gpu_usage()
            .into_iter()
            .map(|g| GpuView {
                index: g.capacity.index,
                name: g.capacity.name,
                memory_bytes: g.capacity.memory,
                nvdec_engines: g.capacity.nvdec_engines,
                nvenc_engines: g.capacity.nvenc_engines,
                nvenc_sessions_max: g.capacity.nvenc_sessions,
                channels: g.channels,
                nvenc_sessions: g.charged.sessions,
                memory_charged_bytes: g.charged.memory,
                decode_pixels_per_second: g.charged.decode,
                encode_pixels_per_second: g.charged.encode,
            })
            .collect()
    }

    /// The appliance's overview, given the channel views just collected.
    pub fn overview(
        app: &App,
        channels: &[ChannelView],
        started: SystemTime,
        ready: bool,
    ) -> Overview {
        let (publishers, max_publishers) = app.publishers();
        Overview {
            version: env!("CARGO_PKG_VERSION"),
            features: features(),
            started: rfc3339(started),
            uptime_seconds: SystemTime::now()
                .duration_since(started)
                .map_or(0.0, |d| d.as_secs_f64()),
            ready,
            publishers,
            max_publishers,
            channels_live: channels.iter().filter(|c| c.live).count(),
            channels: channels.len(),
            origin_port: app.origin_addr().map(|a| a.port()),
            process: ProcessView::collect(),
        }
    }
}
