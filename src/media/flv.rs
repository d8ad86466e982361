//! FLV audio/video tag bodies (RTMP media messages) into access units.
//!
//! An RTMP video or audio message body is an FLV tag body: the VIDEODATA and
//! AUDIODATA structures of the Adobe FLV spec v10.1, annex E.4.3.1 (video:
//! FrameType, CodecID, then for AVC the AVCPacketType and a signed 24-bit
//! CompositionTime) and E.4.2.1 (audio: SoundFormat, rate/size/type, then for
//! AAC the AACPacketType). Enhanced RTMP (v1, and the v2 audio header) sets the
//! IsExHeader bit of the first video byte (or uses SoundFormat 9 for audio) and
//! names the codec with a FourCC.
//!
//! Ladder accepts H.264 (legacy codec id 7, or Enhanced RTMP `avc1`) and AAC
//! (legacy SoundFormat 10, or Enhanced RTMP `mp4a`); everything else is refused
//! with an error that names the codec, so the operator can tell the publisher
//! what to change. The [`Demuxer`] owns the channel's [`Timeline`] and current
//! configurations and turns tags into [`MediaEvent`]s:
//!
//! - a sequence header becomes a config event; a byte-identical repeat (many
//!   encoders resend it before every keyframe) emits nothing; a different one
//!   emits a new config (the packager starts a new init segment);
//! - frames before their track's config are dropped and counted;
//! - a video frame's NAL length prefixes are validated against the configured
//!   length size, and it is a keyframe when it holds an IDR NAL unit: the FLV
//!   frame type is advisory (a "key" frame without an IDR is no sync sample);
//! - waiting for the first keyframe is the packager's job, not this module's.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use super::aac::{self, AacError};
use super::avc::{self, AvcError, NAL_IDR};
use super::timeline::{Timeline, TimelineNotice, TrackKind};
use super::{
    AudioConfig, AudioFrame, MediaEvent, RtmpTimestamp, Timestamp, VideoConfig, VideoFrame,
};

/// Notices held until [`Demuxer::take_notices`]; beyond this they are only
/// counted, so a publisher that triggers one per message cannot grow memory.
pub const MAX_PENDING_NOTICES: usize = 64;

/// FLV video codec id for AVC (H.264).
pub const VIDEO_CODEC_AVC: u8 = 7;
/// FLV sound format for AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;
/// FLV sound format 9, which Enhanced RTMP uses to mean "ExHeader follows".
pub const SOUND_FORMAT_EX_HEADER: u8 = 9;
/// Video frame type 5: video info / command frame, no picture.
pub const FRAME_TYPE_COMMAND: u8 = 5;

/// Why a media message could not be used. All of these are the publisher's doing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    #[error("empty {0} message")]
    Empty(TrackKind),
    #[error("{kind} tag header is truncated ({len} bytes)")]
    TruncatedHeader { kind: TrackKind, len: usize },
    #[error("unsupported video codec {codec}: Ladder accepts H.264 (AVC); HEVC and AV1 over Enhanced RTMP are planned")]
    UnsupportedVideoCodec { codec: String },
    #[error("unsupported audio codec {codec}: Ladder accepts AAC (AAC-LC, HE-AAC, HE-AACv2)")]
    UnsupportedAudioCodec { codec: String },
    #[error("unsupported {kind} packet: {what}")]
    UnsupportedPacket { kind: TrackKind, what: String },
    #[error("unknown {kind} packet type {packet_type}")]
    UnknownPacketType { kind: TrackKind, packet_type: u8 },
    #[error("invalid H.264 data: {0}")]
    Avc(#[from] AvcError),
    #[error("invalid AAC config: {0}")]
    Aac(#[from] AacError),
}

impl MediaError {
    /// The stream uses something Ladder does not support (as opposed to being
    /// malformed): retrying will not help; the publisher must change settings.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            MediaError::UnsupportedVideoCodec { .. }
                | MediaError::UnsupportedAudioCodec { .. }
                | MediaError::UnsupportedPacket { .. }
                | MediaError::Aac(AacError::UnsupportedObjectType { .. })
        )
    }
}

// ---------------------------------------------------------------------------
// Tag header parsing (pure)
// ---------------------------------------------------------------------------

/// What a video tag carries, once its header is parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoPacket {
    /// AVCDecoderConfigurationRecord.
    SequenceHeader(Bytes),
    /// Length-prefixed NAL units with the composition time offset in ms.
    Frame { composition_time: i32, data: Bytes },
    /// End of sequence.
    EndOfSequence,
    /// Nothing for the packager: command frames, Enhanced RTMP metadata.
    Ignored,
}

/// A parsed video tag header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTag {
    /// FLV frame type: 1 key, 2 inter, 3 disposable inter, 4 generated key, 5 command.
    pub frame_type: u8,
    pub packet: VideoPacket,
}

/// What an audio tag carries, once its header is parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioPacket {
    /// AudioSpecificConfig.
    SequenceHeader(Bytes),
    /// One raw AAC frame.
    Frame(Bytes),
    /// Nothing for the packager (Enhanced RTMP sequence end, channel config).
    Ignored,
}

fn legacy_video_codec_name(id: u8) -> String {
    match id {
        1 => "JPEG (FLV codec id 1)".into(),
        2 => "Sorenson H.263 (FLV codec id 2)".into(),
        3 => "Screen Video (FLV codec id 3)".into(),
        4 => "On2 VP6 (FLV codec id 4)".into(),
        5 => "On2 VP6 with alpha (FLV codec id 5)".into(),
        6 => "Screen Video v2 (FLV codec id 6)".into(),
        12 => "HEVC (non-standard FLV codec id 12; use Enhanced RTMP)".into(),
        13 => "AV1 (non-standard FLV codec id 13; use Enhanced RTMP)".into(),
        other => format!("unknown (FLV codec id {other})"),
    }
}

fn fourcc_name(fourcc: &[u8]) -> String {
    let shown = fourcc.escape_ascii().to_string();
    let codec = match fourcc {
        b"hvc1" => "HEVC ",
        b"av01" => "AV1 ",
        b"vp09" => "VP9 ",
        b"vp08" => "VP8 ",
        b"Opus" => "Opus ",
        b"fLaC" => "FLAC ",
        b"ac-3" => "AC-3 ",
        b"ec-3" => "E-AC-3 ",
        b".mp3" => "MP3 ",
        _ => "",
    };
    format!("{codec}(Enhanced RTMP FourCC '{shown}')")
}

fn sound_format_name(format: u8) -> String {
    let name = match format {
        0 => "Linear PCM, platform endian",
        1 => "ADPCM",
        2 => "MP3",
        3 => "Linear PCM, little endian",
        4 => "Nellymoser 16 kHz mono",
        5 => "Nellymoser 8 kHz mono",
        6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        11 => "Speex",
        14 => "MP3 8 kHz",
        15 => "device-specific sound",
        _ => "reserved",
    };
    format!("{name} (FLV sound format {format})")
}

/// Signed 24-bit big-endian (the CompositionTime field).
fn si24(b: [u8; 3]) -> i32 {
    // Place in the top three bytes, then arithmetic-shift back down.
    i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8
}

/// Parse a video tag body's header (annex E.4.3.1, Enhanced RTMP ExVideoTagHeader).
pub fn parse_video_tag(payload: &Bytes) -> Result<VideoTag, MediaError> {
    let kind = TrackKind::Video;
    let truncated = || MediaError::TruncatedHeader {
        kind,
        len: payload.len(),
    };
    let first = *payload.first().ok_or(MediaError::Empty(kind))?;

    if first & 0x80 != 0 {
        // Enhanced RTMP: [IsExHeader:1][FrameType:3][PacketType:4].
        let frame_type = (first >> 4) & 0x07;
        let packet_type = first & 0x0f;
        const SEQUENCE_START: u8 = 0;
        const CODED_FRAMES: u8 = 1;
        const SEQUENCE_END: u8 = 2;
        const CODED_FRAMES_X: u8 = 3;
        const METADATA: u8 = 4;
        const MPEG2TS_SEQUENCE_START: u8 = 5;
        const MULTITRACK: u8 = 6;
        const MOD_EX: u8 = 7;
        if frame_type == FRAME_TYPE_COMMAND && packet_type != METADATA {
            return Ok(VideoTag {
                frame_type,
                packet: VideoPacket::Ignored,
            });
        }
        match packet_type {
            MULTITRACK => {
                return Err(MediaError::UnsupportedPacket {
                    kind,
                    what: "Enhanced RTMP multitrack video".into(),
                })
            }
            MOD_EX => {
                return Err(MediaError::UnsupportedPacket {
                    kind,
                    what: "Enhanced RTMP v2 ModEx video packet".into(),
                })
            }
            _ => {}
        }
        let fourcc = payload.get(1..5).ok_or_else(truncated)?;
        if fourcc != b"avc1" {
            return Err(MediaError::UnsupportedVideoCodec {
                codec: fourcc_name(fourcc),
            });
        }
        let packet = match packet_type {
            SEQUENCE_START => VideoPacket::SequenceHeader(payload.slice(5..)),
            CODED_FRAMES => {
                let &[c0, c1, c2] = payload.get(5..8).ok_or_else(truncated)? else {
                    return Err(truncated());
                };
                VideoPacket::Frame {
                    composition_time: si24([c0, c1, c2]),
                    data: payload.slice(8..),
                }
            }
            CODED_FRAMES_X => VideoPacket::Frame {
                composition_time: 0,
                data: payload.slice(5..),
            },
            SEQUENCE_END => VideoPacket::EndOfSequence,
            METADATA => VideoPacket::Ignored,
            MPEG2TS_SEQUENCE_START => {
                return Err(MediaError::UnsupportedPacket {
                    kind,
                    what: "Enhanced RTMP MPEG-2 TS sequence start".into(),
                })
            }
            other => {
                return Err(MediaError::UnknownPacketType {
                    kind,
                    packet_type: other,
                })
            }
        };
        return Ok(VideoTag { frame_type, packet });
    }

    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if frame_type == FRAME_TYPE_COMMAND {
        // Video info/command frame: no picture, whatever the codec.
        return Ok(VideoTag {
            frame_type,
            packet: VideoPacket::Ignored,
        });
    }
    if codec_id != VIDEO_CODEC_AVC {
        return Err(MediaError::UnsupportedVideoCodec {
            codec: legacy_video_codec_name(codec_id),
        });
    }
    let &[packet_type, c0, c1, c2] = payload.get(1..5).ok_or_else(truncated)? else {
        return Err(truncated());
    };
    let composition_time = si24([c0, c1, c2]);
    let packet = match packet_type {
        0 => VideoPacket::SequenceHeader(payload.slice(5..)),
        1 => VideoPacket::Frame {
            composition_time,
            data: payload.slice(5..),
        },
        2 => VideoPacket::EndOfSequence,
        other => {
            return Err(MediaError::UnknownPacketType {
                kind,
                packet_type: other,
            })
        }
    };
    Ok(VideoTag { frame_type, packet })
}

/// Parse an audio tag body's header (annex E.4.2.1, Enhanced RTMP ExAudioTagHeader).
pub fn parse_audio_tag(payload: &Bytes) -> Result<AudioPacket, MediaError> {
    let kind = TrackKind::Audio;
    let truncated = || MediaError::TruncatedHeader {
        kind,
        len: payload.len(),
    };
    let first = *payload.first().ok_or(MediaError::Empty(kind))?;
    let sound_format = first >> 4;
    match sound_format {
        SOUND_FORMAT_AAC => {
            let packet_type = *payload.get(1).ok_or_else(truncated)?;
            match packet_type {
                0 => Ok(AudioPacket::SequenceHeader(payload.slice(2..))),
                1 => Ok(AudioPacket::Frame(payload.slice(2..))),
                other => Err(MediaError::UnknownPacketType {
                    kind,
                    packet_type: other,
                }),
            }
        }
        SOUND_FORMAT_EX_HEADER => {
            // Enhanced RTMP v2: [SoundFormat=9:4][AudioPacketType:4] FourCC.
            let packet_type = first & 0x0f;
            const SEQUENCE_START: u8 = 0;
            const CODED_FRAMES: u8 = 1;
            const SEQUENCE_END: u8 = 2;
            const MULTICHANNEL_CONFIG: u8 = 4;
            const MULTITRACK: u8 = 5;
            const MOD_EX: u8 = 7;
            match packet_type {
                MULTITRACK => {
                    return Err(MediaError::UnsupportedPacket {
                        kind,
                        what: "Enhanced RTMP multitrack audio".into(),
                    })
                }
                MOD_EX => {
                    return Err(MediaError::UnsupportedPacket {
                        kind,
                        what: "Enhanced RTMP ModEx audio packet".into(),
                    })
                }
                _ => {}
            }
            let fourcc = payload.get(1..5).ok_or_else(truncated)?;
            if fourcc != b"mp4a" {
                return Err(MediaError::UnsupportedAudioCodec {
                    codec: fourcc_name(fourcc),
                });
            }
            match packet_type {
                SEQUENCE_START => Ok(AudioPacket::SequenceHeader(payload.slice(5..))),
                CODED_FRAMES => Ok(AudioPacket::Frame(payload.slice(5..))),
                SEQUENCE_END | MULTICHANNEL_CONFIG => Ok(AudioPacket::Ignored),
                other => Err(MediaError::UnknownPacketType {
                    kind,
                    packet_type: other,
                }),
            }
        }
        other => Err(MediaError::UnsupportedAudioCodec {
            codec: sound_format_name(other),
        }),
    }
}

// ---------------------------------------------------------------------------
// Demuxer (stateful)
// ---------------------------------------------------------------------------

/// Something worth a log line (the caller rate-limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DemuxNotice {
    Timeline(TimelineNotice),
    /// Frames of this kind are arriving before its sequence header and are being
    /// dropped (reported once until a config arrives).
    DroppedBeforeConfig {
        kind: TrackKind,
    },
    /// The publisher sent a different sequence header mid-stream.
    ConfigChanged {
        kind: TrackKind,
        codec: String,
    },
    /// This many notices were dropped because nobody collected them.
    Suppressed {
        count: u64,
    },
}

impl std::fmt::Display for DemuxNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemuxNotice::Timeline(n) => n.fmt(f),
            DemuxNotice::DroppedBeforeConfig { kind } => write!(
                f,
                "dropping {kind} frames: no {kind} sequence header received yet"
            ),
            DemuxNotice::ConfigChanged { kind, codec } => write!(
                f,
                "publisher changed the {kind} configuration mid-stream (now {codec})"
            ),
            DemuxNotice::Suppressed { count } => write!(f, "{count} further notices suppressed"),
        }
    }
}

/// Counters for one track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Frames emitted, and their payload bytes.
    pub frames: u64,
    pub bytes: u64,
    /// Config events emitted (the first and every change).
    pub configs: u64,
    /// Frames dropped because no config had arrived.
    pub dropped_before_config: u64,
    /// Frames dropped because they carried no data.
    pub dropped_empty: u64,
    /// Messages rejected as malformed.
    pub malformed: u64,
    /// Messages rejected as an unsupported codec or packet.
    pub unsupported: u64,
    /// Messages with nothing to emit: repeated headers, end of sequence, command frames.
    pub ignored: u64,
}

/// Counters for a channel's demuxer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DemuxStats {
    pub video: TrackStats,
    pub audio: TrackStats,
}

/// Turns a channel's RTMP media messages into [`MediaEvent`]s.
#[derive(Debug)]
pub struct Demuxer {
    timeline: Timeline,
    video_config: Option<Arc<VideoConfig>>,
    audio_config: Option<Arc<AudioConfig>>,
    stats: DemuxStats,
    notices: Vec<DemuxNotice>,
    suppressed: u64,
    /// Whether DroppedBeforeConfig was already reported, per kind.
    reported_video_drop: bool,
    reported_audio_drop: bool,
}

impl Demuxer {
    /// A demuxer whose first frame (of either kind) is timed at `start`.
    pub fn new(start: Timestamp) -> Self {
        Demuxer {
            timeline: Timeline::new(start),
            video_config: None,
            audio_config: None,
            stats: DemuxStats::default(),
            notices: Vec::new(),
            suppressed: 0,
            reported_video_drop: false,
            reported_audio_drop: false,
        }
    }

    /// The current video configuration, if a sequence header has arrived.
    pub fn video_config(&self) -> Option<&Arc<VideoConfig>> {
        self.video_config.as_ref()
    }

    /// The current audio configuration, if a sequence header has arrived.
    pub fn audio_config(&self) -> Option<&Arc<AudioConfig>> {
        self.audio_config.as_ref()
    }

    /// One RTMP video message body. `Ok(None)`: nothing to emit (dropped,
    /// repeated header, end of sequence, command frame). On error the message is
    /// dropped and counted; the demuxer stays usable.
    pub fn video(
        &mut self,
        ts: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<Option<MediaEvent>, MediaError> {
        let result = self.video_inner(ts, &payload);
        if let Err(e) = &result {
            count_error(&mut self.stats.video, e);
        }
        result
    }

    /// One RTMP audio message body; see [`Demuxer::video`].
    pub fn audio(
        &mut self,
        ts: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<Option<MediaEvent>, MediaError> {
        let result = self.audio_inner(ts, &payload);
        if let Err(e) = &result {
            count_error(&mut self.stats.audio, e);
        }
        result
    }

    /// Timeline notices and drops worth logging, since the last call.
    pub fn take_notices(&mut self) -> Vec<DemuxNotice> {
        let mut out: Vec<DemuxNotice> = self
            .timeline
            .take_notices()
            .into_iter()
            .map(DemuxNotice::Timeline)
            .collect();
        out.append(&mut self.notices);
        if self.suppressed > 0 {
            out.push(DemuxNotice::Suppressed {
                count: std::mem::take(&mut self.suppressed),
            });
        }
        out
    }

    pub fn stats(&self) -> DemuxStats {
        self.stats
    }

    fn notice(&mut self, n: DemuxNotice) {
        if self.notices.len() < MAX_PENDING_NOTICES {
            self.notices.push(n);
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
        }
    }

    fn video_inner(
        &mut self,
        ts: RtmpTimestamp,
        payload: &Bytes,
    ) -> Result<Option<MediaEvent>, MediaError> {
        let tag = parse_video_tag(payload)?;
        match tag.packet {
            VideoPacket::Ignored | VideoPacket::EndOfSequence => {
                self.stats.video.ignored += 1;
                Ok(None)
            }
            VideoPacket::SequenceHeader(record) => {
                if self
                    .video_config
                    .as_ref()
                    .is_some_and(|c| c.record == record)
                {
                    self.stats.video.ignored += 1;
                    return Ok(None);
                }
                // A header we cannot use invalidates the old config too: frames
                // that follow it would not decode with the old one.
                let had_config = self.video_config.take().is_some();
                let config = Arc::new(avc::video_config(record)?);
                if had_config {
                    self.notice(DemuxNotice::ConfigChanged {
                        kind: TrackKind::Video,
                        codec: config.codec_string.clone(),
                    });
                }
                self.video_config = Some(config.clone());
                self.reported_video_drop = false;
                self.stats.video.configs += 1;
                Ok(Some(MediaEvent::VideoConfig(config)))
            }
            VideoPacket::Frame {
                composition_time,
                data,
            } => {
                let Some(config) = &self.video_config else {
                    self.stats.video.dropped_before_config += 1;
                    if !std::mem::replace(&mut self.reported_video_drop, true) {
                        self.notice(DemuxNotice::DroppedBeforeConfig {
                            kind: TrackKind::Video,
                        });
                    }
                    return Ok(None);
                };
                if data.is_empty() {
                    self.stats.video.dropped_empty += 1;
                    return Ok(None);
                }
                let mut keyframe = false;
                for nal in avc::nal_units(&data, config.nal_length_size) {
                    keyframe |= avc::nal_type(nal?) == Some(NAL_IDR);
                }
                let dts = self.timeline.video(ts);
                let pts =
                    Timestamp::from_millis(dts.as_millis().saturating_add(composition_time.into()));
                self.stats.video.frames += 1;
                self.stats.video.bytes += data.len() as u64;
                Ok(Some(MediaEvent::Video(VideoFrame {
                    dts,
                    pts,
                    keyframe,
                    data,
                })))
            }
        }
    }

    fn audio_inner(
        &mut self,
        ts: RtmpTimestamp,
        payload: &Bytes,
    ) -> Result<Option<MediaEvent>, MediaError> {
        match parse_audio_tag(payload)? {
            AudioPacket::Ignored => {
                self.stats.audio.ignored += 1;
                Ok(None)
            }
            AudioPacket::SequenceHeader(asc) => {
                if self.audio_config.as_ref().is_some_and(|c| c.asc == asc) {
                    self.stats.audio.ignored += 1;
                    return Ok(None);
                }
                let had_config = self.audio_config.take().is_some();
                let config = Arc::new(aac::audio_config(asc)?);
                if had_config {
                    self.notice(DemuxNotice::ConfigChanged {
                        kind: TrackKind::Audio,
                        codec: config.codec_string.clone(),
                    });
                }
                self.audio_config = Some(config.clone());
                self.reported_audio_drop = false;
                self.stats.audio.configs += 1;
                Ok(Some(MediaEvent::AudioConfig(config)))
            }
            AudioPacket::Frame(data) => {
                if self.audio_config.is_none() {
                    self.stats.audio.dropped_before_config += 1;
                    if !std::mem::replace(&mut self.reported_audio_drop, true) {
                        self.notice(DemuxNotice::DroppedBeforeConfig {
                            kind: TrackKind::Audio,
                        });
                    }
                    return Ok(None);
                }
                if data.is_empty() {
                    self.stats.audio.dropped_empty += 1;
                    return Ok(None);
                }
                let dts = self.timeline.audio(ts);
                self.stats.audio.frames += 1;
                self.stats.audio.bytes += data.len() as u64;
                Ok(Some(MediaEvent::Audio(AudioFrame { dts, data })))
            }
        }
    }
}

fn count_error(stats: &mut TrackStats, e: &MediaError) {
    if e.is_unsupported() {
        stats.unsupported += 1;
    } else {
        stats.malformed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The avcC FFmpeg's FLV muxer wrote for libx264 High 720p30 (see avc.rs tests).
    const AVCC_HIGH_720P30: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800";

    /// The first video tag body FFmpeg's FLV muxer wrote for libx264 High
    /// 1280x720 30 fps: key frame, AVC, sequence header, cts 0, avcC.
    fn avc_sequence_header() -> Bytes {
        let mut v = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        v.extend(hex(AVCC_HIGH_720P30));
        Bytes::from(v)
    }

    /// The first audio tag body of the same file: AAC, 44.1 kHz flags, stereo,
    /// sequence header, ASC (LC 48 kHz stereo plus FFmpeg's sync extension).
    const AAC_SEQUENCE_HEADER: [u8; 7] = [0xaf, 0x00, 0x11, 0x90, 0x56, 0xe5, 0x00];

    fn avc_frame(frame_type: u8, cts: i32, nals: &[&[u8]]) -> Bytes {
        let c = cts.to_be_bytes();
        let mut v = vec![frame_type << 4 | 7, 1, c[1], c[2], c[3]];
        for n in nals {
            v.extend((n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        Bytes::from(v)
    }

    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00];
    const NON_IDR: &[u8] = &[0x41, 0x9a, 0x21];
    const SEI: &[u8] = &[0x06, 0x05, 0x01];

    fn configured() -> Demuxer {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        d.video(RtmpTimestamp(0), avc_sequence_header()).unwrap();
        d.audio(RtmpTimestamp(0), Bytes::from_static(&AAC_SEQUENCE_HEADER))
            .unwrap();
        d
    }

    fn video_frame(e: Option<MediaEvent>) -> VideoFrame {
        match e {
            Some(MediaEvent::Video(f)) => f,
            other => panic!("expected a video frame, got {other:?}"),
        }
    }

    #[test]
    fn sequence_header_emits_config_once() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let ev = d.video(RtmpTimestamp(0), avc_sequence_header()).unwrap();
        let Some(MediaEvent::VideoConfig(cfg)) = ev else {
            panic!("expected a config, got {ev:?}");
        };
        assert_eq!((cfg.width, cfg.height), (1280, 720));
        assert_eq!(cfg.codec_string, "avc1.64001f");
        assert_eq!(cfg.record.as_ref(), hex(AVCC_HIGH_720P30));
        // An identical repeat emits nothing.
        assert!(d
            .video(RtmpTimestamp(40), avc_sequence_header())
            .unwrap()
            .is_none());
        assert_eq!(d.stats().video.configs, 1);
        assert_eq!(d.stats().video.ignored, 1);
        assert!(d.take_notices().is_empty());
    }

    #[test]
    fn changed_sequence_header_emits_new_config() {
        let mut d = configured();
        let sps = hex("6742c01ed900a02ff97011000003000100000300320f162e48");
        let pps = hex("68cb83cb20");
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&avc::build_avcc(&[&sps], &[&pps]));
        let ev = d.video(RtmpTimestamp(1000), Bytes::from(body)).unwrap();
        let Some(MediaEvent::VideoConfig(cfg)) = ev else {
            panic!("expected a config, got {ev:?}");
        };
        assert_eq!((cfg.width, cfg.height), (640, 360));
        assert_eq!(d.video_config().map(|c| c.width), Some(640));
        let notices = d.take_notices();
        assert_eq!(
            notices,
            vec![DemuxNotice::ConfigChanged {
                kind: TrackKind::Video,
                codec: "avc1.42c01e".into()
            }]
        );
        assert!(notices[0]
            .to_string()
            .contains("changed the video configuration"));
    }

    #[test]
    fn invalid_new_header_clears_config() {
        let mut d = configured();
        let err = d
            .video(
                RtmpTimestamp(0),
                Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64]),
            )
            .unwrap_err();
        assert!(matches!(err, MediaError::Avc(AvcError::RecordTruncated(_))));
        assert!(d.video_config().is_none());
        assert!(d
            .video(RtmpTimestamp(40), avc_frame(1, 0, &[IDR]))
            .unwrap()
            .is_none());
        assert_eq!(d.stats().video.dropped_before_config, 1);
    }

    #[test]
    fn frames_with_composition_time() {
        let mut d = configured();
        let f = video_frame(
            d.video(RtmpTimestamp(100), avc_frame(1, 66, &[SEI, IDR]))
                .unwrap(),
        );
        assert!(f.keyframe);
        assert_eq!(f.dts, Timestamp::from_millis(0));
        assert_eq!(f.pts, Timestamp::from_millis(66));
        // Data is passed through in AVCC form.
        assert_eq!(f.data.len(), 4 + SEI.len() + 4 + IDR.len());
        let f = video_frame(
            d.video(RtmpTimestamp(133), avc_frame(2, -34, &[NON_IDR]))
                .unwrap(),
        );
        assert!(!f.keyframe);
        assert_eq!(f.dts, Timestamp::from_millis(33));
        assert_eq!(f.pts, Timestamp::from_millis(-1));
        let s = d.stats().video;
        assert_eq!((s.frames, s.bytes), (2, 15 + 7));
    }

    #[test]
    fn keyframe_means_idr_not_flv_flag() {
        let mut d = configured();
        let f = video_frame(
            d.video(RtmpTimestamp(0), avc_frame(1, 0, &[NON_IDR]))
                .unwrap(),
        );
        assert!(!f.keyframe, "FLV key frame without IDR is no sync sample");
        let f = video_frame(d.video(RtmpTimestamp(40), avc_frame(2, 0, &[IDR])).unwrap());
        assert!(f.keyframe, "IDR in a frame flagged inter is a sync sample");
    }

    #[test]
    fn malformed_nal_lengths_are_errors() {
        let mut d = configured();
        let mut body = avc_frame(1, 0, &[IDR]).to_vec();
        body[8] = 0x40; // length 0x40 with 4 bytes left
        let err = d.video(RtmpTimestamp(0), Bytes::from(body)).unwrap_err();
        assert_eq!(
            err,
            MediaError::Avc(AvcError::NalLengthOverrun {
                declared: 0x40,
                remaining: 4
            })
        );
        assert!(err.to_string().contains("runs past"), "{err}");
        let mut body = avc_frame(1, 0, &[IDR]).to_vec();
        body.extend([0, 0]); // half a length prefix
        assert!(d.video(RtmpTimestamp(0), Bytes::from(body)).is_err());
        let s = d.stats().video;
        assert_eq!((s.malformed, s.frames), (2, 0));
    }

    #[test]
    fn empty_and_end_of_sequence_frames() {
        let mut d = configured();
        assert!(d
            .video(RtmpTimestamp(0), avc_frame(1, 0, &[]))
            .unwrap()
            .is_none());
        assert_eq!(d.stats().video.dropped_empty, 1);
        assert!(d
            .video(RtmpTimestamp(0), Bytes::from_static(&[0x17, 2, 0, 0, 0]))
            .unwrap()
            .is_none());
        // Video info/command frame.
        assert!(d
            .video(RtmpTimestamp(0), Bytes::from_static(&[0x57, 0]))
            .unwrap()
            .is_none());
        assert_eq!(d.stats().video.ignored, 2);
        assert_eq!(d.stats().video.frames, 0);
    }

    #[test]
    fn video_before_config_dropped_and_reported_once() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        for i in 0..3 {
            assert!(d
                .video(RtmpTimestamp(i * 33), avc_frame(1, 0, &[IDR]))
                .unwrap()
                .is_none());
        }
        assert!(d
            .audio(RtmpTimestamp(0), Bytes::from_static(&[0xaf, 1, 0x21, 0x10]))
            .unwrap()
            .is_none());
        assert_eq!(d.stats().video.dropped_before_config, 3);
        assert_eq!(d.stats().audio.dropped_before_config, 1);
        assert_eq!(
            d.take_notices(),
            vec![
                DemuxNotice::DroppedBeforeConfig {
                    kind: TrackKind::Video
                },
                DemuxNotice::DroppedBeforeConfig {
                    kind: TrackKind::Audio
                }
            ]
        );
        // The first frame after the header is the timeline's start.
        d.video(RtmpTimestamp(100), avc_sequence_header()).unwrap();
        let f = video_frame(
            d.video(RtmpTimestamp(100), avc_frame(1, 0, &[IDR]))
                .unwrap(),
        );
        assert_eq!(f.dts, Timestamp::from_millis(0));
    }

    #[test]
    fn unsupported_video_codecs_are_named() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        for (body, name) in [
            (vec![0x12, 0, 0], "H.263"),
            (vec![0x14, 0, 0], "VP6"),
            (vec![0x13, 0, 0], "Screen Video"),
            (vec![0x1c, 0, 0, 0, 0], "HEVC"),
            (vec![0x90, b'h', b'v', b'c', b'1'], "HEVC"),
            (vec![0x90, b'a', b'v', b'0', b'1'], "AV1"),
            (vec![0x91, b'v', b'p', b'0', b'9', 0, 0, 0], "VP9"),
        ] {
            let err = d.video(RtmpTimestamp(0), Bytes::from(body)).unwrap_err();
            assert!(err.is_unsupported());
            let msg = err.to_string();
            assert!(msg.contains(name), "{msg}");
            assert!(msg.contains("H.264"), "{msg}");
        }
        let err = d
            .video(RtmpTimestamp(0), Bytes::from_static(&[0x96, 0]))
            .unwrap_err();
        assert!(err.to_string().contains("multitrack"), "{err}");
        assert_eq!(d.stats().video.unsupported, 8);
    }

    #[test]
    fn enhanced_rtmp_avc1() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let mut start = vec![0x90, b'a', b'v', b'c', b'1'];
        start.extend(hex(AVCC_HIGH_720P30));
        assert!(matches!(
            d.video(RtmpTimestamp(0), Bytes::from(start)).unwrap(),
            Some(MediaEvent::VideoConfig(_))
        ));
        // CodedFrames with a composition time.
        let mut frame = vec![0x91, b'a', b'v', b'c', b'1', 0, 0, 40];
        frame.extend([0, 0, 0, 4]);
        frame.extend(IDR);
        let f = video_frame(d.video(RtmpTimestamp(10), Bytes::from(frame)).unwrap());
        assert!(f.keyframe);
        assert_eq!(f.pts.as_millis() - f.dts.as_millis(), 40);
        // CodedFramesX: no composition time.
        let mut frame = vec![0xa3, b'a', b'v', b'c', b'1', 0, 0, 0, 3];
        frame.extend(NON_IDR);
        let f = video_frame(d.video(RtmpTimestamp(43), Bytes::from(frame)).unwrap());
        assert!(!f.keyframe);
        assert_eq!(f.pts, f.dts);
        // Metadata and sequence end emit nothing.
        for body in [
            vec![0x94, b'a', b'v', b'c', b'1', 2],
            vec![0x92, b'a', b'v', b'c', b'1'],
        ] {
            assert!(d
                .video(RtmpTimestamp(50), Bytes::from(body))
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn truncated_headers() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        assert_eq!(
            d.video(RtmpTimestamp(0), Bytes::new()).unwrap_err(),
            MediaError::Empty(TrackKind::Video)
        );
        for body in [
            &[0x17][..],
            &[0x17, 1, 0],
            &[0x91, b'a', b'v'],
            &[0x91, b'a', b'v', b'c', b'1', 0],
        ] {
            assert!(matches!(
                d.video(RtmpTimestamp(0), Bytes::copy_from_slice(body)),
                Err(MediaError::TruncatedHeader { .. })
            ));
        }
        assert!(matches!(
            d.video(RtmpTimestamp(0), Bytes::from_static(&[0x17, 9, 0, 0, 0])),
            Err(MediaError::UnknownPacketType { packet_type: 9, .. })
        ));
        assert_eq!(
            d.audio(RtmpTimestamp(0), Bytes::from_static(&[0xaf]))
                .unwrap_err(),
            MediaError::TruncatedHeader {
                kind: TrackKind::Audio,
                len: 1
            }
        );
        assert_eq!(d.stats().video.malformed, 6);
        assert_eq!(d.stats().audio.malformed, 1);
    }

    #[test]
    fn aac_config_and_frames() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let ev = d
            .audio(RtmpTimestamp(0), Bytes::from_static(&AAC_SEQUENCE_HEADER))
            .unwrap();
        let Some(MediaEvent::AudioConfig(cfg)) = ev else {
            panic!("expected an audio config, got {ev:?}");
        };
        assert_eq!((cfg.sample_rate, cfg.channels), (48_000, 2));
        assert_eq!(cfg.codec_string, "mp4a.40.2");
        assert_eq!(cfg.asc.as_ref(), &AAC_SEQUENCE_HEADER[2..]);
        assert!(d
            .audio(RtmpTimestamp(5), Bytes::from_static(&AAC_SEQUENCE_HEADER))
            .unwrap()
            .is_none());
        let ev = d
            .audio(
                RtmpTimestamp(21),
                Bytes::from_static(&[0xaf, 1, 0x21, 0x10, 0x04]),
            )
            .unwrap();
        let Some(MediaEvent::Audio(f)) = ev else {
            panic!("expected an audio frame, got {ev:?}");
        };
        assert_eq!(f.data.as_ref(), &[0x21, 0x10, 0x04]);
        assert_eq!(f.dts, Timestamp::from_millis(0));
        assert!(d
            .audio(RtmpTimestamp(42), Bytes::from_static(&[0xaf, 1]))
            .unwrap()
            .is_none());
        let s = d.stats().audio;
        assert_eq!(
            (s.configs, s.frames, s.bytes, s.dropped_empty, s.ignored),
            (1, 1, 3, 1, 1)
        );

        // A different config (44.1 kHz mono) replaces it.
        let ev = d
            .audio(
                RtmpTimestamp(60),
                Bytes::from_static(&[0xaf, 0, 0x12, 0x08]),
            )
            .unwrap();
        assert!(matches!(ev, Some(MediaEvent::AudioConfig(c)) if c.sample_rate == 44_100));
        // An empty ASC is an error.
        assert_eq!(
            d.audio(RtmpTimestamp(80), Bytes::from_static(&[0xaf, 0]))
                .unwrap_err(),
            MediaError::Aac(AacError::Empty)
        );
    }

    #[test]
    fn enhanced_rtmp_mp4a() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let ev = d
            .audio(
                RtmpTimestamp(0),
                Bytes::from_static(&[0x90, b'm', b'p', b'4', b'a', 0x11, 0x90]),
            )
            .unwrap();
        assert!(matches!(ev, Some(MediaEvent::AudioConfig(_))));
        let ev = d
            .audio(
                RtmpTimestamp(0),
                Bytes::from_static(&[0x91, b'm', b'p', b'4', b'a', 0x21]),
            )
            .unwrap();
        assert!(matches!(ev, Some(MediaEvent::Audio(f)) if f.data.as_ref() == [0x21]));
    }

    #[test]
    fn unsupported_audio_codecs_are_named() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        for (body, name) in [
            (&[0x2f, 0xff][..], "MP3"),
            (&[0x6e, 0][..], "Nellymoser"),
            (&[0x72, 0][..], "G.711 A-law"),
            (&[0x82, 0][..], "G.711 mu-law"),
            (&[0xb6, 0][..], "Speex"),
            (&[0x3e, 0][..], "Linear PCM"),
            (&[0x90, b'O', b'p', b'u', b's'][..], "Opus"),
            (&[0x90, b'f', b'L', b'a', b'C'][..], "FLAC"),
        ] {
            let err = d
                .audio(RtmpTimestamp(0), Bytes::copy_from_slice(body))
                .unwrap_err();
            assert!(err.is_unsupported());
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("AAC"), "{msg}");
        }
        // A config with an object type Ladder does not take (USAC).
        let err = d
            .audio(
                RtmpTimestamp(0),
                Bytes::from_static(&[0xaf, 0, 0xf9, 0x40, 0x00]),
            )
            .unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert_eq!(d.stats().audio.unsupported, 9);
    }

    #[test]
    fn timestamps_go_through_the_shared_timeline() {
        let mut d = configured();
        let f = video_frame(
            d.video(RtmpTimestamp(0xFFFF_FFF0), avc_frame(1, 0, &[IDR]))
                .unwrap(),
        );
        assert_eq!(f.dts, Timestamp::from_millis(0));
        let ev = d
            .audio(
                RtmpTimestamp(0xFFFF_FFFA),
                Bytes::from_static(&[0xaf, 1, 0x21]),
            )
            .unwrap();
        assert!(matches!(ev, Some(MediaEvent::Audio(f)) if f.dts == Timestamp::from_millis(10)));
        let f = video_frame(
            d.video(RtmpTimestamp(0x10), avc_frame(2, 0, &[NON_IDR]))
                .unwrap(),
        );
        assert_eq!(f.dts, Timestamp::from_millis(0x20));
        assert!(matches!(
            d.take_notices().as_slice(),
            [DemuxNotice::Timeline(TimelineNotice::Rollover { .. })]
        ));
    }

    #[test]
    fn si24_sign_extends() {
        assert_eq!(si24([0, 0, 0]), 0);
        assert_eq!(si24([0x7f, 0xff, 0xff]), 0x7f_ffff);
        assert_eq!(si24([0xff, 0xff, 0xff]), -1);
        assert_eq!(si24([0x80, 0, 0]), -0x80_0000);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            messages in proptest::collection::vec(
                (any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)),
                0..40,
            ),
        ) {
            // Once from scratch and once configured, so NALU/AAC paths are reached.
            for mut d in [Demuxer::new(Timestamp::from_millis(0)), configured()] {
                for (video, ts, body) in &messages {
                    let body = Bytes::from(body.clone());
                    let _ = if *video {
                        d.video(RtmpTimestamp(*ts), body)
                    } else {
                        d.audio(RtmpTimestamp(*ts), body)
                    };
                }
                let _ = d.take_notices();
            }
        }

        #[test]
        fn never_panics_on_plausible_headers(
            first in prop_oneof![Just(0x17u8), Just(0x27), Just(0x91), Just(0x93), Just(0x90)],
            second in 0u8..4,
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut d = configured();
            let mut body = vec![first];
            if first & 0x80 != 0 {
                body.extend(b"avc1");
            } else {
                body.push(second);
            }
            body.extend(rest);
            let _ = d.video(RtmpTimestamp(0), Bytes::from(body.clone()));
            body[0] = 0xaf;
            let _ = d.audio(RtmpTimestamp(0), Bytes::from(body));
        }
    }
}
