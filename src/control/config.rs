//! Configuration: the TOML file of SPEC.md ("Configuration (TOML)"), loaded, checked
//! and turned into plain structs the rest of the appliance codes against.
//!
//! Two passes:
//!
//! 1. `toml` + serde deserialise the text into private `Raw*` mirrors of the public
//!    structs, with `#[serde(deny_unknown_fields)]` everywhere and every value wrapped
//!    in [`toml::Spanned`]. Syntax errors, wrong types, unknown and missing keys stop
//!    here, with the span `toml` reports.
//! 2. A validator walks the raw tree, applies the defaults and the semantic rules
//!    (ranges, uniqueness, references between channels and ladders, URL schemes), and
//!    collects *every* violation, each pointing at the offending key or value.
//!
//! Errors render as `file:line:col: message` (1-based; columns count characters), one
//! per line, in document order, the format editors and CI annotate.
//!
//! Secrets (stream keys, the API token, restream and pull URLs, which carry keys of
//! their own, and the webhook URL) never appear in an error message nor in the `Debug`
//! output of these structs: messages name the channel instead ("channel \"news\": key
//! ...").

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The embedded default configuration (open mode, no channels, `ladders.default`).
const DEFAULT_TEXT: &str = include_str!("default.toml");

/// Where packages install the configuration; used when neither `--config` nor
/// `$LADDER_CONFIG` names one and this file exists.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/ladder/ladder.toml";

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "LADDER_CONFIG";

/// The name the embedded default goes by in messages.
pub const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// Shortest segment target: below this, segment overhead (an IDR per segment, one
/// request per segment per viewer) dominates.
pub const MIN_SEGMENT_SECONDS: f64 = 0.5;
/// Longest segment target: beyond this, live latency and the memory kept per window
/// grow past any use.
pub const MAX_SEGMENT_SECONDS: f64 = 30.0;
/// Shortest LL-HLS part / CMAF chunk: below this, request rate per viewer explodes.
pub const MIN_PART_SECONDS: f64 = 0.1;
/// Fewest segments in the live window: RFC 8216 section 6.2.2 wants a playlist to
/// hold at least three target durations.
pub const MIN_WINDOW_SEGMENTS: usize = 3;
/// Most segments in the live window; bounds the memory the segment store holds.
pub const MAX_WINDOW_SEGMENTS: usize = 1000;
/// Longest channel or rendition name (they appear in URLs and metric labels).
pub const MAX_NAME_LEN: usize = 64;
/// Longest stream key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Smallest and largest encoded width or height.
pub const MIN_DIMENSION: u32 = 16;
/// Largest encoded width or height (NVENC's and x264's common ceiling for AV1/H.264 levels we use).
pub const MAX_DIMENSION: u32 = 8192;
/// Highest rendition bitrate accepted, in kbit/s.
pub const MAX_BITRATE_KBPS: u32 = 200_000;
/// Highest frame-rate cap accepted.
pub const MAX_FPS: f64 = 240.0;
/// Longest publisher idle timeout, in seconds.
pub const MAX_IDLE_TIMEOUT: f64 = 3600.0;
/// Most renditions in one ladder (each is an encoder session and a playlist).
pub const MAX_RENDITIONS: usize = 16;

/// Most encoder threads one rung may ask for.
pub const MAX_RUNG_THREADS: u32 = 64;

/// How long a publish waits for the webhook's answer by default
/// (`[auth] publish_webhook_timeout`); past it the publish is refused.
pub const DEFAULT_WEBHOOK_TIMEOUT: f64 = 5.0;
/// Longest `publish_webhook_timeout`: an encoder waits this long for its
/// answer, and the connection holds a slot meanwhile.
pub const MAX_WEBHOOK_TIMEOUT: f64 = 30.0;
/// Shortest `playback_secret`, in bytes: an HMAC key shorter than this can
/// be guessed offline from one signed URL.
pub const MIN_PLAYBACK_SECRET_LEN: usize = 16;
/// Default query parameter of a signed playback URL.
pub const DEFAULT_PLAYBACK_TOKEN_PARAM: &str = "token";
/// Longest `playback_token_param`.
pub const MAX_TOKEN_PARAM_LEN: usize = 32;

/// Default `[ingest] max_publishers`: concurrent publishers, pushed and
/// pulled. Attack: publishers on many keys (open mode) or many connections
/// each taking a channel, its packager, store and ladder. 64 channels of the
/// default ladder are more than a 2-socket CPU box transcodes; a GPU box
/// sized for more raises it.
pub const DEFAULT_MAX_PUBLISHERS: usize = 64;

/// Default `[packaging] max_channel_mib`: [`crate::packaging::store::DEFAULT_MAX_CHANNEL_BYTES`]
/// in MiB (the reasoning is there).
pub const DEFAULT_MAX_CHANNEL_MIB: usize =
    crate::packaging::store::DEFAULT_MAX_CHANNEL_BYTES / crate::packaging::store::MIB;

/// Smallest `max_channel_mib`: room for two of the largest RTMP messages
/// (8 MiB, `ingest::rtmp::chunk::MAX_MESSAGE_SIZE`), so that one segment of
/// one huge frame does not leave every later one over the cap.
pub const MIN_CHANNEL_MIB: usize = 16;

/// Largest `max_channel_mib` (64 GiB): past it the cap would not bound a
/// machine's memory at all.
pub const MAX_CHANNEL_MIB: usize = 64 * 1024;

/// Largest `[origin] max_connections` and `max_parked`: the package's
/// `LimitNOFILE` (systemd/ladder.service); every viewer holds a socket.
pub const MAX_ORIGIN_LIMIT: usize = 1_048_576;

/// x264 preset names (the encoder's own list); on the GPU they map to NVENC P-presets.
pub use crate::pipeline::cpu::x264::PRESETS;
/// H.264 profiles a rendition may ask for.
pub const H264_PROFILES: &[&str] = &["baseline", "main", "high"];
/// AV1 profiles a rendition may ask for.
pub const AV1_PROFILES: &[&str] = &["main"];

// ---------------------------------------------------------------------------------
// Public configuration
// ---------------------------------------------------------------------------------

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listening sockets and TLS material.
    pub server: ServerConfig,
    /// Who may publish and who may use the admin API.
    pub auth: AuthConfig,
    /// Publisher admission.
    pub ingest: IngestConfig,
    /// CMAF segmenting and the live window.
    pub packaging: PackagingConfig,
    /// Limits of the HTTP origin.
    pub origin: OriginLimits,
    /// Channels known by key; in closed mode the only ones that may publish.
    pub channels: Vec<ChannelConfig>,
    /// Transcoding ladders by name; channels refer to them.
    pub ladders: BTreeMap<String, LadderConfig>,
}

/// `[server]`: listening sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// RTMP ingest (default `0.0.0.0:1935`).
    pub rtmp_listen: SocketAddr,
    /// Origin: playlists, manifests and media (default `0.0.0.0:8080`).
    pub http_listen: SocketAddr,
    /// Admin API, metrics, health, status page (default `127.0.0.1:8081`).
    pub admin_listen: SocketAddr,
    /// RTMPS ingest; when set, `tls_cert` and `tls_key` are set too.
    pub rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for RTMPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for RTMPS.
    pub tls_key: Option<PathBuf>,
}

/// `[auth]`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Any stream key publishes, and an unlisted key's channel name is the key itself.
    /// Default `false`.
    pub open: bool,
    /// Bearer token for the admin API.
    pub api_token: Option<String>,
    /// `http(s)://` URL asked before each publish; fail closed.
    pub publish_webhook: Option<String>,
    /// How long a publish waits for the webhook (`publish_webhook_timeout`,
    /// default [`DEFAULT_WEBHOOK_TIMEOUT`] seconds).
    pub publish_webhook_timeout: std::time::Duration,
    /// HMAC-SHA256 key of signed playback URLs (`origin::signed`); `None`:
    /// playback is not signed.
    pub playback_secret: Option<String>,
    /// The query parameter carrying a playback token (default `token`).
    pub playback_token_param: String,
}

/// `[ingest]`.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// What a second publisher on a live channel gets.
    pub duplicate_publisher: DuplicatePolicy,
    /// Concurrent publishers, pushed and pulled; more are refused. Default
    /// [`DEFAULT_MAX_PUBLISHERS`].
    pub max_publishers: usize,
    /// Seconds without media before a publisher is dropped. Default 10.
    pub idle_timeout: f64,
}

/// What happens when a second publisher arrives on a channel that is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// The newcomer is refused; the live publisher keeps the channel.
    #[default]
    Refuse,
    /// The live publisher is dropped and the newcomer takes over.
    Replace,
}

/// `[packaging]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackagingConfig {
    /// Segment target duration in seconds (segments start at an IDR, so a longer
    /// source GOP wins). Default 2.0.
    pub segment_seconds: f64,
    /// LL-HLS part = CMAF chunk = LL-DASH chunk duration. Default 0.5.
    pub part_seconds: f64,
    /// Segments kept in the live window. Default 8.
    pub window_segments: usize,
    /// Bytes one channel's segment store may hold, every rendition together
    /// (`max_channel_mib` x 1 MiB); over it the oldest segments go first
    /// (`packaging::store`). Default [`DEFAULT_MAX_CHANNEL_MIB`] MiB.
    pub max_channel_bytes: usize,
}

/// `[origin]`: limits of the HTTP origin (`origin::OriginConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginLimits {
    /// Open viewer connections at once; more are accepted and closed at once.
    /// Default [`crate::origin::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Blocking requests parked at once; more get 503 at once. Default
    /// [`crate::origin::DEFAULT_MAX_PARKED`].
    pub max_parked: usize,
}

/// `[[channels]]`: one channel. `Debug` redacts the key and the URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Public name, used in playback URLs: `[A-Za-z0-9_-]{1,64}`, not starting with `-`.
    pub name: String,
    /// Secret stream key: `rtmp://HOST:1935/live/<key>`.
    pub key: String,
    /// Name of the ladder under `[ladders]`. Default `"default"`.
    pub ladder: String,
    /// `rtmp(s)://` URL to pull from instead of waiting for a push.
    pub pull: Option<String>,
    /// Where to republish the channel (`restream`): the source, or a rung.
    pub restream: Vec<RestreamTarget>,
}

/// One `restream` entry: a URL (the source is sent) or
/// `{ url = "...", rendition = "720p" }` (that rendition of the ladder).
#[derive(Clone, PartialEq, Eq)]
pub struct RestreamTarget {
    /// `rtmp://` or `rtmps://` URL, stream key included (a secret).
    pub url: String,
    /// The ladder rendition to send; `None` for the source as published.
    pub rendition: Option<String>,
}

impl fmt::Debug for RestreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestreamTarget")
            .field("url", &REDACTED)
            .field("rendition", &self.rendition)
            .finish()
    }
}

/// `[ladders.NAME]`: a transcoding ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderConfig {
    /// Where decode, scale and encode run.
    pub backend: Backend,
    /// What admission does when no GPU can take a channel that wants one.
    pub fallback: Fallback,
    /// The renditions, in the order the multivariant playlist lists them.
    pub renditions: Vec<Rendition>,
}

/// Where a ladder's decode, scale and encode run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// GPU if one is usable, else CPU.
    #[default]
    Auto,
    /// NVDEC, CUDA scaling, NVENC.
    Gpu,
    /// NVDEC decode and CUDA scaling on the GPU, x264 encode on the CPU: for GPUs
    /// with no NVENC (A100, H100, H200). Issue 4 and GPU.md define it this way.
    Hybrid,
    /// libavcodec and x264.
    Cpu,
}

/// What admission does when a ladder wants a GPU (`auto` on a box with
/// GPUs, `gpu`, `hybrid`) and none can take the channel: full, missing, or
/// without the engine the backend needs. Decided once, at publish, and
/// logged; never in the middle of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Run the whole ladder on the host CPU.
    #[default]
    Cpu,
    /// Leave out encoded rungs, costliest first, until the rest fits on a
    /// GPU; at worst only the source passed through.
    Degrade,
    /// Refuse the publish.
    Fail,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Degrade => "degrade",
            Self::Fail => "fail",
        })
    }
}

/// Video codec of an encoded rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodecChoice {
    /// H.264 / AVC.
    #[default]
    H264,
    /// AV1.
    Av1,
}

/// One rung of a ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// Name, used in media playlist and segment URLs; unique in its ladder, not `audio`.
    pub name: String,
    /// Forward the source video as is; takes no size, bitrate or encoder option.
    pub passthrough: bool,
    /// Codec of an encoded rendition.
    pub codec: VideoCodecChoice,
    /// Output width; without it the source aspect ratio is kept. Even.
    pub width: Option<u32>,
    /// Output height. Even. An encoded rendition has `height` or `width`.
    pub height: Option<u32>,
    /// Target bitrate; set on every encoded rendition.
    pub bitrate_kbps: Option<u32>,
    /// VBV maximum rate; at least `bitrate_kbps`.
    pub maxrate_kbps: Option<u32>,
    /// Frame-rate cap; frames above it are dropped.
    pub fps_max: Option<f64>,
    /// Codec profile (`baseline`, `main`, `high` for H.264; `main` for AV1).
    pub profile: Option<String>,
    /// x264 preset name, mapped to NVENC P-presets on the GPU.
    pub preset: Option<String>,
    /// Encoder threads for this rung on the CPU backend; unset: chosen from
    /// the rung's size.
    pub threads: Option<u32>,
}

impl fmt::Display for DuplicatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refuse => "refuse",
            Self::Replace => "replace",
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Hybrid => "hybrid",
            Self::Cpu => "cpu",
        })
    }
}

impl fmt::Display for VideoCodecChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::H264 => "h264",
            Self::Av1 => "av1",
        })
    }
}

/// Shown instead of a secret in `Debug` output.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("open", &self.open)
            .field("api_token", &self.api_token.as_ref().map(|_| REDACTED))
            .field(
                "publish_webhook",
                &self.publish_webhook.as_ref().map(|_| REDACTED),
            )
            .field("publish_webhook_timeout", &self.publish_webhook_timeout)
            .field(
                "playback_secret",
                &self.playback_secret.as_ref().map(|_| REDACTED),
            )
            .field("playback_token_param", &self.playback_token_param)
            .finish()
    }
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("key", &REDACTED)
            .field("ladder", &self.ladder)
            .field("pull", &self.pull.as_ref().map(|_| REDACTED))
            .field("restream", &vec![REDACTED; self.restream.len()])
            .finish()
    }
}

/// Where the configuration came from, in the order [`Config::load`] looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config PATH`.
    Argument(PathBuf),
    /// `$LADDER_CONFIG`.
    Environment(PathBuf),
    /// [`SYSTEM_CONFIG_PATH`].
    System(PathBuf),
    /// The embedded default ([`Config::default_text`]).
    Embedded,
}

impl ConfigSource {
    /// The file read, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Argument(p) | Self::Environment(p) | Self::System(p) => Some(p),
            Self::Embedded => None,
        }
    }

    /// The name used as `file` in `file:line:col` messages.
    pub fn origin(&self) -> String {
        match self.path() {
            Some(p) => p.display().to_string(),
            None => EMBEDDED_ORIGIN.to_owned(),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argument(p) => write!(f, "{} (--config)", p.display()),
            Self::Environment(p) => write!(f, "{} (${CONFIG_ENV})", p.display()),
            Self::System(p) => write!(f, "{}", p.display()),
            Self::Embedded => f.write_str("embedded default"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// One problem with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The path as given.
        file: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not UTF-8, not TOML, a value of the wrong type, an unknown or a missing key.
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        /// The path as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
        /// What is wrong.
        message: String,
    },
    /// Well-formed, but breaks a rule (a range, a uniqueness, a reference).
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        /// The path as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// `(line, col)`, 1-based, for errors found in the text.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { line, col, .. } | Self::Invalid { line, col, .. } => Some((*line, *col)),
        }
    }
}

/// Every problem found in a configuration; `Display` writes one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// 1-based `(line, col)` of byte `offset` in `text`; columns count characters.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

// ---------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------

impl Config {
    /// The embedded default configuration, commented; what `ladder config --default`
    /// prints.
    pub fn default_text() -> &'static str {
        DEFAULT_TEXT
    }

    /// Parses and validates `text`; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = line_col(text, e.span().map_or(0, |s| s.start));
            ConfigError::Syntax {
                file: origin.to_owned(),
                line,
                col,
                // toml's messages may run over several lines ("expected ..."); keep
                // one error per line.
                message: e
                    .message()
                    .trim()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        })?;
        let mut v = Validator {
            text,
            problems: Vec::new(),
        };
        let config = v.config(raw);
        if v.problems.is_empty() {
            return Ok(config);
        }
        v.problems.sort_by_key(|p| p.0);
        Err(ConfigErrors(
            v.problems
                .into_iter()
                .map(|(offset, message)| {
                    let (line, col) = line_col(text, offset);
                    ConfigError::Invalid {
                        file: origin.to_owned(),
                        line,
                        col,
                        message,
                    }
                })
                .collect(),
        ))
    }

    /// Finds, reads and parses the configuration: `path` (`--config`), else
    /// `$LADDER_CONFIG`, else [`SYSTEM_CONFIG_PATH`] if it exists, else the embedded
    /// default. A file named by `path` or `$LADDER_CONFIG` must exist.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigErrors> {
        let env = std::env::var_os(CONFIG_ENV);
        let source = locate(path, env.as_deref(), Path::new(SYSTEM_CONFIG_PATH))?;
        Self::load_from(source)
    }

    /// Reads and parses the configuration `source` names.
    pub fn load_from(source: ConfigSource) -> Result<(Config, ConfigSource), ConfigErrors> {
        let origin = source.origin();
        let config = match source.path() {
            None => Self::parse(DEFAULT_TEXT, &origin)?,
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
                    file: origin.clone(),
                    source: e,
                })?;
                let text = decode_utf8(&bytes, &origin)?;
                Self::parse(text, &origin)?
            }
        };
        Ok((config, source))
    }

    /// The ladder a channel uses: its own if listed, `ladders.default` for an
    /// unlisted channel in open mode or named by the publish webhook, else
    /// `None`.
    pub fn ladder_for(&self, channel: &str) -> Option<&LadderConfig> {
        match self.channel_by_name(channel) {
            Some(c) => self.ladders.get(&c.ladder),
            None if self.auth.open || self.auth.publish_webhook.is_some() => {
                self.ladders.get("default")
            }
            None => None,
        }
    }

    /// The channel whose stream key is `key`. Every channel is compared, and each
    /// comparison takes time that depends on the length of `key` only, so timing
    /// tells a publisher nothing about the keys configured.
    pub fn channel_by_key(&self, key: &str) -> Option<&ChannelConfig> {
        let mut found = None;
        for channel in &self.channels {
            if constant_time_eq(key.as_bytes(), channel.key.as_bytes()) {
                found = Some(channel);
            }
        }
        found
    }

    /// The listed channel named `name`.
    pub fn channel_by_name(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// Things that are valid but probably not meant; `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.auth.open && self.channels.is_empty() {
            w.push(
                "auth.open = false and no [[channels]] are listed: no publisher will be admitted"
                    .to_owned(),
            );
        }
        if self.auth.open {
            w.push("auth.open = true: any stream key publishes".to_owned());
        }
        if self.server.rtmps_listen.is_none()
            && (self.server.tls_cert.is_some() || self.server.tls_key.is_some())
        {
            w.push(
                "server.tls_cert/tls_key are set but server.rtmps_listen is not: they are unused"
                    .to_owned(),
            );
        }
        if self.auth.api_token.is_none() && !self.server.admin_listen.ip().is_loopback() {
            w.push(format!(
                "server.admin_listen = {} is not loopback and auth.api_token is unset: the admin API is open to the network",
                self.server.admin_listen
            ));
        }
        for (name, ladder) in &self.ladders {
            for r in &ladder.renditions {
                if let Some(warning) = av1_realtime_warning(r) {
                    w.push(format!("ladders.{name} rendition {:?}: {warning}", r.name));
                }
            }
        }
        w
    }
}

/// Whether an AV1 rendition may not keep real time on the CPU, judged at
/// its configured size (a 16:9 source assumed where only one side is set)
/// and `fps_max` (30 fps assumed without one).
fn av1_realtime_warning(r: &Rendition) -> Option<String> {
    if r.passthrough || r.codec != VideoCodecChoice::Av1 {
        return None;
    }
    let (width, height) = crate::pipeline::plan::planned_size(r.width, r.height)?;
    let fps = r.fps_max.unwrap_or(30.0);
    let warning = crate::pipeline::cpu::av1::realtime_warning(width, height, fps)?;
    let one_side = r.width.is_none() || r.height.is_none();
    Some(match (one_side, r.fps_max.is_none()) {
        (false, false) => warning,
        (true, true) => format!("{warning} (a 16:9 source at 30 fps assumed)"),
        (true, false) => format!("{warning} (a 16:9 source assumed)"),
        (false, true) => format!("{warning} (a 30 fps source assumed)"),
    })
}

/// Equality of `given` (attacker-chosen) against `secret` in time that depends on
/// `given.len()` only: no early exit on the first difference nor on a length mismatch.
/// (Stream keys here; the admin API's bearer token in `control::admin`.)
pub fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != secret.len());
    for (i, &b) in given.iter().enumerate() {
        // Out of range: compare against a byte that differs from `b`.
        let s = secret.get(i).copied().unwrap_or(!b);
        diff |= b ^ s;
    }
    std::hint::black_box(diff) == 0
}

/// Which configuration [`Config::load`] reads.
fn locate(
    path: Option<&Path>,
    env: Option<&std::ffi::OsStr>,
    system: &Path,
) -> Result<ConfigSource, ConfigError> {
    if let Some(p) = path {
        return Ok(ConfigSource::Argument(p.to_owned()));
    }
    // An empty variable counts as unset (`Environment=LADDER_CONFIG=` in a unit file).
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return Ok(ConfigSource::Environment(PathBuf::from(e)));
    }
    match system.try_exists() {
        Ok(true) => Ok(ConfigSource::System(system.to_owned())),
        Ok(false) => Ok(ConfigSource::Embedded),
        // It may exist but cannot be looked at: say so rather than silently run open.
        Err(e) => Err(ConfigError::Read {
            file: system.display().to_string(),
            source: e,
        }),
    }
}

/// The file's text, or where its first byte that is not UTF-8 is.
fn decode_utf8<'a>(bytes: &'a [u8], origin: &str) -> Result<&'a str, ConfigError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = e.valid_up_to();
        // `good` is a boundary, so the prefix is valid.
        let prefix = std::str::from_utf8(&bytes[..good]).unwrap_or_default();
        let (line, col) = line_col(prefix, good);
        ConfigError::Syntax {
            file: origin.to_owned(),
            line,
            col,
            message: "not valid UTF-8".to_owned(),
        }
    })
}

// ---------------------------------------------------------------------------------
// Raw, span-carrying mirror of the file
// ---------------------------------------------------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a configuration table")]
struct RawConfig {
    server: Option<S<RawServer>>,
    auth: Option<S<RawAuth>>,
    ingest: Option<S<RawIngest>>,
    packaging: Option<S<RawPackaging>>,
    origin: Option<S<RawOrigin>>,
    #[serde(default)]
    channels: Vec<S<RawChannel>>,
    #[serde(default)]
    ladders: BTreeMap<S<String>, S<RawLadder>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [server] table")]
struct RawServer {
    rtmp_listen: Option<S<String>>,
    http_listen: Option<S<String>>,
    admin_listen: Option<S<String>>,
    rtmps_listen: Option<S<String>>,
    tls_cert: Option<S<String>>,
    tls_key: Option<S<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [auth] table")]
struct RawAuth {
    open: Option<S<bool>>,
    api_token: Option<S<String>>,
    publish_webhook: Option<S<String>>,
    publish_webhook_timeout: Option<S<f64>>,
    playback_secret: Option<S<String>>,
    playback_token_param: Option<S<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [ingest] table")]
struct RawIngest {
    duplicate_publisher: Option<DuplicatePolicy>,
    max_publishers: Option<S<usize>>,
    idle_timeout: Option<S<f64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [packaging] table")]
struct RawPackaging {
    segment_seconds: Option<S<f64>>,
    part_seconds: Option<S<f64>>,
    window_segments: Option<S<usize>>,
    max_channel_mib: Option<S<usize>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [origin] table")]
struct RawOrigin {
    max_connections: Option<S<usize>>,
    max_parked: Option<S<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[channels]] table")]
struct RawChannel {
    name: S<String>,
    key: S<String>,
    ladder: Option<S<String>>,
    pull: Option<S<String>>,
    #[serde(default)]
    restream: Vec<S<RawRestream>>,
}

/// A `restream` entry as written: a URL, or a table.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "an rtmp(s):// URL, or a table { url = \"rtmp(s)://...\", rendition = \"NAME\" }"
)]
enum RawRestream {
    Url(String),
    Table {
        url: String,
        rendition: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [ladders.NAME] table with backend and renditions"
)]
struct RawLadder {
    backend: Option<Backend>,
    fallback: Option<Fallback>,
    renditions: S<Vec<S<RawRendition>>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rendition table such as { name = \"720p\", height = 720, bitrate_kbps = 3000 }"
)]
struct RawRendition {
    name: S<String>,
    passthrough: Option<S<bool>>,
    codec: Option<S<VideoCodecChoice>>,
    width: Option<S<u32>>,
    height: Option<S<u32>>,
    bitrate_kbps: Option<S<u32>>,
    maxrate_kbps: Option<S<u32>>,
    fps_max: Option<S<f64>>,
    profile: Option<S<String>>,
    preset: Option<S<String>>,
    threads: Option<S<u32>>,
}

/// Splits an optional spanned section into its value (or the default) and the offset
/// errors about its missing keys point at (the section, or the top of the file).
fn section<T: Default>(s: Option<S<T>>) -> (T, usize) {
    match s {
        Some(s) => {
            let at = s.span().start;
            (s.into_inner(), at)
        }
        None => (T::default(), 0),
    }
}

// ---------------------------------------------------------------------------------
// Semantic checks
// ---------------------------------------------------------------------------------

/// Applies defaults and collects every rule violation as `(byte offset, message)`.
struct Validator<'a> {
    /// The text, to turn offsets into lines for messages that cite another place.
    text: &'a str,
    problems: Vec<(usize, String)>,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    fn error(&mut self, at: usize, message: String) {
        self.problems.push((at, message));
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let server = self.server(raw.server);
        let (auth, open_at) = self.auth(raw.auth);
        let ingest = self.ingest(raw.ingest);
        let packaging = self.packaging(raw.packaging);
        let origin = self.origin(raw.origin);

        let mut ladders = BTreeMap::new();
        for (name, ladder) in raw.ladders {
            let name_at = name.span().start;
            let name = name.into_inner();
            if let Err(why) = check_name(&name) {
                self.error(name_at, format!("ladder {name:?}: name {why}"));
            }
            let ladder = self.ladder(&name, ladder);
            ladders.insert(name, ladder);
        }

        let channels = self.channels(raw.channels, &ladders);

        if auth.open && !ladders.contains_key("default") {
            self.error(
                open_at,
                "auth.open = true needs a [ladders.default]: unlisted channels use it".to_owned(),
            );
        }

        Config {
            server,
            auth,
            ingest,
            packaging,
            origin,
            channels,
            ladders,
        }
    }

    fn server(&mut self, raw: Option<S<RawServer>>) -> ServerConfig {
        let (raw, at) = section(raw);
        let listen = |v: &mut Self, key: &str, value: Option<S<String>>, default: &str| {
            let Some(value) = value else {
                // The defaults are literals that parse.
                return (default.parse().ok(), at);
            };
            let value_at = value.span().start;
            match value.get_ref().parse::<SocketAddr>() {
                Ok(a) => (Some(a), value_at),
                Err(_) => {
                    v.error(
                        value_at,
                        format!(
                            "server.{key}: {:?} is not a socket address; expected IP:PORT such as \"0.0.0.0:1935\" or \"[::]:1935\"",
                            value.get_ref()
                        ),
                    );
                    (None, value_at)
                }
            }
        };
        let rtmp = listen(self, "rtmp_listen", raw.rtmp_listen, "0.0.0.0:1935");
        let http = listen(self, "http_listen", raw.http_listen, "0.0.0.0:8080");
        let admin = listen(self, "admin_listen", raw.admin_listen, "127.0.0.1:8081");
        let rtmps_given = raw.rtmps_listen.as_ref().map(|r| r.span().start);
        let rtmps = raw
            .rtmps_listen
            .map(|r| listen(self, "rtmps_listen", Some(r), ""));

        // Distinct sockets. Port 0 (any free port, as tests use) never conflicts.
        let named = [
            ("rtmp_listen", rtmp),
            ("http_listen", http),
            ("admin_listen", admin),
            ("rtmps_listen", rtmps.unwrap_or((None, 0))),
        ];
        for (i, (key, (addr, addr_at))) in named.iter().enumerate() {
            let Some(addr) = addr else { continue };
            if let Some((other, _)) = named[..i]
                .iter()
                .find(|(_, (o, _))| o.is_some_and(|o| sockets_conflict(o, *addr)))
            {
                self.error(
                    *addr_at,
                    format!(
                        "server.{key}: {addr} overlaps server.{other}; each listener needs its own port"
                    ),
                );
            }
        }

        let path = |v: &mut Self, key: &str, value: Option<S<String>>| {
            let value = value?;
            if value.get_ref().trim().is_empty() {
                v.error(value.span().start, format!("server.{key}: empty path"));
                return None;
            }
            Some((PathBuf::from(value.get_ref()), value.span().start))
        };
        let tls_cert = path(self, "tls_cert", raw.tls_cert);
        let tls_key = path(self, "tls_key", raw.tls_key);
        match (&tls_cert, &tls_key) {
            (Some((_, at)), None) => self.error(
                *at,
                "server.tls_cert is set without server.tls_key".to_owned(),
            ),
            (None, Some((_, at))) => self.error(
                *at,
                "server.tls_key is set without server.tls_cert".to_owned(),
            ),
            _ => {}
        }
        if let Some(rtmps_at) = rtmps_given {
            if tls_cert.is_none() || tls_key.is_none() {
                self.error(
                    rtmps_at,
                    "server.rtmps_listen needs server.tls_cert and server.tls_key".to_owned(),
                );
            }
        }

        let fallback =
            |a: (Option<SocketAddr>, usize)| a.0.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        ServerConfig {
            rtmp_listen: fallback(rtmp),
            http_listen: fallback(http),
            admin_listen: fallback(admin),
            rtmps_listen: rtmps.and_then(|r| r.0),
            tls_cert: tls_cert.map(|c| c.0),
            tls_key: tls_key.map(|k| k.0),
        }
    }

    /// The auth section, and where errors about `open` point.
    fn auth(&mut self, raw: Option<S<RawAuth>>) -> (AuthConfig, usize) {
        let (raw, at) = section(raw);
        let (open, open_at) = match raw.open {
            Some(o) => (*o.get_ref(), o.span().start),
            None => (false, at),
        };
        if let Some(t) = &raw.api_token {
            let t_ref = t.get_ref();
            if t_ref.is_empty() {
                self.error(
                    t.span().start,
                    "auth.api_token: empty; remove the line to run without a token".to_owned(),
                );
            } else if t_ref.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    t.span().start,
                    "auth.api_token: contains whitespace or control characters".to_owned(),
                );
            }
        }
        if let Some(w) = &raw.publish_webhook {
            if check_url(w.get_ref(), &["http", "https"]).is_err() {
                self.error(
                    w.span().start,
                    "auth.publish_webhook: must be an http:// or https:// URL with a host"
                        .to_owned(),
                );
            } else if let Err(why) = crate::control::webhook::HookUrl::parse(w.get_ref()) {
                self.error(w.span().start, format!("auth.publish_webhook: {why}"));
            }
            if open {
                self.error(
                    w.span().start,
                    "auth.publish_webhook: the webhook decides every publish, so auth.open must be false"
                        .to_owned(),
                );
            }
        }
        let publish_webhook_timeout = match &raw.publish_webhook_timeout {
            Some(t) => {
                let v = *t.get_ref();
                if !(v > 0.0 && v <= MAX_WEBHOOK_TIMEOUT) {
                    self.error(
                        t.span().start,
                        format!("auth.publish_webhook_timeout: {v} is out of range; must be more than 0 and at most {MAX_WEBHOOK_TIMEOUT} seconds"),
                    );
                    DEFAULT_WEBHOOK_TIMEOUT
                } else {
                    v
                }
            }
            None => DEFAULT_WEBHOOK_TIMEOUT,
        };
        if let Some(secret) = &raw.playback_secret {
            let v = secret.get_ref();
            if v.len() < MIN_PLAYBACK_SECRET_LEN {
                self.error(
                    secret.span().start,
                    format!("auth.playback_secret: shorter than {MIN_PLAYBACK_SECRET_LEN} bytes; make one with `openssl rand -hex 32`"),
                );
            } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    secret.span().start,
                    "auth.playback_secret: contains whitespace or control characters".to_owned(),
                );
            }
        }
        let playback_token_param = match raw.playback_token_param {
            Some(p) => {
                let v = p.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= MAX_TOKEN_PARAM_LEN
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    && !v.starts_with("_HLS_");
                if !ok {
                    self.error(
                        p.span().start,
                        format!("auth.playback_token_param: use 1-{MAX_TOKEN_PARAM_LEN} of A-Z a-z 0-9 _ -, not starting with _HLS_"),
                    );
                }
                p.into_inner()
            }
            None => DEFAULT_PLAYBACK_TOKEN_PARAM.to_owned(),
        };
        (
            AuthConfig {
                open,
                api_token: raw.api_token.map(Spanned::into_inner),
                publish_webhook: raw.publish_webhook.map(Spanned::into_inner),
                publish_webhook_timeout: std::time::Duration::from_secs_f64(
                    publish_webhook_timeout,
                ),
                playback_secret: raw.playback_secret.map(Spanned::into_inner),
                playback_token_param,
            },
            open_at,
        )
    }

    fn ingest(&mut self, raw: Option<S<RawIngest>>) -> IngestConfig {
        let (raw, _) = section(raw);
        let max_publishers = match raw.max_publishers {
            Some(m) => {
                if *m.get_ref() == 0 {
                    self.error(
                        m.span().start,
                        "ingest.max_publishers: must be at least 1".to_owned(),
                    );
                }
                m.into_inner()
            }
            None => DEFAULT_MAX_PUBLISHERS,
        };
        let idle_timeout = match raw.idle_timeout {
            Some(t) => {
                let v = *t.get_ref();
                if !(v > 0.0 && v <= MAX_IDLE_TIMEOUT) {
                    self.error(
                        t.span().start,
                        format!("ingest.idle_timeout: {v} is out of range; must be more than 0 and at most {MAX_IDLE_TIMEOUT} seconds"),
                    );
                }
                v
            }
            None => 10.0,
        };
        IngestConfig {
            duplicate_publisher: raw.duplicate_publisher.unwrap_or_default(),
            max_publishers,
            idle_timeout,
        }
    }

    fn packaging(&mut self, raw: Option<S<RawPackaging>>) -> PackagingConfig {
        let (raw, at) = section(raw);
        let (segment_seconds, seg_at) = spanned_or(raw.segment_seconds, 2.0, at);
        let (part_seconds, part_at) = spanned_or(raw.part_seconds, 0.5, at);
        let (window_segments, window_at) = spanned_or(raw.window_segments, 8, at);
        let (max_channel_mib, mib_at) =
            spanned_or(raw.max_channel_mib, DEFAULT_MAX_CHANNEL_MIB, at);

        let segment_ok = (MIN_SEGMENT_SECONDS..=MAX_SEGMENT_SECONDS).contains(&segment_seconds);
        if !segment_ok {
            // Only reachable when given: the default is in range.
            self.error(
                seg_at,
                format!("packaging.segment_seconds: {segment_seconds} is out of range; must be {MIN_SEGMENT_SECONDS} to {MAX_SEGMENT_SECONDS}"),
            );
        }
        // Against an out-of-range segment target, check the part against the range's
        // ceiling so one mistake yields one message.
        let part_max = if segment_ok {
            segment_seconds
        } else {
            MAX_SEGMENT_SECONDS
        };
        if !(MIN_PART_SECONDS..=part_max).contains(&part_seconds) {
            self.error(
                part_at,
                format!("packaging.part_seconds: {part_seconds} is out of range; must be {MIN_PART_SECONDS} to segment_seconds ({part_max})"),
            );
        }
        if !(MIN_WINDOW_SEGMENTS..=MAX_WINDOW_SEGMENTS).contains(&window_segments) {
            self.error(
                window_at,
                format!("packaging.window_segments: {window_segments} is out of range; must be {MIN_WINDOW_SEGMENTS} to {MAX_WINDOW_SEGMENTS} (a playlist holds at least 3 target durations)"),
            );
        }
        if !(MIN_CHANNEL_MIB..=MAX_CHANNEL_MIB).contains(&max_channel_mib) {
            self.error(
                mib_at,
                format!("packaging.max_channel_mib: {max_channel_mib} is out of range; must be {MIN_CHANNEL_MIB} to {MAX_CHANNEL_MIB}"),
            );
        }
        PackagingConfig {
            segment_seconds,
            part_seconds,
            window_segments,
            max_channel_bytes: max_channel_mib.saturating_mul(crate::packaging::store::MIB),
        }
    }

    fn origin(&mut self, raw: Option<S<RawOrigin>>) -> OriginLimits {
        let (raw, at) = section(raw);
        let limit = |v: &mut Self, key: &str, value: Option<S<usize>>, default: usize| {
            let (n, n_at) = spanned_or(value, default, at);
            if !(1..=MAX_ORIGIN_LIMIT).contains(&n) {
                v.error(
                    n_at,
                    format!("origin.{key}: {n} is out of range; must be 1 to {MAX_ORIGIN_LIMIT}"),
                );
            }
            n
        };
        OriginLimits {
            max_connections: limit(
                self,
                "max_connections",
                raw.max_connections,
                crate::origin::DEFAULT_MAX_CONNECTIONS,
            ),
            max_parked: limit(
                self,
                "max_parked",
                raw.max_parked,
                crate::origin::DEFAULT_MAX_PARKED,
            ),
        }
    }

    fn channels(
        &mut self,
        raw: Vec<S<RawChannel>>,
        ladders: &BTreeMap<String, LadderConfig>,
    ) -> Vec<ChannelConfig> {
        let mut names: HashMap<String, usize> = HashMap::new();
        // Key -> name of the first channel using it; never printed.
        let mut keys: HashMap<String, String> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for channel in raw {
            let table_at = channel.span().start;
            let c = channel.into_inner();
            let name = c.name.get_ref().clone();
            let name_at = c.name.span().start;
            let who = format!("channel {name:?}");

            if let Err(why) = check_name(&name) {
                self.error(name_at, format!("{who}: name {why}"));
            }
            match names.get(&name) {
                Some(&first) => {
                    let first = self.line(first);
                    self.error(
                        name_at,
                        format!("{who}: duplicate channel name (first defined at line {first})"),
                    );
                }
                None => {
                    names.insert(name.clone(), c.name.span().start);
                }
            }

            let key = c.key.get_ref();
            let key_at = c.key.span().start;
            if let Err(why) = check_key(key) {
                self.error(key_at, format!("{who}: key {why}"));
            } else if let Some(first) = keys.get(key) {
                self.error(
                    key_at,
                    format!("{who}: key is the same as channel {first:?}'s; keys must be unique"),
                );
            } else {
                keys.insert(key.clone(), name.clone());
            }

            let (ladder, ladder_at) = match &c.ladder {
                Some(l) => (l.get_ref().clone(), l.span().start),
                None => ("default".to_owned(), table_at),
            };
            if !ladders.contains_key(&ladder) {
                let how = if c.ladder.is_some() {
                    ""
                } else {
                    " (the default when `ladder` is not set)"
                };
                self.error(
                    ladder_at,
                    format!("{who}: ladder {ladder:?}{how} is not defined; add a [ladders.{ladder}] table"),
                );
            }

            if let Some(p) = &c.pull {
                if check_url(p.get_ref(), &["rtmp", "rtmps"]).is_err() {
                    self.error(
                        p.span().start,
                        format!("{who}: pull must be an rtmp:// or rtmps:// URL with a host"),
                    );
                }
            }
            let mut restream = Vec::with_capacity(c.restream.len());
            for (i, r) in c.restream.into_iter().enumerate() {
                let at = r.span().start;
                let (url, rendition) = match r.into_inner() {
                    RawRestream::Url(url) => (url, None),
                    RawRestream::Table { url, rendition } => (url, rendition),
                };
                if check_url(&url, &["rtmp", "rtmps"]).is_err() {
                    self.error(
                        at,
                        format!(
                            "{who}: restream[{i}] must be an rtmp:// or rtmps:// URL with a host"
                        ),
                    );
                }
                if let (Some(r), Some(l)) = (&rendition, ladders.get(&ladder)) {
                    if !l.renditions.iter().any(|x| &x.name == r) {
                        let names: Vec<&str> =
                            l.renditions.iter().map(|x| x.name.as_str()).collect();
                        self.error(
                            at,
                            format!(
                                "{who}: restream[{i}]: ladder {ladder:?} has no rendition {r:?} (it has {})",
                                names.join(", ")
                            ),
                        );
                    }
                }
                restream.push(RestreamTarget { url, rendition });
            }

            out.push(ChannelConfig {
                name,
                key: c.key.into_inner(),
                ladder,
                pull: c.pull.map(Spanned::into_inner),
                restream,
            });
        }
        out
    }

    fn ladder(&mut self, ladder: &str, raw: S<RawLadder>) -> LadderConfig {
        let raw = raw.into_inner();
        let list_at = raw.renditions.span().start;
        let renditions = raw.renditions.into_inner();
        let who = format!("ladder {ladder:?}");
        if renditions.is_empty() {
            self.error(list_at, format!("{who}: renditions is empty"));
        } else if renditions.len() > MAX_RENDITIONS {
            self.error(
                list_at,
                format!(
                    "{who}: {} renditions; at most {MAX_RENDITIONS}",
                    renditions.len()
                ),
            );
        }
        let mut names: Vec<String> = Vec::new();
        let mut passthrough: Option<String> = None;
        let mut out = Vec::with_capacity(renditions.len());
        for r in renditions {
            let r = r.into_inner();
            let name = r.name.get_ref().clone();
            let name_at = r.name.span().start;
            let who = format!("ladder {ladder:?}: rendition {name:?}");

            if let Err(why) = check_name(&name) {
                self.error(name_at, format!("{who}: name {why}"));
            } else if name.eq_ignore_ascii_case("audio") {
                self.error(
                    name_at,
                    format!("{who}: name is reserved for the audio track"),
                );
            }
            if names.contains(&name) {
                self.error(name_at, format!("{who}: duplicate rendition name"));
            } else {
                names.push(name.clone());
            }

            let is_passthrough = r.passthrough.as_ref().is_some_and(|p| *p.get_ref());
            if is_passthrough {
                if let Some(first) = &passthrough {
                    let at = r.passthrough.as_ref().map_or(name_at, |p| p.span().start);
                    self.error(at, format!("{who}: a second passthrough rendition (rendition {first:?} is one); at most one per ladder"));
                } else {
                    passthrough = Some(name.clone());
                }
                let given = [
                    ("codec", r.codec.as_ref().map(|v| v.span().start)),
                    ("width", r.width.as_ref().map(|v| v.span().start)),
                    ("height", r.height.as_ref().map(|v| v.span().start)),
                    (
                        "bitrate_kbps",
                        r.bitrate_kbps.as_ref().map(|v| v.span().start),
                    ),
                    (
                        "maxrate_kbps",
                        r.maxrate_kbps.as_ref().map(|v| v.span().start),
                    ),
                    ("fps_max", r.fps_max.as_ref().map(|v| v.span().start)),
                    ("profile", r.profile.as_ref().map(|v| v.span().start)),
                    ("preset", r.preset.as_ref().map(|v| v.span().start)),
                    ("threads", r.threads.as_ref().map(|v| v.span().start)),
                ];
                for (key, at) in given {
                    if let Some(at) = at {
                        self.error(
                            at,
                            format!(
                                "{who}: passthrough takes no {key}; the source is forwarded as is"
                            ),
                        );
                    }
                }
            } else {
                self.encoded_rendition(&who, name_at, &r);
            }

            out.push(Rendition {
                name,
                passthrough: is_passthrough,
                codec: r.codec.map(Spanned::into_inner).unwrap_or_default(),
                width: r.width.map(Spanned::into_inner),
                height: r.height.map(Spanned::into_inner),
                bitrate_kbps: r.bitrate_kbps.map(Spanned::into_inner),
                maxrate_kbps: r.maxrate_kbps.map(Spanned::into_inner),
                fps_max: r.fps_max.map(Spanned::into_inner),
                profile: r.profile.map(Spanned::into_inner),
                preset: r.preset.map(Spanned::into_inner),
                threads: r.threads.map(Spanned::into_inner),
            });
        }
        LadderConfig {
            backend: raw.backend.unwrap_or_default(),
            fallback: raw.fallback.unwrap_or_default(),
            renditions: out,
        }
    }

    /// Rules for a rendition that is encoded (not passthrough).
    fn encoded_rendition(&mut self, who: &str, name_at: usize, r: &RawRendition) {
        if r.width.is_none() && r.height.is_none() {
            self.error(name_at, format!("{who}: needs height (or width)"));
        }
        for (key, dim) in [("width", &r.width), ("height", &r.height)] {
            if let Some(d) = dim {
                let v = *d.get_ref();
                if !(MIN_DIMENSION..=MAX_DIMENSION).contains(&v) {
                    self.error(d.span().start, format!("{who}: {key} {v} is out of range; must be {MIN_DIMENSION} to {MAX_DIMENSION}"));
                } else if v % 2 != 0 {
                    self.error(
                        d.span().start,
                        format!("{who}: {key} {v} is odd; sizes must be even (4:2:0 chroma)"),
                    );
                }
            }
        }
        match &r.bitrate_kbps {
            None => self.error(name_at, format!("{who}: needs bitrate_kbps")),
            Some(b) => {
                let v = *b.get_ref();
                if !(1..=MAX_BITRATE_KBPS).contains(&v) {
                    self.error(b.span().start, format!("{who}: bitrate_kbps {v} is out of range; must be 1 to {MAX_BITRATE_KBPS}"));
                }
            }
        }
        if let Some(m) = &r.maxrate_kbps {
            let v = *m.get_ref();
            let bitrate = r.bitrate_kbps.as_ref().map_or(0, |b| *b.get_ref());
            if v < bitrate {
                self.error(
                    m.span().start,
                    format!("{who}: maxrate_kbps {v} is below bitrate_kbps {bitrate}"),
                );
            } else if v > MAX_BITRATE_KBPS {
                self.error(m.span().start, format!("{who}: maxrate_kbps {v} is out of range; must be at most {MAX_BITRATE_KBPS}"));
            }
        }
        if let Some(f) = &r.fps_max {
            let v = *f.get_ref();
            if !(v > 0.0 && v <= MAX_FPS) {
                self.error(f.span().start, format!("{who}: fps_max {v} is out of range; must be more than 0 and at most {MAX_FPS}"));
            }
        }
        let codec = r
            .codec
            .as_ref()
            .map_or(VideoCodecChoice::H264, |c| *c.get_ref());
        if let Some(p) = &r.profile {
            let allowed = match codec {
                VideoCodecChoice::H264 => H264_PROFILES,
                VideoCodecChoice::Av1 => AV1_PROFILES,
            };
            if !allowed.contains(&p.get_ref().as_str()) {
                self.error(
                    p.span().start,
                    format!(
                        "{who}: profile {:?} is not valid for {codec}; expected one of {}",
                        p.get_ref(),
                        allowed.join(", ")
                    ),
                );
            }
        }
        if let Some(t) = &r.threads {
            if *t.get_ref() == 0 || *t.get_ref() > MAX_RUNG_THREADS {
                self.error(
                    t.span().start,
                    format!(
                        "{who}: threads = {} is not in 1..={MAX_RUNG_THREADS}",
                        t.get_ref()
                    ),
                );
            }
        }
        if let Some(p) = &r.preset {
            if !PRESETS.contains(&p.get_ref().as_str()) {
                self.error(
                    p.span().start,
                    format!(
                        "{who}: preset {:?} is not an x264 preset; expected one of {}",
                        p.get_ref(),
                        PRESETS.join(", ")
                    ),
                );
            }
        }
    }
}

/// The value of an optional spanned key and where it is (or `at` when absent).
fn spanned_or<T>(v: Option<S<T>>, default: T, at: usize) -> (T, usize) {
    match v {
        Some(v) => {
            let a = v.span().start;
            (v.into_inner(), a)
        }
        None => (default, at),
    }
}

/// Two listeners conflict when they share a port (other than 0) and an address, or
/// one of them is the wildcard of either family (dual-stack `[::]` takes IPv4 too).
fn sockets_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || is_wildcard(a.ip()) || is_wildcard(b.ip()))
}

fn is_wildcard(ip: IpAddr) -> bool {
    ip.is_unspecified()
}

/// Channel, rendition and ladder names: `[A-Za-z0-9_-]{1,64}`, not starting with `-`.
/// `Err` says why, to follow "name ..." (the publish webhook's channel too).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.starts_with('-') {
        return Err("starts with '-'".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Stream keys: non-empty, at most 256 bytes, no whitespace, control characters,
/// `/`, `?` or `&` (they would split the RTMP URL). The key itself is never echoed.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("is empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_KEY_LEN}",
            key.len()
        ));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".to_owned());
    }
    if let Some(c) = key.chars().find(|c| matches!(c, '/' | '?' | '&')) {
        return Err(format!("contains {c:?}, which splits the publish URL"));
    }
    Ok(())
}

/// `scheme://host...` with a scheme in `schemes` (case-insensitive), a non-empty
/// host and no whitespace or control characters.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), ()> {
    let (scheme, rest) = url.split_once("://").ok_or(())?;
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const LADDER: &str =
        "[ladders.default]\nrenditions = [{ name = \"source\", passthrough = true }]\n";

    #[test]
    fn default_text_parses_to_spec_values() {
        let c = Config::parse(Config::default_text(), EMBEDDED_ORIGIN).unwrap();
        assert_eq!(c.server.rtmp_listen, "0.0.0.0:1935".parse().unwrap());
        assert_eq!(c.server.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.server.admin_listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(c.server.rtmps_listen, None);
        assert!(c.auth.open);
        assert_eq!(c.auth.api_token, None);
        assert_eq!(c.ingest.duplicate_publisher, DuplicatePolicy::Refuse);
        assert_eq!(c.ingest.max_publishers, 64);
        assert_eq!(c.ingest.idle_timeout, 10.0);
        assert_eq!(c.packaging.segment_seconds, 2.0);
        assert_eq!(c.packaging.part_seconds, 0.5);
        assert_eq!(c.packaging.window_segments, 8);
        assert_eq!(
            c.packaging.max_channel_bytes,
            crate::packaging::store::DEFAULT_MAX_CHANNEL_BYTES
        );
        assert_eq!(
            c.origin,
            OriginLimits {
                max_connections: crate::origin::DEFAULT_MAX_CONNECTIONS,
                max_parked: crate::origin::DEFAULT_MAX_PARKED,
            }
        );
        assert!(c.channels.is_empty());
        assert_eq!(c.ladders.len(), 1);
        let l = &c.ladders["default"];
        assert_eq!(l.backend, Backend::Auto);
        assert_eq!(l.fallback, Fallback::Cpu);
        let got: Vec<_> = l
            .renditions
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.passthrough,
                    r.height,
                    r.bitrate_kbps,
                    r.width,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("source", true, None, None, None),
                ("720p", false, Some(720), Some(3000), None),
                ("480p", false, Some(480), Some(1200), None),
                ("360p", false, Some(360), Some(700), None),
            ]
        );
        assert!(l
            .renditions
            .iter()
            .all(|r| r.codec == VideoCodecChoice::H264));
        // Open mode: any channel gets the default ladder.
        assert_eq!(c.ladder_for("anything"), Some(l));
    }

    #[test]
    fn every_default_key_is_commented() {
        // Each active key carries a comment on its line (or the ladder block).
        for line in Config::default_text().lines() {
            let t = line.trim();
            if t.contains(" = ") && !t.starts_with('#') && !t.starts_with('{') && !t.ends_with('[')
            {
                assert!(t.contains('#'), "uncommented key: {line}");
            }
        }
    }

    #[test]
    fn a_ladder_names_its_gpu_fallback() {
        let c = Config::parse(
            "[ladders.default]\nbackend = \"gpu\"\nfallback = \"degrade\"\nrenditions = [{ name = \"source\", passthrough = true }]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.ladders["default"].backend, Backend::Gpu);
        assert_eq!(c.ladders["default"].fallback, Fallback::Degrade);
        let e = errors(&LADDER.replace("renditions", "fallback = \"retry\"\nrenditions"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("unknown variant `retry`, expected one of `cpu`, `degrade`, `fail`"),
            "{e:?}"
        );
    }

    #[test]
    fn av1_rungs_beyond_what_keeps_real_time_are_warned_about() {
        let c = Config::parse(
            r#"
[[channels]]
name = "a"
key = "k"
ladder = "av"
[ladders.av]
renditions = [
  { name = "source", passthrough = true },
  { name = "a720", codec = "av1", height = 720, bitrate_kbps = 2500 },
  { name = "a360", codec = "av1", height = 360, bitrate_kbps = 700, fps_max = 24 },
  { name = "a360x", codec = "av1", width = 640, height = 360, bitrate_kbps = 700, fps_max = 30 },
  { name = "h720", height = 720, bitrate_kbps = 3000 },
]
"#,
            "t.toml",
        )
        .unwrap();
        let w: Vec<_> = c
            .warnings()
            .into_iter()
            .filter(|w| w.contains("AV1"))
            .collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("ladders.av rendition \"a720\": AV1 rung 1280x720 at 30 fps will not keep real time"), "{}", w[0]);
        assert!(
            w[0].ends_with("(a 16:9 source at 30 fps assumed)"),
            "{}",
            w[0]
        );
        // 640x360 at 30 fps measured 30.2 fps: within the headroom, at the limit
        assert!(
            w[1].starts_with(
                "ladders.av rendition \"a360x\": AV1 rung 640x360 at 30 fps is at the limit"
            ),
            "{}",
            w[1]
        );
    }

    #[test]
    fn empty_file_uses_defaults_and_is_closed() {
        let c = Config::parse("", "t.toml").unwrap();
        assert!(!c.auth.open);
        assert_eq!(c.packaging.window_segments, 8);
        assert_eq!(c.ingest.idle_timeout, 10.0);
        assert_eq!(c.server.admin_listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        assert!(c.warnings()[0].contains("no publisher will be admitted"));
    }

    #[test]
    fn integers_are_accepted_for_seconds() {
        let c = Config::parse("[packaging]\nsegment_seconds = 4\npart_seconds = 1\n", "t").unwrap();
        assert_eq!(c.packaging.segment_seconds, 4.0);
        assert_eq!(c.packaging.part_seconds, 1.0);
    }

    #[test]
    fn syntax_error_points_at_the_bad_value() {
        assert_eq!(
            errors("[server]\nrtmp_listen = 0.0.0.0:1935\n"),
            errors("[server]\nrtmp_listen = 0.0.0.0:1935\n")
        );
        let e = errors("[server]\nrtmp_listen = 0.0.0.0:1935\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.toml:2:"), "{e:?}");
    }

    #[test]
    fn unknown_key_is_reported_at_the_key() {
        let e = errors("[server]\nrtmp_listen = \"0.0.0.0:1935\"\n  htp_listen = \"0.0.0.0:80\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("t.toml:3:3: unknown field `htp_listen`"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_section_is_an_error() {
        let e = errors("[servr]\n");
        assert!(e[0].starts_with("t.toml:1:"), "{e:?}");
        assert!(e[0].contains("unknown field `servr`"), "{e:?}");
    }

    #[test]
    fn wrong_type_and_bad_enum() {
        let e = errors("[ingest]\nmax_publishers = \"many\"\n");
        assert!(e[0].starts_with("t.toml:2:18: "), "{e:?}");
        let e = errors("[ingest]\nduplicate_publisher = \"kick\"\n");
        assert!(e[0].starts_with("t.toml:2:23: "), "{e:?}");
        assert!(e[0].contains("unknown variant `kick`"), "{e:?}");
    }

    #[test]
    fn missing_key_in_channel() {
        let e = errors(&format!("{LADDER}[[channels]]\nname = \"news\"\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("missing field `key`"), "{e:?}");
        assert!(e[0].starts_with("t.toml:3:"), "{e:?}");
    }

    #[test]
    fn packaging_ranges() {
        let e = errors(
            "[packaging]\nsegment_seconds = 40.0\npart_seconds = 0.05\nwindow_segments = 2\n",
        );
        assert_eq!(
            e,
            [
                "t.toml:2:19: packaging.segment_seconds: 40 is out of range; must be 0.5 to 30",
                "t.toml:3:16: packaging.part_seconds: 0.05 is out of range; must be 0.1 to segment_seconds (30)",
                "t.toml:4:19: packaging.window_segments: 2 is out of range; must be 3 to 1000 (a playlist holds at least 3 target durations)",
            ]
        );
        let e = errors("[packaging]\nsegment_seconds = 1.0\npart_seconds = 1.5\n");
        assert_eq!(e, ["t.toml:3:16: packaging.part_seconds: 1.5 is out of range; must be 0.1 to segment_seconds (1)"]);
        let e = errors("[packaging]\nsegment_seconds = nan\nwindow_segments = 1001\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:2:19: packaging.segment_seconds: NaN"),
            "{e:?}"
        );
        assert!(e[1].starts_with("t.toml:3:19: "), "{e:?}");
    }

    #[test]
    fn caps_and_their_ranges() {
        let c = Config::parse(
            &format!("[packaging]\nmax_channel_mib = 24\n[origin]\nmax_connections = 10\nmax_parked = 3\n{LADDER}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.packaging.max_channel_bytes, 24 * 1024 * 1024);
        assert_eq!(
            c.origin,
            OriginLimits {
                max_connections: 10,
                max_parked: 3
            }
        );
        // the defaults are the named constants
        let c = Config::parse(LADDER, "t.toml").unwrap();
        assert_eq!(c.ingest.max_publishers, DEFAULT_MAX_PUBLISHERS);
        assert_eq!(
            c.packaging.max_channel_bytes,
            DEFAULT_MAX_CHANNEL_MIB * 1024 * 1024
        );
        let e = errors("[packaging]\nmax_channel_mib = 15\n[origin]\nmax_connections = 0\nmax_parked = 2000000\n");
        assert_eq!(
            e,
            [
                "t.toml:2:19: packaging.max_channel_mib: 15 is out of range; must be 16 to 65536",
                "t.toml:4:19: origin.max_connections: 0 is out of range; must be 1 to 1048576",
                "t.toml:5:14: origin.max_parked: 2000000 is out of range; must be 1 to 1048576",
            ]
        );
        let e = errors("[origin]\nmax_viewers = 3\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("max_viewers"), "{e:?}");
    }

    #[test]
    fn listen_addresses() {
        let e = errors("[server]\nrtmp_listen = \"localhost:1935\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "t.toml:2:15: server.rtmp_listen: \"localhost:1935\" is not a socket address"
            ),
            "{e:?}"
        );

        let e = errors("[server]\nrtmp_listen = \"0.0.0.0:8080\"\n");
        assert_eq!(
            e,
            ["t.toml:1:1: server.http_listen: 0.0.0.0:8080 overlaps server.rtmp_listen; each listener needs its own port"]
        );
        let e =
            errors("[server]\nhttp_listen = \"127.0.0.1:9000\"\nadmin_listen = \"0.0.0.0:9000\"\n");
        assert_eq!(
            e,
            ["t.toml:3:16: server.admin_listen: 0.0.0.0:9000 overlaps server.http_listen; each listener needs its own port"]
        );
        // Different addresses on one port, and port 0 everywhere, are fine.
        assert!(errors(
            "[server]\nhttp_listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.2:9000\"\n"
        )
        .is_empty());
        assert!(errors("[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n").is_empty());
    }

    #[test]
    fn rtmps_needs_tls() {
        let e = errors("[server]\nrtmps_listen = \"0.0.0.0:1936\"\ntls_cert = \"/c.pem\"\n");
        assert_eq!(
            e,
            [
                "t.toml:2:16: server.rtmps_listen needs server.tls_cert and server.tls_key",
                "t.toml:3:12: server.tls_cert is set without server.tls_key",
            ]
        );
        let c = Config::parse("[server]\nrtmps_listen = \"0.0.0.0:1936\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n", "t").unwrap();
        assert_eq!(c.server.rtmps_listen, Some("0.0.0.0:1936".parse().unwrap()));
        assert_eq!(c.server.tls_key.as_deref(), Some(Path::new("/k.pem")));
        let e = errors(
            "[server]\nrtmps_listen = \"0.0.0.0:1935\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n",
        );
        assert_eq!(
            e,
            ["t.toml:2:16: server.rtmps_listen: 0.0.0.0:1935 overlaps server.rtmp_listen; each listener needs its own port"]
        );
    }

    fn channel(name: &str, key: &str) -> String {
        format!("[[channels]]\nname = \"{name}\"\nkey = \"{key}\"\n")
    }

    #[test]
    fn channels_names_and_keys() {
        let text = format!(
            "{LADDER}{}{}{}{}",
            channel("news", "k1"),
            channel("news", "k2"),
            channel("-x", "k1"),
            channel("a b", "bad/key"),
        );
        assert_eq!(
            errors(&text),
            [
                "t.toml:7:8: channel \"news\": duplicate channel name (first defined at line 4)",
                "t.toml:10:8: channel \"-x\": name starts with '-'",
                "t.toml:11:7: channel \"-x\": key is the same as channel \"news\"'s; keys must be unique",
                "t.toml:13:8: channel \"a b\": name contains ' '; only A-Z, a-z, 0-9, '_' and '-' are allowed",
                "t.toml:14:7: channel \"a b\": key contains '/', which splits the publish URL",
            ]
        );
    }

    #[test]
    fn key_is_never_in_a_message() {
        let secret = "sup3rs3cr3t";
        let text = format!(
            "{LADDER}{}{}[[channels]]\nname = \"c\"\nkey = \"{secret} \"\nrestream = [\"http://x/{secret}\"]\npull = \"{secret}\"\n",
            channel("a", secret),
            channel("b", secret)
        );
        let e = errors(&text);
        assert_eq!(e.len(), 4, "{e:?}");
        for m in &e {
            assert!(!m.contains(secret), "{m}");
        }
        let c = Config::parse(&format!("{LADDER}{}", channel("a", secret)), "t").unwrap();
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    fn key_length_limits() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        let e = errors(&format!("{LADDER}{}", channel("a", &long)));
        assert_eq!(
            e,
            ["t.toml:5:7: channel \"a\": key is 257 bytes long; at most 256"]
        );
        assert!(errors(&format!(
            "{LADDER}{}",
            channel("a", &"k".repeat(MAX_KEY_LEN))
        ))
        .is_empty());
        let e = errors(&format!("{LADDER}{}", channel("a", "")));
        assert_eq!(e, ["t.toml:5:7: channel \"a\": key is empty"]);
        let long_name = "n".repeat(65);
        let e = errors(&format!("{LADDER}{}", channel(&long_name, "k")));
        assert!(
            e[0].ends_with("name is 65 characters long; at most 64"),
            "{e:?}"
        );
    }

    #[test]
    fn missing_ladder_points_at_the_reference() {
        let text = format!("{LADDER}[[channels]]\nname = \"a\"\nkey = \"k\"\nladder = \"hd\"\n");
        assert_eq!(
            errors(&text),
            ["t.toml:6:10: channel \"a\": ladder \"hd\" is not defined; add a [ladders.hd] table"]
        );
        // The implicit "default", with no default ladder: points at the channel.
        let e = errors(&channel("a", "k"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.toml:"), "{e:?}");
        assert!(
            e[0].contains(
                "ladder \"default\" (the default when `ladder` is not set) is not defined"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn restream_entries_are_urls_or_tables_naming_a_rendition() {
        let ladder = "[ladders.default]\nrenditions = [{ name = \"source\", passthrough = true }, { name = \"720p\", height = 720, bitrate_kbps = 3000 }]\n";
        let text = format!(
            "{ladder}[[channels]]\nname = \"a\"\nkey = \"k\"\nrestream = [\"rtmp://yt.example/live2/K1\", {{ url = \"rtmps://fb.example:443/rtmp/K2\", rendition = \"720p\" }}]\n"
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        let r = &c.channels[0].restream;
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].url.as_str(), r[0].rendition.as_deref()),
            ("rtmp://yt.example/live2/K1", None)
        );
        assert_eq!(r[1].rendition.as_deref(), Some("720p"));
        // keys never show in Debug output
        let debug = format!("{:?}", c.channels[0]);
        assert!(!debug.contains("K1") && !debug.contains("K2"), "{debug}");

        let bad = |entry: &str| {
            errors(&format!(
                "{ladder}[[channels]]\nname = \"a\"\nkey = \"k\"\nrestream = [{entry}]\n"
            ))
        };
        assert_eq!(
            bad("{ url = \"rtmp://h/app/K\", rendition = \"1080p\" }"),
            ["t.toml:6:13: channel \"a\": restream[0]: ladder \"default\" has no rendition \"1080p\" (it has source, 720p)"]
        );
        let e = bad("7");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("an rtmp(s):// URL, or a table"), "{e:?}");
    }

    #[test]
    fn open_mode_needs_default_ladder() {
        let e = errors("[auth]\nopen = true\n[ladders.hd]\nrenditions = [{ name = \"source\", passthrough = true }]\n");
        assert_eq!(
            e,
            ["t.toml:2:8: auth.open = true needs a [ladders.default]: unlisted channels use it"]
        );
    }

    #[test]
    fn rendition_rules() {
        let text = "[ladders.default]\nrenditions = [\n\
            { name = \"source\", passthrough = true, height = 720 },\n\
            { name = \"copy\", passthrough = true },\n\
            { name = \"audio\", height = 360, bitrate_kbps = 500 },\n\
            { name = \"720p\", height = 721, bitrate_kbps = 3000, maxrate_kbps = 2000 },\n\
            { name = \"720p\", width = 1280 },\n\
            { name = \"x\", height = 240, bitrate_kbps = 300, preset = \"fastest\", profile = \"high\", codec = \"av1\" },\n\
            ]\n";
        assert_eq!(
            errors(text),
            [
                "t.toml:3:49: ladder \"default\": rendition \"source\": passthrough takes no height; the source is forwarded as is",
                "t.toml:4:32: ladder \"default\": rendition \"copy\": a second passthrough rendition (rendition \"source\" is one); at most one per ladder",
                "t.toml:5:10: ladder \"default\": rendition \"audio\": name is reserved for the audio track",
                "t.toml:6:27: ladder \"default\": rendition \"720p\": height 721 is odd; sizes must be even (4:2:0 chroma)",
                "t.toml:6:68: ladder \"default\": rendition \"720p\": maxrate_kbps 2000 is below bitrate_kbps 3000",
                "t.toml:7:10: ladder \"default\": rendition \"720p\": duplicate rendition name",
                "t.toml:7:10: ladder \"default\": rendition \"720p\": needs bitrate_kbps",
                "t.toml:8:58: ladder \"default\": rendition \"x\": preset \"fastest\" is not an x264 preset; expected one of ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo",
                "t.toml:8:79: ladder \"default\": rendition \"x\": profile \"high\" is not valid for av1; expected one of main",
            ]
        );
        let e = errors("[ladders.default]\nrenditions = []\n");
        assert_eq!(e, ["t.toml:2:14: ladder \"default\": renditions is empty"]);
        let e = errors("[ladders.default]\nrenditions = [{ name = \"a\", bitrate_kbps = 100 }]\n");
        assert_eq!(
            e,
            ["t.toml:2:24: ladder \"default\": rendition \"a\": needs height (or width)"]
        );
    }

    #[test]
    fn urls() {
        let text = format!(
            "[auth]\npublish_webhook = \"ftp://h/x\"\n{LADDER}[[channels]]\nname = \"a\"\nkey = \"k\"\npull = \"rtmp://\"\nrestream = [\"rtmps://a.example/x\", \"srt://b\"]\n"
        );
        assert_eq!(
            errors(&text),
            [
                "t.toml:2:19: auth.publish_webhook: must be an http:// or https:// URL with a host",
                "t.toml:8:8: channel \"a\": pull must be an rtmp:// or rtmps:// URL with a host",
                "t.toml:9:36: channel \"a\": restream[1] must be an rtmp:// or rtmps:// URL with a host",
            ]
        );
        assert!(check_url("RTMP://host:1935/app/key", &["rtmp"]).is_ok());
        assert!(check_url("rtmp://user@:1935/x", &["rtmp"]).is_err());
        assert!(check_url("https://h ost/", &["https"]).is_err());
    }

    #[test]
    fn auth_keys_for_the_webhook_and_signed_playback() {
        let c = Config::parse(LADDER, "t.toml").unwrap();
        assert_eq!(
            c.auth.publish_webhook_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(c.auth.playback_secret, None);
        assert_eq!(c.auth.playback_token_param, "token");

        let text = format!(
            "[auth]\npublish_webhook = \"http://127.0.0.1:9000/hook?s=1\"\npublish_webhook_timeout = 0.5\nplayback_secret = \"0123456789abcdef-secret\"\nplayback_token_param = \"hdnts\"\n{LADDER}"
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(
            c.auth.publish_webhook_timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            c.auth.playback_secret.as_deref(),
            Some("0123456789abcdef-secret")
        );
        assert_eq!(c.auth.playback_token_param, "hdnts");
        // a channel the webhook names uses ladders.default
        assert!(c.ladder_for("anything").is_some());
        let debug = format!("{:?}", c.auth);
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(!debug.contains("9000"), "{debug}");

        let text = format!(
            "[auth]\nopen = true\npublish_webhook = \"http://u:p@h/x\"\npublish_webhook_timeout = 0.0\nplayback_secret = \"short\"\nplayback_token_param = \"_HLS_msn\"\n{LADDER}"
        );
        assert_eq!(
            errors(&text),
            [
                "t.toml:3:19: auth.publish_webhook: credentials in the URL are not supported; put a secret in the path or query",
                "t.toml:3:19: auth.publish_webhook: the webhook decides every publish, so auth.open must be false",
                "t.toml:4:27: auth.publish_webhook_timeout: 0 is out of range; must be more than 0 and at most 30 seconds",
                "t.toml:5:19: auth.playback_secret: shorter than 16 bytes; make one with `openssl rand -hex 32`",
                "t.toml:6:24: auth.playback_token_param: use 1-32 of A-Z a-z 0-9 _ -, not starting with _HLS_",
            ]
        );
        for bad in [
            "\"\"",
            "\"a b\"",
            "\"a=b\"",
            &format!("\"{}\"", "x".repeat(33)),
        ] {
            let e = errors(&format!("[auth]\nplayback_token_param = {bad}\n{LADDER}"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
        }
        let e = errors(&format!(
            "[auth]\npublish_webhook_timeout = 31.0\nplayback_secret = \"0123456789abcdef 1\"\n{LADDER}"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].contains("whitespace"), "{e:?}");
    }

    #[test]
    fn all_errors_are_reported_in_document_order() {
        let text = format!(
            "[packaging]\nwindow_segments = 1\n{}[ladders.default]\nrenditions = [{{ name = \"a/b\", passthrough = true }}]\n",
            channel("x", "k k")
        );
        let e = errors(&text);
        let lines: Vec<usize> = e
            .iter()
            .map(|m| m.split(':').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(lines, [2, 5, 7], "{e:?}");
    }

    #[test]
    fn lookups() {
        let text = format!(
            "{LADDER}[ladders.hd]\nrenditions = [{{ name = \"1080p\", height = 1080, bitrate_kbps = 6000 }}]\n{}{}ladder = \"hd\"\n",
            channel("a", "key-a"),
            channel("b", "key-b")
        );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(
            c.channel_by_key("key-b").map(|c| c.name.as_str()),
            Some("b")
        );
        assert_eq!(c.channel_by_key("key-"), None);
        assert_eq!(c.channel_by_key("key-bb"), None);
        assert_eq!(c.channel_by_key(""), None);
        assert_eq!(
            c.channel_by_name("a").map(|c| c.key.as_str()),
            Some("key-a")
        );
        assert_eq!(c.ladder_for("a").unwrap().renditions[0].name, "source");
        assert_eq!(c.ladder_for("b").unwrap().renditions[0].name, "1080p");
        // Closed mode: an unlisted channel has no ladder.
        assert_eq!(c.ladder_for("zzz"), None);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        // A byte that is out of range must not match whatever byte was given.
        assert!(!constant_time_eq(&[0xff], &[]));
    }

    #[test]
    fn locate_order() {
        let missing = Path::new("/nonexistent/ladder.toml");
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let arg = Path::new("/a.toml");
        assert_eq!(
            locate(Some(arg), Some("/e.toml".as_ref()), here).unwrap(),
            ConfigSource::Argument(arg.into())
        );
        assert_eq!(
            locate(None, Some("/e.toml".as_ref()), here).unwrap(),
            ConfigSource::Environment("/e.toml".into())
        );
        assert_eq!(
            locate(None, Some("".as_ref()), here).unwrap(),
            ConfigSource::System(here.into())
        );
        assert_eq!(locate(None, None, missing).unwrap(), ConfigSource::Embedded);
    }

    #[test]
    fn load_reports_unreadable_and_non_utf8_files() {
        let e =
            Config::load_from(ConfigSource::Argument("/nonexistent/x.toml".into())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/x.toml: cannot read: "),
            "{e}"
        );
        assert!(e.0[0].location().is_none());

        let e = decode_utf8(b"[server]\nrtmp_listen = \"\xff\"\n", "f").unwrap_err();
        assert_eq!(e.to_string(), "f:2:16: not valid UTF-8");

        let (c, s) = Config::load_from(ConfigSource::Embedded).unwrap();
        assert_eq!(s.to_string(), "embedded default");
        assert!(c.auth.open);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é=x", 3), (1, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
        // Inside a multi-byte character: rounds down to its start.
        assert_eq!(line_col("é", 1), (1, 1));
    }

    #[test]
    fn hostile_content_does_not_panic() {
        for text in [
            "[[channels]]\nname = 1\n",
            "channels = 3",
            "ladders = []",
            "[ladders]\ndefault = 1",
            "[packaging]\nwindow_segments = -1",
            "[packaging]\nsegment_seconds = inf\npart_seconds = -inf",
            "[ladders.default]\nrenditions = [{ name = \"a\", width = 4294967295, bitrate_kbps = 4294967295, maxrate_kbps = 1, fps_max = nan }]",
            "\u{feff}[server]",
            "a = \"\\u0000\"",
            "[ladders.\"\"]\nrenditions = [{ name = \"\", passthrough = false }]",
        ] {
            let _ = Config::parse(text, "t");
        }
    }
}
