//! One request to one response: routing, blocking waits, headers.
//!
//! Everything is served from the segment store in memory. A request that asks
//! for something not there yet (a blocking playlist reload, RFC 8216bis §6.2.5.2;
//! the hinted part, §6.2.5.3 and §4.4.5.3; the next segment for LL-DASH) parks
//! on the channel's change notification and re-checks after every change; no
//! polling, no thread per request.
//!
//! Signed playback (`super::signed`): the token is checked before anything
//! else is looked at (403 with no store lookup), and the token found is
//! appended to the URIs of the playlists and MPDs answered.

use super::body::{self, Follower, OriginBody};
use super::route::{self, Route};
use super::signed;
use super::Shared;
use crate::packaging::store::{ChannelState, ChannelStore, Track, TrackKind};
use crate::packaging::{dash, hls};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How many target durations a request may stay parked (RFC 8216bis §6.2.5.2:
/// "at least three times the Target Duration", then 503).
pub const PARK_TARGET_DURATIONS: u64 = 3;

/// Upper bound on any park, whatever the target duration says. Attack: a
/// publisher whose timestamps jump inflates EXT-X-TARGETDURATION (it never
/// decreases), which would otherwise hold every parked request for minutes.
pub const MAX_PARK: Duration = Duration::from_secs(60);

/// Longest accepted value of `Access-Control-Request-Headers` to echo back.
/// Attack: a preflight carrying a huge header list, reflected into every answer.
pub const MAX_PREFLIGHT_HEADERS_BYTES: usize = 1024;

/// Cache lifetime of a blocking playlist answer, in target durations. The query
/// (`_HLS_msn`, `_HLS_part`) makes the URL name one future state of the
/// playlist; once answered, that answer stays correct for that question, and a
/// CDN edge can give it to every player asking the same question (request
/// collapsing). By the time this expires, players ask for later sequence numbers.
pub const BLOCKING_CACHE_TARGET_DURATIONS: u64 = 6;

/// Init segments, parts and segments: URLs never repeat (the packager numbers
/// msn, parts and inits from the wall clock), so their bytes never change.
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Not found: never cached. Almost everything not found now exists soon (a
/// part past the hint, the next segment, a channel about to go live), and a
/// cached 404 outlives that: one request for a future part through a CDN
/// edge (nginx keeps `max-age=1` for 1 to 2 s) made the edge answer 404 to
/// every player once the part existed (tests/edge.rs). Misses are answered
/// from memory; the origin can take them.
const CACHE_NOT_FOUND: &str = "no-store";
/// Errors (400, 405, 503) and the clock: never cached.
const CACHE_NO_STORE: &str = "no-store";

const HLS: &str = "application/vnd.apple.mpegurl";
const DASH: &str = "application/dash+xml";
const TEXT: &str = "text/plain";

/// Answer one request. Never panics on request input; every failure is a status.
pub async fn handle<B>(shared: &Shared, req: Request<B>) -> Response<OriginBody> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        Method::OPTIONS => return preflight(req.headers()),
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            return r;
        }
    };
    let query = req.uri().query();
    let response = match route::parse(req.uri().path()) {
        None => not_found(),
        Some(r) => {
            let token = match (&shared.services.playback, r.channel()) {
                (Some(auth), Some(channel)) => match auth.check(channel, query, unix_now()) {
                    Ok(pair) => Some(pair),
                    Err(e) => return text(StatusCode::FORBIDDEN, &format!("{e}\n")),
                },
                _ => None,
            };
            get(shared, r, query, token.as_deref()).await
        }
    };
    if head {
        strip_body(response)
    } else {
        response
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A playlist, with `token` on its URIs when playback is signed.
fn hls_body(playlist: String, token: Option<&str>) -> OriginBody {
    match token {
        Some(pair) => body::full(signed::hls_with_token(&playlist, pair)),
        None => body::full(playlist),
    }
}

/// `token`: the request's `param=value` pair when playback is signed.
async fn get(
    shared: &Shared,
    route: Route<'_>,
    query: Option<&str>,
    token: Option<&str>,
) -> Response<OriginBody> {
    if route == Route::Time {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        return ok(TEXT, CACHE_NO_STORE, body::full(now));
    }
    let channel = match &route {
        Route::Time => return not_found(),
        Route::Master { channel }
        | Route::Mpd { channel }
        | Route::Media { channel, .. }
        | Route::Init { channel, .. }
        | Route::Part { channel, .. }
        | Route::Segment { channel, .. } => *channel,
    };
    let Some(store) = shared.registry.get(channel) else {
        return not_found();
    };
    match route {
        Route::Time => not_found(),
        Route::Master { .. } => {
            let state = store.read();
            if !state.has_media() {
                return not_found();
            }
            let cache = manifest_cache(&state);
            ok(HLS, &cache, hls_body(hls::master_playlist(&state), token))
        }
        Route::Mpd { .. } => {
            let state = store.read();
            if !state.has_media() {
                return not_found();
            }
            let cache = manifest_cache(&state);
            let mpd = dash::mpd(&state, SystemTime::now());
            let mpd = match token {
                Some(pair) => signed::mpd_with_token(&mpd, pair),
                None => mpd,
            };
            ok(DASH, &cache, body::full(mpd))
        }
        Route::Media { track, .. } => media_playlist(shared, &store, track, query, token).await,
        Route::Init { track, id, .. } => {
            let state = store.read();
            match state.track(track) {
                Some(t) => match t.init(id) {
                    Some(data) => ok(
                        media_type(t.info.kind),
                        CACHE_IMMUTABLE,
                        body::full(data.clone()),
                    ),
                    None => not_found(),
                },
                None => not_found(),
            }
        }
        Route::Part { track, seq, .. } => part(shared, &store, track, seq).await,
        Route::Segment { track, msn, .. } => segment(shared, &store, track, msn).await,
    }
}

/// `<track>/index.m3u8[?_HLS_msn=M[&_HLS_part=N]][&_HLS_skip=YES|v2]`
async fn media_playlist(
    shared: &Shared,
    store: &Arc<ChannelStore>,
    track: &str,
    query: Option<&str>,
    token: Option<&str>,
) -> Response<OriginBody> {
    let directives = match hls::parse_directives(query) {
        Ok(d) => d,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    let blocking = directives.msn.is_some();
    let outcome = park(shared, store, |state| {
        let Some((i, t)) = find_track(state, track) else {
            return Check::Done(not_found());
        };
        if !blocking && t.last_part_position().is_none() {
            // nothing to play yet
            return Check::Done(not_found());
        }
        match hls::readiness(state, i, &directives) {
            hls::Readiness::Ready => {
                let skip = match &directives.skip {
                    hls::Skip::No => hls::Skip::No,
                    hls::Skip::Yes => hls::Skip::Yes,
                };
                let cache = if blocking {
                    blocking_cache(state)
                } else {
                    manifest_cache(state)
                };
                let playlist = hls::media_playlist(state, i, skip);
                Check::Done(ok(HLS, &cache, hls_body(playlist, token)))
            }
            hls::Readiness::Bad(reason) => {
                Check::Done(text(StatusCode::BAD_REQUEST, &format!("{reason}\n")))
            }
            hls::Readiness::Wait => Check::Wait,
        }
    })
    .await;
    outcome.unwrap_or_else(|busy| busy)
}

/// `<track>/part-<seq>.m4s`: present, or hinted (then wait until complete).
async fn part(
    shared: &Shared,
    store: &Arc<ChannelStore>,
    track: &str,
    seq: u64,
) -> Response<OriginBody> {
    park(shared, store, |state| {
        let Some((i, t)) = find_track(state, track) else {
            return Check::Done(not_found());
        };
        match hls::part_availability(state, i, seq) {
            hls::PartAvailability::Ready => {
                let found = t
                    .part(seq)
                    .and_then(|(segment, idx)| segment.parts.get(idx))
                    .map(|p| p.data.clone());
                Check::Done(match found {
                    Some(data) => ok(media_type(t.info.kind), CACHE_IMMUTABLE, body::full(data)),
                    None => not_found(),
                })
            }
            hls::PartAvailability::Wait => Check::Wait,
            hls::PartAvailability::NotFound => Check::Done(not_found()),
        }
    })
    .await
    .unwrap_or_else(|busy| busy)
}

/// `<track>/seg-<msn>.m4s`: whole, growing (streamed), or next (wait, then stream).
async fn segment(
    shared: &Shared,
    store: &Arc<ChannelStore>,
    track: &str,
    msn: u64,
) -> Response<OriginBody> {
    enum Found {
        Done(Response<OriginBody>),
        Growing(&'static str, Duration),
    }
    let found = park(shared, store, |state| {
        let Some((i, t)) = find_track(state, track) else {
            return Check::Done(Found::Done(not_found()));
        };
        match hls::segment_availability(state, i, msn) {
            hls::SegmentAvailability::Complete => Check::Done(Found::Done(match t.segment(msn) {
                Some(s) => ok(
                    media_type(t.info.kind),
                    CACHE_IMMUTABLE,
                    body::parts(s.parts.iter().map(|p| p.data.clone()).collect()),
                ),
                None => not_found(),
            })),
            hls::SegmentAvailability::Growing => {
                Check::Done(Found::Growing(media_type(t.info.kind), park_limit(state)))
            }
            hls::SegmentAvailability::Wait => Check::Wait,
            hls::SegmentAvailability::NotFound => Check::Done(Found::Done(not_found())),
        }
    })
    .await;
    match found {
        Err(busy) => busy,
        Ok(Found::Done(r)) => r,
        Ok(Found::Growing(content_type, stall)) => {
            // The follower subscribes before its first look at the store, so a
            // part added between here and there is not missed: it is either in
            // the first look or wakes the first wait.
            let follower = Follower::new(
                store.clone(),
                track.to_string(),
                msn,
                store.subscribe(),
                shared.shutdown.clone(),
                stall,
            );
            ok(content_type, CACHE_IMMUTABLE, body::growing(follower))
        }
    }
}

enum Check<T> {
    Done(T),
    Wait,
}

/// Evaluate `check` now and after every change of the channel until it is done.
/// `Err` is the response to send instead: 503 when the park limit passes, when
/// `max_parked` requests are already parked, or when the origin shuts down.
async fn park<T>(
    shared: &Shared,
    store: &ChannelStore,
    mut check: impl FnMut(&ChannelState) -> Check<T>,
) -> Result<T, Response<OriginBody>> {
    // Subscribe first: a change between the check and the wait still wakes it.
    let mut changes = store.subscribe();
    let limit = {
        let state = store.read();
        if let Check::Done(t) = check(&state) {
            return Ok(t);
        }
        park_limit(&state)
    };
    let Ok(_permit) = shared.parked.clone().try_acquire_owned() else {
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many parked requests\n",
        );
        // overloaded, not late: tell CDNs and players to back off a little
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    };
    let mut shutdown = shared.shutdown.clone();
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return Err(text(StatusCode::SERVICE_UNAVAILABLE, "channel gone\n"));
                }
            }
            _ = &mut deadline => {
                return Err(text(StatusCode::SERVICE_UNAVAILABLE, "not available in time\n"));
            }
            _ = shutdown.wait_for(|stop| *stop) => {
                return Err(text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
            }
        }
        let state = store.read();
        if let Check::Done(t) = check(&state) {
            return Ok(t);
        }
    }
}

/// A track by id, with its index (what the renderers take). Looked up under
/// each read guard: indices move when tracks are added.
fn find_track<'s>(state: &'s ChannelState, id: &str) -> Option<(usize, &'s Track)> {
    state
        .tracks
        .iter()
        .enumerate()
        .find(|(_, t)| t.info.id == id)
}

/// 3 x target duration, at most [`MAX_PARK`].
fn park_limit(state: &ChannelState) -> Duration {
    Duration::from_secs(
        state
            .target_duration
            .max(1)
            .saturating_mul(PARK_TARGET_DURATIONS),
    )
    .min(MAX_PARK)
}

/// Manifests without blocking directives: at most half a part target (Apple HLS
/// authoring: a stale playlist costs a part of latency), rounded down to whole
/// seconds, so `max-age=0` for parts under 2 s: a CDN may collapse concurrent
/// requests but not serve an old playlist.
fn manifest_cache(state: &ChannelState) -> String {
    let half_part = state.config.part_target / 2.0;
    let secs = if half_part.is_finite() && half_part > 0.0 {
        (half_part.floor() as u64).min(60)
    } else {
        0
    };
    format!("public, max-age={secs}")
}

fn blocking_cache(state: &ChannelState) -> String {
    let secs = state
        .target_duration
        .max(1)
        .saturating_mul(BLOCKING_CACHE_TARGET_DURATIONS)
        .min(3600);
    format!("public, max-age={secs}")
}

fn media_type(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Video => "video/mp4",
        TrackKind::Audio => "audio/mp4",
    }
}

/// Headers every answer carries: CORS for browser players (hls.js reads `Age`
/// for live-edge estimates; dash.js may read `Date` for clock sync).
fn common(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Age, Date, Content-Length, Content-Type"),
    );
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    cache: &str,
    body: OriginBody,
) -> Response<OriginBody> {
    let len = body.size_hint().exact();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    common(h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    r
}

fn ok(content_type: &'static str, cache: &str, body: OriginBody) -> Response<OriginBody> {
    response(StatusCode::OK, content_type, cache, body)
}

fn text(status: StatusCode, message: &str) -> Response<OriginBody> {
    response(
        status,
        TEXT,
        CACHE_NO_STORE,
        body::full(Bytes::copy_from_slice(message.as_bytes())),
    )
}

fn not_found() -> Response<OriginBody> {
    response(
        StatusCode::NOT_FOUND,
        TEXT,
        CACHE_NOT_FOUND,
        body::full(Bytes::from_static(b"not found\n")),
    )
}

/// CORS preflight (Fetch standard, "CORS protocol"): any path, no body.
fn preflight(request: &HeaderMap) -> Response<OriginBody> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    common(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| v.len() <= MAX_PREFLIGHT_HEADERS_BYTES && v.to_str().is_ok())
        .cloned();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked
            .unwrap_or_else(|| HeaderValue::from_static("Range, If-None-Match, If-Modified-Since")),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Headers"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_NO_STORE),
    );
    r
}

/// HEAD: the GET answer's headers, no body. Dropping the body also ends any
/// follower of a growing segment.
fn strip_body(response: Response<OriginBody>) -> Response<OriginBody> {
    let (parts, _body) = response.into_parts();
    Response::from_parts(parts, body::empty())
}
