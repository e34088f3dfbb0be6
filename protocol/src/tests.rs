//! The wire encodings: frozen handshake bytes, round trips, and malformed input.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::*;

#[test]
fn hello_encoding_is_frozen() {
    let hello = Hello {
        magic: HELLO_MAGIC,
        protocol_version: 1,
        client_version: "0.1.0".into(),
    };
    // These bytes are the contract: magic, varint version, length-prefixed string.
    let bytes = encode(&hello).expect("encode");
    assert_eq!(bytes, b"CJL\x01\x01\x050.1.0".to_vec());
    assert_eq!(decode::<Hello>(&bytes).expect("decode"), hello);
}

/// The byte fields of an Exec (code, files' contents, extra files, stdin) are
/// serde bytes, which postcard encodes exactly as it did the plain `Vec<u8>`
/// sequences they were before: a request of either form reads as the other.
#[test]
fn byte_fields_keep_the_wire_encoding_of_plain_sequences() {
    #[derive(Serialize)]
    enum PlainKind {
        File { contents: Vec<u8>, executable: bool },
        Dir,
        Symlink { target: String },
    }
    #[derive(Serialize)]
    struct PlainEntry {
        path: String,
        kind: PlainKind,
    }
    #[derive(Serialize)]
    struct PlainExec {
        command: String,
        code: Option<Vec<u8>>,
        argv: Vec<String>,
        files: Vec<PlainEntry>,
        extra_files: Vec<(String, Vec<u8>)>,
        stdin: Vec<u8>,
        limits: BTreeMap<String, u64>,
        limits_context: Option<String>,
        slug: Option<String>,
    }
    let big: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let plain = PlainExec {
        command: "python".into(),
        code: Some(b"print(1)".to_vec()),
        argv: vec!["a".into()],
        files: vec![
            PlainEntry {
                path: "f.bin".into(),
                kind: PlainKind::File {
                    contents: big.clone(),
                    executable: true,
                },
            },
            PlainEntry {
                path: "d".into(),
                kind: PlainKind::Dir,
            },
            PlainEntry {
                path: "l".into(),
                kind: PlainKind::Symlink {
                    target: "f.bin".into(),
                },
            },
        ],
        extra_files: vec![("x".into(), big.clone()), ("y".into(), Vec::new())],
        stdin: big.clone(),
        limits: [("CPU".to_string(), 2)].into_iter().collect(),
        limits_context: None,
        slug: Some("s".into()),
    };
    let exec = Exec {
        command: "python".into(),
        code: Some(b"print(1)".to_vec()),
        argv: vec!["a".into()],
        files: vec![
            FileEntry {
                path: "f.bin".into(),
                kind: EntryKind::File {
                    contents: big.clone(),
                    executable: true,
                },
            },
            FileEntry {
                path: "d".into(),
                kind: EntryKind::Dir,
            },
            FileEntry {
                path: "l".into(),
                kind: EntryKind::Symlink {
                    target: "f.bin".into(),
                },
            },
        ],
        extra_files: vec![("x".into(), big.clone()), ("y".into(), Vec::new())],
        stdin: big,
        limits: [("CPU".to_string(), 2)].into_iter().collect(),
        limits_context: None,
        slug: Some("s".into()),
    };
    let plain_bytes = encode(&plain).expect("plain");
    assert_eq!(encode(&exec).expect("exec"), plain_bytes);
    assert_eq!(decode::<Exec>(&plain_bytes).expect("decode"), exec);
    let no_code = Exec {
        code: None,
        ..exec.clone()
    };
    let plain_no_code = PlainExec {
        code: None,
        ..plain
    };
    assert_eq!(
        encode(&no_code).expect("exec"),
        encode(&plain_no_code).expect("plain")
    );
}

#[test]
fn a_contexts_value_overrides_the_default_and_an_unknown_context_has_none() {
    let mut defaults = Limits::default();
    defaults.set(LimitName::Realtime, 3);
    let report = LimitsReport::new(
        &defaults,
        &BTreeMap::new(),
        &[(
            "course-v1:big".to_string(),
            [(LimitName::Realtime, 10)].into_iter().collect(),
        )]
        .into_iter()
        .collect(),
    );
    assert_eq!(report.defaults.len(), LimitName::ALL.len(), "every limit");
    assert_eq!(report.value(None, LimitName::Realtime), Some(3));
    assert_eq!(
        report.value(Some("course-v1:big"), LimitName::Realtime),
        Some(10)
    );
    assert_eq!(
        report.value(Some("course-v1:big"), LimitName::Cpu),
        Some(1),
        "a limit the context does not override keeps its default"
    );
    assert_eq!(report.value(Some("other"), LimitName::Realtime), Some(3));
    assert_eq!(
        LimitsReport::default().value(None, LimitName::Realtime),
        None
    );
}

#[test]
fn welcome_head_reads_any_welcome() {
    let welcome = Welcome {
        protocol_version: 7,
        broker_version: "9.9.9".into(),
        refused: Some("no".into()),
        status: StatusReport {
            broker_version: "9.9.9".into(),
            protocol_version: 7,
            mode: Mode::Dev,
            layers: BTreeMap::new(),
            load: Load::default(),
            pool: Default::default(),
            commands: BTreeMap::new(),
            limits: LimitsReport::default(),
        },
    };
    let bytes = encode(&welcome).expect("encode");
    let head: WelcomeHead = decode_prefix(&bytes).expect("head");
    assert_eq!(head.protocol_version, 7);
    assert_eq!(head.broker_version, "9.9.9");
    assert_eq!(head.refused.as_deref(), Some("no"));
}

fn decode_prefix<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, postcard::Error> {
    postcard::take_from_bytes(b).map(|(v, _)| v)
}

#[test]
fn requests_and_responses_round_trip() {
    let exec = Exec {
        command: "python".into(),
        code: Some(b"print(1)".to_vec()),
        argv: vec!["a".into()],
        files: vec![
            FileEntry {
                path: "d".into(),
                kind: EntryKind::Dir,
            },
            FileEntry {
                path: "d/f".into(),
                kind: EntryKind::File {
                    contents: vec![0, 255],
                    executable: true,
                },
            },
            FileEntry {
                path: "l".into(),
                kind: EntryKind::Symlink {
                    target: "/etc/passwd".into(),
                },
            },
        ],
        extra_files: vec![("x".into(), vec![1])],
        stdin: vec![9; 1000],
        limits: [("CPU".to_string(), 3u64)].into_iter().collect(),
        limits_context: Some("course".into()),
        slug: Some("s".into()),
    };
    let req = Request::Exec(Box::new(exec));
    let back: Request = decode(&encode(&req).expect("enc")).expect("dec");
    assert_eq!(back, req);
    for resp in [
        Response::Queued { position: 2 },
        Response::Started { run_id: 5 },
        Response::Stdout(vec![1, 2]),
        Response::Stderr(vec![]),
        Response::Finished(Finished {
            status: -9,
            usage: Usage {
                wall_ms: 3,
                peak_memory_bytes: Some(4),
                ..Usage::default()
            },
            limit_hit: Some("REALTIME".into()),
            truncated: true,
            output_limit: 1 << 20,
            workdir: "/tmp/codejail-x".into(),
            pid: 4242,
        }),
        Response::Error {
            kind: ErrorKind::Busy,
            message: "busy".into(),
        },
        Response::Status(StatusReport {
            broker_version: "1".into(),
            protocol_version: PROTOCOL_VERSION,
            mode: Mode::Confined,
            layers: BTreeMap::new(),
            load: Load::default(),
            pool: Default::default(),
            commands: [(
                "python".to_string(),
                CommandInfo {
                    bin: "/sandbox/bin/python".into(),
                    allow_exec: true,
                },
            )]
            .into_iter()
            .collect(),
            limits: LimitsReport::new(
                &Limits::default(),
                &[(LimitName::Cpu, 5)].into_iter().collect(),
                &[(
                    "course".to_string(),
                    [(LimitName::Realtime, 3)].into_iter().collect(),
                )]
                .into_iter()
                .collect(),
            ),
        }),
    ] {
        let back: Response = decode(&encode(&resp).expect("enc")).expect("dec");
        assert_eq!(back, resp);
    }
}

#[test]
fn garbage_does_not_decode_as_request() {
    for bad in [
        &b""[..],
        &b"\xff\xff\xff\xff\xff"[..],
        &b"\x09"[..],
        &b"\x00"[..],
    ] {
        assert!(decode::<Request>(bad).is_err(), "{bad:?} decoded");
    }
}

#[test]
fn truncated_request_is_an_error() {
    let req = Request::Exec(Box::new(Exec {
        command: "python".into(),
        code: Some(b"print(1)".to_vec()),
        ..Exec::default()
    }));
    let bytes = encode(&req).expect("enc");
    for cut in 0..bytes.len() {
        assert!(decode::<Request>(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn declared_huge_length_is_refused_without_allocating() {
    // Exec with a code length prefix of ~4 GiB but no bytes behind it.
    let mut bytes = encode(&Request::Status).expect("enc");
    bytes.clear();
    bytes.extend_from_slice(&[0x00, 0x06, b'p', b'y', b't', b'h', b'o', b'n', 0x01]);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(decode::<Request>(&bytes).is_err());
}

#[test]
fn status_semantics_match_upstream() {
    assert_eq!(upstream_status(Some(0), None), 0);
    assert_eq!(upstream_status(Some(1), None), 1);
    assert_eq!(upstream_status(None, Some(9)), -9);
    assert_eq!(upstream_status(None, Some(24)), -24);
}
