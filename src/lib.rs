//! switchboard library

pub mod sip;
