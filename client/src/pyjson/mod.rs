//! JSON in Python's dialect: the values `safe_exec` globals are made of, and a parser
//! and serialiser that accept and emit exactly what Python's `json` module does.
//!
//! Strict JSON parsers reject what Python's `json.dumps` happily writes — `NaN`,
//! `Infinity`, `-Infinity` and lone surrogates (`"\ud800"`) — and most cap integers at
//! 64 bits, while jailed code may leave any of these in its globals. So this module has
//! its own small value type ([`Value`], with [`Int`] for integers of any size and
//! [`Str`] for strings that may hold lone surrogates) instead of `serde_json::Value`:
//! bending `serde_json` would need its `arbitrary_precision` feature, which Cargo
//! unifies across the workspace and which would change every other crate's numbers,
//! and it still could not hold a lone surrogate or emit `NaN`.
//!
//! [`to_string`] writes what `json.dumps(value)` writes (ASCII only, `", "` and `": "`
//! separators, `float.__repr__` digits) and [`from_str`] reads what `json.loads` reads,
//! so a value survives the round trip through the jail in both directions.

mod int;
mod parse;
mod string;
mod write;

use std::fmt;
use std::hash::{Hash, Hasher};

use indexmap::{Equivalent, IndexMap};

pub use int::{Int, ParseIntError, PYTHON_INT_MAX_STR_DIGITS};
pub use parse::{from_str, ParseError, MAX_DEPTH};
pub use string::{CodePoints, Str};
pub use write::{float_repr, to_string};

/// A value that Python's `json.loads` can return.
///
/// Equality is Python's `==` on the decoded values, except that it is IEEE's for
/// floats: `NaN != NaN` (Python's `[nan] == [nan]` is true only for the same object).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None` (`null`).
    Null,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` of any size.
    Int(Int),
    /// A `float`, `NaN` and the infinities included.
    Float(f64),
    /// A `str`, possibly with lone surrogates.
    Str(Str),
    /// A `list` (a tuple or bytes inside the jail arrive as a list and a str).
    List(Vec<Value>),
    /// A `dict` with string keys, in insertion order.
    Dict(Dict),
}

impl Value {
    /// Whether this is `None`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is one (bools are not).
    pub fn as_int(&self) -> Option<&Int> {
        match self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The integer as an `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(Int::as_i64)
    }

    /// The float, if this is one (integers are not).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is one without lone surrogates.
    pub fn as_str(&self) -> Option<&str> {
        self.as_py_str().and_then(Str::as_str)
    }

    /// The string, if this is one (lone surrogates allowed).
    pub fn as_py_str(&self) -> Option<&Str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The dict, if this is one.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// `json.dumps(self)`.
    pub fn to_json(&self) -> String {
        to_string(self)
    }
}

/// `json.dumps(self)`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_string(self))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(Int::from(v))
            }
        }
    )*};
}
value_from_int!(i8, i16, i32, i64, i128, u8, u16, u32, u64, u128, usize, isize);

impl From<Int> for Value {
    fn from(i: Int) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(Str::from(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Str::from(s))
    }
}

impl From<Str> for Value {
    fn from(s: Str) -> Self {
        Value::Str(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

impl From<Dict> for Value {
    fn from(d: Dict) -> Self {
        Value::Dict(d)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Null, Into::into)
    }
}

/// A Python `dict` with `str` keys, as `json.loads` builds it: insertion-ordered, a
/// re-inserted key keeps its position (Python's `d[k] = v`). Equality ignores order,
/// as Python's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dict {
    map: IndexMap<Str, Value>,
}

/// Looks a `&str` up among [`Str`] keys without building a `Str`.
struct StrKey<'a>(&'a str);

impl Hash for StrKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match `Str`'s derived hash, which hashes its WTF-8 bytes as a slice;
        // a `str`'s UTF-8 bytes are its WTF-8 bytes.
        self.0.as_bytes().hash(state);
    }
}

impl Equivalent<Str> for StrKey<'_> {
    fn equivalent(&self, key: &Str) -> bool {
        key.wtf8() == self.0.as_bytes()
    }
}

impl Dict {
    /// An empty dict.
    pub fn new() -> Self {
        Dict::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(&StrKey(key))
    }

    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.map.get_mut(&StrKey(key))
    }

    /// The value for a key that may hold lone surrogates.
    pub fn get_py(&self, key: &Str) -> Option<&Value> {
        self.map.get(key)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(&StrKey(key))
    }

    /// Python's `d[key] = value`: a new key goes last, an existing one keeps its place.
    /// Returns the old value.
    pub fn insert(&mut self, key: impl Into<Str>, value: impl Into<Value>) -> Option<Value> {
        self.map.insert(key.into(), value.into())
    }

    /// Python's `d.pop(key, None)`: the order of the others is kept.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(&StrKey(key))
    }

    /// Python's `d.update(other)`: every entry of `other` set in turn; keys that
    /// `other` lacks keep their values.
    pub fn update(&mut self, other: Dict) {
        for (k, v) in other.map {
            self.map.insert(k, v);
        }
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Value)> {
        self.map.iter()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Str> {
        self.map.keys()
    }

    /// Keep only the entries for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Str, &Value) -> bool) {
        self.map.retain(|k, v| keep(k, v));
    }

    /// `json.dumps(self)`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write::write_dict(&mut out, self);
        out
    }
}

impl std::ops::Index<&str> for Dict {
    type Output = Value;

    /// `d[key]`; panics when the key is missing, as `HashMap`'s index does.
    fn index(&self, key: &str) -> &Value {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no key {key:?} in the dict"),
        }
    }
}

impl<K: Into<Str>, V: Into<Value>> FromIterator<(K, V)> for Dict {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut d = Dict::new();
        d.extend(iter);
        d
    }
}

impl<K: Into<Str>, V: Into<Value>> Extend<(K, V)> for Dict {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for Dict {
    type Item = (Str, Value);
    type IntoIter = indexmap::map::IntoIter<Str, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.into_iter()
    }
}

impl<'a> IntoIterator for &'a Dict {
    type Item = (&'a Str, &'a Value);
    type IntoIter = indexmap::map::Iter<'a, Str, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

/// `json.dumps(self)`.
impl fmt::Display for Dict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[test]
    fn dict_has_python_update_semantics() {
        let mut d: Dict = [("a", 1), ("b", 2), ("c", 3)].into_iter().collect();
        d.update([("b", 20), ("d", 4)].into_iter().collect());
        assert_eq!(d.to_json(), r#"{"a": 1, "b": 20, "c": 3, "d": 4}"#);
        assert_eq!(d.remove("a"), Some(Value::from(1)));
        assert_eq!(d.to_json(), r#"{"b": 20, "c": 3, "d": 4}"#);
        assert_eq!(d["c"], Value::from(3));
        assert!(d.contains_key("d") && !d.contains_key("a"));
        let reordered: Dict = [("d", 4), ("c", 3), ("b", 20)].into_iter().collect();
        assert_eq!(d, reordered, "equality ignores order, as Python's");
        let lone = Str::from_code_points([0xD800]).expect("valid");
        d.insert(lone.clone(), "x");
        assert_eq!(d.get_py(&lone), Some(&Value::from("x")));
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn values_convert_and_print_as_json() {
        let v = Value::from(vec![
            Value::from(None::<i32>),
            true.into(),
            (-3).into(),
            2.5.into(),
            "s".into(),
            Value::from(u128::MAX),
        ]);
        assert_eq!(
            v.to_string(),
            "[null, true, -3, 2.5, \"s\", 340282366920938463463374607431768211455]"
        );
        assert_eq!(v.as_list().map(<[Value]>::len), Some(6));
        assert_eq!(Value::from(7).as_i64(), Some(7));
        assert_eq!(Value::from(7).as_f64(), None);
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert!(Value::Null.is_null());
    }
}
