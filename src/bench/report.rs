//! What `ladder bench` reports: the JSON document (`--json`, schema in the
//! [module docs of `bench`](super)) and the table for people.

use super::criteria::Failure;
use super::source::SourceInfo;
use serde::Serialize;
use std::fmt::Write as _;

/// The JSON schema's version: a field's meaning never changes within one;
/// fields may be added.
pub const SCHEMA_VERSION: u32 = 1;

/// Most failures listed per trial; the rest are counted in
/// `failures_omitted` (a trial of 500 channels could otherwise list
/// thousands).
pub const MAX_FAILURES_LISTED: usize = 32;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `ladder bench`.
    pub tool: &'static str,
    /// Ladder's version.
    pub version: &'static str,
    /// When the bench started, RFC 3339 UTC.
    pub started_at: String,
    /// The box.
    pub machine: Machine,
    /// Where the ladder ran.
    pub backend: BackendReport,
    /// The ladder as run.
    pub ladder: LadderReport,
    /// The source fed.
    pub source: SourceInfo,
    /// Limits and timings.
    pub settings: Settings,
    /// The answer.
    pub result: ResultReport,
    /// Every trial, in the order run.
    pub trials: Vec<Trial>,
}

/// The box.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// The first CPU's model name.
    pub cpu_model: Option<String>,
    /// The box's memory.
    pub memory_bytes: Option<u64>,
    /// 1, 5, 15 minute load averages when the bench started and ended.
    pub load_average_start: Option<[f64; 3]>,
    /// Load averages when the bench ended.
    pub load_average_end: Option<[f64; 3]>,
    /// The GPUs the probe found.
    pub gpus: Vec<GpuInfoReport>,
    /// Why there is no GPU, when there is none.
    pub no_gpu: Option<String>,
    /// NVML loaded (GPU utilisation and memory are reported).
    pub nvml: bool,
    /// Why not, when not (`no NVML: ...`).
    pub nvml_reason: Option<String>,
}

/// One GPU as probed.
#[derive(Clone, Debug, Serialize)]
pub struct GpuInfoReport {
    /// CUDA ordinal.
    pub index: u32,
    /// Marketing name.
    pub name: String,
    /// Device memory.
    pub memory_bytes: u64,
    /// As CUDA reports it (`0000:3B:00.0`).
    pub pci_bus_id: String,
    /// NVDEC engines that decode H.264 (0: none).
    pub nvdec_engines: u32,
    /// NVENC engines (0: none, as on H100/H200).
    pub nvenc_engines: u32,
}

/// Where the ladder ran.
#[derive(Clone, Debug, Serialize)]
pub struct BackendReport {
    /// `--backend`, or the ladder's own `backend`: `auto`, `gpu`, `hybrid`, `cpu`.
    pub requested: String,
    /// What ran: `cpu`, `hybrid` or `gpu`.
    pub used: String,
    /// Admission's reason for the first channel.
    pub reason: String,
}

/// The ladder as run.
#[derive(Clone, Debug, Serialize)]
pub struct LadderReport {
    /// Its name under `[ladders]`.
    pub name: String,
    /// In playlist order.
    pub renditions: Vec<RenditionReport>,
}

/// One rendition as run.
#[derive(Clone, Debug, Serialize)]
pub struct RenditionReport {
    /// The rendition's name.
    pub name: String,
    /// `passthrough` or `encoded`.
    pub kind: &'static str,
    /// `h264` or `av1` for an encoded rendition.
    pub codec: Option<&'static str>,
    /// Size encoded from this source (`scale::rung_size`: aspect kept, even,
    /// never upscaled); the source's for the passthrough.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Target bitrate (ABR).
    pub bitrate_kbps: Option<u32>,
    /// VBV peak rate (the bitrate when not configured).
    pub maxrate_kbps: Option<u32>,
    /// VBV buffer: one second of the peak rate.
    pub bufsize_kbits: Option<u32>,
    /// x264 preset (`veryfast` when not configured).
    pub preset: Option<String>,
    /// H.264 profile, when configured.
    pub profile: Option<String>,
    /// Frame-rate cap, when configured.
    pub fps_max: Option<f64>,
    /// Encoder threads on the CPU (configured, or chosen by size).
    pub threads: Option<usize>,
}

/// The limits and timings the trials ran with.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// `--warmup`.
    pub warmup_seconds: f64,
    /// `--duration`.
    pub duration_seconds: f64,
    /// `--max-channels`.
    pub max_channels: u32,
    /// Channels start this far apart (the source's GOP divided by the count),
    /// so that their IDRs do not coincide.
    pub start_stagger_rule: &'static str,
    /// Segment target (`[packaging]`).
    pub segment_seconds: f64,
    /// Part target (`[packaging]`).
    pub part_seconds: f64,
    /// The criteria that decide a trial (`--criteria`): `speed`, `drops`,
    /// `availability`, `feed`, or all but `availability`.
    pub criteria: Vec<&'static str>,
    /// Least speed of every encoded rung.
    pub speed_min: f64,
    /// Largest part availability p99 allowed: part target + 100 ms.
    pub availability_limit_ms: f64,
    /// Largest feeder lateness p99 allowed.
    pub feed_lateness_limit_ms: f64,
}

/// The answer.
#[derive(Clone, Debug, Serialize)]
pub struct ResultReport {
    /// The most channels that passed (0: one channel already failed).
    pub channels: u32,
    /// For a GPU backend: channels divided by the GPUs they ran on.
    pub channels_per_gpu: Option<f64>,
    /// GPUs the channels ran on (0 on the CPU).
    pub gpus_used: u32,
    /// `criteria` (a trial just above failed) or `max-channels` (the cap
    /// passed: the box may carry more).
    pub limited_by: &'static str,
    /// The smallest count that failed, and why.
    pub first_failing: Option<FirstFailing>,
    /// Memory per channel at the answer (that trial's `memory.per_channel_bytes`).
    pub memory_per_channel_bytes: Option<u64>,
    /// For a GPU backend: how many channels admission's planning estimates
    /// would place (the most any trial got placed before the first refusal);
    /// the bench places the rest anyway.
    pub admission_channels: Option<u32>,
}

/// The smallest failing count.
#[derive(Clone, Debug, Serialize)]
pub struct FirstFailing {
    /// The count.
    pub channels: u32,
    /// The criteria it broke (`speed`, `drops`, `availability`, `feed`).
    pub criteria: Vec<&'static str>,
    /// The first failures in words.
    pub reasons: Vec<String>,
}

/// One trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// Channels run.
    pub channels: u32,
    /// Every judged criterion met by every channel.
    pub pass: bool,
    /// The criteria broken, each once, in order.
    pub failed_criteria: Vec<&'static str>,
    /// Up to [`MAX_FAILURES_LISTED`] failures.
    pub failures: Vec<Failure>,
    /// Failures beyond [`MAX_FAILURES_LISTED`].
    pub failures_omitted: u64,
    /// The measuring window as it ran, seconds.
    pub window_seconds: f64,
    /// The box over the window.
    pub host: HostReport,
    /// Memory.
    pub memory: MemoryReport,
    /// Where the channels ran.
    pub placement: PlacementReport,
    /// Per-stage throughput and cost.
    pub stages: Stages,
    /// One per rendition (and `audio`), every channel together.
    pub tracks: Vec<TrackReport>,
    /// One per GPU used, when NVML is there.
    pub gpus: Vec<GpuUseReport>,
    /// Pipeline error messages (first few) and how many more.
    pub errors: Vec<String>,
    /// Error messages beyond those listed.
    pub errors_omitted: u64,
}

/// The box over the window.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// Busy share of every CPU of the box (all processes), %.
    pub cpu_busy_percent: Option<f64>,
    /// This process's CPU time per second: cores in use.
    pub process_cpu_cores: Option<f64>,
    /// Load averages at the end of the window.
    pub load_average: Option<[f64; 3]>,
}

/// Memory.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    /// Resident memory at the end of the window.
    pub rss_bytes: Option<u64>,
    /// Resident memory before the first trial (the source made).
    pub rss_baseline_bytes: Option<u64>,
    /// (rss - baseline) / channels.
    pub per_channel_bytes: Option<u64>,
}

/// Where the trial's channels ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlacementReport {
    /// Channels on the CPU.
    pub cpu: u32,
    /// Channels on the hybrid backend.
    pub hybrid: u32,
    /// Channels on the gpu backend.
    pub gpu: u32,
    /// Channels placed on a GPU after admission refused them (beyond its
    /// planning estimates).
    pub beyond_admission: u32,
    /// Channels per GPU, by CUDA ordinal order of the probe.
    pub per_gpu: Vec<u32>,
}

/// Per-stage throughput and cost, every channel together.
#[derive(Clone, Debug, Serialize)]
pub struct Stages {
    /// The feeders.
    pub feed: StageReport,
    /// The decode stages.
    pub decode: StageReport,
    /// One per encoded rung name.
    pub rungs: Vec<StageReport>,
    /// Parts written into the stores (every track).
    pub packaging: PackagingReport,
}

/// One stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// `feed`, `decode`, or the rung's name.
    pub name: String,
    /// Items through the stage per second, every channel together (tags
    /// fed, pictures decoded, pictures encoded).
    pub per_second: f64,
    /// CPU of the stage's threads (x264's own threads are named after their
    /// rung's), cores per channel.
    pub cpu_cores_per_channel: Option<f64>,
}

/// The packagers.
#[derive(Clone, Debug, Serialize)]
pub struct PackagingReport {
    /// Parts per second.
    pub parts_per_second: f64,
    /// Bytes of parts per second.
    pub bytes_per_second: f64,
}

/// One track, every channel together.
#[derive(Clone, Debug, Serialize)]
pub struct TrackReport {
    /// The rendition's name, or `audio`.
    pub name: String,
    /// `encoded`, `passthrough` or `audio`.
    pub kind: &'static str,
    /// `x264`, `rav1e`, `nvenc` for an encoded rung (the first channel's).
    pub encoder: Option<&'static str>,
    /// Encoded size (0 for audio).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Least and median speed over the channels (encoded rungs).
    pub speed_min: Option<f64>,
    /// Median speed over the channels.
    pub speed_median: Option<f64>,
    /// Pictures encoded per second, per channel (mean).
    pub fps: Option<f64>,
    /// Pictures dropped at the rung queues plus errors, every channel.
    pub dropped: u64,
    /// Parts that started in the window, every channel.
    pub parts: u64,
    /// Availability latency over every channel's parts, ms.
    pub availability_p50_ms: Option<f64>,
    /// The worst channel's 99th percentile (what the criterion judges), ms.
    pub availability_p99_ms: Option<f64>,
    /// The slowest part over every channel, ms.
    pub availability_max_ms: Option<f64>,
    /// Times an encoder left the GPU for x264.
    pub gpu_fallbacks: u64,
}

/// One GPU over the window (NVML samples once a second).
#[derive(Clone, Debug, Serialize)]
pub struct GpuUseReport {
    /// CUDA ordinal.
    pub index: u32,
    /// Channels placed on it.
    pub channels: u32,
    /// NVML samples taken.
    pub samples: u32,
    /// NVDEC utilisation, mean of the samples, %.
    pub decoder_percent_mean: Option<f64>,
    /// NVDEC utilisation, highest sample, %.
    pub decoder_percent_max: Option<u32>,
    /// NVENC utilisation, mean, %.
    pub encoder_percent_mean: Option<f64>,
    /// NVENC utilisation, highest, %.
    pub encoder_percent_max: Option<u32>,
    /// SM utilisation, mean, %.
    pub sm_percent_mean: Option<f64>,
    /// SM utilisation, highest, %.
    pub sm_percent_max: Option<u32>,
    /// Most device memory in use (every process).
    pub memory_used_max_bytes: Option<u64>,
    /// Device memory.
    pub memory_total_bytes: Option<u64>,
    /// (most used in the window - used before the trial) / channels on it.
    pub memory_per_channel_bytes: Option<u64>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.0} MiB", b as f64 / 1048576.0),
    )
}

impl Report {
    /// The report as one JSON document (pretty, newline-terminated).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!("{{\"schema_version\":{SCHEMA_VERSION},\"error\":\"{e}\"}}")
        });
        s.push('\n');
        s
    }

    /// The report as a table for people.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let rungs: Vec<String> = self
            .ladder
            .renditions
            .iter()
            .map(|r| match r.kind {
                "passthrough" => format!("{} (passthrough)", r.name),
                _ => format!(
                    "{} {}x{} {} kbit/s",
                    r.name,
                    r.width,
                    r.height,
                    r.bitrate_kbps.unwrap_or(0)
                ),
            })
            .collect();
        let s = &self.source;
        let _ = writeln!(
            t,
            "ladder bench {}: ladder {:?} [{}] on {} ({})",
            self.version,
            self.ladder.name,
            rungs.join(", "),
            self.backend.used,
            self.backend.reason
        );
        let _ = writeln!(
            t,
            "source: {} ({}, {}x{} {:.0} fps, H.264 {:.0} kbit/s{}{}, {:.1} s GOP, {:.0} s loop)",
            s.name,
            s.kind,
            s.width,
            s.height,
            s.fps,
            s.video_kbps,
            if s.b_frames { " with B-frames" } else { "" },
            s.audio
                .as_ref()
                .map_or_else(String::new, |a| format!(", AAC {:.0} kbit/s", a.kbps)),
            s.gop_seconds,
            s.loop_seconds
        );
        let m = &self.machine;
        let gpus = if m.gpus.is_empty() {
            format!("no GPU ({})", m.no_gpu.as_deref().unwrap_or("none found"))
        } else {
            m.gpus
                .iter()
                .map(|g| format!("GPU {} {}", g.index, g.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let load = |l: Option<[f64; 3]>| {
            l.map_or_else(
                || "-".into(),
                |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]),
            )
        };
        let _ = writeln!(
            t,
            "machine: {} CPUs ({}), {}, {}; load average {} at start, {} at end",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("unknown model"),
            mib(m.memory_bytes),
            gpus,
            load(m.load_average_start),
            load(m.load_average_end)
        );
        let st = &self.settings;
        let availability = if st.criteria.contains(&"availability") {
            format!(
                "part availability p99 <= {:.0} ms",
                st.availability_limit_ms
            )
        } else {
            format!(
                "(part availability measured, not judged: --criteria throughput; limit {:.0} ms)",
                st.availability_limit_ms
            )
        };
        let _ = writeln!(
            t,
            "pass = every rung of every channel at >= {:.1}x real time, nothing dropped, {availability}, feed p99 <= {:.0} ms late; {:.0} s warm-up, {:.0} s window",
            st.speed_min,
            st.feed_lateness_limit_ms,
            st.warmup_seconds,
            st.duration_seconds
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:>8}  {:<6}  {:>9}  {:>8}  {:>9}  {:>10}  {:>14}  {:>14}  failed",
            "channels",
            "result",
            "host CPU",
            "ladder",
            "RSS",
            "RSS/chan",
            "worst speed",
            "worst p99"
        );
        for tr in &self.trials {
            let worst_speed = tr
                .tracks
                .iter()
                .filter_map(|k| k.speed_min.map(|s| (s, k.name.as_str())))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let worst_p99 = tr
                .tracks
                .iter()
                .filter_map(|k| k.availability_p99_ms.map(|s| (s, k.name.as_str())))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let _ = writeln!(
                t,
                "{:>8}  {:<6}  {:>9}  {:>8}  {:>9}  {:>10}  {:>14}  {:>14}  {}",
                tr.channels,
                if tr.pass { "pass" } else { "FAIL" },
                tr.host
                    .cpu_busy_percent
                    .map_or_else(|| "-".into(), |c| format!("{c:.0} %")),
                tr.host
                    .process_cpu_cores
                    .map_or_else(|| "-".into(), |c| format!("{c:.2} cores")),
                mib(tr.memory.rss_bytes),
                mib(tr.memory.per_channel_bytes),
                worst_speed.map_or_else(|| "-".into(), |(s, n)| format!("{s:.2}x {n}")),
                worst_p99.map_or_else(|| "-".into(), |(s, n)| format!("{s:.0} ms {n}")),
                tr.failed_criteria.join(", ")
            );
        }
        let best = self
            .trials
            .iter()
            .rev()
            .find(|t| t.pass && t.channels == self.result.channels);
        if let Some(b) = best {
            let _ = writeln!(t);
            let _ = writeln!(t, "at {} channel(s), per track:", b.channels);
            let _ = writeln!(
                t,
                "  {:<10} {:<11} {:>9}  {:>6}  {:>15}  {:>7}  {:>22}",
                "track",
                "encoder",
                "size",
                "fps",
                "speed min/med",
                "dropped",
                "avail p50/p99/max ms"
            );
            for k in &b.tracks {
                let size = if k.width > 0 {
                    format!("{}x{}", k.width, k.height)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    t,
                    "  {:<10} {:<11} {:>9}  {:>6}  {:>15}  {:>7}  {:>22}",
                    k.name,
                    k.encoder.unwrap_or(k.kind),
                    size,
                    opt(k.fps, 1),
                    format!("{}/{}", opt(k.speed_min, 2), opt(k.speed_median, 2)),
                    k.dropped,
                    format!(
                        "{}/{}/{}",
                        opt(k.availability_p50_ms, 0),
                        opt(k.availability_p99_ms, 0),
                        opt(k.availability_max_ms, 0)
                    )
                );
            }
            let stage = |s: &StageReport| {
                format!(
                    "{} {:.0}/s, {} cores/channel",
                    s.name,
                    s.per_second,
                    opt(s.cpu_cores_per_channel, 3)
                )
            };
            let mut stages = vec![stage(&b.stages.feed), stage(&b.stages.decode)];
            stages.extend(b.stages.rungs.iter().map(stage));
            let _ = writeln!(t, "  stages: {}", stages.join("; "));
            let _ = writeln!(
                t,
                "  packaging: {:.1} parts/s, {:.2} MB/s",
                b.stages.packaging.parts_per_second,
                b.stages.packaging.bytes_per_second / 1e6
            );
            for g in &b.gpus {
                let _ = writeln!(
                    t,
                    "  GPU {}: {} channel(s), NVDEC {} % (max {}), NVENC {} % (max {}), SM {} % (max {}), memory {} of {}, {} per channel",
                    g.index,
                    g.channels,
                    opt(g.decoder_percent_mean, 0),
                    g.decoder_percent_max.map_or("-".into(), |v| v.to_string()),
                    opt(g.encoder_percent_mean, 0),
                    g.encoder_percent_max.map_or("-".into(), |v| v.to_string()),
                    opt(g.sm_percent_mean, 0),
                    g.sm_percent_max.map_or("-".into(), |v| v.to_string()),
                    mib(g.memory_used_max_bytes),
                    mib(g.memory_total_bytes),
                    mib(g.memory_per_channel_bytes)
                );
            }
        }
        let _ = writeln!(t);
        let r = &self.result;
        let per = match r.channels_per_gpu {
            Some(c) => format!(
                "{} channel(s) per box, {c:.1} per GPU ({} GPU(s))",
                r.channels, r.gpus_used
            ),
            None => format!("{} channel(s) per box", r.channels),
        };
        let why = match (&r.first_failing, r.limited_by) {
            (Some(f), _) => format!(
                "limited by {} at {} channel(s): {}",
                f.criteria.join(", "),
                f.channels,
                f.reasons.first().map_or("", String::as_str)
            ),
            (None, "max-channels") => format!(
                "--max-channels {} reached: the box may carry more",
                self.settings.max_channels
            ),
            (None, other) => other.to_owned(),
        };
        let _ = writeln!(
            t,
            "result: {per}, {} per channel; {why}",
            mib(r.memory_per_channel_bytes)
        );
        if let Some(a) = r.admission_channels {
            let _ = writeln!(
                t,
                "admission's planning estimates would place {a} channel(s)"
            );
        }
        if !m.nvml && !m.gpus.is_empty() {
            let _ = writeln!(
                t,
                "GPU utilisation not measured: {}",
                m.nvml_reason.as_deref().unwrap_or("no NVML")
            );
        }
        t
    }
}
