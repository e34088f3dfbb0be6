//! Requests and results: building them, reading them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use codejail_protocol::Exec;

use crate::*;

/// A fixture file or directory of this crate (`tests/fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Python's `textwrap.dedent`, after dropping one leading newline: lets tests write
/// programs as indented Rust string literals.
pub fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            out.push_str(if line.ends_with('\n') { "\n" } else { "" });
        } else {
            out.push_str(&line[indent..]);
        }
    }
    out
}

/// Python for a program that tries things: `attempt(name, f)` prints `name ok`, or
/// `name ERRNO` (the errno's name) when `f` raises an `OSError`. Prepended to a
/// program's code.
pub const PY_ATTEMPT: &str = r#"import errno
def attempt(name, f):
    try:
        f()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
"#;

/// A `python` request running `code` (dedented).
pub fn py(code: &str) -> JailRequest {
    JailRequest {
        command: "python".into(),
        code: Some(dedent(code)),
        ..JailRequest::default()
    }
}

/// `req` with one more limit value.
pub fn with_limit(mut req: JailRequest, name: &str, value: u64) -> JailRequest {
    req.limits.insert(name.to_string(), value);
    req
}

/// Lossy text of output bytes, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Upstream's `assertResultOk`: empty stderr and status 0.
#[track_caller]
pub fn assert_ok(res: &JailResult) {
    assert_eq!(
        (text(&res.stderr).as_str(), res.status),
        ("", 0),
        "expected success; stdout: {:?}",
        text(&res.stdout)
    );
}

/// A `python` [`Exec`] for the raw protocol.
pub fn raw_python(code: &str) -> Exec {
    Exec {
        command: "python".into(),
        code: Some(dedent(code).into_bytes()),
        ..Exec::default()
    }
}

/// `limits` map from pairs.
pub fn limits(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A run whose processes a test finds from the host by `marker`
/// ([`crate::processes_with`]): the marker is its argument, and its program first names
/// its process after it ([`crate::NAME_AFTER_MARKER`]), which a warm run's command line
/// cannot show.
pub trait Marked {
    /// Give the run `marker` as its one argument and name its process after it.
    fn mark(&mut self, marker: &str);
}

impl Marked for Exec {
    fn mark(&mut self, marker: &str) {
        if let Some(code) = &mut self.code {
            code.splice(0..0, crate::NAME_AFTER_MARKER.bytes());
        }
        self.argv = vec![marker.to_string()];
    }
}

impl Marked for JailRequest {
    fn mark(&mut self, marker: &str) {
        if let Some(code) = &mut self.code {
            code.insert_str(0, crate::NAME_AFTER_MARKER);
        }
        self.argv = vec![marker.to_string()];
    }
}
