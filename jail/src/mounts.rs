//! The first mount step of the run's mount namespace: propagation cut off from the
//! host. The root itself is built by `rootfs`, the workspace by `workspace`.
//!
//! The program gets no procfs: upstream's AppArmor profile denies `/proc` (listing it
//! and reading `/proc/1/cmdline` give `EACCES`), and a procfs would show the run's
//! processes' command lines and environments to each other. `/proc` is a mode-0
//! directory of the read-only skeleton instead (see `rootfs`).

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
