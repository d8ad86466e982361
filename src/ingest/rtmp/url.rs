//! RTMP and RTMPS URLs for the restream and pull clients:
//! `rtmp://host[:port]/app[/inst]/stream[?query]` and `rtmps://...`.
//!
//! There is no RFC for these URLs; the split follows FFmpeg (`rtmpproto.c`) and
//! librtmp, which every RTMP service documents its URLs against:
//!
//! - the application is the path up to its last `/` (`live2` on YouTube,
//!   `rtmp` on Facebook, `live` on nginx; `rtmp://h/app/inst/name` has the
//!   application `app/inst`);
//! - the stream name is the last path segment with the query, if any
//!   (`name?token=x`): the server sees exactly what the user typed;
//! - the tcUrl of `connect` (Adobe RTMP 1.0 specification §7.2.1.1) is
//!   `scheme://host[:port]/app`, the port as written (FFmpeg, OBS);
//! - default ports: 1935 for `rtmp`, 443 for `rtmps`.
//!
//! The stream name is usually the secret stream key of a restream
//! destination. [`RtmpUrl`]'s `Display` and `Debug` never show it:
//! `rtmps://live-api-s.facebook.com:443/rtmp/<key>`. Only
//! [`RtmpUrl::stream_name`] returns it, for the `publish`/`play` command.
//!
//! Not supported, with an error that says so: other schemes (`rtmpe`, `rtmpt`,
//! `rtmfp`), user information (`user:pass@`), empty path segments, control
//! characters and spaces. Percent escapes are not decoded: the name goes to
//! the server as written (FFmpeg does the same).

use std::fmt;
use std::net::Ipv6Addr;
use thiserror::Error;

/// Default port of `rtmp://`.
pub const RTMP_DEFAULT_PORT: u16 = 1935;
/// Default port of `rtmps://`.
pub const RTMPS_DEFAULT_PORT: u16 = 443;

/// Longest URL accepted, in bytes. Attack: a configured or API-supplied URL of
/// megabytes copied into logs, commands and error messages; real ingest URLs
/// with long keys are under 300 bytes.
pub const MAX_URL_LEN: usize = 4096;

/// Longest host name (RFC 1035: 253 characters in text form).
const MAX_HOST_LEN: usize = 253;

/// What replaces the stream name in every printed form of a URL.
pub const REDACTED: &str = "<key>";

/// The transport under the RTMP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// RTMP over plain TCP.
    Rtmp,
    /// RTMP over TLS (TCP).
    Rtmps,
}

impl Scheme {
    /// `"rtmp"` or `"rtmps"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => RTMP_DEFAULT_PORT,
            Scheme::Rtmps => RTMPS_DEFAULT_PORT,
        }
    }
}

/// Why a URL was refused. Messages never contain the stream name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not `rtmp://` or `rtmps://` (the scheme is printed; it holds no secret).
    #[error("unsupported URL scheme {0:?}: only rtmp:// and rtmps:// are supported")]
    UnsupportedScheme(String),
    /// No `scheme://` at the start.
    #[error("not an RTMP URL: expected rtmp://host[:port]/app/stream or rtmps://...")]
    NoScheme,
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL of {0} bytes is longer than the {MAX_URL_LEN}-byte limit")]
    TooLong(usize),
    /// Spaces or control characters anywhere in the URL.
    #[error("URL contains a space or a control character")]
    InvalidCharacter,
    /// `user:pass@host`: RTMP carries no credentials in the authority.
    #[error("user information (user@host) is not supported in RTMP URLs")]
    UserInfo,
    /// Empty host, a bad IPv6 literal or characters a host name cannot have.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// Not a number in 1..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// `rtmp://host` or `rtmp://host/`: no application.
    #[error("missing application: expected rtmp://host[:port]/app/stream")]
    MissingApp,
    /// `rtmp://host/app` or `rtmp://host/app/`: no stream name (key).
    #[error("missing stream name (key): expected rtmp://host[:port]/app/stream")]
    MissingStreamName,
    /// `rtmp://host//x` or `rtmp://host/a//b`.
    #[error("empty path segment in the application")]
    EmptySegment,
}

/// A parsed RTMP(S) URL. `Display` and `Debug` redact the stream name.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    scheme: Scheme,
    /// Host name or IP address, without the brackets of an IPv6 literal.
    host: String,
    /// The port as written, if any.
    explicit_port: Option<u16>,
    app: String,
    stream_name: String,
}

impl RtmpUrl {
    /// Parses `rtmp://host[:port]/app[/more]/stream[?query]` (or `rtmps://`).
    pub fn parse(url: &str) -> Result<RtmpUrl, UrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong(url.len()));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(UrlError::InvalidCharacter);
        }
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NoScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_owned())),
        };
        // The authority ends at the first '/' (or '?' for "rtmp://host?x").
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(auth_end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, explicit_port) = parse_authority(authority)?;

        // The query belongs to the stream name; the path is split before it.
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let path = path.strip_prefix('/').unwrap_or(path);
        let (app, name) = match path.rsplit_once('/') {
            Some((app, name)) => (app, name),
            // "rtmp://host/app" (or "rtmp://host/app?q"): no stream name.
            None if !path.is_empty() => return Err(UrlError::MissingStreamName),
            None => return Err(UrlError::MissingApp),
        };
        if app.is_empty() {
            return Err(if name.is_empty() {
                UrlError::MissingApp
            } else {
                UrlError::EmptySegment
            });
        }
        if app.split('/').any(str::is_empty) {
            return Err(UrlError::EmptySegment);
        }
        if name.is_empty() {
            return Err(UrlError::MissingStreamName);
        }
        let stream_name = match query {
            Some(q) => format!("{name}?{q}"),
            None => name.to_owned(),
        };
        Ok(RtmpUrl {
            scheme,
            host,
            explicit_port,
            app: app.to_owned(),
            stream_name,
        })
    }

    /// `rtmp` or `rtmps`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// True for `rtmps://`.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Rtmps
    }

    /// Host name or IP address (an IPv6 literal without its brackets): what
    /// to resolve, and the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the URL's, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.explicit_port
            .unwrap_or_else(|| self.scheme.default_port())
    }

    /// The application (`connect`'s `app`): `live2`, `rtmp`, `app/inst`.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream name with its query: the **secret** stream key of most
    /// services. Only for the `publish`/`play` command; never log it.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// `connect`'s tcUrl: `scheme://host[:port]/app`, the port as written.
    pub fn tc_url(&self) -> String {
        format!("{}/{}", self.origin(), self.app)
    }

    /// `scheme://host[:port]`, an IPv6 literal in brackets.
    fn origin(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.explicit_port {
            Some(p) => format!("{}://{host}:{p}", self.scheme.as_str()),
            None => format!("{}://{host}", self.scheme.as_str()),
        }
    }

    /// The URL with the stream name replaced by [`REDACTED`], for logs and
    /// errors (the same as `Display`).
    pub fn redacted(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{REDACTED}", self.tc_url())
    }
}

impl fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtmpUrl({self})")
    }
}

impl std::str::FromStr for RtmpUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RtmpUrl::parse(s)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_authority(authority: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError::InvalidHost(authority.to_owned()))?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::InvalidHost(authority.to_owned()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlError::InvalidHost(authority.to_owned()))?,
            ),
        };
        (v6.to_owned(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let valid = !host.is_empty()
            && host.len() <= MAX_HOST_LEN
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(UrlError::InvalidHost(host.to_owned()));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(UrlError::InvalidPort(p.to_owned())),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (Scheme, String, u16, String, String, String) {
        let u = RtmpUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (
            u.scheme(),
            u.host().to_owned(),
            u.port(),
            u.app().to_owned(),
            u.stream_name().to_owned(),
            u.tc_url(),
        )
    }

    #[test]
    fn services_split_like_ffmpeg() {
        assert_eq!(
            parts("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl"),
            (
                Scheme::Rtmp,
                "a.rtmp.youtube.com".into(),
                1935,
                "live2".into(),
                "abcd-efgh-ijkl".into(),
                "rtmp://a.rtmp.youtube.com/live2".into()
            )
        );
        assert_eq!(
            parts("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=b"),
            (
                Scheme::Rtmps,
                "live-api-s.facebook.com".into(),
                443,
                "rtmp".into(),
                "FB-123?s_bl=1&a=b".into(),
                "rtmps://live-api-s.facebook.com:443/rtmp".into()
            )
        );
        assert_eq!(
            parts("rtmp://127.0.0.1:19350/live/name"),
            (
                Scheme::Rtmp,
                "127.0.0.1".into(),
                19350,
                "live".into(),
                "name".into(),
                "rtmp://127.0.0.1:19350/live".into()
            )
        );
        let (_, _, port, app, name, tc) = parts("rtmp://h/app/inst/name");
        assert_eq!(
            (port, app.as_str(), name.as_str()),
            (1935, "app/inst", "name")
        );
        assert_eq!(tc, "rtmp://h/app/inst");
        // rtmps without a port: 443, and the tcUrl keeps the URL's form.
        let (_, _, port, _, _, tc) = parts("rtmps://x.example/app/k");
        assert_eq!((port, tc.as_str()), (443, "rtmps://x.example/app"));
        // A '/' in the query stays in the name.
        let (_, _, _, app, name, _) = parts("rtmp://h/app/key?next=/a/b");
        assert_eq!((app.as_str(), name.as_str()), ("app", "key?next=/a/b"));
        // Scheme and host are case-insensitive.
        let (scheme, host, ..) = parts("RTMP://Example.COM/live/K");
        assert_eq!((scheme, host.as_str()), (Scheme::Rtmp, "example.com"));
    }

    #[test]
    fn ipv6_literals() {
        let (_, host, port, app, name, tc) = parts("rtmp://[::1]:1936/live/k");
        assert_eq!(
            (host.as_str(), port, app.as_str(), name.as_str()),
            ("::1", 1936, "live", "k")
        );
        assert_eq!(tc, "rtmp://[::1]:1936/live");
        let (_, host, port, ..) = parts("rtmps://[2001:db8::5]/live/k");
        assert_eq!((host.as_str(), port), ("2001:db8::5", 443));
        for bad in [
            "rtmp://[::1/live/k",
            "rtmp://[zz::1]/live/k",
            "rtmp://[::1]x/live/k",
            "rtmp://[]/live/k",
        ] {
            assert!(
                matches!(RtmpUrl::parse(bad), Err(UrlError::InvalidHost(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn clear_errors() {
        let err = |u: &str| RtmpUrl::parse(u).unwrap_err();
        assert_eq!(
            err("http://h/live/k"),
            UrlError::UnsupportedScheme("http".into())
        );
        assert_eq!(
            err("rtmpe://h/live/k"),
            UrlError::UnsupportedScheme("rtmpe".into())
        );
        assert_eq!(err("h/live/k"), UrlError::NoScheme);
        assert_eq!(err("rtmp://h"), UrlError::MissingApp);
        assert_eq!(err("rtmp://h/"), UrlError::MissingApp);
        assert_eq!(err("rtmp://h/live"), UrlError::MissingStreamName);
        assert_eq!(err("rtmp://h/live/"), UrlError::MissingStreamName);
        assert_eq!(err("rtmp://h/live?x=1"), UrlError::MissingStreamName);
        assert_eq!(err("rtmp://h//k"), UrlError::EmptySegment);
        assert_eq!(err("rtmp://h/a//k"), UrlError::EmptySegment);
        assert_eq!(err("rtmp:///live/k"), UrlError::InvalidHost(String::new()));
        assert_eq!(err("rtmp://u:p@h/live/k"), UrlError::UserInfo);
        assert_eq!(err("rtmp://h:0/live/k"), UrlError::InvalidPort("0".into()));
        assert_eq!(
            err("rtmp://h:65536/live/k"),
            UrlError::InvalidPort("65536".into())
        );
        assert_eq!(
            err("rtmp://h:+1/live/k"),
            UrlError::InvalidPort("+1".into())
        );
        assert_eq!(
            err("rtmp://h:/live/k"),
            UrlError::InvalidPort(String::new())
        );
        assert_eq!(err("rtmp://h/live/k ey"), UrlError::InvalidCharacter);
        assert_eq!(err("rtmp://h/live/k\0"), UrlError::InvalidCharacter);
        assert_eq!(err("rtmp://h/live/k\r\n"), UrlError::InvalidCharacter);
        assert!(matches!(
            err("rtmp://h%20x/live/k"),
            UrlError::InvalidHost(_)
        ));
        let long = format!("rtmp://h/live/{}", "k".repeat(MAX_URL_LEN));
        assert_eq!(err(&long), UrlError::TooLong(long.len()));
        // Error messages never carry the key.
        for u in ["rtmp://h:99999/live/SECRET", "rtmp://u@h/live/SECRET"] {
            assert!(!err(u).to_string().contains("SECRET"), "{u}");
        }
    }

    #[test]
    fn printed_forms_never_show_the_key() {
        let u = RtmpUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-SECRET?s=1").unwrap();
        assert_eq!(
            u.to_string(),
            "rtmps://live-api-s.facebook.com:443/rtmp/<key>"
        );
        assert_eq!(u.redacted(), u.to_string());
        let debug = format!("{u:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("facebook"), "{debug}");
        let u: RtmpUrl = "rtmp://a.rtmp.youtube.com/live2/yt-secret".parse().unwrap();
        assert_eq!(u.to_string(), "rtmp://a.rtmp.youtube.com/live2/<key>");
        let u = RtmpUrl::parse("rtmp://[::1]/a/b/SECRET").unwrap();
        assert_eq!(u.to_string(), "rtmp://[::1]/a/b/<key>");
    }
}
