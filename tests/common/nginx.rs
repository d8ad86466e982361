//! nginx with the RTMP module (Debian's libnginx-mod-rtmp) as a real RTMP
//! peer: the server the client tests publish to and play from, the restream
//! destination that records what Ladder sends, the remote source a pull
//! channel plays.
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
