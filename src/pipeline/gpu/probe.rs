//! What GPUs this box has and what each ladder's backend resolves to (issue 4,
//! "ladder doctor" and backend choice).
//!
//! [`probe`] never fails and never panics: a box with no driver is an inventory with no
//! GPUs and a reason ([`GpuInventory::no_gpu`]). [`GpuInventory::admission`] turns it
//! into what admission places ladders on ([`crate::pipeline::admission`]): each GPU's
//! engines, memory and session cap. That mapping, and where ladders land on made-up
//! inventories (no GPU, H200-like, L4-like, mixed), are tested here.
//!
//! No `unsafe` here: the FFI lives in `driver`, `nvdec` and `nvenc`.

use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;

use super::driver::{Driver, GpuError, LIBCUDA};
use super::nvdec::{DecodeCodec, DecoderCaps, Nvcuvid};
use super::nvenc::{
    EncodeCodec, EncodeCodecCaps, Nvenc, NvencProbe, SessionLimit, SessionLimitKind,
};
use crate::pipeline::admission::{Admission, GpuCapacity};

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

/// Concurrent NVENC sessions assumed on a driver-capped (GeForce-class) board:
/// the cap in current drivers (GPU.md), which no API reports.
pub const GEFORCE_NVENC_SESSIONS: u32 = 8;

impl GpuInfo {
    /// What admission needs of this GPU. An engine count the driver did not
    /// report counts as one where the engine works at all.
    pub fn capacity(&self) -> GpuCapacity {
        let nvdec_engines = if self.has_nvdec() {
            self.nvdec
                .codecs
                .iter()
                .filter(|c| c.codec == DecodeCodec::H264)
                .map(|c| c.engines)
                .max()
                .unwrap_or(0)
                .max(1)
        } else {
            0
        };
        let nvenc_engines = if self.has_nvenc() {
            self.nvenc.engines.unwrap_or(1).max(1)
        } else {
            0
        };
        GpuCapacity {
            index: u32::try_from(self.index).unwrap_or(u32::MAX),
            name: self.name.clone(),
            memory: self.memory_bytes,
            nvdec_engines,
            nvenc_engines,
            nvenc_av1: nvenc_engines > 0
                && self
                    .nvenc
                    .codecs
                    .iter()
                    .any(|c| c.codec == EncodeCodec::Av1),
            nvenc_sessions: match self.nvenc.session_limit.as_ref().map(|l| l.kind) {
                Some(SessionLimitKind::DriverCapped) => Some(GEFORCE_NVENC_SESSIONS),
                _ => None,
            },
        }
    }
}

impl GpuInventory {
    /// Admission over these GPUs, with the probe's reason where there are none.
    pub fn admission(&self) -> Admission {
        Admission::with_absent_reason(
            self.gpus.iter().map(GpuInfo::capacity).collect(),
            self.no_gpu.as_deref().unwrap_or("no NVIDIA GPU"),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::control::config::{Backend, Fallback};
    use crate::pipeline::admission::{Grant, Placement, Refused};
    use crate::pipeline::gpu::nvenc::session_limit;
    use crate::pipeline::plan::ladder_plan;

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

    /// Where the embedded default ladder (source + 720p/480p/360p) lands
    /// with `backend` and `fallback`, on a fresh admission over `inv`.
    fn place(inv: &GpuInventory, backend: Backend, fallback: Fallback) -> Result<Grant, Refused> {
        let config = crate::control::config::Config::load_from(
            crate::control::config::ConfigSource::Embedded,
        )
        .unwrap()
        .0;
        let (source, rungs) = ladder_plan(&config.ladders["default"]);
        inv.admission()
            .admit(backend, fallback, &rungs, source.is_some())
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
    fn no_gpu_box_places_on_the_cpu_with_the_probes_reason() {
        let inv = no_driver();
        let auto = place(&inv, Backend::Auto, Fallback::Fail).unwrap();
        assert_eq!(auto.placement, Placement::Cpu);
        assert_eq!(
            auto.reason,
            "no NVIDIA driver (libcuda.so.1 not found): CPU backend"
        );
        let e = place(&inv, Backend::Gpu, Fallback::Fail).unwrap_err();
        assert_eq!(e.0, "no NVIDIA driver (libcuda.so.1 not found)");
        let hybrid = place(&inv, Backend::Hybrid, Fallback::Cpu).unwrap();
        assert_eq!(hybrid.placement, Placement::Cpu);
        assert!(hybrid
            .reason
            .starts_with("no NVIDIA driver (libcuda.so.1 not found): fallback \"cpu\""));
    }

    #[test]
    fn h200_like_is_hybrid_and_has_no_nvenc_for_gpu() {
        let mut h200 = gpu(0, "NVIDIA H200", None);
        h200.nvdec = nvdec(7, false);
        let cap = h200.capacity();
        assert_eq!(
            (
                cap.nvdec_engines,
                cap.nvenc_engines,
                cap.nvenc_av1,
                cap.nvenc_sessions
            ),
            (7, 0, false, None)
        );
        let inv = inventory(vec![h200]);
        let auto = place(&inv, Backend::Auto, Fallback::Fail).unwrap();
        assert_eq!(auto.placement, Placement::Hybrid { gpu: 0 });
        assert!(
            auto.reason.starts_with("GPU 0 (NVIDIA H200): 1 channel(s)"),
            "{}",
            auto.reason
        );
        let e = place(&inv, Backend::Gpu, Fallback::Fail).unwrap_err();
        assert_eq!(e.0, "gpu: GPU 0 (NVIDIA H200) has no NVENC");
    }

    #[test]
    fn l4_like_is_gpu_and_geforce_is_session_capped() {
        let l4 = gpu(0, "NVIDIA L4", Some(2));
        let cap = l4.capacity();
        assert_eq!(
            (
                cap.nvdec_engines,
                cap.nvenc_engines,
                cap.nvenc_av1,
                cap.nvenc_sessions
            ),
            (4, 2, true, None)
        );
        assert_eq!(cap.memory, 24 << 30);
        let inv = inventory(vec![l4]);
        let auto = place(&inv, Backend::Auto, Fallback::Fail).unwrap();
        assert_eq!(auto.placement, Placement::Gpu { gpu: 0 });
        let cpu = place(&inv, Backend::Cpu, Fallback::Fail).unwrap();
        assert_eq!(cpu.placement, Placement::Cpu);
        let geforce = gpu(0, "NVIDIA GeForce RTX 4090", Some(2)).capacity();
        assert_eq!(geforce.nvenc_sessions, Some(GEFORCE_NVENC_SESSIONS));
    }

    #[test]
    fn mixed_box_puts_gpu_ladders_on_the_card_with_nvenc() {
        let mut a100 = gpu(0, "NVIDIA A100-SXM4-80GB", None);
        a100.nvdec = nvdec(5, false);
        let inv = inventory(vec![a100, gpu(1, "NVIDIA L4", Some(2))]);
        let auto = place(&inv, Backend::Auto, Fallback::Fail).unwrap();
        assert_eq!(auto.placement, Placement::Gpu { gpu: 1 });
        let hybrid = place(&inv, Backend::Hybrid, Fallback::Fail).unwrap();
        assert!(matches!(hybrid.placement, Placement::Hybrid { .. }));
    }

    #[test]
    fn driver_without_video_libraries_falls_back() {
        let mut g = gpu(0, "NVIDIA L4", None);
        g.nvdec = NvdecInfo {
            available: false,
            reason: Some("libnvcuvid.so.1 not found (...)".to_owned()),
            codecs: Vec::new(),
        };
        assert_eq!(g.capacity().nvdec_engines, 0);
        let inv = inventory(vec![g]);
        let auto = place(&inv, Backend::Auto, Fallback::Cpu).unwrap();
        assert_eq!(auto.placement, Placement::Cpu);
        assert!(
            auto.reason.starts_with("gpu: GPU 0 (NVIDIA L4) has no H.264 NVDEC; hybrid: GPU 0 (NVIDIA L4) has no H.264 NVDEC: fallback \"cpu\""),
            "{}",
            auto.reason
        );
    }

    #[test]
    fn an_nvenc_without_av1_is_known_to_admission() {
        let mut t4 = gpu(0, "NVIDIA T4", Some(1));
        t4.nvenc.codecs.retain(|c| c.codec != EncodeCodec::Av1);
        assert!(!t4.capacity().nvenc_av1);
        assert!(gpu(0, "NVIDIA L4", Some(1)).capacity().nvenc_av1);
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
