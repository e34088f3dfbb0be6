//! Unit tests of the workspace: masks, tmpfs options, and the file-writing half on a
//! plain directory (no mount, no privilege).

use super::*;
use codejail_plan::FileEntry;

fn plan() -> Plan {
    crate::test_plan("codejail-1")
}

#[test]
fn symlinks_out_of_the_run_into_tmp_are_masked_by_their_first_component() {
    let p = plan();
    let m = |link: &str, target: &str| masked_component(&p, link, target);
    assert_eq!(m("l", "/tmp/tmpab12/secret"), Some("tmpab12".into()));
    assert_eq!(m("l", "../tmpab12/x"), Some("tmpab12".into()));
    assert_eq!(m("sub/l", "../../other"), Some("other".into()));
    assert_eq!(m("l", "/tmp/./x/../y"), Some("y".into()));
    // Inside the run's directory, the host outside /tmp, or /tmp itself: no mask.
    assert_eq!(m("l", "sibling.txt"), None);
    assert_eq!(m("l", "/tmp/codejail-1/sibling"), None);
    assert_eq!(m("sub/l", "../x"), None);
    assert_eq!(m("l", "/etc/passwd"), None);
    assert_eq!(m("l", "/tmp"), None);
    assert_eq!(m("l", "../../../../etc"), None);
}

/// Masks are created as mode-0 directories beside the run's directory.
#[test]
fn masks_are_mode_zero_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan();
    p.files = vec![FileEntry {
        path: "out".into(),
        kind: EntryKind::Symlink {
            target: "/tmp/tmpcaller/secret".into(),
        },
    }];
    let root = open_absolute_dir(dir.path().to_str().expect("utf-8")).expect("open");
    mask_symlink_targets(root.as_fd(), &p).expect("mask");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir.path().join("tmpcaller")).expect("mask exists");
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0);
    // Twice is fine (an existing entry is left alone).
    mask_symlink_targets(root.as_fd(), &p).expect("mask again");
}

#[test]
fn tmpfs_options_carry_the_limits() {
    assert_eq!(tmpfs_options(&RunLimits::default()), "mode=0755");
    let limits = RunLimits {
        tmp_bytes: Some(1 << 20),
        tmp_inodes: Some(100),
        ..RunLimits::default()
    };
    assert_eq!(
        tmpfs_options(&limits),
        "mode=0755,size=1048576,nr_inodes=100"
    );
}

/// The file-writing half works on any directory (no mount, no privilege): it
/// creates what is asked and refuses to write through a symlink.
#[test]
fn entries_are_created_without_following_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan();
    let at = dir.path().to_str().expect("utf-8 temp path");
    p.code = Some(b"print(1)".to_vec());
    p.files = vec![
        FileEntry {
            path: "pkg".into(),
            kind: EntryKind::Dir,
        },
        FileEntry {
            path: "pkg/mod.py".into(),
            kind: EntryKind::File {
                contents: b"X = 42".to_vec(),
                executable: false,
            },
        },
        FileEntry {
            path: "run.sh".into(),
            kind: EntryKind::File {
                contents: b"#!/bin/sh".to_vec(),
                executable: true,
            },
        },
        FileEntry {
            path: "out".into(),
            kind: EntryKind::Symlink {
                target: "/etc".into(),
            },
        },
    ];
    p.extra_files = vec![("extra.txt".into(), b"extra".to_vec())];
    populate_workspace(&p, at).expect("populate");
    let work = dir.path().join("codejail-1");
    use std::os::unix::fs::PermissionsExt;
    let mode = |rel: &str| {
        std::fs::symlink_metadata(work.join(rel))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        std::fs::read(work.join("pkg/mod.py")).expect("read"),
        b"X = 42"
    );
    assert_eq!(
        std::fs::read(work.join("jailed_code")).expect("read"),
        b"print(1)"
    );
    assert_eq!(
        std::fs::read(work.join("extra.txt")).expect("read"),
        b"extra"
    );
    let umask = current_umask();
    assert_eq!(mode("run.sh"), 0o755 & !umask);
    assert_eq!(mode("pkg/mod.py"), 0o644 & !umask);
    assert_eq!(mode("tmp"), 0o700 & !umask);
    assert_eq!(
        std::fs::read_link(work.join("out"))
            .expect("readlink")
            .to_str(),
        Some("/etc")
    );

    // A file below the link must not land in /etc.
    let mut p2 = p.clone();
    p2.workdir_name = "codejail-2".into();
    p2.code = None;
    p2.extra_files = vec![];
    p2.files = vec![
        FileEntry {
            path: "out".into(),
            kind: EntryKind::Symlink {
                target: work.to_str().expect("utf-8").to_string(),
            },
        },
        FileEntry {
            path: "out/escaped".into(),
            kind: EntryKind::File {
                contents: vec![],
                executable: false,
            },
        },
    ];
    let err = populate_workspace(&p2, at).expect_err("walked through a symlink");
    assert_eq!(err.step(), "open workspace directory");
    assert!(err.message().contains("out"), "{}", err.message());
    assert!(!work.join("escaped").exists());
}

/// Read, not set: tests run in parallel threads sharing the umask.
fn current_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}
