//! rav1e for 8-bit pictures, behind functions that are not generic.
//!
//! rav1e's encoder is generic over the pixel type, so most of its code is
//! compiled in whichever crate names `Context<u8>`, at that crate's
//! optimisation level, whatever the profile says for rav1e itself. Ladder's
//! dev and test builds are unoptimised: with `Context<u8>` used in ladder,
//! its AV1 encoder tests (31 frames at 640x360, 2 cores) took 130 s; with it
//! here, in a crate the root `Cargo.toml` optimises in every profile, 4 s.
//! Nothing else lives here: the encoder's logic is
//! `ladder::pipeline::cpu::av1`.

pub use rav1e;

use rav1e::prelude::{Config, Context, EncoderStatus, FrameParameters, InvalidConfig, Packet};

/// An 8-bit rav1e encoder context.
pub struct Encoder {
    ctx: Context<u8>,
}

/// One 8-bit plane of a picture: `stride` bytes per row.
#[derive(Clone, Copy, Debug)]
pub struct PlaneRef<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

impl Encoder {
    /// `Config::new_context` for 8-bit pixels.
    pub fn new(config: &Config) -> Result<Encoder, InvalidConfig> {
        Ok(Encoder {
            ctx: config.new_context()?,
        })
    }

    /// Send an I420 picture: each plane's `width` x `height` samples are
    /// copied into a rav1e frame (rows or samples that `data` does not hold
    /// are left as rav1e allocated them; the caller checks geometry first).
    pub fn send(
        &mut self,
        planes: [PlaneRef<'_>; 3],
        params: FrameParameters,
    ) -> Result<(), EncoderStatus> {
        let mut frame = self.ctx.new_frame();
        for (dst, src) in frame.planes.iter_mut().zip(planes) {
            for (y, row) in dst.rows_iter_mut().take(src.height).enumerate() {
                let start = y.saturating_mul(src.stride);
                let from = src.data.get(start..start.saturating_add(src.width));
                if let (Some(to), Some(from)) = (row.get_mut(..src.width), from) {
                    to.copy_from_slice(from);
                }
            }
        }
        self.ctx.send_frame((frame, params))
    }

    /// No more pictures: rav1e finishes what it holds.
    pub fn flush(&mut self) -> Result<(), EncoderStatus> {
        self.ctx.send_frame(None)
    }

    /// `Context::receive_packet`.
    pub fn receive(&mut self) -> Result<Packet<u8>, EncoderStatus> {
        self.ctx.receive_packet()
    }
}
