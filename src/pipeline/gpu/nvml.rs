//! NVML (`libnvidia-ml.so.1`, the NVIDIA Management Library), loaded at run
//! time: what `ladder bench` reports of each GPU while it runs (decoder,
//! encoder and SM utilisation, memory in use).
//!
//! The library comes with the NVIDIA driver; it is opened with libloading and
//! its entry points looked up by name, so nothing links it at build time and
//! a box without it gets [`NvmlError::Library`] ("no NVML"), never a panic.
//! [`Nvml`] calls `nvmlInit_v2` when loaded and `nvmlShutdown` when dropped.
//! Devices are found by PCI bus id ([`Nvml::device_by_pci_bus_id`]), which is
//! how CUDA ordinals (what the rest of Ladder numbers GPUs by, from
//! `gpu::probe`) map to NVML's own order.
//!
//! Every entry point returns `nvmlReturn_t` taken as a plain `u32` (a driver
//! newer than this file may return a code it does not know). A reading a GPU
//! does not support (`NVML_ERROR_NOT_SUPPORTED`, e.g. the encoder of a GPU
//! without NVENC) is `None` in [`GpuSample`], not an error.
//!
//! Not run on hardware in this project's CI: the box that built it has no GPU.
//! What is tested here is the absent library and the pure parts.
//!
//! One of the FFI files (ARCHITECTURE.md, convention 7): every `unsafe` block
//! carries a `// Safety:` comment.

#![warn(missing_docs)]

use std::ffi::{c_char, c_uint, c_ulonglong, c_void, CStr, CString};

use libloading::Library;

use super::driver::{self, LibraryNotFound};

/// The NVML library's soname (installed by the NVIDIA driver).
pub const LIBNVML: &str = "libnvidia-ml.so.1";

/// `nvmlReturn_t` as the library returns it (0 is `NVML_SUCCESS`).
pub type NvmlReturn = u32;

/// `NVML_SUCCESS`.
const NVML_SUCCESS: NvmlReturn = 0;
/// `NVML_ERROR_NOT_SUPPORTED`: the device cannot report this.
const NVML_ERROR_NOT_SUPPORTED: NvmlReturn = 3;

/// Bytes for a device name (`NVML_DEVICE_NAME_V2_BUFFER_SIZE`).
const NAME_BUFFER: usize = 96;

/// Errors of the NVML layer.
#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    /// `libnvidia-ml.so.1` is missing: no NVIDIA driver (or a container
    /// without the driver's utility libraries).
    #[error("no NVML: {0}")]
    Library(#[from] LibraryNotFound),
    /// The library lacks an entry point this build needs (a driver too old).
    #[error("no NVML: {LIBNVML} has no {symbol} ({reason})")]
    Symbol {
        /// The missing function.
        symbol: &'static str,
        /// dlerror.
        reason: String,
    },
    /// A call returned an error.
    #[error("{call} failed: {message} (nvmlReturn_t {status})")]
    Call {
        /// The function called.
        call: &'static str,
        /// Its `nvmlReturn_t`.
        status: NvmlReturn,
        /// `nvmlErrorString`'s words.
        message: String,
    },
    /// A PCI bus id with a NUL byte in it.
    #[error("PCI bus id {0:?} is not a C string")]
    BusId(String),
}

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `nvmlDevice_t`: an opaque handle.
type Device = *mut c_void;

type Init = unsafe extern "C" fn() -> NvmlReturn;
type Shutdown = unsafe extern "C" fn() -> NvmlReturn;
type ErrorString = unsafe extern "C" fn(NvmlReturn) -> *const c_char;
type GetCount = unsafe extern "C" fn(*mut c_uint) -> NvmlReturn;
type GetHandleByIndex = unsafe extern "C" fn(c_uint, *mut Device) -> NvmlReturn;
type GetHandleByPciBusId = unsafe extern "C" fn(*const c_char, *mut Device) -> NvmlReturn;
type GetName = unsafe extern "C" fn(Device, *mut c_char, c_uint) -> NvmlReturn;
type GetUtilizationRates = unsafe extern "C" fn(Device, *mut Utilization) -> NvmlReturn;
type GetCodecUtilization = unsafe extern "C" fn(Device, *mut c_uint, *mut c_uint) -> NvmlReturn;
type GetMemoryInfo = unsafe extern "C" fn(Device, *mut Memory) -> NvmlReturn;

/// The entry points this build uses.
#[derive(Clone, Copy)]
struct Functions {
    init: Init,
    shutdown: Shutdown,
    error_string: ErrorString,
    get_count: GetCount,
    get_handle_by_index: GetHandleByIndex,
    get_handle_by_pci_bus_id: GetHandleByPciBusId,
    get_name: GetName,
    get_utilization_rates: GetUtilizationRates,
    get_encoder_utilization: GetCodecUtilization,
    get_decoder_utilization: GetCodecUtilization,
    get_memory_info: GetMemoryInfo,
}

/// NVML, loaded and initialised; shut down when dropped. The library stays
/// mapped while this lives, so the function pointers stay valid. NVML's
/// calls are thread-safe.
pub struct Nvml {
    fns: Functions,
    _lib: Library,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

/// Looks `name` (NUL-terminated) up in `lib` as a function of type `T`.
///
/// # Safety
/// `T` must be the function's true C signature.
unsafe fn symbol<T: Copy>(lib: &Library, name: &'static str) -> Result<T, NvmlError> {
    // Safety: forwarded to the caller (T is the true signature); the copied
    // pointer is only used while `lib` is kept alive (Nvml owns both).
    match unsafe { lib.get::<T>(name.as_bytes()) } {
        Ok(s) => Ok(*s),
        Err(e) => Err(NvmlError::Symbol {
            symbol: name.trim_end_matches('\0'),
            reason: driver::loader_reason(&e),
        }),
    }
}

/// The error for `call` returning `status`, with `nvmlErrorString`'s words.
/// `fns` must come from a library that is still loaded.
fn error_with(fns: &Functions, call: &'static str, status: NvmlReturn) -> NvmlError {
    // Safety: the library `fns` came from is loaded (both callers hold it);
    // nvmlErrorString accepts any value (unknown ones give a generic string),
    // needs no initialisation, and returns a pointer to a static,
    // NUL-terminated string (or null, checked), copied out at once.
    let message = unsafe {
        let p = (fns.error_string)(status);
        if p.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    NvmlError::Call {
        call,
        status,
        message,
    }
}

/// One reading of a GPU; `None` where the GPU cannot report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuSample {
    /// SM (graphics/compute) utilisation over the driver's last sample period, %.
    pub sm_percent: Option<u32>,
    /// NVENC utilisation, %.
    pub encoder_percent: Option<u32>,
    /// NVDEC utilisation, %.
    pub decoder_percent: Option<u32>,
    /// Device memory in use (every process), bytes.
    pub memory_used_bytes: Option<u64>,
    /// Device memory, bytes.
    pub memory_total_bytes: Option<u64>,
}

/// One GPU, borrowed from its [`Nvml`].
pub struct NvmlDevice<'a> {
    nvml: &'a Nvml,
    handle: Device,
}

impl std::fmt::Debug for NvmlDevice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvmlDevice")
    }
}

impl Nvml {
    /// Opens `libnvidia-ml.so.1`, looks up the entry points and initialises NVML.
    pub fn load() -> Result<Nvml, NvmlError> {
        Self::load_from(&[LIBNVML])
    }

    /// As [`Nvml::load`], trying `candidates` (paths or sonames).
    pub fn load_from(candidates: &[&str]) -> Result<Nvml, NvmlError> {
        let lib = driver::open_library(LIBNVML, candidates)?;
        // Safety: each type above is transcribed from nvml.h (the `_v2` entry
        // points of driver 450 and later), with nvmlReturn_t as u32 (same ABI as
        // the C enum), nvmlDevice_t as an opaque pointer, and the two structs
        // #[repr(C)] with the header's field types and order.
        let fns = unsafe {
            Functions {
                init: symbol(&lib, "nvmlInit_v2\0")?,
                shutdown: symbol(&lib, "nvmlShutdown\0")?,
                error_string: symbol(&lib, "nvmlErrorString\0")?,
                get_count: symbol(&lib, "nvmlDeviceGetCount_v2\0")?,
                get_handle_by_index: symbol(&lib, "nvmlDeviceGetHandleByIndex_v2\0")?,
                get_handle_by_pci_bus_id: symbol(&lib, "nvmlDeviceGetHandleByPciBusId_v2\0")?,
                get_name: symbol(&lib, "nvmlDeviceGetName\0")?,
                get_utilization_rates: symbol(&lib, "nvmlDeviceGetUtilizationRates\0")?,
                get_encoder_utilization: symbol(&lib, "nvmlDeviceGetEncoderUtilization\0")?,
                get_decoder_utilization: symbol(&lib, "nvmlDeviceGetDecoderUtilization\0")?,
                get_memory_info: symbol(&lib, "nvmlDeviceGetMemoryInfo\0")?,
            }
        };
        // Safety: nvmlInit_v2 takes no arguments and may be called from any
        // thread; the pointer is valid while `lib` is loaded (it is, here).
        let status = unsafe { (fns.init)() };
        if status != NVML_SUCCESS {
            // not initialised: nothing to shut down; `lib` is unloaded on return
            return Err(error_with(&fns, "nvmlInit_v2", status));
        }
        Ok(Nvml { fns, _lib: lib })
    }

    /// The error for `call` returning `status`, with NVML's words.
    fn error(&self, call: &'static str, status: NvmlReturn) -> NvmlError {
        error_with(&self.fns, call, status)
    }

    fn check(&self, call: &'static str, status: NvmlReturn) -> Result<(), NvmlError> {
        if status == NVML_SUCCESS {
            Ok(())
        } else {
            Err(self.error(call, status))
        }
    }

    /// GPUs NVML sees.
    pub fn device_count(&self) -> Result<u32, NvmlError> {
        let mut n: c_uint = 0;
        // Safety: NVML is initialised (self exists); `n` is a live c_uint.
        let status = unsafe { (self.fns.get_count)(&mut n) };
        self.check("nvmlDeviceGetCount_v2", status)?;
        Ok(n)
    }

    /// GPU `index` in NVML's order (not necessarily CUDA's).
    pub fn device_by_index(&self, index: u32) -> Result<NvmlDevice<'_>, NvmlError> {
        let mut handle: Device = std::ptr::null_mut();
        // Safety: NVML is initialised; `handle` is a live out-pointer; an index
        // out of range is an error return, not undefined behaviour.
        let status = unsafe { (self.fns.get_handle_by_index)(index, &mut handle) };
        self.check("nvmlDeviceGetHandleByIndex_v2", status)?;
        Ok(NvmlDevice { nvml: self, handle })
    }

    /// The GPU at PCI bus id `bus_id` (`0000:3B:00.0`, as
    /// `gpu::probe::GpuInfo::pci_bus_id` has it from CUDA).
    pub fn device_by_pci_bus_id(&self, bus_id: &str) -> Result<NvmlDevice<'_>, NvmlError> {
        let id = CString::new(bus_id).map_err(|_| NvmlError::BusId(bus_id.to_owned()))?;
        let mut handle: Device = std::ptr::null_mut();
        // Safety: NVML is initialised; `id` is a NUL-terminated string alive
        // for the call; `handle` is a live out-pointer.
        let status = unsafe { (self.fns.get_handle_by_pci_bus_id)(id.as_ptr(), &mut handle) };
        self.check("nvmlDeviceGetHandleByPciBusId_v2", status)?;
        Ok(NvmlDevice { nvml: self, handle })
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // Safety: NVML was initialised by `load_from` (an Nvml exists only
        // then); every device handle borrows self, so none outlives this.
        let _ = unsafe { (self.fns.shutdown)() };
    }
}

/// `Some(value)` on success, `None` when the device cannot report it, the
/// error otherwise.
fn optional<T>(
    nvml: &Nvml,
    call: &'static str,
    status: NvmlReturn,
    value: T,
) -> Result<Option<T>, NvmlError> {
    match status {
        NVML_SUCCESS => Ok(Some(value)),
        NVML_ERROR_NOT_SUPPORTED => Ok(None),
        other => Err(nvml.error(call, other)),
    }
}

impl NvmlDevice<'_> {
    /// The GPU's name (`NVIDIA H200`).
    pub fn name(&self) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; NAME_BUFFER];
        // Safety: the handle came from this NVML; `buf` is writable for its
        // whole length, which is what is passed; NVML NUL-terminates within it.
        let status = unsafe {
            (self.nvml.fns.get_name)(self.handle, buf.as_mut_ptr(), NAME_BUFFER as c_uint)
        };
        self.nvml.check("nvmlDeviceGetName", status)?;
        // the read below cannot run past the buffer, whatever NVML wrote
        buf[NAME_BUFFER - 1] = 0;
        // Safety: `buf` is NUL-terminated (its last byte at least) and lives
        // until the string is copied out.
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(name.to_string_lossy().into_owned())
    }

    /// Utilisation and memory now. Each reading a GPU does not support is
    /// `None`; any other failure is an error.
    pub fn sample(&self) -> Result<GpuSample, NvmlError> {
        let n = self.nvml;
        let mut util = Utilization::default();
        let (mut enc, mut dec, mut period) = (0 as c_uint, 0 as c_uint, 0 as c_uint);
        let mut mem = Memory::default();
        // Safety: the handle came from this NVML, which is initialised; every
        // out-pointer is a live local of the type the header declares.
        let (s_util, s_enc, s_dec, s_mem) = unsafe {
            (
                (n.fns.get_utilization_rates)(self.handle, &mut util),
                (n.fns.get_encoder_utilization)(self.handle, &mut enc, &mut period),
                (n.fns.get_decoder_utilization)(self.handle, &mut dec, &mut period),
                (n.fns.get_memory_info)(self.handle, &mut mem),
            )
        };
        let util = optional(n, "nvmlDeviceGetUtilizationRates", s_util, util)?;
        let memory = optional(n, "nvmlDeviceGetMemoryInfo", s_mem, mem)?;
        Ok(GpuSample {
            sm_percent: util.map(|u| u.gpu),
            encoder_percent: optional(n, "nvmlDeviceGetEncoderUtilization", s_enc, enc)?,
            decoder_percent: optional(n, "nvmlDeviceGetDecoderUtilization", s_dec, dec)?,
            memory_used_bytes: memory.map(|m| m.used),
            memory_total_bytes: memory.map(|m| m.total),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_no_nvml_not_a_panic() {
        let e = Nvml::load_from(&["/nonexistent/libnvidia-ml.so.1"]).unwrap_err();
        assert!(matches!(e, NvmlError::Library(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("no NVML: "), "{text}");
        assert!(text.contains(LIBNVML), "{text}");
    }

    #[test]
    fn a_library_without_the_entry_points_is_no_nvml() {
        // libc is loadable everywhere this runs and has no NVML symbol
        match Nvml::load_from(&["libc.so.6"]) {
            Err(NvmlError::Symbol { symbol, .. }) => assert_eq!(symbol, "nvmlInit_v2"),
            other => panic!("expected a missing symbol, got {other:?}"),
        }
    }

    #[test]
    fn the_structs_have_the_headers_layout() {
        assert_eq!(std::mem::size_of::<Utilization>(), 8);
        assert_eq!(std::mem::size_of::<Memory>(), 24);
    }
}
