//! CPU backend: libavcodec decode, CPU scaling, x264 encode.

pub mod decode;
pub mod scale;
pub mod x264;
