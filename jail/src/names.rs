//! The stage's check of every peer-supplied name in a plan, before anything is built
//! (the broker checked them too; this is the check that counts). The shared rules for
//! one relative path are the plan crate's ([`codejail_plan::names`]).

use codejail_plan::names::check_relative_path;
use codejail_plan::{EntryKind, Plan};

use super::error::JailError;

/// Longest symlink target accepted (PATH_MAX).
const MAX_LINK_TARGET: usize = 4096;

/// Validate every peer-supplied name of the plan again (the broker did too; this is
/// the check that counts): entries and extra files with
/// [`check_relative_path`], extra files at the top level only, the workdir as one
/// plain component, link targets without NUL, and the skeleton root absolute.
pub(crate) fn check_names(plan: &Plan) -> Result<(), JailError> {
    if !plan.skeleton_root.starts_with('/') || plan.skeleton_root.contains('\0') {
        return Err(JailError::ValidatePlan(format!(
            "skeleton root (tmpfs_mount) {:?} is not an absolute path",
            plan.skeleton_root
        )));
    }
    check_relative_path(&plan.workdir_name).map_err(JailError::ValidateName)?;
    if plan.workdir_name.contains('/') {
        return Err(JailError::ValidatePlan(format!(
            "workdir name {:?} must be a single component",
            plan.workdir_name
        )));
    }
    for entry in &plan.files {
        check_relative_path(&entry.path).map_err(JailError::ValidateName)?;
        if let EntryKind::Symlink { target } = &entry.kind {
            if target.is_empty() || target.contains('\0') || target.len() > MAX_LINK_TARGET {
                return Err(JailError::ValidatePlan(format!(
                    "symlink {:?} has an empty, too long or NUL-containing target",
                    entry.path
                )));
            }
        }
    }
    for (name, _) in &plan.extra_files {
        check_relative_path(name).map_err(JailError::ValidateName)?;
        if name.contains('/') {
            return Err(JailError::ValidatePlan(format!(
                "extra file {name:?} must be at the top level"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use codejail_plan::FileEntry;

    fn plan() -> Plan {
        crate::test_plan("codejail-1")
    }

    #[test]
    fn hostile_names_are_refused_before_anything_is_created() {
        check_names(&plan()).expect("plain plan");
        let file = |path: &str| FileEntry {
            path: path.into(),
            kind: EntryKind::Dir,
        };
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "tmp",
            "jailed_code",
            "a//b",
        ] {
            let mut p = plan();
            p.files.push(file(bad));
            assert!(check_names(&p).is_err(), "entry {bad:?} accepted");
            let mut p = plan();
            p.extra_files.push((bad.into(), vec![]));
            assert!(check_names(&p).is_err(), "extra file {bad:?} accepted");
        }
        let mut p = plan();
        p.extra_files.push(("sub/x".into(), vec![]));
        assert!(check_names(&p).is_err());
        for bad in ["..", "a/b", ""] {
            let mut p = plan();
            p.workdir_name = bad.into();
            assert!(check_names(&p).is_err(), "workdir {bad:?} accepted");
        }
        let mut p = plan();
        p.skeleton_root = "tmp".into();
        assert!(check_names(&p).is_err());
        let mut p = plan();
        p.files.push(FileEntry {
            path: "link".into(),
            kind: EntryKind::Symlink {
                target: "a\0b".into(),
            },
        });
        assert!(check_names(&p).is_err());
    }
}
