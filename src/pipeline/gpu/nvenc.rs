//! NVENC (the Video Codec SDK's `nvEncodeAPI.h`), loaded at run time.
//!
//! `libnvidia-encode.so.1` comes with the NVIDIA driver. Only two symbols are looked up
//! by name: `NvEncodeAPIGetMaxSupportedVersion` (is the driver new enough for the API
//! version our structures are laid out for?) and `NvEncodeAPICreateInstance`, which
//! fills an `NV_ENCODE_API_FUNCTION_LIST` with every other entry point. Types come from
//! `nvidia_video_codec_sdk::sys` (SDK 12.1 headers, `ci-check`: nothing linked).
//!
//! [`Nvenc::probe`] opens a session on a CUDA context, lists the encode GUIDs, queries
//! the limits and closes the session. GPUs without an encoder (A100, H100, H200) refuse
//! the session; that is [`NvencProbe::Absent`], an answer, not an error.
//!
//! Entry points are called through signatures returning `NVENCSTATUS` as a plain `u32`
//! (same ABI as the C enum): a newer driver may return a status the bindings' Rust enum
//! lacks, and an out-of-range enum value would be undefined behaviour.
//!
//! One of the FFI files (ARCHITECTURE.md, convention 7): every `unsafe` block carries a
//! `// Safety:` comment.

use std::ffi::c_void;

use libloading::Library;
use nvidia_video_codec_sdk::sys::nvEncodeAPI as enc;
use serde::Serialize;

use super::driver::{self, CurrentContext, LibraryNotFound};

/// The NVENC library's soname (installed by the NVIDIA driver).
pub const LIBNVENC: &str = "libnvidia-encode.so.1";

/// `NVENCSTATUS` as the driver returns it (0 is `NV_ENC_SUCCESS`).
pub type NvencStatus = u32;

/// `NVENCAPI_VERSION`: `major | minor << 24` (nvEncodeAPI.h).
pub const fn nvencapi_version(major: u32, minor: u32) -> u32 {
    major | (minor << 24)
}

/// The API version our structure layouts follow: the SDK headers the bindings were
/// generated from (12.1).
pub const API_VERSION: u32 = nvencapi_version(API_MAJOR, API_MINOR);
/// Major version of [`API_VERSION`].
pub const API_MAJOR: u32 = 12;
/// Minor version of [`API_VERSION`].
pub const API_MINOR: u32 = 1;

/// `NVENCAPI_STRUCT_VERSION(ver)`: `NVENCAPI_VERSION | ver << 16 | 0x7 << 28`; every
/// NVENC structure's `version` field is this (some also set bit 31, see the header).
pub const fn nvencapi_struct_version(ver: u32) -> u32 {
    API_VERSION | (ver << 16) | (0x7 << 28)
}

/// `NV_ENCODE_API_FUNCTION_LIST_VER`.
pub const FUNCTION_LIST_VER: u32 = nvencapi_struct_version(2);
/// `NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER`.
pub const OPEN_ENCODE_SESSION_EX_PARAMS_VER: u32 = nvencapi_struct_version(1);
/// `NV_ENC_CAPS_PARAM_VER`.
pub const CAPS_PARAM_VER: u32 = nvencapi_struct_version(1);

/// `NvEncodeAPIGetMaxSupportedVersion` answers `major << 4 | minor`.
pub const fn split_max_supported_version(v: u32) -> (u32, u32) {
    (v >> 4, v & 0xf)
}

/// Errors of the NVENC layer.
#[derive(Debug, thiserror::Error)]
pub enum NvencError {
    /// `libnvidia-encode.so.1` is missing.
    #[error("{0}; NVENC unavailable (in a container, set NVIDIA_DRIVER_CAPABILITIES to include \"video\")")]
    Library(#[from] LibraryNotFound),
    /// The library lacks an entry point.
    #[error("{LIBNVENC} has no {symbol}: {reason}")]
    Symbol {
        /// The missing function.
        symbol: &'static str,
        /// dlerror.
        reason: String,
    },
    /// The driver's NVENC is older than the API these structures are laid out for.
    #[error("the NVIDIA driver supports NVENC API {driver_major}.{driver_minor}, Ladder needs {API_MAJOR}.{API_MINOR}: update the driver")]
    DriverTooOld {
        /// What the driver supports.
        driver_major: u32,
        /// What the driver supports.
        driver_minor: u32,
    },
    /// `NvEncodeAPICreateInstance` left an entry point we need empty.
    #[error("NVENC function list has no {0}")]
    MissingEntry(&'static str),
    /// An NVENC call returned an error.
    #[error("{call} failed: {}", status_name(*.status))]
    Call {
        /// The function called.
        call: &'static str,
        /// Its `NVENCSTATUS`.
        status: NvencStatus,
    },
}

/// The codecs Ladder can ask NVENC for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodeCodec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
    /// AV1 (Ada and newer).
    Av1,
}

impl EncodeCodec {
    /// In the order doctor lists them.
    pub const ALL: [EncodeCodec; 3] = [EncodeCodec::H264, EncodeCodec::Hevc, EncodeCodec::Av1];

    fn guid(self) -> enc::GUID {
        match self {
            EncodeCodec::H264 => enc::NV_ENC_CODEC_H264_GUID,
            EncodeCodec::Hevc => enc::NV_ENC_CODEC_HEVC_GUID,
            EncodeCodec::Av1 => enc::NV_ENC_CODEC_AV1_GUID,
        }
    }

    /// `h264`, `hevc`, `av1`.
    pub fn name(self) -> &'static str {
        match self {
            EncodeCodec::H264 => "h264",
            EncodeCodec::Hevc => "hevc",
            EncodeCodec::Av1 => "av1",
        }
    }
}

/// One codec NVENC offers on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncodeCodecCaps {
    /// The codec.
    pub codec: EncodeCodec,
    /// `NV_ENC_CAPS_WIDTH_MAX`.
    pub max_width: u32,
    /// `NV_ENC_CAPS_HEIGHT_MAX`.
    pub max_height: u32,
}

/// How many NVENC sessions may run at once, and how that was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionLimit {
    /// `unlimited` (datacenter and professional GPUs: no driver cap, only engine
    /// throughput) or `driver-capped` (GeForce: the driver caps concurrent sessions).
    pub kind: SessionLimitKind,
    /// How it was decided (there is no API for the cap).
    pub basis: String,
}

/// See [`SessionLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionLimitKind {
    /// No driver cap.
    Unlimited,
    /// The driver caps concurrent sessions (8 in current drivers, system-wide).
    DriverCapped,
}

/// NVENC has no query for the consumer session cap. The driver applies it to GeForce
/// (and TITAN) boards; datacenter and professional boards have none. So the device
/// name decides, and [`SessionLimit::basis`] says so.
pub fn session_limit(gpu_name: &str) -> SessionLimit {
    let lower = gpu_name.to_ascii_lowercase();
    if lower.contains("geforce") || lower.contains("titan") {
        SessionLimit {
            kind: SessionLimitKind::DriverCapped,
            basis: format!(
                "\"{gpu_name}\" is a GeForce-class name: the driver caps concurrent NVENC \
                 sessions (8 in current drivers, system-wide); no API reports the cap"
            ),
        }
    } else {
        SessionLimit {
            kind: SessionLimitKind::Unlimited,
            basis: format!(
                "\"{gpu_name}\" is not a GeForce-class name: datacenter and professional \
                 GPUs have no driver session cap (decided from the name; no API reports it)"
            ),
        }
    }
}

/// What NVENC offers on one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvencCaps {
    /// The codecs among [`EncodeCodec::ALL`] the GPU lists, with limits.
    pub codecs: Vec<EncodeCodecCaps>,
    /// `NV_ENC_CAPS_NUM_ENCODER_ENGINES`, when the driver answers it.
    pub engines: Option<u32>,
    /// The session limit.
    pub session_limit: SessionLimit,
}

/// The answer of [`Nvenc::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvencProbe {
    /// The GPU has an encoder.
    Present(NvencCaps),
    /// The GPU has none: opening a session was refused with this status.
    Absent {
        /// The refusal, e.g. `NV_ENC_ERR_UNSUPPORTED_DEVICE (2)`.
        status: String,
    },
}

/// Statuses with which `nvEncOpenEncodeSessionEx` refuses a GPU that has no encoder.
/// GPUs without NVENC answer `NV_ENC_ERR_UNSUPPORTED_DEVICE (2)` in public reports
/// (FFmpeg's "OpenEncodeSessionEx failed: unsupported device (2)" on a P106-100,
/// HandBrake/HandBrake#1998); 1, 3, 4 and 5 name the same condition. Not verified on an
/// A100/H100/H200 here (no GPU on the build machine).
pub fn means_no_encoder(status: NvencStatus) -> bool {
    matches!(status, 1..=5)
}

/// `NV_ENC_ERR_UNSUPPORTED_DEVICE (2)`: statuses by name (nvEncodeAPI.h), others by
/// number.
pub fn status_name(status: NvencStatus) -> String {
    const NAMES: [&str; 27] = [
        "NV_ENC_SUCCESS",
        "NV_ENC_ERR_NO_ENCODE_DEVICE",
        "NV_ENC_ERR_UNSUPPORTED_DEVICE",
        "NV_ENC_ERR_INVALID_ENCODERDEVICE",
        "NV_ENC_ERR_INVALID_DEVICE",
        "NV_ENC_ERR_DEVICE_NOT_EXIST",
        "NV_ENC_ERR_INVALID_PTR",
        "NV_ENC_ERR_INVALID_EVENT",
        "NV_ENC_ERR_INVALID_PARAM",
        "NV_ENC_ERR_INVALID_CALL",
        "NV_ENC_ERR_OUT_OF_MEMORY",
        "NV_ENC_ERR_ENCODER_NOT_INITIALIZED",
        "NV_ENC_ERR_UNSUPPORTED_PARAM",
        "NV_ENC_ERR_LOCK_BUSY",
        "NV_ENC_ERR_NOT_ENOUGH_BUFFER",
        "NV_ENC_ERR_INVALID_VERSION",
        "NV_ENC_ERR_MAP_FAILED",
        "NV_ENC_ERR_NEED_MORE_INPUT",
        "NV_ENC_ERR_ENCODER_BUSY",
        "NV_ENC_ERR_EVENT_NOT_REGISTERD",
        "NV_ENC_ERR_GENERIC",
        "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY",
        "NV_ENC_ERR_UNIMPLEMENTED",
        "NV_ENC_ERR_RESOURCE_REGISTER_FAILED",
        "NV_ENC_ERR_RESOURCE_NOT_REGISTERED",
        "NV_ENC_ERR_RESOURCE_NOT_MAPPED",
        "NV_ENC_ERR_NEED_MORE_OUTPUT",
    ];
    match NAMES.get(status as usize) {
        Some(name) => format!("{name} ({status})"),
        None => format!("NVENCSTATUS {status}"),
    }
}

type GetMaxSupportedVersion = unsafe extern "C" fn(*mut u32) -> NvencStatus;
type CreateInstance = unsafe extern "C" fn(*mut enc::NV_ENCODE_API_FUNCTION_LIST) -> NvencStatus;
type OpenEncodeSessionEx = unsafe extern "C" fn(
    *mut enc::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS,
    *mut *mut c_void,
) -> NvencStatus;
type GetEncodeGuidCount = unsafe extern "C" fn(*mut c_void, *mut u32) -> NvencStatus;
type GetEncodeGuids =
    unsafe extern "C" fn(*mut c_void, *mut enc::GUID, u32, *mut u32) -> NvencStatus;
type GetEncodeCaps = unsafe extern "C" fn(
    *mut c_void,
    enc::GUID,
    *mut enc::NV_ENC_CAPS_PARAM,
    *mut std::ffi::c_int,
) -> NvencStatus;
type DestroyEncoder = unsafe extern "C" fn(*mut c_void) -> NvencStatus;

/// The entry points the probe uses, taken from the function list with `NVENCSTATUS`
/// returned as `u32`.
#[derive(Clone, Copy)]
struct Functions {
    open_encode_session_ex: OpenEncodeSessionEx,
    get_encode_guid_count: GetEncodeGuidCount,
    get_encode_guids: GetEncodeGuids,
    get_encode_caps: GetEncodeCaps,
    destroy_encoder: DestroyEncoder,
}

/// `libnvidia-encode.so.1`, loaded, with its function list. The library stays mapped
/// while this lives, so the function pointers stay valid.
pub struct Nvenc {
    fns: Functions,
    /// The driver's `NvEncodeAPIGetMaxSupportedVersion`, split (major, minor).
    pub max_supported: (u32, u32),
    _lib: Library,
}

impl std::fmt::Debug for Nvenc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvenc")
            .field("max_supported", &self.max_supported)
            .finish_non_exhaustive()
    }
}

/// The function type inside the bindings' `Option<unsafe extern "C" fn ...>` entries.
trait Entry {
    type Fn;
}

impl<F> Entry for Option<F> {
    type Fn = F;
}

/// Takes entry `$field` (bindings type `$sdk`) out of the function list, as `$ty`: the
/// same signature returning `u32`.
macro_rules! entry {
    ($list:expr, $field:ident, $sdk:ty, $ty:ty) => {
        match $list.$field {
            // Safety: `<$sdk as Entry>::Fn` and `$ty` differ only in the return type,
            // `NVENCSTATUS` (a `#[repr(u32)]` enum) against `u32`: the same ABI.
            Some(f) => unsafe { std::mem::transmute::<<$sdk as Entry>::Fn, $ty>(f) },
            None => return Err(NvencError::MissingEntry(stringify!($field))),
        }
    };
}

impl Nvenc {
    /// Opens `libnvidia-encode.so.1`, checks the driver's API version and fills the
    /// function list.
    pub fn load() -> Result<Nvenc, NvencError> {
        Self::load_from(&[LIBNVENC])
    }

    /// As [`Nvenc::load`], trying `candidates` (paths or sonames).
    pub fn load_from(candidates: &[&str]) -> Result<Nvenc, NvencError> {
        let lib = driver::open_library(LIBNVENC, candidates)?;
        let missing = |symbol: &'static str| {
            move |e: libloading::Error| NvencError::Symbol {
                symbol,
                reason: driver::loader_reason(&e),
            }
        };
        // Safety: the types are nvEncodeAPI.h's signatures of these two exported
        // functions, with NVENCSTATUS as u32; the pointers are used only while `lib`
        // lives (Nvenc owns it).
        let (get_max, create): (GetMaxSupportedVersion, CreateInstance) = unsafe {
            let get_max = lib
                .get::<GetMaxSupportedVersion>(b"NvEncodeAPIGetMaxSupportedVersion\0")
                .map_err(missing("NvEncodeAPIGetMaxSupportedVersion"))?;
            let create = lib
                .get::<CreateInstance>(b"NvEncodeAPICreateInstance\0")
                .map_err(missing("NvEncodeAPICreateInstance"))?;
            (*get_max, *create)
        };

        let mut max = 0u32;
        // Safety: `max` is a live u32 for the out parameter.
        let status = unsafe { get_max(&mut max) };
        if status != 0 {
            return Err(NvencError::Call {
                call: "NvEncodeAPIGetMaxSupportedVersion",
                status,
            });
        }
        let (driver_major, driver_minor) = split_max_supported_version(max);
        if (driver_major, driver_minor) < (API_MAJOR, API_MINOR) {
            return Err(NvencError::DriverTooOld {
                driver_major,
                driver_minor,
            });
        }

        // Safety: NV_ENCODE_API_FUNCTION_LIST is plain data (u32s, Option<fn> and raw
        // pointers); all-zero is a valid value of each (0, None, null).
        let mut list: enc::NV_ENCODE_API_FUNCTION_LIST = unsafe { std::mem::zeroed() };
        list.version = FUNCTION_LIST_VER;
        // Safety: `list` is a live, zeroed function list with its version set, as
        // NvEncodeAPICreateInstance requires.
        let status = unsafe { create(&mut list) };
        if status != 0 {
            return Err(NvencError::Call {
                call: "NvEncodeAPICreateInstance",
                status,
            });
        }
        let fns = Functions {
            open_encode_session_ex: entry!(
                list,
                nvEncOpenEncodeSessionEx,
                enc::PNVENCOPENENCODESESSIONEX,
                OpenEncodeSessionEx
            ),
            get_encode_guid_count: entry!(
                list,
                nvEncGetEncodeGUIDCount,
                enc::PNVENCGETENCODEGUIDCOUNT,
                GetEncodeGuidCount
            ),
            get_encode_guids: entry!(
                list,
                nvEncGetEncodeGUIDs,
                enc::PNVENCGETENCODEGUIDS,
                GetEncodeGuids
            ),
            get_encode_caps: entry!(
                list,
                nvEncGetEncodeCaps,
                enc::PNVENCGETENCODECAPS,
                GetEncodeCaps
            ),
            destroy_encoder: entry!(
                list,
                nvEncDestroyEncoder,
                enc::PNVENCDESTROYENCODER,
                DestroyEncoder
            ),
        };
        Ok(Nvenc {
            fns,
            max_supported: (driver_major, driver_minor),
            _lib: lib,
        })
    }

    /// Opens a session on the current CUDA context; `Ok(Err(status))` when the GPU
    /// has no encoder.
    fn open_session<'a>(
        &'a self,
        current: &'a CurrentContext<'_>,
    ) -> Result<Result<Session<'a>, NvencStatus>, NvencError> {
        let mut params = open_session_params(current.raw());
        let mut encoder: *mut c_void = std::ptr::null_mut();
        // Safety: `params` is a live struct with its version, device type and the
        // current CUDA context set; `encoder` is a live out pointer; the function
        // pointer is valid while `self._lib` is loaded.
        let status = unsafe { (self.fns.open_encode_session_ex)(&mut params, &mut encoder) };
        if status == 0 && !encoder.is_null() {
            return Ok(Ok(Session { api: self, encoder }));
        }
        // On failure the handle is not used (FFmpeg's nvenc does the same).
        if means_no_encoder(status) {
            Ok(Err(status))
        } else {
            Err(NvencError::Call {
                call: "nvEncOpenEncodeSessionEx",
                status,
            })
        }
    }

    /// Encoder presence, codecs, limits and engine count of the GPU whose context is
    /// current. Opens one session and closes it before returning.
    pub fn probe(
        &self,
        current: &CurrentContext<'_>,
        gpu_name: &str,
    ) -> Result<NvencProbe, NvencError> {
        let session = match self.open_session(current)? {
            Ok(session) => session,
            Err(status) => {
                return Ok(NvencProbe::Absent {
                    status: status_name(status),
                })
            }
        };
        let guids = session.encode_guids()?;
        let mut codecs = Vec::new();
        for codec in EncodeCodec::ALL {
            if guids.contains(&codec.guid()) {
                codecs.push(EncodeCodecCaps {
                    codec,
                    max_width: session.cap(codec, enc::NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MAX)?,
                    max_height: session.cap(codec, enc::NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MAX)?,
                });
            }
        }
        // Older drivers do not know the query: then the count is unknown, not an error.
        let engines = codecs.first().and_then(|c| {
            session
                .cap(c.codec, enc::NV_ENC_CAPS::NV_ENC_CAPS_NUM_ENCODER_ENGINES)
                .ok()
                .filter(|&n| n > 0)
        });
        Ok(NvencProbe::Present(NvencCaps {
            codecs,
            engines,
            session_limit: session_limit(gpu_name),
        }))
    }
}

/// `NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS` for a CUDA context.
fn open_session_params(cuda_context: *mut c_void) -> enc::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {
    enc::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS {
        version: OPEN_ENCODE_SESSION_EX_PARAMS_VER,
        deviceType: enc::NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA,
        device: cuda_context,
        reserved: std::ptr::null_mut(),
        apiVersion: API_VERSION,
        reserved1: [0; 253],
        reserved2: [std::ptr::null_mut(); 64],
    }
}

/// `NV_ENC_CAPS_PARAM` asking for `cap`.
fn caps_param(cap: enc::NV_ENC_CAPS) -> enc::NV_ENC_CAPS_PARAM {
    enc::NV_ENC_CAPS_PARAM {
        version: CAPS_PARAM_VER,
        capsToQuery: cap,
        reserved: [0; 62],
    }
}

/// An open encode session; destroyed on drop.
struct Session<'a> {
    api: &'a Nvenc,
    encoder: *mut c_void,
}

impl Session<'_> {
    /// `nvEncGetEncodeGUIDCount` + `nvEncGetEncodeGUIDs`.
    fn encode_guids(&self) -> Result<Vec<enc::GUID>, NvencError> {
        let mut count = 0u32;
        // Safety: `self.encoder` is an open session; `count` is a live out pointer.
        let status = unsafe { (self.api.fns.get_encode_guid_count)(self.encoder, &mut count) };
        if status != 0 {
            return Err(NvencError::Call {
                call: "nvEncGetEncodeGUIDCount",
                status,
            });
        }
        let mut guids = vec![enc::NV_ENC_CODEC_H264_GUID; count as usize];
        let mut written = 0u32;
        // Safety: `guids` has room for `count` GUIDs and that size is passed; `written`
        // is a live out pointer; the session is open.
        let status = unsafe {
            (self.api.fns.get_encode_guids)(self.encoder, guids.as_mut_ptr(), count, &mut written)
        };
        if status != 0 {
            return Err(NvencError::Call {
                call: "nvEncGetEncodeGUIDs",
                status,
            });
        }
        guids.truncate(written.min(count) as usize);
        Ok(guids)
    }

    /// `nvEncGetEncodeCaps` for one capability of one codec.
    fn cap(&self, codec: EncodeCodec, cap: enc::NV_ENC_CAPS) -> Result<u32, NvencError> {
        let mut param = caps_param(cap);
        let mut value: std::ffi::c_int = 0;
        // Safety: the session is open; `param` has its version and query set; `value`
        // is a live out pointer.
        let status = unsafe {
            (self.api.fns.get_encode_caps)(self.encoder, codec.guid(), &mut param, &mut value)
        };
        if status != 0 {
            return Err(NvencError::Call {
                call: "nvEncGetEncodeCaps",
                status,
            });
        }
        Ok(u32::try_from(value).unwrap_or(0))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Safety: `self.encoder` is an open session, destroyed exactly once here.
        let _ = unsafe { (self.api.fns.destroy_encoder)(self.encoder) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_matches_header() {
        // nvEncodeAPI.h 12.1: NVENCAPI_VERSION = 12 | 1 << 24.
        assert_eq!(API_VERSION, 0x0100_000C);
        assert_eq!(API_VERSION, enc::NVENCAPI_VERSION);
        assert_eq!(API_MAJOR, enc::NVENCAPI_MAJOR_VERSION);
        assert_eq!(API_MINOR, enc::NVENCAPI_MINOR_VERSION);
    }

    #[test]
    fn struct_versions_match_header() {
        // NVENCAPI_STRUCT_VERSION(ver) = NVENCAPI_VERSION | ver << 16 | 0x7 << 28
        assert_eq!(nvencapi_struct_version(1), 0x7101_000C);
        assert_eq!(FUNCTION_LIST_VER, 0x7102_000C);
        assert_eq!(FUNCTION_LIST_VER, enc::NV_ENCODE_API_FUNCTION_LIST_VER);
        assert_eq!(
            OPEN_ENCODE_SESSION_EX_PARAMS_VER,
            enc::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER
        );
        assert_eq!(CAPS_PARAM_VER, enc::NV_ENC_CAPS_PARAM_VER);
        // A structure with bit 31 set in the header, built from ours.
        assert_eq!(
            nvencapi_struct_version(8) | (1 << 31),
            enc::NV_ENC_CONFIG_VER
        );
    }

    #[test]
    fn max_supported_version_splits() {
        assert_eq!(split_max_supported_version(0xC1), (12, 1));
        assert_eq!(split_max_supported_version(0xD0), (13, 0));
        assert!(split_max_supported_version(0xC0) < (API_MAJOR, API_MINOR));
    }

    #[test]
    fn session_params_for_cuda() {
        let p = open_session_params(std::ptr::null_mut());
        assert_eq!(p.version, 0x7101_000C);
        assert_eq!(p.deviceType as u32, 1, "NV_ENC_DEVICE_TYPE_CUDA");
        assert_eq!(p.apiVersion, API_VERSION);
        let c = caps_param(enc::NV_ENC_CAPS::NV_ENC_CAPS_NUM_ENCODER_ENGINES);
        assert_eq!(c.capsToQuery as u32, 49);
        assert_eq!(c.version, CAPS_PARAM_VER);
    }

    #[test]
    fn function_list_layout() {
        // nvEncodeAPI.h 12.1: version and reserved (u32 each), 42 entry points and
        // reserved1 (43 pointers), reserved2[275]: the size the driver fills for
        // NV_ENCODE_API_FUNCTION_LIST_VER (version 2).
        assert_eq!(
            std::mem::size_of::<enc::NV_ENCODE_API_FUNCTION_LIST>(),
            8 + 8 * (43 + 275)
        );
    }

    #[test]
    fn no_encoder_statuses() {
        assert!(means_no_encoder(1));
        assert!(means_no_encoder(2));
        assert!(!means_no_encoder(0));
        assert!(
            !means_no_encoder(10),
            "out of memory is an error, not absence"
        );
        assert_eq!(status_name(2), "NV_ENC_ERR_UNSUPPORTED_DEVICE (2)");
        assert_eq!(status_name(99), "NVENCSTATUS 99");
    }

    #[test]
    fn session_limit_by_name() {
        let g = session_limit("NVIDIA GeForce RTX 4090");
        assert_eq!(g.kind, SessionLimitKind::DriverCapped);
        assert!(g.basis.contains("GeForce-class"));
        assert_eq!(session_limit("NVIDIA L4").kind, SessionLimitKind::Unlimited);
        assert_eq!(
            session_limit("NVIDIA RTX A6000").kind,
            SessionLimitKind::Unlimited
        );
        assert_eq!(
            session_limit("NVIDIA TITAN RTX").kind,
            SessionLimitKind::DriverCapped
        );
    }

    #[test]
    fn missing_library_names_it() {
        let e = Nvenc::load_from(&["/nonexistent/ladder-test/libnvidia-encode.so.1"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("libnvidia-encode.so.1 not found (tried /nonexistent/"),
            "{text}"
        );
    }
}
