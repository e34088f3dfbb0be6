//! codejail-broker: the daemon that accepts run requests on a Unix socket, and the
//! jail stage that builds each run's jail.
//!
//! - [`server`]: listener, peer authentication, per-connection handler, shutdown;
//! - [`run`]: one run from the broker's side: spawn the stage, write its id maps,
//!   stream output, enforce REALTIME and the output cap, collect status and usage;
//! - [`jail`]: the Plan and the single-threaded stage that applies it (no tokio);
//! - [`systemd`] and [`logging`]: how the daemon runs as a service (socket activation,
//!   readiness, watchdog, the journal).

pub mod config;
pub mod jail;
pub mod logging;
pub mod run;
pub mod server;
mod sys;
pub mod systemd;
