//! Raw pictures between decode, scale and encode, from a pool.
//!
//! A [`Picture`] is 8-bit 4:2:0 planar (I420): what libavcodec decodes H.264
//! High/Main/Baseline to and what x264 and rav1e take. Buffers come from a
//! [`PicturePool`] and go back to it when the last [`PictureRef`] is dropped,
//! so the steady state allocates nothing per frame. One decoded picture is
//! shared by every rung of a channel by reference (an `Arc`), never copied.

use crate::media::Timestamp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// One plane of a picture: `stride` bytes per row, `height` rows.
#[derive(Clone, Debug, Default)]
pub struct Plane {
    pub data: Vec<u8>,
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

impl Plane {
    /// Row `y` (exactly `width` bytes).
    pub fn row(&self, y: usize) -> &[u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width]
    }

    pub fn row_mut(&mut self, y: usize) -> &mut [u8] {
        let start = y * self.stride;
        let w = self.width;
        &mut self.data[start..start + w]
    }
}

/// An 8-bit I420 picture with its timing.
#[derive(Clone, Debug, Default)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// Y, U, V. Chroma planes are (width+1)/2 x (height+1)/2.
    pub planes: [Plane; 3],
    /// Presentation time.
    pub pts: Option<Timestamp>,
    /// The source access unit was an IDR (what the decoder saw). Informative:
    /// the pipeline graph places rung IDRs by [`Picture::force_idr`] only.
    pub source_idr: bool,
    /// The caller asked for an IDR here: every rung puts an IDR (a sync
    /// sample) at this picture, so all renditions share segment boundaries.
    /// Set by the pipeline graph's decode stage from the `force_idr` flag that
    /// travelled with the access unit, matched to the picture by pts
    /// (`pipeline::graph`); false straight out of the decoder.
    pub force_idr: bool,
    /// Decode order number within the channel.
    pub seq: u64,
}

impl Picture {
    /// Allocate planes for `width` x `height` (strides rounded up to 32 bytes
    /// for SIMD).
    pub fn new(width: u32, height: u32) -> Picture {
        let mut p = Picture::default();
        p.resize(width, height);
        p
    }

    /// Make the planes fit `width` x `height`, reusing the buffers.
    pub fn resize(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        let (w, h) = (width as usize, height as usize);
        let dims = [
            (w, h),
            (w.div_ceil(2), h.div_ceil(2)),
            (w.div_ceil(2), h.div_ceil(2)),
        ];
        for (plane, (pw, ph)) in self.planes.iter_mut().zip(dims) {
            let stride = pw.div_ceil(32) * 32;
            plane.width = pw;
            plane.height = ph;
            plane.stride = stride;
            plane.data.resize(stride * ph, 0);
        }
    }
}

/// Free pictures, reused by size.
#[derive(Debug, Default)]
pub struct PicturePool {
    free: Mutex<Vec<Picture>>,
    /// Most pictures kept for reuse; beyond it they are freed.
    capacity: usize,
    /// Pictures allocated (not reused) so far.
    allocated: AtomicU64,
}

/// A picture borrowed from a pool; back in the pool when the last clone drops.
pub type PictureRef = Arc<Pooled>;

/// A picture that returns to its pool on drop.
#[derive(Debug)]
pub struct Pooled {
    picture: Option<Picture>,
    pool: Arc<PicturePool>,
}

impl std::ops::Deref for Pooled {
    type Target = Picture;
    fn deref(&self) -> &Picture {
        self.picture.as_ref().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(p) = self.picture.take() {
            self.pool.give_back(p);
        }
    }
}

/// Why a picture cannot go to an encoder of a given size: the caller's
/// fault; the encoder refuses it and is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PictureMismatch {
    #[error("picture is {got_width}x{got_height}, the encoder takes {width}x{height}")]
    Size {
        got_width: u32,
        got_height: u32,
        width: u32,
        height: u32,
    },
    #[error("picture plane {plane} does not hold {width}x{height} samples at stride {stride} in {len} bytes")]
    Plane {
        plane: usize,
        width: usize,
        height: usize,
        stride: usize,
        len: usize,
    },
}

impl Picture {
    /// That this is a `width` x `height` I420 picture whose three planes
    /// each hold their samples (`stride` bytes apart, the last row possibly
    /// short), as an encoder reading them will assume.
    pub fn check_i420(&self, width: u32, height: u32) -> Result<(), PictureMismatch> {
        if self.width != width || self.height != height {
            return Err(PictureMismatch::Size {
                got_width: self.width,
                got_height: self.height,
                width,
                height,
            });
        }
        let (w, h) = (width as usize, height as usize);
        let dims = [(w, h), (w / 2, h / 2), (w / 2, h / 2)];
        for (i, (plane, (pw, ph))) in self.planes.iter().zip(dims).enumerate() {
            let needed = plane
                .stride
                .checked_mul(ph.saturating_sub(1))
                .and_then(|n| n.checked_add(pw));
            let fits = plane.stride >= pw
                && plane.width >= pw
                && plane.height >= ph
                && needed.is_some_and(|n| n <= plane.data.len());
            if !fits {
                return Err(PictureMismatch::Plane {
                    plane: i,
                    width: pw,
                    height: ph,
                    stride: plane.stride,
                    len: plane.data.len(),
                });
            }
        }
        Ok(())
    }
}

impl PicturePool {
    pub fn new(capacity: usize) -> Arc<PicturePool> {
        Arc::new(PicturePool {
            free: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            allocated: AtomicU64::new(0),
        })
    }

    /// A picture of `width` x `height`, reused when one is free (its pixels
    /// are stale: the caller writes every pixel; its timing and flags are
    /// reset, so nothing of the previous use leaks into the next).
    pub fn take(&self, width: u32, height: u32) -> Picture {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let found = free
            .iter()
            .position(|p| p.width == width && p.height == height);
        match found.map(|i| free.swap_remove(i)).or_else(|| free.pop()) {
            Some(mut p) => {
                drop(free);
                p.resize(width, height);
                p.pts = None;
                p.source_idr = false;
                p.force_idr = false;
                p.seq = 0;
                p
            }
            None => {
                drop(free);
                self.allocated.fetch_add(1, Ordering::Relaxed);
                Picture::new(width, height)
            }
        }
    }

    /// Wrap a filled picture so that it comes back here when done.
    pub fn share(self: &Arc<Self>, picture: Picture) -> PictureRef {
        Arc::new(Pooled {
            picture: Some(picture),
            pool: self.clone(),
        })
    }

    fn give_back(&self, p: Picture) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.capacity {
            free.push(p);
        }
    }

    /// Pictures allocated so far rather than reused. While every picture in
    /// use fits the pool's capacity (the pipeline sizes it so) and the size
    /// does not change, this is the most pictures that were in use at once:
    /// the pool's share of the process's memory.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Pictures waiting for reuse.
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_have_i420_geometry() {
        let p = Picture::new(641, 361);
        assert_eq!(p.planes[0].width, 641);
        assert_eq!(p.planes[1].width, 321);
        assert_eq!(p.planes[1].height, 181);
        assert_eq!(p.planes[0].stride % 32, 0);
        assert!(p.planes[0].data.len() >= 641 * 361);
    }

    #[test]
    fn pictures_return_to_the_pool_when_the_last_reference_drops() {
        let pool = PicturePool::new(4);
        let a = pool.share(pool.take(320, 240));
        let b = a.clone();
        drop(a);
        assert_eq!(pool.idle(), 0);
        drop(b);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(320, 240);
        assert_eq!(pool.idle(), 0);
        assert_eq!(again.width, 320);
        assert_eq!(
            pool.allocated(),
            1,
            "the second take reused the first picture"
        );
    }

    #[test]
    fn reused_pictures_carry_no_flags_from_their_last_use() {
        let pool = PicturePool::new(4);
        let mut p = pool.take(64, 32);
        p.pts = Some(Timestamp::from_millis(40));
        p.source_idr = true;
        p.force_idr = true;
        p.seq = 7;
        drop(pool.share(p));
        assert_eq!(pool.idle(), 1);
        let again = pool.take(64, 32);
        assert_eq!(
            (again.pts, again.source_idr, again.force_idr, again.seq),
            (None, false, false, 0)
        );
    }
}
