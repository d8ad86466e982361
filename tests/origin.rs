//! The origin as a player or CDN edge sees it: real TCP on loopback, HTTP/1.1
//! (reqwest, and raw sockets where the wire matters) and HTTP/2 prior knowledge.
//! The store is filled with its own methods, as the packager does.

use bytes::Bytes;
use ladder::origin::{serve, OriginConfig, OriginError};
use ladder::packaging::store::{ChannelStore, Registry, StoreConfig, TrackInfo, TrackKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const VIDEO: &str = "720p";
const AUDIO: &str = "audio";
const FIRST_MSN: u64 = 100;

fn video_info() -> TrackInfo {
    TrackInfo {
        id: VIDEO.into(),
        kind: TrackKind::Video,
        timescale: 90_000,
        codec: "avc1.64001f".into(),
        width: 1280,
        height: 720,
        frame_rate: Some(30.0),
        sample_rate: 0,
        channels: 0,
        nominal_bandwidth: 3_000_000,
    }
}

fn audio_info() -> TrackInfo {
    TrackInfo {
        id: AUDIO.into(),
        kind: TrackKind::Audio,
        timescale: 48_000,
        codec: "mp4a.40.2".into(),
        width: 0,
        height: 0,
        frame_rate: None,
        sample_rate: 48_000,
        channels: 2,
        nominal_bandwidth: 128_000,
    }
}

/// Distinct bytes per part and track, of varying length.
fn part_bytes(track: &str, n: u64) -> Bytes {
    Bytes::from(format!("<{track} part {n}>").repeat(3 + n as usize % 5))
}

fn track_index(store: &ChannelStore, id: &str) -> usize {
    store.read().track_index(id).expect("track exists")
}

/// Append a part to the video track; returns its part sequence number.
fn add_video_part(store: &ChannelStore) -> u64 {
    let v = track_index(store, VIDEO);
    let n = store.read().tracks[v].next_part_seq;
    store
        .write(|s| s.add_part(v, 45_000, n == 0, part_bytes(VIDEO, n)))
        .expect("open segment")
}

fn open_video_segment(store: &ChannelStore, msn: u64) {
    let v = track_index(store, VIDEO);
    store.write(|s| s.open_segment(v, msn, 1, false, 0, SystemTime::now()));
}

fn close_video_segment(store: &ChannelStore) {
    let v = track_index(store, VIDEO);
    store.write(|s| s.close_segment(v));
}

struct Server {
    addr: SocketAddr,
    store: Arc<ChannelStore>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), OriginError>>,
}

impl Server {
    /// An origin with channel `news`: video and audio tracks with init 1,
    /// segment 100 open on video with parts 0 and 1, one audio segment.
    async fn start(store_config: StoreConfig, origin: OriginConfig) -> Server {
        let registry = Registry::new();
        let store = registry.get_or_create("news", &store_config);
        store.write(|s| {
            s.live = true;
            let v = s.upsert_track(video_info());
            s.add_init(v, 1, Bytes::from_static(b"video init"));
            let a = s.upsert_track(audio_info());
            s.add_init(a, 1, Bytes::from_static(b"audio init"));
            s.open_segment(a, FIRST_MSN, 1, false, 0, SystemTime::now());
            s.add_part(a, 24_000, true, part_bytes(AUDIO, 0));
        });
        open_video_segment(&store, FIRST_MSN);
        add_video_part(&store);
        add_video_part(&store);
        registry.get_or_create("empty", &store_config);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, registry.clone(), origin, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            store,
            stop: Some(stop),
            task,
        }
    }

    async fn default() -> Server {
        Server::start(StoreConfig::default(), OriginConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Shut down and check `serve` returns Ok within the drain timeout.
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task not panicked");
        assert!(r.is_ok(), "{r:?}");
    }
}

fn h1() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn h2() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// A raw HTTP/1.1 request with `Connection: close`: status, head, body. The
/// path goes on the wire exactly as written (no client-side normalisation).
async fn raw(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), buf[split + 4..].to_vec())
}

#[tokio::test]
async fn routes_content_types_and_cache_policy() {
    let server = Server::default().await;
    let c = h1();
    let get = |p: &str| c.get(server.url(p)).send();

    let r = get("/live/news/master.m3u8").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(header(&r, "cache-control"), "public, max-age=0");
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(header(&r, "access-control-expose-headers").contains("Age"));
    assert!(r.text().await.unwrap().starts_with("#EXTM3U"));

    let r = get("/live/news/720p/index.m3u8").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(header(&r, "cache-control"), "public, max-age=0");
    let playlist = r.text().await.unwrap();
    assert!(playlist.contains("part-1.m4s"), "{playlist}");

    let r = get("/live/news/manifest.mpd").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/dash+xml");
    assert!(r.text().await.unwrap().contains("<MPD"));

    let immutable = "public, max-age=31536000, immutable";
    let r = get("/live/news/720p/init-1.mp4").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "video/mp4");
    assert_eq!(header(&r, "cache-control"), immutable);
    assert_eq!(r.bytes().await.unwrap(), "video init");

    let r = get("/live/news/audio/init-1.mp4").await.unwrap();
    assert_eq!(header(&r, "content-type"), "audio/mp4");
    assert_eq!(r.bytes().await.unwrap(), "audio init");

    let r = get("/live/news/720p/part-1.m4s").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "video/mp4");
    assert_eq!(header(&r, "cache-control"), immutable);
    assert_eq!(r.bytes().await.unwrap(), part_bytes(VIDEO, 1));

    let r = get("/live/news/audio/part-0.m4s").await.unwrap();
    assert_eq!(header(&r, "content-type"), "audio/mp4");
    assert_eq!(r.bytes().await.unwrap(), part_bytes(AUDIO, 0));

    // a complete segment: the parts back to back, with Content-Length
    close_video_segment(&server.store);
    let r = get("/live/news/720p/seg-100.m4s").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "video/mp4");
    assert_eq!(header(&r, "cache-control"), immutable);
    let whole = [part_bytes(VIDEO, 0), part_bytes(VIDEO, 1)].concat();
    assert_eq!(header(&r, "content-length"), whole.len().to_string());
    assert_eq!(r.bytes().await.unwrap(), whole);

    // the clock, for DASH UTCTiming
    let r = get("/time").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/plain");
    assert_eq!(header(&r, "cache-control"), "no-store");
    let t = humantime::parse_rfc3339(&r.text().await.unwrap()).unwrap();
    let skew = SystemTime::now().duration_since(t).unwrap_or_default();
    assert!(skew < Duration::from_secs(5));

    // unknown channel, unknown track, channel without media, missing names
    for p in [
        "/live/nope/master.m3u8",
        "/live/empty/master.m3u8",
        "/live/empty/manifest.mpd",
        "/live/news/1080p/index.m3u8",
        "/live/news/720p/init-2.mp4",
        "/live/news/720p/part-99.m4s",
        "/live/news/720p/seg-5.m4s",
        "/live/news/720p/seg-200.m4s",
        "/",
    ] {
        let r = get(p).await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
        assert_eq!(header(&r, "cache-control"), "no-store", "{p}");
        assert_eq!(header(&r, "access-control-allow-origin"), "*", "{p}");
    }
    server.stop().await;
}

#[tokio::test]
async fn head_options_and_other_methods() {
    let server = Server::default().await;
    let c = h1();

    // HEAD: the GET headers with the length, no body
    let (status, head, body) = raw(server.addr, "HEAD", "/live/news/720p/part-0.m4s").await;
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("content-length: {}", part_bytes(VIDEO, 0).len())),
        "{head}"
    );
    assert!(head.contains("content-type: video/mp4"));
    assert!(body.is_empty());

    // HEAD of a growing segment answers at once, without a body
    let (status, head, body) = raw(server.addr, "HEAD", "/live/news/720p/seg-100.m4s").await;
    assert_eq!(status, 200);
    assert!(!head.contains("\ncontent-length:"), "{head}");
    assert!(body.is_empty());

    // CORS preflight
    let r = c
        .request(
            reqwest::Method::OPTIONS,
            server.url("/live/news/master.m3u8"),
        )
        .header("Origin", "https://player.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(header(&r, "access-control-allow-methods").contains("GET"));
    assert_eq!(header(&r, "access-control-allow-headers"), "range");
    assert!(!header(&r, "access-control-max-age").is_empty());

    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = c
            .request(m.parse().unwrap(), server.url("/live/news/master.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{m}");
        assert_eq!(header(&r, "allow"), "GET, HEAD, OPTIONS");
        assert_eq!(header(&r, "cache-control"), "no-store");
    }
    server.stop().await;
}

#[tokio::test]
async fn traversal_and_bad_names_are_404() {
    let server = Server::default().await;
    for p in [
        "/live/../etc/passwd",
        "/live/news/../../etc/passwd",
        "/live/a/%2e%2e/x",
        "/live/news%2f720p/index.m3u8",
        "/live/news/720p%2Fseg-100.m4s",
        "/live/news/720p/seg-abc.m4s",
        "/live/news/720p/seg-99999999999999999999999.m4s",
        "/live/news/720p/seg-0100.m4s",
        "/live/news/720p/seg--1.m4s",
        "/live/news/720p/part-+1.m4s",
        "/live/news/720p/init-1.mp4/",
        "/live/news/./master.m3u8",
        "/etc/passwd",
        "/live/news/master.m3u8%00",
        &format!("/live/news/{}/index.m3u8", "a".repeat(300)),
        &format!("/live/{}", "x/".repeat(2000)),
    ] {
        let (status, head, _) = raw(server.addr, "GET", p).await;
        assert_eq!(status, 404, "{p}");
        assert!(head.contains("access-control-allow-origin: *"));
    }
    server.stop().await;
}

#[tokio::test]
async fn blocking_reload_returns_only_after_the_part_exists() {
    let server = Server::default().await;
    let c = h1();

    // bad directives: 400 at once, with the reason, not cached
    for q in ["_HLS_part=1", "_HLS_msn=abc", "_HLS_msn=-1"] {
        let r = c
            .get(server.url(&format!("/live/news/720p/index.m3u8?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(header(&r, "cache-control"), "no-store");
        assert!(!r.text().await.unwrap().trim().is_empty());
    }
    // far in the future: 400 at once, never parked
    let started = Instant::now();
    let r = c
        .get(server.url("/live/news/720p/index.m3u8?_HLS_msn=9223372036854775808"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(started.elapsed() < Duration::from_secs(1));

    // parts 0 and 1 of segment 100 exist; ask for part 2
    let url = server.url("/live/news/720p/index.m3u8?_HLS_msn=100&_HLS_part=2");
    let request = tokio::spawn(async move { c.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "answered before the part existed");

    let seq = add_video_part(&server.store);
    assert_eq!(seq, 2);
    let r = tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .expect("answered once the part exists")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/vnd.apple.mpegurl");
    // the query makes the answer unique: cacheable for a few target durations
    assert_eq!(header(&r, "cache-control"), "public, max-age=12");
    let playlist = r.text().await.unwrap();
    assert!(playlist.contains("part-2.m4s"), "{playlist}");

    // already there: answered at once
    let started = Instant::now();
    let r = h1()
        .get(server.url("/live/news/720p/index.m3u8?_HLS_msn=100&_HLS_part=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test]
async fn hinted_part_blocks_then_returns_its_bytes() {
    let server = Server::default().await;
    let next = server.store.read().tracks[track_index(&server.store, VIDEO)].next_part_seq;
    let url = server.url(&format!("/live/news/720p/part-{next}.m4s"));
    let request = tokio::spawn(async move {
        let r = h2().get(url).send().await.unwrap();
        let status = r.status();
        (status, r.bytes().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "answered before the part existed");

    // a part beyond the hint is not there and not coming: 404 at once
    let r = h1()
        .get(server.url(&format!("/live/news/720p/part-{}.m4s", next + 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    assert_eq!(add_video_part(&server.store), next);
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .expect("answered once the part exists")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, part_bytes(VIDEO, next));
    server.stop().await;
}

#[tokio::test]
async fn parked_requests_get_503_after_three_target_durations() {
    // segment target 0.5 s -> EXT-X-TARGETDURATION 1 -> 503 after 3 s
    let config = StoreConfig {
        segment_target: 0.5,
        part_target: 0.25,
        window_segments: 8,
        ..StoreConfig::default()
    };
    let server = Server::start(config, OriginConfig::default()).await;
    let started = Instant::now();
    let paths = [
        "/live/news/720p/index.m3u8?_HLS_msn=100&_HLS_part=2",
        "/live/news/720p/part-2.m4s",
        "/live/news/720p/seg-101.m4s",
    ];
    let requests: Vec<_> = paths
        .iter()
        .map(|p| {
            let url = server.url(p);
            tokio::spawn(async move {
                let r = h1().get(url).send().await.unwrap();
                (
                    r.status(),
                    header(&r, "cache-control").to_string(),
                    Instant::now(),
                )
            })
        })
        .collect();
    for (p, request) in paths.iter().zip(requests) {
        let (status, cache, at) = request.await.unwrap();
        let waited = at - started;
        assert_eq!(status, 503, "{p}");
        assert_eq!(cache, "no-store", "{p}");
        assert!(waited >= Duration::from_millis(2900), "{p}: {waited:?}");
        assert!(waited < Duration::from_secs(6), "{p}: {waited:?}");
    }
    server.stop().await;
}

/// Read one HTTP/1.1 response head.
async fn read_head(r: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "connection closed in the head");
        if line == "\r\n" {
            return head.to_ascii_lowercase();
        }
        head.push_str(&line);
    }
}

/// Read one chunk of chunked transfer coding; `None` for the last-chunk, `Err`
/// for a connection closed mid-body (truncation).
async fn read_chunk(r: &mut BufReader<TcpStream>) -> Result<Option<Vec<u8>>, ()> {
    let mut line = String::new();
    if r.read_line(&mut line).await.map_err(|_| ())? == 0 {
        return Err(());
    }
    let size = usize::from_str_radix(line.trim_end(), 16).expect("chunk size line");
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data).await.map_err(|_| ())?;
    assert_eq!(&data[size..], b"\r\n");
    data.truncate(size);
    Ok((size > 0).then_some(data))
}

/// Nothing arrives on the socket within `d`.
async fn quiet_for(r: &mut BufReader<TcpStream>, d: Duration) -> bool {
    assert!(r.buffer().is_empty());
    tokio::time::timeout(d, r.fill_buf()).await.is_err()
}

#[tokio::test]
async fn growing_segment_is_sent_chunk_by_chunk_over_http1() {
    let server = Server::default().await;
    let s = TcpStream::connect(server.addr).await.unwrap();
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(b"GET /live/news/720p/seg-100.m4s HTTP/1.1\r\nHost: o\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut r).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("\ncontent-length:"), "{head}");
    assert!(head.contains("content-type: video/mp4"));

    // the parts already written, one chunk each
    for n in 0..2 {
        let chunk = read_chunk(&mut r).await.unwrap().unwrap();
        assert_eq!(chunk, part_bytes(VIDEO, n));
    }
    // nothing more until the packager adds a part; then exactly that part
    for _ in 0..2 {
        assert!(quiet_for(&mut r, Duration::from_millis(200)).await);
        let n = add_video_part(&server.store);
        let chunk = tokio::time::timeout(Duration::from_secs(2), read_chunk(&mut r))
            .await
            .expect("the new part is sent at once")
            .unwrap()
            .unwrap();
        assert_eq!(chunk, part_bytes(VIDEO, n));
    }
    // the segment completes: the last-chunk ends the body
    assert!(quiet_for(&mut r, Duration::from_millis(200)).await);
    close_video_segment(&server.store);
    let end = tokio::time::timeout(Duration::from_secs(2), read_chunk(&mut r))
        .await
        .unwrap();
    assert_eq!(end, Ok(None));

    // same connection: the next segment, asked before it begins, is parked,
    // then streamed as it grows
    r.get_mut()
        .write_all(b"GET /live/news/720p/seg-101.m4s HTTP/1.1\r\nHost: o\r\n\r\n")
        .await
        .unwrap();
    assert!(quiet_for(&mut r, Duration::from_millis(300)).await);
    open_video_segment(&server.store, 101);
    let n = add_video_part(&server.store);
    let head = read_head(&mut r).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let chunk = read_chunk(&mut r).await.unwrap().unwrap();
    assert_eq!(chunk, part_bytes(VIDEO, n));
    close_video_segment(&server.store);
    assert_eq!(read_chunk(&mut r).await, Ok(None));
    server.stop().await;
}

#[tokio::test]
async fn stalled_growing_segment_is_cut_not_ended() {
    // TD 1 s: a segment with no new part for 3 s is cut, so that no CDN caches
    // a truncated segment as complete
    let config = StoreConfig {
        segment_target: 0.5,
        part_target: 0.25,
        window_segments: 8,
        ..StoreConfig::default()
    };
    let server = Server::start(config, OriginConfig::default()).await;
    let s = TcpStream::connect(server.addr).await.unwrap();
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(b"GET /live/news/720p/seg-100.m4s HTTP/1.1\r\nHost: o\r\n\r\n")
        .await
        .unwrap();
    read_head(&mut r).await;
    read_chunk(&mut r).await.unwrap().unwrap();
    read_chunk(&mut r).await.unwrap().unwrap();
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(6), read_chunk(&mut r))
        .await
        .expect("cut within the stall limit");
    assert_eq!(end, Err(()), "closed without the last-chunk");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    server.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_and_growing_segment_frames() {
    let server = Server::default().await;
    let c = h2();
    let r = c
        .get(server.url("/live/news/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/vnd.apple.mpegurl");

    let r = c
        .head(server.url("/live/news/720p/init-1.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(header(&r, "content-length"), "10");

    let mut r = c
        .get(server.url("/live/news/720p/seg-100.m4s"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // reads until exactly `want` bytes arrived (DATA frames may split a part)
    async fn read_exactly(r: &mut reqwest::Response, want: &[u8]) {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let chunk = tokio::time::timeout(Duration::from_secs(2), r.chunk())
                .await
                .expect("data in time")
                .unwrap()
                .expect("body not ended");
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, want);
    }
    read_exactly(
        &mut r,
        &[part_bytes(VIDEO, 0), part_bytes(VIDEO, 1)].concat(),
    )
    .await;
    for _ in 0..3 {
        let pending = tokio::time::timeout(Duration::from_millis(200), r.chunk()).await;
        assert!(pending.is_err(), "data before the part was added");
        let n = add_video_part(&server.store);
        read_exactly(&mut r, &part_bytes(VIDEO, n)).await;
    }
    close_video_segment(&server.store);
    // the stream ends (an empty DATA frame with END_STREAM may come first)
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match r.chunk().await.unwrap() {
                Some(c) if c.is_empty() => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, None);
    server.stop().await;
}

#[tokio::test]
async fn connection_cap_accepts_and_closes() {
    let server = Server::start(
        StoreConfig::default(),
        OriginConfig {
            max_connections: 1,
            ..OriginConfig::default()
        },
    )
    .await;
    // hold the only slot with a keep-alive connection that has been served
    let mut first = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    first
        .get_mut()
        .write_all(b"GET /time HTTP/1.1\r\nHost: o\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut first).await.starts_with("http/1.1 200"));

    let mut second = TcpStream::connect(server.addr).await.unwrap();
    let _ = second
        .write_all(b"GET /time HTTP/1.1\r\nHost: o\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    drop(first);
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // the slot is freed once the server notices the close
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(b"GET /time HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v).await;
            if v.starts_with(b"HTTP/1.1 200") {
                return (200, (), ());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a slot frees up");
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_answers_parked_requests() {
    let server = Server::default().await;
    let url = server.url("/live/news/720p/index.m3u8?_HLS_msn=100&_HLS_part=5");
    let request = tokio::spawn(async move { h1().get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!request.is_finished());
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let status = request.await.unwrap().unwrap();
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_parked_requests() {
    const PARKED: usize = 10_000;
    const CONNECTIONS: usize = 40; // x 250 streams, under the per-connection cap
                                   // TD 4 s: parked for up to 12 s, ample to set them all up
    let config = StoreConfig {
        segment_target: 4.0,
        part_target: 1.0,
        window_segments: 8,
        ..StoreConfig::default()
    };
    let server = Server::start(
        config,
        OriginConfig {
            max_parked: PARKED,
            ..OriginConfig::default()
        },
    )
    .await;
    let url = server.url("/live/news/720p/index.m3u8?_HLS_msn=100&_HLS_part=2");
    let clients: Vec<reqwest::Client> = (0..CONNECTIONS).map(|_| h2()).collect();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..PARKED {
        let c = clients[i % CONNECTIONS].clone();
        let url = url.clone();
        requests.spawn(async move {
            loop {
                let r = c.get(&url).send().await.unwrap();
                // refused while a probe held a slot: ask again
                if r.status() == 503 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return (r.status(), r.text().await.unwrap());
            }
        });
    }

    // All parked once one more blocking request is refused at once. A probe
    // that finds a free slot parks until its client gives up (which frees the
    // slot); a request refused meanwhile asks again.
    let probe = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "10,000 requests not parked in time"
        );
        if let Ok(r) = probe.get(&url).send().await {
            if r.status() == 503 {
                assert_eq!(header(&r, "retry-after"), "1");
                assert_eq!(header(&r, "cache-control"), "no-store");
                assert!(r.text().await.unwrap().contains("parked"));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        requests.try_join_next().is_none(),
        "a parked request ended early"
    );

    // the server still answers everything else, at once
    let other = h1();
    for p in [
        "/time",
        "/live/news/720p/part-0.m4s",
        "/live/news/master.m3u8",
    ] {
        let started = Instant::now();
        let r = other.get(server.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert!(started.elapsed() < Duration::from_secs(1), "{p}");
    }

    // one part releases them all
    add_video_part(&server.store);
    let released = tokio::time::timeout(Duration::from_secs(20), async {
        let mut n = 0;
        while let Some(r) = requests.join_next().await {
            let (status, body) = r.unwrap();
            assert_eq!(status, 200);
            assert!(body.contains("part-2.m4s"));
            n += 1;
        }
        n
    })
    .await
    .expect("all released");
    assert_eq!(released, PARKED);
    server.stop().await;
}

/// A viewer (or CDN edge) that gives up on a parked request frees its slot at
/// once, not after 3 x target duration: over HTTP/1.1 by closing the
/// connection, over HTTP/2 by resetting the stream.
#[tokio::test]
async fn abandoned_parked_requests_free_their_slot() {
    let server = Server::start(
        StoreConfig::default(),
        OriginConfig {
            max_parked: 1,
            ..OriginConfig::default()
        },
    )
    .await;
    let path = "/live/news/720p/index.m3u8?_HLS_msn=100&_HLS_part=4";
    let url = server.url(path);
    let impatient =
        |c: reqwest::ClientBuilder| c.timeout(Duration::from_millis(300)).build().unwrap();
    let h1_short = impatient(reqwest::Client::builder().http1_only());
    let h2_short = impatient(reqwest::Client::builder().http2_prior_knowledge());

    // Does a new blocking request park (slot free) rather than get 503?
    async fn parks(c: &reqwest::Client, url: &str) -> bool {
        match c.get(url).send().await {
            Err(e) => e.is_timeout(),
            Ok(r) => {
                assert_eq!(r.status(), 503);
                false
            }
        }
    }
    async fn eventually_parks(c: &reqwest::Client, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !parks(c, url).await {
            assert!(Instant::now() < deadline, "slot never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // HTTP/1.1: park one, see the cap refuse another, close the connection
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: o\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!parks(&h1_short, &url).await, "cap of 1 not enforced");
    drop(s);
    eventually_parks(&h1_short, &url).await;

    // HTTP/2: the timed-out request above was reset; the slot frees again
    eventually_parks(&h2_short, &url).await;
    eventually_parks(&h2_short, &url).await;
    server.stop().await;
}
