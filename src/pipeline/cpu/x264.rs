//! H.264 encoding of one ladder rung with libx264, through `x264-sys`.
//!
//! One [`Encoder`] per rung: it takes scaled I420 [`Picture`]s and returns
//! access units in AVCC form (4-byte NAL lengths) with their timestamps, ready
//! for the CMAF fragmenter, plus the `avcC` record for the rung's init segment.
//!
//! # Why `x264-sys` and not the `x264` crate
//!
//! The safe `x264` crate (0.5) cannot set what a live ladder needs (VBV
//! `i_vbv_max_bitrate`/`i_vbv_buffer_size`, forced IDR through
//! `x264_picture_t.i_type`, `i_threads`, `b_repeat_headers`, `b_vfr_input`),
//! its `Encoder` is not `Send`, `encode` panics on a size mismatch, and the
//! `Data<'a>` it returns has an unbounded lifetime that outlives the next
//! `x264_encoder_encode` call which invalidates it. So this module drives the
//! C API (`x264.h`, build 164) directly with one RAII owner, and `unsafe`
//! stays in this file.
//!
//! # x264 parameters, and why
//!
//! Names are `x264_param_t` fields, with the x264 CLI option in brackets.
//!
//! - Preset (`--preset`, default `veryfast`): `x264_param_default_preset`.
//!   `veryfast` is the usual live choice on CPUs: most of the quality of
//!   `medium` for about a third of its cost.
//! - Low latency (`--tune zerolatency`): no B-frames (`i_bframe = 0`), no
//!   rate-control lookahead or macroblock tree (`rc.i_lookahead = 0`,
//!   `rc.b_mb_tree = 0`), `i_sync_lookahead = 0`, and **sliced threads**
//!   (`b_sliced_threads = 1`). Frame threads delay output by about one frame
//!   per thread (plus lookahead); sliced threads split each picture into
//!   `i_threads` slices encoded in parallel, so the encoder holds no picture
//!   beyond the one `b_vfr_input` needs (below): each `encode` returns the
//!   previous picture's access unit. The price is a few percent of
//!   efficiency per extra slice, which is right for LL-HLS parts of 0.5 s.
//!   Without `low_latency` the preset's B-frames, lookahead and frame threads
//!   are kept (better quality, several frames of delay, `dts < pts`).
//! - Rate control (`--bitrate`, `--vbv-maxrate`, `--vbv-bufsize`): ABR
//!   (`rc.i_rc_method = X264_RC_ABR`, `rc.i_bitrate`) capped by a VBV.
//!   `maxrate` defaults to the bitrate: CBR-like, what ABR players' bandwidth
//!   estimates and CDN egress plans expect. A VBV bounds the bits in any span
//!   of T seconds by `maxrate * T + bufsize`. `bufsize` defaults to one
//!   second of `maxrate`: large enough to absorb an IDR (5-10 times a
//!   P-frame, here at every segment start) without crushing its quality,
//!   small enough that a 2-s segment peaks at 1.5 x maxrate (a 0.5-s part at
//!   3 x), which is what an HLS `BANDWIDTH` (peak segment bit rate) must allow
//!   for. Two seconds, common for VOD, would let a segment reach 2 x. No
//!   filler (`rc.b_filler`) and no NAL HRD (`i_nal_hrd`): hard CBR wastes
//!   bytes on every viewer and the HRD SEIs mean nothing in CMAF.
//! - Frame rate and timestamps (`--fps`, `--timebase`, `--force-cfr`): the
//!   rung's nominal `fps` goes to `i_fps_num/i_fps_den` because rate control
//!   needs it even so: it is the duration of the first and last frames, the
//!   basis of the level (and so of the VBV limits), and of the lookahead's
//!   costs. Pictures carry real timestamps and the input is variable: RTMP
//!   publishers drop frames under load and the pipeline's `fps_max` cap drops
//!   more. So `b_vfr_input = 1` (zerolatency turns it off; it is turned back
//!   on) with `i_timebase = 1/90000`: rate control and the VBV refill use the
//!   real duration of every frame, and a 25 fps source on a rung nominally 30
//!   still gets its bitrate. With `b_vfr_input = 0` x264 would assume `1/fps`
//!   per frame and undershoot (or overshoot) in proportion. The cost is one
//!   picture of delay (x264 adds `b_vfr_input` to its frame delay: a frame's
//!   duration is known when the next pts arrives), 33 ms at 30 fps, small
//!   beside a 0.5 s part. The SPS then signals `time_scale = 180000`,
//!   `fixed_frame_rate_flag = 0`; the [`VideoConfig::frame_rate`] reported is
//!   the nominal `fps`. Capping the frame rate (`fps_max`) is the pipeline's
//!   job: it drops pictures before they get here, and this encoder's rate
//!   control follows the timestamps of those it gets.
//! - GOP (`--keyint`, `--scenecut 0`, `--no-intra-refresh`, closed GOP): IDRs
//!   go exactly where the ladder wants segment boundaries and nowhere else.
//!   Scene-cut detection is off, since each rung would decide differently and
//!   break segment alignment across renditions. When a passthrough source rung
//!   drives IDR placement ([`EncoderSettings::source_idrs`]) `i_keyint_max`
//!   is `X264_KEYINT_MAX_INFINITE` and IDRs come only from `force_idr`
//!   (`x264_picture_t.i_type = X264_TYPE_IDR`); otherwise every `keyint_max`
//!   frames.
//! - Bitstream (`b_annexb = 0`, `b_repeat_headers = 0`, `b_aud = 0`): x264
//!   writes 4-byte big-endian NAL lengths itself. SPS and PPS go only into the
//!   `avcC` record (ISO/IEC 14496-15 §5.3.3; they never change for an
//!   encoder's lifetime, and every CMAF segment refers to the init segment),
//!   not into the samples. SEI NAL units are dropped too: with HRD, intra
//!   refresh, open GOP, pic_struct and HDR metadata off, the only SEI x264
//!   writes is its version/options banner (user data unregistered, ~600
//!   bytes).
//! - Profile (`--profile baseline|main|high`): `x264_param_apply_profile`,
//!   which also turns off what the profile forbids (B-frames and CABAC for
//!   baseline). The level is left for x264 to derive from size, rate and VBV.
//! - Threads (`--threads`): `threads`; 0 lets x264 choose (1.5 × cores per
//!   encoder), which oversubscribes a box running several rungs.
//! - Logging: x264's messages go to `tracing` (target `x264`) at warning and
//!   above, rather than to stderr.

use crate::media::avc::{self, AvcError, NAL_IDR, NAL_PPS, NAL_SPS};
use crate::media::{Timestamp, VideoConfig, VideoFrame, VIDEO_TIMESCALE};
use crate::pipeline::frame::{Picture, PictureMismatch};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::ffi::{c_int, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use thiserror::Error;
use x264_sys as sys;

/// The preset when a rung names none.
pub const DEFAULT_PRESET: &str = "veryfast";

/// Largest width or height accepted, in pixels: 8192 covers 8K (level 6.2's
/// largest frame is 139,264 macroblocks, e.g. 8192x4320).
pub const MAX_DIMENSION: u32 = 8192;

/// Highest bitrate or maxrate accepted, in kbit/s (1 Gbit/s): far above any
/// H.264 level, low enough that the arithmetic never overflows `c_int`.
pub const MAX_KBPS: u32 = 1_000_000;

/// x264's presets, fastest first (`x264_preset_names` in `x264.h`, a
/// header-only array that the library does not export).
pub const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Most threads per encoder (x264's `X264_THREAD_MAX`).
pub const MAX_THREADS: usize = 128;

/// Highest nominal frame rate accepted (the same bound as the SPS parser's).
pub const MAX_FPS: f64 = avc::MAX_FRAME_RATE;

/// The x264 timebase denominator: timestamps are handed to x264 in 90 kHz
/// ticks (exact for millisecond and 90 kHz input; the original timestamps are
/// kept and handed back, so the output is exact whatever the input's scale).
const X264_TIMEBASE: u32 = VIDEO_TIMESCALE;

/// Most pictures remembered between input and output. x264 holds at most
/// B-frames + lookahead + frame threads (well under 100 with any preset); past
/// this something is wrong, and the oldest entries are forgotten (their
/// output's pts is then derived from x264's, rounded) rather than growing.
const MAX_IN_FLIGHT: usize = 512;

/// Errors from configuring or running the encoder.
///
/// Whose fault: `Invalid*`, `UnknownPreset`, `UnknownProfile` are the rung's
/// configuration; `Picture*`, `MissingPts`, `PtsNotIncreasing` are the caller's
/// (the picture is refused, the encoder is untouched and the next picture may
/// be encoded); `Open`, `Headers`, `BadHeaders`, `Encode`, `NoSlices` are
/// internal (libx264 failed).
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("invalid encoder setting {field}: {reason}")]
    InvalidSettings { field: &'static str, reason: String },
    #[error("x264 has no preset {0:?} (ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo)")]
    UnknownPreset(String),
    #[error("x264 cannot apply profile {0:?} (baseline, main or high)")]
    UnknownProfile(String),
    #[error("x264_encoder_open rejected the parameters (see the x264 log)")]
    Open,
    #[error("x264_encoder_headers failed")]
    Headers,
    #[error("x264 wrote SPS/PPS that do not make a valid avcC: {0}")]
    BadHeaders(#[from] AvcError),
    #[error(transparent)]
    Picture(#[from] PictureMismatch),
    #[error("picture has no presentation timestamp")]
    MissingPts,
    #[error("picture pts {pts:?} is not after the previous one ({previous:?}); x264 needs increasing timestamps")]
    PtsNotIncreasing { pts: Timestamp, previous: Timestamp },
    #[error("x264_encoder_encode failed")]
    Encode,
    #[error("x264 returned an access unit without slices")]
    NoSlices,
    #[error("the encoder was flushed and takes no more pictures")]
    Flushed,
}

/// One rung's encoding parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSettings {
    /// Output size (the pictures' size); both even (4:2:0).
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate, for rate control and the level (see module docs).
    pub fps: f64,
    /// Target average bitrate (`--bitrate`).
    pub bitrate_kbps: u32,
    /// VBV peak rate (`--vbv-maxrate`); `None` = `bitrate_kbps` (CBR-like).
    pub maxrate_kbps: Option<u32>,
    /// VBV buffer (`--vbv-bufsize`); `None` = one second of maxrate.
    pub bufsize_kbits: Option<u32>,
    /// `baseline`, `main` or `high`; `None` = whatever the preset allows (High).
    pub profile: Option<String>,
    /// x264 preset name; `None` = [`DEFAULT_PRESET`].
    pub preset: Option<String>,
    /// Encoder threads; 0 = x264 chooses. With `low_latency`, slices per frame.
    pub threads: usize,
    /// IDR interval in frames when `source_idrs` is false.
    pub keyint_max: u32,
    /// A passthrough source rung drives IDR placement: IDRs only where
    /// `encode` is told `force_idr` (x264's own cadence is off). False: an IDR
    /// every `keyint_max` frames (and wherever forced).
    pub source_idrs: bool,
    /// `--tune zerolatency`: no B-frames, no lookahead, sliced threads; one
    /// access unit out per picture in, one picture behind.
    pub low_latency: bool,
}

impl EncoderSettings {
    /// VBV peak rate in kbit/s.
    pub fn maxrate(&self) -> u32 {
        self.maxrate_kbps.unwrap_or(self.bitrate_kbps)
    }

    /// VBV buffer size in kbit.
    pub fn bufsize(&self) -> u32 {
        self.bufsize_kbits.unwrap_or_else(|| self.maxrate())
    }

    fn validate(&self) -> Result<(), EncodeError> {
        let bad = |field, reason: String| Err(EncodeError::InvalidSettings { field, reason });
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v % 2 != 0 || v > MAX_DIMENSION {
                return bad(
                    field,
                    format!("{v} is not an even size in 2..={MAX_DIMENSION}"),
                );
            }
        }
        if !(self.fps.is_finite() && self.fps >= 0.001 && self.fps <= MAX_FPS) {
            return bad("fps", format!("{} is not in 0.001..={MAX_FPS}", self.fps));
        }
        if self.bitrate_kbps == 0 || self.bitrate_kbps > MAX_KBPS {
            return bad(
                "bitrate_kbps",
                format!("{} is not in 1..={MAX_KBPS}", self.bitrate_kbps),
            );
        }
        let maxrate = self.maxrate();
        if maxrate < self.bitrate_kbps || maxrate > MAX_KBPS {
            return bad(
                "maxrate_kbps",
                format!(
                    "{maxrate} is not in bitrate_kbps ({})..={MAX_KBPS}",
                    self.bitrate_kbps
                ),
            );
        }
        let bufsize = self.bufsize();
        if bufsize == 0 || bufsize > MAX_KBPS {
            return bad(
                "bufsize_kbits",
                format!("{bufsize} is not in 1..={MAX_KBPS}"),
            );
        }
        if self.threads > MAX_THREADS {
            return bad(
                "threads",
                format!("{} is above {MAX_THREADS}", self.threads),
            );
        }
        if !self.source_idrs
            && (self.keyint_max == 0 || self.keyint_max >= sys::X264_KEYINT_MAX_INFINITE)
        {
            return bad(
                "keyint_max",
                format!("{} frames is not a usable IDR interval", self.keyint_max),
            );
        }
        Ok(())
    }
}

/// The nominal frame rate as a fraction: NTSC rates (23.976, 29.97, 59.94...)
/// as `N*1000/1001`, anything else to the millihertz.
pub(crate) fn fps_fraction(fps: f64) -> (u32, u32) {
    let ntsc = fps * 1.001;
    if ntsc >= 1.0 && (ntsc - ntsc.round()).abs() < 0.005 && (fps - fps.round()).abs() > 0.005 {
        return (ntsc.round() as u32 * 1000, 1001);
    }
    let (mut num, mut den) = ((fps * 1000.0).round().max(1.0) as u32, 1000u32);
    let g = gcd(num, den);
    num /= g;
    den /= g;
    (num, den)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The open libx264 handle; closed on drop.
struct RawEncoder(NonNull<sys::x264_t>);

// Safety: an x264_t has no thread affinity: libx264 keeps no thread-local
// state tied to the opening thread, and its worker threads synchronise among
// themselves. Every call goes through `&mut self` (so one thread at a time),
// and the type is deliberately not `Sync`.
unsafe impl Send for RawEncoder {}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        // Safety: the pointer came from x264_encoder_open, is non-null, and is
        // closed exactly once (here); nothing borrowed from it outlives self.
        unsafe { sys::x264_encoder_close(self.0.as_ptr()) }
    }
}

/// One rung's x264 encoder. `Send`, not `Sync`.
pub struct Encoder {
    raw: RawEncoder,
    config: Arc<VideoConfig>,
    width: u32,
    height: u32,
    /// (x264 pts, original pts) of pictures given to x264 and not yet out.
    in_flight: VecDeque<(i64, Timestamp)>,
    /// The last picture's pts, in x264 ticks and as given.
    last_pts: Option<(i64, Timestamp)>,
    flushed: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("codec", &self.config.codec_string)
            .field("in_flight", &self.in_flight.len())
            .field("flushed", &self.flushed)
            .finish()
    }
}

impl Encoder {
    /// Open an encoder for one rung.
    pub fn new(settings: &EncoderSettings) -> Result<Encoder, EncodeError> {
        settings.validate()?;
        let mut param = params(settings)?;
        // Safety: `param` is a fully initialised x264_param_t (from
        // x264_param_default_preset, then plain field writes); x264_encoder_open
        // copies it and keeps no pointer into it. A null return is handled.
        let raw = unsafe { sys::x264_encoder_open(&mut param) };
        let raw = RawEncoder(NonNull::new(raw).ok_or(EncodeError::Open)?);
        let config = headers(&raw, settings.fps)?;
        Ok(Encoder {
            raw,
            config: Arc::new(config),
            width: settings.width,
            height: settings.height,
            in_flight: VecDeque::new(),
            last_pts: None,
            flushed: false,
        })
    }

    /// The decoder configuration for the rung's CMAF init segment: an avcC
    /// built from x264's SPS and PPS, parsed back with
    /// [`avc::video_config`]. `frame_rate` is the nominal `fps` (the SPS
    /// signals a variable rate).
    pub fn video_config(&self) -> Arc<VideoConfig> {
        self.config.clone()
    }

    /// Encode one picture; `force_idr` makes it an IDR (the pipeline passes
    /// `picture.source_idr` when a source rung drives IDRs).
    ///
    /// Returns the access unit x264 emits, if any: with `low_latency` the
    /// previous picture's (none for the first; see the module docs on
    /// `b_vfr_input`), otherwise an earlier picture's in decode order, or none
    /// while x264 fills its lookahead. [`Encoder::flush`] returns the rest.
    ///
    /// The data is AVCC (4-byte lengths) slices only, `keyframe` means it
    /// holds an IDR slice, `pts` is the picture's own timestamp exactly, and
    /// `dts` is on the same timescale (equal to `pts` without B-frames; before
    /// it, and possibly negative for the first frames, with them).
    ///
    /// A picture of the wrong size, or without a pts after the previous one,
    /// is refused with an error and the encoder is unchanged: the caller drops
    /// it and goes on.
    pub fn encode(
        &mut self,
        picture: &Picture,
        force_idr: bool,
    ) -> Result<Option<VideoFrame>, EncodeError> {
        if self.flushed {
            return Err(EncodeError::Flushed);
        }
        let strides = self.check_picture(picture)?;
        let pts = picture.pts.ok_or(EncodeError::MissingPts)?;
        let ticks = pts.rescale(X264_TIMEBASE).ticks;
        if let Some((last, previous)) = self.last_pts {
            if ticks <= last {
                return Err(EncodeError::PtsNotIncreasing { pts, previous });
            }
        }

        let mut pic_in = x264_picture();
        // Safety: `pic_in` is a valid, writable x264_picture_t.
        unsafe { sys::x264_picture_init(&mut pic_in) };
        pic_in.i_type = if force_idr {
            sys::X264_TYPE_IDR
        } else {
            sys::X264_TYPE_AUTO
        } as c_int;
        pic_in.i_pts = ticks;
        pic_in.img.i_csp = sys::X264_CSP_I420 as c_int;
        pic_in.img.i_plane = 3;
        for (i, plane) in picture.planes.iter().enumerate() {
            pic_in.img.i_stride[i] = strides[i];
            // x264 only reads input planes (it copies them into its own frame
            // inside x264_encoder_encode); the API just isn't const-correct.
            pic_in.img.plane[i] = plane.data.as_ptr().cast_mut();
        }

        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((ticks, pts));
        // From here x264 has the picture (even if the call fails), so later
        // pictures must come after it.
        self.last_pts = Some((ticks, pts));
        self.encode_raw(&mut pic_in)
    }

    /// Drain the access units x264 still holds (B-frames, lookahead, frame
    /// threads). The encoder takes no pictures afterwards.
    pub fn flush(&mut self) -> Result<Vec<VideoFrame>, EncodeError> {
        let mut out = Vec::new();
        if self.flushed {
            return Ok(out);
        }
        self.flushed = true;
        // Each call drains at most one frame (some calls, while frame threads
        // finish, none); bound the loop generously by what x264 says it holds
        // so that a misbehaving library cannot spin us forever.
        // Safety: the handle is open.
        let delayed = unsafe { sys::x264_encoder_delayed_frames(self.raw.0.as_ptr()) };
        let bound = usize::try_from(delayed).unwrap_or(0) * 2 + MAX_THREADS;
        for _ in 0..bound {
            // Safety: as above.
            if unsafe { sys::x264_encoder_delayed_frames(self.raw.0.as_ptr()) } <= 0 {
                break;
            }
            if let Some(frame) = self.encode_raw(ptr::null_mut())? {
                out.push(frame);
            }
        }
        self.in_flight.clear();
        Ok(out)
    }

    /// Check a picture's geometry against the encoder's; its strides as x264
    /// takes them.
    fn check_picture(&self, picture: &Picture) -> Result<[c_int; 3], EncodeError> {
        picture.check_i420(self.width, self.height)?;
        let mut strides = [0; 3];
        for (i, plane) in picture.planes.iter().enumerate() {
            // x264 takes strides as C ints
            strides[i] = c_int::try_from(plane.stride).map_err(|_| PictureMismatch::Plane {
                plane: i,
                width: plane.width,
                height: plane.height,
                stride: plane.stride,
                len: plane.data.len(),
            })?;
        }
        Ok(strides)
    }

    /// One `x264_encoder_encode` call (`pic_in` null to flush).
    fn encode_raw(
        &mut self,
        pic_in: *mut sys::x264_picture_t,
    ) -> Result<Option<VideoFrame>, EncodeError> {
        let mut nals: *mut sys::x264_nal_t = ptr::null_mut();
        let mut n_nals: c_int = 0;
        let mut pic_out = x264_picture();
        // Safety: the handle is open; `pic_in` is null or a picture whose
        // planes were checked to hold width x height samples at their strides
        // (x264 copies them before returning); the out-pointers are valid.
        let size = unsafe {
            sys::x264_encoder_encode(
                self.raw.0.as_ptr(),
                &mut nals,
                &mut n_nals,
                pic_in,
                &mut pic_out,
            )
        };
        if size < 0 {
            return Err(EncodeError::Encode);
        }
        if size == 0 || n_nals <= 0 || nals.is_null() {
            return Ok(None);
        }
        // Safety: x264 returned `n_nals` NAL descriptors at `nals`, valid
        // until the next call on this handle; they are copied out below.
        let nals = unsafe { std::slice::from_raw_parts(nals, n_nals as usize) };
        let mut data = BytesMut::with_capacity(size as usize);
        let mut keyframe = false;
        let mut slices = false;
        for nal in nals {
            // Only slices (types 1-5) go into the sample: parameter sets live
            // in the avcC; SEI, AUD and the rest are not wanted in CMAF
            // samples (see module docs).
            let nal_type = u8::try_from(nal.i_type & 0x1f).unwrap_or(0);
            let Ok(len) = usize::try_from(nal.i_payload) else {
                continue;
            };
            if !(1..=5).contains(&nal_type) || nal.p_payload.is_null() {
                continue;
            }
            // Safety: with b_annexb = 0 each payload is `i_payload` bytes at
            // `p_payload` (4-byte length then the NAL unit), inside x264's
            // output buffer, valid until the next call; copied here.
            let payload = unsafe { std::slice::from_raw_parts(nal.p_payload, len) };
            slices = true;
            keyframe |= nal_type == NAL_IDR;
            data.extend_from_slice(payload);
        }
        if !slices {
            return Err(EncodeError::NoSlices);
        }
        let (pts, dts) = self.timestamps(pic_out.i_pts, pic_out.i_dts);
        Ok(Some(VideoFrame {
            dts,
            pts,
            keyframe,
            data: data.freeze(),
        }))
    }

    /// The original timestamps of an output picture, from x264's.
    fn timestamps(&mut self, pts: i64, dts: i64) -> (Timestamp, Timestamp) {
        let found = self.in_flight.iter().position(|&(t, _)| t == pts);
        let original = match found.and_then(|i| self.in_flight.remove(i)) {
            Some((_, ts)) => ts,
            // Not remembered (see MAX_IN_FLIGHT): x264's own, rounded to the
            // input's scale.
            None => {
                let scale = self.last_pts.map_or(X264_TIMEBASE, |(_, t)| t.timescale);
                Timestamp::new(pts, X264_TIMEBASE).rescale(scale)
            }
        };
        let dts = if dts == pts {
            original
        } else {
            Timestamp::new(dts, X264_TIMEBASE)
                .rescale(original.timescale)
                .min(original)
        };
        (original, dts)
    }
}

/// An all-zero x264_picture_t, to be initialised by x264.
fn x264_picture() -> sys::x264_picture_t {
    // Safety: x264_picture_t is plain C data (integers, raw pointers,
    // nullable function pointers as `Option`), for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// The x264 parameters for a rung (see module docs for each choice).
fn params(s: &EncoderSettings) -> Result<sys::x264_param_t, EncodeError> {
    let preset_name = s.preset.as_deref().unwrap_or(DEFAULT_PRESET);
    let preset = CString::new(preset_name)
        .ok()
        .filter(|_| known_preset(preset_name))
        .ok_or_else(|| EncodeError::UnknownPreset(preset_name.to_owned()))?;
    let tune = s.low_latency.then_some(c"zerolatency");

    let mut p = std::mem::MaybeUninit::<sys::x264_param_t>::uninit();
    // Safety: x264_param_default_preset first fills every field of the
    // struct with defaults (x264_param_default), then applies the preset and
    // tune, whose names it only reads during the call. It returns < 0 for an
    // unknown name, and then the struct is still fully initialised.
    let rc = unsafe {
        sys::x264_param_default_preset(
            p.as_mut_ptr(),
            preset.as_ptr(),
            tune.map_or(ptr::null(), |t| t.as_ptr()),
        )
    };
    if rc < 0 {
        return Err(EncodeError::UnknownPreset(preset_name.to_owned()));
    }
    // Safety: initialised by x264_param_default_preset (above).
    let mut p = unsafe { p.assume_init() };

    // Values were validated, so these conversions cannot truncate.
    let int = |v: u32| c_int::try_from(v).unwrap_or(c_int::MAX);
    p.i_width = int(s.width);
    p.i_height = int(s.height);
    p.i_csp = sys::X264_CSP_I420 as c_int;
    p.i_bitdepth = 8;
    p.i_threads = c_int::try_from(s.threads).unwrap_or(sys::X264_THREADS_AUTO as c_int);

    let (fps_num, fps_den) = fps_fraction(s.fps);
    p.i_fps_num = fps_num;
    p.i_fps_den = fps_den;
    p.b_vfr_input = 1;
    p.i_timebase_num = 1;
    p.i_timebase_den = X264_TIMEBASE;

    p.rc.i_rc_method = sys::X264_RC_ABR as c_int;
    p.rc.i_bitrate = int(s.bitrate_kbps);
    p.rc.i_vbv_max_bitrate = int(s.maxrate());
    p.rc.i_vbv_buffer_size = int(s.bufsize());
    p.rc.b_filler = 0;
    p.i_nal_hrd = sys::X264_NAL_HRD_NONE as c_int;

    p.i_scenecut_threshold = 0;
    p.b_intra_refresh = 0;
    p.b_open_gop = 0;
    p.i_keyint_max = if s.source_idrs {
        sys::X264_KEYINT_MAX_INFINITE as c_int
    } else {
        int(s.keyint_max)
    };

    p.b_annexb = 0;
    p.b_repeat_headers = 0;
    p.b_aud = 0;

    p.i_log_level = sys::X264_LOG_WARNING as c_int;
    install_logger(&mut p);

    if let Some(profile) = &s.profile {
        let name = CString::new(profile.as_str())
            .map_err(|_| EncodeError::UnknownProfile(profile.clone()))?;
        // x264 also takes high10/high422/high444, which cannot carry our
        // 8-bit 4:2:0 at its best; only the three 8-bit 4:2:0 profiles.
        if !matches!(profile.as_str(), "baseline" | "main" | "high") {
            return Err(EncodeError::UnknownProfile(profile.clone()));
        }
        // Safety: `p` is initialised; the name is only read during the call.
        if unsafe { sys::x264_param_apply_profile(&mut p, name.as_ptr()) } < 0 {
            return Err(EncodeError::UnknownProfile(profile.clone()));
        }
    }
    Ok(p)
}

/// Whether libx264 has this preset; asked before `x264_param_default_preset`,
/// which would print its refusal to stderr.
fn known_preset(name: &str) -> bool {
    PRESETS.contains(&name)
}

/// SPS and PPS from x264, as the rung's decoder configuration.
fn headers(raw: &RawEncoder, fps: f64) -> Result<VideoConfig, EncodeError> {
    let mut nals: *mut sys::x264_nal_t = ptr::null_mut();
    let mut n_nals: c_int = 0;
    // Safety: the handle is open and the out-pointers are valid.
    let rc = unsafe { sys::x264_encoder_headers(raw.0.as_ptr(), &mut nals, &mut n_nals) };
    if rc < 0 || n_nals <= 0 || nals.is_null() {
        return Err(EncodeError::Headers);
    }
    // Safety: x264 returned `n_nals` descriptors at `nals`, valid until the
    // next call on this handle; everything is copied before returning.
    let nals = unsafe { std::slice::from_raw_parts(nals, n_nals as usize) };
    let (mut sps, mut pps) = (None, None);
    for nal in nals {
        let Ok(len) = usize::try_from(nal.i_payload) else {
            continue;
        };
        if nal.p_payload.is_null() || len <= 4 {
            continue;
        }
        // Safety: `len` bytes at `p_payload` (4-byte length prefix, then the
        // NAL unit), valid until the next call; copied into a Vec here.
        let payload = unsafe { std::slice::from_raw_parts(nal.p_payload, len) };
        let unit = payload[4..].to_vec();
        match avc::nal_type(&unit) {
            Some(NAL_SPS) => sps = sps.or(Some(unit)),
            Some(NAL_PPS) => pps = pps.or(Some(unit)),
            _ => {}
        }
    }
    let (sps, pps) = sps.zip(pps).ok_or(EncodeError::Headers)?;
    Ok(avc::config_from_parameter_sets(&sps, &pps, fps)?)
}

/// Send x264's log lines to `tracing`.
///
/// x264 hands a printf format and a `va_list`; formatting a `va_list` needs
/// unstable Rust, so the format string itself is logged (it names the
/// problem, e.g. "VBV underflow (frame %d, %.0f bits)"). The `va_list`
/// parameter's type differs between targets, so this is x86-64 only; elsewhere
/// x264 writes to stderr at the same level.
#[cfg(target_arch = "x86_64")]
fn install_logger(p: &mut sys::x264_param_t) {
    unsafe extern "C" fn log(
        _private: *mut std::ffi::c_void,
        level: c_int,
        fmt: *const std::ffi::c_char,
        _args: *mut sys::__va_list_tag,
    ) {
        if fmt.is_null() {
            return;
        }
        // Safety: x264 passes a NUL-terminated format string, valid for the
        // duration of the call.
        let msg = unsafe { std::ffi::CStr::from_ptr(fmt) }.to_string_lossy();
        let msg = msg.trim_end();
        match u32::try_from(level) {
            Ok(sys::X264_LOG_ERROR) => tracing::error!(target: "x264", "{msg}"),
            Ok(sys::X264_LOG_WARNING) => tracing::warn!(target: "x264", "{msg}"),
            Ok(sys::X264_LOG_INFO) => tracing::debug!(target: "x264", "{msg}"),
            _ => tracing::trace!(target: "x264", "{msg}"),
        }
    }
    p.pf_log = Some(log);
    p.p_log_private = ptr::null_mut();
}

#[cfg(not(target_arch = "x86_64"))]
fn install_logger(_p: &mut sys::x264_param_t) {}

#[cfg(test)]
mod tests {
    //! Real encodes, checked by ffprobe on the Annex B stream they make.
    //! Small (320x240, 3 s at 30 fps) so that they stay cheap on two cores.

    use super::*;
    use crate::media::MILLIS;
    use serde_json::Value;
    use std::collections::BTreeSet;
    use std::process::Command;

    const W: u32 = 320;
    const H: u32 = 240;
    const FPS: f64 = 30.0;
    const FRAMES: usize = 90;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: W,
            height: H,
            fps: FPS,
            bitrate_kbps: 500,
            maxrate_kbps: None,
            bufsize_kbits: None,
            profile: None,
            preset: None,
            threads: 1,
            keyint_max: 60,
            source_idrs: false,
            low_latency: true,
        }
    }

    /// Millisecond pts of frame `i` at 30 fps (33, 67, 100...: uneven ticks,
    /// so the round trip through x264's 90 kHz is really exercised).
    fn pts_of(i: usize) -> Timestamp {
        Timestamp::new((i as f64 * 1000.0 / FPS).round() as i64, MILLIS)
    }

    /// `frames` raw I420 pictures from an ffmpeg filter graph.
    fn ffmpeg_pictures(graph: &str, frames: usize) -> Vec<Picture> {
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-filter_complex", graph, "-frames:v"])
            .arg(frames.to_string())
            .args(["-pix_fmt", "yuv420p", "-f", "rawvideo", "-"])
            .output()
            .expect("ffmpeg runs (make test installs it)");
        assert!(
            out.status.success(),
            "ffmpeg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (w, h) = (W as usize, H as usize);
        let frame_len = w * h * 3 / 2;
        assert_eq!(out.stdout.len(), frame_len * frames);
        out.stdout
            .chunks_exact(frame_len)
            .enumerate()
            .map(|(i, raw)| {
                let mut p = Picture::new(W, H);
                let mut at = 0;
                for plane in &mut p.planes {
                    for y in 0..plane.height {
                        let n = plane.width;
                        plane.row_mut(y).copy_from_slice(&raw[at..at + n]);
                        at += n;
                    }
                }
                p.pts = Some(pts_of(i));
                p.seq = i as u64;
                p
            })
            .collect()
    }

    fn testsrc(frames: usize) -> Vec<Picture> {
        ffmpeg_pictures(&format!("testsrc2=s={W}x{H}:r={FPS}"), frames)
    }

    /// NAL types of an AVCC access unit.
    fn nal_types(frame: &VideoFrame) -> Vec<u8> {
        avc::nal_units(&frame.data, 4)
            .map(|n| avc::nal_type(n.expect("well-formed AVCC")).unwrap_or(0))
            .collect()
    }

    /// ffprobe's view of the stream: (stream, frames in decode order).
    fn probe(name: &str, config: &VideoConfig, frames: &[VideoFrame]) -> (Value, Vec<Value>) {
        let avcc = avc::AvcDecoderConfig::parse(&config.record).expect("avcC parses");
        let mut annexb = Vec::new();
        let nals = avcc.sps.iter().chain(&avcc.pps).map(|b| b.to_vec());
        let nals = nals.chain(frames.iter().flat_map(|f| {
            avc::nal_units(&f.data, 4)
                .map(|n| n.expect("well-formed AVCC").to_vec())
                .collect::<Vec<_>>()
        }));
        for nal in nals {
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(&nal);
        }
        let path =
            std::env::temp_dir().join(format!("ladder-x264-{name}-{}.h264", std::process::id()));
        std::fs::write(&path, &annexb).expect("write temp file");
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-f", "h264", "-show_streams", "-show_frames"])
            .args(["-of", "json"])
            .arg(&path)
            .output()
            .expect("ffprobe runs");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "ffprobe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
        let stream = json["streams"][0].clone();
        let frames = json["frames"].as_array().cloned().unwrap_or_default();
        (stream, frames)
    }

    fn assert_no_non_slice_nals(frames: &[VideoFrame]) {
        for f in frames {
            let types = nal_types(f);
            assert!(
                types.iter().all(|t| matches!(t, 1 | 5)),
                "only slices in samples, got NAL types {types:?}"
            );
            assert_eq!(f.keyframe, types.contains(&NAL_IDR));
        }
    }

    #[test]
    fn low_latency_puts_idrs_exactly_where_forced_with_one_access_unit_per_picture() {
        let forced: BTreeSet<usize> = [0, 17, 45, 46, 80].into();
        let s = EncoderSettings {
            profile: Some("main".into()),
            // x264's cadence must not apply when the source drives IDRs: with
            // it, IDRs would also appear at 30 and 60.
            keyint_max: 30,
            source_idrs: true,
            threads: 2,
            ..settings()
        };
        let mut enc = Encoder::new(&s).expect("encoder opens");
        let config = enc.video_config();
        let mut out = Vec::new();
        let pictures = testsrc(FRAMES);
        for (i, pic) in pictures.iter().enumerate() {
            // b_vfr_input costs exactly one picture of delay (x264 needs the
            // next pts for a frame's duration): picture i-1 comes out now.
            let frame = enc.encode(pic, forced.contains(&i)).expect("encodes");
            assert_eq!(frame.is_some(), i > 0, "one picture of delay, no more");
            out.extend(frame);
        }
        out.extend(enc.flush().expect("flushes"));
        assert_eq!(out.len(), FRAMES);
        for (frame, pic) in out.iter().zip(&pictures) {
            let pts = pic.pts.expect("test pictures have pts");
            assert_eq!(
                (frame.pts.ticks, frame.pts.timescale),
                (pts.ticks, pts.timescale),
                "pts round-trips exactly, in order"
            );
            assert_eq!(
                (frame.dts.ticks, frame.dts.timescale),
                (pts.ticks, pts.timescale),
                "no B-frames: dts == pts"
            );
        }

        let keyframes: BTreeSet<usize> = (0..out.len()).filter(|&i| out[i].keyframe).collect();
        assert_eq!(keyframes, forced);
        assert_no_non_slice_nals(&out);

        // The avcC describes the stream.
        assert_eq!((config.width, config.height), (W, H));
        assert_eq!(config.profile_idc, 77, "Main");
        assert!(
            config.codec_string.starts_with("avc1.4d"),
            "{}",
            config.codec_string
        );
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(config.frame_rate, Some(FPS));

        let (stream, frames) = probe("forced", &config, &out);
        assert_eq!(stream["profile"], "Main");
        assert_eq!(stream["width"], W);
        assert_eq!(stream["height"], H);
        assert_eq!(stream["has_b_frames"], 0);
        assert_eq!(stream["level"], config.level_idc);
        assert_eq!(frames.len(), FRAMES, "every access unit decodes");
        let decoded_keys: BTreeSet<usize> = (0..frames.len())
            .filter(|&i| frames[i]["key_frame"] == 1)
            .collect();
        assert_eq!(decoded_keys, forced);
        assert!(frames.iter().all(|f| f["pict_type"] != "B"));
    }

    #[test]
    fn without_forcing_an_idr_comes_every_keyint_max_frames_and_b_frames_keep_timestamps() {
        let s = EncoderSettings {
            profile: Some("high".into()),
            keyint_max: 30,
            low_latency: false,
            ..settings()
        };
        let mut enc = Encoder::new(&s).expect("encoder opens");
        let pictures = testsrc(FRAMES);
        let mut out = Vec::new();
        for pic in &pictures {
            out.extend(enc.encode(pic, false).expect("encodes"));
        }
        assert!(out.len() < FRAMES, "lookahead and B-frames delay output");
        out.extend(enc.flush().expect("flushes"));
        assert_eq!(out.len(), FRAMES);

        // Every pts comes back exactly, once; map each output to its input.
        let index_of = |ts: Timestamp| {
            (0..FRAMES)
                .find(|&i| {
                    let p = pts_of(i);
                    (p.ticks, p.timescale) == (ts.ticks, ts.timescale)
                })
                .expect("output pts is an input pts")
        };
        let indices: BTreeSet<usize> = out.iter().map(|f| index_of(f.pts)).collect();
        assert_eq!(indices.len(), FRAMES);

        let keyframes: BTreeSet<usize> = out
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| index_of(f.pts))
            .collect();
        assert_eq!(keyframes, [0, 30, 60].into());

        // Decode order: dts increasing, never after pts, and B-frames in use
        // (so the low-latency test's dts == pts means something).
        assert!(out.windows(2).all(|w| w[0].dts < w[1].dts));
        assert!(out
            .iter()
            .all(|f| f.dts <= f.pts && f.dts.timescale == MILLIS));
        assert!(out.iter().any(|f| f.dts < f.pts));
        assert_no_non_slice_nals(&out);

        let config = enc.video_config();
        assert_eq!(config.profile_idc, 100, "High");
        let (stream, frames) = probe("cadence", &config, &out);
        assert_eq!(stream["profile"], "High");
        assert_ne!(stream["has_b_frames"], 0);
        assert_eq!(frames.len(), FRAMES);
        assert_eq!(frames.iter().filter(|f| f["key_frame"] == 1).count(), 3);
        assert!(frames.iter().any(|f| f["pict_type"] == "B"));
    }

    /// Bits in the heaviest window of `frames_per_window` consecutive frames.
    fn peak_window_bits(out: &[VideoFrame], frames_per_window: usize) -> usize {
        out.windows(frames_per_window)
            .map(|w| w.iter().map(|f| f.data.len() * 8).sum::<usize>())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn average_bitrate_is_within_15_percent_of_target_on_moving_content() {
        let s = settings();
        let mut enc = Encoder::new(&s).expect("encoder opens");
        let mut out = Vec::new();
        for pic in &testsrc(FRAMES) {
            out.extend(enc.encode(pic, false).expect("encodes"));
        }
        out.extend(enc.flush().expect("flushes"));
        assert_eq!(out.len(), FRAMES);
        let bits: usize = out.iter().map(|f| f.data.len() * 8).sum();
        let kbps = bits as f64 / (FRAMES as f64 / FPS) / 1000.0;
        let target = f64::from(s.bitrate_kbps);
        assert!(
            (kbps - target).abs() <= 0.15 * target,
            "{kbps:.0} kbit/s for a {target} kbit/s target"
        );
    }

    /// VBV check, two ways, on content made to tempt the rate control: 1.5 s
    /// of flat grey (nearly free, so ABR banks bits) then 1.5 s of noisy
    /// test pattern (where ABR alone spends them: about 7x maxrate in the
    /// worst second, measured with the VBV off).
    ///
    /// 1. Simulate the VBV: the buffer starts `f_vbv_buffer_init` (0.9) full,
    ///    each frame takes its bits out, and it refills at maxrate for the
    ///    frame's duration up to `bufsize`. It must never run dry (a small
    ///    slack covers the model's details, e.g. when x264 counts refill).
    /// 2. Windows: a compliant stream puts at most `maxrate * T + bufsize` bits
    ///    in any span of T seconds. With `bufsize` half a second of maxrate,
    ///    no 1-s window (30 frames) may exceed 1.5 x maxrate. (With the default
    ///    one-second buffer the bound is 2 x maxrate, and x264 reaches 1.64 x
    ///    here when it spends a full buffer on the IDR after the cut.)
    #[test]
    fn vbv_is_never_overdrawn_and_no_one_second_window_passes_one_and_a_half_maxrate() {
        let s = EncoderSettings {
            bufsize_kbits: Some(250),
            ..settings()
        };
        let graph = format!(
            "color=c=gray:s={W}x{H}:r={FPS}:d=1.5[a];\
             testsrc2=s={W}x{H}:r={FPS}:d=1.5,noise=alls=40:allf=t+u[b];\
             [a][b]concat=n=2:v=1:a=0"
        );
        let mut enc = Encoder::new(&s).expect("encoder opens");
        let mut out = Vec::new();
        for pic in &ffmpeg_pictures(&graph, FRAMES) {
            out.extend(enc.encode(pic, false).expect("encodes"));
        }
        out.extend(enc.flush().expect("flushes"));
        assert_eq!(out.len(), FRAMES);

        let maxrate = f64::from(s.maxrate()) * 1000.0;
        let bufsize = f64::from(s.bufsize()) * 1000.0;
        let mut fullness = 0.9 * bufsize;
        for (i, f) in out.iter().enumerate() {
            fullness -= (f.data.len() * 8) as f64;
            assert!(
                fullness >= -0.05 * bufsize,
                "VBV underflow at frame {i}: {fullness:.0} bits"
            );
            let duration = (pts_of(i + 1) - pts_of(i)).as_secs_f64();
            fullness = (fullness + maxrate * duration).min(bufsize);
        }

        let peak = peak_window_bits(&out, FPS as usize) as f64;
        assert!(
            peak <= 1.5 * maxrate,
            "a 1-s window holds {peak} bits, maxrate is {maxrate} bit/s"
        );
    }

    #[test]
    fn settings_are_checked_before_x264_sees_them() {
        let invalid = |s: EncoderSettings| match Encoder::new(&s) {
            Err(EncodeError::InvalidSettings { field, .. }) => field,
            other => panic!("expected InvalidSettings, got {other:?}"),
        };
        assert_eq!(
            invalid(EncoderSettings {
                width: 321,
                ..settings()
            }),
            "width"
        );
        assert_eq!(
            invalid(EncoderSettings {
                height: 0,
                ..settings()
            }),
            "height"
        );
        assert_eq!(
            invalid(EncoderSettings {
                fps: f64::NAN,
                ..settings()
            }),
            "fps"
        );
        assert_eq!(
            invalid(EncoderSettings {
                bitrate_kbps: 0,
                ..settings()
            }),
            "bitrate_kbps"
        );
        assert_eq!(
            invalid(EncoderSettings {
                maxrate_kbps: Some(100),
                ..settings()
            }),
            "maxrate_kbps"
        );
        assert_eq!(
            invalid(EncoderSettings {
                keyint_max: 0,
                ..settings()
            }),
            "keyint_max"
        );
        assert_eq!(
            invalid(EncoderSettings {
                threads: 1000,
                ..settings()
            }),
            "threads"
        );
        // keyint_max is not used when the source drives IDRs.
        assert!(Encoder::new(&EncoderSettings {
            keyint_max: 0,
            source_idrs: true,
            ..settings()
        })
        .is_ok());

        let preset = EncoderSettings {
            preset: Some("warp".into()),
            ..settings()
        };
        assert!(matches!(Encoder::new(&preset), Err(EncodeError::UnknownPreset(p)) if p == "warp"));
        for profile in ["high10", "extended", "bogus"] {
            let s = EncoderSettings {
                profile: Some(profile.into()),
                ..settings()
            };
            assert!(
                matches!(Encoder::new(&s), Err(EncodeError::UnknownProfile(_))),
                "{profile}"
            );
        }
        let baseline = EncoderSettings {
            profile: Some("baseline".into()),
            ..settings()
        };
        let enc = Encoder::new(&baseline).expect("baseline opens");
        assert_eq!(enc.video_config().profile_idc, 66);
    }

    #[test]
    fn bad_pictures_are_refused_and_the_encoder_carries_on() {
        let s = EncoderSettings {
            width: 64,
            height: 48,
            ..settings()
        };
        let mut enc = Encoder::new(&s).expect("encoder opens");
        let picture = |i: usize| {
            let mut p = Picture::new(64, 48);
            p.pts = Some(pts_of(i));
            p
        };

        let mut wrong_size = Picture::new(64, 32);
        wrong_size.pts = Some(pts_of(0));
        assert!(matches!(
            enc.encode(&wrong_size, false),
            Err(EncodeError::Picture(PictureMismatch::Size { .. }))
        ));

        let mut short = picture(0);
        short.planes[2].data.truncate(10);
        assert!(matches!(
            enc.encode(&short, false),
            Err(EncodeError::Picture(PictureMismatch::Plane {
                plane: 2,
                ..
            }))
        ));

        let mut no_pts = picture(0);
        no_pts.pts = None;
        assert!(matches!(
            enc.encode(&no_pts, false),
            Err(EncodeError::MissingPts)
        ));

        assert!(enc.encode(&picture(5), true).expect("encodes").is_none());
        for stale in [5, 4] {
            assert!(matches!(
                enc.encode(&picture(stale), false),
                Err(EncodeError::PtsNotIncreasing { .. })
            ));
        }
        // A pts in another timescale is fine as long as it moves forward,
        // and comes back in its own timescale.
        let mut later = picture(0);
        later.pts = Some(Timestamp::new(90_000, VIDEO_TIMESCALE));
        let first = enc.encode(&later, false).expect("encodes");
        let first = first.expect("the refusals left the first picture in");
        assert_eq!((first.pts.ticks, first.pts.timescale), (167, MILLIS));
        assert!(first.keyframe);

        let last = enc.flush().expect("flushes");
        assert_eq!(last.len(), 1);
        assert_eq!(
            (last[0].pts.ticks, last[0].pts.timescale),
            (90_000, VIDEO_TIMESCALE)
        );
        assert!(matches!(
            enc.encode(&picture(10), false),
            Err(EncodeError::Flushed)
        ));
        assert!(enc.flush().expect("flushing twice is harmless").is_empty());
    }

    #[test]
    fn frame_rates_become_exact_fractions() {
        assert_eq!(fps_fraction(30.0), (30, 1));
        assert_eq!(fps_fraction(25.0), (25, 1));
        assert_eq!(fps_fraction(12.5), (25, 2));
        assert_eq!(fps_fraction(29.97), (30_000, 1001));
        assert_eq!(fps_fraction(30_000.0 / 1001.0), (30_000, 1001));
        assert_eq!(fps_fraction(59.94), (60_000, 1001));
        assert_eq!(fps_fraction(23.976), (24_000, 1001));
    }

    #[test]
    fn vbv_defaults_are_cbr_like_with_one_second_of_buffer() {
        let s = settings();
        assert_eq!(s.maxrate(), 500);
        assert_eq!(s.bufsize(), 500);
        let s = EncoderSettings {
            maxrate_kbps: Some(800),
            ..settings()
        };
        assert_eq!(s.bufsize(), 800);
    }

    #[test]
    fn encoder_is_send() {
        fn send<T: Send>() {}
        send::<Encoder>();
    }
}
