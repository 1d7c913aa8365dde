//! SIP registrar over UDP. `message` (syntax) and `registrar` (REGISTER, digest auth) are pure
//! protocol logic: no tokio, no sockets, no clock. The UDP adapter that drives them lives here.

pub use switchboard_core::sip::{message, registrar};
pub mod udp;

pub use udp::serve;
