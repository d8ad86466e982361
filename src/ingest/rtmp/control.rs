//! Protocol control messages (Adobe RTMP 1.0 specification §5.4) and user
//! control messages (§6.2, event types in §7.1.7): builders for what we send,
//! parsers for what we receive. All go on chunk stream 2, message stream 0.
//!
//! Set Chunk Size and Abort are also acted on by [`super::chunk::ChunkDecoder`];
//! their payload rules live in [`super::chunk::parse_chunk_size`].

use super::chunk::{msg_type, RtmpMessage};
use crate::media::RtmpTimestamp;
use bytes::{BufMut, Bytes, BytesMut};

/// Chunk stream for protocol control messages (§5.4).
pub const CONTROL_CSID: u32 = 2;

/// Limit type of Set Peer Bandwidth (§5.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitType {
    Hard = 0,
    Soft = 1,
    Dynamic = 2,
}

fn control(type_id: u8, payload: Bytes) -> RtmpMessage {
    RtmpMessage {
        csid: CONTROL_CSID,
        timestamp: RtmpTimestamp(0),
        type_id,
        stream_id: 0,
        payload,
    }
}

fn u32_payload(v: u32) -> Bytes {
    Bytes::copy_from_slice(&v.to_be_bytes())
}

/// Set Chunk Size (§5.4.1). Send it at the old size, then switch the encoder.
pub fn set_chunk_size(size: u32) -> RtmpMessage {
    control(msg_type::SET_CHUNK_SIZE, u32_payload(size & 0x7FFF_FFFF))
}

/// Abort Message (§5.4.2) for a chunk stream.
pub fn abort(csid: u32) -> RtmpMessage {
    control(msg_type::ABORT, u32_payload(csid))
}

/// Acknowledgement (§5.4.3): bytes received so far (wrapping at 2^32).
pub fn acknowledgement(sequence: u32) -> RtmpMessage {
    control(msg_type::ACKNOWLEDGEMENT, u32_payload(sequence))
}

/// Window Acknowledgement Size (§5.4.4).
pub fn window_ack_size(size: u32) -> RtmpMessage {
    control(msg_type::WINDOW_ACK_SIZE, u32_payload(size))
}

/// Set Peer Bandwidth (§5.4.5).
pub fn set_peer_bandwidth(size: u32, limit: LimitType) -> RtmpMessage {
    let mut p = BytesMut::with_capacity(5);
    p.put_u32(size);
    p.put_u8(limit as u8);
    control(msg_type::SET_PEER_BANDWIDTH, p.freeze())
}

/// A user control event (§6.2, §7.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserControlEvent {
    StreamBegin(u32),
    StreamEof(u32),
    StreamDry(u32),
    SetBufferLength {
        stream_id: u32,
        millis: u32,
    },
    StreamIsRecorded(u32),
    PingRequest(u32),
    PingResponse(u32),
    /// Any other event type (e.g. 31/32, the buffer empty/ready extensions).
    Other(u16),
}

impl UserControlEvent {
    /// Parses a User Control message payload; `None` if too short for its type.
    pub fn parse(payload: &[u8]) -> Option<UserControlEvent> {
        let kind = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
        let arg = |at: usize| -> Option<u32> {
            let b = payload.get(at..at.checked_add(4)?)?;
            Some(u32::from_be_bytes([
                *b.first()?,
                *b.get(1)?,
                *b.get(2)?,
                *b.get(3)?,
            ]))
        };
        Some(match kind {
            0 => UserControlEvent::StreamBegin(arg(2)?),
            1 => UserControlEvent::StreamEof(arg(2)?),
            2 => UserControlEvent::StreamDry(arg(2)?),
            3 => UserControlEvent::SetBufferLength {
                stream_id: arg(2)?,
                millis: arg(6)?,
            },
            4 => UserControlEvent::StreamIsRecorded(arg(2)?),
            6 => UserControlEvent::PingRequest(arg(2)?),
            7 => UserControlEvent::PingResponse(arg(2)?),
            other => UserControlEvent::Other(other),
        })
    }

    /// The User Control message carrying this event.
    pub fn to_message(self) -> RtmpMessage {
        let mut p = BytesMut::with_capacity(10);
        let (kind, a, b) = match self {
            UserControlEvent::StreamBegin(s) => (0, s, None),
            UserControlEvent::StreamEof(s) => (1, s, None),
            UserControlEvent::StreamDry(s) => (2, s, None),
            UserControlEvent::SetBufferLength { stream_id, millis } => (3, stream_id, Some(millis)),
            UserControlEvent::StreamIsRecorded(s) => (4, s, None),
            UserControlEvent::PingRequest(t) => (6, t, None),
            UserControlEvent::PingResponse(t) => (7, t, None),
            UserControlEvent::Other(k) => (k, 0, None),
        };
        p.put_u16(kind);
        p.put_u32(a);
        if let Some(b) = b {
            p.put_u32(b);
        }
        control(msg_type::USER_CONTROL, p.freeze())
    }
}

/// The 4-byte big-endian value of Acknowledgement, Window Acknowledgement Size,
/// Set Peer Bandwidth (its first field) and Abort; `None` if shorter.
pub fn parse_u32(payload: &[u8]) -> Option<u32> {
    match payload.get(..4)? {
        &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_control_round_trips_and_rejects_short_payloads() {
        for ev in [
            UserControlEvent::StreamBegin(1),
            UserControlEvent::SetBufferLength {
                stream_id: 1,
                millis: 3000,
            },
            UserControlEvent::PingRequest(77),
            UserControlEvent::PingResponse(78),
        ] {
            let m = ev.to_message();
            assert_eq!(
                (m.csid, m.stream_id, m.type_id),
                (2, 0, msg_type::USER_CONTROL)
            );
            assert_eq!(UserControlEvent::parse(&m.payload), Some(ev));
        }
        assert_eq!(UserControlEvent::parse(&[0, 6, 0, 0]), None);
        assert_eq!(UserControlEvent::parse(&[0, 3, 0, 0, 0, 1]), None);
        assert_eq!(UserControlEvent::parse(&[0]), None);
        assert_eq!(
            UserControlEvent::parse(&[0, 31]),
            Some(UserControlEvent::Other(31))
        );
    }

    #[test]
    fn control_payloads() {
        assert_eq!(&set_chunk_size(4096).payload[..], &[0, 0, 0x10, 0]);
        assert_eq!(
            &set_peer_bandwidth(2_500_000, LimitType::Dynamic).payload[..],
            &[0, 0x26, 0x25, 0xa0, 2]
        );
        assert_eq!(parse_u32(&[0, 0, 1, 0, 9]), Some(256));
        assert_eq!(parse_u32(&[0, 0, 1]), None);
    }
}
