//! What a caller asks for ([`JailRequest`], upstream's `jail_code` arguments) and what
//! it gets back ([`JailResult`]). The wire form ([`Exec`]) differs in one way: caller
//! paths are read here, on the caller's side, because the broker must never read them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use codejail_protocol::{Exec, FileEntry, Usage};

/// One run, with upstream `jail_code`'s arguments.
///
/// `JailRequest::default()` runs the `python` command with nothing else set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailRequest {
    /// The configured command name, usually `"python"`.
    pub command: String,
    /// The program text, written to `jailed_code` and run. `None` runs `argv[0]`
    /// (a copied file), as upstream.
    pub code: Option<String>,
    /// Caller-side files, directories and symlinks copied in by name (read by the
    /// client with [`crate::files::collect`]; symlinks are copied as symlinks).
    pub files: Vec<PathBuf>,
    /// `(name, contents)` pairs written at the top of the run's directory.
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Arguments after the program.
    pub argv: Vec<String>,
    /// The program's standard input.
    pub stdin: Vec<u8>,
    /// Per-request limits by upstream name (`CPU`, `REALTIME`, `VMEM`, ...).
    pub limits: BTreeMap<String, u64>,
    /// The override context (the LMS passes the course id).
    pub limits_context: Option<String>,
    /// A label for the broker's log.
    pub slug: Option<String>,
}

impl Default for JailRequest {
    fn default() -> Self {
        JailRequest {
            command: "python".to_string(),
            code: None,
            files: Vec::new(),
            extra_files: Vec::new(),
            argv: Vec::new(),
            stdin: Vec::new(),
            limits: BTreeMap::new(),
            limits_context: None,
            slug: None,
        }
    }
}

impl JailRequest {
    /// Run `code` with the `python` command.
    pub fn python(code: impl Into<String>) -> Self {
        JailRequest {
            code: Some(code.into()),
            ..JailRequest::default()
        }
    }

    /// Set one limit by upstream name (builder style).
    pub fn limit(mut self, name: &str, value: u64) -> Self {
        self.limits.insert(name.to_string(), value);
        self
    }

    /// The wire request, with `files` already read by [`crate::files::collect`].
    pub(crate) fn to_exec(&self, files: Vec<FileEntry>) -> Exec {
        Exec {
            command: self.command.clone(),
            code: self.code.as_ref().map(|c| c.as_bytes().to_vec()),
            argv: self.argv.clone(),
            files,
            extra_files: self.extra_files.clone(),
            stdin: self.stdin.clone(),
            limits: self.limits.clone(),
            limits_context: self.limits_context.clone(),
            slug: self.slug.clone(),
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailResult {
    /// Everything the program wrote to stdout (up to the broker's output cap). Empty
    /// when returned by [`crate::Client::jail_code_streaming`].
    pub stdout: Vec<u8>,
    /// Everything the program wrote to stderr (same rules as `stdout`).
    pub stderr: Vec<u8>,
    /// Upstream's status: the exit code, or minus the signal number.
    pub status: i32,
    /// Resource usage.
    pub usage: Usage,
    /// The limit that ended (or, for `OUTPUT`, cut) the run, by name.
    pub limit_hit: Option<String>,
    /// Output beyond the broker's cap was discarded.
    pub truncated: bool,
    /// The run's `OUTPUT` limit, the cap: bytes of stdout and stderr together kept (0
    /// when there is none, and in the unsafe local mode).
    pub output_limit: u64,
    /// The run's id, as in the broker's log.
    pub run_id: u64,
    /// The run's directory (the program's cwd) as the program saw it.
    pub workdir: String,
    /// A pid of the run on the broker's host (the jail stage's), for logs; 0 when
    /// unknown.
    pub pid: u32,
}

impl JailResult {
    /// The shell-style exit code for this run, see [`exit_code_for_status`].
    pub fn exit_code(&self) -> i32 {
        exit_code_for_status(self.status)
    }
}

/// A shell-style exit code for an upstream status: the exit code itself, or `128 + N`
/// when the program was killed by signal `N` (status `-N`); clamped to 0..=255.
pub fn exit_code_for_status(status: i32) -> i32 {
    if status < 0 {
        128i32.saturating_sub(status).min(255)
    } else {
        status.min(255)
    }
}

/// A chunk of the program's output, handed to the callback of
/// [`crate::Client::jail_code_streaming`] as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputChunk<'a> {
    /// Bytes the program wrote to its stdout.
    Stdout(&'a [u8]),
    /// Bytes the program wrote to its stderr.
    Stderr(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code_for_status(0), 0);
        assert_eq!(exit_code_for_status(3), 3);
        assert_eq!(exit_code_for_status(-9), 137);
        assert_eq!(exit_code_for_status(-24), 152);
        assert_eq!(exit_code_for_status(-1000), 255);
        assert_eq!(exit_code_for_status(i32::MIN), 255);
        assert_eq!(exit_code_for_status(300), 255);
    }

    #[test]
    fn builders_and_wire_form() {
        let req = JailRequest::python("print(1)").limit("CPU", 3);
        assert_eq!(req.command, "python");
        assert_eq!(JailRequest::default().command, "python");
        let exec = req.to_exec(vec![]);
        assert_eq!(exec.code.as_deref(), Some(&b"print(1)"[..]));
        assert_eq!(exec.limits.get("CPU"), Some(&3));
        assert_eq!(JailRequest::default().to_exec(vec![]).code, None);
    }
}
