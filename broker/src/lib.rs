//! codejail-broker: the daemon that accepts run requests on a Unix socket and runs
//! each in a fresh jail, built by the separate jail stage binary (`codejail-jail`,
//! crate `codejail_jail`), with which it shares only the plan crate (`codejail_plan`).
//!
//! - [`daemon`] (and [`devflags`]): start-up in order, serving, `check-config`;
//! - [`server`]: listener, peer authentication, per-connection handler, shutdown;
//! - [`run`]: one run from the broker's side: spawn the stage, write its id maps,
//!   stream output, enforce REALTIME and the output cap, collect status and usage;
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
