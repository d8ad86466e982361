//! The transcoding pipeline: decode -> scale -> encode, per channel.
//!
//! - [`frame`]: pooled I420 pictures shared between stages by reference.
//! - [`cpu`]: libavcodec decode, the CPU scaler, x264 encode.
//! - [`graph`]: the per-channel graph that wires them: one decode thread
//!   shared by one thread per encoded rung, bounded queues with named
//!   overflow policies, IDRs where the caller forces them, output to a
//!   [`graph::RungSink`] (the packager). Not yet wired into `app`, which
//!   still passes the source through.

pub mod cpu;
pub mod frame;
pub mod graph;
