//! What a channel's ladder asks the pipeline for, resolved from the
//! configuration: the passthrough rendition's name and one [`RungPlan`] per
//! encoded rendition. Shared by the graph (what to encode), admission (what
//! it costs) and `ladder doctor` (what each ladder would get).

use crate::control::config::{LadderConfig, VideoCodecChoice};

/// The codec of an encoded rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RungCodec {
    H264,
    Av1,
}

/// One encoded rendition, resolved from the configuration by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct RungPlan {
    /// The rendition's name (playlist and thread names).
    pub name: String,
    pub codec: RungCodec,
    /// Requested size; resolved per source with [`crate::pipeline::cpu::scale::rung_size`] (aspect
    /// kept, even, never upscaled). Neither: the source's size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub bitrate_kbps: u32,
    pub maxrate_kbps: Option<u32>,
    /// Frame-rate cap (see the module docs); `None`, or a value that is not a
    /// positive number, means no cap.
    pub fps_max: Option<f64>,
    pub profile: Option<String>,
    pub preset: Option<String>,
    /// Encoder threads; 0 = [`crate::pipeline::graph::auto_threads`] for the rung's size.
    pub threads: usize,
}

/// A ladder as the pipeline sees it: the passthrough rendition's name
/// (`None` when every rendition is encoded) and the encoded rungs, in ladder
/// order.
pub fn ladder_plan(ladder: &LadderConfig) -> (Option<String>, Vec<RungPlan>) {
    let source = ladder
        .renditions
        .iter()
        .find(|r| r.passthrough)
        .map(|r| r.name.clone());
    let rungs = ladder
        .renditions
        .iter()
        .filter(|r| !r.passthrough)
        .map(|r| RungPlan {
            name: r.name.clone(),
            codec: match r.codec {
                VideoCodecChoice::H264 => RungCodec::H264,
                VideoCodecChoice::Av1 => RungCodec::Av1,
            },
            width: r.width,
            height: r.height,
            bitrate_kbps: r.bitrate_kbps.unwrap_or(1000),
            maxrate_kbps: r.maxrate_kbps,
            fps_max: r.fps_max,
            profile: r.profile.clone(),
            preset: r.preset.clone(),
            threads: r.threads.unwrap_or(0) as usize,
        })
        .collect();
    (source, rungs)
}
