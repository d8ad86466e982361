//! Signed playback URLs (issue 6 §5): optional, on when `[auth]
//! playback_secret` is set. Pure: no I/O, the time is given.
//!
//! A token grants one channel until a time. It rides in one query parameter
//! (`[auth] playback_token_param`, default `token`):
//!
//! ```text
//! http://HOST:8080/live/news/master.m3u8?token=1767225600.<64 hex digits>
//!   token     = <exp> "." <sig>
//!   exp       = expiry, Unix seconds, canonical decimal
//!   sig       = lowercase hex of HMAC-SHA256(playback_secret, "/live/<channel>/" + exp)
//! ```
//!
//! e.g. `printf '/live/news/%s' "$exp" | openssl dgst -sha256 -hmac "$secret"`.
//! The signed text is the channel's directory, not a file: one token covers
//! the multivariant playlist, the MPD, every media playlist, init segment,
//! part and segment of the channel, so a CMS mints one token per viewer (or
//! per channel and expiry bucket) and a CDN's token auth passes the query
//! string through to the origin unchanged.
//!
//! Every request under `/live/<channel>/` needs a valid token: missing,
//! malformed (a second token parameter included: an edge and the origin
//! must not read different ones), expired (`exp` before now) or wrongly
//! signed answers 403. `/time` and CORS preflights need none.
//!
//! Players resolve the URIs inside playlists and MPDs against the
//! playlist's URL *without* its query, so the origin appends the request's
//! token to every URI it writes there ([`hls_with_token`],
//! [`mpd_with_token`]): `part-7.m4s?token=...`, `seg-3.m4s?token=...`,
//! `$RepresentationID$/seg-$Number$.m4s?token=...`. LL-HLS blocking
//! requests add `_HLS_msn`/`_HLS_part` beside it (players append with `&`),
//! which the signature does not cover and need not. No cookies: they do not
//! cross from a page to a CDN host without extra setup, and native players
//! do not all keep them.


use ring::hmac;

/// Longest token value: 20 decimal digits, a dot, 64 hex digits. Attack:
/// oversized tokens to make every request parse and hash more.
pub const MAX_TOKEN_LEN: usize = 20 + 1 + 64;

/// Why a request's token was refused (each answers 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token parameter.
    #[error("playback token missing")]
    Missing,
    /// Not `<exp>.<64 hex>`, or the parameter given twice.
    #[error("playback token malformed")]
    Malformed,
    /// `exp` has passed.
    #[error("playback token expired")]
    Expired,
    /// The signature does not match this channel and expiry.
    #[error("playback token invalid")]
    BadSignature,
}

/// The playback secret and the parameter name: signs and checks tokens.
pub struct PlaybackAuth {
    key: hmac::Key,
    param: String,
}

impl std::fmt::Debug for PlaybackAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackAuth")
            .field("key", &"<redacted>")
            .field("param", &self.param)
            .finish()
    }
}

/// The text a token signs: the channel's directory, then the expiry.
pub fn signed_text(channel: &str, expires: u64) -> String {
    format!("/live/{channel}/{expires}")
}

impl PlaybackAuth {
    /// Tokens under `secret`, in query parameter `param`.
    pub fn new(secret: &[u8], param: &str) -> PlaybackAuth {
        PlaybackAuth {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            param: param.to_owned(),
        }
    }

    /// The query parameter's name.
    pub fn param(&self) -> &str {
        &self.param
    }

    /// A token for `channel` valid until `expires` (Unix seconds).
    pub fn token(&self, channel: &str, expires: u64) -> String {
        let tag = hmac::sign(&self.key, signed_text(channel, expires).as_bytes());
        let mut out = format!("{expires}.");
        for b in tag.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Check the token in `query` for `channel` at `now` (Unix seconds).
    /// `Ok`: the `param=value` pair, as it is to be appended to URIs.
    pub fn check(
        &self,
        channel: &str,
        query: Option<&str>,
        now: u64,
    ) -> Result<String, TokenError> {
        let mut found = None;
        for pair in query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == self.param {
                if found.is_some() {
                    return Err(TokenError::Malformed);
                }
                found = Some(value);
            }
        }
        let value = found.ok_or(TokenError::Missing)?;
        if value.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (exp, sig) = value.split_once('.').ok_or(TokenError::Malformed)?;
        let canonical = !exp.is_empty()
            && exp.bytes().all(|b| b.is_ascii_digit())
            && (exp == "0" || !exp.starts_with('0'));
        if !canonical {
            return Err(TokenError::Malformed);
        }
        let expires: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        let sig = hex(sig).ok_or(TokenError::Malformed)?;
        // the signature first: an expired token is only called expired if
        // it was genuine
        hmac::verify(&self.key, signed_text(channel, expires).as_bytes(), &sig)
            .map_err(|_| TokenError::BadSignature)?;
        if expires < now {
            return Err(TokenError::Expired);
        }
        Ok(format!("{}={value}", self.param))
    }
}

/// 64 lowercase hex digits to 32 bytes.
fn hex(s: &str) -> Option<[u8; 32]> {
    let digits = s.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c.checked_sub(b'0'),
        b'a'..=b'f' => c.checked_sub(b'a' - 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let &[high, low] = pair else {
            return None;
        };
        *o = nibble(high)? << 4 | nibble(low)?;
    }
    Some(out)
}

/// `uri` with `pair` appended to its query (`sep_amp`: the separator to
/// use when it already has one).
fn with_pair(uri: &str, pair: &str, sep_amp: &str) -> String {
    let sep = if uri.contains('?') { sep_amp } else { "?" };
    format!("{uri}{sep}{pair}")
}

/// An HLS playlist (multivariant or media) with `pair` appended to every
/// URI: the URI lines and every `URI="..."` attribute (EXT-X-MAP,
/// EXT-X-PART, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT, EXT-X-MEDIA).
pub fn hls_with_token(playlist: &str, pair: &str) -> String {
    let mut out = String::with_capacity(playlist.len().saturating_add(playlist.len() / 4));
    for line in playlist.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if body.starts_with('#') {
            let mut rest = body;
            while let Some(at) = rest.find("URI=\"") {
                let (before, after) = rest.split_at(at.saturating_add(5));
                out.push_str(before);
                match after.find('"') {
                    Some(close) => {
                        out.push_str(&with_pair(&after[..close], pair, "&"));
                        rest = &after[close..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
            out.push_str(rest);
        } else if body.trim().is_empty() {
            out.push_str(body);
        } else {
            out.push_str(&with_pair(body, pair, "&"));
        }
        out.push_str(end);
    }
    out
}

/// An MPD with `pair` appended to the `media` and `initialization`
/// templates (the only URIs it has: no `BaseURL`; `UTCTiming` points at
/// `/time`, which needs no token).
pub fn mpd_with_token(mpd: &str, pair: &str) -> String {
    let mut out = String::with_capacity(mpd.len().saturating_add(256));
    let mut rest = mpd;
    loop {
        let next = [" media=\"", " initialization=\""]
            .iter()
            .filter_map(|a| rest.find(a).map(|i| (i, a.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out;
        };
        let (before, after) = rest.split_at(at.saturating_add(len));
        out.push_str(before);
        match after.find('"') {
            Some(close) => {
                // XML attribute: a second query separator is escaped
                out.push_str(&with_pair(&after[..close], pair, "&amp;"));
                rest = &after[close..];
            }
            None => {
                out.push_str(after);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn auth() -> PlaybackAuth {
        PlaybackAuth::new(SECRET, "token")
    }

    #[test]
    fn a_token_opens_its_channel_until_it_expires() {
        let a = auth();
        let t = a.token("news", NOW + 60);
        let q = format!("token={t}");
        assert_eq!(a.check("news", Some(&q), NOW), Ok(q.clone()));
        assert_eq!(a.check("news", Some(&q), NOW + 60), Ok(q.clone()));
        assert_eq!(
            a.check("news", Some(&q), NOW + 61),
            Err(TokenError::Expired)
        );
        // with the LL-HLS directives around it
        let blocking = format!("_HLS_msn=12&{q}&_HLS_part=3");
        assert_eq!(a.check("news", Some(&blocking), NOW), Ok(q.clone()));
        // another channel, another secret, another expiry: invalid
        assert_eq!(
            a.check("sport", Some(&q), NOW),
            Err(TokenError::BadSignature)
        );
        let other = PlaybackAuth::new(b"another secret of 32 bytes......", "token");
        assert_eq!(
            other.check("news", Some(&q), NOW),
            Err(TokenError::BadSignature)
        );
        let (_, sig) = t.split_once('.').unwrap();
        let moved = format!("token={}.{sig}", NOW + 3600);
        assert_eq!(
            a.check("news", Some(&moved), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_channel_directory_and_expiry() {
        // computed independently:
        // printf '/live/news/1700000000' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
        assert_eq!(
            auth().token("news", NOW),
            "1700000000.f7445c65cf3b8aaacb891f12c26a6bc47bc930cecbf7029b8be2178e0c1a1750"
        );
    }

    #[test]
    fn malformed_and_missing_tokens() {
        let a = auth();
        let good = a.token("news", NOW + 60);
        assert_eq!(a.check("news", None, NOW), Err(TokenError::Missing));
        assert_eq!(
            a.check("news", Some("_HLS_msn=1"), NOW),
            Err(TokenError::Missing)
        );
        assert_eq!(
            a.check("news", Some("tokens=x"), NOW),
            Err(TokenError::Missing)
        );
        let (exp, sig) = good.split_once('.').unwrap();
        for bad in [
            String::new(),
            "token".into(),
            exp.to_string(),
            format!("{exp}."),
            format!(".{sig}"),
            format!("0{exp}.{sig}"),
            format!("+{exp}.{sig}"),
            format!("{exp}.{}", sig.to_uppercase()),
            format!("{exp}.{}", &sig[1..]),
            format!("{exp}.{sig}0"),
            format!("{exp}.{sig}%20"),
            format!("99999999999999999999999.{sig}"),
            format!("{exp}.{}", "g".repeat(64)),
        ] {
            assert_eq!(
                a.check("news", Some(&format!("token={bad}")), NOW),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        // twice, even the same: an edge and the origin must not read different ones
        let twice = format!("token={good}&token={good}");
        assert_eq!(
            a.check("news", Some(&twice), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn every_playlist_uri_carries_the_token() {
        let master = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",URI=\"audio/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f\"\n720p/index.m3u8\n";
        assert_eq!(
            hls_with_token(master, "token=1.ab"),
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",URI=\"audio/index.m3u8?token=1.ab\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f\"\n720p/index.m3u8?token=1.ab\n"
        );
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-PART:DURATION=0.50000,URI=\"part-0.m4s\",INDEPENDENT=YES\n#EXTINF:2.00000,\nseg-0.m4s\n\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-10.m4s\"\n#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=2,LAST-PART=1";
        assert_eq!(
            hls_with_token(media, "t=9.ff"),
            "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4?t=9.ff\"\n#EXT-X-PART:DURATION=0.50000,URI=\"part-0.m4s?t=9.ff\",INDEPENDENT=YES\n#EXTINF:2.00000,\nseg-0.m4s?t=9.ff\n\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-10.m4s?t=9.ff\"\n#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8?t=9.ff\",LAST-MSN=2,LAST-PART=1"
        );
        // a URI with a query already; an unterminated attribute is left as is
        assert_eq!(
            hls_with_token("a.m3u8?x=1\n#X:URI=\"b?y\",URI=\"c", "t=1"),
            "a.m3u8?x=1&t=1\n#X:URI=\"b?y&t=1\",URI=\"c"
        );
    }

    #[test]
    fn the_mpd_templates_carry_the_token() {
        let mpd = "<MPD>\n<SegmentTemplate timescale=\"90000\" initialization=\"$RepresentationID$/init-0.mp4\" media=\"$RepresentationID$/seg-$Number$.m4s\" startNumber=\"3\">\n<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"/time\"/>\n</MPD>";
        assert_eq!(
            mpd_with_token(mpd, "token=5.0f"),
            "<MPD>\n<SegmentTemplate timescale=\"90000\" initialization=\"$RepresentationID$/init-0.mp4?token=5.0f\" media=\"$RepresentationID$/seg-$Number$.m4s?token=5.0f\" startNumber=\"3\">\n<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"/time\"/>\n</MPD>"
        );
        assert_eq!(
            mpd_with_token("<S media=\"a?b\"/>", "t=1"),
            "<S media=\"a?b&amp;t=1\"/>"
        );
    }
}
