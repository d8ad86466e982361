//! The RTMP handshake, both sides (Adobe RTMP 1.0 specification §5.2).
//!
//! ```text
//! client                         server
//!   C0 (1 byte: version 3) ------>
//!   C1 (1536 bytes)        ------>
//!                          <------ S0 (version 3)
//!                          <------ S1 (1536 bytes: time, zero, random)
//!                          <------ S2 (1536 bytes: echo of C1)
//!   C2 (1536 bytes: echo of S1) ->
//!   chunk stream ...       ------>
//! ```
//!
//! This is the plain handshake of §5.2.3 (time, zero, random bytes), which is what
//! FFmpeg, OBS (librtmp) and every hardware encoder we know of accept. The digest
//! ("complex", Flash Player 9+) handshake is not implemented: it only matters for
//! Flash players and RTMPE, neither of which Ladder serves.
//!
//! Both machines are sans-IO: [`ServerHandshake::feed`] / [`ClientHandshake::feed`]
//! take whatever bytes arrived, and [`ServerHandshake::take_output`] returns what
//! to write. Bytes that arrive after the last handshake packet belong to the
//! chunk stream and come back in [`HandshakeProgress::Done`].
//!
//! The deadline, [`HANDSHAKE_TIMEOUT`], is enforced by the caller (the socket
//! owner): these machines read no clock. Echo contents (C2 vs S1, S2 vs C1) are
//! not verified, as in FFmpeg and nginx-rtmp: some encoders send garbage there,
//! and the check buys no security on a plain handshake.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;
use thiserror::Error;

/// The only RTMP version (C0/S0) we speak. 6 would be RTMPE, 8/9 RTMPE variants.
pub const RTMP_VERSION: u8 = 3;

/// Length of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

/// Time the caller allows for the whole handshake, from accept (or connect) to
/// [`HandshakeProgress::Done`]. Attack: slow-loris; a peer that sends only C0, or
/// 1535 bytes of C1, or never sends C2, would otherwise hold a connection slot
/// forever. The state machines read no clock: the socket owner enforces this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong during the handshake. Every variant is the peer's fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The first byte is an ASCII letter of an HTTP method ("GET", "POST",
    /// "PUT", "HEAD", "OPTIONS", "CONNECT", ...): someone pointed an HTTP
    /// client at the RTMP port. Closed at once.
    #[error("not RTMP: first byte {first_byte:#04x} ({:?}) looks like an HTTP request", *first_byte as char)]
    NotRtmp { first_byte: u8 },
    /// Any other version byte than 3 (RTMPE uses 6, 8 and 9; we do not).
    #[error("unsupported RTMP version {0} (only version 3 is supported)")]
    UnsupportedVersion(u8),
    /// `feed` after the handshake finished or failed.
    #[error("handshake already finished")]
    AlreadyDone,
}

/// Result of feeding bytes to a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeProgress {
    /// More bytes are needed (check `take_output` for bytes to send first).
    InProgress,
    /// The handshake is complete. `remaining` are bytes that followed the last
    /// handshake packet: the start of the chunk stream. Feed them to the session.
    Done { remaining: Bytes },
}

fn check_version(byte: u8) -> Result<(), HandshakeError> {
    match byte {
        RTMP_VERSION => Ok(()),
        // First letters of HTTP/1.x methods and of the HTTP/2 preface "PRI".
        b'G' | b'P' | b'H' | b'O' | b'C' | b'D' | b'T' => {
            Err(HandshakeError::NotRtmp { first_byte: byte })
        }
        other => Err(HandshakeError::UnsupportedVersion(other)),
    }
}

/// Fills a 1536-byte S1/C1: 4 bytes time, 4 bytes zero, 1528 bytes from a
/// xorshift generator. The bytes need not be cryptographically random (the
/// plain handshake only uses them as an echo cookie), but should not be constant.
fn fill_packet(out: &mut BytesMut, time_ms: u32, seed: u64) {
    out.put_u32(time_ms);
    out.put_u32(0);
    // xorshift64*; a zero state would stay zero.
    let mut state = seed | 1;
    let mut left = HANDSHAKE_SIZE - 8;
    while left > 0 {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes();
        let n = left.min(word.len());
        out.put_slice(word.get(..n).unwrap_or(&[]));
        left = left.saturating_sub(n);
    }
}

/// Copies up to `want - buf.len()` bytes from `data[*pos..]` into `buf`.
/// Returns true once `buf` holds `want` bytes.
fn fill(buf: &mut BytesMut, want: usize, data: &[u8], pos: &mut usize) -> bool {
    let rest = data.get(*pos..).unwrap_or(&[]);
    let n = want.saturating_sub(buf.len()).min(rest.len());
    buf.extend_from_slice(rest.get(..n).unwrap_or(&[]));
    *pos = pos.saturating_add(n);
    buf.len() >= want
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Waiting for C0 (1 byte).
    C0,
    /// Waiting for the 1536 bytes of C1.
    C1,
    /// S0+S1+S2 queued; waiting for the 1536 bytes of C2.
    C2,
    Done,
    Failed,
}

/// The server side of the plain handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    state: ServerState,
    /// Partial C1 or C2; never longer than [`HANDSHAKE_SIZE`].
    buf: BytesMut,
    output: BytesMut,
    time_ms: u32,
    seed: u64,
}

impl ServerHandshake {
    /// `time_ms` goes into S1's time field (any epoch: milliseconds since the
    /// process started is customary); `seed` varies S1's random bytes.
    pub fn new(time_ms: u32, seed: u64) -> Self {
        ServerHandshake {
            state: ServerState::C0,
            buf: BytesMut::with_capacity(HANDSHAKE_SIZE),
            output: BytesMut::new(),
            time_ms,
            seed,
        }
    }

    /// Feeds bytes from the socket. On `Err` the caller closes the connection
    /// without answering (for [`HandshakeError::NotRtmp`] this happens on the
    /// very first byte).
    pub fn feed(&mut self, data: &[u8]) -> Result<HandshakeProgress, HandshakeError> {
        let mut pos = 0;
        loop {
            match self.state {
                ServerState::C0 => {
                    let Some(&version) = data.get(pos) else {
                        return Ok(HandshakeProgress::InProgress);
                    };
                    pos = pos.saturating_add(1);
                    if let Err(e) = check_version(version) {
                        self.state = ServerState::Failed;
                        return Err(e);
                    }
                    self.state = ServerState::C1;
                }
                ServerState::C1 => {
                    if !fill(&mut self.buf, HANDSHAKE_SIZE, data, &mut pos) {
                        return Ok(HandshakeProgress::InProgress);
                    }
                    // S0 + S1 + S2 (S2 echoes C1, §5.2.4).
                    self.output.reserve(1 + 2 * HANDSHAKE_SIZE);
                    self.output.put_u8(RTMP_VERSION);
                    fill_packet(&mut self.output, self.time_ms, self.seed);
                    self.output.extend_from_slice(&self.buf);
                    self.buf.clear();
                    self.state = ServerState::C2;
                }
                ServerState::C2 => {
                    if !fill(&mut self.buf, HANDSHAKE_SIZE, data, &mut pos) {
                        return Ok(HandshakeProgress::InProgress);
                    }
                    self.buf = BytesMut::new();
                    self.state = ServerState::Done;
                    let remaining = Bytes::copy_from_slice(data.get(pos..).unwrap_or(&[]));
                    return Ok(HandshakeProgress::Done { remaining });
                }
                ServerState::Done | ServerState::Failed => return Err(HandshakeError::AlreadyDone),
            }
        }
    }

    /// Bytes to write to the socket (S0+S1+S2 once C1 is in), if any.
    pub fn take_output(&mut self) -> Option<Bytes> {
        if self.output.is_empty() {
            None
        } else {
            Some(self.output.split().freeze())
        }
    }

    /// True once C2 has been received.
    pub fn is_done(&self) -> bool {
        self.state == ServerState::Done
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// C0+C1 queued; waiting for S0.
    S0,
    /// Waiting for S1.
    S1,
    /// Waiting for S2.
    S2,
    Done,
    Failed,
}

/// The client side of the plain handshake, for restream and pull: C0+C1 are
/// queued at construction; C2 (the echo of S1) once S1 has arrived.
#[derive(Debug)]
pub struct ClientHandshake {
    state: ClientState,
    buf: BytesMut,
    output: BytesMut,
}

impl ClientHandshake {
    /// Queues C0+C1. `time_ms` and `seed` as for [`ServerHandshake::new`].
    pub fn new(time_ms: u32, seed: u64) -> Self {
        let mut output = BytesMut::with_capacity(1 + HANDSHAKE_SIZE);
        output.put_u8(RTMP_VERSION);
        fill_packet(&mut output, time_ms, seed);
        ClientHandshake {
            state: ClientState::S0,
            buf: BytesMut::with_capacity(HANDSHAKE_SIZE),
            output,
        }
    }

    /// Feeds bytes from the server. `Done` means C2 is queued (take it with
    /// [`Self::take_output`]) and the connection may send chunks.
    pub fn feed(&mut self, data: &[u8]) -> Result<HandshakeProgress, HandshakeError> {
        let mut pos = 0;
        loop {
            match self.state {
                ClientState::S0 => {
                    let Some(&version) = data.get(pos) else {
                        return Ok(HandshakeProgress::InProgress);
                    };
                    pos = pos.saturating_add(1);
                    if let Err(e) = check_version(version) {
                        self.state = ClientState::Failed;
                        return Err(e);
                    }
                    self.state = ClientState::S1;
                }
                ClientState::S1 => {
                    if !fill(&mut self.buf, HANDSHAKE_SIZE, data, &mut pos) {
                        return Ok(HandshakeProgress::InProgress);
                    }
                    // C2 echoes S1 (§5.2.4). It may be sent before S2 arrives.
                    self.output.extend_from_slice(&self.buf);
                    self.buf.clear();
                    self.state = ClientState::S2;
                }
                ClientState::S2 => {
                    if !fill(&mut self.buf, HANDSHAKE_SIZE, data, &mut pos) {
                        return Ok(HandshakeProgress::InProgress);
                    }
                    self.buf = BytesMut::new();
                    self.state = ClientState::Done;
                    let remaining = Bytes::copy_from_slice(data.get(pos..).unwrap_or(&[]));
                    return Ok(HandshakeProgress::Done { remaining });
                }
                ClientState::Done | ClientState::Failed => return Err(HandshakeError::AlreadyDone),
            }
        }
    }

    /// Bytes to write to the socket (C0+C1 first, then C2), if any.
    pub fn take_output(&mut self) -> Option<Bytes> {
        if self.output.is_empty() {
            None
        } else {
            Some(self.output.split().freeze())
        }
    }

    /// True once S2 has been received.
    pub fn is_done(&self) -> bool {
        self.state == ClientState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c0c1() -> Vec<u8> {
        let mut v = vec![3u8];
        v.extend((0..HANDSHAKE_SIZE).map(|i| (i % 251) as u8));
        v
    }

    #[test]
    fn server_replies_s0_s1_s2_and_returns_leftover() {
        let mut hs = ServerHandshake::new(1234, 42);
        let c = c0c1();
        assert_eq!(hs.feed(&c).unwrap(), HandshakeProgress::InProgress);
        let out = hs.take_output().unwrap();
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..5], &1234u32.to_be_bytes());
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        // S2 echoes C1.
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c[1..]);
        assert!(hs.take_output().is_none());

        let mut c2 = out[1..1 + HANDSHAKE_SIZE].to_vec();
        c2.extend_from_slice(b"\x03chunk");
        match hs.feed(&c2).unwrap() {
            HandshakeProgress::Done { remaining } => assert_eq!(&remaining[..], b"\x03chunk"),
            other => panic!("{other:?}"),
        }
        assert!(hs.is_done());
        assert_eq!(hs.feed(b"x"), Err(HandshakeError::AlreadyDone));
    }

    #[test]
    fn http_request_is_refused_on_first_byte() {
        for req in [&b"POST /x HTTP/1.1"[..], b"GET / HTTP/1.1", b"P", b"HEAD /"] {
            let mut hs = ServerHandshake::new(0, 0);
            let err = hs.feed(req).unwrap_err();
            assert!(matches!(err, HandshakeError::NotRtmp { .. }), "{err}");
            assert!(hs.take_output().is_none());
            assert!(err.to_string().contains("HTTP"));
        }
        assert_eq!(
            ServerHandshake::new(0, 0).feed(&[6]),
            Err(HandshakeError::UnsupportedVersion(6))
        );
        assert_eq!(
            ServerHandshake::new(0, 0).feed(&[0]),
            Err(HandshakeError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn partial_c1_and_missing_c2_stay_in_progress() {
        let mut hs = ServerHandshake::new(0, 0);
        let c = c0c1();
        // C0 and 1535 bytes of C1: nothing is sent, still in progress.
        assert_eq!(
            hs.feed(&c[..HANDSHAKE_SIZE]).unwrap(),
            HandshakeProgress::InProgress
        );
        assert!(hs.take_output().is_none());
        assert_eq!(
            hs.feed(&c[HANDSHAKE_SIZE..]).unwrap(),
            HandshakeProgress::InProgress
        );
        assert!(hs.take_output().is_some());
        assert_eq!(hs.feed(&[0; 100]).unwrap(), HandshakeProgress::InProgress);
        assert!(!hs.is_done());
    }

    #[test]
    fn client_and_server_complete_each_other() {
        let mut client = ClientHandshake::new(7, 1);
        let mut server = ServerHandshake::new(9, 2);
        let c0c1 = client.take_output().unwrap();
        assert_eq!(c0c1.len(), 1 + HANDSHAKE_SIZE);
        assert_eq!(server.feed(&c0c1).unwrap(), HandshakeProgress::InProgress);
        let s = server.take_output().unwrap();
        assert_eq!(
            client.feed(&s).unwrap(),
            HandshakeProgress::Done {
                remaining: Bytes::new()
            }
        );
        let mut c2 = client.take_output().unwrap().to_vec();
        // C2 echoes S1.
        assert_eq!(&c2[..], &s[1..1 + HANDSHAKE_SIZE]);
        c2.extend_from_slice(b"tail");
        assert_eq!(
            server.feed(&c2).unwrap(),
            HandshakeProgress::Done {
                remaining: Bytes::from_static(b"tail")
            }
        );
    }

    #[test]
    fn client_refuses_bad_s0() {
        let mut client = ClientHandshake::new(0, 0);
        assert_eq!(
            client.feed(&[9]),
            Err(HandshakeError::UnsupportedVersion(9))
        );
    }

    proptest! {
        #[test]
        fn server_handshake_any_split(cut1 in 0usize..3200, cut2 in 0usize..3200) {
            let mut input = c0c1();
            input.extend(std::iter::repeat_n(7u8, HANDSHAKE_SIZE));
            input.extend_from_slice(b"rest");
            let (a, b) = (cut1.min(cut2).min(input.len()), cut1.max(cut2).min(input.len()));
            let mut hs = ServerHandshake::new(0, 5);
            let mut after: Option<Vec<u8>> = None;
            for part in [&input[..a], &input[a..b], &input[b..]] {
                if let Some(after) = after.as_mut() {
                    after.extend_from_slice(part);
                } else if let HandshakeProgress::Done { remaining } = hs.feed(part).unwrap() {
                    after = Some(remaining.to_vec());
                }
            }
            prop_assert_eq!(after.unwrap(), b"rest".to_vec());
        }
    }
}
