//! GPU backend: runtime-loaded CUDA, NVDEC, kernels, NVENC.

pub mod kernels;
