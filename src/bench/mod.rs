//! `ladder bench` (SPEC.md, "Command line"; issue 7): how many channels of a
//! ladder this box carries in real time, on the real pipeline.
//!
//! ```text
//! ladder bench [--config PATH] [--backend auto|gpu|hybrid|cpu] [--ladder NAME]
//!              [--source 1080p30|720p30|360p30|FILE] [--max-channels N]
//!              [--warmup S] [--duration S] [--criteria all|throughput] [--json]
//!              [--write-source PATH]
//! ```
//!
//! Each channel is built as a publish session builds one (`bench::channel`):
//! packager, transcoding pipeline on the placement's backend, rung sink into
//! the packager, fed from an in-memory H.264 + AAC loop
//! (`bench::source`: made at start with x264 from moving, detailed synthetic
//! pictures, or read from a file) at exactly real-time pace, through the
//! demuxer, with IDRs forced at the packager's segment starts. No socket:
//! RTMP and HTTP are not part of the measurement.
//!
//! The channel count ramps (`bench::ramp`: 1, 2, 4, ... until a trial fails
//! or `--max-channels`, then bisection). A trial starts N channels a GOP/N
//! apart (independent publishers' IDRs do not coincide), lets them run
//! `--warmup` seconds after the last one started, measures for `--duration`
//! seconds, keeps feeding for the availability limit plus half a second (so
//! that the window's last parts can appear), then stops them as a session
//! ends (pipelines drained). It passes when every channel meets every
//! criterion of `bench::criteria`: every encoded rung at least 1.2x real time
//! (content seconds per busy second), nothing dropped, part availability p99
//! at most part target + 100 ms, feeder lateness p99 at most 100 ms. The
//! answer is the most channels that passed. `--criteria throughput` judges
//! all but availability (still measured and reported): the criteria of a
//! process with no latency target, for comparisons with one (ffmpeg).
//!
//! Placement: `--backend` (default: the ladder's own `backend`) is resolved by
//! admission (`pipeline::admission`) over the GPUs the probe finds, as a
//! publish would be; `auto` with no usable GPU runs on the CPU, `gpu` or
//! `hybrid` with none is a runtime failure. On a GPU backend every channel is
//! admitted in turn and spread over the GPUs by admission; a channel
//! admission refuses (beyond its planning estimates) is placed anyway on the
//! GPU with the fewest channels, and counted (`beyond_admission`), since the
//! point of the bench is to measure past the estimates.
//!
//! Output: a progress line on stderr while it runs (one line per phase when
//! stderr is not a terminal); a table on stdout, or with `--json` one JSON
//! document. Exit status: 0 when the bench ran (whatever the count, 0
//! included), 1 on a runtime failure (no GPU for `gpu`/`hybrid`, a source
//! that cannot be made or read, a thread that cannot start), 2 on bad usage
//! (unknown option or ladder, bad numbers, a source that is neither a name
//! nor a file, a configuration that does not load).
//!
//! `--write-source PATH` also writes the loop as an FLV file, for
//! `benches/channels.rs` to give ffmpeg the very same input.
//!
//! # JSON (`schema_version` 1)
//!
//! Types in [`report`]; every field is documented there. Top level:
//! `schema_version` (1), `tool` (`ladder bench`), `version`, `started_at`
//! (RFC 3339), `machine` (`cpus`, `cpu_model`, `memory_bytes`,
//! `load_average_start`/`_end`, `gpus` [{`index`, `name`, `memory_bytes`,
//! `pci_bus_id`, `nvdec_engines`, `nvenc_engines`}], `no_gpu`, `nvml`,
//! `nvml_reason`), `backend` (`requested`, `used`, `reason`), `ladder`
//! (`name`, `renditions` [{`name`, `kind`, `codec`, `width`, `height`,
//! `bitrate_kbps`, `maxrate_kbps`, `bufsize_kbits`, `preset`, `profile`,
//! `fps_max`, `threads`}]), `source` (`kind`, `name`, `path`, `width`,
//! `height`, `fps`, `video_codec`, `video_kbps`, `b_frames`, `gop_seconds`,
//! `loop_seconds`, `audio` {`codec`, `sample_rate`, `channels`, `kbps`}),
//! `settings` (`warmup_seconds`, `duration_seconds`, `max_channels`,
//! `start_stagger_rule`, `segment_seconds`, `part_seconds`, `criteria`, `speed_min`,
//! `availability_limit_ms`, `feed_lateness_limit_ms`), `result` (`channels`,
//! `channels_per_gpu`, `gpus_used`, `limited_by` (`criteria` or
//! `max-channels`), `first_failing` {`channels`, `criteria`, `reasons`},
//! `memory_per_channel_bytes`, `admission_channels`) and `trials`, one per
//! trial in the order run: `channels`, `pass`, `failed_criteria`, `failures`
//! [{`criterion`, `channel`, `track`, `value`, `limit`, `message`}],
//! `failures_omitted`, `window_seconds`, `host` (`cpu_busy_percent`,
//! `process_cpu_cores`, `load_average`), `memory` (`rss_bytes`,
//! `rss_baseline_bytes`, `per_channel_bytes`), `placement` (`cpu`, `hybrid`,
//! `gpu`, `beyond_admission`, `per_gpu`), `stages` (`feed`, `decode`,
//! `rungs` [{`name`, `per_second`, `cpu_cores_per_channel`}], `packaging`
//! {`parts_per_second`, `bytes_per_second`}), `tracks` [{`name`, `kind`,
//! `encoder`, `width`, `height`, `speed_min`, `speed_median`, `fps`,
//! `dropped`, `parts`, `availability_p50_ms`, `availability_p99_ms`,
//! `availability_max_ms`, `gpu_fallbacks`}], `gpus` [{`index`, `channels`,
//! `samples`, `decoder_percent_mean`/`_max`, `encoder_percent_mean`/`_max`,
//! `sm_percent_mean`/`_max`, `memory_used_max_bytes`, `memory_total_bytes`,
//! `memory_per_channel_bytes`}], `errors`, `errors_omitted`. A value that
//! could not be measured is `null`.
//!
//! How each figure is measured: speed and drops from the pipeline's counters
//! (`PipelineStats`) and the packager's, differences over the window; part
//! availability as `bench::channel` describes; CPU per stage from
//! `/proc/self/task/*/stat` by thread name (`bench::host`), memory per channel
//! as (VmRSS at the window's end - VmRSS before the first trial) / channels,
//! so it includes what the allocator keeps from earlier trials; GPU
//! utilisation and memory from NVML (`pipeline::gpu::nvml`) once a second.

#![warn(missing_docs)]

pub mod avformat;
pub mod channel;
pub mod criteria;
pub mod host;
pub mod ramp;
pub mod report;
pub mod source;

use crate::control::config::{Backend, Config, Fallback, LadderConfig, VideoCodecChoice};
use crate::packaging::packager::AUDIO_TRACK;
use crate::packaging::store::StoreConfig;
use crate::pipeline::admission::{Admission, Grant, Placement};
use crate::pipeline::cpu::scale;
use crate::pipeline::cpu::x264::DEFAULT_PRESET;
use crate::pipeline::gpu::nvml::{GpuSample, Nvml};
use crate::pipeline::gpu::probe::{self, GpuInventory};
use crate::pipeline::graph::{auto_threads, thread_name, DecodeBackend, RungPlan};
use crate::pipeline::plan::ladder_plan;
use channel::{BenchChannel, ChannelSetup, Counters};
use criteria::{ChannelWindow, Criterion, Limits, RungWindow, TrackWindow};
use report::*;
use source::{Source, SourceChoice, SourceError};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most channels a bench may ask for. Each is a feeder, a decode thread and
/// a thread per rung (plus x264's): 1024 channels of a 4-rung ladder is over
/// 6000 threads; more is a typo.
pub const MAX_CHANNELS: u32 = 1024;

/// Longest `--duration` and `--warmup`, seconds (an hour).
pub const MAX_SECONDS: f64 = 3600.0;

/// Defaults of `--duration` and `--warmup`, seconds.
pub const DEFAULT_DURATION: f64 = 20.0;
/// Default of `--warmup`, seconds.
pub const DEFAULT_WARMUP: f64 = 5.0;

/// Default of `--max-channels`.
pub const DEFAULT_MAX_CHANNELS: u32 = 256;

/// Time for every channel of a trial to be built before the first one is fed.
const START_LEAD: Duration = Duration::from_millis(300);

/// Pause between trials, for the box to settle.
const SETTLE: Duration = Duration::from_secs(2);

/// After the window: the availability limit plus this, so that the window's
/// last parts can appear before the channels stop.
const DRAIN_EXTRA: Duration = Duration::from_millis(500);

/// How often NVML is sampled, and the progress line redrawn.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The ladder's placement by admission: a GPU when one can take it.
    Auto,
    /// NVDEC, CUDA scaling and NVENC.
    Gpu,
    /// NVDEC and CUDA scaling, x264 on the host.
    Hybrid,
    /// libavcodec, swscale and x264.
    Cpu,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Auto => Backend::Auto,
            BackendArg::Gpu => Backend::Gpu,
            BackendArg::Hybrid => Backend::Hybrid,
            BackendArg::Cpu => Backend::Cpu,
        }
    }
}

/// `--criteria`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CriteriaArg {
    /// Speed, drops, part availability and feed.
    All,
    /// Speed, drops and feed (availability measured, not judged).
    Throughput,
}

impl CriteriaArg {
    /// Whether a failure of `c` fails a trial.
    pub fn judges(self, c: Criterion) -> bool {
        self == CriteriaArg::All || c != Criterion::Availability
    }

    /// The criteria judged, by name (the JSON's `settings.criteria`).
    pub fn names(self) -> Vec<&'static str> {
        [
            Criterion::Speed,
            Criterion::Drops,
            Criterion::Availability,
            Criterion::Feed,
        ]
        .into_iter()
        .filter(|c| self.judges(*c))
        .map(Criterion::name)
        .collect()
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Auto => "auto",
        Backend::Gpu => "gpu",
        Backend::Hybrid => "hybrid",
        Backend::Cpu => "cpu",
    }
}

fn seconds(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{text} is not in 0..={MAX_SECONDS} seconds"))
    }
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match seconds(text)? {
        v if v > 0.0 => Ok(v),
        _ => Err("the measuring window must be longer than 0 s".into()),
    }
}

/// The arguments of `ladder bench` (see the module docs).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Configuration file, for its ladders and packaging targets. Without it:
    /// $LADDER_CONFIG, else /etc/ladder/ladder.toml if it exists, else the
    /// embedded default.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where the ladder runs; default: the ladder's own `backend`.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// The ladder to run (a table under [ladders]).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub ladder: String,
    /// The input: a synthetic source (1080p30, 720p30, 360p30) made at start,
    /// or a file with H.264 and AAC (MP4, FLV, MPEG-TS).
    #[arg(long, value_name = "NAME|FILE", default_value = "1080p30", value_parser = SourceChoice::parse)]
    pub source: SourceChoice,
    /// Most channels to try.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CHANNELS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CHANNELS)))]
    pub max_channels: u32,
    /// Seconds of running before each measuring window (after the last
    /// channel started).
    #[arg(long, value_name = "S", default_value_t = DEFAULT_WARMUP, value_parser = seconds)]
    pub warmup: f64,
    /// Seconds of each measuring window.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_DURATION, value_parser = positive_seconds)]
    pub duration: f64,
    /// Which criteria decide a trial: `all`, or `throughput` (speed, drops
    /// and feed; part availability is still measured and reported), the
    /// criteria a process without a latency target (ffmpeg) is judged by.
    #[arg(long, value_enum, default_value = "all")]
    pub criteria: CriteriaArg,
    /// Print one JSON object (schema in the `bench` module docs) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the source loop as an FLV file (for ffmpeg side by side).
    #[arg(long, value_name = "PATH")]
    pub write_source: Option<PathBuf>,
}

/// What a bench runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The ladder's name under `[ladders]`.
    pub ladder_name: String,
    /// The ladder.
    pub ladder: LadderConfig,
    /// The backend asked for (`--backend`, or the ladder's).
    pub backend: Backend,
    /// Packaging targets (`[packaging]`).
    pub store: StoreConfig,
    /// What to feed.
    pub source: SourceChoice,
    /// The most channels to try.
    pub max_channels: u32,
    /// Running before each measuring window.
    pub warmup: Duration,
    /// Each measuring window.
    pub duration: Duration,
    /// Which criteria decide a trial.
    pub criteria: CriteriaArg,
    /// Where to write the source loop as FLV, if anywhere.
    pub write_source: Option<PathBuf>,
}

/// Why a bench could not run (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The source could not be made or read.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// A GPU backend with no GPU that can take the ladder.
    #[error("backend {backend:?} cannot run here: {reason}")]
    Backend {
        /// The backend asked for.
        backend: &'static str,
        /// Admission's words.
        reason: String,
    },
    /// `--write-source` could not be written.
    #[error("cannot write the source to {path}: {error}")]
    WriteSource {
        /// The file asked for.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a channel's feeder thread: {0}")]
    Thread(std::io::Error),
}

/// The progress line on stderr.
struct Progress {
    tty: bool,
    last: Option<Instant>,
    line: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: None,
            line: false,
        }
    }

    /// A phase begins (a line of its own when not on a terminal).
    fn phase(&mut self, text: &str) {
        if !self.tty {
            eprintln!("ladder bench: {text}");
        } else {
            self.draw(text, None);
        }
    }

    /// Within a phase: `done` of `total` seconds.
    fn tick(&mut self, text: &str, done: f64, total: f64) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < PROGRESS_INTERVAL) {
            return;
        }
        self.last = Some(now);
        self.draw(text, Some((done, total)));
    }

    fn draw(&mut self, text: &str, bar: Option<(f64, f64)>) {
        let mut err = std::io::stderr().lock();
        let bar = bar.map_or_else(String::new, |(done, total)| {
            const WIDTH: usize = 24;
            let f = if total > 0.0 {
                (done / total).clamp(0.0, 1.0)
            } else {
                1.0
            };
            let n = (f * WIDTH as f64).round() as usize;
            format!(
                " [{}{}] {done:.0}/{total:.0} s",
                "#".repeat(n),
                "-".repeat(WIDTH - n)
            )
        });
        let _ = write!(err, "\r\x1b[2Kladder bench: {text}{bar}");
        let _ = err.flush();
        self.line = true;
    }

    /// A line that stays (a trial's outcome).
    fn done(&mut self, text: &str) {
        if self.tty && self.line {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.line = false;
        }
        eprintln!("ladder bench: {text}");
    }

    fn finish(&mut self) {
        if self.tty && self.line {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.line = false;
        }
    }
}

/// What runs where, decided once per bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cpu,
    Hybrid,
    Gpu,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Hybrid => "hybrid",
            Kind::Gpu => "gpu",
        }
    }
}

/// One channel's placement in a trial.
struct Placed {
    decode: DecodeBackend,
    grant: Option<Grant>,
    gpu: Option<u32>,
    beyond: bool,
}

/// A bench in progress.
struct Bench<'a> {
    options: &'a Options,
    source: Arc<Source>,
    passthrough: Option<String>,
    rungs: Vec<RungPlan>,
    inventory: GpuInventory,
    kind: Kind,
    limits: Limits,
    nvml: Option<Nvml>,
    rss_baseline: Option<u64>,
    /// The most channels admission placed before refusing one, per trial.
    admission_channels: Option<u32>,
}

/// Where the whole ladder runs for `backend`, as admission decides for a
/// first channel; `gpu`/`hybrid` with no GPU that can take it is an error.
fn resolve(
    backend: Backend,
    admission: &Admission,
    rungs: &[RungPlan],
    has_source: bool,
) -> Result<(Kind, String), BenchError> {
    if rungs.is_empty() {
        return Ok((Kind::Cpu, "the ladder has no encoded rung".into()));
    }
    match admission.admit(backend, Fallback::Fail, rungs, has_source) {
        Ok(grant) => Ok((
            match grant.placement {
                Placement::Gpu { .. } => Kind::Gpu,
                Placement::Hybrid { .. } => Kind::Hybrid,
                Placement::Cpu => Kind::Cpu,
            },
            grant.reason.clone(),
        )),
        Err(refused) if backend == Backend::Auto => {
            Ok((Kind::Cpu, format!("{}: CPU backend", refused.0)))
        }
        Err(refused) => Err(BenchError::Backend {
            backend: backend_name(backend),
            reason: refused.0,
        }),
    }
}

/// A counter's growth between two snapshots.
fn delta(after: u64, before: u64) -> u64 {
    after.saturating_sub(before)
}

impl Bench<'_> {
    /// Place `n` channels (see the module docs).
    fn place(&self, n: u32) -> (Vec<Placed>, u32) {
        let has_source = self.passthrough.is_some();
        if self.kind == Kind::Cpu || self.rungs.is_empty() {
            let placed = (0..n)
                .map(|_| Placed {
                    decode: DecodeBackend::Cpu,
                    grant: None,
                    gpu: None,
                    beyond: false,
                })
                .collect();
            return (placed, 0);
        }
        let backend = if self.kind == Kind::Gpu {
            Backend::Gpu
        } else {
            Backend::Hybrid
        };
        let admission = self.inventory.admission();
        let usable: Vec<u32> = self
            .inventory
            .gpus
            .iter()
            .map(|g| g.capacity())
            .filter(|c| c.nvdec_engines > 0 && (self.kind == Kind::Hybrid || c.nvenc_engines > 0))
            .map(|c| c.index)
            .collect();
        let mut count: BTreeMap<u32, u32> = usable.iter().map(|g| (*g, 0)).collect();
        let mut admitted = 0;
        let mut refused = false;
        let mut placed = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let grant = if refused {
                None
            } else {
                match admission.admit(backend, Fallback::Fail, &self.rungs, has_source) {
                    Ok(g) => Some(g),
                    Err(_) => {
                        refused = true;
                        None
                    }
                }
            };
            let (gpu, grant, beyond) = match grant {
                Some(g) => match g.placement {
                    Placement::Gpu { gpu } | Placement::Hybrid { gpu } => {
                        admitted += 1;
                        (gpu, Some(g), false)
                    }
                    Placement::Cpu => (least(&count), None, true),
                },
                None => (least(&count), None, true),
            };
            *count.entry(gpu).or_insert(0) += 1;
            placed.push(Placed {
                decode: match self.kind {
                    Kind::Gpu => DecodeBackend::Gpu { gpu },
                    _ => DecodeBackend::Nvdec { gpu },
                },
                grant,
                gpu: Some(gpu),
                beyond,
            });
        }
        (placed, admitted)
    }

    /// The GPUs' NVML samples now, by CUDA ordinal.
    fn gpu_samples(&self, gpus: &[u32]) -> BTreeMap<u32, GpuSample> {
        let mut out = BTreeMap::new();
        let Some(nvml) = &self.nvml else {
            return out;
        };
        for &g in gpus {
            let Some(info) = self.inventory.gpus.iter().find(|i| i.index as u32 == g) else {
                continue;
            };
            match nvml
                .device_by_pci_bus_id(&info.pci_bus_id)
                .and_then(|d| d.sample())
            {
                Ok(s) => {
                    out.insert(g, s);
                }
                Err(e) => tracing::debug!(gpu = g, "NVML: {e}"),
            }
        }
        out
    }

    /// Run one trial of `n` channels.
    fn trial(
        &mut self,
        n: u32,
        number: usize,
        progress: &mut Progress,
    ) -> Result<Trial, BenchError> {
        let label = format!("trial {number}: {n} channel(s)");
        let (placed, admitted) = self.place(n);
        if self.kind != Kind::Cpu {
            self.admission_channels = Some(self.admission_channels.unwrap_or(0).max(admitted));
        }
        let mut placement = PlacementReport {
            per_gpu: vec![0; self.inventory.gpus.len()],
            ..PlacementReport::default()
        };
        let gop = Duration::from_secs_f64(self.source.info.gop_seconds.clamp(0.04, 10.0));
        let stagger = gop / n.max(1);
        let t0 = Instant::now() + START_LEAD;
        let mut channels: Vec<BenchChannel> = Vec::with_capacity(n as usize);
        let mut gpus_used: Vec<u32> = Vec::new();
        progress.phase(&format!("{label}: starting"));
        for (i, p) in placed.into_iter().enumerate() {
            match p.decode {
                DecodeBackend::Cpu => placement.cpu += 1,
                DecodeBackend::Nvdec { .. } => placement.hybrid += 1,
                DecodeBackend::Gpu { .. } => placement.gpu += 1,
            }
            placement.beyond_admission += u32::from(p.beyond);
            if let Some(g) = p.gpu {
                if let Some(c) = placement.per_gpu.get_mut(g as usize) {
                    *c += 1;
                }
                if !gpus_used.contains(&g) {
                    gpus_used.push(g);
                }
            }
            let setup = ChannelSetup {
                name: format!("b{i}"),
                source: self.source.clone(),
                store: self.options.store.clone(),
                passthrough: self.passthrough.clone(),
                rungs: self.rungs.clone(),
                decode: p.decode,
                grant: p.grant,
                start_at: t0 + stagger * i as u32,
            };
            channels.push(BenchChannel::start(setup).map_err(BenchError::Thread)?);
        }
        let gpu_before = self.gpu_samples(&gpus_used);

        // warm-up
        let window_start = t0 + stagger * n.saturating_sub(1) + self.options.warmup;
        let warm_total = (window_start - Instant::now()).as_secs_f64();
        progress.phase(&format!("{label}: warm-up"));
        while Instant::now() < window_start {
            let left = (window_start - Instant::now()).as_secs_f64();
            progress.tick(&format!("{label}: warm-up"), warm_total - left, warm_total);
            std::thread::sleep(PROGRESS_INTERVAL.min(window_start - Instant::now()));
        }

        // the window
        let before: Vec<Counters> = channels.iter().map(BenchChannel::counters).collect();
        let threads_before = host::thread_cpu();
        let ticks_before = host::cpu_ticks();
        let proc_before = host::process_cpu_seconds();
        let (wall, mono) = (SystemTime::now(), Instant::now());
        for c in &channels {
            c.open_window(wall, mono);
        }
        let end = mono + self.options.duration;
        let total = self.options.duration.as_secs_f64();
        let mut samples: BTreeMap<u32, Vec<GpuSample>> = BTreeMap::new();
        let mut next_sample = mono;
        progress.phase(&format!("{label}: measuring"));
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= next_sample && self.nvml.is_some() {
                for (g, s) in self.gpu_samples(&gpus_used) {
                    samples.entry(g).or_default().push(s);
                }
                next_sample = now + SAMPLE_INTERVAL;
            }
            progress.tick(
                &format!("{label}: measuring"),
                (now - mono).as_secs_f64(),
                total,
            );
            std::thread::sleep(PROGRESS_INTERVAL.min(end - now));
        }
        let after: Vec<Counters> = channels.iter().map(BenchChannel::counters).collect();
        let threads_after = host::thread_cpu();
        let ticks_after = host::cpu_ticks();
        let proc_after = host::process_cpu_seconds();
        let (wall_end, mono_end) = (SystemTime::now(), Instant::now());
        for c in &channels {
            c.close_window(wall_end, mono_end);
        }
        let window = (mono_end - mono).as_secs_f64().max(1e-3);
        let rss = host::rss_bytes();
        let load = host::load_average();

        // let the window's last parts appear
        let drain = Duration::from_secs_f64(self.limits.availability_ms / 1000.0) + DRAIN_EXTRA;
        progress.phase(&format!("{label}: draining"));
        std::thread::sleep(drain);
        let availability: Vec<_> = channels.iter().map(BenchChannel::availability).collect();
        let feeds: Vec<_> = channels.iter().map(BenchChannel::feed).collect();
        let mut errors = Vec::new();
        let mut errors_omitted = 0;
        for c in &channels {
            let (e, more) = c.errors();
            for m in e {
                if errors.len() < channel::MAX_ERRORS_KEPT {
                    errors.push(m);
                } else {
                    errors_omitted += 1;
                }
            }
            errors_omitted += more;
        }
        let names: Vec<String> = channels.iter().map(|c| c.name().to_owned()).collect();

        progress.phase(&format!("{label}: stopping"));
        let stoppers: Vec<_> = channels
            .into_iter()
            .map(|c| std::thread::spawn(move || c.stop()))
            .collect();
        for s in stoppers {
            let _ = s.join();
        }

        // judge
        let mut rung_windows: Vec<RungWindow> = Vec::new();
        let mut channel_windows: Vec<ChannelWindow> = Vec::new();
        let mut track_windows: Vec<TrackWindow> = Vec::new();
        let mut tracks: Vec<(String, &'static str)> = Vec::new();
        if let Some(p) = &self.passthrough {
            tracks.push((p.clone(), "passthrough"));
        }
        tracks.extend(self.rungs.iter().map(|r| (r.name.clone(), "encoded")));
        if self.source.audio_header.is_some() {
            tracks.push((AUDIO_TRACK.to_owned(), "audio"));
        }
        for (i, name) in names.iter().enumerate() {
            let (a, b) = (&before[i], &after[i]);
            let mut cw = ChannelWindow {
                channel: name.clone(),
                packager_dropped: delta(
                    b.packager.rung_dropped + b.packager.rung_missed_segments,
                    a.packager.rung_dropped + a.packager.rung_missed_segments,
                ),
                feed_lateness_p99_ms: criteria::percentile(&feeds[i].lateness_ms, 99.0),
                ..ChannelWindow::default()
            };
            if let (Some(pa), Some(pb)) = (&a.pipeline, &b.pipeline) {
                cw.decode_dropped =
                    delta(pb.decode.dropped_queue_full, pa.decode.dropped_queue_full);
                cw.decode_no_decoder =
                    delta(pb.decode.dropped_no_decoder, pa.decode.dropped_no_decoder);
                cw.decode_errors = delta(pb.decode.errors, pa.decode.errors);
                for (ra, rb) in pa.rungs.iter().zip(&pb.rungs) {
                    rung_windows.push(RungWindow {
                        channel: name.clone(),
                        rung: rb.name.clone(),
                        media_seconds: rb.media_seconds - ra.media_seconds,
                        encode_seconds: rb.encode_seconds - ra.encode_seconds,
                        dropped: delta(rb.dropped_queue_full, ra.dropped_queue_full),
                        errors: delta(rb.errors, ra.errors),
                    });
                }
            }
            channel_windows.push(cw);
            for (t, _) in &tracks {
                track_windows.push(TrackWindow {
                    channel: name.clone(),
                    track: t.clone(),
                    latencies_ms: availability[i]
                        .latencies
                        .get(t)
                        .cloned()
                        .unwrap_or_default(),
                });
            }
        }
        let mut failures = criteria::evaluate(
            &rung_windows,
            &channel_windows,
            &track_windows,
            &self.limits,
        );
        failures.retain(|f| self.options.criteria.judges(f.criterion));
        let mut failed_criteria: Vec<&'static str> = Vec::new();
        for f in &failures {
            if !failed_criteria.contains(&f.criterion.name()) {
                failed_criteria.push(f.criterion.name());
            }
        }
        let pass = failures.is_empty();

        // aggregate
        let cpu_of = |stage: &str| -> Option<f64> {
            let mut sum = 0.0;
            let mut any = false;
            for name in &names {
                let t = thread_name(name, stage);
                if let (Some(b), Some(a)) = (threads_after.get(&t), threads_before.get(&t)) {
                    sum += (b - a).max(0.0);
                    any = true;
                }
            }
            any.then(|| sum / window / f64::from(n))
        };
        let fed: usize = feeds.iter().map(|f| f.lateness_ms.len()).sum();
        let decoded: u64 = (0..names.len())
            .filter_map(|i| {
                Some(delta(
                    after[i].pipeline.as_ref()?.decode.pictures,
                    before[i].pipeline.as_ref()?.decode.pictures,
                ))
            })
            .sum();
        let mut rung_stages = Vec::new();
        let mut track_reports = Vec::new();
        for (t, kind) in &tracks {
            let mine: Vec<&RungWindow> = rung_windows.iter().filter(|r| &r.rung == t).collect();
            let speeds: Vec<f64> = mine.iter().filter_map(|r| r.speed()).collect();
            let lat: Vec<&TrackWindow> = track_windows.iter().filter(|w| &w.track == t).collect();
            let pooled: Vec<f64> = lat
                .iter()
                .flat_map(|w| w.latencies_ms.iter().copied())
                .collect();
            let worst_p99 = lat
                .iter()
                .filter_map(|w| criteria::percentile(&w.latencies_ms, 99.0))
                .max_by(f64::total_cmp);
            let stats_of = |c: &Counters| {
                c.pipeline
                    .as_ref()
                    .and_then(|p| p.rungs.iter().find(|r| &r.name == t).cloned())
            };
            let first = after.first().and_then(stats_of);
            let encoded: u64 = (0..names.len())
                .filter_map(|i| {
                    Some(delta(
                        stats_of(&after[i])?.encoded,
                        stats_of(&before[i])?.encoded,
                    ))
                })
                .sum();
            let gpu_fallbacks: u64 = after
                .iter()
                .filter_map(stats_of)
                .map(|r| r.gpu_fallbacks)
                .sum();
            let (width, height) = match *kind {
                "encoded" => first.as_ref().map_or((0, 0), |r| (r.width, r.height)),
                "passthrough" => (self.source.info.width, self.source.info.height),
                _ => (0, 0),
            };
            if *kind == "encoded" {
                rung_stages.push(StageReport {
                    name: t.clone(),
                    per_second: encoded as f64 / window,
                    cpu_cores_per_channel: cpu_of(t),
                });
            }
            track_reports.push(TrackReport {
                name: t.clone(),
                kind,
                encoder: first.as_ref().map(|r| r.encoder).filter(|e| !e.is_empty()),
                width,
                height,
                speed_min: speeds.iter().copied().min_by(f64::total_cmp),
                speed_median: criteria::median(&speeds),
                fps: (*kind == "encoded").then(|| encoded as f64 / window / f64::from(n)),
                dropped: mine.iter().map(|r| r.dropped + r.errors).sum(),
                parts: pooled.len() as u64,
                availability_p50_ms: criteria::median(&pooled),
                availability_p99_ms: worst_p99,
                availability_max_ms: pooled.iter().copied().max_by(f64::total_cmp),
                gpu_fallbacks,
            });
        }
        let parts: u64 = availability.iter().map(|a| a.parts).sum();
        let bytes: u64 = availability.iter().map(|a| a.bytes).sum();
        let gpus = gpus_used
            .iter()
            .map(|g| {
                let s = samples.get(g).map(Vec::as_slice).unwrap_or(&[]);
                let mean = |f: fn(&GpuSample) -> Option<u32>| {
                    let v: Vec<f64> = s.iter().filter_map(f).map(f64::from).collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                };
                let max = |f: fn(&GpuSample) -> Option<u32>| s.iter().filter_map(f).max();
                let used_max = s.iter().filter_map(|x| x.memory_used_bytes).max();
                let on_gpu = placement.per_gpu.get(*g as usize).copied().unwrap_or(0);
                GpuUseReport {
                    index: *g,
                    channels: on_gpu,
                    samples: s.len() as u32,
                    decoder_percent_mean: mean(|x| x.decoder_percent),
                    decoder_percent_max: max(|x| x.decoder_percent),
                    encoder_percent_mean: mean(|x| x.encoder_percent),
                    encoder_percent_max: max(|x| x.encoder_percent),
                    sm_percent_mean: mean(|x| x.sm_percent),
                    sm_percent_max: max(|x| x.sm_percent),
                    memory_used_max_bytes: used_max,
                    memory_total_bytes: s.iter().find_map(|x| x.memory_total_bytes),
                    memory_per_channel_bytes: used_max
                        .zip(gpu_before.get(g).and_then(|b| b.memory_used_bytes))
                        .filter(|_| on_gpu > 0)
                        .map(|(u, b)| u.saturating_sub(b) / u64::from(on_gpu)),
                }
            })
            .collect();
        let listed = failures.len().min(MAX_FAILURES_LISTED);
        let trial = Trial {
            channels: n,
            pass,
            failed_criteria,
            failures_omitted: (failures.len() - listed) as u64,
            failures: failures.into_iter().take(listed).collect(),
            window_seconds: window,
            host: HostReport {
                cpu_busy_percent: ticks_after
                    .zip(ticks_before)
                    .and_then(|(b, a)| b.busy_percent_since(&a)),
                process_cpu_cores: proc_after
                    .zip(proc_before)
                    .map(|(b, a)| (b - a).max(0.0) / window),
                load_average: load,
            },
            memory: MemoryReport {
                rss_bytes: rss,
                rss_baseline_bytes: self.rss_baseline,
                per_channel_bytes: rss
                    .zip(self.rss_baseline)
                    .map(|(r, b)| r.saturating_sub(b) / u64::from(n)),
            },
            placement,
            stages: Stages {
                feed: StageReport {
                    name: "feed".into(),
                    per_second: fed as f64 / window,
                    cpu_cores_per_channel: cpu_of("feed"),
                },
                decode: StageReport {
                    name: "decode".into(),
                    per_second: decoded as f64 / window,
                    cpu_cores_per_channel: cpu_of("dec"),
                },
                rungs: rung_stages,
                packaging: PackagingReport {
                    parts_per_second: parts as f64 / window,
                    bytes_per_second: bytes as f64 / window,
                },
            },
            tracks: track_reports,
            gpus,
            errors,
            errors_omitted,
        };
        let outcome = if trial.pass {
            "pass".to_owned()
        } else {
            format!("FAIL ({})", trial.failed_criteria.join(", "))
        };
        progress.done(&format!("{label}: {outcome}"));
        Ok(trial)
    }

    /// The renditions as run on this source.
    fn renditions(&self, trials: &[Trial]) -> Vec<RenditionReport> {
        let src = &self.source.info;
        let sar = self.source.video_config.sample_aspect;
        let cpu_encoder = self.kind != Kind::Gpu;
        self.options
            .ladder
            .renditions
            .iter()
            .map(|r| {
                if r.passthrough {
                    return RenditionReport {
                        name: r.name.clone(),
                        kind: "passthrough",
                        codec: None,
                        width: src.width,
                        height: src.height,
                        bitrate_kbps: None,
                        maxrate_kbps: None,
                        bufsize_kbits: None,
                        preset: None,
                        profile: None,
                        fps_max: None,
                        threads: None,
                    };
                }
                let plan = self.rungs.iter().find(|p| p.name == r.name);
                let (w, h) = scale::rung_size(src.width, src.height, sar, r.width, r.height);
                // what the trials saw, if any encoded
                let (w, h) = trials
                    .iter()
                    .flat_map(|t| &t.tracks)
                    .find(|k| k.name == r.name && k.width > 0)
                    .map_or((w, h), |k| (k.width, k.height));
                let h264 = r.codec == VideoCodecChoice::H264;
                let bitrate = plan.map_or(0, |p| p.bitrate_kbps);
                let maxrate = plan.and_then(|p| p.maxrate_kbps).unwrap_or(bitrate);
                RenditionReport {
                    name: r.name.clone(),
                    kind: "encoded",
                    codec: Some(if h264 { "h264" } else { "av1" }),
                    width: w,
                    height: h,
                    bitrate_kbps: Some(bitrate),
                    maxrate_kbps: Some(maxrate),
                    bufsize_kbits: Some(maxrate),
                    preset: h264.then(|| {
                        plan.and_then(|p| p.preset.clone())
                            .unwrap_or_else(|| DEFAULT_PRESET.to_owned())
                    }),
                    profile: plan.and_then(|p| p.profile.clone()),
                    fps_max: plan.and_then(|p| p.fps_max),
                    threads: (h264 && cpu_encoder).then(|| {
                        plan.map(|p| p.threads)
                            .filter(|t| *t > 0)
                            .unwrap_or_else(|| auto_threads(w, h))
                    }),
                }
            })
            .collect()
    }
}

/// The GPU with the fewest channels (ties: the lowest ordinal).
fn least(count: &BTreeMap<u32, u32>) -> u32 {
    count
        .iter()
        .min_by_key(|(g, c)| (**c, **g))
        .map_or(0, |(g, _)| *g)
}

/// Run a whole bench, reporting progress on stderr.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    let mut progress = Progress::new();
    let result = run_with(options, &mut progress);
    progress.finish();
    result
}

fn run_with(options: &Options, progress: &mut Progress) -> Result<Report, BenchError> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let load_start = host::load_average();
    let (passthrough, rungs) = ladder_plan(&options.ladder);
    progress.phase("probing GPUs");
    let inventory = probe::probe();
    let (kind, reason) = resolve(
        options.backend,
        &inventory.admission(),
        &rungs,
        passthrough.is_some(),
    )?;
    progress.phase("making the source");
    let source = match &options.source {
        SourceChoice::Synthetic(s) => Source::synthetic(s)?,
        SourceChoice::File(path) => avformat::read(path)?,
    };
    if let Some(path) = &options.write_source {
        std::fs::write(path, source.flv_file()).map_err(|error| BenchError::WriteSource {
            path: path.display().to_string(),
            error,
        })?;
    }
    let (nvml, nvml_reason) = match Nvml::load() {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let limits = Limits::for_part_target(options.store.part_target);
    let mut bench = Bench {
        options,
        source: Arc::new(source),
        passthrough,
        rungs,
        inventory,
        kind,
        limits,
        nvml,
        rss_baseline: host::rss_bytes(),
        admission_channels: None,
    };
    let mut ramp = ramp::Ramp::new(options.max_channels);
    let mut trials: Vec<Trial> = Vec::new();
    while let Some(n) = ramp.next() {
        if !trials.is_empty() {
            std::thread::sleep(SETTLE);
        }
        let trial = bench.trial(n, trials.len() + 1, progress)?;
        ramp.record(n, trial.pass);
        trials.push(trial);
    }
    let channels = ramp.channels();
    let at_answer = trials
        .iter()
        .rev()
        .find(|t| t.pass && t.channels == channels);
    let gpus_used = at_answer.map_or(0, |t| {
        t.placement.per_gpu.iter().filter(|c| **c > 0).count() as u32
    });
    let first_failing = ramp.first_failing().and_then(|f| {
        let t = trials.iter().find(|t| t.channels == f && !t.pass)?;
        Some(FirstFailing {
            channels: f,
            criteria: t.failed_criteria.clone(),
            reasons: t
                .failures
                .iter()
                .take(4)
                .map(|f| f.message.clone())
                .collect(),
        })
    });
    let inv = &bench.inventory;
    let report = Report {
        schema_version: SCHEMA_VERSION,
        tool: "ladder bench",
        version: env!("CARGO_PKG_VERSION"),
        started_at,
        machine: Machine {
            cpus: host::cpus(),
            cpu_model: host::cpu_model(),
            memory_bytes: host::memory_total_bytes(),
            load_average_start: load_start,
            load_average_end: host::load_average(),
            gpus: inv
                .gpus
                .iter()
                .map(|g| {
                    let c = g.capacity();
                    GpuInfoReport {
                        index: c.index,
                        name: g.name.clone(),
                        memory_bytes: g.memory_bytes,
                        pci_bus_id: g.pci_bus_id.clone(),
                        nvdec_engines: c.nvdec_engines,
                        nvenc_engines: c.nvenc_engines,
                    }
                })
                .collect(),
            no_gpu: inv.no_gpu.clone(),
            nvml: bench.nvml.is_some(),
            nvml_reason,
        },
        backend: BackendReport {
            requested: backend_name(options.backend).to_owned(),
            used: kind.name().to_owned(),
            reason,
        },
        ladder: LadderReport {
            name: options.ladder_name.clone(),
            renditions: bench.renditions(&trials),
        },
        source: bench.source.info.clone(),
        settings: Settings {
            warmup_seconds: options.warmup.as_secs_f64(),
            duration_seconds: options.duration.as_secs_f64(),
            max_channels: options.max_channels,
            start_stagger_rule: "source GOP / channels",
            segment_seconds: options.store.segment_target,
            part_seconds: options.store.part_target,
            criteria: options.criteria.names(),
            speed_min: bench.limits.speed_min,
            availability_limit_ms: bench.limits.availability_ms,
            feed_lateness_limit_ms: bench.limits.feed_lateness_ms,
        },
        result: ResultReport {
            channels,
            channels_per_gpu: (kind != Kind::Cpu && gpus_used > 0)
                .then(|| f64::from(channels) / f64::from(gpus_used)),
            gpus_used,
            limited_by: ramp.limit().name(),
            first_failing,
            memory_per_channel_bytes: at_answer.and_then(|t| t.memory.per_channel_bytes),
            admission_channels: bench.admission_channels,
        },
        trials,
    };
    Ok(report)
}

/// Logs to stderr at `warn` (the progress line is there too); `RUST_LOG`
/// overrides.
fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| tracing_subscriber::EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// `ladder bench`: returns the exit status (0 ran, 1 runtime failure, 2 bad
/// usage or configuration).
pub fn main(args: BenchArgs) -> u8 {
    init_tracing();
    // libavcodec's informational lines (the AAC encoder's statistics) would
    // break the progress line; warnings and errors still show.
    ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Warning);
    let (config, origin) = match Config::load(args.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return 2;
        }
    };
    let Some(ladder) = config.ladders.get(&args.ladder).cloned() else {
        let names: Vec<&str> = config.ladders.keys().map(String::as_str).collect();
        eprintln!(
            "ladder bench: no ladder {:?} in {origin} (ladders: {})",
            args.ladder,
            names.join(", ")
        );
        return 2;
    };
    let options = Options {
        ladder_name: args.ladder.clone(),
        backend: args.backend.map_or(ladder.backend, Backend::from),
        ladder,
        store: StoreConfig {
            segment_target: config.packaging.segment_seconds,
            part_target: config.packaging.part_seconds,
            window_segments: config.packaging.window_segments,
            max_bytes: config.packaging.max_channel_bytes,
        },
        source: args.source.clone(),
        max_channels: args.max_channels,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        criteria: args.criteria,
        write_source: args.write_source.clone(),
    };
    match run(&options) {
        Ok(report) => {
            let text = if args.json {
                report.to_json()
            } else {
                report.to_text()
            };
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("ladder bench: cannot write to stdout: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("ladder bench: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::admission::GpuCapacity;
    use crate::pipeline::plan::RungCodec;

    fn rung(name: &str, height: u32, kbps: u32) -> RungPlan {
        RungPlan {
            name: name.into(),
            codec: RungCodec::H264,
            width: None,
            height: Some(height),
            bitrate_kbps: kbps,
            maxrate_kbps: None,
            fps_max: None,
            profile: None,
            preset: None,
            threads: 0,
        }
    }

    fn ladder() -> Vec<RungPlan> {
        vec![rung("720p", 720, 3000), rung("480p", 480, 1200)]
    }

    /// An H200-like GPU: NVDEC, no NVENC.
    fn h200() -> GpuCapacity {
        GpuCapacity {
            index: 0,
            name: "NVIDIA H200".into(),
            memory: 141 << 30,
            nvdec_engines: 7,
            nvenc_engines: 0,
            nvenc_av1: false,
            nvenc_sessions: None,
        }
    }

    #[test]
    fn throughput_criteria_leave_out_availability_only() {
        assert_eq!(
            CriteriaArg::All.names(),
            ["speed", "drops", "availability", "feed"]
        );
        assert_eq!(CriteriaArg::Throughput.names(), ["speed", "drops", "feed"]);
        assert!(!CriteriaArg::Throughput.judges(Criterion::Availability));
        assert!(CriteriaArg::Throughput.judges(Criterion::Drops));
        assert!(CriteriaArg::All.judges(Criterion::Availability));
    }

    #[test]
    fn without_a_gpu_auto_is_the_cpu_and_gpu_backends_cannot_run() {
        let none = Admission::with_absent_reason(vec![], "no NVIDIA driver");
        let (kind, reason) = resolve(Backend::Auto, &none, &ladder(), true).unwrap();
        assert_eq!(kind, Kind::Cpu);
        assert!(reason.contains("no NVIDIA driver"), "{reason}");
        assert_eq!(
            resolve(Backend::Cpu, &none, &ladder(), true).unwrap().0,
            Kind::Cpu
        );
        for backend in [Backend::Gpu, Backend::Hybrid] {
            match resolve(backend, &none, &ladder(), true) {
                Err(BenchError::Backend { reason, .. }) => {
                    assert!(reason.contains("no NVIDIA driver"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        // no encoded rung: nothing to place
        assert_eq!(
            resolve(Backend::Gpu, &none, &[], true).unwrap().0,
            Kind::Cpu
        );
    }

    #[test]
    fn a_gpu_without_nvenc_runs_hybrid() {
        let a = Admission::new(vec![h200()]);
        assert_eq!(
            resolve(Backend::Auto, &a, &ladder(), true).unwrap().0,
            Kind::Hybrid
        );
        assert_eq!(
            resolve(Backend::Hybrid, &a, &ladder(), true).unwrap().0,
            Kind::Hybrid
        );
        assert!(matches!(
            resolve(Backend::Gpu, &a, &ladder(), true),
            Err(BenchError::Backend { backend: "gpu", .. })
        ));
    }

    #[test]
    fn beyond_admission_goes_to_the_least_loaded_gpu() {
        let count: BTreeMap<u32, u32> = [(0, 3), (1, 2), (2, 2)].into_iter().collect();
        assert_eq!(least(&count), 1);
        assert_eq!(least(&BTreeMap::new()), 0);
    }

    #[test]
    fn seconds_are_checked() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert!(seconds("-1").is_err());
        assert!(seconds("nan").is_err());
        assert!(seconds("3601").is_err());
        assert!(positive_seconds("0").is_err());
        assert_eq!(positive_seconds("20"), Ok(20.0));
    }
}
