//! One rung's H.264 on NVENC, from device NV12 pictures (issue 4, "NVENC").
//!
//! Three parts:
//!
//! - **Parameters**, pure and tested without a GPU: [`nvenc_params`] turns a
//!   [`RungPlan`] and the rung's size and frame rate into [`NvencParams`];
//!   [`apply_config`], [`initialize_params`] and [`pic_params`] write them into
//!   the SDK's structures (on top of the driver's preset configuration).
//! - **Session accounting**: [`SessionRegistry`] counts open sessions per GPU
//!   and refuses one beyond the driver's cap ([`nvenc::session_limit`]:
//!   GeForce-class boards are capped at [`DRIVER_SESSION_CAP`] system-wide,
//!   datacenter boards are not).
//! - **The encoder**: [`NvencEncoder`] opens a session on the channel's GPU
//!   (its CUDA context), registers a small pool of device NV12 inputs, and per
//!   picture maps, encodes, locks the bitstream and returns the access unit as
//!   an AVCC [`VideoFrame`] plus the rung's [`VideoConfig`] (avcC from
//!   `nvEncGetSequenceParams`).
//!
//! # Parameters, and why
//!
//! | rung | NVENC |
//! | --- | --- |
//! | preset `ultrafast`, `superfast` | `NV_ENC_PRESET_P1_GUID` |
//! | preset `veryfast` (the default, as for x264) | `P2` |
//! | preset `faster`, `fast` | `P3` |
//! | preset `medium`, `slow`, `slower`, `veryslow`, `placebo` | `P4` (nothing slower: live) |
//! | — | `NV_ENC_TUNING_INFO_LOW_LATENCY` |
//! | profile `baseline` / `main` / `high` (default) | the profile GUID; baseline also CAVLC |
//! | `bitrate_kbps` | `averageBitRate` (bit/s) |
//! | `maxrate_kbps` (default: bitrate) | `maxBitRate` (bit/s); CBR when equal to the bitrate, VBR capped at it when above |
//! | — | `vbvBufferSize` = 1 s of maxrate (bits), as the x264 wrapper's `bufsize` |
//! | — | `vbvInitialDelay` = 90 % of the buffer (x264's `vbv_init` default) |
//! | — | `frameIntervalP = 1` (IPPP, no B-frames), `zeroReorderDelay = 1`, no lookahead |
//! | — | `gopLength = idrPeriod = NVENC_INFINITE_GOPLENGTH`: IDRs only where forced |
//! | force IDR | `NV_ENC_PIC_FLAG_FORCEIDR \| NV_ENC_PIC_FLAG_OUTPUT_SPSPPS` |
//! | — | `repeatSPSPPS = 1`, `outputAUD = 0`, level auto |
//! | fps | `frameRateNum/Den` (NTSC rates as N*1000/1001) |
//!
//! Tuning: `LOW_LATENCY`, not `ULTRA_LOW_LATENCY`. Both give IPPP with no
//! reordering; ULL further trades quality for sub-frame latency (cloud gaming,
//! a VBV of about one frame), which LL-HLS parts of 0.5 s do not need, and
//! our VBV is one second anyway.
//!
//! Rate control: nvEncodeAPI.h says `maxBitRate` "is used for VBR and ignored
//! for CBR". So a rung whose maxrate is its bitrate (the default) is CBR, and
//! one that asks for a higher peak gets VBR with that peak, which is what the
//! x264 wrapper's ABR + VBV does with the same settings.
//!
//! Nothing here has run on a GPU with NVENC: the parameters and the session
//! count are tested here; [`selftest_checks`] encodes on a GPU that has NVENC
//! (an L4, say) and says "no NVENC on this GPU" on an H100/H200.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cudarc::driver::CudaContext;
use nvidia_video_codec_sdk::sys::nvEncodeAPI as enc;

use super::driver::{self, Driver};
use super::kernels::{ChromaSiting, Nv12, ScaleFilter};
use super::nvenc::{
    self, EncodeSession, EncodeStatus, Nvenc, NvencError, SessionLimit, SessionLimitKind,
    PIC_TYPE_B, PIC_TYPE_IDR,
};
use super::scale::{self, CudaScaler, DeviceNv12, DeviceNv12Buffer, ScaleError};
use super::selftest::{Check, Outcome};
use crate::media::avc::{self, AvcError, NAL_PPS, NAL_SPS};
use crate::media::{Timestamp, VideoConfig, VideoFrame, VIDEO_TIMESCALE};
use crate::pipeline::cpu::x264::{fps_fraction, DEFAULT_PRESET, MAX_FPS, MAX_KBPS, PRESETS};
use crate::pipeline::plan::{RungCodec, RungPlan};

/// Concurrent NVENC sessions the driver allows on GeForce-class boards, all
/// such boards of the system together (GPU.md; no API reports it).
pub const DRIVER_SESSION_CAP: usize = 8;

/// Largest width or height NVENC's H.264 takes (`NV_ENC_CAPS_WIDTH_MAX` is
/// 4096 on every generation so far).
pub const MAX_DIMENSION: u32 = 4096;

/// Device NV12 inputs registered per session: one being written, one being
/// encoded, and slack for an encoder that holds a picture
/// (`NV_ENC_ERR_NEED_MORE_INPUT`, which low-latency IPPP should never do).
pub const INPUT_POOL: usize = 4;

/// `inputTimeStamp` ticks: 90 kHz.
const TIMEBASE: u32 = VIDEO_TIMESCALE;

/// Errors of the NVENC encoder.
///
/// Whose fault: `InvalidSettings`, `UnknownPreset`, `UnknownProfile`,
/// `Codec` are the rung's configuration; `SessionCap` and `NoEncoder` the
/// machine's capacity (use another GPU or the CPU); `PtsNotIncreasing`,
/// `Flushed`, `PoolExhausted` the caller's; the rest internal (driver).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("invalid NVENC setting {field}: {reason}")]
    InvalidSettings { field: &'static str, reason: String },
    #[error("no preset {0:?} (ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo)")]
    UnknownPreset(String),
    #[error("NVENC H.264 has no profile {0:?} (baseline, main or high)")]
    UnknownProfile(String),
    #[error("rung {0:?} is AV1; this encoder is NVENC H.264")]
    Codec(String),
    #[error(transparent)]
    SessionCap(#[from] SessionError),
    #[error("no NVENC on GPU {gpu}: {source}")]
    NoEncoder { gpu: usize, source: NvencError },
    #[error(transparent)]
    Nvenc(#[from] NvencError),
    #[error(transparent)]
    Cuda(#[from] ScaleError),
    #[error("NVENC wrote SPS/PPS that make no valid avcC: {0}")]
    Headers(#[from] AvcError),
    #[error("NVENC holds all {0} input buffers (it should hold none with IPPP)")]
    PoolExhausted(usize),
    #[error("picture pts {pts:?} is not after the previous one ({previous:?})")]
    PtsNotIncreasing { pts: Timestamp, previous: Timestamp },
    #[error("NVENC returned an access unit without slices")]
    NoSlices,
    #[error("the encoder was flushed and takes no more pictures")]
    Flushed,
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// NVENC's presets used here, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvencPreset {
    P1,
    P2,
    P3,
    P4,
}

impl NvencPreset {
    pub fn guid(self) -> enc::GUID {
        match self {
            NvencPreset::P1 => enc::NV_ENC_PRESET_P1_GUID,
            NvencPreset::P2 => enc::NV_ENC_PRESET_P2_GUID,
            NvencPreset::P3 => enc::NV_ENC_PRESET_P3_GUID,
            NvencPreset::P4 => enc::NV_ENC_PRESET_P4_GUID,
        }
    }
}

/// The NVENC preset for an x264 preset name (`None`: [`DEFAULT_PRESET`]);
/// see the module docs' table.
pub fn preset_for(x264: Option<&str>) -> Result<NvencPreset, EncodeError> {
    let name = x264.unwrap_or(DEFAULT_PRESET);
    Ok(match name {
        "ultrafast" | "superfast" => NvencPreset::P1,
        "veryfast" => NvencPreset::P2,
        "faster" | "fast" => NvencPreset::P3,
        n if PRESETS.contains(&n) => NvencPreset::P4,
        n => return Err(EncodeError::UnknownPreset(n.to_owned())),
    })
}

/// H.264 profiles NVENC is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H264Profile {
    Baseline,
    Main,
    High,
}

impl H264Profile {
    pub fn guid(self) -> enc::GUID {
        match self {
            H264Profile::Baseline => enc::NV_ENC_H264_PROFILE_BASELINE_GUID,
            H264Profile::Main => enc::NV_ENC_H264_PROFILE_MAIN_GUID,
            H264Profile::High => enc::NV_ENC_H264_PROFILE_HIGH_GUID,
        }
    }
}

/// `baseline`, `main`, `high`; `None` is High (as x264 without a profile).
pub fn profile_for(name: Option<&str>) -> Result<H264Profile, EncodeError> {
    match name {
        None | Some("high") => Ok(H264Profile::High),
        Some("main") => Ok(H264Profile::Main),
        Some("baseline") => Ok(H264Profile::Baseline),
        Some(n) => Err(EncodeError::UnknownProfile(n.to_owned())),
    }
}

/// NVENC rate control mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateControl {
    /// `NV_ENC_PARAMS_RC_CBR`: maxrate equals bitrate.
    Cbr,
    /// `NV_ENC_PARAMS_RC_VBR` capped at `max_bps`: maxrate above bitrate.
    Vbr,
}

/// Everything NVENC is told about a rung, resolved and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct NvencParams {
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate as a fraction.
    pub fps_num: u32,
    pub fps_den: u32,
    pub preset: NvencPreset,
    pub profile: H264Profile,
    pub rate_control: RateControl,
    pub average_bps: u32,
    pub max_bps: u32,
    pub vbv_buffer_bits: u32,
    pub vbv_initial_delay_bits: u32,
}

/// [`NvencParams`] for `plan` at `width` x `height` (the rung's resolved
/// size) and nominal `fps`.
pub fn nvenc_params(
    plan: &RungPlan,
    width: u32,
    height: u32,
    fps: f64,
) -> Result<NvencParams, EncodeError> {
    if plan.codec != RungCodec::H264 {
        return Err(EncodeError::Codec(plan.name.clone()));
    }
    let bad = |field, reason: String| Err(EncodeError::InvalidSettings { field, reason });
    for (field, v) in [("width", width), ("height", height)] {
        if v == 0 || v % 2 != 0 || v > MAX_DIMENSION {
            return bad(
                field,
                format!("{v} is not an even size in 2..={MAX_DIMENSION}"),
            );
        }
    }
    if !(fps.is_finite() && (0.001..=MAX_FPS).contains(&fps)) {
        return bad("fps", format!("{fps} is not in 0.001..={MAX_FPS}"));
    }
    let bitrate = plan.bitrate_kbps;
    if bitrate == 0 || bitrate > MAX_KBPS {
        return bad(
            "bitrate_kbps",
            format!("{bitrate} is not in 1..={MAX_KBPS}"),
        );
    }
    let maxrate = plan.maxrate_kbps.unwrap_or(bitrate);
    if maxrate < bitrate || maxrate > MAX_KBPS {
        return bad(
            "maxrate_kbps",
            format!("{maxrate} is not in bitrate_kbps ({bitrate})..={MAX_KBPS}"),
        );
    }
    let (fps_num, fps_den) = fps_fraction(fps);
    let max_bps = maxrate * 1000;
    let vbv_buffer_bits = max_bps; // one second of maxrate
    Ok(NvencParams {
        width,
        height,
        fps_num,
        fps_den,
        preset: preset_for(plan.preset.as_deref())?,
        profile: profile_for(plan.profile.as_deref())?,
        rate_control: if maxrate == bitrate {
            RateControl::Cbr
        } else {
            RateControl::Vbr
        },
        average_bps: bitrate * 1000,
        max_bps,
        vbv_buffer_bits,
        vbv_initial_delay_bits: (u64::from(vbv_buffer_bits) * 9 / 10) as u32,
    })
}

/// The tuning every rung gets (see the module docs).
pub const TUNING: enc::NV_ENC_TUNING_INFO = enc::NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_LOW_LATENCY;

/// Write `p` into `cfg`, the driver's preset configuration for `p.preset`
/// and [`TUNING`] (or [`nvenc::blank_config`]): what is not set here stays
/// the preset's.
pub fn apply_config(p: &NvencParams, cfg: &mut enc::NV_ENC_CONFIG) {
    cfg.version = nvenc::versions::CONFIG;
    cfg.profileGUID = p.profile.guid();
    cfg.gopLength = enc::NVENC_INFINITE_GOPLENGTH;
    cfg.frameIntervalP = 1;
    cfg.frameFieldMode = enc::NV_ENC_PARAMS_FRAME_FIELD_MODE::NV_ENC_PARAMS_FRAME_FIELD_MODE_FRAME;

    let rc = &mut cfg.rcParams;
    rc.version = nvenc::versions::RC_PARAMS;
    rc.rateControlMode = match p.rate_control {
        RateControl::Cbr => enc::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_CBR,
        RateControl::Vbr => enc::NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR,
    };
    rc.averageBitRate = p.average_bps;
    rc.maxBitRate = p.max_bps;
    rc.vbvBufferSize = p.vbv_buffer_bits;
    rc.vbvInitialDelay = p.vbv_initial_delay_bits;
    rc.set_zeroReorderDelay(1);
    rc.set_enableLookahead(0);
    rc.lookaheadDepth = 0;

    let h264 = nvenc::h264_config_mut(cfg);
    h264.idrPeriod = enc::NVENC_INFINITE_GOPLENGTH;
    h264.set_repeatSPSPPS(1);
    h264.set_outputAUD(0);
    h264.set_disableSPSPPS(0);
    h264.set_enableIntraRefresh(0);
    h264.level = enc::NV_ENC_LEVEL::NV_ENC_LEVEL_AUTOSELECT as u32;
    h264.chromaFormatIDC = 1;
    if p.profile == H264Profile::Baseline {
        h264.entropyCodingMode =
            enc::NV_ENC_H264_ENTROPY_CODING_MODE::NV_ENC_H264_ENTROPY_CODING_MODE_CAVLC;
    }
}

/// `NV_ENC_INITIALIZE_PARAMS` for `p`, pointing at `cfg` (which must outlive
/// the `nvEncInitializeEncoder` call).
pub fn initialize_params(
    p: &NvencParams,
    cfg: &mut enc::NV_ENC_CONFIG,
) -> enc::NV_ENC_INITIALIZE_PARAMS {
    let mut init = nvenc::blank_initialize_params();
    init.version = nvenc::versions::INITIALIZE_PARAMS;
    init.encodeGUID = enc::NV_ENC_CODEC_H264_GUID;
    init.presetGUID = p.preset.guid();
    init.tuningInfo = TUNING;
    init.encodeWidth = p.width;
    init.encodeHeight = p.height;
    init.maxEncodeWidth = p.width;
    init.maxEncodeHeight = p.height;
    // Square pixels: the display aspect ratio is the picture's.
    init.darWidth = p.width;
    init.darHeight = p.height;
    init.frameRateNum = p.fps_num;
    init.frameRateDen = p.fps_den;
    init.enableEncodeAsync = 0;
    init.enablePTD = 1;
    init.bufferFormat = enc::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12;
    init.encodeConfig = cfg;
    init
}

/// `NV_ENC_PIC_PARAMS` for one picture (input and output buffers are filled
/// by the session): `pitch` of the input, `timestamp` in 90 kHz ticks.
pub fn pic_params(
    p: &NvencParams,
    pitch: u32,
    timestamp: u64,
    force_idr: bool,
) -> enc::NV_ENC_PIC_PARAMS {
    let mut pic = nvenc::blank_pic_params();
    pic.version = nvenc::versions::PIC_PARAMS;
    pic.inputWidth = p.width;
    pic.inputHeight = p.height;
    pic.inputPitch = pitch;
    pic.inputTimeStamp = timestamp;
    pic.bufferFmt = enc::NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12;
    pic.pictureStruct = enc::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME;
    if force_idr {
        pic.encodePicFlags = enc::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_FORCEIDR as u32
            | enc::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS as u32;
    }
    pic
}

// ---------------------------------------------------------------------------
// Session accounting
// ---------------------------------------------------------------------------

/// A session refused for want of capacity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("NVENC session cap reached: {open} of {cap} driver-capped sessions open (GPU {gpu}; {basis})")]
    Cap {
        gpu: usize,
        open: usize,
        cap: usize,
        basis: String,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct GpuSessions {
    open: usize,
    capped: bool,
}

/// Open NVENC sessions per GPU, shared by every channel of the process
/// ([`SESSIONS`]). A session takes a [`SessionSlot`] before it opens and gives
/// it back when dropped. Sessions of other processes, and the doctor's probe
/// session, are not counted (nothing reports them).
#[derive(Debug, Default)]
pub struct SessionRegistry {
    gpus: Mutex<BTreeMap<usize, GpuSessions>>,
}

/// The process's registry.
pub static SESSIONS: SessionRegistry = SessionRegistry {
    gpus: Mutex::new(BTreeMap::new()),
};

impl SessionRegistry {
    pub fn new() -> SessionRegistry {
        SessionRegistry::default()
    }

    /// Take a session on `gpu`, whose limit is `limit`: refused when the GPU
    /// is driver-capped and [`DRIVER_SESSION_CAP`] sessions are open on
    /// driver-capped GPUs already (the cap is system-wide).
    pub fn acquire(
        &self,
        gpu: usize,
        limit: &SessionLimit,
    ) -> Result<SessionSlot<'_>, SessionError> {
        let mut gpus = self.gpus.lock().unwrap_or_else(|e| e.into_inner());
        let capped = limit.kind == SessionLimitKind::DriverCapped;
        if capped {
            let open: usize = gpus.values().filter(|g| g.capped).map(|g| g.open).sum();
            if open >= DRIVER_SESSION_CAP {
                return Err(SessionError::Cap {
                    gpu,
                    open,
                    cap: DRIVER_SESSION_CAP,
                    basis: limit.basis.clone(),
                });
            }
        }
        let entry = gpus.entry(gpu).or_default();
        entry.open += 1;
        entry.capped |= capped;
        Ok(SessionSlot {
            registry: self,
            gpu,
        })
    }

    /// Sessions open on `gpu`.
    pub fn open(&self, gpu: usize) -> usize {
        let gpus = self.gpus.lock().unwrap_or_else(|e| e.into_inner());
        gpus.get(&gpu).map_or(0, |g| g.open)
    }

    fn release(&self, gpu: usize) {
        let mut gpus = self.gpus.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = gpus.get_mut(&gpu) {
            g.open = g.open.saturating_sub(1);
            if g.open == 0 {
                gpus.remove(&gpu);
            }
        }
    }
}

/// One counted session; given back on drop.
#[derive(Debug)]
pub struct SessionSlot<'r> {
    registry: &'r SessionRegistry,
    gpu: usize,
}

impl SessionSlot<'_> {
    pub fn gpu(&self) -> usize {
        self.gpu
    }
}

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        self.registry.release(self.gpu);
    }
}

// ---------------------------------------------------------------------------
// The encoder
// ---------------------------------------------------------------------------

/// One access unit out of NVENC.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// For the packager: AVCC, slices only (SPS/PPS are in the avcC, as with
    /// the x264 wrapper); `dts == pts` (no B-frames); `keyframe` from the
    /// picture type NVENC reports.
    pub frame: VideoFrame,
    /// The access unit as NVENC wrote it (Annex B, SPS/PPS inline on IDRs).
    pub annexb: Bytes,
    /// `NV_ENC_PIC_TYPE` as reported.
    pub picture_type: u32,
}

/// One rung's NVENC H.264 encoder on one GPU. `Send`, not `Sync`.
pub struct NvencEncoder {
    // Field order is drop order: the session (and its registered buffers)
    // goes before its slot is given back and before the context.
    session: EncodeSession,
    _slot: SessionSlot<'static>,
    ctx: Arc<CudaContext>,
    params: NvencParams,
    config: Arc<VideoConfig>,
    bitstreams: usize,
    /// Next pool slot to fill.
    next: usize,
    /// Submitted, not yet locked: (slot, pts).
    pending: VecDeque<(usize, Timestamp)>,
    last_pts: Option<Timestamp>,
    flushed: bool,
}

impl std::fmt::Debug for NvencEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvencEncoder")
            .field("params", &self.params)
            .field("codec", &self.config.codec_string)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl NvencEncoder {
    /// Open an encoder for `params` on GPU `gpu` (named `gpu_name`, for the
    /// session limit), whose context is `ctx`, counted in [`SESSIONS`].
    pub fn open(
        nvenc: &Arc<Nvenc>,
        ctx: &Arc<CudaContext>,
        gpu: usize,
        gpu_name: &str,
        params: NvencParams,
    ) -> Result<NvencEncoder, EncodeError> {
        let slot = SESSIONS.acquire(gpu, &nvenc::session_limit(gpu_name))?;
        ctx.bind_to_thread().map_err(|e| ScaleError::Cuda {
            call: "cuCtxSetCurrent",
            detail: driver::describe(e),
        })?;
        let mut session = match nvenc.open_encode_session(ctx.cu_ctx().cast()) {
            Ok(s) => s,
            Err(e @ NvencError::NoEncoder(_)) => {
                return Err(EncodeError::NoEncoder { gpu, source: e })
            }
            Err(e) => return Err(e.into()),
        };
        let mut cfg =
            session.preset_config(enc::NV_ENC_CODEC_H264_GUID, params.preset.guid(), TUNING)?;
        apply_config(&params, &mut cfg);
        let mut init = initialize_params(&params, &mut cfg);
        session.initialize(&mut init)?;
        let stream = ctx.default_stream();
        for _ in 0..INPUT_POOL {
            let buffer = DeviceNv12Buffer::new(&stream, params.width, params.height)?;
            session.register_nv12(buffer)?;
        }
        for _ in 0..INPUT_POOL {
            session.create_bitstream()?;
        }
        let config = Arc::new(video_config(&session.sequence_params()?, &params)?);
        Ok(NvencEncoder {
            session,
            _slot: slot,
            ctx: ctx.clone(),
            params,
            config,
            bitstreams: INPUT_POOL,
            next: 0,
            pending: VecDeque::new(),
            last_pts: None,
            flushed: false,
        })
    }

    /// The rung's decoder configuration (avcC from NVENC's SPS and PPS).
    pub fn video_config(&self) -> Arc<VideoConfig> {
        self.config.clone()
    }

    pub fn params(&self) -> &NvencParams {
        &self.params
    }

    /// The device buffer the next [`NvencEncoder::encode`] reads: write the
    /// picture into it (with [`CudaScaler::scale_nv12`]) first.
    pub fn input(&mut self) -> Result<&mut DeviceNv12Buffer, EncodeError> {
        if self.pending.iter().any(|&(slot, _)| slot == self.next) {
            return Err(EncodeError::PoolExhausted(INPUT_POOL));
        }
        Ok(self.session.input_mut(self.next)?)
    }

    /// Scale `src` with `scaler` into the next input and encode it.
    pub fn encode_from(
        &mut self,
        scaler: &CudaScaler,
        src: &DeviceNv12<'_>,
        pts: Timestamp,
        force_idr: bool,
    ) -> Result<Vec<Encoded>, EncodeError> {
        let input = self.input()?;
        scaler.scale_nv12(src, input)?;
        self.encode(pts, force_idr)
    }

    /// Encode the picture in [`NvencEncoder::input`] at `pts`; `force_idr`
    /// makes it an IDR with SPS/PPS. Returns the access units ready (with
    /// IPPP and synchronous mode, this picture's).
    pub fn encode(&mut self, pts: Timestamp, force_idr: bool) -> Result<Vec<Encoded>, EncodeError> {
        if self.flushed {
            return Err(EncodeError::Flushed);
        }
        if let Some(previous) = self.last_pts {
            if pts.rescale(TIMEBASE).ticks <= previous.rescale(TIMEBASE).ticks {
                return Err(EncodeError::PtsNotIncreasing { pts, previous });
            }
        }
        if self.pending.len() >= INPUT_POOL {
            return Err(EncodeError::PoolExhausted(INPUT_POOL));
        }
        self.bind()?;
        let slot = self.next;
        let pitch = u32::try_from(self.session.input_mut(slot)?.layout().pitch).unwrap_or(u32::MAX);
        let ticks = u64::try_from(pts.rescale(TIMEBASE).ticks).unwrap_or(0);
        let mut pic = pic_params(&self.params, pitch, ticks, force_idr);
        let status = self
            .session
            .encode(slot, slot % self.bitstreams, &mut pic)?;
        self.pending.push_back((slot, pts));
        self.last_pts = Some(pts);
        self.next = (self.next + 1) % INPUT_POOL;
        match status {
            EncodeStatus::NeedMoreInput => Ok(Vec::new()),
            EncodeStatus::Ready => self.drain(),
        }
    }

    /// End of stream: what NVENC still holds. No pictures afterwards.
    pub fn flush(&mut self) -> Result<Vec<Encoded>, EncodeError> {
        if self.flushed {
            return Ok(Vec::new());
        }
        self.flushed = true;
        self.bind()?;
        self.session.end_of_stream()?;
        self.drain()
    }

    fn bind(&self) -> Result<(), EncodeError> {
        self.ctx.bind_to_thread().map_err(|e| {
            EncodeError::Cuda(ScaleError::Cuda {
                call: "cuCtxSetCurrent",
                detail: driver::describe(e),
            })
        })
    }

    /// Lock every pending output, in submission order.
    fn drain(&mut self) -> Result<Vec<Encoded>, EncodeError> {
        let mut out = Vec::with_capacity(self.pending.len());
        while let Some((slot, pts)) = self.pending.pop_front() {
            let locked = self.session.lock_bitstream(slot % self.bitstreams)?;
            self.session.unmap(slot)?;
            out.push(to_encoded(locked.data, locked.picture_type, pts)?);
        }
        Ok(out)
    }
}

/// An NVENC access unit as [`Encoded`]: AVCC slices for the packager.
pub fn to_encoded(
    annexb: Vec<u8>,
    picture_type: u32,
    pts: Timestamp,
) -> Result<Encoded, EncodeError> {
    let data = avc::annexb_to_avcc(&annexb, |t| (1..=5).contains(&t));
    if data.is_empty() {
        return Err(EncodeError::NoSlices);
    }
    Ok(Encoded {
        frame: VideoFrame {
            dts: pts,
            pts,
            keyframe: picture_type == PIC_TYPE_IDR,
            data,
        },
        annexb: Bytes::from(annexb),
        picture_type,
    })
}

/// The rung's [`VideoConfig`] from `nvEncGetSequenceParams`' Annex B SPS and
/// PPS (shared with the x264 wrapper: [`avc::config_from_parameter_sets`]).
pub fn video_config(sequence: &[u8], p: &NvencParams) -> Result<VideoConfig, EncodeError> {
    let mut sps = None;
    let mut pps = None;
    for nal in avc::annexb_nal_units(sequence) {
        match avc::nal_type(nal) {
            Some(NAL_SPS) => sps = sps.or(Some(nal)),
            Some(NAL_PPS) => pps = pps.or(Some(nal)),
            _ => {}
        }
    }
    let sps = sps.ok_or(AvcError::NoSps)?;
    let pps = pps.ok_or(AvcError::NoPps)?;
    let fps = f64::from(p.fps_num) / f64::from(p.fps_den);
    Ok(avc::config_from_parameter_sets(sps, pps, fps)?)
}

// ---------------------------------------------------------------------------
// Self-test
// ---------------------------------------------------------------------------

/// Frames the NVENC self-test encodes.
pub const SELFTEST_FRAMES: usize = 60;
/// Where it forces IDRs.
pub const SELFTEST_IDRS: [usize; 2] = [0, 30];
/// Its rung: 720p30 at 2 Mbit/s.
pub const SELFTEST_BITRATE_KBPS: u32 = 2000;
/// The stream it writes (Annex B) under the output folder.
pub const SELFTEST_STREAM: &str = "nvenc-selftest-720p.h264";

/// Environment variable naming the self-test's output folder (default: the
/// system temporary folder's `ladder-selftest`).
pub const SELFTEST_OUT_ENV: &str = "LADDER_SELFTEST_OUT";

/// The GPU self-test's NVENC checks, writing the stream under
/// `$LADDER_SELFTEST_OUT` (or the temporary folder's `ladder-selftest`); see
/// [`selftest_checks_in`].
pub fn selftest_checks() -> Vec<Check> {
    let dir = std::env::var_os(SELFTEST_OUT_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ladder-selftest"));
    selftest_checks_in(&dir)
}

/// The GPU self-test's NVENC check: 60 frames of 1080p scaled on the GPU to
/// 720p and encoded, IDRs forced at 0 and 30; checks IDR positions, SPS/PPS in
/// every IDR, no B-frames, the bitrate roughly on target. `out_dir`: where the
/// Annex B stream is written for a later `ffprobe` (decodability cannot be
/// checked on a machine without FFmpeg). Without a driver: one `Skip`; on a
/// GPU without NVENC: `Skip` `"no NVENC on this GPU (NAME)"`.
pub fn selftest_checks_in(out_dir: &Path) -> Vec<Check> {
    let name = "nvenc/h264-720p";
    let driver = match Driver::init() {
        Ok(d) => d,
        Err(e) => return vec![Check::new(name, Outcome::Skip(e.to_string()))],
    };
    let ctx = match scale::selftest_context() {
        Ok(c) => c,
        Err(o) => return vec![Check::new(name, o)],
    };
    let gpu_name = driver
        .device(0)
        .map(|d| d.name)
        .unwrap_or_else(|_| "GPU 0".into());
    let nvenc = match Nvenc::load() {
        Ok(n) => Arc::new(n),
        Err(e) => {
            return vec![Check::new(
                name,
                Outcome::Skip(format!("no NVENC on this GPU ({gpu_name}): {e}")),
            )]
        }
    };
    let outcome = match selftest_encode(&nvenc, &ctx, &gpu_name, out_dir) {
        Ok(o) => o,
        Err(EncodeError::NoEncoder { .. }) => {
            Outcome::Skip(format!("no NVENC on this GPU ({gpu_name})"))
        }
        Err(e) => Outcome::Fail(e.to_string()),
    };
    vec![Check::new(name, outcome)]
}

fn selftest_encode(
    nvenc: &Arc<Nvenc>,
    ctx: &Arc<CudaContext>,
    gpu_name: &str,
    out_dir: &Path,
) -> Result<Outcome, EncodeError> {
    let plan = RungPlan {
        name: "720p".into(),
        codec: RungCodec::H264,
        width: Some(1280),
        height: Some(720),
        bitrate_kbps: SELFTEST_BITRATE_KBPS,
        maxrate_kbps: None,
        fps_max: None,
        profile: None,
        preset: None,
        threads: 0,
    };
    let params = nvenc_params(&plan, 1280, 720, 30.0)?;
    let mut encoder = NvencEncoder::open(nvenc, ctx, 0, gpu_name, params)?;
    // 1080p source, scaled on the GPU into the encoder's inputs: the real path.
    let scaler = CudaScaler::new(
        ctx,
        (1920, 1080),
        (1280, 720),
        ScaleFilter::Bicubic,
        ChromaSiting::Left,
    )?;
    let mut source = DeviceNv12Buffer::new(scaler.stream(), 1920, 1080)?;
    let base = crate::pipeline::reference::synthetic(1920, 1080);
    let mut out = Vec::new();
    for i in 0..SELFTEST_FRAMES {
        // Move the picture a little each frame so P-frames have work.
        let mut host = Nv12::from_i420(&base);
        let shift = (4 * i) % host.y.len();
        host.y.rotate_left(shift);
        source.upload(&host)?;
        let pts = Timestamp::new((i as i64 * 1000 + 15) / 30, crate::media::MILLIS);
        out.extend(encoder.encode_from(
            &scaler,
            &source.view(),
            pts,
            SELFTEST_IDRS.contains(&i),
        )?);
    }
    out.extend(encoder.flush()?);
    let config = encoder.video_config();
    let mut stream = Vec::new();
    for e in &out {
        stream.extend_from_slice(&e.annexb);
    }
    let path = out_dir.join(SELFTEST_STREAM);
    let written = std::fs::create_dir_all(out_dir)
        .and_then(|_| std::fs::write(&path, &stream))
        .map(|_| {
            format!(
                "stream written to {} for ffprobe (decodability not checked here: no FFmpeg)",
                path.display()
            )
        })
        .unwrap_or_else(|e| format!("stream not written ({}: {e})", path.display()));
    Ok(judge_stream(&out, &config, 30.0, &written))
}

/// The NVENC self-test's verdict on `out` (the access units of
/// [`SELFTEST_FRAMES`] pictures at `fps` with IDRs forced at [`SELFTEST_IDRS`]).
pub fn judge_stream(out: &[Encoded], config: &VideoConfig, fps: f64, note: &str) -> Outcome {
    let mut problems = Vec::new();
    if out.len() != SELFTEST_FRAMES {
        problems.push(format!(
            "{} access units for {SELFTEST_FRAMES} pictures",
            out.len()
        ));
    }
    let idrs: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, e)| e.frame.keyframe)
        .map(|(i, _)| i)
        .collect();
    if idrs != SELFTEST_IDRS {
        problems.push(format!("IDRs at {idrs:?}, forced at {SELFTEST_IDRS:?}"));
    }
    for &i in &idrs {
        let types: Vec<u8> = avc::annexb_nal_units(&out[i].annexb)
            .filter_map(avc::nal_type)
            .collect();
        if !(types.contains(&NAL_SPS) && types.contains(&NAL_PPS) && types.contains(&avc::NAL_IDR))
        {
            problems.push(format!(
                "IDR {i} carries NAL types {types:?}, not SPS+PPS+IDR"
            ));
        }
    }
    let b_frames = out.iter().filter(|e| e.picture_type == PIC_TYPE_B).count();
    let ordered = out.windows(2).all(|w| w[0].frame.pts < w[1].frame.pts)
        && out.iter().all(|e| e.frame.dts == e.frame.pts);
    if b_frames > 0 || !ordered {
        problems.push(format!(
            "{b_frames} B-frames; output in presentation order: {ordered}"
        ));
    }
    let bytes: usize = out.iter().map(|e| e.frame.data.len()).sum();
    let kbps = bytes as f64 * 8.0 / (out.len().max(1) as f64 / fps) / 1000.0;
    let target = f64::from(SELFTEST_BITRATE_KBPS);
    // Two IDRs in two seconds and a one-second VBV: loose bounds.
    if !(0.25 * target..=2.0 * target).contains(&kbps) {
        problems.push(format!("{kbps:.0} kbit/s for a {target:.0} kbit/s target"));
    }
    if (config.width, config.height) != (1280, 720) {
        problems.push(format!("avcC says {}x{}", config.width, config.height));
    }
    if problems.is_empty() {
        Outcome::Pass(format!(
            "{} frames, IDRs at {idrs:?} with SPS/PPS, no B-frames, {kbps:.0} kbit/s (target {target:.0}), {}; {note}",
            out.len(),
            config.codec_string
        ))
    } else {
        Outcome::Fail(format!("{}; {note}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MILLIS;

    fn plan() -> RungPlan {
        RungPlan {
            name: "720p".into(),
            codec: RungCodec::H264,
            width: Some(1280),
            height: Some(720),
            bitrate_kbps: 3000,
            maxrate_kbps: None,
            fps_max: None,
            profile: None,
            preset: None,
            threads: 0,
        }
    }

    #[test]
    fn presets_map_x264_names_to_p1_p4() {
        for (name, want) in [
            ("ultrafast", NvencPreset::P1),
            ("superfast", NvencPreset::P1),
            ("veryfast", NvencPreset::P2),
            ("faster", NvencPreset::P3),
            ("fast", NvencPreset::P3),
            ("medium", NvencPreset::P4),
            ("slow", NvencPreset::P4),
            ("slower", NvencPreset::P4),
            ("veryslow", NvencPreset::P4),
            ("placebo", NvencPreset::P4),
        ] {
            assert_eq!(preset_for(Some(name)).unwrap(), want, "{name}");
        }
        assert_eq!(
            preset_for(None).unwrap(),
            NvencPreset::P2,
            "x264's default, veryfast"
        );
        assert!(matches!(
            preset_for(Some("p7")),
            Err(EncodeError::UnknownPreset(_))
        ));
        assert_eq!(NvencPreset::P1.guid(), enc::NV_ENC_PRESET_P1_GUID);
        assert_eq!(NvencPreset::P2.guid(), enc::NV_ENC_PRESET_P2_GUID);
        assert_eq!(NvencPreset::P3.guid(), enc::NV_ENC_PRESET_P3_GUID);
        assert_eq!(NvencPreset::P4.guid(), enc::NV_ENC_PRESET_P4_GUID);
    }

    #[test]
    fn profiles_map_to_guids() {
        assert_eq!(profile_for(None).unwrap(), H264Profile::High);
        assert_eq!(
            profile_for(Some("high")).unwrap().guid(),
            enc::NV_ENC_H264_PROFILE_HIGH_GUID
        );
        assert_eq!(
            profile_for(Some("main")).unwrap().guid(),
            enc::NV_ENC_H264_PROFILE_MAIN_GUID
        );
        assert_eq!(
            profile_for(Some("baseline")).unwrap().guid(),
            enc::NV_ENC_H264_PROFILE_BASELINE_GUID
        );
        assert!(matches!(
            profile_for(Some("high444")),
            Err(EncodeError::UnknownProfile(_))
        ));
    }

    #[test]
    fn rate_control_follows_the_x264_wrapper() {
        let p = nvenc_params(&plan(), 1280, 720, 30.0).unwrap();
        assert_eq!(p.rate_control, RateControl::Cbr);
        assert_eq!((p.average_bps, p.max_bps), (3_000_000, 3_000_000));
        assert_eq!(p.vbv_buffer_bits, 3_000_000, "one second of maxrate");
        assert_eq!(p.vbv_initial_delay_bits, 2_700_000);
        assert_eq!((p.fps_num, p.fps_den), (30, 1));
        let mut capped = plan();
        capped.maxrate_kbps = Some(4500);
        let p = nvenc_params(&capped, 1280, 720, 29.97).unwrap();
        assert_eq!(p.rate_control, RateControl::Vbr);
        assert_eq!(
            (p.average_bps, p.max_bps, p.vbv_buffer_bits),
            (3_000_000, 4_500_000, 4_500_000)
        );
        assert_eq!((p.fps_num, p.fps_den), (30000, 1001));
    }

    #[test]
    fn bad_rungs_are_refused() {
        let bad = |f: &dyn Fn(&mut RungPlan), w: u32, h: u32, fps: f64| {
            let mut p = plan();
            f(&mut p);
            nvenc_params(&p, w, h, fps).unwrap_err()
        };
        assert!(matches!(
            bad(&|_| {}, 1281, 720, 30.0),
            EncodeError::InvalidSettings { field: "width", .. }
        ));
        assert!(matches!(
            bad(&|_| {}, 1280, 8192, 30.0),
            EncodeError::InvalidSettings {
                field: "height",
                ..
            }
        ));
        assert!(matches!(
            bad(&|_| {}, 1280, 720, 0.0),
            EncodeError::InvalidSettings { field: "fps", .. }
        ));
        assert!(matches!(
            bad(&|p| p.bitrate_kbps = 0, 1280, 720, 30.0),
            EncodeError::InvalidSettings {
                field: "bitrate_kbps",
                ..
            }
        ));
        assert!(matches!(
            bad(&|p| p.maxrate_kbps = Some(1000), 1280, 720, 30.0),
            EncodeError::InvalidSettings {
                field: "maxrate_kbps",
                ..
            }
        ));
        assert!(matches!(
            bad(&|p| p.codec = RungCodec::Av1, 1280, 720, 30.0),
            EncodeError::Codec(_)
        ));
        assert!(matches!(
            bad(&|p| p.preset = Some("nope".into()), 1280, 720, 30.0),
            EncodeError::UnknownPreset(_)
        ));
    }

    #[test]
    fn config_fields_mean_what_the_header_says() {
        let mut rung = plan();
        rung.profile = Some("baseline".into());
        let p = nvenc_params(&rung, 1280, 720, 30.0).unwrap();
        let mut cfg = nvenc::blank_config();
        apply_config(&p, &mut cfg);
        assert_eq!(cfg.version, enc::NV_ENC_CONFIG_VER);
        assert_eq!(cfg.profileGUID, enc::NV_ENC_H264_PROFILE_BASELINE_GUID);
        // "gopLength ... NVENC_INFINITE_GOPLENGTH so that keyframes are not inserted automatically"
        assert_eq!(cfg.gopLength, 0xffff_ffff);
        // "frameIntervalP = 0: I, 1: IPP, 2: IBP": IPP, no B-frames.
        assert_eq!(cfg.frameIntervalP, 1);
        assert_eq!(cfg.frameFieldMode as u32, 1, "progressive frames");
        let rc = &cfg.rcParams;
        assert_eq!(rc.version, enc::NV_ENC_RC_PARAMS_VER);
        assert_eq!(rc.rateControlMode as u32, 2, "NV_ENC_PARAMS_RC_CBR");
        assert_eq!(rc.averageBitRate, 3_000_000, "bits/sec");
        assert_eq!(rc.maxBitRate, 3_000_000);
        assert_eq!(rc.vbvBufferSize, 3_000_000, "in bits");
        assert_eq!(rc.vbvInitialDelay, 2_700_000, "in bits");
        assert_eq!(rc.zeroReorderDelay(), 1, "num_reorder_frames = 0");
        assert_eq!((rc.enableLookahead(), rc.lookaheadDepth), (0, 0));
        let h264 = nvenc::h264_config(&cfg);
        assert_eq!(h264.idrPeriod, 0xffff_ffff, "IDRs only where forced");
        assert_eq!(h264.repeatSPSPPS(), 1, "SPS/PPS on every IDR");
        assert_eq!(h264.outputAUD(), 0);
        assert_eq!(h264.disableSPSPPS(), 0);
        assert_eq!(h264.enableIntraRefresh(), 0);
        assert_eq!(h264.level, 0, "NV_ENC_LEVEL_AUTOSELECT");
        assert_eq!(h264.chromaFormatIDC, 1, "4:2:0");
        assert_eq!(h264.entropyCodingMode as u32, 2, "baseline: CAVLC");

        let vbr = {
            let mut r = plan();
            r.maxrate_kbps = Some(6000);
            nvenc_params(&r, 1280, 720, 30.0).unwrap()
        };
        let mut cfg = nvenc::blank_config();
        apply_config(&vbr, &mut cfg);
        assert_eq!(
            cfg.rcParams.rateControlMode as u32, 1,
            "NV_ENC_PARAMS_RC_VBR"
        );
        assert_eq!(cfg.rcParams.maxBitRate, 6_000_000);
        assert_eq!(cfg.profileGUID, enc::NV_ENC_H264_PROFILE_HIGH_GUID);
        let h264 = nvenc::h264_config(&cfg);
        assert_eq!(
            h264.entropyCodingMode as u32, 0,
            "high: the preset's (CABAC)"
        );
    }

    #[test]
    fn initialize_params_mean_what_the_header_says() {
        let p = nvenc_params(&plan(), 854, 480, 25.0).unwrap();
        let mut cfg = nvenc::blank_config();
        apply_config(&p, &mut cfg);
        let init = initialize_params(&p, &mut cfg);
        assert_eq!(init.version, enc::NV_ENC_INITIALIZE_PARAMS_VER);
        assert_eq!(init.encodeGUID, enc::NV_ENC_CODEC_H264_GUID);
        assert_eq!(init.presetGUID, enc::NV_ENC_PRESET_P2_GUID);
        assert_eq!(init.tuningInfo as u32, 2, "NV_ENC_TUNING_INFO_LOW_LATENCY");
        assert_eq!((init.encodeWidth, init.encodeHeight), (854, 480));
        assert_eq!((init.maxEncodeWidth, init.maxEncodeHeight), (854, 480));
        assert_eq!((init.darWidth, init.darHeight), (854, 480));
        assert_eq!((init.frameRateNum, init.frameRateDen), (25, 1));
        assert_eq!(init.enableEncodeAsync, 0, "synchronous");
        assert_eq!(init.enablePTD, 1, "NVENC decides picture types (IPPP)");
        assert_eq!(init.bufferFormat as u32, 1, "NV_ENC_BUFFER_FORMAT_NV12");
        assert_eq!(init.encodeConfig, &mut cfg as *mut _);
    }

    #[test]
    fn picture_params_force_idr_with_parameter_sets() {
        let p = nvenc_params(&plan(), 1280, 720, 30.0).unwrap();
        let pic = pic_params(&p, 1280, 90_000, true);
        assert_eq!(pic.version, enc::NV_ENC_PIC_PARAMS_VER);
        assert_eq!(
            (pic.inputWidth, pic.inputHeight, pic.inputPitch),
            (1280, 720, 1280)
        );
        assert_eq!(pic.encodePicFlags, 0x2 | 0x4, "FORCEIDR | OUTPUT_SPSPPS");
        assert_eq!(pic.inputTimeStamp, 90_000);
        assert_eq!(pic.bufferFmt as u32, 1);
        assert_eq!(pic.pictureStruct as u32, 1, "NV_ENC_PIC_STRUCT_FRAME");
        assert_eq!(pic_params(&p, 1280, 0, false).encodePicFlags, 0);
    }

    #[test]
    fn encoder_and_scaler_can_move_to_a_rung_thread() {
        fn send<T: Send>() {}
        send::<NvencEncoder>();
        send::<CudaScaler>();
        send::<DeviceNv12Buffer>();
    }

    #[test]
    fn sessions_are_counted_per_gpu_and_given_back() {
        let reg = SessionRegistry::new();
        let dc = nvenc::session_limit("NVIDIA L4");
        let a = reg.acquire(0, &dc).unwrap();
        let b = reg.acquire(0, &dc).unwrap();
        let c = reg.acquire(1, &dc).unwrap();
        assert_eq!((reg.open(0), reg.open(1), reg.open(2)), (2, 1, 0));
        assert_eq!(c.gpu(), 1);
        drop(a);
        assert_eq!(reg.open(0), 1);
        drop(b);
        drop(c);
        assert_eq!((reg.open(0), reg.open(1)), (0, 0));
        // No cap on datacenter boards.
        let many: Vec<_> = (0..3 * DRIVER_SESSION_CAP)
            .map(|_| reg.acquire(0, &dc).unwrap())
            .collect();
        assert_eq!(reg.open(0), 3 * DRIVER_SESSION_CAP);
        drop(many);
        assert_eq!(reg.open(0), 0);
    }

    #[test]
    fn geforce_sessions_are_capped_system_wide() {
        let reg = SessionRegistry::new();
        let gf = nvenc::session_limit("NVIDIA GeForce RTX 4090");
        let dc = nvenc::session_limit("NVIDIA L4");
        let mut held: Vec<_> = (0..5).map(|_| reg.acquire(0, &gf).unwrap()).collect();
        held.extend((0..3).map(|_| reg.acquire(1, &gf).unwrap()));
        let err = reg.acquire(1, &gf).unwrap_err();
        let SessionError::Cap { gpu, open, cap, .. } = &err;
        assert_eq!((*gpu, *open, *cap), (1, 8, 8));
        assert!(err.to_string().contains("GeForce-class"), "{err}");
        // An uncapped GPU beside them is unaffected.
        let l4 = reg.acquire(2, &dc).unwrap();
        held.pop();
        assert!(reg.acquire(0, &gf).is_ok(), "a slot came back");
        drop(l4);
        drop(held);
        assert_eq!(reg.open(0) + reg.open(1) + reg.open(2), 0);
    }

    #[test]
    fn registry_is_shared_across_threads() {
        let dc = nvenc::session_limit("NVIDIA L4");
        let reg = SessionRegistry::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let _slot = reg.acquire(3, &dc).unwrap();
                    }
                });
            }
        });
        assert_eq!(reg.open(3), 0);
        assert_eq!(SESSIONS.open(usize::MAX), 0);
    }

    fn annexb(types: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for &t in types {
            v.extend_from_slice(&[0, 0, 0, 1, t, 0x88, 0x80]);
        }
        v
    }

    #[test]
    fn access_units_become_avcc_slices() {
        let pts = Timestamp::new(1234, MILLIS);
        let e = to_encoded(annexb(&[0x67, 0x68, 0x65]), PIC_TYPE_IDR, pts).unwrap();
        assert!(e.frame.keyframe);
        assert_eq!((e.frame.pts, e.frame.dts), (pts, pts));
        assert_eq!(
            &e.frame.data[..],
            &[0, 0, 0, 3, 0x65, 0x88, 0x80],
            "slices only"
        );
        assert_eq!(e.annexb.len(), 21, "raw output kept");
        let p = to_encoded(annexb(&[0x41]), 0, pts).unwrap();
        assert!(!p.frame.keyframe);
        assert!(matches!(
            to_encoded(annexb(&[0x67]), 3, pts),
            Err(EncodeError::NoSlices)
        ));
    }

    #[test]
    fn sequence_params_make_the_rung_config() {
        // SPS/PPS of a High 720p30 stream (media::avc's test vectors).
        let sps = "6764001facd9405005bb0110000003001000000303c0f1831960";
        let pps = "68ebe3cb22c0";
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let mut seq = vec![0, 0, 0, 1];
        seq.extend(hex(sps));
        seq.extend([0, 0, 0, 1]);
        seq.extend(hex(pps));
        let p = nvenc_params(&plan(), 1280, 720, 30.0).unwrap();
        let cfg = video_config(&seq, &p).unwrap();
        assert_eq!(cfg.codec_string, "avc1.64001f");
        assert_eq!((cfg.width, cfg.height), (1280, 720));
        assert!(matches!(
            video_config(&seq[..30], &p),
            Err(EncodeError::Headers(AvcError::NoPps))
        ));
    }

    #[test]
    fn stream_verdicts() {
        let cfg = {
            let sps = [
                0x67u8, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00,
                0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
            ];
            avc::config_from_parameter_sets(&sps, &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0], 30.0)
                .unwrap()
        };
        // About 2 Mbit/s: 8333 bytes a frame at 30 fps.
        let frame = |i: usize| {
            let idr = SELFTEST_IDRS.contains(&i);
            let mut au = if idr {
                annexb(&[0x67, 0x68])
            } else {
                Vec::new()
            };
            au.extend_from_slice(&[0, 0, 0, 1, if idr { 0x65 } else { 0x41 }]);
            au.resize(8333, 0x55);
            to_encoded(
                au,
                if idr { PIC_TYPE_IDR } else { 0 },
                Timestamp::new(i as i64 * 33, MILLIS),
            )
            .unwrap()
        };
        let good: Vec<Encoded> = (0..SELFTEST_FRAMES).map(frame).collect();
        assert!(
            matches!(judge_stream(&good, &cfg, 30.0, "n"), Outcome::Pass(t) if t.contains("IDRs at [0, 30]"))
        );
        let mut late = good.clone();
        late[30].frame.keyframe = false;
        assert!(
            matches!(judge_stream(&late, &cfg, 30.0, "n"), Outcome::Fail(t) if t.contains("IDRs at [0]"))
        );
        let mut b = good.clone();
        b[5].picture_type = PIC_TYPE_B;
        assert!(
            matches!(judge_stream(&b, &cfg, 30.0, "n"), Outcome::Fail(t) if t.contains("1 B-frames"))
        );
        let mut no_sps = good.clone();
        no_sps[30] = {
            let mut au = vec![0, 0, 0, 1, 0x65];
            au.resize(8333, 0x55);
            to_encoded(au, PIC_TYPE_IDR, good[30].frame.pts).unwrap()
        };
        assert!(
            matches!(judge_stream(&no_sps, &cfg, 30.0, "n"), Outcome::Fail(t) if t.contains("not SPS+PPS+IDR"))
        );
    }

    #[test]
    fn selftest_without_a_driver_skips_with_the_reason() {
        if Driver::init().is_ok() {
            eprintln!("skipped: a CUDA driver is present; the self-test runs for real there");
            return;
        }
        let checks = selftest_checks_in(Path::new("/nonexistent/ladder-selftest"));
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name, "nvenc/h264-720p");
        assert!(
            matches!(&checks[0].outcome, Outcome::Skip(why) if why.contains("libcuda.so.1")),
            "{:?}",
            checks[0]
        );
    }
}
