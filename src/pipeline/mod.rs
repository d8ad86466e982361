//! The transcoding pipeline: decode -> scale -> encode, per channel.
//!
//! Work in progress (issue 3): the CPU building blocks live in [`cpu`]; the
//! per-channel graph that wires them to the packager comes next. Until then the
//! source is passed through (see `app`).
//!
//! - [`frame`]: pooled I420 pictures shared between stages by reference.
//! - [`cpu`]: libavcodec decode, the CPU scaler, x264 encode.

pub mod cpu;
pub mod frame;
