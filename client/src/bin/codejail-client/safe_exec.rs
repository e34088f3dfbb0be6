//! `codejail-client safe-exec`: upstream's `safe_exec` on Python-dialect JSON globals,
//! in a jail or, with `--unsafe`, unconfined for the caller's own tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use codejail_client::pyjson::{self, Dict, Value};
use codejail_client::{ClientConfig, Executor, SafeExecError, SafeExecOptions, UnsafeLocal};

use crate::{fail, parse_extra_file};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("program").required(true).args(["code", "code_file"])))]
pub(crate) struct SafeExecArgs {
    /// The initial globals: a JSON object (Python's dialect) [default: {}].
    #[arg(long = "globals-file", value_name = "PATH")]
    pub(crate) globals_file: Option<PathBuf>,

    /// A file, directory or symlink copied into the jail by its base name.
    #[arg(long = "file", value_name = "PATH")]
    pub(crate) files: Vec<PathBuf>,

    /// A directory or zip file added to sys.path by its base name; copied in like
    /// --file unless an --extra-file has that name.
    #[arg(long = "python-path", value_name = "NAME")]
    pub(crate) python_path: Vec<PathBuf>,

    /// A file written at the top of the jail's directory as NAME, read from PATH.
    #[arg(long = "extra-file", value_name = "NAME=PATH", value_parser = parse_extra_file)]
    pub(crate) extra_files: Vec<(String, PathBuf)>,

    /// The limit override context (the LMS uses the course id).
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,

    /// A label for the broker's log.
    #[arg(long, value_name = "SLUG")]
    pub(crate) slug: Option<String>,

    /// Run UNCONFINED with a local interpreter ($CODEJAIL_PYTHON, else
    /// /usr/bin/python3, else python3 on PATH) and no broker: no jail, no limits. For
    /// testing only; a warning is printed every time.
    #[arg(long = "unsafe")]
    pub(crate) unsafe_local: bool,

    /// The Python code to run.
    #[arg(short = 'c', value_name = "CODE")]
    pub(crate) code: Option<String>,

    /// Read the Python code from PATH.
    #[arg(long = "code-file", value_name = "PATH")]
    pub(crate) code_file: Option<PathBuf>,
}

/// The environment variable naming the interpreter of `safe-exec --unsafe`.
const UNSAFE_PYTHON_ENV: &str = "CODEJAIL_PYTHON";

/// `codejail-client safe-exec`.
pub(crate) async fn safe_exec(socket: PathBuf, args: SafeExecArgs) -> ExitCode {
    let (code, mut globals, opts) = match safe_exec_inputs(&args) {
        Ok(inputs) => inputs,
        Err(e) => return fail(format!("{e:#}")),
    };
    let executor = if args.unsafe_local {
        let python = unsafe_python();
        eprintln!(
            "codejail-client: warning: --unsafe: running the code UNCONFINED with {} \
             (no broker, no jail, no limits)",
            python.display()
        );
        Executor::UnsafeLocal(UnsafeLocal::new(python))
    } else {
        Executor::Jail(ClientConfig::new(socket))
    };
    match executor.safe_exec(&code, &mut globals, &opts).await {
        Ok(()) => {
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", globals.to_json()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("cannot write the globals: {e}")),
            }
        }
        Err(SafeExecError::Exception(e)) => {
            // Exactly upstream's message, unprefixed: callers compare it.
            eprintln!("{}", e.message);
            ExitCode::from(1)
        }
        Err(e @ SafeExecError::BadOutput { .. }) => {
            // The code broke the wrapper's output (upstream raises a JSON error here):
            // the jailed code's failure, not the client's.
            eprintln!("codejail-client: {e}");
            ExitCode::from(1)
        }
        Err(e) => fail(e),
    }
}

/// The code, the initial globals and the options of `safe-exec`.
pub(crate) fn safe_exec_inputs(
    args: &SafeExecArgs,
) -> anyhow::Result<(String, Dict, SafeExecOptions)> {
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let utf8 = |path: &PathBuf, bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| anyhow!("{} is not valid UTF-8", path.display()))
    };
    let code = match (&args.code, &args.code_file) {
        (Some(code), _) => code.clone(),
        (None, Some(path)) => utf8(path, read(path)?)?,
        (None, None) => bail!("nothing to run: give -c CODE or --code-file PATH"),
    };
    let globals = match &args.globals_file {
        None => Dict::new(),
        Some(path) => {
            let text = utf8(path, read(path)?)?;
            match pyjson::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
            {
                Value::Dict(d) => d,
                _ => bail!("{} is not a JSON object", path.display()),
            }
        }
    };
    let extra_files = args
        .extra_files
        .iter()
        .map(|(name, path)| Ok((name.clone(), read(path)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = SafeExecOptions {
        files: args.files.clone(),
        python_path: args.python_path.clone(),
        limits_context: args.context.clone(),
        slug: args.slug.clone(),
        extra_files,
    };
    Ok((code, globals, opts))
}

/// The interpreter of `safe-exec --unsafe`: `$CODEJAIL_PYTHON`, else the dev broker's
/// default (`/usr/bin/python3` if present, else `python3` on PATH).
fn unsafe_python() -> PathBuf {
    if let Some(p) = std::env::var_os(UNSAFE_PYTHON_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let system = PathBuf::from("/usr/bin/python3");
    if system.exists() {
        return system;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}
