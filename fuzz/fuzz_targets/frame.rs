//! The frame decoder: the length-delimited codec with its cap, fed in chunks, then each
//! frame body decoded as everything a peer sends (broker side: `Hello`, `Request`;
//! client side: `Welcome`, `WelcomeHead`, `Response`). Nothing may panic; a frame is
//! never longer than the cap; whatever decodes survives an encode/decode round trip.
#![no_main]

use std::fmt::Debug;

use bytes::BytesMut;
use codejail_protocol::codec::length_codec;
use codejail_protocol::{
    decode, decode_head, encode, Hello, Request, Response, Welcome, WelcomeHead,
};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::Decoder;

/// A small cap, so that the fuzzer reaches "over the cap" easily.
const CAP: usize = 4096;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let body = encode(value).expect("a decoded value encodes");
    let again: T = decode(&body).expect("an encoded value decodes");
    assert_eq!(&again, value);
}

fn bodies(body: &[u8]) {
    if let Ok(h) = decode_head::<Hello>(body) {
        round_trip(&h);
    }
    if let Ok(h) = decode::<Hello>(body) {
        round_trip(&h);
    }
    if let Ok(r) = decode::<Request>(body) {
        round_trip(&r);
    }
    if let Ok(w) = decode_head::<WelcomeHead>(body) {
        round_trip(&w);
    }
    if let Ok(w) = decode::<Welcome>(body) {
        round_trip(&w);
    }
    if let Ok(r) = decode::<Response>(body) {
        round_trip(&r);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so that frames split across reads are
    // explored too.
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut codec = length_codec(CAP);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    'read: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= CAP, "frame of {} over the cap", frame.len());
                    frames.push(frame.freeze());
                }
                Ok(None) => break,
                // The connection is closed on a framing error: nothing more is read.
                Err(_) => break 'read,
            }
        }
    }
    for body in &frames {
        bodies(body);
    }
    // The whole input as one body too (the postcard decoders without the framing).
    bodies(data);
});
