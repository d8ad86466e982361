//! The client side of an RTMP connection after the handshake, for restream
//! (publish) and pull ingest (play): Adobe RTMP 1.0 specification §7.2.1
//! (connect, createStream, deleteStream), §7.2.2 (play, publish), §5.4
//! (protocol control) and §6.2 / §7.1.7 (user control).
//!
//! Sans-IO like [`super::session::ServerSession`]: [`ClientSession::feed`]
//! takes bytes from the server, [`ClientSession::take_output`] returns bytes to
//! write, [`ClientSession::poll_event`] returns what happened. No socket, no
//! clock: the driver (`ingest::client`) runs the handshake
//! ([`super::handshake::ClientHandshake`]) first and enforces every deadline.
//!
//! The conversation, as FFmpeg and OBS hold it (`*` marks an event):
//!
//! ```text
//! new()                 -> Set Chunk Size 4096, Window Ack Size, connect(app, tcUrl, flashVer, type)
//! _result (connect)     -> * Connected
//!   publish mode        -> releaseStream(name), FCPublish(name), createStream
//!   play mode           -> createStream
//! _result (createStream)-> * StreamCreated
//!   publish mode        -> publish(name, "live")
//!   play mode           -> Set Buffer Length, play(name, -2)
//! onStatus Publish.Start-> * Publishing: send_metadata / send_video / send_audio, then unpublish
//! onStatus Play.Start   -> * Playing: * Video, Audio, Metadata, StreamBegin/EOF, Unpublished, Stopped
//! _error or onStatus level "error" before that -> * Refused (code, description)
//! ```
//!
//! Both modes acknowledge the server's window (§5.4.3), answer Ping Request
//! (§7.1.7), honour its Set Chunk Size (in the chunk decoder) and ignore the
//! calls some servers make that need no answer (`onBWDone`, `onFCPublish`,
//! `onFCUnpublish`, `_checkbw`), counting them in [`ClientStats`]. `_error`
//! replies to `releaseStream` and `FCPublish`, which some servers do not know,
//! are ignored as FFmpeg ignores them.
//!
//! Hostile servers: framing limits are the chunk decoder's
//! ([`super::chunk::MAX_MESSAGE_SIZE`], [`super::chunk::MAX_CHUNK_STREAMS`],
//! [`super::chunk::MAX_BUFFERED_BYTES`]) and AMF0's; status texts are cut to
//! [`MAX_STATUS_TEXT`]; aggregates to [`MAX_AGGREGATE_TAGS`] messages. Only
//! broken framing, malformed control messages and an unusable createStream
//! reply are fatal (`feed` returns `Err`); everything else is ignored and
//! counted. Nothing here panics on any input.
//!
//! The stream name is the secret key of most restream destinations: it goes
//! into `releaseStream`, `FCPublish`, `publish`/`play` and `FCUnpublish` and
//! nowhere else. Status texts the server sends back have it replaced by
//! [`super::url::REDACTED`] (some servers quote the name), and
//! [`ClientConfig`]'s `Debug` leaves it out.

use super::amf0::{object, Amf0Value};
use super::chunk::{msg_type, ChunkDecoder, ChunkEncoder, RtmpMessage, MAX_CHUNK_SIZE};
use super::control::{self, UserControlEvent};
use super::session::MIN_ACK_WINDOW;
use super::url::{RtmpUrl, REDACTED};
use super::RtmpError;
use crate::media::RtmpTimestamp;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use thiserror::Error;

/// flashVer sent when publishing: FMLE's form, which every ingest service
/// accepts (FFmpeg sends `FMLE/3.0 (compatible; Lavf...)`).
pub const PUBLISH_FLASH_VER: &str = "FMLE/3.0 (compatible; Ladder)";
/// flashVer sent when playing: a Flash Player's form, as FFmpeg sends.
pub const PLAY_FLASH_VER: &str = "LNX 9,0,124,2";
/// Chunk size we send with (announced first thing after the handshake).
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// Window Acknowledgement Size we announce.
pub const WINDOW_ACK_SIZE: u32 = 2_500_000;
/// Set Buffer Length sent before play, in milliseconds (FFmpeg's default).
pub const PLAY_BUFFER_MS: u32 = 3000;

/// Longest status code or description kept from the server, in bytes; longer
/// ones are cut. Attack: a server answering with megabytes of description that
/// end up in every log line and error message.
pub const MAX_STATUS_TEXT: usize = 256;

/// Messages taken from one Aggregate message; the rest are dropped and counted.
/// Attack: an 8 MiB aggregate of 15-byte empty tags queuing half a million
/// events from one message. Servers that aggregate (FMS, Wowza) put a few
/// hundred milliseconds, tens of messages, in one.
pub const MAX_AGGREGATE_TAGS: usize = 1024;

/// Chunk stream for our commands on stream 0 (connect, createStream, ...).
const COMMAND_CSID: u32 = 3;
/// Chunk stream for audio (FFmpeg's RTMP_AUDIO_CHANNEL).
const AUDIO_CSID: u32 = 4;
/// Chunk stream for video (FFmpeg's RTMP_VIDEO_CHANNEL).
const VIDEO_CSID: u32 = 6;
/// Chunk stream for publish/play and data messages on the media stream
/// (FFmpeg's RTMP_SOURCE_CHANNEL).
const STREAM_CSID: u32 = 8;

/// onStatus codes the client acts on.
pub mod status {
    /// The publication is accepted: media may flow.
    pub const PUBLISH_START: &str = "NetStream.Publish.Start";
    /// The playback started.
    pub const PLAY_START: &str = "NetStream.Play.Start";
    /// The server stopped the playback.
    pub const PLAY_STOP: &str = "NetStream.Play.Stop";
    /// A recorded stream played to its end.
    pub const PLAY_COMPLETE: &str = "NetStream.Play.Complete";
    /// The live stream's publisher stopped (the server may resume it).
    pub const PLAY_UNPUBLISH_NOTIFY: &str = "NetStream.Play.UnpublishNotify";
    /// No such stream (a refusal of play).
    pub const PLAY_STREAM_NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
    /// The play failed (a refusal of play).
    pub const PLAY_FAILED: &str = "NetStream.Play.Failed";
}

/// What the client does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Send media to the server (restream).
    Publish,
    /// Receive media from the server (pull ingest).
    Play,
}

/// The step of the conversation a session is at (or that failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Resolving the host name (driver only).
    Resolve,
    /// Opening the TCP connection (driver only).
    TcpConnect,
    /// The TLS handshake of `rtmps://` (driver only).
    Tls,
    /// C0/C1/C2 (driver only).
    Handshake,
    /// `connect`, waiting for its `_result`.
    Connect,
    /// `createStream`, waiting for its `_result`.
    CreateStream,
    /// `publish`, waiting for NetStream.Publish.Start.
    Publish,
    /// `play`, waiting for NetStream.Play.Start.
    Play,
    /// Publishing or playing.
    Streaming,
    /// After unpublish, a refusal or the end of playback.
    Closed,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "name resolution",
            Stage::TcpConnect => "TCP connect",
            Stage::Tls => "TLS handshake",
            Stage::Handshake => "RTMP handshake",
            Stage::Connect => "connect",
            Stage::CreateStream => "createStream",
            Stage::Publish => "publish",
            Stage::Play => "play",
            Stage::Streaming => "streaming",
            Stage::Closed => "close",
        })
    }
}

/// Session settings. `Debug` leaves the stream name out.
#[derive(Clone, PartialEq)]
pub struct ClientConfig {
    /// Publish (restream) or play (pull ingest).
    pub mode: ClientMode,
    /// `connect`'s app.
    pub app: String,
    /// `connect`'s tcUrl.
    pub tc_url: String,
    /// The stream name (key) for publish/play, with any query.
    pub stream_name: String,
    /// `connect`'s flashVer.
    pub flash_ver: String,
    /// Chunk size we send with.
    pub out_chunk_size: u32,
    /// Window Acknowledgement Size we announce.
    pub window_ack_size: u32,
    /// Set Buffer Length before play, in milliseconds.
    pub buffer_length_ms: u32,
    /// publish's type ("live", "record", "append").
    pub publish_type: String,
    /// play's start: -2 live or recorded (FFmpeg's default), -1 live only,
    /// 0 or more a recorded stream from that second.
    pub play_start: f64,
    /// Enhanced RTMP (v1) `fourCcList` in connect, e.g. `["hvc1", "av01"]`,
    /// for publishing HEVC or AV1; empty sends none (plain RTMP).
    pub four_cc_list: Vec<String>,
}

impl ClientConfig {
    /// The defaults for `url` in `mode`.
    pub fn new(url: &RtmpUrl, mode: ClientMode) -> ClientConfig {
        ClientConfig {
            mode,
            app: url.app().to_owned(),
            tc_url: url.tc_url(),
            stream_name: url.stream_name().to_owned(),
            flash_ver: match mode {
                ClientMode::Publish => PUBLISH_FLASH_VER,
                ClientMode::Play => PLAY_FLASH_VER,
            }
            .to_owned(),
            out_chunk_size: OUT_CHUNK_SIZE,
            window_ack_size: WINDOW_ACK_SIZE,
            buffer_length_ms: PLAY_BUFFER_MS,
            publish_type: "live".to_owned(),
            play_start: -2.0,
            four_cc_list: Vec::new(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("mode", &self.mode)
            .field("app", &self.app)
            .field("tc_url", &self.tc_url)
            .field("stream_name", &REDACTED)
            .field("flash_ver", &self.flash_ver)
            .field("out_chunk_size", &self.out_chunk_size)
            .field("window_ack_size", &self.window_ack_size)
            .field("buffer_length_ms", &self.buffer_length_ms)
            .field("publish_type", &self.publish_type)
            .field("play_start", &self.play_start)
            .field("four_cc_list", &self.four_cc_list)
            .finish()
    }
}

/// An onStatus (or `_error`) info object: level, code, description, cut to
/// [`MAX_STATUS_TEXT`] bytes with the stream name redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// "status", "warning" or "error".
    pub level: String,
    /// e.g. "NetStream.Play.Start"; may be empty.
    pub code: String,
    /// The server's words; may be empty.
    pub description: String,
}

/// The server said no to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// [`Stage::Connect`], [`Stage::CreateStream`], [`Stage::Publish`] or [`Stage::Play`].
    pub stage: Stage,
    /// e.g. "NetStream.Publish.BadName"; empty when the server sent none.
    pub code: String,
    /// The server's words (redacted, cut), or ours when it said nothing.
    pub description: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = if self.code.is_empty() {
            "no code"
        } else {
            &self.code
        };
        write!(f, "{} refused: {code}", self.stage)?;
        if !self.description.is_empty() {
            write!(f, " ({})", self.description)?;
        }
        Ok(())
    }
}

/// What the session tells its caller, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// connect's `_result` arrived.
    Connected,
    /// createStream's `_result` arrived with this message stream id.
    StreamCreated {
        /// The new message stream.
        stream_id: u32,
    },
    /// NetStream.Publish.Start: media may be sent.
    Publishing {
        /// The message stream media goes out on.
        stream_id: u32,
    },
    /// NetStream.Play.Start: media will come.
    Playing {
        /// The message stream media comes in on.
        stream_id: u32,
    },
    /// The server refused connect, createStream, publish or play. The session
    /// is over ([`Stage::Closed`]); close the connection.
    Refused(Refusal),
    /// Any other onStatus (Play.Reset, Play.PublishNotify, Publish.Idle, ...).
    Status(Status),
    /// Play mode: the far end's publisher stopped (Play.UnpublishNotify). The
    /// server may resume the stream later (Play.PublishNotify, StreamBegin).
    Unpublished(Status),
    /// The server ended the publication or the playback after it had started:
    /// Play.Stop, Play.Complete, or an onStatus of level "error".
    Stopped(Status),
    /// User Control Stream Begin (§7.1.7).
    StreamBegin {
        /// The message stream it is about.
        stream_id: u32,
    },
    /// User Control Stream EOF.
    StreamEof {
        /// The message stream it is about.
        stream_id: u32,
    },
    /// User Control Stream Dry.
    StreamDry {
        /// The message stream it is about.
        stream_id: u32,
    },
    /// User Control Stream Is Recorded.
    StreamIsRecorded {
        /// The message stream it is about.
        stream_id: u32,
    },
    /// Play mode: an FLV video tag body (message type 9).
    Video {
        /// Decode time, 32-bit milliseconds as the server sent it.
        timestamp: RtmpTimestamp,
        /// The tag body: frame type and codec, packet type, composition time, data.
        payload: Bytes,
    },
    /// Play mode: an FLV audio tag body (message type 8).
    Audio {
        /// 32-bit milliseconds as the server sent it.
        timestamp: RtmpTimestamp,
        /// The tag body: sound format byte, AAC packet type, data.
        payload: Bytes,
    },
    /// Play mode: onMetaData, `@setDataFrame` stripped: `values[0]` is
    /// "onMetaData", `values[1]` usually an ECMA array.
    Metadata {
        /// 32-bit milliseconds as the server sent it.
        timestamp: RtmpTimestamp,
        /// The AMF0 values of the data message.
        values: Vec<Amf0Value>,
    },
}

/// Counters of what the session sent, received and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Bytes fed (after the handshake).
    pub bytes_received: u64,
    /// Bytes handed out by `take_output`.
    pub bytes_sent: u64,
    /// Whole messages received (every type).
    pub messages_received: u64,
    /// Video messages queued by `send_video`.
    pub video_sent: u64,
    /// Audio messages queued by `send_audio`.
    pub audio_sent: u64,
    /// onMetaData messages queued by `send_metadata`.
    pub metadata_sent: u64,
    /// Play mode: media and metadata events emitted.
    pub media_received: u64,
    /// Media not for us: in publish mode, before play, on another stream, empty.
    pub media_ignored: u64,
    /// Data messages other than onMetaData, or not decodable.
    pub data_ignored: u64,
    /// Messages of types a client has no use for (shared objects, ...).
    pub unknown_messages: u64,
    /// Calls we do not answer (onBWDone, onFCPublish, _checkbw, ...) and
    /// replies to transactions we are not waiting for.
    pub unknown_commands: u64,
    /// Commands whose AMF0 did not decode, or with no name.
    pub malformed_commands: u64,
    /// `_error` replies to releaseStream / FCPublish / FCUnpublish / deleteStream.
    pub errors_ignored: u64,
    /// Acknowledgements sent for the server's window.
    pub acks_sent: u64,
    /// Ping Requests answered with a Ping Response.
    pub pings_answered: u64,
    /// Unfinished messages dropped by Abort or a new header mid-message.
    pub messages_aborted: u64,
    /// Messages beyond [`MAX_AGGREGATE_TAGS`] in an Aggregate, or malformed tails.
    pub aggregate_tags_dropped: u64,
}

/// Misuse of the session by its caller (never the server's fault).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Media, metadata or unpublish outside an accepted publication.
    #[error("not publishing (stage: {0})")]
    NotPublishing(Stage),
    /// The message could not be encoded (a payload over 16 MiB, say).
    #[error("could not encode the message: {0}")]
    Encode(String),
}

/// Transactions we wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    Connect,
    CreateStream,
    /// releaseStream, FCPublish, FCUnpublish, deleteStream: answers ignored.
    Courtesy,
    /// publish or play (some servers answer `_error` to them).
    Start,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    CreatingStream,
    /// publish or play sent on this stream.
    Starting {
        stream_id: u32,
    },
    Streaming {
        stream_id: u32,
    },
    Closed,
}

/// Transactions remembered at once; older ones are forgotten (their replies
/// then count as unknown). We have at most five outstanding.
const MAX_PENDING_TXNS: usize = 16;

/// The client session state machine. See the module docs. `Debug` shows the
/// configuration (key redacted), the stage and the counters, never the
/// buffers (queued output holds the key in publish/play commands).
pub struct ClientSession {
    config: ClientConfig,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    /// Bytes to write. The caller drains it after every call; one call adds
    /// at most the few messages it is about.
    output: BytesMut,
    /// Events for the caller. Bounded by what one `feed` produces (at most one
    /// event per chunk, [`MAX_AGGREGATE_TAGS`] per aggregate): the caller
    /// feeds a bounded read and drains events before the next.
    events: VecDeque<ClientEvent>,
    state: State,
    next_txn: u32,
    pending: VecDeque<(u32, Txn)>,
    /// The server's Window Acknowledgement Size, if it sent one.
    peer_window: Option<u32>,
    /// `bytes_received` when we last acknowledged.
    last_ack: u64,
    stats: ClientStats,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("config", &self.config)
            .field("stage", &self.stage())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session that has just finished the handshake: Set Chunk Size,
    /// Window Acknowledgement Size and connect are queued for
    /// [`Self::take_output`] (write them after C2).
    pub fn new(config: ClientConfig) -> ClientSession {
        let mut s = ClientSession {
            config,
            decoder: ChunkDecoder::new(),
            encoder: ChunkEncoder::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            state: State::Connecting,
            next_txn: 1,
            pending: VecDeque::new(),
            peer_window: None,
            last_ack: 0,
            stats: ClientStats::default(),
        };
        let size = s.config.out_chunk_size.clamp(1, MAX_CHUNK_SIZE);
        s.send(control::set_chunk_size(size));
        if let Err(e) = s.encoder.set_chunk_size(size) {
            tracing::error!(error = %e, "invalid outgoing chunk size");
        }
        s.send(control::window_ack_size(s.config.window_ack_size));
        let connect = s.connect_object();
        s.command(Txn::Connect, "connect", vec![connect]);
        s
    }

    /// Bytes from the server (after the handshake). `Err` = protocol
    /// violation: close the connection.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        self.stats.bytes_received = self.stats.bytes_received.saturating_add(data.len() as u64);
        let fed = self.decoder.feed(data);
        // Messages completed before a framing error are still handled.
        while let Some(msg) = self.decoder.next_message() {
            self.stats.messages_received = self.stats.messages_received.saturating_add(1);
            self.handle(msg)?;
        }
        self.stats.messages_aborted = self.decoder.discarded_messages();
        fed?;
        self.maybe_acknowledge();
        Ok(())
    }

    /// Bytes to write to the socket, if any (drain until None).
    pub fn take_output(&mut self) -> Option<Bytes> {
        if self.output.is_empty() {
            None
        } else {
            self.stats.bytes_sent = self
                .stats
                .bytes_sent
                .saturating_add(self.output.len() as u64);
            Some(self.output.split().freeze())
        }
    }

    /// Events for the caller, in order (drain until None).
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats.clone()
    }

    /// The mode from the configuration.
    pub fn mode(&self) -> ClientMode {
        self.config.mode
    }

    /// The step the session is waiting on.
    pub fn stage(&self) -> Stage {
        match self.state {
            State::Connecting => Stage::Connect,
            State::CreatingStream => Stage::CreateStream,
            State::Starting { .. } => match self.config.mode {
                ClientMode::Publish => Stage::Publish,
                ClientMode::Play => Stage::Play,
            },
            State::Streaming { .. } => Stage::Streaming,
            State::Closed => Stage::Closed,
        }
    }

    /// The message stream publishing or playing, once started.
    pub fn stream_id(&self) -> Option<u32> {
        match self.state {
            State::Streaming { stream_id } => Some(stream_id),
            _ => None,
        }
    }

    /// Sends `@setDataFrame onMetaData <metadata>` (an ECMA array or object of
    /// properties: width, height, framerate, videocodecid, ...).
    pub fn send_metadata(&mut self, metadata: Amf0Value) -> Result<(), SendError> {
        let stream_id = self.publishing()?;
        let mut payload = BytesMut::new();
        Amf0Value::encode_all(
            &[
                Amf0Value::String("@setDataFrame".into()),
                Amf0Value::String("onMetaData".into()),
                metadata,
            ],
            &mut payload,
        )
        .map_err(|e| SendError::Encode(e.to_string()))?;
        self.try_send(RtmpMessage {
            csid: STREAM_CSID,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::DATA_AMF0,
            stream_id,
            payload: payload.freeze(),
        })?;
        self.stats.metadata_sent = self.stats.metadata_sent.saturating_add(1);
        Ok(())
    }

    /// Sends an FLV video tag body (the bytes after the FLV tag header: frame
    /// type and codec id, AVC packet type, composition time, data) at
    /// `timestamp` (decode time, 32-bit milliseconds).
    pub fn send_video(
        &mut self,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<(), SendError> {
        self.send_media(msg_type::VIDEO, VIDEO_CSID, timestamp, payload)?;
        self.stats.video_sent = self.stats.video_sent.saturating_add(1);
        Ok(())
    }

    /// Sends an FLV audio tag body (sound format byte, AAC packet type, data).
    pub fn send_audio(
        &mut self,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<(), SendError> {
        self.send_media(msg_type::AUDIO, AUDIO_CSID, timestamp, payload)?;
        self.stats.audio_sent = self.stats.audio_sent.saturating_add(1);
        Ok(())
    }

    /// Ends an accepted publication: FCUnpublish and deleteStream (as FFmpeg
    /// and OBS do). The session is then closed; write the output, then close
    /// the connection.
    pub fn unpublish(&mut self) -> Result<(), SendError> {
        let stream_id = self.publishing()?;
        let name = Amf0Value::String(self.config.stream_name.clone());
        self.command(Txn::Courtesy, "FCUnpublish", vec![Amf0Value::Null, name]);
        self.delete_stream(stream_id);
        Ok(())
    }

    /// Ends the session politely, whatever its mode and stage: unpublish when
    /// publishing, deleteStream when a stream exists. Queues nothing when the
    /// session is already closed or no stream was made.
    pub fn close(&mut self) {
        match self.state {
            State::Streaming { .. } if self.config.mode == ClientMode::Publish => {
                let _ = self.unpublish();
            }
            State::Starting { stream_id } | State::Streaming { stream_id } => {
                self.delete_stream(stream_id)
            }
            _ => self.state = State::Closed,
        }
    }

    fn delete_stream(&mut self, stream_id: u32) {
        self.command(
            Txn::Courtesy,
            "deleteStream",
            vec![Amf0Value::Null, Amf0Value::Number(f64::from(stream_id))],
        );
        self.state = State::Closed;
    }

    fn publishing(&self) -> Result<u32, SendError> {
        match self.state {
            State::Streaming { stream_id } if self.config.mode == ClientMode::Publish => {
                Ok(stream_id)
            }
            _ => Err(SendError::NotPublishing(self.stage())),
        }
    }

    fn send_media(
        &mut self,
        type_id: u8,
        csid: u32,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let stream_id = self.publishing()?;
        self.try_send(RtmpMessage {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        })
    }

    fn connect_object(&self) -> Amf0Value {
        let c = &self.config;
        let s = |v: &str| Amf0Value::String(v.to_owned());
        let mut props = vec![
            ("app", s(&c.app)),
            ("flashVer", s(&c.flash_ver)),
            ("tcUrl", s(&c.tc_url)),
        ];
        match c.mode {
            ClientMode::Publish => props.push(("type", s("nonprivate"))),
            ClientMode::Play => props.extend([
                ("fpad", Amf0Value::Boolean(false)),
                ("capabilities", Amf0Value::Number(15.0)),
                ("audioCodecs", Amf0Value::Number(4071.0)),
                ("videoCodecs", Amf0Value::Number(252.0)),
                ("videoFunction", Amf0Value::Number(1.0)),
            ]),
        }
        if !c.four_cc_list.is_empty() {
            let list = c.four_cc_list.iter().map(|f| s(f)).collect();
            props.push(("fourCcList", Amf0Value::StrictArray(list)));
        }
        object(props)
    }

    /// A command on stream 0 with a new transaction id; `args` follow the id
    /// (the command object or null first).
    fn command(&mut self, kind: Txn, name: &str, args: Vec<Amf0Value>) {
        let txn = self.new_txn(kind);
        let mut values = vec![
            Amf0Value::String(name.to_owned()),
            Amf0Value::Number(f64::from(txn)),
        ];
        values.extend(args);
        self.send_amf(COMMAND_CSID, 0, &values);
    }

    fn new_txn(&mut self, kind: Txn) -> u32 {
        let txn = self.next_txn;
        self.next_txn = self.next_txn.wrapping_add(1).max(1);
        if self.pending.len() >= MAX_PENDING_TXNS {
            self.pending.pop_front();
        }
        self.pending.push_back((txn, kind));
        txn
    }

    /// The kind of a pending transaction, forgetting it.
    fn take_txn(&mut self, txn: f64) -> Option<Txn> {
        let at = self
            .pending
            .iter()
            .position(|&(t, _)| f64::from(t) == txn)?;
        self.pending.remove(at).map(|(_, k)| k)
    }

    fn send_amf(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        let mut payload = BytesMut::new();
        if let Err(e) = Amf0Value::encode_all(values, &mut payload) {
            tracing::error!(error = %e, "could not encode an outgoing RTMP command");
            return;
        }
        self.send(RtmpMessage {
            csid,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::COMMAND_AMF0,
            stream_id,
            payload: payload.freeze(),
        });
    }

    fn send(&mut self, msg: RtmpMessage) {
        if let Err(e) = self.encoder.encode(&msg, &mut self.output) {
            tracing::error!(error = %e, "could not encode an outgoing RTMP message");
        }
    }

    fn try_send(&mut self, msg: RtmpMessage) -> Result<(), SendError> {
        self.encoder
            .encode(&msg, &mut self.output)
            .map_err(|e| SendError::Encode(e.to_string()))
    }

    fn handle(&mut self, msg: RtmpMessage) -> Result<(), RtmpError> {
        match msg.type_id {
            // Applied by the decoder already.
            msg_type::SET_CHUNK_SIZE | msg_type::ABORT => {}
            msg_type::ACKNOWLEDGEMENT => {
                control::parse_u32(&msg.payload).ok_or(RtmpError::MalformedControl {
                    name: "Acknowledgement",
                    len: msg.payload.len(),
                })?;
            }
            msg_type::WINDOW_ACK_SIZE => {
                let size = control::parse_u32(&msg.payload).ok_or(RtmpError::MalformedControl {
                    name: "Window Acknowledgement Size",
                    len: msg.payload.len(),
                })?;
                self.peer_window = Some(size.max(MIN_ACK_WINDOW));
            }
            msg_type::SET_PEER_BANDWIDTH => {
                if msg.payload.len() < 5 {
                    return Err(RtmpError::MalformedControl {
                        name: "Set Peer Bandwidth",
                        len: msg.payload.len(),
                    });
                }
                // We do not throttle: a publisher sends at the media's rate.
            }
            msg_type::USER_CONTROL => {
                let ev =
                    UserControlEvent::parse(&msg.payload).ok_or(RtmpError::MalformedControl {
                        name: "User Control",
                        len: msg.payload.len(),
                    })?;
                self.on_user_control(ev);
            }
            msg_type::AUDIO | msg_type::VIDEO => {
                self.on_media(msg.type_id, msg.stream_id, msg.timestamp, msg.payload)
            }
            msg_type::DATA_AMF0 => self.on_data(msg.stream_id, msg.timestamp, &msg.payload),
            msg_type::DATA_AMF3 => match msg.payload.split_first() {
                Some((0, rest)) => self.on_data(msg.stream_id, msg.timestamp, rest),
                _ => self.stats.data_ignored = self.stats.data_ignored.saturating_add(1),
            },
            msg_type::COMMAND_AMF0 => self.on_command(&msg.payload)?,
            // AMF3 command: a 0 format byte, then AMF0 values.
            msg_type::COMMAND_AMF3 => match msg.payload.split_first() {
                Some((0, rest)) => self.on_command(rest)?,
                _ => {
                    self.stats.malformed_commands = self.stats.malformed_commands.saturating_add(1)
                }
            },
            msg_type::AGGREGATE => self.on_aggregate(msg),
            _ => self.stats.unknown_messages = self.stats.unknown_messages.saturating_add(1),
        }
        Ok(())
    }

    fn on_user_control(&mut self, ev: UserControlEvent) {
        let event = match ev {
            UserControlEvent::PingRequest(t) => {
                self.stats.pings_answered = self.stats.pings_answered.saturating_add(1);
                self.send(UserControlEvent::PingResponse(t).to_message());
                return;
            }
            UserControlEvent::StreamBegin(stream_id) => ClientEvent::StreamBegin { stream_id },
            UserControlEvent::StreamEof(stream_id) => ClientEvent::StreamEof { stream_id },
            UserControlEvent::StreamDry(stream_id) => ClientEvent::StreamDry { stream_id },
            UserControlEvent::StreamIsRecorded(stream_id) => {
                ClientEvent::StreamIsRecorded { stream_id }
            }
            // Set Buffer Length and Ping Response are the client's to send;
            // 31/32 (buffer empty/ready) and others mean nothing to us.
            _ => return,
        };
        self.events.push_back(event);
    }

    /// The stream media is expected on: play sent or playing.
    fn playing_stream(&self) -> Option<u32> {
        match (self.config.mode, self.state) {
            (ClientMode::Play, State::Starting { stream_id } | State::Streaming { stream_id }) => {
                Some(stream_id)
            }
            _ => None,
        }
    }

    fn on_media(&mut self, type_id: u8, stream_id: u32, timestamp: RtmpTimestamp, payload: Bytes) {
        if self.playing_stream() != Some(stream_id) || payload.is_empty() {
            self.stats.media_ignored = self.stats.media_ignored.saturating_add(1);
            return;
        }
        self.stats.media_received = self.stats.media_received.saturating_add(1);
        self.events.push_back(if type_id == msg_type::VIDEO {
            ClientEvent::Video { timestamp, payload }
        } else {
            ClientEvent::Audio { timestamp, payload }
        });
    }

    fn on_data(&mut self, stream_id: u32, timestamp: RtmpTimestamp, payload: &[u8]) {
        let Ok(mut values) = Amf0Value::decode_all(payload) else {
            self.stats.data_ignored = self.stats.data_ignored.saturating_add(1);
            return;
        };
        if values.first().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            values.remove(0);
        }
        // |RtmpSampleAccess (nginx, FMS), onTextData, onCuePoint: not ours.
        if values.first().and_then(Amf0Value::as_str) != Some("onMetaData")
            || self.playing_stream() != Some(stream_id)
        {
            self.stats.data_ignored = self.stats.data_ignored.saturating_add(1);
            return;
        }
        self.stats.media_received = self.stats.media_received.saturating_add(1);
        self.events
            .push_back(ClientEvent::Metadata { timestamp, values });
    }

    /// Aggregate message (§7.1.6): FLV tags back to back (11-byte header,
    /// body, 4-byte back pointer). Sub-message timestamps are offsets from the
    /// first one, rebased on the aggregate's own timestamp.
    fn on_aggregate(&mut self, msg: RtmpMessage) {
        if self.playing_stream() != Some(msg.stream_id) {
            self.stats.media_ignored = self.stats.media_ignored.saturating_add(1);
            return;
        }
        let p = &msg.payload;
        let mut pos = 0usize;
        let mut first_ts: Option<u32> = None;
        let mut taken = 0usize;
        while pos < p.len() {
            // type, size (24), timestamp (24 + 8 high bits), stream id (24)
            let header = pos.checked_add(11).and_then(|end| p.get(pos..end));
            let Some(&[type_id, s0, s1, s2, t0, t1, t2, t3, ..]) = header else {
                self.stats.aggregate_tags_dropped =
                    self.stats.aggregate_tags_dropped.saturating_add(1);
                return;
            };
            let size = u32::from_be_bytes([0, s0, s1, s2]) as usize;
            let ts = u32::from_be_bytes([t3, t0, t1, t2]);
            let body_at = pos.saturating_add(11);
            let Some(body_end) = body_at.checked_add(size).filter(|end| *end <= p.len()) else {
                self.stats.aggregate_tags_dropped =
                    self.stats.aggregate_tags_dropped.saturating_add(1);
                return;
            };
            // Skip the back pointer (absent after the last tag on some servers).
            let next = body_end.saturating_add(4);
            if taken >= MAX_AGGREGATE_TAGS {
                self.stats.aggregate_tags_dropped =
                    self.stats.aggregate_tags_dropped.saturating_add(1);
                pos = next;
                continue;
            }
            taken = taken.saturating_add(1);
            let base = *first_ts.get_or_insert(ts);
            let timestamp = RtmpTimestamp(msg.timestamp.0.wrapping_add(ts.wrapping_sub(base)));
            let body = p.slice(body_at..body_end);
            match type_id {
                msg_type::AUDIO | msg_type::VIDEO => {
                    self.on_media(type_id, msg.stream_id, timestamp, body)
                }
                msg_type::DATA_AMF0 => self.on_data(msg.stream_id, timestamp, &body),
                _ => self.stats.unknown_messages = self.stats.unknown_messages.saturating_add(1),
            }
            pos = next;
        }
    }

    fn on_command(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let values = decode_lenient(payload);
        let Some(name) = values.first().and_then(Amf0Value::as_str) else {
            self.stats.malformed_commands = self.stats.malformed_commands.saturating_add(1);
            return Ok(());
        };
        let txn = values.get(1).and_then(Amf0Value::as_number).unwrap_or(0.0);
        match name {
            "_result" => self.on_result(txn, &values)?,
            "_error" => self.on_error(txn, &values),
            "onStatus" => {
                let info = values.get(3).or_else(|| values.get(2));
                let st = self.status_of(info);
                self.on_status(st);
            }
            _ => self.stats.unknown_commands = self.stats.unknown_commands.saturating_add(1),
        }
        Ok(())
    }

    fn on_result(&mut self, txn: f64, values: &[Amf0Value]) -> Result<(), RtmpError> {
        match self.take_txn(txn) {
            Some(Txn::Connect) if self.state == State::Connecting => {
                self.events.push_back(ClientEvent::Connected);
                let name = Amf0Value::String(self.config.stream_name.clone());
                if self.config.mode == ClientMode::Publish {
                    self.command(
                        Txn::Courtesy,
                        "releaseStream",
                        vec![Amf0Value::Null, name.clone()],
                    );
                    self.command(Txn::Courtesy, "FCPublish", vec![Amf0Value::Null, name]);
                }
                self.command(Txn::CreateStream, "createStream", vec![Amf0Value::Null]);
                self.state = State::CreatingStream;
            }
            Some(Txn::CreateStream) if self.state == State::CreatingStream => {
                let stream_id = values
                    .get(3)
                    .and_then(Amf0Value::as_number)
                    .and_then(stream_id_from)
                    .ok_or(RtmpError::BadReply(
                        "createStream _result without a stream id",
                    ))?;
                self.events
                    .push_back(ClientEvent::StreamCreated { stream_id });
                self.start(stream_id);
            }
            Some(_) => {}
            None => self.stats.unknown_commands = self.stats.unknown_commands.saturating_add(1),
        }
        Ok(())
    }

    /// publish or play on the new stream.
    fn start(&mut self, stream_id: u32) {
        let name = Amf0Value::String(self.config.stream_name.clone());
        let (command, arg) = match self.config.mode {
            ClientMode::Publish => (
                "publish",
                Amf0Value::String(self.config.publish_type.clone()),
            ),
            ClientMode::Play => {
                self.send(
                    UserControlEvent::SetBufferLength {
                        stream_id,
                        millis: self.config.buffer_length_ms,
                    }
                    .to_message(),
                );
                ("play", Amf0Value::Number(self.config.play_start))
            }
        };
        let txn = self.new_txn(Txn::Start);
        self.send_amf(
            STREAM_CSID,
            stream_id,
            &[
                Amf0Value::String(command.into()),
                Amf0Value::Number(f64::from(txn)),
                Amf0Value::Null,
                name,
                arg,
            ],
        );
        self.state = State::Starting { stream_id };
    }

    fn on_error(&mut self, txn: f64, values: &[Amf0Value]) {
        let kind = self.take_txn(txn);
        let stage = match (kind, self.state) {
            (Some(Txn::Connect), State::Connecting) => Stage::Connect,
            (Some(Txn::CreateStream), State::CreatingStream) => Stage::CreateStream,
            (Some(Txn::Start), State::Starting { .. }) => self.stage(),
            (Some(_), _) => {
                self.stats.errors_ignored = self.stats.errors_ignored.saturating_add(1);
                return;
            }
            (None, _) => {
                self.stats.unknown_commands = self.stats.unknown_commands.saturating_add(1);
                return;
            }
        };
        let st = self.status_of(values.get(3));
        self.refuse(stage, st);
    }

    fn on_status(&mut self, st: Status) {
        let error = st.level.eq_ignore_ascii_case("error");
        match (self.state, self.config.mode) {
            (State::Starting { stream_id }, ClientMode::Publish)
                if st.code == status::PUBLISH_START =>
            {
                self.state = State::Streaming { stream_id };
                self.events.push_back(ClientEvent::Publishing { stream_id });
            }
            (State::Starting { stream_id }, ClientMode::Play) if st.code == status::PLAY_START => {
                self.state = State::Streaming { stream_id };
                self.events.push_back(ClientEvent::Playing { stream_id });
            }
            (State::Starting { .. }, _)
                if error
                    || st.code == status::PLAY_STREAM_NOT_FOUND
                    || st.code == status::PLAY_FAILED =>
            {
                let stage = self.stage();
                self.refuse(stage, st);
            }
            (State::Streaming { .. }, ClientMode::Play)
                if st.code == status::PLAY_UNPUBLISH_NOTIFY =>
            {
                self.events.push_back(ClientEvent::Unpublished(st));
            }
            (State::Streaming { .. }, _)
                if error || st.code == status::PLAY_STOP || st.code == status::PLAY_COMPLETE =>
            {
                self.state = State::Closed;
                self.events.push_back(ClientEvent::Stopped(st));
            }
            _ => self.events.push_back(ClientEvent::Status(st)),
        }
    }

    fn refuse(&mut self, stage: Stage, st: Status) {
        self.state = State::Closed;
        self.events.push_back(ClientEvent::Refused(Refusal {
            stage,
            code: st.code,
            description: st.description,
        }));
    }

    /// level/code/description of an info object, cut and redacted.
    fn status_of(&self, info: Option<&Amf0Value>) -> Status {
        let field = |k: &str| {
            let v = info
                .and_then(|o| o.get(k))
                .and_then(Amf0Value::as_str)
                .unwrap_or("");
            self.sanitize(v)
        };
        Status {
            level: field("level"),
            code: field("code"),
            description: field("description"),
        }
    }

    /// Replaces the stream name (with and without its query) and control
    /// characters in a server-supplied text, then cuts it to
    /// [`MAX_STATUS_TEXT`] bytes.
    fn sanitize(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let full = self.config.stream_name.as_str();
        let key = full.split('?').next().unwrap_or("");
        for secret in [full, key] {
            if !secret.is_empty() {
                out = out.replace(secret, REDACTED);
            }
        }
        let mut end = out.len().min(MAX_STATUS_TEXT);
        while !out.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        out.truncate(end);
        out.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }

    fn maybe_acknowledge(&mut self) {
        let Some(window) = self.peer_window else {
            return;
        };
        if self.stats.bytes_received.saturating_sub(self.last_ack) >= u64::from(window) {
            self.last_ack = self.stats.bytes_received;
            self.stats.acks_sent = self.stats.acks_sent.saturating_add(1);
            // The sequence number wraps at 2^32 (§5.4.3).
            self.send(control::acknowledgement(self.stats.bytes_received as u32));
        }
    }
}

/// AMF0 values of a command up to the first that does not decode.
fn decode_lenient(payload: &[u8]) -> Vec<Amf0Value> {
    let mut values = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        match Amf0Value::decode(rest) {
            Ok((v, used)) => {
                values.push(v);
                rest = rest.get(used..).unwrap_or(&[]);
            }
            Err(_) => break,
        }
    }
    values
}

/// A stream id from an AMF0 number: a whole number in 1..=u32::MAX.
fn stream_id_from(n: f64) -> Option<u32> {
    if n.fract() == 0.0 && n >= 1.0 && n <= f64::from(u32::MAX) {
        Some(n as u32)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::chunk::ChunkError;
    use crate::ingest::rtmp::handshake::{ClientHandshake, HandshakeProgress, ServerHandshake};
    use crate::ingest::rtmp::session::{ServerEvent, ServerSession, SessionConfig};
    use proptest::prelude::*;

    const KEY: &str = "sk-SECRET-123";

    fn s(v: &str) -> Amf0Value {
        Amf0Value::String(v.into())
    }
    fn n(v: f64) -> Amf0Value {
        Amf0Value::Number(v)
    }

    fn config(mode: ClientMode) -> ClientConfig {
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1/live/{KEY}?x=1")).unwrap();
        ClientConfig::new(&url, mode)
    }

    /// Our client against Ladder's own server session, handshake included.
    struct Pair {
        client: ClientSession,
        server: ServerSession,
        /// Accept (true) or refuse with this code and description.
        refuse: Option<(&'static str, String)>,
        server_events: Vec<ServerEvent>,
        client_events: Vec<ClientEvent>,
    }

    impl Pair {
        fn new(mode: ClientMode, server_config: SessionConfig) -> Pair {
            let mut ch = ClientHandshake::new(1, 2);
            let mut sh = ServerHandshake::new(3, 4);
            let c0c1 = ch.take_output().unwrap();
            assert_eq!(sh.feed(&c0c1).unwrap(), HandshakeProgress::InProgress);
            let s012 = sh.take_output().unwrap();
            assert!(matches!(
                ch.feed(&s012).unwrap(),
                HandshakeProgress::Done { .. }
            ));
            let client = ClientSession::new(config(mode));
            let mut pair = Pair {
                client,
                server: ServerSession::new(server_config),
                refuse: None,
                server_events: Vec::new(),
                client_events: Vec::new(),
            };
            // C2, then the session's first messages, in one write.
            let mut first = ch.take_output().unwrap().to_vec();
            first.extend_from_slice(&pair.client.take_output().unwrap());
            match sh.feed(&first).unwrap() {
                HandshakeProgress::Done { remaining } => pair.server.feed(&remaining).unwrap(),
                other => panic!("{other:?}"),
            }
            pair
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(b) = self.client.take_output() {
                    self.server.feed(&b).unwrap();
                    moved = true;
                }
                while let Some(ev) = self.server.poll_event() {
                    if let ServerEvent::PublishRequested { stream_id, .. } = &ev {
                        match &self.refuse {
                            None => self.server.accept_publish(*stream_id),
                            Some((code, why)) => self.server.reject_publish(*stream_id, code, why),
                        }
                    }
                    self.server_events.push(ev);
                }
                while let Some(b) = self.server.take_output() {
                    self.client.feed(&b).unwrap();
                    moved = true;
                }
                while let Some(ev) = self.client.poll_event() {
                    self.client_events.push(ev);
                }
                if !moved {
                    return;
                }
            }
        }
    }

    fn video(ts: u32, payload: &[u8]) -> (RtmpTimestamp, Bytes) {
        (RtmpTimestamp(ts), Bytes::copy_from_slice(payload))
    }

    #[test]
    fn publishes_to_ladders_server_byte_exact() {
        let mut p = Pair::new(ClientMode::Publish, SessionConfig::default());
        p.pump();
        assert_eq!(
            p.client_events,
            vec![
                ClientEvent::Connected,
                ClientEvent::StreamCreated { stream_id: 1 },
                ClientEvent::StreamBegin { stream_id: 1 },
                ClientEvent::Publishing { stream_id: 1 },
            ]
        );
        assert_eq!(p.client.stage(), Stage::Streaming);
        assert_eq!(
            p.server_events,
            vec![
                ServerEvent::Connected {
                    app: "live".into(),
                    tc_url: Some("rtmp://127.0.0.1/live".into())
                },
                ServerEvent::PublishRequested {
                    stream_id: 1,
                    app: "live".into(),
                    stream_name: format!("{KEY}?x=1"),
                    publish_type: "live".into(),
                }
            ]
        );
        p.server_events.clear();

        let meta = Amf0Value::EcmaArray(vec![
            ("width".into(), n(320.0)),
            ("height".into(), n(240.0)),
            ("videocodecid".into(), n(7.0)),
            ("encoder".into(), s("Ladder")),
        ]);
        p.client.send_metadata(meta.clone()).unwrap();
        // Sequence header, a multi-chunk keyframe, timestamps past the 24-bit
        // field (extended timestamps), one going back, and the 32-bit wrap.
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let sent_video = [
            video(0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
            video(0, &[&[0x17, 1, 0, 0, 0][..], &big].concat()),
            video(40, &[0x27, 1, 0, 0, 0x50, 9, 9]),
            video(0x00FF_FFFF, &[0x27, 1, 0, 0, 0, 1]),
            video(0x0100_0000, &[0x27, 1, 0, 0, 0, 2]),
            video(30, &[0x27, 1, 0, 0, 0, 3]),
            video(u32::MAX, &[0x27, 1, 0, 0, 0, 4]),
        ];
        let sent_audio = [
            video(0, &[0xaf, 0, 0x12, 0x10]),
            video(21, &[0xaf, 1, 0xde, 0xad]),
            video(0x0123_4567, &[0xaf, 1, 0xbe, 0xef]),
        ];
        for (ts, payload) in &sent_video {
            p.client.send_video(*ts, payload.clone()).unwrap();
        }
        for (ts, payload) in &sent_audio {
            p.client.send_audio(*ts, payload.clone()).unwrap();
        }
        p.pump();
        let mut got_video = Vec::new();
        let mut got_audio = Vec::new();
        let mut got_meta = Vec::new();
        for ev in p.server_events.drain(..) {
            match ev {
                ServerEvent::Video {
                    stream_id: 1,
                    timestamp,
                    payload,
                } => got_video.push((timestamp, payload)),
                ServerEvent::Audio {
                    stream_id: 1,
                    timestamp,
                    payload,
                } => got_audio.push((timestamp, payload)),
                ServerEvent::Metadata {
                    stream_id: 1,
                    values,
                } => got_meta.push(values),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got_video, sent_video.to_vec());
        assert_eq!(got_audio, sent_audio.to_vec());
        assert_eq!(got_meta, vec![vec![s("onMetaData"), meta]]);
        let st = p.client.stats();
        assert_eq!((st.video_sent, st.audio_sent, st.metadata_sent), (7, 3, 1));
        assert_eq!(st.bytes_sent, p.server.stats().bytes_received);

        p.client.unpublish().unwrap();
        p.pump();
        assert_eq!(
            p.server_events,
            vec![ServerEvent::Unpublished { stream_id: 1 }]
        );
        assert_eq!(p.client.stage(), Stage::Closed);
        assert_eq!(
            p.client
                .send_video(RtmpTimestamp(0), Bytes::from_static(b"x")),
            Err(SendError::NotPublishing(Stage::Closed))
        );
    }

    #[test]
    fn media_before_publish_start_is_refused_locally() {
        let mut c = ClientSession::new(config(ClientMode::Publish));
        assert_eq!(
            c.send_audio(RtmpTimestamp(0), Bytes::from_static(b"\xaf\x01")),
            Err(SendError::NotPublishing(Stage::Connect))
        );
        assert_eq!(
            c.send_metadata(Amf0Value::Null),
            Err(SendError::NotPublishing(Stage::Connect))
        );
        assert_eq!(c.unpublish(), Err(SendError::NotPublishing(Stage::Connect)));
        let mut c = ClientSession::new(config(ClientMode::Play));
        assert!(c.send_video(RtmpTimestamp(0), Bytes::new()).is_err());
    }

    #[test]
    fn refused_publish_has_code_and_a_redacted_description() {
        let mut p = Pair::new(ClientMode::Publish, SessionConfig::default());
        p.refuse = Some((
            "NetStream.Publish.BadName",
            format!("Stream {KEY}?x=1 is already publishing ({KEY})"),
        ));
        p.pump();
        let refusal = match p.client_events.last() {
            Some(ClientEvent::Refused(r)) => r.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(refusal.stage, Stage::Publish);
        assert_eq!(refusal.code, "NetStream.Publish.BadName");
        assert_eq!(
            refusal.description,
            "Stream <key> is already publishing (<key>)"
        );
        assert_eq!(
            refusal.to_string(),
            "publish refused: NetStream.Publish.BadName (Stream <key> is already publishing (<key>))"
        );
        assert_eq!(p.client.stage(), Stage::Closed);
    }

    #[test]
    fn refused_connect() {
        // Ladder's server refuses an app longer than its name limit.
        let mut p = Pair::new(
            ClientMode::Publish,
            SessionConfig {
                max_name_len: 3,
                ..SessionConfig::default()
            },
        );
        p.pump();
        assert_eq!(
            p.client_events,
            vec![ClientEvent::Refused(Refusal {
                stage: Stage::Connect,
                code: "NetConnection.Connect.Rejected".into(),
                description: "name too long".into(),
            })]
        );
        assert!(p.server_events.is_empty());
    }

    #[test]
    fn config_debug_and_errors_hide_the_key() {
        let c = config(ClientMode::Publish);
        let debug = format!("{c:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("rtmp://127.0.0.1/live"), "{debug}");
        let mut session = ClientSession::new(c);
        assert!(!format!("{session:?}").contains("SECRET"));
        // With releaseStream(key), FCPublish(key) queued and not yet taken.
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        let mut p = BytesMut::new();
        Amf0Value::encode_all(
            &[s("_result"), n(1.0), Amf0Value::Null, Amf0Value::Null],
            &mut p,
        )
        .unwrap();
        let result = RtmpMessage {
            csid: 3,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::COMMAND_AMF0,
            stream_id: 0,
            payload: p.freeze(),
        };
        enc.encode(&result, &mut out).unwrap();
        session.feed(&out).unwrap();
        let debug = format!("{session:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("CreateStream"), "{debug}");
        let queued = session.take_output().unwrap();
        assert!(queued.windows(6).any(|w| w == b"SECRET"));
    }

    /// A scripted server: our chunk codec on the other side, messages built by hand.
    struct Script {
        enc: ChunkEncoder,
        dec: ChunkDecoder,
        client: ClientSession,
    }

    impl Script {
        fn new(mode: ClientMode) -> Script {
            Script {
                enc: ChunkEncoder::new(),
                dec: ChunkDecoder::new(),
                client: ClientSession::new(config(mode)),
            }
        }

        fn send(&mut self, msg: RtmpMessage) -> Result<(), RtmpError> {
            let mut out = BytesMut::new();
            self.enc.encode(&msg, &mut out).unwrap();
            self.client.feed(&out)
        }

        fn raw(&mut self, csid: u32, type_id: u8, stream_id: u32, ts: u32, payload: &[u8]) {
            self.send(RtmpMessage {
                csid,
                timestamp: RtmpTimestamp(ts),
                type_id,
                stream_id,
                payload: Bytes::copy_from_slice(payload),
            })
            .unwrap();
        }

        fn amf(&mut self, type_id: u8, stream_id: u32, ts: u32, values: &[Amf0Value]) {
            let mut p = BytesMut::new();
            Amf0Value::encode_all(values, &mut p).unwrap();
            self.raw(5, type_id, stream_id, ts, &p);
        }

        fn command(&mut self, stream_id: u32, values: &[Amf0Value]) {
            self.amf(msg_type::COMMAND_AMF0, stream_id, 0, values);
        }

        fn status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
            self.command(
                stream_id,
                &[
                    s("onStatus"),
                    n(0.0),
                    Amf0Value::Null,
                    object([
                        ("level", s(level)),
                        ("code", s(code)),
                        ("description", s(description)),
                    ]),
                ],
            );
        }

        /// Messages the client wrote since the last call.
        fn sent(&mut self) -> Vec<RtmpMessage> {
            while let Some(b) = self.client.take_output() {
                self.dec.feed(&b).unwrap();
            }
            std::iter::from_fn(|| self.dec.next_message()).collect()
        }

        fn events(&mut self) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.client.poll_event()).collect()
        }

        /// Up to createStream's `_result` (stream 1), checking what the client sent.
        fn up_to_stream(&mut self) -> Vec<RtmpMessage> {
            let first = self.sent();
            // nginx's greeting: window, bandwidth, chunk size, then _result.
            self.send(control::window_ack_size(5000)).unwrap();
            self.send(control::set_peer_bandwidth(
                5000,
                control::LimitType::Dynamic,
            ))
            .unwrap();
            self.send(control::set_chunk_size(60_000)).unwrap();
            self.enc.set_chunk_size(60_000).unwrap();
            self.command(
                0,
                &[
                    s("_result"),
                    n(1.0),
                    object([("fmsVer", s("FMS/3,0,1,123"))]),
                    object([("code", s("NetConnection.Connect.Success"))]),
                ],
            );
            self.command(0, &[s("onBWDone"), n(0.0), Amf0Value::Null]);
            let after_connect = self.sent();
            let create = after_connect
                .iter()
                .find(|m| command(m)[0] == s("createStream"))
                .expect("createStream");
            let txn = command(create)[1].clone();
            self.command(0, &[s("_result"), txn, Amf0Value::Null, n(1.0)]);
            [first, after_connect].concat()
        }
    }

    fn command(m: &RtmpMessage) -> Vec<Amf0Value> {
        assert_eq!(m.type_id, msg_type::COMMAND_AMF0, "{m:?}");
        Amf0Value::decode_all(&m.payload).unwrap()
    }

    #[test]
    fn connect_sequence_as_sent() {
        let mut sc = Script::new(ClientMode::Publish);
        let sent = sc.up_to_stream();
        // Set Chunk Size 4096 first, then Window Ack Size, then connect.
        assert_eq!(sent[0].type_id, msg_type::SET_CHUNK_SIZE);
        assert_eq!(&sent[0].payload[..], &4096u32.to_be_bytes());
        assert_eq!(sent[1].type_id, msg_type::WINDOW_ACK_SIZE);
        assert_eq!(&sent[1].payload[..], &WINDOW_ACK_SIZE.to_be_bytes());
        let connect = command(&sent[2]);
        assert_eq!(connect[0..2], [s("connect"), n(1.0)]);
        let obj = &connect[2];
        assert_eq!(obj.get("app"), Some(&s("live")));
        assert_eq!(obj.get("tcUrl"), Some(&s("rtmp://127.0.0.1/live")));
        assert_eq!(obj.get("flashVer"), Some(&s(PUBLISH_FLASH_VER)));
        assert_eq!(obj.get("type"), Some(&s("nonprivate")));
        let names: Vec<Amf0Value> = sent[3..].iter().map(|m| command(m)[0].clone()).collect();
        assert_eq!(
            names,
            [s("releaseStream"), s("FCPublish"), s("createStream")]
        );
        assert_eq!(command(&sent[3])[3], s(&format!("{KEY}?x=1")));
        let publish = sc.sent();
        assert_eq!(publish.len(), 1);
        assert_eq!((publish[0].stream_id, publish[0].csid), (1, STREAM_CSID));
        let args = command(&publish[0]);
        assert_eq!(
            args[2..],
            [Amf0Value::Null, s(&format!("{KEY}?x=1")), s("live")]
        );
        // Stream 1 media goes out on its chunk streams with message stream 1.
        sc.status(1, "status", status::PUBLISH_START, "go");
        assert_eq!(
            sc.events(),
            vec![
                ClientEvent::Connected,
                ClientEvent::StreamCreated { stream_id: 1 },
                ClientEvent::Publishing { stream_id: 1 }
            ]
        );
        sc.client
            .send_video(RtmpTimestamp(7), Bytes::from_static(b"\x17\x01"))
            .unwrap();
        sc.client
            .send_audio(RtmpTimestamp(8), Bytes::from_static(b"\xaf\x01"))
            .unwrap();
        let media = sc.sent();
        assert_eq!(
            media
                .iter()
                .map(|m| (m.csid, m.type_id, m.stream_id, m.timestamp.0))
                .collect::<Vec<_>>(),
            [(VIDEO_CSID, 9, 1, 7), (AUDIO_CSID, 8, 1, 8)]
        );
        // unpublish: FCUnpublish(name), deleteStream(1)
        sc.client.unpublish().unwrap();
        let bye: Vec<Vec<Amf0Value>> = sc.sent().iter().map(command).collect();
        assert_eq!(bye[0][0], s("FCUnpublish"));
        assert_eq!(bye[0][3], s(&format!("{KEY}?x=1")));
        assert_eq!(bye[1][0], s("deleteStream"));
        assert_eq!(bye[1][3], n(1.0));
    }

    #[test]
    fn plays_a_scripted_stream() {
        let mut sc = Script::new(ClientMode::Play);
        let sent = sc.up_to_stream();
        let connect = command(&sent[2]);
        assert_eq!(connect[2].get("flashVer"), Some(&s(PLAY_FLASH_VER)));
        assert_eq!(connect[2].get("type"), None);
        // play mode: createStream right after connect, no releaseStream.
        assert_eq!(sent.len(), 4);
        assert_eq!(command(&sent[3])[0], s("createStream"));
        let play = sc.sent();
        assert_eq!(play.len(), 2);
        assert_eq!(play[0].type_id, msg_type::USER_CONTROL);
        assert_eq!(
            UserControlEvent::parse(&play[0].payload),
            Some(UserControlEvent::SetBufferLength {
                stream_id: 1,
                millis: PLAY_BUFFER_MS
            })
        );
        assert_eq!(play[1].stream_id, 1);
        let args = command(&play[1]);
        assert_eq!(args[0], s("play"));
        assert_eq!(
            args[2..],
            [Amf0Value::Null, s(&format!("{KEY}?x=1")), n(-2.0)]
        );
        assert_eq!(
            sc.events(),
            vec![
                ClientEvent::Connected,
                ClientEvent::StreamCreated { stream_id: 1 }
            ]
        );

        // What nginx-rtmp sends a player.
        sc.send(UserControlEvent::StreamBegin(1).to_message())
            .unwrap();
        sc.status(1, "status", "NetStream.Play.Reset", "Playing and resetting");
        sc.status(1, "status", status::PLAY_START, "Start live");
        sc.amf(
            msg_type::DATA_AMF0,
            1,
            0,
            &[s("|RtmpSampleAccess"), Amf0Value::Boolean(true)],
        );
        let meta = Amf0Value::EcmaArray(vec![("width".into(), n(320.0))]);
        sc.amf(msg_type::DATA_AMF0, 1, 0, &[s("onMetaData"), meta.clone()]);
        sc.raw(6, msg_type::VIDEO, 1, 0, &[0x17, 0, 0, 0, 0, 1]);
        sc.raw(4, msg_type::AUDIO, 1, 0, &[0xaf, 0, 0x12, 0x10]);
        sc.raw(6, msg_type::VIDEO, 1, 0x0100_0000, &[0x27, 1, 0, 0, 0, 9]);
        // media on another stream, empty media: ignored
        sc.raw(6, msg_type::VIDEO, 2, 50, &[0x27, 1]);
        sc.raw(6, msg_type::VIDEO, 1, 50, &[]);
        // An aggregate: two tags at 1000 and 1040 inside an aggregate stamped 2000.
        let mut agg = Vec::new();
        for (t, ts, body) in [
            (9u8, 1000u32, &[0x27u8, 1, 0, 0, 0, 7][..]),
            (8, 1040, &[0xaf, 1, 5][..]),
        ] {
            agg.push(t);
            agg.extend(&(body.len() as u32).to_be_bytes()[1..]);
            agg.extend(&ts.to_be_bytes()[1..]);
            agg.push((ts >> 24) as u8);
            agg.extend([0, 0, 0]);
            agg.extend(body);
            agg.extend((11 + body.len() as u32).to_be_bytes());
        }
        sc.raw(7, msg_type::AGGREGATE, 1, 2000, &agg);
        sc.send(UserControlEvent::StreamIsRecorded(1).to_message())
            .unwrap();
        sc.send(UserControlEvent::PingRequest(1234).to_message())
            .unwrap();
        sc.command(0, &[s("onFCSubscribe"), n(0.0), Amf0Value::Null]);
        sc.status(
            1,
            "status",
            status::PLAY_UNPUBLISH_NOTIFY,
            "Stop publishing",
        );
        sc.send(UserControlEvent::StreamEof(1).to_message())
            .unwrap();
        sc.status(1, "status", status::PLAY_STOP, "Stopped");

        let st = |code: &str, description: &str| Status {
            level: "status".into(),
            code: code.into(),
            description: description.into(),
        };
        let vid = |ts: u32, b: &[u8]| ClientEvent::Video {
            timestamp: RtmpTimestamp(ts),
            payload: Bytes::copy_from_slice(b),
        };
        let aud = |ts: u32, b: &[u8]| ClientEvent::Audio {
            timestamp: RtmpTimestamp(ts),
            payload: Bytes::copy_from_slice(b),
        };
        assert_eq!(
            sc.events(),
            vec![
                ClientEvent::StreamBegin { stream_id: 1 },
                ClientEvent::Status(st("NetStream.Play.Reset", "Playing and resetting")),
                ClientEvent::Playing { stream_id: 1 },
                ClientEvent::Metadata {
                    timestamp: RtmpTimestamp(0),
                    values: vec![s("onMetaData"), meta]
                },
                vid(0, &[0x17, 0, 0, 0, 0, 1]),
                aud(0, &[0xaf, 0, 0x12, 0x10]),
                vid(0x0100_0000, &[0x27, 1, 0, 0, 0, 9]),
                vid(2000, &[0x27, 1, 0, 0, 0, 7]),
                aud(2040, &[0xaf, 1, 5]),
                ClientEvent::StreamIsRecorded { stream_id: 1 },
                ClientEvent::Unpublished(st(status::PLAY_UNPUBLISH_NOTIFY, "Stop publishing")),
                ClientEvent::StreamEof { stream_id: 1 },
                ClientEvent::Stopped(st(status::PLAY_STOP, "Stopped")),
            ]
        );
        // The ping answered, and nothing else sent.
        let replies = sc.sent();
        assert_eq!(replies.len(), 1);
        assert_eq!(
            UserControlEvent::parse(&replies[0].payload),
            Some(UserControlEvent::PingResponse(1234))
        );
        let stats = sc.client.stats();
        assert_eq!(stats.media_ignored, 2);
        assert_eq!(stats.data_ignored, 1);
        assert_eq!(stats.pings_answered, 1);
        assert_eq!(stats.media_received, 6);
        assert_eq!(sc.client.stage(), Stage::Closed);
    }

    #[test]
    fn acknowledges_each_window() {
        let mut sc = Script::new(ClientMode::Play);
        sc.up_to_stream();
        sc.status(1, "status", status::PLAY_START, "");
        sc.sent();
        let before = sc.client.stats();
        // 4 messages of 3000 bytes: the 5000-byte window is crossed twice.
        for i in 0..4 {
            sc.raw(6, msg_type::VIDEO, 1, i * 40, &[0x27; 3000]);
        }
        let after = sc.client.stats();
        let acks: Vec<u32> = sc
            .sent()
            .iter()
            .filter(|m| m.type_id == msg_type::ACKNOWLEDGEMENT)
            .map(|m| control::parse_u32(&m.payload).unwrap())
            .collect();
        assert_eq!(
            acks.len() as u64,
            after.acks_sent - before.acks_sent,
            "{acks:?}"
        );
        assert!(acks.len() >= 2, "{acks:?}");
        assert_eq!(*acks.last().unwrap() as u64, after.bytes_received);
    }

    #[test]
    fn play_refusals() {
        // onStatus StreamNotFound (level error) after play.
        let mut sc = Script::new(ClientMode::Play);
        sc.up_to_stream();
        sc.events();
        sc.status(
            1,
            "error",
            status::PLAY_STREAM_NOT_FOUND,
            &format!("No such stream {KEY}"),
        );
        assert_eq!(
            sc.events(),
            vec![ClientEvent::Refused(Refusal {
                stage: Stage::Play,
                code: status::PLAY_STREAM_NOT_FOUND.into(),
                description: "No such stream <key>".into()
            })]
        );
        // Play.Failed at level "status" still refuses.
        let mut sc = Script::new(ClientMode::Play);
        sc.up_to_stream();
        sc.events();
        sc.status(1, "status", status::PLAY_FAILED, "");
        assert!(matches!(&sc.events()[..], [ClientEvent::Refused(r)] if r.stage == Stage::Play));
        // _error to createStream.
        let mut sc = Script::new(ClientMode::Play);
        sc.sent();
        sc.command(0, &[s("_result"), n(1.0), Amf0Value::Null, Amf0Value::Null]);
        sc.command(
            0,
            &[
                s("_error"),
                n(2.0),
                Amf0Value::Null,
                object([
                    ("level", s("error")),
                    ("code", s("NetConnection.Call.Failed")),
                ]),
            ],
        );
        assert_eq!(
            sc.events(),
            vec![
                ClientEvent::Connected,
                ClientEvent::Refused(Refusal {
                    stage: Stage::CreateStream,
                    code: "NetConnection.Call.Failed".into(),
                    description: String::new()
                })
            ]
        );
    }

    #[test]
    fn courtesy_errors_and_unknown_calls_are_ignored() {
        let mut sc = Script::new(ClientMode::Publish);
        sc.sent();
        sc.command(0, &[s("_result"), n(1.0), Amf0Value::Null, Amf0Value::Null]);
        // releaseStream (2) and FCPublish (3) unknown to this server.
        sc.command(0, &[s("_error"), n(2.0), Amf0Value::Null, Amf0Value::Null]);
        sc.command(0, &[s("_error"), n(3.0), Amf0Value::Null, Amf0Value::Null]);
        sc.command(0, &[s("onFCPublish"), n(0.0), Amf0Value::Null]);
        sc.command(0, &[s("_checkbw"), n(0.0), Amf0Value::Null]);
        sc.command(0, &[s("_result"), n(99.0), Amf0Value::Null]);
        sc.raw(3, msg_type::COMMAND_AMF0, 0, 0, b"\xff");
        sc.raw(3, msg_type::SHARED_OBJECT_AMF0, 0, 0, b"so");
        sc.raw(6, msg_type::VIDEO, 1, 0, b"\x17\x01");
        assert_eq!(sc.events(), vec![ClientEvent::Connected]);
        assert_eq!(sc.client.stage(), Stage::CreateStream);
        let st = sc.client.stats();
        assert_eq!(st.errors_ignored, 2);
        assert_eq!(st.unknown_commands, 3);
        assert_eq!(st.malformed_commands, 1);
        assert_eq!(st.unknown_messages, 1);
        assert_eq!(st.media_ignored, 1);
        // createStream (4) still completes.
        sc.command(0, &[s("_result"), n(4.0), Amf0Value::Null, n(7.0)]);
        assert_eq!(
            sc.events(),
            vec![ClientEvent::StreamCreated { stream_id: 7 }]
        );
        let publish = sc.sent().pop().unwrap();
        assert_eq!(command(&publish)[0], s("publish"));
        assert_eq!(publish.stream_id, 7);
    }

    #[test]
    fn unusable_create_stream_reply_is_an_error() {
        for id in [
            Amf0Value::Null,
            n(0.0),
            n(-1.0),
            n(1.5),
            n(f64::NAN),
            n(5e9),
        ] {
            let mut sc = Script::new(ClientMode::Play);
            sc.sent();
            sc.command(0, &[s("_result"), n(1.0), Amf0Value::Null, Amf0Value::Null]);
            let mut p = BytesMut::new();
            Amf0Value::encode_all(&[s("_result"), n(2.0), Amf0Value::Null, id], &mut p).unwrap();
            let r = sc.send(RtmpMessage {
                csid: 3,
                timestamp: RtmpTimestamp(0),
                type_id: msg_type::COMMAND_AMF0,
                stream_id: 0,
                payload: p.freeze(),
            });
            assert!(matches!(r, Err(RtmpError::BadReply(_))), "{r:?}");
        }
    }

    #[test]
    fn status_text_is_cut_and_cleaned() {
        let mut sc = Script::new(ClientMode::Play);
        sc.up_to_stream();
        sc.events();
        let long = format!("{}\r\n{}", "d".repeat(10), "é".repeat(100_000));
        sc.status(1, "error", &"c".repeat(100_000), &long);
        let r = match &sc.events()[..] {
            [ClientEvent::Refused(r)] => r.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(r.code.len(), MAX_STATUS_TEXT);
        assert!(r.description.len() <= MAX_STATUS_TEXT);
        assert!(r.description.starts_with("dddddddddd  é"));
    }

    #[test]
    fn aggregates_are_capped_and_malformed_tails_dropped() {
        let mut sc = Script::new(ClientMode::Play);
        sc.up_to_stream();
        sc.status(1, "status", status::PLAY_START, "");
        sc.events();
        let n_tags = MAX_AGGREGATE_TAGS + 10;
        let mut agg = Vec::new();
        for _ in 0..n_tags {
            agg.extend([8u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xaf, 0, 0, 0, 12]);
        }
        sc.raw(7, msg_type::AGGREGATE, 1, 0, &agg);
        assert_eq!(sc.events().len(), MAX_AGGREGATE_TAGS);
        assert_eq!(sc.client.stats().aggregate_tags_dropped, 10);
        // A tag claiming more bytes than are left.
        sc.raw(
            7,
            msg_type::AGGREGATE,
            1,
            0,
            &[9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x17],
        );
        assert!(sc.events().is_empty());
        assert_eq!(sc.client.stats().aggregate_tags_dropped, 11);
    }

    #[test]
    fn garbage_after_the_handshake_is_an_error() {
        let mut c = ClientSession::new(config(ClientMode::Play));
        // fmt 1 header on a chunk stream never opened.
        assert!(matches!(
            c.feed(&[0x44, 0, 0, 0, 0, 0, 1, 9, 0]),
            Err(RtmpError::Chunk(ChunkError::NoPreviousHeader { .. }))
        ));
        let mut c = ClientSession::new(config(ClientMode::Play));
        // "HTTP/1.1 400 Bad Request": chunk stream 8, a length over the cap.
        let r = c.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(r.is_err(), "{r:?}");
        // Malformed control messages.
        let mut sc = Script::new(ClientMode::Publish);
        let r = sc.send(RtmpMessage {
            csid: 2,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::WINDOW_ACK_SIZE,
            stream_id: 0,
            payload: Bytes::from_static(&[0, 1]),
        });
        assert!(
            matches!(r, Err(RtmpError::MalformedControl { .. })),
            "{r:?}"
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            play in any::<bool>(),
            split in any::<prop::sample::Index>(),
        ) {
            let mode = if play { ClientMode::Play } else { ClientMode::Publish };
            let mut sc = Script::new(mode);
            sc.up_to_stream();
            let at = split.index(data.len() + 1);
            if sc.client.feed(&data[..at]).is_ok() {
                let _ = sc.client.feed(&data[at..]);
            }
            while sc.client.poll_event().is_some() {}
            while sc.client.take_output().is_some() {}
        }

        #[test]
        fn random_server_commands_never_panic(
            cmds in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("_result"), Just("_error"), Just("onStatus"), Just("onBWDone"),
                        Just("close"), Just("x")
                    ],
                    0u32..3,
                    (-1.0f64..7.0).prop_map(Amf0Value::Number),
                    prop_oneof![
                        Just(Amf0Value::Null),
                        (-2.0f64..5.0).prop_map(Amf0Value::Number),
                        prop_oneof![Just("status"), Just("error")].prop_map(|l| object([
                            ("level", s(l)),
                            ("code", s(status::PLAY_START)),
                        ])),
                        Just(object([("code", s(status::PUBLISH_START))])),
                    ],
                    any::<bool>(),
                ),
                0..30,
            ),
            play in any::<bool>(),
        ) {
            let mode = if play { ClientMode::Play } else { ClientMode::Publish };
            let mut sc = Script::new(mode);
            for (name, stream_id, txn, arg, media) in cmds {
                sc.command(stream_id, &[s(name), txn, Amf0Value::Null, arg]);
                if media {
                    sc.raw(6, msg_type::VIDEO, stream_id, 0, b"\x17\x01");
                    let _ = sc.client.send_video(RtmpTimestamp(0), Bytes::from_static(b"v"));
                    sc.client.close();
                }
                sc.events();
                sc.sent();
            }
        }
    }
}
