//! The program: PID 2 of the run, forked by the init. It applies the last, per-process
//! layers to itself and execs the configured interpreter. Nothing of the user's runs
//! before the `execve` at the end of [`exec_program`].

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;

use nix::sys::prctl;
use nix::unistd::{chdir, execve};

use super::error::{report_failure, JailError};
use super::execguard::ExecSentinel;
use super::rlimits::apply_rlimits;
use super::seccomp::{self, Filters};
use super::sys;
use super::workspace::{workdir_path, TMP_DIR};
use super::{apparmor, landlock, rootfs};
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

/// The program's `PATH` unless its command configures one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The program's `HOME` unless its command configures one: the run's `tmp/`. Upstream's
/// runs get the sandbox user's home from sudo, which its AppArmor profile lets them
/// read at most; here there is no passwd entry for the run's uid, so without HOME
/// `~` stays `~`. The run's tmp/ is private to the run, writable, counted against TMP
/// and gone with it, so a library that keeps data or a cache under `~` (nltk,
/// matplotlib) works and leaves nothing for a later run.
pub const DEFAULT_HOME: &str = "$TMPDIR";

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
    /// Processes of the run counted with the program's under NPROC
    /// ([`super::rlimits::nproc_shared`]); set once the stage knows its identity.
    pub(crate) nproc_shared: u64,
}

impl ExecSpec {
    /// Build the spec from the plan, refusing anything `execve` could not take or
    /// that would make the environment ambiguous.
    pub(crate) fn from_plan(plan: &Plan) -> Result<Self, JailError> {
        let invalid = |what: String| JailError::ValidatePlan(what);
        let c = |what: &str, s: &str| {
            CString::new(s).map_err(|_| invalid(format!("{what} {s:?} contains a NUL")))
        };
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
            // As if the stage were counted too, until it knows (the stricter choice).
            nproc_shared: super::rlimits::nproc_shared(true),
        })
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

fn program_steps(
    plan: &Plan,
    spec: &ExecSpec,
    filters: &Filters,
    report: &mut File,
    host_proc: Option<OwnedFd>,
) -> Result<std::convert::Infallible, JailError> {
    // Start in the workspace, as upstream does (`jailed_code` is run by relative name).
    chdir(spec.workdir.as_c_str()).map_err(|e| JailError::EnterWorkdir {
        path: spec.workdir_shown.clone(),
        source: e.into(),
    })?;
    // Signal dispositions set to "ignore" and the signal mask survive execve; the
    // program must start clean (the stage's Rust runtime ignores SIGPIPE).
    sys::reset_signals().map_err(JailError::ResetSignals)?;
    // Resource limits now, after the last fork of trusted code (the init counts under
    // NPROC) and before anything of the user's runs.
    apply_rlimits(&plan.limits, spec.nproc_shared, plan.sigpending)?;
    // Every capability the namespace gave us goes, bounding and ambient sets too:
    // the exec below would already leave uid 1000 with none (capabilities(7)), but
    // nothing of the user's should ever run with a capability in hand.
    drop_capabilities()?;
    // The report fd stays open until exec succeeds, so an exec failure can still be
    // reported; every fd above stderr closes at exec (CVE-2024-21626 is what a leaked
    // fd does).
    sys::set_cloexec_from(3).map_err(JailError::CloseOnExec)?;
    // But for a warm jail's hand-over socket, which its interpreter's start-up hook
    // takes, and closes before any code of the user's runs (`warm`).
    if plan.warm.is_some() {
        sys::clear_cloexec(codejail_plan::WARM_FD).map_err(JailError::CloseOnExec)?;
    }
    // AppArmor (where configured and present): the exec transition is requested
    // before no_new_privs, stacked so it can only narrow.
    // The host's procfs fd (the run has none) is closed by it.
    if let (Some(profile), Some(proc)) = (&plan.apparmor_profile, host_proc) {
        apparmor::request_exec_transition(profile, proc)?;
    }
    // no_new_privs before exec: no setuid bit or file capability (honoured inside a
    // user namespace for files owned by host root) can raise privileges again.
    prctl::set_no_new_privs().map_err(|e| JailError::NoNewPrivs(e.into()))?;
    // Landlock: paths without a rule give EACCES (upstream's errors), no TCP, no
    // abstract sockets or signals outside the run. Applied after pivot_root, so the
    // rules name the run's own view.
    let achieved = landlock::restrict_self(
        &rootfs::landlock_rules(plan, &spec.workdir_shown),
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
    seccomp::install(filters).map_err(JailError::InstallSeccomp)?;
    // Exec the interpreter with exactly the planned environment.
    execve(spec.program.as_c_str(), &spec.argv, &spec.env).map_err(|e| JailError::Exec {
        program: spec.program_shown.clone(),
        source: e.into(),
    })
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
