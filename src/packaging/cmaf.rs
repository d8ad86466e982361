//! CMAF boxes: the init segment (CMAF header) and CMAF chunks, as pure functions
//! from a description to bytes.
//!
//! Specifications implemented here:
//!
//! - ISO/IEC 23000-19 (CMAF) §7: one track per CMAF header and track file; a
//!   CMAF chunk is `moof` + `mdat` with one `traf` holding one `trun`; every
//!   `traf` carries a `tfdt`; `default-base-is-moof`. Brands: `cmfc` (structural
//!   brand) in the header, `cmfs`/`cmff` in the `styp` of a segment.
//! - ISO/IEC 14496-12 (ISOBMFF): §4.2 box and full box headers (including the
//!   64-bit `largesize`), §4.3 `ftyp`, §8.16.2 `styp`, §8.2.2 `mvhd`, §8.3.2 `tkhd`,
//!   §8.4.2 `mdhd`, §8.4.3 `hdlr`, §12.1.2 `vmhd`, §12.2.2 `smhd`, §8.7.2 `dref`,
//!   §8.5.2 `stsd`, §12.1.3 visual and §12.2.3 audio sample entries (`pasp` §12.1.4,
//!   `srat` §12.2.4), §8.6.1.2 `stts`, §8.7.4 `stsc`, §8.7.3 `stsz`, §8.7.5 `stco`,
//!   §8.8.1 `mvex`, §8.8.3 `trex` and the sample flags, §8.8.4 `moof`, §8.8.5 `mfhd`,
//!   §8.8.6 `traf`, §8.8.7 `tfhd`, §8.8.12 `tfdt`, §8.8.8 `trun`, §8.1.1 `mdat`,
//!   §8.16.5 `prft`.
//! - ISO/IEC 14496-15 §5.3.3 (`AVCDecoderConfigurationRecord`) and §5.4.2 (`avc1`):
//!   the record is written verbatim as the body of `avcC`.
//! - ISO/IEC 14496-15 §8.3.3 (`HEVCDecoderConfigurationRecord`) and §8.4.1
//!   (`hvc1` / `hev1`): the record is written verbatim as the body of `hvcC`;
//!   the sample entry is `hvc1` when its VPS, SPS and PPS arrays are marked
//!   complete (every parameter set is in the sample entry), else `hev1`
//!   (parameter sets may also be in the samples), as §8.4.1.1 ties the two.
//! - AV1-ISOBMFF v1.3.0 §2.1 (the `av01` brand), §2.2 (`av01` sample entry) and
//!   §2.3 (`av1C`): the AV1CodecConfigurationRecord is written verbatim as the
//!   body of `av1C` ([`crate::media::av1::build_av1c`] makes it).
//! - ISO/IEC 14496-14 §3.1 (`esds`, `mp4a`) with the ISO/IEC 14496-1 §7.2.6
//!   descriptors (`ES_Descriptor`, `DecoderConfigDescriptor`, `DecoderSpecificInfo`
//!   carrying the AudioSpecificConfig, `SLConfigDescriptor` predefined 2) and the
//!   §8.3.3 expandable size encoding.
//!
//! # Why hand-written boxes, not `mp4-atom`
//!
//! `mp4-atom` 0.17 (the moq project's crate) was evaluated first. It covers every
//! box used here, but four of its behaviours do not fit a live packager:
//!
//! 1. `avcC` is parsed into a struct and re-encoded, so the record the publisher
//!    sent is not carried byte for byte, and a record the parser rejects makes
//!    encoding fail. The API here is infallible (`init_segment -> Bytes`), which
//!    with `mp4-atom` would mean a panic reachable from network input.
//! 2. `mdat` has no 64-bit `largesize` ("TODO support sizes larger than u32") and
//!    takes an owned `Vec<u8>`, an extra copy of every sample.
//! 3. `prft` picks version 0 whenever `media_time` fits in 32 bits; we want the
//!    fixed version 1 layout.
//! 4. Every encoder returns `Result`; boxes built from our own struct cannot fail
//!    except through its limits, which we handle here.
//!
//! The writer below is about forty lines; the boxes are short and each one cites
//! its section. `mp4-atom` is kept as a *dev-dependency*: the tests decode our
//! output with it as an independent parser, next to byte-exact golden snapshots
//! and `ffprobe`.
//!
//! # Timing model
//!
//! Sample durations and decode times are in the track timescale (`mdhd`). There is
//! no edit list: presentation time = decode time + composition offset, exactly as
//! fed. The movie header uses [`MOVIE_TIMESCALE`]; all durations are 0 (live).
//! Composition offsets may be negative (`trun` version 1), e.g. shifted so the
//! first frame of a segment presents at its decode time as `cmf2` asks; note that
//! ffmpeg's mov demuxer then reports every pts shifted up by the most negative
//! offset (its `dts_shift`), while browser MSE parsers take them as written.
//!
//! # What the caller guarantees
//!
//! These functions serialise what they are given and never fail. The packager
//! keeps the CMAF rules that span chunks: a non-zero track ID and timescale, a
//! sync sample first in every chunk with `segment_start`, `mfhd` sequence numbers
//! increasing per track, and `tfdt` continuous across chunks.

use crate::media::hevc::HevcDecoderConfig;
use crate::media::{VideoCodec, VideoConfig};
use bytes::{BufMut, Bytes, BytesMut};
use std::time::{SystemTime, UNIX_EPOCH};

/// Timescale of `mvhd`. Nothing is expressed in it (durations are 0 in a live
/// init segment); 1000 is what most packagers write.
pub const MOVIE_TIMESCALE: u32 = 1000;

/// `ftyp` of the CMAF header: major brand and compatible brands.
///
/// `cmfc` is the CMAF structural brand (ISO/IEC 23000-19 §7.2); `iso6` covers
/// `trun` version 1 (signed composition offsets), `tfdt` version 1 and `prft`;
/// `mp41` the MPEG-4 systems descriptors in `esds`. `cmf2` is not claimed: it
/// additionally requires composition offsets that make the first presented
/// sample start at its decode time, which is the packager's choice, not ours.
pub const INIT_MAJOR_BRAND: [u8; 4] = *b"cmfc";
/// See [`INIT_MAJOR_BRAND`].
pub const INIT_COMPATIBLE_BRANDS: [[u8; 4]; 3] = [*b"cmfc", *b"iso6", *b"mp41"];
/// Compatible brands of an AV1 track's CMAF header: `av01` is required
/// (AV1-ISOBMFF §2.1) and makes it a CMAF AV1 track (§3); `mp41` is left out,
/// having no MPEG-4 systems descriptors to cover.
pub const INIT_COMPATIBLE_BRANDS_AV1: [[u8; 4]; 3] = [*b"cmfc", *b"iso6", *b"av01"];
/// Compatible brands of an HEVC track's CMAF header: `mp41` is left out (no
/// MPEG-4 systems descriptors). The CMAF HEVC media profile brands (`chhd`,
/// `chh1`, ISO/IEC 23000-19 Annex B) constrain resolution, frame rate and
/// colour, which a passed-through source need not meet: not claimed.
pub const INIT_COMPATIBLE_BRANDS_HEVC: [[u8; 4]; 2] = [*b"cmfc", *b"iso6"];

/// `compressorname` of the `hvc1`/`hev1` sample entry: the Pascal string
/// "HEVC Coding" that ISO/IEC 14496-15 §8.4.1.1 recommends.
const HEVC_COMPRESSOR_NAME: &[u8] = b"\x0bHEVC Coding";

/// `compressorname` of the `av01` sample entry: the Pascal string "AOM Coding"
/// that AV1-ISOBMFF §2.2.4 recommends.
const AV1_COMPRESSOR_NAME: &[u8] = b"\x0aAOM Coding";

/// `styp` at the start of a segment: `msdh` (ISO/IEC 23009-1 §6.3.4.2, DASH media
/// segment), `cmfs` (CMAF segment) and `cmff` (CMAF fragment: the segment is one
/// fragment, delivered as chunks). `msix` is not claimed: there is no `sidx`.
pub const SEGMENT_MAJOR_BRAND: [u8; 4] = *b"msdh";
/// See [`SEGMENT_MAJOR_BRAND`].
pub const SEGMENT_COMPATIBLE_BRANDS: [[u8; 4]; 3] = [*b"msdh", *b"cmfs", *b"cmff"];

/// Sample flags (ISO/IEC 14496-12 §8.8.3.1) of a sync sample:
/// `sample_depends_on = 2` (does not depend on others), `is_non_sync = 0`.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: `sample_depends_on = 1`, `is_non_sync = 1`.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Largest AAC frame per channel, in bytes (6144 bits, ISO/IEC 14496-3 §4.5.3.2):
/// the decoder buffer size we declare in the `DecoderConfigDescriptor`.
const AAC_MAX_FRAME_BYTES_PER_CHANNEL: u32 = 6144 / 8;

/// How a track is coded, from the publisher's sequence header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecSetup {
    /// H.264 (`avc1`).
    Avc {
        /// AVCDecoderConfigurationRecord as received (ISO/IEC 14496-15 §5.3.3),
        /// without a box header. Written verbatim as the `avcC` body.
        avcc: Bytes,
        /// Coded picture size after cropping, in pixels.
        width: u32,
        height: u32,
        /// Sample (pixel) aspect ratio `(h_spacing, v_spacing)`; `(1, 1)` for
        /// square pixels. A zero in either term is treated as square.
        sar: (u32, u32),
    },
    /// HEVC (`hvc1` or `hev1`).
    Hevc {
        /// HEVCDecoderConfigurationRecord as received (ISO/IEC 14496-15
        /// §8.3.3), without a box header. Written verbatim as the `hvcC` body.
        hvcc: Bytes,
        /// The sample entry type: `hvc1` or `hev1`
        /// ([`crate::media::hevc::HevcDecoderConfig::sample_entry`]).
        entry: [u8; 4],
        /// Picture size after the conformance window, in pixels.
        width: u32,
        height: u32,
        /// Sample aspect ratio, as for [`CodecSetup::Avc`].
        sar: (u32, u32),
    },
    /// AV1 (`av01`).
    Av1 {
        /// AV1CodecConfigurationRecord (AV1-ISOBMFF §2.3.3), without a box
        /// header: four fixed bytes, then the sequence header OBU. Written
        /// verbatim as the `av1C` body.
        av1c: Bytes,
        /// `max_frame_width_minus_1 + 1` and `max_frame_height_minus_1 + 1`
        /// of the sequence header (§2.2.4 requires them in the sample entry);
        /// square pixels.
        width: u32,
        height: u32,
    },
    /// AAC (`mp4a`, object type 0x40).
    Aac {
        /// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the `DecoderSpecificInfo`.
        asc: Bytes,
        /// Output sampling rate in Hz; also the usual track timescale.
        sample_rate: u32,
        /// Channel count as signalled in the sample entry.
        channels: u8,
    },
}

impl CodecSetup {
    /// The sample entry for a video configuration: `avc1` for H.264 (the
    /// record is the avcC), `hvc1` or `hev1` for HEVC (the hvcC), `av01` for
    /// AV1 (the av1C).
    pub fn video(config: &VideoConfig) -> CodecSetup {
        match config.codec {
            VideoCodec::Hevc => CodecSetup::Hevc {
                hvcc: config.record.clone(),
                // The demuxer parsed this record already; one it could not
                // parse never gets here, and `hev1` is the entry that makes
                // no promise about parameter sets.
                entry: match HevcDecoderConfig::parse(&config.record) {
                    Ok(c) if c.sample_entry() == "hvc1" => *b"hvc1",
                    _ => *b"hev1",
                },
                width: config.width,
                height: config.height,
                sar: config.sample_aspect,
            },
            VideoCodec::H264 => CodecSetup::Avc {
                avcc: config.record.clone(),
                width: config.width,
                height: config.height,
                sar: config.sample_aspect,
            },
            VideoCodec::Av1 => CodecSetup::Av1 {
                av1c: config.record.clone(),
                width: config.width,
                height: config.height,
            },
        }
    }
}

/// One CMAF track: what goes into its init segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackSetup {
    /// `track_ID` in `tkhd`, `trex` and every `tfhd`; non-zero.
    pub track_id: u32,
    /// Media timescale (`mdhd`), ticks per second: e.g. 90000 for video, the
    /// sample rate for audio. Sample durations and decode times use it.
    pub timescale: u32,
    pub codec: CodecSetup,
}

/// One media sample (access unit) of a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode duration in the track timescale.
    pub duration: u32,
    /// Presentation time minus decode time, in the track timescale (may be
    /// negative: `trun` version 1).
    pub composition_offset: i32,
    /// A sync sample (IDR for video). Audio samples are always sync.
    pub keyframe: bool,
    /// Sample bytes as stored in `mdat` (length-prefixed NAL units for AVC and HEVC, the
    /// OBUs of a temporal unit without temporal delimiter for AV1, a raw AAC
    /// frame without ADTS header for audio).
    pub data: Bytes,
}

/// Maps a media time of the track to wall-clock time (`prft`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerReference {
    /// Wall-clock time at which the sample at `media_time` was input to the
    /// encoder (for Ladder: when it arrived from the publisher). `prft` flags 0.
    pub wall_clock: SystemTime,
    /// Decode time of that sample in the track timescale, normally the chunk's
    /// `base_media_decode_time`.
    pub media_time: u64,
}

/// Everything about a chunk except its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// `mfhd` sequence number, increasing per track, starting at 1.
    pub sequence_number: u32,
    pub track_id: u32,
    /// `tfdt` (version 1) baseMediaDecodeTime, in the track timescale.
    pub base_media_decode_time: u64,
    /// First chunk of a segment: prepend `styp`.
    pub segment_start: bool,
    /// `prft` (version 1) written before `moof`.
    pub producer_reference: Option<ProducerReference>,
    /// Video: per-sample flags (sync or non-sync) and composition offsets.
    /// Audio: every sample sync (`tfhd` default flags), no composition offsets.
    pub video: bool,
}

// ---------------------------------------------------------------------------
// Box writer (ISO/IEC 14496-12 §4.2)
// ---------------------------------------------------------------------------

/// Writes a box: size, type, then whatever `body` writes. The size is patched in
/// afterwards; a box whose size does not fit 32 bits gets the 64-bit `largesize`
/// form instead (§4.2: `size == 1`).
fn write_box(buf: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    write_box_compact_up_to(buf, kind, u32::MAX as usize, body);
}

/// [`write_box`] with the largest size written in the compact 32-bit form as a
/// parameter, so tests can reach the `largesize` path without 4 GiB of memory.
fn write_box_compact_up_to(
    buf: &mut BytesMut,
    kind: &[u8; 4],
    max_compact: usize,
    body: impl FnOnce(&mut BytesMut),
) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_slice(kind);
    body(buf);
    let size = buf.len() - start;
    if size <= max_compact {
        // max_compact <= u32::MAX, so this cannot truncate.
        buf[start..start + 4].copy_from_slice(&(size as u32).to_be_bytes());
    } else {
        // Re-emit the header in the largesize form: 1, type, 64-bit size.
        let body = buf.split_off(start + 8);
        buf[start..start + 4].copy_from_slice(&1u32.to_be_bytes());
        buf.put_u64(size as u64 + 8);
        buf.unsplit(body);
    }
}

/// Writes a full box (§4.2): a box whose body starts with version and 24-bit flags.
fn write_full_box(
    buf: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    write_box(buf, kind, |b| {
        b.put_u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
        body(b);
    });
}

/// `ftyp` / `styp` body layout (§4.3, §8.16.2).
fn write_type_box(buf: &mut BytesMut, kind: &[u8; 4], major: &[u8; 4], compatible: &[[u8; 4]]) {
    write_box(buf, kind, |b| {
        b.put_slice(major);
        b.put_u32(0); // minor_version
        for brand in compatible {
            b.put_slice(brand);
        }
    });
}

/// The unity transformation matrix (§8.2.2.3): `{0x00010000,0,0, 0,0x00010000,0,
/// 0,0,0x40000000}`.
fn write_unity_matrix(b: &mut BytesMut) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.put_u32(v);
    }
}

/// Saturating 16.16 fixed point of `num / den`.
fn fixed_16_16(num: u64, den: u64) -> u32 {
    let den = den.max(1);
    u32::try_from((num << 16) / den).unwrap_or(u32::MAX)
}

fn u16_saturating(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// The SAR with zero terms replaced by square pixels.
fn normalized_sar((h, v): (u32, u32)) -> (u32, u32) {
    if h == 0 || v == 0 {
        (1, 1)
    } else {
        (h, v)
    }
}

// ---------------------------------------------------------------------------
// Init segment
// ---------------------------------------------------------------------------

/// `ftyp` + `moov` for one track (CMAF header, ISO/IEC 23000-19 §7.3.2.1): empty
/// sample tables, `mvex`/`trex`, all durations 0, no edit list.
pub fn init_segment(track: &TrackSetup) -> Bytes {
    let mut buf = BytesMut::with_capacity(1024);
    let compatible: &[[u8; 4]] = match track.codec {
        CodecSetup::Av1 { .. } => &INIT_COMPATIBLE_BRANDS_AV1,
        CodecSetup::Hevc { .. } => &INIT_COMPATIBLE_BRANDS_HEVC,
        CodecSetup::Avc { .. } | CodecSetup::Aac { .. } => &INIT_COMPATIBLE_BRANDS,
    };
    write_type_box(&mut buf, b"ftyp", &INIT_MAJOR_BRAND, compatible);
    write_box(&mut buf, b"moov", |b| {
        write_mvhd(b, track.track_id);
        write_trak(b, track);
        write_box(b, b"mvex", |b| write_trex(b, track));
    });
    buf.freeze()
}

/// `mvhd` version 0 (§8.2.2).
fn write_mvhd(b: &mut BytesMut, track_id: u32) {
    write_full_box(b, b"mvhd", 0, 0, |b| {
        b.put_u32(0); // creation_time
        b.put_u32(0); // modification_time
        b.put_u32(MOVIE_TIMESCALE);
        b.put_u32(0); // duration: unknown / fragmented
        b.put_u32(0x0001_0000); // rate 1.0
        b.put_u16(0x0100); // volume 1.0
        b.put_u16(0); // reserved
        b.put_u64(0); // reserved
        write_unity_matrix(b);
        for _ in 0..6 {
            b.put_u32(0); // pre_defined
        }
        b.put_u32(track_id.saturating_add(1)); // next_track_ID
    });
}

fn write_trak(b: &mut BytesMut, track: &TrackSetup) {
    write_box(b, b"trak", |b| {
        write_tkhd(b, track);
        write_box(b, b"mdia", |b| {
            write_mdhd(b, track.timescale);
            write_hdlr(b, &track.codec);
            write_box(b, b"minf", |b| {
                match track.codec {
                    // vmhd: version 0, flags 1 (§12.1.2), graphicsmode copy, opcolor 0.
                    CodecSetup::Avc { .. } | CodecSetup::Hevc { .. } | CodecSetup::Av1 { .. } => {
                        write_full_box(b, b"vmhd", 0, 1, |b| {
                            b.put_u16(0);
                            b.put_slice(&[0; 6]);
                        })
                    }
                    // smhd: balance 0 (centre), reserved (§12.2.2).
                    CodecSetup::Aac { .. } => write_full_box(b, b"smhd", 0, 0, |b| {
                        b.put_u16(0);
                        b.put_u16(0);
                    }),
                }
                write_box(b, b"dinf", |b| {
                    write_full_box(b, b"dref", 0, 0, |b| {
                        b.put_u32(1); // entry_count
                                      // flags 1: media data is in this file (§8.7.2.2).
                        write_full_box(b, b"url ", 0, 1, |_| {});
                    });
                });
                write_stbl(b, track);
            });
        });
    });
}

/// `tkhd` version 0 (§8.3.2): enabled and in movie; video size in 16.16 is the
/// display size (width scaled by the SAR), audio has volume 1.0.
fn write_tkhd(b: &mut BytesMut, track: &TrackSetup) {
    const TRACK_ENABLED: u32 = 0x1;
    const TRACK_IN_MOVIE: u32 = 0x2;
    write_full_box(b, b"tkhd", 0, TRACK_ENABLED | TRACK_IN_MOVIE, |b| {
        b.put_u32(0); // creation_time
        b.put_u32(0); // modification_time
        b.put_u32(track.track_id);
        b.put_u32(0); // reserved
        b.put_u32(0); // duration
        b.put_u64(0); // reserved
        b.put_u16(0); // layer
        b.put_u16(0); // alternate_group
        let (volume, width, height) = match &track.codec {
            CodecSetup::Avc {
                width, height, sar, ..
            }
            | CodecSetup::Hevc {
                width, height, sar, ..
            } => {
                let (h, v) = normalized_sar(*sar);
                let display_width = fixed_16_16(u64::from(*width) * u64::from(h), u64::from(v));
                (0, display_width, fixed_16_16(u64::from(*height), 1))
            }
            // AV1-ISOBMFF §2.2.4: the largest render size, which is the
            // frame size for our encoder's streams.
            CodecSetup::Av1 { width, height, .. } => (
                0,
                fixed_16_16(u64::from(*width), 1),
                fixed_16_16(u64::from(*height), 1),
            ),
            CodecSetup::Aac { .. } => (0x0100, 0, 0),
        };
        b.put_u16(volume);
        b.put_u16(0); // reserved
        write_unity_matrix(b);
        b.put_u32(width);
        b.put_u32(height);
    });
}

/// `mdhd` version 0 (§8.4.2), language `und`.
fn write_mdhd(b: &mut BytesMut, timescale: u32) {
    // ISO 639-2/T "und", each letter minus 0x60 in 5 bits.
    const LANGUAGE_UND: u16 =
        ((b'u' - 0x60) as u16) << 10 | ((b'n' - 0x60) as u16) << 5 | (b'd' - 0x60) as u16;
    write_full_box(b, b"mdhd", 0, 0, |b| {
        b.put_u32(0); // creation_time
        b.put_u32(0); // modification_time
        b.put_u32(timescale);
        b.put_u32(0); // duration
        b.put_u16(LANGUAGE_UND);
        b.put_u16(0); // pre_defined
    });
}

/// `hdlr` (§8.4.3): `vide` or `soun`, with a null-terminated name.
fn write_hdlr(b: &mut BytesMut, codec: &CodecSetup) {
    let (handler, name): (&[u8; 4], &[u8]) = match codec {
        CodecSetup::Avc { .. } | CodecSetup::Hevc { .. } | CodecSetup::Av1 { .. } => {
            (b"vide", b"Ladder video\0")
        }
        CodecSetup::Aac { .. } => (b"soun", b"Ladder audio\0"),
    };
    write_full_box(b, b"hdlr", 0, 0, |b| {
        b.put_u32(0); // pre_defined
        b.put_slice(handler);
        b.put_slice(&[0; 12]); // reserved
        b.put_slice(name);
    });
}

/// `stbl` with one sample entry and empty tables: samples live in fragments.
fn write_stbl(b: &mut BytesMut, track: &TrackSetup) {
    write_box(b, b"stbl", |b| {
        write_full_box(b, b"stsd", 0, 0, |b| {
            b.put_u32(1); // entry_count
            match &track.codec {
                CodecSetup::Avc {
                    avcc,
                    width,
                    height,
                    sar,
                } => write_avc1(b, avcc, *width, *height, *sar),
                CodecSetup::Hevc {
                    hvcc,
                    entry,
                    width,
                    height,
                    sar,
                } => write_hvc1(b, entry, hvcc, *width, *height, *sar),
                CodecSetup::Av1 {
                    av1c,
                    width,
                    height,
                } => write_av01(b, av1c, *width, *height),
                CodecSetup::Aac {
                    asc,
                    sample_rate,
                    channels,
                } => write_mp4a(b, track.track_id, asc, *sample_rate, *channels),
            }
        });
        write_full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
        write_full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
        write_full_box(b, b"stsz", 0, 0, |b| {
            b.put_u32(0); // sample_size
            b.put_u32(0); // sample_count
        });
        write_full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
    });
}

/// SampleEntry header (§8.5.2.2): six reserved bytes and data_reference_index 1.
fn write_sample_entry_header(b: &mut BytesMut) {
    b.put_slice(&[0; 6]);
    b.put_u16(1);
}

/// `avc1` (ISO/IEC 14496-15 §5.4.2): VisualSampleEntry (§12.1.3) + `avcC` + `pasp`.
///
/// `pasp` is always written (1:1 for square pixels): CMAF players read the
/// aspect ratio from it and GPAC's CMAF conformance expects it.
fn write_avc1(b: &mut BytesMut, avcc: &[u8], width: u32, height: u32, sar: (u32, u32)) {
    write_box(b, b"avc1", |b| {
        write_visual_sample_entry(b, width, height, b"");
        write_box(b, b"avcC", |b| b.put_slice(avcc));
        write_pasp(b, sar);
    });
}

/// `hvc1` or `hev1` (ISO/IEC 14496-15 §8.4.1): VisualSampleEntry (§12.1.3) +
/// `hvcC` + `pasp`, with the recommended compressorname.
fn write_hvc1(
    b: &mut BytesMut,
    entry: &[u8; 4],
    hvcc: &[u8],
    width: u32,
    height: u32,
    sar: (u32, u32),
) {
    write_box(b, entry, |b| {
        write_visual_sample_entry(b, width, height, HEVC_COMPRESSOR_NAME);
        write_box(b, b"hvcC", |b| b.put_slice(hvcc));
        write_pasp(b, sar);
    });
}

/// `av01` (AV1-ISOBMFF §2.2): VisualSampleEntry (§12.1.3) + `av1C` (§2.3) +
/// `pasp`, with the recommended compressorname.
///
/// `pasp` (1:1) is written as for `avc1`: §2.2.4 requires it only when the
/// render size differs from the frame size (never, for our encoder), and
/// allows it always. No `colr`: the sequence header leaves colour unspecified
/// and a `colr` could only repeat that.
fn write_av01(b: &mut BytesMut, av1c: &[u8], width: u32, height: u32) {
    write_box(b, b"av01", |b| {
        write_visual_sample_entry(b, width, height, AV1_COMPRESSOR_NAME);
        write_box(b, b"av1C", |b| b.put_slice(av1c));
        write_pasp(b, (1, 1));
    });
}

/// The VisualSampleEntry fields (§12.1.3.2) up to the child boxes;
/// `compressor` is the Pascal string (length byte included, at most 32 bytes).
fn write_visual_sample_entry(b: &mut BytesMut, width: u32, height: u32, compressor: &[u8]) {
    write_sample_entry_header(b);
    b.put_u16(0); // pre_defined
    b.put_u16(0); // reserved
    b.put_slice(&[0; 12]); // pre_defined
    b.put_u16(u16_saturating(width));
    b.put_u16(u16_saturating(height));
    b.put_u32(0x0048_0000); // horizresolution 72 dpi
    b.put_u32(0x0048_0000); // vertresolution 72 dpi
    b.put_u32(0); // reserved
    b.put_u16(1); // frame_count
    let mut name = [0u8; 32]; // compressorname: empty Pascal string unless given
    let len = compressor.len().min(32);
    name[..len].copy_from_slice(&compressor[..len]);
    b.put_slice(&name);
    b.put_u16(0x0018); // depth: colour, no alpha
    b.put_i16(-1); // pre_defined
}

/// `pasp` (§12.1.4.2): hSpacing, vSpacing.
fn write_pasp(b: &mut BytesMut, sar: (u32, u32)) {
    let (h, v) = normalized_sar(sar);
    write_box(b, b"pasp", |b| {
        b.put_u32(h);
        b.put_u32(v);
    });
}

/// `mp4a` (ISO/IEC 14496-14 §3.1): AudioSampleEntry (§12.2.3) + `esds`.
///
/// `samplerate` is 16.16 and cannot hold rates above 65535 Hz; for those it holds
/// the rate halved until it fits, and a `srat` box (§12.2.4) carries the real
/// rate. Decoders take the rate from the AudioSpecificConfig either way.
fn write_mp4a(b: &mut BytesMut, es_id: u32, asc: &[u8], sample_rate: u32, channels: u8) {
    write_box(b, b"mp4a", |b| {
        write_sample_entry_header(b);
        b.put_u64(0); // reserved (version 0 entry)
        b.put_u16(u16::from(channels));
        b.put_u16(16); // samplesize
        b.put_u16(0); // pre_defined
        b.put_u16(0); // reserved
        let mut field_rate = sample_rate;
        while field_rate > u32::from(u16::MAX) {
            field_rate /= 2;
        }
        b.put_u32(field_rate << 16);
        write_esds(b, es_id, asc, channels);
        if field_rate != sample_rate {
            write_full_box(b, b"srat", 0, 0, |b| b.put_u32(sample_rate));
        }
    });
}

/// Expandable descriptor size (ISO/IEC 14496-1 §8.3.3): 7 bits per byte, most
/// significant first, continuation bit 0x80 on all but the last byte.
fn put_descriptor_size(b: &mut BytesMut, size: usize) {
    // Four bytes hold 28 bits; nothing we write comes near.
    let size = size.min(0x0FFF_FFFF);
    let mut shift = 21;
    while shift > 0 && (size >> shift) == 0 {
        shift -= 7;
    }
    while shift > 0 {
        b.put_u8(0x80 | ((size >> shift) & 0x7F) as u8);
        shift -= 7;
    }
    b.put_u8((size & 0x7F) as u8);
}

fn put_descriptor(b: &mut BytesMut, tag: u8, body: &[u8]) {
    b.put_u8(tag);
    put_descriptor_size(b, body.len());
    b.put_slice(body);
}

/// `esds` (ISO/IEC 14496-14 §3.1.2) holding an ES_Descriptor (ISO/IEC 14496-1
/// §7.2.6.5) → DecoderConfigDescriptor (§7.2.6.6: objectTypeIndication 0x40
/// Audio ISO/IEC 14496-3, streamType 5 audio) → DecoderSpecificInfo (the ASC),
/// and SLConfigDescriptor predefined 2 (reserved for MP4 files, §7.3.2.3).
fn write_esds(b: &mut BytesMut, es_id: u32, asc: &[u8], channels: u8) {
    const OBJECT_TYPE_AAC: u8 = 0x40;
    const STREAM_TYPE_AUDIO: u8 = 0x05;
    const TAG_ES: u8 = 0x03;
    const TAG_DECODER_CONFIG: u8 = 0x04;
    const TAG_DECODER_SPECIFIC: u8 = 0x05;
    const TAG_SL_CONFIG: u8 = 0x06;

    let mut dec_config = BytesMut::with_capacity(32);
    dec_config.put_u8(OBJECT_TYPE_AAC);
    // streamType (6 bits), upStream 0, reserved 1.
    dec_config.put_u8(STREAM_TYPE_AUDIO << 2 | 0x01);
    let buffer_size = AAC_MAX_FRAME_BYTES_PER_CHANNEL * u32::from(channels.max(1));
    dec_config.put_slice(&buffer_size.to_be_bytes()[1..]); // bufferSizeDB, 24 bits
    dec_config.put_u32(0); // maxBitrate: unknown
    dec_config.put_u32(0); // avgBitrate: 0 = variable / unknown
    put_descriptor(&mut dec_config, TAG_DECODER_SPECIFIC, asc);

    let mut es = BytesMut::with_capacity(48);
    // ES_ID: the spec leaves it 0 in files; ffmpeg writes the track ID. Use that.
    es.put_u16(u16::try_from(es_id).unwrap_or(0));
    es.put_u8(0); // streamDependenceFlag, URL_Flag, OCRstreamFlag, streamPriority
    put_descriptor(&mut es, TAG_DECODER_CONFIG, &dec_config);
    put_descriptor(&mut es, TAG_SL_CONFIG, &[0x02]);

    write_full_box(b, b"esds", 0, 0, |b| put_descriptor(b, TAG_ES, &es));
}

/// `trex` (§8.8.3): sample description 1, duration and size 0 (every `trun`
/// carries them), flags: audio sync, video non-sync (keyframes are flagged per
/// sample).
fn write_trex(b: &mut BytesMut, track: &TrackSetup) {
    let default_flags = match track.codec {
        CodecSetup::Avc { .. } | CodecSetup::Hevc { .. } | CodecSetup::Av1 { .. } => {
            NON_SYNC_SAMPLE_FLAGS
        }
        CodecSetup::Aac { .. } => SYNC_SAMPLE_FLAGS,
    };
    write_full_box(b, b"trex", 0, 0, |b| {
        b.put_u32(track.track_id);
        b.put_u32(1); // default_sample_description_index
        b.put_u32(0); // default_sample_duration
        b.put_u32(0); // default_sample_size
        b.put_u32(default_flags);
    });
}

// ---------------------------------------------------------------------------
// Chunks
// ---------------------------------------------------------------------------

/// `tfhd` flags (§8.8.7.1).
const TFHD_DEFAULT_SAMPLE_FLAGS_PRESENT: u32 = 0x00_0020;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;

/// `trun` flags (§8.8.8.1).
const TRUN_DATA_OFFSET_PRESENT: u32 = 0x00_0001;
const TRUN_SAMPLE_DURATION_PRESENT: u32 = 0x00_0100;
const TRUN_SAMPLE_SIZE_PRESENT: u32 = 0x00_0200;
const TRUN_SAMPLE_FLAGS_PRESENT: u32 = 0x00_0400;
const TRUN_SAMPLE_COMPOSITION_OFFSETS_PRESENT: u32 = 0x00_0800;

/// One CMAF chunk: `[styp] [prft] moof mdat` (ISO/IEC 23000-19 §7.3.2.3-4).
///
/// `moof` holds `mfhd` and one `traf` (`tfhd` with default-base-is-moof, `tfdt`
/// version 1, one `trun`). For video the `trun` is version 1 with per-sample
/// duration, size, flags and signed composition offset; for audio it carries
/// duration and size, and `tfhd` gives every sample the sync flags. The `trun`
/// data offset points at the first byte of the `mdat` payload.
///
/// Sizes beyond the format: a `moof` is at most 2^31 bytes (its data offset is a
/// signed 32-bit field), i.e. about 130 million samples per chunk; the `mdat`
/// switches to a 64-bit size above 4 GiB.
pub fn chunk(header: &ChunkHeader, samples: &[Sample]) -> Bytes {
    let payload_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut buf = BytesMut::with_capacity(256 + samples.len() * 16 + payload_len);

    if header.segment_start {
        write_type_box(
            &mut buf,
            b"styp",
            &SEGMENT_MAJOR_BRAND,
            &SEGMENT_COMPATIBLE_BRANDS,
        );
    }
    if let Some(reference) = &header.producer_reference {
        write_prft(&mut buf, header.track_id, reference);
    }

    let moof_start = buf.len();
    let mut data_offset_at = 0;
    write_box(&mut buf, b"moof", |b| {
        write_full_box(b, b"mfhd", 0, 0, |b| b.put_u32(header.sequence_number));
        write_box(b, b"traf", |b| {
            let tfhd_flags = if header.video {
                TFHD_DEFAULT_BASE_IS_MOOF
            } else {
                TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_SAMPLE_FLAGS_PRESENT
            };
            write_full_box(b, b"tfhd", 0, tfhd_flags, |b| {
                b.put_u32(header.track_id);
                if !header.video {
                    b.put_u32(SYNC_SAMPLE_FLAGS);
                }
            });
            write_full_box(b, b"tfdt", 1, 0, |b| {
                b.put_u64(header.base_media_decode_time)
            });
            data_offset_at = write_trun(b, header.video, samples);
        });
    });
    let moof_len = buf.len() - moof_start;

    let mdat_header = mdat_header_len(payload_len as u64);
    // Offset from the first byte of moof (default-base-is-moof) to the payload.
    let data_offset = i32::try_from(moof_len + mdat_header).unwrap_or(i32::MAX);
    buf[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());

    put_mdat_header(&mut buf, payload_len as u64);
    for sample in samples {
        buf.put_slice(&sample.data);
    }
    buf.freeze()
}

/// Bytes of the `mdat` header for a payload: 8, or 16 with `largesize` when the
/// box would not fit 32 bits (§4.2).
fn mdat_header_len(payload_len: u64) -> usize {
    if payload_len + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    }
}

/// The `mdat` header (§8.1.1); the payload follows. Written directly rather than
/// through [`write_box`] so the payload is copied once.
fn put_mdat_header(buf: &mut BytesMut, payload_len: u64) {
    if mdat_header_len(payload_len) == 16 {
        buf.put_u32(1);
        buf.put_slice(b"mdat");
        buf.put_u64(payload_len + 16);
    } else {
        buf.put_u32((payload_len + 8) as u32);
        buf.put_slice(b"mdat");
    }
}

/// Writes `trun` and returns the buffer position of its data_offset field, which
/// the caller fills once the `moof` size is known.
fn write_trun(b: &mut BytesMut, video: bool, samples: &[Sample]) -> usize {
    let mut flags =
        TRUN_DATA_OFFSET_PRESENT | TRUN_SAMPLE_DURATION_PRESENT | TRUN_SAMPLE_SIZE_PRESENT;
    if video {
        flags |= TRUN_SAMPLE_FLAGS_PRESENT | TRUN_SAMPLE_COMPOSITION_OFFSETS_PRESENT;
    }
    // Version 1: composition offsets are signed (§8.8.8.2).
    let version = u8::from(video);
    let mut data_offset_at = 0;
    write_full_box(b, b"trun", version, flags, |b| {
        b.put_u32(u32::try_from(samples.len()).unwrap_or(u32::MAX));
        data_offset_at = b.len();
        b.put_i32(0); // data_offset, patched by the caller
        for sample in samples {
            b.put_u32(sample.duration);
            b.put_u32(u32::try_from(sample.data.len()).unwrap_or(u32::MAX));
            if video {
                b.put_u32(if sample.keyframe {
                    SYNC_SAMPLE_FLAGS
                } else {
                    NON_SYNC_SAMPLE_FLAGS
                });
                b.put_i32(sample.composition_offset);
            }
        }
    });
    data_offset_at
}

/// `prft` version 1 (§8.16.5), flags 0: the NTP time is when the sample at
/// `media_time` was input to the encoder.
fn write_prft(b: &mut BytesMut, track_id: u32, reference: &ProducerReference) {
    write_full_box(b, b"prft", 1, 0, |b| {
        b.put_u32(track_id); // reference_track_ID
        b.put_u64(ntp_timestamp(reference.wall_clock));
        b.put_u64(reference.media_time);
    });
}

/// 64-bit NTP timestamp (RFC 5905 §6): seconds since 1900-01-01 in the upper 32
/// bits (wrapping into era 1 in 2036, as NTP does), binary fraction in the lower.
/// Times before 1900 give 0.
pub fn ntp_timestamp(time: SystemTime) -> u64 {
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            NTP_UNIX_OFFSET_SECS.wrapping_add(after.as_secs()),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let before = before.duration();
            // Borrow a second when there is a fractional part.
            let whole = before.as_secs() + u64::from(before.subsec_nanos() > 0);
            match NTP_UNIX_OFFSET_SECS.checked_sub(whole) {
                Some(secs) => (
                    secs,
                    (1_000_000_000 - before.subsec_nanos()) % 1_000_000_000,
                ),
                None => return 0,
            }
        }
    };
    let fraction = (u64::from(nanos) << 32) / 1_000_000_000;
    (secs & 0xFFFF_FFFF) << 32 | fraction
}

#[cfg(test)]
mod tests {
    //! Golden snapshots, structural parses (our own reader and `mp4-atom` as an
    //! independent decoder) and an end-to-end check with real ffmpeg/ffprobe.

    use super::*;
    use mp4_atom::{Decode, FourCC};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    /// SPS and PPS that x264 wrote for `testsrc2=size=1280x720:rate=30`,
    /// `-profile:v high -bf 2` (High profile, level 3.1).
    const SPS_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    const PPS_720P: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    /// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) for one SPS and
    /// one PPS, 4-byte NALU lengths, with the High-profile extension fields.
    fn avcc(sps: &[u8], pps: &[u8]) -> Bytes {
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        if matches!(sps[1], 100 | 110 | 122 | 144) {
            // chroma_format 4:2:0, 8-bit luma and chroma, no SPS extensions.
            r.extend_from_slice(&[0xFD, 0xF8, 0xF8, 0x00]);
        }
        Bytes::from(r)
    }

    fn avc_track() -> TrackSetup {
        TrackSetup {
            track_id: 1,
            timescale: 90_000,
            codec: CodecSetup::Avc {
                avcc: avcc(SPS_720P, PPS_720P),
                width: 1280,
                height: 720,
                sar: (1, 1),
            },
        }
    }

    fn aac_track(asc: &[u8], sample_rate: u32) -> TrackSetup {
        TrackSetup {
            track_id: 2,
            timescale: sample_rate,
            codec: CodecSetup::Aac {
                asc: Bytes::copy_from_slice(asc),
                sample_rate,
                channels: 2,
            },
        }
    }

    /// An AV1 640x360 track with the sequence header rav1e wrote for it.
    fn av1_track() -> TrackSetup {
        TrackSetup {
            track_id: 1,
            timescale: 90_000,
            codec: CodecSetup::Av1 {
                av1c: av1c_360p(),
                width: 640,
                height: 360,
            },
        }
    }

    fn av1c_360p() -> Bytes {
        crate::media::av1::build_av1c(crate::media::av1::RAV1E_SEQUENCE_HEADER_360P)
            .expect("rav1e's sequence header makes an av1C")
    }

    // -- a minimal box reader, to check what we wrote --------------------------

    #[derive(Debug, Clone)]
    struct BoxRef {
        kind: [u8; 4],
        /// Offset of the box header in the parsed buffer.
        start: usize,
        /// Offset of the body (after size/type/largesize).
        body: usize,
        end: usize,
    }

    /// The boxes that exactly tile `data[from..to]`; panics when sizes do not add up.
    fn boxes_in(data: &[u8], from: usize, to: usize) -> Vec<BoxRef> {
        let mut out = Vec::new();
        let mut pos = from;
        while pos < to {
            assert!(pos + 8 <= to, "truncated box header at {pos}");
            let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap());
            let kind: [u8; 4] = data[pos + 4..pos + 8].try_into().unwrap();
            let (size, body) = match size32 {
                1 => (
                    u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap()) as usize,
                    pos + 16,
                ),
                0 => panic!("size 0 (to end of file) is never written"),
                n => (n as usize, pos + 8),
            };
            assert!(size >= body - pos, "box smaller than its header");
            assert!(pos + size <= to, "{} overruns its parent", fourcc(&kind));
            out.push(BoxRef {
                kind,
                start: pos,
                body,
                end: pos + size,
            });
            pos += size;
        }
        assert_eq!(pos, to, "children do not fill the parent exactly");
        out
    }

    fn fourcc(kind: &[u8; 4]) -> String {
        String::from_utf8_lossy(kind).into_owned()
    }

    fn kinds(boxes: &[BoxRef]) -> Vec<String> {
        boxes.iter().map(|b| fourcc(&b.kind)).collect()
    }

    fn child(data: &[u8], parent: &BoxRef, skip: usize, kind: &[u8; 4]) -> BoxRef {
        boxes_in(data, parent.body + skip, parent.end)
            .into_iter()
            .find(|b| &b.kind == kind)
            .unwrap_or_else(|| panic!("no {} in {}", fourcc(kind), fourcc(&parent.kind)))
    }

    /// Follows a path of container boxes (full boxes with an entry count, like
    /// `stsd` and `dref`, need their 8 header bytes skipped: use `child`).
    fn find_path(data: &[u8], path: &[&[u8; 4]]) -> BoxRef {
        let mut level = boxes_in(data, 0, data.len());
        let mut found = None;
        for kind in path {
            let b = level
                .iter()
                .find(|b| &b.kind == *kind)
                .unwrap_or_else(|| panic!("no {}", fourcc(kind)))
                .clone();
            level = if b.end - b.body >= 8 && is_container(&b.kind) {
                boxes_in(data, b.body, b.end)
            } else {
                Vec::new()
            };
            found = Some(b);
        }
        found.unwrap()
    }

    fn is_container(kind: &[u8; 4]) -> bool {
        matches!(
            kind,
            b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"moof" | b"traf"
        )
    }

    fn be32(data: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
    }

    // -- golden snapshots --------------------------------------------------------

    fn fixture_path(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cmaf")
            .join(name)
    }

    /// Compares with the stored fixture byte for byte; `UPDATE_SNAPSHOTS=1`
    /// rewrites the fixture instead.
    fn assert_snapshot(name: &str, actual: &[u8]) {
        let path = fixture_path(name);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
                path.display()
            )
        });
        if expected != actual {
            let first = expected
                .iter()
                .zip(actual)
                .position(|(a, b)| a != b)
                .unwrap_or(expected.len().min(actual.len()));
            panic!(
                "{name} differs from the snapshot at byte {first} (expected {} bytes, got {}); \
                 if the change is intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff",
                expected.len(),
                actual.len()
            );
        }
    }

    #[test]
    fn init_avc_matches_snapshot() {
        assert_snapshot("init-avc-720p.mp4", &init_segment(&avc_track()));
    }

    #[test]
    fn init_aac_44100_matches_snapshot() {
        assert_snapshot(
            "init-aac-44100.mp4",
            &init_segment(&aac_track(&[0x12, 0x10], 44_100)),
        );
    }

    #[test]
    fn init_aac_48000_matches_snapshot() {
        assert_snapshot(
            "init-aac-48000.mp4",
            &init_segment(&aac_track(&[0x11, 0x90], 48_000)),
        );
    }

    #[test]
    fn init_av1_matches_snapshot() {
        assert_snapshot("init-av1-360p.mp4", &init_segment(&av1_track()));
    }

    // -- init segment structure --------------------------------------------------

    #[test]
    fn init_av1_layout() {
        let init = init_segment(&av1_track());
        let top = boxes_in(&init, 0, init.len());
        assert_eq!(kinds(&top), ["ftyp", "moov"]);
        // ftyp: major cmfc, minor 0, compatible cmfc iso6 av01 (AV1-ISOBMFF §2.1).
        assert_eq!(&init[8..28], b"cmfc\0\0\0\0cmfciso6av01");

        let trak = find_path(&init, &[b"moov", b"trak"]);
        let tkhd = find_path(&init, &[b"moov", b"trak", b"tkhd"]);
        assert!(tkhd.start > trak.start);
        assert_eq!(be32(&init, tkhd.end - 8), 640 << 16);
        assert_eq!(be32(&init, tkhd.end - 4), 360 << 16);
        let hdlr = find_path(&init, &[b"moov", b"trak", b"mdia", b"hdlr"]);
        assert_eq!(&init[hdlr.body + 8..hdlr.body + 12], b"vide");
        let minf = find_path(&init, &[b"moov", b"trak", b"mdia", b"minf"]);
        assert_eq!(
            kinds(&boxes_in(&init, minf.body, minf.end)),
            ["vmhd", "dinf", "stbl"]
        );

        // stsd -> av01 -> av1C (verbatim) + pasp.
        let stsd = find_path(
            &init,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
        );
        assert_eq!(be32(&init, stsd.body + 4), 1, "stsd entry_count");
        let av01 = child(&init, &stsd, 8, b"av01");
        let entry = &init[av01.body..];
        assert_eq!(u16::from_be_bytes([entry[24], entry[25]]), 640);
        assert_eq!(u16::from_be_bytes([entry[26], entry[27]]), 360);
        // compressorname: the Pascal string AV1-ISOBMFF §2.2.4 recommends.
        assert_eq!(entry[42], 10);
        assert_eq!(&entry[43..53], b"AOM Coding");
        assert!(entry[53..74].iter().all(|&b| b == 0));
        assert_eq!(u16::from_be_bytes([entry[74], entry[75]]), 0x18, "depth");
        let inner = boxes_in(&init, av01.body + 78, av01.end);
        assert_eq!(kinds(&inner), ["av1C", "pasp"]);
        let av1c = &init[inner[0].body..inner[0].end];
        assert_eq!(av1c, &av1c_360p()[..]);
        // marker/version, profile 0 level 2.1, 4:2:0 8-bit, then the OBU.
        assert_eq!(&av1c[..4], &[0x81, 0x01, 0x0C, 0x00]);
        assert_eq!(&av1c[4..], crate::media::av1::RAV1E_SEQUENCE_HEADER_360P);
        assert_eq!(
            &init[inner[1].body..inner[1].end],
            &[0, 0, 0, 1, 0, 0, 0, 1]
        );

        // trex: video default flags non-sync; key frames are flagged per sample.
        let trex = find_path(&init, &[b"moov", b"mvex", b"trex"]);
        assert_eq!(be32(&init, trex.body + 20), NON_SYNC_SAMPLE_FLAGS);
    }

    #[test]
    fn init_av1_decodes_with_mp4_atom() {
        let init = init_segment(&av1_track());
        let buf = &mut &init[..];
        let ftyp = mp4_atom::Ftyp::decode(buf).unwrap();
        assert!(ftyp.compatible_brands.contains(&FourCC::new(b"av01")));
        let moov = mp4_atom::Moov::decode(buf).unwrap();
        assert!(buf.is_empty());
        let trak = &moov.trak[0];
        assert_eq!(trak.mdia.hdlr.handler, FourCC::new(b"vide"));
        assert!(trak.mdia.minf.vmhd.is_some());
        match &trak.mdia.minf.stbl.stsd.codecs[..] {
            [mp4_atom::Codec::Av01(av01)] => {
                assert_eq!((av01.visual.width, av01.visual.height), (640, 360));
                let c = &av01.av1c;
                assert_eq!((c.seq_profile, c.seq_level_idx_0), (0, 1));
                assert!(!c.seq_tier_0 && !c.high_bitdepth && !c.twelve_bit && !c.monochrome);
                assert!(c.chroma_subsampling_x && c.chroma_subsampling_y);
                assert_eq!(c.chroma_sample_position, 0);
                assert_eq!(c.initial_presentation_delay, None);
                assert_eq!(
                    c.config_obus,
                    crate::media::av1::RAV1E_SEQUENCE_HEADER_360P.to_vec()
                );
                let pasp = av01.pasp.as_ref().expect("pasp");
                assert_eq!((pasp.h_spacing, pasp.v_spacing), (1, 1));
            }
            other => panic!("unexpected sample entries {other:?}"),
        }
    }

    fn hevc_config(complete: bool) -> VideoConfig {
        use crate::media::hevc::fixtures::{hex, HVCC_MAIN_360P30};
        let mut record = hex(HVCC_MAIN_360P30);
        if complete {
            // The VPS, SPS and PPS array headers (one NAL unit each).
            let mut at = 23;
            for _ in 0..3 {
                record[at] |= 0x80;
                at += 3 + 2 + usize::from(u16::from_be_bytes([record[at + 3], record[at + 4]]));
            }
        }
        crate::media::hevc::video_config(Bytes::from(record)).unwrap()
    }

    fn hevc_track(complete: bool) -> TrackSetup {
        TrackSetup {
            track_id: 1,
            timescale: 90_000,
            codec: CodecSetup::video(&hevc_config(complete)),
        }
    }

    #[test]
    fn init_hevc_matches_snapshot() {
        assert_snapshot("init-hevc-360p.mp4", &init_segment(&hevc_track(true)));
    }

    /// `hvc1` when the record's parameter set arrays are complete, `hev1`
    /// otherwise (ISO/IEC 14496-15 §8.4.1.1), and the codec string follows.
    #[test]
    fn init_hevc_layout() {
        for (complete, entry) in [(true, b"hvc1"), (false, b"hev1")] {
            let config = hevc_config(complete);
            assert_eq!(config.codec_string, format!("{}.1.6.L63.90", fourcc(entry)));
            let init = init_segment(&hevc_track(complete));
            // ftyp: major cmfc, minor 0, compatible cmfc iso6.
            assert_eq!(&init[4..24], b"ftypcmfc\0\0\0\0cmfciso6");
            let hdlr = find_path(&init, &[b"moov", b"trak", b"mdia", b"hdlr"]);
            assert_eq!(&init[hdlr.body + 8..hdlr.body + 12], b"vide");
            let tkhd = find_path(&init, &[b"moov", b"trak", b"tkhd"]);
            assert_eq!(be32(&init, tkhd.end - 8), 640 << 16);
            assert_eq!(be32(&init, tkhd.end - 4), 360 << 16);
            let stsd = find_path(
                &init,
                &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
            );
            assert_eq!(be32(&init, stsd.body + 4), 1, "stsd entry_count");
            let sample_entry = child(&init, &stsd, 8, entry);
            let e = &init[sample_entry.body..];
            assert_eq!(u16::from_be_bytes([e[24], e[25]]), 640);
            assert_eq!(u16::from_be_bytes([e[26], e[27]]), 360);
            assert_eq!(e[42], 11);
            assert_eq!(&e[43..54], b"HEVC Coding");
            let inner = boxes_in(&init, sample_entry.body + 78, sample_entry.end);
            assert_eq!(kinds(&inner), ["hvcC", "pasp"]);
            assert_eq!(
                &init[inner[0].body..inner[0].end],
                &config.record[..],
                "hvcC verbatim"
            );
            let trex = find_path(&init, &[b"moov", b"mvex", b"trex"]);
            assert_eq!(be32(&init, trex.body + 20), NON_SYNC_SAMPLE_FLAGS);
        }
    }

    #[test]
    fn init_hevc_decodes_with_mp4_atom() {
        let init = init_segment(&hevc_track(true));
        let buf = &mut &init[..];
        mp4_atom::Ftyp::decode(buf).unwrap();
        let moov = mp4_atom::Moov::decode(buf).unwrap();
        assert!(buf.is_empty());
        match &moov.trak[0].mdia.minf.stbl.stsd.codecs[..] {
            [mp4_atom::Codec::Hvc1(hvc1)] => {
                assert_eq!((hvc1.visual.width, hvc1.visual.height), (640, 360));
                let c = &hvc1.hvcc;
                assert_eq!((c.general_profile_idc, c.general_level_idc), (1, 63));
                assert_eq!(c.length_size_minus_one, 3);
                let arrays: Vec<(u8, bool)> = c
                    .arrays
                    .iter()
                    .map(|a| (a.nal_unit_type, a.completeness))
                    .collect();
                assert_eq!(arrays, [(32, true), (33, true), (34, true)]);
                let pasp = hvc1.pasp.as_ref().expect("pasp");
                assert_eq!((pasp.h_spacing, pasp.v_spacing), (1, 1));
            }
            other => panic!("unexpected sample entries {other:?}"),
        }
    }

    #[test]
    fn video_configs_pick_their_sample_entry() {
        let av1 = crate::media::av1::video_config(av1c_360p()).unwrap();
        assert_eq!(
            CodecSetup::video(&av1),
            CodecSetup::Av1 {
                av1c: av1c_360p(),
                width: 640,
                height: 360
            }
        );
        let h264 = crate::media::avc::video_config(avcc(SPS_720P, PPS_720P)).unwrap();
        assert_eq!(CodecSetup::video(&h264), avc_track().codec);
    }

    #[test]
    fn init_avc_layout() {
        let init = init_segment(&avc_track());
        let top = boxes_in(&init, 0, init.len());
        assert_eq!(kinds(&top), ["ftyp", "moov"]);
        // ftyp: major cmfc, minor 0, compatible cmfc iso6 mp41.
        assert_eq!(&init[8..28], b"cmfc\0\0\0\0cmfciso6mp41");

        let moov = boxes_in(&init, top[1].body, top[1].end);
        assert_eq!(kinds(&moov), ["mvhd", "trak", "mvex"]);
        let trak = boxes_in(&init, moov[1].body, moov[1].end);
        assert_eq!(kinds(&trak), ["tkhd", "mdia"]);
        let mdia = boxes_in(&init, trak[1].body, trak[1].end);
        assert_eq!(kinds(&mdia), ["mdhd", "hdlr", "minf"]);
        let minf = boxes_in(&init, mdia[2].body, mdia[2].end);
        assert_eq!(kinds(&minf), ["vmhd", "dinf", "stbl"]);
        let stbl = boxes_in(&init, minf[2].body, minf[2].end);
        assert_eq!(kinds(&stbl), ["stsd", "stts", "stsc", "stsz", "stco"]);

        // tkhd flags: enabled | in_movie; width/height 16.16 at the end.
        let tkhd = &trak[0];
        assert_eq!(be32(&init, tkhd.body), 0x0000_0003);
        assert_eq!(be32(&init, tkhd.end - 8), 1280 << 16);
        assert_eq!(be32(&init, tkhd.end - 4), 720 << 16);
        // mdhd timescale.
        assert_eq!(be32(&init, mdia[0].body + 12), 90_000);
        // hdlr handler type.
        assert_eq!(&init[mdia[1].body + 8..mdia[1].body + 12], b"vide");

        // stsd -> avc1 -> avcC (verbatim) + pasp.
        let avc1 = child(&init, &stbl[0], 8, b"avc1");
        assert_eq!(be32(&init, stbl[0].body + 4), 1, "stsd entry_count");
        let entry = &init[avc1.body..];
        assert_eq!(u16::from_be_bytes([entry[24], entry[25]]), 1280);
        assert_eq!(u16::from_be_bytes([entry[26], entry[27]]), 720);
        assert_eq!(u16::from_be_bytes([entry[74], entry[75]]), 0x18, "depth");
        let inner = boxes_in(&init, avc1.body + 78, avc1.end);
        assert_eq!(kinds(&inner), ["avcC", "pasp"]);
        assert_eq!(
            &init[inner[0].body..inner[0].end],
            &avcc(SPS_720P, PPS_720P)[..]
        );
        assert_eq!(
            &init[inner[1].body..inner[1].end],
            &[0, 0, 0, 1, 0, 0, 0, 1]
        );

        // dref holds one self-contained url entry.
        let dref = child(&init, &minf[1], 0, b"dref");
        let url = child(&init, &dref, 8, b"url ");
        assert_eq!(be32(&init, url.body), 1, "url flags: self-contained");
        assert_eq!(url.end - url.body, 4);

        // trex: track 1, description 1, video default flags non-sync.
        let trex = find_path(&init, &[b"moov", b"mvex", b"trex"]);
        assert_eq!(be32(&init, trex.body + 4), 1);
        assert_eq!(be32(&init, trex.body + 8), 1);
        assert_eq!(be32(&init, trex.body + 20), NON_SYNC_SAMPLE_FLAGS);
    }

    #[test]
    fn init_avc_decodes_with_mp4_atom() {
        let init = init_segment(&avc_track());
        let buf = &mut &init[..];
        let ftyp = mp4_atom::Ftyp::decode(buf).unwrap();
        assert_eq!(ftyp.major_brand, FourCC::new(b"cmfc"));
        let moov = mp4_atom::Moov::decode(buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(moov.mvhd.next_track_id, 2);
        let trak = &moov.trak[0];
        assert_eq!(trak.tkhd.track_id, 1);
        assert!(trak.tkhd.enabled && trak.tkhd.in_movie);
        assert_eq!(trak.mdia.mdhd.timescale, 90_000);
        assert_eq!(trak.mdia.hdlr.handler, FourCC::new(b"vide"));
        let stbl = &trak.mdia.minf.stbl;
        assert!(stbl.stts.entries.is_empty());
        assert!(matches!(
            &stbl.stsz.samples,
            mp4_atom::StszSamples::Different { sizes } if sizes.is_empty()
        ));
        match &stbl.stsd.codecs[..] {
            [mp4_atom::Codec::Avc1(avc1)] => {
                assert_eq!((avc1.visual.width, avc1.visual.height), (1280, 720));
                assert_eq!(avc1.avcc.avc_profile_indication, 100);
                assert_eq!(avc1.avcc.sequence_parameter_sets, vec![SPS_720P.to_vec()]);
                assert_eq!(avc1.avcc.picture_parameter_sets, vec![PPS_720P.to_vec()]);
                assert_eq!(avc1.avcc.length_size, 4);
                let pasp = avc1.pasp.as_ref().expect("pasp");
                assert_eq!((pasp.h_spacing, pasp.v_spacing), (1, 1));
            }
            other => panic!("unexpected sample entries {other:?}"),
        }
        let trex = &moov.mvex.as_ref().expect("mvex").trex[0];
        assert_eq!(trex.track_id, 1);
        assert_eq!(trex.default_sample_description_index, 1);
    }

    #[test]
    fn init_aac_decodes_with_mp4_atom() {
        for (asc, rate) in [([0x12, 0x10], 44_100), ([0x11, 0x90], 48_000)] {
            let init = init_segment(&aac_track(&asc, rate));
            let buf = &mut &init[..];
            mp4_atom::Ftyp::decode(buf).unwrap();
            let moov = mp4_atom::Moov::decode(buf).unwrap();
            let trak = &moov.trak[0];
            assert_eq!(trak.tkhd.track_id, 2);
            assert_eq!(trak.mdia.mdhd.timescale, rate);
            assert_eq!(trak.mdia.hdlr.handler, FourCC::new(b"soun"));
            assert!(trak.mdia.minf.smhd.is_some());
            match &trak.mdia.minf.stbl.stsd.codecs[..] {
                [mp4_atom::Codec::Mp4a(mp4a)] => {
                    assert_eq!(mp4a.audio.channel_count, 2);
                    assert_eq!(mp4a.audio.sample_size, 16);
                    assert_eq!(u32::from(mp4a.audio.sample_rate.integer()), rate);
                    let dc = &mp4a.esds.es_desc.dec_config;
                    assert_eq!(dc.object_type_indication, 0x40);
                    assert_eq!(dc.stream_type, 5);
                    let dsi = dc.dec_specific.as_ref().expect("DecoderSpecificInfo");
                    assert_eq!(dsi.raw, asc.to_vec());
                    assert_eq!(dsi.profile, 2, "AAC LC");
                    assert_eq!(dsi.chan_conf, 2);
                }
                other => panic!("unexpected sample entries {other:?}"),
            }
            let trex = &moov.mvex.as_ref().unwrap().trex[0];
            assert_eq!(trex.default_sample_flags, SYNC_SAMPLE_FLAGS);
        }
    }

    #[test]
    fn esds_descriptors_nest_with_exact_lengths() {
        let init = init_segment(&aac_track(&[0x11, 0x90], 48_000));
        let mp4a = child(
            &init,
            &find_path(
                &init,
                &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
            ),
            8,
            b"mp4a",
        );
        let esds = child(&init, &mp4a, 28, b"esds");
        let d = &init[esds.body + 4..esds.end];
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x03, 25, 0x00, 0x02, 0x00,                  // ES_Descriptor, ES_ID 2
              0x04, 17, 0x40, 0x15, 0x00, 0x06, 0x00,    // DecoderConfig: AAC, audio, 1536 B
                0, 0, 0, 0, 0, 0, 0, 0,                  // max/avg bitrate unknown
                0x05, 2, 0x11, 0x90,                     // DecoderSpecificInfo = ASC
              0x06, 1, 0x02,                             // SLConfig predefined 2
        ];
        assert_eq!(d, expected);
    }

    #[test]
    fn descriptor_sizes_use_the_expandable_encoding() {
        for (size, expected) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x81, 0x00]),
            (300, &[0x82, 0x2C]),
            (16_384, &[0x81, 0x80, 0x00]),
        ] {
            let mut b = BytesMut::new();
            put_descriptor_size(&mut b, size);
            assert_eq!(&b[..], expected, "size {size}");
        }
        // A long ASC still decodes: the length prefix grows to two bytes.
        let long_asc = vec![0x12; 200];
        let init = init_segment(&aac_track(&long_asc, 44_100));
        let buf = &mut &init[..];
        mp4_atom::Ftyp::decode(buf).unwrap();
        let moov = mp4_atom::Moov::decode(buf).unwrap();
        let mp4_atom::Codec::Mp4a(mp4a) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not mp4a")
        };
        assert_eq!(
            mp4a.esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .unwrap()
                .raw,
            long_asc
        );
    }

    #[test]
    fn high_sample_rates_use_srat() {
        // AAC LC 96 kHz stereo: ASC 0x10 0x10 (sampling index 0).
        let init = init_segment(&aac_track(&[0x10, 0x10], 96_000));
        let stsd = find_path(
            &init,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
        );
        let mp4a = child(&init, &stsd, 8, b"mp4a");
        assert_eq!(
            be32(&init, mp4a.body + 24),
            48_000 << 16,
            "16.16 field halved"
        );
        let srat = child(&init, &mp4a, 28, b"srat");
        assert_eq!(be32(&init, srat.body + 4), 96_000);
        // 48 kHz has no srat.
        let init = init_segment(&aac_track(&[0x11, 0x90], 48_000));
        let stsd = find_path(
            &init,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"],
        );
        let mp4a = child(&init, &stsd, 8, b"mp4a");
        assert_eq!(kinds(&boxes_in(&init, mp4a.body + 28, mp4a.end)), ["esds"]);
    }

    #[test]
    fn anamorphic_video_scales_display_width_and_writes_pasp() {
        // PAL 4:3 DVD: 720x576 with 16:15 pixels displays as 768x576.
        let track = TrackSetup {
            track_id: 1,
            timescale: 90_000,
            codec: CodecSetup::Avc {
                avcc: avcc(SPS_720P, PPS_720P),
                width: 720,
                height: 576,
                sar: (16, 15),
            },
        };
        let init = init_segment(&track);
        let tkhd = find_path(&init, &[b"moov", b"trak", b"tkhd"]);
        assert_eq!(be32(&init, tkhd.end - 8), 768 << 16);
        assert_eq!(be32(&init, tkhd.end - 4), 576 << 16);
        let buf = &mut &init[..];
        mp4_atom::Ftyp::decode(buf).unwrap();
        let moov = mp4_atom::Moov::decode(buf).unwrap();
        let mp4_atom::Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not avc1")
        };
        assert_eq!((avc1.visual.width, avc1.visual.height), (720, 576));
        let pasp = avc1.pasp.as_ref().unwrap();
        assert_eq!((pasp.h_spacing, pasp.v_spacing), (16, 15));
        // Fractional display widths keep their fraction: 3:2 on 641 px = 961.5.
        assert_eq!(fixed_16_16(641 * 3, 2), (961 << 16) | 0x8000);
        // A zero SAR term means square pixels, not a division by zero.
        assert_eq!(normalized_sar((0, 0)), (1, 1));
        assert_eq!(normalized_sar((4, 0)), (1, 1));
    }

    // -- chunks ------------------------------------------------------------------

    fn video_samples() -> Vec<Sample> {
        // I P B B in decode order: offsets 2, 4, -1 (signed), 0 frames of 3000.
        [
            (true, 6000, 900),
            (false, 12000, 300),
            (false, -3000, 120),
            (false, 0, 77),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (keyframe, composition_offset, len))| Sample {
            duration: 3000,
            composition_offset,
            keyframe,
            data: Bytes::from(vec![i as u8 + 1; len]),
        })
        .collect()
    }

    fn video_header() -> ChunkHeader {
        ChunkHeader {
            sequence_number: 7,
            track_id: 1,
            base_media_decode_time: (1u64 << 33) + 5, // needs tfdt version 1
            segment_start: true,
            producer_reference: Some(ProducerReference {
                wall_clock: UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
                media_time: (1u64 << 33) + 5,
            }),
            video: true,
        }
    }

    #[test]
    fn video_chunk_layout_and_data_offset() {
        let samples = video_samples();
        let out = chunk(&video_header(), &samples);
        let top = boxes_in(&out, 0, out.len());
        assert_eq!(kinds(&top), ["styp", "prft", "moof", "mdat"]);
        assert_eq!(&out[top[0].body..top[0].end], b"msdh\0\0\0\0msdhcmfscmff");

        let moof = &top[2];
        let moof_children = boxes_in(&out, moof.body, moof.end);
        assert_eq!(kinds(&moof_children), ["mfhd", "traf"]);
        assert_eq!(be32(&out, moof_children[0].body + 4), 7);
        let traf = boxes_in(&out, moof_children[1].body, moof_children[1].end);
        assert_eq!(kinds(&traf), ["tfhd", "tfdt", "trun"]);
        assert_eq!(be32(&out, traf[0].body), TFHD_DEFAULT_BASE_IS_MOOF);
        assert_eq!(be32(&out, traf[0].body + 4), 1);
        assert_eq!(out[traf[1].body], 1, "tfdt version 1");
        assert_eq!(
            &out[traf[1].body + 4..traf[1].end],
            &((1u64 << 33) + 5).to_be_bytes()
        );

        let trun = &traf[2];
        assert_eq!(
            be32(&out, trun.body),
            0x0100_0F01,
            "trun v1, all per-sample fields"
        );
        assert_eq!(be32(&out, trun.body + 4), 4);
        let data_offset = be32(&out, trun.body + 8) as usize;
        assert_eq!(
            moof.start + data_offset,
            top[3].body,
            "data offset -> mdat payload"
        );
        assert_eq!(data_offset, (moof.end - moof.start) + 8);

        // Per-sample entries and bytes, walking the mdat with the sizes.
        let mut at = moof.start + data_offset;
        for (i, s) in samples.iter().enumerate() {
            let e = trun.body + 12 + i * 16;
            assert_eq!(be32(&out, e), 3000);
            let size = be32(&out, e + 4) as usize;
            assert_eq!(size, s.data.len());
            let flags = be32(&out, e + 8);
            assert_eq!(flags, if s.keyframe { 0x0200_0000 } else { 0x0101_0000 });
            assert_eq!(be32(&out, e + 12) as i32, s.composition_offset);
            assert_eq!(&out[at..at + size], &s.data[..]);
            at += size;
        }
        assert_eq!(at, out.len());
    }

    #[test]
    fn video_chunk_decodes_with_mp4_atom() {
        let samples = video_samples();
        let out = chunk(&video_header(), &samples);
        let buf = &mut &out[..];
        let styp = mp4_atom::Styp::decode(buf).unwrap();
        assert_eq!(styp.major_brand, FourCC::new(b"msdh"));
        let prft = mp4_atom::Prft::decode(buf).unwrap();
        assert_eq!(prft.reference_track_id, 1);
        assert_eq!(prft.media_time, (1u64 << 33) + 5);
        assert_eq!(prft.utc_time_semantics, mp4_atom::ReferenceTime::Input);
        let moof = mp4_atom::Moof::decode(buf).unwrap();
        let mdat = mp4_atom::Mdat::decode(buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(
            traf.tfdt.as_ref().unwrap().base_media_decode_time,
            (1 << 33) + 5
        );
        let trun = &traf.trun[0];
        let entries: Vec<_> = trun.samples.iter().collect();
        let offsets: Vec<_> = entries.iter().map(|e| e.cts.unwrap()).collect();
        assert_eq!(offsets, [6000, 12000, -3000, 0]);
        assert_eq!(entries[0].flags, Some(SYNC_SAMPLE_FLAGS));
        assert_eq!(entries[1].flags, Some(NON_SYNC_SAMPLE_FLAGS));
        let payload: Vec<u8> = samples.iter().flat_map(|s| s.data.to_vec()).collect();
        assert_eq!(mdat.data, payload);
    }

    #[test]
    fn audio_chunk_uses_tfhd_default_flags_and_trun_v0() {
        let samples: Vec<Sample> = (0..3)
            .map(|i| Sample {
                duration: 1024,
                composition_offset: 0,
                keyframe: true,
                data: Bytes::from(vec![0xA0 + i; 10 + i as usize]),
            })
            .collect();
        let header = ChunkHeader {
            sequence_number: 1,
            track_id: 2,
            base_media_decode_time: 0,
            segment_start: false,
            producer_reference: None,
            video: false,
        };
        let out = chunk(&header, &samples);
        let top = boxes_in(&out, 0, out.len());
        assert_eq!(kinds(&top), ["moof", "mdat"]);
        let tfhd = find_path(&out, &[b"moof", b"traf", b"tfhd"]);
        assert_eq!(be32(&out, tfhd.body), TFHD_DEFAULT_BASE_IS_MOOF | 0x20);
        assert_eq!(be32(&out, tfhd.body + 8), SYNC_SAMPLE_FLAGS);
        let trun = find_path(&out, &[b"moof", b"traf", b"trun"]);
        assert_eq!(be32(&out, trun.body), 0x0000_0301);
        assert_eq!(trun.end - trun.body, 12 + 3 * 8);
        assert_eq!(
            be32(&out, trun.body + 8) as usize,
            top[1].body - top[0].start
        );

        let buf = &mut &out[..];
        let moof = mp4_atom::Moof::decode(buf).unwrap();
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.track_id, 2);
        assert_eq!(traf.tfhd.default_sample_flags, Some(SYNC_SAMPLE_FLAGS));
        let sizes: Vec<_> = traf.trun[0]
            .samples
            .iter()
            .map(|e| e.size.unwrap())
            .collect();
        assert_eq!(sizes, [10, 11, 12]);
    }

    #[test]
    fn empty_chunk_is_still_well_formed() {
        let header = ChunkHeader {
            producer_reference: None,
            ..video_header()
        };
        let out = chunk(&header, &[]);
        let top = boxes_in(&out, 0, out.len());
        assert_eq!(kinds(&top), ["styp", "moof", "mdat"]);
        assert_eq!(top[2].end - top[2].start, 8);
    }

    #[test]
    fn prft_is_version_1_with_ntp_time() {
        let out = chunk(&video_header(), &video_samples());
        let prft = find_path(&out, &[b"prft"]);
        assert_eq!(prft.end - prft.start, 32);
        assert_eq!(be32(&out, prft.body), 0x0100_0000, "version 1, flags 0");
        assert_eq!(be32(&out, prft.body + 4), 1, "reference_track_ID");
        // 1_700_000_000.5 s after 1970 = 3_908_988_800 s after 1900, half a second.
        assert_eq!(be32(&out, prft.body + 8), 3_908_988_800);
        assert_eq!(be32(&out, prft.body + 12), 0x8000_0000);
    }

    #[test]
    fn ntp_timestamps() {
        assert_eq!(ntp_timestamp(UNIX_EPOCH), 2_208_988_800 << 32);
        assert_eq!(
            ntp_timestamp(UNIX_EPOCH + Duration::from_millis(250)),
            2_208_988_800 << 32 | 0x4000_0000
        );
        // Before 1970: 0.75 s before the Unix epoch.
        assert_eq!(
            ntp_timestamp(UNIX_EPOCH - Duration::from_millis(750)),
            2_208_988_799 << 32 | 0x4000_0000
        );
        // The NTP era rolls over on 2036-02-07T06:28:16Z: seconds wrap to 0.
        let era1 = UNIX_EPOCH + Duration::from_secs((1 << 32) - 2_208_988_800);
        assert_eq!(ntp_timestamp(era1), 0);
        // Before 1900: 0.
        assert_eq!(
            ntp_timestamp(UNIX_EPOCH - Duration::from_secs(2_208_988_801)),
            0
        );
    }

    #[test]
    fn oversized_boxes_switch_to_largesize() {
        let mut b = BytesMut::new();
        write_box_compact_up_to(&mut b, b"free", 11, |b| b.put_slice(&[1, 2, 3]));
        assert_eq!(&b[..], &[0, 0, 0, 11, b'f', b'r', b'e', b'e', 1, 2, 3]);
        let mut b = BytesMut::from(&b"prefix"[..]);
        write_box_compact_up_to(&mut b, b"free", 10, |b| b.put_slice(&[1, 2, 3]));
        assert_eq!(
            &b[..],
            &[
                b'p', b'r', b'e', b'f', b'i', b'x', 0, 0, 0, 1, b'f', b'r', b'e', b'e', 0, 0, 0, 0,
                0, 0, 0, 19, 1, 2, 3
            ]
        );
        assert_eq!(boxes_in(&b, 6, b.len())[0].body, 22);
    }

    #[test]
    fn mdat_switches_to_largesize_past_4_gib() {
        let compact_max = u64::from(u32::MAX) - 8;
        assert_eq!(mdat_header_len(compact_max), 8);
        assert_eq!(mdat_header_len(compact_max + 1), 16);
        let mut b = BytesMut::new();
        put_mdat_header(&mut b, compact_max);
        assert_eq!(&b[..], &[0xFF, 0xFF, 0xFF, 0xFF, b'm', b'd', b'a', b't']);
        let mut b = BytesMut::new();
        put_mdat_header(&mut b, 5 << 30);
        let mut expected = vec![0, 0, 0, 1, b'm', b'd', b'a', b't'];
        expected.extend_from_slice(&((5u64 << 30) + 16).to_be_bytes());
        assert_eq!(&b[..], &expected[..]);
    }

    // -- end to end: real encoders in, ffprobe out --------------------------------

    /// Runs a tool with whitespace-separated `args` and then `file`, and returns
    /// its stdout, or `None` when the tool is not installed.
    fn run_tool(name: &str, args: &str, file: Option<&Path>) -> Option<String> {
        let mut command = Command::new(name);
        command.args(args.split_whitespace());
        if let Some(file) = file {
            command.arg(file);
        }
        let out = match command.output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("{name}: {e}"),
        };
        assert!(
            out.status.success(),
            "{name} {args} {file:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8(out.stdout).unwrap())
    }

    fn tools_present() -> bool {
        let ok = run_tool("ffmpeg", "-version", None).is_some()
            && run_tool("ffprobe", "-version", None).is_some();
        if !ok {
            eprintln!("SKIPPED: ffmpeg/ffprobe not found on PATH; end-to-end CMAF check not run");
        }
        ok
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ladder-cmaf-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A video access unit from an FLV tag (Adobe FLV spec v10.1, annex E.4.3).
    struct FlvVideo {
        dts_ms: u32,
        cts_ms: i32,
        keyframe: bool,
        data: Bytes,
    }

    /// Parses an FLV file holding only AVC video: the avcC and the access units.
    fn parse_flv_avc(flv: &[u8]) -> (Bytes, Vec<FlvVideo>) {
        assert_eq!(&flv[..3], b"FLV");
        let mut pos = be32(flv, 5) as usize + 4; // header, PreviousTagSize0
        let mut avcc = None;
        let mut frames = Vec::new();
        while pos + 11 <= flv.len() {
            let tag_type = flv[pos];
            let size = (be32(flv, pos) & 0x00FF_FFFF) as usize;
            let ts = (be32(flv, pos + 4) >> 8) | (u32::from(flv[pos + 7]) << 24);
            let data = &flv[pos + 11..pos + 11 + size];
            pos += 11 + size + 4;
            if tag_type != 9 {
                continue; // script data
            }
            assert_eq!(data[0] & 0x0F, 7, "AVC");
            let cts = ((be32(data, 1) & 0x00FF_FFFF) << 8) as i32 >> 8; // SI24
            match data[1] {
                0 => avcc = Some(Bytes::copy_from_slice(&data[5..])),
                1 => frames.push(FlvVideo {
                    dts_ms: ts,
                    cts_ms: cts,
                    keyframe: data[0] >> 4 == 1,
                    data: Bytes::copy_from_slice(&data[5..]),
                }),
                _ => {}
            }
        }
        (avcc.expect("AVC sequence header"), frames)
    }

    /// Parses ADTS (ISO/IEC 14496-3 §1.A.2): the AudioSpecificConfig of the
    /// stream and the raw frames without their headers.
    fn parse_adts(adts: &[u8]) -> ([u8; 2], u32, Vec<Bytes>) {
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        let mut pos = 0;
        let mut frames = Vec::new();
        let mut asc = None;
        while pos + 7 <= adts.len() {
            let h = &adts[pos..];
            assert_eq!((h[0], h[1] & 0xF6), (0xFF, 0xF0), "ADTS sync at {pos}");
            let protection_absent = h[1] & 1 == 1;
            let object_type = (h[2] >> 6) + 1;
            let rate_index = (h[2] >> 2) & 0x0F;
            let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
            let len = ((usize::from(h[3]) & 3) << 11)
                | (usize::from(h[4]) << 3)
                | (usize::from(h[5]) >> 5);
            let header = if protection_absent { 7 } else { 9 };
            asc.get_or_insert({
                let v: u16 = u16::from(object_type) << 11
                    | u16::from(rate_index) << 7
                    | u16::from(channels) << 3;
                (v.to_be_bytes(), RATES[rate_index as usize])
            });
            frames.push(Bytes::copy_from_slice(&h[header..len]));
            pos += len;
        }
        let (asc, rate) = asc.expect("ADTS frames");
        (asc, rate, frames)
    }

    /// Splits samples into `segments` segments of `chunks_per_segment` chunks each
    /// and serialises init + chunks into one file, as a player would append them.
    fn package(
        track: &TrackSetup,
        video: bool,
        dts: &[u64],
        samples: &[Sample],
        segment_starts: &[usize],
        chunks_per_segment: usize,
    ) -> Vec<u8> {
        let mut file = init_segment(track).to_vec();
        let mut sequence_number = 1;
        for (s, &start) in segment_starts.iter().enumerate() {
            let end = segment_starts.get(s + 1).copied().unwrap_or(samples.len());
            let per_chunk = (end - start).div_ceil(chunks_per_segment);
            for (c, first) in (start..end).step_by(per_chunk).enumerate() {
                let last = (first + per_chunk).min(end);
                let header = ChunkHeader {
                    sequence_number,
                    track_id: track.track_id,
                    base_media_decode_time: dts[first],
                    segment_start: c == 0,
                    producer_reference: Some(ProducerReference {
                        wall_clock: SystemTime::now(),
                        media_time: dts[first],
                    }),
                    video,
                };
                file.extend_from_slice(&chunk(&header, &samples[first..last]));
                sequence_number += 1;
            }
            assert_eq!(
                sequence_number - 1,
                (s as u32 + 1) * chunks_per_segment as u32
            );
        }
        file
    }

    struct Probed {
        stream: Vec<(String, String)>,
        /// (pts, dts, keyframe) per packet. Packet durations are not compared:
        /// ffmpeg's parsers replace them (from the SPS timing, or N/A for the
        /// first AAC frame); the stream duration and the DTS steps are checked.
        packets: Vec<(i64, i64, bool)>,
        decoded_frames: usize,
    }

    fn probe(path: &Path) -> Probed {
        const STREAM_ENTRIES: &str = "stream=codec_name,profile,width,height,sample_rate,\
             channels,time_base,duration,nb_read_frames";
        let stream = run_tool(
            "ffprobe",
            &format!("-v error -count_frames -show_entries {STREAM_ENTRIES} -of default=nw=1"),
            Some(path),
        )
        .unwrap();
        let stream: Vec<(String, String)> = stream
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let packets = run_tool(
            "ffprobe",
            "-v error -show_entries packet=pts,dts,flags -of csv=p=0",
            Some(path),
        )
        .unwrap();
        let packets = packets
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert_eq!(f.len(), 3, "packet line {l:?}");
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].starts_with('K'),
                )
            })
            .collect();
        // Decoding everything must be silent: no decoder or demuxer complaints.
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "ffmpeg decode errors"
        );
        let decoded_frames = stream
            .iter()
            .find(|(k, _)| k == "nb_read_frames")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        Probed {
            stream,
            packets,
            decoded_frames,
        }
    }

    fn field<'a>(p: &'a Probed, key: &str) -> &'a str {
        p.stream
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("ffprobe printed no {key}: {:?}", p.stream))
    }

    fn assert_duration(p: &Probed, seconds: f64) {
        let probed: f64 = field(p, "duration").parse().unwrap();
        assert!(
            (probed - seconds).abs() < 1e-5,
            "stream duration {probed}, fed {seconds}"
        );
    }

    #[test]
    fn ffprobe_accepts_h264_with_b_frames() {
        check_h264("video", false);
    }

    /// The `cmf2` style: offsets shifted so the first frame presents at its decode
    /// time, which makes the offsets of B-frames negative (`trun` version 1).
    #[test]
    fn ffprobe_accepts_h264_with_negative_composition_offsets() {
        check_h264("video-negative", true);
    }

    fn check_h264(name: &str, negative_offsets: bool) {
        if !tools_present() {
            return;
        }
        let dir = scratch_dir(name);
        let flv = dir.join("in.flv");
        // 120 frames, a keyframe every 60 (two segments), two B-frames.
        run_tool(
            "ffmpeg",
            "-v error -y -f lavfi -i testsrc2=size=640x360:rate=30 -frames:v 120 \
             -c:v libx264 -profile:v high -bf 2 -g 60 -keyint_min 60 -sc_threshold 0 \
             -pix_fmt yuv420p -f flv",
            Some(&flv),
        )
        .unwrap();
        let (avcc, frames) = parse_flv_avc(&std::fs::read(&flv).unwrap());
        assert_eq!(frames.len(), 120);
        assert!(
            frames.iter().any(|f| f.cts_ms > 0),
            "the stream has B-frames"
        );

        // 90 kHz media time from FLV milliseconds.
        let dts: Vec<u64> = frames.iter().map(|f| u64::from(f.dts_ms) * 90).collect();
        let shift = if negative_offsets {
            frames[0].cts_ms * 90
        } else {
            0
        };
        let samples: Vec<Sample> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| Sample {
                duration: match dts.get(i + 1) {
                    Some(next) => (next - dts[i]) as u32,
                    None => 3000,
                },
                composition_offset: f.cts_ms * 90 - shift,
                keyframe: f.keyframe,
                data: f.data.clone(),
            })
            .collect();
        let segment_starts: Vec<usize> =
            (0..frames.len()).filter(|&i| frames[i].keyframe).collect();
        assert_eq!(segment_starts, [0, 60]);

        let track = TrackSetup {
            track_id: 1,
            timescale: 90_000,
            codec: CodecSetup::Avc {
                avcc,
                width: 640,
                height: 360,
                sar: (1, 1),
            },
        };
        let file = package(&track, true, &dts, &samples, &segment_starts, 4);
        assert_eq!(
            samples.iter().any(|s| s.composition_offset < 0),
            negative_offsets
        );
        // 2 segments x 4 chunks: 2 styp, 8 moof.
        let top = kinds(&boxes_in(&file, 0, file.len()));
        assert_eq!(top.iter().filter(|k| *k == "styp").count(), 2);
        assert_eq!(top.iter().filter(|k| *k == "moof").count(), 8);
        let path = dir.join("track.mp4");
        std::fs::write(&path, &file).unwrap();

        let p = probe(&path);
        assert_eq!(field(&p, "codec_name"), "h264");
        assert_eq!(field(&p, "profile"), "High");
        assert_eq!((field(&p, "width"), field(&p, "height")), ("640", "360"));
        assert_eq!(field(&p, "time_base"), "1/90000");
        assert_eq!(p.decoded_frames, 120);
        assert_eq!(p.packets.len(), 120);
        // ffmpeg's mov demuxer keeps pts >= dts: with negative offsets in a
        // fragmented file it adds the largest negative offset to every pts
        // (`dts_shift`) instead of honouring them as written. Browsers' MSE
        // parsers take the offsets as written.
        let ffmpeg_dts_shift = -samples
            .iter()
            .map(|s| i64::from(s.composition_offset))
            .min()
            .unwrap()
            .min(0);
        for (i, (&(pts, dts_probed, key), s)) in p.packets.iter().zip(&samples).enumerate() {
            assert_eq!(dts_probed, dts[i] as i64, "dts of packet {i}");
            assert_eq!(
                pts,
                dts[i] as i64 + i64::from(s.composition_offset) + ffmpeg_dts_shift,
                "pts of packet {i}"
            );
            assert_eq!(key, s.keyframe, "keyframe flag of packet {i}");
        }
        assert!(
            p.packets.windows(2).all(|w| w[0].1 < w[1].1),
            "monotonic dts"
        );
        for &start in &segment_starts {
            assert!(p.packets[start].2, "segment start {start} is a keyframe");
        }
        // Sum of the trun durations: last DTS + last duration.
        assert_duration(&p, (dts[119] + 3000) as f64 / 90_000.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ffprobe_accepts_aac() {
        if !tools_present() {
            return;
        }
        let dir = scratch_dir("audio");
        let adts = dir.join("in.aac");
        run_tool(
            "ffmpeg",
            "-v error -y -f lavfi -i sine=frequency=440:sample_rate=48000 -t 4 -ac 2 \
             -c:a aac -b:a 128k -f adts",
            Some(&adts),
        )
        .unwrap();
        let (asc, rate, frames) = parse_adts(&std::fs::read(&adts).unwrap());
        assert_eq!((asc, rate), ([0x11, 0x90], 48_000), "LC, 48 kHz, stereo");
        let n = frames.len();
        assert!(n > 180, "{n} frames");

        let dts: Vec<u64> = (0..n as u64).map(|i| i * 1024).collect();
        let samples: Vec<Sample> = frames
            .into_iter()
            .map(|data| Sample {
                duration: 1024,
                composition_offset: 0,
                keyframe: true,
                data,
            })
            .collect();
        let track = aac_track(&asc, rate);
        let file = package(&track, false, &dts, &samples, &[0, n / 2], 4);
        let path = dir.join("audio.mp4");
        std::fs::write(&path, &file).unwrap();

        let p = probe(&path);
        assert_eq!(field(&p, "codec_name"), "aac");
        assert_eq!(field(&p, "profile"), "LC");
        assert_eq!(field(&p, "sample_rate"), "48000");
        assert_eq!(field(&p, "channels"), "2");
        assert_eq!(p.decoded_frames, n);
        assert_eq!(p.packets.len(), n);
        for (i, &(pts, dts_probed, key)) in p.packets.iter().enumerate() {
            assert_eq!(
                (pts, dts_probed),
                (dts[i] as i64, dts[i] as i64),
                "packet {i}"
            );
            assert!(key, "audio packet {i} is a sync sample");
        }
        assert_duration(&p, (n * 1024) as f64 / 48_000.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
