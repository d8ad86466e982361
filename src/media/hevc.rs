//! HEVC decoder configuration: the HEVCDecoderConfigurationRecord, the VPS
//! and the SPS.
//!
//! - The record (`hvcC` payload) is ISO/IEC 14496-15 §8.3.3.1: version, the
//!   general profile / tier / level fields, chroma format and bit depths,
//!   `lengthSizeMinusOne`, then arrays of 16-bit length-prefixed NAL units
//!   (VPS, SPS, PPS, SEI), each with its `array_completeness` bit. §8.4.1.1
//!   ties that bit to the sample entry: `hvc1` when every parameter set is
//!   in the sample entry (arrays complete), `hev1` when some may come in-band.
//! - NAL unit header: ITU-T H.265 §7.3.1.2 (two bytes, `nal_unit_type` in
//!   bits 1..7 of the first); types Table 7-1. IRAP pictures (types 16 to 23:
//!   BLA, IDR, CRA) are the random access points and CMAF sync samples
//!   (ISO/IEC 14496-15 §8.4.4: a sync sample holds an IRAP picture).
//! - The SPS is H.265 §7.3.2.2.1 (semantics §7.4.3.2.1) with
//!   `profile_tier_level()` §7.3.3, `scaling_list_data()` §7.3.4,
//!   `st_ref_pic_set()` §7.3.7 and the VUI of Annex E.2.1 up to its timing
//!   info; the VPS is §7.3.2.1 up to `vps_timing_info`. Emulation prevention
//!   bytes (§7.4.2) are removed first; exp-Golomb codes are §9.2.
//! - The codec string is ISO/IEC 14496-15 Annex E (RFC 6381 `codecs`):
//!   `hvc1.[A-C]<profile_idc>.<compatibility flags, bit-reversed, hex>.
//!   <L|H><level_idc>[.<constraint byte hex>...]` with trailing zero constraint
//!   bytes left out, e.g. `hvc1.1.6.L93.B0`.
//!
//! Everything here is fed bytes from the network: every read is checked, no
//! length field is used to allocate, and absurd values are errors rather than
//! panics or huge numbers handed to the packager and the decoder.

use bytes::Bytes;
use thiserror::Error;

use super::avc::{
    nal_to_rbsp, nal_units, AvcError, BitReader, ColourDescription, TimingInfo, MAX_FRAME_RATE,
};
use super::{VideoCodec, VideoConfig};

/// Largest picture width or height accepted, in pixels. A hostile SPS can
/// claim pictures of 2^32 - 1 samples a side; HEVC's largest level (6.2)
/// allows 8444 x 8444 at most (MaxLumaPs 35,651,584, at most sqrt(8 x that)
/// a side), and downstream buffers are sized from these numbers.
pub const MAX_DIMENSION: u32 = 16_384;

/// Longest exp-Golomb prefix accepted (31 zeros: values up to 2^32 - 2, the
/// largest any H.265 ue(v) needs). Longer is a corrupt or hostile bitstream.
pub const MAX_EXP_GOLOMB_LEADING_ZEROS: u32 = 31;

/// Most NAL units taken from one configuration record, over all its arrays.
/// Attack: `numNalus` is 16 bits and `numOfArrays` 8, so a 16 MB record of
/// empty entries would make millions of parsed entries (hundreds of MB of
/// bookkeeping). Real records hold one VPS, SPS and PPS and a SEI or two;
/// the spec maxima are 16 VPS, 16 SPS and 64 PPS.
pub const MAX_RECORD_NAL_UNITS: usize = 128;

/// Most short-term reference picture sets in an SPS (§7.4.3.2.1:
/// `num_short_term_ref_pic_sets` is 0..=64). Each drives a loop of reads.
pub const MAX_SHORT_TERM_REF_PIC_SETS: u32 = 64;

/// Most pictures on either side of a short-term reference picture set
/// (`num_negative_pics` and `num_positive_pics` are bounded by
/// `sps_max_dec_pic_buffering_minus1`, at most 15 in every level, §A.4.2).
pub const MAX_DELTA_POCS: u32 = 16;

/// Most long-term reference pictures signalled in an SPS (§7.4.3.2.1: 0..=32).
pub const MAX_LONG_TERM_REF_PICS_SPS: u32 = 32;

/// Most layer sets a VPS may list before its timing info is reached
/// (`vps_num_layer_sets_minus1` is 0..=1023, §7.4.3.1); each is a loop of
/// up to 64 flag reads.
pub const MAX_VPS_LAYER_SETS: u32 = 1024;

/// NAL unit types (H.265 Table 7-1).
pub const NAL_BLA_W_LP: u8 = 16;
/// The last of the reserved IRAP types; IRAP is 16..=23.
pub const NAL_RSV_IRAP_23: u8 = 23;
/// IDR without leading pictures.
pub const NAL_IDR_N_LP: u8 = 20;
/// Clean random access picture.
pub const NAL_CRA: u8 = 21;
/// Video parameter set.
pub const NAL_VPS: u8 = 32;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// Picture parameter set.
pub const NAL_PPS: u8 = 34;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 35;
/// Prefix SEI.
pub const NAL_SEI_PREFIX: u8 = 39;

/// Errors in an hvcC record, a VPS or SPS, or length-prefixed NAL unit data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HevcError {
    #[error("HEVC decoder configuration record is truncated (while reading {0})")]
    RecordTruncated(&'static str),
    #[error("HEVC decoder configuration record has version {0}; only version 1 exists")]
    UnsupportedVersion(u8),
    #[error("NAL unit length size of {0} bytes is invalid (must be 1, 2 or 4)")]
    InvalidLengthSize(u8),
    #[error("HEVC decoder configuration record lists more than {MAX_RECORD_NAL_UNITS} NAL units")]
    TooManyNalUnits,
    #[error("HEVC decoder configuration record holds an empty NAL unit")]
    EmptyRecordNalUnit,
    #[error("HEVC decoder configuration record carries no SPS (parameter sets only in-band are not supported)")]
    NoSps,
    #[error("expected an HEVC {expected} (NAL type {expected_type}), found NAL type {found}")]
    WrongNalType {
        expected: &'static str,
        expected_type: u8,
        found: u8,
    },
    #[error("HEVC {set} is truncated (while reading {field})")]
    Truncated {
        set: &'static str,
        field: &'static str,
    },
    #[error("HEVC {set} has an exp-Golomb code longer than 32 bits (corrupt bitstream)")]
    ExpGolombTooLong { set: &'static str },
    #[error("HEVC {set} field {field} has out-of-range value {value}")]
    OutOfRange {
        set: &'static str,
        field: &'static str,
        value: i64,
    },
    #[error("HEVC SPS describes a {width}x{height} picture: zero, or larger than {MAX_DIMENSION} pixels a side")]
    PictureSize { width: u64, height: u64 },
    #[error("HEVC SPS conformance window removes the whole picture")]
    ConformanceWindowTooLarge,
    #[error("{0}")]
    Nal(#[from] AvcError),
}

// ---------------------------------------------------------------------------
// NAL unit headers
// ---------------------------------------------------------------------------

/// The `nal_unit_type` of a NAL unit (bits 1..7 of its first byte), `None`
/// for an empty slice.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// An IRAP picture's NAL unit type (BLA, IDR, CRA and the reserved IRAP types,
/// 16..=23): a random access point, the sync samples of an HEVC track.
pub fn is_irap(nal_type: u8) -> bool {
    (NAL_BLA_W_LP..=NAL_RSV_IRAP_23).contains(&nal_type)
}

/// Whether a sample (NAL units with `length_size`-byte length prefixes) holds
/// an IRAP picture. Every length is checked; an empty NAL unit, a length
/// running past the data or a `length_size` other than 1, 2 or 4 is an error.
pub fn sample_is_irap(data: &[u8], length_size: u8) -> Result<bool, HevcError> {
    let mut irap = false;
    for nal in nal_units(data, length_size) {
        irap |= nal_type(nal?).is_some_and(is_irap);
    }
    Ok(irap)
}

// ---------------------------------------------------------------------------
// Exp-Golomb reader
// ---------------------------------------------------------------------------

/// Bit and exp-Golomb reads over an RBSP, with errors naming the parameter
/// set and field.
struct Reader<'a> {
    bits: BitReader<'a>,
    set: &'static str,
    field: &'static str,
}

impl<'a> Reader<'a> {
    fn new(rbsp: &'a [u8], set: &'static str) -> Self {
        Reader {
            bits: BitReader::new(rbsp),
            set,
            field: "",
        }
    }

    fn at(&mut self, field: &'static str) -> &mut Self {
        self.field = field;
        self
    }

    fn truncated(&self) -> HevcError {
        HevcError::Truncated {
            set: self.set,
            field: self.field,
        }
    }

    fn u(&mut self, n: u32) -> Result<u32, HevcError> {
        self.bits.bits(n).ok_or_else(|| self.truncated())
    }

    fn flag(&mut self) -> Result<bool, HevcError> {
        self.bits.bit().ok_or_else(|| self.truncated())
    }

    fn skip(&mut self, n: usize) -> Result<(), HevcError> {
        self.bits.skip(n).ok_or_else(|| self.truncated())
    }

    /// ue(v), at most [`MAX_EXP_GOLOMB_LEADING_ZEROS`] leading zeros.
    fn ue(&mut self) -> Result<u32, HevcError> {
        let mut zeros = 0u32;
        while !self.flag()? {
            zeros = zeros.saturating_add(1);
            if zeros > MAX_EXP_GOLOMB_LEADING_ZEROS {
                return Err(HevcError::ExpGolombTooLong { set: self.set });
            }
        }
        let suffix = self.u(zeros)?;
        // zeros <= 31: 2^31 - 1 + (2^31 - 1) fits in u32.
        Ok(1u64
            .wrapping_shl(zeros)
            .saturating_sub(1)
            .saturating_add(u64::from(suffix)) as u32)
    }

    /// ue(v) that must not exceed `max`.
    fn ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, HevcError> {
        let v = self.at(field).ue()?;
        if v > max {
            return Err(HevcError::OutOfRange {
                set: self.set,
                field,
                value: i64::from(v),
            });
        }
        Ok(v)
    }

    /// se(v) (§9.2.2).
    fn se(&mut self) -> Result<i64, HevcError> {
        let k = i64::from(self.ue()?);
        // (k < 2^32: neither saturates)
        Ok(if k % 2 == 1 {
            k.saturating_add(1) / 2
        } else {
            0i64.saturating_sub(k / 2)
        })
    }
}

/// The RBSP of a parameter set NAL unit of type `expected` (its two-byte
/// header checked and dropped, emulation prevention removed).
fn parameter_set_rbsp(nal: &[u8], expected: u8, name: &'static str) -> Result<Vec<u8>, HevcError> {
    let found = nal_type(nal).ok_or(HevcError::Truncated {
        set: name,
        field: "NAL unit header",
    })?;
    if found != expected {
        return Err(HevcError::WrongNalType {
            expected: name,
            expected_type: expected,
            found,
        });
    }
    let payload = nal.get(2..).ok_or(HevcError::Truncated {
        set: name,
        field: "NAL unit header",
    })?;
    Ok(nal_to_rbsp(payload))
}

// ---------------------------------------------------------------------------
// profile_tier_level (§7.3.3)
// ---------------------------------------------------------------------------

/// The general profile, tier and level (the sub-layer ones are skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileTierLevel {
    /// `general_profile_space` (0 in every profile defined so far).
    pub profile_space: u8,
    /// `general_tier_flag`: false Main tier, true High tier.
    pub high_tier: bool,
    /// `general_profile_idc`: 1 Main, 2 Main 10, 3 Main Still Picture,
    /// 4 format range extensions.
    pub profile_idc: u8,
    /// `general_profile_compatibility_flag[0..32]`, flag `j` in bit `31 - j`
    /// (the order they are coded in).
    pub compatibility_flags: u32,
    /// The 48 bits from `general_progressive_source_flag` to
    /// `general_inbld_flag` / reserved bit, as coded.
    pub constraint_flags: [u8; 6],
    /// `general_level_idc`: 30 x the level number (93 is level 3.1).
    pub level_idc: u8,
}

impl ProfileTierLevel {
    /// `profile_tier_level(1, max_sub_layers_minus1)`.
    fn parse(r: &mut Reader<'_>, max_sub_layers_minus1: u32) -> Result<Self, HevcError> {
        let profile_space = r.at("general_profile_space").u(2)? as u8;
        let high_tier = r.at("general_tier_flag").flag()?;
        let profile_idc = r.at("general_profile_idc").u(5)? as u8;
        let compatibility_flags = r.at("general_profile_compatibility_flag").u(32)?;
        let mut constraint_flags = [0u8; 6];
        for byte in &mut constraint_flags {
            *byte = r.at("general constraint flags").u(8)? as u8;
        }
        let level_idc = r.at("general_level_idc").u(8)? as u8;
        // (profile, level) present, per sub-layer; at most 7 (3 bits)
        let sub_layers = (max_sub_layers_minus1 as usize).min(7);
        let mut present = [(false, false); 7];
        for p in present.iter_mut().take(sub_layers) {
            let profile = r.at("sub_layer_profile_present_flag").flag()?;
            let level = r.at("sub_layer_level_present_flag").flag()?;
            *p = (profile, level);
        }
        if sub_layers > 0 {
            r.at("reserved_zero_2bits")
                .skip(8usize.saturating_sub(sub_layers).saturating_mul(2))?;
        }
        for &(profile, level) in present.iter().take(sub_layers) {
            if profile {
                r.at("sub_layer profile").skip(88)?;
            }
            if level {
                r.at("sub_layer_level_idc").skip(8)?;
            }
        }
        Ok(ProfileTierLevel {
            profile_space,
            high_tier,
            profile_idc,
            compatibility_flags,
            constraint_flags,
            level_idc,
        })
    }

    /// The ISO/IEC 14496-15 Annex E codec string with sample entry `fourcc`
    /// (`hvc1` or `hev1`), e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self, fourcc: &str) -> String {
        let space = match self.profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let tier = if self.high_tier { 'H' } else { 'L' };
        let mut s = format!(
            "{fourcc}.{space}{}.{:X}.{tier}{}",
            self.profile_idc,
            self.compatibility_flags.reverse_bits(),
            self.level_idc
        );
        let used = self
            .constraint_flags
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i.saturating_add(1));
        for b in self.constraint_flags.iter().take(used) {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }
}

// ---------------------------------------------------------------------------
// VPS (§7.3.2.1)
// ---------------------------------------------------------------------------

/// The VPS fields Ladder uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vps {
    pub vps_id: u8,
    /// `vps_max_sub_layers_minus1 + 1`.
    pub max_sub_layers: u8,
    pub profile_tier_level: ProfileTierLevel,
    /// `vps_timing_info` when present (`vps_num_units_in_tick`,
    /// `vps_time_scale`; the fixed-rate flag is not coded here).
    pub timing: Option<TimingInfo>,
}

impl Vps {
    /// Parse a VPS NAL unit (with its two-byte header) up to its timing info.
    pub fn parse(nal: &[u8]) -> Result<Vps, HevcError> {
        const SET: &str = "VPS";
        let rbsp = parameter_set_rbsp(nal, NAL_VPS, SET)?;
        let mut r = Reader::new(&rbsp, SET);
        let vps_id = r.at("vps_video_parameter_set_id").u(4)? as u8;
        r.at("vps_base_layer flags").skip(2)?;
        r.at("vps_max_layers_minus1").skip(6)?;
        let max_sub_layers_minus1 = r.at("vps_max_sub_layers_minus1").u(3)?;
        if max_sub_layers_minus1 > 6 {
            return Err(HevcError::OutOfRange {
                set: SET,
                field: "vps_max_sub_layers_minus1",
                value: i64::from(max_sub_layers_minus1),
            });
        }
        r.at("vps_temporal_id_nesting_flag").skip(1)?;
        r.at("vps_reserved_0xffff_16bits").skip(16)?;
        let profile_tier_level = ProfileTierLevel::parse(&mut r, max_sub_layers_minus1)?;
        let ordering_all = r.at("vps_sub_layer_ordering_info_present_flag").flag()?;
        let first = if ordering_all {
            0
        } else {
            max_sub_layers_minus1
        };
        for _ in first..=max_sub_layers_minus1 {
            r.at("vps_max_dec_pic_buffering_minus1").ue()?;
            r.at("vps_max_num_reorder_pics").ue()?;
            r.at("vps_max_latency_increase_plus1").ue()?;
        }
        let max_layer_id = r.at("vps_max_layer_id").u(6)?;
        let layer_sets = r.ue_max("vps_num_layer_sets_minus1", MAX_VPS_LAYER_SETS - 1)?;
        r.at("layer_id_included_flag").skip(
            (layer_sets as usize).saturating_mul((max_layer_id as usize).saturating_add(1)),
        )?;
        let mut timing = None;
        if r.at("vps_timing_info_present_flag").flag()? {
            let num_units_in_tick = r.at("vps_num_units_in_tick").u(32)?;
            let time_scale = r.at("vps_time_scale").u(32)?;
            timing = Some(TimingInfo {
                num_units_in_tick,
                time_scale,
                fixed_frame_rate: false,
            });
        }
        Ok(Vps {
            vps_id,
            max_sub_layers: (max_sub_layers_minus1 as u8).saturating_add(1),
            profile_tier_level,
            timing,
        })
    }
}

// ---------------------------------------------------------------------------
// SPS (§7.3.2.2.1)
// ---------------------------------------------------------------------------

/// `conf_win_*_offset`, in chroma sample units as coded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConformanceWindow {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

/// The SPS fields Ladder uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    pub vps_id: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub max_sub_layers: u8,
    pub profile_tier_level: ProfileTierLevel,
    pub sps_id: u32,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    pub separate_colour_plane: bool,
    /// `pic_width_in_luma_samples`, `pic_height_in_luma_samples`.
    pub coded_width: u32,
    pub coded_height: u32,
    pub conformance_window: ConformanceWindow,
    /// Picture size after the conformance window, in pixels.
    pub width: u32,
    pub height: u32,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// `sps_max_num_reorder_pics` of the highest sub-layer.
    pub max_num_reorder_pics: u32,
    /// Sample aspect ratio from the VUI, when signalled and specified.
    pub sample_aspect: Option<(u16, u16)>,
    pub colour: Option<ColourDescription>,
    /// `field_seq_flag`: each picture is a field (interlaced, field coded).
    pub field_seq: bool,
    /// `vui_timing_info` (`fixed_frame_rate` is not coded there: false).
    pub timing: Option<TimingInfo>,
}

/// Table E.1: sample aspect ratios for aspect_ratio_idc 1..=16 (the same
/// table as H.264's).
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
    /// Parse an SPS NAL unit (with its two-byte header) up to the VUI timing info.
    pub fn parse(nal: &[u8]) -> Result<Sps, HevcError> {
        const SET: &str = "SPS";
        let rbsp = parameter_set_rbsp(nal, NAL_SPS, SET)?;
        let mut r = Reader::new(&rbsp, SET);
        let vps_id = r.at("sps_video_parameter_set_id").u(4)? as u8;
        let max_sub_layers_minus1 = r.at("sps_max_sub_layers_minus1").u(3)?;
        if max_sub_layers_minus1 > 6 {
            return Err(HevcError::OutOfRange {
                set: SET,
                field: "sps_max_sub_layers_minus1",
                value: i64::from(max_sub_layers_minus1),
            });
        }
        r.at("sps_temporal_id_nesting_flag").flag()?;
        let profile_tier_level = ProfileTierLevel::parse(&mut r, max_sub_layers_minus1)?;
        let sps_id = r.ue_max("sps_seq_parameter_set_id", 15)?;
        let chroma_format_idc = r.ue_max("chroma_format_idc", 3)? as u8;
        let separate_colour_plane =
            chroma_format_idc == 3 && r.at("separate_colour_plane_flag").flag()?;
        let coded_width = r.at("pic_width_in_luma_samples").ue()?;
        let coded_height = r.at("pic_height_in_luma_samples").ue()?;
        if coded_width == 0
            || coded_height == 0
            || coded_width > MAX_DIMENSION
            || coded_height > MAX_DIMENSION
        {
            return Err(HevcError::PictureSize {
                width: coded_width.into(),
                height: coded_height.into(),
            });
        }
        let mut window = ConformanceWindow::default();
        if r.at("conformance_window_flag").flag()? {
            window.left = r.ue_max("conf_win_left_offset", MAX_DIMENSION)?;
            window.right = r.ue_max("conf_win_right_offset", MAX_DIMENSION)?;
            window.top = r.ue_max("conf_win_top_offset", MAX_DIMENSION)?;
            window.bottom = r.ue_max("conf_win_bottom_offset", MAX_DIMENSION)?;
        }
        // §6.2 Table 6-1 and §7.4.3.2.1: offsets count chroma samples.
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
        let crop_x = sub_width_c
            .saturating_mul(u64::from(window.left).saturating_add(u64::from(window.right)));
        let crop_y = sub_height_c
            .saturating_mul(u64::from(window.top).saturating_add(u64::from(window.bottom)));
        if crop_x >= u64::from(coded_width) || crop_y >= u64::from(coded_height) {
            return Err(HevcError::ConformanceWindowTooLarge);
        }
        // Both fit: smaller than coded sizes of at most MAX_DIMENSION.
        let width = coded_width.saturating_sub(crop_x as u32);
        let height = coded_height.saturating_sub(crop_y as u32);

        let bit_depth_luma = (r.ue_max("bit_depth_luma_minus8", 8)? as u8).saturating_add(8);
        let bit_depth_chroma = (r.ue_max("bit_depth_chroma_minus8", 8)? as u8).saturating_add(8);
        let log2_max_poc_lsb = r
            .ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?
            .saturating_add(4);
        let ordering_all = r.at("sps_sub_layer_ordering_info_present_flag").flag()?;
        let first = if ordering_all {
            0
        } else {
            max_sub_layers_minus1
        };
        let mut max_num_reorder_pics = 0;
        for _ in first..=max_sub_layers_minus1 {
            r.ue_max("sps_max_dec_pic_buffering_minus1", 15)?;
            max_num_reorder_pics = r.ue_max("sps_max_num_reorder_pics", 15)?;
            r.at("sps_max_latency_increase_plus1").ue()?;
        }
        r.ue_max("log2_min_luma_coding_block_size_minus3", 3)?;
        r.ue_max("log2_diff_max_min_luma_coding_block_size", 3)?;
        r.ue_max("log2_min_luma_transform_block_size_minus2", 3)?;
        r.ue_max("log2_diff_max_min_luma_transform_block_size", 3)?;
        r.ue_max("max_transform_hierarchy_depth_inter", 4)?;
        r.ue_max("max_transform_hierarchy_depth_intra", 4)?;
        if r.at("scaling_list_enabled_flag").flag()?
            && r.at("sps_scaling_list_data_present_flag").flag()?
        {
            skip_scaling_list_data(&mut r)?;
        }
        r.at("amp_enabled_flag").flag()?;
        r.at("sample_adaptive_offset_enabled_flag").flag()?;
        if r.at("pcm_enabled_flag").flag()? {
            r.at("pcm_sample_bit_depths").skip(8)?;
            r.ue_max("log2_min_pcm_luma_coding_block_size_minus3", 2)?;
            r.ue_max("log2_diff_max_min_pcm_luma_coding_block_size", 2)?;
            r.at("pcm_loop_filter_disabled_flag").flag()?;
        }
        let sets = r.ue_max("num_short_term_ref_pic_sets", MAX_SHORT_TERM_REF_PIC_SETS)?;
        skip_short_term_ref_pic_sets(&mut r, sets)?;
        if r.at("long_term_ref_pics_present_flag").flag()? {
            let n = r.ue_max("num_long_term_ref_pics_sps", MAX_LONG_TERM_REF_PICS_SPS)?;
            r.at("lt_ref_pic_poc_lsb_sps")
                .skip((n as usize).saturating_mul((log2_max_poc_lsb as usize).saturating_add(1)))?;
        }
        r.at("sps_temporal_mvp_enabled_flag").flag()?;
        r.at("strong_intra_smoothing_enabled_flag").flag()?;

        let mut vui = Vui::default();
        if r.at("vui_parameters_present_flag").flag()? {
            // As for H.264: a VUI cut short carries nothing the picture size
            // depends on; keep what was read before the end.
            match parse_vui(&mut r, &mut vui) {
                Ok(()) | Err(HevcError::Truncated { .. }) => {}
                Err(e) => return Err(e),
            }
        }

        Ok(Sps {
            vps_id,
            max_sub_layers: (max_sub_layers_minus1 as u8).saturating_add(1),
            profile_tier_level,
            sps_id,
            chroma_format_idc,
            separate_colour_plane,
            coded_width,
            coded_height,
            conformance_window: window,
            width,
            height,
            bit_depth_luma,
            bit_depth_chroma,
            max_num_reorder_pics,
            sample_aspect: vui.sample_aspect,
            colour: vui.colour,
            field_seq: vui.field_seq,
            timing: vui.timing,
        })
    }

    /// Frame rate from the VUI timing info: `time_scale / num_units_in_tick`
    /// (Annex E.3.1: in HEVC a clock tick is one picture period; with
    /// `field_seq_flag` a picture is a field, and two make a frame). `None`
    /// when absent, zero, or above [`MAX_FRAME_RATE`].
    pub fn frame_rate(&self) -> Option<f64> {
        let rate = rate_of(self.timing?)?;
        let rate = if self.field_seq { rate / 2.0 } else { rate };
        (rate <= MAX_FRAME_RATE).then_some(rate)
    }
}

/// `time_scale / num_units_in_tick`, `None` for zeros.
fn rate_of(t: TimingInfo) -> Option<f64> {
    if t.num_units_in_tick == 0 || t.time_scale == 0 {
        return None;
    }
    let rate = f64::from(t.time_scale) / f64::from(t.num_units_in_tick);
    (rate <= MAX_FRAME_RATE).then_some(rate)
}

/// `scaling_list_data()` (§7.3.4): read and discard.
fn skip_scaling_list_data(r: &mut Reader<'_>) -> Result<(), HevcError> {
    for size_id in 0..4u32 {
        let matrices = if size_id == 3 { 2 } else { 6 };
        for _ in 0..matrices {
            if !r.at("scaling_list_pred_mode_flag").flag()? {
                r.ue_max("scaling_list_pred_matrix_id_delta", 5)?;
            } else {
                // size_id < 4: 16 << 0, 2, 4, 6
                let coefficients = 64.min(16u32.wrapping_shl(size_id.saturating_mul(2)));
                if size_id > 1 {
                    r.at("scaling_list_dc_coef_minus8").se()?;
                }
                for _ in 0..coefficients {
                    r.at("scaling_list_delta_coef").se()?;
                }
            }
        }
    }
    Ok(())
}

/// `st_ref_pic_set(i)` for `i` in `0..count` (§7.3.7), as coded in an SPS:
/// read and discard, tracking `NumDeltaPocs` for inter-set prediction.
fn skip_short_term_ref_pic_sets(r: &mut Reader<'_>, count: u32) -> Result<(), HevcError> {
    let mut previous_delta_pocs = 0u32;
    for index in 0..count {
        let predicted = index != 0 && r.at("inter_ref_pic_set_prediction_flag").flag()?;
        let delta_pocs = if predicted {
            // In an SPS, delta_idx_minus1 is not coded: the reference set is
            // the previous one.
            r.at("delta_rps_sign").flag()?;
            r.ue_max("abs_delta_rps_minus1", (1 << 15) - 1)?;
            let mut n = 0;
            for _ in 0..=previous_delta_pocs {
                let used = r.at("used_by_curr_pic_flag").flag()?;
                let use_delta = used || r.at("use_delta_flag").flag()?;
                n = u32::saturating_add(n, u32::from(use_delta));
            }
            n
        } else {
            let negative = r.ue_max("num_negative_pics", MAX_DELTA_POCS)?;
            let positive = r.ue_max("num_positive_pics", MAX_DELTA_POCS)?;
            for _ in 0..negative.saturating_add(positive) {
                r.ue_max("delta_poc_minus1", (1 << 15) - 1)?;
                r.at("used_by_curr_pic_flag").flag()?;
            }
            negative.saturating_add(positive)
        };
        previous_delta_pocs = delta_pocs.min(2 * MAX_DELTA_POCS);
    }
    Ok(())
}

#[derive(Default)]
struct Vui {
    sample_aspect: Option<(u16, u16)>,
    colour: Option<ColourDescription>,
    field_seq: bool,
    timing: Option<TimingInfo>,
}

/// Annex E.2.1 `vui_parameters()` up to and including the timing info
/// (HRD parameters and bitstream restrictions are not needed).
fn parse_vui(r: &mut Reader<'_>, vui: &mut Vui) -> Result<(), HevcError> {
    if r.at("aspect_ratio_info_present_flag").flag()? {
        let idc = r.at("aspect_ratio_idc").u(8)?;
        vui.sample_aspect = if idc == EXTENDED_SAR {
            let w = r.at("sar_width").u(16)? as u16;
            let h = r.at("sar_height").u(16)? as u16;
            (w != 0 && h != 0).then_some((w, h))
        } else {
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
        let (primaries, transfer, matrix) = if r.at("colour_description_present_flag").flag()? {
            (
                r.at("colour_primaries").u(8)? as u8,
                r.at("transfer_characteristics").u(8)? as u8,
                r.at("matrix_coeffs").u(8)? as u8,
            )
        } else {
            (2, 2, 2)
        };
        vui.colour = Some(ColourDescription {
            colour_primaries: primaries,
            transfer_characteristics: transfer,
            matrix_coefficients: matrix,
            full_range,
        });
    }
    if r.at("chroma_loc_info_present_flag").flag()? {
        r.ue_max("chroma_sample_loc_type_top_field", 5)?;
        r.ue_max("chroma_sample_loc_type_bottom_field", 5)?;
    }
    r.at("neutral_chroma_indication_flag").flag()?;
    vui.field_seq = r.at("field_seq_flag").flag()?;
    r.at("frame_field_info_present_flag").flag()?;
    if r.at("default_display_window_flag").flag()? {
        for field in [
            "def_disp_win_left_offset",
            "def_disp_win_right_offset",
            "def_disp_win_top_offset",
            "def_disp_win_bottom_offset",
        ] {
            r.at(field).ue()?;
        }
    }
    if r.at("vui_timing_info_present_flag").flag()? {
        let num_units_in_tick = r.at("vui_num_units_in_tick").u(32)?;
        let time_scale = r.at("vui_time_scale").u(32)?;
        vui.timing = Some(TimingInfo {
            num_units_in_tick,
            time_scale,
            fixed_frame_rate: false,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1)
// ---------------------------------------------------------------------------

/// One array of the record: NAL units of one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NalArray {
    /// `array_completeness`: every NAL unit of this type is here, none in-band.
    pub complete: bool,
    pub nal_type: u8,
    /// The NAL units (with their two-byte headers), slices of the record.
    pub nal_units: Vec<Bytes>,
}

/// A parsed HEVCDecoderConfigurationRecord.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HevcDecoderConfig {
    /// The record's general profile, tier and level fields.
    pub profile_tier_level: ProfileTierLevel,
    /// `chroma_format_idc` as the record says (the SPS is authoritative).
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// `avgFrameRate` in frames per 256 seconds, 0 when unspecified.
    pub avg_frame_rate: u16,
    /// `lengthSizeMinusOne + 1`: 1, 2 or 4.
    pub nal_length_size: u8,
    pub arrays: Vec<NalArray>,
}

/// A cursor over the record that reports which field ran out.
struct RecordCursor<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl RecordCursor<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, HevcError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(HevcError::RecordTruncated(what))?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HevcError> {
        Ok(u16::from(self.u8(what)?) << 8 | u16::from(self.u8(what)?))
    }

    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], HevcError> {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8(what)?;
        }
        Ok(out)
    }

    /// A 16-bit length then that many bytes, as a zero-copy slice.
    fn nal(&mut self, what: &'static str) -> Result<Bytes, HevcError> {
        let len = usize::from(self.u16(what)?);
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .ok_or(HevcError::RecordTruncated(what))?;
        let nal = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(nal)
    }
}

impl HevcDecoderConfig {
    /// Parse a record. Array and NAL unit counts are checked against the
    /// bytes present one entry at a time, and capped at
    /// [`MAX_RECORD_NAL_UNITS`] in all.
    pub fn parse(record: &Bytes) -> Result<Self, HevcError> {
        let mut c = RecordCursor {
            data: record,
            pos: 0,
        };
        let version = c.u8("configurationVersion")?;
        if version != 1 {
            return Err(HevcError::UnsupportedVersion(version));
        }
        let first = c.u8("general_profile_idc")?;
        let compatibility_flags =
            u32::from_be_bytes(c.bytes::<4>("general_profile_compatibility_flags")?);
        let constraint_flags = c.bytes::<6>("general_constraint_indicator_flags")?;
        let level_idc = c.u8("general_level_idc")?;
        c.u16("min_spatial_segmentation_idc")?;
        c.u8("parallelismType")?;
        let chroma_format_idc = c.u8("chromaFormat")? & 0x03;
        let bit_depth_luma = (c.u8("bitDepthLumaMinus8")? & 0x07).saturating_add(8);
        let bit_depth_chroma = (c.u8("bitDepthChromaMinus8")? & 0x07).saturating_add(8);
        let avg_frame_rate = c.u16("avgFrameRate")?;
        let nal_length_size = (c.u8("lengthSizeMinusOne")? & 0x03).saturating_add(1);
        if nal_length_size == 3 {
            return Err(HevcError::InvalidLengthSize(3));
        }
        let num_arrays = c.u8("numOfArrays")?;
        let mut arrays = Vec::new();
        let mut total = 0usize;
        for _ in 0..num_arrays {
            let head = c.u8("NAL_unit_type")?;
            let count = c.u16("numNalus")?;
            let mut nal_units = Vec::new();
            for _ in 0..count {
                total = total.saturating_add(1);
                if total > MAX_RECORD_NAL_UNITS {
                    return Err(HevcError::TooManyNalUnits);
                }
                let nal = c.nal("nalUnit")?;
                if nal.is_empty() {
                    return Err(HevcError::EmptyRecordNalUnit);
                }
                nal_units.push(nal);
            }
            arrays.push(NalArray {
                complete: head & 0x80 != 0,
                nal_type: head & 0x3f,
                nal_units,
            });
        }
        Ok(HevcDecoderConfig {
            profile_tier_level: ProfileTierLevel {
                profile_space: first >> 6,
                high_tier: first & 0x20 != 0,
                profile_idc: first & 0x1f,
                compatibility_flags,
                constraint_flags,
                level_idc,
            },
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            avg_frame_rate,
            nal_length_size,
            arrays,
        })
    }

    /// The record's NAL units of type `nal_type`, in record order.
    pub fn nal_units(&self, nal_type: u8) -> impl Iterator<Item = &Bytes> {
        self.arrays
            .iter()
            .filter(move |a| a.nal_type == nal_type)
            .flat_map(|a| a.nal_units.iter())
    }

    /// Every parameter set type (VPS, SPS, PPS) has a non-empty array marked
    /// complete: the sample entry may be `hvc1` (ISO/IEC 14496-15 §8.4.1.1).
    pub fn parameter_sets_complete(&self) -> bool {
        [NAL_VPS, NAL_SPS, NAL_PPS].iter().all(|&t| {
            let mut of_type = self.arrays.iter().filter(|a| a.nal_type == t).peekable();
            of_type.peek().is_some() && of_type.all(|a| a.complete && !a.nal_units.is_empty())
        })
    }

    /// The sample entry type for this record: `hvc1` when
    /// [`Self::parameter_sets_complete`], else `hev1` (parameter sets may
    /// also come in-band).
    pub fn sample_entry(&self) -> &'static str {
        if self.parameter_sets_complete() {
            "hvc1"
        } else {
            "hev1"
        }
    }

    /// The record's VPS, SPS and PPS NAL units in that order, each after a
    /// four-byte Annex B start code: what a decoder fed Annex B (NVDEC) needs
    /// before the first picture.
    pub fn parameter_sets_annexb(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for t in [NAL_VPS, NAL_SPS, NAL_PPS] {
            for nal in self.nal_units(t) {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(nal);
            }
        }
        out
    }
}

/// Parse an hvcC record, its first SPS and (for the frame rate when the SPS
/// has none) its first VPS into the configuration the packager uses.
///
/// The codec string is the record's (its general profile / tier / level
/// fields, which describe the sample entry) with the sample entry type
/// [`HevcDecoderConfig::sample_entry`] chooses; sizes, chroma format and bit
/// depths are the SPS's (authoritative, as for H.264).
pub fn video_config(record: Bytes) -> Result<VideoConfig, HevcError> {
    let hvcc = HevcDecoderConfig::parse(&record)?;
    let first = hvcc.nal_units(NAL_SPS).next().ok_or(HevcError::NoSps)?;
    let sps = Sps::parse(first)?;
    let vps_rate = || {
        hvcc.nal_units(NAL_VPS)
            .next()
            .and_then(|v| Vps::parse(v).ok())
            .and_then(|v| v.timing)
            .and_then(rate_of)
    };
    Ok(VideoConfig {
        codec: VideoCodec::Hevc,
        width: sps.width,
        height: sps.height,
        codec_string: hvcc.profile_tier_level.codec_string(hvcc.sample_entry()),
        nal_length_size: hvcc.nal_length_size,
        frame_rate: sps.frame_rate().or_else(vps_rate),
        profile_idc: sps.profile_tier_level.profile_idc,
        level_idc: sps.profile_tier_level.level_idc,
        interlaced: sps.field_seq,
        sample_aspect: sps
            .sample_aspect
            .map_or((1, 1), |(w, h)| (u32::from(w), u32::from(h))),
        chroma_format_idc: sps.chroma_format_idc,
        bit_depth_luma: sps.bit_depth_luma,
        bit_depth_chroma: sps.bit_depth_chroma,
        record,
    })
}

/// Test material: records FFmpeg 5.1 wrote for libx265 3.5 output (the
/// `hvcC` of its MP4), used here and by the packager's and decoder's tests.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
pub(crate) mod fixtures {
    /// 640x360 Main 8-bit, 30 fps, level 2.1; arrays VPS, SPS, PPS (not
    /// marked complete). The x265 version/options SEI is left out.
    pub const HVCC_MAIN_360P30: &str = "0101600000009000000000003ff000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003003f928090210001002a42010101600000030090000003000003003fa0050201696592a4932bc05a020000030002000003003c1022000100074401c172b46240";
    /// 426x240 Main, 25 fps: coded 432 wide, conformance window 3 chroma
    /// samples (6 pixels) on the right.
    pub const HVCC_MAIN_426X240: &str = "0101600000009000000000003cf000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003003c959809210001002b42010101600000030090000003000003003ca00d880f1c9e5959a4932bc05a02000003000200000300321022000100074401c172b46240";
    /// 1920x1080 Main, 25 fps, level 4.
    pub const HVCC_MAIN_1080P25: &str = "01016000000090000000000078f000fcfdf8f800000f03200001001840010c01ffff016000000300900000030000030078959809210001002a420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000c8422000100074401c172b46240";
    /// 640x360 Main 10 (yuv420p10le), 30000/1001 fps.
    pub const HVCC_MAIN10_360P: &str = "0102200000009000000000003ff000fcfdfafa00000f03200001001840010c01ffff02200000030090000003000003003f959809210001002942010102200000030090000003000003003fa005020169365959a4932bc05a02000007d20000ea601022000100074401c172b46240";

    pub fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    fn config(record: &str) -> VideoConfig {
        video_config(Bytes::from(hex(record))).unwrap()
    }

    #[test]
    fn main_360p30_record() {
        let hvcc = HevcDecoderConfig::parse(&Bytes::from(hex(HVCC_MAIN_360P30))).unwrap();
        assert_eq!(hvcc.nal_length_size, 4);
        let types: Vec<(u8, bool, usize)> = hvcc
            .arrays
            .iter()
            .map(|a| (a.nal_type, a.complete, a.nal_units.len()))
            .collect();
        assert_eq!(
            types,
            [
                (NAL_VPS, false, 1),
                (NAL_SPS, false, 1),
                (NAL_PPS, false, 1)
            ]
        );
        assert!(!hvcc.parameter_sets_complete());
        assert_eq!(hvcc.sample_entry(), "hev1");

        let c = config(HVCC_MAIN_360P30);
        assert_eq!(c.codec, VideoCodec::Hevc);
        assert_eq!((c.width, c.height), (640, 360));
        // What ffprobe says of the same stream: profile Main, level 63.
        assert_eq!((c.profile_idc, c.level_idc), (1, 63));
        assert_eq!(c.codec_string, "hev1.1.6.L63.90");
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(c.frame_rate, Some(30.0));
        assert_eq!(
            (c.chroma_format_idc, c.bit_depth_luma, c.bit_depth_chroma),
            (1, 8, 8)
        );
        assert!(!c.interlaced);
        assert_eq!(c.sample_aspect, (1, 1));
    }

    #[test]
    fn sps_details() {
        let hvcc = HevcDecoderConfig::parse(&Bytes::from(hex(HVCC_MAIN_360P30))).unwrap();
        let sps = Sps::parse(hvcc.nal_units(NAL_SPS).next().unwrap()).unwrap();
        assert_eq!(sps.max_sub_layers, 1);
        assert_eq!(sps.profile_tier_level.compatibility_flags, 0x6000_0000);
        assert_eq!(
            sps.profile_tier_level.constraint_flags,
            [0x90, 0, 0, 0, 0, 0]
        );
        assert_eq!(sps.max_num_reorder_pics, 0, "bframes=0");
        assert_eq!(
            sps.timing,
            Some(TimingInfo {
                num_units_in_tick: 1,
                time_scale: 30,
                fixed_frame_rate: false
            })
        );
        let vps = Vps::parse(hvcc.nal_units(NAL_VPS).next().unwrap()).unwrap();
        assert_eq!(vps.max_sub_layers, 1);
        assert_eq!(vps.profile_tier_level, sps.profile_tier_level);
        // x265 writes timing in the SPS VUI only.
        assert_eq!(vps.timing, None);
    }

    /// A VPS with timing info, and an SPS without: the record's frame rate
    /// comes from the VPS.
    #[test]
    fn frame_rate_from_vps_when_the_sps_has_none() {
        let mut w = BitWriter::default();
        w.u(4, 0); // vps id
        w.u(2, 3); // base layer flags
        w.u(6, 0);
        w.u(3, 0); // max sub layers minus1
        w.bit(true);
        w.u(16, 0xffff);
        w.u(8, 1);
        w.u(32, 0x6000_0000);
        w.u(48, 0x9000_0000_0000);
        w.u(8, 93);
        w.bit(true); // ordering info
        w.ue(3);
        w.ue(0);
        w.ue(0);
        w.u(6, 0); // max layer id
        w.ue(1); // one layer set beyond the first: one flag
        w.bit(true);
        w.bit(true); // timing
        w.u(32, 1);
        w.u(32, 50);
        let vps = w.nal(NAL_VPS);
        let parsed = Vps::parse(&vps).unwrap();
        assert_eq!(parsed.profile_tier_level.level_idc, 93);
        assert_eq!(parsed.timing.map(|t| t.time_scale), Some(50));

        let sps = make_sps(&SpsSpec {
            timing: false,
            ..SpsSpec::default()
        });
        assert_eq!(Sps::parse(&sps).unwrap().frame_rate(), None);
        let mut record = hex(HVCC_MAIN_360P30)[..23].to_vec();
        record[22] = 2;
        for (t, nal) in [(NAL_VPS, &vps), (NAL_SPS, &sps)] {
            record.push(0x80 | t);
            record.extend([0, 1]);
            record.extend((nal.len() as u16).to_be_bytes());
            record.extend(nal);
        }
        let c = video_config(Bytes::from(record)).unwrap();
        assert_eq!(c.frame_rate, Some(50.0));
        assert_eq!((c.width, c.height), (1280, 720));
        // No PPS array: the parameter sets are not all in the sample entry.
        assert!(c.codec_string.starts_with("hev1."), "{}", c.codec_string);
    }

    #[test]
    fn conformance_window_crops() {
        let c = config(HVCC_MAIN_426X240);
        assert_eq!((c.width, c.height), (426, 240));
        let hvcc = HevcDecoderConfig::parse(&Bytes::from(hex(HVCC_MAIN_426X240))).unwrap();
        let sps = Sps::parse(hvcc.nal_units(NAL_SPS).next().unwrap()).unwrap();
        assert_eq!(sps.coded_width, 432);
        assert_eq!(sps.conformance_window.right, 3);
        assert_eq!(c.frame_rate, Some(25.0));
        assert_eq!(c.codec_string, "hev1.1.6.L60.90");

        let c = config(HVCC_MAIN_1080P25);
        assert_eq!((c.width, c.height), (1920, 1080));
        assert_eq!(c.codec_string, "hev1.1.6.L120.90");
    }

    #[test]
    fn main10() {
        let c = config(HVCC_MAIN10_360P);
        assert_eq!(c.profile_idc, 2);
        assert_eq!((c.bit_depth_luma, c.bit_depth_chroma), (10, 10));
        // x265 sets compatibility flag 2 (Main 10) only: bit-reversed, 4.
        assert_eq!(c.codec_string, "hev1.2.4.L63.90");
        let fps = c.frame_rate.unwrap();
        assert!((fps - 30_000.0 / 1001.0).abs() < 1e-9, "{fps}");
    }

    #[test]
    fn codec_strings() {
        let ptl = ProfileTierLevel {
            profile_space: 0,
            high_tier: false,
            profile_idc: 1,
            compatibility_flags: 0x6000_0000,
            constraint_flags: [0xb0, 0, 0, 0, 0, 0],
            level_idc: 93,
        };
        // ISO/IEC 14496-15 Annex E's example.
        assert_eq!(ptl.codec_string("hvc1"), "hvc1.1.6.L93.B0");
        let high = ProfileTierLevel {
            profile_space: 1,
            high_tier: true,
            profile_idc: 2,
            compatibility_flags: 0x2000_0000,
            constraint_flags: [0, 0, 0, 0, 0, 0],
            level_idc: 120,
        };
        assert_eq!(high.codec_string("hev1"), "hev1.A2.4.H120");
        let inner_zero = ProfileTierLevel {
            constraint_flags: [0x90, 0, 0x01, 0, 0, 0],
            ..ptl
        };
        assert_eq!(inner_zero.codec_string("hvc1"), "hvc1.1.6.L93.90.0.1");
    }

    #[test]
    fn completeness_chooses_hvc1() {
        let mut record = hex(HVCC_MAIN_360P30);
        // Arrays start after the 23 fixed bytes; mark each one complete.
        let mut at = 23;
        for _ in 0..3 {
            record[at] |= 0x80;
            let n = u16::from_be_bytes([record[at + 1], record[at + 2]]);
            at += 3;
            for _ in 0..n {
                let len = u16::from_be_bytes([record[at], record[at + 1]]) as usize;
                at += 2 + len;
            }
        }
        assert_eq!(at, record.len());
        let c = video_config(Bytes::from(record.clone())).unwrap();
        assert_eq!(c.codec_string, "hvc1.1.6.L63.90");
        let hvcc = HevcDecoderConfig::parse(&Bytes::from(record)).unwrap();
        assert!(hvcc.parameter_sets_complete());
        let annexb = hvcc.parameter_sets_annexb();
        let types: Vec<u8> = crate::media::avc::annexb_nal_units(&annexb)
            .filter_map(nal_type)
            .collect();
        assert_eq!(types, [NAL_VPS, NAL_SPS, NAL_PPS]);
    }

    #[test]
    fn hostile_records() {
        let good = hex(HVCC_MAIN_360P30);
        let parse = |b: Vec<u8>| video_config(Bytes::from(b));
        // Every truncation is an error, never a panic.
        for len in 0..good.len() {
            assert!(parse(good[..len].to_vec()).is_err(), "length {len}");
        }
        // Version.
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(parse(v), Err(HevcError::UnsupportedVersion(2)));
        // NAL length size 3.
        let mut v = good.clone();
        v[21] = (v[21] & !3) | 2;
        assert_eq!(parse(v), Err(HevcError::InvalidLengthSize(3)));
        // An SPS entry claiming more bytes than the record holds.
        let mut v = good.clone();
        let sps_len_at = 23 + 3 + 2 + 0x18 + 3;
        assert_eq!(v[sps_len_at - 3], 0x21, "SPS array header");
        v[sps_len_at] = 0xff;
        assert_eq!(parse(v), Err(HevcError::RecordTruncated("nalUnit")));
        // A count of 65,535 empty NAL units in a short record.
        let mut v = good[..23].to_vec();
        v[22] = 1;
        v.extend([0x20, 0xff, 0xff]);
        v.extend(std::iter::repeat_n(0, 2 * 200));
        assert_eq!(parse(v), Err(HevcError::EmptyRecordNalUnit));
        let mut v = good[..23].to_vec();
        v[22] = 1;
        v.extend([0x20, 0xff, 0xff]);
        for _ in 0..200 {
            v.extend([0, 1, 0x40]);
        }
        assert_eq!(parse(v), Err(HevcError::TooManyNalUnits));
        // No SPS.
        let mut v = good[..23].to_vec();
        v[22] = 0;
        assert_eq!(parse(v), Err(HevcError::NoSps));
        // An SPS array holding a PPS.
        let hvcc = HevcDecoderConfig::parse(&Bytes::from(good.clone())).unwrap();
        let pps = hvcc.nal_units(NAL_PPS).next().unwrap().clone();
        assert!(matches!(
            Sps::parse(&pps),
            Err(HevcError::WrongNalType { found: 34, .. })
        ));
    }

    /// Writes an SPS bit by bit, for values x265 will not produce.
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
                self.bit(v.checked_shr(i).unwrap_or(0) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u64) {
            let x = v + 1;
            let len = 64 - x.leading_zeros();
            self.u(len - 1, 0);
            self.u(len, x);
        }
        fn nal(mut self, nal_type: u8) -> Vec<u8> {
            self.bit(true);
            let mut out = vec![nal_type << 1, 1];
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
        sub_layers_minus1: u64,
        chroma: u64,
        width: u64,
        height: u64,
        window: Option<[u64; 4]>,
        rps: Vec<Vec<u64>>,
        predicted_rps: bool,
        sar: Option<(u64, u64, u64)>,
        field_seq: bool,
        timing: bool,
    }
    impl Default for SpsSpec {
        fn default() -> Self {
            SpsSpec {
                sub_layers_minus1: 0,
                chroma: 1,
                width: 1280,
                height: 720,
                window: None,
                rps: vec![],
                predicted_rps: false,
                sar: None,
                field_seq: false,
                timing: true,
            }
        }
    }

    fn make_sps(s: &SpsSpec) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.u(4, 0);
        w.u(3, s.sub_layers_minus1);
        w.bit(true);
        // profile_tier_level: Main, level 4.
        w.u(8, 1);
        w.u(32, 0x6000_0000);
        w.u(48, 0x9000_0000_0000);
        w.u(8, 120);
        for _ in 0..s.sub_layers_minus1 {
            w.bit(true); // profile present
            w.bit(true); // level present
        }
        if s.sub_layers_minus1 > 0 {
            for _ in s.sub_layers_minus1..8 {
                w.u(2, 0);
            }
        }
        for _ in 0..s.sub_layers_minus1 {
            w.u(88, 0);
            w.u(8, 90);
        }
        w.ue(0); // sps id
        w.ue(s.chroma);
        if s.chroma == 3 {
            w.bit(false);
        }
        w.ue(s.width);
        w.ue(s.height);
        match s.window {
            Some(win) => {
                w.bit(true);
                for v in win {
                    w.ue(v);
                }
            }
            None => w.bit(false),
        }
        w.ue(0); // bit depths
        w.ue(0);
        w.ue(4); // log2_max_poc_lsb_minus4
        w.bit(true);
        for _ in 0..=s.sub_layers_minus1 {
            w.ue(4);
            w.ue(2);
            w.ue(0);
        }
        for v in [0, 3, 0, 3, 2, 2] {
            w.ue(v);
        }
        // scaling lists enabled, with data: every matrix explicit.
        w.bit(true);
        w.bit(true);
        for size_id in 0..4 {
            for _ in 0..(if size_id == 3 { 2 } else { 6 }) {
                w.bit(true);
                if size_id > 1 {
                    w.ue(0); // se 0
                }
                for _ in 0..(64.min(1 << (4 + (size_id << 1)))) {
                    w.ue(0);
                }
            }
        }
        w.bit(false); // amp
        w.bit(true); // sao
        w.bit(true); // pcm
        w.u(8, 0x77);
        w.ue(0);
        w.ue(0);
        w.bit(false);
        w.ue(s.rps.len() as u64 + u64::from(s.predicted_rps));
        for (i, set) in s.rps.iter().enumerate() {
            if i > 0 {
                w.bit(false); // not predicted
            }
            w.ue(set[0]);
            w.ue(set[1]);
            for _ in 0..set[0] + set[1] {
                w.ue(0);
                w.bit(true);
            }
        }
        if s.predicted_rps {
            w.bit(true);
            w.bit(false);
            w.ue(0);
            let prev = s.rps.last().map_or(0, |r| r[0] + r[1]);
            for _ in 0..=prev {
                w.bit(false); // not used
                w.bit(true); // use delta
            }
        }
        w.bit(true); // long-term present
        w.ue(2);
        w.u(2 * 9, 0);
        w.bit(true);
        w.bit(true);
        w.bit(true); // vui
        match s.sar {
            Some((idc, sw, sh)) => {
                w.bit(true);
                w.u(8, idc);
                if idc == 255 {
                    w.u(16, sw);
                    w.u(16, sh);
                }
            }
            None => w.bit(false),
        }
        w.bit(false); // overscan
        w.bit(true); // video signal type
        w.u(3, 5);
        w.bit(true);
        w.bit(true);
        w.u(24, 0x01_01_01);
        w.bit(false); // chroma loc
        w.bit(false);
        w.bit(s.field_seq);
        w.bit(false);
        w.bit(true); // default display window
        for _ in 0..4 {
            w.ue(1);
        }
        w.bit(s.timing);
        if s.timing {
            w.u(32, 1001);
            w.u(32, 60_000);
        }
        w.nal(NAL_SPS)
    }

    #[test]
    fn synthetic_sps_features() {
        let sps = Sps::parse(&make_sps(&SpsSpec {
            sub_layers_minus1: 2,
            rps: vec![vec![2, 1], vec![1, 0]],
            predicted_rps: true,
            sar: Some((255, 4, 3)),
            window: Some([0, 4, 0, 2]),
            ..SpsSpec::default()
        }))
        .unwrap();
        assert_eq!(sps.max_sub_layers, 3);
        assert_eq!((sps.width, sps.height), (1272, 716));
        assert_eq!(sps.sample_aspect, Some((4, 3)));
        assert_eq!(sps.max_num_reorder_pics, 2);
        let colour = sps.colour.unwrap();
        assert_eq!(
            (colour.colour_primaries, colour.full_range),
            (1, true),
            "{colour:?}"
        );
        assert!((sps.frame_rate().unwrap() - 59.94).abs() < 0.01);
        assert_eq!(sps.profile_tier_level.level_idc, 120);

        // Field-coded: two field pictures a frame.
        let sps = Sps::parse(&make_sps(&SpsSpec {
            field_seq: true,
            sar: Some((14, 0, 0)),
            ..SpsSpec::default()
        }))
        .unwrap();
        assert!(sps.field_seq);
        assert_eq!(sps.sample_aspect, Some((4, 3)));
        assert!((sps.frame_rate().unwrap() - 29.97).abs() < 0.01);

        // 4:2:2 crops chroma units of 2x1, 4:4:4 of 1x1.
        let sps = Sps::parse(&make_sps(&SpsSpec {
            chroma: 2,
            window: Some([1, 1, 1, 1]),
            ..SpsSpec::default()
        }))
        .unwrap();
        assert_eq!((sps.width, sps.height), (1276, 718));
        let sps = Sps::parse(&make_sps(&SpsSpec {
            chroma: 3,
            window: Some([1, 1, 1, 1]),
            ..SpsSpec::default()
        }))
        .unwrap();
        assert_eq!((sps.width, sps.height), (1278, 718));
    }

    #[test]
    fn absurd_sps_values_are_errors() {
        let big = Sps::parse(&make_sps(&SpsSpec {
            width: 100_000,
            ..SpsSpec::default()
        }));
        assert!(matches!(big, Err(HevcError::PictureSize { .. })), "{big:?}");
        let zero = Sps::parse(&make_sps(&SpsSpec {
            height: 0,
            ..SpsSpec::default()
        }));
        assert!(matches!(zero, Err(HevcError::PictureSize { .. })));
        let window = Sps::parse(&make_sps(&SpsSpec {
            window: Some([320, 320, 0, 0]),
            ..SpsSpec::default()
        }));
        assert_eq!(window, Err(HevcError::ConformanceWindowTooLarge));
        let rps = Sps::parse(&make_sps(&SpsSpec {
            rps: vec![vec![17, 0]],
            ..SpsSpec::default()
        }));
        assert!(
            matches!(
                rps,
                Err(HevcError::OutOfRange {
                    field: "num_negative_pics",
                    ..
                })
            ),
            "{rps:?}"
        );
        let chroma = Sps::parse(&make_sps(&SpsSpec {
            chroma: 4,
            ..SpsSpec::default()
        }));
        assert!(matches!(
            chroma,
            Err(HevcError::OutOfRange {
                field: "chroma_format_idc",
                ..
            })
        ));
        // 40 zero bits: an exp-Golomb code too long.
        let mut nal = vec![NAL_SPS << 1, 1, 0x01];
        nal.extend([0; 20]);
        assert!(Sps::parse(&nal).is_err());
    }

    #[test]
    fn irap_detection() {
        for t in 0..64u8 {
            assert_eq!(is_irap(t), (16..=23).contains(&t), "type {t}");
        }
        let idr = [NAL_IDR_N_LP << 1, 1, 0xaf];
        let trail = [2u8, 1, 0xd0];
        let mut sample = vec![0, 0, 0, 3];
        sample.extend(trail);
        assert_eq!(sample_is_irap(&sample, 4), Ok(false));
        sample.extend([0, 0, 0, 3]);
        sample.extend(idr);
        assert_eq!(sample_is_irap(&sample, 4), Ok(true));
        let cra = [NAL_CRA << 1, 1, 0x80];
        assert_eq!(sample_is_irap(&[&[0, 3][..], &cra].concat(), 2), Ok(true));
        // Hostile length prefixes.
        assert!(sample_is_irap(&[0, 0, 0, 9, 1], 4).is_err());
        assert!(sample_is_irap(&[0, 0, 0, 0], 4).is_err());
        assert!(sample_is_irap(&[0, 0, 1, 1], 3).is_err());
        assert!(sample_is_irap(&[1, 1], 0).is_err());
    }

    proptest! {
        #[test]
        fn sps_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut nal = vec![NAL_SPS << 1, 1];
            nal.extend(data);
            let _ = Sps::parse(&nal);
            nal[0] = NAL_VPS << 1;
            let _ = Vps::parse(&nal);
        }

        #[test]
        fn record_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = video_config(Bytes::from(data.clone()));
            // With a valid fixed part, so the arrays are reached.
            let mut v = hex(HVCC_MAIN_360P30)[..22].to_vec();
            v.extend(data);
            let _ = video_config(Bytes::from(v));
        }

        #[test]
        fn mutated_real_record_never_panics(at in 0usize..200, byte in any::<u8>()) {
            let mut v = hex(HVCC_MAIN_360P30);
            let i = at % v.len();
            v[i] = byte;
            let _ = video_config(Bytes::from(v));
        }
    }
}
