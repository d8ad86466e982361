//! The RTMP/RTMPS client driver, for restream (publish) and pull ingest
//! (play): the only client file that touches sockets. The protocol is the
//! sans-IO [`ClientSession`] (Adobe RTMP 1.0 specification §7.2, see
//! `rtmp::client`); URLs are [`RtmpUrl`]s.
//!
//! [`connect`] resolves the host, opens TCP (no Nagle) or TLS (`rtmps://`,
//! rustls with the ring provider, the system's roots plus the Mozilla roots of
//! webpki-roots, SNI = the URL's host; `SSL_CERT_FILE` or `SSL_CERT_DIR`
//! replace the system's roots, which is how a private CA is trusted), runs the handshake (§5.2) and then
//! connect + publish or connect + play, each step under a deadline
//! ([`Timeouts`]). Then:
//!
//! - publish side: [`RtmpClientConnection::send_video`], `send_audio`,
//!   `send_metadata`, and [`RtmpClientConnection::close`] (unpublish). Every
//!   write has a deadline: a server that stops reading makes the send fail
//!   with [`ClientError::Timeout`] instead of blocking forever. Before each
//!   send, whatever the server sent is read without waiting, so pings are
//!   answered, windows acknowledged, and a server that ended the publication
//!   (or closed the connection) is noticed at the next send.
//! - play side: [`RtmpClientConnection::next_event`] returns media, metadata
//!   and status events, `None` once the server closed the connection; a read
//!   deadline catches a server that goes silent.
//!
//! Errors ([`ClientError`]) are classified by what failed ([`ErrorKind`]):
//! name resolution, TCP connect, TLS, handshake, a refusal by the server (with
//! its code and description), a protocol violation, I/O, a peer that closed,
//! a timeout. A server that closes the connection instead of answering
//! connect, createStream, publish or play refuses too (with no code): that is
//! how nginx-rtmp answers an unknown application and how YouTube and Facebook
//! answer an unknown key. None of them, and no log line here, contains the stream key:
//! peers are named by host and port, URLs by their redacted form.
//!
//! Memory per connection is bounded: one read buffer of [`READ_BUFFER`]
//! bytes, fed to the session whose events are drained before the next read;
//! the session's output is written out before any call returns.

use crate::ingest::rtmp::amf0::Amf0Value;
use crate::ingest::rtmp::client::{
    ClientConfig, ClientEvent, ClientMode, ClientSession, ClientStats, Refusal, SendError, Stage,
};
use crate::ingest::rtmp::handshake::{ClientHandshake, HandshakeError, HandshakeProgress};
use crate::ingest::rtmp::url::{RtmpUrl, UrlError};
use crate::ingest::rtmp::RtmpError;
use crate::media::RtmpTimestamp;
use bytes::Bytes;
use rustls_pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

/// Socket read size; the session's events for one read are drained before the
/// next, so this bounds the events queued at once.
pub const READ_BUFFER: usize = 64 * 1024;

/// Reads done without waiting before each send on the publish side. A server
/// sends a publisher little (acks, pings, a status); this bounds the time a
/// send spends on them if one floods us.
const MAX_READS_PER_SEND: usize = 16;

/// Deadlines of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Name resolution, then the TCP connect (the addresses in turn), then
    /// the TLS handshake: each has this much.
    pub connect: Duration,
    /// The RTMP handshake (C0/C1 to S2).
    pub handshake: Duration,
    /// From the handshake to Publish.Start or Play.Start.
    pub setup: Duration,
    /// Each write (a media message, a command). A server that stops reading
    /// fails the send after this long.
    pub write: Duration,
    /// Play side: longest silence from the server before `next_event` fails.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            handshake: crate::ingest::rtmp::handshake::HANDSHAKE_TIMEOUT,
            setup: Duration::from_secs(10),
            write: Duration::from_secs(10),
            read: Duration::from_secs(30),
        }
    }
}

/// TLS settings for `rtmps://`.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Root certificates trusted on top of the system's and webpki-roots'
    /// (a private CA; tests use one made with rcgen).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Everything [`connect`] needs besides the URL and the mode.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Deadlines of every step.
    pub timeouts: Timeouts,
    /// Extra trust for `rtmps://`.
    pub tls: TlsOptions,
}

/// What kind of failure an error is, for metrics and retry policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The URL did not parse.
    Url,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection to any of the host's addresses.
    Connect,
    /// The TLS handshake failed (untrusted or mismatched certificate, ...).
    Tls,
    /// The RTMP handshake failed (not an RTMP server, another version).
    Handshake,
    /// The server said no (connect, createStream, publish, play), or ended the
    /// publication.
    Refused,
    /// The server broke the protocol (framing, control messages, replies).
    Protocol,
    /// The server closed the connection.
    Closed,
    /// A read or write failed (reset, broken pipe, ...).
    Io,
    /// A step missed its deadline.
    Timeout,
    /// The caller's mistake (media on a play connection, say).
    Usage,
}

/// Why a client connection failed. `Display` never shows the stream key:
/// `peer` is `host:port (address)`.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL did not parse.
    #[error("invalid RTMP URL: {0}")]
    Url(#[from] UrlError),
    /// The host name did not resolve.
    #[error("could not resolve {host}: {source}")]
    Dns {
        /// The URL's host.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// No TCP connection to any of the host's addresses (the last error).
    #[error("could not connect to {peer}: {source}")]
    Connect {
        /// `host:port`.
        peer: String,
        /// The last address's error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS with {peer} failed: {source}")]
    Tls {
        /// The server.
        peer: String,
        /// rustls' error, wrapped by tokio-rustls.
        #[source]
        source: io::Error,
    },
    /// The RTMP handshake failed.
    #[error("RTMP handshake with {peer} failed: {source}")]
    Handshake {
        /// The server.
        peer: String,
        /// What was wrong with S0/S1/S2.
        #[source]
        source: HandshakeError,
    },
    /// The server refused a step or ended the publication.
    #[error("{peer}: {refusal}")]
    Refused {
        /// The server.
        peer: String,
        /// The step, the server's code and description.
        refusal: Refusal,
    },
    /// The server broke the protocol.
    #[error("{peer} broke the RTMP protocol during {stage}: {source}")]
    Protocol {
        /// The server.
        peer: String,
        /// The step the session was at.
        stage: Stage,
        /// What was wrong.
        #[source]
        source: RtmpError,
    },
    /// The server closed the connection (during the handshake or streaming;
    /// during the setup steps that is a [`ClientError::Refused`]).
    #[error("{peer} closed the connection during {stage}")]
    Closed {
        /// The server.
        peer: String,
        /// The step the session was at.
        stage: Stage,
    },
    /// A read or write failed.
    #[error("I/O error with {peer} during {stage}: {source}")]
    Io {
        /// The server.
        peer: String,
        /// The step the session was at.
        stage: Stage,
        /// The socket's error.
        #[source]
        source: io::Error,
    },
    /// A step missed its deadline.
    #[error("{stage} with {peer} timed out after {after:?}")]
    Timeout {
        /// The server (`host:port` before the TCP connection exists).
        peer: String,
        /// The step that timed out.
        stage: Stage,
        /// The deadline.
        after: Duration,
    },
    /// The caller's mistake (media before or without a publication).
    #[error("{0}")]
    Usage(#[from] SendError),
}

impl ClientError {
    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Url(_) => ErrorKind::Url,
            ClientError::Dns { .. } => ErrorKind::Dns,
            ClientError::Connect { .. } => ErrorKind::Connect,
            ClientError::Tls { .. } => ErrorKind::Tls,
            ClientError::Handshake { .. } => ErrorKind::Handshake,
            ClientError::Refused { .. } => ErrorKind::Refused,
            ClientError::Protocol { .. } => ErrorKind::Protocol,
            ClientError::Closed { .. } => ErrorKind::Closed,
            ClientError::Io { .. } => ErrorKind::Io,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Usage(_) => ErrorKind::Usage,
        }
    }

    /// The server's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            ClientError::Refused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

/// A byte stream: TCP or TLS over TCP.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// An established RTMP client connection (publishing or playing).
pub struct RtmpClientConnection {
    io: Box<dyn Transport>,
    session: ClientSession,
    url: RtmpUrl,
    /// `host:port (address)`, for errors and logs.
    peer: String,
    peer_addr: SocketAddr,
    timeouts: Timeouts,
    buf: Vec<u8>,
    /// The server closed its side.
    eof: bool,
    /// A write failed or timed out: the stream is in an unknown state.
    broken: bool,
}

impl std::fmt::Debug for RtmpClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpClientConnection")
            .field("url", &self.url)
            .field("peer", &self.peer)
            .field("stage", &self.session.stage())
            .finish()
    }
}

/// Connects to `url` and publishes or plays its stream, with
/// [`ClientConfig::new`]'s defaults. Returns once the server said
/// NetStream.Publish.Start or NetStream.Play.Start.
pub async fn connect(
    url: &RtmpUrl,
    mode: ClientMode,
    options: &ConnectOptions,
) -> Result<RtmpClientConnection, ClientError> {
    connect_with(url, ClientConfig::new(url, mode), options).await
}

/// [`connect`] with a session configuration of the caller's (Enhanced RTMP
/// fourCcList, chunk size, play start, ...).
pub async fn connect_with(
    url: &RtmpUrl,
    config: ClientConfig,
    options: &ConnectOptions,
) -> Result<RtmpClientConnection, ClientError> {
    let t = options.timeouts;
    let host_port = if url.host().contains(':') {
        format!("[{}]:{}", url.host(), url.port())
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let addrs: Vec<SocketAddr> = within(t.connect, &host_port, Stage::Resolve, async {
        let found = tokio::net::lookup_host((url.host(), url.port()))
            .await
            .map_err(|source| ClientError::Dns {
                host: url.host().to_owned(),
                source,
            })?;
        Ok(found.collect())
    })
    .await?;
    let (tcp, peer_addr) = within(t.connect, &host_port, Stage::TcpConnect, async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok((s, addr)),
                Err(e) => last = e,
            }
        }
        Err(ClientError::Connect {
            peer: host_port.clone(),
            source: last,
        })
    })
    .await?;
    let peer = format!("{host_port} ({peer_addr})");
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%peer, error = %e, "set_nodelay failed");
    }
    let io: Box<dyn Transport> = if url.is_tls() {
        let tls = tls_connector(&options.tls, &peer).await?;
        let name = ServerName::try_from(url.host().to_owned()).map_err(|e| ClientError::Tls {
            peer: peer.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let stream = within(t.connect, &peer, Stage::Tls, async {
            tls.connect(name, tcp)
                .await
                .map_err(|source| ClientError::Tls {
                    peer: peer.clone(),
                    source,
                })
        })
        .await?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut conn = RtmpClientConnection {
        io,
        session: ClientSession::new(config),
        url: url.clone(),
        peer,
        peer_addr,
        timeouts: t,
        buf: vec![0; READ_BUFFER],
        eof: false,
        broken: false,
    };
    let leftover = within(
        t.handshake,
        &conn.peer.clone(),
        Stage::Handshake,
        conn.handshake(),
    )
    .await?;
    // The stage of a timeout is the step the session was waiting on.
    match tokio::time::timeout(t.setup, conn.setup(leftover)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ClientError::Timeout {
                peer: conn.peer.clone(),
                stage: conn.session.stage(),
                after: t.setup,
            })
        }
    }
    debug!(url = %conn.url, peer = %conn.peer, mode = ?conn.session.mode(), "RTMP client connected");
    Ok(conn)
}

/// Runs `fut` under a deadline; on expiry, a Timeout at `stage`.
async fn within<T>(
    after: Duration,
    peer: &str,
    stage: Stage,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            peer: peer.to_owned(),
            stage,
            after,
        }),
    }
}

/// The system's roots (rustls-native-certs) and webpki-roots, loaded once.
static BASE_ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();

fn load_base_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(
        added,
        ignored,
        errors = native.errors.len(),
        "system root certificates loaded"
    );
    roots
}

/// A TLS connector trusting the system's roots, webpki-roots and
/// `options`' extra roots (the roots are loaded once). Also used by the
/// publish webhook's `https://` client (`control::webhook`).
pub(crate) async fn tls_connector(
    options: &TlsOptions,
    peer: &str,
) -> Result<tokio_rustls::TlsConnector, ClientError> {
    let base = match BASE_ROOTS.get() {
        Some(r) => r.clone(),
        None => {
            // Reads files: off the async workers.
            let loaded = tokio::task::spawn_blocking(load_base_roots)
                .await
                .unwrap_or_else(|_| rustls::RootCertStore::empty());
            BASE_ROOTS.get_or_init(|| Arc::new(loaded)).clone()
        }
    };
    let mut roots = (*base).clone();
    for cert in &options.extra_roots {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(error = %e, "an extra TLS root certificate was not usable");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            peer: peer.to_owned(),
            source: io::Error::other(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl RtmpClientConnection {
    /// The URL (print it: its `Display` is redacted).
    pub fn url(&self) -> &RtmpUrl {
        &self.url
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The session's counters (bytes in and out, messages, acks, ...).
    pub fn stats(&self) -> ClientStats {
        self.session.stats()
    }

    /// Publish side: an FLV video tag body at `timestamp` (32-bit ms).
    pub async fn send_video(
        &mut self,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        self.before_send().await?;
        self.session.send_video(timestamp, payload)?;
        self.write_output(Stage::Streaming).await
    }

    /// Publish side: an FLV audio tag body at `timestamp` (32-bit ms).
    pub async fn send_audio(
        &mut self,
        timestamp: RtmpTimestamp,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        self.before_send().await?;
        self.session.send_audio(timestamp, payload)?;
        self.write_output(Stage::Streaming).await
    }

    /// Publish side: `@setDataFrame onMetaData` with these properties (an
    /// ECMA array or object).
    pub async fn send_metadata(&mut self, metadata: Amf0Value) -> Result<(), ClientError> {
        self.before_send().await?;
        self.session.send_metadata(metadata)?;
        self.write_output(Stage::Streaming).await
    }

    /// Play side: the next event after Play.Start: `Video`, `Audio`,
    /// `Metadata`, and the notices `Unpublished` (the source's publisher
    /// left; the server may resume), `Stopped` (Play.Stop, Play.Complete, an
    /// error status), `StreamBegin`/`StreamEof`/..., `Status`. `Ok(None)` once
    /// the server closed the connection. Fails when the server is silent for
    /// [`Timeouts::read`].
    pub async fn next_event(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        self.check_usable()?;
        loop {
            if let Some(ev) = self.session.poll_event() {
                if let ClientEvent::Refused(refusal) = ev {
                    return Err(ClientError::Refused {
                        peer: self.peer.clone(),
                        refusal,
                    });
                }
                return Ok(Some(ev));
            }
            if self.eof {
                return Ok(None);
            }
            let after = self.timeouts.read;
            let peer = self.peer.clone();
            let n = within(
                after,
                &peer,
                Stage::Streaming,
                self.read_some(Stage::Streaming),
            )
            .await?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.feed(n, Stage::Streaming)?;
            self.write_output(Stage::Streaming).await?;
        }
    }

    /// Ends the connection politely: unpublish (FCUnpublish + deleteStream)
    /// on the publish side, deleteStream on the play side, then the TLS
    /// close_notify and the TCP shutdown, under the write deadline.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.broken {
            return Ok(());
        }
        self.session.close();
        self.write_output(Stage::Closed).await?;
        let peer = self.peer.clone();
        let after = self.timeouts.write;
        let stage = Stage::Closed;
        within(after, &peer, stage, async {
            self.io.shutdown().await.map_err(|source| ClientError::Io {
                peer: peer.clone(),
                stage,
                source,
            })
        })
        .await
    }

    /// C0+C1, S0+S1+S2, C2; returns the bytes that followed S2.
    async fn handshake(&mut self) -> Result<Bytes, ClientError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = now.as_nanos() as u64 ^ u64::from(self.peer_addr.port());
        let mut hs = ClientHandshake::new(0, seed);
        if let Some(c0c1) = hs.take_output() {
            self.write_raw(&c0c1, Stage::Handshake).await?;
        }
        loop {
            let n = self.read_some(Stage::Handshake).await?;
            if n == 0 {
                return Err(self.closed(Stage::Handshake));
            }
            let progress = hs
                .feed(self.buf.get(..n).unwrap_or(&[]))
                .map_err(|source| ClientError::Handshake {
                    peer: self.peer.clone(),
                    source,
                })?;
            if let HandshakeProgress::Done { remaining } = progress {
                // C2 (unless it went out when S1 arrived).
                if let Some(c2) = hs.take_output() {
                    self.write_raw(&c2, Stage::Handshake).await?;
                }
                return Ok(remaining);
            }
            if let Some(out) = hs.take_output() {
                self.write_raw(&out, Stage::Handshake).await?;
            }
        }
    }

    /// connect, createStream, publish/play: until Publishing or Playing.
    async fn setup(&mut self, leftover: Bytes) -> Result<(), ClientError> {
        self.write_output(Stage::Connect).await?;
        if !leftover.is_empty() {
            self.session
                .feed(&leftover)
                .map_err(|source| self.protocol(source))?;
        }
        loop {
            while let Some(ev) = self.session.poll_event() {
                match ev {
                    ClientEvent::Publishing { .. } | ClientEvent::Playing { .. } => {
                        // Anything after it stays queued for next_event.
                        return self.write_output(Stage::Streaming).await;
                    }
                    ClientEvent::Refused(refusal) => {
                        return Err(ClientError::Refused {
                            peer: self.peer.clone(),
                            refusal,
                        })
                    }
                    other => debug!(peer = %self.peer, event = ?other, "RTMP client setup"),
                }
            }
            self.write_output(self.session.stage()).await?;
            let stage = self.session.stage();
            let n = self.read_some(stage).await?;
            if n == 0 {
                // nginx-rtmp closes on an unknown app, YouTube and Facebook on
                // an unknown key: a refusal without words.
                return Err(ClientError::Refused {
                    peer: self.peer.clone(),
                    refusal: Refusal {
                        stage,
                        code: String::new(),
                        description: "the server closed the connection without an answer".into(),
                    },
                });
            }
            self.feed(n, stage)?;
        }
    }

    /// Reads what has arrived without waiting and feeds it; notices a server
    /// that closed or ended the publication.
    async fn before_send(&mut self) -> Result<(), ClientError> {
        self.check_usable()?;
        for _ in 0..MAX_READS_PER_SEND {
            let Some(n) = self.read_now().await? else {
                break;
            };
            if n == 0 {
                self.eof = true;
                return Err(self.closed(Stage::Streaming));
            }
            self.feed(n, Stage::Streaming)?;
        }
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Stopped(st) => {
                    return Err(ClientError::Refused {
                        peer: self.peer.clone(),
                        refusal: Refusal {
                            stage: Stage::Streaming,
                            code: st.code,
                            description: st.description,
                        },
                    })
                }
                ClientEvent::Refused(refusal) => {
                    return Err(ClientError::Refused {
                        peer: self.peer.clone(),
                        refusal,
                    })
                }
                other => {
                    debug!(peer = %self.peer, event = ?other, "RTMP server notice while publishing")
                }
            }
        }
        Ok(())
    }

    /// After a failed or timed-out write the chunk stream is cut mid-message:
    /// nothing more may be sent or trusted.
    fn check_usable(&self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Io {
                peer: self.peer.clone(),
                stage: Stage::Streaming,
                source: io::Error::new(io::ErrorKind::NotConnected, "connection failed earlier"),
            });
        }
        Ok(())
    }

    fn feed(&mut self, n: usize, stage: Stage) -> Result<(), ClientError> {
        let data = self.buf.get(..n).unwrap_or(&[]);
        self.session
            .feed(data)
            .map_err(|source| ClientError::Protocol {
                peer: self.peer.clone(),
                stage,
                source,
            })
    }

    fn protocol(&self, source: RtmpError) -> ClientError {
        ClientError::Protocol {
            peer: self.peer.clone(),
            stage: self.session.stage(),
            source,
        }
    }

    fn closed(&self, stage: Stage) -> ClientError {
        ClientError::Closed {
            peer: self.peer.clone(),
            stage,
        }
    }

    /// One read into `buf` (waits for data); 0 = the server closed.
    async fn read_some(&mut self, stage: Stage) -> Result<usize, ClientError> {
        self.io
            .read(&mut self.buf)
            .await
            .map_err(|source| ClientError::Io {
                peer: self.peer.clone(),
                stage,
                source,
            })
    }

    /// One read into `buf` if bytes (or EOF) are there now; `None` if not.
    async fn read_now(&mut self) -> Result<Option<usize>, ClientError> {
        let io = &mut self.io;
        let buf = &mut self.buf;
        let polled = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(rb.filled().len()))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Ready(Ok(None)),
            }
        })
        .await;
        polled.map_err(|source| ClientError::Io {
            peer: self.peer.clone(),
            stage: Stage::Streaming,
            source,
        })
    }

    /// Writes everything the session has queued, each piece under the write
    /// deadline.
    async fn write_output(&mut self, stage: Stage) -> Result<(), ClientError> {
        while let Some(out) = self.session.take_output() {
            self.write_raw(&out, stage).await?;
        }
        Ok(())
    }

    async fn write_raw(&mut self, data: &[u8], stage: Stage) -> Result<(), ClientError> {
        let after = self.timeouts.write;
        let peer = self.peer.clone();
        let io = &mut self.io;
        let write = async {
            let written = async {
                io.write_all(data).await?;
                io.flush().await
            };
            written.await.map_err(|source| ClientError::Io {
                peer: peer.clone(),
                stage,
                source,
            })
        };
        let result = within(after, &peer, stage, write).await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::amf0::object;
    use crate::ingest::rtmp::chunk::{msg_type, ChunkDecoder, ChunkEncoder, RtmpMessage};
    use crate::ingest::rtmp::handshake::ServerHandshake;
    use bytes::BytesMut;
    use tokio::net::TcpListener;

    const KEY: &str = "SECRET-key-42";

    /// What the scripted server does.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Script {
        /// Accepts and never answers.
        Mute,
        /// Answers C0+C1 with an HTTP error.
        Http,
        /// Handshakes, then reads and never answers.
        SilentAfterHandshake,
        /// Accepts publish/play, then stops reading (holding the socket).
        StartThenStopReading,
        /// Accepts publish/play, then closes the connection.
        StartThenClose,
        /// Accepts publish/play, then sends onStatus level error.
        StartThenKick,
        /// Accepts publish/play, then reads and sends nothing.
        StartThenSilent,
        /// Refuses publish/play with an error status quoting the name.
        Refuse,
    }

    fn s(v: &str) -> Amf0Value {
        Amf0Value::String(v.into())
    }

    fn amf(csid: u32, stream_id: u32, values: &[Amf0Value]) -> RtmpMessage {
        let mut p = BytesMut::new();
        Amf0Value::encode_all(values, &mut p).unwrap();
        RtmpMessage {
            csid,
            timestamp: RtmpTimestamp(0),
            type_id: msg_type::COMMAND_AMF0,
            stream_id,
            payload: p.freeze(),
        }
    }

    fn on_status(level: &str, code: &str, description: &str) -> RtmpMessage {
        amf(
            5,
            1,
            &[
                s("onStatus"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                object([
                    ("level", s(level)),
                    ("code", s(code)),
                    ("description", s(description)),
                ]),
            ],
        )
    }

    async fn fake_server(script: Script) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            serve(&mut sock, script).await;
            if script != Script::StartThenClose {
                // Hold the connection until the test's runtime ends.
                std::future::pending::<()>().await;
            }
        });
        addr
    }

    async fn serve(sock: &mut TcpStream, script: Script) {
        let mut buf = vec![0u8; 64 * 1024];
        match script {
            Script::Mute => return,
            Script::Http => {
                let _ = sock.read(&mut buf).await;
                sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    .await
                    .unwrap();
                return;
            }
            _ => {}
        }
        let mut hs = ServerHandshake::new(0, 1);
        let mut rest = loop {
            let n = sock.read(&mut buf).await.unwrap();
            let progress = hs.feed(&buf[..n]).unwrap();
            if let Some(out) = hs.take_output() {
                sock.write_all(&out).await.unwrap();
            }
            if let HandshakeProgress::Done { remaining } = progress {
                break remaining.to_vec();
            }
        };
        if script == Script::SilentAfterHandshake {
            while sock.read(&mut buf).await.unwrap_or(0) > 0 {}
            return;
        }
        let mut dec = ChunkDecoder::new();
        let mut enc = ChunkEncoder::new();
        let mut started = false;
        while !started {
            dec.feed(&rest).unwrap();
            while let Some(m) = dec.next_message() {
                if m.type_id != msg_type::COMMAND_AMF0 {
                    continue;
                }
                let v = Amf0Value::decode_all(&m.payload).unwrap();
                let txn = v[1].clone();
                let reply = match v[0].as_str().unwrap() {
                    "connect" => Some(amf(
                        3,
                        0,
                        &[s("_result"), txn, Amf0Value::Null, Amf0Value::Null],
                    )),
                    "createStream" => Some(amf(
                        3,
                        0,
                        &[s("_result"), txn, Amf0Value::Null, Amf0Value::Number(1.0)],
                    )),
                    "publish" | "play" if script == Script::Refuse => {
                        started = true;
                        Some(on_status(
                            "error",
                            "NetStream.Publish.BadName",
                            &format!("{KEY} is taken"),
                        ))
                    }
                    "publish" => {
                        started = true;
                        Some(on_status("status", "NetStream.Publish.Start", ""))
                    }
                    "play" => {
                        started = true;
                        Some(on_status("status", "NetStream.Play.Start", ""))
                    }
                    _ => None,
                };
                if let Some(r) = reply {
                    let mut out = BytesMut::new();
                    enc.encode(&r, &mut out).unwrap();
                    sock.write_all(&out).await.unwrap();
                }
            }
            if !started {
                let n = sock.read(&mut buf).await.unwrap();
                rest = buf[..n].to_vec();
            }
        }
        match script {
            Script::StartThenKick => {
                let mut out = BytesMut::new();
                let kick = on_status("error", "NetStream.Publish.Unauthorized", "kicked");
                enc.encode(&kick, &mut out).unwrap();
                sock.write_all(&out).await.unwrap();
                while sock.read(&mut buf).await.unwrap_or(0) > 0 {}
            }
            Script::StartThenSilent => while sock.read(&mut buf).await.unwrap_or(0) > 0 {},
            _ => {}
        }
    }

    fn url(addr: SocketAddr) -> RtmpUrl {
        RtmpUrl::parse(&format!("rtmp://{addr}/live/{KEY}")).unwrap()
    }

    /// Generous deadlines (a loaded machine must not trip them), except the
    /// ones `short` sets to provoke.
    fn opts(short: impl FnOnce(&mut Timeouts)) -> ConnectOptions {
        let mut timeouts = Timeouts::default();
        short(&mut timeouts);
        ConnectOptions {
            timeouts,
            tls: TlsOptions::default(),
        }
    }

    fn quick() -> ConnectOptions {
        opts(|_| {})
    }

    const SHORT: Duration = Duration::from_millis(300);

    fn assert_no_key(e: &ClientError) {
        let text = format!("{e} / {e:?}");
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[tokio::test]
    async fn a_server_that_stops_reading_fails_the_send_at_the_deadline() {
        let addr = fake_server(Script::StartThenStopReading).await;
        let mut conn = connect(&url(addr), ClientMode::Publish, &opts(|t| t.write = SHORT))
            .await
            .unwrap();
        let frame = Bytes::from(vec![0x27u8; 1 << 20]);
        let mut result = Ok(());
        // Socket buffers hold some megabytes; 1 GiB is far past them.
        for i in 0..1024u32 {
            result = conn.send_video(RtmpTimestamp(i * 40), frame.clone()).await;
            if result.is_err() {
                break;
            }
        }
        let e = result.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Timeout {
                    stage: Stage::Streaming,
                    ..
                }
            ),
            "{e}"
        );
        assert_no_key(&e);
        // The connection is unusable from then on, and says so at once.
        let again = conn
            .send_audio(RtmpTimestamp(0), Bytes::from_static(b"\xaf\x01"))
            .await;
        assert_eq!(again.unwrap_err().kind(), ErrorKind::Io);
    }

    /// Audio sends (yielding between them) until one fails, at most 10,000.
    async fn send_until_error(conn: &mut RtmpClientConnection) -> Result<(), ClientError> {
        for i in 0..10_000u32 {
            conn.send_audio(RtmpTimestamp(i), Bytes::from_static(b"\xaf\x01\x00"))
                .await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_kick_or_a_close_is_noticed_at_the_next_send() {
        let addr = fake_server(Script::StartThenKick).await;
        let mut conn = connect(&url(addr), ClientMode::Publish, &quick())
            .await
            .unwrap();
        // The kick arrives at some point; sends fail from then on.
        let result = send_until_error(&mut conn).await;
        let e = result.unwrap_err();
        let r = e.refusal().expect("a refusal");
        assert_eq!(
            (r.stage, r.code.as_str(), r.description.as_str()),
            (Stage::Streaming, "NetStream.Publish.Unauthorized", "kicked")
        );

        let addr = fake_server(Script::StartThenClose).await;
        let mut conn = connect(&url(addr), ClientMode::Publish, &quick())
            .await
            .unwrap();
        let result = send_until_error(&mut conn).await;
        // Closed when the EOF is read first, Io (reset, broken pipe) when a
        // write hits the closed socket first.
        let e = result.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Closed | ErrorKind::Io), "{e}");
    }

    #[tokio::test]
    async fn refusal_is_typed_and_redacted() {
        let addr = fake_server(Script::Refuse).await;
        let e = connect(&url(addr), ClientMode::Publish, &quick())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused);
        let r = e.refusal().unwrap();
        assert_eq!(r.stage, Stage::Publish);
        assert_eq!(r.code, "NetStream.Publish.BadName");
        assert_eq!(r.description, "<key> is taken");
        assert_no_key(&e);
        assert!(
            e.to_string()
                .contains("publish refused: NetStream.Publish.BadName"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn deadlines_name_the_step() {
        let cases = [
            (Script::Mute, ClientMode::Publish, Stage::Handshake),
            (
                Script::SilentAfterHandshake,
                ClientMode::Publish,
                Stage::Connect,
            ),
            (
                Script::SilentAfterHandshake,
                ClientMode::Play,
                Stage::Connect,
            ),
        ];
        for (script, mode, stage) in cases {
            let addr = fake_server(script).await;
            let short = opts(|t| {
                if stage == Stage::Handshake {
                    t.handshake = SHORT
                } else {
                    t.setup = SHORT
                }
            });
            let e = connect(&url(addr), mode, &short).await.unwrap_err();
            assert!(
                matches!(&e, ClientError::Timeout { stage: s, .. } if *s == stage),
                "{script:?}: {e}"
            );
            assert_no_key(&e);
        }
        // Play: a server silent after Play.Start fails next_event at the read deadline.
        let addr = fake_server(Script::StartThenSilent).await;
        let mut conn = connect(&url(addr), ClientMode::Play, &opts(|t| t.read = SHORT))
            .await
            .unwrap();
        let e = conn.next_event().await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Timeout {
                    stage: Stage::Streaming,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn connection_failures_are_classified() {
        // An HTTP server on the port: a handshake error.
        let addr = fake_server(Script::Http).await;
        let e = connect(&url(addr), ClientMode::Play, &quick())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Handshake {
                    source: HandshakeError::NotRtmp { .. },
                    ..
                }
            ),
            "{e}"
        );
        // Nothing listening: a connect error.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let u = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/{KEY}")).unwrap();
        let e = connect(&u, ClientMode::Publish, &quick())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert_no_key(&e);
        // A name that cannot resolve (RFC 6761 reserves .invalid).
        let u = RtmpUrl::parse(&format!("rtmp://no-such-host.invalid/live/{KEY}")).unwrap();
        let e = connect(&u, ClientMode::Publish, &quick())
            .await
            .unwrap_err();
        assert!(
            e.kind() == ErrorKind::Dns
                || matches!(
                    e,
                    ClientError::Timeout {
                        stage: Stage::Resolve,
                        ..
                    }
                ),
            "{e}"
        );
        assert_no_key(&e);
    }
}
