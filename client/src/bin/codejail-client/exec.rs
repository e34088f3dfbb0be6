//! `codejail-client exec`: one program in a fresh jail, its output passed through as it
//! arrives or given as one JSON object.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use codejail_client::{json, Client, ClientConfig, JailRequest, OutputChunk};

use crate::{exit_code, fail, parse_extra_file, parse_limit};

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// A limit for this run, by upstream name (CPU, REALTIME, VMEM, FSIZE, NPROC, and
    /// OUTPUT, TMP); VALUE is an unsigned integer (seconds, bytes or a count).
    #[arg(long = "limit", value_name = "NAME=VALUE", value_parser = parse_limit)]
    pub(crate) limits: Vec<(String, u64)>,

    /// The limit override context (the LMS uses the course id).
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,

    /// A label for the broker's log.
    #[arg(long, value_name = "SLUG")]
    pub(crate) slug: Option<String>,

    /// A file, directory or symlink copied into the jail by its base name
    /// (directories recursively; symlinks stay symlinks and are never followed).
    #[arg(long = "file", value_name = "PATH")]
    pub(crate) files: Vec<PathBuf>,

    /// A file written at the top of the jail's directory as NAME, read from PATH.
    #[arg(long = "extra-file", value_name = "NAME=PATH", value_parser = parse_extra_file)]
    pub(crate) extra_files: Vec<(String, PathBuf)>,

    /// The program's stdin: a file, or `-` for this command's own stdin
    /// [default: empty].
    #[arg(long = "stdin-file", value_name = "PATH|-")]
    pub(crate) stdin_file: Option<PathBuf>,

    /// The configured command to run.
    #[arg(long, value_name = "NAME", default_value = "python")]
    pub(crate) command: String,

    /// Print exactly one JSON object instead of passing the output through:
    /// {"status", "stdout", "stderr", "limit_hit", "truncated", "usage"}. The exit
    /// code is the same as without --json.
    #[arg(long)]
    pub(crate) json: bool,

    /// The program text (run as `python -E -B jailed_code ARG...`).
    #[arg(short = 'c', value_name = "CODE", conflicts_with = "code_file")]
    pub(crate) code: Option<String>,

    /// Read the program text from PATH.
    #[arg(long = "code-file", value_name = "PATH")]
    pub(crate) code_file: Option<PathBuf>,

    /// Arguments for the program. With no code, the first ARG names the program
    /// (a file copied in with --file), as upstream.
    #[arg(
        value_name = "ARG",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) args: Vec<String>,
}

/// `codejail-client exec`.
pub(crate) async fn exec(socket: PathBuf, args: ExecArgs) -> ExitCode {
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
pub(crate) fn exec_config(socket: PathBuf, req: &JailRequest) -> ClientConfig {
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
pub(crate) fn build_request(args: ExecArgs) -> anyhow::Result<JailRequest> {
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
