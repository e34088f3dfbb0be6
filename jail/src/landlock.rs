//! Landlock: unprivileged access control on paths, TCP ports and IPC scopes, applied by
//! the program (PID 2) after `pivot_root` and before seccomp. Paths without a rule get
//! `EACCES`, which is exactly what upstream's tests expect for `/etc/passwd`, writing
//! the cwd, following a symlink out, and listing `/`, `..`, `/tmp`. The rules for the
//! run's view are `rules_for`'s.
//!
//! Best effort on the ABI (the crate drops what the kernel lacks), but the achieved
//! status is returned and reported, never assumed (rust-landlock's `sandboxer.rs`).

use std::path::{Path, PathBuf};

use codejail_plan::layout::TMP_DIR;
use codejail_plan::Plan;

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::view::{DEVICES, ETC_FILES, EXEC_ENTRIES};

/// The newest ABI this code was written and tested against (kernel 6.15+: TCP, scopes);
/// `codejail_plan::NEWEST_LANDLOCK_ABI` says the same to the broker.
const TESTED_ABI: ABI = ABI::V7;

/// The paths the program may use, after `pivot_root`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Read and execute: the interpreter and the system libraries.
    pub read_exec: Vec<PathBuf>,
    /// Read only: the run's directory (the code and copied files), random devices.
    pub read: Vec<PathBuf>,
    /// Read and write existing files only: /dev/null.
    pub read_write_files: Vec<PathBuf>,
    /// Everything: the run's tmp directory.
    pub full: Vec<PathBuf>,
}

/// The rules for the run's view as `rootfs` builds it from the same lists (`view`) (paths as the program sees
/// them, after `pivot_root`): read and execute the system entries and the plan's
/// read-only paths; read the run's directory `workdir`, the `/etc` files and the
/// random devices; read and write `/dev/null`; everything in the run's `tmp/`.
pub(crate) fn rules_for(plan: &Plan, workdir: &str) -> Rules {
    let mut read_exec: Vec<PathBuf> = EXEC_ENTRIES
        .iter()
        .map(|e| Path::new("/").join(e))
        .collect();
    read_exec.extend(plan.ro_paths.iter().map(PathBuf::from));
    let mut read = vec![PathBuf::from(workdir)];
    read.extend(ETC_FILES.iter().map(|f| Path::new("/etc").join(f)));
    read.extend(
        DEVICES
            .iter()
            .filter(|d| **d != "null")
            .map(|d| Path::new("/dev").join(d)),
    );
    Rules {
        read_exec,
        read,
        read_write_files: vec![PathBuf::from("/dev/null")],
        full: vec![Path::new(workdir).join(TMP_DIR)],
    }
}

pub use codejail_plan::Achieved;

/// Landlock could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("landlock: {0}")]
pub struct LandlockError(String);

fn err(e: impl std::fmt::Display) -> LandlockError {
    LandlockError(e.to_string())
}

/// Whether two ABIs give the same access rights (ABI 7 only adds logging flags).
fn same_rights(a: ABI, b: ABI) -> bool {
    AccessFs::from_all(a) == AccessFs::from_all(b)
        && AccessNet::from_all(a) == AccessNet::from_all(b)
        && Scope::from_all(a) == Scope::from_all(b)
}

/// Restrict the calling thread (and what it execs) to `rules`, asking for the rights
/// of at most ABI `max_abi` (the newest this code knows, or less to apply what an
/// older kernel would). TCP bind/connect are handled with no rule (so denied), and
/// the abstract-unix-socket and signal scopes keep the program from reaching sockets
/// or processes outside its own domain. The result is `Full` when the kernel enforces
/// every right of `TESTED_ABI`, with the ABI that was applied.
pub fn restrict_self(rules: &Rules, max_abi: u32) -> Result<Achieved, LandlockError> {
    let abi = if max_abi < TESTED_ABI as u32 {
        ABI::from(i32::try_from(max_abi).unwrap_or(0))
    } else {
        TESTED_ABI
    };
    let read_exec = AccessFs::from_read(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    // Truncate from ABI 3 on: a rule may not name a right the ruleset does not handle.
    let rw_files =
        (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate) & AccessFs::from_all(abi);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    // TCP bind and connect (every network right there is) from ABI 4, scopes from 6.
    let net = AccessNet::from_all(abi);
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(err)?;
    }
    let scopes = Scope::from_all(abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(err)?;
    }
    let status: RestrictionStatus = ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&rules.read_exec, read_exec))
        .map_err(err)?
        .add_rules(path_beneath_rules(&rules.read, read))
        .map_err(err)?
        .add_rules(path_beneath_rules(&rules.read_write_files, rw_files))
        .map_err(err)?
        .add_rules(path_beneath_rules(&rules.full, AccessFs::from_all(abi)))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    let kernel = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi,
        _ => ABI::Unsupported,
    };
    let applied = if (kernel as u32) < (abi as u32) {
        kernel
    } else {
        abi
    };
    Ok(match status.ruleset {
        RulesetStatus::NotEnforced => Achieved::None,
        RulesetStatus::FullyEnforced if same_rights(applied, TESTED_ABI) => Achieved::Full {
            abi: applied as u32,
        },
        _ => Achieved::Partial {
            abi: applied as u32,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_knows_the_newest_abi_asked_for() {
        assert_eq!(TESTED_ABI as u32, codejail_plan::NEWEST_LANDLOCK_ABI);
    }

    #[test]
    fn paths_without_a_rule_get_eacces_and_tcp_is_denied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("allowed");
        let denied = dir.path().join("denied");
        std::fs::create_dir(&allowed).expect("mkdir");
        std::fs::write(&denied, b"secret").expect("write");
        std::fs::write(allowed.join("ok"), b"ok").expect("write");
        let rules = Rules {
            read: vec![allowed.clone()],
            ..Rules::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        // Landlock restricts the calling thread only: run the attempt on its own thread.
        let (achieved, read_ok, read_denied, write_denied, tcp) = std::thread::spawn(move || {
            let achieved = restrict_self(&rules, TESTED_ABI as u32).expect("restrict");
            let read_ok = std::fs::read(allowed.join("ok")).is_ok();
            let read_denied = std::fs::read(&denied).map_err(|e| e.raw_os_error());
            let write_denied =
                std::fs::write(allowed.join("new"), b"x").map_err(|e| e.raw_os_error());
            let tcp =
                std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.raw_os_error());
            (achieved, read_ok, read_denied, write_denied, tcp)
        })
        .join()
        .expect("thread");
        assert_eq!(
            achieved,
            Achieved::Full { abi: 7 },
            "this kernel has Landlock ABI >= 7"
        );
        assert!(read_ok, "a path with a read rule is readable");
        assert_eq!(read_denied.err(), Some(Some(libc::EACCES)));
        assert_eq!(write_denied.err(), Some(Some(libc::EACCES)));
        assert_eq!(tcp.err(), Some(Some(libc::EACCES)), "TCP connect is denied");
    }
}
