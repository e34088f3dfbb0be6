//! Broker configuration: the TOML file (`--config`) or the `--dev` flags, parsed once
//! into [`Settings`] and validated at start-up. A bad config fails start-up
//! with the key and the reason.
//!
//! By concern: `file` (the file as operators write it: serde types, unknown keys
//! refused), `commands` (what a command runs, and with what), `limits` (defaults,
//! ceilings, contexts), `ids` (who runs are, outside), `cgroups` (where run cgroups go),
//! and here the validated [`Settings`] built from them.

mod cgroups;
mod commands;
mod file;
mod ids;
mod limits;
mod pool;
#[cfg(test)]
mod tests;

pub use cgroups::*;
pub use commands::*;
pub use file::*;
pub use ids::*;
pub use limits::*;
pub use pool::*;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use codejail_plan::NEWEST_LANDLOCK_ABI;
use codejail_protocol::{Mode, DEFAULT_MAX_FRAME};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or has an unknown key.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// toml's message, which names the key.
        message: String,
    },
    /// A key has a value that cannot be used.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Default connection cap: an LMS host keeps one connection per app thread that runs
/// code (e.g. 16 gunicorn workers x 8 threads = 128 through the Python package) plus
/// the HTTP front's in-flight requests; 1024 leaves room for several such apps on one
/// host and, with max_running runs, still fits the NOFILE the unit sets (checked at
/// start-up).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default idle timeout between requests on a connection: long enough for an app's
/// kept connection to serve the next request of a busy thread, short enough that
/// abandoned connections do not pile up.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default budget of request bytes held at once (all connections): 16 of the largest
/// requests (32 MiB frames), an eighth of the unit's MemoryMax=4G.
pub const DEFAULT_REQUEST_BUDGET_BYTES: u64 = 512 * 1024 * 1024;

/// The fewest connections the default cap may be lowered to, to fit the open-file
/// limit, before start-up refuses instead.
pub const MIN_FITTED_CONNECTIONS: u32 = 16;

/// The connection cap and where it comes from: only the default may be lowered at
/// start-up to fit `RLIMIT_NOFILE`; a value the operator set is kept, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionCap {
    /// Set by the operator (`max_connections`, or `--max-connections`).
    Configured(u32),
    /// [`DEFAULT_MAX_CONNECTIONS`], not (yet) checked against the open-file limit.
    Default(u32),
    /// The default, lowered at start-up to this to fit the open-file limit.
    Fitted(u32),
}

impl ConnectionCap {
    /// The cap.
    pub fn get(self) -> u32 {
        match self {
            ConnectionCap::Configured(n) | ConnectionCap::Default(n) | ConnectionCap::Fitted(n) => {
                n
            }
        }
    }

    /// Whether start-up lowered the default.
    pub fn is_fitted(self) -> bool {
        matches!(self, ConnectionCap::Fitted(_))
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Everything the broker runs with, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Confined (config file) or dev.
    pub mode: Mode,
    /// Socket path.
    pub socket_path: PathBuf,
    /// Socket file mode.
    pub socket_mode: u32,
    /// Socket group.
    pub socket_gid: Option<u32>,
    /// Peer uids allowed.
    pub allowed_uids: HashSet<u32>,
    /// Parallel runs.
    pub max_running: u32,
    /// Queue length.
    pub max_queue: u32,
    /// Connection cap, and whether the operator set it (start-up may lower only the
    /// default, to fit the open-file limit).
    pub max_connections: ConnectionCap,
    /// Idle timeout between requests.
    pub idle_timeout: Duration,
    /// Budget of request bytes held at once.
    pub request_budget_bytes: u64,
    /// Frame cap.
    pub max_frame: usize,
    /// Grace on SIGTERM.
    pub shutdown_grace: Duration,
    /// The jail stage binary.
    pub jail_stage: PathBuf,
    /// Run identity when no [`Settings::run_ids`] range is configured (all runs
    /// share it); with a range, each run gets its own from the pool instead.
    pub identity: RunIdentity,
    /// Per-run outside ids (production).
    pub run_ids: Option<IdRange>,
    /// Cgroups.
    pub cgroup: CgroupSettings,
    /// Where each run's tmpfs is mounted.
    pub tmpfs_mount: PathBuf,
    /// Commands by name.
    pub commands: BTreeMap<String, CommandSpec>,
    /// Warm pools by command (`[pool.<command>]`; only those with a size).
    pub pools: BTreeMap<String, PoolSpec>,
    /// Limits.
    pub limits: LimitPolicy,
    /// Peer gids allowed (primary or supplementary).
    pub allowed_gids: HashSet<u32>,
    /// The AppArmor profile programs stack on, as configured (see
    /// [`crate::apparmor::profile_for_runs`] for where it applies).
    pub apparmor_profile: Option<String>,
    /// Whether the `apparmor` layer is required.
    pub apparmor_required: bool,
    /// The oldest Landlock ABI runs may have (0: Landlock is not required).
    pub landlock_min_abi: u32,
    /// The newest Landlock ABI runs ask for.
    pub landlock_max_abi: u32,
    /// Set by the binary, not the config: systemd passed the listening socket, so the
    /// socket file is systemd's and the broker neither binds nor removes it.
    pub socket_activated: bool,
}

/// The uid that dev brokers started by root give their runs: never root.
pub const DEV_ROOT_RUN_ID: u32 = 65534;

fn default_jail_stage() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("codejail-jail")))
        .unwrap_or_else(|| PathBuf::from("codejail-jail"))
}

/// The identity runs get when the broker runs as `uid`/`gid`: its own ids when it is
/// unprivileged (the kernel lets it map only itself), `nobody` when it is root.
pub fn identity_for(uid: u32, gid: u32, run_uid: Option<u32>, run_gid: Option<u32>) -> RunIdentity {
    let root = uid == 0;
    let outer_uid = run_uid.unwrap_or(if root { DEV_ROOT_RUN_ID } else { uid });
    let outer_gid = run_gid.unwrap_or(if root { DEV_ROOT_RUN_ID } else { gid });
    RunIdentity {
        outer_uid,
        outer_gid,
        // Taking ids other than our own, and clearing the supplementary groups, needs
        // CAP_SETUID/CAP_SETGID (the stage's child does both before its exec); root
        // has them.
        clear_groups: root || outer_uid != uid || outer_gid != gid,
    }
}

/// `apparmor_profile` and `apparmor_required`, checked.
fn apparmor_from_config(cfg: &FileConfig) -> Result<(Option<String>, bool), ConfigError> {
    if let Some(p) = &cfg.apparmor_profile {
        crate::apparmor::check_profile_name(p).map_err(|e| invalid("apparmor_profile", e))?;
    }
    let required = cfg.apparmor_required.unwrap_or(false);
    if required && cfg.apparmor_profile.is_none() {
        return Err(invalid(
            "apparmor_required",
            "cannot be true without an apparmor_profile",
        ));
    }
    Ok((cfg.apparmor_profile.clone(), required))
}

fn parse_mode(key: &str, s: &str) -> Result<u32, ConfigError> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            invalid(
                key,
                format!("{s:?} is not an octal file mode like \"0660\""),
            )
        })
}

impl Settings {
    /// Settings from a config file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        Settings::from_config(&cfg, Mode::Confined)
    }

    /// Settings from a parsed config.
    pub fn from_config(cfg: &FileConfig, mode: Mode) -> Result<Settings, ConfigError> {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut commands = BTreeMap::new();
        for (name, c) in &cfg.commands {
            let key = format!("commands.{name}");
            if !c.bin.is_absolute() {
                return Err(invalid(format!("{key}.bin"), "must be an absolute path"));
            }
            // execve and mount take C strings: a NUL would fail every run at the
            // stage's plan check instead of failing start-up (found by fuzz/config).
            let strings = std::iter::once(("bin", c.bin.as_os_str().as_encoded_bytes()))
                .chain(c.args.iter().flatten().map(|a| ("args", a.as_bytes())))
                .chain(
                    c.ro_paths
                        .iter()
                        .flatten()
                        .map(|p| ("ro_paths", p.as_os_str().as_encoded_bytes())),
                )
                .chain(
                    c.env
                        .iter()
                        .flatten()
                        .flat_map(|(k, v)| [("env", k.as_bytes()), ("env", v.as_bytes())]),
                );
            for (field, bytes) in strings {
                if bytes.contains(&0) {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        "must not contain a NUL byte",
                    ));
                }
            }
            let mut spec = if name == "python" {
                CommandSpec::python(c.bin.clone())
            } else {
                CommandSpec {
                    ro_paths: interpreter_dirs(&c.bin),
                    bin: c.bin.clone(),
                    args: vec![],
                    env: vec![],
                    allow_exec: false,
                }
            };
            spec.allow_exec = c.allow_exec.unwrap_or(false);
            if let Some(args) = &c.args {
                spec.args = args.clone();
            }
            for p in c.ro_paths.iter().flatten() {
                if !p.is_absolute() {
                    return Err(invalid(
                        format!("{key}.ro_paths"),
                        format!("{} is not absolute", p.display()),
                    ));
                }
                spec.ro_paths.push(p.clone());
            }
            if let Some(env) = &c.env {
                if env
                    .keys()
                    .any(|k| k == "TMPDIR" || k.contains('=') || k.is_empty())
                {
                    return Err(invalid(
                        format!("{key}.env"),
                        "names must be non-empty, without '=', and not TMPDIR",
                    ));
                }
                spec.env = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
            commands.insert(name.clone(), spec);
        }
        let tmpfs_mount = cfg
            .tmpfs_mount
            .clone()
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        if !tmpfs_mount.is_absolute() || tmpfs_mount.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(invalid(
                "tmpfs_mount",
                "must be an absolute path without a NUL byte",
            ));
        }
        check_ro_paths_visible(&commands, &tmpfs_mount)?;
        if commands.is_empty() {
            return Err(invalid(
                "commands",
                "at least one command (e.g. [commands.python]) is needed",
            ));
        }
        let max_running = cfg.max_running.unwrap_or(4);
        if max_running == 0 {
            return Err(invalid("max_running", "must be at least 1"));
        }
        let max_frame = cfg.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
        if !(4096..=1 << 30).contains(&max_frame) {
            return Err(invalid("max_frame", "must be between 4096 and 1073741824"));
        }
        let max_connections = match cfg.max_connections {
            Some(0) => return Err(invalid("max_connections", "must be at least 1")),
            Some(n) => ConnectionCap::Configured(n),
            None => ConnectionCap::Default(DEFAULT_MAX_CONNECTIONS),
        };
        let idle_timeout_secs = cfg.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
        if idle_timeout_secs == 0 {
            return Err(invalid("idle_timeout_secs", "must be at least 1"));
        }
        let request_budget_bytes = cfg
            .request_budget_bytes
            .unwrap_or(DEFAULT_REQUEST_BUDGET_BYTES);
        if request_budget_bytes < max_frame as u64 {
            return Err(invalid(
                "request_budget_bytes",
                format!("must be at least max_frame ({max_frame}): one request of the largest size must fit"),
            ));
        }
        let identity = identity_for(uid, gid, cfg.run_uid, cfg.run_gid);
        if identity.outer_uid == 0 || identity.outer_gid == 0 {
            return Err(invalid("run_uid", "runs must never be root (0)"));
        }
        let pools = pools_from_config(&cfg.pool, &commands)?;
        let warm_jails: u32 = pools.values().map(|p| p.size).sum();
        let run_ids = run_ids_from_config(cfg, max_running, warm_jails, uid, gid)?;
        let cgroup = CgroupSettings::from_config(&cfg.cgroup, mode)?;
        let (apparmor_profile, apparmor_required) = apparmor_from_config(cfg)?;
        // A zygote runs as the broker's own ids (with per-run ids, holding CAP_SETUID
        // and CAP_SETGID for its children to take theirs), so the broker can signal it
        // and its children can write the cgroup v1 files the broker opened for them.
        // So: per-run ids or the broker's own.
        if let Some((command, _)) = pools.iter().find(|(_, p)| p.fork_server) {
            let own = identity.outer_uid == uid && identity.outer_gid == gid;
            if run_ids.is_none() && !own {
                return Err(invalid(
                    format!("pool.{command}.fork_server"),
                    "needs per-run ids (run_ids) or the broker's own uid and gid for the runs (no run_uid or run_gid): a fork server with one other run identity is not built yet",
                ));
            }
        }
        let landlock_min_abi = cfg.landlock_min_abi.unwrap_or(match mode {
            Mode::Confined => 1,
            Mode::Dev => 0,
        });
        let landlock_max_abi = cfg.landlock_max_abi.unwrap_or(NEWEST_LANDLOCK_ABI);
        if !(1..=NEWEST_LANDLOCK_ABI).contains(&landlock_max_abi) {
            return Err(invalid(
                "landlock_max_abi",
                format!("{landlock_max_abi} is not a Landlock ABI from 1 to {NEWEST_LANDLOCK_ABI}"),
            ));
        }
        if landlock_min_abi > NEWEST_LANDLOCK_ABI {
            return Err(invalid(
                "landlock_min_abi",
                format!(
                    "{landlock_min_abi} is newer than the newest Landlock ABI the jail stage \
                     knows ({NEWEST_LANDLOCK_ABI})"
                ),
            ));
        }
        let socket_mode = match &cfg.socket.mode {
            Some(m) => parse_mode("socket.mode", m)?,
            None => 0o660,
        };
        Ok(Settings {
            mode,
            socket_path: cfg
                .socket
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/run/codejail/broker.sock")),
            socket_mode,
            socket_gid: cfg.socket.gid,
            allowed_uids: cfg.allowed_uids.iter().copied().collect(),
            max_running,
            max_queue: cfg.max_queue.unwrap_or(16),
            max_connections,
            idle_timeout: Duration::from_secs(idle_timeout_secs),
            request_budget_bytes,
            max_frame,
            shutdown_grace: Duration::from_secs(cfg.shutdown_grace_secs.unwrap_or(5)),
            jail_stage: cfg.jail_stage.clone().unwrap_or_else(default_jail_stage),
            identity,
            run_ids,
            cgroup,
            tmpfs_mount,
            commands,
            pools,
            limits: LimitPolicy::new(&cfg.limits)?,
            allowed_gids: cfg.allowed_gids.iter().copied().collect(),
            apparmor_profile,
            apparmor_required,
            landlock_min_abi,
            landlock_max_abi,
            socket_activated: false,
        })
    }
}
