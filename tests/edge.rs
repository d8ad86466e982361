//! A real CDN edge in front of the origin: Debian's nginx running
//! packaging/nginx-edge.conf as shipped (only the origin address, the listen
//! port, the cache directory and the log path replaced; `common::nginx::Edge`).
//!
//! - Players through the edge: 4 LL-HLS viewers (each following the video and
//!   the audio playlist with blocking reloads, fetching every part and the
//!   hinted one) and an LL-DASH viewer (the MPD, init segments, every
//!   segment from the one being written on). What reached the origin is
//!   counted from nginx's access log (`$upstream_addr`,
//!   `$upstream_cache_status`) and cross-checked with the origin's own
//!   request counter (`/metrics`): about one origin request per part,
//!   segment and init segment, and 4 viewers do not make 4 times the
//!   blocking reloads. The figures are printed (docs/PERFORMANCE.md, "CDN
//!   edge").
//! - What players see through it: ffprobe plays the master playlist; a
//!   segment still being written reaches the viewer chunk by chunk (its
//!   first bytes arrive while the origin still lists it as open) and, once
//!   complete, is served from the cache with the origin's bytes; the whole
//!   LL-HLS rule set (`common::hls_rules`) holds through the edge.
//! - The example loads into Debian's stock nginx.conf as its comments say.

mod common;

use common::hls_rules::{number_plus, parse_media, resolve, validate_live, Fetch, LiveOptions};
use common::nginx::{edge_config, Access, Edge, NGINX};
use common::{config, http_client, publish, runtime, wait_200, Ladder, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Segments of 1 s, parts of 0.2 s (5 per segment: many objects per second).
const PACKAGING: &str = "segment_seconds = 1.0\npart_seconds = 0.2\nwindow_segments = 12";

/// HLS viewers in the measurement.
const HLS_VIEWERS: usize = 4;

/// DASH viewers in the measurement. nginx cannot share one segment still
/// being written between viewers (packaging/nginx-edge.conf, 2.): each
/// DASH viewer at the live edge is an origin request per segment, so the
/// per-object assertion holds for one.
const DASH_VIEWERS: usize = 1;

/// How long the viewers watch.
const WATCH: Duration = Duration::from_secs(15);

fn source() -> Source {
    Source {
        size: "320x240",
        rate: 30,
        seconds: 120.0,
        x264: "-preset ultrafast -profile:v baseline -g 30 -keyint_min 30 -sc_threshold 0",
        audio: true,
    }
}

/// Ladder with a publisher on channel `edge`, and an nginx edge in front.
struct Setup {
    ladder: Ladder,
    edge: Edge,
    publisher: Child,
}

impl Setup {
    fn start() -> Setup {
        let ladder = Ladder::start(&config(true, PACKAGING, ""));
        let publisher = publish(&source(), &ladder.rtmp_url("edge"), None);
        let edge = Edge::start(ladder.http);
        wait_200(&edge.url("/live/edge/master.m3u8"), Duration::from_secs(30));
        common::hls_rules::wait_for_segments(
            &ladder.url("/live/edge/source/index.m3u8"),
            3,
            Duration::from_secs(30),
        );
        Setup {
            ladder,
            edge,
            publisher,
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.publisher.kill();
        let _ = self.publisher.wait();
    }
}

/// What one viewer thread did.
#[derive(Default, Debug)]
struct Viewer {
    requests: usize,
    /// Answers other than 200 (or no answer): "url: status".
    failures: Vec<String>,
    parts: usize,
    segments: usize,
}

impl Viewer {
    fn get(&mut self, f: &Fetch, url: &str) -> Option<Vec<u8>> {
        self.requests += 1;
        match f.get(url) {
            Ok(a) if a.status == 200 => Some(a.body),
            Ok(a) => {
                self.failures.push(format!("{url}: {}", a.status));
                None
            }
            Err(e) => {
                self.failures.push(e);
                None
            }
        }
    }
}

/// An LL-HLS player on one media playlist: loads it, then for ever: the init
/// segment when it changes, every part listed that it has not fetched yet,
/// the hinted part (which the edge and the origin hold until it exists),
/// and the blocking reload for the part after the last one listed.
fn follow_hls(playlist: String, stop: Arc<AtomicBool>) -> Viewer {
    let f = Fetch::new();
    let mut me = Viewer::default();
    let Some(first) = me.get(&f, &playlist) else {
        return me;
    };
    let mut text = String::from_utf8_lossy(&first).into_owned();
    let mut fetched: BTreeSet<String> = BTreeSet::new();
    // start at the live edge: the parts before the last segment's are history
    {
        let pl = parse_media(&text);
        let keep_from = pl.segments.len().saturating_sub(1);
        for s in &pl.segments[..keep_from] {
            for p in s.parts.iter().filter_map(|p| p.uri.clone()) {
                fetched.insert(p);
            }
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let pl = parse_media(&text);
        for s in &pl.segments {
            if let Some(map) = &s.map {
                if fetched.insert(map.clone()) {
                    me.get(&f, &resolve(&playlist, map));
                }
            }
            for p in s.parts.iter().filter_map(|p| p.uri.as_ref()) {
                if fetched.insert(p.clone()) {
                    me.parts += 1;
                    me.get(&f, &resolve(&playlist, p));
                }
            }
        }
        if let Some(hint) = pl.preload_hints.iter().find_map(|h| h.get("URI")) {
            if fetched.insert(hint.clone()) {
                me.parts += 1;
                me.get(&f, &resolve(&playlist, hint));
            }
        }
        let Some((msn, part)) = pl.next_part() else {
            me.failures.push(format!("no part in\n{text}"));
            break;
        };
        let url = format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}");
        match me.get(&f, &url) {
            Some(body) => text = String::from_utf8_lossy(&body).into_owned(),
            None => break,
        }
    }
    me
}

/// A Representation of the MPD: what a DASH player needs to fetch it.
#[derive(Clone, Debug)]
struct Rep {
    id: String,
    init: String,
    media: String,
    /// Numbers listed: `first..=last`.
    first: u64,
    last: u64,
}

fn attr(element: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = element.find(&key)? + key.len();
    let end = element[start..].find('"')?;
    Some(element[start..start + end].to_string())
}

/// The Representations of an MPD (SegmentTemplate with `$Number$` and a
/// SegmentTimeline; the last Period's when there are several).
fn parse_mpd(mpd: &str) -> Vec<Rep> {
    let mut reps: BTreeMap<String, Rep> = BTreeMap::new();
    for chunk in mpd.split("<Representation ").skip(1) {
        let body = chunk.split("</Representation>").next().unwrap_or("");
        let head = format!(" {body}");
        let Some(id) = attr(&head, "id") else {
            continue;
        };
        let Some(t) = body.find("<SegmentTemplate") else {
            continue;
        };
        let template = &body[t..];
        let template_head = &template[..template.find('>').unwrap_or(template.len())];
        let start: u64 = attr(template_head, "startNumber")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let count: u64 = template
            .split("<S ")
            .skip(1)
            .map(|s| {
                let e = format!(" {}", &s[..s.find("/>").unwrap_or(s.len())]);
                1 + attr(&e, "r")
                    .and_then(|r| r.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        let fill = |s: String| s.replace("$RepresentationID$", &id);
        if count == 0 {
            continue;
        }
        reps.insert(
            id.clone(),
            Rep {
                init: fill(attr(template_head, "initialization").unwrap_or_default()),
                media: fill(attr(template_head, "media").unwrap_or_default()),
                first: start,
                last: start + count - 1,
                id,
            },
        );
    }
    reps.into_values().collect()
}

/// An LL-DASH player on one Representation: reloads the MPD, fetches the
/// init segment, then every segment from the newest listed (the one being
/// written, which the origin streams chunk by chunk) on.
fn follow_dash(mpd_url: String, rep_id: &'static str, stop: Arc<AtomicBool>) -> Viewer {
    let f = Fetch::new();
    let mut me = Viewer::default();
    let mut next: Option<u64> = None;
    let mut inits: BTreeSet<String> = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(body) = me.get(&f, &mpd_url) else {
            break;
        };
        let mpd = String::from_utf8_lossy(&body).into_owned();
        let Some(rep) = parse_mpd(&mpd).into_iter().find(|r| r.id == rep_id) else {
            me.failures
                .push(format!("no Representation {rep_id} in\n{mpd}"));
            break;
        };
        if inits.insert(rep.init.clone()) {
            me.get(&f, &resolve(&mpd_url, &rep.init));
        }
        let from = next.unwrap_or(rep.last).max(rep.first);
        if from > rep.last {
            // nothing new yet: the MPD's minimumUpdatePeriod is a part target
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        for n in from..=rep.last {
            let uri = rep.media.replace("$Number$", &n.to_string());
            me.segments += 1;
            me.get(&f, &resolve(&mpd_url, &uri));
        }
        next = Some(rep.last + 1);
    }
    me
}

/// What kind of object a request is for.
fn kind(a: &Access) -> &'static str {
    let path = a.path();
    if path.ends_with(".mpd") {
        "mpd"
    } else if path.ends_with(".m3u8") {
        if a.target.contains("_HLS_msn=") {
            "blocking playlist"
        } else {
            "playlist"
        }
    } else if path.contains("/init-") {
        "init"
    } else if path.contains("/part-") {
        "part"
    } else if path.contains("/seg-") {
        "segment"
    } else {
        "other"
    }
}

/// Per kind: requests players made, distinct objects, requests that reached
/// the origin.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    requests: usize,
    objects: usize,
    origin: usize,
    hits: usize,
}

impl Tally {
    fn per_object(&self) -> f64 {
        self.origin as f64 / self.objects.max(1) as f64
    }
}

fn tally(log: &[Access]) -> BTreeMap<&'static str, Tally> {
    let mut objects: BTreeMap<&'static str, BTreeSet<&str>> = BTreeMap::new();
    let mut out: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for a in log {
        let k = kind(a);
        let t = out.entry(k).or_default();
        t.requests += 1;
        // nginx writes every origin it tried, comma separated
        t.origin += a.upstream.as_deref().map_or(0, |u| u.split(',').count());
        if a.cache == "HIT" {
            t.hits += 1;
        }
        objects.entry(k).or_default().insert(&a.target);
    }
    for (k, set) in objects {
        if let Some(t) = out.get_mut(k) {
            t.objects = set.len();
        }
    }
    out
}

/// For objects of `kind` that one request fetched from the origin while
/// others waited on nginx's cache lock: how long after the origin's answer
/// ended each waiter's answer ended (nginx polls its lock every 500 ms).
fn collapse_waits(log: &[Access], kind_: &str) -> Vec<f64> {
    let mut by_object: BTreeMap<&str, Vec<&Access>> = BTreeMap::new();
    for a in log.iter().filter(|a| kind(a) == kind_) {
        by_object.entry(&a.target).or_default().push(a);
    }
    let mut out = Vec::new();
    for requests in by_object.values() {
        let Some(fill) = requests.iter().find(|a| a.reached_origin()) else {
            continue;
        };
        for a in requests.iter().filter(|a| !a.reached_origin()) {
            // started before the origin's answer was there: it waited
            if a.end - a.seconds < fill.end {
                out.push((a.end - fill.end).max(0.0));
            }
        }
    }
    out
}

/// "median x s, 90th percentile y s, max z s".
fn summary(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.3} s, 90th percentile {:.3} s, max {:.3} s",
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

/// The origin's answers so far, from Ladder's `/metrics` (every status class).
fn origin_answers(ladder: &Ladder) -> u64 {
    let admin = ladder
        .log()
        .lines()
        .find(|l| l.contains("ladder started"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("admin="))
                .map(String::from)
        })
        .expect("admin address in the log");
    let (s, text) = common::get_text(&format!("http://{admin}/metrics"));
    assert_eq!(s, 200, "/metrics");
    text.lines()
        .filter(|l| l.starts_with("ladder_http_requests_total{server=\"origin\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// 4 LL-HLS viewers and an LL-DASH viewer through the edge: about one origin
/// request per object, measured on both sides.
#[test]
fn an_nginx_edge_sends_about_one_request_per_object_to_the_origin() {
    let s = Setup::start();
    let base = s.edge.url("/live/edge");
    let before = origin_answers(&s.ladder);
    // what the setup asked through the edge is not the viewers'
    let logged_before = s.edge.access_log().len();

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..HLS_VIEWERS {
        for rendition in ["source", "audio"] {
            let url = format!("{base}/{rendition}/index.m3u8");
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || follow_hls(url, stop)));
        }
    }
    for _ in 0..DASH_VIEWERS {
        for rep in ["source", "audio"] {
            let url = format!("{base}/manifest.mpd");
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || follow_dash(url, rep, stop)));
        }
    }
    std::thread::sleep(WATCH);
    stop.store(true, Ordering::Relaxed);
    let viewers: Vec<Viewer> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let failures: Vec<&String> = viewers.iter().flat_map(|v| &v.failures).collect();
    assert!(failures.is_empty(), "viewers got errors: {failures:#?}");
    let requests: usize = viewers.iter().map(|v| v.requests).sum();
    let hls_parts: usize = viewers[..2 * HLS_VIEWERS].iter().map(|v| v.parts).sum();
    let dash_segments: usize = viewers[2 * HLS_VIEWERS..].iter().map(|v| v.segments).sum();
    // they watched: 15 s of 5 parts a second, two renditions, 4 viewers
    assert!(
        hls_parts >= HLS_VIEWERS * 2 * 20,
        "the HLS viewers fetched only {hls_parts} parts"
    );
    assert!(
        dash_segments >= DASH_VIEWERS * 2 * 5,
        "the DASH viewer fetched only {dash_segments} segments"
    );

    // every request is in the access log once answered
    let t = Instant::now();
    let log = loop {
        let mut log = s.edge.access_log();
        log.drain(..logged_before.min(log.len()));
        if log.len() >= requests {
            break log;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} requests made, {} in the access log",
            requests,
            log.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(log.len(), requests, "every request logged once");
    let tallies = tally(&log);
    let reached: usize = tallies.values().map(|t| t.origin).sum();
    let answered = origin_answers(&s.ladder) - before;

    eprintln!(
        "edge: {} HLS viewers (video + audio), {} DASH viewer(s) (video + audio), {} s",
        HLS_VIEWERS,
        DASH_VIEWERS,
        WATCH.as_secs()
    );
    eprintln!("| kind | player requests | objects | origin requests | per object | cache hits |");
    eprintln!("| --- | --- | --- | --- | --- | --- |");
    for (k, t) in &tallies {
        eprintln!(
            "| {k} | {} | {} | {} | {:.2} | {} |",
            t.requests,
            t.objects,
            t.origin,
            t.per_object(),
            t.hits
        );
    }
    eprintln!("| all | {requests} | | {reached} (origin's own count: {answered}) | | |");
    for k in ["blocking playlist", "part"] {
        let waits = collapse_waits(&log, k);
        eprintln!(
            "{k}: {} collapsed requests answered after the origin's answer by: {}",
            waits.len(),
            summary(&waits)
        );
    }

    // the origin's side agrees with nginx's log
    assert_eq!(
        answered as usize, reached,
        "origin answers ({answered}) vs origin requests in nginx's log ({reached})"
    );
    // about one origin request per part, segment, init segment
    for k in ["part", "segment", "init"] {
        let t = tallies.get(k).copied().unwrap_or_default();
        assert!(t.objects > 0, "no {k} fetched");
        assert!(
            t.per_object() <= 1.2,
            "{k}: {} origin requests for {} objects ({:.2} each)",
            t.origin,
            t.objects,
            t.per_object()
        );
    }
    // 4 viewers: parts come from the cache 3 times in 4
    let parts = tallies["part"];
    assert!(
        parts.requests >= 3 * parts.origin,
        "parts: {} player requests made {} origin requests",
        parts.requests,
        parts.origin
    );
    // blocking reloads: one origin request per distinct reload, not per viewer
    let blocking = tallies["blocking playlist"];
    assert!(
        blocking.per_object() <= 1.2 && 2 * blocking.origin <= blocking.requests,
        "blocking reloads: {} player requests, {} distinct, {} reached the origin",
        blocking.requests,
        blocking.objects,
        blocking.origin
    );
}

/// Reads the first body chunk of `url`, then GETs `meanwhile` (its body), then
/// reads the rest of `url`: (first chunk, whole body, `meanwhile`'s body).
fn first_chunk_then(url: &str, meanwhile: &str) -> (Vec<u8>, Vec<u8>, String) {
    let rt = runtime();
    rt.block_on(async {
        let client = http_client(Duration::from_secs(20));
        let mut r = client.get(url).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let first = r
            .chunk()
            .await
            .expect("body")
            .expect("a first chunk")
            .to_vec();
        let seen = client
            .get(meanwhile)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        let mut whole = first.clone();
        while let Some(c) = r.chunk().await.expect("body") {
            whole.extend_from_slice(&c);
        }
        (first, whole, seen)
    })
}

/// What players see through the edge: ffprobe plays; a growing segment
/// flows chunk by chunk and is then cached whole; every LL-HLS rule holds.
#[test]
fn players_play_through_the_edge_and_growing_segments_flow() {
    let s = Setup::start();
    let master = s.edge.url("/live/edge/master.m3u8");

    // ffprobe plays the HLS through the edge: video and audio packets
    let out = Command::new("timeout")
        .args([
            "60",
            "ffprobe",
            "-v",
            "error",
            "-read_intervals",
            "%+3",
            "-show_streams",
            "-show_packets",
            "-of",
            "json",
            &master,
        ])
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe through the edge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in ["video", "audio"] {
        let n = common::packets(&probe, kind).len();
        assert!(n > 10, "ffprobe read {n} {kind} packets through the edge");
    }

    // a segment being written: its first bytes reach the viewer through the
    // edge while the origin still lists it as open; then the whole of it is
    // the origin's bytes, and the next viewer gets it from the cache
    let f = Fetch::new();
    let mpd_url = s.edge.url("/live/edge/manifest.mpd");
    let origin_playlist = s.ladder.url("/live/edge/source/index.m3u8");
    let newest = |f: &Fetch| -> Rep {
        let a = f.get(&mpd_url).expect("MPD");
        parse_mpd(&a.text())
            .into_iter()
            .find(|r| r.id == "source")
            .expect("source in the MPD")
    };
    for _ in 0..3 {
        // wait for a new segment to appear (its first chunk just written)
        let before = newest(&f).last;
        let t = Instant::now();
        let rep = loop {
            let r = newest(&f);
            if r.last > before {
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no new segment");
            std::thread::sleep(Duration::from_millis(20));
        };
        let uri = rep.media.replace("$Number$", &rep.last.to_string());
        let url = resolve(&mpd_url, &uri);
        let name = uri.rsplit('/').next().unwrap().to_string();
        let (first, whole, playlist) = first_chunk_then(&url, &origin_playlist);
        let listed_complete = parse_media(&playlist)
            .complete()
            .any(|s| s.uri.as_deref() == Some(name.as_str()));
        assert!(!first.is_empty());
        assert!(
            !listed_complete,
            "{name}: its first bytes arrived through the edge only once it was complete \
             (nginx buffered the growing segment)"
        );
        assert!(whole.len() > first.len(), "{name}: one chunk only");
        let origin = f
            .get(&s.ladder.url(&format!("/live/edge/source/{name}")))
            .unwrap();
        assert_eq!(origin.status, 200);
        assert!(
            whole == origin.body,
            "{name}: {} bytes through the edge, {} from the origin",
            whole.len(),
            origin.body.len()
        );
        let again = f.get(&url).unwrap();
        assert!(
            again.status == 200 && again.body == origin.body,
            "{name} again"
        );
        let t = Instant::now();
        loop {
            let log = s.edge.access_log();
            let last = log.iter().rev().find(|a| a.target.ends_with(&uri));
            if let Some(a) =
                last.filter(|_| log.iter().filter(|a| a.target.ends_with(&uri)).count() >= 2)
            {
                assert_eq!(a.cache, "HIT", "{name} the second time: {a:?}");
                assert!(!a.reached_origin());
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{uri} not logged twice"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // the whole LL-HLS rule set, through the edge
    let report = validate_live(&master, &LiveOptions::default());
    eprintln!(
        "through the edge: {} playlists, {} URIs checked",
        report.playlists_checked, report.uris_checked
    );
    report.assert_clean();
    assert!(report.uris_checked >= 20);
}

/// Anyone can ask the edge for a part that does not exist yet. The origin's
/// 404 must not stay in the edge's cache: a moment later that part exists,
/// and every player of the edge asks for it.
#[test]
fn a_request_for_a_future_part_does_not_poison_the_edge() {
    let s = Setup::start();
    let f = Fetch::new();
    let origin_playlist = s.ladder.url("/live/edge/source/index.m3u8");
    let playlist = f.get(&origin_playlist).unwrap().text();
    let hint = parse_media(&playlist)
        .preload_hints
        .iter()
        .find_map(|h| h.get("URI").cloned())
        .expect("a preload hint");
    // two after the hinted part: neither present nor hinted
    let future = number_plus(&hint, 2).expect("part-<n>.m4s");
    let edge_url = s.edge.url(&format!("/live/edge/source/{future}"));
    let first = f.get(&edge_url).unwrap();
    assert_eq!(
        first.status,
        404,
        "{future} before it exists: {}",
        first.text()
    );
    // once the origin lists it, the edge serves it
    let t = Instant::now();
    while !f.get(&origin_playlist).unwrap().text().contains(&future) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{future} never listed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let later = f.get(&edge_url).unwrap();
    assert_eq!(
        later.status, 200,
        "{future} is listed by the origin, the edge still answers {} (its cached 404)",
        later.status
    );
}

/// The example goes into Debian's nginx.conf as its comments say (in
/// conf.d, inside `http`, beside the stock settings such as `gzip on`).
#[test]
fn the_example_loads_into_debians_stock_nginx_conf() {
    let stock = std::fs::read_to_string("/etc/nginx/nginx.conf")
        .expect("Debian's /etc/nginx/nginx.conf (apt-get install nginx)");
    let dir = common::tempdir::Dir::new("edge-conf");
    // as shipped, except where it would write outside the test's directory
    let edge = edge_config(
        "127.0.0.1:8080",
        "127.0.0.1:80",
        &dir.join("cache"),
        &dir.join("access.log"),
    );
    std::fs::write(dir.join("ladder-edge.conf"), edge).unwrap();
    assert!(
        stock.contains("include /etc/nginx/conf.d/*.conf;"),
        "Debian's nginx.conf no longer includes conf.d:\n{stock}"
    );
    let conf = stock
        .replace(
            "include /etc/nginx/conf.d/*.conf;",
            &format!("include {};", dir.join("ladder-edge.conf").display()),
        )
        .replace("include /etc/nginx/sites-enabled/*;", "");
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let out = Command::new(NGINX)
        .arg("-t")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .expect("nginx -t");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("test is successful"),
        "nginx -t: {err}"
    );
}
