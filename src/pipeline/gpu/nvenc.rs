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
use std::sync::Arc;

use libloading::Library;
use nvidia_video_codec_sdk::sys::nvEncodeAPI as enc;
use serde::Serialize;

use super::driver::{self, CurrentContext, LibraryNotFound};
use super::scale::DeviceNv12Buffer;

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
    /// An NVENC call returned an error and the driver said why
    /// (`nvEncGetLastErrorString`).
    #[error("{call} failed: {} ({detail})", status_name(*.status))]
    CallDetail {
        /// The function called.
        call: &'static str,
        /// Its `NVENCSTATUS`.
        status: NvencStatus,
        /// The driver's words.
        detail: String,
    },
    /// The GPU has no encoder: the session was refused.
    #[error("no NVENC on this GPU: nvEncOpenEncodeSessionEx refused with {}", status_name(*.0))]
    NoEncoder(NvencStatus),
    /// A session used more slots (inputs or outputs) than it has.
    #[error("NVENC session has no {what} {index}")]
    NoSuchBuffer {
        /// `input` or `bitstream`.
        what: &'static str,
        /// The index asked for.
        index: usize,
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
type GetEncodePresetConfigEx = unsafe extern "C" fn(
    *mut c_void,
    enc::GUID,
    enc::GUID,
    enc::NV_ENC_TUNING_INFO,
    *mut enc::NV_ENC_PRESET_CONFIG,
) -> NvencStatus;
type InitializeEncoder =
    unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_INITIALIZE_PARAMS) -> NvencStatus;
type CreateBitstreamBuffer =
    unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_CREATE_BITSTREAM_BUFFER) -> NvencStatus;
type WithPointer = unsafe extern "C" fn(*mut c_void, *mut c_void) -> NvencStatus;
type EncodePicture = unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_PIC_PARAMS) -> NvencStatus;
type LockBitstream =
    unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_LOCK_BITSTREAM) -> NvencStatus;
type GetSequenceParams =
    unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_SEQUENCE_PARAM_PAYLOAD) -> NvencStatus;
type MapInputResource =
    unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_MAP_INPUT_RESOURCE) -> NvencStatus;
type RegisterResource =
    unsafe extern "C" fn(*mut c_void, *mut enc::NV_ENC_REGISTER_RESOURCE) -> NvencStatus;
type GetLastErrorString = unsafe extern "C" fn(*mut c_void) -> *const std::ffi::c_char;

/// The entry points the probe uses, taken from the function list with `NVENCSTATUS`
/// returned as `u32`.
#[derive(Clone, Copy)]
struct Functions {
    open_encode_session_ex: OpenEncodeSessionEx,
    get_encode_guid_count: GetEncodeGuidCount,
    get_encode_guids: GetEncodeGuids,
    get_encode_caps: GetEncodeCaps,
    destroy_encoder: DestroyEncoder,
    // Encoding (`EncodeSession`).
    get_encode_preset_config_ex: GetEncodePresetConfigEx,
    initialize_encoder: InitializeEncoder,
    create_bitstream_buffer: CreateBitstreamBuffer,
    destroy_bitstream_buffer: WithPointer,
    encode_picture: EncodePicture,
    lock_bitstream: LockBitstream,
    unlock_bitstream: WithPointer,
    get_sequence_params: GetSequenceParams,
    map_input_resource: MapInputResource,
    unmap_input_resource: WithPointer,
    register_resource: RegisterResource,
    unregister_resource: WithPointer,
    get_last_error_string: Option<GetLastErrorString>,
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
            get_encode_preset_config_ex: entry!(
                list,
                nvEncGetEncodePresetConfigEx,
                enc::PNVENCGETENCODEPRESETCONFIGEX,
                GetEncodePresetConfigEx
            ),
            initialize_encoder: entry!(
                list,
                nvEncInitializeEncoder,
                enc::PNVENCINITIALIZEENCODER,
                InitializeEncoder
            ),
            create_bitstream_buffer: entry!(
                list,
                nvEncCreateBitstreamBuffer,
                enc::PNVENCCREATEBITSTREAMBUFFER,
                CreateBitstreamBuffer
            ),
            destroy_bitstream_buffer: entry!(
                list,
                nvEncDestroyBitstreamBuffer,
                enc::PNVENCDESTROYBITSTREAMBUFFER,
                WithPointer
            ),
            encode_picture: entry!(
                list,
                nvEncEncodePicture,
                enc::PNVENCENCODEPICTURE,
                EncodePicture
            ),
            lock_bitstream: entry!(
                list,
                nvEncLockBitstream,
                enc::PNVENCLOCKBITSTREAM,
                LockBitstream
            ),
            unlock_bitstream: entry!(
                list,
                nvEncUnlockBitstream,
                enc::PNVENCUNLOCKBITSTREAM,
                WithPointer
            ),
            get_sequence_params: entry!(
                list,
                nvEncGetSequenceParams,
                enc::PNVENCGETSEQUENCEPARAMS,
                GetSequenceParams
            ),
            map_input_resource: entry!(
                list,
                nvEncMapInputResource,
                enc::PNVENCMAPINPUTRESOURCE,
                MapInputResource
            ),
            unmap_input_resource: entry!(
                list,
                nvEncUnmapInputResource,
                enc::PNVENCUNMAPINPUTRESOURCE,
                WithPointer
            ),
            register_resource: entry!(
                list,
                nvEncRegisterResource,
                enc::PNVENCREGISTERRESOURCE,
                RegisterResource
            ),
            unregister_resource: entry!(
                list,
                nvEncUnregisterResource,
                enc::PNVENCUNREGISTERRESOURCE,
                WithPointer
            ),
            get_last_error_string: list.nvEncGetLastErrorString,
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

// ---------------------------------------------------------------------------
// Encoding sessions
// ---------------------------------------------------------------------------

/// `NV_ENC_*_VER` of the structures an encode session passes (nvEncodeAPI.h).
pub mod versions {
    use super::nvencapi_struct_version as v;
    pub const PRESET_CONFIG: u32 = v(4) | (1 << 31);
    pub const CONFIG: u32 = v(8) | (1 << 31);
    pub const RC_PARAMS: u32 = v(1);
    pub const INITIALIZE_PARAMS: u32 = v(6) | (1 << 31);
    pub const PIC_PARAMS: u32 = v(6) | (1 << 31);
    pub const LOCK_BITSTREAM: u32 = v(1) | (1 << 31);
    pub const CREATE_BITSTREAM_BUFFER: u32 = v(1);
    pub const REGISTER_RESOURCE: u32 = v(4);
    pub const MAP_INPUT_RESOURCE: u32 = v(4);
    /// The header says `NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER` (`v(1)`).
    pub const SEQUENCE_PARAM_PAYLOAD: u32 = v(1);
}

/// An all-zero `NV_ENC_CONFIG` but for `frameFieldMode`, whose enum has no
/// zero (`NV_ENC_PARAMS_FRAME_FIELD_MODE_FRAME`): the base that parameter
/// building starts from when no driver preset is at hand (tests).
pub fn blank_config() -> enc::NV_ENC_CONFIG {
    let mut c = std::mem::MaybeUninit::<enc::NV_ENC_CONFIG>::zeroed();
    // Safety: every field of NV_ENC_CONFIG (nested structs and the codec
    // union included) is an integer, a GUID, a raw pointer or an enum with a
    // zero variant, for which all-zero is valid, except `frameFieldMode`,
    // written here before `assume_init`.
    unsafe {
        std::ptr::addr_of_mut!((*c.as_mut_ptr()).frameFieldMode)
            .write(enc::NV_ENC_PARAMS_FRAME_FIELD_MODE::NV_ENC_PARAMS_FRAME_FIELD_MODE_FRAME);
        c.assume_init()
    }
}

/// The H.264 member of an H.264 configuration's codec union.
pub fn h264_config_mut(cfg: &mut enc::NV_ENC_CONFIG) -> &mut enc::NV_ENC_CONFIG_H264 {
    // Safety: the configurations built here are H.264 ones: the driver's H.264
    // preset configuration, which fills `h264Config`, or `blank_config`, whose
    // all-zero union is a valid NV_ENC_CONFIG_H264 (integers, pointers and
    // enums with a zero variant only).
    unsafe { &mut cfg.encodeCodecConfig.h264Config }
}

/// Read-only [`h264_config_mut`].
pub fn h264_config(cfg: &enc::NV_ENC_CONFIG) -> &enc::NV_ENC_CONFIG_H264 {
    // Safety: as in `h264_config_mut`.
    unsafe { &cfg.encodeCodecConfig.h264Config }
}

/// An all-zero `NV_ENC_INITIALIZE_PARAMS` (every enum in it has a zero
/// variant).
pub fn blank_initialize_params() -> enc::NV_ENC_INITIALIZE_PARAMS {
    // Safety: integers, GUIDs, raw pointers, bitfield bytes and enums with a
    // zero variant (tuning info, buffer format, output stats level).
    unsafe { std::mem::zeroed() }
}

/// An all-zero `NV_ENC_PIC_PARAMS` but for `pictureStruct` (no zero
/// variant): `NV_ENC_PIC_STRUCT_FRAME`.
pub fn blank_pic_params() -> enc::NV_ENC_PIC_PARAMS {
    let mut p = std::mem::MaybeUninit::<enc::NV_ENC_PIC_PARAMS>::zeroed();
    // Safety: every other field is an integer, pointer, array of those or an
    // enum with a zero variant (the codec union's members likewise);
    // `pictureStruct` is written before `assume_init`.
    unsafe {
        std::ptr::addr_of_mut!((*p.as_mut_ptr()).pictureStruct)
            .write(enc::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME);
        p.assume_init()
    }
}

/// What `nvEncEncodePicture` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeStatus {
    /// Output is ready for every picture submitted so far.
    Ready,
    /// `NV_ENC_ERR_NEED_MORE_INPUT`: the encoder holds the picture; its output
    /// comes with a later one.
    NeedMoreInput,
}

/// One locked-and-copied output of the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitstreamOut {
    /// The access unit as NVENC writes it: Annex B.
    pub data: Vec<u8>,
    /// `NV_ENC_PIC_TYPE` as the driver wrote it (3 is IDR).
    pub picture_type: u32,
    /// The `inputTimeStamp` the picture was submitted with.
    pub timestamp: u64,
}

/// `NV_ENC_PIC_TYPE_IDR`.
pub const PIC_TYPE_IDR: u32 = enc::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_IDR as u32;
/// `NV_ENC_PIC_TYPE_B`.
pub const PIC_TYPE_B: u32 = enc::NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_B as u32;
/// `NV_ENC_ERR_NEED_MORE_INPUT`.
pub const NEED_MORE_INPUT: NvencStatus = 17;

/// A registered input: the device NV12 buffer (owned here, so it outlives
/// its registration) and its NVENC handles.
struct Registered {
    buffer: DeviceNv12Buffer,
    handle: *mut c_void,
    /// `mappedResource` while mapped.
    mapped: Option<*mut c_void>,
}

/// An NVENC session opened for encoding on a CUDA context. It owns the session
/// and everything made in it: registered inputs (with their device buffers)
/// and bitstream buffers. Dropping it unmaps, unregisters and destroys them,
/// then the session, in that order (nvEncodeAPI.h: resources are released
/// before `nvEncDestroyEncoder`).
///
/// NVENC calls made with a CUDA device need that context current on the
/// calling thread; the caller ([`super::encode::NvencEncoder`]) binds it.
pub struct EncodeSession {
    api: Arc<Nvenc>,
    encoder: *mut c_void,
    inputs: Vec<Registered>,
    bitstreams: Vec<*mut c_void>,
}

// Safety: an NVENC session has no thread affinity (the SDK's samples drive one
// from any thread with the CUDA context current); every call goes through
// `&mut self` or `&self` of one owner, and the type is not `Sync`.
unsafe impl Send for EncodeSession {}

impl std::fmt::Debug for EncodeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeSession")
            .field("inputs", &self.inputs.len())
            .field("bitstreams", &self.bitstreams.len())
            .finish_non_exhaustive()
    }
}

impl Nvenc {
    /// Opens an encode session on `cuda_context` (a `CUcontext`, current on
    /// this thread). A GPU without an encoder answers [`NvencError::NoEncoder`].
    pub fn open_encode_session(
        self: &Arc<Self>,
        cuda_context: *mut c_void,
    ) -> Result<EncodeSession, NvencError> {
        let mut params = open_session_params(cuda_context);
        let mut encoder: *mut c_void = std::ptr::null_mut();
        // Safety: as in `open_session`: a live, versioned params struct with
        // the caller's CUDA context, and a live out pointer.
        let status = unsafe { (self.fns.open_encode_session_ex)(&mut params, &mut encoder) };
        if status == 0 && !encoder.is_null() {
            return Ok(EncodeSession {
                api: self.clone(),
                encoder,
                inputs: Vec::new(),
                bitstreams: Vec::new(),
            });
        }
        if means_no_encoder(status) {
            Err(NvencError::NoEncoder(status))
        } else {
            Err(NvencError::Call {
                call: "nvEncOpenEncodeSessionEx",
                status,
            })
        }
    }
}

impl EncodeSession {
    /// The error for a failed call, with the driver's explanation when it has one.
    fn fail(&self, call: &'static str, status: NvencStatus) -> NvencError {
        let detail = self.api.fns.get_last_error_string.and_then(|f| {
            // Safety: the session is open; the driver returns a NUL-terminated
            // string it owns (or null), read at once.
            let p = unsafe { f(self.encoder) };
            // Safety: non-null, NUL-terminated (the function's contract).
            (!p.is_null()).then(|| {
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            })
        });
        match detail.filter(|d| !d.is_empty()) {
            Some(detail) => NvencError::CallDetail {
                call,
                status,
                detail,
            },
            None => NvencError::Call { call, status },
        }
    }

    fn check(&self, call: &'static str, status: NvencStatus) -> Result<(), NvencError> {
        if status == 0 {
            Ok(())
        } else {
            Err(self.fail(call, status))
        }
    }

    /// `nvEncGetEncodePresetConfigEx`: the driver's configuration for a preset
    /// and tuning, the base that parameter building changes.
    pub fn preset_config(
        &self,
        codec: enc::GUID,
        preset: enc::GUID,
        tuning: enc::NV_ENC_TUNING_INFO,
    ) -> Result<enc::NV_ENC_CONFIG, NvencError> {
        let mut preset_config = std::mem::MaybeUninit::<enc::NV_ENC_PRESET_CONFIG>::zeroed();
        // Safety: all-zero is valid for every field but the nested
        // `presetCfg.frameFieldMode`, written here; then the versions.
        let mut preset_config = unsafe {
            let p = preset_config.as_mut_ptr();
            std::ptr::addr_of_mut!((*p).presetCfg).write(blank_config());
            preset_config.assume_init()
        };
        preset_config.version = versions::PRESET_CONFIG;
        preset_config.presetCfg.version = versions::CONFIG;
        // Safety: the session is open; the struct is live and versioned.
        let status = unsafe {
            (self.api.fns.get_encode_preset_config_ex)(
                self.encoder,
                codec,
                preset,
                tuning,
                &mut preset_config,
            )
        };
        self.check("nvEncGetEncodePresetConfigEx", status)?;
        Ok(preset_config.presetCfg)
    }

    /// `nvEncInitializeEncoder`. `params.encodeConfig` must point to a live
    /// configuration (the caller's), read during the call only.
    pub fn initialize(
        &mut self,
        params: &mut enc::NV_ENC_INITIALIZE_PARAMS,
    ) -> Result<(), NvencError> {
        // Safety: the session is open; `params` is live and versioned, and its
        // `encodeConfig` points to a live NV_ENC_CONFIG (the caller's borrow).
        let status = unsafe { (self.api.fns.initialize_encoder)(self.encoder, params) };
        self.check("nvEncInitializeEncoder", status)
    }

    /// Registers `buffer` (device NV12, its own layout) as an input and keeps
    /// it; returns its index.
    pub fn register_nv12(&mut self, buffer: DeviceNv12Buffer) -> Result<usize, NvencError> {
        let layout = buffer.layout();
        // Safety: all-zero is valid for NV_ENC_REGISTER_RESOURCE (integers,
        // pointers, enums with a zero variant).
        let mut reg: enc::NV_ENC_REGISTER_RESOURCE = unsafe { std::mem::zeroed() };
        reg.version = versions::REGISTER_RESOURCE;
        reg.resourceType =
            enc::NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
        reg.width = layout.width;
        reg.height = layout.height;
        reg.pitch = u32::try_from(layout.pitch).unwrap_or(u32::MAX);
        reg.resourceToRegister = buffer.device_ptr() as *mut c_void;
        reg.bufferFormat = enc::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12;
        reg.bufferUsage = enc::NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE;
        // Safety: the session is open; `reg` describes device memory owned by
        // `buffer`, which this session keeps until after unregistering it.
        let status = unsafe { (self.api.fns.register_resource)(self.encoder, &mut reg) };
        self.check("nvEncRegisterResource", status)?;
        self.inputs.push(Registered {
            buffer,
            handle: reg.registeredResource,
            mapped: None,
        });
        Ok(self.inputs.len() - 1)
    }

    /// Input `index`'s device buffer, to write the next picture into.
    pub fn input_mut(&mut self, index: usize) -> Result<&mut DeviceNv12Buffer, NvencError> {
        self.inputs
            .get_mut(index)
            .map(|r| &mut r.buffer)
            .ok_or(NvencError::NoSuchBuffer {
                what: "input",
                index,
            })
    }

    /// `nvEncCreateBitstreamBuffer`; returns its index.
    pub fn create_bitstream(&mut self) -> Result<usize, NvencError> {
        // Safety: all-zero is valid (integers, pointers, a zero-variant enum).
        let mut create: enc::NV_ENC_CREATE_BITSTREAM_BUFFER = unsafe { std::mem::zeroed() };
        create.version = versions::CREATE_BITSTREAM_BUFFER;
        // Safety: the session is open and initialised; `create` is live.
        let status = unsafe { (self.api.fns.create_bitstream_buffer)(self.encoder, &mut create) };
        self.check("nvEncCreateBitstreamBuffer", status)?;
        self.bitstreams.push(create.bitstreamBuffer);
        Ok(self.bitstreams.len() - 1)
    }

    /// Maps input `input`, fills `pic`'s input and output and submits it
    /// (`nvEncEncodePicture`). The input stays mapped until [`Self::unmap`].
    pub fn encode(
        &mut self,
        input: usize,
        bitstream: usize,
        pic: &mut enc::NV_ENC_PIC_PARAMS,
    ) -> Result<EncodeStatus, NvencError> {
        let output = *self
            .bitstreams
            .get(bitstream)
            .ok_or(NvencError::NoSuchBuffer {
                what: "bitstream",
                index: bitstream,
            })?;
        let mapped = self.map(input)?;
        pic.inputBuffer = mapped;
        pic.outputBitstream = output;
        // Safety: the session is open; `pic` is live and versioned, its input
        // a mapped registered resource and its output a bitstream buffer of
        // this session.
        let status = unsafe { (self.api.fns.encode_picture)(self.encoder, pic) };
        match status {
            0 => Ok(EncodeStatus::Ready),
            NEED_MORE_INPUT => Ok(EncodeStatus::NeedMoreInput),
            s => Err(self.fail("nvEncEncodePicture", s)),
        }
    }

    /// Signals the end of the stream (`NV_ENC_PIC_FLAG_EOS`, no input): the
    /// encoder emits what it holds.
    pub fn end_of_stream(&mut self) -> Result<(), NvencError> {
        let mut pic = blank_pic_params();
        pic.version = versions::PIC_PARAMS;
        pic.encodePicFlags = enc::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS as u32;
        // Safety: the session is open; an EOS picture carries no buffers.
        let status = unsafe { (self.api.fns.encode_picture)(self.encoder, &mut pic) };
        self.check("nvEncEncodePicture (EOS)", status)
    }

    fn map(&mut self, input: usize) -> Result<*mut c_void, NvencError> {
        let reg = self.inputs.get(input).ok_or(NvencError::NoSuchBuffer {
            what: "input",
            index: input,
        })?;
        if let Some(m) = reg.mapped {
            return Ok(m);
        }
        // Safety: all-zero is valid (integers, pointers, a zero-variant enum).
        let mut map: enc::NV_ENC_MAP_INPUT_RESOURCE = unsafe { std::mem::zeroed() };
        map.version = versions::MAP_INPUT_RESOURCE;
        map.registeredResource = reg.handle;
        // Safety: the session is open; the handle was registered in it.
        let status = unsafe { (self.api.fns.map_input_resource)(self.encoder, &mut map) };
        self.check("nvEncMapInputResource", status)?;
        self.inputs[input].mapped = Some(map.mappedResource);
        Ok(map.mappedResource)
    }

    /// Unmaps input `input` (after its output was locked).
    pub fn unmap(&mut self, input: usize) -> Result<(), NvencError> {
        let Some(reg) = self.inputs.get_mut(input) else {
            return Err(NvencError::NoSuchBuffer {
                what: "input",
                index: input,
            });
        };
        if let Some(m) = reg.mapped.take() {
            // Safety: `m` was mapped in this session and is unmapped once.
            let status = unsafe { (self.api.fns.unmap_input_resource)(self.encoder, m) };
            self.check("nvEncUnmapInputResource", status)?;
        }
        Ok(())
    }

    /// Locks bitstream `bitstream` (waiting for the encode), copies the
    /// access unit out and unlocks it.
    pub fn lock_bitstream(&mut self, bitstream: usize) -> Result<BitstreamOut, NvencError> {
        let output = *self
            .bitstreams
            .get(bitstream)
            .ok_or(NvencError::NoSuchBuffer {
                what: "bitstream",
                index: bitstream,
            })?;
        let mut lock = std::mem::MaybeUninit::<enc::NV_ENC_LOCK_BITSTREAM>::zeroed();
        let p = lock.as_mut_ptr();
        // Safety: writes into the zeroed struct through raw pointers (it is
        // never read as a typed value, so an enum value this header does not
        // know cannot be produced); the session is open and `output` is one of
        // its bitstream buffers. The driver fills the out fields.
        let status = unsafe {
            std::ptr::addr_of_mut!((*p).version).write(versions::LOCK_BITSTREAM);
            std::ptr::addr_of_mut!((*p).outputBitstream).write(output);
            std::ptr::addr_of_mut!((*p).pictureStruct)
                .write(enc::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME);
            (self.api.fns.lock_bitstream)(self.encoder, p)
        };
        self.check("nvEncLockBitstream", status)?;
        // Safety: the lock succeeded: `bitstreamBufferPtr` holds
        // `bitstreamSizeInBytes` bytes until the unlock below; the enum field
        // is read as the u32 it is in C.
        let out = unsafe {
            let ptr = std::ptr::addr_of!((*p).bitstreamBufferPtr).read();
            let len = std::ptr::addr_of!((*p).bitstreamSizeInBytes).read() as usize;
            let data = if ptr.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec()
            };
            BitstreamOut {
                data,
                picture_type: std::ptr::addr_of!((*p).pictureType).cast::<u32>().read(),
                timestamp: std::ptr::addr_of!((*p).outputTimeStamp).read(),
            }
        };
        // Safety: locked above, unlocked once.
        let status = unsafe { (self.api.fns.unlock_bitstream)(self.encoder, output) };
        self.check("nvEncUnlockBitstream", status)?;
        Ok(out)
    }

    /// `nvEncGetSequenceParams`: SPS and PPS, Annex B.
    pub fn sequence_params(&self) -> Result<Vec<u8>, NvencError> {
        let mut buf = vec![0u8; enc::NV_MAX_SEQ_HDR_LEN as usize];
        let mut size = 0u32;
        // Safety: all-zero is valid (integers and pointers).
        let mut payload: enc::NV_ENC_SEQUENCE_PARAM_PAYLOAD = unsafe { std::mem::zeroed() };
        payload.version = versions::SEQUENCE_PARAM_PAYLOAD;
        payload.inBufferSize = buf.len() as u32;
        payload.spsppsBuffer = buf.as_mut_ptr().cast();
        payload.outSPSPPSPayloadSize = &mut size;
        // Safety: the session is initialised; the buffer and size pointer are
        // live for the call and the buffer's length is passed.
        let status = unsafe { (self.api.fns.get_sequence_params)(self.encoder, &mut payload) };
        self.check("nvEncGetSequenceParams", status)?;
        buf.truncate((size as usize).min(buf.len()));
        Ok(buf)
    }
}

impl Drop for EncodeSession {
    fn drop(&mut self) {
        for reg in &mut self.inputs {
            if let Some(m) = reg.mapped.take() {
                // Safety: mapped in this session, unmapped once.
                let _ = unsafe { (self.api.fns.unmap_input_resource)(self.encoder, m) };
            }
            // Safety: registered in this session, unregistered once, before
            // its buffer (a field of `reg`) is freed.
            let _ = unsafe { (self.api.fns.unregister_resource)(self.encoder, reg.handle) };
        }
        for &b in &self.bitstreams {
            // Safety: created in this session, destroyed once.
            let _ = unsafe { (self.api.fns.destroy_bitstream_buffer)(self.encoder, b) };
        }
        // Safety: the session is open and destroyed exactly once, last.
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
    fn encode_struct_versions_match_header() {
        assert_eq!(versions::PRESET_CONFIG, enc::NV_ENC_PRESET_CONFIG_VER);
        assert_eq!(versions::CONFIG, enc::NV_ENC_CONFIG_VER);
        assert_eq!(versions::RC_PARAMS, enc::NV_ENC_RC_PARAMS_VER);
        assert_eq!(
            versions::INITIALIZE_PARAMS,
            enc::NV_ENC_INITIALIZE_PARAMS_VER
        );
        assert_eq!(versions::PIC_PARAMS, enc::NV_ENC_PIC_PARAMS_VER);
        assert_eq!(versions::LOCK_BITSTREAM, enc::NV_ENC_LOCK_BITSTREAM_VER);
        assert_eq!(
            versions::CREATE_BITSTREAM_BUFFER,
            enc::NV_ENC_CREATE_BITSTREAM_BUFFER_VER
        );
        assert_eq!(
            versions::REGISTER_RESOURCE,
            enc::NV_ENC_REGISTER_RESOURCE_VER
        );
        assert_eq!(
            versions::MAP_INPUT_RESOURCE,
            enc::NV_ENC_MAP_INPUT_RESOURCE_VER
        );
        assert_eq!(
            versions::SEQUENCE_PARAM_PAYLOAD,
            enc::NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER
        );
        assert_eq!(PIC_TYPE_IDR, 3);
        assert_eq!(PIC_TYPE_B, 1);
        assert_eq!(
            status_name(NEED_MORE_INPUT),
            "NV_ENC_ERR_NEED_MORE_INPUT (17)"
        );
    }

    #[test]
    fn blank_structs_are_valid_and_zero() {
        let c = blank_config();
        assert_eq!(
            c.frameFieldMode as u32, 1,
            "NV_ENC_PARAMS_FRAME_FIELD_MODE_FRAME"
        );
        assert_eq!((c.version, c.gopLength, c.frameIntervalP), (0, 0, 0));
        let p = blank_pic_params();
        assert_eq!(p.pictureStruct as u32, 1, "NV_ENC_PIC_STRUCT_FRAME");
        assert_eq!(p.encodePicFlags, 0);
        let i = blank_initialize_params();
        assert_eq!(i.tuningInfo as u32, 0);
        assert!(i.encodeConfig.is_null());
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
