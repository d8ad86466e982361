//! A raw RTMP client for hostile tests: the handshake and chunks come from
//! Ladder's own sans-IO pieces (`ClientHandshake`, `ChunkEncoder`,
//! `ChunkDecoder`, `amf0`), and anything else can be written to the socket
//! byte by byte. Every read is bounded by a timeout: a server that neither
//! answers nor closes fails the test instead of hanging it.

use bytes::{Bytes, BytesMut};
use ladder::ingest::rtmp::amf0::{object, Amf0Value};
use ladder::ingest::rtmp::chunk::{msg_type, parse_chunk_size};
use ladder::ingest::rtmp::{
    control, ChunkDecoder, ChunkEncoder, ClientHandshake, HandshakeProgress, RtmpMessage,
};
use ladder::media::RtmpTimestamp;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Chunk streams as ffmpeg uses them.
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_VIDEO: u32 = 6;

/// How long a read waits for the server.
pub const READ_WAIT: Duration = Duration::from_secs(10);

/// One raw connection to the RTMP port.
pub struct RawRtmp {
    pub socket: TcpStream,
    pub encoder: ChunkEncoder,
    pub decoder: ChunkDecoder,
    /// Every AMF0 command the server sent, in order.
    pub seen: Vec<Vec<Amf0Value>>,
    next_transaction: f64,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Data(usize),
    Closed,
    TimedOut,
}

impl RawRtmp {
    /// A TCP connection, nothing sent.
    pub fn tcp(addr: SocketAddr) -> RawRtmp {
        let socket = TcpStream::connect(addr).expect("connect to the RTMP port");
        socket.set_read_timeout(Some(READ_WAIT)).unwrap();
        socket.set_nodelay(true).unwrap();
        RawRtmp {
            socket,
            encoder: ChunkEncoder::new(),
            decoder: ChunkDecoder::new(),
            seen: Vec::new(),
            next_transaction: 1.0,
        }
    }

    /// A TCP connection and a complete handshake.
    pub fn handshaken(addr: SocketAddr) -> RawRtmp {
        RawRtmp::try_handshaken(addr).expect("server closed during the handshake")
    }

    /// A TCP connection and a complete handshake; `None` when the server
    /// closes the connection first (at its connection limit, say).
    pub fn try_handshaken(addr: SocketAddr) -> Option<RawRtmp> {
        let mut c = RawRtmp::tcp(addr);
        let mut handshake = ClientHandshake::new(0, 7);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(out) = handshake.take_output() {
                c.socket.write_all(&out).ok()?;
            }
            if handshake.is_done() {
                break;
            }
            let n = match c.read(&mut buf) {
                Got::Data(n) => n,
                Got::Closed => return None,
                Got::TimedOut => panic!("no handshake from ladder in {READ_WAIT:?}"),
            };
            if let HandshakeProgress::Done { remaining } = handshake.feed(&buf[..n]).unwrap() {
                c.decoder.feed(&remaining).unwrap();
            }
        }
        Some(c)
    }

    /// Handshake and `connect(app)`; panics unless `_result` comes back.
    pub fn connected(addr: SocketAddr, app: &str) -> RawRtmp {
        let mut c = RawRtmp::handshaken(addr);
        let reply = c.connect(app).expect("connect answered");
        assert_eq!(reply[0].as_str(), Some("_result"), "{reply:?}");
        c
    }

    /// `connect(app)`; the `_result` or `_error` values, `None` if closed.
    pub fn connect(&mut self, app: &str) -> Option<Vec<Amf0Value>> {
        self.connect_with(app, [])
    }

    /// `connect(app)` with more properties in its command object (Enhanced
    /// RTMP's `fourCcList`, say).
    pub fn connect_with<'a>(
        &mut self,
        app: &str,
        more: impl IntoIterator<Item = (&'a str, Amf0Value)>,
    ) -> Option<Vec<Amf0Value>> {
        let txn = self.transaction();
        let tc_url = format!("rtmp://{}/{app}", self.socket.peer_addr().unwrap());
        let properties = [
            ("app", Amf0Value::String(app.into())),
            ("type", Amf0Value::String("nonprivate".into())),
            ("tcUrl", Amf0Value::String(tc_url)),
        ];
        self.command(
            0,
            &[
                Amf0Value::String("connect".into()),
                Amf0Value::Number(txn),
                object(properties.into_iter().chain(more)),
            ],
        );
        self.reply(txn)
    }

    /// `createStream`; the stream id, `None` if closed or refused.
    pub fn create_stream(&mut self) -> Option<u32> {
        let txn = self.transaction();
        self.command(
            0,
            &[
                Amf0Value::String("createStream".into()),
                Amf0Value::Number(txn),
                Amf0Value::Null,
            ],
        );
        let r = self.reply(txn)?;
        (r[0].as_str() == Some("_result"))
            .then(|| r.get(3).and_then(Amf0Value::as_number))
            .flatten()
            .map(|n| n as u32)
    }

    /// `publish(name)` on `stream_id`: the onStatus code, `None` if closed.
    pub fn publish(&mut self, stream_id: u32, name: &str) -> Option<String> {
        let mut payload = BytesMut::new();
        Amf0Value::encode_all(
            &[
                Amf0Value::String("publish".into()),
                Amf0Value::Number(self.transaction()),
                Amf0Value::Null,
                Amf0Value::String(name.into()),
                Amf0Value::String("live".into()),
            ],
            &mut payload,
        )
        .unwrap();
        self.publish_raw(stream_id, payload.freeze())
    }

    /// A publish command with a payload written by the caller (names that
    /// `Amf0Value` cannot hold): the onStatus code, `None` if closed.
    pub fn publish_raw(&mut self, stream_id: u32, payload: Bytes) -> Option<String> {
        self.command_raw(stream_id, payload)?;
        let status = self.wait_command(|v| v[0].as_str() == Some("onStatus"))?;
        status
            .get(3)
            .and_then(|o| o.get("code"))
            .and_then(Amf0Value::as_str)
            .map(str::to_owned)
    }

    /// Handshake, connect, createStream, publish `key`: a publisher on its
    /// stream (panics unless NetStream.Publish.Start).
    pub fn publisher(addr: SocketAddr, key: &str) -> (RawRtmp, u32) {
        let mut c = RawRtmp::connected(addr, "live");
        let id = c.create_stream().expect("createStream");
        let code = c.publish(id, key);
        assert_eq!(code.as_deref(), Some("NetStream.Publish.Start"));
        (c, id)
    }

    fn transaction(&mut self) -> f64 {
        self.next_transaction += 1.0;
        self.next_transaction
    }

    /// Encode and write `msg`; `None` if the server has closed.
    pub fn send(&mut self, msg: &RtmpMessage) -> Option<()> {
        let mut out = BytesMut::new();
        self.encoder.encode(msg, &mut out).unwrap();
        self.write(&out)
    }

    /// Write raw bytes; `None` if the server has closed.
    pub fn write(&mut self, bytes: &[u8]) -> Option<()> {
        self.socket.write_all(bytes).ok()
    }

    /// An AMF0 command from values.
    pub fn command(&mut self, stream_id: u32, values: &[Amf0Value]) -> Option<()> {
        let mut payload = BytesMut::new();
        Amf0Value::encode_all(values, &mut payload).unwrap();
        self.command_raw(stream_id, payload.freeze())
    }

    /// An AMF0 command message with any payload.
    pub fn command_raw(&mut self, stream_id: u32, payload: Bytes) -> Option<()> {
        self.send(&RtmpMessage {
            csid: CSID_COMMAND,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::COMMAND_AMF0,
            stream_id,
            payload,
        })
    }

    /// A media message (8 audio, 9 video) or data message (18).
    pub fn media(&mut self, stream_id: u32, type_id: u8, ms: u32, payload: Bytes) -> Option<()> {
        let csid = if type_id == msg_type::AUDIO {
            CSID_AUDIO
        } else {
            CSID_VIDEO
        };
        self.send(&RtmpMessage {
            csid,
            timestamp: RtmpTimestamp(ms),
            type_id,
            stream_id,
            payload,
        })
    }

    /// Send Set Chunk Size `size` as is (top bit included) and, when the
    /// server must honour it, switch our encoder to it.
    pub fn set_chunk_size(&mut self, size: u32) -> Option<()> {
        self.send(&RtmpMessage {
            csid: control::CONTROL_CSID,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::copy_from_slice(&size.to_be_bytes()),
        })?;
        let _ = self.encoder.set_chunk_size(size);
        Some(())
    }

    /// The `_result`/`_error` of transaction `txn`; `None` if closed.
    fn reply(&mut self, txn: f64) -> Option<Vec<Amf0Value>> {
        self.wait_command(|v| {
            matches!(v[0].as_str(), Some("_result") | Some("_error"))
                && v[1].as_number() == Some(txn)
        })
    }

    /// Read until an AMF0 command `matches` (Set Chunk Size applied on the
    /// way); `None` when the server closes. Panics after [`READ_WAIT`] of
    /// silence.
    pub fn wait_command(
        &mut self,
        matches: impl Fn(&[Amf0Value]) -> bool,
    ) -> Option<Vec<Amf0Value>> {
        let mut buf = [0u8; 4096];
        loop {
            while let Some(msg) = self.decoder.next_message() {
                match msg.type_id {
                    msg_type::SET_CHUNK_SIZE => {
                        let size = parse_chunk_size(&msg.payload).unwrap();
                        self.decoder.set_chunk_size(size).unwrap();
                    }
                    msg_type::COMMAND_AMF0 => {
                        let values = Amf0Value::decode_all(&msg.payload).unwrap();
                        self.seen.push(values.clone());
                        if values.len() >= 2 && matches(&values) {
                            return Some(values);
                        }
                    }
                    _ => {}
                }
            }
            match self.read(&mut buf) {
                Got::Data(n) => self.decoder.feed(&buf[..n]).unwrap(),
                Got::Closed => return None,
                Got::TimedOut => panic!("no answer from ladder in {READ_WAIT:?}"),
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Got {
        match self.socket.read(buf) {
            Ok(0) => Got::Closed,
            Ok(n) => Got::Data(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Got::TimedOut
            }
            Err(_) => Got::Closed,
        }
    }

    /// Whether the server closes the connection within `within`, reading
    /// (and dropping) whatever it sends meanwhile.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.read(&mut buf) {
                Got::Closed => return true,
                Got::Data(_) => continue,
                Got::TimedOut => return false,
            }
        }
    }

    /// Whether the connection is still open after `wait` (nothing more from
    /// the server than what it may send on its own).
    pub fn open_after(&mut self, wait: Duration) -> bool {
        !self.closed_within(wait)
    }
}
