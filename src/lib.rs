//! switchboard library

pub mod config;
