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

use std::ffi::{c_int, c_uint, c_ulong, c_ulonglong, c_void};
use std::panic::{self, AssertUnwindSafe};

use libloading::Library;
use nvidia_video_codec_sdk::sys::cuviddec::{
    cudaVideoChromaFormat, cudaVideoCodec, cudaVideoCreateFlags, cudaVideoDeinterlaceMode,
    cudaVideoSurfaceFormat, CUvideodecoder, CUVIDDECODECAPS, CUVIDDECODECREATEINFO, CUVIDPICPARAMS,
    CUVIDPROCPARAMS, CUVIDRECONFIGUREDECODERINFO,
};
use nvidia_video_codec_sdk::sys::nvcuvid::{
    CUvideopacketflags, CUvideoparser, CUVIDEOFORMAT, CUVIDPARSERDISPINFO, CUVIDPARSERPARAMS,
    CUVIDSOURCEDATAPACKET,
};
use serde::Serialize;

use super::driver::{self, CurrentContext, DevicePitched, GpuError, LibraryNotFound};

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
/// Takes [`DecodeStatusRaw`]: `CUVIDGETDECODESTATUS` with the status as a plain integer.
type GetDecodeStatus =
    unsafe extern "C" fn(CUvideodecoder, c_int, *mut DecodeStatusRaw) -> CuResult;
type ReconfigureDecoder =
    unsafe extern "C" fn(CUvideodecoder, *mut CUVIDRECONFIGUREDECODERINFO) -> CuResult;
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
#[allow(dead_code)] // the context lock is for a multi-threaded decode stage (not yet)
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
    /// `cuvidReconfigureDecoder` (Video Codec SDK 9.0, drivers 435+); optional: without
    /// it a size change re-creates the decoder.
    reconfigure_decoder: Option<ReconfigureDecoder>,
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
                reconfigure_decoder: symbol(&lib, "cuvidReconfigureDecoder\0").ok(),
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

// ---------------------------------------------------------------------------
// The parser and the decoder (NVDEC programming guide, "Video Decoder Pipeline")
// ---------------------------------------------------------------------------

/// `CUVIDGETDECODESTATUS` (cuviddec.h) with `decodeStatus` as a plain integer: the
/// driver may write a status newer than the bindings' enum.
#[repr(C)]
struct DecodeStatusRaw {
    status: c_uint,
    reserved: [c_uint; 31],
    p_reserved: [*mut c_void; 8],
}

/// What `cuvidGetDecodeStatus` says about one picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeStatus {
    /// Not known (`cuvidDecodeStatus_Invalid`, or a code this build does not know).
    Unknown(u32),
    /// Still decoding; mapping waits for it.
    InProgress,
    /// Decoded without error.
    Success,
    /// The bitstream had errors that were not concealed.
    Error,
    /// The bitstream had errors; the hardware concealed them.
    Concealed,
}

impl DecodeStatus {
    /// From `cuvidDecodeStatus` (cuviddec.h: 0 invalid, 1 in progress, 2 success,
    /// 8 error, 9 error concealed).
    pub fn from_raw(status: u32) -> DecodeStatus {
        match status {
            1 => DecodeStatus::InProgress,
            2 => DecodeStatus::Success,
            8 => DecodeStatus::Error,
            9 => DecodeStatus::Concealed,
            other => DecodeStatus::Unknown(other),
        }
    }
}

/// The parts of a `CUVIDEOFORMAT` (the sequence callback's argument) the decoder needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    /// `cudaVideoCodec` (4 is H.264).
    pub codec: u32,
    /// Coded size (macroblock-aligned).
    pub coded_width: u32,
    pub coded_height: u32,
    /// The display area (the SPS cropping), left/top inclusive, right/bottom exclusive.
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
    /// `cudaVideoChromaFormat`: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format: u32,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Fewest decode surfaces the stream needs (its DPB plus one).
    pub min_decode_surfaces: u8,
    pub progressive: bool,
}

impl VideoFormat {
    /// Reads a `CUVIDEOFORMAT` the parser handed to the sequence callback.
    ///
    /// # Safety
    /// `format` must point to a live `CUVIDEOFORMAT`.
    unsafe fn read(format: *const CUVIDEOFORMAT) -> VideoFormat {
        // Safety: the caller's contract; the two enum fields are read as u32 (their C
        // representation) so an unknown value is not an invalid Rust enum.
        unsafe {
            let f = &*format;
            let codec = std::ptr::addr_of!((*format).codec).cast::<u32>().read();
            let chroma = std::ptr::addr_of!((*format).chroma_format)
                .cast::<u32>()
                .read();
            VideoFormat {
                codec,
                coded_width: f.coded_width,
                coded_height: f.coded_height,
                left: f.display_area.left,
                top: f.display_area.top,
                right: f.display_area.right,
                bottom: f.display_area.bottom,
                chroma_format: chroma,
                bit_depth_luma: f.bit_depth_luma_minus8.saturating_add(8),
                bit_depth_chroma: f.bit_depth_chroma_minus8.saturating_add(8),
                min_decode_surfaces: f.min_num_decode_surfaces,
                progressive: f.progressive_sequence != 0,
            }
        }
    }

    /// Display width (after cropping).
    pub fn width(&self) -> u32 {
        u32::try_from(self.right.saturating_sub(self.left)).unwrap_or(0)
    }

    /// Display height (after cropping).
    pub fn height(&self) -> u32 {
        u32::try_from(self.bottom.saturating_sub(self.top)).unwrap_or(0)
    }
}

/// A picture the parser says is ready to display (`CUVIDPARSERDISPINFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayInfo {
    /// The decode surface index (`CurrPicIdx` of its decode call).
    pub picture_index: i32,
    pub progressive: bool,
    pub top_field_first: bool,
    /// The timestamp given with the packet that carried the picture.
    pub timestamp: i64,
}

/// One picture to decode, as the parser prepared it (`CUVIDPICPARAMS`).
pub struct PictureParams<'p>(&'p mut CUVIDPICPARAMS);

impl PictureParams<'_> {
    /// The decode surface this picture goes to (`CurrPicIdx`).
    pub fn index(&self) -> i32 {
        self.0.CurrPicIdx
    }
}

/// Receives the parser's callbacks (`CUVIDPARSERPARAMS`: pfnSequenceCallback,
/// pfnDecodePicture, pfnDisplayPicture), on the thread that called
/// [`VideoParser::parse`], during that call.
pub trait ParserHandler {
    /// A sequence header was parsed (the first, or a changed one). Returns the number
    /// of decode surfaces the parser should cycle through (>= the format's minimum), or
    /// 0 to refuse the sequence (the parser stops).
    fn sequence(&mut self, format: &VideoFormat) -> i32;
    /// A picture is ready to decode (decode order). Returns 0 to stop the parser.
    fn decode(&mut self, picture: PictureParams<'_>) -> i32;
    /// A picture is ready to display (presentation order); `None` at end of stream.
    /// Returns 0 to stop the parser.
    fn display(&mut self, info: Option<DisplayInfo>) -> i32;
    /// A callback panicked (caught: nothing unwinds into the driver); `callback` names it.
    fn panicked(&mut self, callback: &'static str);
}

/// Runs `f` on the handler behind `user`, catching panics (they must not unwind
/// through the driver's C frames) and reporting them to the handler.
///
/// # Safety
/// `user` must be the `*mut H` a [`VideoParser<H>`] registered, with no other
/// reference to the handler alive (true while the parser is inside `cuvidParseVideoData`,
/// whose caller holds `&mut VideoParser`).
unsafe fn with_handler<H: ParserHandler>(
    user: *mut c_void,
    callback: &'static str,
    f: impl FnOnce(&mut H) -> c_int,
) -> c_int {
    let handler = user.cast::<H>();
    match panic::catch_unwind(AssertUnwindSafe(|| {
        // Safety: the caller's contract: a live, unaliased H.
        f(unsafe { &mut *handler })
    })) {
        Ok(r) => r,
        Err(_) => {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| {
                // Safety: as above; the reference made inside the closure is gone.
                unsafe { &mut *handler }.panicked(callback)
            }));
            0
        }
    }
}

unsafe extern "C" fn sequence_trampoline<H: ParserHandler>(
    user: *mut c_void,
    format: *mut CUVIDEOFORMAT,
) -> c_int {
    if format.is_null() {
        return 0;
    }
    // Safety: `user` is the handler registered by VideoParser::new (see with_handler);
    // `format` is the parser's live CUVIDEOFORMAT for the duration of the callback.
    unsafe {
        with_handler::<H>(user, "pfnSequenceCallback", |h| {
            h.sequence(&VideoFormat::read(format))
        })
    }
}

unsafe extern "C" fn decode_trampoline<H: ParserHandler>(
    user: *mut c_void,
    params: *mut CUVIDPICPARAMS,
) -> c_int {
    if params.is_null() {
        return 0;
    }
    // Safety: as sequence_trampoline; `params` is the parser's live CUVIDPICPARAMS,
    // ours to pass to cuvidDecodePicture during the callback.
    unsafe {
        with_handler::<H>(user, "pfnDecodePicture", |h| {
            h.decode(PictureParams(&mut *params))
        })
    }
}

unsafe extern "C" fn display_trampoline<H: ParserHandler>(
    user: *mut c_void,
    info: *mut CUVIDPARSERDISPINFO,
) -> c_int {
    // Safety: as sequence_trampoline; `info` is null at end of stream, else the
    // parser's live CUVIDPARSERDISPINFO.
    unsafe {
        let info = info.as_ref().map(|i| DisplayInfo {
            picture_index: i.picture_index,
            progressive: i.progressive_frame != 0,
            top_field_first: i.top_field_first != 0,
            timestamp: i.timestamp,
        });
        with_handler::<H>(user, "pfnDisplayPicture", |h| h.display(info))
    }
}

/// A cuvid video parser (`cuvidCreateVideoParser`) that owns its callback handler;
/// destroyed on drop. Not `Send`: the callbacks run on the parsing thread, which must
/// have the CUDA context current.
pub struct VideoParser<'n, H: ParserHandler> {
    nv: &'n Nvcuvid,
    handle: CUvideoparser,
    /// From `Box::into_raw`; freed in drop (after the parser is destroyed).
    handler: *mut H,
}

impl<'n, H: ParserHandler> VideoParser<'n, H> {
    /// A parser for `codec` calling `handler`. `max_display_delay`: pictures the parser
    /// may hold back before display (0: display as soon as presentation order allows).
    pub fn new(
        nv: &'n Nvcuvid,
        codec: DecodeCodec,
        max_display_delay: u32,
        handler: Box<H>,
    ) -> Result<Self, NvdecError> {
        let handler = Box::into_raw(handler);
        let mut params = CUVIDPARSERPARAMS {
            CodecType: codec.sdk(),
            // Raised by the sequence callback's return value.
            ulMaxNumDecodeSurfaces: 1,
            // Timestamps are our own decode-order numbers, not clock ticks.
            ulClockRate: 0,
            // Decode even damaged pictures; errors come back through
            // cuvidGetDecodeStatus and are counted.
            ulErrorThreshold: 100,
            ulMaxDisplayDelay: max_display_delay,
            pUserData: handler.cast(),
            pfnSequenceCallback: Some(sequence_trampoline::<H>),
            pfnDecodePicture: Some(decode_trampoline::<H>),
            pfnDisplayPicture: Some(display_trampoline::<H>),
            ..Default::default()
        };
        let mut handle: CUvideoparser = std::ptr::null_mut();
        // Safety: `params` is fully initialised (reserved fields zeroed by Default);
        // the callbacks match PFNVID*CALLBACK and `pUserData` is the handler they
        // expect, alive until drop destroys the parser.
        let status = unsafe { (nv.fns.create_video_parser)(&mut handle, &mut params) };
        if status != 0 || handle.is_null() {
            // Safety: the parser was not created, so nothing else holds the pointer.
            drop(unsafe { Box::from_raw(handler) });
            return Err(NvdecError::Call {
                call: "cuvidCreateVideoParser",
                status,
            });
        }
        Ok(VideoParser {
            nv,
            handle,
            handler,
        })
    }

    /// Feeds `data` (Annex B byte stream) with `timestamp`; `end_of_stream` flushes
    /// every held picture to the display callback. Callbacks run inside this call.
    pub fn parse(
        &mut self,
        data: &[u8],
        timestamp: Option<i64>,
        end_of_stream: bool,
    ) -> Result<(), NvdecError> {
        let mut flags = 0;
        if timestamp.is_some() {
            flags |= CUvideopacketflags::CUVID_PKT_TIMESTAMP as u32;
        }
        if end_of_stream {
            flags |= CUvideopacketflags::CUVID_PKT_ENDOFSTREAM as u32;
        }
        let mut packet = CUVIDSOURCEDATAPACKET {
            flags: c_ulong::from(flags),
            payload_size: data.len() as c_ulong,
            payload: if data.is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr()
            },
            timestamp: timestamp.unwrap_or(0),
        };
        // Safety: the parser is live; `packet` points into `data`, which outlives the
        // synchronous call; the handler is not otherwise borrowed (`&mut self`).
        let status = unsafe { (self.nv.fns.parse_video_data)(self.handle, &mut packet) };
        if status != 0 {
            return Err(NvdecError::Call {
                call: "cuvidParseVideoData",
                status,
            });
        }
        Ok(())
    }

    /// The handler, between calls to [`VideoParser::parse`].
    pub fn handler(&mut self) -> &mut H {
        // Safety: a live Box'd H owned by self; no callback runs outside parse.
        unsafe { &mut *self.handler }
    }

    /// Destroys the parser and gives the handler back (to keep its state, the decoder
    /// included, for a new parser).
    pub fn into_handler(self) -> Box<H> {
        let this = std::mem::ManuallyDrop::new(self);
        // Safety: destroyed once, here (drop does not run on ManuallyDrop).
        unsafe { (this.nv.fns.destroy_video_parser)(this.handle) };
        // Safety: from Box::into_raw in new; the parser that used it is destroyed.
        unsafe { Box::from_raw(this.handler) }
    }
}

impl<H: ParserHandler> Drop for VideoParser<'_, H> {
    fn drop(&mut self) {
        // Safety: the parser is live and destroyed once; then no callback can use the
        // handler, which is freed once.
        unsafe {
            (self.nv.fns.destroy_video_parser)(self.handle);
            drop(Box::from_raw(self.handler));
        }
    }
}

/// What a decoder is created for (`CUVIDDECODECREATEINFO`): 8-bit 4:2:0 in, NV12
/// out at the display size (the SPS cropping applied by NVDEC, no scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderParams {
    pub codec: DecodeCodec,
    pub coded_width: u32,
    pub coded_height: u32,
    /// Largest coded size a reconfigure may switch to.
    pub max_width: u32,
    pub max_height: u32,
    /// Display area: left, top, right, bottom.
    pub display: (i32, i32, i32, i32),
    pub decode_surfaces: u32,
    /// Mapped pictures at once (we map one at a time).
    pub output_surfaces: u32,
}

impl DecoderParams {
    /// Output (display) width.
    pub fn width(&self) -> u32 {
        u32::try_from(self.display.2 - self.display.0).unwrap_or(0)
    }
    /// Output (display) height.
    pub fn height(&self) -> u32 {
        u32::try_from(self.display.3 - self.display.1).unwrap_or(0)
    }

    fn create_info(&self) -> CUVIDDECODECREATEINFO {
        let short = |v: i32| i16::try_from(v).unwrap_or(i16::MAX);
        let mut info = CUVIDDECODECREATEINFO {
            ulWidth: c_ulong::from(self.coded_width),
            ulHeight: c_ulong::from(self.coded_height),
            ulNumDecodeSurfaces: c_ulong::from(self.decode_surfaces),
            CodecType: self.codec.sdk(),
            ChromaFormat: cudaVideoChromaFormat::cudaVideoChromaFormat_420,
            ulCreationFlags: cudaVideoCreateFlags::cudaVideoCreate_PreferCUVID as c_ulong,
            bitDepthMinus8: 0,
            ulIntraDecodeOnly: 0,
            ulMaxWidth: c_ulong::from(self.max_width),
            ulMaxHeight: c_ulong::from(self.max_height),
            OutputFormat: cudaVideoSurfaceFormat::cudaVideoSurfaceFormat_NV12,
            DeinterlaceMode: cudaVideoDeinterlaceMode::cudaVideoDeinterlaceMode_Weave,
            ulTargetWidth: c_ulong::from(self.width()),
            ulTargetHeight: c_ulong::from(self.height()),
            ulNumOutputSurfaces: c_ulong::from(self.output_surfaces),
            vidLock: std::ptr::null_mut(),
            ..Default::default()
        };
        info.display_area.left = short(self.display.0);
        info.display_area.top = short(self.display.1);
        info.display_area.right = short(self.display.2);
        info.display_area.bottom = short(self.display.3);
        info
    }

    fn reconfigure_info(&self) -> CUVIDRECONFIGUREDECODERINFO {
        let short = |v: i32| i16::try_from(v).unwrap_or(i16::MAX);
        // Safety: a plain C struct of integers; all-zero is its documented default
        // ("reserved, set to 0").
        let mut info: CUVIDRECONFIGUREDECODERINFO = unsafe { std::mem::zeroed() };
        info.ulWidth = self.coded_width;
        info.ulHeight = self.coded_height;
        info.ulTargetWidth = self.width();
        info.ulTargetHeight = self.height();
        info.ulNumDecodeSurfaces = self.decode_surfaces;
        info.display_area.left = short(self.display.0);
        info.display_area.top = short(self.display.1);
        info.display_area.right = short(self.display.2);
        info.display_area.bottom = short(self.display.3);
        info
    }
}

/// A hardware decoder (`cuvidCreateDecoder`), destroyed on drop. Used on the thread
/// whose context was current at creation.
pub struct VideoDecoder<'n> {
    nv: &'n Nvcuvid,
    handle: CUvideodecoder,
    params: DecoderParams,
}

impl std::fmt::Debug for VideoDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoDecoder")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<'n> VideoDecoder<'n> {
    /// `cuvidCreateDecoder` on the GPU whose context is current.
    pub fn create(
        nv: &'n Nvcuvid,
        _current: &CurrentContext<'_>,
        params: DecoderParams,
    ) -> Result<Self, NvdecError> {
        let mut info = params.create_info();
        let mut handle: CUvideodecoder = std::ptr::null_mut();
        // Safety: a context is current (`_current`); `info` is fully initialised.
        let status = unsafe { (nv.fns.create_decoder)(&mut handle, &mut info) };
        if status != 0 || handle.is_null() {
            return Err(NvdecError::Call {
                call: "cuvidCreateDecoder",
                status,
            });
        }
        Ok(VideoDecoder { nv, handle, params })
    }

    /// What the decoder was created or last reconfigured for.
    pub fn params(&self) -> &DecoderParams {
        &self.params
    }

    /// `cuvidReconfigureDecoder` to `params` (same codec, coded size within the max
    /// given at creation, no more decode surfaces). `Ok(false)` when this driver has
    /// no reconfigure (the caller re-creates the decoder).
    pub fn reconfigure(&mut self, params: DecoderParams) -> Result<bool, NvdecError> {
        let Some(reconfigure) = self.nv.fns.reconfigure_decoder else {
            return Ok(false);
        };
        let mut info = params.reconfigure_info();
        // Safety: the decoder is live; `info` is fully initialised.
        let status = unsafe { reconfigure(self.handle, &mut info) };
        if status != 0 {
            return Err(NvdecError::Call {
                call: "cuvidReconfigureDecoder",
                status,
            });
        }
        self.params = DecoderParams {
            max_width: self.params.max_width,
            max_height: self.params.max_height,
            output_surfaces: self.params.output_surfaces,
            ..params
        };
        Ok(true)
    }

    /// `cuvidDecodePicture` (from the parser's decode callback).
    pub fn decode(&mut self, picture: PictureParams<'_>) -> Result<(), NvdecError> {
        // Safety: the decoder is live; the parameters are the parser's, valid for the
        // callback this is called from.
        let status = unsafe { (self.nv.fns.decode_picture)(self.handle, picture.0) };
        if status != 0 {
            return Err(NvdecError::Call {
                call: "cuvidDecodePicture",
                status,
            });
        }
        Ok(())
    }

    /// `cuvidGetDecodeStatus` for decode surface `index`.
    pub fn status(&self, index: i32) -> Result<DecodeStatus, NvdecError> {
        let mut raw = DecodeStatusRaw {
            status: 0,
            reserved: [0; 31],
            p_reserved: [std::ptr::null_mut(); 8],
        };
        // Safety: the decoder is live; `raw` has CUVIDGETDECODESTATUS's layout.
        let status = unsafe { (self.nv.fns.get_decode_status)(self.handle, index, &mut raw) };
        if status != 0 {
            return Err(NvdecError::Call {
                call: "cuvidGetDecodeStatus",
                status,
            });
        }
        Ok(DecodeStatus::from_raw(raw.status))
    }

    /// `cuvidMapVideoFrame64`: the decoded NV12 picture in device memory, until the
    /// returned guard drops (`cuvidUnmapVideoFrame64`).
    pub fn map(&mut self, info: &DisplayInfo) -> Result<MappedFrame<'_, 'n>, NvdecError> {
        let mut proc_params = CUVIDPROCPARAMS {
            progressive_frame: c_int::from(info.progressive),
            second_field: 0,
            top_field_first: c_int::from(info.top_field_first),
            unpaired_field: 0,
            ..Default::default()
        };
        let mut ptr: c_ulonglong = 0;
        let mut pitch: c_uint = 0;
        // Safety: the decoder is live; out pointers are locals; `proc_params` is
        // initialised with reserved fields zeroed.
        let status = unsafe {
            (self.nv.fns.map_video_frame64)(
                self.handle,
                info.picture_index,
                &mut ptr,
                &mut pitch,
                &mut proc_params,
            )
        };
        if status != 0 || ptr == 0 {
            return Err(NvdecError::Call {
                call: "cuvidMapVideoFrame64",
                status,
            });
        }
        Ok(MappedFrame {
            decoder: self,
            ptr,
            pitch: pitch as usize,
        })
    }
}

impl Drop for VideoDecoder<'_> {
    fn drop(&mut self) {
        // Safety: the decoder is live and destroyed once; no frame is mapped (a
        // MappedFrame borrows the decoder).
        unsafe { (self.nv.fns.destroy_decoder)(self.handle) };
    }
}

/// A decoded picture mapped for reading (NV12: luma rows, then interleaved chroma rows
/// from row `(height + 1) & !1`, all `pitch` apart). Unmapped on drop.
pub struct MappedFrame<'d, 'n> {
    decoder: &'d mut VideoDecoder<'n>,
    ptr: c_ulonglong,
    pitch: usize,
}

impl MappedFrame<'_, '_> {
    /// Copies the picture's luma and chroma rows into `dst` (luma at row 0, chroma from
    /// row `height`, which must hold `height + (height + 1) / 2` rows of `width`
    /// bytes rounded up to even).
    pub fn copy_nv12_to(&self, dst: &mut DevicePitched) -> Result<(), GpuError> {
        let (width, height) = (
            self.decoder.params.width() as usize,
            self.decoder.params.height() as usize,
        );
        let row_bytes = width.div_ceil(2) * 2;
        let chroma_from = height.div_ceil(2) * 2;
        // Safety: the mapped picture is the decoder's output at its target size: luma
        // rows 0..height and chroma rows from the even-rounded height, each at least
        // the even-rounded width, `pitch` apart, valid until unmap (self's drop).
        unsafe {
            dst.copy_from_device(self.ptr, self.pitch, row_bytes, height, 0)?;
            dst.copy_from_device(
                self.ptr + (chroma_from * self.pitch) as u64,
                self.pitch,
                row_bytes,
                height.div_ceil(2),
                height,
            )
        }
    }
}

impl Drop for MappedFrame<'_, '_> {
    fn drop(&mut self) {
        // Safety: `ptr` was returned by cuvidMapVideoFrame64 on this decoder and is
        // unmapped once.
        unsafe { (self.decoder.nv.fns.unmap_video_frame64)(self.decoder.handle, self.ptr) };
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
