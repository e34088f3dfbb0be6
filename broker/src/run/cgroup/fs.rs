//! The cgroup file system behind a trait ([`CgroupFs`]), so that detection, set-up and
//! a run's lifecycle can be tested against a recording fake without root; and where
//! the broker's own cgroup is (`/proc/self/cgroup`, `/proc/self/mountinfo`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::V2_MOUNT_CANDIDATES;
/// The file operations the cgroup code needs: the real cgroupfs, or a fake one in a
/// temporary directory for the unit tests (where rmdir removes the "control files" as
/// the kernel does).
pub trait CgroupFs: Send + Sync + fmt::Debug {
    /// Read a whole control file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Write a control file, in one `write(2)` as cgroupfs requires.
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    /// mkdir a cgroup.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// rmdir a cgroup (`EBUSY` while it has tasks).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the sub-directories (child cgroups).
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Whether the broker may write there (`access(W_OK)`).
    fn writable(&self, path: &Path) -> bool;
}

/// The host's cgroup file systems.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl CgroupFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        // No O_CREAT: a control file that does not exist is an error, not a new file.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(contents.as_bytes())
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn writable(&self, path: &Path) -> bool {
        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
    }
}

/// Where the broker itself sits in the cgroup hierarchies (from `/proc/self`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnCgroup {
    /// The broker's pid (written to `cgroup.procs` to move it).
    pub pid: u32,
    /// The broker's v2 cgroup directory (cgroup2 mount + the `0::` path).
    pub v2_dir: Option<PathBuf>,
}

impl OwnCgroup {
    /// Read `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub fn detect() -> OwnCgroup {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mount = cgroup2_mount(&mountinfo).or_else(|| {
            V2_MOUNT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.join("cgroup.controllers").exists())
        });
        OwnCgroup {
            pid: std::process::id(),
            v2_dir: match (mount, v2_path(&cgroup)) {
                (Some(m), Some(rel)) => Some(match rel.trim_start_matches('/') {
                    "" => m,
                    rel => m.join(rel),
                }),
                _ => None,
            },
        }
    }
}

/// The `0::<path>` line of a `/proc/<pid>/cgroup` (cgroups(7)).
pub fn v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The mount point of the cgroup2 file system in a `/proc/<pid>/mountinfo`
/// (proc(5): fields up to " - ", then the file system type).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}
