//! Fuzz target: any text a WebSocket client sends (customer chat, panel, Dashboard) through
//! the frame parser. Nothing may panic; every refusal is a message for the client.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(message) = switchboard::http::ws::parse_client_frame(text) {
            assert!(!message.is_empty());
        }
    }
});
