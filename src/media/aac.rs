//! AAC AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) and GASpecificConfig (§4.4.1).
//!
//! The AAC sequence header of an FLV/RTMP stream carries the AudioSpecificConfig
//! that later goes, unchanged, into the CMAF `esds` box. Parsed here: the object
//! type (5 bits, escape 31 → 32 + 6 bits), the sampling frequency index (15 →
//! an explicit 24-bit rate), the channel configuration (0 → a program config
//! element, §4.4.1.1, counted for its channels), explicit SBR (object type 5) and
//! PS (29) signalling with the extension rate and the underlying object type,
//! GASpecificConfig's frameLengthFlag (960 or 1024 samples), and the backward
//! compatible SBR/PS sync extension (§1.6.5.2, `0x2b7`/`0x548`) that FFmpeg and
//! others append.
//!
//! The core sampling rate is what the CMAF track is timed in: SBR doubles the
//! output rate, but an AAC access unit is still 1024 (or 960) core samples.

use bytes::Bytes;
use thiserror::Error;

use super::avc::BitReader;
use super::{AudioCodec, AudioConfig};

/// Largest explicit sampling rate accepted, in Hz. The rate becomes the CMAF
/// track timescale; an escape-coded rate can claim up to 16,777,215 Hz, and a
/// publisher claiming that is broken or hostile (AAC tops out at 96 kHz).
pub const MAX_SAMPLE_RATE: u32 = 192_000;

/// §1.6.3.4, Table 1.18: rates for sampling frequency indexes 0..=12.
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Audio object types (Table 1.17) with the names an operator will recognise.
const AOT_AAC_MAIN: u8 = 1;
const AOT_AAC_LC: u8 = 2;
const AOT_AAC_SSR: u8 = 3;
const AOT_AAC_LTP: u8 = 4;
/// Spectral Band Replication: HE-AAC (v1).
pub const AOT_SBR: u8 = 5;
/// Parametric Stereo: HE-AACv2.
pub const AOT_PS: u8 = 29;

fn object_type_name(aot: u8) -> &'static str {
    match aot {
        0 => "null",
        1 => "AAC Main",
        2 => "AAC LC",
        3 => "AAC SSR",
        4 => "AAC LTP",
        5 => "SBR",
        6 => "AAC Scalable",
        7 => "TwinVQ",
        8 => "CELP",
        9 => "HVXC",
        17 => "ER AAC LC",
        19 => "ER AAC LTP",
        20 => "ER AAC Scalable",
        22 => "ER BSAC",
        23 => "ER AAC LD",
        29 => "PS",
        32 => "MP1 layer 1",
        33 => "MP2 layer 2",
        34 => "MP3 layer 3",
        39 => "ER AAC ELD",
        42 => "USAC (xHE-AAC)",
        _ => "reserved or uncommon",
    }
}

/// Errors in an AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AacError {
    #[error("AAC AudioSpecificConfig is empty")]
    Empty,
    #[error("AAC AudioSpecificConfig is truncated (while reading {0})")]
    Truncated(&'static str),
    #[error("AAC sampling frequency index {0} is reserved")]
    ReservedSamplingFrequencyIndex(u8),
    #[error("AAC sampling rate {0} Hz is out of range (1..={MAX_SAMPLE_RATE})")]
    SampleRateOutOfRange(u32),
    #[error("AAC channel configuration {0} is reserved")]
    ReservedChannelConfiguration(u8),
    #[error("AAC program config element declares no channels")]
    NoChannels,
    #[error("AAC audio object type {aot} ({name}) is not supported: Ladder accepts AAC-LC, HE-AAC (SBR) and HE-AACv2 (PS)", name = object_type_name(*.aot))]
    UnsupportedObjectType { aot: u8 },
}

/// A parsed AudioSpecificConfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// The object type to advertise: 5 when SBR is present, 29 when PS is,
    /// otherwise the core type.
    pub object_type: u8,
    /// The underlying AAC object type (2 for LC).
    pub core_object_type: u8,
    /// The core sampling rate in Hz.
    pub sample_rate: u32,
    /// The SBR output rate, when SBR is signalled.
    pub extension_sample_rate: Option<u32>,
    /// channelConfiguration as coded (0: a program config element follows).
    pub channel_configuration: u8,
    /// Channels of the core decoder (from the configuration or the PCE).
    pub channels: u8,
    pub sbr: bool,
    pub ps: bool,
    /// Samples per frame: 1024, or 960 with frameLengthFlag.
    pub frame_samples: u32,
}

struct Reader<'a> {
    bits: BitReader<'a>,
}

impl Reader<'_> {
    fn u(&mut self, n: u32, what: &'static str) -> Result<u32, AacError> {
        self.bits.bits(n).ok_or(AacError::Truncated(what))
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, AacError> {
        self.bits.bit().ok_or(AacError::Truncated(what))
    }

    /// GetAudioObjectType(): 5 bits, 31 escapes to 32 + 6 bits.
    fn object_type(&mut self) -> Result<u8, AacError> {
        let aot = self.u(5, "audioObjectType")? as u8;
        if aot == 31 {
            Ok((self.u(6, "audioObjectTypeExt")? as u8).saturating_add(32))
        } else {
            Ok(aot)
        }
    }

    /// samplingFrequencyIndex, with 15 escaping to a 24-bit rate.
    fn sample_rate(&mut self) -> Result<u32, AacError> {
        let index = self.u(4, "samplingFrequencyIndex")? as u8;
        let rate = match index {
            15 => self.u(24, "samplingFrequency")?,
            i => *SAMPLE_RATES
                .get(usize::from(i))
                .ok_or(AacError::ReservedSamplingFrequencyIndex(i))?,
        };
        if rate == 0 || rate > MAX_SAMPLE_RATE {
            return Err(AacError::SampleRateOutOfRange(rate));
        }
        Ok(rate)
    }

    /// §4.4.1.1 program_config_element(): returns the channel count.
    fn program_config_element(&mut self) -> Result<u8, AacError> {
        const W: &str = "program_config_element";
        self.u(4 + 2 + 4, W)?; // element_instance_tag, object_type, sampling_frequency_index
        let front = self.u(4, W)?;
        let side = self.u(4, W)?;
        let back = self.u(4, W)?;
        let lfe = self.u(2, W)?;
        let assoc = self.u(3, W)?;
        let cc = self.u(4, W)?;
        if self.flag(W)? {
            self.u(4, W)?; // mono_mixdown_element_number
        }
        if self.flag(W)? {
            self.u(4, W)?; // stereo_mixdown_element_number
        }
        if self.flag(W)? {
            self.u(3, W)?; // matrix_mixdown_idx, pseudo_surround_enable
        }
        let mut channels = lfe;
        for _ in 0..front.saturating_add(side).saturating_add(back) {
            channels = channels.saturating_add(if self.flag(W)? { 2 } else { 1 });
            self.u(4, W)?;
        }
        // lfe element tags, assoc data tags, cc elements (is_ind_sw + tag).
        let tags = lfe
            .saturating_add(assoc)
            .saturating_mul(4)
            .saturating_add(cc.saturating_mul(5));
        self.bits
            .skip(tags as usize)
            .ok_or(AacError::Truncated(W))?;
        // At most 45 elements of 2 channels plus 3 LFE: fits in u8.
        u8::try_from(channels).map_err(|_| AacError::NoChannels)
    }
}

/// Channels for channelConfiguration 1..=14 (Table 1.19, with the 2009+ additions).
fn channels_for(config: u8) -> Option<u8> {
    match config {
        1..=6 => Some(config),
        7 => Some(8),
        11 => Some(7),
        12 | 14 => Some(8),
        13 => Some(24),
        _ => None,
    }
}

impl AudioSpecificConfig {
    pub fn parse(asc: &[u8]) -> Result<Self, AacError> {
        if asc.is_empty() {
            return Err(AacError::Empty);
        }
        let mut r = Reader {
            bits: BitReader::new(asc),
        };
        let mut aot = r.object_type()?;
        let sample_rate = r.sample_rate()?;
        let channel_configuration = r.u(4, "channelConfiguration")? as u8;
        let mut sbr = false;
        let mut ps = false;
        let mut extension_sample_rate = None;
        if aot == AOT_SBR || aot == AOT_PS {
            sbr = true;
            ps = aot == AOT_PS;
            extension_sample_rate = Some(r.sample_rate()?);
            aot = r.object_type()?;
        }
        if !matches!(aot, AOT_AAC_MAIN | AOT_AAC_LC | AOT_AAC_SSR | AOT_AAC_LTP) {
            return Err(AacError::UnsupportedObjectType { aot });
        }

        // GASpecificConfig (§4.4.1).
        let frame_samples = if r.flag("frameLengthFlag")? {
            960
        } else {
            1024
        };
        if r.flag("dependsOnCoreCoder")? {
            r.u(14, "coreCoderDelay")?;
        }
        let _extension_flag = r.flag("extensionFlag")?; // 0 for the non-ER types above
        let channels = if channel_configuration == 0 {
            match r.program_config_element()? {
                0 => return Err(AacError::NoChannels),
                n => n,
            }
        } else {
            channels_for(channel_configuration).ok_or(AacError::ReservedChannelConfiguration(
                channel_configuration,
            ))?
        };

        // Backward-compatible signalling (§1.6.5.2): optional, so a malformed
        // tail is ignored rather than failing a config the core decoder can use.
        // It follows the PCE only after byte alignment and a comment field, which
        // nobody sends; only the common case (no PCE) is read.
        if !sbr && channel_configuration != 0 {
            if let Some((ext_rate, has_ps)) = sync_extension(&mut r) {
                sbr = true;
                ps = has_ps;
                extension_sample_rate = Some(ext_rate);
            }
        }

        let object_type = if ps {
            AOT_PS
        } else if sbr {
            AOT_SBR
        } else {
            aot
        };
        Ok(AudioSpecificConfig {
            object_type,
            core_object_type: aot,
            sample_rate,
            extension_sample_rate,
            channel_configuration,
            channels,
            sbr,
            ps,
            frame_samples,
        })
    }

    /// RFC 6381 codec string: `mp4a.40.<object type>`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// The SBR/PS sync extension, when present and saying SBR is on:
/// `Some((extension rate, ps present))`.
fn sync_extension(r: &mut Reader<'_>) -> Option<(u32, bool)> {
    if r.bits.remaining() < 16 || r.u(11, "syncExtensionType").ok()? != 0x2b7 {
        return None;
    }
    if r.object_type().ok()? != AOT_SBR || !r.flag("sbrPresentFlag").ok()? {
        return None;
    }
    let rate = r.sample_rate().ok()?;
    let ps = r.bits.remaining() >= 12
        && r.u(11, "syncExtensionType").ok() == Some(0x548)
        && r.flag("psPresentFlag").ok() == Some(true);
    Some((rate, ps))
}

/// Parse an AudioSpecificConfig into the configuration the packager uses.
///
/// `channels` is the decoder's output channel count: 2 for HE-AACv2, whose
/// parametric stereo rides on a mono core.
pub fn audio_config(asc: Bytes) -> Result<AudioConfig, AacError> {
    let parsed = AudioSpecificConfig::parse(&asc)?;
    Ok(AudioConfig {
        codec: AudioCodec::Aac,
        object_type: parsed.object_type,
        sample_rate: parsed.sample_rate,
        channels: if parsed.ps { 2 } else { parsed.channels },
        frame_samples: parsed.frame_samples,
        codec_string: parsed.codec_string(),
        asc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// FFmpeg's native AAC encoder, 48 kHz stereo, as sent in its FLV sequence
    /// header: LC, then a sync extension saying "no SBR".
    const ASC_LC_48K_STEREO_FFMPEG: [u8; 5] = [0x11, 0x90, 0x56, 0xe5, 0x00];
    /// The same encoder, 44.1 kHz mono.
    const ASC_LC_44K_MONO_FFMPEG: [u8; 5] = [0x12, 0x08, 0x56, 0xe5, 0x00];

    #[test]
    fn lc_stereo_from_ffmpeg() {
        let a = AudioSpecificConfig::parse(&ASC_LC_48K_STEREO_FFMPEG).unwrap();
        assert_eq!(a.object_type, 2);
        assert_eq!(a.sample_rate, 48_000);
        assert_eq!(a.channels, 2);
        assert_eq!(a.frame_samples, 1024);
        assert!(!a.sbr && !a.ps);
        assert_eq!(a.extension_sample_rate, None);
        assert_eq!(a.codec_string(), "mp4a.40.2");

        let cfg = audio_config(Bytes::from_static(&ASC_LC_44K_MONO_FFMPEG)).unwrap();
        assert_eq!((cfg.sample_rate, cfg.channels), (44_100, 1));
        assert_eq!(cfg.codec_string, "mp4a.40.2");
        assert_eq!(cfg.asc.as_ref(), &ASC_LC_44K_MONO_FFMPEG);
    }

    #[test]
    fn two_byte_lc() {
        // 0x1210: LC, 44.1 kHz, stereo (the most common ASC there is).
        let a = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((a.object_type, a.sample_rate, a.channels), (2, 44_100, 2));
    }

    #[test]
    fn frame_length_960() {
        // LC, 48 kHz, stereo, frameLengthFlag set.
        let a = AudioSpecificConfig::parse(&[0x11, 0x94]).unwrap();
        assert_eq!(a.frame_samples, 960);
    }

    #[test]
    fn explicit_sbr() {
        // AOT 5, core 24 kHz (6), stereo, extension 48 kHz (3), AOT 2, GA zeros.
        // 00101 0110 0010 0011 00010 000 -> 0x2b 0x11 0x88 0x00
        let a = AudioSpecificConfig::parse(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(a.object_type, AOT_SBR);
        assert_eq!(a.core_object_type, 2);
        assert_eq!(a.sample_rate, 24_000);
        assert_eq!(a.extension_sample_rate, Some(48_000));
        assert_eq!(a.channels, 2);
        assert!(a.sbr && !a.ps);
        assert_eq!(a.codec_string(), "mp4a.40.5");
    }

    #[test]
    fn explicit_ps() {
        // AOT 29, core 22.05 kHz (7), mono, extension 44.1 kHz (4), AOT 2.
        // 11101 0111 0001 0100 00010 000 -> 0xeb 0x8a 0x08 0x00
        let asc = [0xeb, 0x8a, 0x08, 0x00];
        let a = AudioSpecificConfig::parse(&asc).unwrap();
        assert_eq!(a.object_type, AOT_PS);
        assert_eq!(
            (a.sample_rate, a.extension_sample_rate),
            (22_050, Some(44_100))
        );
        assert!(a.sbr && a.ps);
        let cfg = audio_config(Bytes::copy_from_slice(&asc)).unwrap();
        assert_eq!(cfg.codec_string, "mp4a.40.29");
        assert_eq!(cfg.channels, 2, "PS output is stereo");
        assert_eq!(cfg.sample_rate, 22_050, "timescale is the core rate");
    }

    #[test]
    fn implicit_sbr_and_ps_sync_extension() {
        // LC 24 kHz stereo, then 0x2b7, AOT 5, sbr=1, ext index 3 (48 kHz),
        // then 0x548, ps=1.
        // 00010 0110 0010 000 | 01010110111 00101 1 0011 | 10101001000 1 + pad
        let bits = "0001001100010000010101101110010110011101010010001";
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let a = AudioSpecificConfig::parse(&bytes).unwrap();
        assert_eq!(a.core_object_type, 2);
        assert!(a.sbr && a.ps);
        assert_eq!(a.sample_rate, 24_000);
        assert_eq!(a.extension_sample_rate, Some(48_000));
        assert_eq!(a.codec_string(), "mp4a.40.29");
    }

    #[test]
    fn explicit_rate_and_escape_object_type() {
        // LC, index 15, 0x00bb80 (48000), stereo, GA zeros.
        // 00010 1111 000000001011101110000000 0010 000
        let a = AudioSpecificConfig::parse(&[0x17, 0x80, 0x5d, 0xc0, 0x10]).unwrap();
        assert_eq!(a.sample_rate, 48_000);
        assert_eq!(a.channels, 2);
        // Explicit 0 Hz.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x17, 0x80, 0x00, 0x00, 0x10]),
            Err(AacError::SampleRateOutOfRange(0))
        );
        // Escape: 31 then 6 bits 10 -> 42 (USAC).
        // 11111 001010 ...
        assert_eq!(
            AudioSpecificConfig::parse(&[0xf9, 0x40, 0x00]),
            Err(AacError::UnsupportedObjectType { aot: 42 })
        );
    }

    #[test]
    fn program_config_element_channels() {
        // LC, 48 kHz, channelConfiguration 0, GA zeros, then a PCE with
        // 2 front elements (SCE + CPE), 1 back CPE, 1 LFE: 6 channels.
        let mut bits = String::from("0001000110000");
        bits += "000"; // frameLength, dependsOnCoreCoder, extensionFlag
        bits += "0000"; // element_instance_tag
        bits += "01"; // object_type
        bits += "0011"; // sfi
        bits += "0010"; // front
        bits += "0000"; // side
        bits += "0001"; // back
        bits += "01"; // lfe
        bits += "000"; // assoc
        bits += "0000"; // cc
        bits += "000"; // mixdowns
        bits += "00000"; // front SCE
        bits += "10001"; // front CPE
        bits += "10010"; // back CPE
        bits += "0000"; // lfe tag
        let mut bytes = vec![0u8; bits.len().div_ceil(8) + 1];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let a = AudioSpecificConfig::parse(&bytes).unwrap();
        assert_eq!((a.channel_configuration, a.channels), (0, 6));
        // The same PCE cut short.
        assert_eq!(
            AudioSpecificConfig::parse(&bytes[..5]),
            Err(AacError::Truncated("program_config_element"))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(AudioSpecificConfig::parse(&[]), Err(AacError::Empty));
        assert_eq!(
            AudioSpecificConfig::parse(&[0x12]),
            Err(AacError::Truncated("samplingFrequencyIndex"))
        );
        // Index 13 is reserved: 00010 1101 ...
        assert_eq!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AacError::ReservedSamplingFrequencyIndex(13))
        );
        // Channel configuration 8 is reserved: 00010 0011 1000 000
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11, 0xc0]),
            Err(AacError::ReservedChannelConfiguration(8))
        );
        // MP3 as an object type (34): 11111 000010
        let err = AudioSpecificConfig::parse(&[0xf8, 0x40, 0x00]).unwrap_err();
        assert_eq!(err, AacError::UnsupportedObjectType { aot: 34 });
        assert!(err.to_string().contains("MP3"), "{err}");
        // AOT 0.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x01, 0x90]),
            Err(AacError::UnsupportedObjectType { aot: 0 })
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(a) = AudioSpecificConfig::parse(&data) {
                prop_assert!(a.sample_rate > 0 && a.sample_rate <= MAX_SAMPLE_RATE);
                prop_assert!(a.channels > 0);
                prop_assert!(a.frame_samples == 1024 || a.frame_samples == 960);
            }
        }
    }
}
