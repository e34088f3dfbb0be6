//! Where run cgroups go (v2 delegated, v1 parents, or none), and whether they are
//! required.

use std::path::PathBuf;

use codejail_protocol::Mode;

use super::*;

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
    pub(super) fn from_config(cfg: &CgroupConfig, mode: Mode) -> Result<Self, ConfigError> {
        let cg_mode = cfg.mode.unwrap_or_default();
        // Production defaults require memory+pids (docs/architecture.md §6); dev is best effort.
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
