//! `ladder bench --source FILE`: a user's file (MP4, FLV, MPEG-TS, whatever
//! libavformat opens) with H.264 video and, optionally, AAC audio, read into
//! one loop of [`Source`] tags.
//!
//! The loop starts at the file's first video IDR (audio before it is
//! dropped) and ends one picture interval after its last video picture;
//! audio beyond is dropped. H.264 in AVCC form (MP4, FLV) keeps its avcC;
//! Annex B (MPEG-TS) is turned into AVCC with an avcC built from its first
//! SPS and PPS, which are taken out of the samples along with access unit
//! delimiters. AAC with an AudioSpecificConfig (MP4, FLV) is taken as is;
//! ADTS (MPEG-TS) loses its headers and the first one becomes the
//! AudioSpecificConfig. At most [`MAX_FILE_SECONDS`] of the file and
//! [`MAX_FILE_BYTES`] of media are read: the loop is held in memory.
//!
//! An FFI file (ARCHITECTURE.md, convention 7): ffmpeg-next 7.1 has no
//! accessor for `AVCodecParameters.extradata`, so [`extradata`] reads it in
//! one `unsafe` block.

use super::source::{AudioInfo, AudioSample, Source, SourceError, SourceInfo, VideoSample};
use crate::media::aac::AudioSpecificConfig;
use crate::media::avc::{self, NAL_IDR, NAL_PPS, NAL_SPS};
use bytes::Bytes;
use ffmpeg_next as ffmpeg;
use std::path::Path;

/// Most media time read from a file, seconds: the loop is held in memory, and
/// a minute or two of a source is all a bench needs.
pub const MAX_FILE_SECONDS: i64 = 120;

/// Most media bytes read from a file (the loop is held in memory once, shared
/// by every channel).
pub const MAX_FILE_BYTES: usize = 512 << 20;

/// H.264 access unit delimiter (ITU-T H.264 table 7-1): dropped from samples,
/// as CMAF samples do not carry it.
const NAL_AUD: u8 = 9;

/// The stream's codec extradata (`AVCodecParameters.extradata`), copied.
fn extradata(parameters: &ffmpeg::codec::Parameters) -> Vec<u8> {
    // Safety: `as_ptr` gives the AVCodecParameters that `parameters` keeps
    // alive (it borrows the stream of an open input) for the whole block; it
    // is only read. libavformat keeps `extradata` either null or pointing to
    // `extradata_size` readable bytes; both are checked before the slice is
    // made, and the bytes are copied out before the block ends.
    unsafe {
        let p = parameters.as_ptr();
        let data = (*p).extradata;
        let size = (*p).extradata_size;
        if data.is_null() || size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(data, size as usize).to_vec()
    }
}

/// An ADTS header's AudioSpecificConfig and header length (ISO/IEC 13818-7
/// §6.2 `adts_fixed_header`), or `None` when `frame` does not start with one.
pub fn adts_config(frame: &[u8]) -> Option<([u8; 2], usize)> {
    let h = frame.get(..7)?;
    if h[0] != 0xFF || h[1] & 0xF0 != 0xF0 {
        return None;
    }
    let protection_absent = h[1] & 1 == 1;
    let object_type = ((h[2] >> 6) & 3) + 1;
    let index = (h[2] >> 2) & 0xF;
    let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
    let header = if protection_absent { 7 } else { 9 };
    if frame.len() < header {
        return None;
    }
    Some((
        [
            (object_type << 3) | (index >> 1),
            ((index & 1) << 7) | (channels << 3),
        ],
        header,
    ))
}

fn file_error(path: &Path, message: impl Into<String>) -> SourceError {
    SourceError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Read `path` into a loop (see the module docs).
pub fn read(path: &Path) -> Result<Source, SourceError> {
    use ffmpeg::media::Type;
    let mut input =
        ffmpeg::format::input(&path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let (video_index, video_tb, video_extra) = {
        let s = input
            .streams()
            .best(Type::Video)
            .ok_or_else(|| file_error(path, "no video stream"))?;
        if s.parameters().id() != ffmpeg::codec::Id::H264 {
            return Err(file_error(
                path,
                format!(
                    "the video is {:?}; the bench takes H.264",
                    s.parameters().id()
                ),
            ));
        }
        (s.index(), s.time_base(), extradata(&s.parameters()))
    };
    let audio_stream = input
        .streams()
        .best(Type::Audio)
        .filter(|s| s.parameters().id() == ffmpeg::codec::Id::AAC)
        .map(|s| (s.index(), s.time_base(), extradata(&s.parameters())));

    // avcC from the container, or (Annex B) from the first SPS and PPS
    let mut record: Option<Bytes> =
        (video_extra.first() == Some(&1)).then(|| Bytes::from(video_extra.clone()));
    let annexb = record.is_none();
    let (mut sps, mut pps): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let mut asc: Option<Vec<u8>> = audio_stream
        .as_ref()
        .and_then(|(_, _, extra)| (!extra.is_empty()).then(|| extra.clone()));

    let mut video: Vec<VideoSample> = Vec::new();
    let mut audio: Vec<AudioSample> = Vec::new();
    let mut bytes = 0usize;
    let mut first_dts: Option<i64> = None;
    let ms = |ts: i64, tb: ffmpeg::Rational| super::source::ticks_to_ms(ts, tb.0, tb.1);
    for (stream, packet) in input.packets() {
        let Some(data) = packet.data() else {
            continue;
        };
        if stream.index() == video_index {
            let (Some(dts), Some(pts)) =
                (packet.dts().or(packet.pts()), packet.pts().or(packet.dts()))
            else {
                continue;
            };
            let (dts, pts) = (ms(dts, video_tb), ms(pts, video_tb));
            let (data, keyframe) = if annexb {
                let mut idr = false;
                for nal in avc::annexb_nal_units(data) {
                    match avc::nal_type(nal) {
                        Some(NAL_SPS) if sps.is_none() => sps = Some(nal.to_vec()),
                        Some(NAL_PPS) if pps.is_none() => pps = Some(nal.to_vec()),
                        Some(NAL_IDR) => idr = true,
                        _ => {}
                    }
                }
                let keep = |t: u8| !matches!(t, NAL_SPS | NAL_PPS | NAL_AUD);
                (avc::annexb_to_avcc(data, keep), idr)
            } else {
                (Bytes::copy_from_slice(data), packet.is_key())
            };
            if first_dts.is_none() {
                if !keyframe {
                    continue;
                }
                first_dts = Some(dts);
            }
            if dts - first_dts.unwrap_or(dts) > MAX_FILE_SECONDS * 1000 {
                break;
            }
            bytes += data.len();
            video.push(VideoSample {
                dts_ms: dts,
                pts_ms: pts,
                keyframe,
                data,
            });
        } else if let Some((index, tb, _)) = &audio_stream {
            if stream.index() != *index {
                continue;
            }
            let Some(ts) = packet.pts().or(packet.dts()) else {
                continue;
            };
            let frame = match adts_config(data) {
                Some((config, header)) => {
                    asc.get_or_insert_with(|| config.to_vec());
                    &data[header..]
                }
                None => data,
            };
            bytes += frame.len();
            audio.push(AudioSample {
                ts_ms: ms(ts, *tb),
                data: Bytes::copy_from_slice(frame),
            });
        }
        if bytes > MAX_FILE_BYTES {
            break;
        }
    }

    if annexb {
        match (&sps, &pps) {
            (Some(s), Some(p)) => record = Some(avc::build_avcc(&[s], &[p])),
            _ => return Err(file_error(path, "no H.264 SPS and PPS found")),
        }
    }
    let record = record.ok_or_else(|| file_error(path, "no H.264 configuration"))?;
    let config = avc::video_config(record)
        .map_err(|e| file_error(path, format!("H.264 configuration: {e}")))?;
    if video.len() < 2 {
        return Err(file_error(
            path,
            "fewer than two H.264 pictures after the first IDR",
        ));
    }
    // one picture interval after the last picture (the median interval)
    let mut steps: Vec<i64> = video
        .windows(2)
        .map(|w| w[1].dts_ms - w[0].dts_ms)
        .collect();
    steps.sort_unstable();
    let step = steps[steps.len() / 2].max(1);
    let first = video[0].dts_ms;
    let last = video.iter().map(|v| v.dts_ms).max().unwrap_or(first);
    let loop_ms = u32::try_from(last - first + step).unwrap_or(u32::MAX);
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let audio_info = match &asc {
        Some(asc) => {
            let config = AudioSpecificConfig::parse(asc)
                .map_err(|e| file_error(path, format!("AAC configuration: {e}")))?;
            Some(AudioInfo {
                codec: config.codec_string(),
                sample_rate: config.sample_rate,
                channels: config.channels,
                kbps: 0.0,
            })
        }
        None => None,
    };
    let info = SourceInfo {
        kind: "file",
        name,
        path: Some(path.display().to_string()),
        width: 0,
        height: 0,
        fps: 0.0,
        video_codec: String::new(),
        video_kbps: 0.0,
        b_frames: false,
        gop_seconds: 0.0,
        loop_seconds: 0.0,
        audio: audio_info,
    };
    let audio = asc.map(|a| (Bytes::from(a), &audio[..]));
    Ok(Source::from_samples(info, config, &video, audio, loop_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_headers_become_audio_specific_configs() {
        // AAC-LC, 48 kHz (index 3), stereo, no CRC, frame length 0x0100
        let frame = [0xFF, 0xF1, 0x4C, 0x80, 0x20, 0x1F, 0xFC, 0xAA, 0xBB];
        assert_eq!(adts_config(&frame), Some(([0x11, 0x90], 7)));
        // with a CRC the header is 9 bytes
        let crc = [0xFF, 0xF0, 0x4C, 0x80, 0x20, 0x1F, 0xFC, 0, 0, 0xAA];
        assert_eq!(adts_config(&crc), Some(([0x11, 0x90], 9)));
        // raw AAC, short input
        assert_eq!(adts_config(&[0x21, 0x10, 0x04, 0, 0, 0, 0]), None);
        assert_eq!(adts_config(&[0xFF, 0xF1]), None);
    }
}
