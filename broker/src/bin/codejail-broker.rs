//! The broker daemon binary: parses arguments (CONTRACTS.md), builds [`Settings`], runs
//! the start-up self-test, and serves until SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use codejail_broker::config::{
    CgroupConfig, CgroupMode, CommandConfig, FileConfig, RunIdsConfig, Settings, SocketConfig,
};
use codejail_broker::server::{self, report, selftest, startup, Shared};
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
    /// Dev: socket path (default $XDG_RUNTIME_DIR/codejail.sock, else ./codejail.sock).
    #[arg(long, requires = "dev")]
    socket: Option<PathBuf>,
    /// Dev: the python interpreter (default /usr/bin/python3, else python3 on PATH).
    #[arg(long, requires = "dev")]
    python: Option<PathBuf>,
    /// Dev: also allow this peer uid (repeatable); the broker's own uid always is.
    #[arg(long = "allow-uid", requires = "dev")]
    allow_uid: Vec<u32>,
    /// Dev: parallel runs.
    #[arg(long, requires = "dev")]
    max_running: Option<u32>,
    /// Dev: requests that may wait for a slot.
    #[arg(long, requires = "dev")]
    max_queue: Option<u32>,
    /// Dev: largest frame accepted, bytes.
    #[arg(long, requires = "dev")]
    max_frame: Option<usize>,
    /// Dev: open connections at most (config max_connections).
    #[arg(long, requires = "dev")]
    max_connections: Option<u32>,
    /// Dev: seconds a connection may stay idle between requests (config
    /// idle_timeout_secs).
    #[arg(long, requires = "dev")]
    idle_timeout_secs: Option<u64>,
    /// Dev: bytes of requests held at once (config request_budget_bytes).
    #[arg(long, requires = "dev")]
    request_budget: Option<u64>,
    /// Dev: a default limit value, NAME=VALUE (repeatable).
    #[arg(long = "default", value_name = "NAME=VALUE", requires = "dev")]
    defaults: Vec<String>,
    /// Dev: a limit ceiling, NAME=VALUE (repeatable).
    #[arg(long = "ceiling", value_name = "NAME=VALUE", requires = "dev")]
    ceilings: Vec<String>,
    /// Dev: a named context's override, CONTEXT:NAME=VALUE (repeatable).
    #[arg(long = "context", value_name = "CONTEXT:NAME=VALUE", requires = "dev")]
    contexts: Vec<String>,
    /// Dev: seconds running runs get on SIGTERM.
    #[arg(long, requires = "dev")]
    shutdown_grace_secs: Option<u64>,
    /// Dev: per-run outside uids/gids FIRST..FIRST+COUNT-1 (needs CAP_SETUID and
    /// CAP_SETGID), as `run_ids` in the config.
    #[arg(long, value_name = "FIRST:COUNT", requires = "dev")]
    run_ids: Option<String>,
    /// Dev: run cgroups under these v1 memory and pids cgroups (created and chowned to
    /// the broker's uid beforehand).
    #[arg(
        long,
        value_name = "MEMORY_PARENT,PIDS_PARENT",
        requires = "dev",
        conflicts_with = "cgroup_v2"
    )]
    cgroup_v1: Option<String>,
    /// Dev: run cgroups under this delegated v2 cgroup.
    #[arg(long, value_name = "DIR", requires = "dev")]
    cgroup_v2: Option<PathBuf>,
    /// Dev: refuse to start without the memory and pids cgroup controllers, as
    /// production does.
    #[arg(long, requires = "dev")]
    require_cgroups: bool,
    /// Dev: the python command may exec other programs after its start (config
    /// `allow_exec = true`); by default every later exec fails with EACCES.
    #[arg(long, requires = "dev")]
    allow_exec: bool,
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

fn parse_kv(s: &str) -> anyhow::Result<(String, u64)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not NAME=VALUE"))?;
    let v: u64 = v
        .parse()
        .with_context(|| format!("{s:?}: the value must be an unsigned integer"))?;
    Ok((k.to_string(), v))
}

fn find_python(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return std::path::absolute(&p).with_context(|| format!("python path {}", p.display()));
    }
    let usr = Path::new("/usr/bin/python3");
    if usr.exists() {
        return Ok(usr.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .context("no /usr/bin/python3 and no python3 on PATH: pass --python")
}

fn dev_config(cli: &Cli) -> anyhow::Result<FileConfig> {
    let socket = match &cli.socket {
        Some(s) => s.clone(),
        None => match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("codejail.sock"),
            _ => PathBuf::from("./codejail.sock"),
        },
    };
    let mut allowed = vec![nix::unistd::geteuid().as_raw()];
    allowed.extend(&cli.allow_uid);
    let mut cfg = FileConfig {
        socket: SocketConfig {
            path: Some(std::path::absolute(&socket)?),
            // Peers are authenticated by SO_PEERCRED, not by the file mode: an open
            // mode lets a refused peer hear why it is refused.
            mode: Some("0666".into()),
            gid: None,
        },
        allowed_uids: allowed,
        max_running: cli.max_running,
        max_queue: cli.max_queue,
        max_frame: cli.max_frame,
        max_connections: cli.max_connections,
        idle_timeout_secs: cli.idle_timeout_secs,
        request_budget_bytes: cli.request_budget,
        shutdown_grace_secs: cli.shutdown_grace_secs,
        ..FileConfig::default()
    };
    cfg.commands.insert(
        "python".into(),
        CommandConfig {
            bin: find_python(cli.python.clone())?,
            args: None,
            env: None,
            ro_paths: None,
            allow_exec: cli.allow_exec.then_some(true),
        },
    );
    if let Some(r) = &cli.run_ids {
        let (first, count) = r
            .split_once(':')
            .and_then(|(f, c)| Some((f.parse().ok()?, c.parse().ok()?)))
            .with_context(|| format!("--run-ids {r:?} is not FIRST:COUNT"))?;
        cfg.run_ids = Some(RunIdsConfig { first, count });
    }
    // --dev makes no cgroups unless told where: several dev brokers on one host would
    // otherwise sweep each other's run cgroups.
    cfg.cgroup = CgroupConfig {
        mode: Some(CgroupMode::None),
        required: Some(cli.require_cgroups),
        ..CgroupConfig::default()
    };
    if let Some(v1) = &cli.cgroup_v1 {
        let (memory, pids) = v1
            .split_once(',')
            .with_context(|| format!("--cgroup-v1 {v1:?} is not MEMORY_PARENT,PIDS_PARENT"))?;
        cfg.cgroup.mode = Some(CgroupMode::V1);
        cfg.cgroup.v1_memory = Some(memory.into());
        cfg.cgroup.v1_pids = Some(pids.into());
    }
    if let Some(v2) = &cli.cgroup_v2 {
        cfg.cgroup.mode = Some(CgroupMode::V2);
        cfg.cgroup.v2_root = Some(std::path::absolute(v2)?);
    }
    for d in &cli.defaults {
        let (k, v) = parse_kv(d).context("--default")?;
        cfg.limits.defaults.insert(k, v);
    }
    for c in &cli.ceilings {
        let (k, v) = parse_kv(c).context("--ceiling")?;
        cfg.limits.ceilings.insert(k, v);
    }
    for c in &cli.contexts {
        let (ctx, kv) = c
            .rsplit_once(':')
            .with_context(|| format!("--context {c:?} is not CONTEXT:NAME=VALUE"))?;
        let (k, v) = parse_kv(kv).context("--context")?;
        cfg.limits
            .contexts
            .entry(ctx.to_string())
            .or_default()
            .insert(k, v);
    }
    Ok(cfg)
}

async fn self_test(shared: &mut Shared) -> Result<(), String> {
    let probe = selftest::probe(shared).await;
    shared.report = report::build(&shared.settings, shared.cgroups.status(), &probe);
    match probe.verdict {
        Ok(()) if !shared.report.required_layers_hold() => {
            let missing: Vec<_> = shared
                .report
                .layers
                .iter()
                .filter(|(_, l)| l.required && l.state != codejail_protocol::LayerState::Full)
                .map(|(n, l)| format!("{n} ({})", l.detail))
                .collect();
            Err(format!("required layers missing: {}", missing.join("; ")))
        }
        other => other,
    }
}

/// Install the SIGTERM/SIGINT handlers now (so a signal that arrives during start-up
/// is not fatal) and return the future that resolves when one arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; SIGTERM will kill without grace");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

async fn serve(mut settings: Settings, mut activation: Activation) -> anyhow::Result<()> {
    // Handlers first: SIGTERM during the self-test must still end in a clean exit 0.
    let signal = shutdown_signal();
    // The socket systemd passed (codejail-broker.socket), if any, is taken first: the
    // socket unit guarantees a single broker, and connecting to its path would only
    // queue a connection on our own socket.
    let inherited = activation.take_listener()?;
    if let Some((_, path)) = &inherited {
        settings.socket_activated = true;
        if let Some(path) = path.as_ref().filter(|p| **p != settings.socket_path) {
            tracing::warn!(configured = %settings.socket_path.display(), passed = %path.display(),
                "systemd passed a socket other than socket.path; serving the one passed");
            settings.socket_path = path.clone();
        }
    } else {
        // Before sweeping anything: a broker already serving this socket owns the runs
        // (and cgroups, and uids) the sweep would remove.
        server::check_no_other_broker(&settings)?;
    }
    let host = startup::prepare_host(&settings).context("refusing to start")?;
    let mut shared = startup::shared_for(settings, host);
    if let Err(e) = self_test(&mut shared).await {
        eprint!("{}", report::render(&shared.report));
        bail!("start-up self-test failed, refusing to serve: {e}");
    }
    let banner = report::render(&shared.report);
    if shared.settings.mode == Mode::Dev {
        eprint!("{banner}");
    } else {
        for line in banner.lines() {
            tracing::info!("{line}");
        }
    }
    let listener = match inherited {
        Some((listener, _)) => {
            listener.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(listener)?
        }
        None => server::bind(&shared.settings)?,
    };
    tracing::info!(socket = %shared.settings.socket_path.display(),
        socket_activated = shared.settings.socket_activated, "serving");
    // Ready only now: the self-test passed and the socket accepts (sd_notify(3)).
    let notifier = activation.notifier();
    notifier.ready(&ready_status(&shared));
    let _watchdog = activation.watchdog().map(|i| notifier.spawn_watchdog(i));
    let shared = Arc::new(shared);
    let shutdown = async {
        signal.await;
        notifier.stopping();
    };
    server::run(listener, shared.clone(), shutdown).await;
    if !shared.settings.socket_activated {
        server::remove_socket(&shared.settings.socket_path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// The `STATUS=` shown by `systemctl status` once serving: the layers not fully held.
fn ready_status(shared: &Shared) -> String {
    let short: Vec<String> = shared
        .report
        .layers
        .iter()
        .filter(|(_, l)| l.state != codejail_protocol::LayerState::Full)
        .map(|(n, l)| format!("{n} {}", l.state.as_str()))
        .collect();
    format!(
        "serving on {}; confinement: {}",
        shared.settings.socket_path.display(),
        if short.is_empty() {
            "every layer full".to_string()
        } else {
            format!("every required layer full; {}", short.join(", "))
        }
    )
}

fn check_config(file: &Path) -> ExitCode {
    let settings = match Settings::from_file(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("codejail-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codejail-broker: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Look only: check-config must not sweep or move anything of a serving broker.
    let host = match startup::inspect_host(&settings) {
        Ok(h) => h,
        Err(e) => {
            println!("a required layer does not hold here: {e}");
            return ExitCode::from(1);
        }
    };
    let mut shared = startup::shared_for(settings, host);
    let verdict = rt.block_on(self_test(&mut shared));
    print!("{}", report::render(&shared.report));
    match verdict {
        Ok(()) if shared.report.required_layers_hold() => {
            println!(
                "config {} is valid and every required layer holds here",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::from(1),
        Err(e) => {
            println!("a required layer does not hold here: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    // First of all, before any secret (config, peers' requests) is in memory.
    if let Err(e) = codejail_broker::run::protect_broker() {
        eprintln!(
            "codejail-broker: cannot make the broker non-dumpable (prctl PR_SET_DUMPABLE): {e}"
        );
        return ExitCode::from(1);
    }
    // While the process has one thread: take (and clear) what systemd passed.
    let activation = Activation::from_env();
    let cli = Cli::parse();
    codejail_broker::logging::init();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check_config(file.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG)));
    }
    let settings = if cli.dev {
        dev_config(&cli).and_then(|cfg| Settings::from_config(&cfg, Mode::Dev).map_err(Into::into))
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
            .block_on(serve(settings, activation))
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
