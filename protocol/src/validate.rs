//! Validation of a whole request's names ([`check_exec_names`]); the rules for one
//! name are the stage contract's ([`codejail_plan::names`]), re-exported here.

pub use codejail_plan::names::*;

use crate::{EntryKind, Exec};

/// Check every name in an [`Exec`]: entry paths (parents listed first, no
/// duplicates), extra file names (top level only), and the command name.
pub fn check_exec_names(exec: &Exec) -> Result<(), NameError> {
    if exec.command.is_empty()
        || exec.command.len() > 64
        || !exec
            .command
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(NameError::BadCommand(exec.command.clone()));
    }
    let total = exec.files.len() + exec.extra_files.len();
    if total > MAX_ENTRIES {
        return Err(NameError::TooMany(total));
    }
    let mut dirs = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    for entry in &exec.files {
        check_relative_path(&entry.path)?;
        if !seen.insert(entry.path.as_str()) {
            return Err(NameError::Duplicate(entry.path.clone()));
        }
        if let Some((parent, _)) = entry.path.rsplit_once('/') {
            if !dirs.contains(parent) {
                return Err(NameError::NoParent(entry.path.clone()));
            }
        }
        if matches!(entry.kind, EntryKind::Dir) {
            dirs.insert(entry.path.as_str());
        }
        if let EntryKind::Symlink { target } = &entry.kind {
            if target.is_empty() || target.contains('\0') || target.len() > 4096 {
                return Err(NameError::ControlChar(target.clone()));
            }
        }
    }
    for (name, _) in &exec.extra_files {
        check_relative_path(name)?;
        if name.contains('/') {
            return Err(NameError::ExtraFileInSubdir(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(NameError::Duplicate(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileEntry;

    fn file(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: EntryKind::File {
                contents: vec![],
                executable: false,
            },
        }
    }

    #[test]
    fn entries_need_their_parent_and_no_duplicates() {
        let mut exec = Exec {
            command: "python".into(),
            files: vec![file("d/x")],
            ..Exec::default()
        };
        assert_eq!(
            check_exec_names(&exec),
            Err(NameError::NoParent("d/x".into()))
        );
        exec.files.insert(
            0,
            FileEntry {
                path: "d".into(),
                kind: EntryKind::Dir,
            },
        );
        check_exec_names(&exec).expect("parent listed");
        exec.extra_files.push(("d".into(), vec![]));
        assert_eq!(
            check_exec_names(&exec),
            Err(NameError::Duplicate("d".into()))
        );
        exec.extra_files = vec![("sub/x".into(), vec![])];
        assert_eq!(
            check_exec_names(&exec),
            Err(NameError::ExtraFileInSubdir("sub/x".into()))
        );
    }

    #[test]
    fn command_must_be_plain() {
        for bad in ["", "../python", "/usr/bin/python", "py thon"] {
            let exec = Exec {
                command: bad.into(),
                ..Exec::default()
            };
            assert!(check_exec_names(&exec).is_err(), "{bad:?}");
        }
    }
}
