//! codejail-broker: the daemon that accepts run requests on a Unix socket and runs
//! each in a fresh jail, built by the separate jail stage binary (`codejail-jail`,
//! crate `codejail_jail`), with which it shares only the plan crate (`codejail_plan`).
//!
//! - [`daemon`] (and [`devflags`]): start-up in order (hardening, host checks and
//!   sweep, warm pools, the self-test, the confinement report), serving,
//!   `check-config`;
//! - [`server`]: the transport: listener, connection cap, peer credentials, framing,
//!   handshake, shutdown; each request goes to [`run::Runs::exec`];
//! - [`run`]: the runs: [`run::Runs::exec`] is one run's whole life (check, admit,
//!   choose a jail, run, answer, clean up), with the admission slots, the request
//!   budget, cgroups, per-run uids, the stage's supervision and the warm pools;
//! - [`apparmor`]: whether the host has AppArmor, and the profile runs stack on;
//! - [`systemd`] and [`logging`]: how the daemon runs as a service (socket activation,
//!   readiness, watchdog, the journal).

pub mod apparmor;
pub mod config;
pub mod daemon;
pub mod devflags;
pub mod logging;
pub mod run;
pub mod server;
mod sys;
pub mod systemd;
