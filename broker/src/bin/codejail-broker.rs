//! The broker daemon binary: parses arguments (docs/contracts.md §6) and calls the library:
//! [`codejail_broker::daemon`] does the rest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use codejail_broker::config::Settings;
use codejail_broker::daemon;
use codejail_broker::devflags::DevFlags;
use codejail_broker::systemd::Activation;
use codejail_protocol::Mode;

/// The codejail broker: runs untrusted code in per-run jails for callers on a Unix socket.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Production: the config file (default /etc/codejail/broker.toml).
    #[arg(long, conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Development: no set-up, confine with what an unprivileged user has.
    #[arg(long)]
    dev: bool,
    #[command(flatten)]
    dev_flags: DevFlags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config and print the confinement it would achieve here, without
    /// serving. Exit 0 valid and achievable, 1 a required layer is not, 2 invalid.
    CheckConfig {
        /// The config file (default /etc/codejail/broker.toml).
        file: Option<PathBuf>,
    },
}

const DEFAULT_CONFIG: &str = "/etc/codejail/broker.toml";

fn main() -> ExitCode {
    // First of all, before any secret (config, peers' requests) is in memory.
    if let Err(e) = codejail_broker::daemon::hardening::protect_broker() {
        eprintln!(
            "codejail-broker: cannot make the broker non-dumpable (prctl PR_SET_DUMPABLE): {e}"
        );
        return ExitCode::from(1);
    }
    // Before the request payloads: their memory must go back to the kernel when they
    // are dropped, or the request budget would not bound the broker's RSS.
    if let Err(e) = codejail_broker::daemon::hardening::map_big_allocations() {
        eprintln!("codejail-broker: cannot set malloc's mmap threshold: {e}");
        return ExitCode::from(1);
    }
    // While the process has one thread: take (and clear) what systemd passed.
    let activation = Activation::from_env();
    let cli = Cli::parse();
    codejail_broker::logging::init();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return daemon::check_config(file.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG)));
    }
    let settings = if cli.dev {
        cli.dev_flags
            .to_config()
            .and_then(|cfg| Settings::from_config(&cfg, Mode::Dev).map_err(Into::into))
    } else {
        let path = cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        Settings::from_file(&path).map_err(Into::into)
    };
    let notifier = activation.notifier();
    let result = settings.and_then(|settings| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(daemon::serve(settings, activation))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            notifier.status(&format!("refusing to serve: {e:#}"));
            eprintln!("codejail-broker: {e:#}");
            ExitCode::from(1)
        }
    }
}
