//! A run's plan from its command (`commands.<name>` in the config) and its limits:
//! what a cold run and a warm jail (`pool`) share, and the run directory's name.

use crate::config::{CommandSpec, Settings};
use codejail_plan::layout::CODE_FILE;
use codejail_plan::{Plan, RunLimits};

/// The plan for a run of `command` with `argv` (the program first) under `limits`,
/// in the run directory `workdir_name`; nothing to copy yet (the caller adds the
/// request's code and files, or hands them to a warm jail later).
pub fn command_plan(
    settings: &Settings,
    command: &CommandSpec,
    argv: Vec<String>,
    limits: RunLimits,
    workdir_name: String,
) -> Plan {
    Plan {
        program: command.bin.to_string_lossy().into_owned(),
        argv,
        env: command.env.clone(),
        code: None,
        files: Vec::new(),
        extra_files: Vec::new(),
        // The host directory the stage builds the run's root view on.
        skeleton_root: settings.tmpfs_mount.to_string_lossy().into_owned(),
        ro_paths: command
            .ro_paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        workdir_name,
        limits,
        sigpending: sigpending_share(settings),
        hostname: "codejail".into(),
        landlock_min_abi: settings.landlock_min_abi,
        landlock_max_abi: settings.landlock_max_abi,
        // Stacked at the program's exec, where the kernel has AppArmor.
        apparmor_profile: crate::apparmor::profile_for_runs(settings.apparmor_profile.as_deref()),
        allow_exec: command.allow_exec,
        warm: None,
    }
}

/// A run's share of the queued-signal budget (`RLIMIT_SIGPENDING`, which every POSIX
/// timer also draws on) when every run is the broker's own uid (no `run_ids`): the
/// kernel charges what all their user namespaces hold to that one uid, up to the
/// limit the stage had when it created them (the broker's), so each run that can
/// exist at once (running, or waiting warm) gets an equal part and none can exhaust
/// the others'. `None` with per-run uids: each run's namespace is charged to its own
/// uid, and the run keeps the broker's limit.
pub fn sigpending_share(settings: &Settings) -> Option<u64> {
    if settings.run_ids.is_some() {
        return None;
    }
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_SIGPENDING).ok()?;
    if soft == nix::sys::resource::RLIM_INFINITY {
        return None;
    }
    let runs = u64::from(settings.max_running)
        + settings
            .pools
            .values()
            .map(|p| u64::from(p.size))
            .sum::<u64>();
    Some((soft / runs.max(1)).max(1))
}

/// The program's argv up to and including its script: the command's program and
/// arguments, then the code file (`jailed_code`) when the request has code.
pub fn command_argv(command: &CommandSpec, has_code: bool) -> Vec<String> {
    let mut argv = vec![command.bin.to_string_lossy().into_owned()];
    argv.extend(command.args.iter().cloned());
    if has_code {
        argv.push(CODE_FILE.into());
    }
    argv
}

/// The run's directory (the program's cwd) as the program sees it: below the
/// workspace mount the jail stage builds ([`codejail_plan::layout`], shared with it).
pub fn program_workdir(workdir_name: &str) -> String {
    codejail_plan::layout::program_workdir(workdir_name)
}

/// The bytes a file of `n` bytes takes on the workspace tmpfs: whole pages, one at least.
pub fn page_round(n: usize) -> u64 {
    (n as u64).div_ceil(4096).max(1) * 4096
}

/// The characters of the run directory's random part, as upstream's
/// `tempfile.mkdtemp` draws them.
const WORKDIR_CHARS: &[u8; 37] = b"abcdefghijklmnopqrstuvwxyz0123456789_";

/// A fresh run directory name, `codejail-` and 8 random characters of
/// `WORKDIR_CHARS`, as upstream's (its callers' tests match
/// `/tmp/codejail-[0-9a-zA-Z_]+/`). Unpredictable, from the kernel's CSPRNG: the name
/// is all that keeps one run from guessing another's directory (codejail-service's
/// process-table tests).
pub fn workdir_name() -> Result<String, getrandom::Error> {
    let mut name = String::from("codejail-");
    let mut buf = [0u8; 32];
    while name.len() < "codejail-".len() + 8 {
        getrandom::fill(&mut buf)?;
        // Rejection sampling keeps the draw uniform: 222 = 6 * 37.
        for b in buf.iter().filter(|b| **b < 222) {
            if name.len() == "codejail-".len() + 8 {
                break;
            }
            name.push(char::from(WORKDIR_CHARS[usize::from(*b % 37)]));
        }
    }
    Ok(name)
}
