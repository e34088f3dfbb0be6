//! [`Int`]: a Python `int` of any size. Globals only carry integers through (no
//! arithmetic happens on this side), so a big one is kept as its canonical decimal
//! text and no big-number library is needed.

use std::fmt;
use std::str::FromStr;

/// Python's default `sys.get_int_max_str_digits()` (3.11+): `json.dumps` and
/// `json.loads` refuse integers with more decimal digits than this.
pub const PYTHON_INT_MAX_STR_DIGITS: usize = 4300;

/// A Python `int` of any size. Equality is numeric.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Int(Repr);

/// Canonical: `Small` whenever the value fits an `i64`, so derived equality is numeric.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Small(i64),
    /// Decimal digits, `-` for negatives, no leading zeros; outside the `i64` range.
    Big(Box<str>),
}

/// Text that is not a decimal integer (`-?[0-9]+`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a decimal integer")]
pub struct ParseIntError(String);

impl Int {
    /// The value as an `i64`, when it fits.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.0 {
            Repr::Small(v) => Some(*v),
            Repr::Big(_) => None,
        }
    }

    /// The value as an `i128`, when it fits.
    pub fn as_i128(&self) -> Option<i128> {
        match &self.0 {
            Repr::Small(v) => Some(i128::from(*v)),
            Repr::Big(s) => s.parse().ok(),
        }
    }

    /// Number of decimal digits (without the sign), as Python's `int_max_str_digits`
    /// counts them.
    pub fn decimal_digits(&self) -> usize {
        match &self.0 {
            Repr::Small(v) => v
                .unsigned_abs()
                .checked_ilog10()
                .map_or(1, |d| d as usize + 1),
            Repr::Big(s) => s.trim_start_matches('-').len(),
        }
    }

    /// Whether the value is negative.
    pub fn is_negative(&self) -> bool {
        match &self.0 {
            Repr::Small(v) => *v < 0,
            Repr::Big(s) => s.starts_with('-'),
        }
    }
}

impl FromStr for Int {
    type Err = ParseIntError;

    /// Decimal text `-?[0-9]+` (leading zeros allowed, `-0` is zero).
    fn from_str(s: &str) -> Result<Int, ParseIntError> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseIntError(s.to_string()));
        }
        if let Ok(v) = s.parse::<i64>() {
            return Ok(Int(Repr::Small(v)));
        }
        let digits = digits.trim_start_matches('0');
        // Beyond i64 there is at least one significant digit.
        let text = if negative {
            format!("-{digits}")
        } else {
            digits.to_string()
        };
        Ok(Int(Repr::Big(text.into_boxed_str())))
    }
}

impl fmt::Display for Int {
    /// Decimal, as Python's `repr(int)` and `json.dumps`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Small(v) => write!(f, "{v}"),
            Repr::Big(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! int_from_small {
    ($($t:ty),*) => {$(
        impl From<$t> for Int {
            fn from(v: $t) -> Int {
                Int(Repr::Small(i64::from(v)))
            }
        }
    )*};
}
int_from_small!(i8, i16, i32, i64, u8, u16, u32);

macro_rules! int_from_wide {
    ($($t:ty),*) => {$(
        impl From<$t> for Int {
            fn from(v: $t) -> Int {
                match i64::try_from(v) {
                    Ok(small) => Int(Repr::Small(small)),
                    Err(_) => Int(Repr::Big(v.to_string().into_boxed_str())),
                }
            }
        }
    )*};
}
int_from_wide!(u64, i128, u128, usize, isize);

#[cfg(test)]
mod tests {
    use super::*;

    fn int(s: &str) -> Int {
        s.parse().expect("an integer")
    }

    #[test]
    fn small_and_big_are_canonical() {
        assert_eq!(int("42"), Int::from(42));
        assert_eq!(int("-0"), Int::from(0));
        assert_eq!(int("007"), Int::from(7));
        assert_eq!(int("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(int("-9223372036854775808").as_i64(), Some(i64::MIN));
        let big = int("9223372036854775808");
        assert_eq!(big.as_i64(), None);
        assert_eq!(big, Int::from(9_223_372_036_854_775_808u64));
        assert_eq!(big.as_i128(), Some(9_223_372_036_854_775_808));
        assert_eq!(
            int("-000123456789012345678901234567890").to_string(),
            "-123456789012345678901234567890"
        );
        assert!(int("-123456789012345678901234567890").is_negative());
        let huge = "1".repeat(5000);
        assert_eq!(int(&huge).to_string(), huge);
        assert_eq!(int(&huge).decimal_digits(), 5000);
        assert_eq!(int(&huge).as_i128(), None);
    }

    #[test]
    fn digits_are_counted_like_python() {
        assert_eq!(Int::from(0).decimal_digits(), 1);
        assert_eq!(Int::from(-9).decimal_digits(), 1);
        assert_eq!(Int::from(10).decimal_digits(), 2);
        assert_eq!(Int::from(i64::MIN).decimal_digits(), 19);
        assert_eq!(int("-12345678901234567890").decimal_digits(), 20);
    }

    #[test]
    fn non_integers_are_refused() {
        for bad in ["", "-", "+1", "1.0", "1e3", " 1", "0x10", "--1"] {
            assert!(bad.parse::<Int>().is_err(), "{bad:?} accepted");
        }
    }
}
