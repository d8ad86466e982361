//! Media back into FLV tag bodies, for publishing to an RTMP destination
//! (Adobe FLV spec v10.1 annex E.4; Enhanced RTMP v1 for HEVC and AV1).
//!
//! The inverse of `media::flv`: what the demuxer made of a publisher's tags (the
//! source) or what an encoder made (a rung) becomes tag bodies again:
//!
//! - H.264: the legacy AVC tag, `[FrameType:4 | CodecID 7][AVCPacketType][CompositionTime SI24]`,
//!   then the avcC record (sequence header) or the access unit's length-prefixed NAL
//!   units, as they are (the record's `lengthSizeMinusOne` still describes them).
//! - HEVC and AV1: the Enhanced RTMP form, `[IsExHeader | FrameType:3 | PacketType:4][FourCC]`:
//!   `SequenceStart` with the hvcC / av1C record, `CodedFrames` (HEVC, with the SI24
//!   composition offset) or `CodedFramesX` (AV1, and HEVC when the offset is 0).
//! - AAC: `[SoundFormat 10 | 44 kHz | 16-bit | stereo][AACPacketType]` then the
//!   AudioSpecificConfig or one raw frame (the rate and channel bits are fixed for AAC:
//!   the ASC is what decoders read).
//! - `onMetaData`, sent with `@setDataFrame` at the start of each connection.
//!
//! Pure functions; tested by feeding the result back through `media::flv`'s demuxer.

use bytes::{BufMut, Bytes, BytesMut};

use crate::ingest::rtmp::amf0::Amf0Value;
use crate::media::{AudioConfig, AudioFrame, Timestamp, VideoCodec, VideoConfig, VideoFrame};

/// FLV video frame types (annex E.4.3.1).
const KEY_FRAME: u8 = 1;
const INTER_FRAME: u8 = 2;
/// FLV CodecID of H.264 (annex E.4.3.1).
const CODEC_AVC: u8 = 7;
/// AAC, 44 kHz, 16-bit, stereo: the fixed first byte of every AAC audio tag.
const AAC_FIRST_BYTE: u8 = 0xAF;
/// Enhanced RTMP packet types.
const EX_HEADER: u8 = 0x80;
const SEQUENCE_START: u8 = 0;
const CODED_FRAMES: u8 = 1;
const CODED_FRAMES_X: u8 = 3;

/// Why media cannot become a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The composition offset does not fit the tag's signed 24-bit field.
    #[error("composition offset {0} ms does not fit FLV's 24 bits")]
    CompositionOffset(i64),
}

fn fourcc(codec: VideoCodec) -> Option<&'static [u8; 4]> {
    match codec {
        VideoCodec::H264 => None,
        VideoCodec::Av1 => Some(b"av01"),
        VideoCodec::Hevc => Some(b"hvc1"),
    }
}

/// The video sequence header (decoder configuration) tag body.
pub fn video_header(config: &VideoConfig) -> Bytes {
    let mut out = BytesMut::with_capacity(config.record.len() + 8);
    match fourcc(config.codec) {
        None => {
            out.put_u8((KEY_FRAME << 4) | CODEC_AVC);
            out.put_u8(0); // AVC sequence header
            out.put_slice(&[0, 0, 0]);
        }
        Some(cc) => {
            out.put_u8(EX_HEADER | (KEY_FRAME << 4) | SEQUENCE_START);
            out.put_slice(cc);
        }
    }
    out.put_slice(&config.record);
    out.freeze()
}

/// One access unit's tag body.
pub fn video_frame(config: &VideoConfig, frame: &VideoFrame) -> Result<Bytes, TagError> {
    let cto = (frame.pts - frame.dts).as_millis();
    if !(-(1 << 23)..(1 << 23)).contains(&cto) {
        return Err(TagError::CompositionOffset(cto));
    }
    let frame_type = if frame.keyframe {
        KEY_FRAME
    } else {
        INTER_FRAME
    };
    let cto_bytes = (cto as i32).to_be_bytes();
    let mut out = BytesMut::with_capacity(frame.data.len() + 8);
    match fourcc(config.codec) {
        None => {
            out.put_u8((frame_type << 4) | CODEC_AVC);
            out.put_u8(1); // AVC NALU
            out.put_slice(&cto_bytes[1..]);
        }
        Some(cc) if cto != 0 => {
            out.put_u8(EX_HEADER | (frame_type << 4) | CODED_FRAMES);
            out.put_slice(cc);
            out.put_slice(&cto_bytes[1..]);
        }
        Some(cc) => {
            out.put_u8(EX_HEADER | (frame_type << 4) | CODED_FRAMES_X);
            out.put_slice(cc);
        }
    }
    out.put_slice(&frame.data);
    Ok(out.freeze())
}

/// The AAC sequence header (AudioSpecificConfig) tag body.
pub fn audio_header(config: &AudioConfig) -> Bytes {
    let mut out = BytesMut::with_capacity(config.asc.len() + 2);
    out.put_u8(AAC_FIRST_BYTE);
    out.put_u8(0);
    out.put_slice(&config.asc);
    out.freeze()
}

/// One raw AAC frame's tag body.
pub fn audio_frame(frame: &AudioFrame) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.data.len() + 2);
    out.put_u8(AAC_FIRST_BYTE);
    out.put_u8(1);
    out.put_slice(&frame.data);
    out.freeze()
}

/// `onMetaData`'s properties for what is sent (the values `@setDataFrame` carries):
/// size, frame rate and codec ids (7 H.264; the FourCC's number for HEVC and AV1, as
/// Enhanced RTMP has it), AAC's rate and channels, and the encoder.
pub fn metadata(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Amf0Value {
    let mut props: Vec<(String, Amf0Value)> = Vec::new();
    let mut put = |k: &str, v: Amf0Value| props.push((k.to_owned(), v));
    if let Some(v) = video {
        put("width", Amf0Value::Number(f64::from(v.width)));
        put("height", Amf0Value::Number(f64::from(v.height)));
        let id = match fourcc(v.codec) {
            None => f64::from(CODEC_AVC),
            Some(cc) => f64::from(u32::from_be_bytes(*cc)),
        };
        put("videocodecid", Amf0Value::Number(id));
        if let Some(fps) = v.frame_rate {
            put("framerate", Amf0Value::Number(fps));
        }
    }
    if let Some(a) = audio {
        put("audiocodecid", Amf0Value::Number(10.0));
        put(
            "audiosamplerate",
            Amf0Value::Number(f64::from(a.sample_rate)),
        );
        put("audiochannels", Amf0Value::Number(f64::from(a.channels)));
        put("stereo", Amf0Value::Boolean(a.channels >= 2));
    }
    put(
        "encoder",
        Amf0Value::String(concat!("Ladder ", env!("CARGO_PKG_VERSION")).to_owned()),
    );
    Amf0Value::EcmaArray(props)
}

/// A media timestamp as an RTMP one, relative to `base` (the connection's first
/// tag): milliseconds, wrapping at 2^32 as RTMP's do; earlier than `base` is 0.
pub fn rtmp_ms(ts: Timestamp, base: Timestamp) -> u32 {
    let ms = (ts - base).as_millis().max(0);
    (ms as u64 & 0xFFFF_FFFF) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::Demuxer;
    use crate::media::{MediaEvent, RtmpTimestamp};

    /// The avcC FFmpeg's FLV muxer sent for x264 High 720p30.
    fn avc_config() -> VideoConfig {
        const AVCC: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800";
        let bytes: Vec<u8> = (0..AVCC.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&AVCC[i..i + 2], 16).unwrap())
            .collect();
        crate::media::avc::video_config(Bytes::from(bytes)).unwrap()
    }

    fn demux_video(d: &mut Demuxer, ts: u32, body: Bytes) -> Option<MediaEvent> {
        d.video(RtmpTimestamp(ts), body).expect("demuxes")
    }

    #[test]
    fn h264_tags_round_trip_through_the_demuxer() {
        let config = avc_config();
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        match demux_video(&mut d, 0, video_header(&config)) {
            Some(MediaEvent::VideoConfig(c)) => assert_eq!(c.record, config.record),
            other => panic!("{other:?}"),
        }
        // an IDR with a composition offset of 66 ms, then a P frame
        let idr = VideoFrame {
            dts: Timestamp::from_millis(1000),
            pts: Timestamp::from_millis(1066),
            keyframe: true,
            data: Bytes::from_static(&[0, 0, 0, 3, 0x65, 0x88, 0x80]),
        };
        let body = video_frame(&config, &idr).unwrap();
        assert_eq!(&body[..5], &[0x17, 1, 0, 0, 66]);
        match demux_video(&mut d, 1000, body) {
            Some(MediaEvent::Video(f)) => {
                assert!(f.keyframe);
                assert_eq!((f.pts - f.dts).as_millis(), 66);
                assert_eq!(f.data, idr.data);
            }
            other => panic!("{other:?}"),
        }
        let p = VideoFrame {
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 3, 0x41, 0x9a, 0x00]),
            ..idr
        };
        assert_eq!(video_frame(&config, &p).unwrap()[0], 0x27);
    }

    #[test]
    fn negative_and_oversized_composition_offsets() {
        let config = avc_config();
        let f = VideoFrame {
            dts: Timestamp::from_millis(100),
            pts: Timestamp::from_millis(67),
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
        };
        // -33 as SI24
        assert_eq!(
            &video_frame(&config, &f).unwrap()[2..5],
            &[0xff, 0xff, 0xdf]
        );
        let far = VideoFrame {
            pts: Timestamp::from_millis(100 + (1 << 23)),
            ..f
        };
        assert_eq!(
            video_frame(&config, &far),
            Err(TagError::CompositionOffset(1 << 23))
        );
    }

    #[test]
    fn av1_uses_the_enhanced_rtmp_form() {
        let mut config = avc_config();
        config.codec = VideoCodec::Av1;
        config.record = Bytes::from_static(&[0x81, 0x04, 0x0c, 0x00]);
        let h = video_header(&config);
        assert_eq!(&h[..5], &[0x90, b'a', b'v', b'0', b'1']);
        assert_eq!(&h[5..], &config.record[..]);
        let f = VideoFrame {
            dts: Timestamp::from_millis(0),
            pts: Timestamp::from_millis(0),
            keyframe: false,
            data: Bytes::from_static(&[0x32, 0x00]),
        };
        let b = video_frame(&config, &f).unwrap();
        assert_eq!(&b[..5], &[0xA3, b'a', b'v', b'0', b'1'], "CodedFramesX");
        assert_eq!(&b[5..], &[0x32, 0x00]);
    }

    #[test]
    fn aac_tags_round_trip_through_the_demuxer() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let asc = Bytes::from_static(&[0x12, 0x10]); // AAC-LC, 44.1 kHz, stereo
        let event = d
            .audio(RtmpTimestamp(0), {
                let mut b = BytesMut::new();
                b.put_slice(&[AAC_FIRST_BYTE, 0]);
                b.put_slice(&asc);
                b.freeze()
            })
            .unwrap();
        let Some(MediaEvent::AudioConfig(config)) = event else {
            panic!("{event:?}")
        };
        assert_eq!(
            audio_header(&config),
            Bytes::from_static(&[0xAF, 0, 0x12, 0x10])
        );
        let frame = AudioFrame {
            dts: Timestamp::from_millis(23),
            data: Bytes::from_static(&[0x21, 0x10, 0x04]),
        };
        match d.audio(RtmpTimestamp(23), audio_frame(&frame)).unwrap() {
            Some(MediaEvent::Audio(a)) => assert_eq!(a.data, frame.data),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_names_codecs_and_size() {
        let v = avc_config();
        let m = metadata(Some(&v), None);
        assert_eq!(
            m.get("width").and_then(Amf0Value::as_number),
            Some(f64::from(v.width))
        );
        assert_eq!(
            m.get("videocodecid").and_then(Amf0Value::as_number),
            Some(7.0)
        );
        assert!(m.get("audiocodecid").is_none());
    }

    #[test]
    fn rtmp_timestamps_are_relative_and_wrap() {
        let base = Timestamp::from_millis(5000);
        assert_eq!(rtmp_ms(Timestamp::from_millis(5040), base), 40);
        assert_eq!(rtmp_ms(Timestamp::from_millis(4000), base), 0);
        assert_eq!(
            rtmp_ms(Timestamp::from_millis(5000 + (1 << 32) + 7), base),
            7
        );
    }
}
