//! nginx with the RTMP module (Debian's libnginx-mod-rtmp) as a real RTMP
//! peer: the server the client tests publish to and play from, the restream
//! destination that records what Ladder sends, the remote source a pull
//! channel plays. And nginx as an HTTP CDN edge in front of Ladder's origin
//! ([`Edge`]: packaging/nginx-edge.conf as shipped), for tests that play
//! through a cache.
#![allow(dead_code)]

use super::tempdir::Dir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx with the RTMP module on a loopback port, in a temporary directory,
/// with two applications:
///
/// - `live`: players may wait for a publisher and are told when it starts and
///   stops (`publish_notify`, which also ends ffprobe's playback); with
///   [`Nginx::recording`], every stream published is written to
///   `rec/<name>-<unix time>.flv` (`record all`, `record_unique`: a stream
///   published again gets a file of its own);
/// - `strict`: `idle_streams off`: playing a stream nobody publishes is
///   refused.
///
/// Killed (SIGKILL) on drop.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    pub dir: Dir,
    /// Times [`Nginx::kill`] ran: the logs of earlier runs are kept aside.
    runs: usize,
}

impl Nginx {
    /// Without recording, on a free port.
    pub fn start() -> Nginx {
        Nginx::start_on(free_port(), false)
    }

    /// Recording every stream published to `live`, on a free port.
    pub fn recording() -> Nginx {
        Nginx::start_on(free_port(), true)
    }

    /// On `port` (one chosen earlier, say, while nothing listened on it).
    pub fn start_on(port: u16, record: bool) -> Nginx {
        assert!(
            Path::new(NGINX).exists() && Path::new(NGINX_RTMP_MODULE).exists(),
            "nginx and its RTMP module are required: apt-get install nginx libnginx-mod-rtmp"
        );
        let dir = Dir::new("nginx");
        let d = dir.path().display();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let rec = dir.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        // nginx's worker may run as `nobody` (master_process on, or as root
        // with another build): the recordings' directory is world-writable
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let record = if record {
            format!("record all; record_path {d}/rec; record_unique on;")
        } else {
            "record off;".to_owned()
        };
        let conf = format!(
            r#"load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {d}/logs/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{ live on; {record} publish_notify on; }}
        application strict {{ live on; record off; idle_streams off; }}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut nginx = Nginx {
            child: None,
            port,
            dir,
            runs: 0,
        };
        nginx.spawn();
        nginx
    }

    fn spawn(&mut self) {
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        self.child = Some(child);
        // listening once it logs its limits (after the sockets are bound);
        // no test connection, so the log's connection counts stay honest
        let t = Instant::now();
        while !self.log().contains("getrlimit") {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("nginx exited ({status}): {}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "nginx did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `rtmp://127.0.0.1:PORT/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{path}", self.port)
    }

    /// The error log (level info) of the current run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// Waits for `needle` in nginx's log (a player has subscribed, say).
    pub fn wait_log(&self, needle: &str) {
        let t = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no {needle:?} in nginx's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every connection nginx accepted in this run has ended
    /// (its log counts them): what it recorded is complete on disk.
    pub fn wait_all_closed(&self) {
        let t = Instant::now();
        loop {
            let log = self.log();
            let opened = log.matches("client connected").count();
            let closed = log.matches(" disconnect,").count();
            if opened > 0 && closed >= opened {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "nginx still has {} of {opened} connections open:\n{log}",
                opened - closed
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash: connections are cut without a word. The run's log
    /// is kept aside (`logs/error.log.N`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.runs += 1;
        let _ = std::fs::rename(
            self.dir.join("logs/error.log"),
            self.dir.join(&format!("logs/error.log.{}", self.runs)),
        );
    }

    /// Start again after [`Nginx::kill`], on the same port and directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nginx is running");
        self.spawn();
    }

    /// The recordings of stream `name`, oldest first.
    pub fn recordings(&self, name: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .and_then(|f| f.strip_prefix(name))
                    .is_some_and(|rest| rest.starts_with('-') && rest.ends_with(".flv"))
            })
            .collect();
        // record_unique appends the unix time: same width, so text order is time order
        found.sort();
        found
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// packaging/nginx-edge.conf: the example edge configuration the packages ship.
pub const EDGE_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/nginx-edge.conf");

/// What [`edge_config`] replaces in packaging/nginx-edge.conf, each exactly
/// once: the origin, the listening address, the cache directory, the access
/// log. If the example changes these lines, the edge tests say so here
/// rather than run something else.
pub const EDGE_TEMPLATE: [(&str, &str); 4] = [
    ("origin", "server 127.0.0.1:8080;"),
    ("listen", "listen 80;"),
    ("cache", "/var/cache/nginx/ladder "),
    (
        "access log",
        "access_log /var/log/nginx/ladder-edge.access.log ",
    ),
];

/// packaging/nginx-edge.conf with the origin address, listening address,
/// cache directory and access log replaced.
pub fn edge_config(origin: &str, listen: &str, cache_dir: &Path, access_log: &Path) -> String {
    let text = std::fs::read_to_string(EDGE_CONF).expect("read packaging/nginx-edge.conf");
    let mut out = text.clone();
    for (what, needle) in EDGE_TEMPLATE {
        let n = text.matches(needle).count();
        assert_eq!(
            n, 1,
            "packaging/nginx-edge.conf: the {what} line {needle:?} appears {n} times, not once"
        );
        let with = match what {
            "origin" => format!("server {origin};"),
            "listen" => format!("listen {listen};"),
            "cache" => format!("{} ", cache_dir.display()),
            _ => format!("access_log {} ", access_log.display()),
        };
        out = out.replace(needle, &with);
    }
    out
}

/// One line of the edge's access log (format `ladder_edge`).
#[derive(Clone, Debug)]
pub struct Access {
    pub method: String,
    /// Path and query, as requested.
    pub target: String,
    pub status: u16,
    pub bytes: u64,
    /// `$upstream_cache_status`: HIT, MISS, BYPASS, EXPIRED, UPDATING... or
    /// `-` where the location does not cache.
    pub cache: String,
    /// `$upstream_addr`: the origin asked, `None` when nginx answered alone.
    pub upstream: Option<String>,
    /// `$request_time`: seconds from the request's first byte to the
    /// answer's last.
    pub seconds: f64,
    /// `$msec`: when the answer ended, Unix time in seconds.
    pub end: f64,
}

impl Access {
    /// Whether this request made nginx ask the origin.
    pub fn reached_origin(&self) -> bool {
        self.upstream.is_some()
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Parse one `ladder_edge` line; `None` if it is not one.
    pub fn parse(line: &str) -> Option<Access> {
        let q1 = line.find('"')?;
        let q2 = q1 + 1 + line[q1 + 1..].find('"')?;
        let mut request = line[q1 + 1..q2].split(' ');
        let method = request.next()?.to_string();
        let target = request.next()?.to_string();
        let mut rest = line[q2 + 1..].split_whitespace();
        let status = rest.next()?.parse().ok()?;
        let bytes = rest.next()?.parse().ok()?;
        let field = |key: &str| -> Option<String> {
            let start = line.find(&format!(" {key}="))? + key.len() + 2;
            let v = &line[start..];
            let v = match v.strip_prefix('"') {
                Some(q) => &q[..q.find('"')?],
                None => v.split(' ').next()?,
            };
            Some(v.to_string())
        };
        let upstream = field("up").filter(|u| !u.is_empty() && u != "-");
        Some(Access {
            method,
            target,
            status,
            bytes,
            cache: field("cache").unwrap_or_default(),
            upstream,
            seconds: field("rt").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
            end: field("t").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
        })
    }
}

/// nginx as a CDN edge (HTTP, `packaging/nginx-edge.conf` as shipped) in front
/// of an origin, on a loopback port, in a temporary directory. Killed on drop.
///
/// ```ignore
/// let ladder = Ladder::start(&config(...));
/// let edge = Edge::start(ladder.http);
/// let master = edge.url("/live/cam/master.m3u8"); // players use this
/// ```
pub struct Edge {
    child: Option<Child>,
    pub port: u16,
    pub dir: Dir,
}

impl Edge {
    /// In front of the origin at `origin` (Ladder's `http_listen`).
    pub fn start(origin: std::net::SocketAddr) -> Edge {
        assert!(
            Path::new(NGINX).exists(),
            "nginx is required: apt-get install nginx"
        );
        let port = free_port();
        let dir = Dir::new("edge");
        let d = dir.path().display().to_string();
        for sub in ["logs", "cache", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let edge = edge_config(
            &origin.to_string(),
            &format!("127.0.0.1:{port}"),
            &dir.join("cache"),
            &dir.join("logs/access.log"),
        );
        std::fs::write(dir.join("ladder-edge.conf"), edge).unwrap();
        // the shipped file goes in `http`, as Debian's nginx.conf includes it
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/logs/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    include {d}/ladder-edge.conf;
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!(
                    "nginx (edge) exited ({status}): {err}\n{}",
                    std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "nginx (edge) did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Edge {
            child: Some(child),
            port,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`: the base URL players use instead of the origin's.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The access log so far, parsed (lines that are not ours are skipped).
    pub fn access_log(&self) -> Vec<Access> {
        std::fs::read_to_string(self.dir.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(Access::parse)
            .collect()
    }

    /// The error log (level info).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
