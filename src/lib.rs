//! Ladder: a transcoding appliance for live video.
//!
//! The tree follows the data. Reading the modules top to bottom reads the path a
//! frame takes:
//!
//! ```text
//! encoder --RTMP push--> ingest ----> media ------------> packaging ------------> origin --> CDN edges, players
//!                        (sessions,   (FLV tags -> H.264  (CMAF chunks, segment   (hyper: LL-HLS, LL-DASH,
//!                         sans-IO      + AAC access units, store, LL-HLS and      blocking reloads, chunked
//!                         RTMP)        64-bit timeline)    LL-DASH manifests)      segments)
//! ```
//!
//! - [`ingest`] — RTMP server (sockets in `ingest::server` only) and the sans-IO
//!   RTMP protocol in `ingest::rtmp`.
//! - [`media`] — FLV, avcC/SPS, AV1 OBUs and av1C, AAC config, timestamps. No I/O.
//! - [`packaging`] — CMAF boxes and fragmenter, the segment store, LL-HLS and
//!   LL-DASH renderers. No I/O.
//! - [`pipeline`] — the transcoding ladder: per channel, one decode thread
//!   and one thread per encoded rung, fed by ingest beside the packager and
//!   writing the rungs back into it. The decode thread is libavcodec (the
//!   rungs scale with swscale) or, for a ladder admission placed on a GPU,
//!   NVDEC with CUDA scaling per rung (falling back to libavcodec on a GPU
//!   failure); the rungs encode with x264 or rav1e. `pipeline::admission`
//!   decides the placement at publish; `pipeline::gpu` loads CUDA, NVDEC and
//!   NVENC at run time.
//! - [`origin`] — the HTTP origin that CDN edges and players pull from.
//! - [`control`] — configuration.
//! - [`app`] — wires it together: tasks, bounded queues, admission, shutdown.

#[cfg(feature = "ffmpeg")]
pub mod app;
pub mod control;
pub mod ingest;
pub mod media;
pub mod origin;
pub mod packaging;
pub mod pipeline;
pub mod sys;
