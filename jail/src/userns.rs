//! The run's user namespace: enter it, wait for the broker to write its id maps (see
//! the broker, `codejail_broker::run::idmap`), then take the run's inner identity.
//!
//! Why this order works (capabilities(7), user_namespaces(7)): `unshare(CLONE_NEWUSER)`
//! gives the stage every capability *in the new namespace*. `setresuid` away from uid 0
//! would clear them, but "uid 0" means the namespace's root, which is never mapped
//! here (only [`INNER_RUN_ID`] is), so no id was 0 before the switch and the
//! capabilities survive it: the stage can still unshare the other namespaces and the
//! init can still mount. They are lost for good at the program's `execve`, which as a
//! non-root uid without file capabilities (and with `no_new_privs`) gets none.

use std::fs::File;
use std::io::{self, Read};

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use super::error::JailError;
use codejail_plan::{GO_BYTE, INNER_RUN_ID};

/// Enter a new user namespace (the process must be single-threaded: unshare(2)).
pub(crate) fn enter_user_namespace() -> Result<(), JailError> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| JailError::UnshareUser(e.into()))
}

/// What came on the control pipe while waiting for the id maps.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdMapsSignal {
    /// The broker wrote the maps and sent [`GO_BYTE`].
    Go,
    /// EOF or any other byte: the broker gave up on this run; exit quietly.
    Abandoned,
}

/// Block until the broker has written the id maps and sends [`GO_BYTE`].
pub(crate) fn wait_for_id_maps(control: &mut File) -> Result<IdMapsSignal, JailError> {
    let mut byte = [0u8; 1];
    loop {
        match control.read(&mut byte) {
            Ok(0) => return Ok(IdMapsSignal::Abandoned),
            Ok(_) if byte[0] == GO_BYTE => return Ok(IdMapsSignal::Go),
            Ok(_) => return Ok(IdMapsSignal::Abandoned),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(JailError::WaitIdMaps(e)),
        }
    }
}

/// Become [`INNER_RUN_ID`] (real, effective and saved uid and gid), after dropping
/// the supplementary groups when the broker allowed `setgroups` (it denies it in
/// unprivileged dev mode, where the groups cannot be cleared: user_namespaces(7)).
/// Groups first, then gid, then uid: each needs the capability the next may affect.
pub(crate) fn switch_to_run_identity(clear_groups: bool) -> Result<(), JailError> {
    if clear_groups {
        setgroups(&[]).map_err(|e| JailError::ClearGroups(e.into()))?;
    }
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
