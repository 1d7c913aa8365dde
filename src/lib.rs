//! switchboard library

pub mod wheel;
