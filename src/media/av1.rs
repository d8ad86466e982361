//! AV1 in ISOBMFF/CMAF: OBUs, the sequence header, the `av1C` record, samples.
//!
//! - OBUs are the AV1 bitstream's units (AV1 Bitstream & Decoding Process
//!   Specification v1.0.0 with errata, §5.3: `obu_header`, `obu_size` as
//!   `leb128` §4.10.5), in the low-overhead bitstream format (§5.2).
//! - The sequence header OBU is §5.5 (`sequence_header_obu`, `timing_info`
//!   §5.5.3, `decoder_model_info` §5.5.4, `operating_parameters_info` §5.5.5,
//!   `color_config` §5.5.2); semantics §6.4. Only what a packager needs is kept.
//! - The first bits of a frame header (`uncompressed_header`, §5.9.2) tell
//!   whether a sample starts with a shown key frame.
//! - The `AV1CodecConfigurationRecord` (the `av1C` payload) and the sample
//!   format are AV1-ISOBMFF v1.3.0 §2.3.3 and §2.4: marker/version `0x81`, the
//!   sequence header's profile, first level and tier, color config bits, no
//!   `initial_presentation_delay`, then `configOBUs` (the sequence header OBU
//!   with `obu_has_size_field = 1`). Samples carry no temporal delimiter,
//!   padding or redundant frame header OBUs ("SHOULD NOT be used"), and a sync
//!   sample starts with a shown key frame preceded by a sequence header.
//! - The codec string is AV1-ISOBMFF's "Codecs Parameter String" annex:
//!   `av01.P.LLT.DD` (profile, two-digit `seq_level_idx[0]`, tier `M`/`H`,
//!   two-digit bit depth); the optional colour fields are not written.
//!
//! Today the bytes come from our own encoder (`pipeline::cpu::av1`), but the
//! parsers are written as for network input: every read is checked, nothing
//! allocates from a length field, and bad data is an error, never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::avc::{BitReader, MAX_FRAME_RATE};
use super::{VideoCodec, VideoConfig};

/// `obu_type` of a sequence header OBU (§6.2.2, Table "OBU types").
pub const OBU_SEQUENCE_HEADER: u8 = 1;
/// `obu_type` of a temporal delimiter OBU.
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
/// `obu_type` of a frame header OBU.
pub const OBU_FRAME_HEADER: u8 = 3;
/// `obu_type` of a tile group OBU.
pub const OBU_TILE_GROUP: u8 = 4;
/// `obu_type` of a metadata OBU.
pub const OBU_METADATA: u8 = 5;
/// `obu_type` of a frame OBU (frame header and tile group in one).
pub const OBU_FRAME: u8 = 6;
/// `obu_type` of a redundant frame header OBU.
pub const OBU_REDUNDANT_FRAME_HEADER: u8 = 7;
/// `obu_type` of a tile list OBU (large-scale tile decoding only).
pub const OBU_TILE_LIST: u8 = 8;
/// `obu_type` of a padding OBU.
pub const OBU_PADDING: u8 = 15;

/// `frame_type` of a key frame (§6.8.2).
pub const KEY_FRAME: u8 = 0;

/// Largest frame width or height accepted from a sequence header. The field
/// is up to 16 bits wide (65536); AV1's largest level (6.3) allows 16384 x
/// 8704. Buffers downstream are sized from these numbers.
pub const MAX_DIMENSION: u32 = 16_384;

/// Most bytes of a `leb128` value (§4.10.5: "i < 8").
const LEB128_MAX_BYTES: usize = 8;

/// `seq_level_idx` meaning "no level constraint" (§A.3: level 31, the
/// maximum parameters).
pub const LEVEL_UNCONSTRAINED: u8 = 31;

/// Errors in OBU data, a sequence header or an `av1C` record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObuError {
    #[error("AV1 OBU header is truncated ({remaining} bytes left)")]
    HeaderTruncated { remaining: usize },
    #[error("AV1 OBU has obu_forbidden_bit set (not an OBU, or corrupt data)")]
    ForbiddenBit,
    #[error("AV1 OBU size (leb128) is malformed or above 2^32 - 1")]
    BadLeb128,
    #[error("AV1 OBU of {declared} bytes runs past the end of the data ({remaining} bytes left)")]
    SizeOverrun { declared: u64, remaining: usize },
    #[error("expected a sequence header OBU (type 1), found OBU type {0}")]
    NotSequenceHeader(u8),
    #[error("AV1 sequence header is truncated (while reading {0})")]
    SequenceHeaderTruncated(&'static str),
    #[error("AV1 sequence header field {field} has unsupported value {value}")]
    SequenceHeaderValue { field: &'static str, value: u32 },
    #[error("AV1 configuration record is truncated ({0} bytes; the fixed part is 4)")]
    RecordTruncated(usize),
    #[error(
        "AV1 configuration record starts with 0x{0:02x}; marker 1 and version 1 (0x81) expected"
    )]
    RecordVersion(u8),
    #[error("AV1 configuration record carries no sequence header OBU first in configOBUs")]
    NoSequenceHeader,
    #[error(
        "AV1 configuration record field {field} is {record}, its sequence header says {sequence}"
    )]
    RecordMismatch {
        field: &'static str,
        record: u8,
        sequence: u8,
    },
    #[error("AV1 sample holds a tile list OBU, which ISOBMFF samples must not use")]
    TileList,
}

// ---------------------------------------------------------------------------
// OBUs (§5.3)
// ---------------------------------------------------------------------------

/// One OBU in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    /// `obu_type` (4 bits).
    pub obu_type: u8,
    /// The whole OBU: header, extension, size field (if any) and payload.
    pub bytes: &'a [u8],
    /// The payload (`obu_size` bytes).
    pub payload: &'a [u8],
    /// `obu_has_size_field`: without it the OBU runs to the end of the data.
    pub has_size_field: bool,
}

/// Iterator over the OBUs of a buffer; see [`obus`].
#[derive(Debug, Clone)]
pub struct Obus<'a> {
    rest: &'a [u8],
    done: bool,
}

/// The OBUs in `data`, in order. An OBU without `obu_has_size_field` takes
/// the rest of the data (AV1-ISOBMFF §2.4 allows that for the last OBU of a
/// sample). After an error the iterator ends.
pub fn obus(data: &[u8]) -> Obus<'_> {
    Obus {
        rest: data,
        done: false,
    }
}

impl<'a> Iterator for Obus<'a> {
    type Item = Result<Obu<'a>, ObuError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        match split_obu(self.rest) {
            Ok((obu, rest)) => {
                self.rest = rest;
                Some(Ok(obu))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The first OBU of `data` and what follows it.
fn split_obu(data: &[u8]) -> Result<(Obu<'_>, &[u8]), ObuError> {
    let first = *data
        .first()
        .ok_or(ObuError::HeaderTruncated { remaining: 0 })?;
    if first & 0x80 != 0 {
        return Err(ObuError::ForbiddenBit);
    }
    let obu_type = (first >> 3) & 0x0F;
    let extension = first & 0x04 != 0;
    let has_size_field = first & 0x02 != 0;
    let header_len = usize::from(extension).saturating_add(1);
    let truncated = || ObuError::HeaderTruncated {
        remaining: data.len(),
    };
    let after_header = data.get(header_len..).ok_or_else(truncated)?;
    let (payload_start, payload_len) = if has_size_field {
        let (size, n) = leb128(after_header)?;
        let start = header_len.saturating_add(n);
        let remaining = data.len().saturating_sub(start);
        match usize::try_from(size) {
            Ok(len) if len <= remaining => (start, len),
            _ => {
                return Err(ObuError::SizeOverrun {
                    declared: size,
                    remaining,
                })
            }
        }
    } else {
        (header_len, after_header.len())
    };
    // (end <= data.len(): the payload's length was checked against it)
    let end = payload_start.saturating_add(payload_len);
    let (bytes, rest) = data.split_at_checked(end).ok_or_else(truncated)?;
    let payload = bytes.get(payload_start..).ok_or_else(truncated)?;
    Ok((
        Obu {
            obu_type,
            bytes,
            payload,
            has_size_field,
        },
        rest,
    ))
}

/// A `leb128` value (§4.10.5) and the bytes it took.
fn leb128(data: &[u8]) -> Result<(u64, usize), ObuError> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().take(LEB128_MAX_BYTES).enumerate() {
        // (i < LEB128_MAX_BYTES = 8: shifts of 0..=49)
        value |= u64::from(byte & 0x7F).wrapping_shl((i as u32).saturating_mul(7));
        if byte & 0x80 == 0 {
            // §4.10.5: a conforming value fits 32 bits.
            if value > u64::from(u32::MAX) {
                return Err(ObuError::BadLeb128);
            }
            return Ok((value, i.saturating_add(1)));
        }
    }
    Err(ObuError::BadLeb128)
}

/// `value` as `leb128`, in the fewest bytes.
fn put_leb128(buf: &mut BytesMut, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

// ---------------------------------------------------------------------------
// Sequence header (§5.5)
// ---------------------------------------------------------------------------

/// The sequence header fields a packager needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceHeader {
    /// `seq_profile`: 0 Main, 1 High, 2 Professional.
    pub seq_profile: u8,
    pub still_picture: bool,
    pub reduced_still_picture_header: bool,
    /// `seq_level_idx[0]`: level X.Y is `(X - 2) * 4 + Y`; 31 unconstrained.
    pub seq_level_idx_0: u8,
    /// `seq_tier[0]`: 0 Main, 1 High (only signalled above level 3.3).
    pub seq_tier_0: u8,
    /// `max_frame_width_minus_1 + 1` and `max_frame_height_minus_1 + 1`.
    pub max_frame_width: u32,
    pub max_frame_height: u32,
    /// `timing_info` when present: (`num_units_in_display_tick`,
    /// `time_scale`, `num_ticks_per_picture_minus_1 + 1` when
    /// `equal_picture_interval`).
    pub timing: Option<(u32, u32, Option<u64>)>,
    pub high_bitdepth: bool,
    /// `twelve_bit` (0 when not coded).
    pub twelve_bit: bool,
    /// `BitDepth`: 8, 10 or 12.
    pub bit_depth: u8,
    pub mono_chrome: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    /// `chroma_sample_position` (0 when not coded).
    pub chroma_sample_position: u8,
    pub color_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
    /// `color_range`: full range.
    pub color_range: bool,
    pub film_grain_params_present: bool,
}

/// `color_primaries` BT.709, `transfer_characteristics` sRGB and
/// `matrix_coefficients` identity (§6.4.2): the sRGB triple.
const CP_BT_709: u8 = 1;
const TC_SRGB: u8 = 13;
const MC_IDENTITY: u8 = 0;
/// "Unspecified" for each of the three colour fields.
const COLOR_UNSPECIFIED: u8 = 2;

struct SeqReader<'a>(BitReader<'a>);

impl SeqReader<'_> {
    fn bits(&mut self, n: u32, what: &'static str) -> Result<u32, ObuError> {
        self.0
            .bits(n)
            .ok_or(ObuError::SequenceHeaderTruncated(what))
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, ObuError> {
        self.0.bit().ok_or(ObuError::SequenceHeaderTruncated(what))
    }

    /// `n` bits that fit a byte (n <= 8).
    fn byte(&mut self, n: u32, what: &'static str) -> Result<u8, ObuError> {
        Ok(u8::try_from(self.bits(n.min(8), what)?).unwrap_or(u8::MAX))
    }

    /// `uvlc()` (§4.10.3).
    fn uvlc(&mut self, what: &'static str) -> Result<u64, ObuError> {
        let mut leading_zeros = 0u32;
        while !self.flag(what)? {
            leading_zeros = leading_zeros.saturating_add(1);
            if leading_zeros >= 32 {
                // The spec reads on and returns 2^32 - 1; no encoder writes it.
                return Err(ObuError::SequenceHeaderValue {
                    field: what,
                    value: leading_zeros,
                });
            }
        }
        let value = self.bits(leading_zeros, what)?;
        // (leading_zeros < 32: exact)
        Ok(u64::from(value)
            .saturating_add(1u64.wrapping_shl(leading_zeros))
            .saturating_sub(1))
    }
}

impl SequenceHeader {
    /// Parse a sequence header OBU (the whole OBU, header included).
    pub fn from_obu(obu: &[u8]) -> Result<SequenceHeader, ObuError> {
        let (obu, _) = split_obu(obu)?;
        if obu.obu_type != OBU_SEQUENCE_HEADER {
            return Err(ObuError::NotSequenceHeader(obu.obu_type));
        }
        SequenceHeader::parse(obu.payload)
    }

    /// Parse `sequence_header_obu()` (§5.5.1) from an OBU payload.
    pub fn parse(payload: &[u8]) -> Result<SequenceHeader, ObuError> {
        let mut r = SeqReader(BitReader::new(payload));
        let seq_profile = r.byte(3, "seq_profile")?;
        if seq_profile > 2 {
            return Err(ObuError::SequenceHeaderValue {
                field: "seq_profile",
                value: u32::from(seq_profile),
            });
        }
        let still_picture = r.flag("still_picture")?;
        let reduced_still_picture_header = r.flag("reduced_still_picture_header")?;
        let mut seq_level_idx_0 = 0;
        let mut seq_tier_0 = 0;
        let mut timing = None;
        if reduced_still_picture_header {
            seq_level_idx_0 = r.byte(5, "seq_level_idx")?;
        } else {
            let mut decoder_model_info_present = false;
            let mut buffer_delay_length = 0;
            if r.flag("timing_info_present_flag")? {
                // timing_info() §5.5.3
                let num_units = r.bits(32, "num_units_in_display_tick")?;
                let time_scale = r.bits(32, "time_scale")?;
                let ticks = if r.flag("equal_picture_interval")? {
                    Some(r.uvlc("num_ticks_per_picture_minus_1")?.saturating_add(1))
                } else {
                    None
                };
                timing = Some((num_units, time_scale, ticks));
                decoder_model_info_present = r.flag("decoder_model_info_present_flag")?;
                if decoder_model_info_present {
                    // decoder_model_info() §5.5.4
                    buffer_delay_length =
                        r.bits(5, "buffer_delay_length_minus_1")?.saturating_add(1);
                    r.bits(32, "num_units_in_decoding_tick")?;
                    r.bits(5, "buffer_removal_time_length_minus_1")?;
                    r.bits(5, "frame_presentation_time_length_minus_1")?;
                }
            }
            let initial_display_delay_present = r.flag("initial_display_delay_present_flag")?;
            let operating_points = r.bits(5, "operating_points_cnt_minus_1")?.saturating_add(1);
            for i in 0..operating_points {
                r.bits(12, "operating_point_idc")?;
                let level = r.byte(5, "seq_level_idx")?;
                let tier = if level > 7 { r.byte(1, "seq_tier")? } else { 0 };
                if i == 0 {
                    (seq_level_idx_0, seq_tier_0) = (level, tier);
                }
                if decoder_model_info_present && r.flag("decoder_model_present_for_this_op")? {
                    // operating_parameters_info() §5.5.5
                    r.bits(buffer_delay_length, "decoder_buffer_delay")?;
                    r.bits(buffer_delay_length, "encoder_buffer_delay")?;
                    r.flag("low_delay_mode_flag")?;
                }
                if initial_display_delay_present
                    && r.flag("initial_display_delay_present_for_this_op")?
                {
                    r.bits(4, "initial_display_delay_minus_1")?;
                }
            }
        }
        let width_bits = r.bits(4, "frame_width_bits_minus_1")?.saturating_add(1);
        let height_bits = r.bits(4, "frame_height_bits_minus_1")?.saturating_add(1);
        let max_frame_width = r
            .bits(width_bits, "max_frame_width_minus_1")?
            .saturating_add(1);
        let max_frame_height = r
            .bits(height_bits, "max_frame_height_minus_1")?
            .saturating_add(1);
        for (field, value) in [
            ("max_frame_width", max_frame_width),
            ("max_frame_height", max_frame_height),
        ] {
            if value > MAX_DIMENSION {
                return Err(ObuError::SequenceHeaderValue { field, value });
            }
        }
        let frame_id_numbers_present =
            !reduced_still_picture_header && r.flag("frame_id_numbers_present_flag")?;
        if frame_id_numbers_present {
            r.bits(4, "delta_frame_id_length_minus_2")?;
            r.bits(3, "additional_frame_id_length_minus_1")?;
        }
        r.flag("use_128x128_superblock")?;
        r.flag("enable_filter_intra")?;
        r.flag("enable_intra_edge_filter")?;
        if !reduced_still_picture_header {
            r.flag("enable_interintra_compound")?;
            r.flag("enable_masked_compound")?;
            r.flag("enable_warped_motion")?;
            r.flag("enable_dual_filter")?;
            let enable_order_hint = r.flag("enable_order_hint")?;
            if enable_order_hint {
                r.flag("enable_jnt_comp")?;
                r.flag("enable_ref_frame_mvs")?;
            }
            let force_screen_content_tools = if r.flag("seq_choose_screen_content_tools")? {
                2
            } else {
                u32::from(r.flag("seq_force_screen_content_tools")?)
            };
            if force_screen_content_tools > 0 && !r.flag("seq_choose_integer_mv")? {
                r.flag("seq_force_integer_mv")?;
            }
            if enable_order_hint {
                r.bits(3, "order_hint_bits_minus_1")?;
            }
        }
        r.flag("enable_superres")?;
        r.flag("enable_cdef")?;
        r.flag("enable_restoration")?;

        // color_config() §5.5.2
        let high_bitdepth = r.flag("high_bitdepth")?;
        let twelve_bit = seq_profile == 2 && high_bitdepth && r.flag("twelve_bit")?;
        let bit_depth = match (high_bitdepth, twelve_bit) {
            (false, _) => 8,
            (true, false) => 10,
            (true, true) => 12,
        };
        let mono_chrome = seq_profile != 1 && r.flag("mono_chrome")?;
        let (mut color_primaries, mut transfer_characteristics, mut matrix_coefficients) =
            (COLOR_UNSPECIFIED, COLOR_UNSPECIFIED, COLOR_UNSPECIFIED);
        if r.flag("color_description_present_flag")? {
            color_primaries = r.byte(8, "color_primaries")?;
            transfer_characteristics = r.byte(8, "transfer_characteristics")?;
            matrix_coefficients = r.byte(8, "matrix_coefficients")?;
        }
        let (color_range, subsampling_x, subsampling_y, mut chroma_sample_position);
        chroma_sample_position = 0;
        if mono_chrome {
            color_range = r.flag("color_range")?;
            (subsampling_x, subsampling_y) = (true, true);
        } else if color_primaries == CP_BT_709
            && transfer_characteristics == TC_SRGB
            && matrix_coefficients == MC_IDENTITY
        {
            color_range = true;
            (subsampling_x, subsampling_y) = (false, false);
        } else {
            color_range = r.flag("color_range")?;
            (subsampling_x, subsampling_y) = match seq_profile {
                0 => (true, true),
                1 => (false, false),
                _ if bit_depth == 12 => {
                    let x = r.flag("subsampling_x")?;
                    (x, x && r.flag("subsampling_y")?)
                }
                _ => (true, false),
            };
            if subsampling_x && subsampling_y {
                chroma_sample_position = r.byte(2, "chroma_sample_position")?;
            }
        }
        if !mono_chrome {
            r.flag("separate_uv_delta_q")?;
        }
        let film_grain_params_present = r.flag("film_grain_params_present")?;
        Ok(SequenceHeader {
            seq_profile,
            still_picture,
            reduced_still_picture_header,
            seq_level_idx_0,
            seq_tier_0,
            max_frame_width,
            max_frame_height,
            timing,
            high_bitdepth,
            twelve_bit,
            bit_depth,
            mono_chrome,
            subsampling_x,
            subsampling_y,
            chroma_sample_position,
            color_primaries,
            transfer_characteristics,
            matrix_coefficients,
            color_range,
            film_grain_params_present,
        })
    }

    /// The `av01.P.LLT.DD` codec string.
    pub fn codec_string(&self) -> String {
        codec_string(
            self.seq_profile,
            self.seq_level_idx_0,
            self.seq_tier_0,
            self.bit_depth,
        )
    }

    /// Frames per second from `timing_info` with `equal_picture_interval`,
    /// when present and sane (at most [`MAX_FRAME_RATE`]).
    pub fn frame_rate(&self) -> Option<f64> {
        let (num_units, time_scale, ticks) = self.timing?;
        let ticks = ticks?;
        let per_picture = f64::from(num_units) * ticks as f64;
        let fps = f64::from(time_scale) / per_picture;
        (fps.is_finite() && fps > 0.0 && fps <= MAX_FRAME_RATE).then_some(fps)
    }

    /// `chroma_format_idc` in the H.264 sense, for [`VideoConfig`]: 0 mono,
    /// 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub fn chroma_format_idc(&self) -> u8 {
        match (self.mono_chrome, self.subsampling_x, self.subsampling_y) {
            (true, _, _) => 0,
            (false, true, true) => 1,
            (false, true, false) => 2,
            _ => 3,
        }
    }
}

/// The `av01.P.LLT.DD` codec string (AV1-ISOBMFF, "Codecs Parameter
/// String"), e.g. `av01.0.04M.08` for Main profile, level 3.0, Main tier,
/// 8-bit.
pub fn codec_string(profile: u8, level_idx: u8, tier: u8, bit_depth: u8) -> String {
    let tier = if tier == 0 { 'M' } else { 'H' };
    format!("av01.{profile}.{level_idx:02}{tier}.{bit_depth:02}")
}

// ---------------------------------------------------------------------------
// AV1CodecConfigurationRecord (AV1-ISOBMFF §2.3.3)
// ---------------------------------------------------------------------------

/// The `av1C` payload for a sequence header OBU: the four fixed bytes from
/// its fields, then the OBU itself as `configOBUs` (rewritten with
/// `obu_has_size_field = 1` if it had none, as §2.3.3 requires).
pub fn build_av1c(sequence_header_obu: &[u8]) -> Result<Bytes, ObuError> {
    let (obu, _) = split_obu(sequence_header_obu)?;
    if obu.obu_type != OBU_SEQUENCE_HEADER {
        return Err(ObuError::NotSequenceHeader(obu.obu_type));
    }
    let seq = SequenceHeader::parse(obu.payload)?;
    let mut b = BytesMut::with_capacity(obu.bytes.len().saturating_add(4 + 8));
    b.put_u8(0x81); // marker 1, version 1
    b.put_u8(seq.seq_profile << 5 | seq.seq_level_idx_0);
    b.put_u8(
        seq.seq_tier_0 << 7
            | u8::from(seq.high_bitdepth) << 6
            | u8::from(seq.twelve_bit) << 5
            | u8::from(seq.mono_chrome) << 4
            | u8::from(seq.subsampling_x) << 3
            | u8::from(seq.subsampling_y) << 2
            | seq.chroma_sample_position,
    );
    // reserved 3 bits, initial_presentation_delay_present 0, reserved 4 bits.
    b.put_u8(0);
    if obu.has_size_field {
        b.put_slice(obu.bytes);
    } else {
        let header_len = obu.bytes.len().saturating_sub(obu.payload.len());
        let (&first, header_rest) = obu
            .bytes
            .get(..header_len)
            .and_then(<[u8]>::split_first)
            .ok_or(ObuError::HeaderTruncated { remaining: 0 })?;
        b.put_u8(first | 0x02);
        b.put_slice(header_rest);
        put_leb128(&mut b, obu.payload.len() as u64);
        b.put_slice(obu.payload);
    }
    Ok(b.freeze())
}

/// A parsed `av1C` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    /// The sequence header OBU of `configOBUs`, whole.
    pub sequence_header_obu: Bytes,
    pub sequence_header: SequenceHeader,
    /// `initial_presentation_delay_minus_one + 1`, when present.
    pub initial_presentation_delay: Option<u8>,
}

impl Av1Config {
    /// Parse an `av1C` payload; its fixed fields must agree with the
    /// sequence header OBU, which must come first in `configOBUs`.
    pub fn parse(record: &Bytes) -> Result<Av1Config, ObuError> {
        let fixed: [u8; 4] = record
            .get(..4)
            .and_then(|f| f.try_into().ok())
            .ok_or(ObuError::RecordTruncated(record.len()))?;
        if fixed[0] != 0x81 {
            return Err(ObuError::RecordVersion(fixed[0]));
        }
        let config_obus = record.get(4..).unwrap_or_default();
        let (obu, _) = match split_obu(config_obus) {
            Ok(found) if found.0.obu_type == OBU_SEQUENCE_HEADER => found,
            Ok(_) | Err(ObuError::HeaderTruncated { remaining: 0 }) => {
                return Err(ObuError::NoSequenceHeader)
            }
            Err(e) => return Err(e),
        };
        let seq = SequenceHeader::parse(obu.payload)?;
        let checks = [
            ("seq_profile", fixed[1] >> 5, seq.seq_profile),
            ("seq_level_idx_0", fixed[1] & 0x1F, seq.seq_level_idx_0),
            ("seq_tier_0", fixed[2] >> 7, seq.seq_tier_0),
            (
                "high_bitdepth",
                fixed[2] >> 6 & 1,
                u8::from(seq.high_bitdepth),
            ),
            ("twelve_bit", fixed[2] >> 5 & 1, u8::from(seq.twelve_bit)),
            ("monochrome", fixed[2] >> 4 & 1, u8::from(seq.mono_chrome)),
            (
                "chroma_subsampling_x",
                fixed[2] >> 3 & 1,
                u8::from(seq.subsampling_x),
            ),
            (
                "chroma_subsampling_y",
                fixed[2] >> 2 & 1,
                u8::from(seq.subsampling_y),
            ),
            (
                "chroma_sample_position",
                fixed[2] & 3,
                seq.chroma_sample_position,
            ),
        ];
        for (field, record, sequence) in checks {
            if record != sequence {
                return Err(ObuError::RecordMismatch {
                    field,
                    record,
                    sequence,
                });
            }
        }
        let initial_presentation_delay =
            (fixed[3] & 0x10 != 0).then_some((fixed[3] & 0x0F).saturating_add(1));
        let start = 4usize;
        Ok(Av1Config {
            // (the OBU is a prefix of record[4..])
            sequence_header_obu: record.slice(start..start.saturating_add(obu.bytes.len())),
            sequence_header: seq,
            initial_presentation_delay,
        })
    }
}

/// The [`VideoConfig`] of an `av1C` payload.
///
/// `width`/`height` are the sequence header's maximum frame size (what the
/// sample entry must carry, AV1-ISOBMFF §2.2.4); `profile_idc` is
/// `seq_profile` and `level_idc` is `seq_level_idx[0]`; `nal_length_size` is
/// 0 because AV1 samples are OBUs that carry their own sizes, not
/// length-prefixed NAL units (0 makes any AVCC walk over them fail at once
/// instead of misreading them); `sample_aspect` is 1:1 (the sequence header
/// has no aspect ratio; render size is per frame).
pub fn video_config(record: Bytes) -> Result<VideoConfig, ObuError> {
    let config = Av1Config::parse(&record)?;
    let seq = &config.sequence_header;
    Ok(VideoConfig {
        codec: VideoCodec::Av1,
        width: seq.max_frame_width,
        height: seq.max_frame_height,
        codec_string: seq.codec_string(),
        nal_length_size: 0,
        frame_rate: seq.frame_rate(),
        profile_idc: seq.seq_profile,
        level_idc: seq.seq_level_idx_0,
        interlaced: false,
        sample_aspect: (1, 1),
        chroma_format_idc: seq.chroma_format_idc(),
        bit_depth_luma: seq.bit_depth,
        bit_depth_chroma: seq.bit_depth,
        record,
    })
}

// ---------------------------------------------------------------------------
// Samples (AV1-ISOBMFF §2.4)
// ---------------------------------------------------------------------------

/// A temporal unit made into an ISOBMFF sample; see [`sample_from_temporal_unit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Sample<'a> {
    /// The sample's OBUs.
    pub data: Bytes,
    /// A Random Access Point (AV1 §7.5, AV1-ISOBMFF §2.4): the first frame
    /// is a shown key frame and a sequence header OBU precedes it. Such a
    /// sample is a sync sample.
    pub random_access_point: bool,
    /// The first sequence header OBU of the temporal unit, whole (kept in
    /// `data` only when the sample is a random access point).
    pub sequence_header_obu: Option<&'a [u8]>,
}

/// `(frame_type, show_frame)` of a frame header OBU payload
/// (`uncompressed_header`, §5.9.2), `None` for `show_existing_frame`.
fn frame_header_start(payload: &[u8], reduced_still_picture_header: bool) -> Option<(u8, bool)> {
    if reduced_still_picture_header {
        return Some((KEY_FRAME, true));
    }
    let mut r = BitReader::new(payload);
    if r.bit()? {
        return None; // show_existing_frame
    }
    let frame_type = u8::try_from(r.bits(2)?).ok()?;
    let show_frame = r.bit()?;
    Some((frame_type, show_frame))
}

/// Make an encoder's temporal unit into an AV1 sample (AV1-ISOBMFF §2.4):
/// temporal delimiter, padding and redundant frame header OBUs are dropped
/// ("SHOULD NOT be used"), and sequence header OBUs are kept only in a random
/// access point, where §2.4 requires one (elsewhere they would add nothing:
/// the `av1C` carries it). Everything else is copied as it is.
///
/// `reduced_still_picture_header` is the sequence's (it changes how frame
/// headers start). Tile list OBUs (which §2.4 forbids) are an error.
pub fn sample_from_temporal_unit(
    tu: &[u8],
    reduced_still_picture_header: bool,
) -> Result<Av1Sample<'_>, ObuError> {
    let mut sequence_header_obu = None;
    let mut first_frame = None;
    let mut sequence_header_first = false;
    let mut keep = 0usize;
    for obu in obus(tu) {
        let obu = obu?;
        match obu.obu_type {
            OBU_TEMPORAL_DELIMITER | OBU_PADDING | OBU_REDUNDANT_FRAME_HEADER => continue,
            OBU_TILE_LIST => return Err(ObuError::TileList),
            OBU_SEQUENCE_HEADER => {
                sequence_header_obu = sequence_header_obu.or(Some(obu.bytes));
            }
            OBU_FRAME_HEADER | OBU_FRAME if first_frame.is_none() => {
                sequence_header_first = sequence_header_obu.is_some();
                first_frame = Some(frame_header_start(
                    obu.payload,
                    reduced_still_picture_header,
                ));
            }
            _ => {}
        }
        keep = keep.saturating_add(obu.bytes.len());
    }
    let random_access_point =
        sequence_header_first && matches!(first_frame, Some(Some((KEY_FRAME, true))));
    let mut data = BytesMut::with_capacity(keep);
    for obu in obus(tu).flatten() {
        let dropped = matches!(
            obu.obu_type,
            OBU_TEMPORAL_DELIMITER | OBU_PADDING | OBU_REDUNDANT_FRAME_HEADER
        ) || (obu.obu_type == OBU_SEQUENCE_HEADER && !random_access_point);
        if !dropped {
            data.put_slice(obu.bytes);
        }
    }
    Ok(Av1Sample {
        data: data.freeze(),
        random_access_point,
        sequence_header_obu,
    })
}

/// Make a publisher's temporal unit (Enhanced RTMP `av01` coded frames) into
/// an AV1 sample, as [`sample_from_temporal_unit`] does for our encoder, with
/// one difference: a temporal unit whose first frame is a shown key frame is
/// a random access point whether or not it carries a sequence header OBU
/// (some publishers send that only in the `av1C` of their sequence start).
/// Such a sample without one gets `config_sequence_header_obu` (the `av1C`'s,
/// with its size field) in front, so that it is a sync sample as AV1-ISOBMFF
/// §2.4 has it.
///
/// Network input: every OBU size is checked; a malformed OBU or a tile list
/// OBU is an error and nothing is returned.
pub fn sample_from_publisher(
    tu: &[u8],
    config_sequence_header_obu: &[u8],
    reduced_still_picture_header: bool,
) -> Result<Av1Sample<'static>, ObuError> {
    let mut has_sequence_header = false;
    let mut first_frame = None;
    let mut keep = 0usize;
    for obu in obus(tu) {
        let obu = obu?;
        match obu.obu_type {
            OBU_TEMPORAL_DELIMITER | OBU_PADDING | OBU_REDUNDANT_FRAME_HEADER => continue,
            OBU_TILE_LIST => return Err(ObuError::TileList),
            OBU_SEQUENCE_HEADER => has_sequence_header = true,
            OBU_FRAME_HEADER | OBU_FRAME if first_frame.is_none() => {
                first_frame = Some(frame_header_start(
                    obu.payload,
                    reduced_still_picture_header,
                ));
            }
            _ => {}
        }
        keep = keep.saturating_add(obu.bytes.len());
    }
    let random_access_point = matches!(first_frame, Some(Some((KEY_FRAME, true))));
    let insert = random_access_point && !has_sequence_header;
    let mut data = BytesMut::with_capacity(keep.saturating_add(config_sequence_header_obu.len()));
    if insert {
        data.put_slice(config_sequence_header_obu);
    }
    for obu in obus(tu).flatten() {
        let dropped = matches!(
            obu.obu_type,
            OBU_TEMPORAL_DELIMITER | OBU_PADDING | OBU_REDUNDANT_FRAME_HEADER
        ) || (obu.obu_type == OBU_SEQUENCE_HEADER && !random_access_point);
        if !dropped {
            data.put_slice(obu.bytes);
        }
    }
    Ok(Av1Sample {
        data: data.freeze(),
        random_access_point,
        sequence_header_obu: None,
    })
}

// ---------------------------------------------------------------------------
// Levels (Annex A.3)
// ---------------------------------------------------------------------------

/// One row of the AV1 level table (Annex A.3, "Levels"): what a decoder of
/// that level handles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// `seq_level_idx`.
    pub seq_level_idx: u8,
    /// `MaxPicSize` (luma samples).
    pub max_pic_size: u64,
    pub max_h_size: u32,
    pub max_v_size: u32,
    /// `MaxDisplayRate` (luma samples per second).
    pub max_display_rate: u64,
    /// `MaxDecodeRate` (luma samples per second).
    pub max_decode_rate: u64,
    /// `MaxHeaderRate` (frame headers per second).
    pub max_header_rate: u32,
    /// Main tier `MaxBitrate`, in Mbit/s.
    pub main_mbps: f64,
    pub max_tiles: u32,
    pub max_tile_cols: u32,
}

/// The defined AV1 levels, lowest first (Annex A.3).
pub const LEVELS: [Level; 14] = {
    // One argument per column of the spec's table, in its order.
    #[allow(clippy::too_many_arguments)]
    const fn l(
        seq_level_idx: u8,
        max_pic_size: u64,
        max_h_size: u32,
        max_v_size: u32,
        max_display_rate: u64,
        max_decode_rate: u64,
        max_header_rate: u32,
        main_mbps: f64,
        max_tiles: u32,
        max_tile_cols: u32,
    ) -> Level {
        Level {
            seq_level_idx,
            max_pic_size,
            max_h_size,
            max_v_size,
            max_display_rate,
            max_decode_rate,
            max_header_rate,
            main_mbps,
            max_tiles,
            max_tile_cols,
        }
    }
    [
        l(0, 147_456, 2048, 1152, 4_423_680, 5_529_600, 150, 1.5, 8, 4),
        l(
            1, 278_784, 2816, 1584, 8_363_520, 10_454_400, 150, 3.0, 8, 4,
        ),
        l(
            4, 665_856, 4352, 2448, 19_975_680, 24_969_600, 150, 6.0, 16, 6,
        ),
        l(
            5, 1_065_024, 5504, 3096, 31_950_720, 39_938_400, 150, 10.0, 16, 6,
        ),
        l(
            8, 2_359_296, 6144, 3456, 70_778_880, 77_856_768, 300, 12.0, 32, 8,
        ),
        l(
            9,
            2_359_296,
            6144,
            3456,
            141_557_760,
            155_713_536,
            300,
            20.0,
            32,
            8,
        ),
        l(
            12,
            8_912_896,
            8192,
            4352,
            267_386_880,
            273_715_200,
            300,
            30.0,
            64,
            8,
        ),
        l(
            13,
            8_912_896,
            8192,
            4352,
            534_773_760,
            547_430_400,
            300,
            40.0,
            64,
            8,
        ),
        l(
            14,
            8_912_896,
            8192,
            4352,
            1_069_547_520,
            1_094_860_800,
            300,
            60.0,
            64,
            8,
        ),
        l(
            15,
            8_912_896,
            8192,
            4352,
            1_069_547_520,
            1_176_502_272,
            300,
            60.0,
            64,
            8,
        ),
        l(
            16,
            35_651_584,
            16384,
            8704,
            1_069_547_520,
            1_176_502_272,
            300,
            60.0,
            128,
            16,
        ),
        l(
            17,
            35_651_584,
            16384,
            8704,
            2_139_095_040,
            2_189_721_600,
            300,
            100.0,
            128,
            16,
        ),
        l(
            18,
            35_651_584,
            16384,
            8704,
            4_278_190_080,
            4_379_443_200,
            300,
            160.0,
            128,
            16,
        ),
        l(
            19,
            35_651_584,
            16384,
            8704,
            4_278_190_080,
            4_706_009_088,
            300,
            160.0,
            128,
            16,
        ),
    ]
};

/// The lowest level (Main tier) whose picture size, display and decode rate
/// (every frame shown, none hidden), header rate and bitrate fit a stream of
/// `width` x `height` at `fps` and `bitrate_kbps`; `None` when none does
/// (then [`LEVEL_UNCONSTRAINED`] is the honest signal).
pub fn level_for(width: u32, height: u32, fps: f64, bitrate_kbps: u32) -> Option<Level> {
    let pic_size = u64::from(width).saturating_mul(u64::from(height));
    let samples_per_sec = pic_size as f64 * fps;
    LEVELS.into_iter().find(|l| {
        pic_size <= l.max_pic_size
            && width <= l.max_h_size
            && height <= l.max_v_size
            && samples_per_sec <= l.max_display_rate as f64
            && samples_per_sec <= l.max_decode_rate as f64
            && fps <= f64::from(l.max_header_rate)
            && f64::from(bitrate_kbps) <= l.main_mbps * 1000.0
    })
}

/// The sequence header OBU rav1e 0.8.1 wrote for a 640x360 rung at 30 fps
/// and 800 kbit/s (speed 10, level 2.1), copied from its output: a fixture
/// for the `av1C` and init segment tests.
#[cfg(test)]
pub(crate) const RAV1E_SEQUENCE_HEADER_360P: &[u8] = &[
    0x0a, 0x0b, 0x00, 0x00, 0x00, 0x0c, 0xc4, 0xff, 0x67, 0x10, 0x85, 0x40, 0x50,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A sequence header OBU for 640x360 8-bit 4:2:0, level 2.1
    /// (seq_level_idx 1), no timing info, written bit by bit from §5.5 with
    /// the choices rav1e 0.8 makes (equal to what it wrote,
    /// [`RAV1E_SEQUENCE_HEADER_360P`]). Bits: profile 0, still 0, reduced 0, timing 0, initial delay 0,
    /// 1 operating point (idc 0, level 1), width bits 10 (639), height bits 9
    /// (359), frame ids 0, sb128 0, filter intra 0, edge filter 1,
    /// interintra 0, masked 0, warped 0, dual 0, order hint 1 (jnt 0,
    /// ref mvs 0), choose screen content 0, force 0, order hint bits 5,
    /// superres 0, cdef 1, restoration 0, color: hbd 0, mono 0, desc 0,
    /// range 0, csp 0, separate uv 1, film grain 0, trailing bits.
    fn sequence_header_360p() -> Vec<u8> {
        let mut bits = String::new();
        let mut put = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(if v >> i & 1 == 1 { '1' } else { '0' });
            }
        };
        put(0, 3); // seq_profile
        put(0, 1); // still_picture
        put(0, 1); // reduced_still_picture_header
        put(0, 1); // timing_info_present_flag
        put(0, 1); // initial_display_delay_present_flag
        put(0, 5); // operating_points_cnt_minus_1
        put(0, 12); // operating_point_idc
        put(1, 5); // seq_level_idx (2.1)
        put(9, 4); // frame_width_bits_minus_1
        put(8, 4); // frame_height_bits_minus_1
        put(639, 10);
        put(359, 9);
        put(0, 1); // frame_id_numbers_present_flag
        put(0, 1); // use_128x128_superblock
        put(0, 1); // enable_filter_intra
        put(1, 1); // enable_intra_edge_filter
        put(0, 4); // interintra, masked, warped, dual filter
        put(1, 1); // enable_order_hint
        put(0, 2); // jnt_comp, ref_frame_mvs
        put(0, 1); // seq_choose_screen_content_tools
        put(0, 1); // seq_force_screen_content_tools
        put(5, 3); // order_hint_bits_minus_1
        put(0, 1); // superres
        put(1, 1); // cdef
        put(0, 1); // restoration (rav1e's speed 10 has no loop restoration)
        put(0, 1); // high_bitdepth
        put(0, 1); // mono_chrome
        put(0, 1); // color_description_present_flag
        put(0, 1); // color_range
        put(0, 2); // chroma_sample_position
        put(1, 1); // separate_uv_delta_q
        put(0, 1); // film_grain_params_present
        put(1, 1); // trailing one bit
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let payload: Vec<u8> = bits
            .as_bytes()
            .chunks(8)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap())
            .collect();
        let mut obu = vec![OBU_SEQUENCE_HEADER << 3 | 0x02, payload.len() as u8];
        obu.extend_from_slice(&payload);
        obu
    }

    #[test]
    fn the_hand_written_sequence_header_is_rav1e_s() {
        assert_eq!(sequence_header_360p(), RAV1E_SEQUENCE_HEADER_360P);
    }

    #[test]
    fn sequence_header_fields() {
        let seq = SequenceHeader::from_obu(&sequence_header_360p()).expect("parses");
        assert_eq!(seq.seq_profile, 0);
        assert_eq!((seq.seq_level_idx_0, seq.seq_tier_0), (1, 0));
        assert_eq!((seq.max_frame_width, seq.max_frame_height), (640, 360));
        assert_eq!(seq.bit_depth, 8);
        assert!(!seq.mono_chrome && seq.subsampling_x && seq.subsampling_y);
        assert_eq!(seq.chroma_format_idc(), 1);
        assert_eq!(seq.timing, None);
        assert_eq!(seq.frame_rate(), None);
        assert_eq!(seq.codec_string(), "av01.0.01M.08");
        assert_eq!(
            (
                seq.color_primaries,
                seq.transfer_characteristics,
                seq.matrix_coefficients
            ),
            (2, 2, 2)
        );
    }

    #[test]
    fn av1c_has_the_fixed_bytes_then_the_obu_and_parses_back() {
        let obu = sequence_header_360p();
        let av1c = build_av1c(&obu).expect("builds");
        // 0x81; profile 0 << 5 | level 1; tier 0, hbd 0, 12b 0, mono 0,
        // ssx 1, ssy 1, csp 0; no initial presentation delay.
        assert_eq!(&av1c[..4], &[0x81, 0x01, 0x0C, 0x00]);
        assert_eq!(&av1c[4..], &obu[..]);
        let config = Av1Config::parse(&av1c).expect("parses");
        assert_eq!(&config.sequence_header_obu[..], &obu[..]);
        assert_eq!(config.initial_presentation_delay, None);
        let vc = video_config(av1c.clone()).expect("video config");
        assert_eq!(vc.codec, VideoCodec::Av1);
        assert_eq!((vc.width, vc.height), (640, 360));
        assert_eq!(vc.codec_string, "av01.0.01M.08");
        assert_eq!((vc.profile_idc, vc.level_idc), (0, 1));
        assert_eq!(vc.nal_length_size, 0);
        assert_eq!(vc.record, av1c);
    }

    #[test]
    fn av1c_adds_the_size_field_when_the_obu_has_none() {
        let obu = sequence_header_360p();
        let mut no_size = vec![obu[0] & !0x02];
        no_size.extend_from_slice(&obu[2..]);
        let av1c = build_av1c(&no_size).expect("builds");
        assert_eq!(&av1c[4..], &obu[..]);
    }

    #[test]
    fn av1c_mismatches_and_bad_records_are_errors() {
        let av1c = build_av1c(&sequence_header_360p()).unwrap();
        let mut wrong_level = av1c.to_vec();
        wrong_level[1] = 0x04;
        assert_eq!(
            Av1Config::parse(&Bytes::from(wrong_level)),
            Err(ObuError::RecordMismatch {
                field: "seq_level_idx_0",
                record: 4,
                sequence: 1
            })
        );
        let mut version = av1c.to_vec();
        version[0] = 0x01;
        assert_eq!(
            Av1Config::parse(&Bytes::from(version)),
            Err(ObuError::RecordVersion(1))
        );
        assert_eq!(
            Av1Config::parse(&Bytes::from_static(&[0x81, 0, 0, 0])),
            Err(ObuError::NoSequenceHeader)
        );
        assert_eq!(
            Av1Config::parse(&Bytes::from_static(&[0x81, 0])),
            Err(ObuError::RecordTruncated(2))
        );
        // A temporal delimiter first is not a sequence header.
        assert_eq!(
            Av1Config::parse(&Bytes::from_static(&[0x81, 0, 0, 0, 0x12, 0x00])),
            Err(ObuError::NoSequenceHeader)
        );
        assert!(matches!(
            build_av1c(&[0x12, 0x00]),
            Err(ObuError::NotSequenceHeader(2))
        ));
    }

    #[test]
    fn codec_strings() {
        assert_eq!(codec_string(0, 4, 0, 8), "av01.0.04M.08");
        assert_eq!(codec_string(0, 8, 0, 8), "av01.0.08M.08");
        assert_eq!(codec_string(1, 13, 1, 10), "av01.1.13H.10");
        assert_eq!(codec_string(0, 31, 0, 8), "av01.0.31M.08");
    }

    #[test]
    fn obu_walk_and_leb128() {
        // TD (no payload), a padding OBU of 3 bytes with a two-byte leb128
        // size (0x83 0x00 = 3), a frame OBU without size field to the end.
        let data = [0x12, 0x00, 0x7A, 0x83, 0x00, 1, 2, 3, 0x30, 0x10, 0xAA];
        let found: Vec<Obu> = obus(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            found.iter().map(|o| o.obu_type).collect::<Vec<_>>(),
            [2, 15, 6]
        );
        assert_eq!(found[1].payload, &[1, 2, 3]);
        assert_eq!(found[2].payload, &[0x10, 0xAA]);
        assert!(!found[2].has_size_field);

        assert_eq!(leb128(&[0x80; 8]), Err(ObuError::BadLeb128));
        assert_eq!(
            leb128(&[0xFF, 0xFF, 0xFF, 0xFF, 0x1F]),
            Err(ObuError::BadLeb128),
            "above 2^32 - 1"
        );
        assert_eq!(
            leb128(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            Ok((0xFFFF_FFFF, 5))
        );
        let mut b = BytesMut::new();
        put_leb128(&mut b, 300);
        assert_eq!(leb128(&b), Ok((300, 2)));

        assert_eq!(
            obus(&[0x12, 0x05, 0]).next(),
            Some(Err(ObuError::SizeOverrun {
                declared: 5,
                remaining: 1
            }))
        );
        assert_eq!(obus(&[0x92]).next(), Some(Err(ObuError::ForbiddenBit)));
        assert_eq!(
            obus(&[0x16]).next(),
            Some(Err(ObuError::HeaderTruncated { remaining: 1 })),
            "extension flag without the extension byte"
        );
    }

    /// A frame OBU whose header starts show_existing_frame 0, frame_type,
    /// show_frame 1.
    fn frame_obu(frame_type: u8) -> Vec<u8> {
        vec![OBU_FRAME << 3 | 0x02, 2, (frame_type << 5) | 0x10, 0xAB]
    }

    #[test]
    fn samples_lose_temporal_delimiters_and_keep_sequence_headers_only_at_key_frames() {
        let seq = sequence_header_360p();
        let td = [0x12, 0x00];
        let mut key_tu = td.to_vec();
        key_tu.extend_from_slice(&seq);
        key_tu.extend_from_slice(&frame_obu(KEY_FRAME));
        let s = sample_from_temporal_unit(&key_tu, false).unwrap();
        assert!(s.random_access_point);
        assert_eq!(s.sequence_header_obu, Some(&seq[..]));
        assert_eq!(&s.data[..], &key_tu[2..]);

        // An inter frame with a (pointless) sequence header: dropped.
        let mut inter_tu = td.to_vec();
        inter_tu.extend_from_slice(&seq);
        inter_tu.extend_from_slice(&frame_obu(1));
        let s = sample_from_temporal_unit(&inter_tu, false).unwrap();
        assert!(!s.random_access_point);
        assert_eq!(&s.data[..], &frame_obu(1)[..]);

        // A key frame without a sequence header before it is no sync sample.
        let mut bare_key = td.to_vec();
        bare_key.extend_from_slice(&frame_obu(KEY_FRAME));
        bare_key.extend_from_slice(&seq);
        let s = sample_from_temporal_unit(&bare_key, false).unwrap();
        assert!(!s.random_access_point);
        assert_eq!(&s.data[..], &frame_obu(KEY_FRAME)[..]);

        // A hidden key frame (show_frame 0) is not a random access point.
        let mut hidden = seq.clone();
        hidden.extend_from_slice(&[OBU_FRAME << 3 | 0x02, 1, 0x00]);
        assert!(
            !sample_from_temporal_unit(&hidden, false)
                .unwrap()
                .random_access_point
        );

        assert_eq!(
            sample_from_temporal_unit(&[OBU_TILE_LIST << 3 | 0x02, 0], false),
            Err(ObuError::TileList)
        );
    }

    #[test]
    fn levels_follow_size_rate_and_bitrate() {
        let idx = |w, h, fps, kbps| level_for(w, h, fps, kbps).map(|l| l.seq_level_idx);
        assert_eq!(idx(640, 360, 30.0, 800), Some(1), "2.1");
        assert_eq!(idx(854, 480, 30.0, 1200), Some(4), "3.0");
        assert_eq!(idx(1280, 720, 30.0, 2500), Some(5), "3.1");
        assert_eq!(idx(1280, 720, 60.0, 4000), Some(8), "4.0");
        assert_eq!(idx(1920, 1080, 30.0, 4500), Some(8), "4.0");
        assert_eq!(idx(1920, 1080, 60.0, 6000), Some(9), "4.1");
        assert_eq!(
            idx(640, 360, 30.0, 4000),
            Some(4),
            "bitrate pushes 2.1 to 3.0"
        );
        assert_eq!(idx(3840, 2160, 60.0, 20000), Some(13), "5.1");
        assert_eq!(idx(640, 360, 200.0, 800), Some(8), "header rate above 150");
        assert_eq!(idx(16384, 16384, 30.0, 800), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parsers_are_total(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = obus(&data).count();
            let _ = SequenceHeader::parse(&data);
            let _ = SequenceHeader::from_obu(&data);
            let _ = build_av1c(&data);
            let _ = Av1Config::parse(&Bytes::from(data.clone()));
            let _ = sample_from_temporal_unit(&data, false);
            let _ = sample_from_temporal_unit(&data, true);
        }

        #[test]
        fn a_corrupted_sequence_header_never_panics(flip in 0usize..200, byte in any::<u8>()) {
            let mut obu = sequence_header_360p();
            let at = flip % obu.len();
            obu[at] = byte;
            let _ = SequenceHeader::from_obu(&obu);
            let _ = build_av1c(&obu).map(|r| Av1Config::parse(&r));
        }
    }
}
