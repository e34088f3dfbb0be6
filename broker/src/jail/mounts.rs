//! Mounts of the run's mount namespace other than the workspace: propagation cut off
//! from the host, and a `/proc` that shows only the run's pid namespace.
//!
//! Later work puts the minimal read-only root and `pivot_root` here, between
//! [`make_mounts_private`] and the workspace.

use nix::mount::{mount, MsFlags};

use super::error::JailError;

/// Make every mount of the run's namespace private (mount_namespaces(7)), so nothing
/// the run mounts propagates back to the host and nothing the host mounts later
/// shows up in the run.
pub(crate) fn make_mounts_private() -> Result<(), JailError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| JailError::MakeMountsPrivate(e.into()))
}

/// Mount a fresh procfs at `/proc`. The caller must be a process of the run's pid
/// namespace (procfs shows the pid namespace of the mounter), so this runs in the
/// init. The kernel allows it in a user namespace only if the host's `/proc` is fully
/// visible (no file over-mounted: `mnt_already_visible` in fs/namespace.c) and the
/// new mount keeps the locked flags of the old one; nosuid, nodev and noexec only add
/// restrictions.
///
/// It must happen before `pivot_root` detaches the host's `/proc`: that fully visible
/// procfs is what entitles a user namespace to a new one.
pub(crate) fn mount_proc(at: &str) -> Result<(), JailError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), at, Some("proc"), flags, None::<&str>)
        .map_err(|e| JailError::MountProc(e.into()))
}
