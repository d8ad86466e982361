//! FLV audio/video tag bodies (RTMP media messages) into access units.
//!
//! An RTMP video or audio message body is an FLV tag body: the VIDEODATA and
//! AUDIODATA structures of the Adobe FLV spec v10.1, annex E.4.3.1 (video:
//! FrameType, CodecID, then for AVC the AVCPacketType and a signed 24-bit
//! CompositionTime) and E.4.2.1 (audio: SoundFormat, rate/size/type, then for
//! AAC the AACPacketType).
//!
//! Enhanced RTMP (veovera enhanced-rtmp v1, and the parts of v2 named below)
//! sets the IsExHeader bit of the first video byte: `[IsExHeader:1]
//! [FrameType:3][PacketType:4]`, then a FourCC naming the codec. Packet types:
//! 0 SequenceStart (the decoder configuration record: avcC, hvcC, av1C),
//! 1 CodedFrames (for `avc1` and `hvc1` a signed 24-bit composition time
//! offset, then the NAL units; for `av01` the OBUs, no offset),
//! 2 SequenceEnd, 3 CodedFramesX (CodedFrames with offset 0, not coded),
//! 4 Metadata (AMF colour / HDR info: ignored), 5 MPEG2TSSequenceStart
//! (refused), 6 Multitrack (v2: the track with id 0 is taken, the others
//! ignored), 7 ModEx (v2: the modifier, e.g. a nanosecond timestamp offset,
//! is skipped and the packet type after it applies). FrameType 5 (command)
//! carries no media and is ignored. Audio uses SoundFormat 9 for its ex
//! header (v2).
//!
//! Ladder accepts H.264 (legacy codec id 7, or `avc1`), HEVC (`hvc1`) and AV1
//! (`av01`), and AAC (legacy SoundFormat 10, or `mp4a`); everything else
//! (VP9 `vp09` included) is refused with an error that names the codec, so
//! the operator can tell the publisher what to change. The [`Demuxer`] owns
//! the channel's [`Timeline`] and current configurations and turns tags into
//! [`MediaEvent`]s:
//!
//! - a sequence header becomes a config event; a byte-identical repeat (many
//!   encoders resend it before every keyframe) emits nothing; a different one
//!   (another codec included) emits a new config (the packager starts a new
//!   init segment behind a discontinuity);
//! - frames before their track's config are dropped and counted, and so are
//!   frames of another codec than the config's;
//! - a video frame's NAL length prefixes are validated against the configured
//!   length size, and it is a keyframe when it holds an IDR NAL unit (H.264)
//!   or an IRAP NAL unit (HEVC): the FLV frame type is advisory (a "key"
//!   frame without an IDR is no sync sample);
//! - an AV1 frame's OBUs are checked and made into an ISOBMFF sample
//!   ([`av1::sample_from_publisher`]): temporal delimiters and padding go, a
//!   shown key frame is the keyframe and carries the sequence header;
//! - waiting for the first keyframe is the packager's job, not this module's.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use super::aac::{self, AacError};
use super::av1::{self, ObuError};
use super::avc::{self, AvcError, NAL_IDR};
use super::hevc::{self, HevcError};
use super::timeline::{Timeline, TimelineNotice, TrackKind};
use super::{
    AudioConfig, AudioFrame, MediaEvent, RtmpTimestamp, Timestamp, VideoCodec, VideoConfig,
    VideoFrame,
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

/// Enhanced RTMP video packet types (the low four bits of an ex header).
pub mod video_packet_type {
    /// The decoder configuration record.
    pub const SEQUENCE_START: u8 = 0;
    /// Coded frames (with a composition time offset for `avc1` and `hvc1`).
    pub const CODED_FRAMES: u8 = 1;
    /// End of sequence.
    pub const SEQUENCE_END: u8 = 2;
    /// Coded frames, composition time offset 0 and not coded.
    pub const CODED_FRAMES_X: u8 = 3;
    /// AMF metadata (colorInfo).
    pub const METADATA: u8 = 4;
    /// AV1 in MPEG-2 TS form: refused.
    pub const MPEG2TS_SEQUENCE_START: u8 = 5;
    /// v2: several tracks in one message.
    pub const MULTITRACK: u8 = 6;
    /// v2: a modifier, then the real packet type.
    pub const MOD_EX: u8 = 7;
}

/// Enhanced RTMP v2 multitrack types (the high four bits after packet type 6).
pub mod multitrack_type {
    /// One track: `FourCC trackId body`.
    pub const ONE_TRACK: u8 = 0;
    /// Several tracks of one codec: `FourCC (trackId size:24 body)*`.
    pub const MANY_TRACKS: u8 = 1;
    /// Several tracks, each its own codec: `(FourCC trackId size:24 body)*`.
    pub const MANY_TRACKS_MANY_CODECS: u8 = 2;
}

/// Why a media message could not be used. All of these are the publisher's doing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    #[error("empty {0} message")]
    Empty(TrackKind),
    #[error("{kind} tag header is truncated ({len} bytes)")]
    TruncatedHeader { kind: TrackKind, len: usize },
    #[error("unsupported video codec {codec}: Ladder accepts H.264 (AVC), and HEVC and AV1 over Enhanced RTMP")]
    UnsupportedVideoCodec { codec: String },
    #[error("unsupported audio codec {codec}: Ladder accepts AAC (AAC-LC, HE-AAC, HE-AACv2)")]
    UnsupportedAudioCodec { codec: String },
    #[error("unsupported {kind} packet: {what}")]
    UnsupportedPacket { kind: TrackKind, what: String },
    #[error("unknown {kind} packet type {packet_type}")]
    UnknownPacketType { kind: TrackKind, packet_type: u8 },
    #[error("{frame} video frame, but the sequence header in force is {config}: frame dropped")]
    CodecMismatch {
        frame: VideoCodec,
        config: VideoCodec,
    },
    #[error("invalid H.264 data: {0}")]
    Avc(#[from] AvcError),
    #[error("invalid HEVC data: {0}")]
    Hevc(#[from] HevcError),
    #[error("invalid AV1 data: {0}")]
    Av1(#[from] ObuError),
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
    /// A decoder configuration record: avcC, hvcC or av1C.
    SequenceHeader { codec: VideoCodec, record: Bytes },
    /// A frame: length-prefixed NAL units (H.264, HEVC) or OBUs (AV1), with
    /// the composition time offset in ms (0 for AV1).
    Frame {
        codec: VideoCodec,
        composition_time: i32,
        data: Bytes,
    },
    /// End of sequence.
    EndOfSequence,
    /// Nothing for the packager: command frames, Enhanced RTMP metadata,
    /// multitrack messages without track 0.
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

/// The codec an Enhanced RTMP video FourCC names, or the refusal.
fn video_fourcc(fourcc: &[u8]) -> Result<VideoCodec, MediaError> {
    match fourcc {
        b"avc1" => Ok(VideoCodec::H264),
        b"hvc1" => Ok(VideoCodec::Hevc),
        b"av01" => Ok(VideoCodec::Av1),
        other => Err(MediaError::UnsupportedVideoCodec {
            codec: fourcc_name(other),
        }),
    }
}

/// Parse a video tag body's header (annex E.4.3.1, Enhanced RTMP ExVideoTagHeader).
pub fn parse_video_tag(payload: &Bytes) -> Result<VideoTag, MediaError> {
    let first = *payload.first().ok_or(MediaError::Empty(TrackKind::Video))?;
    if first & 0x80 != 0 {
        return parse_ex_video_tag(payload, first);
    }

    let kind = TrackKind::Video;
    let truncated = || MediaError::TruncatedHeader {
        kind,
        len: payload.len(),
    };
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
    let codec = VideoCodec::H264;
    let packet = match packet_type {
        0 => VideoPacket::SequenceHeader {
            codec,
            record: payload.slice(5..),
        },
        1 => VideoPacket::Frame {
            codec,
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

/// The Enhanced RTMP form: `[IsExHeader:1][FrameType:3][PacketType:4]`, ModEx
/// modifiers, then a FourCC (or a multitrack header) and the body.
fn parse_ex_video_tag(payload: &Bytes, first: u8) -> Result<VideoTag, MediaError> {
    use video_packet_type::*;
    let kind = TrackKind::Video;
    let truncated = || MediaError::TruncatedHeader {
        kind,
        len: payload.len(),
    };
    let frame_type = (first >> 4) & 0x07;
    let mut packet_type = first & 0x0f;
    let ignored = Ok(VideoTag {
        frame_type,
        packet: VideoPacket::Ignored,
    });
    if frame_type == FRAME_TYPE_COMMAND && packet_type != METADATA {
        return ignored;
    }
    let mut pos = 1usize;
    // v2 ModEx: [size-1:8 (255: then size-1:16)] [data] [ModExType:4][PacketType:4],
    // repeated while the packet type is ModEx. Each round takes at least two
    // bytes, so the loop ends with the message.
    while packet_type == MOD_EX {
        let mut size = usize::from(*payload.get(pos).ok_or_else(truncated)?) + 1;
        pos = pos.saturating_add(1);
        if size == 256 {
            let &[hi, lo] = payload
                .get(pos..pos.saturating_add(2))
                .ok_or_else(truncated)?
            else {
                return Err(truncated());
            };
            size = usize::from(u16::from_be_bytes([hi, lo])) + 1;
            pos = pos.saturating_add(2);
        }
        pos = pos.saturating_add(size);
        // The modifier (a nanosecond timestamp offset in v2) is not used: RTMP
        // timestamps are in ms and so is the timeline.
        packet_type = *payload.get(pos).ok_or_else(truncated)? & 0x0f;
        pos = pos.saturating_add(1);
    }
    let (fourcc, body) = if packet_type == MULTITRACK {
        let b = *payload.get(pos).ok_or_else(truncated)?;
        pos = pos.saturating_add(1);
        packet_type = b & 0x0f;
        if packet_type == MULTITRACK || packet_type == MOD_EX {
            return Err(MediaError::UnsupportedPacket {
                kind,
                what: format!("Enhanced RTMP multitrack video nesting packet type {packet_type}"),
            });
        }
        match track_zero(payload, pos, b >> 4)? {
            Some(found) => found,
            None => return ignored,
        }
    } else {
        let fourcc = payload
            .get(pos..pos.saturating_add(4))
            .ok_or_else(truncated)?;
        (fourcc, payload.slice(pos.saturating_add(4)..))
    };
    let codec = video_fourcc(fourcc)?;
    let packet = match packet_type {
        SEQUENCE_START => VideoPacket::SequenceHeader {
            codec,
            record: body,
        },
        CODED_FRAMES if codec != VideoCodec::Av1 => {
            let &[c0, c1, c2] = body.get(..3).ok_or_else(truncated)? else {
                return Err(truncated());
            };
            VideoPacket::Frame {
                codec,
                composition_time: si24([c0, c1, c2]),
                data: body.slice(3..),
            }
        }
        CODED_FRAMES | CODED_FRAMES_X => VideoPacket::Frame {
            codec,
            composition_time: 0,
            data: body,
        },
        SEQUENCE_END => VideoPacket::EndOfSequence,
        METADATA => VideoPacket::Ignored,
        MPEG2TS_SEQUENCE_START => {
            return Err(MediaError::UnsupportedPacket {
                kind,
                what: "Enhanced RTMP MPEG-2 TS sequence start (send the av1C form)".into(),
            })
        }
        other => {
            return Err(MediaError::UnknownPacketType {
                kind,
                packet_type: other,
            })
        }
    };
    Ok(VideoTag { frame_type, packet })
}

/// Enhanced RTMP v2 multitrack: the FourCC and body of the track with id 0,
/// `None` when the message has no such track. `pos` is just after the
/// `[AvMultitrackType:4][PacketType:4]` byte. Layouts: OneTrack `FourCC
/// trackId body`; ManyTracks `FourCC (trackId size:24 body)*`;
/// ManyTracksManyCodecs `(FourCC trackId size:24 body)*`.
fn track_zero(
    payload: &Bytes,
    mut pos: usize,
    multitrack: u8,
) -> Result<Option<(&[u8], Bytes)>, MediaError> {
    use multitrack_type::*;
    let kind = TrackKind::Video;
    let truncated = || MediaError::TruncatedHeader {
        kind,
        len: payload.len(),
    };
    if multitrack > MANY_TRACKS_MANY_CODECS {
        return Err(MediaError::UnsupportedPacket {
            kind,
            what: format!("Enhanced RTMP multitrack type {multitrack}"),
        });
    }
    let mut fourcc: &[u8] = &[];
    if multitrack != MANY_TRACKS_MANY_CODECS {
        fourcc = payload
            .get(pos..pos.saturating_add(4))
            .ok_or_else(truncated)?;
        pos = pos.saturating_add(4);
    }
    // Each round takes at least five bytes (one for OneTrack, which ends).
    while pos < payload.len() {
        if multitrack == MANY_TRACKS_MANY_CODECS {
            fourcc = payload
                .get(pos..pos.saturating_add(4))
                .ok_or_else(truncated)?;
            pos = pos.saturating_add(4);
        }
        let track_id = *payload.get(pos).ok_or_else(truncated)?;
        pos = pos.saturating_add(1);
        let end = if multitrack == ONE_TRACK {
            payload.len()
        } else {
            let &[a, b, c] = payload
                .get(pos..pos.saturating_add(3))
                .ok_or_else(truncated)?
            else {
                return Err(truncated());
            };
            pos = pos.saturating_add(3);
            let size = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            pos.checked_add(size)
                .filter(|&e| e <= payload.len())
                .ok_or_else(truncated)?
        };
        if track_id == 0 {
            return Ok(Some((fourcc, payload.slice(pos..end))));
        }
        pos = end;
    }
    Ok(None)
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
    /// For an AV1 config: the av1C's sequence header OBU and its
    /// `reduced_still_picture_header`, for [`av1::sample_from_publisher`].
    av1_sequence_header: Option<(Bytes, bool)>,
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
            av1_sequence_header: None,
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
                self.stats.video.ignored = self.stats.video.ignored.saturating_add(1);
                Ok(None)
            }
            VideoPacket::SequenceHeader { codec, record } => {
                if self
                    .video_config
                    .as_ref()
                    .is_some_and(|c| c.codec == codec && c.record == record)
                {
                    self.stats.video.ignored = self.stats.video.ignored.saturating_add(1);
                    return Ok(None);
                }
                // A header we cannot use invalidates the old config too: frames
                // that follow it would not decode with the old one.
                let had_config = self.video_config.take().is_some();
                self.av1_sequence_header = None;
                let config = Arc::new(match codec {
                    VideoCodec::H264 => avc::video_config(record)?,
                    VideoCodec::Hevc => hevc::video_config(record)?,
                    VideoCodec::Av1 => {
                        let parsed = av1::Av1Config::parse(&record)?;
                        let config = av1::video_config(record)?;
                        self.av1_sequence_header = Some((
                            parsed.sequence_header_obu,
                            parsed.sequence_header.reduced_still_picture_header,
                        ));
                        config
                    }
                });
                if had_config {
                    self.notice(DemuxNotice::ConfigChanged {
                        kind: TrackKind::Video,
                        codec: config.codec_string.clone(),
                    });
                }
                self.video_config = Some(config.clone());
                self.reported_video_drop = false;
                self.stats.video.configs = self.stats.video.configs.saturating_add(1);
                Ok(Some(MediaEvent::VideoConfig(config)))
            }
            VideoPacket::Frame {
                codec,
                composition_time,
                data,
            } => {
                let Some(config) = &self.video_config else {
                    self.stats.video.dropped_before_config =
                        self.stats.video.dropped_before_config.saturating_add(1);
                    if !std::mem::replace(&mut self.reported_video_drop, true) {
                        self.notice(DemuxNotice::DroppedBeforeConfig {
                            kind: TrackKind::Video,
                        });
                    }
                    return Ok(None);
                };
                if codec != config.codec {
                    return Err(MediaError::CodecMismatch {
                        frame: codec,
                        config: config.codec,
                    });
                }
                if data.is_empty() {
                    self.stats.video.dropped_empty =
                        self.stats.video.dropped_empty.saturating_add(1);
                    return Ok(None);
                }
                let (keyframe, data) = match codec {
                    VideoCodec::H264 => {
                        let mut keyframe = false;
                        for nal in avc::nal_units(&data, config.nal_length_size) {
                            keyframe |= avc::nal_type(nal?) == Some(NAL_IDR);
                        }
                        (keyframe, data)
                    }
                    VideoCodec::Hevc => {
                        (hevc::sample_is_irap(&data, config.nal_length_size)?, data)
                    }
                    VideoCodec::Av1 => {
                        let Some((sequence_header, reduced)) = &self.av1_sequence_header else {
                            // Set with every AV1 config; unreachable, but no panic.
                            self.stats.video.dropped_before_config =
                                self.stats.video.dropped_before_config.saturating_add(1);
                            return Ok(None);
                        };
                        let sample = av1::sample_from_publisher(&data, sequence_header, *reduced)?;
                        if sample.data.is_empty() {
                            // Only temporal delimiters or padding.
                            self.stats.video.dropped_empty =
                                self.stats.video.dropped_empty.saturating_add(1);
                            return Ok(None);
                        }
                        (sample.random_access_point, sample.data)
                    }
                };
                let dts = self.timeline.video(ts);
                let pts =
                    Timestamp::from_millis(dts.as_millis().saturating_add(composition_time.into()));
                self.stats.video.frames = self.stats.video.frames.saturating_add(1);
                self.stats.video.bytes = self.stats.video.bytes.saturating_add(data.len() as u64);
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
                self.stats.audio.ignored = self.stats.audio.ignored.saturating_add(1);
                Ok(None)
            }
            AudioPacket::SequenceHeader(asc) => {
                if self.audio_config.as_ref().is_some_and(|c| c.asc == asc) {
                    self.stats.audio.ignored = self.stats.audio.ignored.saturating_add(1);
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
                self.stats.audio.configs = self.stats.audio.configs.saturating_add(1);
                Ok(Some(MediaEvent::AudioConfig(config)))
            }
            AudioPacket::Frame(data) => {
                if self.audio_config.is_none() {
                    self.stats.audio.dropped_before_config =
                        self.stats.audio.dropped_before_config.saturating_add(1);
                    if !std::mem::replace(&mut self.reported_audio_drop, true) {
                        self.notice(DemuxNotice::DroppedBeforeConfig {
                            kind: TrackKind::Audio,
                        });
                    }
                    return Ok(None);
                }
                if data.is_empty() {
                    self.stats.audio.dropped_empty =
                        self.stats.audio.dropped_empty.saturating_add(1);
                    return Ok(None);
                }
                let dts = self.timeline.audio(ts);
                self.stats.audio.frames = self.stats.audio.frames.saturating_add(1);
                self.stats.audio.bytes = self.stats.audio.bytes.saturating_add(data.len() as u64);
                Ok(Some(MediaEvent::Audio(AudioFrame { dts, data })))
            }
        }
    }
}

fn count_error(stats: &mut TrackStats, e: &MediaError) {
    if e.is_unsupported() {
        stats.unsupported = stats.unsupported.saturating_add(1);
    } else {
        stats.malformed = stats.malformed.saturating_add(1);
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
            (vec![0x90, b'v', b'p', b'0', b'9', 0], "VP9"),
            (vec![0x91, b'v', b'p', b'0', b'8', 0, 0, 0], "VP8"),
        ] {
            let err = d.video(RtmpTimestamp(0), Bytes::from(body)).unwrap_err();
            assert!(err.is_unsupported());
            let msg = err.to_string();
            assert!(msg.contains(name), "{msg}");
            assert!(
                msg.contains("H.264") && msg.contains("HEVC and AV1 over Enhanced RTMP"),
                "{msg}"
            );
        }
        for (body, what) in [
            (&[0x96, 0x30, 0][..], "multitrack type 3"),
            (&[0x96, 0x06, 0][..], "multitrack video nesting"),
            (&[0x95, b'a', b'v', b'0', b'1', 0x80][..], "MPEG-2 TS"),
        ] {
            let err = d
                .video(RtmpTimestamp(0), Bytes::copy_from_slice(body))
                .unwrap_err();
            assert!(err.is_unsupported(), "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
        assert_eq!(d.stats().video.unsupported, 9);
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

    use crate::media::hevc::fixtures::HVCC_MAIN_360P30;
    use crate::media::hevc::HevcError;
    use crate::media::VideoCodec;

    /// The av1C FFmpeg 5.1 wrote for libsvtav1 1.4 (640x360, Main, level 2.1).
    const AV1C_SVT_360P: &str = "81010c000a0b0000000cc4ff6700be0010";
    /// Its sequence header OBU.
    const AV1_SEQUENCE_HEADER: &str = "0a0b0000000cc4ff6700be0010";
    /// A temporal delimiter OBU (with size field).
    const OBU_TD: [u8; 2] = [0x12, 0x00];
    /// A frame OBU: shown key frame (show_existing 0, frame_type 0, show 1).
    const OBU_KEY_FRAME: [u8; 4] = [0x32, 0x02, 0x10, 0x00];
    /// A frame OBU: shown inter frame (frame_type 1).
    const OBU_INTER_FRAME: [u8; 4] = [0x32, 0x02, 0x30, 0x00];
    /// HEVC NAL units: an IDR_W_RADL slice, a CRA slice, a trailing slice.
    const HEVC_IDR: &[u8] = &[19 << 1, 1, 0xaf, 0x10];
    const HEVC_CRA: &[u8] = &[21 << 1, 1, 0xaf];
    const HEVC_TRAIL: &[u8] = &[1 << 1, 1, 0xd0];

    fn ex_tag(first: u8, fourcc: &[u8; 4], rest: &[u8]) -> Bytes {
        let mut v = vec![first];
        v.extend_from_slice(fourcc);
        v.extend_from_slice(rest);
        Bytes::from(v)
    }

    /// Length-prefixed (4 bytes) NAL units.
    fn nals(units: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in units {
            v.extend((n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn hevc_configured() -> Demuxer {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let ev = d
            .video(
                RtmpTimestamp(0),
                ex_tag(0x90, b"hvc1", &hex(HVCC_MAIN_360P30)),
            )
            .unwrap();
        let Some(MediaEvent::VideoConfig(c)) = ev else {
            panic!("expected a config, got {ev:?}");
        };
        assert_eq!(c.codec, VideoCodec::Hevc);
        d
    }

    fn av1_configured() -> Demuxer {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let ev = d
            .video(RtmpTimestamp(0), ex_tag(0x90, b"av01", &hex(AV1C_SVT_360P)))
            .unwrap();
        let Some(MediaEvent::VideoConfig(c)) = ev else {
            panic!("expected a config, got {ev:?}");
        };
        assert_eq!(c.codec, VideoCodec::Av1);
        d
    }

    #[test]
    fn enhanced_rtmp_hvc1() {
        let mut d = hevc_configured();
        let c = d.video_config().unwrap().clone();
        assert_eq!((c.width, c.height), (640, 360));
        assert_eq!(c.codec_string, "hev1.1.6.L63.90");
        assert_eq!(c.record.as_ref(), hex(HVCC_MAIN_360P30));
        // The same record again: nothing.
        assert!(d
            .video(
                RtmpTimestamp(0),
                ex_tag(0x90, b"hvc1", &hex(HVCC_MAIN_360P30))
            )
            .unwrap()
            .is_none());
        // CodedFrames: SI24 composition offset, then NAL units.
        let mut body = vec![0, 0, 66];
        body.extend(nals(&[HEVC_IDR]));
        let f = video_frame(
            d.video(RtmpTimestamp(100), ex_tag(0x91, b"hvc1", &body))
                .unwrap(),
        );
        assert!(f.keyframe, "IDR is IRAP");
        assert_eq!((f.dts.as_millis(), f.pts.as_millis()), (0, 66));
        assert_eq!(f.data.as_ref(), nals(&[HEVC_IDR]));
        // A negative offset.
        let mut body = vec![0xff, 0xff, 0xde];
        body.extend(nals(&[HEVC_TRAIL]));
        let f = video_frame(
            d.video(RtmpTimestamp(133), ex_tag(0xa1, b"hvc1", &body))
                .unwrap(),
        );
        assert!(!f.keyframe);
        assert_eq!(f.pts.as_millis() - f.dts.as_millis(), -34);
        // CodedFramesX: no offset field; a CRA is a keyframe even when the
        // FLV frame type says inter.
        let f = video_frame(
            d.video(
                RtmpTimestamp(166),
                ex_tag(0xa3, b"hvc1", &nals(&[HEVC_CRA])),
            )
            .unwrap(),
        );
        assert!(f.keyframe);
        assert_eq!(f.pts, f.dts);
        // Metadata, sequence end, a command frame: nothing.
        for body in [
            ex_tag(0x94, b"hvc1", &[2, 0, 9]),
            ex_tag(0x92, b"hvc1", &[]),
            ex_tag(0xd1, b"hvc1", &[0]),
        ] {
            assert!(d.video(RtmpTimestamp(200), body).unwrap().is_none());
        }
        assert_eq!(d.stats().video.frames, 3);
    }

    #[test]
    fn hevc_hostile_input() {
        let mut d = hevc_configured();
        // A NAL length running past the data, a zero length, half a prefix.
        for data in [
            vec![0, 0, 0, 9, 0x26, 1],
            vec![0, 0, 0, 0, 0x26, 1],
            nals(&[HEVC_IDR])[..6].to_vec(),
        ] {
            let mut body = vec![0, 0, 0];
            body.extend(&data);
            let err = d
                .video(RtmpTimestamp(0), ex_tag(0x91, b"hvc1", &body))
                .unwrap_err();
            assert!(matches!(err, MediaError::Hevc(HevcError::Nal(_))), "{err}");
            assert!(err.to_string().starts_with("invalid HEVC data"), "{err}");
        }
        // Truncated composition offset.
        assert!(matches!(
            d.video(RtmpTimestamp(0), ex_tag(0x91, b"hvc1", &[0, 1])),
            Err(MediaError::TruncatedHeader { .. })
        ));
        // An H.264 frame (legacy tag) while the config is HEVC.
        let err = d
            .video(RtmpTimestamp(0), avc_frame(1, 0, &[IDR]))
            .unwrap_err();
        assert_eq!(
            err,
            MediaError::CodecMismatch {
                frame: VideoCodec::H264,
                config: VideoCodec::Hevc
            }
        );
        assert!(err.to_string().contains("H.264 video frame"), "{err}");
        // An AV1 frame too.
        assert!(matches!(
            d.video(RtmpTimestamp(0), ex_tag(0x91, b"av01", &OBU_KEY_FRAME)),
            Err(MediaError::CodecMismatch { .. })
        ));
        // Empty frame data: dropped, not an error.
        assert!(d
            .video(RtmpTimestamp(0), ex_tag(0x91, b"hvc1", &[0, 0, 0]))
            .unwrap()
            .is_none());
        let s = d.stats().video;
        assert_eq!((s.malformed, s.dropped_empty, s.frames), (6, 1, 0));

        // A record with NAL length size 3, or lying about its lengths: an
        // error, and the old config is gone (its frames would not decode).
        let mut record = hex(HVCC_MAIN_360P30);
        record[21] = 0xfe;
        let err = d
            .video(RtmpTimestamp(0), ex_tag(0x90, b"hvc1", &record))
            .unwrap_err();
        assert_eq!(err, MediaError::Hevc(HevcError::InvalidLengthSize(3)));
        assert!(d.video_config().is_none());
        let mut record = hex(HVCC_MAIN_360P30);
        record[27] = 0xff;
        assert!(matches!(
            d.video(RtmpTimestamp(0), ex_tag(0x90, b"hvc1", &record)),
            Err(MediaError::Hevc(HevcError::RecordTruncated(_)))
        ));
    }

    #[test]
    fn video_before_sequence_start_and_codec_changes() {
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        assert!(d
            .video(RtmpTimestamp(0), ex_tag(0xa3, b"hvc1", &nals(&[HEVC_IDR])))
            .unwrap()
            .is_none());
        assert!(d
            .video(RtmpTimestamp(0), ex_tag(0x91, b"av01", &OBU_KEY_FRAME))
            .unwrap()
            .is_none());
        assert_eq!(d.stats().video.dropped_before_config, 2);
        // H.264, then HEVC, then AV1, then H.264 again: a config each time.
        d.video(RtmpTimestamp(0), avc_sequence_header()).unwrap();
        let changes = [
            ex_tag(0x90, b"hvc1", &hex(HVCC_MAIN_360P30)),
            ex_tag(0x90, b"av01", &hex(AV1C_SVT_360P)),
            avc_sequence_header(),
        ];
        for (body, codec) in
            changes
                .into_iter()
                .zip([VideoCodec::Hevc, VideoCodec::Av1, VideoCodec::H264])
        {
            let ev = d.video(RtmpTimestamp(10), body).unwrap();
            assert!(
                matches!(&ev, Some(MediaEvent::VideoConfig(c)) if c.codec == codec),
                "{ev:?}"
            );
        }
        let notices = d.take_notices();
        assert_eq!(notices.len(), 4, "{notices:?}");
        assert_eq!(
            notices[0],
            DemuxNotice::DroppedBeforeConfig {
                kind: TrackKind::Video
            }
        );
        assert_eq!(
            notices[2],
            DemuxNotice::ConfigChanged {
                kind: TrackKind::Video,
                codec: "av01.0.01M.08".into()
            }
        );
        assert_eq!(d.stats().video.configs, 4);
    }

    #[test]
    fn enhanced_rtmp_av01() {
        let mut d = av1_configured();
        let c = d.video_config().unwrap().clone();
        assert_eq!((c.width, c.height), (640, 360));
        assert_eq!(c.codec_string, "av01.0.01M.08");
        let sequence_header = hex(AV1_SEQUENCE_HEADER);

        // CodedFrames carries OBUs, no composition offset. A key frame
        // without a sequence header gets the av1C's; the temporal delimiter goes.
        let tu = [&OBU_TD[..], &OBU_KEY_FRAME].concat();
        let f = video_frame(
            d.video(RtmpTimestamp(40), ex_tag(0x91, b"av01", &tu))
                .unwrap(),
        );
        assert!(f.keyframe);
        assert_eq!(f.pts, f.dts);
        assert_eq!(
            f.data.as_ref(),
            [&sequence_header[..], &OBU_KEY_FRAME].concat()
        );
        // A key frame with its own sequence header keeps it, once.
        let tu = [&OBU_TD[..], &sequence_header, &OBU_KEY_FRAME].concat();
        let f = video_frame(
            d.video(RtmpTimestamp(80), ex_tag(0x91, b"av01", &tu))
                .unwrap(),
        );
        assert!(f.keyframe);
        assert_eq!(
            f.data.as_ref(),
            [&sequence_header[..], &OBU_KEY_FRAME].concat()
        );
        // An inter frame flagged key by FLV is no keyframe; a sequence header
        // in it is dropped (the av1C has it).
        let tu = [&sequence_header[..], &OBU_INTER_FRAME].concat();
        let f = video_frame(
            d.video(RtmpTimestamp(120), ex_tag(0x93, b"av01", &tu))
                .unwrap(),
        );
        assert!(!f.keyframe);
        assert_eq!(f.data.as_ref(), OBU_INTER_FRAME);
        // Only a temporal delimiter: empty, dropped.
        assert!(d
            .video(RtmpTimestamp(160), ex_tag(0xa1, b"av01", &OBU_TD))
            .unwrap()
            .is_none());
        // An OBU size running past the data; a tile list OBU.
        assert!(matches!(
            d.video(
                RtmpTimestamp(160),
                ex_tag(0xa1, b"av01", &[0x32, 0x09, 0x10])
            ),
            Err(MediaError::Av1(ObuError::SizeOverrun { .. }))
        ));
        assert!(matches!(
            d.video(RtmpTimestamp(160), ex_tag(0xa1, b"av01", &[0x42, 0x00])),
            Err(MediaError::Av1(ObuError::TileList))
        ));
        // A record that is no av1C.
        assert!(matches!(
            d.video(RtmpTimestamp(0), ex_tag(0x90, b"av01", &[0x80, 0, 0, 0])),
            Err(MediaError::Av1(ObuError::RecordVersion(0x80)))
        ));
        let s = d.stats().video;
        assert_eq!((s.frames, s.dropped_empty, s.malformed), (3, 1, 3));
    }

    /// Enhanced RTMP v2: ModEx modifiers are skipped, multitrack messages
    /// give their track 0.
    #[test]
    fn enhanced_rtmp_v2_mod_ex_and_multitrack() {
        let record = hex(HVCC_MAIN_360P30);
        // ModEx (packet type 7), 3 bytes of modifier data, then SequenceStart.
        let mut body = vec![0x97, 2, 0xaa, 0xbb, 0xcc, 0x00];
        body.extend(b"hvc1");
        body.extend(&record);
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        assert!(matches!(
            d.video(RtmpTimestamp(0), Bytes::from(body)).unwrap(),
            Some(MediaEvent::VideoConfig(_))
        ));
        // Two ModEx in a row, the first with a 16-bit size (300 bytes), then
        // CodedFramesX.
        let mut body = vec![0xa7, 0xff, 0x01, 0x2b];
        body.extend([0u8; 300]);
        body.extend([0x07, 0, 0x5a, 0x03]);
        body.extend(b"hvc1");
        body.extend(nals(&[HEVC_TRAIL]));
        let f = video_frame(d.video(RtmpTimestamp(40), Bytes::from(body)).unwrap());
        assert_eq!(f.data.as_ref(), nals(&[HEVC_TRAIL]));
        // A ModEx whose size runs past the message.
        assert!(matches!(
            d.video(RtmpTimestamp(40), Bytes::from_static(&[0x97, 9, 1, 2])),
            Err(MediaError::TruncatedHeader { .. })
        ));

        // Multitrack OneTrack, track 0: SequenceStart.
        let mut d = Demuxer::new(Timestamp::from_millis(0));
        let mut body = vec![0x96, 0x00];
        body.extend(b"hvc1");
        body.push(0);
        body.extend(&record);
        assert!(matches!(
            d.video(RtmpTimestamp(0), Bytes::from(body)).unwrap(),
            Some(MediaEvent::VideoConfig(_))
        ));
        // ManyTracks: track 1 then track 0, CodedFramesX.
        let frame = nals(&[HEVC_IDR]);
        let mut body = vec![0x96, 0x13];
        body.extend(b"hvc1");
        body.extend([1, 0, 0, 2, 0xee, 0xee]);
        body.push(0);
        body.extend((frame.len() as u32).to_be_bytes()[1..].iter());
        body.extend(&frame);
        let f = video_frame(d.video(RtmpTimestamp(40), Bytes::from(body)).unwrap());
        assert!(f.keyframe);
        assert_eq!(f.data.as_ref(), frame);
        // ManyTracksManyCodecs: an AV1 track 2 and the HEVC track 0.
        let mut body = vec![0x96, 0x23];
        body.extend(b"av01");
        body.extend([2, 0, 0, 4]);
        body.extend(OBU_KEY_FRAME);
        body.extend(b"hvc1");
        body.push(0);
        body.extend((frame.len() as u32).to_be_bytes()[1..].iter());
        body.extend(&frame);
        let f = video_frame(d.video(RtmpTimestamp(80), Bytes::from(body)).unwrap());
        assert_eq!(f.data.as_ref(), frame);
        // No track 0: ignored. A track size past the end: truncated.
        let mut body = vec![0x96, 0x13];
        body.extend(b"hvc1");
        body.extend([3, 0, 0, 1, 0xee]);
        assert!(d
            .video(RtmpTimestamp(80), Bytes::from(body.clone()))
            .unwrap()
            .is_none());
        body[7] = 9;
        assert!(matches!(
            d.video(RtmpTimestamp(80), Bytes::from(body)),
            Err(MediaError::TruncatedHeader { .. })
        ));
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

        #[test]
        fn never_panics_on_plausible_enhanced_headers(
            hevc in any::<bool>(),
            first in 0x80u8..=0xff,
            prefix in proptest::collection::vec(any::<u8>(), 0..8),
            rest in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let mut d = if hevc { hevc_configured() } else { av1_configured() };
            let fourcc: &[u8] = if hevc { b"hvc1" } else { b"av01" };
            // Straight, and behind ModEx / multitrack bytes.
            for with_prefix in [false, true] {
                let mut body = vec![first];
                if with_prefix {
                    body.extend(&prefix);
                }
                body.extend(fourcc);
                body.extend(&rest);
                let _ = d.video(RtmpTimestamp(0), Bytes::from(body));
            }
            let _ = d.take_notices();
        }
    }
}
