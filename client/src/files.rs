//! Reading caller-side `files` into wire entries, with upstream's copy semantics: a
//! file by its base name, a directory recursively, and a symlink as a symlink — never
//! followed, at the top or inside a directory. The broker cannot and must not read
//! caller paths, so the client sends contents.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use codejail_protocol::validate::{check_relative_path, NameError, MAX_ENTRIES};
pub use codejail_protocol::{EntryKind, FileEntry};

use crate::ClientError;

/// Read each caller path into entries: the destination name is the path's base name;
/// a directory gives a `Dir` entry followed by its contents (sorted by name, parents
/// before children, paths like `pylib/module.py`); a symlink gives a `Symlink` with
/// its target verbatim. Every produced path is checked as the broker will check it.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<FileEntry>, ClientError> {
    let mut entries = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .ok_or_else(|| NameError::DotComponent(path.display().to_string()))?;
        let name = name
            .to_str()
            .ok_or_else(|| ClientError::NonUtf8Name { path: path.clone() })?;
        collect_one(path, name.to_string(), &mut entries)?;
    }
    Ok(entries)
}

/// Append the entry for `path` (and, for a directory, its contents) at `dest`.
fn collect_one(path: &Path, dest: String, out: &mut Vec<FileEntry>) -> Result<(), ClientError> {
    check_relative_path(&dest)?;
    if out.len() >= MAX_ENTRIES {
        return Err(NameError::TooMany(out.len() + 1).into());
    }
    let read_err = |source| ClientError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    // symlink_metadata: lstat(2), so a link is seen as a link and never followed.
    let meta = fs::symlink_metadata(path).map_err(read_err)?;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(read_err)?;
        let target =
            target
                .into_os_string()
                .into_string()
                .map_err(|_| ClientError::NonUtf8Name {
                    path: path.to_path_buf(),
                })?;
        out.push(FileEntry {
            path: dest,
            kind: EntryKind::Symlink { target },
        });
    } else if file_type.is_dir() {
        out.push(FileEntry {
            path: dest.clone(),
            kind: EntryKind::Dir,
        });
        let mut children = fs::read_dir(path)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err)?;
        // Sorted so that the same tree always gives the same request.
        children.sort();
        for child in children {
            let child_path = path.join(&child);
            let child_name = child.into_string().map_err(|_| ClientError::NonUtf8Name {
                path: child_path.clone(),
            })?;
            collect_one(&child_path, format!("{dest}/{child_name}"), out)?;
        }
    } else if file_type.is_file() {
        let contents = fs::read(path).map_err(read_err)?;
        out.push(FileEntry {
            path: dest,
            kind: EntryKind::File {
                contents,
                executable: meta.permissions().mode() & 0o111 != 0,
            },
        });
    } else {
        // FIFOs, sockets and devices: reading one could block forever or never end.
        return Err(ClientError::UnsupportedFileType {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn file(contents: &[u8], executable: bool) -> EntryKind {
        EntryKind::File {
            contents: contents.to_vec(),
            executable,
        }
    }

    #[test]
    fn copies_like_upstream() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::write(root.join("hello.txt"), b"hi\n").expect("write");
        fs::write(root.join("run.sh"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).expect("chmod");
        fs::create_dir_all(root.join("pylib/sub")).expect("mkdir");
        fs::write(root.join("pylib/module.py"), b"X = 1\n").expect("write");
        fs::write(root.join("pylib/sub/deep.py"), b"Y = 2\n").expect("write");
        fs::write(root.join("secret"), b"outside").expect("write");
        // A link inside the directory: kept as a link, its target not read.
        symlink(root.join("secret"), root.join("pylib/a_link")).expect("symlink");
        // A top-level link to a file outside: kept as a link with its target verbatim.
        symlink("../elsewhere/secret", root.join("toplink")).expect("symlink");

        let entries = collect(&[
            root.join("hello.txt"),
            root.join("run.sh"),
            root.join("pylib"),
            root.join("toplink"),
        ])
        .expect("collect");

        let expected = vec![
            FileEntry {
                path: "hello.txt".into(),
                kind: file(b"hi\n", false),
            },
            FileEntry {
                path: "run.sh".into(),
                kind: file(b"#!/bin/sh\n", true),
            },
            FileEntry {
                path: "pylib".into(),
                kind: EntryKind::Dir,
            },
            FileEntry {
                path: "pylib/a_link".into(),
                kind: EntryKind::Symlink {
                    target: root.join("secret").to_str().expect("utf8").to_string(),
                },
            },
            FileEntry {
                path: "pylib/module.py".into(),
                kind: file(b"X = 1\n", false),
            },
            FileEntry {
                path: "pylib/sub".into(),
                kind: EntryKind::Dir,
            },
            FileEntry {
                path: "pylib/sub/deep.py".into(),
                kind: file(b"Y = 2\n", false),
            },
            FileEntry {
                path: "toplink".into(),
                kind: EntryKind::Symlink {
                    target: "../elsewhere/secret".into(),
                },
            },
        ];
        assert_eq!(entries, expected);
        // What we produce is what the broker accepts.
        let exec = codejail_protocol::Exec {
            command: "python".into(),
            files: entries,
            ..Default::default()
        };
        codejail_protocol::validate::check_exec_names(&exec).expect("broker-valid");
    }

    #[test]
    fn a_symlink_to_a_directory_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("real")).expect("mkdir");
        fs::write(tmp.path().join("real/f"), b"x").expect("write");
        symlink("real", tmp.path().join("dirlink")).expect("symlink");
        let entries = collect(&[tmp.path().join("dirlink")]).expect("collect");
        assert_eq!(
            entries,
            vec![FileEntry {
                path: "dirlink".into(),
                kind: EntryKind::Symlink {
                    target: "real".into()
                },
            }]
        );
    }

    #[test]
    fn errors_are_clear() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("missing.py");
        let err = collect(std::slice::from_ref(&missing)).expect_err("missing");
        assert!(matches!(err, ClientError::ReadFile { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.py"), "{err}");

        fs::write(tmp.path().join("jailed_code"), b"").expect("write");
        let err = collect(&[tmp.path().join("jailed_code")]).expect_err("reserved");
        assert!(
            matches!(err, ClientError::InvalidName(NameError::Reserved(..))),
            "{err:?}"
        );

        let err = collect(&[PathBuf::from("/")]).expect_err("no base name");
        assert!(matches!(err, ClientError::InvalidName(_)), "{err:?}");

        let bad = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9");
        fs::write(tmp.path().join(bad), b"").expect("write");
        let err = collect(&[tmp.path().join(bad)]).expect_err("non-utf8");
        assert!(matches!(err, ClientError::NonUtf8Name { .. }), "{err:?}");
    }
}
