//! Who runs are, outside their user namespace: one shared identity, or a range of
//! per-run ids.

use super::*;

/// Who the runs are, outside their user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunIdentity {
    /// Outside uid mapped to the run's inner uid.
    pub outer_uid: u32,
    /// Outside gid mapped to the run's inner gid.
    pub outer_gid: u32,
    /// Whether the broker clears the stage's supplementary groups before its exec (it
    /// holds CAP_SETGID); an unprivileged dev broker cannot, and its runs keep its
    /// groups (the run's user namespace denies `setgroups` either way).
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

pub(super) fn run_ids_from_config(
    cfg: &FileConfig,
    max_running: u32,
    warm_jails: u32,
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
    if u64::from(r.count) < u64::from(max_running) + u64::from(warm_jails) {
        return Err(invalid(
            "run_ids.count",
            format!(
                "must be at least max_running ({max_running}) plus the warm pools' sizes ({warm_jails}): each running run and each warm jail holds its own id"
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
