//! Framing: 4-byte big-endian length prefix ([`LengthDelimitedCodec`]) with an explicit
//! cap, and postcard for the frame bodies. A peer that declares a frame over the cap
//! gets an error before anything is allocated for it.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Default maximum frame length: 32 MiB, configurable on both sides (the broker's
/// `max_frame`, the client's `ClientConfig::max_frame`; docs/contracts.md).
pub const DEFAULT_MAX_FRAME: usize = 32 * 1024 * 1024;

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The body is not a valid encoding of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[source] postcard::Error),
}

/// Encode one value as a frame body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(CodecError::Malformed)
}

/// Decode one frame body. Trailing bytes are an error except for the frozen
/// handshake heads, which are read with [`decode_head`].
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(CodecError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        )),
        Err(e) => Err(CodecError::Malformed(e)),
    }
}

/// Decode the frozen prefix of a frame body, ignoring what follows (used for
/// [`crate::WelcomeHead`] so that any client can read any broker's refusal).
pub fn decode_head<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    postcard::take_from_bytes(body)
        .map(|(v, _)| v)
        .map_err(CodecError::Malformed)
}

/// The length-delimited codec with the given cap.
pub fn length_codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame)
        .new_codec()
}

/// Wrap a stream in the length-delimited framing with the given cap.
pub fn framed<S: AsyncRead + AsyncWrite>(
    stream: S,
    max_frame: usize,
) -> Framed<S, LengthDelimitedCodec> {
    Framed::new(stream, length_codec(max_frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    #[test]
    fn frame_over_cap_is_refused() {
        let mut codec = length_codec(1024);
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x04, 0x01, 0, 0][..]);
        let err = codec.decode(&mut buf).expect_err("over cap");
        assert!(err.to_string().contains("frame size too big"), "{err}");
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let mut codec = length_codec(1024);
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x00, 0x05, 1, 2][..]);
        assert!(codec.decode(&mut buf).expect("no error").is_none());
        assert!(
            codec.decode_eof(&mut buf).is_err(),
            "eof mid-frame must be an error"
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut body = encode(&5u32).expect("enc");
        body.push(0);
        assert!(decode::<u32>(&body).is_err());
        assert_eq!(decode_head::<u32>(&body).expect("head"), 5);
    }
}
