//! Harness for end-to-end tests: starts a real broker on a temporary socket.
//!
//! Every test gets its own [`TestBroker`]: a `codejail-broker --dev` process listening on
//! a socket in a fresh temporary directory. When the tests run as root (as in CI), the
//! broker runs as a unique non-root uid (root is exempt from `RLIMIT_NPROC`, and the
//! broker must never run programs as root anyway); otherwise it runs as the caller.
//!
//! Besides starting and stopping brokers, the harness offers:
//! - request helpers ([`py`], [`dedent`]) for the client library;
//! - [`RawConn`], a raw protocol connection for the bad-input tests, which must send
//!   what the client library never would;
//! - `/proc` scans ([`processes`]) to check that nothing outlives a run;
//! - [`require_privileged`] / [`skip_or_fail`]: tests that need root or namespaces skip
//!   with a printed reason, or fail when `CODEJAIL_REQUIRE_PRIVILEGED=1` (as in CI).
//!
//! The binaries are found next to the test executable (`target/debug/`), or in
//! `$CODEJAIL_TEST_BIN_DIR` (set by `scripts/test.sh` when it had to stage them in a
//! directory the broker's uid can reach).

// The harness is test code: a failed step must stop the test with a message, which is
// what `expect` does.
#![allow(clippy::expect_used)]

pub mod http;

mod broker;
mod broker_opts;
mod cgroups;
mod env;
mod procs;
mod raw;
mod requests;

pub use broker::*;
pub use broker_opts::*;
pub use cgroups::*;
pub use env::*;
pub use procs::*;
pub use raw::*;
pub use requests::*;

pub use codejail_client::{ClientConfig, ClientError, JailRequest, JailResult};
