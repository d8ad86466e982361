//! The admin server on `[server] admin_listen` (SPEC.md, "URLs": API,
//! metrics, health, status page; issue 6 §4): hyper 1 over HTTP/1.1 and
//! h2c, like the origin, with its own small limits.
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | `/` | the status page (`status.html`, embedded; polls the API) |
//! | GET | `/assets/hls.min.js` | hls.js 1.7.4 (Apache-2.0), the status page's preview player |
//! | GET | `/thumbnails/{name}.jpg?w=W` | the channel's latest source keyframe as a JPEG, at most W (default 320, at most 640) wide; the token as with the API (a bearer header, or `access_token=` in the query, RFC 6750 §2.3, for `<img>`) |
//! | GET | `/healthz` | 200 `ok` while the process runs |
//! | GET | `/readyz` | 200 `ready` once every listener is bound; 503 before and during shutdown |
//! | GET | `/metrics` | Prometheus text (`control::metrics`) |
//! | GET | `/api/v1/version` | version, features, backends and encoders available, the GPU report of `ladder doctor --json` |
//! | GET | `/api/v1/status` | the overview (uptime, readiness, publishers, channels) and the GPUs as admission sees them |
//! | GET | `/api/v1/channels` | `{"channels": [...]}`: every known channel (`control::snapshot::ChannelView`) |
//! | GET | `/api/v1/channels/{name}` | one channel |
//! | POST | `/api/v1/channels/{name}/kick` | end the live publish session ("kicked by the admin API") |
//! | POST | `/api/v1/channels/{name}/destinations/{index}/pause` | pause restream destination `index` |
//! | POST | `/api/v1/channels/{name}/destinations/{index}/resume` | resume it |
//!
//! - `/api/v1/*` answers JSON; with `[auth] api_token` set it needs
//!   `Authorization: Bearer <token>` (compared in constant time): without
//!   it, or with another, 401 with `WWW-Authenticate: Bearer`. `/`,
//!   `/healthz`, `/readyz` and `/metrics` need no token (load balancers,
//!   systemd and scrapers; none of them shows a key).
//! - Errors are JSON `{"error": "..."}` under `/api/`: 404 for an unknown
//!   path, channel or destination, 405 (with `Allow`) for a wrong method,
//!   409 when kicking a channel that is not live.
//! - Routing is the pure [`route`]: a path to a [`Resource`], which knows
//!   its methods and whether it needs the token. A new page is a new
//!   variant, a line in [`route`] and an arm in the dispatcher.
//! - No answer holds a stream key: peers are addresses or redacted pull
//!   URLs, destinations redacted URLs. Admin actions are logged with the
//!   channel and the admin client's address.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::app::App;
use crate::control::{metrics, snapshot};
use crate::origin::RequestCounters;
use crate::pipeline::gpu::doctor::DoctorReport;
use crate::pipeline::gpu::probe::GpuInventory;

/// Open admin connections at most; more are accepted and closed at once.
/// Attack: a flood on the admin port holding descriptors the origin and
/// ingest need. A scraper, an operator and a status page need a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request head. Attack: slow-loris
/// holding one of the few connection slots.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head buffered. Attack: huge headers to exhaust memory;
/// admin requests are a path and a token.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Longest request path considered (longer: 404). Attack: multi-kilobyte
/// paths echoed into logs and errors.
pub const MAX_PATH_BYTES: usize = 512;

/// How long connections may take to finish after shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the admin handlers share.
pub struct AdminState {
    app: Arc<App>,
    /// When the process started serving.
    started: SystemTime,
    /// `/readyz`.
    ready: AtomicBool,
    /// `/api/v1/version`, computed once at start (the GPUs do not change).
    version: serde_json::Value,
    /// The origin's answers by status class.
    origin_requests: Arc<RequestCounters>,
    /// This server's.
    requests: RequestCounters,
}

impl AdminState {
    /// The state for `app`; `inventory` is the GPU probe made at start,
    /// `origin_requests` the origin's counters. Not ready until
    /// [`AdminState::set_ready`].
    pub fn new(
        app: Arc<App>,
        inventory: GpuInventory,
        origin_requests: Arc<RequestCounters>,
    ) -> Arc<AdminState> {
        let version = version_json(&app, inventory);
        Arc::new(AdminState {
            app,
            started: SystemTime::now(),
            ready: AtomicBool::new(false),
            version,
            origin_requests,
            requests: RequestCounters::default(),
        })
    }

    /// `/readyz` answers 200 (`true`) or 503 (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Everything `/metrics` shows, now.
    pub fn snapshot(&self) -> snapshot::Snapshot {
        let channels = snapshot::channels(&self.app);
        let overview = snapshot::overview(&self.app, &channels, self.started, self.is_ready());
        let mut http = Vec::new();
        for (server, counters) in [
            ("origin", &*self.origin_requests),
            ("admin", &self.requests),
        ] {
            for (class, count) in counters.snapshot() {
                http.push(snapshot::HttpView {
                    server,
                    class,
                    count,
                });
            }
        }
        snapshot::Snapshot {
            overview,
            channels,
            gpus: snapshot::gpus(&self.app),
            http,
        }
    }
}

/// `/api/v1/version`'s answer.
fn version_json(app: &App, inventory: GpuInventory) -> serde_json::Value {
    let nvdec = inventory.gpus.iter().any(|g| g.has_nvdec());
    let nvenc = inventory
        .gpus
        .iter()
        .any(|g| g.has_nvdec() && g.has_nvenc());
    let mut backends = vec!["cpu"];
    if nvdec {
        backends.push("hybrid");
    }
    if nvenc {
        backends.push("gpu");
    }
    let mut encoders = vec!["x264", "rav1e"];
    if inventory.gpus.iter().any(|g| g.has_nvenc()) {
        encoders.push("nvenc");
    }
    let report = DoctorReport::new(&app.config(), inventory);
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "features": snapshot::features(),
        "backends": backends,
        "encoders": encoders,
        "gpu": report,
    })
}

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// `/`: the status page.
    StatusPage,
    /// `/healthz`.
    Healthz,
    /// `/readyz`.
    Readyz,
    /// `/metrics`.
    Metrics,
    /// `/api/v1/version`.
    Version,
    /// `/api/v1/status`.
    Status,
    /// `/api/v1/channels`.
    Channels,
    /// `/api/v1/channels/{name}`.
    Channel(&'a str),
    /// `/api/v1/channels/{name}/kick`.
    Kick(&'a str),
    /// `/api/v1/channels/{name}/destinations/{index}/pause` (`true`) or
    /// `/resume` (`false`).
    Pause(&'a str, usize, bool),
    /// `/assets/hls.min.js`.
    HlsJs,
    /// `/thumbnails/{name}.jpg`.
    Thumbnail(&'a str),
}

impl Resource<'_> {
    /// The methods it answers.
    pub fn methods(&self) -> &'static [Method] {
        match self {
            Resource::Kick(_) | Resource::Pause(..) => &[Method::POST],
            _ => &[Method::GET, Method::HEAD],
        }
    }

    /// Under `/api/`: JSON answers, and the token when one is set.
    pub fn is_api(&self) -> bool {
        !matches!(
            self,
            Resource::StatusPage
                | Resource::Healthz
                | Resource::Readyz
                | Resource::Metrics
                | Resource::HlsJs
                | Resource::Thumbnail(_)
        )
    }

    /// Needs the token when one is set (the API; and thumbnails, which show
    /// the picture).
    pub fn needs_token(&self) -> bool {
        self.is_api() || matches!(self, Resource::Thumbnail(_))
    }
}

/// A path (still percent-encoded; nothing is decoded, so a channel name
/// with anything outside `[A-Za-z0-9_-]` does not match) to what it names.
/// `None`: 404.
pub fn route(path: &str) -> Option<Resource<'_>> {
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    match path {
        "/" => return Some(Resource::StatusPage),
        "/healthz" => return Some(Resource::Healthz),
        "/readyz" => return Some(Resource::Readyz),
        "/metrics" => return Some(Resource::Metrics),
        "/api/v1/version" => return Some(Resource::Version),
        "/api/v1/status" => return Some(Resource::Status),
        "/api/v1/channels" => return Some(Resource::Channels),
        "/assets/hls.min.js" => return Some(Resource::HlsJs),
        _ => {}
    }
    if let Some(file) = path.strip_prefix("/thumbnails/") {
        let name = file.strip_suffix(".jpg")?;
        crate::control::config::check_name(name).ok()?;
        return Some(Resource::Thumbnail(name));
    }
    let rest = path.strip_prefix("/api/v1/channels/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let name = *parts.first()?;
    crate::control::config::check_name(name).ok()?;
    match parts[1..] {
        [] => Some(Resource::Channel(name)),
        ["kick"] => Some(Resource::Kick(name)),
        ["destinations", index, action] => {
            let canonical = !index.is_empty()
                && index.len() <= 4
                && index.bytes().all(|b| b.is_ascii_digit())
                && (index == "0" || !index.starts_with('0'));
            if !canonical {
                return None;
            }
            let index: usize = index.parse().ok()?;
            match action {
                "pause" => Some(Resource::Pause(name, index, true)),
                "resume" => Some(Resource::Pause(name, index, false)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `header` (the `Authorization` value) carries `token`: the
/// `Bearer` scheme (any case), one space, the token, compared in constant
/// time.
pub fn authorized(header: Option<&HeaderValue>, token: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && crate::control::config::constant_time_eq(given.as_bytes(), token.as_bytes())
}

type AdminBody = Full<Bytes>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<AdminBody> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            respond(status, "application/json", body)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response<AdminBody> {
    json(status, &serde_json::json!({ "error": message }))
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    respond(status, "text/plain; charset=utf-8", body)
}

/// Answer one request. Never panics on request input.
pub async fn handle<B>(
    state: &AdminState,
    req: Request<B>,
    client: SocketAddr,
) -> Response<AdminBody> {
    let path = req.uri().path();
    let Some(resource) = route(path) else {
        return if path.starts_with("/api/") {
            error(StatusCode::NOT_FOUND, "no such API path")
        } else {
            text(StatusCode::NOT_FOUND, "not found\n")
        };
    };
    if !resource.methods().contains(req.method()) {
        let allow = resource
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = if resource.is_api() {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        } else {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        };
        if let Ok(v) = HeaderValue::from_str(&allow) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    if resource.needs_token() {
        if let Some(token) = &state.app.config().auth.api_token {
            let given = req.headers().get(header::AUTHORIZATION);
            let in_query = matches!(resource, Resource::Thumbnail(_))
                && query_param(req.uri().query(), "access_token").is_some_and(|t| {
                    crate::control::config::constant_time_eq(t.as_bytes(), token.as_bytes())
                });
            if !authorized(given, token) && !in_query {
                let (message, challenge) = match given {
                    None => ("missing bearer token", "Bearer realm=\"ladder\""),
                    Some(_) => (
                        "invalid bearer token",
                        "Bearer realm=\"ladder\", error=\"invalid_token\"",
                    ),
                };
                let mut r = error(StatusCode::UNAUTHORIZED, message);
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
                return r;
            }
        }
    }
    let head = req.method() == Method::HEAD;
    let response = match resource {
        Resource::Thumbnail(name) => {
            let width = query_param(req.uri().query(), "w")
                .and_then(|w| w.parse().ok())
                .unwrap_or(DEFAULT_THUMBNAIL_WIDTH);
            thumbnail(state, name, width).await
        }
        _ => dispatch(state, resource, client),
    };
    if head {
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Full::new(Bytes::new()))
    } else {
        response
    }
}

fn dispatch(state: &AdminState, resource: Resource<'_>, client: SocketAddr) -> Response<AdminBody> {
    let app = &state.app;
    match resource {
        Resource::StatusPage => respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
        Resource::HlsJs => {
            let mut r = respond(StatusCode::OK, "text/javascript; charset=utf-8", HLS_JS);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            r
        }
        // answered in `handle` (it decodes on a blocking thread)
        Resource::Thumbnail(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "unreachable"),
        Resource::Healthz => text(StatusCode::OK, "ok\n"),
        Resource::Readyz => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        Resource::Metrics => respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(&state.snapshot()),
        ),
        Resource::Version => json(StatusCode::OK, &state.version),
        Resource::Status => {
            let snapshot = state.snapshot();
            json(
                StatusCode::OK,
                &serde_json::json!({ "overview": snapshot.overview, "gpus": snapshot.gpus }),
            )
        }
        Resource::Channels => json(
            StatusCode::OK,
            &serde_json::json!({ "channels": snapshot::channels(app) }),
        ),
        Resource::Channel(name) => match snapshot::channel(app, name) {
            Some(view) => json(StatusCode::OK, &view),
            None => error(StatusCode::NOT_FOUND, "no such channel"),
        },
        Resource::Kick(name) => {
            if snapshot::channel(app, name).is_none() {
                return error(StatusCode::NOT_FOUND, "no such channel");
            }
            match app.kick(name) {
                Some(peer) => {
                    info!(channel = %name, %peer, admin = %client, "publisher kicked by the admin API");
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "channel": name, "kicked": peer.to_string() }),
                    )
                }
                None => error(StatusCode::CONFLICT, "channel is not live"),
            }
        }
        Resource::Pause(name, index, paused) => {
            if snapshot::channel(app, name).is_none() {
                return error(StatusCode::NOT_FOUND, "no such channel");
            }
            match app.set_destination_paused(name, index, paused) {
                Some(()) => {
                    info!(
                        channel = %name,
                        destination = index,
                        admin = %client,
                        "restream destination {} by the admin API",
                        if paused { "paused" } else { "resumed" }
                    );
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "channel": name, "destination": index, "paused": paused }),
                    )
                }
                None => error(StatusCode::NOT_FOUND, "no such destination"),
            }
        }
    }
}

/// The status page: one HTML file with its style and script, polling the API.
const STATUS_PAGE: &str = include_str!("status.html");
/// hls.js 1.7.4 (Apache-2.0, `assets/hls.js-LICENSE`): the preview player.
const HLS_JS: &[u8] = include_bytes!("assets/hls.min.js");
/// Thumbnail width when the request does not say.
const DEFAULT_THUMBNAIL_WIDTH: u32 = 320;

/// A query parameter's raw value (no decoding: the values used here are
/// digits and tokens).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

/// `/thumbnails/{name}.jpg`: the latest source keyframe, decoded and encoded
/// on a blocking thread (tens of milliseconds), never cached: each request
/// shows the newest keyframe.
async fn thumbnail(state: &AdminState, name: &str, width: u32) -> Response<AdminBody> {
    let keyframe = state.app.channel_runtime(name).and_then(|c| {
        c.latest_keyframe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    });
    let Some((config, frame)) = keyframe else {
        return text(StatusCode::NOT_FOUND, "no keyframe yet\n");
    };
    let made = tokio::task::spawn_blocking(move || {
        crate::pipeline::cpu::thumbnail::thumbnail_jpeg(&config, &frame, width)
    })
    .await;
    match made {
        Ok(Ok(jpeg)) => respond(StatusCode::OK, "image/jpeg", jpeg),
        Ok(Err(e)) => {
            tracing::debug!(channel = %name, "thumbnail: {e}");
            text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cannot make a thumbnail of this keyframe\n",
            )
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "thumbnail failed\n"),
    }
}

/// Serve the admin endpoints on `listener` until `shutdown` resolves, then
/// let connections finish for at most [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let builder = Arc::new(builder());
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, client) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(1);
                x
            }
            Err(e) => {
                warn!(error = %e, ?backoff, "admin: accept failed, backing off");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%client, "admin: connection limit reached, closing");
            continue;
        };
        let state = state.clone();
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    let response = handle(&state, req, client).await;
                    state.requests.count(response.status());
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let finished = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stopped.wait_for(|s| *s) => None,
            };
            let r = match finished {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%client, error = %e, "admin: connection ended with an error");
            }
        });
    }
    drop(listener);
    stop.send_replace(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(16)
        .max_header_list_size(MAX_REQUEST_HEAD_BYTES as u32);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/"), Some(Resource::StatusPage));
        assert_eq!(route("/metrics"), Some(Resource::Metrics));
        assert_eq!(route("/api/v1/channels"), Some(Resource::Channels));
        assert_eq!(
            route("/api/v1/channels/news"),
            Some(Resource::Channel("news"))
        );
        assert_eq!(
            route("/api/v1/channels/news/kick"),
            Some(Resource::Kick("news"))
        );
        assert_eq!(
            route("/api/v1/channels/a-b_1/destinations/0/pause"),
            Some(Resource::Pause("a-b_1", 0, true))
        );
        assert_eq!(
            route("/api/v1/channels/news/destinations/12/resume"),
            Some(Resource::Pause("news", 12, false))
        );
        let long = format!("/api/v1/channels/{}", "a".repeat(MAX_PATH_BYTES));
        for bad in [
            "",
            "/api",
            "/api/v1",
            "/api/v1/",
            "/api/v1/channels/",
            "/api/v1/channels//kick",
            "/api/v1/channels/../kick",
            "/api/v1/channels/a%2fb",
            "/api/v1/channels/news/",
            "/api/v1/channels/news/kick/",
            "/api/v1/channels/news/destinations/01/pause",
            "/api/v1/channels/news/destinations/-1/pause",
            "/api/v1/channels/news/destinations/99999/pause",
            "/api/v1/channels/news/destinations/x/pause",
            "/api/v1/channels/news/destinations/0/stop",
            "/api/v1/channels/news/destinations/0",
            "/metrics/",
            "/API/v1/channels",
            &long,
        ] {
            assert_eq!(route(bad), None, "{bad:?}");
        }
        assert_eq!(Resource::Kick("a").methods(), &[Method::POST]);
        assert!(Resource::Channels.is_api());
        assert!(!Resource::Metrics.is_api());
    }

    fn state(auth: &str) -> Arc<AdminState> {
        let text = format!(
            "[auth]\n{auth}\n[[channels]]\nname = \"news\"\nkey = \"SECRET-k1\"\nrestream = [\"rtmp://a.example/live/SECRET-dest\"]\n[ladders.default]\nbackend = \"cpu\"\nrenditions = [ {{ name = \"source\", passthrough = true }} ]\n"
        );
        let config = crate::control::config::Config::parse(&text, "t.toml").unwrap();
        let app = App::new(
            config,
            crate::pipeline::admission::Admission::new(Vec::new()),
        );
        let inventory = GpuInventory {
            driver: None,
            no_gpu: Some("no NVIDIA driver (test)".into()),
            no_gpu_detail: None,
            gpus: Vec::new(),
        };
        AdminState::new(app, inventory, Arc::default())
    }

    async fn call(
        state: &AdminState,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, http::HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = handle(state, req.body(()).unwrap(), "127.0.0.1:1".parse().unwrap()).await;
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn readiness_follows_the_listeners_and_the_shutdown() {
        let s = state("");
        assert_eq!(
            call(&s, Method::GET, "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.set_ready(true);
        assert_eq!(
            call(&s, Method::GET, "/readyz", None).await.0,
            StatusCode::OK
        );
        s.set_ready(false);
        assert_eq!(
            call(&s, Method::GET, "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // healthy all along
        assert_eq!(
            call(&s, Method::GET, "/healthz", None).await.0,
            StatusCode::OK
        );
        let (_, _, metrics) = call(&s, Method::GET, "/metrics", None).await;
        assert!(metrics.contains("\nladder_ready 0\n"), "{metrics}");
    }

    #[tokio::test]
    async fn the_token_guards_the_api_only() {
        let s = state("api_token = \"t0k3n\"");
        let (status, headers, body) = call(&s, Method::GET, "/api/v1/channels", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer realm=\"ladder\"");
        assert_eq!(body.trim(), "{\n  \"error\": \"missing bearer token\"\n}");
        let (status, headers, _) =
            call(&s, Method::GET, "/api/v1/channels", Some("t0k3n-not")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        // POSTs too, before anything is done
        let (status, _, _) = call(&s, Method::POST, "/api/v1/channels/news/kick", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, headers, body) =
            call(&s, Method::GET, "/api/v1/channels", Some("t0k3n")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["channels"][0]["name"], "news");
        assert_eq!(v["channels"][0]["live"], false);
        assert_eq!(
            v["channels"][0]["destinations"][0]["target"],
            "rtmp://a.example/live/<key>"
        );
        assert!(!body.contains("SECRET"), "{body}");
        for open in ["/", "/healthz", "/metrics"] {
            assert_eq!(
                call(&s, Method::GET, open, None).await.0,
                StatusCode::OK,
                "{open}"
            );
        }
    }

    #[tokio::test]
    async fn errors_are_json_with_the_right_status() {
        let s = state("");
        let cases: [(Method, &str, StatusCode); 8] = [
            (Method::GET, "/api/v1/nothing", StatusCode::NOT_FOUND),
            (Method::GET, "/api/v1/channels/nope", StatusCode::NOT_FOUND),
            (
                Method::POST,
                "/api/v1/channels/nope/kick",
                StatusCode::NOT_FOUND,
            ),
            (
                Method::POST,
                "/api/v1/channels/news/kick",
                StatusCode::CONFLICT,
            ),
            (
                Method::POST,
                "/api/v1/channels/news/destinations/1/pause",
                StatusCode::NOT_FOUND,
            ),
            (
                Method::GET,
                "/api/v1/channels/news/kick",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Method::POST,
                "/api/v1/channels",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Method::DELETE,
                "/api/v1/version",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (method, path, expected) in cases {
            let (status, headers, body) = call(&s, method.clone(), path, None).await;
            assert_eq!(status, expected, "{method} {path}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].is_string(), "{method} {path}: {body}");
            if expected == StatusCode::METHOD_NOT_ALLOWED {
                let allow = headers[header::ALLOW].to_str().unwrap();
                assert!(allow == "POST" || allow == "GET, HEAD", "{allow}");
            }
        }
        // pause a configured destination of a channel that never published:
        // remembered for its first session
        let (status, _, body) = call(
            &s,
            Method::POST,
            "/api/v1/channels/news/destinations/0/pause",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, _, body) = call(&s, Method::GET, "/api/v1/channels/news", None).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["destinations"][0]["paused"], true);
        assert_eq!(v["destinations"][0]["state"], "paused");
        // HEAD: headers, no body
        let (status, _, body) = call(&s, Method::HEAD, "/api/v1/version", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
        let (_, _, body) = call(&s, Method::GET, "/api/v1/version", None).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["backends"], serde_json::json!(["cpu"]));
        assert_eq!(v["gpu"]["no_gpu"], "no NVIDIA driver (test)");
    }

    #[test]
    fn bearer_tokens() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(authorized(Some(&v("Bearer t0k")), "t0k"));
        assert!(authorized(Some(&v("bearer t0k")), "t0k"));
        assert!(!authorized(None, "t0k"));
        assert!(!authorized(Some(&v("Bearer")), "t0k"));
        assert!(!authorized(Some(&v("Bearer t0")), "t0k"));
        assert!(!authorized(Some(&v("Bearer t0kk")), "t0k"));
        assert!(!authorized(Some(&v("Basic t0k")), "t0k"));
        assert!(!authorized(Some(&v("Bearer  t0k")), "t0k"));
        assert!(!authorized(Some(&v("t0k")), "t0k"));
    }
}
