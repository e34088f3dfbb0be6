//! The program: PID 2 of the run, forked by the init. It applies the last, per-process
//! layers to itself and execs the configured interpreter. Nothing of the user's runs
//! before the `execve` at the end of `exec_program`.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;

use nix::sys::prctl;
use nix::unistd::{chdir, execve};

use super::error::{report_failure, JailError};
use super::execguard::ExecSentinel;
use super::rlimits::apply_rlimits;
use super::seccomp::{self, Filters};
use super::stage::{Returned, Start};
use super::sys;
use super::workspace::workdir_path;
use super::{apparmor, landlock};
use codejail_plan::layout::TMP_DIR;
use codejail_plan::Plan;
use codejail_plan::{write_frame, StageReport};

/// Clear every capability set of this process (bounding and ambient included).
fn drop_capabilities() -> Result<(), JailError> {
    use caps::CapSet;
    for set in [
        CapSet::Ambient,
        CapSet::Bounding,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| JailError::DropCapabilities(format!("{set:?}: {e}")))?;
    }
    Ok(())
}

pub use codejail_plan::layout::{DEFAULT_HOME, DEFAULT_PATH};

/// Exit status of the program process when a step before `execve` failed (as a
/// shell's "command not found"); a `Failed` report precedes it.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// Everything `execve` needs, converted to C strings by the stage before it forks
/// anything, so a bad plan fails early and the program allocates nothing new.
#[derive(Debug)]
pub(crate) struct ExecSpec {
    /// The program's path, for error messages.
    pub(crate) program_shown: String,
    /// The program's path.
    pub(crate) program: CString,
    /// `argv`.
    pub(crate) argv: Vec<CString>,
    /// The whole environment: `TMPDIR`, `PATH` and `HOME` (unless the plan sets them),
    /// then the plan's variables (a value `$TMPDIR` or `$TMPDIR/...` names the run's
    /// tmp/).
    pub(crate) env: Vec<CString>,
    /// The workdir (the program's cwd).
    pub(crate) workdir: CString,
    /// The workdir as text, for error messages.
    pub(crate) workdir_shown: String,
}

impl ExecSpec {
    /// Build the spec from the plan, refusing anything `execve` could not take or
    /// that would make the environment ambiguous.
    pub(crate) fn from_plan(plan: &Plan) -> Result<Self, JailError> {
        let invalid = |what: String| JailError::ValidatePlan(what);
        let c = c_string;
        if !plan.program.starts_with('/') {
            return Err(invalid(format!(
                "program {:?} is not an absolute path",
                plan.program
            )));
        }
        if plan.argv.is_empty() {
            return Err(invalid("argv is empty".to_string()));
        }
        let workdir_shown = workdir_path(plan);
        let tmpdir = format!("{workdir_shown}/{TMP_DIR}");
        let mut env = vec![c("environment variable", &format!("TMPDIR={tmpdir}"))?];
        // Upstream's programs run under sudo, which sets a PATH and a HOME; callers'
        // tests check that there is a PATH, and libraries resolve `~` from HOME (nltk,
        // imported by capa's chemistry names, refuses to import without one). Nothing
        // else of any outside environment is passed on.
        let defaults = [("PATH", DEFAULT_PATH), ("HOME", DEFAULT_HOME)];
        let unset = defaults
            .iter()
            .filter(|(key, _)| !plan.env.iter().any(|(k, _)| k == key))
            .map(|&(k, v)| (k.to_string(), v.to_string()));
        let variables: Vec<(String, String)> = unset.chain(plan.env.iter().cloned()).collect();
        for (key, value) in &variables {
            if key.is_empty() || key.contains('=') || key == "TMPDIR" {
                return Err(invalid(format!(
                    "environment variable name {key:?} is empty, has a '=' or is TMPDIR"
                )));
            }
            // A value naming the run's tmp/ (which only the stage knows the path of):
            // `$TMPDIR` or `$TMPDIR/...`.
            let value = match value.strip_prefix("$TMPDIR") {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{tmpdir}{rest}"),
                _ => value.clone(),
            };
            env.push(c("environment variable", &format!("{key}={value}"))?);
        }
        Ok(ExecSpec {
            program_shown: plan.program.clone(),
            program: c("program", &plan.program)?,
            argv: plan
                .argv
                .iter()
                .map(|a| c("argument", a))
                .collect::<Result<_, _>>()?,
            env,
            workdir: c("workdir", &workdir_shown)?,
            workdir_shown,
        })
    }

    /// The same spec with `args` after the plan's argv, checked as [`from_plan`]
    /// checks the plan's (a warm jail's hand-over: the exec a cold run of the request
    /// would make).
    ///
    /// [`from_plan`]: ExecSpec::from_plan
    pub(crate) fn with_args(mut self, args: &[String]) -> Result<Self, JailError> {
        for arg in args {
            self.argv.push(c_string("argument", arg)?);
        }
        Ok(self)
    }
}

/// `s` as a C string for execve, refused (naming `what`) when it holds a NUL.
fn c_string(what: &str, s: &str) -> Result<CString, JailError> {
    CString::new(s).map_err(|_| JailError::ValidatePlan(format!("{what} {s:?} contains a NUL")))
}

/// `ARG_MAX` of the kernel's headers: the room for argument and environment strings
/// that execve(2) grants whatever the stack limit.
const KERNEL_ARG_MAX: u64 = 131_072;
/// `_STK_LIM`: the kernel's default stack limit, 3/4 of which caps that room.
const KERNEL_STK_LIM: u64 = 8 << 20;

impl ExecSpec {
    /// Refuse, as execve(2) would with `E2BIG`, a program, argv and environment that do
    /// not fit the kernel's room for them under the stack limit `stack` (the soft
    /// `RLIMIT_STACK` at the exec). A warm jail's program was started before its
    /// request's arguments existed, so its init applies this at the hand-over to the
    /// argv a cold run would exec: both paths then fail alike (see `warm`).
    ///
    /// The kernel's rule (fs/exec.c, `bprm_stack_limits` and `copy_strings`): each
    /// string with its NUL is at most `MAX_ARG_STRLEN` (32 pages); the strings (the
    /// file name, the environment, the arguments, each with its NUL) and a pointer per
    /// argument and variable fit in `max(min(stack / 4, _STK_LIM / 4 * 3), ARG_MAX)`.
    pub(crate) fn check_exec_size(&self, stack: u64) -> Result<(), JailError> {
        let too_big = || JailError::Exec {
            program: self.program_shown.clone(),
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        };
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(4096);
        let max_strlen = page.saturating_mul(32);
        let room = (stack / 4).clamp(KERNEL_ARG_MAX, KERNEL_STK_LIM / 4 * 3);
        let pointers = (self.argv.len().max(1) + self.env.len()) as u64 * 8;
        let mut left = room
            .checked_sub(pointers)
            .filter(|l| *l > 0)
            .ok_or_else(too_big)?;
        let strings = std::iter::once(&self.program)
            .chain(&self.env)
            .chain(&self.argv);
        for string in strings {
            let len = string.as_bytes_with_nul().len() as u64;
            if len > max_strlen {
                return Err(too_big());
            }
            left = left.checked_sub(len).ok_or_else(too_big)?;
        }
        Ok(())
    }
}

/// The program's checklist, run in the forked PID 2; never returns. On failure it
/// reports the step and exits with [`EXIT_EXEC_FAILED`]. `sentinel` (when exec is
/// denied) is held, close-on-exec, until the `execve` at the end: its hang-up tells
/// the init that the one allowed exec has happened (see `execguard`).
pub(crate) fn exec_program(
    plan: &Plan,
    spec: &ExecSpec,
    filters: &Filters,
    report: &mut File,
    sentinel: Option<ExecSentinel>,
    host_proc: Option<OwnedFd>,
) -> ! {
    let _sentinel = sentinel;
    let error = match program_steps(plan, spec, filters, report, host_proc) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    report_failure(report, &error);
    sys::exit_now(EXIT_EXEC_FAILED)
}

/// The program's checklist for a forked run ([`Start::Return`]): the same layers
/// as [`exec_program`]'s, in the same order, then, instead of an `execve`, a return
/// into the interpreter this process was forked from, with the environment the exec
/// would have given it. On failure it reports the step and exits with
/// [`EXIT_EXEC_FAILED`]. The sentinel is dropped on the way out: no exec is allowed
/// from here on (`execguard`).
///
/// [`Start::Return`]: super::stage::Start::Return
pub(crate) fn return_program(
    plan: &Plan,
    spec: &ExecSpec,
    filters: &Filters,
    report: &mut File,
    sentinel: Option<ExecSentinel>,
    host_proc: Option<OwnedFd>,
) -> Returned {
    match confine(plan, spec, filters, report, host_proc, false) {
        Ok(()) => {
            drop(sentinel);
            Returned {
                env: spec.env.clone(),
            }
        }
        Err(error) => {
            report_failure(report, &error);
            sys::exit_now(EXIT_EXEC_FAILED)
        }
    }
}

fn program_steps(
    plan: &Plan,
    spec: &ExecSpec,
    filters: &Filters,
    report: &mut File,
    host_proc: Option<OwnedFd>,
) -> Result<std::convert::Infallible, JailError> {
    confine(plan, spec, filters, report, host_proc, true)?;
    // Exec the interpreter with exactly the planned environment.
    execve(spec.program.as_c_str(), &spec.argv, &spec.env).map_err(|e| JailError::Exec {
        program: spec.program_shown.clone(),
        source: e.into(),
    })
}

/// Every per-process layer, in order, up to the program's start: by `execve` when
/// `exec` (the stage's own program), else by a return into an interpreter forked
/// before any of it (whose signal dispositions are its own start-up's, and which
/// holds no fd above the warm channel's once the init's objects are dropped).
fn confine(
    plan: &Plan,
    spec: &ExecSpec,
    filters: &Filters,
    report: &mut File,
    host_proc: Option<OwnedFd>,
    exec: bool,
) -> Result<(), JailError> {
    // Start in the workspace, as upstream does (`jailed_code` is run by relative name).
    chdir(spec.workdir.as_c_str()).map_err(|e| JailError::EnterWorkdir {
        path: spec.workdir_shown.clone(),
        source: e.into(),
    })?;
    // Signal dispositions set to "ignore" and the signal mask survive execve; the
    // program must start clean (the stage's Rust runtime ignores SIGPIPE). A forked
    // interpreter keeps the dispositions its own start-up set, as a cold one's.
    if exec {
        sys::reset_signals().map_err(JailError::ResetSignals)?;
    }
    // Resource limits now, after the last fork of trusted code (the init counts under
    // NPROC) and before anything of the user's runs.
    let start = if exec { Start::Exec } else { Start::Return };
    apply_rlimits(&plan.limits, plan.sigpending, start.shared_processes())?;
    // Every capability the namespace gave us goes, bounding and ambient sets too:
    // the exec below would already leave uid 1000 with none (capabilities(7)), but
    // nothing of the user's should ever run with a capability in hand.
    drop_capabilities()?;
    // The report fd stays open until exec succeeds, so an exec failure can still be
    // reported; every fd above stderr closes at exec (CVE-2024-21626 is what a leaked
    // fd does).
    if exec {
        sys::set_cloexec_from(3).map_err(JailError::CloseOnExec)?;
        // But for a warm jail's hand-over socket, which its interpreter's start-up hook
        // takes, and closes before any code of the user's runs (`warm`).
        if plan.warm.is_some() {
            sys::clear_cloexec(codejail_plan::WARM_FD).map_err(JailError::CloseOnExec)?;
        }
    }
    // AppArmor (where configured and present): the sandbox profile is stacked (so it
    // can only narrow) before no_new_privs, at the exec or, for a forked program, now.
    // The host's procfs fd (the run has none) is closed by it.
    if let (Some(profile), Some(proc)) = (&plan.apparmor_profile, host_proc) {
        let when = if exec {
            apparmor::Transition::AtExec
        } else {
            apparmor::Transition::Now
        };
        apparmor::request_transition(profile, proc, when)?;
    }
    // no_new_privs before exec: no setuid bit or file capability (honoured inside a
    // user namespace for files owned by host root) can raise privileges again.
    prctl::set_no_new_privs().map_err(|e| JailError::NoNewPrivs(e.into()))?;
    // Landlock: paths without a rule give EACCES (upstream's errors), no TCP, no
    // abstract sockets or signals outside the run. Applied after pivot_root, so the
    // rules name the run's own view.
    let achieved = landlock::restrict_self(
        &landlock::rules_for(plan, &spec.workdir_shown),
        plan.landlock_max_abi,
    )
    .map_err(JailError::Landlock)?;
    if achieved.abi() < plan.landlock_min_abi {
        return Err(JailError::LandlockBelowMinimum {
            abi: achieved.abi(),
            min: plan.landlock_min_abi,
        });
    }
    // Tell the broker what was achieved, for its confinement report.
    write_frame(
        report,
        &StageReport::Confined {
            landlock: achieved,
            seccomp_denied: seccomp::policy_len() as u32,
        },
    )
    .map_err(JailError::Report)?;
    // seccomp last: it may forbid calls made above.
    seccomp::install(filters).map_err(JailError::InstallSeccomp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            argv: vec![
                "python".into(),
                "-E".into(),
                "-B".into(),
                "jailed_code".into(),
            ],
            env: vec![("OPENBLAS_NUM_THREADS".into(), "1".into())],
            ..crate::test_plan("codejail-7")
        }
    }

    #[test]
    fn environment_is_tmpdir_then_the_plan() {
        let spec = ExecSpec::from_plan(&plan()).expect("spec");
        let env: Vec<&str> = spec
            .env
            .iter()
            .map(|e| e.to_str().expect("utf-8"))
            .collect();
        assert_eq!(
            env,
            [
                "TMPDIR=/tmp/codejail-7/tmp",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "HOME=/tmp/codejail-7/tmp",
                "OPENBLAS_NUM_THREADS=1"
            ]
        );
        assert_eq!(spec.workdir.to_str(), Ok("/tmp/codejail-7"));
        let mut p = plan();
        p.env.push(("PATH".into(), "/opt/bin".into()));
        let spec = ExecSpec::from_plan(&p).expect("spec");
        let paths: Vec<&str> = spec
            .env
            .iter()
            .filter_map(|e| e.to_str().ok()?.strip_prefix("PATH="))
            .collect();
        assert_eq!(
            paths,
            ["/opt/bin"],
            "a configured PATH replaces the default"
        );
        let mut p = plan();
        p.env.push(("HOME".into(), "/nonexistent".into()));
        let spec = ExecSpec::from_plan(&p).expect("spec");
        let homes: Vec<&str> = spec
            .env
            .iter()
            .filter_map(|e| e.to_str().ok()?.strip_prefix("HOME="))
            .collect();
        assert_eq!(
            homes,
            ["/nonexistent"],
            "a configured HOME replaces the default"
        );
        let mut p = plan();
        p.env = vec![
            ("MPLCONFIGDIR".into(), "$TMPDIR".into()),
            ("CACHE".into(), "$TMPDIR/cache".into()),
            ("OTHER".into(), "$TMPDIRX".into()),
        ];
        let spec = ExecSpec::from_plan(&p).expect("spec");
        let env: Vec<&str> = spec.env.iter().filter_map(|e| e.to_str().ok()).collect();
        assert_eq!(
            &env[3..],
            [
                "MPLCONFIGDIR=/tmp/codejail-7/tmp",
                "CACHE=/tmp/codejail-7/tmp/cache",
                "OTHER=$TMPDIRX"
            ]
        );
        assert_eq!(spec.argv.len(), 4);
    }

    /// The mirror of the kernel's argument size rule agrees with execve(2) itself
    /// (spawning `/bin/true` under this process's stack limit) on both sides of the
    /// limits: the total room, and one string's length.
    #[test]
    fn exec_size_check_agrees_with_the_kernel() {
        let program = "/bin/true";
        let (stack, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK)
            .expect("getrlimit");
        let spec_of = |args: &[String]| {
            let mut p = crate::test_plan("codejail-7");
            p.program = program.into();
            p.argv = std::iter::once(program.to_string())
                .chain(args.iter().cloned())
                .collect();
            ExecSpec::from_plan(&p).expect("spec")
        };
        let kernel_accepts = |spec: &ExecSpec| {
            let env = spec.env.iter().map(|e| {
                let (k, v) = e.to_str().expect("utf-8").split_once('=').expect("k=v");
                (k.to_string(), v.to_string())
            });
            match std::process::Command::new(program)
                .args(spec.argv[1..].iter().map(|a| a.to_str().expect("utf-8")))
                .env_clear()
                .envs(env)
                .status()
            {
                Ok(status) => {
                    assert!(status.success());
                    true
                }
                Err(e) if e.raw_os_error() == Some(libc::E2BIG) => false,
                Err(e) => panic!("spawn {program}: {e}"),
            }
        };
        // Arguments that fill the room exactly: strings of 100 000 bytes (each costs
        // its NUL and a pointer too), the last one sized to what is left.
        let base = spec_of(&[]);
        let room = (stack / 4).clamp(KERNEL_ARG_MAX, KERNEL_STK_LIM / 4 * 3);
        let used = |spec: &ExecSpec| -> u64 {
            let strings: usize = std::iter::once(&spec.program)
                .chain(&spec.env)
                .chain(&spec.argv)
                .map(|s| s.as_bytes_with_nul().len())
                .sum();
            strings as u64 + (spec.argv.len() + spec.env.len()) as u64 * 8
        };
        let mut left = room - used(&base);
        let mut args = Vec::new();
        while left >= 100_009 + 10 {
            args.push("x".repeat(100_000));
            left -= 100_009;
        }
        args.push("y".repeat((left - 9) as usize));
        let spec = spec_of(&args);
        assert_eq!(used(&spec), room);
        assert!(spec.check_exec_size(stack).is_ok(), "exactly full");
        assert!(kernel_accepts(&spec), "exactly full");
        // One byte more.
        args.last_mut().expect("an argument").push('y');
        let spec = spec_of(&args);
        assert!(spec.check_exec_size(stack).is_err(), "one byte over");
        assert!(!kernel_accepts(&spec), "one byte over");
        // Far more.
        args.extend((0..20).map(|_| "x".repeat(100_000)));
        let spec = spec_of(&args);
        assert!(spec.check_exec_size(stack).is_err(), "2 MB over");
        assert!(!kernel_accepts(&spec), "2 MB over");
        // One string: MAX_ARG_STRLEN with its NUL fits, one byte more does not.
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .expect("sysconf")
            .expect("a page size") as usize;
        for (len, fits) in [(32 * page - 1, true), (32 * page, false)] {
            let spec = spec_of(&["z".repeat(len)]);
            assert_eq!(spec.check_exec_size(stack).is_ok(), fits, "{len}");
            assert_eq!(kernel_accepts(&spec), fits, "{len}");
        }
        let err = spec_of(&["z".repeat(32 * page)])
            .check_exec_size(stack)
            .expect_err("too long");
        assert_eq!(err.step(), "exec /bin/true");
        assert!(
            err.message().contains("Argument list too long"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn unusable_exec_parts_are_refused() {
        let mut p = plan();
        p.env.push(("TMPDIR".into(), "/".into()));
        assert!(ExecSpec::from_plan(&p).is_err());
        let mut p = plan();
        p.env.push(("A=B".into(), "x".into()));
        assert!(ExecSpec::from_plan(&p).is_err());
        let mut p = plan();
        p.argv.push("nul\0".into());
        assert!(ExecSpec::from_plan(&p).is_err());
        let mut p = plan();
        p.argv.clear();
        assert!(ExecSpec::from_plan(&p).is_err());
        let mut p = plan();
        p.program = "python3".into();
        assert!(ExecSpec::from_plan(&p).is_err());
    }
}
