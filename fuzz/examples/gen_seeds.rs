//! Writes the seed corpora into `fuzz/seeds/TARGET/` (committed; rerun after a change
//! of the wire types): `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use codejail_fuzz::SAMPLE_CONFIG;
use codejail_plan::{Plan, RunLimits};
use codejail_protocol::{encode, EntryKind, Exec, FileEntry, Hello, Request};

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join(name), bytes).expect("write seed");
}

fn exec_with_files() -> Exec {
    Exec {
        command: "python".into(),
        code: Some(b"print(open('pylib/data.txt').read())\n".to_vec()),
        argv: vec!["--flag".into(), "x".into()],
        files: vec![
            FileEntry {
                path: "pylib".into(),
                kind: EntryKind::Dir,
            },
            FileEntry {
                path: "pylib/data.txt".into(),
                kind: EntryKind::File {
                    contents: b"hello".to_vec(),
                    executable: false,
                },
            },
            FileEntry {
                path: "pylib/run.sh".into(),
                kind: EntryKind::File {
                    contents: b"#!/bin/sh\n".to_vec(),
                    executable: true,
                },
            },
            FileEntry {
                path: "link".into(),
                kind: EntryKind::Symlink {
                    target: "pylib/data.txt".into(),
                },
            },
        ],
        extra_files: vec![("extra.bin".into(), vec![0, 1, 2, 255])],
        stdin: b"input\n".to_vec(),
        limits: BTreeMap::from([("CPU".into(), 3), ("REALTIME".into(), 5)]),
        limits_context: Some("course-v1:Org+Course+Run".into()),
        slug: Some("seed".into()),
    }
}

fn plan() -> Plan {
    let exec = exec_with_files();
    Plan {
        program: "/usr/bin/python3".into(),
        argv: vec![
            "/usr/bin/python3".into(),
            "-E".into(),
            "-B".into(),
            "jailed_code".into(),
        ],
        env: vec![
            ("LC_ALL".into(), "C.UTF-8".into()),
            ("MPLCONFIGDIR".into(), "$TMPDIR".into()),
        ],
        code: exec.code,
        files: exec.files,
        extra_files: exec.extra_files,
        skeleton_root: "/tmp".into(),
        ro_paths: vec!["/usr".into(), "/opt/sandbox".into()],
        workdir_name: "codejail-0123abcd".into(),
        limits: RunLimits {
            cpu_secs: Some(1),
            vmem_bytes: None,
            fsize_bytes: 0,
            nproc: Some(15),
            tmp_bytes: Some(64 << 20),
            tmp_inodes: Some(16384),
            ..RunLimits::default()
        },
        sigpending: None,
        hostname: "codejail".into(),
        landlock_min_abi: 1,
        landlock_max_abi: codejail_plan::NEWEST_LANDLOCK_ABI,
        apparmor_profile: Some("codejail-sandbox".into()),
        allow_exec: false,
        warm: None,
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let hello = encode(&Hello::current()).expect("encode");
    let exec = encode(&Request::Exec(Box::new(exec_with_files()))).expect("encode");
    let minimal = Request::Exec(Box::new(Exec {
        command: "python".into(),
        code: Some(b"pass".to_vec()),
        ..Exec::default()
    }));
    let minimal = encode(&minimal).expect("encode");
    let status = encode(&Request::Status).expect("encode");

    // frame: the first byte is the read size, then a connection's bytes.
    let mut conn = vec![7u8];
    for body in [&hello, &exec, &status] {
        conn.extend(frame(body));
    }
    write(&dir, "frame", "hello-exec-status", &conn);
    let mut one = vec![255u8];
    one.extend(frame(&hello));
    write(&dir, "frame", "hello", &one);
    let mut over = vec![1u8];
    over.extend([0, 0, 0x10, 0x01]);
    write(&dir, "frame", "over-cap", &over);

    write(&dir, "request", "exec-with-files", &exec);
    write(&dir, "request", "exec-minimal", &minimal);
    write(&dir, "request", "status", &status);

    write(
        &dir,
        "plan",
        "plan",
        &frame(&postcard::to_stdvec(&plan()).expect("encode")),
    );

    write(&dir, "config", "sample.toml", SAMPLE_CONFIG.as_bytes());
    write(
        &dir,
        "config",
        "minimal.toml",
        b"[commands.python]\nbin = \"/usr/bin/python3\"\n",
    );
    write(
        &dir,
        "config",
        "run-ids.toml",
        b"max_running = 2\nrun_ids = { first = 200000, count = 64 }\n[cgroup]\nmode = \"v1\"\nv1_memory = \"/sys/fs/cgroup/memory/codejail\"\n[commands.python]\nbin = \"/usr/bin/python3\"\n",
    );

    for (name, text) in [
        (
            "nan-inf",
            r#"[NaN, Infinity, -Infinity, 1e308, -0.0, 5e-324]"#,
        ),
        (
            "big-ints",
            "[123456789012345678901234567890, -98765432109876543210987654321, 0, -0]",
        ),
        (
            "surrogates",
            r#"{"lone": "\ud800", "low": "\udfff", "pair": "\ud83d\ude00", "esc": "\n\t\"\\\/\u00e9"}"#,
        ),
        (
            "nested",
            r#"{"a": [1, 2.5, {"b": null, "c": true, "d": false}], "e": {}, "f": []}"#,
        ),
        (
            "globals",
            r#"{"result": 42, "answer": "forty-two", "dup": 1, "dup": 2}"#,
        ),
    ] {
        write(&dir, "pyjson", name, text.as_bytes());
    }
    println!("seeds written to {}", dir.display());
}
