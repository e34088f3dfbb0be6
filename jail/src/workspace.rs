//! The run's workspace: a tmpfs mounted in the run's own mount namespace (it hides
//! what the host has at that path and disappears with the namespace), holding the
//! workdir with `jailed_code`, the caller's files, directories and symlinks, the extra
//! files, and a private `tmp/`.
//!
//! Names come from the peer, so the stage has validated them again before this runs
//! (`names::check_names`), and every object is created relative to a directory fd: parents are walked one
//! component at a time with `O_DIRECTORY|O_NOFOLLOW`, leaves are created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat` or `symlinkat`, so no symlink (including one
//! the caller sent) is ever followed and nothing is written outside the workdir.
//!
//! Everything is created by the init as [`INNER_RUN_ID`](codejail_plan::INNER_RUN_ID),
//! a uid mapped in the run's user namespace: a tmpfs refuses to create inodes owned
//! by an unmapped id (`EOVERFLOW`).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use codejail_plan::EntryKind;
use nix::mount::{mount, MsFlags};

use super::error::JailError;
use codejail_plan::layout::{program_workdir, CODE_FILE, TMP_DIR, WORKSPACE_MOUNT};
use codejail_plan::{Plan, RunLimits};

const DIR_MODE: libc::mode_t = 0o755;
const FILE_MODE: libc::mode_t = 0o644;
const EXEC_MODE: libc::mode_t = 0o755;
const TMP_MODE: libc::mode_t = 0o700;

/// The tmpfs mount options: `mode=0755`, plus `size=` and `nr_inodes=` when limited.
pub(crate) fn tmpfs_options(limits: &RunLimits) -> String {
    let mut options = String::from("mode=0755");
    if let Some(bytes) = limits.tmp_bytes {
        options.push_str(&format!(",size={bytes}"));
    }
    if let Some(inodes) = limits.tmp_inodes {
        options.push_str(&format!(",nr_inodes={inodes}"));
    }
    options
}

/// Mount the workspace tmpfs (nosuid, nodev, size and inodes capped) at `at`, in the
/// run's mount namespace.
pub(crate) fn mount_workspace_tmpfs(plan: &Plan, at: &str) -> Result<(), JailError> {
    let options = tmpfs_options(&plan.limits);
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| JailError::MountWorkspace {
        path: at.to_string(),
        options,
        source: e.into(),
    })
}

/// Create the workdir in the freshly mounted tmpfs and fill it: `jailed_code`, the
/// entries in order, the extra files, then `tmp/`.
pub(crate) fn populate_workspace(plan: &Plan, at: &str) -> Result<(), JailError> {
    let root = open_absolute_dir(at)?;
    let workdir = create_workdir(root.as_fd(), plan)?;
    fill_workdir(workdir.as_fd(), plan)?;
    create_tmp(workdir.as_fd())?;
    mask_symlink_targets(root.as_fd(), plan)
}

/// A warm jail's workspace before its request: the workdir with an empty `tmp/`.
pub(crate) fn prepare_warm_workspace(plan: &Plan, at: &str) -> Result<(), JailError> {
    let root = open_absolute_dir(at)?;
    let workdir = create_workdir(root.as_fd(), plan)?;
    create_tmp(workdir.as_fd())
}

/// A warm jail's hand-over (`run` is its plan with the request's files and limits):
/// `tmp/` emptied (an import may have cached something there), the tmpfs capped as a
/// cold run's is at mount, then the files and masks exactly as [`populate_workspace`]
/// writes them, so the workspace holds what a cold run's does.
pub(crate) fn hand_over_workspace(run: &Plan, at: &str) -> Result<(), JailError> {
    let root = open_absolute_dir(at)?;
    let workdir = open_dir_at(root.as_fd(), &run.workdir_name)?;
    let tmp_path = format!("{at}/{}/{TMP_DIR}", run.workdir_name);
    empty_dir(&tmp_path)?;
    remount_workspace_tmpfs(&run.limits, at)?;
    fill_workdir(workdir.as_fd(), run)?;
    mask_symlink_targets(root.as_fd(), run)
}

/// Remove everything in `path` (std's `remove_dir_all` never follows a symlink).
fn empty_dir(path: &str) -> Result<(), JailError> {
    let fail = |source| JailError::OpenDir {
        path: path.to_string(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let kind = entry.file_type().map_err(fail)?;
        let removed = if kind.is_dir() {
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
        removed.map_err(fail)?;
    }
    Ok(())
}

/// Cap the mounted workspace tmpfs at `at` as [`tmpfs_options`] caps a new one
/// (nothing to do when the request limits neither size nor inodes).
fn remount_workspace_tmpfs(limits: &RunLimits, at: &str) -> Result<(), JailError> {
    let options = tmpfs_options(limits);
    let Some(caps) = options.strip_prefix("mode=0755,") else {
        return Ok(());
    };
    mount(
        None::<&str>,
        at,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(caps),
    )
    .map_err(|e| JailError::MountWorkspace {
        path: at.to_string(),
        options: format!("remount,{caps}"),
        source: e.into(),
    })
}

fn create_workdir(root: BorrowedFd<'_>, plan: &Plan) -> Result<OwnedFd, JailError> {
    let workdir_name = c_name(&plan.workdir_name)?;
    super::sys::mkdir_at(root, &workdir_name, DIR_MODE).map_err(|source| JailError::CreateDir {
        path: plan.workdir_name.clone(),
        source,
    })?;
    open_dir_at(root, &plan.workdir_name)
}

fn fill_workdir(workdir: BorrowedFd<'_>, plan: &Plan) -> Result<(), JailError> {
    if let Some(code) = &plan.code {
        write_new_file(workdir, CODE_FILE, CODE_FILE, code, FILE_MODE)?;
    }
    for entry in &plan.files {
        create_entry(workdir, &entry.path, &entry.kind)?;
    }
    for (name, contents) in &plan.extra_files {
        write_new_file(workdir, name, name, contents, FILE_MODE)?;
    }
    Ok(())
}

fn create_tmp(workdir: BorrowedFd<'_>) -> Result<(), JailError> {
    let tmp = c_name(TMP_DIR)?;
    super::sys::mkdir_at(workdir, &tmp, TMP_MODE).map_err(|source| JailError::CreateDir {
        path: TMP_DIR.to_string(),
        source,
    })
}

/// At most this many masks for symlink targets (each costs an inode of the tmpfs).
const MAX_TARGET_MASKS: usize = 64;

/// Mask the targets of copied symlinks that leave the run's directory into the jail's
/// `/tmp` (the workspace tmpfs, where nothing but the run's directory exists): the
/// first component below `/tmp` gets an empty mode-0 directory, so following the link
/// fails with `EACCES` ("Permission denied", upstream's error for a link to a file
/// that was not copied, which its tests point into the caller's own `/tmp/tmpXXXX/`),
/// not `ENOENT`. Outside `/tmp` the skeleton's masks do the same (`rootfs`).
fn mask_symlink_targets(tmpfs_root: BorrowedFd<'_>, plan: &Plan) -> Result<(), JailError> {
    let mut masked = Vec::new();
    for entry in &plan.files {
        let EntryKind::Symlink { target } = &entry.kind else {
            continue;
        };
        let Some(name) = masked_component(plan, &entry.path, target) else {
            continue;
        };
        if masked.contains(&name) || masked.len() >= MAX_TARGET_MASKS {
            continue;
        }
        match super::sys::mkdir_at(tmpfs_root, &c_name(&name)?, 0) {
            Ok(()) => {}
            // Already there, or a name the kernel refuses: the link then fails with
            // ENOENT or ENAMETOOLONG, which leaks nothing either.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENAMETOOLONG)) => {}
            Err(source) => {
                return Err(JailError::CreateDir {
                    path: format!("{WORKSPACE_MOUNT}/{name}"),
                    source,
                })
            }
        }
        masked.push(name);
    }
    Ok(())
}

/// For a symlink at `link` (relative to the run's directory) pointing at `target`:
/// the name to mask in the jail's `/tmp` when the target, resolved lexically as the
/// program would see it, lies in `/tmp` but outside the run's directory.
fn masked_component(plan: &Plan, link: &str, target: &str) -> Option<String> {
    let mut path: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        path.extend(WORKSPACE_MOUNT.split('/').filter(|c| !c.is_empty()));
        path.push(&plan.workdir_name);
        path.extend(link.split('/').filter(|c| !c.is_empty()));
        path.pop(); // the link itself
    }
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                path.pop();
            }
            c => path.push(c),
        }
    }
    let mount: Vec<&str> = WORKSPACE_MOUNT
        .split('/')
        .filter(|c| !c.is_empty())
        .collect();
    let below = path.strip_prefix(mount.as_slice())?;
    match below.first() {
        Some(first) if *first != plan.workdir_name => Some((*first).to_string()),
        _ => None,
    }
}

/// The run's directory (the program's cwd) as the program sees it.
pub(crate) fn workdir_path(plan: &Plan) -> String {
    program_workdir(&plan.workdir_name)
}

/// Create one entry at `path` (relative to the workdir), walking its parents
/// without following links.
fn create_entry(workdir: BorrowedFd<'_>, path: &str, kind: &EntryKind) -> Result<(), JailError> {
    let (parent, leaf) = match path.rsplit_once('/') {
        Some((parent, leaf)) => (Some(parent), leaf),
        None => (None, path),
    };
    let parent_fd = match parent {
        Some(parent) => Some(open_dir_path(workdir, parent)?),
        None => None,
    };
    let dir = parent_fd.as_ref().map_or(workdir, |fd| fd.as_fd());
    match kind {
        EntryKind::File {
            contents,
            executable,
        } => {
            let mode = if *executable { EXEC_MODE } else { FILE_MODE };
            write_new_file(dir, leaf, path, contents, mode)
        }
        EntryKind::Dir => super::sys::mkdir_at(dir, &c_name(leaf)?, DIR_MODE).map_err(|source| {
            JailError::CreateDir {
                path: path.to_string(),
                source,
            }
        }),
        EntryKind::Symlink { target } => {
            let c_target = CString::new(target.as_str()).map_err(|_| {
                JailError::ValidatePlan(format!("symlink {path:?} has a NUL in its target"))
            })?;
            super::sys::symlink_at(&c_target, dir, &c_name(leaf)?).map_err(|source| {
                JailError::CreateSymlink {
                    path: path.to_string(),
                    target: target.clone(),
                    source,
                }
            })
        }
    }
}

/// Open `rel` (components separated by `/`) below `dir`, one component at a time,
/// refusing symlinks at every step.
fn open_dir_path(dir: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, JailError> {
    let mut components = rel.split('/');
    let first = components.next().unwrap_or(rel);
    let mut current = open_dir_at(dir, first)?;
    let mut walked = first.to_string();
    for component in components {
        walked.push('/');
        walked.push_str(component);
        current = open_dir_at(current.as_fd(), component).map_err(|e| match e {
            JailError::OpenDir { source, .. } => JailError::OpenDir {
                path: walked.clone(),
                source,
            },
            other => other,
        })?;
    }
    Ok(current)
}

/// Open the directory `name` in `dir`, never through a symlink.
fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, JailError> {
    super::sys::open_at(
        dir,
        &c_name(name)?,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(|source| JailError::OpenDir {
        path: name.to_string(),
        source,
    })
}

/// Open the tmpfs root (a trusted, configured absolute path) as a directory fd.
fn open_absolute_dir(path: &str) -> Result<OwnedFd, JailError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| JailError::OpenDir {
            path: path.to_string(),
            source,
        })
}

/// Create a new regular file `name` in `dir` (failing if anything exists there,
/// link or not) and write `contents`. `shown` is the path for error messages.
fn write_new_file(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: &str,
    contents: &[u8],
    mode: libc::mode_t,
) -> Result<(), JailError> {
    let fail = |source| JailError::WriteFile {
        path: shown.to_string(),
        source,
    };
    let fd = super::sys::open_at(
        dir,
        &c_name(name)?,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode,
    )
    .map_err(fail)?;
    File::from(fd).write_all(contents).map_err(fail)
}

/// A validated name as a C string (validation already refused NULs).
fn c_name(name: &str) -> Result<CString, JailError> {
    CString::new(name).map_err(|_| JailError::ValidatePlan(format!("name {name:?} contains a NUL")))
}

#[cfg(test)]
mod tests;
