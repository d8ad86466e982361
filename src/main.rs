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

/// `ladder --version`: the version and the Cargo features built in (the same
/// list as `ladder_build_info` and the API's `features`).
#[cfg(feature = "ffmpeg")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: ffmpeg)");
#[cfg(not(feature = "ffmpeg"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: none)");

/// `ladder --help`'s first line, and the man page's NAME.
const ABOUT: &str = "Ladder: RTMP in; LL-HLS and LL-DASH out; a transcoding ladder in between";

/// `ladder --help`'s description, and the man page's DESCRIPTION.
const LONG_ABOUT: &str = "Ladder is a live-video appliance. Encoders push H.264, HEVC or AV1 \
with AAC to rtmp://HOST:1935/live/KEY (or rtmps://), or a channel pulls from an RTMP server; \
each channel is transcoded into a ladder of renditions, on NVIDIA GPUs or on the CPU, and \
served as LL-HLS and LL-DASH from the built-in HTTP origin: \
http://HOST:8080/live/CHANNEL/master.m3u8 and manifest.mpd.";

/// The command line as documented: what `--help`, the man page and the shell
/// completions show.
#[derive(Parser)]
#[command(name = "ladder", version = VERSION, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The command line as parsed: [`Cli`] and the hidden `generate` (clap_complete
/// would offer a hidden subcommand, so the documented one does not have it).
#[derive(Parser)]
#[command(name = "ladder", version = VERSION, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
struct Invocation {
    #[command(subcommand)]
    command: Invoked,
}

#[derive(Subcommand)]
enum Invoked {
    #[command(flatten)]
    Documented(Command),
    /// Print the man page or a shell completion script, generated from the
    /// command line's definition (what the packages ship; `make deb`, `make rpm`).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
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
    /// Measure how many channels of a ladder this box carries in real time, on
    /// the real pipeline (channels per GPU and per box); a table, or JSON with --json.
    Bench(ladder::bench::BenchArgs),
    /// Print configuration.
    Config {
        /// Print the embedded default configuration, commented: a starting point for
        /// /etc/ladder/ladder.toml.
        #[arg(long, required = true)]
        default: bool,
    },
}

#[derive(Subcommand)]
enum Generated {
    /// ladder(1), in roff.
    Man,
    /// A completion script for `shell`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
    let cli = match Invocation::try_parse() {
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
    let command = match cli.command {
        Invoked::Documented(command) => command,
        Invoked::Generate { what } => return generate(what),
    };
    match command {
        Command::Serve { config } => serve(config.config.as_deref()),
        Command::CheckConfig { config } => check_config(config.config.as_deref()),
        Command::Doctor { config, json } => doctor(config.config.as_deref(), json),
        Command::Bench(args) => ExitCode::from(ladder::bench::main(args)),
        Command::Config { default } => {
            debug_assert!(default, "clap requires --default");
            print_stdout(Config::default_text())
        }
    }
}

/// `ladder generate man|completions SHELL`: text generated from [`Cli`].
fn generate(what: Generated) -> ExitCode {
    use clap::CommandFactory;
    let mut out = Vec::new();
    let written = match what {
        Generated::Man => man_page(&mut out),
        Generated::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ladder", &mut out);
            Ok(())
        }
    };
    match written.map(|()| String::from_utf8(out)) {
        Ok(Ok(text)) => print_stdout(&text),
        Ok(Err(e)) => {
            eprintln!("ladder: generated text is not UTF-8: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("ladder: cannot generate: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The sections of ladder(1) that the command line's definition does not hold, in
/// roff (`\-` is a hyphen-minus that `man` keeps for copying).
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB1\fR
A runtime failure: the configuration was fine, running was not (a port in use, an unreadable TLS file).
.TP
\fB2\fR
Bad usage or a bad configuration; \fBcheck\-config\fR prints one \fIfile\fR:\fIline\fR:\fIcol\fR: \fImessage\fR line per problem.
.SH ENVIRONMENT
.TP
\fBLADDER_CONFIG\fR
The configuration file when \fB\-\-config\fR is not given.
.TP
\fBRUST_LOG\fR
Log filter (default \fBinfo\fR), e.g. \fBladder=debug\fR. Logs go to standard error, without colour unless it is a terminal (\fBNO_COLOR\fR turns colour off there too).
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR, \fBWATCHDOG_PID\fR
Set by systemd for the \fBladder.service\fR unit (\fBType=notify\fR): \fBserve\fR reports READY once it listens, pings the watchdog at half its period, and reports STOPPING at shutdown.
.SH FILES
.TP
\fI/etc/ladder/ladder.toml\fR
The configuration \fBserve\fR reads when neither \fB\-\-config\fR nor \fBLADDER_CONFIG\fR names one. As packaged: closed (\fBopen = false\fR), with one channel whose publish key was generated at install; mode 0640, owner root, group ladder. \fBladder config \-\-default\fR prints the embedded (open) default with every key commented.
.TP
\fI/usr/lib/systemd/system/ladder.service\fR
The service: \fBsystemctl enable \-\-now ladder\fR; \fBsystemctl reload ladder\fR checks the configuration and sends SIGHUP; \fBjournalctl \-u ladder\fR shows the logs.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBffmpeg\fR(1)
"#;

/// ladder(1): clap's sections, then [`MAN_EXTRA`], then the version.
fn man_page(out: &mut Vec<u8>) -> io::Result<()> {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(Cli::command()).manual("Ladder manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    out.extend_from_slice(man_commands(&Cli::command()).as_bytes());
    out.extend_from_slice(MAN_EXTRA.as_bytes());
    man.render_version_section(out)
}

/// ladder(1)'s COMMANDS section: every command with its options, on the one page
/// (clap_mangen's own section points at a page per command, which we do not ship).
fn man_commands(cli: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    let documented =
        |a: &&clap::Arg| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version");
    for cmd in cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        out.push_str(&format!(".TP\n\\fBladder {}\\fR", roff(cmd.get_name())));
        for arg in cmd.get_arguments().filter(documented) {
            if arg.is_required_set() {
                out.push_str(&format!(" {}", man_arg(arg)));
            } else {
                out.push_str(&format!(" [{}]", man_arg(arg)));
            }
        }
        out.push('\n');
        if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
            out.push_str(&format!("{}\n", roff(&about.to_string())));
        }
        let args: Vec<_> = cmd.get_arguments().filter(documented).collect();
        if !args.is_empty() {
            out.push_str(".RS\n");
            for arg in args {
                out.push_str(&format!(".TP\n{}\n", man_arg(arg)));
                if let Some(help) = arg.get_long_help().or(arg.get_help()) {
                    out.push_str(&format!("{}\n", roff(&help.to_string())));
                }
            }
            out.push_str(".RE\n");
        }
    }
    out
}

/// An option as ladder(1) shows it: `--config PATH`, in roff.
fn man_arg(arg: &clap::Arg) -> String {
    let value = || {
        arg.get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string())
    };
    match arg.get_long() {
        Some(long) if arg.get_action().takes_values() => {
            format!("\\fB\\-\\-{}\\fR \\fI{}\\fR", roff(long), roff(&value()))
        }
        Some(long) => format!("\\fB\\-\\-{}\\fR", roff(long)),
        None => format!("\\fI{}\\fR", roff(&value())),
    }
}

/// `text` for a roff page: backslashes and hyphens escaped, and a line that would
/// start with a request character (`.`, `'`) kept as text.
fn roff(text: &str) -> String {
    text.lines()
        .map(|line| {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            if escaped.starts_with(['.', '\'']) {
                format!("\\&{escaped}")
            } else {
                escaped
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn page() -> String {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_man_page_holds_every_command_with_its_options() {
        let page = page();
        for section in [
            ".TH ladder 1",
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH COMMANDS",
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            ".SH FILES",
        ] {
            assert!(page.contains(section), "no {section}:\n{page}");
        }
        for command in [
            r"\fBladder serve\fR [\fB\-\-config\fR \fIPATH\fR]",
            r"\fBladder check\-config\fR [\fB\-\-config\fR \fIPATH\fR]",
            r"\fBladder doctor\fR [\fB\-\-config\fR \fIPATH\fR] [\fB\-\-json\fR]",
            r"\fBladder config\fR \fB\-\-default\fR",
        ] {
            assert!(page.contains(command), "no {command}:\n{page}");
        }
        // one page: no pointers to per-command pages, no hidden command
        assert!(!page.contains("ladder\\-serve(1)"), "{page}");
        assert!(!page.contains("ladder generate"), "{page}");
        assert!(!page.contains("ladder help"), "{page}");
    }

    #[test]
    fn completions_offer_the_documented_commands_only() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ladder", &mut out);
            let script = String::from_utf8(out).unwrap();
            for command in ["serve", "check-config", "doctor", "config", "json"] {
                assert!(script.contains(command), "{shell}: no {command}");
            }
            assert!(!script.contains("generate"), "{shell} offers generate");
        }
    }

    #[test]
    fn generate_parses_but_is_not_documented() {
        let args = ["ladder", "generate", "completions", "bash"];
        assert!(matches!(
            Invocation::try_parse_from(args).map(|i| i.command),
            Ok(Invoked::Generate {
                what: Generated::Completions {
                    shell: clap_complete::Shell::Bash
                }
            })
        ));
        assert!(Cli::try_parse_from(args).is_err());
        let help = Invocation::command().render_help().to_string();
        assert!(help.contains("check-config"), "{help}");
        assert!(!help.contains("generate"), "{help}");
        // the documented commands parse through Invocation as through Cli
        assert!(matches!(
            Invocation::try_parse_from(["ladder", "serve", "--config", "/x"]).map(|i| i.command),
            Ok(Invoked::Documented(Command::Serve { .. }))
        ));
    }

    #[test]
    fn roff_text_is_escaped() {
        assert_eq!(roff("a-b"), r"a\-b");
        assert_eq!(roff(r"C:\x"), r"C:\ex");
        assert_eq!(roff(".TH no\n'no\nok"), "\\&.TH no\n\\&'no\nok");
    }
}
