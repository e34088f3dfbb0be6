//! The client's Python-dialect JSON parser (what comes back from the jail): any text
//! to `pyjson::from_str`. Nothing may panic, and what parses survives the round trip
//! through `to_string` (the writer's output parses again to the same text).
#![no_main]

use codejail_client::pyjson::{from_str, to_string};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = from_str(text) else {
        return;
    };
    let written = to_string(&value);
    let again = from_str(&written)
        .unwrap_or_else(|e| panic!("our own output {written:?} does not parse: {e}"));
    assert_eq!(to_string(&again), written);
});
