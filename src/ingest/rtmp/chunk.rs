//! The RTMP chunk stream (Adobe RTMP 1.0 specification §5.3) and the two
//! protocol control messages that act on it: Set Chunk Size and Abort (§5.4.1,
//! §5.4.2).
//!
//! A message (§5.3.1 "Chunk Format") travels as one or more chunks:
//!
//! ```text
//! basic header (1-3 bytes: fmt:2, chunk stream id)        §5.3.1.1
//! message header (fmt 0: 11, fmt 1: 7, fmt 2: 3, fmt 3: 0) §5.3.1.2
//! extended timestamp (0 or 4 bytes)                        §5.3.1.3
//! chunk data (up to the chunk size)
//! ```
//!
//! [`ChunkDecoder`] takes bytes in arbitrary splits and yields whole
//! [`RtmpMessage`]s. It applies Set Chunk Size and Abort itself, at the exact byte
//! where they end, and still yields them so the caller can see them.
//! [`ChunkEncoder`] is the reverse, shared by the server session and by the
//! (future) client used for restream and pull.
//!
//! Interpretation choices where the spec is silent or ambiguous:
//! - Extended timestamps repeat on fmt 3 chunks of a message whose header used
//!   one (what Flash, librtmp and FFmpeg do); the value on a continuation is read
//!   and ignored.
//! - A fmt 3 chunk that starts a new message adds the previous delta; after a fmt
//!   0 header that "delta" is the fmt 0 timestamp field (librtmp and FFmpeg agree).
//! - A fmt 0/1/2 header on a chunk stream whose message is unfinished discards the
//!   unfinished message (as an Abort would) and starts a new one; counted in
//!   [`ChunkDecoder::discarded_messages`].
//! - Set Chunk Size is honoured whatever chunk stream or message stream it comes on.

use crate::media::RtmpTimestamp;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use thiserror::Error;

/// Chunk size at the start of every connection (§5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;

/// Largest effective chunk size: no message is longer (the length field is 24
/// bits), so a larger Set Chunk Size acts as this one (§5.4.1).
pub const MAX_CHUNK_SIZE: u32 = 0x00FF_FFFF;

/// Distinct chunk stream ids per connection. Attack: a peer opening thousands of
/// chunk streams, each holding header state and a half-finished message.
/// Encoders use a handful (2 for control, 3-8 for commands and media).
pub const MAX_CHUNK_STREAMS: usize = 64;

/// Largest message accepted, checked against the declared length in the header
/// before a byte of it is buffered. Attack: a 0xFFFFFF length with 1-byte chunks
/// to make the server reserve 16 MiB per chunk stream. A 4K keyframe at 60 Mbit/s
/// is well under 8 MiB.
pub const MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;

/// Bytes held in unfinished messages across all chunk streams of a connection.
/// Attack: many chunk streams each with a large half-sent message
/// (64 x 8 MiB = 512 MiB without this cap).
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// Longest chunk header: 3-byte basic header, 11-byte fmt 0 header, 4-byte
/// extended timestamp.
const MAX_HEADER_LEN: usize = 3 + 11 + 4;

/// The 24-bit timestamp value that announces an extended timestamp (§5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;

/// Lowest and highest chunk stream id (§5.3.1.1); 0 and 1 are header escapes.
pub const MIN_CSID: u32 = 2;
pub const MAX_CSID: u32 = 65_599;

/// Message type ids (§5.4, §6.2, §7.1).
pub mod msg_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const SHARED_OBJECT_AMF3: u8 = 16;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const SHARED_OBJECT_AMF0: u8 = 19;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// Chunk stream it arrived on (or is to be sent on).
    pub csid: u32,
    pub timestamp: RtmpTimestamp,
    pub type_id: u8,
    /// Message stream id (0 for the connection, 1.. for streams made by createStream).
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Chunk stream errors. All decoder errors are the peer's fault and end the
/// connection; the encoder's are the caller's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk stream {csid}: fmt {fmt} chunk with no earlier fmt 0 header")]
    NoPreviousHeader { csid: u32, fmt: u8 },
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams on one connection")]
    TooManyChunkStreams,
    #[error("declared message length {0} exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    MessageTooLarge(u32),
    #[error("more than {MAX_BUFFERED_BYTES} bytes in unfinished messages")]
    TooMuchBuffered,
    #[error("invalid chunk size {0:#x}: 0 or top bit set")]
    InvalidChunkSize(u32),
    #[error("malformed {name} message ({len} bytes)")]
    MalformedControl { name: &'static str, len: usize },
    #[error("chunk decoder fed again after an error")]
    Poisoned,
    #[error("payload of {0} bytes does not fit the 24-bit message length")]
    PayloadTooLong(usize),
    #[error("chunk stream id {0} outside {MIN_CSID}..={MAX_CSID}")]
    InvalidCsid(u32),
}

fn u24(b: &[u8], at: usize) -> u32 {
    match at.checked_add(3).and_then(|end| b.get(at..end)) {
        Some(&[x, y, z]) => u32::from_be_bytes([0, x, y, z]),
        _ => 0,
    }
}

fn u32_be(b: &[u8], at: usize) -> u32 {
    match at.checked_add(4).and_then(|end| b.get(at..end)) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    match at.checked_add(4).and_then(|end| b.get(at..end)) {
        Some(&[w, x, y, z]) => u32::from_le_bytes([w, x, y, z]),
        _ => 0,
    }
}

/// Length of the basic header announced by its first byte.
fn basic_header_len(b0: u8) -> usize {
    match b0 & 0x3f {
        0 => 2,
        1 => 3,
        _ => 1,
    }
}

fn message_header_len(fmt: u8) -> usize {
    match fmt {
        0 => 11,
        1 => 7,
        2 => 3,
        _ => 0,
    }
}

/// Chunk stream id of a complete basic header (§5.3.1.1).
fn parse_csid(h: &[u8]) -> u32 {
    let b0 = h.first().copied().unwrap_or(0);
    let b1 = h.get(1).copied().unwrap_or(0) as u32;
    let b2 = h.get(2).copied().unwrap_or(0) as u32;
    match b0 & 0x3f {
        0 => b1.saturating_add(64),
        1 => (b2 << 8 | b1).saturating_add(64),
        n => n as u32,
    }
}

/// Parses a Set Chunk Size payload (§5.4.1): 0 or top bit set is an error,
/// anything above [`MAX_CHUNK_SIZE`] acts as it.
pub fn parse_chunk_size(payload: &[u8]) -> Result<u32, ChunkError> {
    if payload.len() < 4 {
        return Err(ChunkError::MalformedControl {
            name: "Set Chunk Size",
            len: payload.len(),
        });
    }
    let size = u32_be(payload, 0);
    if size == 0 || size & 0x8000_0000 != 0 {
        return Err(ChunkError::InvalidChunkSize(size));
    }
    Ok(size.min(MAX_CHUNK_SIZE))
}

/// Header state and the unfinished message of one chunk stream.
#[derive(Debug, Default)]
struct InStream {
    /// Timestamp of the current (or last) message.
    timestamp: u32,
    /// Added by a fmt 3 chunk that starts a new message.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last fmt 0/1/2 header used an extended timestamp, so fmt 3 chunks
    /// carry one too.
    extended: bool,
    /// A message has started and not all of its bytes have arrived.
    in_progress: bool,
    /// The unfinished message; grows only as bytes arrive.
    buf: Vec<u8>,
}

/// Reassembles messages from chunks. See the module docs.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    streams: HashMap<u32, InStream>,
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// In the data of a chunk: (chunk stream, bytes left in this chunk).
    in_chunk: Option<(u32, usize)>,
    /// Sum of `buf.len()` over all streams.
    buffered: usize,
    ready: VecDeque<RtmpMessage>,
    poisoned: bool,
    discarded: u64,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecoder {
    pub fn new() -> Self {
        ChunkDecoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            in_chunk: None,
            buffered: 0,
            ready: VecDeque::new(),
            poisoned: false,
            discarded: 0,
        }
    }

    /// Current incoming chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes held in unfinished messages.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Unfinished messages dropped by Abort or by a new header mid-message.
    pub fn discarded_messages(&self) -> u64 {
        self.discarded
    }

    /// Sets the incoming chunk size out of band (in-band Set Chunk Size
    /// messages are applied automatically).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        self.chunk_size = parse_chunk_size(&size.to_be_bytes())?;
        Ok(())
    }

    /// Feeds bytes; complete messages queue up for [`Self::next_message`].
    /// After an error the decoder is poisoned: the connection must close.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ChunkError> {
        if self.poisoned {
            return Err(ChunkError::Poisoned);
        }
        let result = self.feed_inner(data);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// The next complete message, in arrival order.
    pub fn next_message(&mut self) -> Option<RtmpMessage> {
        self.ready.pop_front()
    }

    fn feed_inner(&mut self, data: &[u8]) -> Result<(), ChunkError> {
        let mut pos = 0;
        loop {
            let rest = data.get(pos..).unwrap_or(&[]);
            if let Some((csid, left)) = self.in_chunk {
                if rest.is_empty() {
                    return Ok(());
                }
                let n = left.min(rest.len());
                self.append(csid, rest.get(..n).unwrap_or(&[]))?;
                pos = pos.saturating_add(n);
                if n == left {
                    self.in_chunk = None;
                    self.end_of_chunk(csid)?;
                } else {
                    self.in_chunk = Some((csid, left.saturating_sub(n)));
                }
                continue;
            }
            let need = self.header_needed()?;
            if self.header_len < need {
                if rest.is_empty() {
                    return Ok(());
                }
                let n = need.saturating_sub(self.header_len).min(rest.len());
                let (Some(dst), Some(src)) = (
                    self.header
                        .get_mut(self.header_len..self.header_len.saturating_add(n)),
                    rest.get(..n),
                ) else {
                    // need <= MAX_HEADER_LEN by construction
                    return Err(ChunkError::Poisoned);
                };
                dst.copy_from_slice(src);
                self.header_len = self.header_len.saturating_add(n);
                pos = pos.saturating_add(n);
                continue;
            }
            self.apply_header()?;
            self.header_len = 0;
        }
    }

    /// Header bytes needed, given those read so far (grows as they arrive).
    fn header_needed(&self) -> Result<usize, ChunkError> {
        let h = self.header.get(..self.header_len).unwrap_or(&[]);
        let Some(&b0) = h.first() else {
            return Ok(1);
        };
        let fmt = b0 >> 6;
        let basic = basic_header_len(b0);
        if h.len() < basic {
            return Ok(basic);
        }
        let base = basic.saturating_add(message_header_len(fmt));
        if h.len() < base {
            return Ok(base);
        }
        let extended = if fmt == 3 {
            let csid = parse_csid(h);
            match self.streams.get(&csid) {
                Some(s) => s.extended,
                None => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
            }
        } else {
            u24(h, basic) == EXTENDED_TIMESTAMP
        };
        Ok(base.saturating_add(if extended { 4 } else { 0 }))
    }

    /// A whole header is in `self.header`: update the chunk stream and start
    /// (or continue) its message.
    fn apply_header(&mut self) -> Result<(), ChunkError> {
        let h = self.header.get(..self.header_len).unwrap_or(&[]);
        let b0 = h.first().copied().unwrap_or(0);
        let fmt = b0 >> 6;
        let basic = basic_header_len(b0);
        let csid = parse_csid(h);
        let ts_field = u24(h, basic);
        let ext_at = basic.saturating_add(message_header_len(fmt));
        let ext = u32_be(h, ext_at);
        let length = u24(h, basic.saturating_add(3));
        let type_id = h.get(basic.saturating_add(6)).copied().unwrap_or(0);
        let stream_id = u32_le(h, basic.saturating_add(7));

        if fmt <= 1 && length as usize > MAX_MESSAGE_SIZE {
            return Err(ChunkError::MessageTooLarge(length));
        }
        if fmt == 0 && !self.streams.contains_key(&csid) {
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(ChunkError::TooManyChunkStreams);
            }
            self.streams.insert(csid, InStream::default());
        }
        let Some(st) = self.streams.get_mut(&csid) else {
            return Err(ChunkError::NoPreviousHeader { csid, fmt });
        };
        let extended = ts_field == EXTENDED_TIMESTAMP;
        let field = if extended { ext } else { ts_field };

        if fmt != 3 && st.in_progress {
            // A new header mid-message: drop the unfinished one.
            self.buffered = self.buffered.saturating_sub(st.buf.len());
            st.buf = Vec::new();
            st.in_progress = false;
            self.discarded = self.discarded.saturating_add(1);
        }
        match fmt {
            0 => {
                st.timestamp = field;
                st.delta = field;
                st.length = length;
                st.type_id = type_id;
                st.stream_id = stream_id;
                st.extended = extended;
            }
            1 => {
                st.timestamp = st.timestamp.wrapping_add(field);
                st.delta = field;
                st.length = length;
                st.type_id = type_id;
                st.extended = extended;
            }
            2 => {
                st.timestamp = st.timestamp.wrapping_add(field);
                st.delta = field;
                st.extended = extended;
            }
            _ => {
                if !st.in_progress {
                    // fmt 3 starting a new message: same header, next delta.
                    st.timestamp = st.timestamp.wrapping_add(st.delta);
                }
            }
        }
        st.in_progress = true;
        let left = (st.length as usize).saturating_sub(st.buf.len());
        let n = left.min(self.chunk_size as usize);
        if n == 0 {
            self.end_of_chunk(csid)
        } else {
            self.in_chunk = Some((csid, n));
            Ok(())
        }
    }

    /// Appends chunk data to a stream's message, growing its buffer only as the
    /// bytes arrive (doubling, but never past the declared length).
    fn append(&mut self, csid: u32, bytes: &[u8]) -> Result<(), ChunkError> {
        if self.buffered.saturating_add(bytes.len()) > MAX_BUFFERED_BYTES {
            return Err(ChunkError::TooMuchBuffered);
        }
        let Some(st) = self.streams.get_mut(&csid) else {
            return Err(ChunkError::NoPreviousHeader { csid, fmt: 3 });
        };
        let needed = st.buf.len().saturating_add(bytes.len());
        if needed > st.buf.capacity() {
            let target = (st.buf.capacity().saturating_mul(2))
                .max(256)
                .min(st.length as usize)
                .max(needed);
            st.buf.reserve_exact(target.saturating_sub(st.buf.len()));
        }
        st.buf.extend_from_slice(bytes);
        self.buffered = self.buffered.saturating_add(bytes.len());
        Ok(())
    }

    /// The current chunk of `csid` is complete; emit its message if whole.
    fn end_of_chunk(&mut self, csid: u32) -> Result<(), ChunkError> {
        let Some(st) = self.streams.get_mut(&csid) else {
            return Ok(());
        };
        if st.buf.len() < st.length as usize {
            return Ok(());
        }
        st.in_progress = false;
        let payload = Bytes::from(std::mem::take(&mut st.buf));
        self.buffered = self.buffered.saturating_sub(payload.len());
        let msg = RtmpMessage {
            csid,
            timestamp: RtmpTimestamp(st.timestamp),
            type_id: st.type_id,
            stream_id: st.stream_id,
            payload,
        };
        match msg.type_id {
            msg_type::SET_CHUNK_SIZE => self.chunk_size = parse_chunk_size(&msg.payload)?,
            msg_type::ABORT => {
                if msg.payload.len() < 4 {
                    return Err(ChunkError::MalformedControl {
                        name: "Abort",
                        len: msg.payload.len(),
                    });
                }
                let target = u32_be(&msg.payload, 0);
                if let Some(t) = self.streams.get_mut(&target) {
                    if t.in_progress {
                        self.buffered = self.buffered.saturating_sub(t.buf.len());
                        t.buf = Vec::new();
                        t.in_progress = false;
                        self.discarded = self.discarded.saturating_add(1);
                    }
                }
            }
            _ => {}
        }
        self.ready.push_back(msg);
        Ok(())
    }
}

/// What the encoder last sent on a chunk stream, for header compression.
#[derive(Debug, Clone, Copy)]
struct OutStream {
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Serialises messages into chunks (§5.3.1). The first chunk of a message is
/// fmt 0 (new chunk stream, other message stream, or timestamp going back),
/// fmt 1 (length or type changed) or fmt 2 (only the delta); continuations are
/// fmt 3, repeating the extended timestamp when the first chunk had one.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: HashMap<u32, OutStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the outgoing chunk size. The caller must first send the Set
    /// Chunk Size message (see [`super::control::set_chunk_size`]) at the old
    /// size. Same validity rules as an incoming one.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        self.chunk_size = parse_chunk_size(&size.to_be_bytes())?;
        Ok(())
    }

    /// Appends the chunks of `msg` to `out`.
    pub fn encode(&mut self, msg: &RtmpMessage, out: &mut BytesMut) -> Result<(), ChunkError> {
        let len = msg.payload.len();
        if len > MAX_CHUNK_SIZE as usize {
            return Err(ChunkError::PayloadTooLong(len));
        }
        if !(MIN_CSID..=MAX_CSID).contains(&msg.csid) {
            return Err(ChunkError::InvalidCsid(msg.csid));
        }
        let len = len as u32;
        let ts = msg.timestamp.0;
        let (fmt, field) = match self.streams.get(&msg.csid) {
            Some(p) if p.stream_id == msg.stream_id && ts >= p.timestamp => {
                if p.length == len && p.type_id == msg.type_id {
                    (2u8, ts.saturating_sub(p.timestamp))
                } else {
                    (1, ts.saturating_sub(p.timestamp))
                }
            }
            _ => (0, ts),
        };
        let extended = field >= EXTENDED_TIMESTAMP;
        self.streams.insert(
            msg.csid,
            OutStream {
                timestamp: ts,
                length: len,
                type_id: msg.type_id,
                stream_id: msg.stream_id,
            },
        );

        let chunk = self.chunk_size as usize;
        let chunks = msg.payload.len().div_ceil(chunk).max(1);
        let headers = chunks
            .saturating_sub(1)
            .saturating_mul(8)
            .saturating_add(18);
        out.reserve(msg.payload.len().saturating_add(headers));
        write_basic_header(out, fmt, msg.csid);
        let ts_out = if extended { EXTENDED_TIMESTAMP } else { field };
        match fmt {
            0 => {
                put_u24(out, ts_out);
                put_u24(out, len);
                out.put_u8(msg.type_id);
                out.put_u32_le(msg.stream_id);
            }
            1 => {
                put_u24(out, ts_out);
                put_u24(out, len);
                out.put_u8(msg.type_id);
            }
            _ => put_u24(out, ts_out),
        }
        if extended {
            out.put_u32(field);
        }
        for (i, piece) in msg.payload.chunks(chunk).enumerate() {
            if i > 0 {
                write_basic_header(out, 3, msg.csid);
                if extended {
                    out.put_u32(field);
                }
            }
            out.put_slice(piece);
        }
        Ok(())
    }
}

fn put_u24(out: &mut BytesMut, v: u32) {
    let [_, a, b, c] = v.to_be_bytes();
    out.put_slice(&[a, b, c]);
}

fn write_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let f = fmt << 6;
    if csid < 64 {
        out.put_u8(f | csid as u8);
    } else if csid < 320 {
        out.put_u8(f);
        out.put_u8(csid.saturating_sub(64) as u8);
    } else {
        let v = csid.saturating_sub(64);
        out.put_u8(f | 1);
        out.put_u8((v & 0xff) as u8);
        out.put_u8((v >> 8) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(csid: u32, ts: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> RtmpMessage {
        RtmpMessage {
            csid,
            timestamp: RtmpTimestamp(ts),
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8]) -> Result<Vec<RtmpMessage>, ChunkError> {
        dec.feed(bytes)?;
        Ok(std::iter::from_fn(|| dec.next_message()).collect())
    }

    #[test]
    fn decodes_spec_example_audio_with_fmt_2_and_3() {
        // §5.3.2.1: an audio stream, fmt 0 then fmt 2 then fmt 3 chunks.
        let mut bytes = vec![0x03, 0, 3, 0xe8, 0, 0, 32, 8, 1, 0, 0, 0];
        bytes.extend([1u8; 32]);
        bytes.extend([0x83, 0, 0, 40]); // fmt 2, delta 40
        bytes.extend([2u8; 32]);
        bytes.extend([0xc3]); // fmt 3: same delta
        bytes.extend([3u8; 32]);
        let mut dec = ChunkDecoder::new();
        let got = decode_all(&mut dec, &bytes).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].timestamp, RtmpTimestamp(1000));
        assert_eq!(got[1].timestamp, RtmpTimestamp(1040));
        assert_eq!(got[2].timestamp, RtmpTimestamp(1080));
        assert!(got.iter().all(|m| m.type_id == 8 && m.stream_id == 1));
        assert_eq!(&got[2].payload[..], &[3u8; 32]);
    }

    #[test]
    fn fmt3_after_fmt0_adds_the_fmt0_timestamp_like_librtmp() {
        let mut bytes = vec![0x04, 0, 0, 100, 0, 0, 1, 9, 1, 0, 0, 0, 0xaa];
        bytes.extend([0xc4, 0xbb]);
        let got = decode_all(&mut ChunkDecoder::new(), &bytes).unwrap();
        assert_eq!(got[1].timestamp, RtmpTimestamp(200));
    }

    #[test]
    fn multi_chunk_message_with_extended_timestamp_on_continuations() {
        let m = msg(6, 0x0123_4567, 9, 1, &[5u8; 300]);
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        enc.encode(&m, &mut out).unwrap();
        // 12 header + 4 ext + 128, then (1 + 4 + 128), then (1 + 4 + 44)
        assert_eq!(out.len(), 16 + 128 + 5 + 128 + 5 + 44);
        assert_eq!(out[16 + 128], 0xc6);
        assert_eq!(
            &out[16 + 128 + 1..16 + 128 + 5],
            &0x0123_4567u32.to_be_bytes()
        );
        let got = decode_all(&mut ChunkDecoder::new(), &out).unwrap();
        assert_eq!(got, vec![m]);
    }

    #[test]
    fn two_and_three_byte_basic_headers() {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        let ms = [
            msg(63, 1, 8, 1, b"a"),
            msg(64, 2, 8, 1, b"b"),
            msg(319, 3, 8, 1, b"c"),
            msg(320, 4, 8, 1, b"d"),
            msg(65_599, 5, 8, 1, b"e"),
        ];
        for m in &ms {
            enc.encode(m, &mut out).unwrap();
        }
        assert_eq!(
            decode_all(&mut ChunkDecoder::new(), &out).unwrap(),
            ms.to_vec()
        );
        assert_eq!(
            enc.encode(&msg(1, 0, 8, 1, b""), &mut out),
            Err(ChunkError::InvalidCsid(1))
        );
    }

    #[test]
    fn set_chunk_size_applies_at_the_next_chunk() {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        enc.encode(&msg(2, 0, 1, 0, &4096u32.to_be_bytes()), &mut out)
            .unwrap();
        enc.set_chunk_size(4096).unwrap();
        let big = msg(4, 0, 9, 1, &[7u8; 3000]);
        enc.encode(&big, &mut out).unwrap();
        let mut dec = ChunkDecoder::new();
        let got = decode_all(&mut dec, &out).unwrap();
        assert_eq!(dec.chunk_size(), 4096);
        assert_eq!(got[1], big);
    }

    #[test]
    fn chunk_size_zero_and_top_bit_are_errors_large_is_clamped() {
        for bad in [0u32, 0x8000_0000, 0xFFFF_FFFF] {
            let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
            bytes.extend(bad.to_be_bytes());
            let mut dec = ChunkDecoder::new();
            assert_eq!(dec.feed(&bytes), Err(ChunkError::InvalidChunkSize(bad)));
            assert_eq!(dec.feed(&[0]), Err(ChunkError::Poisoned));
        }
        let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
        bytes.extend(0x7FFF_FFFFu32.to_be_bytes());
        let mut dec = ChunkDecoder::new();
        dec.feed(&bytes).unwrap();
        assert_eq!(dec.chunk_size(), MAX_CHUNK_SIZE);
        // and nothing was allocated for it
        assert_eq!(dec.buffered_bytes(), 0);
        let mut short = vec![0x02, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0];
        short.extend([0, 1]);
        assert!(matches!(
            ChunkDecoder::new().feed(&short),
            Err(ChunkError::MalformedControl { .. })
        ));
    }

    #[test]
    fn chunk_size_one_works() {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        enc.encode(&msg(2, 0, 1, 0, &1u32.to_be_bytes()), &mut out)
            .unwrap();
        enc.set_chunk_size(1).unwrap();
        let m = msg(5, 77, 9, 1, &[1, 2, 3, 4, 5]);
        enc.encode(&m, &mut out).unwrap();
        let got = decode_all(&mut ChunkDecoder::new(), &out).unwrap();
        assert_eq!(got[1], m);
    }

    #[test]
    fn declared_length_over_the_cap_fails_before_buffering() {
        // 0xFFFFFF-byte message with 1-byte chunks: refused at the header.
        let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        bytes.extend([0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0, 0xab]);
        let mut dec = ChunkDecoder::new();
        assert_eq!(
            dec.feed(&bytes),
            Err(ChunkError::MessageTooLarge(0xFF_FFFF))
        );
        assert_eq!(dec.buffered_bytes(), 0);
        // fmt 1 is checked too
        let mut bytes = vec![0x04, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0];
        bytes.extend([0x44, 0, 0, 0, 0x80, 0, 1, 9]);
        assert_eq!(
            ChunkDecoder::new().feed(&bytes),
            Err(ChunkError::MessageTooLarge(0x80_0001))
        );
    }

    #[test]
    fn buffer_grows_only_as_bytes_arrive() {
        let len = MAX_MESSAGE_SIZE as u32;
        let [_, a, b, c] = len.to_be_bytes();
        let mut dec = ChunkDecoder::new();
        dec.feed(&[0x04, 0, 0, 0, a, b, c, 9, 1, 0, 0, 0]).unwrap();
        dec.feed(&[1u8; 100]).unwrap();
        assert_eq!(dec.buffered_bytes(), 100);
        let cap = dec.streams.get(&4).unwrap().buf.capacity();
        assert!(cap < 4096, "capacity {cap} after 100 bytes");
    }

    #[test]
    fn chunk_stream_cap() {
        let mut dec = ChunkDecoder::new();
        let mut bytes = Vec::new();
        for i in 0..MAX_CHUNK_STREAMS as u8 {
            // fmt 0 on chunk stream 64 + i: the first 128-byte chunk of a 256-byte message
            bytes.extend([0x00, i, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]);
            bytes.extend([0u8; 128]);
        }
        dec.feed(&bytes).unwrap();
        assert_eq!(dec.buffered_bytes(), MAX_CHUNK_STREAMS * 128);
        assert_eq!(
            dec.feed(&[0x00, 200, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]),
            Err(ChunkError::TooManyChunkStreams)
        );
    }

    #[test]
    fn thousands_of_half_messages_hit_a_cap() {
        let mut dec = ChunkDecoder::new();
        let mut result = Ok(());
        for i in 0..5000u32 {
            let csid = 320 + i;
            let v = csid - 64;
            let mut chunk = vec![0x01, (v & 0xff) as u8, (v >> 8) as u8, 0, 0, 0, 0, 1, 0, 9];
            chunk.extend([1, 0, 0, 0]);
            chunk.extend([0u8; 128]);
            result = dec.feed(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::TooManyChunkStreams));
        assert!(dec.buffered_bytes() <= MAX_CHUNK_STREAMS * 128);
    }

    #[test]
    fn buffered_bytes_cap() {
        let mut dec = ChunkDecoder::new();
        // Interleave 4 MiB first chunks of 8 MiB messages on five chunk streams.
        let chunk = 4 * 1024 * 1024;
        dec.set_chunk_size(chunk as u32).unwrap();
        let len = MAX_MESSAGE_SIZE as u32;
        let [_, a, b, c] = len.to_be_bytes();
        let part = vec![0u8; chunk];
        for csid in 4..8u8 {
            dec.feed(&[csid, 0, 0, 0, a, b, c, 9, 1, 0, 0, 0]).unwrap();
            dec.feed(&part).unwrap();
        }
        assert_eq!(dec.buffered_bytes(), MAX_BUFFERED_BYTES);
        dec.feed(&[8, 0, 0, 0, a, b, c, 9, 1, 0, 0, 0]).unwrap();
        assert_eq!(dec.feed(&[0]), Err(ChunkError::TooMuchBuffered));
    }

    #[test]
    fn fmt_1_2_3_without_previous_header_is_an_error() {
        for first in [0x44u8, 0x84, 0xc4] {
            let mut dec = ChunkDecoder::new();
            let r = dec.feed(&[first, 0, 0, 0, 0, 0, 1, 9, 0]);
            assert!(
                matches!(r, Err(ChunkError::NoPreviousHeader { csid: 4, .. })),
                "{r:?}"
            );
        }
    }

    #[test]
    fn abort_discards_the_unfinished_message() {
        let mut bytes = vec![0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
        bytes.extend([9u8; 128]);
        bytes.extend([0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 4]);
        // new message on csid 4
        bytes.extend([0x04, 0, 0, 5, 0, 0, 2, 9, 1, 0, 0, 0, 1, 2]);
        let mut dec = ChunkDecoder::new();
        let got = decode_all(&mut dec, &bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].type_id, msg_type::ABORT);
        assert_eq!(&got[1].payload[..], &[1, 2]);
        assert_eq!(dec.discarded_messages(), 1);
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn zero_length_message_completes_at_once() {
        let got = decode_all(
            &mut ChunkDecoder::new(),
            &[0x04, 0, 0, 1, 0, 0, 0, 20, 0, 0, 0, 0],
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].payload.is_empty());
    }

    #[test]
    fn encoder_compresses_headers() {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        enc.encode(&msg(4, 0, 8, 1, &[0; 10]), &mut out).unwrap();
        assert_eq!(out.len(), 12 + 10);
        out.clear();
        enc.encode(&msg(4, 23, 8, 1, &[0; 10]), &mut out).unwrap();
        assert_eq!(out[0] >> 6, 2);
        assert_eq!(out.len(), 4 + 10);
        out.clear();
        enc.encode(&msg(4, 46, 8, 1, &[0; 11]), &mut out).unwrap();
        assert_eq!(out[0] >> 6, 1);
        out.clear();
        enc.encode(&msg(4, 10, 8, 1, &[0; 11]), &mut out).unwrap();
        assert_eq!(out[0] >> 6, 0, "timestamp going back needs fmt 0");
    }

    fn arb_message() -> impl Strategy<Value = RtmpMessage> {
        (
            prop_oneof![3u32..8, 60u32..70, 318u32..322, Just(65_599u32)],
            prop_oneof![0u32..2000, 0xFF_FFF0u32..0x100_0010, any::<u32>()],
            prop_oneof![Just(8u8), Just(9u8), Just(18u8), Just(20u8)],
            0u32..3,
            proptest::collection::vec(any::<u8>(), 0..700),
        )
            .prop_map(|(csid, ts, type_id, stream_id, payload)| RtmpMessage {
                csid,
                timestamp: RtmpTimestamp(ts),
                type_id,
                stream_id,
                payload: Bytes::from(payload),
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_at_any_split(
            messages in proptest::collection::vec(arb_message(), 1..30),
            chunk_size in prop_oneof![1u32..300, Just(4096u32), Just(MAX_CHUNK_SIZE)],
            second_size in 1u32..200,
            switch_at in 0usize..30,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut enc = ChunkEncoder::new();
            let mut out = BytesMut::new();
            let mut expected = Vec::new();
            let send_size = |enc: &mut ChunkEncoder, out: &mut BytesMut, size: u32| {
                let m = msg(2, 0, msg_type::SET_CHUNK_SIZE, 0, &size.to_be_bytes());
                enc.encode(&m, out).unwrap();
                enc.set_chunk_size(size).unwrap();
                m
            };
            expected.push(send_size(&mut enc, &mut out, chunk_size));
            for (i, m) in messages.iter().enumerate() {
                if i == switch_at {
                    expected.push(send_size(&mut enc, &mut out, second_size));
                }
                enc.encode(m, &mut out).unwrap();
                expected.push(m.clone());
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(out.len() + 1)).collect();
            points.push(0);
            points.push(out.len());
            points.sort_unstable();
            let mut dec = ChunkDecoder::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                dec.feed(&out[w[0]..w[1]]).unwrap();
                got.extend(std::iter::from_fn(|| dec.next_message()));
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(dec.buffered_bytes(), 0);
        }

        #[test]
        fn decoder_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut dec = ChunkDecoder::new();
            let _ = dec.feed(&data);
            while dec.next_message().is_some() {}
            prop_assert!(dec.buffered_bytes() <= MAX_BUFFERED_BYTES);
        }
    }
}
