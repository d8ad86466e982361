//! What GPUs this box has and what each ladder's backend resolves to (issue 4,
//! "ladder doctor" and backend choice).
//!
//! [`probe`] never fails and never panics: a box with no driver is an inventory with no
//! GPUs and a reason ([`GpuInventory::no_gpu`]). [`backend_for`] is a pure function from
//! a ladder's configuration and an inventory to the backend it gets and why, so it is
//! tested across made-up inventories (no GPU, H200-like, L4-like) here.
//!
//! No `unsafe` here: the FFI lives in `driver`, `nvdec` and `nvenc`.

use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;

use super::driver::{Driver, GpuError, LIBCUDA};
use super::nvdec::{DecodeCodec, DecoderCaps, Nvcuvid};
use super::nvenc::{EncodeCodec, EncodeCodecCaps, Nvenc, NvencProbe, SessionLimit};
use crate::control::config::{Backend, LadderConfig, VideoCodecChoice};

/// Where the kernel module states the driver version.
pub const NVIDIA_VERSION_FILE: &str = "/proc/driver/nvidia/version";

/// Everything `ladder doctor` reports about the GPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuInventory {
    /// The driver, when `libcuda.so.1` loaded and `cuInit` succeeded.
    pub driver: Option<DriverInfo>,
    /// Why no GPU can be used, when none can (e.g. `no NVIDIA driver (libcuda.so.1 not
    /// found)`); `None` when there are GPUs.
    pub no_gpu: Option<String>,
    /// The loader's or driver's own words behind `no_gpu`.
    pub no_gpu_detail: Option<String>,
    /// One entry per CUDA device, in CUDA ordinal order.
    pub gpus: Vec<GpuInfo>,
}

/// The driver's versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverInfo {
    /// The kernel module's version (`550.54.15`), from `/proc/driver/nvidia/version`;
    /// `None` where that file is not readable (some containers).
    pub version: Option<String>,
    /// The newest CUDA version the driver supports (`cuDriverGetVersion`), e.g. `12.4`.
    pub cuda_version: String,
    /// The NVENC API version the driver supports (`NvEncodeAPIGetMaxSupportedVersion`),
    /// e.g. `12.2`; `None` when `libnvidia-encode.so.1` did not load.
    pub nvenc_api_version: Option<String>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuInfo {
    /// CUDA ordinal.
    pub index: usize,
    /// e.g. `NVIDIA H200`.
    pub name: String,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// Free memory, bytes, when a context could be made.
    pub free_memory_bytes: Option<u64>,
    /// Compute capability, `major.minor`.
    pub compute_capability: String,
    /// PCI bus id.
    pub pci_bus_id: String,
    /// The decoder.
    pub nvdec: NvdecInfo,
    /// The encoder.
    pub nvenc: NvencInfo,
}

/// NVDEC on one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvdecInfo {
    /// `cuvidGetDecoderCaps` answered (whatever it said per codec).
    pub available: bool,
    /// Why not, when not available.
    pub reason: Option<String>,
    /// Per codec, 8-bit 4:2:0: H.264, HEVC, AV1.
    pub codecs: Vec<DecoderCaps>,
}

/// NVENC on one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvencInfo {
    /// The GPU has an encoder and a session opened.
    pub available: bool,
    /// Why not, when not available: `none on this GPU (...)` or a load or call error.
    pub reason: Option<String>,
    /// The codecs offered, with limits.
    pub codecs: Vec<EncodeCodecCaps>,
    /// `NV_ENC_CAPS_NUM_ENCODER_ENGINES`, when the driver answers it.
    pub engines: Option<u32>,
    /// Concurrent session limit and how it was decided; set when available.
    pub session_limit: Option<SessionLimit>,
}

impl GpuInfo {
    /// NVDEC decodes H.264 (what every ingest path can carry) on this GPU.
    pub fn has_nvdec(&self) -> bool {
        self.nvdec.available
            && self
                .nvdec
                .codecs
                .iter()
                .any(|c| c.codec == DecodeCodec::H264 && c.supported)
    }

    /// NVENC encodes H.264 on this GPU.
    pub fn has_nvenc(&self) -> bool {
        self.nvenc.available
            && self
                .nvenc
                .codecs
                .iter()
                .any(|c| c.codec == EncodeCodec::H264)
    }

    fn label(&self) -> String {
        format!("GPU {} ({})", self.index, self.name)
    }
}

/// The version in `/proc/driver/nvidia/version`'s first line:
/// `NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 ...` (or the
/// open module's `... Open Kernel Module for x86_64  570.86.15 ...`).
pub fn parse_nvrm_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    let after = line.split("Kernel Module").nth(1)?;
    // The proprietary module: `Kernel Module  550.54.15  Tue ...`; the open one:
    // `Open Kernel Module for x86_64  570.86.15  Release Build ...`.
    after
        .split_whitespace()
        .find(|t| t.contains('.') && t.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_owned)
}

/// Probes the driver, every GPU, NVDEC and NVENC. Never panics.
pub fn probe() -> GpuInventory {
    probe_with(&[LIBCUDA])
}

/// As [`probe`], trying `libcuda` (paths or sonames) for the driver library.
pub fn probe_with(libcuda: &[&str]) -> GpuInventory {
    panic::catch_unwind(AssertUnwindSafe(|| probe_inner(libcuda))).unwrap_or_else(|_| {
        GpuInventory::none(
            "GPU probe failed (a panic in the CUDA bindings)".to_owned(),
            "see the panic message above".to_owned(),
        )
    })
}

impl GpuInventory {
    fn none(reason: String, detail: String) -> GpuInventory {
        GpuInventory {
            driver: None,
            no_gpu: Some(reason),
            no_gpu_detail: Some(detail),
            gpus: Vec::new(),
        }
    }
}

fn probe_inner(libcuda: &[&str]) -> GpuInventory {
    let driver = match Driver::init_from(libcuda) {
        Ok(d) => d,
        Err(GpuError::NoDriver(e)) => {
            return GpuInventory::none(
                format!("no NVIDIA driver ({} not found)", e.library),
                e.to_string(),
            )
        }
        Err(e) => {
            return GpuInventory::none(
                "NVIDIA driver present but unusable".to_owned(),
                e.to_string(),
            )
        }
    };
    let cuda_version = match driver.cuda_version() {
        Ok(v) => v.to_string(),
        Err(e) => return GpuInventory::none("CUDA driver call failed".to_owned(), e.to_string()),
    };
    let version = std::fs::read_to_string(NVIDIA_VERSION_FILE)
        .ok()
        .and_then(|t| parse_nvrm_version(&t));
    let nvcuvid = Nvcuvid::load().map_err(|e| e.to_string());
    let nvenc = Nvenc::load().map_err(|e| e.to_string());
    let mut inventory = GpuInventory {
        driver: Some(DriverInfo {
            version,
            cuda_version,
            nvenc_api_version: nvenc
                .as_ref()
                .ok()
                .map(|n| format!("{}.{}", n.max_supported.0, n.max_supported.1)),
        }),
        no_gpu: None,
        no_gpu_detail: None,
        gpus: Vec::new(),
    };
    let count = match driver.device_count() {
        Ok(n) => n,
        Err(e) => {
            inventory.no_gpu = Some("CUDA driver call failed".to_owned());
            inventory.no_gpu_detail = Some(e.to_string());
            return inventory;
        }
    };
    if count == 0 {
        inventory.no_gpu = Some("NVIDIA driver present but no GPU visible".to_owned());
        inventory.no_gpu_detail =
            Some("cuDeviceGetCount returned 0 (check CUDA_VISIBLE_DEVICES)".to_owned());
        return inventory;
    }
    for index in 0..count {
        inventory
            .gpus
            .push(probe_gpu(&driver, index, nvcuvid.as_ref(), nvenc.as_ref()));
    }
    inventory
}

fn probe_gpu(
    driver: &Driver,
    index: usize,
    nvcuvid: Result<&Nvcuvid, &String>,
    nvenc: Result<&Nvenc, &String>,
) -> GpuInfo {
    let device = driver.device(index);
    let (name, memory_bytes, compute_capability, pci_bus_id) = match &device {
        Ok(d) => (
            d.name.clone(),
            d.memory_bytes,
            format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
            d.pci_bus_id.clone(),
        ),
        Err(e) => (format!("unknown ({e})"), 0, String::new(), String::new()),
    };
    let mut info = GpuInfo {
        index,
        name,
        memory_bytes,
        free_memory_bytes: None,
        compute_capability,
        pci_bus_id,
        nvdec: NvdecInfo {
            available: false,
            reason: None,
            codecs: Vec::new(),
        },
        nvenc: NvencInfo {
            available: false,
            reason: None,
            codecs: Vec::new(),
            engines: None,
            session_limit: None,
        },
    };
    let context = driver.primary_context(index);
    let current = match &context {
        Ok(c) => c.make_current(),
        Err(e) => Err(GpuError::Call {
            call: "cuDevicePrimaryCtxRetain",
            detail: e.to_string(),
        }),
    };
    let current = match current {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("no CUDA context: {e}");
            info.nvdec.reason = Some(reason.clone());
            info.nvenc.reason = Some(reason);
            return info;
        }
    };
    info.free_memory_bytes = current.memory_info().ok().map(|(free, _)| free);

    match nvcuvid {
        Ok(nvcuvid) => {
            let mut errors = Vec::new();
            for codec in DecodeCodec::ALL {
                match nvcuvid.decoder_caps(&current, codec) {
                    Ok(caps) => info.nvdec.codecs.push(caps),
                    Err(e) => errors.push(format!("{}: {e}", codec.name())),
                }
            }
            info.nvdec.available = !info.nvdec.codecs.is_empty();
            if !errors.is_empty() {
                info.nvdec.reason = Some(errors.join("; "));
            }
        }
        Err(e) => info.nvdec.reason = Some(e.clone()),
    }

    match nvenc {
        Ok(nvenc) => match nvenc.probe(&current, &info.name) {
            Ok(NvencProbe::Present(caps)) => {
                info.nvenc.available = true;
                info.nvenc.codecs = caps.codecs;
                info.nvenc.engines = caps.engines;
                info.nvenc.session_limit = Some(caps.session_limit);
            }
            Ok(NvencProbe::Absent { status }) => {
                // In a container without the "video" driver capability a GPU that has
                // an encoder answers the same way (NVIDIA/nvidia-docker#1514): say so.
                info.nvenc.reason = Some(format!(
                    "none on this GPU (nvEncOpenEncodeSessionEx: {status}; in a container, \
                     check NVIDIA_DRIVER_CAPABILITIES includes \"video\")"
                ));
            }
            Err(e) => info.nvenc.reason = Some(e.to_string()),
        },
        Err(e) => info.nvenc.reason = Some(e.clone()),
    }
    // `current` (unbinds the context) drops before `context` (releases it).
    info
}

/// The backend a ladder gets on a given inventory, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    /// What the configuration asks for.
    pub requested: Backend,
    /// What it gets; `None` when the request cannot be met on this box (what it falls
    /// back to is the pipeline's policy, not doctor's).
    pub backend: Option<Backend>,
    /// The GPU used, for `gpu` and `hybrid`.
    pub gpu: Option<usize>,
    /// Why, for an operator.
    pub reason: String,
}

/// Resolves `ladder.backend` against `inventory`:
///
/// - `auto`: `gpu` on the first GPU with NVDEC and NVENC; else `hybrid` (NVDEC decode
///   and CUDA scaling, x264 on the CPU) on the first GPU with NVDEC (A100, H100, H200);
///   else `cpu`.
/// - `gpu`: the first GPU with NVDEC and NVENC, or cannot run.
/// - `hybrid`: the first GPU with NVDEC, or cannot run.
/// - `cpu`: always.
pub fn backend_for(ladder: &LadderConfig, inventory: &GpuInventory) -> BackendChoice {
    let full = inventory
        .gpus
        .iter()
        .find(|g| g.has_nvdec() && g.has_nvenc());
    let decode_only = inventory.gpus.iter().find(|g| g.has_nvdec());
    let why_none = || -> String {
        if let Some(reason) = &inventory.no_gpu {
            return reason.clone();
        }
        match inventory.gpus.first() {
            Some(g) if !g.has_nvdec() => format!(
                "{} has no usable NVDEC: {}",
                g.label(),
                g.nvdec
                    .reason
                    .as_deref()
                    .unwrap_or("H.264 decode not supported")
            ),
            Some(g) => format!(
                "{} has no NVENC: {}",
                g.label(),
                g.nvenc
                    .reason
                    .as_deref()
                    .unwrap_or("H.264 encode not offered")
            ),
            None => "no GPU".to_owned(),
        }
    };
    let requested = ladder.backend;
    let choice = |backend: Option<Backend>, gpu: Option<&GpuInfo>, reason: String| BackendChoice {
        requested,
        backend,
        gpu: gpu.map(|g| g.index),
        reason,
    };
    let gpu_reason = |g: &GpuInfo| {
        let mut reason = format!("{}: NVDEC and NVENC", g.label());
        if ladder_has_av1(ladder) && !g.nvenc.codecs.iter().any(|c| c.codec == EncodeCodec::Av1) {
            reason.push_str("; its NVENC has no AV1 encoder, so the AV1 rungs cannot use it");
        }
        reason
    };
    let hybrid_reason = |g: &GpuInfo| {
        format!(
            "{} has NVDEC but no NVENC ({}): decode and scale on the GPU, encode with x264 on the CPU",
            g.label(),
            g.nvenc.reason.as_deref().unwrap_or("no H.264 encoder")
        )
    };
    match requested {
        Backend::Cpu => choice(Some(Backend::Cpu), None, "requested".to_owned()),
        Backend::Auto => match (full, decode_only) {
            (Some(g), _) => choice(Some(Backend::Gpu), Some(g), gpu_reason(g)),
            (None, Some(g)) => choice(Some(Backend::Hybrid), Some(g), hybrid_reason(g)),
            (None, None) => choice(Some(Backend::Cpu), None, why_none()),
        },
        Backend::Gpu => match full {
            Some(g) => choice(Some(Backend::Gpu), Some(g), gpu_reason(g)),
            None => match decode_only {
                Some(g) => choice(
                    None,
                    None,
                    format!(
                        "gpu requested but {} has no NVENC ({}); hybrid would run",
                        g.label(),
                        g.nvenc.reason.as_deref().unwrap_or("no H.264 encoder")
                    ),
                ),
                None => choice(None, None, format!("gpu requested but {}", why_none())),
            },
        },
        Backend::Hybrid => match decode_only {
            Some(g) => choice(
                Some(Backend::Hybrid),
                Some(g),
                format!("{}: NVDEC decode and CUDA scaling, x264 encode", g.label()),
            ),
            None => choice(None, None, format!("hybrid requested but {}", why_none())),
        },
    }
}

fn ladder_has_av1(ladder: &LadderConfig) -> bool {
    ladder
        .renditions
        .iter()
        .any(|r| !r.passthrough && r.codec == VideoCodecChoice::Av1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pipeline::gpu::nvenc::session_limit;

    pub(crate) fn nvdec(engines: u32, av1: bool) -> NvdecInfo {
        let caps = |codec, supported| DecoderCaps {
            codec,
            supported,
            max_width: if supported { 8192 } else { 0 },
            max_height: if supported { 8192 } else { 0 },
            max_mb_count: if supported { 262_144 } else { 0 },
            min_width: 48,
            min_height: 16,
            engines,
            output_format_mask: 1,
        };
        NvdecInfo {
            available: true,
            reason: None,
            codecs: vec![
                caps(DecodeCodec::H264, true),
                caps(DecodeCodec::Hevc, true),
                caps(DecodeCodec::Av1, av1),
            ],
        }
    }

    pub(crate) fn gpu(index: usize, name: &str, nvenc_engines: Option<u32>) -> GpuInfo {
        let nvenc = match nvenc_engines {
            Some(engines) => NvencInfo {
                available: true,
                reason: None,
                codecs: EncodeCodec::ALL
                    .iter()
                    .map(|&codec| EncodeCodecCaps {
                        codec,
                        max_width: 4096,
                        max_height: 4096,
                    })
                    .collect(),
                engines: Some(engines),
                session_limit: Some(session_limit(name)),
            },
            None => NvencInfo {
                available: false,
                reason: Some(
                    "none on this GPU (nvEncOpenEncodeSessionEx: NV_ENC_ERR_UNSUPPORTED_DEVICE (2))"
                        .to_owned(),
                ),
                codecs: Vec::new(),
                engines: None,
                session_limit: None,
            },
        };
        GpuInfo {
            index,
            name: name.to_owned(),
            memory_bytes: 24 << 30,
            free_memory_bytes: Some(23 << 30),
            compute_capability: "8.9".to_owned(),
            pci_bus_id: format!("0000:{:02x}:00.0", index + 1),
            nvdec: nvdec(4, true),
            nvenc,
        }
    }

    pub(crate) fn inventory(gpus: Vec<GpuInfo>) -> GpuInventory {
        GpuInventory {
            driver: Some(DriverInfo {
                version: Some("550.54.15".to_owned()),
                cuda_version: "12.4".to_owned(),
                nvenc_api_version: Some("12.2".to_owned()),
            }),
            no_gpu: None,
            no_gpu_detail: None,
            gpus,
        }
    }

    pub(crate) fn no_driver() -> GpuInventory {
        probe_with(&["/nonexistent/ladder-test/libcuda.so.1"])
    }

    fn ladder(backend: Backend) -> LadderConfig {
        let mut l = crate::control::config::Config::load_from(
            crate::control::config::ConfigSource::Embedded,
        )
        .unwrap()
        .0
        .ladders
        .remove("default")
        .unwrap();
        l.backend = backend;
        l
    }

    #[test]
    fn probe_without_driver_is_clean() {
        let inv = no_driver();
        assert_eq!(
            inv.no_gpu.as_deref(),
            Some("no NVIDIA driver (libcuda.so.1 not found)")
        );
        assert!(inv
            .no_gpu_detail
            .unwrap()
            .contains("/nonexistent/ladder-test/libcuda.so.1"));
        assert!(inv.driver.is_none());
        assert!(inv.gpus.is_empty());
    }

    #[test]
    fn no_gpu_box() {
        let inv = no_driver();
        let auto = backend_for(&ladder(Backend::Auto), &inv);
        assert_eq!(auto.backend, Some(Backend::Cpu));
        assert_eq!(auto.reason, "no NVIDIA driver (libcuda.so.1 not found)");
        let gpu = backend_for(&ladder(Backend::Gpu), &inv);
        assert_eq!(gpu.backend, None);
        assert_eq!(
            gpu.reason,
            "gpu requested but no NVIDIA driver (libcuda.so.1 not found)"
        );
        let hybrid = backend_for(&ladder(Backend::Hybrid), &inv);
        assert_eq!(hybrid.backend, None);
        assert!(hybrid
            .reason
            .starts_with("hybrid requested but no NVIDIA driver"));
        assert_eq!(
            backend_for(&ladder(Backend::Cpu), &inv).backend,
            Some(Backend::Cpu)
        );
    }

    #[test]
    fn h200_like_is_hybrid() {
        let mut h200 = gpu(0, "NVIDIA H200", None);
        h200.nvdec = nvdec(7, false);
        let inv = inventory(vec![h200]);
        let auto = backend_for(&ladder(Backend::Auto), &inv);
        assert_eq!((auto.backend, auto.gpu), (Some(Backend::Hybrid), Some(0)));
        assert!(auto
            .reason
            .starts_with("GPU 0 (NVIDIA H200) has NVDEC but no NVENC (none on this GPU"));
        let gpu_req = backend_for(&ladder(Backend::Gpu), &inv);
        assert_eq!(gpu_req.backend, None);
        assert!(gpu_req
            .reason
            .starts_with("gpu requested but GPU 0 (NVIDIA H200) has no NVENC"));
        let hybrid = backend_for(&ladder(Backend::Hybrid), &inv);
        assert_eq!(
            (hybrid.backend, hybrid.gpu),
            (Some(Backend::Hybrid), Some(0))
        );
        assert_eq!(
            backend_for(&ladder(Backend::Cpu), &inv).backend,
            Some(Backend::Cpu)
        );
    }

    #[test]
    fn l4_like_is_gpu() {
        let inv = inventory(vec![gpu(0, "NVIDIA L4", Some(2))]);
        let auto = backend_for(&ladder(Backend::Auto), &inv);
        assert_eq!((auto.backend, auto.gpu), (Some(Backend::Gpu), Some(0)));
        assert_eq!(auto.reason, "GPU 0 (NVIDIA L4): NVDEC and NVENC");
        let gpu_req = backend_for(&ladder(Backend::Gpu), &inv);
        assert_eq!(gpu_req.backend, Some(Backend::Gpu));
        let hybrid = backend_for(&ladder(Backend::Hybrid), &inv);
        assert_eq!(hybrid.backend, Some(Backend::Hybrid));
        let cpu = backend_for(&ladder(Backend::Cpu), &inv);
        assert_eq!(
            (cpu.backend, cpu.gpu, cpu.reason.as_str()),
            (Some(Backend::Cpu), None, "requested")
        );
    }

    #[test]
    fn mixed_box_prefers_the_gpu_with_nvenc() {
        let mut a100 = gpu(0, "NVIDIA A100-SXM4-80GB", None);
        a100.nvdec = nvdec(5, false);
        let inv = inventory(vec![a100, gpu(1, "NVIDIA L4", Some(2))]);
        let auto = backend_for(&ladder(Backend::Auto), &inv);
        assert_eq!((auto.backend, auto.gpu), (Some(Backend::Gpu), Some(1)));
        let hybrid = backend_for(&ladder(Backend::Hybrid), &inv);
        assert_eq!(hybrid.gpu, Some(0), "the first GPU with NVDEC");
    }

    #[test]
    fn driver_without_video_libraries_is_cpu() {
        let mut g = gpu(0, "NVIDIA L4", None);
        g.nvdec = NvdecInfo {
            available: false,
            reason: Some("libnvcuvid.so.1 not found (...)".to_owned()),
            codecs: Vec::new(),
        };
        let inv = inventory(vec![g]);
        let auto = backend_for(&ladder(Backend::Auto), &inv);
        assert_eq!(auto.backend, Some(Backend::Cpu));
        assert_eq!(
            auto.reason,
            "GPU 0 (NVIDIA L4) has no usable NVDEC: libnvcuvid.so.1 not found (...)"
        );
    }

    #[test]
    fn av1_rungs_without_av1_nvenc_are_noted() {
        let mut l4 = gpu(0, "NVIDIA T4", Some(1));
        l4.nvenc.codecs.retain(|c| c.codec != EncodeCodec::Av1);
        let inv = inventory(vec![l4]);
        let mut l = ladder(Backend::Auto);
        let mut av1 = l.renditions.last().unwrap().clone();
        av1.name = "av1".to_owned();
        av1.codec = VideoCodecChoice::Av1;
        l.renditions.push(av1);
        let auto = backend_for(&l, &inv);
        assert_eq!(auto.backend, Some(Backend::Gpu));
        assert!(auto
            .reason
            .ends_with("its NVENC has no AV1 encoder, so the AV1 rungs cannot use it"));
    }

    #[test]
    fn nvrm_version_parses() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(parse_nvrm_version(text).as_deref(), Some("550.54.15"));
        let open =
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n";
        assert_eq!(parse_nvrm_version(open).as_deref(), Some("570.86.15"));
        assert_eq!(parse_nvrm_version(""), None);
    }
}
