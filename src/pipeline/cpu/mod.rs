//! CPU backend: libavcodec decode, CPU scaling, x264 and rav1e (AV1) encode.

pub mod av1;
#[cfg(feature = "ffmpeg")]
pub mod decode;
#[cfg(feature = "ffmpeg")]
pub mod scale;
#[cfg(feature = "ffmpeg")]
pub mod thumbnail;
pub mod x264;
