//! Limit names, units and upstream defaults (docs/contracts.md lists them). Names are
//! upstream's uppercase names plus the project's own (`OUTPUT`, `TMP`, `MEMORY`,
//! `NOFILE`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A known limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LimitName {
    /// CPU seconds: RLIMIT_CPU soft n, hard n+1 (status -SIGXCPU).
    Cpu,
    /// Wall-clock seconds; the whole run is killed (status -SIGKILL).
    Realtime,
    /// Address space bytes (RLIMIT_AS).
    Vmem,
    /// Largest file the program may write, bytes (RLIMIT_FSIZE); 0 = none at all.
    Fsize,
    /// Processes and threads of the run (RLIMIT_NPROC, counted per run).
    Nproc,
    /// Total bytes of stdout plus stderr kept; the rest is discarded.
    Output,
    /// Total bytes of the run's temporary space (the workspace tmpfs).
    Tmp,
    /// Memory of the whole run, bytes: the run's cgroup memory cap (v2 `memory.max`
    /// with no swap, v1 `memory.limit_in_bytes`), charged for every process of the
    /// run together and for its tmpfs pages. Exceeding it gets the run OOM-killed
    /// (status -SIGKILL, limit_hit `MEMORY`). Only enforced where the broker has the
    /// memory cgroup controller (the `cgroups` layer of its report).
    Memory,
    /// Open files of each process of the run: `RLIMIT_NOFILE`, soft = hard, so the
    /// program cannot raise it. Never "unlimited" and never the broker's own: 0 is
    /// refused, as is anything below [`NOFILE_MIN`].
    Nofile,
}

/// The smallest `NOFILE` accepted: stdio and the few descriptors an interpreter opens
/// to start (its binary, libraries, `jailed_code`).
pub const NOFILE_MIN: u64 = 16;

impl LimitName {
    /// Every limit, in display order.
    pub const ALL: [LimitName; 9] = [
        LimitName::Cpu,
        LimitName::Realtime,
        LimitName::Vmem,
        LimitName::Fsize,
        LimitName::Nproc,
        LimitName::Output,
        LimitName::Tmp,
        LimitName::Memory,
        LimitName::Nofile,
    ];

    /// The upstream-style uppercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::Cpu => "CPU",
            LimitName::Realtime => "REALTIME",
            LimitName::Vmem => "VMEM",
            LimitName::Fsize => "FSIZE",
            LimitName::Nproc => "NPROC",
            LimitName::Output => "OUTPUT",
            LimitName::Tmp => "TMP",
            LimitName::Memory => "MEMORY",
            LimitName::Nofile => "NOFILE",
        }
    }

    /// The default value: upstream's for upstream's limits.
    pub fn default_value(self) -> u64 {
        match self {
            LimitName::Cpu => 1,
            LimitName::Realtime => 1,
            LimitName::Vmem => 0,
            LimitName::Fsize => 0,
            LimitName::Nproc => 15,
            LimitName::Output => 16 * 1024 * 1024,
            LimitName::Tmp => 64 * 1024 * 1024,
            // 512 MiB: CPython with numpy/scipy imported is 100-150 MiB resident, the
            // workspace tmpfs (TMP, 64 MiB by default) is charged to the same cgroup,
            // and a few helper processes fit besides; four runs at once (the default
            // max_running) still stay within 2 GiB of host memory.
            LimitName::Memory => 512 * 1024 * 1024,
            // The soft limit programs are usually written against (select(2)'s
            // FD_SETSIZE); Python with numpy and matplotlib opens a few dozen. Without
            // it a run would inherit the broker's limit, whose hard value under
            // systemd is 524288, and could pin that many open files.
            LimitName::Nofile => codejail_plan::DEFAULT_NOFILE,
        }
    }

    /// Why `value` is not a possible value of this limit, if it is not (only NOFILE
    /// has a range: 0 would mean "unlimited", and too few fds cannot start anything).
    pub fn check_value(self, value: u64) -> Result<(), String> {
        match self {
            LimitName::Nofile if value < NOFILE_MIN => Err(format!(
                "limit NOFILE={value} is below its minimum of {NOFILE_MIN} (open files are \
                 always capped: 0 does not mean unlimited)"
            )),
            _ => Ok(()),
        }
    }

    /// Whether 0 means "no limit" (true for all but FSIZE, where 0 means nothing
    /// may be written, as upstream, and NOFILE, where 0 is refused).
    pub fn zero_disables(self) -> bool {
        !matches!(self, LimitName::Fsize | LimitName::Nofile)
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit name that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLimit(pub String);

impl fmt::Display for UnknownLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown limit {:?} (known: ", self.0)?;
        for (i, name) in LimitName::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name.as_str())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownLimit {}

impl FromStr for LimitName {
    type Err = UnknownLimit;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LimitName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| UnknownLimit(s.to_string()))
    }
}

/// One value per limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    values: [u64; LimitName::ALL.len()],
}

impl Default for Limits {
    fn default() -> Self {
        let mut values = [0; LimitName::ALL.len()];
        for (i, n) in LimitName::ALL.into_iter().enumerate() {
            values[i] = n.default_value();
        }
        Limits { values }
    }
}

impl Limits {
    fn index(name: LimitName) -> usize {
        LimitName::ALL
            .iter()
            .position(|n| *n == name)
            .unwrap_or_default()
    }

    /// The value of one limit.
    pub fn get(&self, name: LimitName) -> u64 {
        self.values[Self::index(name)]
    }

    /// Set one limit.
    pub fn set(&mut self, name: LimitName, value: u64) {
        self.values[Self::index(name)] = value;
    }

    /// `Some(value)` when the limit is in force, `None` when 0 disables it.
    pub fn effective(&self, name: LimitName) -> Option<u64> {
        let v = self.get(name);
        if v == 0 && name.zero_disables() {
            None
        } else {
            Some(v)
        }
    }

    /// Overlay a map of named values, rejecting unknown names.
    pub fn overlay(&mut self, values: &BTreeMap<String, u64>) -> Result<(), UnknownLimit> {
        for (k, v) in values {
            self.set(k.parse()?, *v);
        }
        Ok(())
    }

    /// Every limit with its value.
    pub fn iter(&self) -> impl Iterator<Item = (LimitName, u64)> + '_ {
        LimitName::ALL.into_iter().map(|n| (n, self.get(n)))
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (n, v) in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let l = Limits::default();
        assert_eq!(l.get(LimitName::Cpu), 1);
        assert_eq!(l.get(LimitName::Realtime), 1);
        assert_eq!(l.get(LimitName::Vmem), 0);
        assert_eq!(l.get(LimitName::Fsize), 0);
        assert_eq!(l.get(LimitName::Nproc), 15);
        assert_eq!(l.get(LimitName::Memory), 512 << 20);
        assert_eq!(l.effective(LimitName::Memory), Some(512 << 20));
        assert_eq!(l.effective(LimitName::Vmem), None, "VMEM 0 disables");
        assert_eq!(
            l.effective(LimitName::Fsize),
            Some(0),
            "FSIZE 0 means no writes"
        );
    }

    #[test]
    fn names_parse_and_unknown_is_named() {
        for n in LimitName::ALL {
            assert_eq!(n.as_str().parse::<LimitName>(), Ok(n));
        }
        let err = "cpu"
            .parse::<LimitName>()
            .expect_err("lowercase is unknown");
        assert!(err.to_string().contains("\"cpu\""), "{err}");
    }

    #[test]
    fn overlay_sets_and_rejects() {
        let mut l = Limits::default();
        let ok = [("VMEM".to_string(), 5u64)].into_iter().collect();
        l.overlay(&ok).expect("known");
        assert_eq!(l.get(LimitName::Vmem), 5);
        let bad = [("BOGUS".to_string(), 1u64)].into_iter().collect();
        assert_eq!(l.overlay(&bad), Err(UnknownLimit("BOGUS".into())));
    }
}
