//! CUDA scaling of device NV12 pictures to a rung's size (issue 4, "Kernels"):
//! the launcher of `kernels/scale.cu`, whose PTX, tables and CPU reference are
//! in [`super::kernels`].
//!
//! A [`CudaScaler`] serves one (source size, rung size, filter, siting): made
//! once, it loads the embedded PTX into the context (the driver JIT-compiles it
//! for the GPU at hand), builds the weight tables with
//! [`kernels::ScalePlan`] and uploads them, and then for every picture
//! launches two kernels, Y then UV, on the context's default stream:
//!
//! - [`CudaScaler::scale_nv12`]: into a device NV12 buffer, for NVENC (the
//!   encoder's pooled, registered inputs are [`DeviceNv12Buffer`]s);
//! - [`CudaScaler::scale_i420`]: into a device I420 buffer laid out exactly as
//!   a host [`Picture`] (same strides), then downloaded into that picture, for
//!   x264 on the host (the hybrid backend: H100/H200 have no NVENC).
//!
//! Sources are [`DeviceNv12`] views: a device pointer per plane, a size and a
//! pitch, which is what NVDEC's mapped surfaces are (the decoder wraps its
//! surface with [`DeviceNv12::from_raw`]) and what [`DeviceNv12Buffer::view`]
//! gives for our own allocations. Every call waits for its kernels
//! (`cuStreamSynchronize`) before returning, so NVENC or the host may read the
//! output at once.
//!
//! Every allocation is a cudarc [`CudaSlice`] (freed on drop); the module is
//! unloaded when the last [`CudaFunction`] of it drops. Launch geometry is
//! [`kernels::BLOCK`] and [`kernels::grid`].
//!
//! Not yet run on a GPU: the host side (layouts, table sizes, geometry,
//! argument checks) is tested here; the kernels' arithmetic is tested against
//! the CPU reference in `kernels`; [`selftest_checks`] compares the two on a
//! GPU and is expected to find them bit-exact.
//!
//! One of the FFI files (ARCHITECTURE.md, convention 7): kernel launches are
//! `unsafe`, and each carries a `// Safety:` comment.

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::decode::GpuPicture;
use super::driver::{self, Driver, GpuError};
use super::kernels::{
    self, ChromaSiting, KernelError, Nv12, PlanTables, ScaleFilter, ScalePlan, MAX_SIDE,
};
use super::selftest::{Check, Outcome};
use crate::pipeline::frame::Picture;

/// Row alignment of the device NV12 buffers allocated here, in bytes: what
/// `cuMemAllocPitch` gives on current GPUs, and a multiple of 4 as NVENC
/// requires of a registered CUDA pitch.
pub const PITCH_ALIGN: usize = 256;

/// Errors of the CUDA scaler.
///
/// Whose fault: `Gpu` and `Cuda` are the machine's (driver, memory, a kernel
/// fault); `Plan` and `Mismatch` the caller's (sizes the scaler was not made
/// for).
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The driver could not be loaded or a context made.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// A CUDA call failed (module load, allocation, copy, launch, sync).
    #[error("CUDA {call} failed: {detail}")]
    Cuda {
        /// What was being done.
        call: &'static str,
        /// The `CUresult`, named.
        detail: String,
    },
    /// The sizes are out of the kernels' range, or a picture does not fit.
    #[error(transparent)]
    Plan(#[from] KernelError),
    /// A picture or buffer of another size than the scaler was made for.
    #[error("{what} is {got_w}x{got_h} (pitch {pitch}), the scaler takes {want_w}x{want_h}")]
    Mismatch {
        /// Source or destination.
        what: &'static str,
        got_w: u32,
        got_h: u32,
        pitch: usize,
        want_w: u32,
        want_h: u32,
    },
}

fn cuda(call: &'static str) -> impl FnOnce(DriverError) -> ScaleError {
    move |e| ScaleError::Cuda {
        call,
        detail: driver::describe(e),
    }
}

/// A device NV12 picture someone else owns: the Y plane at `y`, the
/// interleaved UV plane at `uv`, both `pitch` bytes a row. What NVDEC's mapped
/// output surfaces are (`cuvidMapVideoFrame`: `uv = y + pitch * surface
/// height`), and what [`DeviceNv12Buffer::view`] lends. The lifetime ties a
/// view to the memory it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceNv12<'a> {
    y: u64,
    uv: u64,
    width: u32,
    height: u32,
    pitch: usize,
    _memory: PhantomData<&'a ()>,
}

impl DeviceNv12<'_> {
    /// A view of device memory allocated elsewhere (an NVDEC surface).
    ///
    /// # Safety
    ///
    /// `y` must point to `height` rows and `uv` to `ceil(height / 2)` rows of
    /// at least `2 * ceil(width / 2)` bytes, `pitch` bytes apart, in device
    /// memory of the CUDA context the scaler uses, and stay valid and
    /// unwritten by others while the view is used.
    pub unsafe fn from_raw(
        y: u64,
        uv: u64,
        width: u32,
        height: u32,
        pitch: usize,
    ) -> DeviceNv12<'static> {
        DeviceNv12 {
            y,
            uv,
            width,
            height,
            pitch,
            _memory: PhantomData,
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes between rows, both planes.
    pub fn pitch(&self) -> usize {
        self.pitch
    }

    /// Device address of the Y plane (a `CUdeviceptr`).
    pub fn y_ptr(&self) -> u64 {
        self.y
    }

    /// Device address of the UV plane.
    pub fn uv_ptr(&self) -> u64 {
        self.uv
    }
}

/// A view of a decoded picture's device surface (NVDEC's output, copied into
/// the decoder's pool), for a scaler on the same GPU's context. `None` when
/// the surface is smaller than the picture says (never, for the decoder's
/// own pictures).
pub fn picture_view(picture: &GpuPicture) -> Option<DeviceNv12<'_>> {
    let (w, h) = (picture.width as usize, picture.height as usize);
    let surface = &picture.surface;
    let fits = w > 0
        && h > 0
        && surface.row_bytes() >= 2 * w.div_ceil(2)
        && surface.rows() >= h + h.div_ceil(2)
        && surface.pitch() == picture.pitch;
    if !fits {
        return None;
    }
    let y = surface.device_ptr();
    let uv = y + (surface.pitch() * h) as u64;
    // Safety: `y` is the surface's row 0 and `uv` its row `h`: the surface
    // holds at least `h + ceil(h / 2)` rows of at least `2 * ceil(w / 2)`
    // bytes, `pitch` apart (checked above). It is device memory of the
    // decoder's context (the GPU's primary context, which the scalers of the
    // hybrid stage use too), and the returned view borrows `picture`, whose
    // `Arc` keeps the surface out of the pool (unwritten) while it lives.
    Some(unsafe { DeviceNv12::from_raw(y, uv, picture.width, picture.height, picture.pitch) })
}

/// Where the planes of an NV12 buffer allocated here lie: Y at 0, UV right
/// after Y (at `pitch * height`, where NVENC expects the chroma of a
/// registered CUDA NV12 resource), one pitch for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nv12Layout {
    pub width: u32,
    pub height: u32,
    /// Bytes per row, a multiple of [`PITCH_ALIGN`].
    pub pitch: usize,
    /// Byte offset of the UV plane.
    pub uv_offset: usize,
    /// Bytes in all.
    pub len: usize,
}

impl Nv12Layout {
    pub fn new(width: u32, height: u32) -> Nv12Layout {
        let (w, h) = (width as usize, height as usize);
        let pitch = (2 * w.div_ceil(2)).div_ceil(PITCH_ALIGN).max(1) * PITCH_ALIGN;
        let uv_offset = pitch * h;
        Nv12Layout {
            width,
            height,
            pitch,
            uv_offset,
            len: uv_offset + pitch * h.div_ceil(2),
        }
    }

    /// `host`'s samples packed into this layout (padding zero), for upload.
    pub fn pack(&self, host: &Nv12) -> Result<Vec<u8>, ScaleError> {
        self.check_host(host)?;
        let mut out = vec![0u8; self.len];
        let (cw, ch) = host.chroma_size();
        for y in 0..host.height {
            out[y * self.pitch..][..host.width]
                .copy_from_slice(&host.y[y * host.y_pitch..][..host.width]);
        }
        for y in 0..ch {
            out[self.uv_offset + y * self.pitch..][..2 * cw]
                .copy_from_slice(&host.uv[y * host.uv_pitch..][..2 * cw]);
        }
        Ok(out)
    }

    /// The picture in `bytes` (this layout), with tight pitches.
    pub fn unpack(&self, bytes: &[u8]) -> Nv12 {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = Nv12::with_pitches(w, h, w, 2 * w.div_ceil(2));
        let (cw, ch) = out.chroma_size();
        for y in 0..h {
            out.y[y * w..][..w].copy_from_slice(&bytes[y * self.pitch..][..w]);
        }
        for y in 0..ch {
            out.uv[y * out.uv_pitch..][..2 * cw]
                .copy_from_slice(&bytes[self.uv_offset + y * self.pitch..][..2 * cw]);
        }
        out
    }

    fn check_host(&self, host: &Nv12) -> Result<(), ScaleError> {
        if (host.width, host.height) != (self.width as usize, self.height as usize) {
            return Err(ScaleError::Mismatch {
                what: "host picture",
                got_w: host.width as u32,
                got_h: host.height as u32,
                pitch: host.y_pitch,
                want_w: self.width,
                want_h: self.height,
            });
        }
        Ok(())
    }
}

/// Where the planes of an I420 staging buffer lie: exactly as in a host
/// [`Picture`] of the same size (`Picture::resize`: strides rounded up to 32
/// bytes, U and V of one stride), so each plane downloads in one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct I420Layout {
    pub width: u32,
    pub height: u32,
    pub y_pitch: usize,
    /// The U and V planes' pitch.
    pub uv_pitch: usize,
    pub u_offset: usize,
    pub v_offset: usize,
    pub len: usize,
}

impl I420Layout {
    pub fn new(width: u32, height: u32) -> I420Layout {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y_pitch = w.div_ceil(32) * 32;
        let uv_pitch = cw.div_ceil(32) * 32;
        let u_offset = y_pitch * h;
        let v_offset = u_offset + uv_pitch * ch;
        I420Layout {
            width,
            height,
            y_pitch,
            uv_pitch,
            u_offset,
            v_offset,
            len: v_offset + uv_pitch * ch,
        }
    }

    /// (offset, length) of each plane in the buffer, Y, U, V: the same
    /// lengths as the planes of `Picture::new(width, height)`.
    pub fn planes(&self) -> [(usize, usize); 3] {
        let ch = (self.height as usize).div_ceil(2);
        [
            (0, self.y_pitch * self.height as usize),
            (self.u_offset, self.uv_pitch * ch),
            (self.v_offset, self.uv_pitch * ch),
        ]
    }
}

/// A device NV12 picture we own (freed on drop), in [`Nv12Layout`].
#[derive(Debug)]
pub struct DeviceNv12Buffer {
    data: CudaSlice<u8>,
    layout: Nv12Layout,
}

impl DeviceNv12Buffer {
    /// Allocate (zeroed) on `stream`'s context.
    pub fn new(stream: &Arc<CudaStream>, width: u32, height: u32) -> Result<Self, ScaleError> {
        check_size(width, height)?;
        let layout = Nv12Layout::new(width, height);
        let data = stream
            .alloc_zeros::<u8>(layout.len)
            .map_err(cuda("cuMemAlloc"))?;
        Ok(DeviceNv12Buffer { data, layout })
    }

    pub fn layout(&self) -> Nv12Layout {
        self.layout
    }

    /// Device address of the first byte (the Y plane; what NVENC registers).
    pub fn device_ptr(&self) -> u64 {
        let (ptr, _sync) = self.data.device_ptr(self.data.stream());
        ptr
    }

    /// A view for reading (as a scaler's source).
    pub fn view(&self) -> DeviceNv12<'_> {
        let y = self.device_ptr();
        DeviceNv12 {
            y,
            uv: y + self.layout.uv_offset as u64,
            width: self.layout.width,
            height: self.layout.height,
            pitch: self.layout.pitch,
            _memory: PhantomData,
        }
    }

    /// Copy a host picture of this size in.
    pub fn upload(&mut self, host: &Nv12) -> Result<(), ScaleError> {
        let bytes = self.layout.pack(host)?;
        let stream = self.data.stream().clone();
        stream
            .memcpy_htod(&bytes, &mut self.data)
            .map_err(cuda("cuMemcpyHtoD"))?;
        stream.synchronize().map_err(cuda("cuStreamSynchronize"))
    }

    /// Copy another buffer of the same size in, device to device; returns when done.
    pub fn copy_from(&mut self, src: &DeviceNv12Buffer) -> Result<(), ScaleError> {
        if src.layout != self.layout {
            return Err(ScaleError::Mismatch {
                what: "copy source",
                got_w: src.layout.width,
                got_h: src.layout.height,
                pitch: src.layout.pitch,
                want_w: self.layout.width,
                want_h: self.layout.height,
            });
        }
        let stream = self.data.stream().clone();
        stream
            .memcpy_dtod(&src.data, &mut self.data)
            .map_err(cuda("cuMemcpyDtoD"))?;
        stream.synchronize().map_err(cuda("cuStreamSynchronize"))
    }

    /// Copy the picture out (tight pitches).
    pub fn download(&self) -> Result<Nv12, ScaleError> {
        let stream = self.data.stream().clone();
        let bytes = stream
            .clone_dtoh(&self.data)
            .map_err(cuda("cuMemcpyDtoH"))?;
        Ok(self.layout.unpack(&bytes))
    }
}

/// A device I420 staging buffer (freed on drop), in [`I420Layout`].
#[derive(Debug)]
pub struct DeviceI420Buffer {
    data: CudaSlice<u8>,
    layout: I420Layout,
}

impl DeviceI420Buffer {
    /// Allocate (zeroed) on `stream`'s context.
    pub fn new(stream: &Arc<CudaStream>, width: u32, height: u32) -> Result<Self, ScaleError> {
        check_size(width, height)?;
        let layout = I420Layout::new(width, height);
        let data = stream
            .alloc_zeros::<u8>(layout.len)
            .map_err(cuda("cuMemAlloc"))?;
        Ok(DeviceI420Buffer { data, layout })
    }

    pub fn layout(&self) -> I420Layout {
        self.layout
    }

    /// Copy into `out` (resized to this size; its timing and flags kept).
    pub fn download(&self, out: &mut Picture) -> Result<(), ScaleError> {
        out.resize(self.layout.width, self.layout.height);
        let stream = self.data.stream().clone();
        for (plane, (offset, len)) in out.planes.iter_mut().zip(self.layout.planes()) {
            stream
                .memcpy_dtoh(
                    &self.data.slice(offset..offset + len),
                    &mut plane.data[..len],
                )
                .map_err(cuda("cuMemcpyDtoH"))?;
        }
        stream.synchronize().map_err(cuda("cuStreamSynchronize"))
    }
}

fn check_size(width: u32, height: u32) -> Result<(), KernelError> {
    let (w, h) = (width as usize, height as usize);
    if !(1..=MAX_SIDE).contains(&w) || !(1..=MAX_SIDE).contains(&h) {
        return Err(KernelError::Size {
            width: w,
            height: h,
        });
    }
    Ok(())
}

/// How many elements and bytes the tables of one plan upload: per axis
/// (luma x, luma y, chroma x, chroma y) `pos` (`i32`) and `coef` (`i16`)
/// lengths. Bilinear plans upload nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes {
    /// `(pos elements, coef elements)` per axis.
    pub axes: [(usize, usize); 4],
    /// Device bytes in all.
    pub bytes: usize,
}

/// What [`CudaScaler::new`] uploads for `plan`.
pub fn table_sizes(plan: &ScalePlan) -> TableSizes {
    let mut axes = [(0, 0); 4];
    if let PlanTables::Filter { luma, chroma } = &plan.tables {
        for (slot, t) in axes.iter_mut().zip(luma.iter().chain(chroma.iter())) {
            *slot = (t.pos.len(), t.coef.len());
        }
    }
    let bytes = axes.iter().map(|(p, c)| p * 4 + c * 2).sum();
    TableSizes { axes, bytes }
}

/// Launch configurations of the Y and the UV kernel for `plan`: one thread
/// per output sample (Y) or UV pair, [`kernels::BLOCK`] threads a block.
pub fn launch_configs(plan: &ScalePlan) -> [LaunchConfig; 2] {
    let (dw, dh) = (plan.dst.0 as u32, plan.dst.1 as u32);
    let cfg = |w: u32, h: u32| {
        let (gx, gy) = kernels::grid(w, h);
        LaunchConfig {
            grid_dim: (gx, gy, 1),
            block_dim: (kernels::BLOCK.0, kernels::BLOCK.1, 1),
            shared_mem_bytes: 0,
        }
    };
    [cfg(dw, dh), cfg(dw.div_ceil(2), dh.div_ceil(2))]
}

/// One axis's tables on the device.
#[derive(Debug)]
struct DeviceAxis {
    pos: CudaSlice<i32>,
    coef: CudaSlice<i16>,
    taps: i32,
}

/// The scaling kernels, loaded.
#[derive(Debug)]
struct Functions {
    filter_y: CudaFunction,
    filter_uv: CudaFunction,
    bilinear_y: CudaFunction,
    bilinear_uv: CudaFunction,
}

/// Where the UV kernel writes: NV12 (`v = u + 1`, step 2) or I420 (two planes
/// of one pitch, step 1).
#[derive(Clone, Copy, Debug)]
struct UvOut {
    u: u64,
    v: u64,
    pitch: i32,
    step: i32,
}

/// Scales device NV12 pictures of one size to one rung size on the GPU.
#[derive(Debug)]
pub struct CudaScaler {
    stream: Arc<CudaStream>,
    plan: ScalePlan,
    functions: Functions,
    /// `[luma x, luma y, chroma x, chroma y]`; empty for bilinear.
    tables: Vec<DeviceAxis>,
}

impl CudaScaler {
    /// A scaler from `src` to `dst` (width, height) on `ctx`: loads the PTX
    /// and uploads the plan's tables once.
    pub fn new(
        ctx: &Arc<CudaContext>,
        src: (u32, u32),
        dst: (u32, u32),
        filter: ScaleFilter,
        siting: ChromaSiting,
    ) -> Result<CudaScaler, ScaleError> {
        let plan = ScalePlan::new(
            (src.0 as usize, src.1 as usize),
            (dst.0 as usize, dst.1 as usize),
            filter,
            siting,
        )?;
        let module = ctx
            .load_module(Ptx::from_src(kernels::SCALE_PTX))
            .map_err(cuda("cuModuleLoadData"))?;
        let function = |name: &str| {
            module
                .load_function(name)
                .map_err(cuda("cuModuleGetFunction"))
        };
        let functions = Functions {
            filter_y: function(kernels::FILTER_Y)?,
            filter_uv: function(kernels::FILTER_UV)?,
            bilinear_y: function(kernels::BILINEAR_Y)?,
            bilinear_uv: function(kernels::BILINEAR_UV)?,
        };
        let stream = ctx.default_stream();
        let mut tables = Vec::new();
        if let PlanTables::Filter { luma, chroma } = &plan.tables {
            for t in luma.iter().chain(chroma.iter()) {
                tables.push(DeviceAxis {
                    pos: stream.clone_htod(&t.pos).map_err(cuda("cuMemcpyHtoD"))?,
                    coef: stream.clone_htod(&t.coef).map_err(cuda("cuMemcpyHtoD"))?,
                    taps: t.taps as i32,
                });
            }
        }
        stream.synchronize().map_err(cuda("cuStreamSynchronize"))?;
        Ok(CudaScaler {
            stream,
            plan,
            functions,
            tables,
        })
    }

    /// The plan (sizes, filter, siting, host tables).
    pub fn plan(&self) -> &ScalePlan {
        &self.plan
    }

    /// The stream everything runs on (the context's default stream).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// An NV12 buffer of the rung's size, for [`CudaScaler::scale_nv12`].
    pub fn nv12_buffer(&self) -> Result<DeviceNv12Buffer, ScaleError> {
        DeviceNv12Buffer::new(&self.stream, self.plan.dst.0 as u32, self.plan.dst.1 as u32)
    }

    /// An I420 staging buffer of the rung's size, for [`CudaScaler::scale_i420`].
    pub fn i420_buffer(&self) -> Result<DeviceI420Buffer, ScaleError> {
        DeviceI420Buffer::new(&self.stream, self.plan.dst.0 as u32, self.plan.dst.1 as u32)
    }

    /// Scale `src` into `dst` (NV12, for NVENC); returns when done.
    pub fn scale_nv12(
        &self,
        src: &DeviceNv12<'_>,
        dst: &mut DeviceNv12Buffer,
    ) -> Result<(), ScaleError> {
        self.check_src(src)?;
        let layout = dst.layout;
        self.check_dst(layout.width, layout.height, layout.pitch)?;
        let stream = self.stream.clone();
        let (base, _sync) = dst.data.device_ptr_mut(&stream);
        let pitch = to_i32(layout.pitch)?;
        let uv = base + layout.uv_offset as u64;
        self.launch(
            src,
            base,
            pitch,
            UvOut {
                u: uv,
                v: uv + 1,
                pitch,
                step: 2,
            },
        )?;
        stream.synchronize().map_err(cuda("cuStreamSynchronize"))
    }

    /// Scale `src` into `staging` (I420) and download it into `out` (resized
    /// to the rung's size; its timing and flags are the caller's).
    pub fn scale_i420(
        &self,
        src: &DeviceNv12<'_>,
        staging: &mut DeviceI420Buffer,
        out: &mut Picture,
    ) -> Result<(), ScaleError> {
        self.check_src(src)?;
        let layout = staging.layout;
        self.check_dst(layout.width, layout.height, layout.y_pitch)?;
        {
            let stream = self.stream.clone();
            let (base, _sync) = staging.data.device_ptr_mut(&stream);
            let uv_pitch = to_i32(layout.uv_pitch)?;
            self.launch(
                src,
                base,
                to_i32(layout.y_pitch)?,
                UvOut {
                    u: base + layout.u_offset as u64,
                    v: base + layout.v_offset as u64,
                    pitch: uv_pitch,
                    step: 1,
                },
            )?;
        }
        staging.download(out)
    }

    fn check_src(&self, src: &DeviceNv12<'_>) -> Result<(), ScaleError> {
        let (w, h) = (self.plan.src.0 as u32, self.plan.src.1 as u32);
        if (src.width, src.height) != (w, h) || src.pitch < 2 * (w as usize).div_ceil(2) {
            return Err(ScaleError::Mismatch {
                what: "source",
                got_w: src.width,
                got_h: src.height,
                pitch: src.pitch,
                want_w: w,
                want_h: h,
            });
        }
        to_i32(src.pitch).map(|_| ())
    }

    fn check_dst(&self, width: u32, height: u32, pitch: usize) -> Result<(), ScaleError> {
        let (w, h) = (self.plan.dst.0 as u32, self.plan.dst.1 as u32);
        if (width, height) != (w, h) {
            return Err(ScaleError::Mismatch {
                what: "destination",
                got_w: width,
                got_h: height,
                pitch,
                want_w: w,
                want_h: h,
            });
        }
        Ok(())
    }

    /// Launch the Y and UV kernels (asynchronously) on the scaler's stream.
    fn launch(
        &self,
        src: &DeviceNv12<'_>,
        dst_y: u64,
        dst_pitch: i32,
        uv: UvOut,
    ) -> Result<(), ScaleError> {
        let [luma_cfg, chroma_cfg] = launch_configs(&self.plan);
        let src_pitch = to_i32(src.pitch)?;
        let (dw, dh) = (self.plan.dst.0 as i32, self.plan.dst.1 as i32);
        let (cw, ch) = ((dw + 1) / 2, (dh + 1) / 2);
        match &self.plan.tables {
            PlanTables::Filter { .. } => {
                let [lx, ly, cx, cy] = &self.tables[..] else {
                    unreachable!("four axes uploaded for a filter plan")
                };
                let mut y = self.stream.launch_builder(&self.functions.filter_y);
                y.arg(&src.y)
                    .arg(&src_pitch)
                    .arg(&dst_y)
                    .arg(&dst_pitch)
                    .arg(&dw)
                    .arg(&dh)
                    .arg(&lx.pos)
                    .arg(&lx.coef)
                    .arg(&lx.taps)
                    .arg(&ly.pos)
                    .arg(&ly.coef)
                    .arg(&ly.taps);
                // Safety: the arguments match `ladder_filter_y`'s parameters
                // in order and type (kernels.rs, FILTER_Y). `src` points to a
                // picture of the plan's source size at `src_pitch` (checked;
                // DeviceNv12's contract); `dst_y` to an owned buffer of the
                // plan's rung size at `dst_pitch` (checked); the tables were
                // built for exactly these sizes, so every read stays inside the
                // source (`pos + taps <= len`) and every write inside the
                // `dw` x `dh` grid the kernel bounds-checks.
                unsafe { y.launch(luma_cfg) }.map_err(cuda("cuLaunchKernel"))?;
                let mut c = self.stream.launch_builder(&self.functions.filter_uv);
                c.arg(&src.uv)
                    .arg(&src_pitch)
                    .arg(&uv.u)
                    .arg(&uv.v)
                    .arg(&uv.pitch)
                    .arg(&uv.step)
                    .arg(&cw)
                    .arg(&ch)
                    .arg(&cx.pos)
                    .arg(&cx.coef)
                    .arg(&cx.taps)
                    .arg(&cy.pos)
                    .arg(&cy.coef)
                    .arg(&cy.taps);
                // Safety: as above for `ladder_filter_uv` (FILTER_UV): the UV
                // plane of the source, and U/V outputs of `cw` x `ch` samples
                // at `uv.pitch` and `uv.step` inside the owned destination.
                unsafe { c.launch(chroma_cfg) }.map_err(cuda("cuLaunchKernel"))?;
            }
            PlanTables::Bilinear { luma, chroma } => {
                let (sw, sh) = (self.plan.src.0 as i32, self.plan.src.1 as i32);
                let (scw, sch) = ((sw + 1) / 2, (sh + 1) / 2);
                let [lx, ly] = luma;
                let [cx, cy] = chroma;
                let mut y = self.stream.launch_builder(&self.functions.bilinear_y);
                y.arg(&src.y)
                    .arg(&src_pitch)
                    .arg(&sw)
                    .arg(&sh)
                    .arg(&dst_y)
                    .arg(&dst_pitch)
                    .arg(&dw)
                    .arg(&dh)
                    .arg(&lx.step)
                    .arg(&lx.offset)
                    .arg(&ly.step)
                    .arg(&ly.offset);
                // Safety: the arguments match `ladder_bilinear_y` (BILINEAR_Y);
                // the kernel clamps its positions into the `sw` x `sh` source
                // and writes only inside `dw` x `dh` of the owned destination.
                unsafe { y.launch(luma_cfg) }.map_err(cuda("cuLaunchKernel"))?;
                let mut c = self.stream.launch_builder(&self.functions.bilinear_uv);
                c.arg(&src.uv)
                    .arg(&src_pitch)
                    .arg(&scw)
                    .arg(&sch)
                    .arg(&uv.u)
                    .arg(&uv.v)
                    .arg(&uv.pitch)
                    .arg(&uv.step)
                    .arg(&cw)
                    .arg(&ch)
                    .arg(&cx.step)
                    .arg(&cx.offset)
                    .arg(&cy.step)
                    .arg(&cy.offset);
                // Safety: as above for `ladder_bilinear_uv` (BILINEAR_UV).
                unsafe { c.launch(chroma_cfg) }.map_err(cuda("cuLaunchKernel"))?;
            }
        }
        Ok(())
    }
}

fn to_i32(pitch: usize) -> Result<i32, ScaleError> {
    i32::try_from(pitch).map_err(|_| ScaleError::Cuda {
        call: "kernel arguments",
        detail: format!("pitch {pitch} does not fit the kernels' int"),
    })
}

/// Opens GPU 0's context for a self-test, or says why it cannot (`Skip` when
/// there is no driver or no GPU, `Fail` when there is one that does not work).
pub(crate) fn selftest_context() -> Result<Arc<CudaContext>, Outcome> {
    let driver = Driver::init().map_err(|e| match e {
        GpuError::NoDriver(_) => Outcome::Skip(e.to_string()),
        e => Outcome::Fail(e.to_string()),
    })?;
    match driver.device_count() {
        Ok(0) => return Err(Outcome::Skip("no CUDA device".into())),
        Ok(_) => {}
        Err(e) => return Err(Outcome::Fail(e.to_string())),
    }
    driver
        .cuda_context(0)
        .map_err(|e| Outcome::Fail(e.to_string()))
}

/// Source size of the scaling self-test.
pub const SELFTEST_SOURCE: (u32, u32) = (1920, 1080);
/// Rung sizes of the scaling self-test (1080p to 720p, 480p, 360p).
pub const SELFTEST_RUNGS: [(u32, u32); 3] = [(1280, 720), (854, 480), (640, 360)];
/// Below this PSNR against the CPU reference a scaling check fails.
pub const SELFTEST_MIN_PSNR_DB: f64 = 45.0;

/// The GPU self-test's scaling checks: a synthetic 1080p NV12 picture scaled
/// on the GPU to each of [`SELFTEST_RUNGS`] with every filter and siting, NV12
/// and I420 out, compared with the CPU reference ([`ScalePlan::reference`]).
/// Bit-exact is expected; below [`SELFTEST_MIN_PSNR_DB`] fails. Without a
/// driver or GPU: one `Skip` saying why.
pub fn selftest_checks() -> Vec<Check> {
    match selftest_context() {
        Ok(ctx) => selftest_checks_on(&ctx),
        Err(outcome) => vec![Check::new("scale/cuda", outcome)],
    }
}

/// [`selftest_checks`] on a given context.
pub fn selftest_checks_on(ctx: &Arc<CudaContext>) -> Vec<Check> {
    let (sw, sh) = SELFTEST_SOURCE;
    let host = Nv12::from_i420(&crate::pipeline::reference::synthetic(sw, sh));
    let stream = ctx.default_stream();
    let source = DeviceNv12Buffer::new(&stream, sw, sh).and_then(|mut b| {
        b.upload(&host)?;
        Ok(b)
    });
    let source = match source {
        Ok(b) => b,
        Err(e) => return vec![Check::new("scale/upload", Outcome::Fail(e.to_string()))],
    };
    let mut checks = Vec::new();
    for (dw, dh) in SELFTEST_RUNGS {
        for filter in [
            ScaleFilter::Bicubic,
            ScaleFilter::Area,
            ScaleFilter::Bilinear,
        ] {
            for siting in [ChromaSiting::Left, ChromaSiting::Centre] {
                let name = format!(
                    "scale/{}-{}-{sw}x{sh}-to-{dw}x{dh}",
                    format!("{filter:?}").to_lowercase(),
                    format!("{siting:?}").to_lowercase()
                );
                let outcome = match one_scale_check(ctx, &source, &host, (dw, dh), filter, siting) {
                    Ok(o) => o,
                    Err(e) => Outcome::Fail(e.to_string()),
                };
                checks.push(Check::new(name, outcome));
            }
        }
    }
    checks
}

/// How a GPU result compares with the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub max_abs_diff: u8,
    /// Over every sample (Y and UV); infinite when equal.
    pub psnr_db: f64,
}

/// Compare the written samples of two NV12 pictures of one size.
pub fn compare_nv12(got: &Nv12, want: &Nv12) -> Comparison {
    let (cw, ch) = want.chroma_size();
    let mut max = 0u8;
    let mut sq = 0f64;
    let mut n = 0usize;
    let rows = (0..want.height)
        .map(|y| {
            (
                &got.y[y * got.y_pitch..][..want.width],
                &want.y[y * want.y_pitch..][..want.width],
            )
        })
        .chain((0..ch).map(|y| {
            (
                &got.uv[y * got.uv_pitch..][..2 * cw],
                &want.uv[y * want.uv_pitch..][..2 * cw],
            )
        }));
    for (a, b) in rows {
        for (&x, &y) in a.iter().zip(b) {
            let d = x.abs_diff(y);
            max = max.max(d);
            sq += f64::from(d) * f64::from(d);
            n += 1;
        }
    }
    let mse = sq / n.max(1) as f64;
    let psnr_db = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    };
    Comparison {
        max_abs_diff: max,
        psnr_db,
    }
}

/// The outcome of one comparison of NV12 and I420 GPU output with the reference.
pub fn judge(nv12: Comparison, i420: Comparison) -> Outcome {
    let worst = if nv12.psnr_db <= i420.psnr_db {
        nv12
    } else {
        i420
    };
    let max = nv12.max_abs_diff.max(i420.max_abs_diff);
    if max == 0 {
        Outcome::Pass("bit-exact with the CPU reference (NV12 and I420 out)".into())
    } else if worst.psnr_db >= SELFTEST_MIN_PSNR_DB {
        Outcome::Pass(format!(
            "not bit-exact: max |diff| {max}, PSNR {:.2} dB (>= {SELFTEST_MIN_PSNR_DB} dB)",
            worst.psnr_db
        ))
    } else {
        Outcome::Fail(format!(
            "max |diff| {max}, PSNR {:.2} dB < {SELFTEST_MIN_PSNR_DB} dB against the CPU reference",
            worst.psnr_db
        ))
    }
}

fn one_scale_check(
    ctx: &Arc<CudaContext>,
    source: &DeviceNv12Buffer,
    host: &Nv12,
    (dw, dh): (u32, u32),
    filter: ScaleFilter,
    siting: ChromaSiting,
) -> Result<Outcome, ScaleError> {
    let (sw, sh) = SELFTEST_SOURCE;
    let scaler = CudaScaler::new(ctx, (sw, sh), (dw, dh), filter, siting)?;
    let mut want = Nv12::new(dw as usize, dh as usize);
    scaler.plan().reference(host, &mut want)?;

    let mut nv12 = scaler.nv12_buffer()?;
    scaler.scale_nv12(&source.view(), &mut nv12)?;
    let got_nv12 = nv12.download()?;

    let mut staging = scaler.i420_buffer()?;
    let mut picture = Picture::default();
    scaler.scale_i420(&source.view(), &mut staging, &mut picture)?;
    let got_i420 = Nv12::from_i420(&picture);

    Ok(judge(
        compare_nv12(&got_nv12, &want),
        compare_nv12(&got_i420, &want),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::reference::synthetic;

    #[test]
    fn nv12_layout_is_pitched_with_chroma_after_luma() {
        let l = Nv12Layout::new(1280, 720);
        assert_eq!(l.pitch, 1280);
        assert_eq!(l.uv_offset, 1280 * 720);
        assert_eq!(l.len, 1280 * 720 * 3 / 2);
        let l = Nv12Layout::new(854, 480);
        assert_eq!(l.pitch, 1024);
        assert_eq!(l.pitch % 4, 0, "NVENC needs a multiple of 4");
        assert_eq!(l.len, 1024 * 480 + 1024 * 240);
        // Odd sizes: chroma rounds up.
        let l = Nv12Layout::new(255, 7);
        assert_eq!((l.pitch, l.uv_offset, l.len), (256, 256 * 7, 256 * 11));
    }

    #[test]
    fn nv12_pack_and_unpack_round_trip() {
        let host = Nv12::from_i420(&synthetic(101, 57));
        let l = Nv12Layout::new(101, 57);
        let bytes = l.pack(&host).unwrap();
        assert_eq!(bytes.len(), l.len);
        assert_eq!(bytes[101], 0, "padding is zero");
        let back = l.unpack(&bytes);
        assert_eq!(compare_nv12(&back, &host).max_abs_diff, 0);
        assert!(matches!(
            l.pack(&Nv12::new(100, 57)),
            Err(ScaleError::Mismatch { .. })
        ));
    }

    #[test]
    fn i420_layout_matches_the_host_picture() {
        for (w, h) in [(1280, 720), (854, 480), (640, 360), (33, 17)] {
            let l = I420Layout::new(w, h);
            let pic = Picture::new(w, h);
            for (i, (offset, len)) in l.planes().into_iter().enumerate() {
                assert_eq!(len, pic.planes[i].data.len(), "{w}x{h} plane {i}");
                assert!(offset + len <= l.len);
            }
            assert_eq!(l.y_pitch, pic.planes[0].stride);
            assert_eq!(l.uv_pitch, pic.planes[1].stride);
            assert_eq!(l.uv_pitch, pic.planes[2].stride);
            assert_eq!(l.v_offset - l.u_offset, pic.planes[1].data.len());
            assert_eq!(
                l.len,
                pic.planes.iter().map(|p| p.data.len()).sum::<usize>()
            );
        }
    }

    #[test]
    fn launch_geometry_covers_luma_and_chroma() {
        let plan = ScalePlan::new(
            (1920, 1080),
            (854, 480),
            ScaleFilter::Bicubic,
            ChromaSiting::Left,
        )
        .unwrap();
        let [y, uv] = launch_configs(&plan);
        assert_eq!(y.block_dim, (32, 8, 1));
        assert_eq!(y.grid_dim, (27, 60, 1), "854 / 32 up, 480 / 8");
        assert_eq!(uv.grid_dim, (14, 30, 1), "427 UV pairs, 240 rows");
        assert_eq!(y.shared_mem_bytes, 0);
        for cfg in [y, uv] {
            assert!(cfg.block_dim.0 * cfg.block_dim.1 <= 1024);
        }
        // Every output is covered, and no block is wholly outside.
        let odd = ScalePlan::new((7, 5), (3, 3), ScaleFilter::Area, ChromaSiting::Left).unwrap();
        let [y, uv] = launch_configs(&odd);
        assert_eq!((y.grid_dim, uv.grid_dim), ((1, 1, 1), (1, 1, 1)));
    }

    #[test]
    fn table_upload_sizes_follow_the_plan() {
        let plan = ScalePlan::new(
            (1920, 1080),
            (1280, 720),
            ScaleFilter::Bicubic,
            ChromaSiting::Left,
        )
        .unwrap();
        let PlanTables::Filter { luma, chroma } = &plan.tables else {
            unreachable!()
        };
        let sizes = table_sizes(&plan);
        let lens = [1280, 720, 640, 360];
        for (i, t) in luma.iter().chain(chroma.iter()).enumerate() {
            assert_eq!(sizes.axes[i], (lens[i], lens[i] * t.taps), "axis {i}");
        }
        let want: usize = luma
            .iter()
            .chain(chroma.iter())
            .map(|t| t.pos.len() * 4 + t.coef.len() * 2)
            .sum();
        assert_eq!(sizes.bytes, want);
        // 1.5x bicubic: 6 taps a side, so about 3 x 6 x 2 bytes per output.
        assert!(sizes.bytes < 64 * 1024, "{}", sizes.bytes);
        let bilinear = ScalePlan::new(
            (1920, 1080),
            (1280, 720),
            ScaleFilter::Bilinear,
            ChromaSiting::Left,
        )
        .unwrap();
        assert_eq!(table_sizes(&bilinear).bytes, 0);
    }

    #[test]
    fn comparison_and_verdicts() {
        let a = Nv12::from_i420(&synthetic(64, 32));
        let same = compare_nv12(&a, &a);
        assert_eq!(same.max_abs_diff, 0);
        assert!(same.psnr_db.is_infinite());
        assert!(matches!(judge(same, same), Outcome::Pass(t) if t.contains("bit-exact")));
        let mut b = a.clone();
        b.y[0] = b.y[0].wrapping_add(3);
        let off = compare_nv12(&b, &a);
        assert_eq!(off.max_abs_diff, 3);
        assert!(off.psnr_db > 45.0);
        assert!(matches!(judge(same, off), Outcome::Pass(t) if t.starts_with("not bit-exact")));
        let mut c = a.clone();
        c.y.iter_mut().for_each(|v| *v = v.wrapping_add(40));
        let bad = compare_nv12(&c, &a);
        assert!(bad.psnr_db < 45.0);
        assert!(matches!(judge(bad, same), Outcome::Fail(_)));
    }

    #[test]
    fn selftest_without_a_driver_skips_with_the_reason() {
        if Driver::init().is_ok() {
            eprintln!("skipped: a CUDA driver is present; the self-test runs for real there");
            return;
        }
        let checks = selftest_checks();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name, "scale/cuda");
        match &checks[0].outcome {
            Outcome::Skip(why) => assert!(why.contains("libcuda.so.1"), "{why}"),
            o => panic!("{o:?}"),
        }
    }
}
