//! The server side of an RTMP connection after the handshake: the NetConnection
//! and NetStream commands a publisher sends (Adobe RTMP 1.0 specification §7.2.1
//! connect / createStream / deleteStream, §7.2.2 publish / play / closeStream),
//! the protocol control messages (§5.4) and user control messages (§6.2).
//!
//! A publisher (FFmpeg, OBS) talks like this; `*` marks what waits for the caller:
//!
//! ```text
//! connect(app, tcUrl)   -> Window Ack Size, Set Peer Bandwidth, Set Chunk Size,
//!                          _result NetConnection.Connect.Success; event Connected
//! releaseStream(key)    -> _result
//! FCPublish(key)        -> onFCPublish, _result
//! createStream          -> _result(stream id 1, 2, ...)
//! publish(key, "live")  -> event PublishRequested
//!                        * accept_publish: StreamBegin, onStatus NetStream.Publish.Start
//!                        * reject_publish: onStatus level "error", the caller's code
//! @setDataFrame/onMetaData, audio, video -> events Metadata, Audio, Video
//! FCUnpublish / closeStream / deleteStream -> event Unpublished
//! ```
//!
//! Hostile or odd order never panics and never errors the connection: media
//! before an accepted publish, on another stream, or after deleteStream is
//! ignored and counted in [`SessionStats`]; a second publish while one is pending
//! or active is refused with an error status; unknown message types and commands
//! are ignored; names (app, stream name, tcUrl, publish type) longer than
//! [`SessionConfig::max_name_len`], with control characters (NUL included), with
//! a `..` path segment or that are not UTF-8 are refused and never stored. A
//! refused publish leaves the session usable: the client may retry.
//!
//! Only broken framing is fatal (`feed` returns `Err`): chunk-layer errors and
//! malformed protocol control messages.

use super::amf0::{object, Amf0Value};
use super::chunk::{msg_type, ChunkDecoder, ChunkEncoder, RtmpMessage, MAX_CHUNK_SIZE};
use super::control::{self, LimitType, UserControlEvent};
use super::RtmpError;
use crate::media::RtmpTimestamp;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Default longest app, stream name, tcUrl or publish type, in bytes. Attack:
/// fixed-size name buffers downstream (a 256-byte stack buffer overflowed in
/// another server) and memory or log amplification from megabyte names.
pub const MAX_NAME_LEN: usize = 1024;

/// Message streams a connection may hold open at once (createStream without
/// deleteStream). Attack: createStream in a loop. A publisher needs one.
pub const MAX_STREAMS: usize = 8;

/// Smallest peer acknowledgement window honoured; smaller windows act as this.
/// Attack: a 1-byte window to make us send an Acknowledgement for every read.
pub const MIN_ACK_WINDOW: u32 = 4096;

/// Chunk stream for our command replies on stream 0 (`_result`, `_error`).
const COMMAND_CSID: u32 = 3;
/// Chunk stream for onStatus on a message stream (as nginx-rtmp and FMS use).
const STATUS_CSID: u32 = 5;

/// onStatus and `_result` codes we send.
pub mod status {
    pub const CONNECT_SUCCESS: &str = "NetConnection.Connect.Success";
    pub const CONNECT_REJECTED: &str = "NetConnection.Connect.Rejected";
    pub const PUBLISH_START: &str = "NetStream.Publish.Start";
    pub const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
    pub const PUBLISH_UNAUTHORIZED: &str = "NetStream.Publish.Unauthorized";
    pub const PLAY_FAILED: &str = "NetStream.Play.Failed";
}

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Chunk size we send with (announced by Set Chunk Size after connect).
    pub out_chunk_size: u32,
    /// Window Acknowledgement Size and Set Peer Bandwidth we announce.
    pub window_ack_size: u32,
    /// Longest app / stream name / tcUrl / publish type accepted, in bytes.
    pub max_name_len: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            out_chunk_size: 4096,
            window_ack_size: 2_500_000,
            max_name_len: MAX_NAME_LEN,
        }
    }
}

/// What the session tells its caller, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// connect succeeded (the reply is already queued).
    Connected { app: String, tc_url: Option<String> },
    /// A client asks to publish; answer with [`ServerSession::accept_publish`] or
    /// [`ServerSession::reject_publish`]. `stream_name` is the stream key as sent,
    /// including any `?query`; it has passed the length and character checks.
    PublishRequested {
        stream_id: u32,
        app: String,
        stream_name: String,
        publish_type: String,
    },
    /// FLV video tag body (message type 9) on the accepted stream.
    Video {
        stream_id: u32,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    },
    /// FLV audio tag body (message type 8) on the accepted stream.
    Audio {
        stream_id: u32,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    },
    /// onMetaData on the accepted stream; `@setDataFrame` stripped, so
    /// `values[0]` is the string "onMetaData" and `values[1]` usually an ECMA array.
    Metadata {
        stream_id: u32,
        values: Vec<Amf0Value>,
    },
    /// The pending or accepted publication ended (FCUnpublish, closeStream or
    /// deleteStream).
    Unpublished { stream_id: u32 },
    /// play was refused (playback is HTTP only). `stream_name` is empty when the
    /// name failed the checks.
    PlayRefused { stream_name: String },
}

/// Counters of what the session received and what it ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub bytes_received: u64,
    pub messages_received: u64,
    pub media_forwarded: u64,
    /// Audio/video/metadata with no accepted publication (before publish, before
    /// accept, after unpublish or deleteStream).
    pub media_ignored_not_publishing: u64,
    /// Audio/video/metadata on another message stream than the accepted one.
    pub media_ignored_wrong_stream: u64,
    /// Data messages that are not onMetaData, or not decodable.
    pub data_ignored: u64,
    pub unknown_messages: u64,
    pub unknown_commands: u64,
    /// Commands whose AMF0 did not decode (or had no name).
    pub malformed_commands: u64,
    /// Commands other than connect before a successful connect.
    pub commands_before_connect: u64,
    /// Publishes refused by the session itself (names, order) or by the caller.
    pub publishes_rejected: u64,
    pub acks_sent: u64,
    /// Unfinished messages dropped by Abort or a new header mid-message.
    pub messages_aborted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    Idle,
    /// PublishRequested emitted, waiting for accept/reject.
    Pending {
        stream_id: u32,
    },
    Active {
        stream_id: u32,
    },
}

/// The server session state machine. See the module docs.
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    output: BytesMut,
    events: VecDeque<ServerEvent>,
    /// The app of a successful connect.
    app: Option<String>,
    /// Message streams made by createStream and not deleted.
    streams: Vec<u32>,
    next_stream_id: u32,
    publish: Publish,
    /// The peer's Window Acknowledgement Size, if it sent one.
    peer_window: Option<u32>,
    /// `bytes_received` when we last acknowledged.
    last_ack: u64,
    stats: SessionStats,
}

/// A command as decoded: the values that decoded, and whether all did.
struct Command {
    values: Vec<Amf0Value>,
    complete: bool,
}

impl Command {
    fn decode(payload: &[u8]) -> Command {
        let mut values = Vec::new();
        let mut rest = payload;
        while !rest.is_empty() {
            match Amf0Value::decode(rest) {
                Ok((v, used)) => {
                    values.push(v);
                    rest = rest.get(used..).unwrap_or(&[]);
                }
                Err(_) => {
                    return Command {
                        values,
                        complete: false,
                    }
                }
            }
        }
        Command {
            values,
            complete: true,
        }
    }

    fn name(&self) -> Option<&str> {
        self.values.first()?.as_str()
    }

    fn transaction(&self) -> f64 {
        self.values
            .get(1)
            .and_then(Amf0Value::as_number)
            .unwrap_or(0.0)
    }

    fn arg(&self, i: usize) -> Option<&Amf0Value> {
        self.values.get(i)
    }
}

impl ServerSession {
    pub fn new(config: SessionConfig) -> Self {
        ServerSession {
            config,
            decoder: ChunkDecoder::new(),
            encoder: ChunkEncoder::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            app: None,
            streams: Vec::new(),
            next_stream_id: 1,
            publish: Publish::Idle,
            peer_window: None,
            last_ack: 0,
            stats: SessionStats::default(),
        }
    }

    /// Bytes from the socket (after the handshake). Err = protocol violation:
    /// the caller closes the connection.
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
            Some(self.output.split().freeze())
        }
    }

    /// Events for the caller, in order (drain until None).
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats.clone()
    }

    /// The stream id of the accepted publication, if any.
    pub fn publishing_stream(&self) -> Option<u32> {
        match self.publish {
            Publish::Active { stream_id } => Some(stream_id),
            _ => None,
        }
    }

    /// Answers a PublishRequested: StreamBegin and onStatus
    /// NetStream.Publish.Start. Does nothing unless that publish is pending.
    pub fn accept_publish(&mut self, stream_id: u32) {
        if self.publish != (Publish::Pending { stream_id }) {
            tracing::debug!(stream_id, "accept_publish without a pending publish");
            return;
        }
        self.publish = Publish::Active { stream_id };
        self.send(UserControlEvent::StreamBegin(stream_id).to_message());
        self.send_status(
            stream_id,
            "status",
            status::PUBLISH_START,
            "Publishing started.",
        );
    }

    /// Refuses a pending publish (or ends an accepted one): onStatus level
    /// "error" with `code` (e.g. "NetStream.Publish.BadName",
    /// "NetStream.Publish.Unauthorized") and `description`. The connection stays
    /// usable; the client may publish again. Does nothing for another stream.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        match self.publish {
            Publish::Pending { stream_id: s } | Publish::Active { stream_id: s }
                if s == stream_id =>
            {
                self.publish = Publish::Idle;
                self.stats.publishes_rejected = self.stats.publishes_rejected.saturating_add(1);
                self.send_status(stream_id, "error", code, description);
            }
            _ => tracing::debug!(stream_id, "reject_publish without a matching publish"),
        }
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
                // We do not throttle our (tiny) output to a publisher.
            }
            msg_type::USER_CONTROL => {
                let ev =
                    UserControlEvent::parse(&msg.payload).ok_or(RtmpError::MalformedControl {
                        name: "User Control",
                        len: msg.payload.len(),
                    })?;
                if let UserControlEvent::PingRequest(t) = ev {
                    self.send(UserControlEvent::PingResponse(t).to_message());
                }
            }
            msg_type::AUDIO | msg_type::VIDEO => self.on_media(msg),
            msg_type::DATA_AMF0 => self.on_data(msg.stream_id, &msg.payload),
            msg_type::DATA_AMF3 => match msg.payload.split_first() {
                Some((0, rest)) => self.on_data(msg.stream_id, rest),
                _ => self.stats.data_ignored = self.stats.data_ignored.saturating_add(1),
            },
            msg_type::COMMAND_AMF0 => self.on_command(msg.stream_id, &msg.payload),
            // AMF3 command: a 0 format byte, then AMF0 values.
            msg_type::COMMAND_AMF3 => match msg.payload.split_first() {
                Some((0, rest)) => self.on_command(msg.stream_id, rest),
                _ => {
                    self.stats.malformed_commands = self.stats.malformed_commands.saturating_add(1)
                }
            },
            // Aggregate (22), shared objects and anything else: not for a publisher.
            _ => self.stats.unknown_messages = self.stats.unknown_messages.saturating_add(1),
        }
        Ok(())
    }

    /// Whether a message on `stream_id` belongs to the accepted publication;
    /// counts it as ignored otherwise.
    fn accepts_media(&mut self, stream_id: u32) -> bool {
        match self.publish {
            Publish::Active { stream_id: s } if s == stream_id => true,
            Publish::Active { .. } => {
                self.stats.media_ignored_wrong_stream =
                    self.stats.media_ignored_wrong_stream.saturating_add(1);
                false
            }
            _ => {
                self.stats.media_ignored_not_publishing =
                    self.stats.media_ignored_not_publishing.saturating_add(1);
                false
            }
        }
    }

    fn on_media(&mut self, msg: RtmpMessage) {
        if !self.accepts_media(msg.stream_id) {
            return;
        }
        self.stats.media_forwarded = self.stats.media_forwarded.saturating_add(1);
        let RtmpMessage {
            stream_id,
            timestamp,
            payload,
            ..
        } = msg;
        self.events.push_back(if msg.type_id == msg_type::VIDEO {
            ServerEvent::Video {
                stream_id,
                timestamp,
                payload,
            }
        } else {
            ServerEvent::Audio {
                stream_id,
                timestamp,
                payload,
            }
        });
    }

    fn on_data(&mut self, stream_id: u32, payload: &[u8]) {
        let Ok(mut values) = Amf0Value::decode_all(payload) else {
            self.stats.data_ignored = self.stats.data_ignored.saturating_add(1);
            return;
        };
        if values.first().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            values.remove(0);
        }
        if values.first().and_then(Amf0Value::as_str) != Some("onMetaData") {
            self.stats.data_ignored = self.stats.data_ignored.saturating_add(1);
            return;
        }
        if self.accepts_media(stream_id) {
            self.events
                .push_back(ServerEvent::Metadata { stream_id, values });
        }
    }

    fn on_command(&mut self, stream_id: u32, payload: &[u8]) {
        let cmd = Command::decode(payload);
        let Some(name) = cmd.name().map(str::to_owned) else {
            self.stats.malformed_commands = self.stats.malformed_commands.saturating_add(1);
            return;
        };
        let txn = cmd.transaction();
        if name == "connect" {
            return self.on_connect(txn, &cmd);
        }
        if self.app.is_none() {
            self.stats.commands_before_connect =
                self.stats.commands_before_connect.saturating_add(1);
            return;
        }
        if !cmd.complete && name != "publish" {
            self.stats.malformed_commands = self.stats.malformed_commands.saturating_add(1);
            return;
        }
        match name.as_str() {
            "releaseStream" | "_checkbw" | "checkBandwidth" => {
                self.send_result(txn, Amf0Value::Undefined)
            }
            "FCPublish" => {
                self.send_command(
                    COMMAND_CSID,
                    0,
                    &[
                        Amf0Value::String("onFCPublish".into()),
                        Amf0Value::Number(0.0),
                        Amf0Value::Null,
                        object([("code", Amf0Value::String(status::PUBLISH_START.into()))]),
                    ],
                );
                self.send_result(txn, Amf0Value::Undefined);
            }
            "createStream" => self.on_create_stream(txn),
            "publish" => self.on_publish(stream_id, &cmd),
            "FCUnpublish" => {
                self.unpublish(None);
                self.send_result(txn, Amf0Value::Undefined);
            }
            "closeStream" => self.unpublish(Some(stream_id)),
            "deleteStream" => {
                let id = cmd
                    .arg(3)
                    .and_then(Amf0Value::as_number)
                    .and_then(stream_id_from);
                if let Some(id) = id {
                    self.unpublish(Some(id));
                    self.streams.retain(|&s| s != id);
                } else {
                    self.stats.malformed_commands = self.stats.malformed_commands.saturating_add(1);
                }
            }
            "getStreamLength" => self.send_result(txn, Amf0Value::Number(0.0)),
            "play" => {
                let name = cmd.arg(3).and_then(Amf0Value::as_str).unwrap_or("");
                let stream_name = if self.check_name(name, false).is_ok() {
                    name.to_owned()
                } else {
                    String::new()
                };
                self.events
                    .push_back(ServerEvent::PlayRefused { stream_name });
                self.send_status(
                    stream_id,
                    "error",
                    status::PLAY_FAILED,
                    "Playback is offered over HLS and DASH only.",
                );
            }
            _ => self.stats.unknown_commands = self.stats.unknown_commands.saturating_add(1),
        }
    }

    fn on_connect(&mut self, txn: f64, cmd: &Command) {
        let obj = cmd.arg(2);
        let app = obj.and_then(|o| o.get("app")).and_then(Amf0Value::as_str);
        let tc_url = obj.and_then(|o| o.get("tcUrl")).and_then(Amf0Value::as_str);
        let refusal = if self.app.is_some() {
            Some("already connected")
        } else if !cmd.complete || obj.and_then(Amf0Value::properties).is_none() {
            Some("malformed connect")
        } else {
            self.check_name(app.unwrap_or(""), true)
                .and_then(|()| tc_url.map_or(Ok(()), |t| self.check_name(t, true)))
                .err()
        };
        if let Some(why) = refusal {
            self.send_command(
                COMMAND_CSID,
                0,
                &[
                    Amf0Value::String("_error".into()),
                    Amf0Value::Number(txn),
                    Amf0Value::Null,
                    status_object("error", status::CONNECT_REJECTED, why),
                ],
            );
            return;
        }
        let app = app.unwrap_or("").to_owned();
        let tc_url = tc_url.map(str::to_owned);

        self.send(control::window_ack_size(self.config.window_ack_size));
        self.send(control::set_peer_bandwidth(
            self.config.window_ack_size,
            LimitType::Dynamic,
        ));
        let size = self.config.out_chunk_size.clamp(1, MAX_CHUNK_SIZE);
        self.send(control::set_chunk_size(size));
        if let Err(e) = self.encoder.set_chunk_size(size) {
            tracing::error!(error = %e, "invalid outgoing chunk size");
        }
        let mut info = status_object("status", status::CONNECT_SUCCESS, "Connection succeeded.");
        if let Amf0Value::Object(props) = &mut info {
            props.push(("objectEncoding".into(), Amf0Value::Number(0.0)));
        }
        self.send_command(
            COMMAND_CSID,
            0,
            &[
                Amf0Value::String("_result".into()),
                Amf0Value::Number(txn),
                object([
                    ("fmsVer", Amf0Value::String("FMS/3,0,1,123".into())),
                    ("capabilities", Amf0Value::Number(31.0)),
                ]),
                info,
            ],
        );
        self.app = Some(app.clone());
        self.events
            .push_back(ServerEvent::Connected { app, tc_url });
    }

    fn on_create_stream(&mut self, txn: f64) {
        let id = self.next_stream_id;
        if self.streams.len() >= MAX_STREAMS || id == u32::MAX {
            self.send_command(
                COMMAND_CSID,
                0,
                &[
                    Amf0Value::String("_error".into()),
                    Amf0Value::Number(txn),
                    Amf0Value::Null,
                    status_object("error", "NetConnection.Call.Failed", "too many streams"),
                ],
            );
            return;
        }
        self.next_stream_id = self.next_stream_id.saturating_add(1);
        self.streams.push(id);
        self.send_result(txn, Amf0Value::Number(f64::from(id)));
    }

    fn on_publish(&mut self, stream_id: u32, cmd: &Command) {
        let name = cmd.arg(3).and_then(Amf0Value::as_str);
        let publish_type = cmd.arg(4).and_then(Amf0Value::as_str).unwrap_or("live");
        let refusal = if self.publish != Publish::Idle {
            Err("a publish is already pending or active on this connection")
        } else if !self.streams.contains(&stream_id) {
            Err("publish on a stream that createStream did not make")
        } else if !cmd.complete {
            Err("malformed publish (AMF0 or UTF-8)")
        } else if let Some(name) = name {
            self.check_name(name, false)
                .and_then(|()| self.check_name(publish_type, false))
        } else {
            Err("publish without a stream name")
        };
        if let Err(why) = refusal {
            self.stats.publishes_rejected = self.stats.publishes_rejected.saturating_add(1);
            self.send_status(stream_id, "error", status::PUBLISH_BAD_NAME, why);
            return;
        }
        self.publish = Publish::Pending { stream_id };
        self.events.push_back(ServerEvent::PublishRequested {
            stream_id,
            app: self.app.clone().unwrap_or_default(),
            stream_name: name.unwrap_or("").to_owned(),
            publish_type: publish_type.to_owned(),
        });
    }

    /// Ends the pending or accepted publication, if on `stream_id` (any when None).
    fn unpublish(&mut self, stream_id: Option<u32>) {
        let current = match self.publish {
            Publish::Pending { stream_id } | Publish::Active { stream_id } => stream_id,
            Publish::Idle => return,
        };
        if stream_id.is_none_or(|s| s == current) {
            self.publish = Publish::Idle;
            self.events
                .push_back(ServerEvent::Unpublished { stream_id: current });
        }
    }

    /// Name checks for app, tcUrl, stream name and publish type. `allow_empty`
    /// for app and tcUrl (`rtmp://host/` has an empty app).
    fn check_name(&self, name: &str, allow_empty: bool) -> Result<(), &'static str> {
        if name.len() > self.config.max_name_len {
            return Err("name too long");
        }
        if name.is_empty() && !allow_empty {
            return Err("empty name");
        }
        if name.chars().any(char::is_control) {
            return Err("control character in name");
        }
        let path = name.split('?').next().unwrap_or("");
        if path.split(['/', '\\']).any(|seg| seg == "..") {
            return Err("'..' in name");
        }
        Ok(())
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

    fn send(&mut self, msg: RtmpMessage) {
        if let Err(e) = self.encoder.encode(&msg, &mut self.output) {
            tracing::error!(error = %e, "could not encode an outgoing RTMP message");
        }
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
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

    fn send_result(&mut self, txn: f64, value: Amf0Value) {
        self.send_command(
            COMMAND_CSID,
            0,
            &[
                Amf0Value::String("_result".into()),
                Amf0Value::Number(txn),
                Amf0Value::Null,
                value,
            ],
        );
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.send_command(
            STATUS_CSID,
            stream_id,
            &[
                Amf0Value::String("onStatus".into()),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                status_object(level, code, description),
            ],
        );
    }
}

fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    object([
        ("level", Amf0Value::String(level.into())),
        ("code", Amf0Value::String(code.into())),
        ("description", Amf0Value::String(description.into())),
    ])
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
    use crate::ingest::rtmp::chunk::{ChunkError, MAX_CHUNK_STREAMS};
    use crate::ingest::rtmp::handshake::{ClientHandshake, HandshakeProgress, ServerHandshake};
    use proptest::prelude::*;

    fn s(v: &str) -> Amf0Value {
        Amf0Value::String(v.into())
    }
    fn n(v: f64) -> Amf0Value {
        Amf0Value::Number(v)
    }

    /// A publisher built from our own encoder, talking to a ServerSession.
    struct Peer {
        enc: ChunkEncoder,
        dec: ChunkDecoder,
        server: ServerSession,
    }

    impl Peer {
        fn new() -> Peer {
            Peer::with_config(SessionConfig::default())
        }

        fn with_config(config: SessionConfig) -> Peer {
            Peer {
                enc: ChunkEncoder::new(),
                dec: ChunkDecoder::new(),
                server: ServerSession::new(config),
            }
        }

        fn bytes(&mut self, msg: RtmpMessage) -> BytesMut {
            let mut out = BytesMut::new();
            self.enc.encode(&msg, &mut out).unwrap();
            out
        }

        fn send(&mut self, msg: RtmpMessage) -> Result<(), RtmpError> {
            let b = self.bytes(msg);
            self.server.feed(&b)
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

        fn command_msg(stream_id: u32, values: &[Amf0Value]) -> RtmpMessage {
            let mut p = BytesMut::new();
            Amf0Value::encode_all(values, &mut p).unwrap();
            RtmpMessage {
                csid: if stream_id == 0 { 3 } else { 8 },
                timestamp: RtmpTimestamp(0),
                type_id: msg_type::COMMAND_AMF0,
                stream_id,
                payload: p.freeze(),
            }
        }

        fn command(&mut self, stream_id: u32, values: &[Amf0Value]) {
            self.send(Self::command_msg(stream_id, values)).unwrap();
        }

        fn set_chunk_size(&mut self, size: u32) {
            self.send(control::set_chunk_size(size)).unwrap();
            self.enc.set_chunk_size(size).unwrap();
        }

        /// The server's answers, decoded.
        fn replies(&mut self) -> Vec<RtmpMessage> {
            while let Some(b) = self.server.take_output() {
                self.dec.feed(&b).unwrap();
            }
            std::iter::from_fn(|| self.dec.next_message()).collect()
        }

        fn events(&mut self) -> Vec<ServerEvent> {
            std::iter::from_fn(|| self.server.poll_event()).collect()
        }

        fn connect(&mut self) {
            self.command(
                0,
                &[
                    s("connect"),
                    n(1.0),
                    object([
                        ("app", s("live")),
                        ("type", s("nonprivate")),
                        ("flashVer", s("FMLE/3.0 (compatible; Lavf61.7.100)")),
                        ("tcUrl", s("rtmp://localhost:1935/live")),
                    ]),
                ],
            );
        }

        /// connect + createStream + publish(name), returning the server's answers to publish.
        fn up_to_publish(&mut self, name: &str) -> Vec<RtmpMessage> {
            self.connect();
            self.command(0, &[s("createStream"), n(4.0), Amf0Value::Null]);
            self.replies();
            self.events();
            self.command(
                1,
                &[s("publish"), n(5.0), Amf0Value::Null, s(name), s("live")],
            );
            self.replies()
        }
    }

    fn values(m: &RtmpMessage) -> Vec<Amf0Value> {
        assert_eq!(m.type_id, msg_type::COMMAND_AMF0, "{m:?}");
        Amf0Value::decode_all(&m.payload).unwrap()
    }

    fn command_name(m: &RtmpMessage) -> String {
        values(m)[0].as_str().unwrap().to_owned()
    }

    /// The code of an onStatus or `_result`/`_error` info object.
    fn status_code(m: &RtmpMessage) -> (String, String) {
        let v = values(m);
        let info = v.last().unwrap();
        (
            info.get("level")
                .and_then(Amf0Value::as_str)
                .unwrap()
                .to_owned(),
            info.get("code")
                .and_then(Amf0Value::as_str)
                .unwrap()
                .to_owned(),
        )
    }

    fn media(type_id: u8, stream_id: u32, ts: u32, payload: &[u8]) -> RtmpMessage {
        RtmpMessage {
            csid: if type_id == msg_type::VIDEO { 6 } else { 4 },
            timestamp: RtmpTimestamp(ts),
            type_id,
            stream_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn ffmpeg_publish_conversation() {
        let mut p = Peer::new();

        // Handshake; FFmpeg sends C2 and its first chunks back to back.
        let mut client_hs = ClientHandshake::new(0, 1);
        let mut server_hs = ServerHandshake::new(0, 2);
        server_hs.feed(&client_hs.take_output().unwrap()).unwrap();
        let done = client_hs.feed(&server_hs.take_output().unwrap()).unwrap();
        assert_eq!(
            done,
            HandshakeProgress::Done {
                remaining: Bytes::new()
            }
        );
        let mut wire = client_hs.take_output().unwrap().to_vec();
        wire.extend_from_slice(&p.bytes(control::set_chunk_size(4096)));
        p.enc.set_chunk_size(4096).unwrap();
        let HandshakeProgress::Done { remaining } = server_hs.feed(&wire).unwrap() else {
            panic!("handshake not done");
        };
        p.server.feed(&remaining).unwrap();

        // connect
        p.connect();
        let r = p.replies();
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0].type_id, msg_type::WINDOW_ACK_SIZE);
        assert_eq!(control::parse_u32(&r[0].payload), Some(2_500_000));
        assert_eq!(r[1].type_id, msg_type::SET_PEER_BANDWIDTH);
        assert_eq!(r[2].type_id, msg_type::SET_CHUNK_SIZE);
        assert_eq!(control::parse_u32(&r[2].payload), Some(4096));
        assert_eq!(p.dec.chunk_size(), 4096);
        assert_eq!(command_name(&r[3]), "_result");
        assert_eq!(values(&r[3])[1], n(1.0));
        assert_eq!(
            status_code(&r[3]),
            ("status".into(), status::CONNECT_SUCCESS.into())
        );
        assert_eq!(values(&r[3])[3].get("objectEncoding"), Some(&n(0.0)));
        assert_eq!(values(&r[3])[2].get("capabilities"), Some(&n(31.0)));
        assert_eq!(
            p.events(),
            vec![ServerEvent::Connected {
                app: "live".into(),
                tc_url: Some("rtmp://localhost:1935/live".into())
            }]
        );

        // releaseStream, FCPublish, createStream
        p.command(0, &[s("releaseStream"), n(2.0), Amf0Value::Null, s("key")]);
        p.command(0, &[s("FCPublish"), n(3.0), Amf0Value::Null, s("key")]);
        p.command(0, &[s("createStream"), n(4.0), Amf0Value::Null]);
        let r = p.replies();
        let names: Vec<String> = r.iter().map(command_name).collect();
        assert_eq!(names, ["_result", "onFCPublish", "_result", "_result"]);
        assert_eq!(values(&r[0])[1], n(2.0));
        assert_eq!(values(&r[2])[1], n(3.0));
        assert_eq!(values(&r[3])[1..], [n(4.0), Amf0Value::Null, n(1.0)]);

        // publish: nothing is answered until the caller decides
        p.command(
            1,
            &[
                s("publish"),
                n(5.0),
                Amf0Value::Null,
                s("key?token=a&b=c"),
                s("live"),
            ],
        );
        assert!(p.replies().is_empty());
        assert_eq!(
            p.events(),
            vec![ServerEvent::PublishRequested {
                stream_id: 1,
                app: "live".into(),
                stream_name: "key?token=a&b=c".into(),
                publish_type: "live".into(),
            }]
        );
        // media before accept is ignored
        p.send(media(msg_type::VIDEO, 1, 0, b"early")).unwrap();
        assert!(p.events().is_empty());
        assert_eq!(p.server.stats().media_ignored_not_publishing, 1);

        p.server.accept_publish(1);
        let r = p.replies();
        assert_eq!(r.len(), 2);
        assert_eq!(
            UserControlEvent::parse(&r[0].payload),
            Some(UserControlEvent::StreamBegin(1))
        );
        assert_eq!(r[1].stream_id, 1);
        assert_eq!(command_name(&r[1]), "onStatus");
        assert_eq!(
            status_code(&r[1]),
            ("status".into(), status::PUBLISH_START.into())
        );
        assert_eq!(p.server.publishing_stream(), Some(1));

        // @setDataFrame, then audio and video
        let mut meta = BytesMut::new();
        let ecma = Amf0Value::EcmaArray(vec![
            ("width".into(), n(1280.0)),
            ("height".into(), n(720.0)),
        ]);
        Amf0Value::encode_all(
            &[s("@setDataFrame"), s("onMetaData"), ecma.clone()],
            &mut meta,
        )
        .unwrap();
        p.send(RtmpMessage {
            csid: 4,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::DATA_AMF0,
            stream_id: 1,
            payload: meta.freeze(),
        })
        .unwrap();
        p.send(media(msg_type::VIDEO, 1, 0, &[0x17, 0, 0, 0, 0, 1, 2]))
            .unwrap();
        p.send(media(msg_type::AUDIO, 1, 0, &[0xaf, 0, 0x12, 0x10]))
            .unwrap();
        let big = vec![0x27u8; 10_000];
        p.send(media(msg_type::VIDEO, 1, 33, &big)).unwrap();
        p.send(media(msg_type::AUDIO, 1, 23, &[0xaf, 1, 9]))
            .unwrap();
        let ev = p.events();
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert_eq!(
            ev[0],
            ServerEvent::Metadata {
                stream_id: 1,
                values: vec![s("onMetaData"), ecma]
            }
        );
        assert!(
            matches!(&ev[1], ServerEvent::Video { stream_id: 1, timestamp: RtmpTimestamp(0), payload } if payload[0] == 0x17)
        );
        assert!(matches!(&ev[2], ServerEvent::Audio { stream_id: 1, .. }));
        assert!(
            matches!(&ev[3], ServerEvent::Video { timestamp: RtmpTimestamp(33), payload, .. } if payload.len() == 10_000)
        );
        assert!(matches!(
            &ev[4],
            ServerEvent::Audio {
                timestamp: RtmpTimestamp(23),
                ..
            }
        ));

        // FCUnpublish, deleteStream, and media after that
        p.command(0, &[s("FCUnpublish"), n(6.0), Amf0Value::Null, s("key")]);
        p.command(0, &[s("deleteStream"), n(7.0), Amf0Value::Null, n(1.0)]);
        p.send(media(msg_type::VIDEO, 1, 66, b"late")).unwrap();
        assert_eq!(p.events(), vec![ServerEvent::Unpublished { stream_id: 1 }]);
        let st = p.server.stats();
        assert_eq!(st.media_forwarded, 4);
        assert_eq!(st.media_ignored_not_publishing, 2);
        assert_eq!(p.server.publishing_stream(), None);
    }

    #[test]
    fn acknowledges_the_peer_window_and_answers_pings() {
        let mut p = Peer::new();
        p.connect();
        p.replies();
        p.send(control::window_ack_size(5000)).unwrap();
        p.send(UserControlEvent::PingRequest(1234).to_message())
            .unwrap();
        let r = p.replies();
        assert_eq!(r.len(), 1);
        assert_eq!(
            UserControlEvent::parse(&r[0].payload),
            Some(UserControlEvent::PingResponse(1234))
        );
        // unknown user control events are fine
        p.raw(2, msg_type::USER_CONTROL, 0, 0, &[0, 31, 0, 0, 0, 1]);
        for _ in 0..10 {
            p.raw(4, msg_type::AUDIO, 0, 0, &[0u8; 1000]);
        }
        let acks: Vec<u32> = p
            .replies()
            .iter()
            .filter(|m| m.type_id == msg_type::ACKNOWLEDGEMENT)
            .map(|m| control::parse_u32(&m.payload).unwrap())
            .collect();
        assert_eq!(acks.len(), 2, "{acks:?}");
        assert!(acks[0] >= 5000 && acks[1] >= acks[0] + 5000);
        assert_eq!(u64::from(acks[1]), p.server.stats().bytes_received);

        // a tiny window acts as MIN_ACK_WINDOW
        p.send(control::window_ack_size(1)).unwrap();
        p.replies();
        p.raw(4, msg_type::AUDIO, 0, 0, &[0u8; 10]);
        p.raw(4, msg_type::AUDIO, 0, 0, &[0u8; 10]);
        assert!(p.replies().is_empty());
    }

    #[test]
    fn media_without_publish_or_on_another_stream_is_ignored() {
        let mut p = Peer::new();
        p.raw(6, msg_type::VIDEO, 1, 0, b"x");
        p.connect();
        p.raw(6, msg_type::VIDEO, 0, 0, b"x");
        p.up_to_publish("key");
        p.server.accept_publish(1);
        p.events();
        p.raw(6, msg_type::VIDEO, 2, 0, b"x");
        p.raw(4, msg_type::AUDIO, 0, 0, b"x");
        p.raw(4, msg_type::AUDIO, 1, 0, b"ok");
        let ev = p.events();
        assert_eq!(ev.len(), 1);
        let st = p.server.stats();
        assert_eq!(st.media_ignored_not_publishing, 2);
        assert_eq!(st.media_ignored_wrong_stream, 2);
        assert_eq!(st.media_forwarded, 1);
    }

    #[test]
    fn second_publish_is_refused_and_first_keeps_going() {
        let mut p = Peer::new();
        p.up_to_publish("one");
        p.server.accept_publish(1);
        p.replies();
        p.events();
        p.command(0, &[s("createStream"), n(6.0), Amf0Value::Null]);
        p.command(
            2,
            &[s("publish"), n(7.0), Amf0Value::Null, s("two"), s("live")],
        );
        let r = p.replies();
        let last = r.last().unwrap();
        assert_eq!(last.stream_id, 2);
        assert_eq!(
            status_code(last),
            ("error".into(), status::PUBLISH_BAD_NAME.into())
        );
        // same stream id again
        p.command(
            1,
            &[s("publish"), n(8.0), Amf0Value::Null, s("one"), s("live")],
        );
        assert_eq!(status_code(p.replies().last().unwrap()).0, "error");
        assert!(p.events().is_empty());
        p.raw(4, msg_type::AUDIO, 1, 0, b"still");
        assert_eq!(p.events().len(), 1);
        assert_eq!(p.server.stats().publishes_rejected, 2);
    }

    #[test]
    fn rejected_publish_leaves_the_session_usable() {
        let mut p = Peer::new();
        p.up_to_publish("wrong-key");
        assert!(matches!(
            p.events()[..],
            [ServerEvent::PublishRequested { .. }]
        ));
        p.server
            .reject_publish(1, status::PUBLISH_UNAUTHORIZED, "bad key");
        let r = p.replies();
        assert_eq!(r.len(), 1);
        assert_eq!(
            status_code(&r[0]),
            ("error".into(), status::PUBLISH_UNAUTHORIZED.into())
        );
        assert_eq!(values(&r[0])[3].get("description"), Some(&s("bad key")));
        p.raw(4, msg_type::AUDIO, 1, 0, b"x");
        assert!(p.events().is_empty());
        // accept after reject does nothing
        p.server.accept_publish(1);
        assert!(p.replies().is_empty());
        // retry
        p.command(
            1,
            &[
                s("publish"),
                n(9.0),
                Amf0Value::Null,
                s("right-key"),
                s("live"),
            ],
        );
        assert!(
            matches!(&p.events()[..], [ServerEvent::PublishRequested { stream_name, .. }] if stream_name == "right-key")
        );
        p.server.accept_publish(1);
        assert_eq!(
            status_code(p.replies().last().unwrap()).1,
            status::PUBLISH_START
        );
    }

    #[test]
    fn publish_before_connect_or_create_stream_is_not_accepted() {
        let mut p = Peer::new();
        p.command(
            1,
            &[s("publish"), n(1.0), Amf0Value::Null, s("k"), s("live")],
        );
        assert!(p.events().is_empty());
        assert!(p.replies().is_empty());
        assert_eq!(p.server.stats().commands_before_connect, 1);
        p.connect();
        p.replies();
        p.events();
        p.command(
            1,
            &[s("publish"), n(2.0), Amf0Value::Null, s("k"), s("live")],
        );
        assert!(p.events().is_empty());
        assert_eq!(status_code(&p.replies()[0]).1, status::PUBLISH_BAD_NAME);
    }

    fn publish_outcome(name_bytes: &[u8]) -> Option<String> {
        // Build publish by hand so that invalid UTF-8 can be sent.
        let mut p = Peer::new();
        p.connect();
        p.command(0, &[s("createStream"), n(4.0), Amf0Value::Null]);
        p.replies();
        p.events();
        let mut payload = BytesMut::new();
        Amf0Value::encode_all(&[s("publish"), n(5.0), Amf0Value::Null], &mut payload).unwrap();
        if name_bytes.len() > 0xffff {
            payload.extend_from_slice(&[0x0c]);
            payload.extend_from_slice(&(name_bytes.len() as u32).to_be_bytes());
        } else {
            payload.extend_from_slice(&[0x02]);
            payload.extend_from_slice(&(name_bytes.len() as u16).to_be_bytes());
        }
        payload.extend_from_slice(name_bytes);
        s("live").encode(&mut payload).unwrap();
        p.send(RtmpMessage {
            csid: 8,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::COMMAND_AMF0,
            stream_id: 1,
            payload: payload.freeze(),
        })
        .unwrap();
        match &p.events()[..] {
            [ServerEvent::PublishRequested { stream_name, .. }] => {
                assert!(p.replies().is_empty());
                Some(stream_name.clone())
            }
            [] => {
                let r = p.replies();
                assert_eq!(
                    status_code(&r[0]),
                    ("error".into(), status::PUBLISH_BAD_NAME.into())
                );
                None
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_names() {
        let ok = |b: &[u8]| publish_outcome(b).is_some();
        assert!(ok(&[b'a'; 255]));
        assert!(ok(&[b'a'; 256]));
        assert!(ok(&[b'a'; MAX_NAME_LEN]));
        assert!(!ok(&vec![b'a'; MAX_NAME_LEN + 1]));
        assert!(!ok(&vec![b'a'; 65_536]));
        assert!(!ok(b"key\0evil"));
        assert!(!ok(b"../etc/passwd"));
        assert!(!ok(b"a/../../b"));
        assert!(!ok(b"..\\x"));
        assert!(!ok(b"\xff\xfekey"));
        assert!(!ok(b"key\r\nX-Injected: 1"));
        assert!(!ok(b""));
        assert_eq!(
            publish_outcome(b"key?a=1&b=2").as_deref(),
            Some("key?a=1&b=2")
        );
        assert_eq!(
            publish_outcome(b"k?next=../x").as_deref(),
            Some("k?next=../x")
        );
        assert_eq!(publish_outcome("clé".as_bytes()).as_deref(), Some("clé"));
    }

    #[test]
    fn configured_name_limit_applies_to_app_and_tc_url() {
        let mut p = Peer::with_config(SessionConfig {
            max_name_len: 16,
            ..SessionConfig::default()
        });
        p.command(
            0,
            &[s("connect"), n(1.0), object([("app", s(&"a".repeat(17)))])],
        );
        let r = p.replies();
        assert_eq!(r.len(), 1);
        assert_eq!(command_name(&r[0]), "_error");
        assert_eq!(
            status_code(&r[0]),
            ("error".into(), status::CONNECT_REJECTED.into())
        );
        assert!(p.events().is_empty());
        let long_tc = format!("rtmp://h/{}", "x".repeat(20));
        p.command(
            0,
            &[
                s("connect"),
                n(1.0),
                object([("app", s("live")), ("tcUrl", s(&long_tc))]),
            ],
        );
        assert_eq!(command_name(&p.replies()[0]), "_error");
        assert!(p.events().is_empty());
        // usable afterwards
        p.command(0, &[s("connect"), n(2.0), object([("app", s("live"))])]);
        assert!(matches!(
            &p.events()[..],
            [ServerEvent::Connected { tc_url: None, .. }]
        ));
        // connect twice
        p.replies();
        p.connect();
        assert_eq!(command_name(&p.replies()[0]), "_error");
        assert!(p.events().is_empty());
    }

    #[test]
    fn unknown_messages_and_commands_are_ignored() {
        let mut p = Peer::new();
        p.connect();
        p.replies();
        p.events();
        p.raw(3, 30, 0, 0, b"??");
        p.raw(3, msg_type::AGGREGATE, 1, 0, b"agg");
        p.raw(3, msg_type::SHARED_OBJECT_AMF0, 0, 0, b"so");
        p.command(0, &[s("doSomethingOdd"), n(9.0), Amf0Value::Null]);
        p.raw(3, msg_type::COMMAND_AMF0, 0, 0, b"\x11\x02");
        p.raw(3, msg_type::COMMAND_AMF0, 0, 0, b"");
        p.raw(3, msg_type::DATA_AMF0, 1, 0, b"\x02\x00\x0aonTextData\x05");
        p.raw(3, msg_type::DATA_AMF0, 1, 0, b"\xff");
        p.raw(3, msg_type::ACKNOWLEDGEMENT, 0, 0, &[0, 0, 0, 1]);
        p.raw(3, msg_type::SET_PEER_BANDWIDTH, 0, 0, &[0, 0, 0, 1, 2]);
        p.command(0, &[s("getStreamLength"), n(10.0), Amf0Value::Null, s("x")]);
        p.command(0, &[s("_checkbw"), n(11.0), Amf0Value::Null]);
        p.command(
            0,
            &[s("deleteStream"), n(12.0), Amf0Value::Null, n(f64::NAN)],
        );
        p.command(0, &[s("deleteStream"), n(12.0), Amf0Value::Null, n(-1.0)]);
        p.command(7, &[s("closeStream"), n(0.0), Amf0Value::Null]);
        p.command(0, &[s("FCUnpublish"), n(13.0), Amf0Value::Null, s("x")]);
        assert!(p.events().is_empty());
        let st = p.server.stats();
        assert_eq!(st.unknown_messages, 3);
        assert_eq!(st.unknown_commands, 1);
        assert_eq!(st.malformed_commands, 4);
        assert_eq!(st.data_ignored, 2);
        let results = p
            .replies()
            .iter()
            .filter(|m| command_name(m) == "_result")
            .count();
        assert_eq!(results, 3);
    }

    #[test]
    fn play_is_refused() {
        let mut p = Peer::new();
        p.connect();
        p.command(0, &[s("createStream"), n(2.0), Amf0Value::Null]);
        p.replies();
        p.events();
        p.command(1, &[s("play"), n(3.0), Amf0Value::Null, s("key")]);
        assert_eq!(
            p.events(),
            vec![ServerEvent::PlayRefused {
                stream_name: "key".into()
            }]
        );
        assert_eq!(
            status_code(&p.replies()[0]),
            ("error".into(), status::PLAY_FAILED.into())
        );
        p.command(
            1,
            &[s("play"), n(3.0), Amf0Value::Null, s(&"k".repeat(5000))],
        );
        assert_eq!(
            p.events(),
            vec![ServerEvent::PlayRefused {
                stream_name: String::new()
            }]
        );
    }

    #[test]
    fn create_stream_is_capped() {
        let mut p = Peer::new();
        p.connect();
        p.replies();
        for i in 0..MAX_STREAMS + 2 {
            p.command(0, &[s("createStream"), n(i as f64 + 2.0), Amf0Value::Null]);
        }
        let r = p.replies();
        let names: Vec<String> = r.iter().map(command_name).collect();
        assert_eq!(
            names.iter().filter(|n| *n == "_result").count(),
            MAX_STREAMS
        );
        assert_eq!(names.iter().filter(|n| *n == "_error").count(), 2);
        // deleteStream frees a slot
        p.command(0, &[s("deleteStream"), n(50.0), Amf0Value::Null, n(3.0)]);
        p.command(0, &[s("createStream"), n(51.0), Amf0Value::Null]);
        let r = p.replies();
        assert_eq!(
            values(&r[0])[1..],
            [n(51.0), Amf0Value::Null, n(MAX_STREAMS as f64 + 1.0)]
        );
    }

    #[test]
    fn close_stream_and_delete_stream_unpublish() {
        let mut p = Peer::new();
        p.up_to_publish("k");
        p.server.accept_publish(1);
        p.events();
        p.command(1, &[s("closeStream"), n(0.0), Amf0Value::Null]);
        assert_eq!(p.events(), vec![ServerEvent::Unpublished { stream_id: 1 }]);
        // publish again on the same stream, then deleteStream while pending
        p.command(
            1,
            &[s("publish"), n(5.0), Amf0Value::Null, s("k"), s("live")],
        );
        p.events();
        p.command(0, &[s("deleteStream"), n(6.0), Amf0Value::Null, n(1.0)]);
        assert_eq!(p.events(), vec![ServerEvent::Unpublished { stream_id: 1 }]);
        // a late accept for the deleted stream does nothing
        p.replies();
        p.server.accept_publish(1);
        assert!(p.replies().is_empty());
        assert_eq!(p.server.publishing_stream(), None);
    }

    #[test]
    fn hostile_chunk_sizes() {
        for bad in [0u32, 0x8000_0000] {
            let mut p = Peer::new();
            let mut payload = bad.to_be_bytes().to_vec();
            payload.truncate(4);
            let r = p.send(RtmpMessage {
                csid: 2,
                timestamp: RtmpTimestamp(0),
                type_id: msg_type::SET_CHUNK_SIZE,
                stream_id: 0,
                payload: Bytes::from(payload),
            });
            assert_eq!(r, Err(RtmpError::Chunk(ChunkError::InvalidChunkSize(bad))));
        }
        // 0x7FFFFFFF acts as 16,777,215 and the session keeps working.
        let mut p = Peer::new();
        p.send(control::set_chunk_size(0x7FFF_FFFF)).unwrap();
        p.enc.set_chunk_size(0x7FFF_FFFF).unwrap();
        assert_eq!(p.enc.chunk_size(), MAX_CHUNK_SIZE);
        p.connect();
        assert_eq!(p.events().len(), 1);
        // chunk size 1: the whole conversation still works.
        let mut p = Peer::new();
        p.set_chunk_size(1);
        p.up_to_publish("k");
        p.server.accept_publish(1);
        p.raw(6, msg_type::VIDEO, 1, 40, &[0x17; 300]);
        assert!(
            matches!(p.events().last(), Some(ServerEvent::Video { payload, .. }) if payload.len() == 300)
        );
    }

    #[test]
    fn huge_declared_length_with_one_byte_chunks_is_refused() {
        let mut p = Peer::new();
        p.set_chunk_size(1);
        let r = p
            .server
            .feed(&[0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0, 0x17]);
        assert_eq!(
            r,
            Err(RtmpError::Chunk(ChunkError::MessageTooLarge(0xFF_FFFF)))
        );
    }

    #[test]
    fn thousands_of_chunk_streams_with_half_messages() {
        let mut p = Peer::new();
        let mut result = Ok(());
        for i in 0..3000u32 {
            let v = 320 + i - 64;
            // fmt 0, 3-byte basic header: the first 128 bytes of a 256-byte message
            let mut chunk = vec![
                0x01,
                (v & 0xff) as u8,
                (v >> 8) as u8,
                0,
                0,
                0,
                0,
                1,
                0,
                9,
                1,
                0,
                0,
                0,
            ];
            chunk.extend([0u8; 128]);
            result = p.server.feed(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(RtmpError::Chunk(ChunkError::TooManyChunkStreams))
        );
        assert_eq!(
            p.server.stats().bytes_received,
            142 * (MAX_CHUNK_STREAMS as u64 + 1)
        );
    }

    #[test]
    fn malformed_control_messages_are_errors() {
        for (type_id, payload) in [
            (msg_type::WINDOW_ACK_SIZE, &[0u8, 1][..]),
            (msg_type::SET_PEER_BANDWIDTH, &[0, 0, 0, 1][..]),
            (msg_type::USER_CONTROL, &[0, 6, 1][..]),
            (msg_type::ACKNOWLEDGEMENT, &[][..]),
        ] {
            let mut p = Peer::new();
            let r = p.send(RtmpMessage {
                csid: 2,
                timestamp: RtmpTimestamp(0),
                type_id,
                stream_id: 0,
                payload: Bytes::copy_from_slice(payload),
            });
            assert!(
                matches!(r, Err(RtmpError::MalformedControl { .. })),
                "{type_id}: {r:?}"
            );
        }
    }

    #[test]
    fn amf3_command_with_format_byte_is_understood() {
        let mut p = Peer::new();
        let mut payload = BytesMut::from(&[0u8][..]);
        Amf0Value::encode_all(
            &[s("connect"), n(1.0), object([("app", s("live"))])],
            &mut payload,
        )
        .unwrap();
        p.raw(3, msg_type::COMMAND_AMF3, 0, 0, &payload);
        assert!(matches!(&p.events()[..], [ServerEvent::Connected { .. }]));
    }

    proptest! {
        #[test]
        fn garbage_after_a_good_start_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            split in any::<prop::sample::Index>(),
        ) {
            let mut p = Peer::new();
            p.up_to_publish("k");
            p.server.accept_publish(1);
            let at = split.index(data.len() + 1);
            if p.server.feed(&data[..at]).is_ok() {
                let _ = p.server.feed(&data[at..]);
            }
            while p.server.poll_event().is_some() {}
            while p.server.take_output().is_some() {}
        }

        #[test]
        fn random_commands_never_panic(
            cmds in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("connect"), Just("createStream"), Just("publish"), Just("deleteStream"),
                        Just("closeStream"), Just("FCUnpublish"), Just("FCPublish"), Just("play"),
                        Just("releaseStream"), Just("x")
                    ],
                    0u32..4,
                    prop_oneof![Just(Amf0Value::Null), (-2.0f64..5.0).prop_map(Amf0Value::Number),
                                "[a-z./?]{0,8}".prop_map(Amf0Value::String)],
                    any::<bool>(),
                    any::<bool>(),
                ),
                0..40,
            )
        ) {
            let mut p = Peer::new();
            for (name, stream_id, arg, accept, media_now) in cmds {
                let obj = if name == "connect" { object([("app", s("live"))]) } else { Amf0Value::Null };
                p.command(stream_id, &[s(name), n(1.0), obj, arg.clone(), arg]);
                while let Some(ev) = p.server.poll_event() {
                    if let ServerEvent::PublishRequested { stream_id, .. } = ev {
                        if accept {
                            p.server.accept_publish(stream_id);
                        } else {
                            p.server.reject_publish(stream_id, status::PUBLISH_BAD_NAME, "no");
                        }
                    }
                }
                if media_now {
                    p.raw(6, msg_type::VIDEO, stream_id, 0, b"v");
                }
                p.replies();
            }
        }
    }
}
