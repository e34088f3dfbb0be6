//! What a command runs: its interpreter, arguments, environment and read-only paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// A resolved command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Absolute interpreter path.
    pub bin: PathBuf,
    /// Arguments before the program.
    pub args: Vec<String>,
    /// Environment besides TMPDIR.
    pub env: Vec<(String, String)>,
    /// Host directories exposed read-only in the run's view (besides /usr, /lib*).
    pub ro_paths: Vec<PathBuf>,
    /// Whether the program may exec after its own start.
    pub allow_exec: bool,
}

impl CommandSpec {
    /// Upstream's python command: `-E -B`, and numeric libraries held to one thread so
    /// they do not exhaust NPROC (upstream's deployments set OPENBLAS_NUM_THREADS=1; docs/compat.md §2).
    pub fn python(bin: PathBuf) -> Self {
        CommandSpec {
            ro_paths: interpreter_dirs(&bin),
            bin,
            args: vec!["-E".into(), "-B".into()],
            env: python_env(),
            allow_exec: false,
        }
    }
}

/// The directories an interpreter needs besides the system's: its prefix (`<SANDENV>`
/// for `<SANDENV>/bin/python`), and the prefix of what it resolves to when it is a
/// symlink (a venv made without `--copies`).
pub fn interpreter_dirs(bin: &Path) -> Vec<PathBuf> {
    let prefix = |p: &Path| p.parent().and_then(Path::parent).map(Path::to_path_buf);
    let mut dirs: Vec<PathBuf> = prefix(bin).into_iter().collect();
    if let Some(real) = std::fs::canonicalize(bin).ok().as_deref().and_then(prefix) {
        if !dirs.contains(&real) {
            dirs.push(real);
        }
    }
    dirs
}

pub(super) fn python_env() -> Vec<(String, String)> {
    [
        ("OPENBLAS_NUM_THREADS", "1"),
        ("OMP_NUM_THREADS", "1"),
        ("MKL_NUM_THREADS", "1"),
        ("LC_ALL", "C.UTF-8"),
        // matplotlib's config and font cache in the run's own tmp/: without it,
        // matplotlib makes a temporary one there anyway and warns on stderr.
        ("MPLCONFIGDIR", "$TMPDIR"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Refuse commands whose interpreter or read-only paths the jail cannot show: inside
/// each jail `/tmp` is the run's private workspace, and on the host the run's root is
/// built over `tmpfs_mount`, which hides what lies below it in the run's mount
/// namespace. Either would make every run fail at `execve` ("Permission denied");
/// saying so at start-up names the cause and the fix instead.
pub(super) fn check_ro_paths_visible(
    commands: &BTreeMap<String, CommandSpec>,
    tmpfs_mount: &Path,
) -> Result<(), ConfigError> {
    for (name, spec) in commands {
        let hidden = std::iter::once(&spec.bin)
            .chain(&spec.ro_paths)
            .find(|p| p.starts_with("/tmp") || p.starts_with(tmpfs_mount));
        if let Some(p) = hidden {
            return Err(invalid(
                format!("commands.{name}"),
                format!(
                    "{} is under /tmp or tmpfs_mount ({}): inside the jail /tmp is the run's \
                     private workspace and the host's view below tmpfs_mount is hidden, so \
                     the program could not be run; put the interpreter's environment \
                     elsewhere (e.g. /var/tmp or /opt) or set tmpfs_mount to another directory",
                    p.display(),
                    tmpfs_mount.display()
                ),
            ));
        }
    }
    Ok(())
}
