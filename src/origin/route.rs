//! Request paths to routes: a pure function of the raw path, no I/O.
//!
//! Only the canonical names the packager writes are accepted (SPEC.md, "URLs";
//! `packaging::store` for the media names). Nothing is percent-decoded and
//! nothing is ever resolved against a filesystem: a path is either one of the
//! shapes below, byte for byte, or it is not found. That one rule covers `..`,
//! `%2e%2e`, `%2f`, NUL, backslashes and overlong names.
//!
//! Numbers in names are canonical decimal (no sign, no leading zero, no
//! overflow): `seg-007.m4s` would be a second URL for `seg-7.m4s`, and so a
//! second CDN cache entry for the same bytes.


/// Longest request path considered. Attack: multi-kilobyte paths that make
/// every lookup and log line expensive; no valid URL comes close.
pub const MAX_PATH_BYTES: usize = 256;

/// Longest channel name or track id in a URL. Attack: names as large as the
/// path allows, used as hash keys and echoed in logs.
pub const MAX_NAME_BYTES: usize = 64;

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/time`: the origin's clock (DASH UTCTiming).
    Time,
    /// `/live/<ch>/master.m3u8`
    Master { channel: &'a str },
    /// `/live/<ch>/manifest.mpd`
    Mpd { channel: &'a str },
    /// `/live/<ch>/<track>/index.m3u8`
    Media { channel: &'a str, track: &'a str },
    /// `/live/<ch>/<track>/init-<id>.mp4`
    Init {
        channel: &'a str,
        track: &'a str,
        id: u32,
    },
    /// `/live/<ch>/<track>/part-<seq>.m4s`
    Part {
        channel: &'a str,
        track: &'a str,
        seq: u64,
    },
    /// `/live/<ch>/<track>/seg-<msn>.m4s`
    Segment {
        channel: &'a str,
        track: &'a str,
        msn: u64,
    },
}

impl<'a> Route<'a> {
    /// The channel the route is under (`None` for `/time`).
    pub fn channel(&self) -> Option<&'a str> {
        match self {
            Route::Time => None,
            Route::Master { channel }
            | Route::Mpd { channel }
            | Route::Media { channel, .. }
            | Route::Init { channel, .. }
            | Route::Part { channel, .. }
            | Route::Segment { channel, .. } => Some(channel),
        }
    }
}

/// Parse a raw (still percent-encoded) request path. `None` means 404.
pub fn parse(path: &str) -> Option<Route<'_>> {
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    if path == "/time" {
        return Some(Route::Time);
    }
    let rest = path.strip_prefix("/live/")?;
    let mut it = rest.split('/');
    let channel = name(it.next()?)?;
    let second = it.next()?;
    match it.next() {
        None => match second {
            "master.m3u8" => Some(Route::Master { channel }),
            "manifest.mpd" => Some(Route::Mpd { channel }),
            _ => None,
        },
        Some(file) => {
            if it.next().is_some() {
                return None;
            }
            let track = name(second)?;
            if file == "index.m3u8" {
                return Some(Route::Media { channel, track });
            }
            if let Some(n) = wrapped(file, "init-", ".mp4") {
                let id = u32::try_from(number(n)?).ok()?;
                return Some(Route::Init { channel, track, id });
            }
            if let Some(n) = wrapped(file, "part-", ".m4s") {
                let seq = number(n)?;
                return Some(Route::Part {
                    channel,
                    track,
                    seq,
                });
            }
            if let Some(n) = wrapped(file, "seg-", ".m4s") {
                let msn = number(n)?;
                return Some(Route::Segment {
                    channel,
                    track,
                    msn,
                });
            }
            None
        }
    }
}

/// A channel name or track id: `[A-Za-z0-9_.-]{1,64}`, not `.` or `..`.
fn name(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(s)
}

fn wrapped<'a>(s: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// Canonical decimal u64: digits only, no leading zero, no overflow.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_routes() {
        assert_eq!(parse("/time"), Some(Route::Time));
        assert_eq!(parse("/time").unwrap().channel(), None);
        assert_eq!(
            parse("/live/news/720p/part-3.m4s").unwrap().channel(),
            Some("news")
        );
        assert_eq!(
            parse("/live/news/master.m3u8"),
            Some(Route::Master { channel: "news" })
        );
        assert_eq!(
            parse("/live/news/manifest.mpd"),
            Some(Route::Mpd { channel: "news" })
        );
        assert_eq!(
            parse("/live/news/720p/index.m3u8"),
            Some(Route::Media {
                channel: "news",
                track: "720p"
            })
        );
        assert_eq!(
            parse("/live/news/audio/init-4294967295.mp4"),
            Some(Route::Init {
                channel: "news",
                track: "audio",
                id: u32::MAX
            })
        );
        assert_eq!(
            parse("/live/news/source/part-0.m4s"),
            Some(Route::Part {
                channel: "news",
                track: "source",
                seq: 0
            })
        );
        assert_eq!(
            parse("/live/n_e-w.s/source/seg-18446744073709551615.m4s"),
            Some(Route::Segment {
                channel: "n_e-w.s",
                track: "source",
                msn: u64::MAX
            })
        );
    }

    #[test]
    fn hostile_paths_are_not_found() {
        let long_name = format!("/live/{}/master.m3u8", "a".repeat(MAX_NAME_BYTES + 1));
        let long_path = format!("/live/a/b/seg-1.m4s{}", "/".repeat(MAX_PATH_BYTES));
        for p in [
            "",
            "/",
            "/live",
            "/live/",
            "/live//master.m3u8",
            "/live/../etc/passwd",
            "/live/a/../master.m3u8",
            "/live/../master.m3u8",
            "/live/./master.m3u8",
            "/live/a/%2e%2e/x",
            "/live/a%2fb/master.m3u8",
            "/live/a/b%2Fc/index.m3u8",
            "/live/a/b/seg-abc.m4s",
            "/live/a/b/seg-.m4s",
            "/live/a/b/seg-+1.m4s",
            "/live/a/b/seg--1.m4s",
            "/live/a/b/seg-01.m4s",
            "/live/a/b/seg-1.m4s/",
            "/live/a/b/seg-99999999999999999999999.m4s",
            "/live/a/b/seg-18446744073709551616.m4s",
            "/live/a/b/init-4294967296.mp4",
            "/live/a/b/part-1.mp4",
            "/live/a/b/index.m3u8/x",
            "/live/a/b/c/index.m3u8",
            "/live/a\\b/master.m3u8",
            "/live/a\0/master.m3u8",
            "/live/a/master.m3u8/",
            "/live/a/index.m3u8",
            "//live/a/master.m3u8",
            "/time/",
            "/LIVE/a/master.m3u8",
            "/etc/passwd",
            "/live/é/master.m3u8",
            &long_name,
            &long_path,
        ] {
            assert_eq!(parse(p), None, "{p:?}");
        }
    }

    proptest::proptest! {
        /// Any path: no panic, and what is accepted names only safe characters.
        #[test]
        fn any_path_is_safe(path in "(/|live|\\.|%2[eEfF]|[a-z0-9_-]|seg-|part-|init-|\\.m4s|\\.mp4|\\.m3u8|\\PC){0,40}") {
            if let Some(route) = parse(&path) {
                assert!(path.len() <= MAX_PATH_BYTES);
                assert!(!path.contains('%'));
                assert!(path.split('/').all(|seg| seg != ".." && seg != "."));
                let (Route::Master { channel } | Route::Mpd { channel }
                | Route::Media { channel, .. } | Route::Init { channel, .. }
                | Route::Part { channel, .. } | Route::Segment { channel, .. }) = route else {
                    return Ok(());
                };
                assert!(channel.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
            }
        }
    }
}
