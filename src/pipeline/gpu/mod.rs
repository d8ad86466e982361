//! The GPU backend (issue 4): CUDA, NVDEC and NVENC, all loaded at run time so the
//! same binary runs on a box with no NVIDIA driver (and uses the CPU backend there).
//!
//! - [`driver`]: `libcuda.so.1`, probed with libloading before cudarc touches it;
//!   driver and CUDA versions, devices, RAII primary contexts.
//! - [`nvdec`]: `libnvcuvid.so.1` through libloading; `cuvidGetDecoderCaps`.
//! - [`nvenc`]: `libnvidia-encode.so.1` through libloading and NVENC's function list;
//!   session-based capability probe.
//! - [`probe`]: the inventory of GPUs ([`probe::probe`], never panics) and what
//!   admission knows of each ([`probe::GpuInventory::admission`]).
//! - [`decode`]: [`decode::NvdecDecoder`], H.264 on NVDEC into pooled device NV12
//!   surfaces; [`reference`](mod@reference): the self-test's fixtures and libavcodec references.
//! - [`doctor`]: `ladder doctor`'s report, as text and as JSON.
//! - [`kernels`]: the CUDA kernels' embedded PTX and a CPU reference of each
//!   kernel's arithmetic.
//! - [`scale`]: [`scale::CudaScaler`], the kernels launched on device NV12
//!   pictures (NV12 out for NVENC, I420 out for x264 on the host).
//! - [`hybrid`]: [`hybrid::NvdecFront`], NVDEC and CUDA scaling handing each rung its
//!   own host I420 picture (the hybrid backend: x264 on the host), and the
//!   [`hybrid::FrontEnd`] trait the graph's decode stage drives.
//! - [`encode`]: [`encode::NvencEncoder`], one rung's H.264 on NVENC from
//!   device NV12; its parameters (pure, tested) and the per-GPU session count.
//! - [`nvml`]: `libnvidia-ml.so.1` through libloading: utilisation of the
//!   decoders, encoders and SMs, and memory in use (what `ladder bench` reports).
//! - [`device`]: the gpu backend's rungs: pooled device NV12 pictures
//!   ([`device::DevicePicture`]) and [`device::NvencRung`], the NVENC encoder the
//!   graph opens for them (no raw picture on the host).
//!
//! `unsafe` is confined to `driver`, `nvdec`, `nvenc`, `nvml` and `scale`
//! (kernel launches).

pub mod decode;
pub mod device;
pub mod doctor;
pub mod driver;
pub mod encode;
pub mod hybrid;
pub mod kernels;
pub mod nvdec;
pub mod nvenc;
pub mod nvml;
pub mod probe;
pub mod reference;
pub mod scale;
pub mod selftest;
