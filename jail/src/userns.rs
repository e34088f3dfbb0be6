//! The run's user namespace: the stage creates it as the run's outside uid and gid
//! (the broker switched to them before exec), writes its own id maps, and the init
//! then takes the run's inner identity for itself and the program.
//!
//! Why the stage creates the namespace as the run's uid: the kernel charges what a
//! namespace's processes hold against per-user budgets (`ucounts`: queued signals and
//! POSIX timers, processes, message queue bytes) at every level up to the initial
//! namespace, and there to the uid that *created* the namespace. Created by the
//! broker's uid, every run would share one budget and one run could exhaust it for all
//! (`timer_create` failing with `EAGAIN` everywhere). Created as the run's own uid,
//! each run is charged to its own.
//!
//! Why the stage writes its own maps: a namespace's creator may map exactly its own
//! effective uid and gid (gid only after `setgroups` is denied), with no capability
//! in the parent namespace (user_namespaces(7)). That is all a run needs: one id,
//! [`INNER_RUN_ID`] inside, never 0.
//!
//! Why capabilities survive the identity switch: `unshare(CLONE_NEWUSER)` gives the
//! stage every capability *in the new namespace*; `setresuid` away from uid 0 would
//! clear them, but uid 0 is never mapped here, so no id was 0 before the switch and
//! they survive (capabilities(7)): the stage can unshare the other namespaces and the
//! init can mount. They are lost for good at the program's `execve`, which as a
//! non-root uid without file capabilities (and with `no_new_privs`) gets none.

use std::io;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getegid, geteuid, setresgid, setresuid, Gid, Uid};

use super::error::JailError;
use codejail_plan::INNER_RUN_ID;

/// Who the stage was before its user namespace existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutsideIds {
    /// The effective uid: the run's outside uid, which the map gives [`INNER_RUN_ID`].
    uid: u32,
    /// The effective gid, mapped likewise.
    gid: u32,
}

impl OutsideIds {
    /// The ids a namespace made by someone else's clone maps: a forked run's init
    /// cannot read them itself (inside, before its maps, both are the overflow id).
    pub(crate) fn new(uid: u32, gid: u32) -> OutsideIds {
        OutsideIds { uid, gid }
    }
}

/// Enter a new user namespace (the process must be single-threaded: unshare(2)) and
/// return who the stage was outside it.
pub(crate) fn enter_user_namespace() -> Result<OutsideIds, JailError> {
    let outside = OutsideIds {
        uid: geteuid().as_raw(),
        gid: getegid().as_raw(),
    };
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| JailError::UnshareUser(e.into()))?;
    Ok(outside)
}

/// Map `outside`'s uid and gid to [`INNER_RUN_ID`] in our new namespace: `uid_map`,
/// then `deny` to `setgroups` (which the kernel requires before an unprivileged
/// `gid_map`; the broker cleared the supplementary groups before exec when it could),
/// then `gid_map`.
///
/// The stage is dumpable for the three writes ([`with_own_proc_files`]).
pub(crate) fn map_own_ids(outside: OutsideIds) -> Result<(), JailError> {
    with_own_proc_files(|| write_maps(outside)).map_err(JailError::WriteIdMaps)
}

/// Run `f`, which opens files of our own `/proc/self`, as a dumpable process, then
/// restore the flag. The stage makes itself not dumpable first thing, and the
/// `/proc/self` files of a process that is not dumpable belong to the host's root.
/// Nothing of the run exists yet when the stage calls this; the init forked later
/// inherits the flag as it was.
pub(crate) fn with_own_proc_files<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let was_dumpable = sys_get_dumpable()?;
    if !was_dumpable {
        sys_set_dumpable(true)?;
    }
    let done = f();
    if !was_dumpable {
        sys_set_dumpable(false)?;
    }
    done
}

fn write_maps(outside: OutsideIds) -> io::Result<()> {
    write_proc_file("/proc/self/uid_map", &id_map_line(outside.uid))?;
    write_proc_file("/proc/self/setgroups", "deny")?;
    write_proc_file("/proc/self/gid_map", &id_map_line(outside.gid))
}

/// `"<inner> <outer> 1\n"`: one id, `INNER_RUN_ID` inside.
fn id_map_line(outer: u32) -> String {
    format!("{INNER_RUN_ID} {outer} 1\n")
}

/// The kernel wants each of these files written in a single `write(2)`; std's
/// `fs::write` does that for such short contents. The error names the file.
fn write_proc_file(path: &str, contents: &str) -> io::Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {contents:?} to {path}: {e}")))
}

fn sys_get_dumpable() -> io::Result<bool> {
    nix::sys::prctl::get_dumpable().map_err(io::Error::from)
}

fn sys_set_dumpable(on: bool) -> io::Result<()> {
    nix::sys::prctl::set_dumpable(on).map_err(io::Error::from)
}

/// Become [`INNER_RUN_ID`] (real, effective and saved uid and gid): the init, for
/// itself and the program it forks. Gid first: changing it needs `CAP_SETGID`, which a
/// uid change could affect.
pub(crate) fn switch_to_run_identity() -> Result<(), JailError> {
    let gid = Gid::from_raw(INNER_RUN_ID);
    setresgid(gid, gid, gid).map_err(|e| JailError::SetGid {
        gid: INNER_RUN_ID,
        source: e.into(),
    })?;
    let uid = Uid::from_raw(INNER_RUN_ID);
    setresuid(uid, uid, uid).map_err(|e| JailError::SetUid {
        uid: INNER_RUN_ID,
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines_map_one_id_to_the_inner_run_id() {
        assert_eq!(id_map_line(4242), "1000 4242 1\n");
    }
}
