//! The fuzz targets' bodies: one function per parser fed from outside
//! (issue 8 §1; ARCHITECTURE.md, "every parser fed by the network has a
//! fuzz target").
//!
//! `fuzz/` (cargo-fuzz, libFuzzer, nightly) calls [`run`] from one small
//! binary per [`Target`]; `tests/fuzz_corpus.rs` replays every file of
//! `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` through the same
//! function on stable, so `make test` catches a regression of anything the
//! fuzzers ever found. A target fails by panicking: on a parser's own panic,
//! or on an invariant checked here (an AMF0 value that does not re-encode
//! to the same bytes, a buffer past its cap).
//!
//! Stream parsers are fed the input cut at arbitrary places: the cut lengths
//! come from the input's first bytes, so libFuzzer mutates them too, and a
//! message split across TCP reads is covered.

use bytes::{Bytes, BytesMut};

use crate::ingest::rtmp::chunk::{self, msg_type, parse_chunk_size};
use crate::ingest::rtmp::{
    Amf0Value, ChunkDecoder, ClientConfig, ClientHandshake, ClientMode, ClientSession,
    HandshakeProgress, RtmpUrl, ServerEvent, ServerHandshake, ServerSession, SessionConfig,
};
use crate::media::{self, Demuxer, RtmpTimestamp, Timestamp};

/// One fuzz target per parser (or protocol state machine) fed from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The server and client RTMP handshakes (C0/C1/C2, S0/S1/S2).
    RtmpHandshake,
    /// Chunk stream reassembly, with Set Chunk Size and Abort honoured.
    RtmpChunks,
    /// The server session after the handshake: commands, message order,
    /// publish, media; what a publisher sends.
    RtmpSession,
    /// The client session (pull and restream): what a remote server sends.
    RtmpClient,
    /// AMF0 values, with the encode/decode round trip checked.
    Amf0,
    /// FLV audio and video tag bodies (legacy and Enhanced RTMP) through the
    /// demuxer, as a sequence of messages.
    Flv,
    /// avcC records, SPS, and AVCC/Annex B sample conversion.
    Avc,
    /// hvcC records, VPS, SPS, and IRAP detection in samples.
    Hevc,
    /// av1C records, sequence headers and OBU streams.
    Av1,
    /// AAC AudioSpecificConfig.
    Aac,
    /// The origin's request paths and queries: routes, LL-HLS delivery
    /// directives, signed playback tokens.
    HlsQuery,
    /// The configuration file, and the RTMP URLs it holds.
    Config,
}

impl Target {
    /// Every target, in the order of the enum.
    pub const ALL: [Target; 12] = [
        Target::RtmpHandshake,
        Target::RtmpChunks,
        Target::RtmpSession,
        Target::RtmpClient,
        Target::Amf0,
        Target::Flv,
        Target::Avc,
        Target::Hevc,
        Target::Av1,
        Target::Aac,
        Target::HlsQuery,
        Target::Config,
    ];

    /// The target's name: its cargo-fuzz binary and its corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::RtmpHandshake => "rtmp_handshake",
            Target::RtmpChunks => "rtmp_chunks",
            Target::RtmpSession => "rtmp_session",
            Target::RtmpClient => "rtmp_client",
            Target::Amf0 => "amf0",
            Target::Flv => "flv",
            Target::Avc => "avc",
            Target::Hevc => "hevc",
            Target::Av1 => "av1",
            Target::Aac => "aac",
            Target::HlsQuery => "hls_query",
            Target::Config => "config",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Run one input through `target`. Panics on a defect (that is the point).
pub fn run(target: Target, data: &[u8]) {
    match target {
        Target::RtmpHandshake => rtmp_handshake(data),
        Target::RtmpChunks => rtmp_chunks(data),
        Target::RtmpSession => rtmp_session(data),
        Target::RtmpClient => rtmp_client(data),
        Target::Amf0 => amf0(data),
        Target::Flv => flv(data),
        Target::Avc => avc(data),
        Target::Hevc => hevc(data),
        Target::Av1 => av1(data),
        Target::Aac => aac(data),
        Target::HlsQuery => hls_query(data),
        Target::Config => config(data),
    }
}

/// `data` less its first byte, cut into pieces whose lengths (1 to 256)
/// follow from that byte: a different first byte, different TCP reads.
struct Reads<'a> {
    rest: &'a [u8],
    state: u32,
}

fn reads(data: &[u8]) -> Reads<'_> {
    match data.split_first() {
        Some((&seed, rest)) => Reads {
            rest,
            state: u32::from(seed) | 0x100,
        },
        None => Reads {
            rest: &[],
            state: 1,
        },
    }
}

impl<'a> Iterator for Reads<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        // xorshift32: cheap, deterministic, never zero from a non-zero seed.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let n = (self.state % 256) as usize + 1;
        let (piece, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

fn rtmp_handshake(data: &[u8]) {
    let mut server = ServerHandshake::new(0, 7);
    for piece in reads(data) {
        match server.feed(piece) {
            Ok(HandshakeProgress::Done { .. }) | Err(_) => break,
            Ok(_) => {}
        }
        while server.take_output().is_some() {}
    }
    let mut client = ClientHandshake::new(0, 7);
    while client.take_output().is_some() {}
    for piece in reads(data) {
        match client.feed(piece) {
            Ok(HandshakeProgress::Done { .. }) | Err(_) => break,
            Ok(_) => {}
        }
        while client.take_output().is_some() {}
    }
}

fn rtmp_chunks(data: &[u8]) {
    let mut decoder = ChunkDecoder::new();
    for piece in reads(data) {
        let fed = decoder.feed(piece);
        while let Some(msg) = decoder.next_message() {
            assert!(msg.payload.len() <= chunk::MAX_MESSAGE_SIZE);
            if msg.type_id == msg_type::SET_CHUNK_SIZE {
                // The decoder applies it itself; parsing again must agree.
                let _ = parse_chunk_size(&msg.payload);
            }
        }
        assert!(
            decoder.buffered_bytes() <= chunk::MAX_BUFFERED_BYTES + piece.len(),
            "{} bytes buffered",
            decoder.buffered_bytes()
        );
        if fed.is_err() {
            return;
        }
    }
}

fn rtmp_session(data: &[u8]) {
    let mut session = ServerSession::new(SessionConfig::default());
    let mut demuxer = Demuxer::new(Timestamp::from_millis(0));
    for piece in reads(data) {
        let fed = session.feed(piece);
        while let Some(event) = session.poll_event() {
            match event {
                // Accept every other publish, so both answers are exercised.
                ServerEvent::PublishRequested { stream_id, .. } => {
                    if session.stats().publishes_rejected % 2 == 0 {
                        session.accept_publish(stream_id);
                    } else {
                        session.reject_publish(stream_id, "NetStream.Publish.BadName", "no");
                    }
                }
                ServerEvent::Video {
                    timestamp, payload, ..
                } => {
                    let _ = demuxer.video(timestamp, payload);
                }
                ServerEvent::Audio {
                    timestamp, payload, ..
                } => {
                    let _ = demuxer.audio(timestamp, payload);
                }
                _ => {}
            }
        }
        while session.take_output().is_some() {}
        let _ = demuxer.take_notices();
        if fed.is_err() {
            return;
        }
    }
}

fn rtmp_client(data: &[u8]) {
    let Ok(url) = RtmpUrl::parse("rtmp://peer.example:1935/live/key") else {
        unreachable!("a fixed, valid URL")
    };
    let mode = if data.first().is_some_and(|b| b & 1 == 1) {
        ClientMode::Play
    } else {
        ClientMode::Publish
    };
    let mut session = ClientSession::new(ClientConfig::new(&url, mode));
    for piece in reads(data) {
        let fed = session.feed(piece);
        while session.poll_event().is_some() {}
        while session.take_output().is_some() {}
        if fed.is_err() {
            return;
        }
    }
}

fn amf0(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let Ok((value, used)) = Amf0Value::decode(rest) else {
            return;
        };
        assert!(used > 0 && used <= rest.len(), "decode used {used} bytes");
        // What decodes re-encodes, and its encoding decodes to the same
        // encoding (bytes, not values: NaN is not equal to itself).
        let mut first = BytesMut::new();
        if value.encode(&mut first).is_ok() {
            let Ok((again, n)) = Amf0Value::decode(&first) else {
                panic!("re-encoded value does not decode: {value:?}");
            };
            assert_eq!(n, first.len());
            let mut second = BytesMut::new();
            assert!(again.encode(&mut second).is_ok());
            assert_eq!(first, second, "round trip changed {value:?}");
        }
        rest = &rest[used..];
    }
}

/// Messages: a kind byte (bit 0: audio, else video), a 16-bit timestamp
/// step, a 16-bit length, then the body.
fn flv(data: &[u8]) {
    let _ = media::flv::parse_video_tag(&Bytes::copy_from_slice(data));
    let _ = media::flv::parse_audio_tag(&Bytes::copy_from_slice(data));
    let mut demuxer = Demuxer::new(Timestamp::from_millis(0));
    let mut rest = data;
    let mut ts: u32 = 0;
    while rest.len() >= 5 {
        let kind = rest[0];
        ts = ts.wrapping_add(u32::from(u16::from_be_bytes([rest[1], rest[2]])));
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let body = &rest[5..];
        let body = &body[..len.min(body.len())];
        let payload = Bytes::copy_from_slice(body);
        let _ = if kind & 1 == 1 {
            demuxer.audio(RtmpTimestamp(ts), payload)
        } else {
            demuxer.video(RtmpTimestamp(ts), payload)
        };
        let _ = demuxer.take_notices();
        rest = &rest[5 + body.len()..];
    }
}

fn avc(data: &[u8]) {
    use crate::media::avc;
    let bytes = Bytes::copy_from_slice(data);
    if avc::AvcDecoderConfig::parse(&bytes).is_ok() {
        let _ = avc::video_config(bytes);
    }
    if let Ok(sps) = avc::Sps::parse(data) {
        let _ = sps.frame_rate();
        let _ = sps.codec_string();
    }
    let _ = avc::nal_to_rbsp(data);
    for length_size in [1u8, 2, 4] {
        let _ = avc::nal_units(data, length_size).count();
        let _ = avc::avcc_to_annexb(data, length_size);
    }
    let _ = avc::annexb_nal_units(data).count();
    let _ = avc::annexb_to_avcc(data, |_| true);
}

fn hevc(data: &[u8]) {
    use crate::media::hevc;
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(record) = hevc::HevcDecoderConfig::parse(&bytes) {
        let _ = record.sample_entry();
        let _ = record.parameter_sets_complete();
        let _ = record.parameter_sets_annexb();
        let _ = hevc::video_config(bytes);
    }
    if let Ok(sps) = hevc::Sps::parse(data) {
        let _ = sps.frame_rate();
    }
    let _ = hevc::Vps::parse(data);
    for length_size in [1u8, 2, 4] {
        let _ = hevc::sample_is_irap(data, length_size);
    }
}

fn av1(data: &[u8]) {
    use crate::media::av1;
    let bytes = Bytes::copy_from_slice(data);
    if av1::Av1Config::parse(&bytes).is_ok() {
        let _ = av1::video_config(bytes);
    }
    if let Ok(header) = av1::SequenceHeader::parse(data) {
        let _ = header.codec_string();
        let _ = header.frame_rate();
        let _ = header.chroma_format_idc();
    }
    let _ = av1::SequenceHeader::from_obu(data);
    for obu in av1::obus(data) {
        if obu.is_err() {
            break;
        }
    }
    let reduced = data.first().is_some_and(|b| b & 1 == 1);
    let _ = av1::sample_from_temporal_unit(data, reduced);
    let _ = av1::sample_from_publisher(data, &[], reduced);
    let _ = av1::build_av1c(data);
}

fn aac(data: &[u8]) {
    use crate::media::aac;
    if let Ok(asc) = aac::AudioSpecificConfig::parse(data) {
        let _ = asc.codec_string();
    }
    let _ = aac::audio_config(Bytes::copy_from_slice(data));
}

/// The input as text: a request target, `path?query`.
fn hls_query(data: &[u8]) {
    use crate::origin::{route, signed::PlaybackAuth};
    use crate::packaging::hls;
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*text, None),
    };
    let parsed = route::parse(path);
    if let Some(r) = &parsed {
        let _ = r.channel();
    }
    let _ = hls::parse_directives(query);
    let auth = PlaybackAuth::new(b"fuzz-secret", "token");
    let _ = auth.check("main", query, 1_700_000_000);
}

fn config(data: &[u8]) {
    use crate::control::config::Config;
    let text = String::from_utf8_lossy(data);
    let _ = Config::parse(&text, "fuzz.toml");
    for line in text.lines() {
        let _ = RtmpUrl::parse(line.trim());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        assert_eq!(Target::from_name("nope"), None);
    }

    #[test]
    fn reads_cover_the_input_after_the_seed_byte() {
        let data: Vec<u8> = (0..=255).cycle().take(5000).collect();
        let pieces: Vec<&[u8]> = reads(&data).collect();
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 256));
        assert_eq!(pieces.concat(), &data[1..]);
        assert_eq!(reads(&[]).count(), 0);
        assert_eq!(reads(&[9]).count(), 0);
    }

    #[test]
    fn every_target_takes_empty_and_junk_input() {
        for t in Target::ALL {
            run(t, &[]);
            run(t, &[0xff; 64]);
            run(t, b"\x03rtmp://x/live/k?_HLS_msn=1&_HLS_part=2\n[channels]");
        }
    }
}
