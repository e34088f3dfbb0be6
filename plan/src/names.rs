//! Rules for peer-supplied names, applied by the client (early, friendly errors), the
//! broker (before anything is decided) and the jail stage (the check that counts).
//! Never trust a path from the peer.

use crate::layout::{CODE_FILE, TMP_DIR};

/// Names the stage creates itself in every workspace; files may not clash with them.
pub const RESERVED_NAMES: [&str; 2] = [CODE_FILE, TMP_DIR];

/// Longest accepted path, bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest accepted single component, bytes (NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most entries in one request.
pub const MAX_ENTRIES: usize = 10_000;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty path or component.
    #[error("file name {0:?} is empty or has an empty component")]
    Empty(String),
    /// Absolute path.
    #[error("file name {0:?} is absolute")]
    Absolute(String),
    /// `.` or `..` component.
    #[error("file name {0:?} has a '.' or '..' component")]
    DotComponent(String),
    /// NUL or another control character.
    #[error("file name {0:?} contains a NUL or control character")]
    ControlChar(String),
    /// Too long.
    #[error("file name {0:?} is too long")]
    TooLong(String),
    /// Clashes with `jailed_code` or `tmp`.
    #[error("file name {0:?} clashes with the reserved name {1:?}")]
    Reserved(String, &'static str),
    /// An extra file with a directory part.
    #[error("extra file name {0:?} must not contain '/'")]
    ExtraFileInSubdir(String),
    /// Listed twice.
    #[error("file name {0:?} is given twice")]
    Duplicate(String),
    /// Its parent directory was not listed before it.
    #[error("file name {0:?} has no directory entry for its parent")]
    NoParent(String),
    /// Too many entries.
    #[error("too many files ({0}, at most {MAX_ENTRIES})")]
    TooMany(usize),
    /// The command name is not a plain name.
    #[error("command name {0:?} is not a plain name")]
    BadCommand(String),
}

/// Check one relative path: no absolute path, no `.`/`..`, no NUL or control
/// characters, bounded length, no clash with a reserved top-level name.
pub fn check_relative_path(path: &str) -> Result<(), NameError> {
    let owned = || path.to_string();
    if path.is_empty() {
        return Err(NameError::Empty(owned()));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(NameError::TooLong(owned()));
    }
    if path.starts_with('/') {
        return Err(NameError::Absolute(owned()));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(NameError::ControlChar(owned()));
    }
    for (i, comp) in path.split('/').enumerate() {
        if comp.is_empty() {
            return Err(NameError::Empty(owned()));
        }
        if comp == "." || comp == ".." {
            return Err(NameError::DotComponent(owned()));
        }
        if comp.len() > MAX_COMPONENT_LEN {
            return Err(NameError::TooLong(owned()));
        }
        if i == 0 {
            if let Some(r) = RESERVED_NAMES.iter().find(|r| **r == comp) {
                return Err(NameError::Reserved(owned(), r));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "nul\0byte",
            "new\nline",
            "jailed_code",
            "tmp",
            "tmp/x",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_relative_path(&"x".repeat(300)).is_err());
        for good in [
            "hello.txt",
            "pylib/module.py",
            "tmpfile",
            "a b",
            "é.py",
            ".hidden",
        ] {
            check_relative_path(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }
}
