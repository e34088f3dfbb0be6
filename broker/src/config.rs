//! Broker configuration: the TOML file (`--config`) or the `--dev` flags, parsed once
//! into [`Settings`] and validated at start-up (STYLE.md §8). A bad config fails start-up
//! with the key and the reason.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use codejail_protocol::{LimitName, Limits, Mode, DEFAULT_MAX_FRAME};
use serde::Deserialize;

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

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The config file, as written by operators (`/etc/codejail/broker.toml`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The listening socket.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Peer uids allowed to submit runs.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Parallel runs.
    pub max_running: Option<u32>,
    /// Requests that may wait for a slot.
    pub max_queue: Option<u32>,
    /// Open connections at most (default 1024); at the cap the one idle the longest
    /// is closed.
    pub max_connections: Option<u32>,
    /// Seconds a connection may stay idle between requests (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Bytes of requests held in memory at once, all connections together (default
    /// 512 MiB); a request over it is answered busy before its body is read.
    pub request_budget_bytes: Option<u64>,
    /// Largest frame accepted, bytes.
    pub max_frame: Option<usize>,
    /// Seconds running runs get on SIGTERM before they are killed.
    pub shutdown_grace_secs: Option<u64>,
    /// Path of the jail stage binary (default: `codejail-jail` next to the broker).
    pub jail_stage: Option<PathBuf>,
    /// Outside uid/gid the runs get (the broker writes it into each run's id map).
    pub run_uid: Option<u32>,
    /// Outside gid the runs get.
    pub run_gid: Option<u32>,
    /// Host directory over which each run mounts its private workspace tmpfs.
    pub tmpfs_mount: Option<PathBuf>,
    /// Commands by name (`python` first), as upstream's `configure(command, bin_path)`.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandConfig>,
    /// Limit defaults, ceilings and named contexts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[cgroup]`: where each run's cgroup is made.
    #[serde(default)]
    pub cgroup: CgroupConfig,
    /// `run_ids = { first = 200000, count = 64 }`: a distinct outside uid/gid per
    /// concurrent run (production; the broker needs CAP_SETUID and CAP_SETGID).
    pub run_ids: Option<RunIdsConfig>,
    /// Peer gids allowed to submit runs: a peer whose primary or any supplementary
    /// group (`SO_PEERGROUPS`) is listed is allowed, as is one listed in `allowed_uids`.
    #[serde(default)]
    pub allowed_gids: Vec<u32>,
    /// The AppArmor profile each program is stacked on at exec (`"codejail-sandbox"`,
    /// from `apparmor/`); applied only where the kernel has AppArmor.
    pub apparmor_profile: Option<String>,
    /// Refuse to start unless the AppArmor layer holds (default false: AppArmor is an
    /// extra layer, absent on some kernels).
    pub apparmor_required: Option<bool>,
}

/// `[cgroup]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CgroupConfig {
    /// `"auto"` (default: v2 if delegated, else v1), `"v2"`, `"v1"` or `"none"`.
    pub mode: Option<CgroupMode>,
    /// The delegated v2 cgroup whose children are the run cgroups (default: the
    /// broker's own cgroup, from `/proc/self/cgroup`, under the cgroup2 mount).
    pub v2_root: Option<PathBuf>,
    /// The v1 memory cgroup whose children are the run cgroups (default
    /// `/sys/fs/cgroup/memory/codejail`; created and chowned to the broker by the
    /// operator).
    pub v1_memory: Option<PathBuf>,
    /// The v1 pids cgroup whose children are the run cgroups (default
    /// `/sys/fs/cgroup/pids/codejail`).
    pub v1_pids: Option<PathBuf>,
    /// Whether the broker refuses to start without the memory and pids controllers
    /// (default: true with a config file, false in `--dev`).
    pub required: Option<bool>,
    /// `pids.max` of a run whose NPROC is 0 (no rlimit), so that a fork bomb is still
    /// bounded (default 256).
    pub unlimited_pids: Option<u64>,
}

/// `cgroup.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// v2 if the broker's cgroup is delegated with memory or pids, else v1.
    #[default]
    Auto,
    /// Only a delegated v2 subtree.
    V2,
    /// Only the v1 memory and pids hierarchies.
    V1,
    /// No cgroups (then `required` must be false).
    None,
}

/// `run_ids`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunIdsConfig {
    /// First uid (and gid) of the range.
    pub first: u32,
    /// How many ids; at least `max_running`.
    pub count: u32,
}

/// `[socket]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Socket path (default `/run/codejail/broker.sock`).
    pub path: Option<PathBuf>,
    /// Octal mode string, e.g. `"0660"`.
    pub mode: Option<String>,
    /// Numeric gid to own the socket (the callers' group).
    pub gid: Option<u32>,
}

/// `[commands.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Absolute path of the interpreter, e.g. `<SANDENV>/bin/python`.
    pub bin: PathBuf,
    /// Arguments before the program (python default: `["-E", "-B"]`).
    pub args: Option<Vec<String>>,
    /// Extra environment for the program (python default: thread caps, a UTF-8 locale,
    /// `MPLCONFIGDIR`). A value `$TMPDIR` or `$TMPDIR/...` names the run's tmp/.
    pub env: Option<BTreeMap<String, String>>,
    /// Extra host directories the program may read (e.g. sandbox packages); the
    /// interpreter's own environment is always included.
    pub ro_paths: Option<Vec<PathBuf>>,
    /// Let the program's processes exec other programs after its start (default
    /// false: every later `execve` fails with `EACCES`, as under upstream's AppArmor
    /// profile). For graders that legitimately spawn.
    pub allow_exec: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Defaults by limit name.
    #[serde(default)]
    pub defaults: BTreeMap<String, u64>,
    /// Ceilings a request may not exceed.
    #[serde(default)]
    pub ceilings: BTreeMap<String, u64>,
    /// Named override contexts (`[limits.contexts."course-v1:..."]`).
    #[serde(default)]
    pub contexts: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A resolved command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Absolute interpreter path.
    pub bin: PathBuf,
    /// Arguments before the program.
    pub args: Vec<String>,
    /// Environment besides TMPDIR.
    pub env: Vec<(String, String)>,
    /// Host directories exposed read-only in the run's view (besides /usr, /lib*).
    pub ro_paths: Vec<PathBuf>,
    /// Whether the program may exec after its own start.
    pub allow_exec: bool,
}

impl CommandSpec {
    /// Upstream's python command: `-E -B`, and numeric libraries held to one thread so
    /// they do not exhaust NPROC (COMPAT.md: real deployments set OPENBLAS_NUM_THREADS=1).
    pub fn python(bin: PathBuf) -> Self {
        CommandSpec {
            ro_paths: interpreter_dirs(&bin),
            bin,
            args: vec!["-E".into(), "-B".into()],
            env: python_env(),
            allow_exec: false,
        }
    }
}

/// The directories an interpreter needs besides the system's: its prefix (`<SANDENV>`
/// for `<SANDENV>/bin/python`), and the prefix of what it resolves to when it is a
/// symlink (a venv made without `--copies`).
pub fn interpreter_dirs(bin: &Path) -> Vec<PathBuf> {
    let prefix = |p: &Path| p.parent().and_then(Path::parent).map(Path::to_path_buf);
    let mut dirs: Vec<PathBuf> = prefix(bin).into_iter().collect();
    if let Some(real) = std::fs::canonicalize(bin).ok().as_deref().and_then(prefix) {
        if !dirs.contains(&real) {
            dirs.push(real);
        }
    }
    dirs
}

fn python_env() -> Vec<(String, String)> {
    [
        ("OPENBLAS_NUM_THREADS", "1"),
        ("OMP_NUM_THREADS", "1"),
        ("MKL_NUM_THREADS", "1"),
        ("LC_ALL", "C.UTF-8"),
        // matplotlib's config and font cache in the run's own tmp/: without it,
        // matplotlib makes a temporary one there anyway and warns on stderr.
        ("MPLCONFIGDIR", "$TMPDIR"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Refuse commands whose interpreter or read-only paths the jail cannot show: inside
/// each jail `/tmp` is the run's private workspace, and on the host the run's root is
/// built over `tmpfs_mount`, which hides what lies below it in the run's mount
/// namespace. Either would make every run fail at `execve` ("Permission denied");
/// saying so at start-up names the cause and the fix instead.
fn check_ro_paths_visible(
    commands: &BTreeMap<String, CommandSpec>,
    tmpfs_mount: &Path,
) -> Result<(), ConfigError> {
    for (name, spec) in commands {
        let hidden = std::iter::once(&spec.bin)
            .chain(&spec.ro_paths)
            .find(|p| p.starts_with("/tmp") || p.starts_with(tmpfs_mount));
        if let Some(p) = hidden {
            return Err(invalid(
                format!("commands.{name}"),
                format!(
                    "{} is under /tmp or tmpfs_mount ({}): inside the jail /tmp is the run's \
                     private workspace and the host's view below tmpfs_mount is hidden, so \
                     the program could not be run; put the interpreter's environment \
                     elsewhere (e.g. /var/tmp or /opt) or set tmpfs_mount to another directory",
                    p.display(),
                    tmpfs_mount.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Why a request's limits were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Unknown name.
    #[error(transparent)]
    Unknown(#[from] codejail_protocol::limits::UnknownLimit),
    /// Not a possible value of the limit (e.g. NOFILE=0).
    #[error("{0}")]
    OutOfRange(String),
    /// Above the ceiling.
    #[error("limit {name}={value} is above its ceiling of {ceiling}{zero}", zero = if *.value == 0 { " (0 would mean unlimited)" } else { "" })]
    AboveCeiling {
        /// The limit.
        name: LimitName,
        /// The value asked for.
        value: u64,
        /// The configured ceiling.
        ceiling: u64,
    },
}

/// Defaults, ceilings and contexts, validated (ARCHITECTURE §7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitPolicy {
    /// Config defaults over upstream's.
    pub defaults: Limits,
    /// Ceilings by limit.
    pub ceilings: BTreeMap<LimitName, u64>,
    /// Named contexts: overrides by limit.
    pub contexts: BTreeMap<String, BTreeMap<LimitName, u64>>,
}

impl LimitPolicy {
    /// Build and validate: names known, defaults and contexts within the ceilings.
    pub fn new(cfg: &LimitsConfig) -> Result<Self, ConfigError> {
        let mut policy = LimitPolicy::default();
        for (k, v) in &cfg.ceilings {
            let name: LimitName = k
                .parse()
                .map_err(|e| invalid(format!("limits.ceilings.{k}"), format!("{e}")))?;
            policy.ceilings.insert(name, *v);
        }
        for (k, v) in &cfg.defaults {
            let name: LimitName = k
                .parse()
                .map_err(|e| invalid(format!("limits.defaults.{k}"), format!("{e}")))?;
            policy.defaults.set(name, *v);
        }
        for (name, value) in policy.defaults.iter() {
            policy
                .check_ceiling(name, value)
                .map_err(|e| invalid(format!("limits.defaults.{name}"), e.to_string()))?;
        }
        for (ctx, values) in &cfg.contexts {
            let mut overrides = BTreeMap::new();
            for (k, v) in values {
                let key = format!("limits.contexts.{ctx:?}.{k}");
                let name: LimitName = k.parse().map_err(|e| invalid(&key, format!("{e}")))?;
                policy
                    .check_ceiling(name, *v)
                    .map_err(|e| invalid(&key, e.to_string()))?;
                overrides.insert(name, *v);
            }
            policy.contexts.insert(ctx.clone(), overrides);
        }
        Ok(policy)
    }

    /// `value` is possible for `name` and within its ceiling.
    fn check_ceiling(&self, name: LimitName, value: u64) -> Result<(), LimitError> {
        name.check_value(value).map_err(LimitError::OutOfRange)?;
        let Some(&ceiling) = self.ceilings.get(&name) else {
            return Ok(());
        };
        let unlimited = value == 0 && name.zero_disables();
        if unlimited || value > ceiling {
            return Err(LimitError::AboveCeiling {
                name,
                value,
                ceiling,
            });
        }
        Ok(())
    }

    /// Effective limits: defaults, then the named context (unknown = no overrides, as
    /// upstream: the LMS passes every course id), then the request's values.
    pub fn resolve(
        &self,
        context: Option<&str>,
        request: &BTreeMap<String, u64>,
    ) -> Result<Limits, LimitError> {
        let mut limits = self.defaults;
        if let Some(overrides) = context.and_then(|c| self.contexts.get(c)) {
            for (name, value) in overrides {
                limits.set(*name, *value);
            }
        }
        for (k, v) in request {
            let name: LimitName = k.parse()?;
            self.check_ceiling(name, *v)?;
            limits.set(name, *v);
        }
        Ok(limits)
    }
}

/// Who the runs are, outside their user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunIdentity {
    /// Outside uid mapped to the run's inner uid.
    pub outer_uid: u32,
    /// Outside gid mapped to the run's inner gid.
    pub outer_gid: u32,
    /// Whether the broker may allow `setgroups` (it holds CAP_SETGID), so the stage
    /// clears the supplementary groups.
    pub clear_groups: bool,
}

/// A range of outside ids, one per concurrent run: uids `first..first+count`, and the
/// gids with the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl IdRange {
    /// The last id of the range.
    pub fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }

    /// Whether `id` is in the range.
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last()).contains(&id)
    }

    /// Whether `[start, start+len)` overlaps the range.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        len > 0 && start <= u64::from(self.last()) && u64::from(self.first) < start + len
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last())
    }
}

/// The cgroup settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSettings {
    /// Which hierarchy to use.
    pub mode: CgroupMode,
    /// Explicit v2 root, or `None` for the broker's own cgroup.
    pub v2_root: Option<PathBuf>,
    /// The v1 memory parent.
    pub v1_memory: PathBuf,
    /// The v1 pids parent.
    pub v1_pids: PathBuf,
    /// Refuse to start without memory and pids.
    pub required: bool,
    /// pids.max when NPROC is 0.
    pub unlimited_pids: u64,
}

/// Default `cgroup.v1_memory`.
pub const DEFAULT_V1_MEMORY: &str = "/sys/fs/cgroup/memory/codejail";
/// Default `cgroup.v1_pids`.
pub const DEFAULT_V1_PIDS: &str = "/sys/fs/cgroup/pids/codejail";
/// Default `cgroup.unlimited_pids`.
pub const DEFAULT_UNLIMITED_PIDS: u64 = 256;

impl CgroupSettings {
    fn from_config(cfg: &CgroupConfig, mode: Mode) -> Result<Self, ConfigError> {
        let cg_mode = cfg.mode.unwrap_or_default();
        // Production defaults require memory+pids (ARCHITECTURE §5); dev is best effort.
        // Turning cgroups off in production takes an explicit `required = false` too.
        let required = cfg.required.unwrap_or(mode == Mode::Confined);
        if required && cg_mode == CgroupMode::None {
            return Err(invalid(
                "cgroup.required",
                "cannot be true with cgroup.mode = \"none\"",
            ));
        }
        for (key, path) in [
            ("cgroup.v2_root", cfg.v2_root.as_ref()),
            ("cgroup.v1_memory", cfg.v1_memory.as_ref()),
            ("cgroup.v1_pids", cfg.v1_pids.as_ref()),
        ] {
            if path.is_some_and(|p| !p.is_absolute()) {
                return Err(invalid(key, "must be an absolute path"));
            }
        }
        let unlimited_pids = cfg.unlimited_pids.unwrap_or(DEFAULT_UNLIMITED_PIDS);
        if !(8..=1 << 22).contains(&unlimited_pids) {
            return Err(invalid(
                "cgroup.unlimited_pids",
                "must be between 8 and 4194304",
            ));
        }
        Ok(CgroupSettings {
            mode: cg_mode,
            v2_root: cfg.v2_root.clone(),
            v1_memory: cfg
                .v1_memory
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_V1_MEMORY)),
            v1_pids: cfg
                .v1_pids
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_V1_PIDS)),
            required,
            unlimited_pids,
        })
    }
}

fn run_ids_from_config(
    cfg: &FileConfig,
    max_running: u32,
    own_uid: u32,
    own_gid: u32,
) -> Result<Option<IdRange>, ConfigError> {
    let Some(r) = cfg.run_ids else {
        return Ok(None);
    };
    if cfg.run_uid.is_some() || cfg.run_gid.is_some() {
        return Err(invalid(
            "run_ids",
            "cannot be combined with run_uid/run_gid (one shared identity or one per run)",
        ));
    }
    if r.first == 0 {
        return Err(invalid(
            "run_ids.first",
            "must not be 0: runs are never root",
        ));
    }
    if r.count == 0 {
        return Err(invalid("run_ids.count", "must be at least 1"));
    }
    // (uid_t)-1 is "no id" to the kernel (setresuid, chown) and 65534 is overflowid.
    if u64::from(r.first) + u64::from(r.count) > u64::from(u32::MAX) {
        return Err(invalid(
            "run_ids.count",
            "the range must end below 4294967295",
        ));
    }
    let range = IdRange {
        first: r.first,
        count: r.count,
    };
    if r.count < max_running {
        return Err(invalid(
            "run_ids.count",
            format!(
                "must be at least max_running ({max_running}): each running run needs its own id"
            ),
        ));
    }
    if range.contains(own_uid) || range.contains(own_gid) {
        return Err(invalid(
            "run_ids",
            format!("the range {range} holds the broker's own uid/gid ({own_uid}/{own_gid})"),
        ));
    }
    if range.contains(DEV_ROOT_RUN_ID) {
        return Err(invalid(
            "run_ids",
            format!("the range {range} holds 65534 (nobody, the kernel's overflow id)"),
        ));
    }
    Ok(Some(range))
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
    /// Connection cap.
    pub max_connections: u32,
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
    /// Limits.
    pub limits: LimitPolicy,
    /// Peer gids allowed (primary or supplementary).
    pub allowed_gids: HashSet<u32>,
    /// The AppArmor profile programs stack on, as configured (see
    /// [`crate::apparmor::profile_for_runs`] for where it applies).
    pub apparmor_profile: Option<String>,
    /// Whether the `apparmor` layer is required.
    pub apparmor_required: bool,
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
        // Writing a map other than our own ids, and allowing setgroups, needs
        // CAP_SETUID/CAP_SETGID (user_namespaces(7)); root has them.
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
        let max_connections = cfg.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
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
        let run_ids = run_ids_from_config(cfg, max_running, uid, gid)?;
        let cgroup = CgroupSettings::from_config(&cfg.cgroup, mode)?;
        let (apparmor_profile, apparmor_required) = apparmor_from_config(cfg)?;
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
            limits: LimitPolicy::new(&cfg.limits)?,
            allowed_gids: cfg.allowed_gids.iter().copied().collect(),
            apparmor_profile,
            apparmor_required,
            socket_activated: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Settings, ConfigError> {
        let cfg: FileConfig = toml::from_str(s).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Settings::from_config(&cfg, Mode::Confined)
    }

    const PY: &str = "[commands.python]\nbin = \"/usr/bin/python3\"\n";

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{PY}bogus_key = 1\n")).expect_err("unknown key");
        assert!(err.to_string().contains("bogus_key"), "{err}");
        let err = parse(&format!("{PY}[limits.defaults]\nCPUS = 1\n")).expect_err("unknown limit");
        assert!(err.to_string().contains("limits.defaults.CPUS"), "{err}");
    }

    #[test]
    fn defaults_above_ceiling_fail_start_up() {
        let err = parse(&format!(
            "{PY}[limits.ceilings]\nCPU = 3\n[limits.defaults]\nCPU = 5\n"
        ))
        .expect_err("above");
        assert!(err.to_string().contains("limits.defaults.CPU"), "{err}");
        // VMEM default 0 = unlimited, which a VMEM ceiling forbids.
        let err = parse(&format!("{PY}[limits.ceilings]\nVMEM = 1000\n")).expect_err("unlimited");
        assert!(err.to_string().contains("VMEM"), "{err}");
        let err = parse(&format!(
            "{PY}[limits.ceilings]\nNPROC = 20\n[limits.contexts.c1]\nNPROC = 30\n"
        ))
        .expect_err("context above");
        assert!(err.to_string().contains("NPROC"), "{err}");
    }

    #[test]
    fn resolve_layers_defaults_context_request() {
        let s = parse(&format!(
            "{PY}[limits.defaults]\nCPU = 2\n[limits.ceilings]\nCPU = 10\n[limits.contexts.\"course-v1:X\"]\nCPU = 5\nREALTIME = 7\n"
        ))
        .expect("valid");
        let none = BTreeMap::new();
        let l = s.limits.resolve(None, &none).expect("ok");
        assert_eq!(l.get(LimitName::Cpu), 2);
        let l = s.limits.resolve(Some("course-v1:X"), &none).expect("ok");
        assert_eq!((l.get(LimitName::Cpu), l.get(LimitName::Realtime)), (5, 7));
        let l = s.limits.resolve(Some("unknown course"), &none).expect("ok");
        assert_eq!(l.get(LimitName::Cpu), 2, "unknown context = no overrides");
        let req = [("CPU".to_string(), 3u64)].into_iter().collect();
        let l = s.limits.resolve(Some("course-v1:X"), &req).expect("ok");
        assert_eq!(l.get(LimitName::Cpu), 3, "request wins");
        let req = [("CPU".to_string(), 11u64)].into_iter().collect();
        let err = s.limits.resolve(None, &req).expect_err("above ceiling");
        assert!(err.to_string().contains("CPU=11"), "{err}");
        let req = [("CPU".to_string(), 0u64)].into_iter().collect();
        assert!(
            s.limits.resolve(None, &req).is_err(),
            "0 = unlimited is above a ceiling"
        );
        let req = [("NOPE".to_string(), 1u64)].into_iter().collect();
        assert!(s.limits.resolve(None, &req).is_err());
    }

    #[test]
    fn root_never_runs_programs_as_root() {
        let id = identity_for(0, 0, None, None);
        assert_eq!(
            (id.outer_uid, id.outer_gid),
            (DEV_ROOT_RUN_ID, DEV_ROOT_RUN_ID)
        );
        assert!(id.clear_groups);
        let id = identity_for(4242, 4242, None, None);
        assert_eq!((id.outer_uid, id.clear_groups), (4242, false));
        assert!(parse(&format!("{PY}run_uid = 0\n")).is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse(&format!("{PY}[socket]\nmode = \"999\"\n")).expect_err("mode");
        assert!(err.to_string().contains("socket.mode"), "{err}");
        let err = parse("[commands.python]\nbin = \"python3\"\n").expect_err("relative");
        assert!(err.to_string().contains("commands.python.bin"), "{err}");
        let err = parse(&format!("{PY}max_running = 0\n")).expect_err("zero");
        assert!(err.to_string().contains("max_running"), "{err}");
    }

    #[test]
    fn cgroup_and_run_ids_errors_name_their_key() {
        let err = parse(&format!("{PY}[cgroup]\nmode = \"v3\"\n")).expect_err("mode");
        assert!(
            err.to_string().contains("v3") && err.to_string().contains("mode"),
            "{err}"
        );
        let err = parse(&format!("{PY}[cgroup]\nbogus = 1\n")).expect_err("unknown");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err =
            parse(&format!("{PY}[cgroup]\nmode = \"none\"\n")).expect_err("required by default");
        assert!(err.to_string().contains("cgroup.required"), "{err}");
        parse(&format!(
            "{PY}[cgroup]\nmode = \"none\"\nrequired = false\n"
        ))
        .expect("explicitly not required");
        let err = parse(&format!("{PY}[cgroup]\nv1_memory = \"memory/codejail\"\n"))
            .expect_err("relative");
        assert!(err.to_string().contains("cgroup.v1_memory"), "{err}");
        let err = parse(&format!("{PY}[cgroup]\nunlimited_pids = 2\n")).expect_err("too few");
        assert!(err.to_string().contains("cgroup.unlimited_pids"), "{err}");

        let err = parse(&format!(
            "max_running = 8\nrun_ids = {{ first = 300000, count = 4 }}\n{PY}"
        ))
        .expect_err("count < max_running");
        assert!(
            err.to_string().contains("run_ids.count")
                && err.to_string().contains("max_running (8)"),
            "{err}"
        );
        let err = parse(&format!("run_ids = {{ first = 0, count = 4 }}\n{PY}")).expect_err("root");
        assert!(err.to_string().contains("run_ids.first"), "{err}");
        let err = parse(&format!(
            "run_ids = {{ first = 4294967290, count = 10 }}\n{PY}"
        ))
        .expect_err("overflow");
        assert!(err.to_string().contains("run_ids.count"), "{err}");
        let err = parse(&format!(
            "run_ids = {{ first = 65000, count = 1000 }}\n{PY}"
        ))
        .expect_err("nobody");
        assert!(err.to_string().contains("65534"), "{err}");
        let err = parse(&format!(
            "run_uid = 5000\nrun_ids = {{ first = 300000, count = 4 }}\n{PY}"
        ))
        .expect_err("both");
        assert!(err.to_string().contains("run_ids"), "{err}");
        let err = parse(&format!("run_ids = {{ first = 300000, cnt = 4 }}\n{PY}"))
            .expect_err("unknown key");
        assert!(err.to_string().contains("cnt"), "{err}");
        let s = parse(&format!("run_ids = {{ first = 300000, count = 64 }}\n{PY}")).expect("valid");
        let r = s.run_ids.expect("range");
        assert_eq!(
            (r.first, r.last(), r.to_string()),
            (300000, 300063, "300000-300063".to_string())
        );
        assert!(r.overlaps(300063, 1) && !r.overlaps(300064, 5) && !r.overlaps(0, 300000));
        assert!(s.cgroup.required, "production requires cgroups by default");
        assert_eq!(s.cgroup.mode, CgroupMode::Auto);
    }

    #[test]
    fn memory_is_a_limit_with_a_default() {
        let s = parse(PY).expect("valid");
        assert_eq!(s.limits.defaults.get(LimitName::Memory), 512 << 20);
        let s = parse(&format!("{PY}[limits.defaults]\nMEMORY = 0\n"))
            .expect("0 = no cgroup memory cap");
        assert_eq!(s.limits.defaults.effective(LimitName::Memory), None);
    }
}
