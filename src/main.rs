//! The `ladder` command (SPEC.md, "Command line"). Thin: parse arguments, load the
//! configuration, run.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration (clap's usage
//! errors included).

use std::error::Error;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ladder::control::config::Config;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turn transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`,
/// what mimalloc's own `MIMALLOC_ALLOW_THP=0` does, but that one is only read
/// before `main`). With THP a region that is touched at all is backed by whole 2 MiB
/// pages: mimalloc's arena and x264's buffers (x264 `madvise`s every allocation of
/// 1.75 MiB or more, its frames and its worst-case bitstream buffers alike) then
/// count far more resident memory than they use. Measured on the four-rung 1080p
/// ladder (docs/PERFORMANCE.md section 7, medians): peak RSS 233 -> 171 MiB, and
/// 168 -> 132 MiB with source passthrough + 3 rungs, with no measurable CPU cost. Best effort: on failure (an old kernel) THP stays as the
/// system has it.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    use std::ffi::{c_int, c_ulong};
    const PR_SET_THP_DISABLE: c_int = 41; // <linux/prctl.h>
    extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    // Safety: prctl(2) is variadic in C; PR_SET_THP_DISABLE reads one unsigned
    // long (1 = disable) and requires the other three to be 0, all passed as
    // unsigned longs as the kernel reads them. It only sets a flag on this
    // process's memory map and touches no memory of ours.
    let rc = unsafe {
        prctl(
            PR_SET_THP_DISABLE,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if rc != 0 {
        eprintln!(
            "ladder: could not turn transparent huge pages off: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

/// A runtime failure: the configuration was fine, running was not.
const EXIT_RUNTIME: u8 = 1;
/// Bad usage or bad configuration.
const EXIT_USAGE: u8 = 2;

/// `ladder --version`: the version and the Cargo features built in. The build has no
/// optional features yet; as the pipeline backends become features (`cpu`, `gpu`),
/// list the enabled ones here.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: none)");

/// Ladder: RTMP in; LL-HLS and LL-DASH out; a transcoding ladder in between.
#[derive(Parser)]
#[command(name = "ladder", version = VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the configuration: exit 0 if valid, 2 with `file:line:col: message`
    /// lines if not.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print configuration.
    Config {
        /// Print the embedded default configuration, commented: a starting point for
        /// /etc/ladder/ladder.toml.
        #[arg(long, required = true)]
        default: bool,
    },
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file. Without it: $LADDER_CONFIG, else /etc/ladder/ladder.toml if
    /// it exists, else the embedded default.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come this way too, for stdout and exit 0.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve { config } => serve(config.config.as_deref()),
        Command::CheckConfig { config } => check_config(config.config.as_deref()),
        Command::Config { default } => {
            debug_assert!(default, "clap requires --default");
            print_stdout(Config::default_text())
        }
    }
}

/// `ladder serve`.
fn serve(path: Option<&Path>) -> ExitCode {
    if let Err(e) = init_tracing() {
        eprintln!("ladder: {e:#}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    let (config, source) = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing::info!(version = VERSION, config = %source, "ladder starting");
    for warning in config.warnings() {
        tracing::warn!(config = %source, "{warning}");
    }
    match ladder::app::run(config, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = error_chain(&e);
            tracing::error!(error = %message, "ladder stopped");
            eprintln!("ladder: {message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `ladder check-config`.
fn check_config(path: Option<&Path>) -> ExitCode {
    match Config::load(path) {
        Ok((config, source)) => {
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            print_stdout(&format!("ok: {source}\n"))
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Logs to stderr; the filter comes from `RUST_LOG`, default `info`.
fn init_tracing() -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("ladder: ignoring RUST_LOG={spec:?} ({e}); logging at info");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // colours only on a terminal: journald and log files get plain text
        .with_ansi(
            io::IsTerminal::is_terminal(&io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")
}

/// Writes to stdout; a closed pipe (`ladder config --default | head`) is not an error.
fn print_stdout(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ladder: cannot write to stdout: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `error: cause: cause`, the error and its sources on one line.
fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
