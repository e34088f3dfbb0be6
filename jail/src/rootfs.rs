//! The run's filesystem view: a minimal root built on a small tmpfs in the run's mount
//! namespace, then `pivot_root` into it so nothing of the host is reachable but what
//! is bound in, read-only:
//!
//! | path | what |
//! |---|---|
//! | `/usr`, `/bin`, `/lib*`, `/sbin` | the system's interpreter and libraries (symlinks kept as symlinks on merged-/usr hosts) |
//! | the plan's `ro_paths` | the sandbox environment (`<SANDENV>`) and configured package dirs |
//! | `/etc` | only what the interpreter reads: the host's `ld.so.cache` (bound read-only) and `localtime` (the same symlink, or bound), plus empty mode-0 files named as [`ETC_PLACEHOLDERS`], so that reading `/etc/passwd` gives upstream's `EACCES` rather than `ENOENT`; nothing else of the host's `/etc` is in the view, not even for `stat()` (Landlock mediates opening, not `stat`) |
//! | `/dev/{null,zero,random,urandom}` | bind mounts of the host's nodes (no `/dev/fd` or `/dev/std*`: they would point into a procfs) |
//! | `/proc` | an empty directory with mode 0: no procfs for the program (`mounts`) |
//! | `/tmp` | the run's workspace tmpfs, size and inodes capped, holding only the run's directory `/tmp/codejail-XXXXXXXX` (`workspace`) |
//! | anything else the host has beside these | an empty directory with mode 0 |
//!
//! The masks make every host path outside the view fail with `EACCES` at lookup,
//! as upstream's AppArmor profile makes them fail: reading through a copied symlink
//! to a host file that was not copied, or listing `/home` or `/proc`, gives
//! "Permission denied" rather than "No such file or directory". The program cannot
//! chmod them (the skeleton is read-only), and Landlock denies them anyway. Inside
//! `/tmp` (writable: a create there must meet Landlock's `EACCES`, not `EROFS`),
//! `workspace` masks the targets of copied symlinks the same way.
//!
//! The skeleton tmpfs is remounted read-only once the workspace is populated. Mount
//! flags the kernel locked on the host's mounts (nosuid, nodev, noexec, atime) must be
//! kept on a read-only remount inside a user namespace (mount_namespaces(7), "locked
//! mounts"), so they are read with statvfs and carried over.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root};

use super::error::JailError;
use super::view::{DEVICES, ETC_FILES, SYSTEM_ENTRIES};
use codejail_plan::layout::WORKSPACE_MOUNT;
use codejail_plan::Plan;

/// Where the program finds no procfs: a mode-0 directory (so `/proc/1/cmdline` gives
/// `EACCES`, as upstream, not `ENOENT`).
const PROC_MASK: &str = "proc";

/// At most this many host entries of one directory are masked (the skeleton tmpfs
/// has 4096 inodes); past that, the rest are simply absent (`ENOENT`).
const MASK_LIMIT: usize = 512;

/// Names in the view's `/etc` that are empty files with mode 0, not the host's: a run
/// reading them gets `EACCES`, as upstream's callers' tests expect of `/etc/passwd`,
/// and `stat()` shows nothing of the host. A fixed list, never the host's names.
const ETC_PLACEHOLDERS: [&str; 4] = ["passwd", "group", "shadow", "hosts"];

/// Options of the skeleton tmpfs: it holds only directories, links and mount points.
const SKELETON_OPTIONS: &str = "mode=0755,size=1m,nr_inodes=4096";

fn mount_err(what: &str, path: &Path) -> impl FnOnce(nix::Error) -> JailError {
    let what = what.to_string();
    let path = path.display().to_string();
    move |e| JailError::BuildRoot {
        step: what,
        path,
        source: e.into(),
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.to_string();
    let path = path.display().to_string();
    move |source| JailError::BuildRoot {
        step: what,
        path,
        source,
    }
}

/// The mount flags of the mount holding `path` that a remount must keep.
fn locked_flags(path: &Path) -> Result<MsFlags, JailError> {
    let st = statvfs(path).map_err(mount_err("statvfs", path))?;
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    Ok(flags)
}

/// Bind `src` on `dst` and make the bind read-only and nosuid.
fn bind_read_only(src: &Path, dst: &Path) -> Result<(), JailError> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err("bind", dst))?;
    let flags = locked_flags(src)?
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID;
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
        .map_err(mount_err("remount read-only", dst))
}

/// `mkdir -p` below the skeleton for a host directory path.
fn make_dirs(root: &Path, host: &Path) -> Result<PathBuf, JailError> {
    let rel = host.strip_prefix("/").unwrap_or(host);
    let dst = root.join(rel);
    std::fs::create_dir_all(&dst).map_err(io_err("mkdir", &dst))?;
    Ok(dst)
}

/// Whether `p` is `/usr` or below it (already bound).
fn covered(p: &Path, by: &[PathBuf]) -> bool {
    by.iter().any(|b| p.starts_with(b))
}

/// The read-only paths of the plan that need their own bind (absolute, existing, not
/// already inside a system entry or another path).
pub(crate) fn extra_ro_paths(plan: &Plan) -> Vec<PathBuf> {
    let mut bound: Vec<PathBuf> = SYSTEM_ENTRIES
        .iter()
        .map(|e| Path::new("/").join(e))
        .collect();
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = plan.ro_paths.iter().map(PathBuf::from).collect();
    paths.sort();
    for p in paths {
        if p.is_absolute() && !covered(&p, &bound) && p.is_dir() {
            bound.push(p.clone());
            out.push(p);
        }
    }
    out
}

/// Build the skeleton at the plan's skeleton root (a host directory, hidden by it in
/// the run's namespace), bind everything in, mount the workspace tmpfs on its `/tmp`,
/// and `pivot_root` into it. Afterwards `/` is the skeleton and the host root is detached.
pub(crate) fn build_and_enter(
    plan: &Plan,
    mount_workspace: impl FnOnce(&str) -> Result<(), JailError>,
) -> Result<(), JailError> {
    let root = PathBuf::from(&plan.skeleton_root);
    // A small tmpfs as the new root: only directories, links and mount points.
    mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(SKELETON_OPTIONS),
    )
    .map_err(mount_err("mount root tmpfs", &root))?;
    // The system's interpreter and libraries, read-only; merged-/usr links as links.
    for entry in SYSTEM_ENTRIES {
        mirror_host_entry(&Path::new("/").join(entry), &root.join(entry))?;
    }
    // The few host files of /etc the interpreter reads, and placeholders.
    build_etc(&root.join("etc"))?;
    // The sandbox environment and package dirs outside /usr.
    let extra = extra_ro_paths(plan);
    for host in &extra {
        let dst = make_dirs(&root, host)?;
        bind_read_only(host, &dst)?;
    }
    // A minimal /dev: four nodes bound from the host (mknod is not allowed in a user
    // namespace, and a tmpfs mounted there is nodev anyway), plus the usual links.
    let dev = root.join("dev");
    std::fs::create_dir(&dev).map_err(io_err("mkdir", &dev))?;
    for node in DEVICES {
        let dst = dev.join(node);
        std::fs::File::create(&dst).map_err(io_err("create", &dst))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o666))
            .map_err(io_err("chmod", &dst))?;
        let src = Path::new("/dev").join(node);
        mount(
            Some(&src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(mount_err("bind device", &dst))?;
    }
    let ws = root.join(WORKSPACE_MOUNT.trim_start_matches('/'));
    std::fs::create_dir(&ws).map_err(io_err("mkdir", &ws))?;
    let proc = root.join(PROC_MASK);
    mask_dir(&proc).map_err(io_err("mkdir mask", &proc))?;
    // Mask what the host has beside the view: at the top, and beside each directory
    // on the way to a read-only path (`/var/tmp/venv` masks `/var/log`, ...).
    mask_host_entries(Path::new("/"), &root)?;
    for host in &extra {
        for ancestor in host.ancestors().skip(1) {
            if ancestor != Path::new("/") {
                let rel = ancestor.strip_prefix("/").unwrap_or(ancestor);
                mask_host_entries(ancestor, &root.join(rel))?;
            }
        }
    }
    // The workspace: its own capped tmpfs.
    mount_workspace(&ws.to_string_lossy())?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching it then
    // leaves no path back to the host (pivot_root(2), "NOTES").
    chdir(&root).map_err(mount_err("chdir", &root))?;
    pivot_root(".", ".").map_err(mount_err("pivot_root", &root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(mount_err("detach old root", Path::new("/")))?;
    chdir("/").map_err(mount_err("chdir", Path::new("/")))?;
    Ok(())
}

/// Put the host's `host` at `dst` in the skeleton as the host has it: a symlink
/// recreated as the same symlink, a directory or a file bound read-only; nothing when
/// the host has no such entry.
fn mirror_host_entry(host: &Path, dst: &Path) -> Result<(), JailError> {
    let Ok(meta) = std::fs::symlink_metadata(host) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(host).map_err(io_err("readlink", host))?;
        std::os::unix::fs::symlink(&target, dst).map_err(io_err("symlink", dst))?;
    } else if meta.is_dir() {
        std::fs::create_dir(dst).map_err(io_err("mkdir", dst))?;
        bind_read_only(host, dst)?;
    } else if meta.is_file() {
        std::fs::File::create(dst).map_err(io_err("create", dst))?;
        bind_read_only(host, dst)?;
    }
    Ok(())
}

/// The view's `/etc` in the skeleton directory `etc`: [`ETC_FILES`] as the host has
/// them (a symlink recreated, a file bound read-only), absent ones skipped, and the
/// [`ETC_PLACEHOLDERS`].
fn build_etc(etc: &Path) -> Result<(), JailError> {
    std::fs::create_dir(etc).map_err(io_err("mkdir", etc))?;
    for name in ETC_FILES {
        mirror_host_entry(&Path::new("/etc").join(name), &etc.join(name))?;
    }
    for name in ETC_PLACEHOLDERS {
        let dst = etc.join(name);
        // Mode 0 from its creation (the creating open may write it all the same).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&dst)
            .map_err(io_err("create", &dst))?;
    }
    Ok(())
}

/// For each entry of the host directory `host` that the skeleton directory `skel`
/// lacks, create an empty directory with mode 0 in `skel`: a lookup through it fails
/// with `EACCES` (no search permission, and no capability to override it).
fn mask_host_entries(host: &Path, skel: &Path) -> Result<(), JailError> {
    let Ok(entries) = std::fs::read_dir(host) else {
        // Unreadable to the run's uid: nothing to mask by name.
        return Ok(());
    };
    for entry in entries.flatten().take(MASK_LIMIT) {
        let dst = skel.join(entry.file_name());
        match mask_dir(&dst) {
            // What the view already has there (a bound directory, a symlink, a file)
            // stays as it is.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            done => done.map_err(io_err("mkdir mask", &dst))?,
        }
    }
    Ok(())
}

/// A mode-0 directory at `path`, made so by its one `mkdir` (a mode the umask can only
/// narrow): an entry the run's uid can neither list nor enter (`EACCES`).
fn mask_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(0o000).create(path)
}

/// Make the skeleton itself read-only (after the workspace is mounted on it).
pub(crate) fn seal_root() -> Result<(), JailError> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        flags,
        Some(SKELETON_OPTIONS),
    )
    .map_err(mount_err("remount root read-only", Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_paths_are_not_bound_twice() {
        let by = vec![PathBuf::from("/usr")];
        assert!(covered(Path::new("/usr/lib/python3"), &by));
        assert!(!covered(Path::new("/opt/venv"), &by));
        assert!(
            !covered(Path::new("/usrx"), &by),
            "component-wise, not by prefix"
        );
    }
}
