//! Enhanced RTMP input end to end: HEVC (`hvc1`) and AV1 (`av01`) published
//! to the real `ladder` binary, and what the origin serves read with ffprobe.
//!
//! Debian 12's ffmpeg (5.1) cannot send Enhanced RTMP, so this file carries a
//! small publisher on the tests' raw RTMP client (`common::raw_rtmp`, built on
//! Ladder's own RTMP pieces): connect, createStream, publish, then
//! FLV tags in the Enhanced RTMP form (veovera enhanced-rtmp v1). The video is
//! real: libx265 and libsvtav1 bitstreams made by ffmpeg in an MP4, whose
//! `hvcC` / `av1C` becomes the SequenceStart and whose samples become the
//! CodedFrames; the audio is ffmpeg's AAC, from ADTS.

mod common;

use bytes::Bytes;
use common::raw_rtmp::RawRtmp;
use common::*;
use ladder::ingest::rtmp::amf0::Amf0Value;
use ladder::ingest::rtmp::chunk::msg_type;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.5\nwindow_segments = 20";
const RENDITIONS: &str = r#"{ name = "source", passthrough = true },
    { name = "240p", height = 240, bitrate_kbps = 400, preset = "ultrafast" }"#;
const SECONDS: u32 = 4;
const FPS: u32 = 30;

// ---------------------------------------------------------------------------
// Test bitstreams
// ---------------------------------------------------------------------------

/// Run ffmpeg with `args`, panicking with its stderr on failure.
fn ffmpeg(args: &[&str]) {
    assert!(have("ffmpeg"), "ffmpeg is required (make test installs it)");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SECONDS` of the moving test pattern at 640x360, `FPS`, encoded with
/// `codec_args` into a single-track MP4.
fn make_video(path: &Path, codec_args: &[&str]) {
    let source = format!("testsrc2=size=640x360:rate={FPS}:duration={SECONDS}");
    let mut args = vec!["-f", "lavfi", "-i", &source, "-pix_fmt", "yuv420p"];
    args.extend_from_slice(codec_args);
    let out = path.to_str().unwrap();
    args.push(out);
    ffmpeg(&args);
}

/// A 440 Hz tone, AAC-LC 48 kHz stereo, in ADTS.
fn make_audio(path: &Path) {
    let source = format!("sine=frequency=440:sample_rate=48000:duration={SECONDS}");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &source,
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-ac",
        "2",
        "-f",
        "adts",
        path.to_str().unwrap(),
    ]);
}

/// One track of a single-track MP4 as ffmpeg writes it (the samples are the
/// `mdat`, back to back): the sample entry's configuration record, the
/// timescale and the samples `(dts, composition offset, bytes)`.
struct Mp4Track {
    record: Vec<u8>,
    timescale: u32,
    samples: Vec<(u64, i64, Vec<u8>)>,
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

/// The boxes in `d[from..to]`: (type, body start, end).
fn boxes(d: &[u8], from: usize, to: usize) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size = be32(d, at) as usize;
        let kind: [u8; 4] = d[at + 4..at + 8].try_into().unwrap();
        let (body, end) = match size {
            1 => (
                at + 16,
                at + u64::from_be_bytes(d[at + 8..at + 16].try_into().unwrap()) as usize,
            ),
            0 => (at + 8, to),
            n => (at + 8, at + n),
        };
        out.push((kind, body, end));
        at = end;
    }
    out
}

fn find(d: &[u8], from: usize, to: usize, path: &[&[u8; 4]]) -> Option<(usize, usize)> {
    let (mut from, mut to) = (from, to);
    for kind in path {
        let (_, body, end) = boxes(d, from, to)
            .into_iter()
            .find(|(k, _, _)| k == *kind)?;
        (from, to) = (body, end);
    }
    Some((from, to))
}

/// Read a single-track MP4; `record` names the configuration box
/// (`hvcC`, `av1C`) inside its sample entry.
fn read_mp4(path: &Path, record: &[u8; 4]) -> Mp4Track {
    let d = std::fs::read(path).unwrap();
    let (mdia, mdia_end) = find(&d, 0, d.len(), &[b"moov", b"trak", b"mdia"]).expect("mdia");
    let (mdhd, _) = find(&d, mdia, mdia_end, &[b"mdhd"]).expect("mdhd");
    assert_eq!(d[mdhd], 0, "mdhd version 0");
    let timescale = be32(&d, mdhd + 12);
    let (stbl, stbl_end) = find(&d, mdia, mdia_end, &[b"minf", b"stbl"]).expect("stbl");
    let (stsd, stsd_end) = find(&d, stbl, stbl_end, &[b"stsd"]).expect("stsd");
    let (_, entry, entry_end) = boxes(&d, stsd + 8, stsd_end)[0];
    let (rec, rec_end) = find(&d, entry + 78, entry_end, &[record]).expect("record box");
    let (stsz, _) = find(&d, stbl, stbl_end, &[b"stsz"]).expect("stsz");
    assert_eq!(be32(&d, stsz + 4), 0, "samples of different sizes");
    let sizes: Vec<usize> = (0..be32(&d, stsz + 8) as usize)
        .map(|i| be32(&d, stsz + 12 + 4 * i) as usize)
        .collect();
    let runs = |kind: &[u8; 4]| -> Vec<u32> {
        let Some((b, _)) = find(&d, stbl, stbl_end, &[kind]) else {
            return Vec::new();
        };
        (0..be32(&d, b + 4) as usize)
            .flat_map(|i| {
                std::iter::repeat_n(be32(&d, b + 12 + 8 * i), be32(&d, b + 8 + 8 * i) as usize)
            })
            .collect()
    };
    let deltas = runs(b"stts");
    let offsets = runs(b"ctts");
    let (mdat, mdat_end) = find(&d, 0, d.len(), &[b"mdat"]).expect("mdat");
    assert_eq!(sizes.iter().sum::<usize>(), mdat_end - mdat, "one track");
    let (mut at, mut dts) = (mdat, 0u64);
    let mut samples = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let cto = offsets.get(i).map_or(0, |&o| i64::from(o as i32));
        samples.push((dts, cto, d[at..at + size].to_vec()));
        at += size;
        dts += u64::from(deltas[i]);
    }
    Mp4Track {
        record: d[rec..rec_end].to_vec(),
        timescale,
        samples,
    }
}

/// ADTS frames (ISO/IEC 14496-3 §1.A.2): the AudioSpecificConfig they imply
/// and the raw frames.
fn read_adts(path: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let d = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut asc = Vec::new();
    let mut frames = Vec::new();
    while at + 7 <= d.len() {
        assert_eq!((d[at], d[at + 1] & 0xf0), (0xff, 0xf0), "ADTS sync at {at}");
        let header = if d[at + 1] & 1 == 1 { 7 } else { 9 };
        let object_type = (d[at + 2] >> 6) + 1;
        let rate_index = (d[at + 2] >> 2) & 0x0f;
        let channels = (d[at + 2] & 1) << 2 | d[at + 3] >> 6;
        let len = (usize::from(d[at + 3] & 3) << 11)
            | usize::from(d[at + 4]) << 3
            | usize::from(d[at + 5] >> 5);
        let asc_bits =
            u16::from(object_type) << 11 | u16::from(rate_index) << 7 | u16::from(channels) << 3;
        asc = asc_bits.to_be_bytes().to_vec();
        frames.push(d[at + header..at + len].to_vec());
        at += len;
    }
    (asc, frames)
}

// ---------------------------------------------------------------------------
// Enhanced RTMP tags
// ---------------------------------------------------------------------------

/// A media message to send: timestamp (ms), message type, tag body.
type Tag = (u32, u8, Bytes);

/// Video tags: SequenceStart with the record, then one CodedFrames per sample
/// (`hvc1`: with its composition time offset; `av01`: none). FrameType is 1
/// (key) for sync samples as the MP4 flags them not: the FLV frame type is
/// advisory, so every sample but the first says 2 (inter) and Ladder must find
/// the key frames itself.
fn video_tags(track: &Mp4Track, fourcc: &[u8; 4], record: &[u8]) -> Vec<Tag> {
    let ts = i64::from(track.timescale);
    let ms = |t: i64| (t * 1000 + ts / 2) / ts;
    let mut start = vec![0x90];
    start.extend(fourcc);
    start.extend(record);
    let mut tags = vec![(0, msg_type::VIDEO, Bytes::from(start))];
    for (i, (dts, cto, data)) in track.samples.iter().enumerate() {
        let frame_type: u8 = if i == 0 { 1 } else { 2 };
        let dts_ms = ms(*dts as i64);
        let mut tag = vec![0x80 | frame_type << 4 | 1];
        tag.extend(fourcc);
        if fourcc == b"hvc1" {
            let cto_ms = ms(*dts as i64 + cto) - dts_ms;
            tag.extend(&(cto_ms as i32).to_be_bytes()[1..]);
        }
        tag.extend(data);
        tags.push((dts_ms as u32, msg_type::VIDEO, Bytes::from(tag)));
    }
    tags
}

/// Audio tags in the legacy AAC form (SoundFormat 10): the sequence header,
/// then one frame each 1024 samples at 48 kHz.
fn audio_tags(asc: &[u8], frames: &[Vec<u8>]) -> Vec<Tag> {
    let mut header = vec![0xaf, 0];
    header.extend(asc);
    let mut tags = vec![(0, msg_type::AUDIO, Bytes::from(header))];
    for (i, f) in frames.iter().enumerate() {
        let mut tag = vec![0xaf, 1];
        tag.extend(f);
        tags.push((
            (i as u64 * 1024 * 1000 / 48_000) as u32,
            msg_type::AUDIO,
            Bytes::from(tag),
        ));
    }
    tags
}

// ---------------------------------------------------------------------------
// A minimal publisher
// ---------------------------------------------------------------------------

/// The chunk size we send with after connect.
const OUT_CHUNK_SIZE: u32 = 4096;

/// Handshake, `connect(app=live)` announcing the Enhanced RTMP codecs,
/// `createStream`, `publish(key)`: a publisher on its stream.
fn start_publisher(addr: SocketAddr, key: &str) -> (RawRtmp, u32) {
    let mut c = RawRtmp::handshaken(addr);
    // Enhanced RTMP: the codecs this client speaks.
    let four_cc = Amf0Value::StrictArray(vec![
        Amf0Value::String("hvc1".into()),
        Amf0Value::String("av01".into()),
    ]);
    let reply = c.connect_with("live", [("fourCcList", four_cc)]);
    let reply = reply.expect("connect answered");
    assert_eq!(reply[0].as_str(), Some("_result"), "{reply:?}");
    c.set_chunk_size(OUT_CHUNK_SIZE).expect("connected");
    let stream_id = c.create_stream().expect("createStream");
    let code = c.publish(stream_id, key);
    assert_eq!(code.as_deref(), Some("NetStream.Publish.Start"));
    (c, stream_id)
}

/// Send `tags` in timestamp order, in real time (as a live encoder would),
/// then deleteStream. Sequence headers (the first tag of each kind) go
/// first, as encoders send them.
fn publish_tags(mut c: RawRtmp, stream_id: u32, mut tags: Vec<Tag>) {
    let headers = |t: &Tag| {
        t.1 == msg_type::VIDEO && t.2[0] & 0x0f == 0 || t.1 == msg_type::AUDIO && t.2[1] == 0
    };
    tags.sort_by_key(|t| (!headers(t), t.0));
    let start = Instant::now();
    for (ts, type_id, payload) in tags {
        let due = start + Duration::from_millis(u64::from(ts));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        c.media(stream_id, type_id, ts, payload)
            .expect("ladder closed the connection");
    }
    c.command(
        0,
        &[
            Amf0Value::String("deleteStream".into()),
            Amf0Value::Number(4.0),
            Amf0Value::Null,
            Amf0Value::Number(f64::from(stream_id)),
        ],
    );
    let _ = c.socket.shutdown(std::net::Shutdown::Write);
    // Let the server read to the end before the socket goes.
    c.socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut sink = [0u8; 1024];
    while matches!(c.socket.read(&mut sink), Ok(n) if n > 0) {}
}

// ---------------------------------------------------------------------------
// What the origin serves
// ---------------------------------------------------------------------------

/// The numeric `key=value` fields of the first log line holding `needle`.
fn log_fields(log: &str, needle: &str) -> std::collections::HashMap<String, u64> {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}:\n{log}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim_matches('"').parse().ok()?)))
        .collect()
}

/// A rendition as served: its playlist, ffprobe of the whole of it, and the
/// video packets of each segment probed alone with the init segment.
struct Served {
    playlist: MediaPlaylist,
    probe: serde_json::Value,
    segments: Vec<Vec<(f64, f64, bool)>>,
}

fn served(ladder: &Ladder, channel: &str, track: &str, dir: &tempdir::Dir) -> Served {
    let whole = dir.join(&format!("{track}.mp4"));
    let playlist = download_track(ladder, channel, track, &whole);
    let probe = ffprobe(&whole);
    let (s, _, init) = get(&ladder.url(&format!("/live/{channel}/{track}/{}", playlist.map[0])));
    assert_eq!(s, 200);
    let mut segments = Vec::new();
    for (msn, uri, _, _) in &playlist.segments {
        let (s, _, body) = get(&ladder.url(&format!("/live/{channel}/{track}/{uri}")));
        assert_eq!(s, 200, "{track} {uri}");
        let f = dir.join(&format!("{track}-{msn}.mp4"));
        let mut data = init.clone();
        data.extend_from_slice(&body);
        std::fs::write(&f, data).unwrap();
        segments.push(packets(&ffprobe(&f), "video"));
    }
    Served {
        playlist,
        probe,
        segments,
    }
}

/// What ffprobe says of the first video stream of a file: (codec name, codec
/// tag, profile, level).
fn probe_codec(path: &Path) -> (String, String, String, i64) {
    let p = ffprobe(path);
    let v = stream(&p, "video");
    (
        v["codec_name"].as_str().unwrap().to_owned(),
        v["codec_tag_string"].as_str().unwrap().to_owned(),
        v["profile"].as_str().unwrap_or("").to_owned(),
        v["level"].as_i64().unwrap(),
    )
}

/// Publish `video` (an MP4 of `fourcc` with its `record_box`) and AAC to a
/// fresh Ladder with a passed-through source and an H.264 rung; check what
/// is served. `codecs` is the CODECS / codecs string expected for the source.
fn publish_and_check(
    dir: &tempdir::Dir,
    video: &Path,
    record_box: &[u8; 4],
    fourcc: &[u8; 4],
    codecs: &str,
    ffprobe_codec: &str,
) {
    let audio = dir.join("audio.aac");
    make_audio(&audio);
    let track = read_mp4(video, record_box);
    let sent_frames = track.samples.len();
    assert_eq!(sent_frames, (SECONDS * FPS) as usize);
    let (asc, aac) = read_adts(&audio);
    let mut tags = video_tags(&track, fourcc, &track.record);
    tags.extend(audio_tags(&asc, &aac));

    let ladder = Ladder::start(&config_with_ladder(true, PACKAGING, RENDITIONS, ""));
    let (publisher, stream_id) = start_publisher(ladder.rtmp, "cam");
    publish_tags(publisher, stream_id, tags);
    assert!(
        ladder.wait_log("publish ended", Duration::from_secs(15)),
        "{}",
        ladder.log()
    );
    let t = Instant::now();
    while !ladder.log().contains("decode ended") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the rung did not end:\n{}",
            ladder.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = ladder.log();
    assert!(!log.contains("cannot be decoded"), "{log}");
    assert!(!log.contains("unsupported"), "{log}");

    // CODECS in the multivariant playlist and the MPD.
    let (s, master) = get_text(&ladder.url("/live/cam/master.m3u8"));
    assert_eq!(s, 200);
    assert!(
        master.contains(&format!("CODECS=\"{codecs},mp4a.40.2\"")),
        "{master}"
    );
    assert!(
        master.contains("CODECS=\"avc1.") && master.contains("RESOLUTION=426x240"),
        "{master}"
    );
    let (s, mpd) = get_text(&ladder.url("/live/cam/manifest.mpd"));
    assert_eq!(s, 200);
    assert!(mpd.contains(&format!("codecs=\"{codecs}\"")), "{mpd}");
    assert!(mpd.contains("codecs=\"avc1."), "{mpd}");

    // The source: the publisher's codec, size and every frame, passed through.
    let source = served(&ladder, "cam", "source", dir);
    let v = stream(&source.probe, "video");
    assert_eq!(v["codec_name"], ffprobe_codec);
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(640), Some(360))
    );
    let served_frames = packets(&source.probe, "video").len();
    assert!(
        served_frames.abs_diff(sent_frames) <= 1,
        "source frames: sent {sent_frames}, served {served_frames}"
    );
    assert!(
        source.segments.len() >= 3,
        "{} segments",
        source.segments.len()
    );
    for (i, seg) in source.segments.iter().enumerate() {
        assert!(
            seg[0].2,
            "source segment {i} starts with a key frame: {seg:?}"
        );
    }

    // The H.264 rung: the source decoded by libavcodec, scaled, x264; its
    // segments are the source's, each starting with an IDR.
    let rung = served(&ladder, "cam", "240p", dir);
    let v = stream(&rung.probe, "video");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(426), Some(240))
    );
    let msns = |s: &Served| s.playlist.segments.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(msns(&rung), msns(&source), "rung and source segments");
    // The decoder: one picture per access unit (none refused, none lost);
    // access units are dropped before it only when this machine cannot keep
    // up, and then counted.
    let log = ladder.log();
    let decode = log_fields(&log, "decode ended");
    let behind = log
        .lines()
        .find(|l| l.contains("decoder fell behind"))
        .map(|_| log_fields(&log, "decoder fell behind"));
    let decode_dropped = behind.as_ref().map_or(0, |b| b["dropped"]);
    assert_eq!(behind.as_ref().map_or(0, |b| b["errors"]), 0, "{log}");
    assert_eq!(decode["pictures"], decode["access_units"], "{decode:?}");
    assert_eq!(
        decode["access_units"] + decode_dropped,
        served_frames as u64,
        "{decode:?}"
    );
    let f = log_fields(&log, "rung=240p ");
    let pictures: usize = rung.segments.iter().map(Vec::len).sum();
    assert_eq!(f["encoded"], pictures as u64, "{f:?}");
    assert_eq!(
        f["pictures"] + f["dropped_queue_full"],
        decode["pictures"],
        "{f:?}"
    );
    let dropped = decode_dropped + f["dropped_queue_full"];
    if dropped > 0 {
        eprintln!("{dropped} pictures dropped on this machine: {decode:?} {f:?}");
    }
    for (i, (r, s)) in rung.segments.iter().zip(&source.segments).enumerate() {
        assert!(r[0].2, "rung segment {i} starts with an IDR");
        if dropped == 0 {
            assert_eq!(r.len(), s.len(), "pictures in segment {i}");
        }
    }

    // The audio shares the segment numbers.
    let apl = download_track(&ladder, "cam", "audio", &dir.join("audio.mp4"));
    assert_eq!(
        apl.segments.iter().map(|s| s.0).collect::<Vec<_>>(),
        msns(&source)
    );
}

#[test]
fn hevc_from_x265_is_passed_through_and_decoded_for_the_ladder() {
    let dir = tempdir::Dir::new("ertmp-hevc");
    let video = dir.join("hevc.mp4");
    // B-frames, so composition time offsets travel in the CodedFrames.
    make_video(
        &video,
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error:keyint=30:min-keyint=30:scenecut=0:bframes=2",
        ],
    );
    // What ffprobe says of the stream ffmpeg wrote: Main, and its level; the
    // ISO/IEC 14496-15 Annex E string for Main (compatibility flags 1 and 2:
    // "6") with x265's constraint flags (progressive, frame only: "90"). The
    // record FFmpeg 5.1 writes does not mark its parameter set arrays
    // complete, so the entry is `hev1`, as in FFmpeg's own MP4.
    let (name, tag, profile, level) = probe_codec(&video);
    assert_eq!(
        (name.as_str(), tag.as_str(), profile.as_str()),
        ("hevc", "hev1", "Main")
    );
    let codecs = format!("hev1.1.6.L{level}.90");
    publish_and_check(&dir, &video, b"hvcC", b"hvc1", &codecs, "hevc");
}

#[test]
fn av1_from_svt_av1_is_passed_through_and_decoded_for_the_ladder() {
    let dir = tempdir::Dir::new("ertmp-av1");
    let video = dir.join("av1.mp4");
    make_video(
        &video,
        &[
            "-c:v",
            "libsvtav1",
            "-g",
            "30",
            "-preset",
            "12",
            "-svtav1-params",
            "scd=0",
        ],
    );
    // AV1-ISOBMFF's av01.P.LLT.DD from what ffprobe says: Main profile (0),
    // its level index, Main tier, 8-bit.
    let (name, tag, profile, level) = probe_codec(&video);
    assert_eq!(
        (name.as_str(), tag.as_str(), profile.as_str()),
        ("av1", "av01", "Main")
    );
    let codecs = format!("av01.0.{level:02}M.08");
    publish_and_check(&dir, &video, b"av1C", b"av01", &codecs, "av1");
}
