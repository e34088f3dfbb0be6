//! The `payload` form field of `POST /api/v0/code-exec`: Python-dialect JSON (`NaN`,
//! `Infinity`, big integers, as edx-platform's `json.dumps` writes them), checked
//! against codejail-service's schema in its order, with its messages' prefixes
//! (docs/compat.md). Python's exact decoder and jsonschema wording are not
//! reproduced; each message names the path and the problem.

use codejail_client::pyjson::{self, float_repr, Dict, Value};

/// The request's parameters once the payload passed the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The code to `exec`.
    pub code: String,
    /// The globals going in.
    pub globals: Dict,
    /// `python_path` (null and absent are empty).
    pub python_path: Vec<String>,
    /// The limit override context.
    pub limits_context: Option<String>,
    /// The caller's label.
    pub slug: Option<String>,
    /// `unsafely` (always refused when true).
    pub unsafely: bool,
}

/// `Unable to parse payload JSON: ...` or `Payload JSON did not match schema ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not Python-dialect JSON.
    #[error("Unable to parse payload JSON: {0}")]
    Json(String),
    /// Against the schema.
    #[error("Payload JSON did not match schema at path {path}: {message}")]
    Schema {
        /// A JSON path, `$` for the root (`$.code`, `$.python_path[1]`).
        path: String,
        /// What is wrong, in jsonschema's words where we have them.
        message: String,
    },
}

fn schema(path: impl Into<String>, message: impl Into<String>) -> PayloadError {
    PayloadError::Schema {
        path: path.into(),
        message: message.into(),
    }
}

/// Parse and check the payload as codejail-service does: the JSON, then the root's
/// type, the required keys (`code`, `globals_dict`), then each property in the
/// schema's order. Shallower problems win, as jsonschema's `best_match`.
pub fn parse(text: &str) -> Result<Payload, PayloadError> {
    let value = pyjson::from_str(text).map_err(|e| PayloadError::Json(e.to_string()))?;
    let Value::Dict(root) = value else {
        return Err(schema(
            "$",
            format!("{} is not of type 'object'", shown(&value)),
        ));
    };
    for key in ["code", "globals_dict"] {
        if !root.contains_key(key) {
            return Err(required(key));
        }
    }
    let code = match root.get("code") {
        Some(Value::Str(s)) => s.to_string_lossy().into_owned(),
        Some(other) => return Err(not_of_type("$.code", other, "string")),
        None => return Err(required("code")),
    };
    let globals = match root.get("globals_dict") {
        Some(Value::Dict(d)) => d.clone(),
        Some(other) => return Err(not_of_type("$.globals_dict", other, "object")),
        None => return Err(required("globals_dict")),
    };
    let python_path = match root.get("python_path") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::List(items)) => {
            let mut entries = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Str(s) => entries.push(s.to_string_lossy().into_owned()),
                    other => {
                        return Err(schema(
                            "$.python_path",
                            format!(
                                "{} is not valid under any of the given schemas \
                                 (item {i}: {} is not of type 'string')",
                                shown(&Value::List(items.clone())),
                                shown(other)
                            ),
                        ))
                    }
                }
            }
            entries
        }
        Some(other) => return Err(not_any_of("$.python_path", other)),
    };
    let limits_context = optional_string(&root, "limit_overrides_context")?;
    let slug = optional_string(&root, "slug")?;
    let unsafely = match root.get("unsafely") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(not_of_type("$.unsafely", other, "boolean")),
    };
    Ok(Payload {
        code,
        globals,
        python_path,
        limits_context,
        slug,
        unsafely,
    })
}

fn required(key: &str) -> PayloadError {
    schema("$", format!("'{key}' is a required property"))
}

fn optional_string(root: &Dict, key: &str) -> Result<Option<String>, PayloadError> {
    match root.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.to_string_lossy().into_owned())),
        Some(other) => Err(not_any_of(&format!("$.{key}"), other)),
    }
}

fn not_of_type(path: &str, value: &Value, ty: &str) -> PayloadError {
    schema(path, format!("{} is not of type '{ty}'", shown(value)))
}

fn not_any_of(path: &str, value: &Value) -> PayloadError {
    schema(
        path,
        format!(
            "{} is not valid under any of the given schemas",
            shown(value)
        ),
    )
}

/// The longest value repr put in a message: a 10 MiB payload must not come back as a
/// 10 MiB error.
pub const MAX_SHOWN: usize = 200;

/// [`py_repr`], cut at [`MAX_SHOWN`] characters (then ending in `...`).
fn shown(value: &Value) -> String {
    let repr = py_repr(value);
    match repr.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}...", &repr[..cut]),
        None => repr,
    }
}

/// Python's `repr` of a decoded JSON value (what jsonschema puts in its messages).
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) if f.is_nan() => out.push_str("nan"),
        Value::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "inf" } else { "-inf" }),
        Value::Float(f) => out.push_str(&float_repr(*f)),
        Value::Str(s) => write_str_repr(out, &s.to_string_lossy()),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Dict(d) => {
            out.push('{');
            for (i, (k, v)) in d.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str_repr(out, &k.to_string_lossy());
                out.push_str(": ");
                write_repr(out, v);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has one and no double quote.
fn write_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn a_full_payload_parses_nan_included() {
        let p = parse(
            r#"{"code": "x = x + 1", "globals_dict": {"x": 16, "f": NaN, "big": 123456789012345678901234567890},
                "python_path": ["python_lib.zip"], "limit_overrides_context": "course-v1:a",
                "slug": null, "unsafely": false}"#,
        )
        .expect("valid");
        assert_eq!(p.code, "x = x + 1");
        assert!(p
            .globals
            .get("f")
            .and_then(Value::as_f64)
            .is_some_and(f64::is_nan));
        assert_eq!(p.globals.len(), 3);
        assert_eq!(p.python_path, ["python_lib.zip"]);
        assert_eq!(p.limits_context.as_deref(), Some("course-v1:a"));
        assert_eq!(p.slug, None);
        assert!(!p.unsafely);
        let p = parse(r#"{"code": "", "globals_dict": {}, "python_path": null}"#).expect("valid");
        assert!(p.python_path.is_empty());
    }

    #[test]
    fn json_errors_keep_the_prefix_and_say_where() {
        assert_eq!(
            err(""),
            "Unable to parse payload JSON: Expecting value: line 1 column 1 (char 0)"
        );
        let e = err(r#"{"code": "#);
        assert!(e.starts_with("Unable to parse payload JSON: "), "{e}");
        assert!(e.contains("line 1 column 10"), "{e}");
    }

    #[test]
    fn schema_errors_in_upstreams_order() {
        assert_eq!(
            err("[]"),
            "Payload JSON did not match schema at path $: [] is not of type 'object'"
        );
        assert_eq!(
            err(r#"{"globals_dict": 1}"#),
            "Payload JSON did not match schema at path $: 'code' is a required property"
        );
        assert_eq!(
            err(r#"{"code": "x"}"#),
            "Payload JSON did not match schema at path $: 'globals_dict' is a required property"
        );
        assert_eq!(
            err(r#"{"code": 5, "globals_dict": {}}"#),
            "Payload JSON did not match schema at path $.code: 5 is not of type 'string'"
        );
        assert_eq!(
            err(r#"{"code": "", "globals_dict": []}"#),
            "Payload JSON did not match schema at path $.globals_dict: [] is not of type 'object'"
        );
        let e = err(r#"{"code": "", "globals_dict": {}, "python_path": "python_lib.zip"}"#);
        assert_eq!(
            e,
            "Payload JSON did not match schema at path $.python_path: 'python_lib.zip' is not \
             valid under any of the given schemas"
        );
        let e = err(r#"{"code": "", "globals_dict": {}, "python_path": ["a", 1]}"#);
        assert!(
            e.starts_with("Payload JSON did not match schema at path $.python_path: ['a', 1] "),
            "{e}"
        );
        let e = err(r#"{"code": "", "globals_dict": {}, "slug": 1.5}"#);
        assert!(e.contains("at path $.slug: 1.5 is not valid"), "{e}");
        let e = err(r#"{"code": "", "globals_dict": {}, "unsafely": "yes"}"#);
        assert!(
            e.ends_with("at path $.unsafely: 'yes' is not of type 'boolean'"),
            "{e}"
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let big = format!("[{}]", vec!["1"; 100_000].join(", "));
        let e = err(&big);
        assert!(
            e.len() < 400 && e.ends_with("... is not of type 'object'"),
            "{e}"
        );
    }

    #[test]
    fn reprs_are_pythons() {
        let v = pyjson::from_str(r#"{"a": [true, null, 1.0, NaN, -Infinity, "it's", "x\ny"]}"#)
            .expect("json");
        assert_eq!(
            py_repr(&v),
            r#"{'a': [True, None, 1.0, nan, -inf, "it's", 'x\ny']}"#
        );
    }
}
