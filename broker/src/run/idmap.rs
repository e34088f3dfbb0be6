//! The id maps of a run's user namespace, written from *outside* by the broker (which
//! holds `CAP_SETUID`/`CAP_SETGID` in the initial namespace, or in dev mode maps only
//! its own ids) after the stage reported `NeedMaps`. Plain file writes, no `unsafe`.

use std::io;

use codejail_plan::INNER_RUN_ID;

/// Map the run's outer uid and gid to [`INNER_RUN_ID`] in the user namespace of the
/// process `pid` (the jail stage), writing `uid_map`, then `setgroups`, then
/// `gid_map`, in the order user_namespaces(7) requires: `setgroups` must be set
/// before `gid_map`, and an unprivileged writer must write `deny` there to be allowed
/// a `gid_map` at all. `allow_setgroups` (so the stage can clear its supplementary
/// groups) needs `CAP_SETGID` in the parent namespace.
///
/// Exactly one id is mapped and it is never inner 0: the stage keeps the capabilities
/// it got in the new namespace across `setresuid` (capabilities(7)), and no process
/// of the run is ever root anywhere.
pub fn write_id_maps(
    pid: u32,
    outer_uid: u32,
    outer_gid: u32,
    allow_setgroups: bool,
) -> io::Result<()> {
    let dir = format!("/proc/{pid}");
    write_proc_file(&format!("{dir}/uid_map"), &id_map_line(outer_uid))?;
    write_proc_file(
        &format!("{dir}/setgroups"),
        if allow_setgroups { "allow" } else { "deny" },
    )?;
    write_proc_file(&format!("{dir}/gid_map"), &id_map_line(outer_gid))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines_map_one_id_to_the_inner_run_id() {
        assert_eq!(id_map_line(4242), "1000 4242 1\n");
    }

    #[test]
    fn a_missing_process_is_an_error_naming_the_file() {
        // pid 0 never has a /proc entry.
        let e = write_id_maps(0, 1, 1, false).expect_err("no such process");
        assert!(e.to_string().contains("/proc/0/uid_map"), "{e}");
    }
}
