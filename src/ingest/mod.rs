//! Ingest: RTMP publishers in.
//!
//! - [`rtmp`]: the sans-IO RTMP protocol (handshake, chunk stream, AMF0, the
//!   server session state machine). Fed bytes, returns bytes to send and events.
//! - [`server`]: the only file here that touches sockets: accepts connections,
//!   drives sessions, hands media to the channel.

pub mod rtmp;
#[cfg(feature = "ffmpeg")]
pub mod server;
