//! The config file as operators write it (`/etc/codejail/broker.toml`): serde types,
//! unknown keys refused by name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::PoolConfig;

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
    /// 512 MiB); a request over it is answered busy before its body is read. The
    /// broker's memory for requests stays within it plus `max_frame`.
    pub request_budget_bytes: Option<u64>,
    /// Largest frame accepted, bytes.
    pub max_frame: Option<usize>,
    /// Seconds running runs get on SIGTERM before they are killed.
    pub shutdown_grace_secs: Option<u64>,
    /// Path of the jail stage binary (default: `codejail-jail` next to the broker).
    pub jail_stage: Option<PathBuf>,
    /// Outside uid the runs get (the stage runs as it and maps the run's uid 1000 to it).
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
    /// `[pool.<command>]`: warm jails built ahead for the command.
    #[serde(default)]
    pub pool: BTreeMap<String, PoolConfig>,
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
    /// The oldest Landlock ABI the broker serves with: every run fails, and the
    /// broker refuses to start, on a kernel with less (0: Landlock is not required).
    /// Default 1 (any Landlock: Ubuntu 22.04's 5.15, Debian 12's 6.1) in the confined
    /// mode, 0 in the dev mode. docs/operating.md,
    /// "Kernels: Landlock ABIs and AppArmor", says what each ABI adds.
    pub landlock_min_abi: Option<u32>,
    /// The newest Landlock ABI runs ask for (default: the newest the jail stage knows).
    /// Lower, it applies the rules a kernel of that ABI would: for testing how the
    /// broker behaves on older kernels on a newer one (dev: `--landlock-abi`).
    pub landlock_max_abi: Option<u32>,
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
