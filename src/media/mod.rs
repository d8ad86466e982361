//! Media: FLV tags to access units, with no I/O.
//!
//! - [`flv`]: FLV video/audio tag headers (Adobe FLV spec v10.1, annex E; the
//!   Enhanced RTMP v1/v2 extended headers) and the demuxer that turns RTMP media
//!   messages into [`MediaEvent`]s.
//! - [`avc`]: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3) and the
//!   H.264 SPS fields a packager needs (ITU-T H.264 §7.3.2.1).
//! - [`hevc`]: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3), the
//!   HEVC VPS and SPS fields a packager needs (ITU-T H.265 §7.3.2.1, §7.3.2.2)
//!   and the codec string (ISO/IEC 14496-15 Annex E).
//! - [`av1`]: AV1 OBUs and sequence header (AV1 spec §5.3, §5.5), the
//!   AV1CodecConfigurationRecord and samples (AV1-ISOBMFF §2.3, §2.4).
//! - [`aac`]: AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
//! - [`timeline`]: 32-bit RTMP timestamps into one 64-bit timeline.
//! - [`time`]: the timestamp newtype.

network_input! {
    pub mod aac;
    pub mod av1;
    pub mod avc;
    pub mod flv;
    pub mod hevc;
    pub mod time;
    pub mod timeline;
}

use bytes::Bytes;
use std::sync::Arc;

pub use flv::{DemuxNotice, DemuxStats, Demuxer, MediaError};
pub use time::{RtmpTimestamp, Timestamp, MILLIS, VIDEO_TIMESCALE};
pub use timeline::{Timeline, TimelineNotice, TrackKind};

/// Video codecs Ladder understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (`avc1`): legacy FLV codec id 7 or Enhanced RTMP `avc1`.
    H264,
    /// HEVC (`hvc1`/`hev1`): from publishers over Enhanced RTMP (`hvc1`).
    Hevc,
    /// AV1 (`av01`): produced by our encoder rungs, and from publishers over
    /// Enhanced RTMP (`av01`).
    Av1,
}

impl VideoCodec {
    /// The codec's common name, for messages: `H.264`, `HEVC`, `AV1`.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::Hevc => "HEVC",
            VideoCodec::Av1 => "AV1",
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Audio codecs Ladder understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
}

/// A video decoder configuration, from the publisher's sequence header.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// The decoder configuration record as sent, without box header: the avcC
    /// payload for H.264, the hvcC payload for HEVC, the av1C payload for AV1.
    pub record: Bytes,
    /// Coded picture size after cropping, in pixels.
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codec string, e.g. `avc1.64001f`, `hvc1.1.6.L93.B0` or
    /// `av01.0.04M.08`; for HEVC its first part is the sample entry type
    /// (`hvc1` or `hev1`, [`hevc::HevcDecoderConfig::sample_entry`]).
    pub codec_string: String,
    /// Bytes in each NALU length prefix: 1, 2 or 4; 0 for AV1 (OBUs carry
    /// their own sizes).
    pub nal_length_size: u8,
    /// Frame rate from the SPS VUI timing info, when present.
    pub frame_rate: Option<f64>,
    /// H.264 `profile_idc` and `level_idc`; for HEVC `general_profile_idc`
    /// and `general_level_idc`; for AV1 `seq_profile` and `seq_level_idx[0]`.
    pub profile_idc: u8,
    pub level_idc: u8,
    /// Interlaced (H.264 frame_mbs_only_flag == 0; HEVC field_seq_flag).
    pub interlaced: bool,
    /// Sample aspect ratio from the VUI (num, den); (1, 1) when absent.
    pub sample_aspect: (u32, u32),
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (from the SPS; 1 for profiles
    /// that do not signal it).
    pub chroma_format_idc: u8,
    /// Luma and chroma sample bit depth (8 unless a high profile says otherwise).
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
}

/// An audio decoder configuration, from the publisher's sequence header.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioConfig {
    pub codec: AudioCodec,
    /// AudioSpecificConfig bytes as sent.
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = SBR/HE-AAC, 29 = PS/HE-AACv2).
    pub object_type: u8,
    /// Output sample rate in Hz (the core rate; the timescale of the CMAF track).
    pub sample_rate: u32,
    pub channels: u8,
    /// Samples per AAC frame (1024, or 960).
    pub frame_samples: u32,
    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub codec_string: String,
}

/// One H.264 or HEVC access unit, or one AV1 temporal unit.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// Decode time, normalised, in milliseconds.
    pub dts: Timestamp,
    /// Presentation time (dts + composition offset).
    pub pts: Timestamp,
    /// Sync sample: the access unit holds an IDR NAL unit (the FLV frame type is
    /// advisory and not used); for HEVC an IRAP NAL unit (IDR, CRA, BLA); for
    /// AV1 a random access point (a shown key frame after a sequence header).
    pub keyframe: bool,
    /// NAL units, each prefixed by its length in `nal_length_size` bytes (AVCC
    /// / HVCC form); for AV1 the OBUs of an ISOBMFF sample (AV1-ISOBMFF §2.4).
    pub data: Bytes,
}

/// One AAC frame (raw, no ADTS header).
#[derive(Clone, Debug)]
pub struct AudioFrame {
    pub dts: Timestamp,
    pub data: Bytes,
}

/// What the demuxer produces from RTMP media messages.
#[derive(Clone, Debug)]
pub enum MediaEvent {
    VideoConfig(Arc<VideoConfig>),
    AudioConfig(Arc<AudioConfig>),
    Video(VideoFrame),
    Audio(AudioFrame),
}
