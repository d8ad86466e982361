//! Ladder: a transcoding appliance for live video.
//!
//! The tree follows the data. Reading the modules top to bottom reads the path a
//! frame takes:
//!
//! ```text
//! encoder --RTMP push--> ingest ----> media ------------> packaging ------------> origin --> CDN edges, players
//!                        (sessions,   (FLV / Enhanced     (CMAF chunks, segment   (hyper: LL-HLS, LL-DASH,
//!                         sans-IO      RTMP tags -> H.264, store, LL-HLS and      blocking reloads, chunked
//!                         RTMP)        HEVC, AV1 + AAC     LL-DASH manifests)      segments)
//!                                      access units,
//!                                      64-bit timeline)
//! ```
//!
//! - [`ingest`] — RTMP and RTMPS server (sockets in `ingest::server` only), the
//!   RTMP/RTMPS client for restream and pull (sockets in `ingest::client`
//!   only), the sans-IO RTMP protocol in `ingest::rtmp`, and the publish
//!   session every source drives (`ingest::publish`).
//! - [`media`] — FLV and Enhanced RTMP tags, avcC/SPS, hvcC/VPS/SPS, AV1 OBUs and
//!   av1C, AAC config, timestamps. No I/O.
//! - [`packaging`] — CMAF boxes and fragmenter, the segment store, LL-HLS and
//!   LL-DASH renderers. No I/O.
//! - [`pipeline`] — the transcoding ladder: per channel, one decode thread
//!   and one thread per encoded rung, fed by ingest beside the packager and
//!   writing the rungs back into it. The decode thread is libavcodec (the
//!   rungs scale with swscale) or, for a ladder admission placed on a GPU,
//!   NVDEC with CUDA scaling per rung (falling back to libavcodec on a GPU
//!   failure); the rungs encode with x264 or rav1e, or on NVENC from device
//!   memory for a `gpu` placement. `pipeline::admission`
//!   decides the placement at publish; `pipeline::gpu` loads CUDA, NVDEC and
//!   NVENC at run time.
//! - [`origin`] — the HTTP origin that CDN edges and players pull from.
//! - [`restream`] — republishing the source or a rung to RTMP/RTMPS
//!   destinations (YouTube, Facebook), each with its own bounded queue.
//! - [`control`] — configuration, the admin API, metrics, health, the
//!   publish webhook.
//! - [`app`] — wires it together: tasks, bounded queues, admission, shutdown.
//! - [`bench`] — `ladder bench`: channels per GPU and per box on the real
//!   pipeline (packager, pipeline and rung sink per channel, fed in real time).

/// Items fed from the network (RTMP, FLV and codec records, request paths and
/// queries, signed tokens): no panic may be reachable from them (issue 8 §5),
/// so indexing, `unwrap`/`expect`, `panic!`/`unreachable!` and unchecked
/// arithmetic are denied in the library as built (test builds may use them).
/// Wraps module declarations and functions.
macro_rules! network_input {
    ($($item:item)*) => {
        $(
            #[cfg_attr(
                not(test),
                deny(
                    clippy::indexing_slicing,
                    clippy::unwrap_used,
                    clippy::expect_used,
                    clippy::panic,
                    clippy::unreachable,
                    clippy::arithmetic_side_effects
                )
            )]
            $item
        )*
    };
}

#[cfg(feature = "ffmpeg")]
pub mod app;
#[cfg(feature = "ffmpeg")]
pub mod bench;
pub mod control;
/// The fuzz targets' bodies (fuzz/, tests/fuzz_corpus.rs); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod media;
pub mod origin;
pub mod packaging;
pub mod pipeline;
pub mod restream;
pub mod sys;
