//! Control: configuration, the admin server and what it shows.
//!
//! - [`config`]: the TOML configuration (SPEC.md, "Configuration").
//! - [`admin`]: the admin server on `admin_listen`: JSON API, `/metrics`,
//!   `/healthz`, `/readyz`, the status page (SPEC.md, "URLs").
//! - [`snapshot`]: the point-in-time view of channels, rungs, destinations
//!   and GPUs that the API answers and the metrics render.
//! - [`metrics`]: Prometheus text rendering, pure.
//! - [`meter`]: input bitrate and frame rate over a sliding window.
//! - [`webhook`]: the publish webhook client (fail closed).
//! - [`systemd`]: sd_notify (READY, WATCHDOG, RELOADING, STOPPING).

#[cfg(feature = "ffmpeg")]
pub mod admin;
pub mod config;
pub mod meter;
pub mod metrics;
pub mod snapshot;
pub mod systemd;
pub mod webhook;
