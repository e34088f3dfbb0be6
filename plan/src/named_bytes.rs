//! Serde for `Vec<(String, Vec<u8>)>` (named files) with each file's contents as serde
//! bytes, as `serde_bytes` does for a lone `Vec<u8>`: `#[serde(with = "named_bytes")]`.
//!
//! In postcard a byte string and a sequence of `u8` have the same encoding (a varint
//! length, then the bytes), so this changes nothing on the wire. What it changes is
//! the cost: as a sequence, a file is decoded one byte at a time into a vector that
//! grows by doubling (each growth may copy it, and the result has up to twice its
//! size), and encoded one push at a time; as bytes, it is decoded into one allocation
//! of its exact size and encoded with one copy.

use serde::{Deserialize, Deserializer, Serializer};
use serde_bytes::{ByteBuf, Bytes};

/// Serialize named files, each file's contents as bytes.
pub fn serialize<S: Serializer>(files: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        files
            .iter()
            .map(|(name, contents)| (name, Bytes::new(contents))),
    )
}

/// Deserialize named files, each file's contents as bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
    let files = Vec::<(String, ByteBuf)>::deserialize(d)?;
    Ok(files
        .into_iter()
        .map(|(name, contents)| (name, contents.into_vec()))
        .collect())
}
