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
use ladder::pipeline::gpu::{self, doctor::DoctorReport};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Report the NVIDIA driver, the GPUs, their NVDEC and NVENC capabilities, and the
    /// backend each configured ladder would get. Exit 0 with or without a GPU.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of text (fields in the `pipeline::gpu::doctor`
        /// module docs).
        #[arg(long)]
        json: bool,
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
    ladder::sys::disable_transparent_huge_pages();
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
        Command::Doctor { config, json } => doctor(config.config.as_deref(), json),
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

/// `ladder doctor`: reports; no GPU is an answer (exit 0), a bad config is not (2).
fn doctor(path: Option<&Path>, json: bool) -> ExitCode {
    let (config, _source) = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = DoctorReport::new(&config, gpu::probe::probe());
    if json {
        print_stdout(&report.to_json())
    } else {
        print_stdout(&report.to_text())
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
