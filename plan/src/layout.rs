//! Where things are in the run's filesystem view, as the program sees it: the one
//! source for the broker (which reports the run's directory and builds the program's
//! argv) and the jail stage (which builds the view). A drift between the two would
//! make the broker report a directory the program does not have.

/// Where the workspace tmpfs is mounted inside the run's root. The run's directory is
/// `/tmp/codejail-XXXXXXXX`, as upstream's (`tempfile.mkdtemp(prefix="codejail-")`),
/// whose callers' tests match tracebacks against it.
pub const WORKSPACE_MOUNT: &str = "/tmp";

/// The file in the run's directory that the code is written to and the program runs
/// by relative name (`python -E -B jailed_code`), as upstream.
pub const CODE_FILE: &str = "jailed_code";

/// The run's private temporary directory inside the run's directory (the program's
/// `TMPDIR`), the one place the program may write.
pub const TMP_DIR: &str = "tmp";

/// The program's `PATH` unless its command configures one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The program's `HOME` unless its command configures one: the run's `tmp/`. Upstream's
/// runs get the sandbox user's home from sudo, which its AppArmor profile lets them
/// read at most; here there is no passwd entry for the run's uid, so without HOME
/// `~` stays `~`. The run's tmp/ is private to the run, writable, counted against TMP
/// and gone with it, so a library that keeps data or a cache under `~` (nltk,
/// matplotlib) works and leaves nothing for a later run.
pub const DEFAULT_HOME: &str = "$TMPDIR";

/// The run's directory (the program's cwd) as the program sees it, for the run
/// directory named `workdir_name` (e.g. `/tmp/codejail-ab12cd34`).
pub fn program_workdir(workdir_name: &str) -> String {
    format!("{WORKSPACE_MOUNT}/{workdir_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_directory_is_below_the_workspace_mount() {
        assert_eq!(program_workdir("codejail-1"), "/tmp/codejail-1");
    }
}
