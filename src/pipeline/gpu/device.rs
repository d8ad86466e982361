//! The `gpu` backend's rungs (issue 4 §4, §5): pictures that stay in device memory
//! from NVDEC to NVENC, and the NVENC rung encoder the graph opens for them.
//!
//! ```text
//! decode thread (NVDEC, CUDA)                             rung thread
//! surface ─► CudaScaler::scale_nv12 ─► PooledNv12 ─► [rung queue] ─► copy into NVENC's
//!                                     (device, per rung size)         registered input ─► NVENC ─► sink
//! ```
//!
//! - [`DevicePicture`]: what the graph carries to a rung in place of a host picture.
//!   [`PooledNv12`] is the real one: a [`DeviceNv12Buffer`] from a [`DevicePool`],
//!   given back to the pool when the last rung is done with it. The graph's tests use
//!   a host stand-in.
//! - [`DeviceEncoders`]: opens a rung's [`DeviceRungEncoder`]. [`NvencEncoders`] opens
//!   [`NvencRung`]s (NVENC H.264 on the decoding GPU: all rungs of a channel on one
//!   GPU), each holding one NVENC session counted in `encode::SESSIONS`.
//!
//! No raw picture crosses to the host on this path: the rung copies device to device
//! into the buffer NVENC registered (one copy of the rung's size per picture, at the
//! device's memory bandwidth), since an NVENC session reads only buffers registered
//! with it and the decode thread cannot know which of the encoder's buffers is next.
//! [`DevicePicture::download`] exists for one case only: a rung whose NVENC failed
//! finishes on x264 and has to read the pictures already queued for it.
//!
//! Not yet run on a GPU (docs/GPU-TESTS.md).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaStream};

use super::driver::Driver;
use super::encode::{nvenc_params, EncodeError, NvencEncoder};
use super::kernels::Nv12;
use super::nvenc::Nvenc;
use super::scale::{DeviceNv12Buffer, ScaleError};
use crate::media::{Timestamp, VideoConfig, VideoFrame};
use crate::pipeline::frame::Picture;
use crate::pipeline::plan::{RungCodec, RungPlan};

/// Device buffers a [`DevicePool`] keeps for reuse, at most. More may be alive at
/// once (the rung queues bound how many: each rung's queue plus the picture it
/// encodes); those beyond are freed when returned, so a burst does not pin memory.
pub const DEVICE_POOL_KEEP: usize = 64;

/// A rung's picture in device memory, at the rung's size, NV12.
pub trait DevicePicture: Send + Sync {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Copy into a host I420 picture (resized to this size; timing and flags kept).
    fn download(&self, into: &mut Picture) -> Result<(), String>;
    /// For an encoder to find its own kind of picture.
    fn as_any(&self) -> &dyn Any;
}

/// An encoder error, as the graph needs it: a kind (to log once) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEncodeError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for DeviceEncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<EncodeError> for DeviceEncodeError {
    fn from(e: EncodeError) -> Self {
        DeviceEncodeError {
            kind: format!("nvenc {:?}", std::mem::discriminant(&e)),
            message: format!("NVENC: {e}"),
        }
    }
}

/// A rung encoder that reads [`DevicePicture`]s.
pub trait DeviceRungEncoder: Send {
    /// The decoder configuration of the output (for the init segment).
    fn video_config(&self) -> Arc<VideoConfig>;
    /// Encode one picture at `pts`; `force_idr` makes it an IDR. The access units
    /// that became ready.
    fn encode(
        &mut self,
        picture: &dyn DevicePicture,
        pts: Timestamp,
        force_idr: bool,
    ) -> Result<Vec<VideoFrame>, DeviceEncodeError>;
    /// End of stream: everything still held.
    fn flush(&mut self) -> Result<Vec<VideoFrame>, DeviceEncodeError>;
}

/// Opens the rungs' device encoders for one channel.
pub trait DeviceEncoders: Send + Sync {
    /// Whether `plan` can be encoded from device pictures at all (NVENC: H.264).
    fn takes(&self, plan: &RungPlan) -> bool;
    /// An encoder for `plan` at `width` x `height` and nominal `fps`.
    fn open(
        &self,
        plan: &RungPlan,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<Box<dyn DeviceRungEncoder>, String>;
}

// ---------------------------------------------------------------------------
// Device pictures
// ---------------------------------------------------------------------------

/// Device NV12 buffers of one channel, kept for reuse.
#[derive(Debug, Default)]
pub struct DevicePool {
    free: Mutex<Vec<DeviceNv12Buffer>>,
    allocated: AtomicU64,
}

impl DevicePool {
    pub fn new() -> Arc<DevicePool> {
        Arc::new(DevicePool::default())
    }

    /// A buffer of `width` x `height` (a kept one when one fits, else a new one on
    /// `stream`'s context). Its content is whatever it held: the caller writes it
    /// whole.
    pub fn take(
        self: &Arc<Self>,
        stream: &Arc<CudaStream>,
        width: u32,
        height: u32,
    ) -> Result<PooledNv12, ScaleError> {
        let kept = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.iter()
                .position(|b| (b.layout().width, b.layout().height) == (width, height))
                .map(|i| free.swap_remove(i))
        };
        let buffer = match kept {
            Some(b) => b,
            None => {
                let b = DeviceNv12Buffer::new(stream, width, height)?;
                self.allocated.fetch_add(1, Ordering::Relaxed);
                b
            }
        };
        Ok(PooledNv12 {
            buffer: Some(buffer),
            pool: self.clone(),
        })
    }

    /// Buffers allocated so far.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }
}

/// A [`DeviceNv12Buffer`] lent by a [`DevicePool`], given back when dropped.
#[derive(Debug)]
pub struct PooledNv12 {
    /// `Some` until dropped.
    buffer: Option<DeviceNv12Buffer>,
    pool: Arc<DevicePool>,
}

impl PooledNv12 {
    pub fn buffer(&self) -> &DeviceNv12Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is present until dropped")
    }

    pub fn buffer_mut(&mut self) -> &mut DeviceNv12Buffer {
        self.buffer
            .as_mut()
            .expect("a pooled buffer is present until dropped")
    }
}

impl Drop for PooledNv12 {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() < DEVICE_POOL_KEEP {
                free.push(b);
            }
        }
    }
}

impl DevicePicture for PooledNv12 {
    fn size(&self) -> (u32, u32) {
        let l = self.buffer().layout();
        (l.width, l.height)
    }

    fn download(&self, into: &mut Picture) -> Result<(), String> {
        let nv12 = self.buffer().download().map_err(|e| e.to_string())?;
        nv12_to_i420(&nv12, into);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// De-interleave a host NV12 picture into `into` (resized to its size).
pub fn nv12_to_i420(nv12: &Nv12, into: &mut Picture) {
    into.resize(nv12.width as u32, nv12.height as u32);
    let (w, h) = (nv12.width, nv12.height);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    for y in 0..h {
        let src = &nv12.y[y * nv12.y_pitch..y * nv12.y_pitch + w];
        into.planes[0].row_mut(y)[..w].copy_from_slice(src);
    }
    let [_, u, v] = &mut into.planes;
    for y in 0..ch {
        let src = &nv12.uv[y * nv12.uv_pitch..y * nv12.uv_pitch + 2 * cw];
        let (ur, vr) = (u.row_mut(y), v.row_mut(y));
        for (x, pair) in src.chunks_exact(2).enumerate() {
            ur[x] = pair[0];
            vr[x] = pair[1];
        }
    }
}

// ---------------------------------------------------------------------------
// NVENC rungs
// ---------------------------------------------------------------------------

/// One rung's NVENC session, fed [`PooledNv12`] pictures.
pub struct NvencRung {
    encoder: NvencEncoder,
}

impl DeviceRungEncoder for NvencRung {
    fn video_config(&self) -> Arc<VideoConfig> {
        self.encoder.video_config()
    }

    fn encode(
        &mut self,
        picture: &dyn DevicePicture,
        pts: Timestamp,
        force_idr: bool,
    ) -> Result<Vec<VideoFrame>, DeviceEncodeError> {
        let Some(src) = picture.as_any().downcast_ref::<PooledNv12>() else {
            return Err(DeviceEncodeError {
                kind: "nvenc input".into(),
                message: "NVENC was given a picture that is not in this GPU's memory".into(),
            });
        };
        let input = self.encoder.input()?;
        input.copy_from(src.buffer()).map_err(EncodeError::from)?;
        let out = self.encoder.encode(pts, force_idr)?;
        Ok(out.into_iter().map(|e| e.frame).collect())
    }

    fn flush(&mut self) -> Result<Vec<VideoFrame>, DeviceEncodeError> {
        Ok(self.encoder.flush()?.into_iter().map(|e| e.frame).collect())
    }
}

/// Opens [`NvencRung`]s on one GPU.
pub struct NvencEncoders {
    nvenc: Arc<Nvenc>,
    ctx: Arc<CudaContext>,
    gpu: usize,
    gpu_name: String,
}

impl std::fmt::Debug for NvencEncoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvencEncoders")
            .field("gpu", &self.gpu)
            .field("gpu_name", &self.gpu_name)
            .finish_non_exhaustive()
    }
}

impl NvencEncoders {
    /// NVENC on GPU `gpu`: the driver, the GPU's primary context and
    /// `libnvidia-encode.so.1`; the reason when any is missing. Whether this GPU
    /// has an NVENC at all is known at the first session (`EncodeError::NoEncoder`).
    pub fn load(gpu: u32) -> Result<NvencEncoders, String> {
        let driver = Driver::init().map_err(|e| e.to_string())?;
        let index = gpu as usize;
        let gpu_name = driver
            .device(index)
            .map(|d| d.name)
            .map_err(|e| format!("GPU {gpu}: {e}"))?;
        let ctx = driver
            .cuda_context(index)
            .map_err(|e| format!("GPU {gpu}: {e}"))?;
        let nvenc = Nvenc::load().map_err(|e| e.to_string())?;
        Ok(NvencEncoders {
            nvenc: Arc::new(nvenc),
            ctx,
            gpu: index,
            gpu_name,
        })
    }
}

impl DeviceEncoders for NvencEncoders {
    fn takes(&self, plan: &RungPlan) -> bool {
        plan.codec == RungCodec::H264
    }

    fn open(
        &self,
        plan: &RungPlan,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<Box<dyn DeviceRungEncoder>, String> {
        let params = nvenc_params(plan, width, height, fps).map_err(|e| e.to_string())?;
        let encoder = NvencEncoder::open(&self.nvenc, &self.ctx, self.gpu, &self.gpu_name, params)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(NvencRung { encoder }))
    }
}

// ---------------------------------------------------------------------------
// Self-test
// ---------------------------------------------------------------------------

/// The self-test's `gpu/ladder` check: the `gpu` backend's path without the graph.
/// NVDEC decodes the `high-bframes` fixture, the CUDA scalers render two rungs
/// (the source's size and a quarter of it) as device NV12 pictures
/// ([`FrontEnd::render_device`](super::hybrid::FrontEnd::render_device)), and an
/// [`NvencRung`] per rung encodes them with an IDR forced at every source IDR. It
/// holds when every picture comes out of every rung at the source's pts, with IDRs
/// exactly at the source's, each rung at its size. `Skip` "no NVENC on this GPU"
/// where NVENC is absent (A100, H100, H200).
pub fn selftest_check(gpu: u32) -> super::selftest::Check {
    use super::selftest::{Check, Outcome};
    const NAME: &str = "gpu/ladder";
    let encoders = match NvencEncoders::load(gpu) {
        Ok(e) => e,
        Err(why) => return Check::new(NAME, Outcome::Skip(why)),
    };
    let outcome = super::hybrid::with_front(gpu, |front| match front {
        Err(why) => Outcome::Skip(why),
        Ok(front) => match gpu_ladder(front, &encoders) {
            Ok(text) => Outcome::Pass(text),
            Err(Skipped(text)) => Outcome::Skip(text),
            Err(Failed(text)) => Outcome::Fail(text),
        },
    });
    Check::new(NAME, outcome)
}

/// How [`gpu_ladder`] did not pass.
enum NotPassed {
    Skipped(String),
    Failed(String),
}
use NotPassed::{Failed, Skipped};

fn gpu_ladder(
    front: &mut super::hybrid::NvdecFront<'_>,
    encoders: &NvencEncoders,
) -> Result<String, NotPassed> {
    use super::hybrid::FrontEnd;
    use super::reference::{fixture, read_flv};
    use std::collections::BTreeSet;

    let fx =
        fixture("high-bframes").ok_or(Failed("fixture high-bframes is not embedded".into()))?;
    let segments = read_flv(fx.flv).map_err(|e| Failed(format!("{}: {e}", fx.name)))?;
    let segment = segments
        .first()
        .ok_or(Failed("the fixture has no video".into()))?;
    let (sw, sh) = (segment.config.width, segment.config.height);
    let sizes = [(sw, sh), ((sw / 4) & !1, (sh / 4) & !1)];
    let idrs: BTreeSet<Timestamp> = segment
        .frames
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.pts)
        .collect();
    let all: BTreeSet<Timestamp> = segment.frames.iter().map(|f| f.pts).collect();
    let fps = segment.config.frame_rate.unwrap_or(30.0);
    let mut rungs = Vec::new();
    for &(width, height) in &sizes {
        let plan = RungPlan {
            name: format!("{height}p"),
            codec: RungCodec::H264,
            width: Some(width),
            height: Some(height),
            bitrate_kbps: 1000,
            maxrate_kbps: None,
            fps_max: None,
            profile: None,
            preset: Some("veryfast".into()),
            threads: 0,
        };
        match encoders.open(&plan, width, height, fps) {
            Ok(e) => rungs.push(e),
            Err(why) if why.contains("no NVENC") => {
                return Err(Skipped(format!(
                    "no NVENC on this GPU ({})",
                    encoders.gpu_name
                )))
            }
            Err(why) => return Err(Failed(format!("NVENC {width}x{height}: {why}"))),
        }
    }
    let mut out: Vec<Vec<VideoFrame>> = vec![Vec::new(); sizes.len()];
    let mut pictures = Vec::new();
    let fail = |what: &str, e: &dyn std::fmt::Display| Failed(format!("{what}: {e}"));
    pictures.extend(
        front
            .configure(&segment.config)
            .map_err(|e| fail("configure", &e))?,
    );
    for frame in &segment.frames {
        pictures.extend(front.decode(frame).map_err(|e| fail("decode", &e))?);
    }
    pictures.extend(front.flush().map_err(|e| fail("flush", &e))?);
    for source in &pictures {
        let info = front.info(source);
        for (i, &size) in sizes.iter().enumerate() {
            let picture = front
                .render_device(source, size)
                .map_err(|e| fail("render on the device", &e))?;
            let force = idrs.contains(&info.pts);
            out[i].extend(
                rungs[i]
                    .encode(picture.as_ref(), info.pts, force)
                    .map_err(|e| fail("NVENC", &e))?,
            );
        }
    }
    for (i, rung) in rungs.iter_mut().enumerate() {
        out[i].extend(rung.flush().map_err(|e| fail("NVENC flush", &e))?);
    }
    for (i, frames) in out.iter().enumerate() {
        let (w, h) = sizes[i];
        let config = rungs[i].video_config();
        if (config.width, config.height) != (w, h) {
            return Err(Failed(format!(
                "rung {i}: NVENC made {}x{}",
                config.width, config.height
            )));
        }
        let pts: BTreeSet<Timestamp> = frames.iter().map(|f| f.pts).collect();
        if pts != all || frames.len() != all.len() {
            return Err(Failed(format!(
                "rung {w}x{h}: {} access units out for {} pictures in, or at other times",
                frames.len(),
                all.len()
            )));
        }
        let keys: BTreeSet<Timestamp> = frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts)
            .collect();
        if keys != idrs {
            return Err(Failed(format!(
                "rung {w}x{h}: IDRs at {keys:?}, the source's at {idrs:?}"
            )));
        }
    }
    Ok(format!(
        "{} pictures of {} ({sw}x{sh}) decoded on NVDEC, scaled on the GPU to {}x{} and {}x{} and encoded by NVENC from device memory, {} IDRs exactly at the source's",
        pictures.len(),
        fx.name,
        sizes[0].0,
        sizes[0].1,
        sizes[1].0,
        sizes[1].1,
        idrs.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nv12_deinterleaves_into_i420_with_odd_sizes() {
        let (w, h) = (5usize, 3usize);
        let mut nv12 = Nv12::with_pitches(w, h, 8, 8);
        for y in 0..h {
            for x in 0..w {
                nv12.y[y * 8 + x] = (10 * y + x) as u8;
            }
        }
        for y in 0..2 {
            for x in 0..3 {
                nv12.uv[y * 8 + 2 * x] = (100 + 10 * y + x) as u8;
                nv12.uv[y * 8 + 2 * x + 1] = (200 + 10 * y + x) as u8;
            }
        }
        let mut out = Picture::new(2, 2);
        out.pts = Some(Timestamp::from_millis(7));
        nv12_to_i420(&nv12, &mut out);
        assert_eq!((out.width, out.height), (5, 3));
        assert_eq!(out.pts, Some(Timestamp::from_millis(7)), "timing kept");
        assert_eq!(&out.planes[0].row(2)[..5], &[20, 21, 22, 23, 24]);
        assert_eq!(&out.planes[1].row(1)[..3], &[110, 111, 112]);
        assert_eq!(&out.planes[2].row(0)[..3], &[200, 201, 202]);
    }

    #[test]
    fn nvenc_takes_only_h264_rungs() {
        let mut plan = RungPlan {
            name: "720p".into(),
            codec: RungCodec::H264,
            width: None,
            height: Some(720),
            bitrate_kbps: 3000,
            maxrate_kbps: None,
            fps_max: None,
            profile: None,
            preset: None,
            threads: 0,
        };
        // `load` needs a driver (absent on CI): then only its reason is checked
        match NvencEncoders::load(0) {
            Ok(n) => {
                assert!(n.takes(&plan));
                plan.codec = RungCodec::Av1;
                assert!(!n.takes(&plan));
            }
            Err(why) => assert!(why.contains("libcuda") || why.contains("GPU 0"), "{why}"),
        }
    }
}
