//! codejail-client: the caller's side of codejail. Talks to the broker daemon over its
//! Unix socket (see `codejail-protocol`); never runs untrusted code itself.
//!
//! - [`Client`]: one async connection (handshake, then runs and status requests);
//! - [`jail_code`] / [`status`]: connect and make one call;
//! - [`blocking`]: the same for callers without an async runtime;
//! - [`files`]: reading caller-side files with upstream's copy semantics;
//! - [`json`]: the CLI's JSON output shapes;
//! - [`safe_exec()`]: upstream's `safe_exec` over `jail_code`, with globals as
//!   Python-dialect JSON ([`pyjson`]), and its explicit unconfined twin
//!   [`UnsafeLocal`] for callers' own tests.
//!
//! Every wait is bounded by the timeouts in [`ClientConfig`]: a web worker never hangs
//! on a broker that is gone or wedged.

pub mod blocking;
mod config;
mod connection;
mod deadline;
mod error;
pub mod files;
pub mod json;
pub mod pyjson;
mod request;
pub mod safe_exec;
mod unsafe_local;

pub use codejail_protocol::{ErrorKind, LimitName, StatusReport, Usage, Welcome};
pub use config::{socket_from_env, ClientConfig, DEFAULT_SOCKET, SOCKET_ENV};
pub use connection::Client;
pub use error::ClientError;
pub use request::{exit_code_for_status, JailRequest, JailResult, OutputChunk};
pub use safe_exec::{
    safe_exec, safe_exec_blocking, Executor, SafeExecError, SafeExecException, SafeExecOptions,
};
pub use unsafe_local::UnsafeLocal;

use deadline::Deadline;

/// Connect to the broker and run one program (upstream's `jail_code`). The connect
/// timeout bounds connecting, the queue timeout the wait for a slot, and the total
/// timeout the whole call, connecting included.
pub async fn jail_code(cfg: &ClientConfig, req: &JailRequest) -> Result<JailResult, ClientError> {
    let total = Deadline::after(cfg.total_timeout, "total");
    let mut client = Client::connect_until(cfg, total).await?;
    client.jail_code_until(req, total).await
}

/// Connect to the broker and ask for its status; the total timeout bounds the call.
pub async fn status(cfg: &ClientConfig) -> Result<StatusReport, ClientError> {
    let total = Deadline::after(cfg.total_timeout, "total");
    let mut client = Client::connect_until(cfg, total).await?;
    client.status_until(total).await
}
