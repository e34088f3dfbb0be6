//! The jail stage's one error type: every variant is named after the step that failed
//! and carries what that step was working on (a path, a name) and the `io::Error`.
//! [`JailError::step`] and [`JailError::message`] turn it into a
//! [`StageReport::Failed`] for the broker.

use std::error::Error as _;
use std::fs::File;
use std::io;

use codejail_plan::names::NameError;

use codejail_plan::{write_frame, StageReport, CONTROL_FD, REPORT_FD, WARM_FD};

/// A step of the jail stage (or of the init or program inside it) that failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The stage is not running single-threaded (fork and unshare need that).
    #[error("the jail stage must be single-threaded")]
    CheckSingleThreaded(#[source] io::Error),
    /// Closing the fds inherited beyond the fd contract failed.
    #[error("cannot close inherited fds above {REPORT_FD}")]
    CloseInheritedFds(#[source] io::Error),
    /// Reading the plan frame from the control pipe failed.
    #[error("cannot read the plan from fd {CONTROL_FD}")]
    ReadPlan(#[source] io::Error),
    /// The control pipe closed before a plan arrived.
    #[error("the control pipe closed before a plan arrived")]
    NoPlan,
    /// A name in the plan is refused (the broker validated it too; this is the check
    /// that counts).
    #[error("refused name in the plan")]
    ValidateName(#[source] NameError),
    /// Another field of the plan is unusable.
    #[error("invalid plan: {0}")]
    ValidatePlan(String),
    /// Writing a report frame to the broker failed.
    #[error("cannot write a report on fd {REPORT_FD}")]
    Report(#[source] io::Error),
    /// `unshare(CLONE_NEWUSER)` failed.
    #[error("unshare(CLONE_NEWUSER)")]
    UnshareUser(#[source] io::Error),
    /// `PR_SET_DUMPABLE 0` failed.
    #[error("prctl(PR_SET_DUMPABLE, 0)")]
    MakeUndumpable(#[source] io::Error),
    /// Writing the stage's own id maps (`/proc/self/{uid_map,setgroups,gid_map}`)
    /// failed.
    #[error("mapping the run's outside uid and gid in its user namespace")]
    WriteIdMaps(#[source] io::Error),
    /// `setresgid` to the run's gid failed.
    #[error("setresgid({gid})")]
    SetGid {
        /// The inner gid.
        gid: u32,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `setresuid` to the run's uid failed.
    #[error("setresuid({uid})")]
    SetUid {
        /// The inner uid.
        uid: u32,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `unshare` of the mount, pid, net, ipc and uts namespaces failed.
    #[error("unshare(CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWUTS)")]
    UnshareNamespaces(#[source] io::Error),
    /// `unshare(CLONE_NEWTIME)` failed.
    #[error("unshare(CLONE_NEWTIME) (time namespaces need Linux 5.6 with CONFIG_TIME_NS)")]
    UnshareTime(#[source] io::Error),
    /// Setting the run's clocks to start at zero (`/proc/self/timens_offsets`) failed.
    #[error("set the time namespace's clock offsets in /proc/self/timens_offsets")]
    SetClockOffsets(#[source] io::Error),
    /// `sethostname` failed.
    #[error("sethostname({hostname:?})")]
    SetHostname {
        /// The host name from the plan.
        hostname: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Opening `/dev/null` or putting it on the stage's or the init's stdio failed.
    #[error("/dev/null for the stage's and the init's stdio")]
    OpenNull(#[source] io::Error),
    /// A warm jail (`warm`): creating the socket pair between the init and the
    /// interpreter, or putting the program's end on [`WARM_FD`], failed.
    #[error("warm jail: {call}")]
    WarmChannel {
        /// The call, e.g. `"socketpair"`.
        call: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A warm jail: the control pipe, whose number the program's end of the channel
    /// takes, was not on [`CONTROL_FD`].
    #[error("warm jail: the control pipe is fd {number}, not {WARM_FD}")]
    WarmChannelFd {
        /// The control pipe's fd.
        number: i32,
    },
    /// A warm jail: sending the interpreter's start-up hook its greeting (with the
    /// modules to preimport) failed.
    #[error("warm jail: greeting the interpreter")]
    WarmGreet(#[source] io::Error),
    /// A warm jail: the interpreter's channel closed or failed before it said `ready`.
    #[error(
        "warm jail: {0}: the interpreter ended before it was ready; is codejail's start-up \
         hook installed in its site-packages (scripts/setup-sandbox-venv.sh)?"
    )]
    WarmNotReady(WarmLineError),
    /// A warm jail: the start-up hook answered something other than `ready`.
    #[error(
        "warm jail: the interpreter's start-up hook said {line:?} instead of ready (is it \
         installed? scripts/setup-sandbox-venv.sh)"
    )]
    WarmNotReadyAnswer {
        /// The hook's line.
        line: String,
    },
    /// The warm jail's interpreter could not import a preimport.
    #[error("preimport: {0}")]
    Preimport(String),
    /// A warm jail: reading the hand-over (the request) from the broker failed.
    #[error("warm jail: reading the hand-over")]
    WarmReadHandOver(#[source] io::Error),
    /// A warm jail: reading the stack limit, against which the hand-over's exec size
    /// is checked, failed.
    #[error("warm jail: getrlimit(RLIMIT_STACK)")]
    WarmStackLimit(#[source] io::Error),
    /// A warm jail: reading the program's CPU clock at the hand-over failed.
    #[error("warm jail: reading the program's CPU clock")]
    WarmCpuClock(#[source] io::Error),
    /// A warm jail: releasing the interpreter (sending `go` and the arguments, then
    /// shutting down the init's side of the channel) failed.
    #[error("warm jail: {what}")]
    WarmRelease {
        /// What was being done, e.g. `"releasing the interpreter"`.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A warm jail: the interpreter's channel closed or failed before its `ack`.
    #[error("warm jail: {0}")]
    WarmAck(WarmLineError),
    /// A warm jail: the interpreter's `ack` is malformed.
    #[error("warm jail: the interpreter acknowledged with {line:?}")]
    WarmBadAck {
        /// The interpreter's line.
        line: String,
    },
    /// Creating the lifeline pipe between the stage and the init failed.
    #[error("create the lifeline pipe")]
    CreateLifeline(#[source] io::Error),
    /// A `fork` failed (`what` is "init" or "program").
    #[error("fork {what}")]
    Fork {
        /// Which process was being forked.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Watching the init (pidfd, poll, wait) failed.
    #[error("watching the init")]
    WatchInit(#[source] io::Error),
    /// A forked run's init could not watch the broker's control pipe (duplicate it,
    /// read it).
    #[error("watching the control pipe")]
    WatchControl(#[source] io::Error),
    /// Arming `PR_SET_PDEATHSIG` in the init failed, or the stage already died.
    #[error("tie the init's life to the stage")]
    TieToStage(#[source] io::Error),
    /// `setsid` in the init failed (the run's own session and process group).
    #[error("give the run its own session")]
    NewSession(#[source] io::Error),
    /// Making every mount private failed.
    #[error("make / and its submounts private")]
    MakeMountsPrivate(#[source] io::Error),
    /// Mounting the workspace tmpfs failed.
    #[error("mount workspace tmpfs at {path} ({options})")]
    MountWorkspace {
        /// The mount point.
        path: String,
        /// The tmpfs options.
        options: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Opening a directory of the workspace (never through a symlink) failed.
    #[error("open directory {path}")]
    OpenDir {
        /// The directory, relative to the workspace (or absolute for its root).
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Creating a directory of the workspace failed.
    #[error("create directory {path}")]
    CreateDir {
        /// The directory, relative to the tmpfs.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Creating or writing a file of the workspace failed.
    #[error("write file {path}")]
    WriteFile {
        /// The file, relative to the workspace.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Creating a symlink of the workspace failed.
    #[error("create symlink {path} -> {target}")]
    CreateSymlink {
        /// The link, relative to the workspace.
        path: String,
        /// Its target, verbatim.
        target: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Setting a warm jail's timestamps to its hand-over failed.
    #[error("set the times of {path} to the hand-over's")]
    Restamp {
        /// The inode's path (as the program sees it).
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Installing the exec filter and its listener in the init failed.
    #[error("install the exec-denial seccomp listener")]
    InstallExecGuard(#[source] io::Error),
    /// Receiving or answering an exec notification failed.
    #[error("answer an exec notification")]
    AnswerExec(#[source] io::Error),
    /// Reaping children in the init failed.
    #[error("reap the run's processes")]
    Reap(#[source] io::Error),
    /// Entering the workspace directory failed.
    #[error("chdir {path}")]
    EnterWorkdir {
        /// The workspace directory.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Resetting signal dispositions and the signal mask failed.
    #[error("reset signal dispositions and mask")]
    ResetSignals(#[source] io::Error),
    /// Setting a resource limit failed.
    #[error("setrlimit({resource}, soft {soft}, hard {hard})")]
    SetRlimit {
        /// The resource name, e.g. `RLIMIT_CPU`.
        resource: &'static str,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Marking the fds above stderr close-on-exec failed.
    #[error("mark fds above 2 close-on-exec")]
    CloseOnExec(#[source] io::Error),
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS)")]
    NoNewPrivs(#[source] io::Error),
    /// Building the run's root (a mount, bind, mkdir or pivot_root) failed.
    #[error("{step} {path}")]
    BuildRoot {
        /// The sub-step, e.g. `"bind"`.
        step: String,
        /// The path it was applied to.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Compiling the seccomp policy failed.
    #[error("seccomp")]
    CompileSeccomp(#[source] super::seccomp::SeccompError),
    /// Installing the seccomp filter failed.
    #[error("seccomp")]
    InstallSeccomp(#[source] super::seccomp::SeccompError),
    /// Dropping capabilities failed.
    #[error("drop capabilities: {0}")]
    DropCapabilities(String),
    /// Landlock could not be applied.
    #[error("landlock")]
    Landlock(#[source] super::landlock::LandlockError),
    /// The kernel's Landlock ABI is below the plan's minimum (0: no Landlock).
    #[error(
        "landlock ABI {min} or newer is required (landlock_min_abi) but this kernel has {}",
        if *.abi == 0 { "no Landlock".to_string() } else { format!("ABI {abi}") }
    )]
    LandlockBelowMinimum {
        /// The kernel's ABI.
        abi: u32,
        /// The plan's minimum.
        min: u32,
    },
    /// The AppArmor exec transition could not be requested.
    #[error("request AppArmor profile {profile:?} on exec")]
    AppArmor {
        /// The profile.
        profile: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `execve` of the program failed.
    #[error("execve {program}")]
    Exec {
        /// The program's path.
        program: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a line from a warm jail's interpreter could not be read (the step is the
/// [`JailError`] variant that carries it). Shown inline, not as a source: the
/// message reads as one sentence.
#[derive(Debug, thiserror::Error)]
pub enum WarmLineError {
    /// The interpreter closed its side, after `after` (a partial line) or nothing.
    #[error(
        "the interpreter closed its hand-over socket{}",
        after.as_ref().map(|a| format!(" after {a:?}")).unwrap_or_default()
    )]
    Closed {
        /// What it had sent of a line, if anything.
        after: Option<String>,
    },
    /// The line is over the cap.
    #[error("a line over {max} bytes")]
    TooLong {
        /// The cap, bytes.
        max: usize,
    },
    /// Reading failed.
    #[error("reading the hand-over socket: {0}")]
    Read(io::Error),
}

/// Longest `message` put in a report: a frame stays below `PIPE_BUF` so the stage,
/// the init and the program never interleave their frames (pipe(7)).
const MAX_REPORT_MESSAGE: usize = 2048;

impl JailError {
    /// The step's name as the broker logs it, e.g. `"mount workspace tmpfs"`.
    pub fn step(&self) -> String {
        let step = match self {
            JailError::CheckSingleThreaded(_) => "check single-threaded",
            JailError::CloseInheritedFds(_) => "close inherited fds",
            JailError::ReadPlan(_) | JailError::NoPlan => "read plan",
            JailError::ValidateName(_) | JailError::ValidatePlan(_) => "validate plan",
            JailError::Report(_) => "write report",
            JailError::UnshareUser(_) => "unshare user namespace",
            JailError::MakeUndumpable(_) => "make undumpable",
            JailError::WriteIdMaps(_) => "write id maps",
            JailError::SetGid { .. } => "set gid",
            JailError::SetUid { .. } => "set uid",
            JailError::UnshareNamespaces(_) => "unshare namespaces",
            JailError::UnshareTime(_) => "unshare time namespace",
            JailError::SetClockOffsets(_) => "set clock offsets",
            JailError::SetHostname { .. } => "set hostname",
            JailError::CreateLifeline(_) => "create lifeline",
            JailError::OpenNull(_) => "stdio to /dev/null",
            JailError::WarmChannel { .. } | JailError::WarmChannelFd { .. } => {
                "create warm channel"
            }
            JailError::WarmGreet(_) => "greet warm interpreter",
            JailError::WarmNotReady(_) | JailError::WarmNotReadyAnswer { .. } => "await warm ready",
            JailError::Preimport(_) => "preimport",
            JailError::WarmReadHandOver(_) => "read hand-over",
            JailError::WarmStackLimit(_) => "check hand-over exec size",
            JailError::WarmCpuClock(_) => "read program CPU clock",
            JailError::WarmRelease { .. } => "release warm interpreter",
            JailError::WarmAck(_) | JailError::WarmBadAck { .. } => "read warm ack",
            JailError::Fork { what, .. } => return format!("fork {what}"),
            JailError::WatchInit(_) => "watch init",
            JailError::WatchControl(_) => "watch control pipe",
            JailError::TieToStage(_) => "tie init to stage",
            JailError::NewSession(_) => "new session",
            JailError::MakeMountsPrivate(_) => "make mounts private",
            JailError::MountWorkspace { .. } => "mount workspace tmpfs",
            JailError::OpenDir { .. } => "open workspace directory",
            JailError::CreateDir { .. } => "create directory",
            JailError::WriteFile { .. } => "write file",
            JailError::CreateSymlink { .. } => "create symlink",
            JailError::Restamp { .. } => "restamp warm jail",
            JailError::InstallExecGuard(_) => "install exec guard",
            JailError::AnswerExec(_) => "answer exec notification",
            JailError::Reap(_) => "reap",
            JailError::EnterWorkdir { .. } => "enter workdir",
            JailError::ResetSignals(_) => "reset signals",
            JailError::SetRlimit { .. } => "set rlimit",
            JailError::CloseOnExec(_) => "close fds on exec",
            JailError::NoNewPrivs(_) => "set no_new_privs",
            JailError::BuildRoot { .. } => "build root",
            JailError::CompileSeccomp(_) => "compile seccomp",
            JailError::InstallSeccomp(_) => "install seccomp",
            JailError::DropCapabilities(_) => "drop capabilities",
            JailError::Landlock(_) | JailError::LandlockBelowMinimum { .. } => "landlock",
            JailError::AppArmor { .. } => "apparmor",
            JailError::Exec { program, .. } => return format!("exec {program}"),
        };
        step.to_string()
    }

    /// The error with its whole source chain, e.g.
    /// `"mount workspace tmpfs at /tmp (mode=0755): Operation not permitted (os error 1)"`.
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }

    /// The report frame for this failure (message capped so the frame stays atomic).
    pub fn to_report(&self) -> StageReport {
        let mut message = self.message();
        if message.len() > MAX_REPORT_MESSAGE {
            let mut end = MAX_REPORT_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        StageReport::Failed {
            step: self.step(),
            message,
        }
    }
}

/// Tell the broker which step failed. Best effort: if the report pipe is gone the
/// broker is gone too, and nothing is left to tell.
pub(crate) fn report_failure(report: &mut File, error: &JailError) {
    let _ = write_frame(report, &error.to_report());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_carries_the_path_and_the_os_error() {
        let e = JailError::WriteFile {
            path: "pkg/mod.py".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(e.step(), "write file");
        let m = e.message();
        assert!(m.starts_with("write file pkg/mod.py: "), "{m}");
        assert!(m.contains("exists"), "{m}");
    }

    #[test]
    fn report_message_is_capped_on_a_char_boundary() {
        let e = JailError::ValidatePlan("é".repeat(4000));
        match e.to_report() {
            StageReport::Failed { step, message } => {
                assert_eq!(step, "validate plan");
                assert!(message.len() <= MAX_REPORT_MESSAGE + 3);
                assert!(message.ends_with("..."));
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = JailError::Exec {
            program: "/usr/bin/python3".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(e.step(), "exec /usr/bin/python3");
    }

    /// Each step of a warm jail's hand-over names itself, and the messages say what
    /// they said when one variant carried them all.
    #[test]
    fn warm_errors_name_their_step() {
        let os = || io::Error::from_raw_os_error(libc::EPIPE);
        let cases = [
            (
                JailError::WarmChannel {
                    call: "socketpair".into(),
                    source: os(),
                },
                "create warm channel",
                "warm jail: socketpair: ",
            ),
            (
                JailError::WarmChannelFd { number: 7 },
                "create warm channel",
                "warm jail: the control pipe is fd 7, not 3",
            ),
            (
                JailError::WarmGreet(os()),
                "greet warm interpreter",
                "warm jail: greeting the interpreter: ",
            ),
            (
                JailError::WarmNotReady(WarmLineError::Closed { after: None }),
                "await warm ready",
                "warm jail: the interpreter closed its hand-over socket: the interpreter \
                 ended before it was ready; is codejail's start-up hook installed in its \
                 site-packages (scripts/setup-sandbox-venv.sh)?",
            ),
            (
                JailError::WarmNotReadyAnswer { line: "hi".into() },
                "await warm ready",
                "warm jail: the interpreter's start-up hook said \"hi\" instead of ready",
            ),
            (
                JailError::WarmReadHandOver(os()),
                "read hand-over",
                "warm jail: reading the hand-over: ",
            ),
            (
                JailError::WarmStackLimit(os()),
                "check hand-over exec size",
                "warm jail: getrlimit(RLIMIT_STACK): ",
            ),
            (
                JailError::WarmCpuClock(os()),
                "read program CPU clock",
                "warm jail: reading the program's CPU clock: ",
            ),
            (
                JailError::WarmRelease {
                    what: "releasing the interpreter",
                    source: os(),
                },
                "release warm interpreter",
                "warm jail: releasing the interpreter: ",
            ),
            (
                JailError::WarmAck(WarmLineError::Closed {
                    after: Some("ac".into()),
                }),
                "read warm ack",
                "warm jail: the interpreter closed its hand-over socket after \"ac\"",
            ),
            (
                JailError::WarmAck(WarmLineError::TooLong { max: 4096 }),
                "read warm ack",
                "warm jail: a line over 4096 bytes",
            ),
            (
                JailError::WarmAck(WarmLineError::Read(os())),
                "read warm ack",
                "warm jail: reading the hand-over socket: ",
            ),
            (
                JailError::WarmBadAck {
                    line: "ack x".into(),
                },
                "read warm ack",
                "warm jail: the interpreter acknowledged with \"ack x\"",
            ),
        ];
        for (error, step, message) in cases {
            assert_eq!(error.step(), step, "{error:?}");
            let m = error.message();
            assert!(
                m.starts_with(message),
                "{m:?} does not start with {message:?}"
            );
        }
    }
}
