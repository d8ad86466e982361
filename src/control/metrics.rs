//! `/metrics`: the appliance in the Prometheus text exposition format,
//! version 0.0.4 (SPEC.md, "URLs"; issue 6 §4). Pure: a [`Snapshot`] in,
//! text out.
//!
//! Every family is prefixed `ladder_`, has `# HELP` and `# TYPE` lines, and
//! its samples follow them together; counters end in `_total`. Label values
//! are escaped (`\`, `"`, newline). No stream key is ever a label: channels
//! are names, destinations redacted URLs and indices.
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `ladder_build_info` | gauge (1) | `version`, `features` |
//! | `ladder_start_time_seconds` | gauge | |
//! | `ladder_ready` | gauge | |
//! | `ladder_publishers`, `ladder_publishers_max` | gauge | |
//! | `ladder_channels`, `ladder_channels_live` | gauge | |
//! | `ladder_channel_live` | gauge | `channel` |
//! | `ladder_channel_input_bits_per_second` | gauge | `channel`, `media` (`video`/`audio`) |
//! | `ladder_channel_input_frames_per_second` | gauge | `channel` |
//! | `ladder_channel_input_bytes_total` | counter | `channel`, `media` |
//! | `ladder_channel_placement` | gauge (1) | `channel`, `backend`, `gpu` |
//! | `ladder_channel_memory_bytes`, `ladder_channel_memory_max_bytes` | gauge | `channel` |
//! | `ladder_channel_cap_segments_dropped_total`, `ladder_channel_cap_segments_cut_total`, `ladder_channel_cap_parts_dropped_total` | counter | `channel` |
//! | `ladder_decode_access_units_total`, `ladder_decode_errors_total` | counter | `channel` |
//! | `ladder_decode_dropped_total` | counter | `channel`, `reason` (`queue_full`/`no_decoder`) |
//! | `ladder_decode_gpu_fallbacks_total` | counter | `channel` |
//! | `ladder_rung_info` | gauge (1) | `channel`, `rung`, `encoder`, `size` |
//! | `ladder_rung_pictures_total`, `ladder_rung_encoded_total`, `ladder_rung_errors_total`, `ladder_rung_gpu_fallbacks_total` | counter | `channel`, `rung` |
//! | `ladder_rung_dropped_total` | counter | `channel`, `rung`, `reason` (`queue_full`/`fps_cap`) |
//! | `ladder_rung_encode_seconds_total`, `ladder_rung_media_seconds_total` | counter | `channel`, `rung` |
//! | `ladder_rung_speed_ratio` | gauge | `channel`, `rung` |
//! | `ladder_destination_state` | gauge (1 for the current state) | `channel`, `destination`, `target`, `state` |
//! | `ladder_destination_bytes_total`, `ladder_destination_reconnects_total`, `ladder_destination_dropped_total`, `ladder_destination_overflows_total` | counter | `channel`, `destination`, `target` |
//! | `ladder_gpu_info` | gauge (1) | `gpu`, `name` |
//! | `ladder_gpu_memory_bytes`, `ladder_gpu_memory_charged_bytes`, `ladder_gpu_channels`, `ladder_gpu_nvenc_sessions`, `ladder_gpu_nvenc_sessions_max`, `ladder_gpu_nvdec_engines`, `ladder_gpu_nvenc_engines` | gauge | `gpu` |
//! | `ladder_http_requests_total` | counter | `server` (`origin`/`admin`), `class` (`2xx`...) |
//! | `process_resident_memory_bytes`, `process_open_fds`, `process_threads` | gauge | |
//! | `ladder_tasks` | gauge | |
//!
//! The `process_` families keep the names every Prometheus client library
//! gives them, so existing dashboards and alerts find them; a figure that
//! cannot be read (no `/proc`) is left out.
//!
//! Per-session counters (input, decode, rungs, destinations) start at zero
//! with each publish session, which Prometheus' `rate()` reads as a counter
//! reset; their series exist while the channel is live (destinations: while
//! the channel is known).

use std::fmt::Write as _;

use super::snapshot::{ChannelView, Snapshot};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (resets at restart or a new session).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Builds the exposition text one family at a time.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Start a family: its HELP and TYPE lines. The samples written next
    /// belong to it.
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) -> &mut Self {
        let kind = match kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// HELP text: `\` and newline escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values: `\`, `"` and newline escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One family over the live channels: `value` gives each channel's samples.
fn per_channel<'a>(
    e: &mut Exposition,
    channels: &'a [ChannelView],
    name: &str,
    kind: MetricType,
    help: &str,
    mut samples: impl FnMut(&'a ChannelView, &mut dyn FnMut(&[(&str, &str)], f64)),
) {
    // a family without samples is still described: scrapers see it exists
    e.family(name, kind, help);
    for c in channels {
        samples(c, &mut |labels, v| {
            e.sample(name, labels, v);
        });
    }
}

/// The whole exposition for `s`.
pub fn render(s: &Snapshot) -> String {
    use MetricType::{Counter, Gauge};
    let mut e = Exposition::new();
    let o = &s.overview;
    let features = o.features.join(",");
    e.family(
        "ladder_build_info",
        Gauge,
        "Always 1; the version and Cargo features built in.",
    )
    .sample(
        "ladder_build_info",
        &[("version", o.version), ("features", features.as_str())],
        1.0,
    );
    let started = humantime::parse_rfc3339(&o.started)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    e.family(
        "ladder_start_time_seconds",
        Gauge,
        "When the process started serving, Unix seconds.",
    )
    .sample("ladder_start_time_seconds", &[], started);
    e.family(
        "ladder_ready",
        Gauge,
        "1 while the listeners are bound and the process is not shutting down.",
    )
    .sample("ladder_ready", &[], if o.ready { 1.0 } else { 0.0 });
    let p = &o.process;
    for (name, help, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds,
        ),
        ("process_threads", "Number of OS threads.", p.threads),
        (
            "ladder_tasks",
            "Tokio tasks alive: connections, requests, destinations, timers.",
            p.tasks,
        ),
    ] {
        if let Some(v) = value {
            e.family(name, Gauge, help).sample(name, &[], v as f64);
        }
    }
    e.family(
        "ladder_publishers",
        Gauge,
        "Publisher slots in use (pushes and pulls).",
    )
    .sample("ladder_publishers", &[], o.publishers as f64);
    e.family(
        "ladder_publishers_max",
        Gauge,
        "The publisher cap ([ingest] max_publishers).",
    )
    .sample("ladder_publishers_max", &[], o.max_publishers as f64);
    e.family(
        "ladder_channels",
        Gauge,
        "Channels known: configured, or published and not yet forgotten.",
    )
    .sample("ladder_channels", &[], o.channels as f64);
    e.family(
        "ladder_channels_live",
        Gauge,
        "Channels with a live publisher.",
    )
    .sample("ladder_channels_live", &[], o.channels_live as f64);

    let ch = &s.channels;
    per_channel(
        &mut e,
        ch,
        "ladder_channel_live",
        Gauge,
        "1 while the channel has a publisher.",
        |c, out| {
            out(
                &[("channel", c.name.as_str())],
                if c.live { 1.0 } else { 0.0 },
            )
        },
    );
    per_channel(
        &mut e,
        ch,
        "ladder_channel_input_bits_per_second",
        Gauge,
        "What the publisher sends, over the last 5 s, by media.",
        |c, out| {
            if let Some(i) = &c.input {
                out(
                    &[("channel", c.name.as_str()), ("media", "video")],
                    i.video_bitrate,
                );
                out(
                    &[("channel", c.name.as_str()), ("media", "audio")],
                    i.audio_bitrate,
                );
            }
        },
    );
    per_channel(
        &mut e,
        ch,
        "ladder_channel_input_frames_per_second",
        Gauge,
        "Video access units the publisher sends per second, over the last 5 s.",
        |c, out| {
            if let Some(i) = &c.input {
                out(&[("channel", c.name.as_str())], i.video_fps);
            }
        },
    );
    per_channel(
        &mut e,
        ch,
        "ladder_channel_input_bytes_total",
        Counter,
        "Elementary stream bytes received in the publish session, by media.",
        |c, out| {
            if let Some(i) = &c.input {
                out(
                    &[("channel", c.name.as_str()), ("media", "video")],
                    i.video_bytes as f64,
                );
                out(
                    &[("channel", c.name.as_str()), ("media", "audio")],
                    i.audio_bytes as f64,
                );
            }
        },
    );
    type MemoryField = fn(&super::snapshot::MemoryView) -> u64;
    let memory: [(&str, MetricType, &str, MemoryField); 5] = [
        (
            "ladder_channel_memory_bytes",
            Gauge,
            "Media the channel's store holds, every rendition together.",
            |m| m.bytes,
        ),
        (
            "ladder_channel_memory_max_bytes",
            Gauge,
            "The channel's store cap ([packaging] max_channel_mib).",
            |m| m.max_bytes,
        ),
        (
            "ladder_channel_cap_segments_dropped_total",
            Counter,
            "Complete segments the memory cap dropped before their time.",
            |m| m.segments_dropped,
        ),
        (
            "ladder_channel_cap_segments_cut_total",
            Counter,
            "Open segments the memory cap closed before their next keyframe.",
            |m| m.segments_cut,
        ),
        (
            "ladder_channel_cap_parts_dropped_total",
            Counter,
            "Parts the memory cap refused.",
            |m| m.parts_dropped,
        ),
    ];
    for (name, kind, help, field) in memory {
        per_channel(&mut e, ch, name, kind, help, |c, out| {
            if let Some(m) = &c.memory {
                out(&[("channel", c.name.as_str())], field(m) as f64);
            }
        });
    }
    per_channel(
        &mut e,
        ch,
        "ladder_channel_placement",
        Gauge,
        "Always 1; where the live session's ladder runs (gpu is empty on the CPU).",
        |c, out| {
            if let Some(t) = &c.transcode {
                let gpu = t.gpu.map(|g| g.to_string()).unwrap_or_default();
                out(
                    &[
                        ("channel", c.name.as_str()),
                        ("backend", t.backend),
                        ("gpu", gpu.as_str()),
                    ],
                    1.0,
                );
            }
        },
    );
    type DecodeField = fn(&super::snapshot::DecodeView) -> u64;
    let decode: [(&str, &str, DecodeField); 3] = [
        (
            "ladder_decode_access_units_total",
            "Access units given to the channel's decoder.",
            |d| d.access_units,
        ),
        ("ladder_decode_errors_total", "Decode errors.", |d| d.errors),
        (
            "ladder_decode_gpu_fallbacks_total",
            "Times the GPU decoder moved to the CPU.",
            |d| d.gpu_fallbacks,
        ),
    ];
    for (name, help, field) in decode {
        per_channel(&mut e, ch, name, Counter, help, |c, out| {
            if let Some(d) = c.transcode.as_ref().and_then(|t| t.decode.as_ref()) {
                out(&[("channel", c.name.as_str())], field(d) as f64);
            }
        });
    }
    per_channel(
        &mut e,
        ch,
        "ladder_decode_dropped_total",
        Counter,
        "Access units dropped before decoding, by reason.",
        |c, out| {
            if let Some(d) = c.transcode.as_ref().and_then(|t| t.decode.as_ref()) {
                out(
                    &[("channel", c.name.as_str()), ("reason", "queue_full")],
                    d.dropped_queue_full as f64,
                );
                out(
                    &[("channel", c.name.as_str()), ("reason", "no_decoder")],
                    d.dropped_no_decoder as f64,
                );
            }
        },
    );
    per_channel(
        &mut e,
        ch,
        "ladder_rung_info",
        Gauge,
        "Always 1; the rung's encoder and output size.",
        |c, out| {
            for r in &c.rungs {
                let size = format!("{}x{}", r.width, r.height);
                out(
                    &[
                        ("channel", c.name.as_str()),
                        ("rung", r.name.as_str()),
                        ("encoder", r.encoder),
                        ("size", size.as_str()),
                    ],
                    1.0,
                );
            }
        },
    );
    type RungField = fn(&super::snapshot::RungView) -> f64;
    let rung: [(&str, MetricType, &str, RungField); 7] = [
        (
            "ladder_rung_pictures_total",
            Counter,
            "Pictures the rung took from its queue.",
            |r| r.pictures as f64,
        ),
        (
            "ladder_rung_encoded_total",
            Counter,
            "Access units the rung encoded and delivered.",
            |r| r.encoded as f64,
        ),
        (
            "ladder_rung_errors_total",
            Counter,
            "Pictures the rung refused because of an error.",
            |r| r.errors as f64,
        ),
        (
            "ladder_rung_gpu_fallbacks_total",
            Counter,
            "Times the rung's GPU encoder failed and it moved to x264.",
            |r| r.gpu_fallbacks as f64,
        ),
        (
            "ladder_rung_encode_seconds_total",
            Counter,
            "Wall-clock seconds the rung spent scaling and encoding.",
            |r| r.encode_seconds,
        ),
        (
            "ladder_rung_media_seconds_total",
            Counter,
            "Seconds of content the rung encoded.",
            |r| r.media_seconds,
        ),
        (
            "ladder_rung_speed_ratio",
            Gauge,
            "Encode speed as a multiple of real time since the session began (media seconds / encode seconds; below 1 falls behind).",
            |r| r.speed.unwrap_or(0.0),
        ),
    ];
    for (name, kind, help, field) in rung {
        per_channel(&mut e, ch, name, kind, help, |c, out| {
            for r in &c.rungs {
                out(
                    &[("channel", c.name.as_str()), ("rung", r.name.as_str())],
                    field(r),
                );
            }
        });
    }
    per_channel(
        &mut e,
        ch,
        "ladder_rung_dropped_total",
        Counter,
        "Pictures the rung dropped, by reason (queue_full: it fell behind; fps_cap: its frame-rate cap).",
        |c, out| {
            for r in &c.rungs {
                out(
                    &[("channel", c.name.as_str()), ("rung", r.name.as_str()), ("reason", "queue_full")],
                    r.dropped_queue_full as f64,
                );
                out(
                    &[("channel", c.name.as_str()), ("rung", r.name.as_str()), ("reason", "fps_cap")],
                    r.dropped_fps_cap as f64,
                );
            }
        },
    );
    const STATES: [&str; 5] = ["connecting", "live", "waiting", "paused", "stopped"];
    per_channel(
        &mut e,
        ch,
        "ladder_destination_state",
        Gauge,
        "1 for the restream destination's current state, 0 for the others.",
        |c, out| {
            for d in &c.destinations {
                let index = d.index.to_string();
                let current = state_name(&d.state);
                for state in STATES {
                    out(
                        &[
                            ("channel", c.name.as_str()),
                            ("destination", index.as_str()),
                            ("target", d.target.as_str()),
                            ("state", state),
                        ],
                        if state == current { 1.0 } else { 0.0 },
                    );
                }
            }
        },
    );
    type DestField = fn(&super::snapshot::DestinationView) -> u64;
    let dest: [(&str, &str, DestField); 4] = [
        (
            "ladder_destination_bytes_total",
            "Bytes sent to the restream destination in the session.",
            |d| d.bytes,
        ),
        (
            "ladder_destination_reconnects_total",
            "Connections to the destination after the first, in the session.",
            |d| d.reconnects,
        ),
        (
            "ladder_destination_dropped_total",
            "Media messages dropped for the destination (queue overflow, waiting for a keyframe, paused).",
            |d| d.dropped,
        ),
        (
            "ladder_destination_overflows_total",
            "Times the destination's queue overflowed.",
            |d| d.overflows,
        ),
    ];
    for (name, help, field) in dest {
        per_channel(&mut e, ch, name, Counter, help, |c, out| {
            for d in &c.destinations {
                let index = d.index.to_string();
                out(
                    &[
                        ("channel", c.name.as_str()),
                        ("destination", index.as_str()),
                        ("target", d.target.as_str()),
                    ],
                    field(d) as f64,
                );
            }
        });
    }

    e.family(
        "ladder_gpu_info",
        Gauge,
        "Always 1; a GPU admission places ladders on.",
    );
    for g in &s.gpus {
        let index = g.index.to_string();
        e.sample(
            "ladder_gpu_info",
            &[("gpu", index.as_str()), ("name", g.name.as_str())],
            1.0,
        );
    }
    type GpuField = fn(&super::snapshot::GpuView) -> Option<f64>;
    let gpu: [(&str, &str, GpuField); 7] = [
        ("ladder_gpu_memory_bytes", "Device memory.", |g| {
            Some(g.memory_bytes as f64)
        }),
        (
            "ladder_gpu_memory_charged_bytes",
            "Device memory admission charged to the channels on the GPU (planning estimate).",
            |g| Some(g.memory_charged_bytes as f64),
        ),
        ("ladder_gpu_channels", "Channels placed on the GPU.", |g| {
            Some(f64::from(g.channels))
        }),
        (
            "ladder_gpu_nvenc_sessions",
            "NVENC sessions charged to the GPU.",
            |g| Some(f64::from(g.nvenc_sessions)),
        ),
        (
            "ladder_gpu_nvenc_sessions_max",
            "The driver's NVENC session cap (absent: none).",
            |g| g.nvenc_sessions_max.map(f64::from),
        ),
        ("ladder_gpu_nvdec_engines", "NVDEC engines.", |g| {
            Some(f64::from(g.nvdec_engines))
        }),
        (
            "ladder_gpu_nvenc_engines",
            "NVENC engines (0: none).",
            |g| Some(f64::from(g.nvenc_engines)),
        ),
    ];
    for (name, help, field) in gpu {
        e.family(name, Gauge, help);
        for g in &s.gpus {
            if let Some(v) = field(g) {
                let index = g.index.to_string();
                e.sample(name, &[("gpu", index.as_str())], v);
            }
        }
    }

    e.family(
        "ladder_http_requests_total",
        Counter,
        "HTTP answers by server and status class.",
    );
    for h in &s.http {
        e.sample(
            "ladder_http_requests_total",
            &[("server", h.server), ("class", h.class)],
            h.count as f64,
        );
    }
    e.finish()
}

fn state_name(s: &crate::restream::DestinationState) -> &'static str {
    use crate::restream::DestinationState::*;
    match s {
        Connecting => "connecting",
        Live => "live",
        Waiting => "waiting",
        Paused => "paused",
        Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::*;
    use crate::restream::DestinationState;

    #[test]
    fn numbers_and_escapes() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(-2.0), "-2");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(1e20), "100000000000000000000");
        let mut e = Exposition::new();
        e.family("x_total", MetricType::Counter, "a \\ b\nc")
            .sample("x_total", &[("l", "q\"\\\nz")], 1.0);
        assert_eq!(
            e.finish(),
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{l=\"q\\\"\\\\\\nz\"} 1\n"
        );
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            overview: Overview {
                version: "0.1.0",
                features: vec!["ffmpeg"],
                started: "2024-01-01T00:00:00.000Z".into(),
                uptime_seconds: 5.0,
                ready: true,
                publishers: 1,
                max_publishers: 64,
                channels_live: 1,
                channels: 2,
                origin_port: Some(8080),
                process: ProcessView {
                    resident_bytes: Some(50 << 20),
                    open_fds: Some(40),
                    threads: Some(12),
                    tasks: None,
                },
            },
            channels: vec![
                ChannelView {
                    name: "news".into(),
                    live: true,
                    configured: true,
                    source_rendition: Some("source".into()),
                    publisher: None,
                    input: Some(InputView {
                        video_bitrate: 2.5e6,
                        audio_bitrate: 128_000.0,
                        video_fps: 29.97,
                        video_frames: 10,
                        video_bytes: 1000,
                        audio_frames: 20,
                        audio_bytes: 200,
                    }),
                    transcode: Some(TranscodeView {
                        backend: "cpu",
                        gpu: None,
                        runs_on: "cpu".into(),
                        reason: "asked".into(),
                        dropped_rungs: vec![],
                        decode: Some(DecodeView {
                            access_units: 10,
                            pictures: 10,
                            errors: 0,
                            dropped_queue_full: 1,
                            dropped_no_decoder: 2,
                            gpu_fallbacks: 0,
                        }),
                    }),
                    rungs: vec![RungView {
                        name: "720p".into(),
                        width: 1280,
                        height: 720,
                        encoder: "x264",
                        pictures: 10,
                        encoded: 9,
                        dropped_queue_full: 1,
                        dropped_fps_cap: 0,
                        errors: 0,
                        gpu_fallbacks: 0,
                        encode_seconds: 0.1,
                        media_seconds: 0.3,
                        speed: Some(3.0),
                    }],
                    memory: Some(MemoryView {
                        bytes: 3 << 20,
                        max_bytes: 512 << 20,
                        segments_dropped: 2,
                        ..MemoryView::default()
                    }),
                    destinations: vec![DestinationView {
                        index: 0,
                        target: "rtmp://a.example/live2/<key>".into(),
                        rendition: None,
                        state: DestinationState::Live,
                        paused: false,
                        bytes: 5000,
                        reconnects: 1,
                        last_error: None,
                        dropped: 0,
                        overflows: 0,
                        live_since: None,
                    }],
                },
                ChannelView {
                    name: "idle".into(),
                    live: false,
                    configured: true,
                    source_rendition: None,
                    publisher: None,
                    input: None,
                    transcode: None,
                    rungs: vec![],
                    destinations: vec![],
                    memory: None,
                },
            ],
            gpus: vec![GpuView {
                index: 0,
                name: "NVIDIA L4".into(),
                memory_bytes: 24 << 30,
                nvdec_engines: 4,
                nvenc_engines: 2,
                nvenc_sessions_max: None,
                channels: 1,
                nvenc_sessions: 3,
                memory_charged_bytes: 1 << 30,
                decode_pixels_per_second: 6.2e7,
                encode_pixels_per_second: 4.6e7,
            }],
            http: vec![HttpView {
                server: "origin",
                class: "2xx",
                count: 42,
            }],
        }
    }

    #[test]
    fn the_figures_are_where_the_families_say() {
        let text = render(&snapshot());
        for line in [
            "ladder_build_info{version=\"0.1.0\",features=\"ffmpeg\"} 1",
            "ladder_start_time_seconds 1704067200",
            "ladder_channels_live 1",
            "ladder_channel_live{channel=\"news\"} 1",
            "ladder_channel_live{channel=\"idle\"} 0",
            "ladder_channel_input_bits_per_second{channel=\"news\",media=\"video\"} 2500000",
            "ladder_channel_input_frames_per_second{channel=\"news\"} 29.97",
            "ladder_channel_placement{channel=\"news\",backend=\"cpu\",gpu=\"\"} 1",
            "ladder_decode_dropped_total{channel=\"news\",reason=\"no_decoder\"} 2",
            "ladder_rung_info{channel=\"news\",rung=\"720p\",encoder=\"x264\",size=\"1280x720\"} 1",
            "ladder_rung_encoded_total{channel=\"news\",rung=\"720p\"} 9",
            "ladder_rung_speed_ratio{channel=\"news\",rung=\"720p\"} 3",
            "ladder_rung_dropped_total{channel=\"news\",rung=\"720p\",reason=\"queue_full\"} 1",
            "ladder_destination_state{channel=\"news\",destination=\"0\",target=\"rtmp://a.example/live2/<key>\",state=\"live\"} 1",
            "ladder_destination_state{channel=\"news\",destination=\"0\",target=\"rtmp://a.example/live2/<key>\",state=\"waiting\"} 0",
            "ladder_destination_reconnects_total{channel=\"news\",destination=\"0\",target=\"rtmp://a.example/live2/<key>\"} 1",
            "ladder_gpu_info{gpu=\"0\",name=\"NVIDIA L4\"} 1",
            "ladder_gpu_nvenc_sessions{gpu=\"0\"} 3",
            "ladder_http_requests_total{server=\"origin\",class=\"2xx\"} 42",
            "process_resident_memory_bytes 52428800",
            "ladder_channel_memory_bytes{channel=\"news\"} 3145728",
            "ladder_channel_memory_max_bytes{channel=\"news\"} 536870912",
            "ladder_channel_cap_segments_dropped_total{channel=\"news\"} 2",
            "process_open_fds 40",
            "process_threads 12",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // no session cap: no sample, the family still described
        assert!(text.contains("# TYPE ladder_gpu_nvenc_sessions_max gauge\n"));
        assert!(!text.contains("ladder_gpu_nvenc_sessions_max{"));
        // an idle channel has no input, rung or decode series
        assert!(!text.contains("channel=\"idle\",media"));
        // a figure not read is left out, family and all
        assert!(!text.contains("ladder_tasks"));
    }

    #[test]
    fn each_family_is_described_once_and_its_samples_follow_it() {
        let text = render(&snapshot());
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_owned()), "{name} described twice");
                current = name.to_owned();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest.split(' ').next().unwrap(), current);
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line}");
                assert!(name.starts_with("ladder_") || name.starts_with("process_"));
            }
        }
        assert!(seen.len() > 30, "{}", seen.len());
    }
}
