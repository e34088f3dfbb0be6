//! A request from the broker's side: the checks of an `Exec` against the settings
//! (names, command, limits, something to run), made before anything is allocated for
//! it, and the [`RunSpec`] planned from it.

use std::path::PathBuf;
use std::sync::Arc;

use codejail_plan::{Plan, RunLimits};
use codejail_protocol::validate::{self, NameError};
use codejail_protocol::{EntryKind, ErrorKind, Exec, LimitName, Limits};

use super::budget::Reservation;
use super::cgroup::Cgroups;
use super::planning;
use crate::config::{CommandSpec, LimitError, RunIdentity, Settings};

/// A request refused before it ran: the error kind and message its client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The protocol's error kind.
    pub kind: ErrorKind,
    /// What is wrong, for the client.
    pub message: String,
}

impl Refusal {
    /// A refusal of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// What the broker decided for one run.
#[derive(Debug)]
pub struct RunSpec {
    /// The run's id (logs, workspace name).
    pub run_id: u64,
    /// The jail stage binary.
    pub stage: PathBuf,
    /// The plan for the stage.
    pub plan: Plan,
    /// The run's directory as the program sees it (reported in `Finished`).
    pub workdir: String,
    /// The program's stdin.
    pub stdin: Vec<u8>,
    /// Effective limits (REALTIME, OUTPUT and CPU are read here).
    pub limits: Limits,
    /// Outside identity for the id maps.
    pub identity: RunIdentity,
    /// Where the run's cgroup is made (MEMORY and NPROC are read here).
    pub cgroups: Arc<Cgroups>,
    /// The request's bytes under the broker's budget, given back once the plan (which
    /// holds them) has been sent to the stage.
    pub held: Option<Reservation>,
    /// Stdin's share of the request's bytes, given back with the stdin at the run's end.
    pub stdin_held: Option<Reservation>,
}

/// The checks of an Exec against the settings, made before anything is allocated for
/// it: its names, its command, its limits, something to run. Returns the command and
/// the effective limits.
fn check_exec<'s>(
    settings: &'s Settings,
    exec: &Exec,
) -> Result<(&'s CommandSpec, Limits), Refusal> {
    validate::check_exec_names(exec).map_err(|e| match e {
        NameError::BadCommand(_) => Refusal::new(ErrorKind::UnknownCommand, e.to_string()),
        _ => Refusal::new(ErrorKind::BadFileName, e.to_string()),
    })?;
    let command = settings.commands.get(&exec.command).ok_or_else(|| {
        let known: Vec<_> = settings.commands.keys().map(String::as_str).collect();
        Refusal::new(
            ErrorKind::UnknownCommand,
            format!(
                "command {:?} is not configured (configured: {})",
                exec.command,
                known.join(", ")
            ),
        )
    })?;
    let limits = settings
        .limits
        .resolve(exec.limits_context.as_deref(), &exec.limits)
        .map_err(|e| match e {
            LimitError::Unknown(_) => Refusal::new(ErrorKind::UnknownLimit, e.to_string()),
            LimitError::AboveCeiling { .. } => {
                Refusal::new(ErrorKind::LimitAboveCeiling, e.to_string())
            }
            LimitError::OutOfRange(_) => Refusal::new(ErrorKind::InvalidRequest, e.to_string()),
        })?;
    if exec.code.is_none() && exec.argv.is_empty() {
        return Err(Refusal::new(
            ErrorKind::InvalidRequest,
            "no code and no argv: nothing to run",
        ));
    }
    // execve takes C strings: the stage would refuse the plan, after the run had
    // taken a slot and a uid (found by fuzz/request).
    if let Some(arg) = exec.argv.iter().find(|a| a.contains('\0')) {
        return Err(Refusal::new(
            ErrorKind::InvalidRequest,
            format!("argument {arg:?} contains a NUL byte"),
        ));
    }
    Ok((command, limits))
}

/// [`plan_run`]'s checks of a decoded Exec, for the fuzz targets (`fuzz/`): the
/// effective limits, or the error kind and message the peer would get.
#[doc(hidden)]
pub fn fuzz_check_exec(settings: &Settings, exec: &Exec) -> Result<Limits, (ErrorKind, String)> {
    check_exec(settings, exec)
        .map(|(_, limits)| limits)
        .map_err(|r| (r.kind, r.message))
}

/// Check an Exec against the settings and plan its run as run `run_id`, or say what is
/// wrong. The request's payload moves into the plan.
pub(crate) fn plan_run(
    settings: &Settings,
    cgroups: &Arc<Cgroups>,
    exec: Exec,
    next_run_id: impl FnOnce() -> u64,
) -> Result<RunSpec, Refusal> {
    let (command, limits) = check_exec(settings, &exec)?;
    let run_id = next_run_id();
    let mut argv = planning::command_argv(command, exec.code.is_some());
    argv.extend(exec.argv);
    let file_bytes: u64 = exec
        .files
        .iter()
        .map(|f| match &f.kind {
            EntryKind::File { contents, .. } => planning::page_round(contents.len()),
            _ => 4096,
        })
        .chain(
            exec.extra_files
                .iter()
                .map(|(_, c)| planning::page_round(c.len())),
        )
        .chain(exec.code.iter().map(|c| planning::page_round(c.len())))
        .sum();
    let entries = (exec.files.len() + exec.extra_files.len() + 4) as u64;
    let tmp = limits.effective(LimitName::Tmp);
    let workdir_name = planning::workdir_name().map_err(|e| {
        Refusal::new(
            ErrorKind::Internal,
            format!("no randomness for the run's directory name: {e}"),
        )
    })?;
    let plan = planning::command_plan(
        settings,
        command,
        argv,
        RunLimits {
            cpu_secs: limits.effective(LimitName::Cpu),
            vmem_bytes: limits.effective(LimitName::Vmem),
            fsize_bytes: limits.get(LimitName::Fsize),
            nproc: limits.effective(LimitName::Nproc),
            nofile: limits.get(LimitName::Nofile),
            // The tmpfs holds the copied files too: the TMP limit is what the program
            // may add on top of them.
            tmp_bytes: tmp.map(|t| t.saturating_add(file_bytes)),
            tmp_inodes: tmp.map(|t| (t / 4096).max(1024).saturating_add(entries)),
        },
        workdir_name,
    );
    let plan = Plan {
        code: exec.code,
        files: exec.files,
        extra_files: exec.extra_files,
        ..plan
    };
    let spec = RunSpec {
        run_id,
        stage: settings.jail_stage.clone(),
        workdir: planning::program_workdir(&plan.workdir_name),
        plan,
        stdin: exec.stdin,
        limits,
        identity: settings.identity,
        cgroups: cgroups.clone(),
        held: None,
        stdin_held: None,
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use codejail_protocol::Mode;

    fn settings() -> Settings {
        let cfg: FileConfig =
            toml::from_str("[commands.python]\nbin = \"/usr/bin/python3\"\n").expect("toml");
        Settings::from_config(&cfg, Mode::Confined).expect("settings")
    }

    #[test]
    fn argument_with_nul_is_an_invalid_request() {
        // fuzz/request: accepted by the broker, then refused by the stage's plan check.
        let mut exec = Exec {
            command: "python".into(),
            code: Some(b"print(1)".to_vec()),
            argv: vec!["-\0\0\0ig".into(), "x".into()],
            ..Exec::default()
        };
        match fuzz_check_exec(&settings(), &exec) {
            Err((ErrorKind::InvalidRequest, message)) => {
                assert!(message.contains("NUL"), "{message}")
            }
            other => panic!("argv with a NUL: {other:?}"),
        }
        exec.argv = vec!["-ig".into(), "x".into()];
        fuzz_check_exec(&settings(), &exec).expect("plain argv");
    }
}
