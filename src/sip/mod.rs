//! SIP registrar over UDP. `message` (syntax) and `registrar` (REGISTER, digest auth) are pure
//! protocol logic: no tokio, no sockets, no clock. The UDP adapter that drives them lives here.

pub mod message;
pub mod registrar;
pub mod udp;

pub use udp::serve;
