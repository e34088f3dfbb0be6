//! The `--dev` flags (docs/contracts.md §7: a broker with no set-up, for development, tests and
//! benchmarks) and the [`FileConfig`] they stand for: a dev broker is configured the
//! way a production one is, from a config, so the same validation applies to both.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{
    CgroupConfig, CgroupMode, CommandConfig, FileConfig, PoolConfig, RunIdsConfig, SocketConfig,
};

/// Flags that only go with `--dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DevFlags {
    /// Dev: socket path (default $XDG_RUNTIME_DIR/codejail.sock, else ./codejail.sock).
    #[arg(long, requires = "dev")]
    pub socket: Option<PathBuf>,
    /// Dev: the python interpreter (default /usr/bin/python3, else python3 on PATH).
    #[arg(long, requires = "dev")]
    pub python: Option<PathBuf>,
    /// Dev: also allow this peer uid (repeatable); the broker's own uid always is.
    #[arg(long = "allow-uid", requires = "dev")]
    pub allow_uid: Vec<u32>,
    /// Dev: parallel runs.
    #[arg(long, requires = "dev")]
    pub max_running: Option<u32>,
    /// Dev: requests that may wait for a slot.
    #[arg(long, requires = "dev")]
    pub max_queue: Option<u32>,
    /// Dev: largest frame accepted, bytes.
    #[arg(long, requires = "dev")]
    pub max_frame: Option<usize>,
    /// Dev: open connections at most (config max_connections).
    #[arg(long, requires = "dev")]
    pub max_connections: Option<u32>,
    /// Dev: seconds a connection may stay idle between requests (config
    /// idle_timeout_secs).
    #[arg(long, requires = "dev")]
    pub idle_timeout_secs: Option<u64>,
    /// Dev: bytes of requests held at once (config request_budget_bytes).
    #[arg(long, requires = "dev")]
    pub request_budget: Option<u64>,
    /// Dev: a default limit value, NAME=VALUE (repeatable).
    #[arg(long = "default", value_name = "NAME=VALUE", requires = "dev")]
    pub defaults: Vec<String>,
    /// Dev: a limit ceiling, NAME=VALUE (repeatable).
    #[arg(long = "ceiling", value_name = "NAME=VALUE", requires = "dev")]
    pub ceilings: Vec<String>,
    /// Dev: a named context's override, CONTEXT:NAME=VALUE (repeatable).
    #[arg(long = "context", value_name = "CONTEXT:NAME=VALUE", requires = "dev")]
    pub contexts: Vec<String>,
    /// Dev: seconds running runs get on SIGTERM.
    #[arg(long, requires = "dev")]
    pub shutdown_grace_secs: Option<u64>,
    /// Dev: per-run outside uids/gids FIRST..FIRST+COUNT-1 (needs CAP_SETUID and
    /// CAP_SETGID), as `run_ids` in the config.
    #[arg(long, value_name = "FIRST:COUNT", requires = "dev")]
    pub run_ids: Option<String>,
    /// Dev: run cgroups under these v1 memory and pids cgroups (created and chowned to
    /// the broker's uid beforehand).
    #[arg(
        long,
        value_name = "MEMORY_PARENT,PIDS_PARENT",
        requires = "dev",
        conflicts_with = "cgroup_v2"
    )]
    pub cgroup_v1: Option<String>,
    /// Dev: run cgroups under this delegated v2 cgroup.
    #[arg(long, value_name = "DIR", requires = "dev")]
    pub cgroup_v2: Option<PathBuf>,
    /// Dev: refuse to start without the memory and pids cgroup controllers, as
    /// production does.
    #[arg(long, requires = "dev")]
    pub require_cgroups: bool,
    /// Dev: the python command may exec other programs after its start (config
    /// `allow_exec = true`); by default every later exec fails with EACCES.
    #[arg(long, requires = "dev")]
    pub allow_exec: bool,
    /// Dev: warm jails kept ready for the python command (config `[pool.python]
    /// size`; 0 = none).
    #[arg(long, value_name = "N", requires = "dev")]
    pub pool_size: Option<u32>,
    /// Dev: a module the warm jails import while they wait (repeatable; config
    /// `[pool.python] preimport`).
    #[arg(long = "preimport", value_name = "MODULE", requires = "dev")]
    pub preimport: Vec<String>,
    /// Dev: fork the python pool's warm jails from a zygote, an interpreter started
    /// once with the preimports (config `[pool.python] fork_server = true`); implies a
    /// pool (of 1 unless --pool-size).
    #[arg(long, requires = "dev")]
    pub fork_server: bool,
    /// Dev: forks one zygote serves before it is replaced (config `[pool.python]
    /// zygote_max_forks`); needs --fork-server.
    #[arg(long, value_name = "N", requires = "fork_server")]
    pub zygote_max_forks: Option<u64>,
    /// Dev: seconds a warm jail may wait before it is replaced (config `[pool.python]
    /// max_age_secs`).
    #[arg(long, value_name = "SECS", requires = "dev")]
    pub pool_max_age_secs: Option<u64>,
    /// Dev: ask Landlock for at most this ABI, as a kernel of that ABI would apply
    /// (config `landlock_max_abi`): the tests of older kernels on a newer one.
    #[arg(long, value_name = "ABI", requires = "dev")]
    pub landlock_abi: Option<u32>,
    /// Dev: refuse to run below this Landlock ABI (config `landlock_min_abi`; the dev
    /// mode's default is 0, not required).
    #[arg(long, value_name = "ABI", requires = "dev")]
    pub landlock_min_abi: Option<u32>,
}

impl DevFlags {
    /// The config these flags stand for.
    pub fn to_config(&self) -> anyhow::Result<FileConfig> {
        dev_config(self)
    }
}

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

fn dev_config(cli: &DevFlags) -> anyhow::Result<FileConfig> {
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
        landlock_max_abi: cli.landlock_abi,
        landlock_min_abi: cli.landlock_min_abi,
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
    if cli.pool_size.is_some()
        || !cli.preimport.is_empty()
        || cli.pool_max_age_secs.is_some()
        || cli.fork_server
    {
        cfg.pool.insert(
            "python".into(),
            PoolConfig {
                size: Some(cli.pool_size.unwrap_or(1)),
                preimport: cli.preimport.clone(),
                max_age_secs: cli.pool_max_age_secs,
                fork_server: cli.fork_server.then_some(true),
                zygote_max_forks: cli.zygote_max_forks,
                zygote_max_age_secs: None,
            },
        );
    }
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
