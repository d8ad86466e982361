//! NVDEC (the Video Codec SDK's `nvcuvid.h` / `cuviddec.h`), loaded at run time.
//!
//! `libnvcuvid.so.1` comes with the NVIDIA driver; it is opened with libloading and its
//! entry points are looked up by name into [`Nvcuvid`], so nothing links it at build
//! time. Structure types come from `nvidia_video_codec_sdk::sys` (built with its
//! `ci-check` feature, which links nothing).
//!
//! Now: [`Nvcuvid::decoder_caps`] (`cuvidGetDecoderCaps`) for `ladder doctor` and backend
//! choice. The parser and decoder entry points are looked up too (a driver without them
//! fails here, at probe time, not mid-stream) for the NVDEC decode stage.
//!
//! Entry points are called through signatures that return `CUresult` as a plain `u32`,
//! not cudarc's Rust enum: a driver newer than the bindings may return a code the enum
//! lacks, and an out-of-range enum value would be undefined behaviour.
//!
//! One of the FFI files (ARCHITECTURE.md, convention 7): every `unsafe` block carries a
//! `// Safety:` comment.

use std::ffi::{c_int, c_uint, c_ulonglong, c_void};

use libloading::Library;
use nvidia_video_codec_sdk::sys::cuviddec::{
    cudaVideoChromaFormat, cudaVideoCodec, CUvideodecoder, CUVIDDECODECAPS, CUVIDDECODECREATEINFO,
    CUVIDGETDECODESTATUS, CUVIDPICPARAMS, CUVIDPROCPARAMS,
};
use nvidia_video_codec_sdk::sys::nvcuvid::{
    CUvideoparser, CUVIDPARSERPARAMS, CUVIDSOURCEDATAPACKET,
};
use serde::Serialize;

use super::driver::{self, CurrentContext, LibraryNotFound};

/// The NVDEC library's soname (installed by the NVIDIA driver).
pub const LIBNVCUVID: &str = "libnvcuvid.so.1";

/// `CUresult` as the driver returns it (0 is `CUDA_SUCCESS`).
pub type CuResult = u32;

/// Errors of the NVDEC layer.
#[derive(Debug, thiserror::Error)]
pub enum NvdecError {
    /// `libnvcuvid.so.1` is missing: a driver install without the video libraries
    /// (some container images mount only the compute libraries: set
    /// `NVIDIA_DRIVER_CAPABILITIES=compute,video`).
    #[error("{0}; NVDEC unavailable (in a container, set NVIDIA_DRIVER_CAPABILITIES to include \"video\")")]
    Library(#[from] LibraryNotFound),
    /// The library lacks an entry point this build needs (a driver too old).
    #[error("{LIBNVCUVID} has no {symbol}: NVIDIA driver too old for NVDEC ({reason})")]
    Symbol {
        /// The missing function.
        symbol: &'static str,
        /// dlerror.
        reason: String,
    },
    /// An NVDEC call returned an error.
    #[error("{call} failed: {}", cu_result_name(*.status))]
    Call {
        /// The function called.
        call: &'static str,
        /// Its `CUresult`.
        status: CuResult,
    },
}

/// The codecs Ladder decodes, as NVDEC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeCodec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
    /// AV1.
    Av1,
}

impl DecodeCodec {
    /// Every codec ingest accepts, in the order doctor lists them.
    pub const ALL: [DecodeCodec; 3] = [DecodeCodec::H264, DecodeCodec::Hevc, DecodeCodec::Av1];

    fn sdk(self) -> cudaVideoCodec {
        match self {
            DecodeCodec::H264 => cudaVideoCodec::cudaVideoCodec_H264,
            DecodeCodec::Hevc => cudaVideoCodec::cudaVideoCodec_HEVC,
            DecodeCodec::Av1 => cudaVideoCodec::cudaVideoCodec_AV1,
        }
    }

    /// `h264`, `hevc`, `av1`.
    pub fn name(self) -> &'static str {
        match self {
            DecodeCodec::H264 => "h264",
            DecodeCodec::Hevc => "hevc",
            DecodeCodec::Av1 => "av1",
        }
    }
}

/// What `cuvidGetDecoderCaps` says for one codec at 8-bit 4:2:0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecoderCaps {
    /// The codec asked about.
    pub codec: DecodeCodec,
    /// `bIsSupported`.
    pub supported: bool,
    /// `nMaxWidth`.
    pub max_width: u32,
    /// `nMaxHeight`.
    pub max_height: u32,
    /// `nMaxMBCount`: the largest picture in 16x16 macroblocks.
    pub max_mb_count: u32,
    /// `nMinWidth`.
    pub min_width: u32,
    /// `nMinHeight`.
    pub min_height: u32,
    /// `nNumNVDECs`: decode engines on this GPU (0 when the driver does not say).
    pub engines: u32,
    /// `nOutputFormatMask`: bit `1 << cudaVideoSurfaceFormat` per output format.
    pub output_format_mask: u32,
}

impl DecoderCaps {
    /// Builds from a filled `CUVIDDECODECAPS`.
    fn from_sdk(codec: DecodeCodec, c: &CUVIDDECODECAPS) -> Self {
        DecoderCaps {
            codec,
            supported: c.bIsSupported != 0,
            max_width: c.nMaxWidth,
            max_height: c.nMaxHeight,
            max_mb_count: c.nMaxMBCount,
            min_width: u32::from(c.nMinWidth),
            min_height: u32::from(c.nMinHeight),
            engines: u32::from(c.nNumNVDECs),
            output_format_mask: u32::from(c.nOutputFormatMask),
        }
    }
}

type GetDecoderCaps = unsafe extern "C" fn(*mut CUVIDDECODECAPS) -> CuResult;
type CreateDecoder =
    unsafe extern "C" fn(*mut CUvideodecoder, *mut CUVIDDECODECREATEINFO) -> CuResult;
type DestroyDecoder = unsafe extern "C" fn(CUvideodecoder) -> CuResult;
type DecodePicture = unsafe extern "C" fn(CUvideodecoder, *mut CUVIDPICPARAMS) -> CuResult;
type GetDecodeStatus =
    unsafe extern "C" fn(CUvideodecoder, c_int, *mut CUVIDGETDECODESTATUS) -> CuResult;
type MapVideoFrame64 = unsafe extern "C" fn(
    CUvideodecoder,
    c_int,
    *mut c_ulonglong,
    *mut c_uint,
    *mut CUVIDPROCPARAMS,
) -> CuResult;
type UnmapVideoFrame64 = unsafe extern "C" fn(CUvideodecoder, c_ulonglong) -> CuResult;
type CreateVideoParser =
    unsafe extern "C" fn(*mut CUvideoparser, *mut CUVIDPARSERPARAMS) -> CuResult;
type ParseVideoData = unsafe extern "C" fn(CUvideoparser, *mut CUVIDSOURCEDATAPACKET) -> CuResult;
type DestroyVideoParser = unsafe extern "C" fn(CUvideoparser) -> CuResult;
/// `cuvidCtxLockCreate(CUvideoctxlock *, CUcontext)`; both handles are opaque pointers.
type CtxLockCreate = unsafe extern "C" fn(*mut *mut c_void, *mut c_void) -> CuResult;
type CtxLockDestroy = unsafe extern "C" fn(*mut c_void) -> CuResult;

/// The entry points of `libnvcuvid.so.1` this build uses.
#[derive(Clone, Copy)]
#[allow(dead_code)] // the decode entry points are for the NVDEC decode stage (issue 4)
struct Functions {
    get_decoder_caps: GetDecoderCaps,
    create_decoder: CreateDecoder,
    destroy_decoder: DestroyDecoder,
    decode_picture: DecodePicture,
    get_decode_status: GetDecodeStatus,
    map_video_frame64: MapVideoFrame64,
    unmap_video_frame64: UnmapVideoFrame64,
    create_video_parser: CreateVideoParser,
    parse_video_data: ParseVideoData,
    destroy_video_parser: DestroyVideoParser,
    ctx_lock_create: CtxLockCreate,
    ctx_lock_destroy: CtxLockDestroy,
}

/// `libnvcuvid.so.1`, loaded, with its entry points. The library stays mapped while
/// this lives, so the function pointers stay valid.
pub struct Nvcuvid {
    fns: Functions,
    _lib: Library,
}

impl std::fmt::Debug for Nvcuvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvcuvid")
    }
}

/// Looks `name` (NUL-terminated) up in `lib` as a function of type `T`.
///
/// # Safety
/// `T` must be the function's true C signature.
unsafe fn symbol<T: Copy>(lib: &Library, name: &'static str) -> Result<T, NvdecError> {
    // Safety: forwarded to the caller (T is the true signature); the copied pointer is
    // only used while `lib` is kept alive (Nvcuvid owns both).
    match unsafe { lib.get::<T>(name.as_bytes()) } {
        Ok(s) => Ok(*s),
        Err(e) => Err(NvdecError::Symbol {
            symbol: name.trim_end_matches('\0'),
            reason: driver::loader_reason(&e),
        }),
    }
}

impl Nvcuvid {
    /// Opens `libnvcuvid.so.1` and looks up the entry points.
    pub fn load() -> Result<Nvcuvid, NvdecError> {
        Self::load_from(&[LIBNVCUVID])
    }

    /// As [`Nvcuvid::load`], trying `candidates` (paths or sonames).
    pub fn load_from(candidates: &[&str]) -> Result<Nvcuvid, NvdecError> {
        let lib = driver::open_library(LIBNVCUVID, candidates)?;
        // Safety: each type below is transcribed from cuviddec.h / nvcuvid.h (Video Codec
        // SDK 12.1, the headers nvidia-video-codec-sdk 0.4 was generated from), with
        // CUresult as u32 (same ABI as the C enum) and opaque handles as pointers.
        let fns = unsafe {
            Functions {
                get_decoder_caps: symbol(&lib, "cuvidGetDecoderCaps\0")?,
                create_decoder: symbol(&lib, "cuvidCreateDecoder\0")?,
                destroy_decoder: symbol(&lib, "cuvidDestroyDecoder\0")?,
                decode_picture: symbol(&lib, "cuvidDecodePicture\0")?,
                get_decode_status: symbol(&lib, "cuvidGetDecodeStatus\0")?,
                map_video_frame64: symbol(&lib, "cuvidMapVideoFrame64\0")?,
                unmap_video_frame64: symbol(&lib, "cuvidUnmapVideoFrame64\0")?,
                create_video_parser: symbol(&lib, "cuvidCreateVideoParser\0")?,
                parse_video_data: symbol(&lib, "cuvidParseVideoData\0")?,
                destroy_video_parser: symbol(&lib, "cuvidDestroyVideoParser\0")?,
                ctx_lock_create: symbol(&lib, "cuvidCtxLockCreate\0")?,
                ctx_lock_destroy: symbol(&lib, "cuvidCtxLockDestroy\0")?,
            }
        };
        Ok(Nvcuvid { fns, _lib: lib })
    }

    /// `cuvidGetDecoderCaps` for `codec`, 8-bit 4:2:0, on the GPU whose context is
    /// current.
    pub fn decoder_caps(
        &self,
        _current: &CurrentContext<'_>,
        codec: DecodeCodec,
    ) -> Result<DecoderCaps, NvdecError> {
        let mut caps = caps_query(codec);
        // Safety: a CUDA context is current on this thread (`_current`), as
        // cuvidGetDecoderCaps requires; `caps` is a live, initialised struct with the
        // input fields set; the function pointer is valid while `self._lib` is loaded.
        let status = unsafe { (self.fns.get_decoder_caps)(&mut caps) };
        if status != 0 {
            return Err(NvdecError::Call {
                call: "cuvidGetDecoderCaps",
                status,
            });
        }
        Ok(DecoderCaps::from_sdk(codec, &caps))
    }
}

/// The `CUVIDDECODECAPS` input for `codec` at 8-bit 4:2:0; outputs zeroed.
fn caps_query(codec: DecodeCodec) -> CUVIDDECODECAPS {
    CUVIDDECODECAPS {
        eCodecType: codec.sdk(),
        eChromaFormat: cudaVideoChromaFormat::cudaVideoChromaFormat_420,
        nBitDepthMinus8: 0,
        reserved1: [0; 3],
        bIsSupported: 0,
        nNumNVDECs: 0,
        nOutputFormatMask: 0,
        nMaxWidth: 0,
        nMaxHeight: 0,
        nMaxMBCount: 0,
        nMinWidth: 0,
        nMinHeight: 0,
        bIsHistogramSupported: 0,
        nCounterBitDepth: 0,
        nMaxHistogramBins: 0,
        reserved3: [0; 10],
    }
}

/// `CUDA_ERROR_NOT_SUPPORTED (801)`: the common `CUresult`s by name, others by number.
pub fn cu_result_name(status: CuResult) -> String {
    let name = match status {
        0 => "CUDA_SUCCESS",
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        4 => "CUDA_ERROR_DEINITIALIZED",
        100 => "CUDA_ERROR_NO_DEVICE",
        101 => "CUDA_ERROR_INVALID_DEVICE",
        200 => "CUDA_ERROR_INVALID_IMAGE",
        201 => "CUDA_ERROR_INVALID_CONTEXT",
        300 => "CUDA_ERROR_INVALID_SOURCE",
        400 => "CUDA_ERROR_INVALID_HANDLE",
        801 => "CUDA_ERROR_NOT_SUPPORTED",
        999 => "CUDA_ERROR_UNKNOWN",
        _ => return format!("CUresult {status}"),
    };
    format!("{name} ({status})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_names_it() {
        let e = Nvcuvid::load_from(&["/nonexistent/ladder-test/libnvcuvid.so.1"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("libnvcuvid.so.1 not found (tried /nonexistent/"),
            "{text}"
        );
        assert!(text.contains("NVDEC unavailable"), "{text}");
    }

    #[test]
    fn caps_query_asks_for_8bit_420() {
        let q = caps_query(DecodeCodec::Hevc);
        assert_eq!(q.eCodecType as u32, 8, "cudaVideoCodec_HEVC");
        assert_eq!(q.eChromaFormat as u32, 1, "cudaVideoChromaFormat_420");
        assert_eq!(q.nBitDepthMinus8, 0);
        assert_eq!(caps_query(DecodeCodec::H264).eCodecType as u32, 4);
        assert_eq!(caps_query(DecodeCodec::Av1).eCodecType as u32, 11);
    }

    #[test]
    fn caps_from_filled_struct() {
        let mut c = caps_query(DecodeCodec::H264);
        c.bIsSupported = 1;
        c.nNumNVDECs = 7;
        c.nMaxWidth = 4096;
        c.nMaxHeight = 4096;
        c.nMaxMBCount = 65536;
        c.nMinWidth = 48;
        c.nMinHeight = 16;
        c.nOutputFormatMask = 1;
        let caps = DecoderCaps::from_sdk(DecodeCodec::H264, &c);
        assert!(caps.supported);
        assert_eq!(
            (caps.max_width, caps.max_height, caps.max_mb_count),
            (4096, 4096, 65536)
        );
        assert_eq!((caps.min_width, caps.min_height, caps.engines), (48, 16, 7));
    }

    #[test]
    fn struct_layout_matches_header() {
        // cuviddec.h: 4 + 4 + 4 + 12 + 1 + 1 + 2 + 4 * 3 + 2 + 2 + 1 + 1 + 2 + 40 bytes.
        assert_eq!(std::mem::size_of::<CUVIDDECODECAPS>(), 88);
    }

    #[test]
    fn result_names() {
        assert_eq!(cu_result_name(801), "CUDA_ERROR_NOT_SUPPORTED (801)");
        assert_eq!(cu_result_name(12345), "CUresult 12345");
    }
}
