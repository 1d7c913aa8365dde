//! The pure layer of switchboard: the domain state machine ([`core`]), the timing wheel
//! ([`wheel`]), the SIP protocol rules ([`sip`]) and the policy they enforce ([`policy`]).
//!
//! Nothing here performs I/O or reads a clock: time is always an argument, randomness is a
//! seed handed in, and the results are values (replies, effects, datagrams to send) for the
//! server crate to act on. This crate depends on no async runtime, web framework, database or
//! socket crate, so the compiler keeps that rule.

pub mod core;
pub mod duration;
pub mod policy;
pub mod room;
pub mod sip;
pub mod wheel;
