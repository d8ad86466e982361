//! Where a channel's ladder runs, decided once, when the publisher is
//! admitted (issue 4 §5): on a GPU (`gpu`: NVDEC, CUDA scaling, NVENC), on a
//! GPU and the host (`hybrid`: NVDEC and CUDA scaling, x264 on the host, the
//! mode of A100/H100/H200, which have no NVENC), or on the host (`cpu`).
//!
//! The choice is pure bookkeeping, with no GPU call: every GPU's capacity
//! (from the probe at start-up) against what the admitted channels were
//! charged. A channel is charged an estimate of its load from its ladder:
//! decode and encode pixel rates against the engines' planning throughput,
//! NVENC sessions against the driver's cap, device memory against the card's.
//! `auto` and `gpu` channels are spread over the GPUs: each goes to the GPU
//! that is least loaded once it is placed there.
//!
//! When no GPU can take a channel (full, missing, or without the engine its
//! backend needs), the ladder's `fallback` policy decides, here and only here
//! (never in the middle of a stream): `cpu` runs the whole ladder on the host,
//! `degrade` drops encoded rungs from the costliest down until it fits (down
//! to the source passed through alone), `fail` refuses the publish. The
//! decision carries a reason for the one log line at publish.
//!
//! The figures are planning estimates, not measurements of any card: each
//! constant says where it comes from. They keep a GPU from being filled past
//! what it can decode and encode in real time; a card that does better is
//! underused, which a GPU-equipped run of `ladder bench` should correct.

use crate::control::config::{Backend, Fallback};
use crate::pipeline::plan::{planned_size, RungCodec, RungPlan};
use std::sync::{Arc, Mutex, MutexGuard};

/// The source a ladder is planned for before its first picture is seen:
/// admission happens at `publish`, before the sequence header. 1080p30 is the
/// usual contribution feed; a larger source costs more than was charged.
pub const PLANNED_SOURCE: (u32, u32, f64) = (1920, 1080, 30.0);

/// H.264 decode throughput planned per NVDEC engine, in luma pixels per
/// second: 600 1080p pictures per second. NVIDIA's NVDEC application note
/// gives 1080p H.264 figures per engine of roughly 600 to 1000 frames/s
/// depending on generation and clock; the low end is taken.
pub const NVDEC_PIXELS_PER_SECOND: f64 = 600.0 * 1920.0 * 1080.0;

/// H.264 encode throughput planned per NVENC engine at the fast presets, in
/// luma pixels per second: 500 1080p pictures per second (GPU.md: several
/// hundred to about 900 per engine at the fastest preset).
pub const NVENC_PIXELS_PER_SECOND: f64 = 500.0 * 1920.0 * 1080.0;

/// CUDA scaling, planned per GPU in output luma pixels per second. Resizing
/// is memory-bound and cheap next to decode; this only stops absurd loads.
pub const SCALE_PIXELS_PER_SECOND: f64 = 20_000.0 * 1920.0 * 1080.0;

/// The share of an engine's planned throughput that admission fills: what
/// is left absorbs bursts (a source IDR, a rung's scene change).
pub const ENGINE_UTILISATION: f64 = 0.8;

/// Decode surfaces per channel (NVDEC's decode picture buffer, 16 at most
/// for H.264, plus what is in flight to the scalers), source size, NV12.
pub const DECODE_SURFACES: u64 = 20;

/// Device pictures per encoded rung: the scaler's output pool and NVENC's
/// input and reference pictures, rung size, NV12.
pub const RUNG_SURFACES: u64 = 8;

/// Device memory an NVENC session takes beyond its pictures (motion search,
/// bitstream buffers, rate control): an estimate from common reports of
/// 100-200 MB per 1080p session, scaled by size from this 1080p figure.
pub const NVENC_SESSION_BYTES_1080P: u64 = 160 << 20;

/// Device memory kept free on every GPU: the process's CUDA context and
/// modules (a few hundred MB), and other users of the card.
pub const MEMORY_RESERVE: u64 = 1 << 30;

/// What admission knows of one GPU, from the probe at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuCapacity {
    /// CUDA device ordinal.
    pub index: u32,
    /// Marketing name, for logs.
    pub name: String,
    /// Device memory in bytes.
    pub memory: u64,
    /// NVDEC engines that decode H.264 (0: none, or no H.264).
    pub nvdec_engines: u32,
    /// NVENC engines that encode H.264 (0: no NVENC, as on H100).
    pub nvenc_engines: u32,
    /// NVENC can encode AV1 (Ada and later).
    pub nvenc_av1: bool,
    /// Concurrent NVENC sessions the driver allows on this GPU; `None`:
    /// no cap (datacenter cards).
    pub nvenc_sessions: Option<u32>,
}

/// A channel's estimated load on one GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Luma pixels per second through NVDEC.
    pub decode: f64,
    /// Luma pixels per second out of the CUDA scalers.
    pub scale: f64,
    /// Luma pixels per second through NVENC.
    pub encode: f64,
    /// NVENC sessions.
    pub sessions: u32,
    /// Device memory, bytes.
    pub memory: u64,
}

impl Load {
    fn add(&mut self, o: &Load) {
        self.decode += o.decode;
        self.scale += o.scale;
        self.encode += o.encode;
        self.sessions += o.sessions;
        self.memory += o.memory;
    }

    fn sub(&mut self, o: &Load) {
        self.decode = (self.decode - o.decode).max(0.0);
        self.scale = (self.scale - o.scale).max(0.0);
        self.encode = (self.encode - o.encode).max(0.0);
        self.sessions = self.sessions.saturating_sub(o.sessions);
        self.memory = self.memory.saturating_sub(o.memory);
    }
}

/// Where a channel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// NVDEC, CUDA scaling and NVENC on GPU `gpu`.
    Gpu { gpu: u32 },
    /// NVDEC and CUDA scaling on GPU `gpu`, encoding on the host.
    Hybrid { gpu: u32 },
    /// Everything on the host.
    Cpu,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Gpu { gpu } => write!(f, "gpu (GPU {gpu})"),
            Placement::Hybrid { gpu } => write!(f, "hybrid (GPU {gpu})"),
            Placement::Cpu => f.write_str("cpu"),
        }
    }
}

/// The outcome of admitting a channel.
#[derive(Debug)]
pub struct Grant {
    pub placement: Placement,
    /// The encoded rungs that run, in ladder order (all of them unless
    /// `degrade` dropped some).
    pub rungs: Vec<RungPlan>,
    /// Rungs `degrade` left out, costliest first.
    pub dropped: Vec<String>,
    /// Why, in words, for the publish log line.
    pub reason: String,
    /// What was charged, given back on drop.
    charge: Option<Charge>,
}

/// A grant's share of one GPU: the GPUs' state, which one, how much.
type Charge = (Arc<Mutex<Vec<GpuState>>>, usize, Load);

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some((gpus, i, load)) = self.charge.take() {
            if let Some(g) = lock(&gpus).get_mut(i) {
                g.used.sub(&load);
                g.channels = g.channels.saturating_sub(1);
            }
        }
    }
}

/// One GPU as admission sees it ([`Admission::usage`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GpuUsage {
    /// What it has.
    pub capacity: GpuCapacity,
    /// What the channels placed on it were charged, together.
    pub charged: Load,
    /// Channels placed on it.
    pub channels: u32,
}

/// A publish refused by the `fail` policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no GPU can take this channel and its ladder's fallback is \"fail\": {0}")]
pub struct Refused(pub String);

#[derive(Debug)]
struct GpuState {
    cap: GpuCapacity,
    used: Load,
    channels: u32,
}

/// The GPUs and what is charged to each. Cheap to clone; shared by every
/// channel of the process.
#[derive(Clone, Debug)]
pub struct Admission {
    gpus: Arc<Mutex<Vec<GpuState>>>,
    /// Why there is no GPU, when there is none (the probe's words).
    absent: Arc<str>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which engines a placement needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Gpu,
    Hybrid,
}

impl Admission {
    /// The GPUs found at start-up; none on a box without a driver.
    pub fn new(gpus: Vec<GpuCapacity>) -> Admission {
        Admission::with_absent_reason(gpus, "no NVIDIA GPU")
    }

    /// As [`new`](Self::new), with the probe's words for why there is no
    /// GPU (e.g. `no NVIDIA driver (libcuda.so.1 not found)`), used in
    /// reasons when `gpus` is empty.
    pub fn with_absent_reason(gpus: Vec<GpuCapacity>, absent: &str) -> Admission {
        Admission {
            absent: absent.into(),
            gpus: Arc::new(Mutex::new(
                gpus.into_iter()
                    .map(|cap| GpuState {
                        cap,
                        used: Load::default(),
                        channels: 0,
                    })
                    .collect(),
            )),
        }
    }

    /// Channels placed on each GPU, by index in the list given to `new`.
    pub fn channels_per_gpu(&self) -> Vec<u32> {
        lock(&self.gpus).iter().map(|g| g.channels).collect()
    }

    /// Each GPU now: what it has, what is charged to it and how many
    /// channels, in the order given to `new` (the admin API and metrics).
    pub fn usage(&self) -> Vec<GpuUsage> {
        lock(&self.gpus)
            .iter()
            .map(|g| GpuUsage {
                capacity: g.cap.clone(),
                charged: g.used,
                channels: g.channels,
            })
            .collect()
    }

    /// Place a channel whose ladder asks for `backend` with `fallback`, and
    /// whose encoded rungs are `rungs` (passthrough renditions cost nothing
    /// here; `has_source` says whether there is one, for `degrade`).
    pub fn admit(
        &self,
        backend: Backend,
        fallback: Fallback,
        rungs: &[RungPlan],
        has_source: bool,
    ) -> Result<Grant, Refused> {
        let mut gpus = lock(&self.gpus);
        let kinds: &[Kind] = match backend {
            Backend::Cpu => return Ok(cpu(rungs, "backend = \"cpu\"".to_owned())),
            Backend::Auto if gpus.is_empty() => {
                return Ok(cpu(rungs, format!("{}: CPU backend", self.absent)))
            }
            Backend::Auto => &[Kind::Gpu, Kind::Hybrid],
            Backend::Gpu => &[Kind::Gpu],
            Backend::Hybrid => &[Kind::Hybrid],
        };
        // the whole ladder, on the best GPU for the first kind that fits
        let mut why = Vec::new();
        for &kind in kinds {
            match best_gpu(&gpus, kind, rungs) {
                Ok((i, load)) => {
                    return Ok(self.charge(&mut gpus, i, kind, load, rungs.to_vec(), Vec::new()))
                }
                Err(e) => why.push(e),
            }
        }
        let why = if gpus.is_empty() {
            self.absent.to_string()
        } else {
            why.join("; ")
        };
        match fallback {
            Fallback::Cpu => Ok(cpu(
                rungs,
                format!("{why}: fallback \"cpu\" runs the whole ladder on the host"),
            )),
            Fallback::Fail => Err(Refused(why)),
            Fallback::Degrade => {
                // drop the costliest rungs until the rest fits somewhere
                let mut order: Vec<usize> = (0..rungs.len()).collect();
                order.sort_by(|&a, &b| {
                    rung_pixels(&rungs[b])
                        .partial_cmp(&rung_pixels(&rungs[a]))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                for cut in 1..rungs.len() {
                    let dropped: Vec<usize> = order[..cut].to_vec();
                    let kept: Vec<RungPlan> = (0..rungs.len())
                        .filter(|i| !dropped.contains(i))
                        .map(|i| rungs[i].clone())
                        .collect();
                    for &kind in kinds {
                        if let Ok((i, load)) = best_gpu(&gpus, kind, &kept) {
                            let names = dropped.iter().map(|&d| rungs[d].name.clone()).collect();
                            return Ok(self.charge(&mut gpus, i, kind, load, kept, names));
                        }
                    }
                }
                if has_source {
                    Ok(Grant {
                        placement: Placement::Cpu,
                        rungs: Vec::new(),
                        dropped: order.iter().map(|&d| rungs[d].name.clone()).collect(),
                        reason: format!(
                            "{why}: fallback \"degrade\" keeps only the source passed through"
                        ),
                        charge: None,
                    })
                } else {
                    Err(Refused(format!(
                        "{why}; fallback \"degrade\" found no rung that fits and there is no passthrough rendition"
                    )))
                }
            }
        }
    }

    fn charge(
        &self,
        gpus: &mut [GpuState],
        i: usize,
        kind: Kind,
        load: Load,
        rungs: Vec<RungPlan>,
        dropped: Vec<String>,
    ) -> Grant {
        let g = &mut gpus[i];
        g.used.add(&load);
        g.channels += 1;
        let index = g.cap.index;
        let placement = match kind {
            Kind::Gpu => Placement::Gpu { gpu: index },
            Kind::Hybrid => Placement::Hybrid { gpu: index },
        };
        let mut reason = format!(
            "GPU {index} ({}): {} channel(s), decode {:.0} %, encode {:.0} %, memory {} of {} MiB",
            g.cap.name,
            g.channels,
            100.0 * share(g.used.decode, g.cap.nvdec_engines, NVDEC_PIXELS_PER_SECOND),
            100.0 * share(g.used.encode, g.cap.nvenc_engines, NVENC_PIXELS_PER_SECOND),
            g.used.memory >> 20,
            g.cap.memory >> 20
        );
        if !dropped.is_empty() {
            reason = format!(
                "{reason}; fallback \"degrade\" left out {} to fit",
                dropped.join(", ")
            );
        }
        Grant {
            placement,
            rungs,
            dropped,
            reason,
            charge: Some((self.gpus.clone(), i, load)),
        }
    }
}

fn cpu(rungs: &[RungPlan], reason: String) -> Grant {
    Grant {
        placement: Placement::Cpu,
        rungs: rungs.to_vec(),
        dropped: Vec::new(),
        reason,
        charge: None,
    }
}

/// `used` as a share of `engines` x `per_engine` x the utilisation target;
/// infinite with no engine.
fn share(used: f64, engines: u32, per_engine: f64) -> f64 {
    if used <= 0.0 {
        return 0.0;
    }
    let cap = f64::from(engines) * per_engine * ENGINE_UTILISATION;
    if cap <= 0.0 {
        f64::INFINITY
    } else {
        used / cap
    }
}

/// A rung's planned size: its configured sides, the other from the planned
/// 16:9 source, never above the planned source.
fn rung_size(r: &RungPlan) -> (u64, u64) {
    let (sw, sh, _) = PLANNED_SOURCE;
    let (w, h) = planned_size(r.width, r.height).unwrap_or((sw, sh));
    (u64::from(w.min(sw)), u64::from(h.min(sh)))
}

/// A rung's planned luma pixels per second.
fn rung_pixels(r: &RungPlan) -> f64 {
    let (w, h) = rung_size(r);
    let fps = r
        .fps_max
        .map_or(PLANNED_SOURCE.2, |f| f.min(PLANNED_SOURCE.2));
    (w * h) as f64 * fps
}

/// NV12 bytes of a picture.
fn nv12(w: u64, h: u64) -> u64 {
    w * h * 3 / 2
}

/// The load of a ladder placed as `kind`.
pub fn ladder_load(rungs: &[RungPlan], hybrid: bool) -> Load {
    let (sw, sh, fps) = PLANNED_SOURCE;
    let (sw, sh) = (u64::from(sw), u64::from(sh));
    let mut load = Load {
        decode: (sw * sh) as f64 * fps,
        memory: DECODE_SURFACES * nv12(sw, sh),
        ..Load::default()
    };
    for r in rungs {
        let (w, h) = rung_size(r);
        let pixels = rung_pixels(r);
        load.scale += pixels;
        load.memory += RUNG_SURFACES * nv12(w, h);
        if !hybrid {
            load.encode += pixels;
            load.sessions += 1;
            load.memory += NVENC_SESSION_BYTES_1080P * (w * h) / (1920 * 1080);
        }
    }
    load
}

/// The GPU that can take the ladder as `kind` and is least loaded once it
/// has, with the load charged; or why none can.
fn best_gpu(gpus: &[GpuState], kind: Kind, rungs: &[RungPlan]) -> Result<(usize, Load), String> {
    let load = ladder_load(rungs, kind == Kind::Hybrid);
    let needs_av1 = rungs.iter().any(|r| r.codec == RungCodec::Av1);
    let mut best: Option<(f64, usize)> = None;
    let mut reasons = Vec::new();
    for (i, g) in gpus.iter().enumerate() {
        let c = &g.cap;
        let mut after = g.used;
        after.add(&load);
        let refuse = if c.nvdec_engines == 0 {
            Some("has no H.264 NVDEC".to_owned())
        } else if kind == Kind::Gpu && c.nvenc_engines == 0 {
            Some("has no NVENC".to_owned())
        } else if kind == Kind::Gpu && needs_av1 && !c.nvenc_av1 {
            Some("has no AV1 NVENC for the AV1 rungs".to_owned())
        } else if c.nvenc_sessions.is_some_and(|cap| after.sessions > cap) {
            Some(format!(
                "NVENC sessions full ({} of {})",
                g.used.sessions,
                c.nvenc_sessions.unwrap_or(0)
            ))
        } else if after.memory.saturating_add(MEMORY_RESERVE) > c.memory {
            Some(format!(
                "memory full ({} MiB used, {} MiB needed, {} MiB on the card)",
                g.used.memory >> 20,
                load.memory >> 20,
                c.memory >> 20
            ))
        } else {
            None
        };
        let decode = share(after.decode, c.nvdec_engines, NVDEC_PIXELS_PER_SECOND);
        let encode = if kind == Kind::Gpu {
            share(after.encode, c.nvenc_engines, NVENC_PIXELS_PER_SECOND)
        } else {
            0.0
        };
        let scale = after.scale / (SCALE_PIXELS_PER_SECOND * ENGINE_UTILISATION);
        let memory = after.memory as f64 / c.memory.max(1) as f64;
        let refuse = refuse.or_else(|| {
            if decode > 1.0 {
                Some("NVDEC full".to_owned())
            } else if encode > 1.0 {
                Some("NVENC full".to_owned())
            } else if scale > 1.0 {
                Some("CUDA scaling full".to_owned())
            } else {
                None
            }
        });
        match refuse {
            Some(why) => reasons.push(format!("GPU {} ({}) {}", c.index, c.name, why)),
            None => {
                let fullest = decode.max(encode).max(scale).max(memory);
                if best.is_none_or(|(b, _)| fullest < b) {
                    best = Some((fullest, i));
                }
            }
        }
    }
    match best {
        Some((_, i)) => Ok((i, load)),
        None if gpus.is_empty() => Err("no GPU".to_owned()),
        None => Err(format!(
            "{}: {}",
            match kind {
                Kind::Gpu => "gpu",
                Kind::Hybrid => "hybrid",
            },
            reasons.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn l4(index: u32) -> GpuCapacity {
        GpuCapacity {
            index,
            name: "NVIDIA L4".to_owned(),
            memory: 24 * GIB,
            nvdec_engines: 4,
            nvenc_engines: 2,
            nvenc_av1: true,
            nvenc_sessions: None,
        }
    }

    fn h200(index: u32) -> GpuCapacity {
        GpuCapacity {
            index,
            name: "NVIDIA H200".to_owned(),
            memory: 141 * GIB,
            nvdec_engines: 7,
            nvenc_engines: 0,
            nvenc_av1: false,
            nvenc_sessions: None,
        }
    }

    fn geforce() -> GpuCapacity {
        GpuCapacity {
            index: 0,
            name: "NVIDIA GeForce RTX 4090".to_owned(),
            memory: 24 * GIB,
            nvdec_engines: 2,
            nvenc_engines: 2,
            nvenc_av1: true,
            nvenc_sessions: Some(8),
        }
    }

    fn rung(name: &str, height: u32) -> RungPlan {
        RungPlan {
            name: name.to_owned(),
            codec: RungCodec::H264,
            width: None,
            height: Some(height),
            bitrate_kbps: 1000,
            maxrate_kbps: None,
            fps_max: None,
            profile: None,
            preset: None,
            threads: 0,
        }
    }

    fn ladder() -> Vec<RungPlan> {
        vec![rung("720p", 720), rung("480p", 480), rung("360p", 360)]
    }

    fn names(g: &Grant) -> Vec<&str> {
        g.rungs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn no_gpu_auto_is_cpu_and_gpu_follows_the_fallback() {
        let a = Admission::new(Vec::new());
        let g = a
            .admit(Backend::Auto, Fallback::Fail, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Cpu);
        assert_eq!(g.reason, "no NVIDIA GPU: CPU backend");
        assert_eq!(names(&g), ["720p", "480p", "360p"]);

        let e = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder(), true)
            .unwrap_err();
        assert_eq!(e.0, "no NVIDIA GPU");
        let g = a
            .admit(Backend::Hybrid, Fallback::Cpu, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Cpu);
        assert!(
            g.reason.starts_with("no NVIDIA GPU: fallback \"cpu\""),
            "{}",
            g.reason
        );
        let g = a
            .admit(Backend::Cpu, Fallback::Fail, &ladder(), true)
            .unwrap();
        assert_eq!(
            (g.placement, g.reason.as_str()),
            (Placement::Cpu, "backend = \"cpu\"")
        );
    }

    #[test]
    fn auto_takes_nvenc_where_there_is_one_and_hybrid_on_h200() {
        let a = Admission::new(vec![l4(0)]);
        let g = a
            .admit(Backend::Auto, Fallback::Fail, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Gpu { gpu: 0 });
        assert!(
            g.reason.starts_with("GPU 0 (NVIDIA L4): 1 channel(s)"),
            "{}",
            g.reason
        );

        let a = Admission::new(vec![h200(0)]);
        let g = a
            .admit(Backend::Auto, Fallback::Fail, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Hybrid { gpu: 0 });
        // gpu asked for explicitly on a card without NVENC: the policy decides
        let e = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder(), true)
            .unwrap_err();
        assert_eq!(e.0, "gpu: GPU 0 (NVIDIA H200) has no NVENC");
        let g = a
            .admit(Backend::Gpu, Fallback::Cpu, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Cpu);
        assert!(
            g.reason.contains("GPU 0 (NVIDIA H200) has no NVENC"),
            "{}",
            g.reason
        );
    }

    #[test]
    fn channels_are_spread_over_gpus_and_given_back_on_drop() {
        let a = Admission::new(vec![l4(0), l4(1)]);
        let grants: Vec<Grant> = (0..4)
            .map(|_| {
                a.admit(Backend::Auto, Fallback::Fail, &ladder(), true)
                    .unwrap()
            })
            .collect();
        let gpus: Vec<Placement> = grants.iter().map(|g| g.placement).collect();
        assert_eq!(
            gpus,
            [
                Placement::Gpu { gpu: 0 },
                Placement::Gpu { gpu: 1 },
                Placement::Gpu { gpu: 0 },
                Placement::Gpu { gpu: 1 }
            ]
        );
        assert_eq!(a.channels_per_gpu(), [2, 2]);
        let usage = a.usage();
        assert_eq!(usage[1].capacity, l4(1));
        assert_eq!(usage[0].channels, 2);
        assert!(usage[0].charged.sessions > 0, "{usage:?}");
        drop(grants);
        assert_eq!(a.channels_per_gpu(), [0, 0]);
        assert_eq!(lock(&a.gpus)[0].used, Load::default());
        assert_eq!(a.usage()[0].charged, Load::default());
    }

    #[test]
    fn a_full_gpu_is_decided_at_admission_by_the_policy() {
        // 1080p30 decode per channel: 4 NVDECs x 600 x 0.8 = 1920 pictures/s,
        // so 64 channels decode; encode (720p+480p+360p = 1.54 Mpx x 30) on 2
        // NVENCs at 0.8 x 500 1080p: 2 x 0.8 x 500 x 2.07 Mpx / 46.2 Mpx/s = 35.
        let a = Admission::new(vec![l4(0)]);
        let mut held = Vec::new();
        loop {
            match a.admit(Backend::Gpu, Fallback::Fail, &ladder(), true) {
                Ok(g) => held.push(g),
                Err(e) => {
                    assert_eq!(e.0, "gpu: GPU 0 (NVIDIA L4) NVENC full");
                    break;
                }
            }
            assert!(held.len() < 100);
        }
        assert_eq!(held.len(), 35);
        // degrade: the costliest rungs go first until the rest fits; 0.4 of
        // a ladder is left (18.7 Mpx/s), which 480p + 360p (19.2) exceed
        let g = a
            .admit(Backend::Gpu, Fallback::Degrade, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Gpu { gpu: 0 });
        assert_eq!(g.dropped, ["720p", "480p"]);
        assert_eq!(names(&g), ["360p"]);
        assert!(
            g.reason
                .ends_with("fallback \"degrade\" left out 720p, 480p to fit"),
            "{}",
            g.reason
        );
        // cpu: the whole ladder on the host
        let g = a
            .admit(Backend::Gpu, Fallback::Cpu, &ladder(), true)
            .unwrap();
        assert_eq!((g.placement, names(&g).len()), (Placement::Cpu, 3));
        // auto on a full L4 falls to hybrid (NVDEC still has room)
        let g = a
            .admit(Backend::Auto, Fallback::Fail, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Hybrid { gpu: 0 });
    }

    #[test]
    fn degrade_down_to_the_source_alone_or_refuse_without_one() {
        let mut tiny = geforce();
        tiny.nvenc_sessions = Some(0);
        let a = Admission::new(vec![tiny]);
        let g = a
            .admit(Backend::Gpu, Fallback::Degrade, &ladder(), true)
            .unwrap();
        assert_eq!(g.placement, Placement::Cpu);
        assert!(g.rungs.is_empty());
        assert_eq!(g.dropped, ["720p", "480p", "360p"]);
        assert!(
            g.reason.ends_with("keeps only the source passed through"),
            "{}",
            g.reason
        );
        let e = a
            .admit(Backend::Gpu, Fallback::Degrade, &ladder(), false)
            .unwrap_err();
        assert_eq!(
            e.0,
            "gpu: GPU 0 (NVIDIA GeForce RTX 4090) NVENC sessions full (0 of 0); fallback \"degrade\" found no rung \
             that fits and there is no passthrough rendition"
        );
    }

    #[test]
    fn geforce_session_cap_and_memory_are_limits() {
        let a = Admission::new(vec![geforce()]);
        let a2 = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder(), true)
            .unwrap();
        let b = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder(), true)
            .unwrap();
        // 3 sessions each: a third ladder would need 9 of 8
        let e = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder(), true)
            .unwrap_err();
        assert_eq!(
            e.0,
            "gpu: GPU 0 (NVIDIA GeForce RTX 4090) NVENC sessions full (6 of 8)"
        );
        drop((a2, b));

        let mut small = l4(0);
        small.memory = 2 * GIB;
        let a = Admission::new(vec![small]);
        let held: Vec<Grant> =
            std::iter::from_fn(|| a.admit(Backend::Gpu, Fallback::Fail, &ladder(), true).ok())
                .take(50)
                .collect();
        // 1 GiB reserved; a channel charges 20 x 3 MB of 1080p surfaces plus
        // its rungs' pictures and NVENC sessions, about 200 MiB: 5 fit in 1 GiB
        assert_eq!(held.len(), 5);
        let e = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder(), true)
            .unwrap_err();
        assert!(
            e.0.starts_with("gpu: GPU 0 (NVIDIA L4) memory full"),
            "{}",
            e.0
        );
    }

    #[test]
    fn av1_rungs_need_an_av1_nvenc_for_gpu() {
        let mut ladder = ladder();
        ladder[2].codec = RungCodec::Av1;
        let mut t4 = l4(0);
        t4.name = "Tesla T4".to_owned();
        t4.nvenc_av1 = false;
        let a = Admission::new(vec![t4, l4(1)]);
        let g = a
            .admit(Backend::Gpu, Fallback::Fail, &ladder, true)
            .unwrap();
        assert_eq!(g.placement, Placement::Gpu { gpu: 1 });
        let a = Admission::new(vec![{
            let mut t = l4(0);
            t.nvenc_av1 = false;
            t
        }]);
        let g = a
            .admit(Backend::Auto, Fallback::Fail, &ladder, true)
            .unwrap();
        assert_eq!(g.placement, Placement::Hybrid { gpu: 0 });
    }

    #[test]
    fn planned_sizes_keep_16_9_and_never_exceed_the_source() {
        assert_eq!(rung_size(&rung("a", 720)), (1280, 720));
        assert_eq!(rung_size(&rung("b", 360)), (640, 360));
        assert_eq!(rung_size(&rung("c", 2160)), (1920, 1080));
        let mut w = rung("d", 0);
        (w.width, w.height) = (Some(854), None);
        assert_eq!(rung_size(&w), (854, 480));
        let mut capped = rung("e", 720);
        capped.fps_max = Some(15.0);
        assert_eq!(rung_pixels(&capped), 1280.0 * 720.0 * 15.0);
    }
}
