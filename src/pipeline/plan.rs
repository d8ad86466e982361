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

/// A rung's size before the source is known, from its configured sides: the
/// missing one from a 16:9 source, rounded up to even. `None` when neither is
/// set (the rung is the source's size). Admission and `check-config` judge a
/// rung by it; the pipeline itself sizes rungs from the real source
/// (`cpu::scale::rung_size`).
pub fn planned_size(width: Option<u32>, height: Option<u32>) -> Option<(u32, u32)> {
    let even = |v: u64| u32::try_from(v.div_ceil(2) * 2).unwrap_or(u32::MAX);
    match (width, height) {
        (Some(w), Some(h)) => Some((w, h)),
        (None, Some(h)) => Some((even(u64::from(h) * 16 / 9), h)),
        (Some(w), None) => Some((w, even(u64::from(w) * 9 / 16))),
        (None, None) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_sizes_assume_16_9_and_round_up_to_even() {
        assert_eq!(planned_size(None, Some(720)), Some((1280, 720)));
        assert_eq!(planned_size(None, Some(481)), Some((856, 481)));
        assert_eq!(planned_size(Some(854), None), Some((854, 480)));
        assert_eq!(planned_size(Some(640), Some(480)), Some((640, 480)));
        assert_eq!(planned_size(None, None), None);
    }
}
