//! Packaging: access units to CMAF, and the manifests that list them.
//!
//! - [`cmaf`]: box serialisation, pure functions (ISO/IEC 23000-19 CMAF,
//!   ISO/IEC 14496-12 ISOBMFF).
//! - [`packager`]: the stateful fragmenter: cuts segments at IDR and parts at the
//!   part target, writes the store.
//! - [`store`]: segments and parts in memory, what the origin serves.
//! - [`hls`]: LL-HLS playlists (RFC 8216bis) and blocking-reload directives.
//! - [`dash`]: the LL-DASH MPD (ISO/IEC 23009-1, DASH-IF low-latency).

pub mod cmaf;
pub mod dash;
pub mod hls;
pub mod packager;
pub mod store;
