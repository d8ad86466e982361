//! H.264 decoding in software with libavcodec (the distribution's FFmpeg,
//! through `ffmpeg-next` with only its `codec` feature).
//!
//! Input is what ingest produces: the publisher's AVCDecoderConfigurationRecord
//! (ISO/IEC 14496-15 §5.3.3, handed to libavcodec as extradata) and access
//! units in AVCC form (length-prefixed NAL units, ITU-T H.264 §7.4.1.2.3).
//! Output is 8-bit I420 [`Picture`]s from a [`PicturePool`], in presentation
//! order, with the source presentation time and whether the picture was coded
//! as an IDR (ITU-T H.264 §7.4.1.2.4, `nal_unit_type` 5).
//!
//! What is accepted: Baseline, Main and High profiles at 8 bits, 4:2:0
//! (everything libavcodec's H.264 decoder handles: CAVLC and CABAC, B-frames,
//! the 8x8 transform, field and MBAFF coding). 10-bit and 4:2:2/4:4:4/4:0:0
//! sources are refused at [`Decoder::new`] with a message naming what was found,
//! and again per frame if an in-band SPS switches to them mid-stream.
//! Interlaced sources are decoded as frames (both fields woven) and reported by
//! [`Decoder::interlaced`]; there is no deinterlacer in the ladder.
//!
//! # Timing
//!
//! Each access unit gets a decode-order number (`seq`), which is what the
//! AVPacket carries as pts and dts (a private timebase of one tick per access
//! unit). libavcodec hands that number back on the picture it belongs to, after
//! B-frame reordering, and the decoder maps it back to the exact source
//! [`Timestamp`] and IDR flag; nothing is rescaled, so nothing is rounded.
//!
//! # Threads and latency
//!
//! Slice threading only (`thread_type = FF_THREAD_SLICE`): it adds no latency,
//! whereas frame threading holds back one picture per extra thread. Slice
//! threads only help when the publisher sends several slices per picture (x264
//! `sliced-threads`, most hardware encoders); with one slice per picture the
//! decode is single-threaded, and throughput comes from running channels in
//! parallel. `AV_CODEC_FLAG_LOW_DELAY` is not set: libavcodec's H.264 decoder
//! then skips its reorder buffer and returns B-frame streams out of
//! presentation order (see the test `low_delay_flag_breaks_b_frame_order`).
//! Streams without B-frames already come out with no delay, as the SPS says
//! the reorder depth is zero (x264 and hardware encoders write
//! `max_num_reorder_frames`).
//!
//! # Errors
//!
//! A corrupt access unit is an error for that access unit ([`DecodeError::Corrupt`])
//! or, when libavcodec conceals it, a picture counted in
//! [`DecodeStats::concealed`]; the decoder stays usable either way and never
//! panics on input.
//!
//! All `unsafe` is in this file, each block with its `// Safety:` argument:
//! extradata and a few context fields that `ffmpeg-next` does not expose, and
//! the copy out of the decoder's planes.

use crate::media::{Timestamp, VideoCodec, VideoConfig, VideoFrame};
use crate::pipeline::frame::{Picture, PicturePool};
use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// Largest picture accepted, in pixels (4096 x 2304: DCI 4K and UHD fit).
/// A hostile or broken SPS may declare up to 16384 x 16384 (about 400 MB per
/// picture, times the reference buffer): libavcodec refuses such a stream
/// before allocating (`max_pixels`), and [`Decoder::new`] refuses the config.
pub const MAX_PIXELS: u64 = 4096 * 2304;

/// Most access units whose timing is kept while waiting for their picture.
/// The H.264 reorder buffer holds at most 16 pictures; access units that never
/// produce a picture (dropped as corrupt, the second field of a field pair)
/// leave their entry behind, and the oldest are forgotten beyond this bound.
pub const MAX_PENDING: usize = 64;

/// Why an access unit (or a configuration) could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The source is not 8-bit 4:2:0 H.264.
    #[error(
        "unsupported source video: {found}; Ladder's CPU decoder accepts 8-bit 4:2:0 H.264 \
         (Baseline, Main or High profile): configure the encoder for yuv420p 8-bit"
    )]
    Unsupported { found: String },

    /// The picture size is beyond [`MAX_PIXELS`].
    #[error(
        "source picture {width}x{height} is too large: Ladder decodes at most {max} pixels per \
         picture (4096x2304)",
        max = MAX_PIXELS
    )]
    TooLarge { width: u32, height: u32 },

    /// This FFmpeg build has no H.264 decoder.
    #[error("libavcodec has no H.264 decoder (FFmpeg built without it?)")]
    NoDecoder,

    /// libavcodec refused the configuration (a broken avcC, out of memory).
    #[error("could not open the H.264 decoder with the publisher's configuration: {0}")]
    Open(#[source] ffmpeg::Error),

    /// libavcodec could not decode an access unit; decoding continues with the
    /// next one (pictures that depend on it may be concealed).
    #[error("corrupt H.264 access unit (pts {pts}): {source}; it was skipped")]
    Corrupt {
        pts: Millis,
        #[source]
        source: ffmpeg::Error,
    },

    /// libavcodec failed while returning pictures.
    #[error("H.264 decoder failed: {0}")]
    Decoder(#[source] ffmpeg::Error),

    /// A picture came out in a layout the ladder cannot take (only a
    /// mid-stream SPS change can do this once the config was accepted).
    #[error(
        "decoded picture is {format} {width}x{height}; Ladder's CPU ladder takes 8-bit 4:2:0 \
         (the publisher switched formats mid-stream?)"
    )]
    PictureFormat {
        format: String,
        width: u32,
        height: u32,
    },
}

/// A timestamp shown in milliseconds, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub Timestamp);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// Counters for one decoder, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Access units fed.
    pub access_units: u64,
    /// Pictures returned.
    pub pictures: u64,
    /// Access units refused as corrupt ([`DecodeError::Corrupt`]).
    pub corrupt: u64,
    /// Pictures returned with errors concealed by libavcodec.
    pub concealed: u64,
    /// Pictures dropped because their access unit's timing was unknown
    /// (forgotten beyond [`MAX_PENDING`]).
    pub untimed: u64,
}

/// Timing of an access unit waiting for its picture.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    pts: Timestamp,
    idr: bool,
}

/// A libavcodec H.264 decoder for one channel.
///
/// `Send`: it is built on one thread and may move to the channel's decode
/// thread; it is not shared.
pub struct Decoder {
    codec: ffmpeg::decoder::Video,
    /// Reused for every picture (libavcodec unreferences it on each receive).
    frame: ffmpeg::frame::Video,
    /// Next access unit's decode-order number (the packet pts we send).
    next_seq: u64,
    /// Access units sent whose picture has not come out yet, oldest first.
    pending: VecDeque<Pending>,
    /// Pictures decoded in a call that then failed, returned by the next call.
    carried: Vec<Picture>,
    interlaced: bool,
    warned_interlaced: bool,
    stats: DecodeStats,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending.len())
            .field("interlaced", &self.interlaced)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for the publisher's configuration (the avcC record becomes the
    /// extradata). Refuses 10-bit and non-4:2:0 sources, and pictures larger
    /// than [`MAX_PIXELS`]. `threads`: slice threads, 0 to let libavcodec pick
    /// one per core, 1 for none (see the module docs on latency).
    pub fn new(config: &VideoConfig, threads: usize) -> Result<Decoder, DecodeError> {
        check_config(config)?;

        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::H264).ok_or(DecodeError::NoDecoder)?;
        let mut context = ffmpeg::codec::Context::new_with_codec(codec);
        context.set_threading(ffmpeg::threading::Config {
            kind: ffmpeg::threading::Type::Slice,
            count: threads,
            ..Default::default()
        });
        set_extradata(&mut context, &config.record)?;
        // Safety: `context` owns a live AVCodecContext that is not open yet;
        // `max_pixels` is a plain int64 field read by avcodec_open2 and by
        // every size check afterwards.
        unsafe {
            (*context.as_mut_ptr()).max_pixels = MAX_PIXELS as i64;
        }
        let codec = context
            .decoder()
            .open_as(codec)
            .and_then(|opened| opened.video())
            .map_err(DecodeError::Open)?;

        if config.interlaced {
            tracing::info!(
                "interlaced H.264 source ({}x{}): decoded as woven frames; the ladder does not deinterlace",
                config.width,
                config.height
            );
        }
        Ok(Decoder {
            codec,
            frame: ffmpeg::frame::Video::empty(),
            next_seq: 0,
            pending: VecDeque::with_capacity(MAX_PENDING + 1),
            carried: Vec::new(),
            interlaced: config.interlaced,
            warned_interlaced: config.interlaced,
            stats: DecodeStats::default(),
        })
    }

    /// Whether the source is interlaced: the SPS says fields may be coded
    /// (`frame_mbs_only_flag` = 0), or a decoded picture was flagged interlaced.
    pub fn interlaced(&self) -> bool {
        self.interlaced
    }

    /// Counters since the decoder was made.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Decode one access unit (AVCC length-prefixed NAL units, as in
    /// [`VideoFrame::data`]). Returns the pictures that became ready, in
    /// presentation order: none while the reorder buffer fills, usually one,
    /// sometimes more. Each is taken from `pool` and carries the source pts,
    /// `source_idr` (its access unit held an IDR slice) and `seq` (its access
    /// unit's decode-order number).
    ///
    /// An error concerns this access unit only: the decoder stays usable, and
    /// pictures that were already decoded come out of the next call.
    pub fn decode(
        &mut self,
        frame: &VideoFrame,
        pool: &Arc<PicturePool>,
    ) -> Result<Vec<Picture>, DecodeError> {
        let mut out = std::mem::take(&mut self.carried);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.access_units += 1;

        // `Packet::copy` pads with AV_INPUT_BUFFER_PADDING_SIZE zero bytes, as
        // libavcodec's bitstream reader requires.
        let mut packet = ffmpeg::Packet::copy(&frame.data);
        let tick = i64::try_from(seq).unwrap_or(i64::MAX);
        packet.set_pts(Some(tick));
        packet.set_dts(Some(tick));
        if frame.keyframe {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }

        self.pending.push_back(Pending {
            seq,
            pts: frame.pts,
            // The demuxer sets `keyframe` exactly when the access unit holds
            // an IDR NAL unit (type 5); the FLV frame type is not trusted.
            idr: frame.keyframe,
        });
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
        }

        loop {
            match self.codec.send_packet(&packet) {
                Ok(()) => break,
                // Only when pictures are waiting: take them, then resend.
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    if let Err(e) = self.receive_all(pool, &mut out) {
                        self.carried = out;
                        return Err(e);
                    }
                }
                Err(source) => {
                    self.stats.corrupt += 1;
                    self.pending.retain(|p| p.seq != seq);
                    // Pictures made ready before the failure are not lost.
                    let ready = self.receive_all(pool, &mut out);
                    self.carried = out;
                    ready?;
                    return Err(DecodeError::Corrupt {
                        pts: Millis(frame.pts),
                        source,
                    });
                }
            }
        }
        match self.receive_all(pool, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.carried = out;
                Err(e)
            }
        }
    }

    /// End of stream: return the pictures still held for reordering, in
    /// presentation order. The decoder is then ready for a new stream with the
    /// same configuration (it starts again at an IDR).
    pub fn flush(&mut self, pool: &Arc<PicturePool>) -> Result<Vec<Picture>, DecodeError> {
        let mut out = std::mem::take(&mut self.carried);
        let result = match self.codec.send_eof() {
            Ok(()) | Err(ffmpeg::Error::Eof) => self.receive_all(pool, &mut out),
            Err(e) => Err(DecodeError::Decoder(e)),
        };
        // Leave draining mode whatever happened, so the decoder takes packets again.
        self.codec.flush();
        self.pending.clear();
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.carried = out;
                Err(e)
            }
        }
    }

    /// Take every picture libavcodec has ready.
    fn receive_all(
        &mut self,
        pool: &Arc<PicturePool>,
        out: &mut Vec<Picture>,
    ) -> Result<(), DecodeError> {
        loop {
            match self.codec.receive_frame(&mut self.frame) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    return Ok(())
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(e) => return Err(DecodeError::Decoder(e)),
            }
            if let Some(picture) = self.take_picture(pool)? {
                out.push(picture);
            }
        }
    }

    /// Copy the frame libavcodec just returned into a pool picture, with its
    /// access unit's timing.
    fn take_picture(&mut self, pool: &Arc<PicturePool>) -> Result<Option<Picture>, DecodeError> {
        let (width, height) = (self.frame.width(), self.frame.height());
        let format = self.frame.format();
        if !matches!(
            format,
            ffmpeg::format::Pixel::YUV420P | ffmpeg::format::Pixel::YUVJ420P
        ) || width == 0
            || height == 0
        {
            return Err(DecodeError::PictureFormat {
                format: pixel_name(format),
                width,
                height,
            });
        }

        let Some(timing) = self
            .frame
            .pts()
            .and_then(|t| u64::try_from(t).ok())
            .and_then(|seq| self.pending.iter().position(|p| p.seq == seq))
            .and_then(|i| self.pending.remove(i))
        else {
            self.stats.untimed += 1;
            tracing::warn!("dropping a decoded picture whose access unit timing is unknown");
            return Ok(None);
        };

        // Safety: the frame was just filled by avcodec_receive_frame and stays
        // referenced (by `self.frame`) until the next receive; we only read
        // plain fields.
        let (interlaced, corrupt) = unsafe {
            let f = &*self.frame.as_ptr();
            (
                f.interlaced_frame != 0,
                f.decode_error_flags != 0 || f.flags & ffi::AV_FRAME_FLAG_CORRUPT as i32 != 0,
            )
        };
        if interlaced && !self.warned_interlaced {
            self.warned_interlaced = true;
            tracing::info!("source pictures are interlaced: decoded as woven frames");
        }
        self.interlaced |= interlaced;
        if corrupt {
            self.stats.concealed += 1;
        }

        let mut picture = pool.take(width, height);
        for (index, plane) in picture.planes.iter_mut().enumerate() {
            copy_plane(&self.frame, index, plane)?;
        }
        picture.pts = Some(timing.pts);
        picture.source_idr = timing.idr;
        picture.seq = timing.seq;
        self.stats.pictures += 1;
        Ok(Some(picture))
    }
}

/// Refuse what the ladder cannot take, with what was found.
fn check_config(config: &VideoConfig) -> Result<(), DecodeError> {
    match config.codec {
        VideoCodec::H264 => {}
    }
    let profile = profile_name(config.profile_idc);
    if config.chroma_format_idc != 1 {
        let chroma = match config.chroma_format_idc {
            0 => "4:0:0 (monochrome)",
            2 => "4:2:2",
            3 => "4:4:4",
            _ => "an unknown chroma format",
        };
        return Err(DecodeError::Unsupported {
            found: format!(
                "{chroma} chroma, {}-bit, H.264 {profile} ({})",
                config.bit_depth_luma, config.codec_string
            ),
        });
    }
    if config.bit_depth_luma != 8 || config.bit_depth_chroma != 8 {
        let depth = if config.bit_depth_luma == config.bit_depth_chroma {
            format!("{}-bit", config.bit_depth_luma)
        } else {
            format!(
                "{}-bit luma / {}-bit chroma",
                config.bit_depth_luma, config.bit_depth_chroma
            )
        };
        return Err(DecodeError::Unsupported {
            found: format!("{depth} 4:2:0, H.264 {profile} ({})", config.codec_string),
        });
    }
    if u64::from(config.width) * u64::from(config.height) > MAX_PIXELS {
        return Err(DecodeError::TooLarge {
            width: config.width,
            height: config.height,
        });
    }
    Ok(())
}

/// The H.264 profile a `profile_idc` names (ITU-T H.264 Annex A.2).
fn profile_name(profile_idc: u8) -> &'static str {
    match profile_idc {
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4 Intra",
        _ => "profile",
    }
}

/// A pixel format's FFmpeg name, e.g. `yuv422p10le`.
fn pixel_name(format: ffmpeg::format::Pixel) -> String {
    format
        .descriptor()
        .map_or_else(|| format!("{format:?}"), |d| d.name().to_owned())
}

/// Give the (not yet opened) context a copy of the avcC record as extradata.
fn set_extradata(context: &mut ffmpeg::codec::Context, record: &[u8]) -> Result<(), DecodeError> {
    let size =
        i32::try_from(record.len()).map_err(|_| DecodeError::Open(ffmpeg::Error::InvalidData))?;
    let padding = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // Safety: av_mallocz returns a zeroed buffer of `len + padding` bytes or
    // null; we copy `len` bytes into it from a slice of that length, so the
    // padding stays zero as libavcodec requires. The context is not open, its
    // extradata is null (freshly allocated), and avcodec_free_context (run by
    // the context's Drop) frees what we hand it with av_free.
    unsafe {
        let buffer = ffi::av_mallocz(record.len() + padding).cast::<u8>();
        if buffer.is_null() {
            return Err(DecodeError::Open(ffmpeg::Error::Other {
                errno: ffmpeg::error::ENOMEM,
            }));
        }
        std::ptr::copy_nonoverlapping(record.as_ptr(), buffer, record.len());
        let ctx = context.as_mut_ptr();
        (*ctx).extradata = buffer;
        (*ctx).extradata_size = size;
    }
    Ok(())
}

/// Copy plane `index` of a YUV420P frame into `plane` (already sized by
/// `Picture::resize` for the frame's dimensions), row by row.
fn copy_plane(
    frame: &ffmpeg::frame::Video,
    index: usize,
    plane: &mut crate::pipeline::frame::Plane,
) -> Result<(), DecodeError> {
    // Safety: reading the data pointer and line size of a frame returned by
    // avcodec_receive_frame, still referenced by `frame`.
    let (data, linesize) = unsafe {
        let f = &*frame.as_ptr();
        (f.data[index], f.linesize[index])
    };
    let stride = usize::try_from(linesize).unwrap_or(0);
    if data.is_null() || stride < plane.width {
        // A negative (bottom-up) or short line size: libavcodec's H.264
        // decoder never makes one, but check rather than read out of bounds.
        return Err(DecodeError::PictureFormat {
            format: format!("plane {index} with line size {linesize}"),
            width: frame.width(),
            height: frame.height(),
        });
    }
    for y in 0..plane.height {
        // Safety: for YUV420P, plane `index` of a `width` x `height` frame has
        // `plane.height` rows (ceil(height/2) for chroma) of at least
        // `plane.width` bytes each (ceil(width/2) for chroma), `linesize` bytes
        // apart from `data` (libavcodec applies cropping by offsetting `data`
        // within the same buffer). `stride >= plane.width` was checked, and the
        // row is read before the frame is unreferenced.
        let row = unsafe { std::slice::from_raw_parts(data.add(y * stride), plane.width) };
        plane.row_mut(y).copy_from_slice(row);
    }
    Ok(())
}
