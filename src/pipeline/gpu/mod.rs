//! The GPU backend (issue 4): CUDA, NVDEC and NVENC, all loaded at run time so the
//! same binary runs on a box with no NVIDIA driver (and uses the CPU backend there).
//!
//! - [`driver`]: `libcuda.so.1`, probed with libloading before cudarc touches it;
//!   driver and CUDA versions, devices, RAII primary contexts.
//! - [`nvdec`]: `libnvcuvid.so.1` through libloading; `cuvidGetDecoderCaps`.
//! - [`nvenc`]: `libnvidia-encode.so.1` through libloading and NVENC's function list;
//!   session-based capability probe.
//! - [`probe`]: the inventory of GPUs ([`probe::probe`], never panics) and the backend
//!   each ladder gets ([`probe::backend_for`], pure).
//! - [`doctor`]: `ladder doctor`'s report, as text and as JSON.
//! - [`kernels`]: the CUDA kernels' embedded PTX and a CPU reference of each
//!   kernel's arithmetic.
//!
//! `unsafe` is confined to `driver`, `nvdec` and `nvenc`.

pub mod decode;
pub mod doctor;
pub mod driver;
pub mod kernels;
pub mod nvdec;
pub mod nvenc;
pub mod probe;
pub mod reference;
pub mod selftest;
