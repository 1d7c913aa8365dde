//! Pure layer: SIP protocol rules. `message` is RFC 3261 syntax (parse and serialize);
//! `transaction` the RFC 3261 §17 transaction state machines; `proxy` how the call proxy
//! rewrites and builds messages;
//! `registrar` decides REGISTER requests and digest authentication. No sockets, no clock: the
//! UDP adapter in the server crate moves the datagrams and passes the time in.

pub mod message;
pub mod proxy;
pub mod registrar;
pub mod transaction;
