//! The `codejail-client` CLI (its arguments, output and exit codes are in
//! docs/contracts.md): parses arguments, calls the `codejail_client` library, one
//! module per subcommand, and maps outcomes to exit codes. Exit code 125 always
//! means the client or the broker failed (one `codejail-client: <message>` line on
//! stderr); any other code comes from the jailed program.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use codejail_client::socket_from_env;

mod exec;
mod safe_exec;
mod status;
#[cfg(test)]
mod tests;

use exec::ExecArgs;
use safe_exec::SafeExecArgs;
use status::StatusArgs;

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
        Command::Exec(args) => runtime.block_on(exec::exec(socket, *args)),
        Command::Status(args) => runtime.block_on(status::status(socket, args)),
        Command::SafeExec(args) => runtime.block_on(safe_exec::safe_exec(socket, *args)),
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
