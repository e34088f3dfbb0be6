//! codejail-protocol: the wire between a caller (the `codejail-client` crate) and the
//! broker daemon. Types only, plus the framing codec: no sockets, no processes.
//!
//! A connection is a sequence of length-delimited frames
//! ([`tokio_util::codec::LengthDelimitedCodec`], 4-byte big-endian length, explicit cap),
//! each carrying one `postcard`-encoded value:
//!
//! 1. client -> broker: [`Hello`] (frozen forever: any version can read it);
//! 2. broker -> client: [`Welcome`] (its first three fields are frozen forever, so any
//!    client can read the broker's version and a refusal, see [`WelcomeHead`]);
//! 3. then any number of [`Request`]s, one at a time, each answered by a stream of
//!    [`Response`]s that ends with [`Response::Finished`], [`Response::Error`] or
//!    [`Response::Status`]. The broker reads a connection's next request only once the
//!    previous run is cleaned up (its cgroup removed, its uid back in the pool); a
//!    frame sent while a run is in progress cancels that run.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod codec;
pub mod limits;
pub mod render;
pub mod validate;

pub use codec::{decode, decode_head, encode, framed, CodecError, DEFAULT_MAX_FRAME};
pub use limits::{LimitName, Limits};

/// The protocol version spoken by this crate. Bump it whenever anything after the
/// handshake changes its encoding.
pub const PROTOCOL_VERSION: u32 = 4;

/// The magic that opens every [`Hello`]: lets the broker tell a codejail client from
/// anything else that connects to its socket.
pub const HELLO_MAGIC: [u8; 4] = *b"CJL\x01";

/// The first frame a client sends. **Frozen forever**: its encoding must never change,
/// so that every broker version can read any client's version and refuse cleanly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`HELLO_MAGIC`].
    pub magic: [u8; 4],
    /// The protocol version the client speaks.
    pub protocol_version: u32,
    /// The client's crate version, for logs.
    pub client_version: String,
}

impl Hello {
    /// The `Hello` this crate sends.
    pub fn current() -> Self {
        Hello {
            magic: HELLO_MAGIC,
            protocol_version: PROTOCOL_VERSION,
            client_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The frozen head of every [`Welcome`]: a client of any version decodes this prefix
/// (postcard ignores trailing bytes) to learn the broker's version or why it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeHead {
    /// The protocol version the broker speaks.
    pub protocol_version: u32,
    /// The broker's crate version.
    pub broker_version: String,
    /// `Some(reason)` when the broker refuses this connection; it closes right after.
    pub refused: Option<String>,
}

/// The broker's answer to [`Hello`]. The first three fields are [`WelcomeHead`]
/// (frozen); the rest may change with the protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the broker speaks.
    pub protocol_version: u32,
    /// The broker's crate version.
    pub broker_version: String,
    /// `Some(reason)` when the broker refuses this connection; it closes right after.
    pub refused: Option<String>,
    /// How the broker confines runs, layer by layer.
    pub status: StatusReport,
}

/// Production (`Confined`) or development (`Dev`) broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Started from a config file, every required layer present.
    Confined,
    /// Started with `--dev`: confines with what an unprivileged user has.
    Dev,
}

impl Mode {
    /// The name used in `codejail-client status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Confined => "confined",
            Mode::Dev => "dev",
        }
    }
}

/// How completely one confinement layer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerState {
    /// Applied as designed.
    Full,
    /// Applied in part (the detail says what is missing).
    Partial,
    /// Not applied.
    Unavailable,
}

impl LayerState {
    /// The name used in `codejail-client status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerState::Full => "full",
            LayerState::Partial => "partial",
            LayerState::Unavailable => "unavailable",
        }
    }
}

/// One confinement layer in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Achieved state.
    pub state: LayerState,
    /// Whether the broker's policy requires it.
    pub required: bool,
    /// Whether it achieves the least the broker's configuration asks of it: `full`,
    /// except Landlock, whose minimum is an ABI (`landlock_min_abi`) that an older
    /// kernel's `partial` Landlock may meet. A required layer must hold.
    pub holds: bool,
    /// Human-readable detail: what is applied, or what is missing and how to get it.
    pub detail: String,
}

/// The broker's load at the time of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Load {
    /// Runs executing now.
    pub running: u32,
    /// Requests waiting for a slot.
    pub queued: u32,
    /// Configured parallel runs.
    pub max_running: u32,
    /// Configured queue length.
    pub max_queue: u32,
}

/// What `codejail-client status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The broker's crate version.
    pub broker_version: String,
    /// The protocol version the broker speaks.
    pub protocol_version: u32,
    /// Confined or dev.
    pub mode: Mode,
    /// Confinement layers by name.
    pub layers: BTreeMap<String, Layer>,
    /// Current load.
    pub load: Load,
    /// The configured commands by name (`python`, ...): what each one runs.
    pub commands: BTreeMap<String, CommandInfo>,
    /// The warm pool by command (empty when none is configured).
    pub pool: BTreeMap<String, PoolStatus>,
    /// The limits the broker applies: callers that must know a run's limits before
    /// it ends (the HTTP front's deadline) read them here instead of repeating them.
    pub limits: LimitsReport,
}

/// The broker's limit policy in the [`StatusReport`]. A run's limits are the
/// defaults, then its context's overrides (an unknown context has none), then the
/// values of its request, each within its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitsReport {
    /// Every limit's default, by name.
    pub defaults: BTreeMap<String, u64>,
    /// The ceilings a request's values may not exceed, by name.
    pub ceilings: BTreeMap<String, u64>,
    /// The named override contexts: the limits each one overrides.
    pub contexts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl LimitsReport {
    /// The report of a policy given as typed values.
    pub fn new(
        defaults: &Limits,
        ceilings: &BTreeMap<LimitName, u64>,
        contexts: &BTreeMap<String, BTreeMap<LimitName, u64>>,
    ) -> Self {
        let named = |m: &BTreeMap<LimitName, u64>| -> BTreeMap<String, u64> {
            m.iter()
                .map(|(n, v)| (n.as_str().to_string(), *v))
                .collect()
        };
        LimitsReport {
            defaults: defaults
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v))
                .collect(),
            ceilings: named(ceilings),
            contexts: contexts
                .iter()
                .map(|(c, m)| (c.clone(), named(m)))
                .collect(),
        }
    }

    /// The value of `name` for a run in `context` whose request sets no value of its
    /// own: the context's override, else the default (`None` if the broker did not
    /// report it).
    pub fn value(&self, context: Option<&str>, name: LimitName) -> Option<u64> {
        context
            .and_then(|c| self.contexts.get(c))
            .and_then(|o| o.get(name.as_str()))
            .or_else(|| self.defaults.get(name.as_str()))
            .copied()
    }
}

/// One command's warm pool in the [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Warm jails kept ready.
    pub size: u32,
    /// Warm jails ready now.
    pub ready: u32,
    /// Modules a warm jail has imported.
    pub preimport: Vec<String>,
    /// Runs served by a warm jail.
    pub hits: u64,
    /// Runs of this command served cold (pool empty, or a request it cannot serve).
    pub misses: u64,
    /// Resident memory of an idle warm jail's interpreter, KiB (the last one built).
    pub idle_rss_kib: u64,
    /// Memory an idle warm jail's cgroup holds, bytes (`None` without a memory cgroup).
    pub idle_memory_bytes: Option<u64>,
}

/// One configured command in the [`StatusReport`]: callers check it against their own
/// idea of the interpreter (the Python package compares `bin` with `configure()`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// The absolute path of the program the command runs, as configured.
    pub bin: String,
    /// Whether the program may exec other programs after its own start.
    pub allow_exec: bool,
}

impl StatusReport {
    /// True when every required layer holds (achieves its configured minimum).
    pub fn required_layers_hold(&self) -> bool {
        self.missing_required().next().is_none()
    }

    /// The required layers that do not hold, by name.
    pub fn missing_required(&self) -> impl Iterator<Item = (&String, &Layer)> {
        self.layers.iter().filter(|(_, l)| l.required && !l.holds)
    }
}

pub use codejail_plan::{EntryKind, FileEntry};

/// Run a program in a fresh jail (upstream's `jail_code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Exec {
    /// Configured command name, e.g. `python`.
    pub command: String,
    /// The program text, written to `jailed_code` and run; `None` runs `argv[0]`.
    #[serde(with = "serde_bytes")]
    pub code: Option<Vec<u8>>,
    /// Arguments after the program.
    pub argv: Vec<String>,
    /// Files, directories and symlinks copied in (upstream's `files`).
    pub files: Vec<FileEntry>,
    /// `(name, contents)` pairs written at the top of the workspace.
    #[serde(with = "codejail_plan::named_bytes")]
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The program's standard input.
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    /// Per-request limit values by upstream name (`CPU`, `VMEM`, ...).
    pub limits: BTreeMap<String, u64>,
    /// A named override context (the LMS uses the course id); unknown = no overrides.
    pub limits_context: Option<String>,
    /// A label for logs.
    pub slug: Option<String>,
}

/// A request after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Run a program; answered by a stream ending in `Finished` or `Error`.
    Exec(Box<Exec>),
    /// Ask for the broker's status; answered by `Status`.
    Status,
}

/// Resource usage of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// User CPU time, milliseconds.
    pub cpu_user_ms: u64,
    /// System CPU time, milliseconds.
    pub cpu_sys_ms: u64,
    /// Wall-clock time from start to end, milliseconds.
    pub wall_ms: u64,
    /// Peak resident set size of the program, KiB.
    pub max_rss_kib: u64,
    /// Peak memory of the run's cgroup, where one is used.
    pub peak_memory_bytes: Option<u64>,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Upstream's status: exit code, or minus the signal number.
    pub status: i32,
    /// Resource usage.
    pub usage: Usage,
    /// The limit that ended (or, for `OUTPUT`, cut) the run, by name.
    pub limit_hit: Option<String>,
    /// Output beyond the cap was discarded.
    pub truncated: bool,
    /// The run's `OUTPUT` limit: bytes of stdout and stderr together kept.
    pub output_limit: u64,
    /// The run's directory (the program's cwd) as the program saw it.
    pub workdir: String,
    /// A host pid of the run (the jail stage's), as upstream logs the pid of its
    /// sandboxed process; the process is gone by the time this arrives.
    pub pid: u32,
}

/// A broker answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The request waits for a slot; `position` requests are ahead of it.
    Queued {
        /// Requests ahead in the queue.
        position: u32,
    },
    /// The run has a slot and its jail is being built.
    Started {
        /// The run's id, as in the broker's log.
        run_id: u64,
    },
    /// A chunk of the program's standard output.
    Stdout(Vec<u8>),
    /// A chunk of the program's standard error.
    Stderr(Vec<u8>),
    /// The run ended.
    Finished(Finished),
    /// The request failed; the connection stays usable unless the kind says otherwise.
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
    /// The answer to [`Request::Status`].
    Status(StatusReport),
}

/// A typed error on the wire (internal errors never cross it as text dumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or names something invalid.
    InvalidRequest,
    /// The command name is not configured.
    UnknownCommand,
    /// A limit name is not known.
    UnknownLimit,
    /// A limit value is above its configured ceiling.
    LimitAboveCeiling,
    /// A file name is unsafe (absolute, `..`, NUL, clash, ...).
    BadFileName,
    /// Every slot and the queue are full: try again later.
    Busy,
    /// The broker is shutting down.
    ShuttingDown,
    /// The jail could not be built; nothing ran.
    JailFailed,
    /// Something inside the broker failed.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::UnknownCommand => "unknown command",
            ErrorKind::UnknownLimit => "unknown limit",
            ErrorKind::LimitAboveCeiling => "limit above ceiling",
            ErrorKind::BadFileName => "bad file name",
            ErrorKind::Busy => "busy",
            ErrorKind::ShuttingDown => "shutting down",
            ErrorKind::JailFailed => "jail failed",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// Upstream's status for a wait status: the exit code, or minus the signal number.
pub fn upstream_status(exit_code: Option<i32>, signal: Option<i32>) -> i32 {
    match (exit_code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => -sig,
        (None, None) => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
