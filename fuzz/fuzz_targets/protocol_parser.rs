//! The protocol message parser: any text a client can send. It never panics; what it accepts
//! serialises and parses back to the same command (the wire types round-trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_signaling::{ClientMessage, parse_client_message};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_client_message(&text) {
        Ok(msg) => {
            let again = serde_json::to_string(&msg).expect("a parsed message serialises");
            let back: ClientMessage =
                parse_client_message(&again).expect("what we serialise parses");
            assert_eq!(back, msg, "round trip of {again}");
            let _ = msg.command.type_name();
        }
        Err((_id, e)) => {
            // Every refusal has a code and a message for the client.
            let _ = e.code();
            let _ = e.message();
        }
    }
});
