//! The CUDA driver, loaded at run time (issue 4, "Run-time loading").
//!
//! `libcuda.so.1` ships with the NVIDIA driver, not with Ladder, so nothing links it:
//! cudarc's `dynamic-loading` opens it on first use. cudarc *panics* when the library
//! is missing, so [`Driver::init`] first opens `libcuda.so.1` itself with libloading and
//! only then touches cudarc (inside `catch_unwind`, belt and braces). On a box with no
//! driver the answer is [`GpuError::NoDriver`], naming the library and the loader's
//! reason, never a panic.
//!
//! [`PrimaryContext`] owns a retained primary context (RAII: released on drop); NVDEC
//! and NVENC probes take a [`CurrentContext`] as evidence that one is current on the
//! calling thread.
//!
//! This is one of the FFI files (ARCHITECTURE.md, convention 7): every `unsafe` block
//! carries a `// Safety:` comment.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};

use cudarc::driver::result;
use cudarc::driver::sys;
use libloading::Library;

/// The driver library's soname (what the NVIDIA driver installs; `libcuda.so` without
/// the `.1` is a development symlink and may be absent).
pub const LIBCUDA: &str = "libcuda.so.1";

/// A shared library could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{library} not found (tried {}: {reason})", tried.join(", "))]
pub struct LibraryNotFound {
    /// The library asked for, e.g. `libcuda.so.1`.
    pub library: String,
    /// The names or paths given to the dynamic loader, in order.
    pub tried: Vec<String>,
    /// The loader's reason for the last one (dlerror).
    pub reason: String,
}

/// Errors of the CUDA driver layer, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No `libcuda.so.1`: no NVIDIA driver installed (or not on the loader path).
    #[error("no NVIDIA driver: {0}; install the NVIDIA driver to use the GPU backends")]
    NoDriver(#[from] LibraryNotFound),
    /// The library is there but `cuInit` failed (driver/kernel module mismatch, no
    /// device node, a container without the GPU passed in, ...).
    #[error("CUDA driver present but cuInit failed: {0} (is the nvidia kernel module loaded and /dev/nvidia* visible?)")]
    DriverInit(String),
    /// A driver call failed after a successful init.
    #[error("CUDA driver call {call} failed: {detail}")]
    Call {
        /// The function called.
        call: &'static str,
        /// The CUresult, named.
        detail: String,
    },
    /// cudarc panicked (a symbol missing from an old driver, for instance).
    #[error("CUDA driver binding panicked in {call}: {message}")]
    Panicked {
        /// What was being done.
        call: &'static str,
        /// The panic message.
        message: String,
    },
}

/// Opens the first of `candidates` the dynamic loader accepts.
///
/// The error names `library` (what an operator looks for) and every candidate tried.
pub fn open_library(library: &str, candidates: &[&str]) -> Result<Library, LibraryNotFound> {
    let mut reason = String::from("no candidate given");
    for candidate in candidates {
        // Safety: loading a shared library runs its initialisers. The candidates are
        // NVIDIA's driver libraries (or a test's path that does not exist); their
        // initialisers have no preconditions on our side.
        match unsafe { Library::new(*candidate) } {
            Ok(lib) => return Ok(lib),
            Err(e) => reason = loader_reason(&e),
        }
    }
    Err(LibraryNotFound {
        library: library.to_owned(),
        tried: candidates.iter().map(|c| (*c).to_owned()).collect(),
        reason,
    })
}

/// dlerror's own words when the loader gave them ("cannot open shared object file: No
/// such file or directory"), else libloading's summary.
pub(crate) fn loader_reason(e: &libloading::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string())
}

/// Runs `f`, turning a cudarc panic into [`GpuError::Panicked`].
fn guarded<T>(call: &'static str, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".to_owned());
        Err(GpuError::Panicked { call, message })
    })
}

fn call_err(call: &'static str) -> impl FnOnce(result::DriverError) -> GpuError {
    move |e| GpuError::Call {
        call,
        detail: describe(e),
    }
}

/// `CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)`.
pub(crate) fn describe(e: result::DriverError) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// The CUDA version a driver supports, from `cuDriverGetVersion` (`12040` is 12.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaVersion(pub i32);

impl CudaVersion {
    /// Major version.
    pub fn major(self) -> i32 {
        self.0 / 1000
    }
    /// Minor version.
    pub fn minor(self) -> i32 {
        (self.0 % 1000) / 10
    }
}

impl std::fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

/// What `cuDeviceGet*` says about one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// CUDA ordinal.
    pub index: usize,
    /// e.g. `NVIDIA H200`.
    pub name: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// PCI bus id, e.g. `0000:19:00.0`.
    pub pci_bus_id: String,
}

/// Proof that the CUDA driver was loaded and `cuInit` succeeded. Only obtainable from
/// [`Driver::init`], so no cudarc call is ever made on a box without `libcuda.so.1`.
#[derive(Debug)]
pub struct Driver {
    /// Keeps `libcuda.so.1` mapped for as long as the driver is in use (cudarc holds
    /// its own handle too; dlopen counts references).
    _lib: Library,
}

impl Driver {
    /// Loads `libcuda.so.1` and initialises the driver API.
    pub fn init() -> Result<Driver, GpuError> {
        Self::init_from(&[LIBCUDA])
    }

    /// As [`Driver::init`], trying `candidates` (paths or sonames) for the library.
    pub fn init_from(candidates: &[&str]) -> Result<Driver, GpuError> {
        let lib = open_library(LIBCUDA, candidates)?;
        guarded("cuInit", || {
            result::init().map_err(|e| GpuError::DriverInit(describe(e)))
        })?;
        Ok(Driver { _lib: lib })
    }

    /// `cuDriverGetVersion`: the newest CUDA version this driver supports.
    pub fn cuda_version(&self) -> Result<CudaVersion, GpuError> {
        guarded("cuDriverGetVersion", || {
            let mut v: c_int = 0;
            // Safety: cuInit succeeded (self exists); the out pointer is a live c_int.
            unsafe { sys::cuDriverGetVersion(&mut v) }
                .result()
                .map_err(call_err("cuDriverGetVersion"))?;
            Ok(CudaVersion(v))
        })
    }

    /// `cuDeviceGetCount`.
    pub fn device_count(&self) -> Result<usize, GpuError> {
        guarded("cuDeviceGetCount", || {
            let n = result::device::get_count().map_err(call_err("cuDeviceGetCount"))?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// Name, memory, compute capability and PCI bus id of GPU `index`.
    pub fn device(&self, index: usize) -> Result<DeviceInfo, GpuError> {
        guarded("cuDeviceGet", || {
            let ordinal = c_int::try_from(index).map_err(|_| GpuError::Call {
                call: "cuDeviceGet",
                detail: format!("ordinal {index} out of range"),
            })?;
            let dev = result::device::get(ordinal).map_err(call_err("cuDeviceGet"))?;
            let name = result::device::get_name(dev).map_err(call_err("cuDeviceGetName"))?;
            // Safety: `dev` was returned by cuDeviceGet above.
            let memory =
                unsafe { result::device::total_mem(dev) }.map_err(call_err("cuDeviceTotalMem"))?;
            let attr = |a| {
                // Safety: `dev` was returned by cuDeviceGet above; `a` is a valid attribute.
                unsafe { result::device::get_attribute(dev, a) }
                    .map_err(call_err("cuDeviceGetAttribute"))
            };
            let major =
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
            let minor =
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
            let mut bus = [0 as c_char; 32];
            // Safety: `bus` is a live buffer and its length is passed; the driver writes
            // a NUL-terminated string of at most that length.
            unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), bus.len() as c_int, dev) }
                .result()
                .map_err(call_err("cuDeviceGetPCIBusId"))?;
            // Safety: the driver NUL-terminated `bus` (it is zeroed too, so a NUL exists).
            let pci_bus_id = unsafe { CStr::from_ptr(bus.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            Ok(DeviceInfo {
                index,
                name,
                memory_bytes: memory as u64,
                compute_capability: (major, minor),
                pci_bus_id,
            })
        })
    }

    /// GPU `index`'s primary context as cudarc's [`cudarc::driver::CudaContext`] (for
    /// kernels, device memory and NVENC sessions); cudarc releases it when the last
    /// `Arc` drops. Going through [`Driver`] guarantees `libcuda.so.1` was found first,
    /// so cudarc cannot panic for want of the library; a panic inside is caught all
    /// the same.
    pub fn cuda_context(
        &self,
        index: usize,
    ) -> Result<std::sync::Arc<cudarc::driver::CudaContext>, GpuError> {
        guarded("cuDevicePrimaryCtxRetain", || {
            cudarc::driver::CudaContext::new(index).map_err(call_err("cuDevicePrimaryCtxRetain"))
        })
    }

    /// Retains GPU `index`'s primary context (released when the owner drops).
    pub fn primary_context(&self, index: usize) -> Result<PrimaryContext<'_>, GpuError> {
        guarded("cuDevicePrimaryCtxRetain", || {
            let ordinal = c_int::try_from(index).unwrap_or(c_int::MAX);
            let dev = result::device::get(ordinal).map_err(call_err("cuDeviceGet"))?;
            // Safety: `dev` was returned by cuDeviceGet; the matching release is in Drop.
            let ctx = unsafe { result::primary_ctx::retain(dev) }
                .map_err(call_err("cuDevicePrimaryCtxRetain"))?;
            Ok(PrimaryContext {
                dev,
                ctx,
                _driver: PhantomData,
            })
        })
    }
}

/// A retained primary context of one GPU. Dropping it releases the reference.
#[derive(Debug)]
pub struct PrimaryContext<'d> {
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    _driver: PhantomData<&'d Driver>,
}

impl PrimaryContext<'_> {
    /// Makes the context current on this thread for the lifetime of the guard.
    pub fn make_current(&self) -> Result<CurrentContext<'_>, GpuError> {
        guarded("cuCtxSetCurrent", || {
            // Safety: `self.ctx` is a retained, live primary context.
            unsafe { result::ctx::set_current(self.ctx) }.map_err(call_err("cuCtxSetCurrent"))?;
            Ok(CurrentContext {
                ctx: self,
                _not_send: PhantomData,
            })
        })
    }
}

impl Drop for PrimaryContext<'_> {
    fn drop(&mut self) {
        let _ = guarded("cuDevicePrimaryCtxRelease", || {
            // Safety: this retains exactly one reference on `dev` (taken in
            // Driver::primary_context) and gives it back once.
            unsafe { result::primary_ctx::release(self.dev) }
                .map_err(call_err("cuDevicePrimaryCtxRelease"))
        });
    }
}

/// The primary context is current on this thread (not `Send`: currency is per thread).
/// Dropping it unbinds the context from the thread.
#[derive(Debug)]
pub struct CurrentContext<'c> {
    ctx: &'c PrimaryContext<'c>,
    _not_send: PhantomData<*mut ()>,
}

impl CurrentContext<'_> {
    /// The raw `CUcontext`, for APIs that take it as a device handle (NVENC's
    /// `NV_ENC_DEVICE_TYPE_CUDA`).
    pub fn raw(&self) -> *mut c_void {
        self.ctx.ctx.cast()
    }

    /// `cuMemGetInfo`: (free, total) bytes on this context's GPU.
    pub fn memory_info(&self) -> Result<(u64, u64), GpuError> {
        guarded("cuMemGetInfo", || {
            let (free, total) = result::mem_get_info().map_err(call_err("cuMemGetInfo"))?;
            Ok((free as u64, total as u64))
        })
    }
}

impl Drop for CurrentContext<'_> {
    fn drop(&mut self) {
        let _ = guarded("cuCtxSetCurrent", || {
            // Safety: unbinding (a null context) is always allowed.
            unsafe { result::ctx::set_current(std::ptr::null_mut()) }
                .map_err(call_err("cuCtxSetCurrent"))
        });
    }
}

/// Device memory with a row pitch (`cuMemAllocPitch`), freed on drop: the NV12 surfaces
/// NVDEC's pictures are copied into (`gpu::decode`).
///
/// It remembers the context it was allocated in and makes that context current around
/// the calls that need one (free, copies), so it may be dropped or read on any thread.
/// The owner keeps the primary context retained while buffers live; past that, freeing
/// fails (an error, ignored in drop) rather than touching freed memory.
#[derive(Debug)]
pub struct DevicePitched {
    ptr: sys::CUdeviceptr,
    pitch: usize,
    row_bytes: usize,
    rows: usize,
    ctx: sys::CUcontext,
}

// Safety: the fields are a device address, sizes and a context handle; the driver API
// accepts them from any thread (every use pushes `ctx` current first).
unsafe impl Send for DevicePitched {}
// Safety: `&self` methods only read device memory through the driver; no host state.
unsafe impl Sync for DevicePitched {}

/// Pops the context pushed by [`push_context`] when dropped.
struct ContextPushed;

fn push_context(ctx: sys::CUcontext) -> Result<ContextPushed, GpuError> {
    guarded("cuCtxPushCurrent", || {
        // Safety: `ctx` was current when the buffer was allocated (a retained primary
        // context); pushing an invalid one returns an error, it does not dereference.
        unsafe { sys::cuCtxPushCurrent_v2(ctx) }
            .result()
            .map_err(call_err("cuCtxPushCurrent"))?;
        Ok(ContextPushed)
    })
}

impl Drop for ContextPushed {
    fn drop(&mut self) {
        let _ = guarded("cuCtxPopCurrent", || {
            let mut old: sys::CUcontext = std::ptr::null_mut();
            // Safety: pops the context pushed by push_context on this thread.
            unsafe { sys::cuCtxPopCurrent_v2(&mut old) }
                .result()
                .map_err(call_err("cuCtxPopCurrent"))
        });
    }
}

impl CurrentContext<'_> {
    /// `cuMemAllocPitch`: `rows` rows of at least `row_bytes` bytes on this GPU.
    pub fn alloc_pitched(&self, row_bytes: usize, rows: usize) -> Result<DevicePitched, GpuError> {
        if row_bytes == 0 || rows == 0 {
            return Err(GpuError::Call {
                call: "cuMemAllocPitch",
                detail: format!("empty allocation ({row_bytes} bytes x {rows} rows)"),
            });
        }
        guarded("cuMemAllocPitch", || {
            let mut ptr: sys::CUdeviceptr = 0;
            let mut pitch: usize = 0;
            // Safety: this context is current on the thread (self); the out pointers are
            // live locals; 16 is a valid element size for the pitch alignment.
            unsafe { sys::cuMemAllocPitch_v2(&mut ptr, &mut pitch, row_bytes, rows, 16) }
                .result()
                .map_err(call_err("cuMemAllocPitch"))?;
            Ok(DevicePitched {
                ptr,
                pitch,
                row_bytes,
                rows,
                ctx: self.ctx.ctx,
            })
        })
    }
}

impl DevicePitched {
    /// Bytes between rows (at least [`DevicePitched::row_bytes`]).
    pub fn pitch(&self) -> usize {
        self.pitch
    }

    /// Usable bytes per row, as asked for.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Rows, as asked for.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The device address of row 0, for kernels and copies.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// Copies `rows` rows of `row_bytes` bytes from device memory at `src` (rows
    /// `src_pitch` bytes apart) into this buffer from row `dst_row` (`cuMemcpy2D`,
    /// synchronous).
    ///
    /// # Safety
    /// `src` must be device memory of this buffer's context, readable for
    /// `rows` rows of `row_bytes` bytes, `src_pitch` apart, for the duration of the call
    /// (for instance a picture mapped by `cuvidMapVideoFrame64`).
    pub unsafe fn copy_from_device(
        &mut self,
        src: u64,
        src_pitch: usize,
        row_bytes: usize,
        rows: usize,
        dst_row: usize,
    ) -> Result<(), GpuError> {
        self.check_region("cuMemcpy2D", row_bytes, rows, dst_row)?;
        let _pushed = push_context(self.ctx)?;
        guarded("cuMemcpy2D", || {
            let copy = sys::CUDA_MEMCPY2D {
                srcXInBytes: 0,
                srcY: 0,
                srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcHost: std::ptr::null(),
                srcDevice: src,
                srcArray: std::ptr::null_mut(),
                srcPitch: src_pitch,
                dstXInBytes: 0,
                dstY: dst_row,
                dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                dstHost: std::ptr::null_mut(),
                dstDevice: self.ptr,
                dstArray: std::ptr::null_mut(),
                dstPitch: self.pitch,
                WidthInBytes: row_bytes,
                Height: rows,
            };
            // Safety: the source region is valid (the caller's contract); the
            // destination region lies inside this allocation (check_region); the
            // buffer's context is current (pushed above).
            unsafe { sys::cuMemcpy2D_v2(&copy) }
                .result()
                .map_err(call_err("cuMemcpy2D"))
        })
    }

    /// Reads `rows` rows of `row_bytes` bytes from row `from_row` into host memory,
    /// tightly packed (`cuMemcpy2D`, synchronous).
    pub fn download(
        &self,
        row_bytes: usize,
        rows: usize,
        from_row: usize,
    ) -> Result<Vec<u8>, GpuError> {
        self.check_region("cuMemcpy2D", row_bytes, rows, from_row)?;
        let mut host = vec![0u8; row_bytes * rows];
        let _pushed = push_context(self.ctx)?;
        guarded("cuMemcpy2D", || {
            let copy = sys::CUDA_MEMCPY2D {
                srcXInBytes: 0,
                srcY: from_row,
                srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcHost: std::ptr::null(),
                srcDevice: self.ptr,
                srcArray: std::ptr::null_mut(),
                srcPitch: self.pitch,
                dstXInBytes: 0,
                dstY: 0,
                dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_HOST,
                dstHost: host.as_mut_ptr().cast(),
                dstDevice: 0,
                dstArray: std::ptr::null_mut(),
                dstPitch: row_bytes,
                WidthInBytes: row_bytes,
                Height: rows,
            };
            // Safety: the source region lies inside this allocation (check_region);
            // `host` holds exactly `rows * row_bytes` bytes and outlives the
            // synchronous copy; the buffer's context is current (pushed above).
            unsafe { sys::cuMemcpy2D_v2(&copy) }
                .result()
                .map_err(call_err("cuMemcpy2D"))
        })?;
        Ok(host)
    }

    fn check_region(
        &self,
        call: &'static str,
        row_bytes: usize,
        rows: usize,
        first_row: usize,
    ) -> Result<(), GpuError> {
        if row_bytes > self.row_bytes || first_row.saturating_add(rows) > self.rows {
            return Err(GpuError::Call {
                call,
                detail: format!(
                    "{rows} rows of {row_bytes} bytes from row {first_row} do not fit a \
                     buffer of {} rows of {} bytes",
                    self.rows, self.row_bytes
                ),
            });
        }
        Ok(())
    }
}

impl Drop for DevicePitched {
    fn drop(&mut self) {
        let Ok(_pushed) = push_context(self.ctx) else {
            return;
        };
        let _ = guarded("cuMemFree", || {
            // Safety: `ptr` came from cuMemAllocPitch in `ctx` (current again) and is
            // freed once, here.
            unsafe { sys::cuMemFree_v2(self.ptr) }
                .result()
                .map_err(call_err("cuMemFree"))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_names_it() {
        let e = open_library(LIBCUDA, &["/nonexistent/ladder-test/libcuda.so.1"]).unwrap_err();
        assert_eq!(e.library, "libcuda.so.1");
        assert_eq!(e.tried, vec!["/nonexistent/ladder-test/libcuda.so.1"]);
        let text = e.to_string();
        assert!(
            text.starts_with("libcuda.so.1 not found (tried /nonexistent/"),
            "{text}"
        );
        assert!(
            text.contains("No such file"),
            "dlerror's reason kept: {text}"
        );
    }

    #[test]
    fn driver_init_without_library_is_no_driver() {
        let e = Driver::init_from(&["/nonexistent/ladder-test/libcuda.so.1"]).unwrap_err();
        assert!(matches!(e, GpuError::NoDriver(_)), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("no NVIDIA driver: libcuda.so.1 not found"));
    }

    #[test]
    fn cudarc_panic_is_caught() {
        // A library that loads but is not the driver: the probe passes, then cudarc
        // looks for libcuda itself and (with no driver here) panics. That must come
        // back as an error, not unwind into the caller.
        if open_library(LIBCUDA, &[LIBCUDA]).is_ok() {
            eprintln!("skipped: libcuda.so.1 loads here, so cudarc would not panic");
            return;
        }
        let e = Driver::init_from(&["libm.so.6"]).unwrap_err();
        assert!(
            matches!(e, GpuError::Panicked { call: "cuInit", .. }),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("CUDA driver binding panicked in cuInit: "));
    }

    #[test]
    fn cuda_version_formats() {
        assert_eq!(CudaVersion(12040).to_string(), "12.4");
        assert_eq!(CudaVersion(12080).to_string(), "12.8");
        assert_eq!(CudaVersion(13000).to_string(), "13.0");
        assert_eq!(CudaVersion(11080).major(), 11);
    }
}
