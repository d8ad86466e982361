//! The publish webhook (SPEC.md, "Configuration": `[auth] publish_webhook`;
//! issue 6 §5): before a pushed publish is admitted, Ladder asks an HTTP
//! service whether the stream key may publish, and to which channel.
//!
//! The request: `POST <publish_webhook>` with `Content-Type: application/json`
//! and the body
//!
//! ```json
//! {"key": "<stream key>", "app": "live", "peer": "203.0.113.7:50212", "channel_hint": "news"}
//! ```
//!
//! where `channel_hint` is the configured channel whose key this is, or
//! `null`. The answer allows the publish only if it is all of:
//!
//! - a 2xx status,
//! - within the timeout (`[auth] publish_webhook_timeout`, default
//!   [`crate::control::config::DEFAULT_WEBHOOK_TIMEOUT`] seconds, for the
//!   whole exchange: name resolution, connection, TLS, request, answer),
//! - a JSON object (at most [`MAX_ANSWER_BYTES`]) with a `"channel"` string
//!   that is a valid channel name (`[A-Za-z0-9_-]{1,64}`, not starting with
//!   `-`, as in the configuration): the channel the publisher goes live on.
//!
//! Anything else denies (fail closed): a refused or failed connection, a
//! timeout, any 1xx/3xx/4xx/5xx status, an empty or non-JSON body, a missing,
//! non-string or invalid `channel`. [`decide`] is the pure part (status and
//! body to verdict); [`Webhook::ask`] does the I/O (hyper's HTTP/1.1 client
//! connection, over TCP or, for `https://`, rustls with the system and
//! webpki roots).
//!
//! The key is a secret: it is only ever in the request body. Neither the key
//! nor the webhook URL (which may carry a secret of its own) is logged; a
//! [`Denial`]'s text holds neither.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest answer body read. Attack: a hook (or something impersonating it)
/// answering with an endless body to exhaust memory; the answer is one small
/// JSON object.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Longest webhook URL accepted (host, path and query).
pub const MAX_URL_LEN: usize = 2048;

/// What the publisher asked, as the webhook receives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishQuery<'a> {
    /// The stream key (a secret: only ever sent to the webhook).
    pub key: &'a str,
    /// The RTMP application (`live`).
    pub app: &'a str,
    /// The publisher's address.
    pub peer: SocketAddr,
    /// The configured channel whose key this is, if any.
    pub channel_hint: Option<&'a str>,
}

/// Why the webhook did not allow a publish. None of these hold the key or
/// the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Name resolution, the TCP connection or the TLS handshake failed.
    #[error("cannot reach the webhook: {0}")]
    Unreachable(String),
    /// The HTTP exchange failed after connecting (the server closed, sent
    /// garbage, or a body over [`MAX_ANSWER_BYTES`]).
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    /// A status other than 2xx.
    #[error("the webhook answered {0}")]
    Status(u16),
    /// 2xx, but the body is not a JSON object with a `channel` string.
    #[error("the webhook's answer is not a JSON object with a \"channel\" string ({0})")]
    Malformed(String),
    /// 2xx with a `channel` that is not a valid channel name.
    #[error("the webhook named an invalid channel: name {0}")]
    BadChannel(String),
    /// The configured URL cannot be used (config validation should have
    /// said so).
    #[error("the webhook URL is unusable: {0}")]
    BadUrl(String),
}

/// The answer of a webhook: the channel name, or why not. Pure.
pub fn decide(status: u16, body: &[u8]) -> Result<String, Denial> {
    if !(200..300).contains(&status) {
        return Err(Denial::Status(status));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Denial::Malformed(if body.is_empty() {
            "empty body".to_owned()
        } else {
            format!("not JSON: {e}")
        })
    })?;
    let channel = match value.get("channel") {
        Some(serde_json::Value::String(c)) => c,
        Some(_) => return Err(Denial::Malformed("\"channel\" is not a string".into())),
        None if value.is_object() => return Err(Denial::Malformed("no \"channel\"".into())),
        None => return Err(Denial::Malformed("not an object".into())),
    };
    crate::control::config::check_name(channel).map_err(Denial::BadChannel)?;
    Ok(channel.clone())
}

/// A webhook URL, split for the client: `http(s)://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    /// `https://`.
    pub tls: bool,
    /// The host as written (an IPv6 literal without its brackets).
    pub host: String,
    /// The port (80 or 443 when not written).
    pub port: u16,
    /// What goes on the request line: the path (`/` when empty) and query.
    pub path_and_query: String,
    /// What goes in `Host:` (host and port as written).
    pub authority: String,
}

impl HookUrl {
    /// Parse a webhook URL; `Err` says what is wrong without echoing it.
    pub fn parse(url: &str) -> Result<HookUrl, String> {
        if url.len() > MAX_URL_LEN {
            return Err(format!("longer than {MAX_URL_LEN} bytes"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "no scheme".to_owned())?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("the scheme must be http or https".to_owned()),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not supported; put a secret in the path or query"
                    .to_owned(),
            );
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "unclosed '[' in the host".to_owned())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 host")?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| "the port is not a number from 1 to 65535".to_owned())?,
        };
        let path_and_query = if tail.starts_with('?') {
            format!("/{tail}")
        } else if tail.is_empty() {
            "/".to_owned()
        } else {
            tail.to_owned()
        };
        // what hyper accepts on the request line
        if path_and_query.parse::<http::uri::PathAndQuery>().is_err() {
            return Err("the path or query has characters not allowed in a URL".to_owned());
        }
        if http::uri::Authority::try_from(authority).is_err() {
            return Err("the host is not valid".to_owned());
        }
        Ok(HookUrl {
            tls,
            host: host.to_owned(),
            port,
            path_and_query,
            authority: authority.to_owned(),
        })
    }
}

/// The publish webhook client. Cheap to share; every [`Webhook::ask`] opens
/// its own connection (one request per publish: no pool to go stale).
#[derive(Debug, Clone)]
pub struct Webhook {
    url: Result<HookUrl, String>,
    timeout: Duration,
}

impl Webhook {
    /// A client for `url` answering within `timeout`. An unusable URL makes
    /// every [`Webhook::ask`] deny (fail closed).
    pub fn new(url: &str, timeout: Duration) -> Webhook {
        Webhook {
            url: HookUrl::parse(url),
            timeout,
        }
    }

    /// The timeout of one exchange.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ask whether `query` may publish: `Ok(channel)` or why not.
    pub async fn ask(&self, query: &PublishQuery<'_>) -> Result<String, Denial> {
        let url = self.url.as_ref().map_err(|e| Denial::BadUrl(e.clone()))?;
        let body = serde_json::to_vec(query).map_err(|e| Denial::Http(e.to_string()))?;
        let (status, answer) = tokio::time::timeout(self.timeout, exchange(url, body))
            .await
            .map_err(|_| Denial::Timeout(self.timeout))??;
        decide(status, &answer)
    }
}

/// Connect, send the request, read the answer (no deadline here: the caller
/// bounds it).
async fn exchange(url: &HookUrl, body: Vec<u8>) -> Result<(u16, Bytes), Denial> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| Denial::Unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let request = http::Request::post(url.path_and_query.as_str())
        .header(http::header::HOST, url.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("ladder/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Denial::Http(e.to_string()))?;
    if !url.tls {
        return send(tcp, request).await;
    }
    let connector = crate::ingest::client::tls_connector(&Default::default(), &url.host)
        .await
        .map_err(|e| Denial::Unreachable(e.to_string()))?;
    let name = rustls_pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| Denial::BadUrl(e.to_string()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Denial::Unreachable(format!("TLS: {e}")))?;
    send(tls, request).await
}

/// One HTTP/1.1 request on `io`; the status and the body (at most
/// [`MAX_ANSWER_BYTES`]).
async fn send<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), Denial>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Denial::Http(e.to_string()))?;
    let answer = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Denial::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| Denial::Http(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok::<_, Denial>((status, body))
    };
    tokio::pin!(conn);
    tokio::pin!(answer);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut answer => return r,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = c {
                    return Err(Denial::Http(e.to_string()));
                }
                // closed cleanly: the answer future has what it needs
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_json_object_naming_a_valid_channel_allows() {
        assert_eq!(decide(200, br#"{"channel":"news"}"#), Ok("news".into()));
        assert_eq!(
            decide(201, br#"{"channel":"a_b-1","extra":[1,2]}"#),
            Ok("a_b-1".into())
        );
        for status in [100, 199, 301, 304, 400, 401, 403, 404, 500, 502, 503] {
            assert_eq!(
                decide(status, br#"{"channel":"news"}"#),
                Err(Denial::Status(status))
            );
        }
        let malformed = |body: &[u8]| matches!(decide(200, body), Err(Denial::Malformed(_)));
        assert!(malformed(b""));
        assert!(malformed(b"ok"));
        assert!(malformed(b"<html>"));
        assert!(malformed(br#"{"channel":"news""#));
        assert!(malformed(br#"{"channel":null}"#));
        assert!(malformed(br#"{"channel":7}"#));
        assert!(malformed(br#"{"name":"news"}"#));
        assert!(malformed(br#"["news"]"#));
        assert!(malformed(br#""news""#));
        for bad in ["", "../x", "a b", "-x", "a/b", "a?b", "né", &"x".repeat(65)] {
            let body = serde_json::json!({ "channel": bad }).to_string();
            assert!(
                matches!(decide(200, body.as_bytes()), Err(Denial::BadChannel(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn urls() {
        let u = HookUrl::parse("http://127.0.0.1:9000/on_publish?x=1").unwrap();
        assert_eq!(
            u,
            HookUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9000,
                path_and_query: "/on_publish?x=1".into(),
                authority: "127.0.0.1:9000".into(),
            }
        );
        let u = HookUrl::parse("HTTPS://auth.example").unwrap();
        assert_eq!((u.tls, u.port, u.path_and_query.as_str()), (true, 443, "/"));
        let u = HookUrl::parse("http://[::1]:81?k=v#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 81, "/?k=v")
        );
        for bad in [
            "ftp://h/",
            "h/x",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://user:pw@h/",
            "http://[::1/",
            "http://h/a b",
        ] {
            assert!(HookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_query_serialises_as_documented() {
        let q = PublishQuery {
            key: "s3cr3t",
            app: "live",
            peer: "203.0.113.7:50212".parse().unwrap(),
            channel_hint: None,
        };
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"key":"s3cr3t","app":"live","peer":"203.0.113.7:50212","channel_hint":null}"#
        );
    }
}
