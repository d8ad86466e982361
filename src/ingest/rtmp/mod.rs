//! The RTMP protocol, sans-IO (Adobe RTMP 1.0 specification; AMF0 specification).
//!
//! - [`handshake`]: C0/C1/C2 and S0/S1/S2, server and client (§5.2).
//! - [`chunk`]: the chunk stream codec, Set Chunk Size and Abort (§5.3, §5.4.1-2).
//! - [`control`]: protocol control (§5.4) and user control (§6.2) messages.
//! - [`amf0`]: the AMF0 value codec that commands and metadata use.
//! - [`session`]: the server state machine after the handshake: connect,
//!   createStream, publish, media (§7.2).
//! - [`client`]: the client state machine after the handshake, for restream
//!   (publish) and pull ingest (play) (§7.2).
//! - [`url`]: `rtmp://` and `rtmps://` URLs, split into host, app and stream
//!   name as FFmpeg and librtmp do; printed with the stream key redacted.
//!
//! Nothing here reads a socket or a clock: the caller feeds bytes and takes
//! bytes to write and events. The handshake deadline
//! ([`handshake::HANDSHAKE_TIMEOUT`]) is the caller's to enforce.
//!
//! Why our own and not `rml_rtmp`: we need every hostile-input limit named and
//! tested (chunk streams, buffered bytes, message size, chunk size, name lengths,
//! AMF depth), no panic reachable from network input, and one chunk codec shared
//! by the ingest server and, later, by the restream and pull clients.

network_input! {
    pub mod amf0;
    pub mod chunk;
    pub mod client;
    pub mod control;
    pub mod handshake;
    pub mod session;
    pub mod url;
}

pub use amf0::{Amf0Error, Amf0Value};
pub use chunk::{ChunkDecoder, ChunkEncoder, ChunkError, RtmpMessage};
pub use client::{ClientConfig, ClientEvent, ClientMode, ClientSession, ClientStats};
pub use handshake::{ClientHandshake, HandshakeError, HandshakeProgress, ServerHandshake};
pub use session::{ServerEvent, ServerSession, SessionConfig, SessionStats};
pub use url::{RtmpUrl, UrlError};

use thiserror::Error;

/// Errors of the RTMP layer. Every variant is the peer's fault (a protocol
/// violation); on any of them the caller closes the connection. Failures to
/// encode our own messages cannot come from the peer and are logged, not returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtmpError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed {name} message ({len} bytes)")]
    MalformedControl { name: &'static str, len: usize },
    /// A reply the client cannot go on with, such as a createStream `_result`
    /// without a usable stream id.
    #[error("unusable reply from the server: {0}")]
    BadReply(&'static str),
}
