//! The `codejail-client` CLI (CONTRACTS.md): parses arguments, calls the
//! `codejail_client` library, and maps outcomes to exit codes. Exit code 125 always
//! means the client or the broker failed (one `codejail-client: <message>` line on
//! stderr); any other code comes from the jailed program.

use std::fmt::Display;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use codejail_client::pyjson::{self, Dict, Value};
use codejail_client::{
    json, socket_from_env, Client, ClientConfig, Executor, JailRequest, OutputChunk, SafeExecError,
    SafeExecOptions, UnsafeLocal,
};

/// Exit code for a failure of the client or the broker itself.
const EXIT_FAILURE: u8 = 125;

/// Run untrusted code through the codejail broker.
#[derive(Debug, Parser)]
#[command(name = "codejail-client", version)]
struct Cli {
    /// The broker's socket [default: $CODEJAIL_SOCKET, else /run/codejail/broker.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a program in a fresh jail (upstream's jail_code).
    ///
    /// Without --json the program's stdout and stderr pass through as they arrive.
    /// Exit code, with or without --json: the program's exit code, or 128+N if it was
    /// killed by signal N (a REALTIME limit gives 137, a CPU limit 152). Exit code 125:
    /// the client or the broker failed (cannot connect, refused, invalid request,
    /// busy, protocol error, timeout); one line on stderr, and nothing on stdout
    /// unless the program had already started writing.
    Exec(Box<ExecArgs>),
    /// Show the broker's mode, confinement layers and load.
    ///
    /// Exit code: 0 serving with every required layer fully applied; 1 serving but
    /// degraded (a required layer is not fully applied); 125 unreachable.
    Status(StatusArgs),
    /// Run Python code as upstream's safe_exec: exec(code, globals) in a jail.
    ///
    /// Globals in (--globals-file) and out are JSON objects in Python's dialect (NaN,
    /// Infinity, -Infinity, big integers, lone surrogates as \udXXX escapes). The code's
    /// print() output is discarded, as upstream. Exit code: 0 and the merged globals as
    /// one JSON object on stdout; 1 when the jailed code failed, with upstream's exact
    /// SafeExecException message on stderr; 125 when the client or the broker failed.
    SafeExec(Box<SafeExecArgs>),
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// A limit for this run, by upstream name (CPU, REALTIME, VMEM, FSIZE, NPROC, and
    /// OUTPUT, TMP); VALUE is an unsigned integer (seconds, bytes or a count).
    #[arg(long = "limit", value_name = "NAME=VALUE", value_parser = parse_limit)]
    limits: Vec<(String, u64)>,

    /// The limit override context (the LMS uses the course id).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,

    /// A label for the broker's log.
    #[arg(long, value_name = "SLUG")]
    slug: Option<String>,

    /// A file, directory or symlink copied into the jail by its base name
    /// (directories recursively; symlinks stay symlinks and are never followed).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,

    /// A file written at the top of the jail's directory as NAME, read from PATH.
    #[arg(long = "extra-file", value_name = "NAME=PATH", value_parser = parse_extra_file)]
    extra_files: Vec<(String, PathBuf)>,

    /// The program's stdin: a file, or `-` for this command's own stdin
    /// [default: empty].
    #[arg(long = "stdin-file", value_name = "PATH|-")]
    stdin_file: Option<PathBuf>,

    /// The configured command to run.
    #[arg(long, value_name = "NAME", default_value = "python")]
    command: String,

    /// Print exactly one JSON object instead of passing the output through:
    /// {"status", "stdout", "stderr", "limit_hit", "truncated", "usage"}. The exit
    /// code is the same as without --json.
    #[arg(long)]
    json: bool,

    /// The program text (run as `python -E -B jailed_code ARG...`).
    #[arg(short = 'c', value_name = "CODE", conflicts_with = "code_file")]
    code: Option<String>,

    /// Read the program text from PATH.
    #[arg(long = "code-file", value_name = "PATH")]
    code_file: Option<PathBuf>,

    /// Arguments for the program. With no code, the first ARG names the program
    /// (a file copied in with --file), as upstream.
    #[arg(
        value_name = "ARG",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("program").required(true).args(["code", "code_file"])))]
struct SafeExecArgs {
    /// The initial globals: a JSON object (Python's dialect) [default: {}].
    #[arg(long = "globals-file", value_name = "PATH")]
    globals_file: Option<PathBuf>,

    /// A file, directory or symlink copied into the jail by its base name.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,

    /// A directory or zip file added to sys.path by its base name; copied in like
    /// --file unless an --extra-file has that name.
    #[arg(long = "python-path", value_name = "NAME")]
    python_path: Vec<PathBuf>,

    /// A file written at the top of the jail's directory as NAME, read from PATH.
    #[arg(long = "extra-file", value_name = "NAME=PATH", value_parser = parse_extra_file)]
    extra_files: Vec<(String, PathBuf)>,

    /// The limit override context (the LMS uses the course id).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,

    /// A label for the broker's log.
    #[arg(long, value_name = "SLUG")]
    slug: Option<String>,

    /// Run UNCONFINED with a local interpreter ($CODEJAIL_PYTHON, else
    /// /usr/bin/python3, else python3 on PATH) and no broker: no jail, no limits. For
    /// testing only; a warning is printed every time.
    #[arg(long = "unsafe")]
    unsafe_local: bool,

    /// The Python code to run.
    #[arg(short = 'c', value_name = "CODE")]
    code: Option<String>,

    /// Read the Python code from PATH.
    #[arg(long = "code-file", value_name = "PATH")]
    code_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Print the status as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // A bad invocation is a client failure: one line, exit 125, so that it can
            // never be mistaken for the program's own exit code.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return fail(format!("{first} (see --help)"));
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let socket = cli.socket.unwrap_or_else(socket_from_env);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Exec(args) => runtime.block_on(exec(socket, *args)),
        Command::Status(args) => runtime.block_on(status(socket, args)),
        Command::SafeExec(args) => runtime.block_on(safe_exec(socket, *args)),
    }
}

/// The environment variable naming the interpreter of `safe-exec --unsafe`.
const UNSAFE_PYTHON_ENV: &str = "CODEJAIL_PYTHON";

/// `codejail-client safe-exec`.
async fn safe_exec(socket: PathBuf, args: SafeExecArgs) -> ExitCode {
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
fn safe_exec_inputs(args: &SafeExecArgs) -> anyhow::Result<(String, Dict, SafeExecOptions)> {
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

/// `codejail-client exec`.
async fn exec(socket: PathBuf, args: ExecArgs) -> ExitCode {
    let json_output = args.json;
    let req = match build_request(args) {
        Ok(req) => req,
        Err(e) => return fail(format!("{e:#}")),
    };
    let cfg = exec_config(socket, &req);
    if json_output {
        let result = match codejail_client::jail_code(&cfg, &req).await {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let line = json::jail_result(&result).to_string();
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            return fail(format!("cannot write the result: {e}"));
        }
        exit_code(result.exit_code())
    } else {
        let mut client = match Client::connect(&cfg).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let mut pass = Passthrough::default();
        match client.jail_code_streaming(&req, |c| pass.write(c)).await {
            Ok(result) => exit_code(result.exit_code()),
            Err(e) => fail(e),
        }
    }
}

/// The client config for one `exec`: the library defaults, except that a REALTIME
/// limit given here stretches the total timeout so the broker's limit is what ends a
/// long run (REALTIME=0, no wall-clock limit, also lifts the client's).
fn exec_config(socket: PathBuf, req: &JailRequest) -> ClientConfig {
    let mut cfg = ClientConfig::new(socket);
    match req.limits.get("REALTIME") {
        Some(0) => cfg.total_timeout = Duration::MAX,
        Some(&secs) => {
            let needed = Duration::from_secs(secs)
                .saturating_add(cfg.queue_timeout)
                .saturating_add(Duration::from_secs(30));
            cfg.total_timeout = cfg.total_timeout.max(needed);
        }
        None => {}
    }
    cfg
}

/// The library request for `exec`'s arguments; caller-side files named by `--file`
/// are read by the library, everything else here.
fn build_request(args: ExecArgs) -> anyhow::Result<JailRequest> {
    let code = match (args.code, args.code_file) {
        (Some(code), _) => Some(code),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("{} is not valid UTF-8", path.display()))?;
            Some(text)
        }
        (None, None) => None,
    };
    if code.is_none() && args.args.is_empty() {
        bail!("nothing to run: give -c CODE, --code-file PATH, or the program as the first ARG");
    }
    let stdin = match args.stdin_file {
        None => Vec::new(),
        Some(path) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
        Some(path) => {
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    let extra_files = args
        .extra_files
        .into_iter()
        .map(|(name, path)| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok((name, bytes))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(JailRequest {
        command: args.command,
        code,
        files: args.files,
        extra_files,
        argv: args.args,
        stdin,
        limits: args.limits.into_iter().collect(),
        limits_context: args.context,
        slug: args.slug,
    })
}

/// Copies the program's output to ours as it arrives. A stream we cannot write to
/// (a closed pipe) is dropped quietly; the run goes on and its status still counts.
#[derive(Default)]
struct Passthrough {
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Passthrough {
    fn write(&mut self, chunk: OutputChunk<'_>) {
        match chunk {
            OutputChunk::Stdout(b) if !self.stdout_closed => {
                let mut out = std::io::stdout().lock();
                self.stdout_closed = out.write_all(b).and_then(|()| out.flush()).is_err();
            }
            OutputChunk::Stderr(b) if !self.stderr_closed => {
                let mut err = std::io::stderr().lock();
                self.stderr_closed = err.write_all(b).and_then(|()| err.flush()).is_err();
            }
            _ => {}
        }
    }
}

/// `codejail-client status`.
async fn status(socket: PathBuf, args: StatusArgs) -> ExitCode {
    let report = match codejail_client::status(&ClientConfig::new(socket)).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let text = if args.json {
        format!("{}\n", json::status_report(&report))
    } else {
        codejail_protocol::render::status_table(&report)
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        return fail(format!("cannot write the status: {e}"));
    }
    if report.required_layers_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Print one `codejail-client: <message>` line on stderr; exit 125.
fn fail(message: impl Display) -> ExitCode {
    let message = message.to_string().replace(['\n', '\r'], " ");
    eprintln!("codejail-client: {message}");
    ExitCode::from(EXIT_FAILURE)
}

/// An exit code already clamped to 0..=255 by the library.
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_FAILURE))
}

/// `NAME=VALUE` with an unsigned integer value.
fn parse_limit(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("limit {s:?} is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("limit {s:?} has no name"));
    }
    let value = value
        .parse::<u64>()
        .map_err(|_| format!("limit {name} value {value:?} is not an unsigned integer"))?;
    Ok((name.to_string(), value))
}

/// `NAME=PATH`.
fn parse_extra_file(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("extra file {s:?} is not NAME=PATH")),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("codejail-client").chain(args.iter().copied()))
    }

    fn exec_args(args: &[&str]) -> ExecArgs {
        match parse(args).expect("parses").command {
            Command::Exec(a) => *a,
            other => panic!("not exec: {other:?}"),
        }
    }

    #[test]
    fn exec_arguments_parse_as_in_the_contract() {
        let a = exec_args(&[
            "exec",
            "--limit",
            "CPU=3",
            "--limit",
            "VMEM=536870912",
            "--context",
            "course-v1:x",
            "--slug",
            "s",
            "--file",
            "lib",
            "--extra-file",
            "data.txt=/tmp/d",
            "--json",
            "-c",
            "print(1)",
            "--",
            "a",
            "-b",
        ]);
        assert_eq!(a.limits, [("CPU".into(), 3), ("VMEM".into(), 536870912)]);
        assert_eq!(a.context.as_deref(), Some("course-v1:x"));
        assert_eq!(a.files, [PathBuf::from("lib")]);
        assert_eq!(
            a.extra_files,
            [("data.txt".into(), PathBuf::from("/tmp/d"))]
        );
        assert!(a.json);
        assert_eq!(a.code.as_deref(), Some("print(1)"));
        assert_eq!(a.args, ["a", "-b"]);
        assert_eq!(a.command, "python");

        let a = exec_args(&[
            "--socket", "/s", "exec", "--file", "prog.py", "--", "prog.py", "x",
        ]);
        assert_eq!(a.code, None);
        assert_eq!(a.args, ["prog.py", "x"]);
        let cli = parse(&["exec", "--socket", "/t", "-c", "x"]).expect("global socket");
        assert_eq!(cli.socket, Some(PathBuf::from("/t")));
    }

    #[test]
    fn bad_exec_arguments_are_refused() {
        for bad in [
            &["exec", "--limit", "CPU", "-c", "x"][..],
            &["exec", "--limit", "CPU=-1", "-c", "x"],
            &["exec", "--limit", "CPU=1.5", "-c", "x"],
            &["exec", "--extra-file", "noequals", "-c", "x"],
            &["exec", "-c", "x", "--code-file", "f"],
            &["status", "--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let a = exec_args(&["exec", "--json"]);
        let err = build_request(a).expect_err("nothing to run");
        assert!(err.to_string().contains("nothing to run"), "{err}");
    }

    fn safe_exec_args(args: &[&str]) -> SafeExecArgs {
        match parse(args).expect("parses").command {
            Command::SafeExec(a) => *a,
            other => panic!("not safe-exec: {other:?}"),
        }
    }

    #[test]
    fn safe_exec_arguments_parse_as_in_the_contract() {
        let a = safe_exec_args(&[
            "safe-exec",
            "--globals-file",
            "g.json",
            "--file",
            "hello.txt",
            "--file",
            "pylib",
            "--python-path",
            "pylib",
            "--python-path",
            "python_lib.zip",
            "--extra-file",
            "python_lib.zip=/tmp/lib.zip",
            "--context",
            "course-v1:x",
            "--slug",
            "s",
            "--unsafe",
            "-c",
            "a = 1",
        ]);
        assert_eq!(a.globals_file, Some(PathBuf::from("g.json")));
        assert_eq!(
            a.files,
            [PathBuf::from("hello.txt"), PathBuf::from("pylib")]
        );
        assert_eq!(
            a.python_path,
            [PathBuf::from("pylib"), PathBuf::from("python_lib.zip")]
        );
        assert_eq!(
            a.extra_files,
            [("python_lib.zip".into(), PathBuf::from("/tmp/lib.zip"))]
        );
        assert_eq!(a.context.as_deref(), Some("course-v1:x"));
        assert_eq!(a.slug.as_deref(), Some("s"));
        assert!(a.unsafe_local);
        assert_eq!(a.code.as_deref(), Some("a = 1"));

        let a = safe_exec_args(&["safe-exec", "--code-file", "prog.py"]);
        assert_eq!(a.code_file, Some(PathBuf::from("prog.py")));
        assert!(!a.unsafe_local && a.globals_file.is_none());

        for bad in [
            &["safe-exec"][..],
            &["safe-exec", "-c", "x", "--code-file", "f"],
            &["safe-exec", "--extra-file", "noequals", "-c", "x"],
            &["safe-exec", "-c", "x", "extra-positional"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn safe_exec_reads_its_inputs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let globals = tmp.path().join("g.json");
        std::fs::write(
            &globals,
            br#"{"n": NaN, "big": 123456789012345678901234567890}"#,
        )
        .expect("write");
        let code = tmp.path().join("prog.py");
        std::fs::write(&code, b"a = 1\n").expect("write");
        let mut a = safe_exec_args(&["safe-exec", "--code-file", "x"]);
        a.code_file = Some(code);
        a.globals_file = Some(globals.clone());
        let (code, g, opts) = safe_exec_inputs(&a).expect("inputs");
        assert_eq!(code, "a = 1\n");
        assert_eq!(
            g.to_json(),
            r#"{"n": NaN, "big": 123456789012345678901234567890}"#
        );
        assert_eq!(opts, SafeExecOptions::default());

        std::fs::write(&globals, b"[1]").expect("write");
        let err = safe_exec_inputs(&a).expect_err("not an object");
        assert!(err.to_string().contains("not a JSON object"), "{err}");
        std::fs::write(&globals, b"{").expect("write");
        let err = safe_exec_inputs(&a).expect_err("not JSON");
        assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    }

    #[test]
    fn realtime_stretches_the_total_timeout() {
        let req = JailRequest::python("x");
        assert_eq!(
            exec_config("/s".into(), &req).total_timeout,
            Duration::from_secs(60)
        );
        let req = JailRequest::python("x").limit("REALTIME", 3);
        assert_eq!(
            exec_config("/s".into(), &req).total_timeout,
            Duration::from_secs(60)
        );
        let req = JailRequest::python("x").limit("REALTIME", 300);
        assert_eq!(
            exec_config("/s".into(), &req).total_timeout,
            Duration::from_secs(340)
        );
        let req = JailRequest::python("x").limit("REALTIME", 0);
        assert_eq!(exec_config("/s".into(), &req).total_timeout, Duration::MAX);
    }

    #[test]
    fn status_table_names_degraded_layers() {
        use codejail_client::StatusReport;
        use codejail_protocol::{Layer, LayerState, Load, Mode};
        let layer = |state, required| Layer {
            state,
            required,
            holds: state == LayerState::Full,
            detail: "d".into(),
        };
        let mut r = StatusReport {
            broker_version: "0.1.0".into(),
            protocol_version: 1,
            mode: Mode::Confined,
            layers: [
                ("landlock".to_string(), layer(LayerState::Full, true)),
                ("seccomp".to_string(), layer(LayerState::Partial, false)),
            ]
            .into_iter()
            .collect(),
            load: Load::default(),
            pool: Default::default(),
            commands: Default::default(),
            limits: codejail_protocol::LimitsReport {
                defaults: [("CPU".to_string(), 1), ("REALTIME".to_string(), 3)].into(),
                ceilings: Default::default(),
                contexts: [(
                    "course-v1:x".to_string(),
                    [("REALTIME".to_string(), 9)].into(),
                )]
                .into(),
            },
        };
        let t = codejail_protocol::render::status_table(&r);
        assert!(t.contains("mode      confined"), "{t}");
        assert!(
            t.contains("limits    defaults CPU=1 REALTIME=3\n")
                && t.contains("          context \"course-v1:x\": REALTIME=9\n")
                && !t.contains("ceilings"),
            "{t}"
        );
        assert!(t.contains("OK"), "{t}");
        // A required layer that is partial but meets its minimum (Landlock's ABI).
        r.layers.insert(
            "landlock".into(),
            Layer {
                holds: true,
                ..layer(LayerState::Partial, true)
            },
        );
        let t = codejail_protocol::render::status_table(&r);
        assert!(t.contains("verdict   OK"), "{t}");
        r.layers
            .insert("userns".into(), layer(LayerState::Unavailable, true));
        let t = codejail_protocol::render::status_table(&r);
        assert!(
            t.contains("DEGRADED: required layers not fully applied: userns"),
            "{t}"
        );
        assert!(t.contains("unavailable"), "{t}");
    }
}
