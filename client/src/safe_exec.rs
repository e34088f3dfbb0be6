//! `safe_exec`: upstream CodeJail's `exec(code, globals)` in a jail, as a client-side
//! layer over [`crate::jail_code`] (docs/compat.md says where it matches upstream).
//!
//! Each call runs the wrapper program `safe_exec_wrapper.py` (kept next to this file)
//! as the jailed code, with `[code, globals]` as Python-dialect JSON on its stdin (see
//! [`crate::pyjson`]). The wrapper discards the code's `print`s, runs it, and writes the
//! JSON-safe part of the resulting globals to its stdout; those are merged back into the
//! caller's [`Dict`] with Python's `dict.update` semantics. A failed run becomes upstream's
//! exact `SafeExecException` message.
//!
//! The same call can run unconfined on this machine for the caller's own tests, but
//! only by choosing [`Executor::UnsafeLocal`] (see [`crate::UnsafeLocal`]); nothing here
//! ever falls back to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::pyjson::{self, Dict, Value, PYTHON_INT_MAX_STR_DIGITS};
use crate::{ClientConfig, ClientError, JailRequest, JailResult, UnsafeLocal};

/// The wrapper program run for each call (see the file's header).
pub const WRAPPER: &str = include_str!("safe_exec_wrapper.py");

/// The wrapper's first argument in the jail.
pub(crate) const MODE_JAIL: &str = "jail";
/// The wrapper's first argument in the unsafe local mode.
pub(crate) const MODE_LOCAL: &str = "local";

/// The keyword arguments of upstream's `safe_exec` besides `code` and `globals_dict`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafeExecOptions {
    /// Caller-side files, directories and symlinks copied into the jail by name (as
    /// `jail_code`'s `files`).
    pub files: Vec<PathBuf>,
    /// Directories or zip files whose base names are appended to `sys.path` in the
    /// jail. A path is copied in like `files` unless an extra file has its base name
    /// (e.g. a course's `python_lib.zip` given as an extra file).
    pub python_path: Vec<PathBuf>,
    /// The limit override context (the LMS passes the course id); unknown means the
    /// broker's defaults.
    pub limits_context: Option<String>,
    /// A label for the broker's log.
    pub slug: Option<String>,
    /// `(name, contents)` files written at the top of the jail's directory.
    pub extra_files: Vec<(String, Vec<u8>)>,
}

/// Upstream's `SafeExecException`: the jailed code failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SafeExecException {
    /// The message, exactly upstream's: `Couldn't execute jailed code: stdout: b'...',
    /// stderr: b'...' with status code: N`, or in the unsafe local mode
    /// `ExcClass: message` (upstream's `not_safe_exec`).
    pub message: String,
    /// The run's status: its exit code, or minus the signal that killed it (`-9` for
    /// the REALTIME limit).
    pub status: i32,
    /// The limit that ended the run, if the broker says so (`REALTIME`, `CPU`, ...).
    pub limit_hit: Option<String>,
}

/// Why a `safe_exec` call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafeExecError {
    /// The jailed code failed (raised, was killed, or exited non-zero): upstream's
    /// `SafeExecException`, with its exact message.
    #[error(transparent)]
    Exception(#[from] SafeExecException),
    /// The run exited 0 but its stdout is not a JSON object of globals: the code wrote
    /// to `sys.__stdout__`, exited early with status 0, or the output was cut at the
    /// broker's cap. (Upstream raises a JSON decoding error here.)
    #[error("the jailed code's output is not a JSON object of globals ({reason}){}; stdout: {}", if *.truncated { ", output truncated" } else { "" }, py_bytes_repr(.stdout))]
    BadOutput {
        /// What is wrong with it.
        reason: String,
        /// The run's stdout.
        stdout: Vec<u8>,
        /// Whether the broker cut the output at its cap.
        truncated: bool,
    },
    /// A `python_path` entry has no usable base name.
    #[error("python_path entry {} has no base name usable in the jail", .0.display())]
    BadPythonPath(PathBuf),
    /// The client or the broker failed (not the jailed code).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The unsafe local mode could not prepare or run the interpreter.
    #[error("unsafe local safe_exec: {step}: {source}")]
    Local {
        /// The step that failed.
        step: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where `safe_exec` runs: in the jail, or — only when chosen explicitly — unconfined.
#[derive(Debug, Clone)]
pub enum Executor {
    /// In a jail, through the broker at this config's socket.
    Jail(ClientConfig),
    /// Unconfined, with a local interpreter and no broker (upstream's `not_safe_exec`,
    /// `ALWAYS_BE_UNSAFE`): for callers' own tests only. Logs a warning on every call.
    UnsafeLocal(UnsafeLocal),
}

impl Executor {
    /// [`safe_exec`] with this executor.
    pub async fn safe_exec(
        &self,
        code: &str,
        globals: &mut Dict,
        opts: &SafeExecOptions,
    ) -> Result<(), SafeExecError> {
        match self {
            Executor::Jail(cfg) => safe_exec(cfg, code, globals, opts).await,
            Executor::UnsafeLocal(local) => local.safe_exec(code, globals, opts).await,
        }
    }

    /// [`safe_exec_blocking`] with this executor.
    pub fn safe_exec_blocking(
        &self,
        code: &str,
        globals: &mut Dict,
        opts: &SafeExecOptions,
    ) -> Result<(), SafeExecError> {
        match self {
            Executor::Jail(cfg) => safe_exec_blocking(cfg, code, globals, opts),
            Executor::UnsafeLocal(local) => local.safe_exec_blocking(code, globals, opts),
        }
    }
}

/// Run `code` in a jail as Python's `exec(code, globals)` would, and merge the
/// resulting globals into `globals` (upstream's `safe_exec`).
///
/// Only the JSON-safe part of `globals` goes in ([`json_safe`]); on success the
/// JSON-safe part of the code's globals is merged back with `dict.update` semantics:
/// names the code deleted, or set to something that cannot cross (a function, a set,
/// non-UTF-8 bytes), keep their old values. On failure `globals` is untouched.
///
/// Bounded by `cfg`'s timeouts; a run killed by its REALTIME limit is a
/// [`SafeExecException`] with status `-9`, a client timeout a [`ClientError`].
pub async fn safe_exec(
    cfg: &ClientConfig,
    code: &str,
    globals: &mut Dict,
    opts: &SafeExecOptions,
) -> Result<(), SafeExecError> {
    let req = jail_request(code, globals, opts, MODE_JAIL)?;
    let result = crate::jail_code(cfg, &req).await?;
    merge_result(globals, &result)
}

/// [`safe_exec`], blocking the calling thread (see [`crate::blocking`]).
pub fn safe_exec_blocking(
    cfg: &ClientConfig,
    code: &str,
    globals: &mut Dict,
    opts: &SafeExecOptions,
) -> Result<(), SafeExecError> {
    let req = jail_request(code, globals, opts, MODE_JAIL)?;
    let result = crate::blocking::jail_code(cfg, &req)?;
    merge_result(globals, &result)
}

/// The `jail_code` request of one call: the wrapper as the code, `[code, globals]` on
/// stdin, the mode and the python_path base names as arguments, and the python_path
/// entries copied in unless an extra file has their base name (upstream's rule).
pub(crate) fn jail_request(
    code: &str,
    globals: &Dict,
    opts: &SafeExecOptions,
    mode: &str,
) -> Result<JailRequest, SafeExecError> {
    let mut files = opts.files.clone();
    let mut argv = vec![mode.to_string()];
    for entry in &opts.python_path {
        let base = base_name(entry)?;
        if !opts.extra_files.iter().any(|(name, _)| *name == base) && !files.contains(entry) {
            files.push(entry.clone());
        }
        argv.push(base);
    }
    Ok(JailRequest {
        command: "python".to_string(),
        code: Some(WRAPPER.to_string()),
        files,
        extra_files: opts.extra_files.clone(),
        argv,
        stdin: stdin_json(code, globals).into_bytes(),
        limits: Default::default(),
        limits_context: opts.limits_context.clone(),
        slug: opts.slug.clone(),
    })
}

/// A path's base name, as the jail will know it.
fn base_name(path: &Path) -> Result<String, SafeExecError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| SafeExecError::BadPythonPath(path.to_path_buf()))
}

/// `json.dumps([code, json_safe(globals)])`.
fn stdin_json(code: &str, globals: &Dict) -> String {
    let payload = Value::List(vec![Value::from(code), Value::Dict(json_safe(globals))]);
    pyjson::to_string(&payload)
}

/// Upstream's caller-side `json_safe(globals_dict)` for globals that are already JSON
/// values: drops `__builtins__`, and any entry holding an integer with more decimal
/// digits than Python's `int_max_str_digits` (4300), which Python's `json.dumps`
/// refuses, so upstream drops it (and the jail's `json.load` would fail on it).
pub fn json_safe(globals: &Dict) -> Dict {
    globals
        .iter()
        .filter(|(k, v)| **k != "__builtins__" && !has_oversized_int(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn has_oversized_int(v: &Value) -> bool {
    match v {
        Value::Int(i) => i.decimal_digits() > PYTHON_INT_MAX_STR_DIGITS,
        Value::List(items) => items.iter().any(has_oversized_int),
        Value::Dict(d) => d.iter().any(|(_, v)| has_oversized_int(v)),
        _ => false,
    }
}

/// Upstream's handling of the finished run: a non-zero status raises
/// `SafeExecException`, else the JSON object on stdout updates `globals`. Output cut at
/// the broker's `OUTPUT` cap cannot hold the whole JSON: that is a `SafeExecException`
/// naming the limit, never a parse error (upstream, which has no such cap, returns the
/// globals).
pub(crate) fn merge_result(globals: &mut Dict, result: &JailResult) -> Result<(), SafeExecError> {
    if result.status != 0 {
        return Err(failure(result).into());
    }
    if result.truncated {
        return Err(SafeExecException {
            message: truncated_output_message(result.output_limit),
            status: result.status,
            limit_hit: result.limit_hit.clone(),
        }
        .into());
    }
    let returned = parse_globals(&result.stdout, result.truncated)?;
    globals.update(returned);
    Ok(())
}

/// Upstream's `SafeExecException` for a run that failed.
pub(crate) fn failure(result: &JailResult) -> SafeExecException {
    SafeExecException {
        message: failure_message(&result.stdout, &result.stderr, result.status),
        status: result.status,
        limit_hit: result.limit_hit.clone(),
    }
}

/// `"Couldn't execute jailed code: stdout: {stdout!r}, stderr: {stderr!r} with status
/// code: {status}"`, the reprs being Python bytes reprs.
pub fn failure_message(stdout: &[u8], stderr: &[u8], status: i32) -> String {
    format!(
        "Couldn't execute jailed code: stdout: {}, stderr: {} with status code: {}",
        py_bytes_repr(stdout),
        py_bytes_repr(stderr),
        status
    )
}

/// The message of a `SafeExecException` for a run whose output the broker cut at its
/// `OUTPUT` limit of `limit` bytes. It starts as upstream's messages do (callers match
/// on `Couldn't execute jailed code: `).
pub fn truncated_output_message(limit: u64) -> String {
    format!(
        "Couldn't execute jailed code: its output went over the OUTPUT limit of {limit} \
         bytes (stdout and stderr together) and was cut, so the globals could not be \
         returned: return smaller globals, or raise OUTPUT"
    )
}

/// The run's stdout as a JSON object (`json.loads(stdout.decode('utf-8'))`).
pub(crate) fn parse_value(stdout: &[u8], truncated: bool) -> Result<Value, SafeExecError> {
    let bad = |reason: String| SafeExecError::BadOutput {
        reason,
        stdout: stdout.to_vec(),
        truncated,
    };
    let text = std::str::from_utf8(stdout).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    pyjson::from_str(text).map_err(|e| bad(e.to_string()))
}

fn parse_globals(stdout: &[u8], truncated: bool) -> Result<Dict, SafeExecError> {
    match parse_value(stdout, truncated)? {
        Value::Dict(d) => Ok(d),
        _ => Err(SafeExecError::BadOutput {
            reason: "not an object".into(),
            stdout: stdout.to_vec(),
            truncated,
        }),
    }
}

/// Python's `repr(bytes)`: `b'...'`, or `b"..."` when the bytes hold a `'` and no `"`;
/// `\\`, the quote, `\t`, `\n`, `\r` escaped with a backslash, other bytes below 0x20 or
/// from 0x7f up as `\xNN` (lowercase hex), printable ASCII as itself.
pub fn py_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(char::from(quote));
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if b == quote => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7E => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push(char::from(quote));
    out
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use crate::pyjson::Str;
    use codejail_protocol::Usage;

    fn key_text(k: &Str) -> String {
        k.to_string_lossy().into_owned()
    }

    fn result(status: i32, stdout: &[u8], stderr: &[u8]) -> JailResult {
        JailResult {
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            status,
            usage: Usage::default(),
            limit_hit: None,
            truncated: false,
            output_limit: 16 << 20,
            run_id: 1,
            workdir: "/tmp/codejail-test".into(),
            pid: 1,
        }
    }

    #[test]
    fn bytes_repr_is_pythons() {
        // Expected values printed by CPython 3.11: repr(b).
        let cases: &[(&[u8], &str)] = &[
            (b"", "b''"),
            (b"hello", "b'hello'"),
            (b"it's", "b\"it's\""),
            (b"say \"hi\"", "b'say \"hi\"'"),
            (b"both ' and \"", "b'both \\' and \"'"),
            (b"a\\b", "b'a\\\\b'"),
            (b"\t\n\r", "b'\\t\\n\\r'"),
            (
                b"\x00\x07\x0b\x0c\x1b\x1f",
                "b'\\x00\\x07\\x0b\\x0c\\x1b\\x1f'",
            ),
            (b" ~\x7f\x80\xff", "b' ~\\x7f\\x80\\xff'"),
            ("é".as_bytes(), "b'\\xc3\\xa9'"),
        ];
        for &(bytes, expected) in cases {
            assert_eq!(py_bytes_repr(bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn a_failure_has_upstreams_exact_message() {
        let tb = b"Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nValueError: That's not how you pour soup!\n";
        let mut globals = Dict::new();
        globals.insert("a", 1);
        let err = merge_result(&mut globals, &result(1, b"", tb)).expect_err("failed");
        let SafeExecError::Exception(e) = err else {
            panic!("not an exception: {err:?}")
        };
        assert_eq!(
            e.message,
            "Couldn't execute jailed code: stdout: b'', stderr: b'Traceback (most recent call \
             last):\\n  File \"<string>\", line 1, in <module>\\nValueError: That\\'s not how \
             you pour soup!\\n' with status code: 1"
        );
        assert_eq!(e.status, 1);
        assert_eq!(globals.len(), 1, "globals untouched on failure");
        let timeout = merge_result(&mut globals, &result(-9, b"", b"")).expect_err("killed");
        assert_eq!(
            timeout.to_string(),
            "Couldn't execute jailed code: stdout: b'', stderr: b'' with status code: -9"
        );
    }

    #[test]
    fn output_cut_at_the_cap_is_an_exception_naming_the_limit() {
        let mut globals: Dict = [("a", 1)].into_iter().collect();
        let mut cut = result(0, br#"{"a": 2, "big": "xxxx"#, b"");
        cut.truncated = true;
        cut.limit_hit = Some("OUTPUT".into());
        let err = merge_result(&mut globals, &cut).expect_err("cut");
        let SafeExecError::Exception(e) = err else {
            panic!("not an exception: {err:?}")
        };
        assert!(
            e.message.starts_with("Couldn't execute jailed code: ")
                && e.message.contains("OUTPUT limit of 16777216 bytes"),
            "{}",
            e.message
        );
        assert_eq!(e.limit_hit.as_deref(), Some("OUTPUT"));
        assert_eq!(globals.get("a"), Some(&Value::from(1)), "untouched");
        // A failed run keeps upstream's message, cut or not.
        let mut failed = result(1, b"", b"Traceback");
        failed.truncated = true;
        let err = merge_result(&mut globals, &failed).expect_err("failed");
        assert!(err.to_string().ends_with("with status code: 1"), "{err}");
    }

    #[test]
    fn success_updates_the_globals() {
        let mut globals: Dict = [("a", 1), ("keep", 2)].into_iter().collect();
        let out = br#"{"a": 17, "b": NaN, "c": [1, "x"]}"#;
        merge_result(&mut globals, &result(0, out, b"ignored")).expect("merged");
        assert_eq!(globals["a"], Value::from(17));
        assert_eq!(globals["keep"], Value::from(2));
        assert!(globals["b"].as_f64().is_some_and(f64::is_nan));
        assert_eq!(
            globals.keys().map(key_text).collect::<Vec<_>>(),
            ["a", "keep", "b", "c"]
        );
    }

    #[test]
    fn output_that_is_not_globals_is_reported() {
        let mut globals = Dict::new();
        for out in [&b""[..], b"[1]", b"{\"a\": 1} extra", b"\xff"] {
            let err = merge_result(&mut globals, &result(0, out, b"")).expect_err("bad");
            assert!(matches!(err, SafeExecError::BadOutput { .. }), "{err:?}");
        }
        assert!(globals.is_empty());
    }

    #[test]
    fn the_request_carries_the_wrapper_and_the_globals() {
        let mut globals = Dict::new();
        globals.insert("x", 1);
        globals.insert("__builtins__", "dropped");
        globals.insert(
            "huge",
            pyjson::Value::Int("9".repeat(4301).parse().expect("int")),
        );
        globals.insert(
            "fine",
            pyjson::Value::Int("9".repeat(4300).parse().expect("int")),
        );
        let opts = SafeExecOptions {
            files: vec!["/data/hello.txt".into()],
            python_path: vec![
                "/courses/pylib".into(),
                "python_lib.zip".into(),
                "/data/hello.txt".into(),
            ],
            extra_files: vec![("python_lib.zip".into(), b"PK".to_vec())],
            limits_context: Some("course-v1:X".into()),
            slug: Some("s".into()),
        };
        let req = jail_request("a = x", &globals, &opts, MODE_JAIL).expect("request");
        assert_eq!(req.code.as_deref(), Some(WRAPPER));
        assert_eq!(req.argv, ["jail", "pylib", "python_lib.zip", "hello.txt"]);
        assert_eq!(
            req.files,
            [
                PathBuf::from("/data/hello.txt"),
                PathBuf::from("/courses/pylib")
            ],
            "python_path entries are copied unless an extra file or a file has them"
        );
        assert_eq!(req.limits_context.as_deref(), Some("course-v1:X"));
        assert_eq!(req.slug.as_deref(), Some("s"));
        assert!(req.limits.is_empty());
        let stdin = String::from_utf8(req.stdin).expect("ASCII");
        let parsed = pyjson::from_str(&stdin).expect("JSON");
        let list = parsed.as_list().expect("a list");
        assert_eq!(list[0], Value::from("a = x"));
        let sent = list[1].as_dict().expect("globals");
        assert_eq!(sent.keys().map(key_text).collect::<Vec<_>>(), ["x", "fine"]);

        let err = jail_request(
            "",
            &globals,
            &SafeExecOptions {
                python_path: vec!["/".into()],
                ..Default::default()
            },
            MODE_JAIL,
        )
        .expect_err("no base name");
        assert!(matches!(err, SafeExecError::BadPythonPath(_)), "{err:?}");
    }
}
