//! The `codejail-http` daemon: reads the configuration and the flags, refuses a
//! non-loopback address unless told, fits its connection cap to its open-files limit,
//! listens, serves until SIGTERM or SIGINT, then finishes the requests in flight and
//! exits 0.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use codejail_http::server::fit_open_files;
use codejail_http::{serve, AppState, Config};
use tokio::signal::unix::{signal, SignalKind};

/// codejail-service's HTTP API in front of the codejail broker.
#[derive(Debug, Parser)]
#[command(name = "codejail-http", version)]
struct Cli {
    /// Address to listen on [default: 127.0.0.1:8550, or the config's `listen`].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// The broker's socket [default: the config's `broker_socket`, else
    /// $CODEJAIL_SOCKET, else /run/codejail/broker.sock].
    #[arg(long, value_name = "PATH")]
    broker_socket: Option<PathBuf>,
    /// A TOML configuration file (unknown keys are errors).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Allow a non-loopback listen address (there is no authentication: restrict who
    /// can reach the port, e.g. with a network policy).
    #[arg(long)]
    allow_non_loopback: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("codejail-http: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(socket) = cli.broker_socket {
        config.broker_socket = Some(socket);
    }
    config.allow_non_loopback |= cli.allow_non_loopback;
    config.validate()?;
    let max_connections = fit_open_files(&mut config)?;
    for key in config.removed_keys() {
        tracing::warn!(
            key,
            "ignored: the front now takes REALTIME from the broker (its defaults and \
             limit override contexts); delete the key, or set max_deadline_secs to cap \
             a request's deadline"
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let local = listener.local_addr().context("the listening address")?;
        let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
        let state = AppState::new(config);
        tracing::info!(
            listen = %local,
            broker = %state.client.socket.display(),
            max_connections,
            header_read_timeout_secs = state.config.header_read_timeout_secs,
            "codejail-http listening"
        );
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping: no new connections, finishing the requests in flight");
        };
        serve(listener, state, shutdown).await.context("serve")?;
        tracing::info!("stopped");
        Ok(())
    })
}
