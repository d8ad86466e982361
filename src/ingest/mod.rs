//! Ingest: RTMP and RTMPS publishers in (SPEC.md, "Data flow").
//!
//! - [`rtmp`]: the sans-IO RTMP protocol (handshake, chunk stream, AMF0, the
//!   server and client session state machines, URLs). Fed bytes, returns
//!   bytes to send and events.
//! - [`publish`]: the publish session, socket-free: admission, ladder
//!   placement, demux into the packager and the pipeline, the end. Driven by
//!   the server connection for a push, and by a pull for a pulled channel;
//!   taps on it see the source's messages (restream).
//! - [`server`]: the only server file here that touches sockets: accepts RTMP
//!   and RTMPS connections, drives their sessions, hands media to a publish.
//! - [`client`]: the only client file that touches sockets: RTMP/RTMPS
//!   connections out, publishing (restream) or playing (pull ingest).
//! - [`pull`]: channels with `pull = URL`: a client plays the remote stream
//!   into a publish session, reconnecting with backoff.
//! - [`tls`]: the RTMPS certificate and key, loaded at start.

pub mod client;
#[cfg(feature = "ffmpeg")]
pub mod publish;
#[cfg(feature = "ffmpeg")]
pub mod pull;
pub mod rtmp;
#[cfg(feature = "ffmpeg")]
pub mod server;
pub mod tls;
