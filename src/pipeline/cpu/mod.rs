//! CPU backend: libavcodec decode, CPU scaling, x264 and rav1e (AV1) encode.

pub mod av1;
pub mod decode;
pub mod scale;
pub mod x264;
