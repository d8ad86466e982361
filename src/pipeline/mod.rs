//! The transcoding pipeline: decode -> scale -> encode, per channel.
//!
//! - [`frame`]: pooled I420 pictures shared between stages by reference.
//! - [`cpu`]: libavcodec decode, the CPU scaler, x264 encode.
//! - [`gpu`]: CUDA, NVDEC and NVENC loaded at run time; the GPU inventory and
//!   `ladder doctor`; the CUDA kernels (embedded PTX, and a CPU reference of
//!   each kernel's arithmetic).
//! - [`graph`]: the per-channel graph that wires them: one decode thread
//!   shared by one thread per encoded rung, bounded queues with named
//!   overflow policies, IDRs where the caller forces them, output to a
//!   [`graph::RungSink`] (the packager, through `app`). Ingest hands each
//!   accepted source access unit to the graph with the packager's decision
//!   (does it start a segment?), so every rung's IDRs and segments line up
//!   with the source's.

pub mod admission;
pub mod cpu;
pub mod frame;
pub mod gpu;
#[cfg(feature = "ffmpeg")]
pub mod graph;
pub mod plan;
pub mod reference;
