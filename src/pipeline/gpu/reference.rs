//! The GPU self-test's fixtures and references (docs/GPU-TESTS.md), with no FFmpeg.
//!
//! - Fixtures: small H.264 streams in FLV (tests/fixtures/gpu/*.flv, made by
//!   scripts/gpu-fixtures.sh), embedded here and read with the ingest demuxer, so the
//!   self-test sees what a publisher's stream becomes. A stream may carry several
//!   sequence headers (a size change): one [`Segment`] each.
//! - References: per fixture, every picture libavcodec decodes (the CPU decoder,
//!   `pipeline::cpu::decode`) in presentation order, as `index pts_ms width height md5`
//!   lines (tests/fixtures/gpu/*.md5). The md5 covers the I420 planes Y, U, V, rows
//!   without padding. Written and kept current by the test `gpu_references` (in
//!   `make test`).
//! - MD5 (RFC 1321) and PSNR, for the comparison.

use std::sync::Arc;

use bytes::Bytes;

use crate::media::{
    Demuxer, MediaEvent, RtmpTimestamp, Timestamp, VideoConfig, VideoFrame, MILLIS,
};
use crate::pipeline::frame::Picture;

/// One embedded test stream and its reference.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    /// e.g. `high-bframes` (the file stem under tests/fixtures/gpu/).
    pub name: &'static str,
    /// The FLV file.
    pub flv: &'static [u8],
    /// The reference (`*.md5`).
    pub reference: &'static str,
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            flv: include_bytes!(concat!("../../../tests/fixtures/gpu/", $name, ".flv")),
            reference: include_str!(concat!("../../../tests/fixtures/gpu/", $name, ".md5")),
        }
    };
}

/// Every fixture: Baseline (CAVLC), Main (CABAC), High (B-frames, pyramid, 8x8
/// transform), and a stream whose picture size changes twice (320x240, 480x270,
/// 240x180, each with its own sequence header).
pub const FIXTURES: [Fixture; 4] = [
    fixture!("baseline"),
    fixture!("main-cabac"),
    fixture!("high-bframes"),
    fixture!("size-change"),
];

/// The fixture named `name`.
pub fn fixture(name: &str) -> Option<&'static Fixture> {
    FIXTURES.iter().find(|f| f.name == name)
}

/// What is wrong with a fixture or a reference file.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("not an FLV file")]
    NotFlv,
    #[error("FLV tag at byte {0} runs past the end")]
    Truncated(usize),
    #[error("FLV video tag at {ms} ms: {detail}")]
    Demux { ms: u32, detail: String },
    #[error("video before any sequence header")]
    NoConfig,
    #[error("reference line {line}: {detail}")]
    Line { line: usize, detail: String },
}

/// Access units under one sequence header.
#[derive(Debug, Clone)]
pub struct Segment {
    pub config: Arc<VideoConfig>,
    pub frames: Vec<VideoFrame>,
}

/// Reads an FLV file (Adobe FLV spec v10.1, annex E: header, then tags each followed by
/// its size) and feeds the video tags to the ingest demuxer.
pub fn read_flv(file: &[u8]) -> Result<Vec<Segment>, ReferenceError> {
    if file.len() < 13 || &file[..3] != b"FLV" {
        return Err(ReferenceError::NotFlv);
    }
    let header = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    let mut at = header + 4; // PreviousTagSize0
    let mut demuxer = Demuxer::new(Timestamp::zero(MILLIS));
    let mut segments: Vec<Segment> = Vec::new();
    while at + 11 <= file.len() {
        let tag = &file[at..at + 11];
        let size = usize::from(tag[1]) << 16 | usize::from(tag[2]) << 8 | usize::from(tag[3]);
        let ms = u32::from(tag[7]) << 24
            | u32::from(tag[4]) << 16
            | u32::from(tag[5]) << 8
            | u32::from(tag[6]);
        let body = file
            .get(at + 11..at + 11 + size)
            .ok_or(ReferenceError::Truncated(at))?;
        if tag[0] == 9 {
            let event = demuxer
                .video(RtmpTimestamp(ms), Bytes::copy_from_slice(body))
                .map_err(|e| ReferenceError::Demux {
                    ms,
                    detail: e.to_string(),
                })?;
            match event {
                Some(MediaEvent::VideoConfig(config)) => segments.push(Segment {
                    config,
                    frames: Vec::new(),
                }),
                Some(MediaEvent::Video(frame)) => segments
                    .last_mut()
                    .ok_or(ReferenceError::NoConfig)?
                    .frames
                    .push(frame),
                _ => {}
            }
        }
        at += 11 + size + 4;
    }
    Ok(segments)
}

/// One reference picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPicture {
    pub pts_ms: i64,
    pub width: u32,
    pub height: u32,
    /// Lower-case hex md5 of the I420 planes ([`picture_md5`]).
    pub md5: String,
}

/// The reference file's text: a comment header, then one line per picture.
pub fn format_reference(fixture: &str, pictures: &[RefPicture]) -> String {
    let mut out = format!(
        "# {fixture}: every picture libavcodec decodes (pipeline::cpu::decode), presentation order\n\
         # index pts_ms width height md5(I420: Y, U, V rows without padding)\n"
    );
    for (i, p) in pictures.iter().enumerate() {
        out += &format!("{i} {} {} {} {}\n", p.pts_ms, p.width, p.height, p.md5);
    }
    out
}

/// Parses [`format_reference`]'s text.
pub fn parse_reference(text: &str) -> Result<Vec<RefPicture>, ReferenceError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_err = |detail: &str| ReferenceError::Line {
            line: n + 1,
            detail: detail.to_owned(),
        };
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [index, pts, w, h, md5] = f[..] else {
            return Err(line_err("expected 5 fields"));
        };
        if index.parse::<usize>().ok() != Some(out.len()) {
            return Err(line_err("index out of sequence"));
        }
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(line_err("not an md5"));
        }
        out.push(RefPicture {
            pts_ms: pts.parse().map_err(|_| line_err("bad pts"))?,
            width: w.parse().map_err(|_| line_err("bad width"))?,
            height: h.parse().map_err(|_| line_err("bad height"))?,
            md5: md5.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// The md5 of a picture's I420 planes (Y, U, V; each row's `width` bytes, no padding).
pub fn picture_md5(picture: &Picture) -> String {
    let mut md5 = Md5::new();
    for plane in &picture.planes {
        for y in 0..plane.height {
            md5.update(plane.row(y));
        }
    }
    hex(&md5.finish())
}

/// A picture's reference entry.
pub fn ref_picture(picture: &Picture) -> RefPicture {
    RefPicture {
        pts_ms: picture.pts.map_or(-1, Timestamp::as_millis),
        width: picture.width,
        height: picture.height,
        md5: picture_md5(picture),
    }
}

/// A picture's I420 planes, tight (as `ffmpeg -f rawvideo -pix_fmt yuv420p` writes).
pub fn i420_bytes(picture: &Picture) -> Vec<u8> {
    let mut out = Vec::new();
    for plane in &picture.planes {
        for y in 0..plane.height {
            out.extend_from_slice(plane.row(y));
        }
    }
    out
}

/// PSNR in dB of `picture`'s planes against `reference` (tight I420 of the same size);
/// infinite when equal, `None` when the sizes differ.
pub fn psnr(picture: &Picture, reference: &[u8]) -> Option<f64> {
    let ours = i420_bytes(picture);
    if ours.len() != reference.len() || ours.is_empty() {
        return None;
    }
    let sse: u64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| u64::from(a.abs_diff(b)).pow(2))
        .sum();
    if sse == 0 {
        return Some(f64::INFINITY);
    }
    let mse = sse as f64 / ours.len() as f64;
    Some(10.0 * (255.0f64 * 255.0 / mse).log10())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 (RFC 1321), for comparing pictures; not for security.
#[derive(Debug, Clone)]
pub struct Md5 {
    state: [u32; 4],
    buffer: [u8; 64],
    buffered: usize,
    length: u64,
}

const MD5_S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 {
            state: [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476],
            buffer: [0; 64],
            buffered: 0,
            length: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        while !data.is_empty() {
            let take = (64 - self.buffered).min(data.len());
            self.buffer[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered == 64 {
                let block = self.buffer;
                self.block(&block);
                self.buffered = 0;
            }
        }
    }

    pub fn finish(mut self) -> [u8; 16] {
        let bits = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.buffered != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_le_bytes());
        let mut out = [0u8; 16];
        for (i, word) in self.state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn block(&mut self, block: &[u8; 64]) {
        let m: Vec<u32> = block
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = self.state;
        for (i, &shift) in MD5_S.iter().enumerate() {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            // K[i] = floor(2^32 * |sin(i + 1)|).
            let k = ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32;
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(k)
                .wrapping_add(m[g])
                .rotate_left(shift);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
}

/// md5 of `data`, hex.
pub fn md5_hex(data: &[u8]) -> String {
    let mut m = Md5::new();
    m.update(data);
    hex(&m.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_rfc1321_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
        let mut split = Md5::new();
        split.update(b"message ");
        split.update(b"digest");
        assert_eq!(hex(&split.finish()), "f96b697d7cb7938d525a2f31aaf161d0");
    }

    #[test]
    fn fixtures_read_without_ffmpeg() {
        for f in FIXTURES {
            let segments = read_flv(f.flv).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            let frames: usize = segments.iter().map(|s| s.frames.len()).sum();
            let expected = if f.name == "size-change" { 3 } else { 1 };
            assert_eq!(segments.len(), expected, "{}", f.name);
            assert!(frames >= 48, "{}: {frames} access units", f.name);
            assert!(segments.iter().all(|s| s.frames[0].keyframe), "{}", f.name);
        }
        let sizes: Vec<(u32, u32)> = read_flv(fixture("size-change").unwrap().flv)
            .unwrap()
            .iter()
            .map(|s| (s.config.width, s.config.height))
            .collect();
        assert_eq!(sizes, [(320, 240), (480, 270), (240, 180)]);
        let high = &read_flv(fixture("high-bframes").unwrap().flv).unwrap()[0];
        assert_eq!(high.config.profile_idc, 100);
        assert!(
            high.frames.iter().any(|f| f.pts != f.dts),
            "B-frames reorder"
        );
    }

    #[test]
    fn flv_reader_refuses_garbage() {
        assert!(matches!(read_flv(b"not flv"), Err(ReferenceError::NotFlv)));
        let cut = &FIXTURES[0].flv[..FIXTURES[0].flv.len() - 200];
        assert!(matches!(read_flv(cut), Err(ReferenceError::Truncated(_))));
    }

    #[test]
    fn reference_text_round_trips() {
        let pics = vec![
            RefPicture {
                pts_ms: 0,
                width: 320,
                height: 240,
                md5: "d41d8cd98f00b204e9800998ecf8427e".into(),
            },
            RefPicture {
                pts_ms: 80,
                width: 480,
                height: 270,
                md5: "900150983cd24fb0d6963f7d28e17f72".into(),
            },
        ];
        let text = format_reference("x", &pics);
        assert_eq!(parse_reference(&text).unwrap(), pics);
        assert!(parse_reference("0 0 1 1 abc\n").is_err());
        assert!(parse_reference("1 0 1 1 d41d8cd98f00b204e9800998ecf8427e\n").is_err());
        for f in FIXTURES {
            let refs = parse_reference(f.reference).unwrap();
            assert!(refs.len() >= 48, "{}: {} pictures", f.name, refs.len());
        }
    }

    #[test]
    fn picture_md5_ignores_padding_and_psnr_measures() {
        let mut a = Picture::new(5, 3);
        a.planes[0].data.fill(9);
        let mut b = Picture::new(5, 3);
        for p in 0..3 {
            let plane = &mut b.planes[p];
            let w = plane.width;
            for y in 0..plane.height {
                plane
                    .row_mut(y)
                    .copy_from_slice(&vec![if p == 0 { 9 } else { 0 }; w]);
            }
            // Padding differs.
            let stride = plane.stride;
            plane.data[stride - 1] = 77;
        }
        assert_eq!(picture_md5(&a), picture_md5(&b));
        assert_eq!(psnr(&a, &i420_bytes(&b)), Some(f64::INFINITY));
        let mut c = i420_bytes(&b);
        c[0] = 10;
        let db = psnr(&a, &c).unwrap();
        assert!(db > 50.0 && db.is_finite(), "{db}");
        assert_eq!(psnr(&a, &c[1..]), None);
    }
}

/// The references are what libavcodec decodes now: `make test` fails when a fixture
/// or the decoder changed and the committed `*.md5` were not rewritten.
#[cfg(all(test, feature = "ffmpeg"))]
mod cpu_references {
    use super::*;
    use crate::pipeline::cpu::decode::Decoder;
    use crate::pipeline::frame::PicturePool;
    use std::path::PathBuf;

    /// Every picture the CPU decoder makes of `segments`, presentation order; a new
    /// sequence header flushes the old decoder and opens a new one (as the pipeline
    /// does for a publisher's new configuration).
    pub(crate) fn cpu_decode(segments: &[Segment]) -> Vec<Picture> {
        let pool = PicturePool::new(4);
        let mut out = Vec::new();
        for segment in segments {
            let mut decoder = Decoder::new(&segment.config, 1).expect("open decoder");
            for frame in &segment.frames {
                out.extend(decoder.decode(frame, &pool).expect("decode"));
            }
            out.extend(decoder.flush(&pool).expect("flush"));
        }
        out
    }

    #[test]
    fn gpu_references() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpu");
        let write = std::env::var_os("LADDER_WRITE_GPU_REFERENCES").is_some();
        let yuv_dir = std::env::var_os("LADDER_GPU_YUV_DIR").map(PathBuf::from);
        let mut stale = Vec::new();
        for f in FIXTURES {
            let segments = read_flv(f.flv).expect("fixture");
            let pictures = cpu_decode(&segments);
            let refs: Vec<RefPicture> = pictures.iter().map(ref_picture).collect();
            let frames: usize = segments.iter().map(|s| s.frames.len()).sum();
            assert_eq!(
                refs.len(),
                frames,
                "{}: one picture per access unit",
                f.name
            );
            assert!(
                refs.windows(2).all(|w| w[0].pts_ms < w[1].pts_ms),
                "{}: presentation order",
                f.name
            );
            let text = format_reference(f.name, &refs);
            let path = dir.join(format!("{}.md5", f.name));
            if write {
                std::fs::write(&path, &text).expect("write reference");
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
            if let Some(yuv) = &yuv_dir {
                std::fs::create_dir_all(yuv).expect("yuv dir");
                let bytes: Vec<u8> = pictures.iter().flat_map(i420_bytes).collect();
                std::fs::write(yuv.join(format!("{}.yuv", f.name)), bytes).expect("write yuv");
            }
        }
        assert!(
            stale.is_empty(),
            "stale GPU references (libavcodec now decodes differently, or a fixture \
             changed): {stale:?}; rewrite them with \
             LADDER_WRITE_GPU_REFERENCES=1 cargo test --lib gpu_references, and say why \
             in the commit"
        );
    }
}
