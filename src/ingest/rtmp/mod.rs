//! placeholder: filled in by its owner

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod session;
