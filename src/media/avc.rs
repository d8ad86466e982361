//! H.264 decoder configuration: the AVCDecoderConfigurationRecord and the SPS.
//!
//! - The record (`avcC` payload) is ISO/IEC 14496-15 §5.3.3.1: version, profile,
//!   compatibility and level bytes, `lengthSizeMinusOne`, then counted, 16-bit
//!   length-prefixed SPS and PPS NAL units (and, for the high profiles, the
//!   chroma format / bit depth trailer, which this module does not trust: the SPS
//!   says the same thing and is authoritative).
//! - The sequence parameter set is ITU-T H.264 §7.3.2.1.1 (semantics §7.4.2.1.1),
//!   with the VUI fields of Annex E.1.1 up to `timing_info`. Emulation prevention
//!   bytes (§7.4.1) are removed first; exp-Golomb codes are §9.1.
//! - The codec string is RFC 6381 §3.3 (`avc1.PPCCLL`).
//!
//! Everything here is fed bytes from the network: every read is checked, no
//! length field is used to allocate, and absurd values are errors rather than
//! panics or huge numbers handed to the packager.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::{VideoCodec, VideoConfig};

/// Largest picture width or height accepted, in pixels. A hostile SPS can claim a
/// picture of 2^32 macroblocks a side; downstream buffers are sized from these
/// numbers, so anything beyond the largest H.264 level (6.2: 8192x4320 and more
/// with odd aspect ratios) by a wide margin is rejected.
pub const MAX_DIMENSION: u32 = 16_384;

/// Cap on `num_ref_frames_in_pic_order_cnt_cycle` (the spec's own range is 0..=255).
/// The count drives a loop of se(v) reads; the cap keeps a hostile SPS from
/// claiming billions of entries.
pub const MAX_POC_CYCLE: u32 = 255;

/// Longest exp-Golomb prefix accepted: 31 leading zeros gives a value up to
/// 2^32 - 2, the largest any H.264 ue(v) syntax element needs. A longer prefix
/// is a corrupt or hostile bitstream (and would overflow a 32-bit decoder).
pub const MAX_EXP_GOLOMB_LEADING_ZEROS: u32 = 31;

/// Largest `max_num_ref_frames` (H.264 §A.3.1: MaxDpbFrames is at most 16).
pub const MAX_REF_FRAMES: u32 = 16;

/// Highest frame rate reported from VUI timing info. `time_scale` and
/// `num_units_in_tick` are arbitrary 32-bit numbers; a publisher claiming two
/// billion frames a second would otherwise hand that to segment-duration and
/// buffer arithmetic downstream. Above this the rate is reported as unknown.
pub const MAX_FRAME_RATE: f64 = 1_000.0;

/// The H.264 NAL unit type of an IDR slice (Table 7-1).
pub const NAL_IDR: u8 = 5;
/// The H.264 NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// The H.264 NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// Errors in an avcC record, an SPS, or length-prefixed NAL unit data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AvcError {
    #[error("AVC decoder configuration record is truncated (while reading {0})")]
    RecordTruncated(&'static str),
    #[error("AVC decoder configuration record has version {0}; only version 1 exists")]
    UnsupportedVersion(u8),
    #[error("NAL unit length size of {0} bytes is invalid (must be 1, 2 or 4)")]
    InvalidLengthSize(u8),
    #[error("AVC decoder configuration record carries no SPS")]
    NoSps,
    #[error("AVC decoder configuration record carries no PPS")]
    NoPps,
    #[error("expected an SPS (NAL type 7), found NAL type {0}")]
    NotSps(u8),
    #[error("H.264 SPS is truncated (while reading {0})")]
    SpsTruncated(&'static str),
    #[error("H.264 SPS has an exp-Golomb code longer than 32 bits (corrupt bitstream)")]
    ExpGolombTooLong,
    #[error("H.264 SPS field {field} has out-of-range value {value}")]
    SpsOutOfRange { field: &'static str, value: i64 },
    #[error("H.264 SPS describes a {width_mbs}x{height_mbs} macroblock picture, larger than {MAX_DIMENSION} pixels a side")]
    PictureTooLarge { width_mbs: u64, height_mbs: u64 },
    #[error("H.264 SPS frame cropping removes the whole picture")]
    CroppingTooLarge,
    #[error("NAL unit length {declared} runs past the end of the frame ({remaining} bytes left)")]
    NalLengthOverrun { declared: usize, remaining: usize },
    #[error("NAL unit length prefix is truncated ({remaining} bytes left, {length_size} needed)")]
    NalPrefixTruncated { remaining: usize, length_size: u8 },
    #[error("zero-length NAL unit in frame")]
    EmptyNalUnit,
}

// ---------------------------------------------------------------------------
// Bit reader (shared with `aac`)
// ---------------------------------------------------------------------------

/// An MSB-first bit reader over a byte slice. Every read is checked: `None`
/// means the data ran out. Callers map `None` to their own error.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Bits not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_mul(8).saturating_sub(self.pos)
    }

    pub(crate) fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        // (pos % 8 <= 7: the shift is 0..=7)
        let bit = byte.wrapping_shr(7u32.saturating_sub((self.pos % 8) as u32)) & 1;
        self.pos = self.pos.saturating_add(1);
        Some(bit == 1)
    }

    /// Read `n` bits (0..=32) as an unsigned number.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 || self.remaining() < n as usize {
            return None;
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        if self.remaining() < n {
            return None;
        }
        self.pos = self.pos.saturating_add(n);
        Some(())
    }
}

/// Exp-Golomb reads (H.264 §9.1) on top of [`BitReader`], with SPS errors.
struct SpsReader<'a> {
    bits: BitReader<'a>,
    /// The field being read, for error messages.
    field: &'static str,
}

impl<'a> SpsReader<'a> {
    fn at(&mut self, field: &'static str) -> &mut Self {
        self.field = field;
        self
    }

    fn u(&mut self, n: u32) -> Result<u32, AvcError> {
        self.bits.bits(n).ok_or(AvcError::SpsTruncated(self.field))
    }

    fn flag(&mut self) -> Result<bool, AvcError> {
        self.bits.bit().ok_or(AvcError::SpsTruncated(self.field))
    }

    /// ue(v): unsigned exp-Golomb, at most [`MAX_EXP_GOLOMB_LEADING_ZEROS`] zeros.
    fn ue(&mut self) -> Result<u32, AvcError> {
        let mut zeros = 0u32;
        while !self.flag()? {
            zeros = zeros.saturating_add(1);
            if zeros > MAX_EXP_GOLOMB_LEADING_ZEROS {
                return Err(AvcError::ExpGolombTooLong);
            }
        }
        let suffix = self.u(zeros)?;
        // zeros <= 31: 2^31 - 1 + (2^31 - 1) = 2^32 - 2 fits in u32.
        Ok(1u64
            .wrapping_shl(zeros)
            .saturating_sub(1)
            .saturating_add(u64::from(suffix)) as u32)
    }

    /// ue(v) that must not exceed `max`.
    fn ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, AvcError> {
        let v = self.at(field).ue()?;
        if v > max {
            return Err(AvcError::SpsOutOfRange {
                field,
                value: i64::from(v),
            });
        }
        Ok(v)
    }

    /// se(v): signed exp-Golomb (§9.1.1).
    fn se(&mut self) -> Result<i64, AvcError> {
        let k = i64::from(self.ue()?);
        // (k < 2^32: neither saturates)
        Ok(if k % 2 == 1 {
            k.saturating_add(1) / 2
        } else {
            0i64.saturating_sub(k / 2)
        })
    }
}

/// Remove emulation prevention bytes (H.264 §7.4.1): in the NAL payload every
/// `00 00 03` stands for `00 00`. The output is never longer than the input.
pub fn nal_to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros.saturating_add(1) } else { 0 };
        out.push(b);
    }
    out
}

// ---------------------------------------------------------------------------
// SPS
// ---------------------------------------------------------------------------

/// Frame cropping offsets as coded (in crop units, not pixels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCrop {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

/// VUI timing info (Annex E.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingInfo {
    pub num_units_in_tick: u32,
    pub time_scale: u32,
    pub fixed_frame_rate: bool,
}

/// VUI colour description (Annex E.2.1, ITU-T H.273 code points).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColourDescription {
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
    pub full_range: bool,
}

/// The SPS fields Ladder uses (H.264 §7.3.2.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// constraint_set0..5 flags and the two reserved bits: the byte after profile_idc.
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub seq_parameter_set_id: u32,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    pub separate_colour_plane: bool,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub log2_max_frame_num: u8,
    pub pic_order_cnt_type: u8,
    /// For pic_order_cnt_type 0.
    pub log2_max_pic_order_cnt_lsb: Option<u8>,
    pub max_num_ref_frames: u32,
    pub pic_width_in_mbs: u32,
    pub pic_height_in_map_units: u32,
    /// frame_mbs_only_flag: false means the stream may be interlaced (field or MBAFF).
    pub frame_mbs_only: bool,
    pub crop: FrameCrop,
    /// Display size after cropping, in pixels.
    pub width: u32,
    pub height: u32,
    /// Sample aspect ratio from the VUI, when signalled and specified.
    pub sample_aspect: Option<(u16, u16)>,
    pub colour: Option<ColourDescription>,
    pub timing: Option<TimingInfo>,
}

/// Profiles whose SPS carries chroma_format_idc, bit depths and scaling lists
/// (§7.3.2.1.1, the `if( profile_idc == 100 || ...)` branch).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Table E-1: sample aspect ratios for aspect_ratio_idc 1..=16.
const SAR_TABLE: [(u16, u16); 16] = [
    (1, 1),
    (12, 11),
    (10, 11),
    (16, 11),
    (40, 33),
    (24, 11),
    (20, 11),
    (32, 11),
    (80, 33),
    (18, 11),
    (15, 11),
    (64, 33),
    (160, 99),
    (4, 3),
    (3, 2),
    (2, 1),
];
const EXTENDED_SAR: u32 = 255;

impl Sps {
    /// Parse an SPS NAL unit (with its one-byte NAL header).
    pub fn parse(nal: &[u8]) -> Result<Sps, AvcError> {
        let header = *nal.first().ok_or(AvcError::SpsTruncated("NAL header"))?;
        if header & 0x1f != NAL_SPS {
            return Err(AvcError::NotSps(header & 0x1f));
        }
        let rbsp = nal_to_rbsp(nal.get(1..).unwrap_or_default());
        let mut r = SpsReader {
            bits: BitReader::new(&rbsp),
            field: "profile_idc",
        };

        let profile_idc = r.at("profile_idc").u(8)? as u8;
        let constraint_flags = r.at("constraint flags").u(8)? as u8;
        let level_idc = r.at("level_idc").u(8)? as u8;
        let seq_parameter_set_id = r.ue_max("seq_parameter_set_id", 31)?;

        let mut chroma_format_idc = 1u8;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8u8;
        let mut bit_depth_chroma = 8u8;
        if has_chroma_info(profile_idc) {
            chroma_format_idc = r.ue_max("chroma_format_idc", 3)? as u8;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.at("separate_colour_plane_flag").flag()?;
            }
            bit_depth_luma = (r.ue_max("bit_depth_luma_minus8", 6)? as u8).saturating_add(8);
            bit_depth_chroma = (r.ue_max("bit_depth_chroma_minus8", 6)? as u8).saturating_add(8);
            r.at("qpprime_y_zero_transform_bypass_flag").flag()?;
            if r.at("seq_scaling_matrix_present_flag").flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.at("seq_scaling_list_present_flag").flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }

        let log2_max_frame_num =
            (r.ue_max("log2_max_frame_num_minus4", 12)? as u8).saturating_add(4);
        let pic_order_cnt_type = r.ue_max("pic_order_cnt_type", 2)? as u8;
        let mut log2_max_pic_order_cnt_lsb = None;
        match pic_order_cnt_type {
            0 => {
                log2_max_pic_order_cnt_lsb = Some(
                    (r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)? as u8).saturating_add(4),
                );
            }
            1 => {
                r.at("delta_pic_order_always_zero_flag").flag()?;
                r.at("offset_for_non_ref_pic").se()?;
                r.at("offset_for_top_to_bottom_field").se()?;
                let cycle = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", MAX_POC_CYCLE)?;
                for _ in 0..cycle {
                    r.at("offset_for_ref_frame").se()?;
                }
            }
            _ => {}
        }
        let max_num_ref_frames = r.ue_max("max_num_ref_frames", MAX_REF_FRAMES)?;
        r.at("gaps_in_frame_num_value_allowed_flag").flag()?;
        // (ue() < 2^32: none of the u64 arithmetic below saturates)
        let pic_width_in_mbs = (r.at("pic_width_in_mbs_minus1").ue()? as u64).saturating_add(1);
        let pic_height_in_map_units =
            (r.at("pic_height_in_map_units_minus1").ue()? as u64).saturating_add(1);
        let frame_mbs_only = r.at("frame_mbs_only_flag").flag()?;
        let frame_height_in_mbs =
            pic_height_in_map_units.saturating_mul(if frame_mbs_only { 1 } else { 2 });
        if pic_width_in_mbs.saturating_mul(16) > u64::from(MAX_DIMENSION)
            || frame_height_in_mbs.saturating_mul(16) > u64::from(MAX_DIMENSION)
        {
            return Err(AvcError::PictureTooLarge {
                width_mbs: pic_width_in_mbs,
                height_mbs: frame_height_in_mbs,
            });
        }
        if !frame_mbs_only {
            r.at("mb_adaptive_frame_field_flag").flag()?;
        }
        r.at("direct_8x8_inference_flag").flag()?;
        let mut crop = FrameCrop::default();
        if r.at("frame_cropping_flag").flag()? {
            let max = MAX_DIMENSION;
            crop.left = r.ue_max("frame_crop_left_offset", max)?;
            crop.right = r.ue_max("frame_crop_right_offset", max)?;
            crop.top = r.ue_max("frame_crop_top_offset", max)?;
            crop.bottom = r.ue_max("frame_crop_bottom_offset", max)?;
        }

        // §7.4.2.1.1: crop units depend on ChromaArrayType and field coding.
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (sub_width_c, sub_height_c): (u64, u64) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let field_factor: u64 = if frame_mbs_only { 1 } else { 2 };
        let (crop_unit_x, crop_unit_y) = if chroma_array_type == 0 {
            (1, field_factor)
        } else {
            (sub_width_c, sub_height_c.saturating_mul(field_factor))
        };
        let coded_width = pic_width_in_mbs.saturating_mul(16);
        let coded_height = frame_height_in_mbs.saturating_mul(16);
        let crop_x =
            crop_unit_x.saturating_mul(u64::from(crop.left).saturating_add(u64::from(crop.right)));
        let crop_y =
            crop_unit_y.saturating_mul(u64::from(crop.top).saturating_add(u64::from(crop.bottom)));
        if crop_x >= coded_width || crop_y >= coded_height {
            return Err(AvcError::CroppingTooLarge);
        }
        // Both fit in u32: coded sizes are at most MAX_DIMENSION.
        let width = coded_width.saturating_sub(crop_x) as u32;
        let height = coded_height.saturating_sub(crop_y) as u32;

        let mut vui = Vui::default();
        if r.at("vui_parameters_present_flag").flag()? {
            // A VUI cut short is common enough in the wild (FFmpeg has a workaround
            // for it) and carries nothing the picture size depends on: keep the
            // fields read before the end and carry on.
            match parse_vui(&mut r, &mut vui) {
                Ok(()) | Err(AvcError::SpsTruncated(_)) => {}
                Err(e) => return Err(e),
            }
        }

        Ok(Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            seq_parameter_set_id,
            chroma_format_idc,
            separate_colour_plane,
            bit_depth_luma,
            bit_depth_chroma,
            log2_max_frame_num,
            pic_order_cnt_type,
            log2_max_pic_order_cnt_lsb,
            max_num_ref_frames,
            pic_width_in_mbs: pic_width_in_mbs as u32,
            pic_height_in_map_units: pic_height_in_map_units as u32,
            frame_mbs_only,
            crop,
            width,
            height,
            sample_aspect: vui.sample_aspect,
            colour: vui.colour,
            timing: vui.timing,
        })
    }

    /// Frame rate from the VUI timing info: `time_scale / (2 * num_units_in_tick)`
    /// (Annex E.2.1; a tick is a field period). `None` when absent, zero, or
    /// above [`MAX_FRAME_RATE`].
    pub fn frame_rate(&self) -> Option<f64> {
        let t = self.timing?;
        if t.num_units_in_tick == 0 || t.time_scale == 0 {
            return None;
        }
        let rate = f64::from(t.time_scale) / (2.0 * f64::from(t.num_units_in_tick));
        (rate <= MAX_FRAME_RATE).then_some(rate)
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// §7.3.2.1.1.1 scaling_list(): read and discard, validating delta_scale.
fn skip_scaling_list(r: &mut SpsReader<'_>, size: usize) -> Result<(), AvcError> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.at("delta_scale").se()?;
            if !(-128..=127).contains(&delta) {
                return Err(AvcError::SpsOutOfRange {
                    field: "delta_scale",
                    value: delta,
                });
            }
            next_scale = last_scale
                .saturating_add(delta)
                .saturating_add(256)
                .rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Vui {
    sample_aspect: Option<(u16, u16)>,
    colour: Option<ColourDescription>,
    timing: Option<TimingInfo>,
}

/// Annex E.1.1, up to and including timing_info (HRD and bitstream restriction
/// are not needed and not read).
fn parse_vui(r: &mut SpsReader<'_>, vui: &mut Vui) -> Result<(), AvcError> {
    if r.at("aspect_ratio_info_present_flag").flag()? {
        let idc = r.at("aspect_ratio_idc").u(8)?;
        vui.sample_aspect = if idc == EXTENDED_SAR {
            let w = r.at("sar_width").u(16)? as u16;
            let h = r.at("sar_height").u(16)? as u16;
            // E.2.1: a zero in either is "unspecified".
            (w != 0 && h != 0).then_some((w, h))
        } else {
            // 0 is unspecified, 17..=254 reserved: both mean "unknown".
            idc.checked_sub(1)
                .and_then(|i| SAR_TABLE.get(i as usize))
                .copied()
        };
    }
    if r.at("overscan_info_present_flag").flag()? {
        r.at("overscan_appropriate_flag").flag()?;
    }
    if r.at("video_signal_type_present_flag").flag()? {
        r.at("video_format").u(3)?;
        let full_range = r.at("video_full_range_flag").flag()?;
        if r.at("colour_description_present_flag").flag()? {
            vui.colour = Some(ColourDescription {
                colour_primaries: r.at("colour_primaries").u(8)? as u8,
                transfer_characteristics: r.at("transfer_characteristics").u(8)? as u8,
                matrix_coefficients: r.at("matrix_coefficients").u(8)? as u8,
                full_range,
            });
        } else {
            // Unspecified primaries/transfer/matrix (H.273 code point 2).
            vui.colour = Some(ColourDescription {
                colour_primaries: 2,
                transfer_characteristics: 2,
                matrix_coefficients: 2,
                full_range,
            });
        }
    }
    if r.at("chroma_loc_info_present_flag").flag()? {
        r.ue_max("chroma_sample_loc_type_top_field", 5)?;
        r.ue_max("chroma_sample_loc_type_bottom_field", 5)?;
    }
    if r.at("timing_info_present_flag").flag()? {
        let num_units_in_tick = r.at("num_units_in_tick").u(32)?;
        let time_scale = r.at("time_scale").u(32)?;
        let fixed_frame_rate = r.at("fixed_frame_rate_flag").flag()?;
        vui.timing = Some(TimingInfo {
            num_units_in_tick,
            time_scale,
            fixed_frame_rate,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// AVCDecoderConfigurationRecord
// ---------------------------------------------------------------------------

/// A parsed AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    pub profile_indication: u8,
    pub profile_compatibility: u8,
    pub level_indication: u8,
    /// lengthSizeMinusOne + 1: 1, 2 or 4.
    pub nal_length_size: u8,
    /// SPS NAL units (with NAL header), slices of the record.
    pub sps: Vec<Bytes>,
    /// PPS NAL units (with NAL header), slices of the record.
    pub pps: Vec<Bytes>,
}

/// A cursor over the record that reports which field ran out.
struct RecordCursor<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl RecordCursor<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, AvcError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(AvcError::RecordTruncated(what))?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, AvcError> {
        Ok(u16::from(self.u8(what)?) << 8 | u16::from(self.u8(what)?))
    }

    /// A 16-bit length then that many bytes, as a zero-copy slice.
    fn nal(&mut self, what: &'static str) -> Result<Bytes, AvcError> {
        let len = usize::from(self.u16(what)?);
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .ok_or(AvcError::RecordTruncated(what))?;
        let nal = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(nal)
    }
}

impl AvcDecoderConfig {
    /// Parse a record. The SPS/PPS counts are checked against the bytes present,
    /// one entry at a time, so a count larger than the data is an error.
    pub fn parse(record: &Bytes) -> Result<Self, AvcError> {
        let mut c = RecordCursor {
            data: record,
            pos: 0,
        };
        let version = c.u8("configurationVersion")?;
        if version != 1 {
            return Err(AvcError::UnsupportedVersion(version));
        }
        let profile_indication = c.u8("AVCProfileIndication")?;
        let profile_compatibility = c.u8("profile_compatibility")?;
        let level_indication = c.u8("AVCLevelIndication")?;
        let nal_length_size = (c.u8("lengthSizeMinusOne")? & 0x03).saturating_add(1);
        if nal_length_size == 3 {
            return Err(AvcError::InvalidLengthSize(3));
        }
        let num_sps = c.u8("numOfSequenceParameterSets")? & 0x1f;
        let mut sps = Vec::new();
        for _ in 0..num_sps {
            sps.push(c.nal("sequenceParameterSetNALUnit")?);
        }
        let num_pps = c.u8("numOfPictureParameterSets")?;
        let mut pps = Vec::new();
        for _ in 0..num_pps {
            pps.push(c.nal("pictureParameterSetNALUnit")?);
        }
        if sps.is_empty() {
            return Err(AvcError::NoSps);
        }
        if pps.is_empty() {
            return Err(AvcError::NoPps);
        }
        // The high-profile trailer (chroma_format, bit depths, SPS extensions) is
        // optional in practice (many encoders omit it) and duplicates the SPS.
        Ok(AvcDecoderConfig {
            profile_indication,
            profile_compatibility,
            level_indication,
            nal_length_size,
            sps,
            pps,
        })
    }
}

/// Parse an avcC record and its first SPS into the configuration the packager uses.
pub fn video_config(record: Bytes) -> Result<VideoConfig, AvcError> {
    let avcc = AvcDecoderConfig::parse(&record)?;
    let first = avcc.sps.first().ok_or(AvcError::NoSps)?;
    let sps = Sps::parse(first)?;
    Ok(VideoConfig {
        codec: VideoCodec::H264,
        width: sps.width,
        height: sps.height,
        codec_string: sps.codec_string(),
        nal_length_size: avcc.nal_length_size,
        frame_rate: sps.frame_rate(),
        profile_idc: sps.profile_idc,
        level_idc: sps.level_idc,
        interlaced: !sps.frame_mbs_only,
        sample_aspect: sps
            .sample_aspect
            .map_or((1, 1), |(w, h)| (u32::from(w), u32::from(h))),
        chroma_format_idc: sps.chroma_format_idc,
        bit_depth_luma: sps.bit_depth_luma,
        bit_depth_chroma: sps.bit_depth_chroma,
        record,
    })
}

// ---------------------------------------------------------------------------
// Length-prefixed NAL units
// ---------------------------------------------------------------------------

/// Iterator over length-prefixed NAL units; see [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    rest: &'a [u8],
    length_size: u8,
    done: bool,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], AvcError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let result = self.next_nal();
        if result.is_err() {
            // Nothing after a bad length can be trusted.
            self.done = true;
        }
        Some(result)
    }
}

impl<'a> NalUnits<'a> {
    fn next_nal(&mut self) -> Result<&'a [u8], AvcError> {
        let size = usize::from(self.length_size);
        if !matches!(size, 1 | 2 | 4) {
            return Err(AvcError::InvalidLengthSize(self.length_size));
        }
        let (prefix, rest) =
            self.rest
                .split_at_checked(size)
                .ok_or(AvcError::NalPrefixTruncated {
                    remaining: self.rest.len(),
                    length_size: self.length_size,
                })?;
        let declared = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if declared == 0 {
            return Err(AvcError::EmptyNalUnit);
        }
        let (nal, rest) = rest
            .split_at_checked(declared)
            .ok_or(AvcError::NalLengthOverrun {
                declared,
                remaining: rest.len(),
            })?;
        self.rest = rest;
        Ok(nal)
    }
}

/// Iterate over NAL units in AVCC form (each prefixed by its length in
/// `length_size` bytes, big-endian). Every length is checked against the data;
/// the first error ends the iteration. A zero length, or a `length_size` other
/// than 1, 2 or 4, is an error.
pub fn nal_units(data: &[u8], length_size: u8) -> NalUnits<'_> {
    NalUnits {
        rest: data,
        length_size,
        done: false,
    }
}

/// The NAL unit type (low 5 bits of the header byte), `None` for an empty slice.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Build an AVCDecoderConfigurationRecord with a 4-byte NALU length size.
///
/// Profile, compatibility and level come from the first SPS; for the high
/// profiles the chroma format / bit depth trailer is appended when the SPS
/// parses. The format holds at most 31 SPS and 255 PPS of at most 65,535 bytes
/// each: entries beyond those limits are left out (the inputs come from our own
/// encoders, never from the network).
pub fn build_avcc(sps: &[&[u8]], pps: &[&[u8]]) -> Bytes {
    let fits = |n: &&&[u8]| n.len() <= usize::from(u16::MAX);
    let sps: Vec<&[u8]> = sps.iter().filter(fits).take(31).copied().collect();
    let pps: Vec<&[u8]> = pps.iter().filter(fits).take(255).copied().collect();
    debug_assert!(
        !sps.is_empty() && !pps.is_empty(),
        "avcC needs an SPS and a PPS"
    );

    let first = sps.first().copied().unwrap_or_default();
    let header = |i: usize| first.get(i).copied().unwrap_or(0);
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_u8(header(1));
    out.put_u8(header(2));
    out.put_u8(header(3));
    out.put_u8(0xfc | 3); // reserved bits, lengthSizeMinusOne = 3
    out.put_u8(0xe0 | sps.len() as u8);
    for s in &sps {
        out.put_u16(s.len() as u16);
        out.put_slice(s);
    }
    out.put_u8(pps.len() as u8);
    for p in &pps {
        out.put_u16(p.len() as u16);
        out.put_slice(p);
    }
    if let Ok(parsed) = Sps::parse(first) {
        if matches!(parsed.profile_idc, 100 | 110 | 122 | 144) {
            out.put_u8(0xfc | parsed.chroma_format_idc);
            out.put_u8(0xf8 | parsed.bit_depth_luma.saturating_sub(8));
            out.put_u8(0xf8 | parsed.bit_depth_chroma.saturating_sub(8));
            out.put_u8(0); // numOfSequenceParameterSetExt
        }
    }
    out.freeze()
}

/// The decoder configuration of an encoder's output from its one SPS and PPS
/// (what x264 and NVENC hand back): an avcC built with [`build_avcc`] and
/// parsed back with [`video_config`]; `fps` stands in for the frame rate when
/// the SPS signals none (or a variable one).
pub fn config_from_parameter_sets(
    sps: &[u8],
    pps: &[u8],
    fps: f64,
) -> Result<VideoConfig, AvcError> {
    if nal_type(sps) != Some(NAL_SPS) {
        return Err(AvcError::NotSps(nal_type(sps).unwrap_or(0)));
    }
    if nal_type(pps) != Some(NAL_PPS) {
        return Err(AvcError::NoPps);
    }
    let mut config = video_config(build_avcc(&[sps], &[pps]))?;
    config.frame_rate = config.frame_rate.or(Some(fps));
    Ok(config)
}

// ---------------------------------------------------------------------------
// Annex B byte streams
// ---------------------------------------------------------------------------

/// Iterator over the NAL units of an Annex B byte stream; see [`annexb_nal_units`].
#[derive(Debug, Clone)]
pub struct AnnexBNalUnits<'a> {
    rest: &'a [u8],
}

/// Offset of the first three-byte start code prefix `00 00 01` in `data`.
fn start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1])
}

impl<'a> Iterator for AnnexBNalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let begin = start_code(self.rest)?.saturating_add(3);
            let body = self.rest.get(begin..)?;
            let end = start_code(body).unwrap_or(body.len());
            let (mut nal, rest) = body.split_at_checked(end)?;
            self.rest = rest;
            // The zero byte of a four-byte start code, and trailing_zero_8bits
            // (§B.1.1), belong to no NAL unit: a NAL unit never ends in 0x00.
            while let [head @ .., 0] = nal {
                nal = head;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// The NAL units of an Annex B byte stream (ITU-T H.264 Annex B, what NVENC
/// writes): each follows a `00 00 01` start code (or `00 00 00 01`), and
/// zero bytes before the next start code are dropped. Bytes before the first
/// start code are not a NAL unit and are skipped.
pub fn annexb_nal_units(data: &[u8]) -> AnnexBNalUnits<'_> {
    AnnexBNalUnits { rest: data }
}

/// AVCC (4-byte big-endian lengths) from an Annex B access unit, keeping the
/// NAL units whose type `keep` accepts. The input comes from our own encoder,
/// so a NAL unit of 4 GiB or more (impossible there) is left out.
pub fn annexb_to_avcc(data: &[u8], keep: impl Fn(u8) -> bool) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len().saturating_add(16));
    for nal in annexb_nal_units(data) {
        let Ok(len) = u32::try_from(nal.len()) else {
            continue;
        };
        if nal_type(nal).is_some_and(&keep) {
            out.put_u32(len);
            out.put_slice(nal);
        }
    }
    out.freeze()
}

/// Annex B (four-byte start codes) from AVCC data with `length_size`-byte
/// lengths: for writing an elementary stream a decoder or ffprobe reads.
pub fn avcc_to_annexb(data: &[u8], length_size: u8) -> Result<Vec<u8>, AvcError> {
    let mut out = Vec::with_capacity(data.len().saturating_add(16));
    for nal in nal_units(data, length_size) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal?);
    }
    Ok(out)
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

    // SPS/PPS pulled from libx264 output (ffmpeg 5.1, testsrc2), see the test names.
    const SPS_HIGH_720P30: &str = "6764001facd9405005bb0110000003001000000303c0f1831960";
    const PPS_HIGH_720P30: &str = "68ebe3cb22c0";
    const SPS_BASELINE_360P25: &str = "6742c01ed900a02ff97011000003000100000300320f162e48";
    const PPS_BASELINE_360P25: &str = "68cb83cb20";
    const SPS_MAIN_1080P30: &str = "674d4028eca03c0113f2e022000003000200000300781e30632c";
    const SPS_HIGH422_720P: &str = "677a001fbcd9405005bb0110000003001000000303c0f1831960";
    const SPS_HIGH10_720P: &str = "676e001fa6cd9405005bb0110000030001000003003c0f183196";
    /// 720x576 interlaced (x264 interlaced=1), SAR 16:15, 25 fps.
    const SPS_SD_576I: &str = "6764001eacd940b424dff8008000788000000300800000190f8a14cb";
    /// The avcC FFmpeg's FLV muxer sent for High 720p30 (tag body minus the 5-byte
    /// AVC header), including the high-profile trailer `fdf8f800`.
    const AVCC_HIGH_720P30: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800";

    #[test]
    fn high_720p30_record() {
        let cfg = video_config(Bytes::from(hex(AVCC_HIGH_720P30))).unwrap();
        assert_eq!((cfg.width, cfg.height), (1280, 720));
        assert_eq!(cfg.codec_string, "avc1.64001f");
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.frame_rate, Some(30.0));
        assert_eq!((cfg.profile_idc, cfg.level_idc), (100, 31));
        assert!(!cfg.interlaced);
        assert_eq!(cfg.sample_aspect, (1, 1));
        assert_eq!(
            (
                cfg.chroma_format_idc,
                cfg.bit_depth_luma,
                cfg.bit_depth_chroma
            ),
            (1, 8, 8)
        );
    }

    #[test]
    fn high_720p30_sps_details() {
        let sps = Sps::parse(&hex(SPS_HIGH_720P30)).unwrap();
        assert_eq!(sps.pic_width_in_mbs, 80);
        assert_eq!(sps.pic_height_in_map_units, 45);
        assert_eq!(sps.crop, FrameCrop::default());
        assert_eq!(sps.pic_order_cnt_type, 0);
        assert_eq!(sps.max_num_ref_frames, 4);
        assert_eq!(sps.sample_aspect, Some((1, 1)));
        assert_eq!(
            sps.timing,
            Some(TimingInfo {
                num_units_in_tick: 1,
                time_scale: 60,
                fixed_frame_rate: false
            })
        );
    }

    #[test]
    fn baseline_360p25() {
        let sps = Sps::parse(&hex(SPS_BASELINE_360P25)).unwrap();
        assert_eq!((sps.width, sps.height), (640, 360));
        // 360 is not a multiple of 16: coded 368, cropped by 4 units of 2 rows.
        assert_eq!(sps.pic_height_in_map_units, 23);
        assert_eq!(sps.crop.bottom, 4);
        assert_eq!(sps.codec_string(), "avc1.42c01e");
        assert_eq!(sps.frame_rate(), Some(25.0));
        assert_eq!(sps.pic_order_cnt_type, 2);
        assert_eq!(sps.max_num_ref_frames, 3);
    }

    #[test]
    fn main_1080p_cropping() {
        let sps = Sps::parse(&hex(SPS_MAIN_1080P30)).unwrap();
        assert_eq!(sps.pic_height_in_map_units * 16, 1088);
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.codec_string(), "avc1.4d4028");
        assert_eq!(sps.frame_rate(), Some(30.0));
    }

    #[test]
    fn high422_chroma_format() {
        let sps = Sps::parse(&hex(SPS_HIGH422_720P)).unwrap();
        assert_eq!(sps.profile_idc, 122);
        assert_eq!(sps.chroma_format_idc, 2);
        assert_eq!(sps.bit_depth_luma, 8);
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.codec_string(), "avc1.7a001f");
    }

    #[test]
    fn high10_bit_depth() {
        let sps = Sps::parse(&hex(SPS_HIGH10_720P)).unwrap();
        assert_eq!(sps.profile_idc, 110);
        assert_eq!(sps.chroma_format_idc, 1);
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.frame_rate(), Some(30.0));
    }

    #[test]
    fn interlaced_576i_with_sar() {
        let sps = Sps::parse(&hex(SPS_SD_576I)).unwrap();
        assert!(!sps.frame_mbs_only);
        // 18 map units (field MB pairs) are 36 MB rows.
        assert_eq!(sps.pic_height_in_map_units, 18);
        assert_eq!((sps.width, sps.height), (720, 576));
        assert_eq!(sps.sample_aspect, Some((16, 15)));
        assert_eq!(sps.frame_rate(), Some(25.0));
    }

    /// Writes an SPS bit by bit, for values libx264 will not produce.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        bits: usize,
    }
    impl BitWriter {
        fn bit(&mut self, b: bool) {
            if self.bits % 8 == 0 {
                self.bytes.push(0);
            }
            if b {
                *self.bytes.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
        fn u(&mut self, n: u32, v: u64) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u64) {
            let x = v + 1;
            let len = 64 - x.leading_zeros();
            self.u(len - 1, 0);
            self.u(len, x);
        }
        fn se(&mut self, v: i64) {
            self.ue(if v > 0 {
                2 * v as u64 - 1
            } else {
                (-2 * v) as u64
            });
        }
        /// Trailing bits, then NAL header and emulation prevention.
        fn nal(mut self) -> Vec<u8> {
            self.bit(true);
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    struct SpsSpec {
        profile: u8,
        poc_type: u64,
        poc_cycle: u64,
        width_mbs: u64,
        height_units: u64,
        frame_mbs_only: bool,
        crop: Option<[u64; 4]>,
        sar: Option<(u64, u64, u64)>,
    }
    impl Default for SpsSpec {
        fn default() -> Self {
            SpsSpec {
                profile: 66,
                poc_type: 2,
                poc_cycle: 0,
                width_mbs: 20,
                height_units: 15,
                frame_mbs_only: true,
                crop: None,
                sar: None,
            }
        }
    }
    fn make_sps(s: SpsSpec) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.u(8, s.profile.into());
        w.u(8, 0);
        w.u(8, 30);
        w.ue(0); // sps id
        if has_chroma_info(s.profile) {
            w.ue(1);
            w.ue(0);
            w.ue(0);
            w.bit(false);
            // scaling matrix present, list 0 present with a few deltas then 0
            w.bit(true);
            w.bit(true);
            w.se(5);
            w.se(-13); // next_scale 0: rest of list 0 repeats
            for _ in 1..8 {
                w.bit(false);
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(s.poc_type);
        match s.poc_type {
            0 => w.ue(2),
            1 => {
                w.bit(false);
                w.se(-1);
                w.se(2);
                w.ue(s.poc_cycle);
                for i in 0..s.poc_cycle.min(300) {
                    w.se(i as i64 - 3);
                }
            }
            _ => {}
        }
        w.ue(1); // max_num_ref_frames
        w.bit(false);
        w.ue(s.width_mbs - 1);
        w.ue(s.height_units - 1);
        w.bit(s.frame_mbs_only);
        if !s.frame_mbs_only {
            w.bit(false);
        }
        w.bit(true);
        match s.crop {
            Some(c) => {
                w.bit(true);
                c.iter().for_each(|&v| w.ue(v));
            }
            None => w.bit(false),
        }
        match s.sar {
            Some((idc, sw, sh)) => {
                w.bit(true); // vui
                w.bit(true);
                w.u(8, idc);
                if idc == 255 {
                    w.u(16, sw);
                    w.u(16, sh);
                }
                w.u(4, 0); // overscan, signal type, chroma loc, timing: absent
                w.u(5, 0); // nal/vcl hrd, pic_struct, bitstream_restriction
            }
            None => w.bit(false),
        }
        w.nal()
    }

    #[test]
    fn absurd_frame_rate_is_unknown() {
        let mut sps = Sps::parse(&hex(SPS_HIGH_720P30)).unwrap();
        let timing = |n, t| {
            Some(TimingInfo {
                num_units_in_tick: n,
                time_scale: t,
                fixed_frame_rate: true,
            })
        };
        sps.timing = timing(1001, 60_000);
        assert!((sps.frame_rate().unwrap() - 29.97).abs() < 0.001);
        sps.timing = timing(1, u32::MAX);
        assert_eq!(sps.frame_rate(), None);
        sps.timing = timing(0, 60);
        assert_eq!(sps.frame_rate(), None);
    }

    #[test]
    fn synthetic_sps_round_trip() {
        let sps = Sps::parse(&make_sps(SpsSpec::default())).unwrap();
        assert_eq!((sps.width, sps.height), (320, 240));
        assert_eq!(sps.sample_aspect, None);
        assert_eq!(sps.frame_rate(), None);
    }

    #[test]
    fn scaling_lists_are_skipped() {
        let sps = Sps::parse(&make_sps(SpsSpec {
            profile: 100,
            poc_type: 0,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            (sps.width, sps.height, sps.pic_order_cnt_type),
            (320, 240, 0)
        );
        assert_eq!(sps.log2_max_pic_order_cnt_lsb, Some(6));
    }

    #[test]
    fn poc_type_1_cycle() {
        let sps = Sps::parse(&make_sps(SpsSpec {
            poc_type: 1,
            poc_cycle: 7,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!((sps.pic_order_cnt_type, sps.width), (1, 320));
        let err = Sps::parse(&make_sps(SpsSpec {
            poc_type: 1,
            poc_cycle: 256,
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(
            err,
            AvcError::SpsOutOfRange {
                field: "num_ref_frames_in_pic_order_cnt_cycle",
                value: 256
            }
        );
    }

    #[test]
    fn absurd_size_rejected() {
        let err = Sps::parse(&make_sps(SpsSpec {
            width_mbs: 1025,
            ..Default::default()
        }))
        .unwrap_err();
        assert!(matches!(err, AvcError::PictureTooLarge { .. }), "{err}");
        // 1024 MBs = 16384 px is the limit itself.
        assert!(Sps::parse(&make_sps(SpsSpec {
            width_mbs: 1024,
            ..Default::default()
        }))
        .is_ok());
        // Interlaced: 513 map units are 1026 MB rows.
        let err = Sps::parse(&make_sps(SpsSpec {
            height_units: 513,
            frame_mbs_only: false,
            ..Default::default()
        }))
        .unwrap_err();
        assert!(matches!(err, AvcError::PictureTooLarge { .. }), "{err}");
    }

    #[test]
    fn cropping_in_chroma_units() {
        let sps = Sps::parse(&make_sps(SpsSpec {
            crop: Some([1, 2, 3, 4]),
            ..Default::default()
        }))
        .unwrap();
        // 4:2:0 progressive: crop units are 2x2 pixels.
        assert_eq!((sps.width, sps.height), (320 - 6, 240 - 14));
        let err = Sps::parse(&make_sps(SpsSpec {
            crop: Some([80, 80, 0, 0]),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err, AvcError::CroppingTooLarge);
    }

    #[test]
    fn sample_aspect_ratios() {
        let sar = |s| {
            Sps::parse(&make_sps(SpsSpec {
                sar: Some(s),
                ..Default::default()
            }))
            .unwrap()
            .sample_aspect
        };
        assert_eq!(sar((14, 0, 0)), Some((4, 3)));
        assert_eq!(sar((255, 64, 45)), Some((64, 45)));
        assert_eq!(sar((255, 0, 45)), None);
        assert_eq!(sar((0, 0, 0)), None);
        assert_eq!(sar((100, 0, 0)), None);
    }

    #[test]
    fn exp_golomb_too_long() {
        // NAL header, profile/constraints/level, then 40 zero bits (with
        // emulation prevention inserted so the RBSP really holds zeros).
        let nal = [0x67, 66, 0, 30, 0, 0, 3, 0, 0, 3, 0, 0x80];
        assert_eq!(Sps::parse(&nal).unwrap_err(), AvcError::ExpGolombTooLong);
    }

    #[test]
    fn ue_boundaries() {
        // 31 zeros, 1, 31 ones: 2^32 - 2, the largest value accepted.
        let mut w = BitWriter::default();
        w.ue(u64::from(u32::MAX) - 1);
        let mut r = SpsReader {
            bits: BitReader::new(&w.bytes),
            field: "",
        };
        assert_eq!(r.ue().unwrap(), u32::MAX - 1);
        let mut w = BitWriter::default();
        [0i64, 1, -1, 2, -2, 1000, -1000]
            .iter()
            .for_each(|&v| w.se(v));
        let mut r = SpsReader {
            bits: BitReader::new(&w.bytes),
            field: "",
        };
        for v in [0i64, 1, -1, 2, -2, 1000, -1000] {
            assert_eq!(r.se().unwrap(), v);
        }
    }

    #[test]
    fn truncated_sps() {
        let full = hex(SPS_HIGH_720P30);
        // Cut before the picture size is known: an error naming the field.
        for cut in 1..8 {
            assert!(
                matches!(Sps::parse(&full[..cut]), Err(AvcError::SpsTruncated(_))),
                "cut at {cut}"
            );
        }
        assert_eq!(Sps::parse(&[]), Err(AvcError::SpsTruncated("NAL header")));
        assert_eq!(Sps::parse(&hex(PPS_HIGH_720P30)), Err(AvcError::NotSps(8)));
    }

    #[test]
    fn truncated_vui_keeps_picture_size() {
        let full = hex(SPS_HIGH_720P30);
        // Every cut inside the VUI still yields the picture size; some cut keeps
        // the aspect ratio but loses the timing info.
        let mut lost_timing = false;
        for cut in (1..full.len()).rev() {
            match Sps::parse(&full[..cut]) {
                Ok(sps) => {
                    assert_eq!((sps.width, sps.height), (1280, 720), "cut at {cut}");
                    lost_timing |= sps.sample_aspect == Some((1, 1)) && sps.timing.is_none();
                }
                Err(e) => assert!(matches!(e, AvcError::SpsTruncated(_)), "cut at {cut}: {e}"),
            }
        }
        assert!(lost_timing);
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(nal_to_rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
        assert_eq!(nal_to_rbsp(&[0, 0, 0, 3, 3]), vec![0, 0, 0, 3]);
        assert_eq!(
            nal_to_rbsp(&[0, 3, 0, 0, 3, 0, 0, 3]),
            vec![0, 3, 0, 0, 0, 0]
        );
    }

    #[test]
    fn record_errors() {
        let good = hex(AVCC_HIGH_720P30);
        let parse = |v: Vec<u8>| AvcDecoderConfig::parse(&Bytes::from(v));
        assert!(parse(good.clone()).is_ok());
        assert_eq!(
            parse(vec![]),
            Err(AvcError::RecordTruncated("configurationVersion"))
        );
        let mut v = good.clone();
        v[0] = 0;
        assert_eq!(parse(v), Err(AvcError::UnsupportedVersion(0)));
        let mut v = good.clone();
        v[4] = 0xfe;
        assert_eq!(parse(v), Err(AvcError::InvalidLengthSize(3)));
        // 31 SPS claimed, one present.
        let mut v = good.clone();
        v[5] = 0xff;
        assert!(matches!(parse(v), Err(AvcError::RecordTruncated(_))));
        // SPS length running past the buffer.
        let mut v = good.clone();
        v[6] = 0xff;
        assert_eq!(
            parse(v),
            Err(AvcError::RecordTruncated("sequenceParameterSetNALUnit"))
        );
        let mut v = good.clone();
        v[5] = 0xe0;
        v.truncate(6);
        v.push(0);
        assert_eq!(parse(v), Err(AvcError::NoSps));
        // Cut right after the SPS: the PPS count is missing.
        assert!(matches!(
            parse(good[..6 + 2 + 26].to_vec()),
            Err(AvcError::RecordTruncated("numOfPictureParameterSets"))
        ));
        let mut v = good[..6 + 2 + 26].to_vec();
        v.push(0);
        assert_eq!(parse(v), Err(AvcError::NoPps));
    }

    #[test]
    fn record_length_sizes() {
        let mut v = hex(AVCC_HIGH_720P30);
        for (byte, size) in [(0xfc, 1), (0xfd, 2), (0xff, 4)] {
            v[4] = byte;
            let cfg = AvcDecoderConfig::parse(&Bytes::from(v.clone())).unwrap();
            assert_eq!(cfg.nal_length_size, size);
        }
    }

    #[test]
    fn build_avcc_round_trips() {
        for (sps, pps) in [
            (SPS_HIGH_720P30, PPS_HIGH_720P30),
            (SPS_BASELINE_360P25, PPS_BASELINE_360P25),
        ] {
            let (sps, pps) = (hex(sps), hex(pps));
            let rec = build_avcc(&[&sps], &[&pps]);
            let parsed = AvcDecoderConfig::parse(&rec).unwrap();
            assert_eq!(parsed.sps, vec![Bytes::from(sps.clone())]);
            assert_eq!(parsed.pps, vec![Bytes::from(pps.clone())]);
            assert_eq!(parsed.nal_length_size, 4);
            assert_eq!(parsed.profile_indication, sps[1]);
            assert_eq!(parsed.level_indication, sps[3]);
        }
        // FFmpeg's record for the same stream is byte-identical.
        let rec = build_avcc(&[&hex(SPS_HIGH_720P30)], &[&hex(PPS_HIGH_720P30)]);
        assert_eq!(rec.as_ref(), hex(AVCC_HIGH_720P30).as_slice());
    }

    #[test]
    fn nal_unit_iteration() {
        let data = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        let nals: Vec<_> = nal_units(&data, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(nals, vec![&[0x65, 0xaa][..], &[0x06][..]]);
        assert_eq!(nal_type(nals[0]), Some(NAL_IDR));
        assert_eq!(nal_type(&[]), None);

        let two = [0, 1, 0x41, 0, 2, 0x06, 0x05];
        assert_eq!(nal_units(&two, 2).count(), 2);
        let one = [1, 0x41, 1, 0x09];
        assert_eq!(nal_units(&one, 1).count(), 2);
        assert_eq!(nal_units(&[], 4).count(), 0);

        let overrun = [0, 0, 0, 9, 0x65];
        assert_eq!(
            nal_units(&overrun, 4).collect::<Vec<_>>(),
            vec![Err(AvcError::NalLengthOverrun {
                declared: 9,
                remaining: 1
            })]
        );
        let short_prefix = [0, 0, 0, 1, 0x65, 0, 0];
        let items: Vec<_> = nal_units(&short_prefix, 4).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            Err(AvcError::NalPrefixTruncated {
                remaining: 2,
                length_size: 4
            })
        );
        assert_eq!(
            nal_units(&[0, 0, 0, 0, 1], 4).next(),
            Some(Err(AvcError::EmptyNalUnit))
        );
        for bad in [0u8, 3, 5] {
            assert_eq!(
                nal_units(&data, bad).collect::<Vec<_>>(),
                vec![Err(AvcError::InvalidLengthSize(bad))]
            );
        }
    }

    #[test]
    fn annexb_splits_on_both_start_codes_and_drops_trailing_zeros() {
        let sps = hex(SPS_HIGH_720P30);
        let pps = hex(PPS_HIGH_720P30);
        let idr = [0x65u8, 0x88, 0x84, 0x00, 0x21];
        let mut stream = vec![0, 0, 0, 1];
        stream.extend_from_slice(&sps);
        stream.extend_from_slice(&[0, 0, 1]);
        stream.extend_from_slice(&pps);
        stream.extend_from_slice(&[0, 0]); // trailing_zero_8bits
        stream.extend_from_slice(&[0, 0, 0, 1]);
        stream.extend_from_slice(&idr);
        let nals: Vec<&[u8]> = annexb_nal_units(&stream).collect();
        assert_eq!(nals, [&sps[..], &pps[..], &idr[..]]);
        assert_eq!(annexb_nal_units(&[1, 2, 3]).count(), 0, "no start code");
        assert_eq!(annexb_nal_units(&[0, 0, 1, 0, 0, 1]).count(), 0, "empty");

        // Slices only, as the encoders put them in samples.
        let avcc = annexb_to_avcc(&stream, |t| (1..=5).contains(&t));
        let mut want = vec![0, 0, 0, 5];
        want.extend_from_slice(&idr);
        assert_eq!(&avcc[..], &want[..]);

        // And back: Annex B with four-byte start codes.
        let all = annexb_to_avcc(&stream, |_| true);
        let back = avcc_to_annexb(&all, 4).unwrap();
        let again: Vec<&[u8]> = annexb_nal_units(&back).collect();
        assert_eq!(again, [&sps[..], &pps[..], &idr[..]]);
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 1], 4).is_err());
    }

    #[test]
    fn config_from_an_encoders_parameter_sets() {
        let sps = hex(SPS_HIGH_720P30);
        let pps = hex(PPS_HIGH_720P30);
        let cfg = config_from_parameter_sets(&sps, &pps, 25.0).unwrap();
        assert_eq!(cfg.codec_string, "avc1.64001f");
        assert_eq!((cfg.width, cfg.height), (1280, 720));
        assert_eq!(cfg.frame_rate, Some(30.0), "the SPS's own rate wins");
        assert_eq!(
            cfg.record,
            build_avcc(&[&sps], &[&pps]),
            "the record is build_avcc's"
        );
        assert_eq!(
            config_from_parameter_sets(&pps, &pps, 25.0).unwrap_err(),
            AvcError::NotSps(8)
        );
        assert_eq!(
            config_from_parameter_sets(&sps, &sps, 25.0).unwrap_err(),
            AvcError::NoPps
        );
    }

    proptest! {
        #[test]
        fn sps_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut nal = vec![0x67];
            nal.extend_from_slice(&data);
            let _ = Sps::parse(&nal);
            let _ = Sps::parse(&data);
        }

        #[test]
        fn record_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = video_config(Bytes::from(data.clone()));
            // Mostly-valid records with corrupted bytes reach deeper.
            let mut v = hex(AVCC_HIGH_720P30);
            for (i, b) in data.iter().enumerate().take(8) {
                let idx = usize::from(*b) % v.len();
                v[idx] ^= data.get(i + 8).copied().unwrap_or(0xff);
            }
            let _ = video_config(Bytes::from(v));
        }

        #[test]
        fn nal_units_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100), size in 0u8..6) {
            let total: usize = nal_units(&data, size).filter_map(Result::ok).map(<[u8]>::len).sum();
            prop_assert!(total <= data.len());
        }
    }
}
