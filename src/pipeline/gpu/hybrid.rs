//! The hybrid backend's front end (issue 4 §5): NVDEC decoding and CUDA scaling on
//! one GPU, each rung's picture downloaded as host I420 at the rung's size, for x264
//! (or rav1e) on the host. The mode for A100/H100/H200, which have no NVENC.
//!
//! [`FrontEnd`] is what the graph's decode stage (`pipeline::graph`, with
//! `DecodeBackend::Nvdec`) drives in place of libavcodec: a decoder whose pictures
//! stay on the device until each rung asks for its own size ([`FrontEnd::render`]).
//! [`NvdecFront`] is the real one; the graph's tests drive the same stage with a fake
//! one (no GPU here) to check the fallback.
//!
//! Errors come in two kinds ([`FrontError`]): `Stream` costs an access unit (malformed
//! input), `Device` (a lost context, a failed launch or copy, a decoder that cannot be
//! created, a format this NVDEC refuses) moves the channel to the CPU decoder from the
//! next keyframe on (the graph's module docs, "GPU failure").
//!
//! [`with_front`] sets up what NVDEC and the kernels need on the calling thread (the
//! driver, GPU `gpu`'s primary context made current, `libnvcuvid.so.1`) and lends a
//! [`NvdecFront`] to a closure; where that fails (no driver, no such GPU) the closure
//! gets the reason instead.
//!
//! Not yet run on a GPU (see docs/GPU-TESTS.md); the self-test has no check of it yet.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use super::decode::{GpuDecodeError, GpuPicture, NvdecDecoder};
use super::device::{DevicePicture, DevicePool};
use super::driver::{CurrentContext, Driver};
use super::kernels::{ChromaSiting, ScaleFilter};
use super::nvdec::Nvcuvid;
use super::scale::{picture_view, CudaScaler, DeviceI420Buffer};
use crate::media::{Timestamp, VideoConfig, VideoFrame};
use crate::pipeline::frame::{Picture, PicturePool};

/// The scaling filter of the hybrid rungs: Keys cubic, as swscale's `SWS_BICUBIC`
/// that the CPU rungs use.
pub const HYBRID_FILTER: ScaleFilter = ScaleFilter::Bicubic;

/// Chroma siting of the hybrid rungs: H.264's default (`chroma_sample_loc_type` 0).
pub const HYBRID_SITING: ChromaSiting = ChromaSiting::Left;

/// Why the front end gave no picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontError {
    /// This access unit only (malformed input): counted, the stream goes on.
    Stream(String),
    /// The GPU failed (context, launch, copy, decoder creation, a format this NVDEC
    /// refuses): the channel moves to the CPU decoder.
    Device(String),
}

impl std::fmt::Display for FrontError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrontError::Stream(m) | FrontError::Device(m) => f.write_str(m),
        }
    }
}

/// What a decoded picture is, before any rung asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub pts: Timestamp,
    /// Decode-order number of the source access unit.
    pub seq: u64,
    /// The source access unit was an IDR.
    pub source_idr: bool,
}

/// A decoder whose pictures stay where it decoded them until each rung asks for its
/// size. Pictures come out in presentation order, as from the CPU decoder.
pub trait FrontEnd {
    /// A decoded picture (on the device, for NVDEC).
    type Source;
    /// A new source configuration: the pictures the old one still held.
    fn configure(&mut self, config: &VideoConfig) -> Result<Vec<Self::Source>, FrontError>;
    /// One access unit in decode order: the pictures that became ready.
    fn decode(&mut self, frame: &VideoFrame) -> Result<Vec<Self::Source>, FrontError>;
    /// End of stream: everything still held.
    fn flush(&mut self) -> Result<Vec<Self::Source>, FrontError>;
    /// Size and timing of a decoded picture.
    fn info(&self, source: &Self::Source) -> SourceInfo;
    /// The picture at `size` (the source's own size: unscaled) as host I420, in a
    /// picture from `pool`; timing and flags are the caller's to set.
    fn render(
        &mut self,
        source: &Self::Source,
        size: (u32, u32),
        pool: &Arc<PicturePool>,
    ) -> Result<Picture, FrontError>;
    /// Errors the decoder met since the last call without failing the access
    /// unit (NVDEC: pictures decoded with errors or concealed), one text each,
    /// for the channel's counters and log.
    fn take_errors(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// The picture at `size` as NV12 in device memory, for a rung that encodes
    /// on the GPU (the `gpu` backend). A front end with no GPU memory says so
    /// with [`FrontError::Device`].
    fn render_device(
        &mut self,
        source: &Self::Source,
        size: (u32, u32),
    ) -> Result<Arc<dyn DevicePicture>, FrontError> {
        let _ = (source, size);
        Err(FrontError::Device(
            "this decoder keeps no pictures in GPU memory".into(),
        ))
    }
}

/// One rung size's scaler and device staging buffer, for the current source size.
struct RungScaler {
    dst: (u32, u32),
    scaler: CudaScaler,
    staging: DeviceI420Buffer,
}

/// NVDEC and the CUDA scalers of one channel, on the thread whose context is current.
pub struct NvdecFront<'a> {
    nv: &'a Nvcuvid,
    ctx: &'a CurrentContext<'a>,
    cuda: Arc<CudaContext>,
    decoder: Option<NvdecDecoder<'a>>,
    /// The source size the scalers are for.
    source: (u32, u32),
    scalers: Vec<RungScaler>,
    /// NV12 pictures handed to NVENC rungs.
    device_pool: Arc<DevicePool>,
}

impl<'a> NvdecFront<'a> {
    /// A front end on `ctx` (current on this thread) and `cuda` (the same GPU's
    /// primary context, for the kernels).
    pub fn new(nv: &'a Nvcuvid, ctx: &'a CurrentContext<'a>, cuda: Arc<CudaContext>) -> Self {
        NvdecFront {
            nv,
            ctx,
            cuda,
            decoder: None,
            source: (0, 0),
            scalers: Vec::new(),
            device_pool: DevicePool::new(),
        }
    }

    /// The index of the scaler from `source`'s size to `size`, made on first use
    /// (all are dropped when the source size changes).
    fn scaler_for(&mut self, source: &GpuPicture, size: (u32, u32)) -> Result<usize, FrontError> {
        let src = (source.width, source.height);
        if self.source != src {
            self.scalers.clear();
            self.source = src;
        }
        if let Some(i) = self.scalers.iter().position(|s| s.dst == size) {
            return Ok(i);
        }
        let made = CudaScaler::new(&self.cuda, src, size, HYBRID_FILTER, HYBRID_SITING)
            .and_then(|scaler| {
                let staging = scaler.i420_buffer()?;
                Ok(RungScaler {
                    dst: size,
                    scaler,
                    staging,
                })
            })
            .map_err(|e| FrontError::Device(format!("CUDA scaler: {e}")))?;
        self.scalers.push(made);
        Ok(self.scalers.len() - 1)
    }

    /// Counters of the current decoder, if any.
    pub fn decoder_stats(&mut self) -> Option<super::decode::GpuDecodeStats> {
        self.decoder.as_mut().map(NvdecDecoder::stats)
    }
}

/// A decoded surface as the scalers read it.
fn surface_view(source: &GpuPicture) -> Result<super::scale::DeviceNv12<'_>, FrontError> {
    picture_view(source).ok_or_else(|| {
        FrontError::Device(format!(
            "decoded surface smaller than its {}x{} picture",
            source.width, source.height
        ))
    })
}

/// NVDEC's errors, sorted: malformed input is the stream's, the rest the GPU's.
fn classify(e: GpuDecodeError) -> FrontError {
    match e {
        GpuDecodeError::Bitstream(_) => FrontError::Stream(e.to_string()),
        e => FrontError::Device(format!("NVDEC: {e}")),
    }
}

impl FrontEnd for NvdecFront<'_> {
    type Source = GpuPicture;

    fn configure(&mut self, config: &VideoConfig) -> Result<Vec<GpuPicture>, FrontError> {
        // At a configuration every error is the GPU's to give up on: the CPU decoder
        // then decides (and reports a source it cannot decode either).
        let device = |e: GpuDecodeError| FrontError::Device(format!("NVDEC: {e}"));
        match self.decoder.as_mut() {
            Some(decoder) => decoder.set_config(config).map_err(device),
            None => {
                self.decoder = Some(NvdecDecoder::new(self.nv, self.ctx, config).map_err(device)?);
                Ok(Vec::new())
            }
        }
    }

    fn decode(&mut self, frame: &VideoFrame) -> Result<Vec<GpuPicture>, FrontError> {
        match self.decoder.as_mut() {
            Some(decoder) => decoder.decode(frame).map_err(classify),
            None => Err(FrontError::Stream("no configuration yet".into())),
        }
    }

    fn flush(&mut self) -> Result<Vec<GpuPicture>, FrontError> {
        match self.decoder.as_mut() {
            Some(decoder) => decoder.flush().map_err(classify),
            None => Ok(Vec::new()),
        }
    }

    fn info(&self, source: &GpuPicture) -> SourceInfo {
        SourceInfo {
            width: source.width,
            height: source.height,
            pts: source.pts,
            seq: source.seq,
            source_idr: source.source_idr,
        }
    }

    fn render(
        &mut self,
        source: &GpuPicture,
        size: (u32, u32),
        pool: &Arc<PicturePool>,
    ) -> Result<Picture, FrontError> {
        // A rung at the source's size goes through the same path: its tables
        // make an exact copy (`kernels` tests it), de-interleaved into I420 on
        // the GPU and downloaded into a pooled picture (no allocation per
        // picture, which `download_i420` would make).
        let index = self.scaler_for(source, size)?;
        let view = surface_view(source)?;
        let rung = &mut self.scalers[index];
        let mut out = pool.take(size.0, size.1);
        rung.scaler
            .scale_i420(&view, &mut rung.staging, &mut out)
            .map_err(|e| FrontError::Device(format!("CUDA scaling: {e}")))?;
        Ok(out)
    }

    fn render_device(
        &mut self,
        source: &GpuPicture,
        size: (u32, u32),
    ) -> Result<Arc<dyn DevicePicture>, FrontError> {
        let index = self.scaler_for(source, size)?;
        let view = surface_view(source)?;
        let stream = self.cuda.default_stream();
        let mut out = self
            .device_pool
            .take(&stream, size.0, size.1)
            .map_err(|e| FrontError::Device(format!("device picture: {e}")))?;
        self.scalers[index]
            .scaler
            .scale_nv12(&view, out.buffer_mut())
            .map_err(|e| FrontError::Device(format!("CUDA scaling: {e}")))?;
        Ok(Arc::new(out))
    }

    fn take_errors(&mut self) -> Vec<String> {
        self.decoder
            .as_mut()
            .map(NvdecDecoder::take_errors)
            .unwrap_or_default()
    }
}

/// Sets up GPU `gpu` on this thread (driver, primary context current, NVDEC loaded)
/// and runs `body` with a [`NvdecFront`] on it, or with the reason it could not be
/// made. Everything is released (context unbound) when `body` returns.
pub fn with_front<R>(gpu: u32, body: impl FnOnce(Result<&mut NvdecFront<'_>, String>) -> R) -> R {
    let driver = match Driver::init() {
        Ok(d) => d,
        Err(e) => return body(Err(e.to_string())),
    };
    let index = gpu as usize;
    let primary = match driver.primary_context(index) {
        Ok(p) => p,
        Err(e) => return body(Err(format!("GPU {gpu}: {e}"))),
    };
    let ctx = match primary.make_current() {
        Ok(c) => c,
        Err(e) => return body(Err(format!("GPU {gpu}: {e}"))),
    };
    let cuda = match driver.cuda_context(index) {
        Ok(c) => c,
        Err(e) => return body(Err(format!("GPU {gpu}: {e}"))),
    };
    let nv = match Nvcuvid::load() {
        Ok(nv) => nv,
        Err(e) => return body(Err(e.to_string())),
    };
    let mut front = NvdecFront::new(&nv, &ctx, cuda);
    body(Ok(&mut front))
}

/// The self-test's `hybrid/ladder` check, on the `high-bframes` fixture (B-frames,
/// so pictures come out of NVDEC in presentation order, not decode order): NVDEC
/// decodes, the CUDA scalers make two rungs (the source's size and a quarter of
/// it, as the graph's hybrid stage does: [`FrontEnd::render`]), and x264 encodes
/// each with an IDR forced at every source IDR. It holds when every source
/// picture comes out of every rung, at the source's pts, with IDRs exactly at the
/// source's IDRs and nowhere else, each encoder producing its rung's size.
/// Decodability of the rungs cannot be checked without FFmpeg on the GPU machine.
pub fn selftest_check(gpu: u32) -> super::selftest::Check {
    use super::selftest::{Check, Outcome};
    const NAME: &str = "hybrid/ladder";
    let outcome = with_front(gpu, |front| match front {
        Err(why) => Outcome::Skip(why),
        Ok(front) => match hybrid_ladder(front) {
            Ok(text) => Outcome::Pass(text),
            Err(text) => Outcome::Fail(text),
        },
    });
    Check::new(NAME, outcome)
}

fn hybrid_ladder(front: &mut NvdecFront<'_>) -> Result<String, String> {
    use super::reference::{fixture, read_flv};
    use crate::pipeline::cpu::x264::{Encoder, EncoderSettings};
    use std::collections::BTreeSet;

    let fx = fixture("high-bframes").ok_or("fixture high-bframes is not embedded")?;
    let segments = read_flv(fx.flv).map_err(|e| format!("{}: {e}", fx.name))?;
    let segment = segments.first().ok_or("the fixture has no video")?;
    let (sw, sh) = (segment.config.width, segment.config.height);
    let sizes = [(sw, sh), ((sw / 4) & !1, (sh / 4) & !1)];
    let idrs: BTreeSet<Timestamp> = segment
        .frames
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.pts)
        .collect();
    let all: BTreeSet<Timestamp> = segment.frames.iter().map(|f| f.pts).collect();
    let mut encoders = Vec::new();
    for &(width, height) in &sizes {
        let settings = EncoderSettings {
            width,
            height,
            fps: segment.config.frame_rate.unwrap_or(30.0),
            bitrate_kbps: 500,
            maxrate_kbps: None,
            bufsize_kbits: None,
            profile: None,
            preset: Some("ultrafast".to_owned()),
            threads: 1,
            keyint_max: 250,
            source_idrs: true,
            low_latency: true,
        };
        encoders.push(Encoder::new(&settings).map_err(|e| format!("x264 {width}x{height}: {e}"))?);
    }
    let pool = PicturePool::new(8);
    let mut out: Vec<Vec<VideoFrame>> = vec![Vec::new(); sizes.len()];
    let mut pictures = Vec::new();
    pictures.extend(
        front
            .configure(&segment.config)
            .map_err(|e| e.to_string())?,
    );
    for frame in &segment.frames {
        pictures.extend(front.decode(frame).map_err(|e| format!("decode: {e}"))?);
    }
    pictures.extend(front.flush().map_err(|e| format!("flush: {e}"))?);
    let decoded = pictures.len();
    for source in &pictures {
        let info = front.info(source);
        for (i, &size) in sizes.iter().enumerate() {
            let mut picture = front
                .render(source, size, &pool)
                .map_err(|e| format!("render {}x{}: {e}", size.0, size.1))?;
            picture.pts = Some(info.pts);
            let force = idrs.contains(&info.pts);
            if let Some(f) = encoders[i]
                .encode(&picture, force)
                .map_err(|e| format!("x264 {}x{}: {e}", size.0, size.1))?
            {
                out[i].push(f);
            }
        }
    }
    for (i, encoder) in encoders.iter_mut().enumerate() {
        out[i].extend(encoder.flush().map_err(|e| format!("x264 flush: {e}"))?);
    }
    if decoded != segment.frames.len() {
        return Err(format!(
            "NVDEC gave {decoded} pictures for {} access units",
            segment.frames.len()
        ));
    }
    for (i, frames) in out.iter().enumerate() {
        let (w, h) = sizes[i];
        let config = encoders[i].video_config();
        if (config.width, config.height) != (w, h) {
            return Err(format!(
                "rung {i}: encoder made {}x{}",
                config.width, config.height
            ));
        }
        let pts: BTreeSet<Timestamp> = frames.iter().map(|f| f.pts).collect();
        if pts != all || frames.len() != all.len() {
            return Err(format!(
                "rung {w}x{h}: {} pictures out for {} in, or at other times",
                frames.len(),
                all.len()
            ));
        }
        let keys: BTreeSet<Timestamp> = frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts)
            .collect();
        if keys != idrs {
            return Err(format!(
                "rung {w}x{h}: IDRs at {keys:?}, the source's at {idrs:?}"
            ));
        }
    }
    Ok(format!(
        "{} pictures of {} ({}x{}, B-frames) decoded on NVDEC, scaled on the GPU to {}x{} and {}x{}, encoded by x264 with {} IDRs exactly at the source's",
        decoded,
        fx.name,
        sw,
        sh,
        sizes[0].0,
        sizes[0].1,
        sizes[1].0,
        sizes[1].1,
        idrs.len()
    ))
}
