//! The broker's status report: its mode, confinement layers, load, commands, warm
//! pools and limit policy, as `codejail-client status` and every `Welcome` carry it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{LimitName, Limits};

/// Production (`Confined`) or development (`Dev`) broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Started from a config file, every required layer present.
    Confined,
    /// Started with `--dev`: confines with what an unprivileged user has.
    Dev,
}

impl Mode {
    /// The name used in `codejail-client status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Confined => "confined",
            Mode::Dev => "dev",
        }
    }
}

/// How completely one confinement layer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerState {
    /// Applied as designed.
    Full,
    /// Applied in part (the detail says what is missing).
    Partial,
    /// Not applied.
    Unavailable,
}

impl LayerState {
    /// The name used in `codejail-client status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerState::Full => "full",
            LayerState::Partial => "partial",
            LayerState::Unavailable => "unavailable",
        }
    }
}

/// One confinement layer in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Achieved state.
    pub state: LayerState,
    /// Whether the broker's policy requires it.
    pub required: bool,
    /// Whether it achieves the least the broker's configuration asks of it: `full`,
    /// except Landlock, whose minimum is an ABI (`landlock_min_abi`) that an older
    /// kernel's `partial` Landlock may meet. A required layer must hold.
    pub holds: bool,
    /// Human-readable detail: what is applied, or what is missing and how to get it.
    pub detail: String,
}

/// The broker's load at the time of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Load {
    /// Runs executing now.
    pub running: u32,
    /// Requests waiting for a slot.
    pub queued: u32,
    /// Configured parallel runs.
    pub max_running: u32,
    /// Configured queue length.
    pub max_queue: u32,
    /// Open connections at most: as configured, or the default.
    pub max_connections: u32,
    /// Whether `max_connections` is the default lowered at start-up to fit the
    /// broker's open-file limit (its log names the numbers).
    pub connections_fitted: bool,
}

/// What `codejail-client status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The broker's crate version.
    pub broker_version: String,
    /// The protocol version the broker speaks.
    pub protocol_version: u32,
    /// Confined or dev.
    pub mode: Mode,
    /// Confinement layers by name.
    pub layers: BTreeMap<String, Layer>,
    /// Current load.
    pub load: Load,
    /// The configured commands by name (`python`, ...): what each one runs.
    pub commands: BTreeMap<String, CommandInfo>,
    /// The warm pool by command (empty when none is configured).
    pub pool: BTreeMap<String, PoolStatus>,
    /// The limits the broker applies: callers that must know a run's limits before
    /// it ends (the HTTP front's deadline) read them here instead of repeating them.
    pub limits: LimitsReport,
}

/// The broker's limit policy in the [`StatusReport`]. A run's limits are the
/// defaults, then its context's overrides (an unknown context has none), then the
/// values of its request, each within its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitsReport {
    /// Every limit's default, by name.
    pub defaults: BTreeMap<String, u64>,
    /// The ceilings a request's values may not exceed, by name.
    pub ceilings: BTreeMap<String, u64>,
    /// The named override contexts: the limits each one overrides.
    pub contexts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl LimitsReport {
    /// The report of a policy given as typed values.
    pub fn new(
        defaults: &Limits,
        ceilings: &BTreeMap<LimitName, u64>,
        contexts: &BTreeMap<String, BTreeMap<LimitName, u64>>,
    ) -> Self {
        let named = |m: &BTreeMap<LimitName, u64>| -> BTreeMap<String, u64> {
            m.iter()
                .map(|(n, v)| (n.as_str().to_string(), *v))
                .collect()
        };
        LimitsReport {
            defaults: defaults
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v))
                .collect(),
            ceilings: named(ceilings),
            contexts: contexts
                .iter()
                .map(|(c, m)| (c.clone(), named(m)))
                .collect(),
        }
    }

    /// The value of `name` for a run in `context` whose request sets no value of its
    /// own: the context's override, else the default (`None` if the broker did not
    /// report it).
    pub fn value(&self, context: Option<&str>, name: LimitName) -> Option<u64> {
        context
            .and_then(|c| self.contexts.get(c))
            .and_then(|o| o.get(name.as_str()))
            .or_else(|| self.defaults.get(name.as_str()))
            .copied()
    }
}

/// One command's warm pool in the [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Warm jails kept ready.
    pub size: u32,
    /// Warm jails ready now.
    pub ready: u32,
    /// Modules a warm jail has imported.
    pub preimport: Vec<String>,
    /// Runs served by a warm jail.
    pub hits: u64,
    /// Runs of this command served cold (pool empty, or a request it cannot serve).
    pub misses: u64,
    /// Resident memory of an idle warm jail's interpreter, KiB (the last one built).
    pub idle_rss_kib: u64,
    /// Memory an idle warm jail's cgroup holds, bytes (`None` without a memory cgroup).
    pub idle_memory_bytes: Option<u64>,
    /// Runs served by a jail forked for the run when none was ready (a pool with a
    /// fork server; counted neither as hits nor as misses).
    pub forked_now: u64,
    /// The pool's fork server; `None` for a pool without one.
    pub fork_server: Option<ForkServerStatus>,
}

/// A pool's fork server in its [`PoolStatus`]: the zygote its jails are forked from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ForkServerStatus {
    /// The running zygote's pid; `None` while none runs (before the pool's first build,
    /// or between a failed one and its replacement).
    pub pid: Option<u32>,
    /// The running zygote's age, milliseconds.
    pub age_ms: u64,
    /// Children the running zygote forked.
    pub forks: u64,
    /// The running zygote's resident memory, KiB: what its children share until they
    /// write to it.
    pub rss_kib: u64,
    /// Zygotes started since the broker started, the running one included.
    pub started: u64,
    /// Children forked by every zygote since the broker started.
    pub forks_total: u64,
}

/// One configured command in the [`StatusReport`]: callers check it against their own
/// idea of the interpreter (the Python package compares `bin` with `configure()`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// The absolute path of the program the command runs, as configured.
    pub bin: String,
    /// Whether the program may exec other programs after its own start.
    pub allow_exec: bool,
}

impl StatusReport {
    /// True when every required layer holds (achieves its configured minimum).
    pub fn required_layers_hold(&self) -> bool {
        self.missing_required().next().is_none()
    }

    /// The required layers that do not hold, by name.
    pub fn missing_required(&self) -> impl Iterator<Item = (&String, &Layer)> {
        self.layers.iter().filter(|(_, l)| l.required && !l.holds)
    }
}
