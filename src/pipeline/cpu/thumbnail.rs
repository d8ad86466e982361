//! A channel's thumbnail: its latest source keyframe, decoded (libavcodec),
//! scaled (swscale) and encoded as a JPEG (libavcodec's MJPEG encoder), for the
//! status page. Made on demand from the keyframe the publish session keeps,
//! on the caller's thread (the admin server runs it on a blocking thread).

use crate::media::{VideoConfig, VideoFrame};
use crate::pipeline::cpu::decode::Decoder;
use crate::pipeline::cpu::scale::Scaler;
use crate::pipeline::frame::{Picture, PicturePool};
use ffmpeg_next as ffmpeg;

/// The widest thumbnail made; a caller asking for more gets this.
pub const MAX_THUMBNAIL_WIDTH: u32 = 640;

/// MJPEG quantiser scale (2 best .. 31 worst): small files, plainly legible.
const JPEG_QSCALE: i32 = 5;

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("cannot decode the keyframe: {0}")]
    Decode(String),
    #[error("the keyframe decoded to no picture")]
    NoPicture,
    #[error("cannot scale the picture: {0}")]
    Scale(String),
    #[error("cannot encode the JPEG: {0}")]
    Encode(String),
}

/// The size of a thumbnail at most `width` wide (even, aspect kept, never
/// upscaled) for a `w` x `h` picture.
pub fn thumbnail_size(w: u32, h: u32, width: u32) -> (u32, u32) {
    let width = width.clamp(16, MAX_THUMBNAIL_WIDTH).min(w.max(2));
    let tw = (width & !1).max(2);
    let th = ((u64::from(h) * u64::from(tw) / u64::from(w.max(1))) as u32 & !1).max(2);
    (tw, th)
}

/// A JPEG of `keyframe` (a sync sample of the stream `config` describes), at
/// most `width` pixels wide.
pub fn thumbnail_jpeg(
    config: &VideoConfig,
    keyframe: &VideoFrame,
    width: u32,
) -> Result<Vec<u8>, ThumbnailError> {
    let decode = |e: &dyn std::fmt::Display| ThumbnailError::Decode(e.to_string());
    let mut decoder = Decoder::new(config, 1).map_err(|e| decode(&e))?;
    let pool = PicturePool::new(4);
    let mut pictures = decoder.decode(keyframe, &pool).map_err(|e| decode(&e))?;
    pictures.extend(decoder.flush(&pool).map_err(|e| decode(&e))?);
    let picture = pictures
        .into_iter()
        .next()
        .ok_or(ThumbnailError::NoPicture)?;
    let (tw, th) = thumbnail_size(picture.width, picture.height, width);
    let mut small = Picture::new(tw, th);
    Scaler::new(picture.width, picture.height, tw, th)
        .and_then(|mut s| s.scale(&picture, &mut small))
        .map_err(|e| ThumbnailError::Scale(e.to_string()))?;
    encode_jpeg(&small)
}

/// A full-range 4:2:0 JPEG of an I420 picture (its limited-range samples are
/// written as they are: a thumbnail, not a reference).
pub fn encode_jpeg(picture: &Picture) -> Result<Vec<u8>, ThumbnailError> {
    let fail = |e: &dyn std::fmt::Display| ThumbnailError::Encode(e.to_string());
    let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG)
        .ok_or_else(|| ThumbnailError::Encode("libavcodec has no MJPEG encoder".into()))?;
    let mut encoder = ffmpeg::codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| fail(&e))?;
    encoder.set_width(picture.width);
    encoder.set_height(picture.height);
    encoder.set_format(ffmpeg::format::Pixel::YUVJ420P);
    encoder.set_time_base((1, 25));
    encoder.set_flags(ffmpeg::codec::Flags::QSCALE);
    encoder.set_global_quality(JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA);
    let mut encoder = encoder.open_as(codec).map_err(|e| fail(&e))?;
    let mut frame = ffmpeg::frame::Video::new(
        ffmpeg::format::Pixel::YUVJ420P,
        picture.width,
        picture.height,
    );
    for (i, plane) in picture.planes.iter().enumerate() {
        let stride = frame.stride(i);
        let data = frame.data_mut(i);
        for y in 0..plane.height {
            let row = &plane.row(y)[..plane.width];
            data[y * stride..y * stride + plane.width].copy_from_slice(row);
        }
    }
    // Safety: `frame` owns a live AVFrame; `quality` is a plain int field
    // that the encoder reads (with AV_CODEC_FLAG_QSCALE) as the quantiser.
    unsafe {
        (*frame.as_mut_ptr()).quality = JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA;
    }
    encoder.send_frame(&frame).map_err(|e| fail(&e))?;
    encoder.send_eof().map_err(|e| fail(&e))?;
    let mut packet = ffmpeg::Packet::empty();
    encoder.receive_packet(&mut packet).map_err(|e| fail(&e))?;
    Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::cpu::decode::tests::{demux, encode_at, have_ffmpeg, TempDir};

    #[test]
    fn sizes_keep_the_aspect_and_stay_even() {
        assert_eq!(thumbnail_size(1920, 1080, 320), (320, 180));
        assert_eq!(thumbnail_size(1280, 720, 5000), (640, 360));
        assert_eq!(thumbnail_size(320, 240, 640), (320, 240), "never upscaled");
        assert_eq!(thumbnail_size(1080, 1920, 320), (320, 568));
        assert_eq!(thumbnail_size(0, 0, 320), (2, 2), "no panic on nonsense");
    }

    #[test]
    fn a_keyframe_becomes_a_jpeg_of_the_asked_width() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("thumb");
        let path = encode_at(&dir, "t", (640, 360), 30, 10, &["-g", "10"]);
        let stream = demux(&path);
        let (config, frames) = (stream.config, stream.frames);
        let key = frames.iter().find(|f| f.keyframe).expect("a keyframe");
        let jpeg = thumbnail_jpeg(&config, key, 320).unwrap();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "JPEG SOI");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9], "JPEG EOI");
        // ffprobe reads it back at 320x180
        let out = dir.0.join("t.jpg");
        std::fs::write(&out, &jpeg).unwrap();
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "320,180");
        // a P frame alone decodes to nothing: an error, not a panic
        let p = frames.iter().find(|f| !f.keyframe).unwrap();
        assert!(thumbnail_jpeg(&config, p, 320).is_err());
    }
}
