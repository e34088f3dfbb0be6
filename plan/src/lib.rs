//! The contract between the broker and its jail stage (`codejail-jail`), the one thing
//! both sides of that trust boundary share: the [`Plan`] the broker decides for a run
//! and sends to the stage on a pipe, the [`StageReport`]s the stage sends back, their
//! blocking framing, the rules for peer-supplied names ([`names`]) that the client,
//! the broker and the stage all apply, and where things are in the run's view
//! ([`layout`]). Declarative data only: the code that applies a plan is the stage's,
//! kept apart from these types so that the broker, which decides a plan, never links
//! the code that builds a jail.
//! No async runtime, no sockets, no processes: the stage must never link tokio.
//!
//! # The stage's file descriptors (set up by the broker, see `codejail_broker::run`)
//!
//! | fd | direction | what |
//! |----|-----------|------|
//! | 0  | broker -> program | the program's stdin (a pipe) |
//! | 1  | program -> broker | the program's stdout (a pipe) |
//! | 2  | program -> broker | the program's stderr (a pipe) |
//! | 3  | broker -> stage | control: one [`Plan`] frame; EOF at any time means "kill the run now" |
//! | 4  | stage -> broker | reports: a sequence of [`StageReport`] frames |
//! | 5  | broker -> init | warm jails only ([`Plan::warm`]): one [`HandOver`] frame, the request the waiting jail is given |
//!
//! Frames on fds 3 and 4 are a 4-byte big-endian length and a postcard body.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

pub mod layout;
pub mod named_bytes;
pub mod names;

pub use names::NameError;

/// The control pipe fd in the stage.
pub const CONTROL_FD: i32 = 3;
/// The report pipe fd in the stage.
pub const REPORT_FD: i32 = 4;
/// The hand-over pipe fd of a warm jail's stage (absent in cold runs).
pub const HANDOVER_FD: i32 = 5;
/// The fd of a warm jail's program on which the interpreter's start-up hook talks to
/// the init (`jail/warm/_codejail_warm.py`): the number the control pipe had, which the
/// init never passes on. Cold programs never have it open.
pub const WARM_FD: i32 = 3;
/// The fork server's words on the socket between the broker and a zygote
/// (docs/architecture.md, "Fork server"): the broker asks for a child with
/// `FORK_REQUEST`, or `FORK_REQUEST UID GID` for a child that takes a run's own
/// outside ids, each a line with the child's fds; the zygote answers `FORKED PID` with
/// a pidfd of the child (made by the clone: there always is one).
pub const FORK_REQUEST: &str = "fork";
/// See [`FORK_REQUEST`].
pub const FORKED: &str = "forked";
/// Largest plan frame the stage accepts (files travel inside the plan).
pub const MAX_PLAN_FRAME: usize = 256 * 1024 * 1024;
/// Largest report frame (reports are small; anything bigger is a bug or an attack).
pub const MAX_REPORT_FRAME: usize = 64 * 1024;

/// The open-file limit of a run's program when nothing else is asked (the `NOFILE`
/// limit's default).
pub const DEFAULT_NOFILE: u64 = 1024;

/// One entry of the run's workspace, sent by the client (the broker never reads
/// caller paths). Paths are relative, `/`-separated, validated by the broker and again
/// by the stage ([`names::check_relative_path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path inside the workspace, e.g. `pylib/module.py`.
    pub path: String,
    /// What to create there.
    pub kind: EntryKind,
}

/// The kind of a [`FileEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file with these contents.
    File {
        /// The file's bytes.
        #[serde(with = "serde_bytes")]
        contents: Vec<u8>,
        /// Whether any execute bit was set on the caller's side.
        executable: bool,
    },
    /// A directory (its contents come as further entries).
    Dir,
    /// A symbolic link, kept as a link and never followed by the broker.
    Symlink {
        /// The link's target, verbatim.
        target: String,
    },
}

/// The newest Landlock ABI the jail stage asks for: a minimum above it can never hold.
pub const NEWEST_LANDLOCK_ABI: u32 = 7;

/// What Landlock achieved for a run (reported by the stage, shown by the broker), with
/// the kernel's Landlock ABI as the stage used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Achieved {
    /// Every requested restriction holds.
    Full {
        /// The ABI.
        abi: u32,
    },
    /// Some hold: the kernel's ABI is older than the newest the stage knows.
    Partial {
        /// The ABI.
        abi: u32,
    },
    /// The kernel has no Landlock.
    None,
}

impl Achieved {
    /// The kernel's Landlock ABI (0 without Landlock).
    pub fn abi(self) -> u32 {
        match self {
            Achieved::Full { abi } | Achieved::Partial { abi } => abi,
            Achieved::None => 0,
        }
    }
}

/// The uid and gid the program has inside its user namespace (never 0).
pub const INNER_RUN_ID: u32 = 1000;

/// Resource limits as the stage applies them (`None` = not limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    /// RLIMIT_CPU seconds (soft n, hard n+1).
    pub cpu_secs: Option<u64>,
    /// RLIMIT_AS bytes.
    pub vmem_bytes: Option<u64>,
    /// RLIMIT_FSIZE bytes (0 = no file may be written).
    pub fsize_bytes: u64,
    /// RLIMIT_NPROC: processes+threads of the program. The stage adds the run's own
    /// processes that share the program's uid and are counted with it: the init, and
    /// the stage itself when it runs as the run's uid (since Linux 5.14 the count is
    /// per user namespace and uid, so it is per run).
    pub nproc: Option<u64>,
    /// RLIMIT_NOFILE, soft = hard (never the broker's own: always set).
    pub nofile: u64,
    /// tmpfs `size=` of the workspace, bytes.
    pub tmp_bytes: Option<u64>,
    /// tmpfs `nr_inodes=` of the workspace.
    pub tmp_inodes: Option<u64>,
}

/// One run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Absolute path of the program to exec (the configured interpreter).
    pub program: String,
    /// `argv[0..]` as the program sees it, e.g. `["python", "-E", "-B", "jailed_code", ...]`.
    pub argv: Vec<String>,
    /// The whole environment of the program besides `TMPDIR` (set by the stage).
    pub env: Vec<(String, String)>,
    /// The code, written to `jailed_code` when present.
    #[serde(with = "serde_bytes")]
    pub code: Option<Vec<u8>>,
    /// Files, directories, symlinks (already validated by the broker; the stage
    /// validates again and never follows a link).
    pub files: Vec<FileEntry>,
    /// Extra files at the top level.
    #[serde(with = "named_bytes")]
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The skeleton root: an existing host directory (absolute) on which the stage
    /// mounts the small tmpfs it builds the run's root view in, in the run's own mount
    /// namespace (hiding what the host has there from the run only), before
    /// `pivot_root` into it, e.g. `/tmp`. Not the workspace: the workspace is its own
    /// tmpfs, mounted on the new root's [`layout::WORKSPACE_MOUNT`]. The broker's
    /// setting for it is `tmpfs_mount`.
    pub skeleton_root: String,
    /// Host directories exposed read-only (and executable) in the run's view besides
    /// the system's `/usr` and `/lib*`: the sandbox environment, package dirs.
    pub ro_paths: Vec<String>,
    /// The workspace directory's name inside the tmpfs (the program's cwd), e.g.
    /// `codejail-17`.
    pub workdir_name: String,
    /// Limits to apply.
    pub limits: RunLimits,
    /// RLIMIT_SIGPENDING of the program (queued signals, and the POSIX timers that
    /// each reserve one), when the broker bounds it: where every run is the same
    /// outside uid (dev), the kernel charges all runs' signals to that one uid, so the
    /// broker gives each run its share. `None`: the stage's own limit (per-run uids
    /// charge each run's user namespace to its own uid).
    pub sigpending: Option<u64>,
    /// The host name inside the run's UTS namespace.
    pub hostname: String,
    /// Refuse to run unless the kernel's Landlock ABI is at least this (0: Landlock is
    /// applied with whatever the kernel has, or not at all).
    pub landlock_min_abi: u32,
    /// The newest Landlock ABI the stage asks for: [`NEWEST_LANDLOCK_ABI`], or less to
    /// get the rules an older kernel would enforce (the tests of older ABIs).
    pub landlock_max_abi: u32,
    /// The AppArmor profile the program's exec stacks on, where the kernel has
    /// AppArmor and one is configured.
    pub apparmor_profile: Option<String>,
    /// Let the program's processes exec after the program's own start (the command's
    /// `allow_exec`); otherwise every later exec fails with `EACCES` (`execguard`).
    pub allow_exec: bool,
    /// Build a warm jail: the program starts, imports these modules, and waits for a
    /// [`HandOver`] on [`HANDOVER_FD`] instead of running at once (`None`: a cold run).
    pub warm: Option<WarmPlan>,
}

/// What a warm jail prepares before its request exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WarmPlan {
    /// Modules the interpreter imports while it waits (e.g. `numpy`).
    pub preimport: Vec<String>,
}

/// The request a warm jail is handed: what a cold run's plan carries of it. The init
/// writes the files into the workspace (which the program cannot write), caps the
/// workspace and the program's limits, then releases the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOver {
    /// The code, written to `jailed_code` (a warm jail always runs `jailed_code`).
    #[serde(with = "serde_bytes")]
    pub code: Vec<u8>,
    /// Files, directories, symlinks (validated again by the stage, as a plan's).
    pub files: Vec<FileEntry>,
    /// Extra files at the top level.
    #[serde(with = "named_bytes")]
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The program's arguments after `jailed_code`.
    pub args: Vec<String>,
    /// The request's limits, counted from the hand-over.
    pub limits: RunLimits,
}

impl Default for RunLimits {
    /// Nothing limited but what is always set: no file may be written (FSIZE 0, as
    /// upstream) and NOFILE at its default.
    fn default() -> Self {
        RunLimits {
            cpu_secs: None,
            vmem_bytes: None,
            fsize_bytes: 0,
            nproc: None,
            nofile: DEFAULT_NOFILE,
            tmp_bytes: None,
            tmp_inodes: None,
        }
    }
}

impl Plan {
    /// Drop what the plan carries of the request (code, files, extra files, the
    /// arguments), once it has been serialised for the stage: the broker need not
    /// hold it for the run.
    pub fn drop_payload(&mut self) {
        self.code = None;
        self.files = Vec::new();
        self.extra_files = Vec::new();
        self.argv = Vec::new();
    }
}

/// What the stage (and the init inside the jail) tells the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageReport {
    /// A step failed before the program was exec'd; nothing of the user's ran.
    Failed {
        /// The step that failed, e.g. `"mount workspace tmpfs"`.
        step: String,
        /// The error, e.g. the `io::Error` text with the path.
        message: String,
    },
    /// The program's last layers are in place; sent just before exec.
    Confined {
        /// What Landlock achieved.
        landlock: Achieved,
        /// Entries of the seccomp deny list installed.
        seccomp_denied: u32,
    },
    /// The broker ended the run (REALTIME, cancel): the stage killed the init and
    /// reaped it, whose usage covers every process of the run (the kernel reaps them
    /// into the init as the pid namespace dies).
    Killed {
        /// User CPU of the whole run, microseconds.
        cpu_user_us: u64,
        /// System CPU of the whole run, microseconds.
        cpu_sys_us: u64,
        /// Largest peak RSS of any process of the run, KiB.
        max_rss_kib: u64,
    },
    /// A warm jail is built and its interpreter waits for a [`HandOver`] (sent by the
    /// init once the start-up hook has imported the preimports).
    Ready,
    /// The program ended (sent by the init, PID 1 of the run).
    Exited {
        /// Exit code when it exited.
        exit_code: Option<i32>,
        /// Signal number when killed by a signal.
        signal: Option<i32>,
        /// User CPU, microseconds (wait4 rusage of the program and what it reaped).
        cpu_user_us: u64,
        /// System CPU, microseconds.
        cpu_sys_us: u64,
        /// Peak RSS, KiB.
        max_rss_kib: u64,
    },
}

/// One frame (length + postcard body), serialised into a buffer of its exact size
/// (its size is counted first): a plan carries the run's files, and a buffer grown as
/// it is written would be copied at each growth and end up to twice their size.
pub fn encode_frame<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(invalid)?;
    let len = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    let mut buf = Vec::with_capacity(4 + size);
    buf.extend_from_slice(&len.to_be_bytes());
    let buf = postcard::to_extend(value, buf).map_err(invalid)?;
    debug_assert_eq!(buf.len(), 4 + size, "the counted size is the written size");
    Ok(buf)
}

/// Write one frame (length + postcard body) to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    // One write: report frames are below PIPE_BUF, so concurrent writers (stage and
    // init) never interleave (pipe(7)).
    w.write_all(&encode_frame(value)?)
}

/// Read one frame from a blocking reader. `Ok(None)` on a clean EOF before the frame.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<T>> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; frame_len(head, max)?];
    r.read_exact(&mut body)?;
    decode_body(&body).map(Some)
}

/// The body length a frame's 4-byte header declares, refused over `max` before
/// anything is allocated (for readers of either kind: this one, the broker's async one).
pub fn frame_len(head: [u8; 4], max: usize) -> io::Result<usize> {
    let len = u32::from_be_bytes(head) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the cap of {max}"),
        ));
    }
    Ok(len)
}

/// Decode a frame's body.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame is written into a buffer of its exact size: a grown one would have
    /// been copied at each growth and could hold up to twice the plan's files.
    #[test]
    fn a_frame_is_encoded_into_a_buffer_of_its_exact_size() {
        let handover = HandOver {
            code: vec![7u8; 100_000],
            files: vec![FileEntry {
                path: "a".into(),
                kind: EntryKind::File {
                    contents: vec![1u8; 3 << 20],
                    executable: false,
                },
            }],
            extra_files: vec![("b".into(), vec![2u8; 70_000])],
            args: vec!["x".into()],
            limits: RunLimits::default(),
        };
        let frame = encode_frame(&handover).expect("encode");
        assert_eq!(frame.capacity(), frame.len());
        let body = frame_len(frame[..4].try_into().expect("head"), MAX_PLAN_FRAME).expect("len");
        assert_eq!(body, frame.len() - 4);
        assert_eq!(
            decode_body::<HandOver>(&frame[4..]).expect("decode"),
            handover
        );
    }

    /// Named files' contents are serde bytes, which postcard encodes as it did the
    /// plain `Vec<u8>` sequence: either form reads as the other.
    #[test]
    fn named_files_keep_the_wire_encoding_of_plain_sequences() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Named {
            #[serde(with = "named_bytes")]
            files: Vec<(String, Vec<u8>)>,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Plain {
            files: Vec<(String, Vec<u8>)>,
        }
        let files = vec![
            ("a".to_string(), (0..=255u8).collect::<Vec<_>>()),
            ("b".to_string(), Vec::new()),
        ];
        let named = postcard::to_stdvec(&Named {
            files: files.clone(),
        })
        .expect("named");
        let plain = postcard::to_stdvec(&Plain {
            files: files.clone(),
        })
        .expect("plain");
        assert_eq!(named, plain);
        let back: Named = postcard::from_bytes(&plain).expect("decode");
        assert_eq!(back.files, files);
    }

    #[test]
    fn frames_round_trip_and_cap_holds() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &StageReport::Ready).expect("write");
        let rep = StageReport::Failed {
            step: "x".into(),
            message: "y".into(),
        };
        write_frame(&mut buf, &rep).expect("write");
        let mut r = &buf[..];
        assert_eq!(
            read_frame::<_, StageReport>(&mut r, 100).expect("read"),
            Some(StageReport::Ready)
        );
        assert_eq!(
            read_frame::<_, StageReport>(&mut r, 100).expect("read"),
            Some(rep)
        );
        assert_eq!(
            read_frame::<_, StageReport>(&mut r, 100).expect("eof"),
            None
        );
        let big = [0xff, 0xff, 0xff, 0xff];
        assert!(read_frame::<_, StageReport>(&mut &big[..], 100).is_err());
    }
}
