//! [`Str`]: a Python `str`, which is any sequence of Unicode code points, lone
//! surrogates (U+D800..U+DFFF) included. Rust's `String` cannot hold a lone surrogate,
//! yet Python's `json` emits and accepts them (`"\ud800"`), so globals carry strings in
//! this type.
//!
//! Stored as WTF-8 (<https://simonsapin.github.io/wtf-8/>): UTF-8 generalised to encode
//! surrogate code points as three bytes. A string without lone surrogates is plain UTF-8
//! ([`Str::as_str`] borrows it). A high surrogate followed by a low one is always stored
//! as the single supplementary character they form, which is exactly what Python's
//! `json.loads` makes of `"\ud83d\ude00"`: after one JSON round trip Python cannot tell
//! the two apart either.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// The replacement character, for lossy conversions.
const REPLACEMENT: char = '\u{FFFD}';

/// A Python `str`: Unicode code points, lone surrogates allowed. See the module docs.
///
/// Ordering and equality are by code point, as Python's.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Str {
    /// Well-formed WTF-8: no surrogate pair encoded as two surrogates.
    wtf8: Vec<u8>,
}

impl Str {
    /// The empty string.
    pub fn new() -> Self {
        Str::default()
    }

    /// The string from code points; `None` if one is above U+10FFFF. A high surrogate
    /// directly followed by a low one becomes the character they encode.
    pub fn from_code_points(points: impl IntoIterator<Item = u32>) -> Option<Str> {
        let mut s = Str::new();
        for cp in points {
            if !s.push_code_point(cp) {
                return None;
            }
        }
        Some(s)
    }

    /// The string as `&str`, when it holds no lone surrogate.
    pub fn as_str(&self) -> Option<&str> {
        // WTF-8 without surrogates is UTF-8; a surrogate's bytes are invalid UTF-8.
        std::str::from_utf8(&self.wtf8).ok()
    }

    /// The string with each lone surrogate replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        match self.as_str() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(
                self.code_points()
                    .map(|cp| char::from_u32(cp).unwrap_or(REPLACEMENT))
                    .collect(),
            ),
        }
    }

    /// Whether the string holds a lone surrogate.
    pub fn has_lone_surrogates(&self) -> bool {
        self.as_str().is_none()
    }

    /// The code points, lone surrogates included (Python's `map(ord, s)`).
    pub fn code_points(&self) -> CodePoints<'_> {
        CodePoints { rest: &self.wtf8 }
    }

    /// Number of code points (Python's `len(s)`).
    pub fn len(&self) -> usize {
        self.code_points().count()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.wtf8.is_empty()
    }

    /// Append a `&str`.
    pub fn push_str(&mut self, s: &str) {
        // A str never starts with a surrogate, so no pair can form across the seam.
        self.wtf8.extend_from_slice(s.as_bytes());
    }

    /// Append one code point; `false` (and nothing appended) above U+10FFFF. A low
    /// surrogate after a trailing high surrogate joins it into one character.
    pub fn push_code_point(&mut self, cp: u32) -> bool {
        if (0xDC00..=0xDFFF).contains(&cp) {
            if let Some(high) = self.trailing_high_surrogate() {
                self.wtf8.truncate(self.wtf8.len() - 3);
                let joined = 0x10000 + ((high - 0xD800) << 10) + (cp - 0xDC00);
                return self.push_code_point(joined);
            }
        }
        match cp {
            0..=0x7F => self.wtf8.push(cp as u8),
            0x80..=0x7FF => self
                .wtf8
                .extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
            0x800..=0xFFFF => self.wtf8.extend_from_slice(&[
                0xE0 | (cp >> 12) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
            ]),
            0x10000..=0x10FFFF => self.wtf8.extend_from_slice(&[
                0xF0 | (cp >> 18) as u8,
                0x80 | ((cp >> 12) & 0x3F) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
            ]),
            _ => return false,
        }
        true
    }

    /// The high surrogate the string ends with, if any.
    fn trailing_high_surrogate(&self) -> Option<u32> {
        match self.wtf8.as_slice() {
            // U+D800..U+DBFF encode as ED A0..AF xx.
            [.., 0xED, b1 @ 0xA0..=0xAF, b2] => {
                Some(0xD000 | (u32::from(b1 & 0x3F) << 6) | u32::from(b2 & 0x3F))
            }
            _ => None,
        }
    }

    /// The WTF-8 bytes (for hashing and lookups inside this crate).
    pub(crate) fn wtf8(&self) -> &[u8] {
        &self.wtf8
    }
}

/// The code points of a [`Str`], from [`Str::code_points`].
#[derive(Debug, Clone)]
pub struct CodePoints<'a> {
    rest: &'a [u8],
}

impl Iterator for CodePoints<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        // Well-formed WTF-8 by construction: the lead byte gives the length.
        let (&lead, tail) = self.rest.split_first()?;
        let cont = |i: usize| u32::from(tail.get(i).copied().unwrap_or(0x80) & 0x3F);
        let (cp, len) = match lead {
            0x00..=0x7F => (u32::from(lead), 1),
            0xC0..=0xDF => ((u32::from(lead & 0x1F) << 6) | cont(0), 2),
            0xE0..=0xEF => ((u32::from(lead & 0x0F) << 12) | (cont(0) << 6) | cont(1), 3),
            _ => (
                (u32::from(lead & 0x07) << 18) | (cont(0) << 12) | (cont(1) << 6) | cont(2),
                4,
            ),
        };
        self.rest = self.rest.get(len..).unwrap_or(&[]);
        Some(cp)
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str {
            wtf8: s.as_bytes().to_vec(),
        }
    }
}

impl From<String> for Str {
    fn from(s: String) -> Self {
        Str {
            wtf8: s.into_bytes(),
        }
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Self {
        Str::from(s.as_str())
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.wtf8 == other.as_bytes()
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.wtf8 == other.as_bytes()
    }
}

/// The text, lone surrogates shown as U+FFFD.
impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// Like `str`'s `Debug`, lone surrogates shown as `\u{d800}`.
impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for cp in self.code_points() {
            match char::from_u32(cp) {
                Some(c) => {
                    for e in c.escape_debug() {
                        f.write_char(e)?;
                    }
                }
                None => write!(f, "\\u{{{cp:x}}}")?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_utf8() {
        let s = Str::from("héllo 😀");
        assert_eq!(s.as_str(), Some("héllo 😀"));
        assert_eq!(s.len(), 7);
        assert!(!s.has_lone_surrogates());
        assert_eq!(s, "héllo 😀");
        assert_eq!(
            s.code_points().collect::<Vec<_>>(),
            "héllo 😀".chars().map(u32::from).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lone_surrogates_survive() {
        let s = Str::from_code_points([0x61, 0xD800, 0x62, 0xDFFF]).expect("valid");
        assert_eq!(s.as_str(), None);
        assert!(s.has_lone_surrogates());
        assert_eq!(
            s.code_points().collect::<Vec<_>>(),
            [0x61, 0xD800, 0x62, 0xDFFF]
        );
        assert_eq!(s.len(), 4);
        assert_eq!(s.to_string_lossy(), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(format!("{s:?}"), "\"a\\u{d800}b\\u{dfff}\"");
        // A low surrogate before a high one stays two code points.
        let s = Str::from_code_points([0xDC00, 0xD800]).expect("valid");
        assert_eq!(s.code_points().collect::<Vec<_>>(), [0xDC00, 0xD800]);
    }

    #[test]
    fn a_surrogate_pair_joins_as_python_json_does() {
        let s = Str::from_code_points([0xD83D, 0xDE00]).expect("valid");
        assert_eq!(s.as_str(), Some("😀"));
        assert_eq!(s, Str::from("😀"));
        let mut s = Str::from_code_points([0xDBFF]).expect("valid");
        assert!(s.push_code_point(0xDFFF));
        assert_eq!(s.as_str(), Some("\u{10FFFF}"));
    }

    #[test]
    fn every_code_point_round_trips() {
        for cp in (0..0x11_0000u32)
            .step_by(7)
            .chain([0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000])
        {
            let s = Str::from_code_points([cp]).expect("valid");
            assert_eq!(s.code_points().collect::<Vec<_>>(), [cp], "U+{cp:X}");
            if let Some(c) = char::from_u32(cp) {
                assert_eq!(s.as_str(), Some(c.to_string().as_str()));
            }
        }
        assert_eq!(Str::from_code_points([0x11_0000]), None);
    }
}
