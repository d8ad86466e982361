//! Control: configuration (and later the admin API and metrics).

pub mod config;
