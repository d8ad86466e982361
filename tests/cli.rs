//! The command line of SPEC.md ("Command line"), run as a user runs it: the built
//! binary, real files, exit codes and the exact `file:line:col:` prefixes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LADDER: &str = env!("CARGO_BIN_EXE_ladder");

const VALID: &str = r#"[server]
rtmp_listen  = "127.0.0.1:1935"
http_listen  = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"

[auth]
open = false

[[channels]]
name = "news"
key  = "s3cr3t"

[ladders.default]
renditions = [
  { name = "source", passthrough = true },
  { name = "720p", height = 720, bitrate_kbps = 3000 },
]
"#;

/// Writes `text` to a file unique to the test and returns its path.
fn file(test: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn ladder(args: &[&str]) -> Output {
    Command::new(LADDER)
        .args(args)
        .env_remove("LADDER_CONFIG")
        .output()
        .unwrap()
}

fn check(path: &Path) -> Output {
    ladder(&["check-config", "--config", path.to_str().unwrap()])
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts exit 2 and exactly these diagnostics (`{}` stands for the path).
fn assert_invalid(test: &str, text: &str, expected: &[&str]) {
    let path = file(test, text);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let p = path.display().to_string();
    let expected: Vec<String> = expected.iter().map(|e| e.replace("{}", &p)).collect();
    let err = stderr(&o);
    let got: Vec<&str> = err.lines().collect();
    assert_eq!(got, expected);
}

#[test]
fn valid_file_is_ok() {
    let path = file("valid", VALID);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), format!("ok: {} (--config)\n", path.display()));
    assert_eq!(stderr(&o), "");
}

#[test]
fn config_from_environment() {
    let path = file("env", VALID);
    let o = Command::new(LADDER)
        .arg("check-config")
        .env("LADDER_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("ok: {} ($LADDER_CONFIG)\n", path.display())
    );
}

#[test]
fn syntax_error() {
    assert_invalid(
        "syntax",
        "[server]\nrtmp_listen = \"0.0.0.0:1935\n",
        &["{}:2:28: invalid basic string"],
    );
}

#[test]
fn unknown_key() {
    assert_invalid(
        "unknown_key",
        "[server]\nrtmp_listen = \"0.0.0.0:1935\"\nhtpp_listen = \"0.0.0.0:8080\"\n",
        &["{}:3:1: unknown field `htpp_listen`, expected one of `rtmp_listen`, `http_listen`, `admin_listen`, `rtmps_listen`, `tls_cert`, `tls_key`"],
    );
}

#[test]
fn duplicate_channel_name() {
    let text = format!("{VALID}\n[[channels]]\nname = \"news\"\nkey = \"other\"\n");
    assert_invalid(
        "duplicate_channel",
        &text,
        &["{}:20:8: channel \"news\": duplicate channel name (first defined at line 10)"],
    );
}

#[test]
fn duplicate_key_is_not_echoed() {
    let text = format!("{VALID}\n[[channels]]\nname = \"sport\"\nkey = \"s3cr3t\"\n");
    let path = file("duplicate_key", &text);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(
        e,
        format!(
            "{}:21:7: channel \"sport\": key is the same as channel \"news\"'s; keys must be unique\n",
            path.display()
        )
    );
    assert!(!e.contains("s3cr3t"));
}

#[test]
fn missing_ladder() {
    let text = VALID.replace(
        "key  = \"s3cr3t\"\n",
        "key  = \"s3cr3t\"\nladder = \"hd\"\n",
    );
    assert_invalid(
        "missing_ladder",
        &text,
        &["{}:12:10: channel \"news\": ladder \"hd\" is not defined; add a [ladders.hd] table"],
    );
}

#[test]
fn bad_address() {
    let text = VALID.replace("\"127.0.0.1:8080\"", "\"127.0.0.1:80800\"");
    assert_invalid(
        "bad_address",
        &text,
        &["{}:3:16: server.http_listen: \"127.0.0.1:80800\" is not a socket address; expected IP:PORT such as \"0.0.0.0:1935\" or \"[::]:1935\""],
    );
}

#[test]
fn every_semantic_error_is_reported() {
    let text = VALID
        .replace("\"127.0.0.1:8081\"", "\"127.0.0.1:8080\"")
        .replace("height = 720", "height = 719")
        .replace("[auth]", "[packaging]\npart_seconds = 5.0\n\n[auth]");
    assert_invalid(
        "several",
        &text,
        &[
            "{}:4:16: server.admin_listen: 127.0.0.1:8080 overlaps server.http_listen; each listener needs its own port",
            "{}:7:16: packaging.part_seconds: 5 is out of range; must be 0.1 to segment_seconds (2)",
            "{}:19:29: ladder \"default\": rendition \"720p\": height 719 is odd; sizes must be even (4:2:0 chroma)",
        ],
    );
}

#[test]
fn unreadable_file() {
    let o = ladder(&["check-config", "--config", "/nonexistent/ladder.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("/nonexistent/ladder.toml: cannot read: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_refuses_a_bad_config() {
    let path = file("serve_bad", "[auth]\nopen = 1\n");
    let o = ladder(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!(
            "{}:2:8: invalid type: integer `1`, expected a boolean",
            path.display()
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn default_config_is_printed_verbatim_and_checks() {
    let o = ladder(&["config", "--default"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert_eq!(text, include_str!("../src/control/default.toml"));
    let path = file("default", &text);
    let o = check(&path);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), format!("ok: {} (--config)\n", path.display()));
    assert_eq!(
        stderr(&o),
        "warning: auth.open = true: any stream key publishes\n"
    );
}

#[test]
fn closed_without_channels_warns() {
    let path = file("closed_empty", "[auth]\nopen = false\n");
    let o = check(&path);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stderr(&o),
        "warning: auth.open = false and no [[channels]] are listed: no publisher will be admitted\n"
    );
}

#[test]
fn version_names_the_build() {
    let o = ladder(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    let v = stdout(&o);
    assert!(
        v.starts_with(&format!("ladder {} (features: ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.ends_with(")\n"), "{v}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["bogus"][..],
        &[],
        &["config"],
        &["check-config", "--no-such-flag"],
        &["serve", "--config"],
    ] {
        let o = ladder(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--help"), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}");
    }
    let o = ladder(&["bogus"]);
    assert!(stderr(&o).contains("unrecognized subcommand 'bogus'"));
}

#[test]
fn help_exits_0() {
    let o = ladder(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("check-config"));
}

/// `ladder doctor` on a box with no NVIDIA driver (this build machine). On a GPU box
/// the answer depends on the hardware (`make test-gpu`), so the test says it skipped.
fn driver_present() -> bool {
    let found = ladder::pipeline::gpu::driver::open_library(
        ladder::pipeline::gpu::driver::LIBCUDA,
        &[ladder::pipeline::gpu::driver::LIBCUDA],
    )
    .is_ok();
    if found {
        eprintln!("skipped: libcuda.so.1 loads here, so this is not a no-GPU box");
    }
    found
}

const DOCTOR: &str = r#"[[channels]]
name = "news"
key  = "s3cr3t"

[ladders.default]
renditions = [{ name = "720p", height = 720, bitrate_kbps = 3000 }]

[ladders.nvenc]
backend = "gpu"
fallback = "fail"
renditions = [{ name = "720p", height = 720, bitrate_kbps = 3000 }]

[ladders.x264]
backend = "cpu"
renditions = [{ name = "720p", height = 720, bitrate_kbps = 3000 }]
"#;

#[test]
fn doctor_without_gpu() {
    if driver_present() {
        return;
    }
    let path = file("doctor", DOCTOR);
    let o = ladder(&["doctor", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "no NVIDIA driver (libcuda.so.1 not found): CPU backend\n\
         ladder \"default\" (backend = \"auto\"): cpu (no NVIDIA driver (libcuda.so.1 not found): CPU backend)\n\
         ladder \"nvenc\" (backend = \"gpu\"): a publish is refused (fallback = \"fail\"): no NVIDIA driver (libcuda.so.1 not found)\n\
         ladder \"x264\" (backend = \"cpu\"): cpu (backend = \"cpu\")\n"
    );
    assert_eq!(stderr(&o), "");
}

#[test]
fn doctor_without_gpu_json() {
    if driver_present() {
        return;
    }
    let path = file("doctor-json", DOCTOR);
    let o = ladder(&["doctor", "--json", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["schema"], 1);
    assert!(v["driver"].is_null());
    assert_eq!(v["no_gpu"], "no NVIDIA driver (libcuda.so.1 not found)");
    assert!(v["no_gpu_detail"]
        .as_str()
        .unwrap()
        .starts_with("libcuda.so.1 not found (tried libcuda.so.1: "));
    assert_eq!(v["gpus"], serde_json::json!([]));
    let ladders: Vec<(&str, &str, &serde_json::Value)> = v["ladders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap(),
                l["requested"].as_str().unwrap(),
                &l["backend"],
            )
        })
        .collect();
    assert_eq!(
        ladders,
        [
            ("default", "auto", &serde_json::json!("cpu")),
            ("nvenc", "gpu", &serde_json::Value::Null),
            ("x264", "cpu", &serde_json::json!("cpu")),
        ]
    );
}

#[test]
fn doctor_on_embedded_default_and_bad_config() {
    if !driver_present() {
        let o = ladder(&["doctor"]);
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
        assert!(stdout(&o).starts_with("no NVIDIA driver (libcuda.so.1 not found): CPU backend\n"));
    }
    let path = file("doctor-bad", "[bogus]\n");
    let o = ladder(&["doctor", "--config", path.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a bad config is exit 2 for doctor too"
    );
    assert_eq!(stdout(&o), "");
}
