//! The explicit unsafe mode: `safe_exec` against a local interpreter, with no broker and
//! no confinement at all, for callers' own unit tests (upstream's `not_safe_exec`, which
//! upstream 4.0 uses when `ALWAYS_BE_UNSAFE` is set).
//!
//! Nothing selects this mode implicitly: a caller must build an [`UnsafeLocal`] (or
//! [`crate::Executor::UnsafeLocal`]); a missing or broken broker is always an error,
//! never a reason to run here. Every call logs a warning (`tracing`, level WARN).
//!
//! To behave like the jail, a call lays out a temporary directory as the broker lays
//! out a workspace (files, extra files, `tmp/`, the wrapper as `jailed_code`), and runs
//! `PYTHON -E -B jailed_code local PATH...` there with the jail's environment (only
//! `TMPDIR`, the thread caps and `LC_ALL`). No limit of any kind applies: a code that
//! loops forever blocks the call forever. Errors are upstream `not_safe_exec`'s:
//! `"ExcClass: message"`, without the traceback.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use codejail_protocol::validate::check_exec_names;
use codejail_protocol::{upstream_status, EntryKind, Exec};

use crate::pyjson::{Dict, Value};
use crate::safe_exec::{
    failure, jail_request, parse_value, SafeExecError, SafeExecException, SafeExecOptions,
    MODE_LOCAL,
};
use crate::{files, ClientError, JailResult};

/// The environment of a local run besides `TMPDIR`: what the broker gives its python
/// command (numeric libraries held to one thread, a UTF-8 locale).
const LOCAL_ENV: [(&str, &str); 4] = [
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("LC_ALL", "C.UTF-8"),
];

/// `safe_exec` run **unconfined** by a local interpreter: no broker, no jail, no limits.
/// For callers' own tests only; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeLocal {
    python: PathBuf,
}

impl UnsafeLocal {
    /// Opt in to running code unconfined with the interpreter at `python`.
    pub fn new(python: impl Into<PathBuf>) -> Self {
        UnsafeLocal {
            python: python.into(),
        }
    }

    /// The interpreter.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// [`crate::safe_exec()`], unconfined. Runs the interpreter on tokio's blocking pool.
    pub async fn safe_exec(
        &self,
        code: &str,
        globals: &mut Dict,
        opts: &SafeExecOptions,
    ) -> Result<(), SafeExecError> {
        warn_unconfined(opts);
        let exec = self.prepare(code, globals, opts)?;
        let python = self.python.clone();
        let run = match tokio::task::spawn_blocking(move || run_local(&python, &exec)).await {
            Ok(run) => run?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(ClientError::Runtime(std::io::Error::other(e)).into()),
        };
        merge_local(globals, &run)
    }

    /// [`crate::safe_exec_blocking`], unconfined.
    pub fn safe_exec_blocking(
        &self,
        code: &str,
        globals: &mut Dict,
        opts: &SafeExecOptions,
    ) -> Result<(), SafeExecError> {
        warn_unconfined(opts);
        let exec = self.prepare(code, globals, opts)?;
        let run = run_local(&self.python, &exec)?;
        merge_local(globals, &run)
    }

    /// The same request the jail would get, with the caller's files read and every
    /// name checked as the broker checks them.
    fn prepare(
        &self,
        code: &str,
        globals: &Dict,
        opts: &SafeExecOptions,
    ) -> Result<Exec, SafeExecError> {
        let req = jail_request(code, globals, opts, MODE_LOCAL)?;
        let entries = files::collect(&req.files)?;
        let exec = req.to_exec(entries);
        check_exec_names(&exec).map_err(ClientError::from)?;
        Ok(exec)
    }
}

/// Upstream logs `Using codejail/safe_exec.py:not_safe_exec for SLUG` on every call.
fn warn_unconfined(opts: &SafeExecOptions) {
    tracing::warn!(
        slug = opts.slug.as_deref().unwrap_or(""),
        "safe_exec is running UNCONFINED (unsafe local mode: no broker, no jail, no limits)"
    );
}

/// Lay out a workspace for `exec`, run the interpreter in it, and remove it.
fn run_local(python: &Path, exec: &Exec) -> Result<JailResult, SafeExecError> {
    let local = |step: String| move |source| SafeExecError::Local { step, source };
    let dir = tempfile::Builder::new()
        .prefix("codejail-unsafe-")
        .tempdir()
        .map_err(local("create the working directory".into()))?;
    let root = dir.path();
    write_workspace(root, exec)?;

    let workdir = root.to_string_lossy().into_owned();
    let mut child = Command::new(python)
        .args(["-E", "-B", "jailed_code"])
        .args(&exec.argv)
        .current_dir(root)
        .env_clear()
        .env("TMPDIR", root.join("tmp"))
        .envs(LOCAL_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(local(format!("run {}", python.display())))?;
    // Feed stdin from another thread while this one drains stdout and stderr, so that
    // neither side can block the other on a full pipe.
    let child_pid = child.id();
    let stdin = child.stdin.take();
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A program that exits without reading its stdin is not an error here.
                let _ = stdin.write_all(&exec.stdin);
            }
        });
        child.wait_with_output()
    })
    .map_err(local(format!("wait for {}", python.display())))?;
    let pid = child_pid;
    let status = upstream_status(output.status.code(), output.status.signal());
    Ok(JailResult {
        stdout: output.stdout,
        stderr: output.stderr,
        status,
        usage: Default::default(),
        limit_hit: None,
        truncated: false,
        output_limit: 0,
        run_id: 0,
        workdir,
        pid,
    })
}

/// Write the files, extra files, `tmp/` and `jailed_code` of `exec` under `root`, as
/// the broker does in a workspace. The names were checked by `check_exec_names`.
fn write_workspace(root: &Path, exec: &Exec) -> Result<(), SafeExecError> {
    let step = |what: &str, name: &str| {
        let step = format!("{what} {name}");
        move |source| SafeExecError::Local { step, source }
    };
    for entry in &exec.files {
        let path = root.join(&entry.path);
        match &entry.kind {
            EntryKind::File {
                contents,
                executable,
            } => {
                fs::write(&path, contents).map_err(step("write", &entry.path))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(step("chmod", &entry.path))?;
            }
            EntryKind::Dir => fs::create_dir(&path).map_err(step("mkdir", &entry.path))?,
            EntryKind::Symlink { target } => {
                symlink(target, &path).map_err(step("symlink", &entry.path))?
            }
        }
    }
    for (name, contents) in &exec.extra_files {
        fs::write(root.join(name), contents).map_err(step("write", name))?;
    }
    fs::create_dir(root.join("tmp")).map_err(step("mkdir", "tmp"))?;
    let code = exec.code.as_deref().unwrap_or_default();
    fs::write(root.join("jailed_code"), code).map_err(step("write", "jailed_code"))?;
    Ok(())
}

/// The wrapper's local-mode answer: `{"error": "ExcClass: message"}` when the code
/// raised, `{"globals": {...}}` when it finished. Anything else with a non-zero status
/// (the code called `sys.exit(3)`, the interpreter crashed) is reported like a failed
/// jailed run.
fn merge_local(globals: &mut Dict, run: &JailResult) -> Result<(), SafeExecError> {
    let answer = parse_value(&run.stdout, false);
    let field = |name: &str| match &answer {
        Ok(Value::Dict(d)) => d.get(name).cloned(),
        _ => None,
    };
    if let Some(error) = field("error") {
        return Err(SafeExecException {
            message: error.as_py_str().map(|s| s.to_string()).unwrap_or_default(),
            status: run.status,
            limit_hit: None,
        }
        .into());
    }
    if run.status != 0 {
        return Err(failure(run).into());
    }
    match field("globals") {
        Some(Value::Dict(returned)) => {
            globals.update(returned);
            Ok(())
        }
        _ => Err(SafeExecError::BadOutput {
            reason: answer
                .err()
                .map_or_else(|| "no globals in the answer".to_string(), |e| e.to_string()),
            stdout: run.stdout.clone(),
            truncated: false,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    //! The unsafe mode's own behaviour, with the system python when it exists. The
    //! upstream scenarios run against both modes in `tests/tests/safe_exec.rs`.

    use super::*;
    use std::sync::{Arc, Mutex};

    fn python() -> Option<UnsafeLocal> {
        let p = std::env::var_os("CODEJAIL_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
        if p.exists() {
            Some(UnsafeLocal::new(p))
        } else {
            eprintln!("SKIPPED: no python at {}", p.display());
            None
        }
    }

    /// Captures what `tracing` writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn runs_unconfined_warns_every_time_and_reports_errors_as_not_safe_exec() {
        let Some(local) = python() else { return };
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let opts = SafeExecOptions {
                slug: Some("my-slug".into()),
                ..Default::default()
            };
            let mut globals: Dict = [("a", 1)].into_iter().collect();
            local
                .safe_exec_blocking("b = a + 1; print('noise')", &mut globals, &opts)
                .expect("runs");
            assert_eq!(globals["b"], Value::from(2));

            let err = local
                .safe_exec_blocking(
                    "raise ValueError(\"That's not how you pour soup!\")",
                    &mut globals,
                    &opts,
                )
                .expect_err("raises");
            assert_eq!(err.to_string(), "ValueError: That's not how you pour soup!");

            let err = local
                .safe_exec_blocking("def f(:\n  pass", &mut globals, &opts)
                .expect_err("syntax");
            assert!(err.to_string().starts_with("SyntaxError: "), "{err}");

            // SystemExit is not an Exception: the run fails like a jailed one.
            let err = local
                .safe_exec_blocking("import sys; sys.exit(3)", &mut globals, &opts)
                .expect_err("exits");
            assert_eq!(
                err.to_string(),
                "Couldn't execute jailed code: stdout: b'', stderr: b'' with status code: 3"
            );
        });
        let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(log.matches("UNCONFINED").count(), 4, "{log}");
        assert!(log.contains("WARN") && log.contains("my-slug"), "{log}");
    }

    #[test]
    fn the_environment_is_the_jails() {
        let Some(local) = python() else { return };
        let mut globals = Dict::new();
        let code = "import os, sys\nenv = sorted(os.environ)\ncwd_files = sorted(os.listdir('.'))\n\
                    argv = sys.argv\ntmp_ok = os.environ['TMPDIR'] == os.path.join(os.getcwd(), 'tmp')";
        local
            .safe_exec_blocking(code, &mut globals, &SafeExecOptions::default())
            .expect("runs");
        assert_eq!(
            globals["env"].to_json(),
            r#"["LC_ALL", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TMPDIR"]"#
        );
        assert_eq!(globals["cwd_files"].to_json(), r#"["jailed_code", "tmp"]"#);
        assert_eq!(globals["argv"].to_json(), r#"["jailed_code"]"#);
        assert_eq!(globals["tmp_ok"], Value::from(true));
    }

    #[test]
    fn a_missing_interpreter_is_a_local_error() {
        let local = UnsafeLocal::new("/nonexistent/python3");
        let err = local
            .safe_exec_blocking("a = 1", &mut Dict::new(), &SafeExecOptions::default())
            .expect_err("no python");
        assert!(matches!(err, SafeExecError::Local { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
    }
}
