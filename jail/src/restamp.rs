//! A warm jail's timestamps, moved to its hand-over. A warm jail is built right after
//! another run has ended (the pool refills then), and then waits; everything it made
//! at its build would show that moment to its run: a run would read when the previous
//! run ended, and how long its jail waited. A cold run's jail is built at its request.
//! So at the hand-over the init sets the access and modification times (the change
//! time follows) of every inode the jail made before it and the run can stat to "now",
//! as if the jail had just been built:
//!
//! - the root skeleton (`/`, `/dev`, the masks, the symlinks of a merged `/usr`, the
//!   directories on the way to a read-only path): every inode of the skeleton's
//!   filesystem reachable without crossing a mount (what a bind mount hides, the run
//!   cannot reach). The skeleton is read-only by then: it is remounted read-write for
//!   this and sealed again before the program is released;
//! - the workspace: the `/tmp` tmpfs's root, the run's directory and its `tmp/` (the
//!   request's files are written at the hand-over itself).
//!
//! (The broker does the same for the run's stdio pipes, which it created at the build.)
//!
//! `UTIME_NOW` stamps with the clock the kernel stamps new inodes with, so the times
//! look as a cold build's do. A tmpfs birth time (statx's `stx_btime`) cannot be set:
//! it still shows the build.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::error::JailError;
use super::rootfs::seal_root;
use codejail_plan::layout::{TMP_DIR, WORKSPACE_MOUNT};

/// At most this many inodes of the skeleton are restamped (it has 4096 inodes at most,
/// and holds a few dozen: directories, masks, links and mount points).
const MAX_SKELETON_INODES: usize = 4096;

fn fail(path: &Path) -> impl FnOnce(nix::Error) -> JailError + '_ {
    move |e| JailError::Restamp {
        path: path.display().to_string(),
        source: e.into(),
    }
}

/// Set `path`'s access and modification times to now, never through a symlink.
fn touch(path: &Path) -> Result<(), JailError> {
    utimensat(
        None,
        path,
        &TimeSpec::UTIME_NOW,
        &TimeSpec::UTIME_NOW,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(fail(path))
}

/// Restamp what the warm jail made at its build (see the module doc). `workdir_name`
/// is the run's directory in the workspace.
pub(crate) fn restamp_warm_jail(workdir_name: &str) -> Result<(), JailError> {
    let root = Path::new("/");
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(fail(root))?;
    let stamped = restamp_skeleton(root);
    // Sealed again whatever happened.
    seal_root()?;
    stamped?;
    let workspace = Path::new(WORKSPACE_MOUNT);
    let workdir = workspace.join(workdir_name);
    for path in [workspace.to_path_buf(), workdir.join(TMP_DIR), workdir] {
        touch(&path)?;
    }
    Ok(())
}

/// Touch every inode of the filesystem mounted at `root` reachable from it without
/// crossing into another mount.
fn restamp_skeleton(root: &Path) -> Result<(), JailError> {
    let io_fail = |path: &Path| {
        let path = path.display().to_string();
        move |source| JailError::Restamp { path, source }
    };
    let device = std::fs::symlink_metadata(root)
        .map_err(io_fail(root))?
        .dev();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = pending.pop() {
        touch(&dir)?;
        seen += 1;
        for entry in std::fs::read_dir(&dir).map_err(io_fail(&dir))? {
            let entry = entry.map_err(io_fail(&dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(io_fail(&path))?;
            if meta.dev() != device {
                // A mount point: what it hides cannot be reached.
                continue;
            }
            if seen >= MAX_SKELETON_INODES {
                return Err(JailError::Restamp {
                    path: path.display().to_string(),
                    source: std::io::Error::other(format!(
                        "more than {MAX_SKELETON_INODES} inodes in the root skeleton"
                    )),
                });
            }
            if meta.is_dir() {
                pending.push(path);
            } else {
                touch(&path)?;
                seen += 1;
            }
        }
    }
    Ok(())
}
