//! Parsing JSON text as Python's `json.loads` does (the C scanner, `strict=True`):
//! `NaN`, `Infinity` and `-Infinity` are accepted, an integer literal of any size is an
//! [`Int`] and one with a fraction or exponent a float (`1e400` is infinity, as
//! `float("1e400")`), `\uXXXX` escapes may leave lone surrogates (an escaped high
//! surrogate followed by an escaped low one join), raw control characters inside
//! strings are refused, and a repeated object key keeps its first position with the
//! last value (Python's `dict`).

use super::{Dict, Int, Str, Value};

/// Deepest nesting accepted. Python's decoder stops at its recursion limit (1000 by
/// default) with `RecursionError`; this parser recurses too, so it must stop somewhere.
pub const MAX_DEPTH: usize = 1000;

/// Why a text is not Python-dialect JSON, and where (as Python reports it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: line {line} column {column} (char {offset})")]
pub struct ParseError {
    /// What was expected or found, in Python's words where it has them.
    pub what: &'static str,
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column (in characters) of the error.
    pub column: usize,
    /// 0-based character offset of the error.
    pub offset: usize,
}

/// `json.loads(text)`.
pub fn from_str(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.error("Extra data", p.pos));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &'static str, at: usize) -> ParseError {
        let before = self.text.get(..at).unwrap_or(self.text);
        let offset = before.chars().count();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ParseError {
            what,
            line,
            column,
            offset,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.bytes[self.pos..].starts_with(literal.as_bytes()) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                Ok(Value::Str(self.string()?))
            }
            Some(b'{') => {
                self.pos += 1;
                self.nested(depth, start)?;
                self.object(depth + 1)
            }
            Some(b'[') => {
                self.pos += 1;
                self.nested(depth, start)?;
                self.array(depth + 1)
            }
            Some(b'n') if self.eat("null") => Ok(Value::Null),
            Some(b't') if self.eat("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Value::Bool(false)),
            Some(b'N') if self.eat("NaN") => Ok(Value::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(Value::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(Value::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("Expecting value", start)),
        }
    }

    fn nested(&self, depth: usize, at: usize) -> Result<(), ParseError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("Nested too deeply", at));
        }
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`, as Python's `NUMBER_RE`.
    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.error("Expecting value", start)),
        }
        let int_end = self.pos;
        // A fraction or exponent only counts when digits follow (else the number ends
        // before the '.' or 'e', and whatever follows is an error of the caller's).
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                self.pos = int_end;
            }
        }
        let frac_end = self.pos;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                self.pos = frac_end;
            }
        }
        let text = &self.text[start..self.pos];
        if self.pos == int_end {
            text.parse::<Int>()
                .map(Value::Int)
                .map_err(|_| self.error("Expecting value", start))
        } else {
            // Correctly rounded like Python's float(); out of range gives ±inf.
            text.parse::<f64>()
                .map(Value::Float)
                .map_err(|_| self.error("Expecting value", start))
        }
    }

    /// A string body, after its opening quote.
    fn string(&mut self) -> Result<Str, ParseError> {
        let begin = self.pos - 1;
        let mut out = Str::new();
        loop {
            // Copy the run of plain characters up to the next quote, backslash or
            // control character in one go.
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.error("Unterminated string starting at", begin)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc_at = self.pos;
                    self.pos += 1;
                    let simple = match self.peek() {
                        Some(b'"') => Some(0x22),
                        Some(b'\\') => Some(0x5C),
                        Some(b'/') => Some(0x2F),
                        Some(b'b') => Some(0x08),
                        Some(b'f') => Some(0x0C),
                        Some(b'n') => Some(0x0A),
                        Some(b'r') => Some(0x0D),
                        Some(b't') => Some(0x09),
                        Some(b'u') => None,
                        None => return Err(self.error("Unterminated string starting at", begin)),
                        Some(_) => return Err(self.error("Invalid \\escape", esc_at)),
                    };
                    self.pos += 1;
                    let c = match simple {
                        Some(c) => c,
                        None => {
                            let unit = self.hex4()?;
                            self.join_low_surrogate(unit)?
                        }
                    };
                    out.push_code_point(c);
                }
                Some(_) => return Err(self.error("Invalid control character at", self.pos)),
            }
        }
    }

    /// The four hex digits after a `\u` (`pos` is just past the `u`).
    fn hex4(&mut self) -> Result<u32, ParseError> {
        // Python reports a bad escape at its `u`.
        let u_at = self.pos - 1;
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("Invalid \\uXXXX escape", u_at))?;
        self.pos += 4;
        u32::from_str_radix(hex, 16).map_err(|_| self.error("Invalid \\uXXXX escape", u_at))
    }

    /// After a `\uXXXX` high surrogate, an immediately following `\uXXXX` low surrogate
    /// joins it into one character (Python does the same); anything else leaves it lone.
    fn join_low_surrogate(&mut self, unit: u32) -> Result<u32, ParseError> {
        if !(0xD800..=0xDBFF).contains(&unit) || !self.bytes[self.pos..].starts_with(b"\\u") {
            return Ok(unit);
        }
        let save = self.pos;
        self.pos += 2;
        let low = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&low) {
            Ok(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
        } else {
            self.pos = save;
            Ok(unit)
        }
    }

    /// An array body, after its `[`.
    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::List(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                _ => return Err(self.error("Expecting ',' delimiter", self.pos)),
            }
        }
    }

    /// An object body, after its `{`.
    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        let mut dict = Dict::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Dict(dict));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error(
                    "Expecting property name enclosed in double quotes",
                    self.pos,
                ));
            }
            self.pos += 1;
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("Expecting ':' delimiter", self.pos));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            dict.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Dict(dict));
                }
                _ => return Err(self.error("Expecting ',' delimiter", self.pos)),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use crate::pyjson::to_string;

    fn parse(text: &str) -> Value {
        from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// Parsing then writing gives Python's `json.dumps(json.loads(text))`.
    #[test]
    fn round_trips_match_python() {
        // (input, what CPython 3.11 prints for json.dumps(json.loads(input)))
        let cases = [
            ("null", "null"),
            (" true ", "true"),
            ("[1,2 ,3]", "[1, 2, 3]"),
            (
                "{\"a\":{\"b\":[]},\"c\":{}}",
                "{\"a\": {\"b\": []}, \"c\": {}}",
            ),
            ("NaN", "NaN"),
            ("[Infinity,-Infinity]", "[Infinity, -Infinity]"),
            ("-0", "0"),
            ("-0.0", "-0.0"),
            ("1E400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1e2", "100.0"),
            ("1.5E-7", "1.5e-07"),
            (
                "12345678901234567890123456789",
                "12345678901234567890123456789",
            ),
            (
                "-12345678901234567890123456789",
                "-12345678901234567890123456789",
            ),
            ("\"\\ud800\"", "\"\\ud800\""),
            ("\"\\uD83D\\uDE00\"", "\"\\ud83d\\ude00\""),
            ("\"\\ud83d\\u0041\"", "\"\\ud83dA\""),
            ("\"\\udc00\\ud800\"", "\"\\udc00\\ud800\""),
            ("\"\\ud800\\ud800\\udc00\"", "\"\\ud800\\ud800\\udc00\""),
            ("\"é😀\\/\"", "\"\\u00e9\\ud83d\\ude00/\""),
            ("{\"a\": 1, \"b\": 2, \"a\": 3}", "{\"a\": 3, \"b\": 2}"),
        ];
        for (input, expected) in cases {
            assert_eq!(to_string(&parse(input)), expected, "{input:?}");
        }
    }

    #[test]
    fn types_are_pythons() {
        assert_eq!(parse("3"), Value::Int(Int::from(3)));
        assert_eq!(parse("3.0"), Value::Float(3.0));
        assert_eq!(parse("3e0"), Value::Float(3.0));
        assert!(parse("NaN").as_f64().is_some_and(f64::is_nan));
        let lone = parse("\"a\\udfffb\"");
        let s = lone.as_py_str().expect("a str");
        assert_eq!(s.code_points().collect::<Vec<_>>(), [0x61, 0xDFFF, 0x62]);
        assert_eq!(lone.as_str(), None);
    }

    #[test]
    fn invalid_text_is_refused_as_python_refuses_it() {
        let cases = [
            ("", "Expecting value", 0),
            ("  ", "Expecting value", 2),
            ("[1,]", "Expecting value", 3),
            (
                "{\"a\":1,}",
                "Expecting property name enclosed in double quotes",
                7,
            ),
            (
                "{'a': 1}",
                "Expecting property name enclosed in double quotes",
                1,
            ),
            ("{\"a\" 1}", "Expecting ':' delimiter", 5),
            ("[1 2]", "Expecting ',' delimiter", 3),
            ("01", "Extra data", 1),
            ("1.", "Extra data", 1),
            ("1e", "Extra data", 1),
            ("+1", "Expecting value", 0),
            ("-", "Expecting value", 0),
            ("nan", "Expecting value", 0),
            ("-Inf", "Expecting value", 0),
            ("\"abc", "Unterminated string starting at", 0),
            ("\"a\nb\"", "Invalid control character at", 2),
            ("\"\\x41\"", "Invalid \\escape", 1),
            ("\"\\u12\"", "Invalid \\uXXXX escape", 2),
            ("\"\\ud800\\u12x4\"", "Invalid \\uXXXX escape", 8),
            ("[] []", "Extra data", 3),
        ];
        for (input, what, offset) in cases {
            let err = from_str(input).expect_err(input);
            assert_eq!((err.what, err.offset), (what, offset), "{input:?}");
        }
        let err = from_str("{\n  \"a\": x}").expect_err("bad");
        assert_eq!((err.line, err.column), (2, 8));
        assert_eq!(err.to_string(), "Expecting value: line 2 column 8 (char 9)");
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(from_str(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            from_str(&deep).expect_err("too deep").what,
            "Nested too deeply"
        );
    }
}
