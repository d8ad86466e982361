//! Shared by the script-driven benchmarks: the release `ladder` binary on
//! loopback, ffmpeg publishers, /proc readings.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary cargo built for this bench run (the `bench` profile, i.e. release).
pub const BIN: &str = env!("CARGO_BIN_EXE_ladder");

/// `cargo bench` passes `--bench`; `cargo test --benches` does not. Without it,
/// say so and do nothing heavy.
pub fn should_run(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name}: skipped (run it with `cargo bench --bench {name}`)");
    false
}

/// Seconds from `$LADDER_BENCH_SECS`, else `default`.
pub fn bench_secs(default: u64) -> u64 {
    std::env::var("LADDER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("ladder-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ladder serve` on ephemeral loopback ports, open mode.
pub struct Ladder {
    pub proc: Proc,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub log: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Ladder {
    /// `packaging`: the body of the `[packaging]` table.
    pub fn start(packaging: &str) -> Ladder {
        let dir = TempDir::new("ladder");
        let cfg = dir.0.join("ladder.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"
[server]
rtmp_listen  = "127.0.0.1:0"
http_listen  = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[auth]
open = true

[ingest]
max_publishers = 64

[packaging]
{packaging}

[ladders.default]
backend = "cpu"
renditions = [ {{ name = "source", passthrough = true }} ]
"#
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ladder");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("ladder started") {
                        if let (Some(r), Some(h)) = (field(&line, "rtmp"), field(&line, "http")) {
                            let _ = tx.send((r.parse().unwrap(), h.parse().unwrap()));
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let proc = Proc(child);
        let (rtmp, http) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("ladder did not start:\n{}", log.lock().unwrap()));
        Ladder {
            proc,
            rtmp,
            http,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{}", self.rtmp, key)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&pat))
        .map(|v| v.trim_matches('"'))
}

/// ffmpeg publishing a real-time test pattern (H.264 + 48 kHz AAC) for `secs`.
/// `x264`: encoder options (size, GOP, tuning).
pub fn publish_testsrc(url: &str, size: &str, secs: u64, x264: &str) -> Proc {
    assert!(have("ffmpeg"), "ffmpeg is required");
    let mut args: Vec<String> = vec![
        "-hide_banner".into(),
        "-loglevel".into(),
        "error".into(),
        "-re".into(),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size={size}:rate=30:duration={secs}"),
        "-re".into(),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
        "-c:v".into(),
        "libx264".into(),
    ];
    args.extend(x264.split_whitespace().map(String::from));
    args.extend(
        "-pix_fmt yuv420p -c:a aac -b:a 64k -ar 48000 -f flv"
            .split(' ')
            .map(String::from),
    );
    args.push(url.into());
    Proc(
        Command::new("ffmpeg")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ffmpeg"),
    )
}

/// Resident set size of a process, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// utime + stime of a process (all its threads), in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the command name may contain spaces: fields start after the last ')'
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat; `rest` starts at field 3
    let u = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let st = f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    u + st
}

/// Soft limit on open files of this process (from /proc/self/limits).
pub fn nofile_limit() -> u64 {
    let s = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Sorted copy's value at quantile `q` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Poll `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Machine and commit, printed at the top of every report.
pub fn header(name: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "== {name}: {cores} cores ({cpu}), commit {commit}, {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
}
