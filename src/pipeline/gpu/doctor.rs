//! `ladder doctor [--json]` (SPEC.md, "Command line"): the driver, the GPUs, their
//! NVDEC and NVENC, and the backend each configured ladder would get.
//!
//! Pure: [`DoctorReport::new`] takes an inventory (from [`super::probe::probe`]) and
//! the configuration; the renderers are functions of the report. `main` only prints.
//!
//! The JSON object (`--json`), stable; fields are added, never renamed:
//!
//! ```text
//! {
//!   "schema": 1,
//!   "driver": null | {"version": "550.54.15" | null, "cuda_version": "12.4",
//!                     "nvenc_api_version": "12.2" | null},
//!   "no_gpu": null | "no NVIDIA driver (libcuda.so.1 not found)",
//!   "no_gpu_detail": null | "<the loader's or driver's words>",
//!   "gpus": [{
//!     "index": 0, "name": "NVIDIA L4", "memory_bytes": N, "free_memory_bytes": N | null,
//!     "compute_capability": "8.9", "pci_bus_id": "0000:01:00.0",
//!     "nvdec": {"available": bool, "reason": null | "...",
//!               "codecs": [{"codec": "h264" | "hevc" | "av1", "supported": bool,
//!                           "max_width": N, "max_height": N, "max_mb_count": N,
//!                           "min_width": N, "min_height": N, "engines": N,
//!                           "output_format_mask": N}]},
//!     "nvenc": {"available": bool, "reason": null | "none on this GPU (...)" | "...",
//!               "codecs": [{"codec": "h264" | "hevc" | "av1", "max_width": N, "max_height": N}],
//!               "engines": N | null,
//!               "session_limit": null | {"kind": "unlimited" | "driver-capped", "basis": "..."}}
//!   }],
//!   "ladders": [{"name": "default", "requested": "auto", "fallback": "cpu" | "degrade" | "fail",
//!                "backend": "gpu" | "hybrid" | "cpu" | null, "gpu": 0 | null,
//!                "rungs": ["720p", ...], "dropped": ["1080p", ...], "reason": "..."}]
//! }
//! ```
//!
//! Each ladder is placed as admission would place its first channel on this box
//! ([`crate::pipeline::admission`], the same code the server runs at publish): `rungs`
//! are the encoded rungs that would run, `dropped` those `fallback = "degrade"` would
//! leave out. `backend: null` means a publish would be refused (`fallback = "fail"`
//! and no GPU can take it; `reason` says why).

use std::fmt::Write as _;

use serde::Serialize;

use super::probe::{GpuInfo, GpuInventory};
use crate::control::config::{Backend, Config};
use crate::pipeline::admission::Placement;
use crate::pipeline::plan::ladder_plan;

/// Version of the JSON object; bumped only if a field changes meaning.
pub const SCHEMA: u32 = 1;

/// What `ladder doctor` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoctorReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The GPUs.
    #[serde(flatten)]
    pub inventory: GpuInventory,
    /// Each configured ladder, by name.
    pub ladders: Vec<LadderReport>,
}

/// One ladder's backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LadderReport {
    /// `[ladders.NAME]`.
    pub name: String,
    /// `backend` in the configuration.
    pub requested: String,
    /// `fallback` in the configuration.
    pub fallback: String,
    /// What it gets, or `None` when the request cannot run here.
    pub backend: Option<String>,
    /// The GPU used, for `gpu` and `hybrid`.
    pub gpu: Option<usize>,
    /// The encoded rungs that would run.
    pub rungs: Vec<String>,
    /// The encoded rungs `degrade` would leave out.
    pub dropped: Vec<String>,
    /// Why.
    pub reason: String,
}

impl DoctorReport {
    /// Resolves every ladder of `config` against `inventory`.
    pub fn new(config: &Config, inventory: GpuInventory) -> DoctorReport {
        let ladders = config
            .ladders
            .iter()
            .map(|(name, ladder)| {
                let (source, rungs) = ladder_plan(ladder);
                let placed = inventory.admission().admit(
                    ladder.backend,
                    ladder.fallback,
                    &rungs,
                    source.is_some(),
                );
                let (backend, gpu, kept, dropped, reason) = match placed {
                    Ok(g) => {
                        let (backend, gpu) = match g.placement {
                            Placement::Gpu { gpu } => (Backend::Gpu, Some(gpu as usize)),
                            Placement::Hybrid { gpu } => (Backend::Hybrid, Some(gpu as usize)),
                            Placement::Cpu => (Backend::Cpu, None),
                        };
                        let kept = g.rungs.iter().map(|r| r.name.clone()).collect();
                        (
                            Some(backend.to_string()),
                            gpu,
                            kept,
                            g.dropped.clone(),
                            g.reason.clone(),
                        )
                    }
                    Err(refused) => (None, None, Vec::new(), Vec::new(), refused.0),
                };
                LadderReport {
                    name: name.clone(),
                    requested: ladder.backend.to_string(),
                    fallback: ladder.fallback.to_string(),
                    backend,
                    gpu,
                    rungs: kept,
                    dropped,
                    reason,
                }
            })
            .collect();
        DoctorReport {
            schema: SCHEMA,
            inventory,
            ladders,
        }
    }

    /// The JSON object documented in the module docs, one line plus a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string(self).expect("the report serialises");
        s.push('\n');
        s
    }

    /// The human report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let inv = &self.inventory;
        if let Some(d) = &inv.driver {
            let _ = write!(
                out,
                "NVIDIA driver {}, CUDA {}",
                d.version.as_deref().unwrap_or("(version unknown)"),
                d.cuda_version
            );
            if let Some(v) = &d.nvenc_api_version {
                let _ = write!(out, ", NVENC API {v}");
            }
            out.push('\n');
        }
        if let Some(reason) = &inv.no_gpu {
            let _ = writeln!(out, "{reason}: CPU backend");
            if inv.driver.is_some() {
                if let Some(detail) = &inv.no_gpu_detail {
                    let _ = writeln!(out, "  {detail}");
                }
            }
        }
        for g in &inv.gpus {
            gpu_text(&mut out, g);
        }
        for l in &self.ladders {
            let _ = write!(
                out,
                "ladder \"{}\" (backend = \"{}\"): ",
                l.name, l.requested
            );
            match &l.backend {
                Some(b) => {
                    let _ = writeln!(out, "{b} ({})", l.reason);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "a publish is refused (fallback = \"{}\"): {}",
                        l.fallback, l.reason
                    );
                }
            }
        }
        let on_gpu = self.ladders.iter().any(|l| {
            l.backend
                .as_deref()
                .is_some_and(|b| b != Backend::Cpu.to_string())
        });
        if on_gpu {
            out.push_str(
                "note: this build runs every ladder on the CPU; the GPU pipelines are not wired yet\n",
            );
        }
        out
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn gpu_text(out: &mut String, g: &GpuInfo) {
    let _ = write!(out, "GPU {}: {}, {}", g.index, g.name, gib(g.memory_bytes));
    if let Some(free) = g.free_memory_bytes {
        let _ = write!(out, " ({} free)", gib(free));
    }
    let _ = writeln!(
        out,
        ", compute {}, PCI {}",
        g.compute_capability, g.pci_bus_id
    );

    out.push_str("  NVDEC: ");
    if g.nvdec.codecs.is_empty() {
        let _ = writeln!(
            out,
            "unavailable ({})",
            g.nvdec.reason.as_deref().unwrap_or("unknown")
        );
    } else {
        let engines = g.nvdec.codecs.iter().map(|c| c.engines).max().unwrap_or(0);
        if engines > 0 {
            let _ = write!(out, "{engines} engines; ");
        }
        let codecs: Vec<String> = g
            .nvdec
            .codecs
            .iter()
            .map(|c| {
                if c.supported {
                    format!(
                        "{} up to {}x{} ({} MBs)",
                        c.codec.name(),
                        c.max_width,
                        c.max_height,
                        c.max_mb_count
                    )
                } else {
                    format!("{} not supported", c.codec.name())
                }
            })
            .collect();
        let _ = writeln!(out, "{}", codecs.join(", "));
        if let Some(reason) = &g.nvdec.reason {
            let _ = writeln!(out, "    ({reason})");
        }
    }

    out.push_str("  NVENC: ");
    if g.nvenc.available {
        if let Some(engines) = g.nvenc.engines {
            let _ = write!(out, "{engines} engines; ");
        }
        let codecs: Vec<String> = g
            .nvenc
            .codecs
            .iter()
            .map(|c| format!("{} up to {}x{}", c.codec.name(), c.max_width, c.max_height))
            .collect();
        let _ = writeln!(out, "{}", codecs.join(", "));
        if let Some(limit) = &g.nvenc.session_limit {
            let kind = match limit.kind {
                super::nvenc::SessionLimitKind::Unlimited => "unlimited (datacenter)",
                super::nvenc::SessionLimitKind::DriverCapped => "driver-capped",
            };
            let _ = writeln!(out, "    sessions: {kind}: {}", limit.basis);
        }
    } else {
        let _ = writeln!(
            out,
            "{}",
            g.nvenc.reason.as_deref().unwrap_or("unavailable")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::ConfigSource;
    use crate::pipeline::gpu::probe::tests::{gpu, inventory, no_driver, nvdec};

    fn config() -> Config {
        Config::load_from(ConfigSource::Embedded).unwrap().0
    }

    #[test]
    fn no_driver_text() {
        let r = DoctorReport::new(&config(), no_driver());
        assert_eq!(
            r.to_text(),
            "no NVIDIA driver (libcuda.so.1 not found): CPU backend\n\
             ladder \"default\" (backend = \"auto\"): cpu (no NVIDIA driver (libcuda.so.1 not found): CPU backend)\n"
        );
    }

    #[test]
    fn no_driver_json_shape() {
        let r = DoctorReport::new(&config(), no_driver());
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["schema"], 1);
        assert!(v["driver"].is_null());
        assert_eq!(v["no_gpu"], "no NVIDIA driver (libcuda.so.1 not found)");
        assert!(v["no_gpu_detail"]
            .as_str()
            .unwrap()
            .contains("libcuda.so.1"));
        assert_eq!(v["gpus"], serde_json::json!([]));
        assert_eq!(
            v["ladders"],
            serde_json::json!([{
                "name": "default", "requested": "auto", "fallback": "cpu", "backend": "cpu",
                "gpu": null, "rungs": ["720p", "480p", "360p"], "dropped": [],
                "reason": "no NVIDIA driver (libcuda.so.1 not found): CPU backend"
            }])
        );
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }

    #[test]
    fn gpu_box_json_shape() {
        let mut h200 = gpu(0, "NVIDIA H200", None);
        h200.nvdec = nvdec(7, false);
        let r = DoctorReport::new(
            &config(),
            inventory(vec![h200, gpu(1, "NVIDIA L4", Some(2))]),
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["driver"]["version"], "550.54.15");
        assert_eq!(v["driver"]["cuda_version"], "12.4");
        assert!(v["no_gpu"].is_null());
        let g0 = &v["gpus"][0];
        assert_eq!(g0["name"], "NVIDIA H200");
        assert_eq!(g0["nvdec"]["available"], true);
        assert_eq!(g0["nvdec"]["codecs"][0]["codec"], "h264");
        assert_eq!(g0["nvdec"]["codecs"][2]["supported"], false);
        assert_eq!(g0["nvdec"]["codecs"][0]["engines"], 7);
        assert_eq!(g0["nvenc"]["available"], false);
        assert!(g0["nvenc"]["session_limit"].is_null());
        let g1 = &v["gpus"][1];
        assert_eq!(g1["nvenc"]["engines"], 2);
        assert_eq!(g1["nvenc"]["codecs"][2]["codec"], "av1");
        assert_eq!(g1["nvenc"]["session_limit"]["kind"], "unlimited");
        assert_eq!(v["ladders"][0]["backend"], "gpu");
        assert_eq!(v["ladders"][0]["gpu"], 1);
    }

    #[test]
    fn gpu_box_text() {
        let mut h200 = gpu(0, "NVIDIA H200", None);
        h200.nvdec = nvdec(7, false);
        let text = DoctorReport::new(&config(), inventory(vec![h200])).to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NVIDIA driver 550.54.15, CUDA 12.4, NVENC API 12.2"
        );
        assert_eq!(
            lines[1],
            "GPU 0: NVIDIA H200, 24.0 GiB (23.0 GiB free), compute 8.9, PCI 0000:01:00.0"
        );
        assert_eq!(
            lines[2],
            "  NVDEC: 7 engines; h264 up to 8192x8192 (262144 MBs), hevc up to 8192x8192 (262144 MBs), av1 not supported"
        );
        assert_eq!(
            lines[3],
            "  NVENC: none on this GPU (nvEncOpenEncodeSessionEx: NV_ENC_ERR_UNSUPPORTED_DEVICE (2))"
        );
        assert!(
            lines[4].starts_with(
                "ladder \"default\" (backend = \"auto\"): hybrid (GPU 0 (NVIDIA H200): 1 channel(s)"
            ),
            "{}",
            lines[4]
        );
        assert_eq!(
            lines[5],
            "note: this build runs every ladder on the CPU; the GPU pipelines are not wired yet"
        );
    }
}
