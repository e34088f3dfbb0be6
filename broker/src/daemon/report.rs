//! The confinement report (docs/architecture.md §8): what each layer achieves on this host,
//! and whether policy requires it. Shown in `Welcome`, `codejail-client status` and the
//! start-up log. Claims here are checked by the start-up self-test (`selftest`).

use std::collections::BTreeMap;

use codejail_protocol::{
    CommandInfo, Layer, LayerState, LimitsReport, Load, StatusReport, PROTOCOL_VERSION,
};

use super::selftest::Probe;
use crate::config::Settings;
use crate::run::cgroup::CgroupStatus;
use codejail_plan::Achieved;

/// A layer whose minimum is `full`.
fn layer(state: LayerState, required: bool, detail: impl Into<String>) -> Layer {
    Layer {
        state,
        required,
        holds: state == LayerState::Full,
        detail: detail.into(),
    }
}

/// Build the report for these settings from what the start-up probe established and
/// what the broker's cgroup set-up achieved.
pub fn build(settings: &Settings, cgroups: &CgroupStatus, probe: &Probe) -> StatusReport {
    let mut layers = BTreeMap::new();
    let probe_ok = probe.verdict.is_ok();
    let held = |ok: bool| {
        if ok {
            LayerState::Full
        } else {
            LayerState::Unavailable
        }
    };
    let probe_detail = |what: &str| match &probe.verdict {
        Ok(()) => what.to_string(),
        Err(e) => format!("start-up self-test failed: {e}"),
    };
    layers.insert(
        "namespaces".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("user, pid (with an init as PID 1), mount, network (no interfaces up), ipc, uts and time namespaces per run"),
        ),
    );
    layers.insert(
        "rlimits".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("CPU, VMEM (RLIMIT_AS), FSIZE, NPROC (counted per run's user namespace), NOFILE (soft = hard), core dumps off"),
        ),
    );
    layers.insert(
        "workspace".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("private tmpfs at /tmp in the run's view holding only the run's directory /tmp/codejail-XXXXXXXX (random), size and inodes capped by TMP; the directory read-only to the program, its tmp/ writable"),
        ),
    );
    layers.insert(
        "filesystem_view".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("pivot_root into a minimal read-only root: /usr, /lib*, the interpreter's environment, an /etc of its own (the loader cache, localtime, mode-0 placeholders), 4 device nodes; no procfs (/proc denied: EACCES)"),
        ),
    );
    layers.insert(
        "landlock".into(),
        landlock_layer(
            probe_ok.then_some(probe.landlock).flatten(),
            settings.landlock_min_abi,
            &probe_detail,
        ),
    );
    layers.insert(
        "seccomp".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail(&format!(
                "deny list of {} reviewed entries (non-AF_UNIX sockets: EACCES; ptrace, namespaces, mount, bpf, io_uring, keyrings, inotify, SysV IPC, memfd, ...: EPERM), clone3 -> ENOSYS, x32 and foreign ABIs killed",
                probe.seccomp_denied.map_or_else(|| "?".to_string(), |n| n.to_string())
            )),
        ),
    );
    layers.insert("exec".into(), exec_layer(settings, probe_ok, &probe_detail));
    layers.insert(
        "capabilities".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("every capability dropped (bounding and ambient sets too), no_new_privs"),
        ),
    );
    layers.insert(
        "identity".into(),
        match settings.run_ids {
            Some(range) => layer(
                LayerState::Full,
                true,
                format!(
                    "each run is uid 1000 in its own user namespace, mapped to its own outside uid/gid from {range} ({} ids, one per running run, returned once its processes are gone) and created by it, so the kernel's per-user budgets (queued signals, timers) are per run; supplementary groups cleared",
                    range.count
                ),
            ),
            None => layer(LayerState::Partial, false, shared_identity_detail(settings)),
        },
    );
    layers.insert(
        "cgroups".into(),
        layer(
            cgroups.state(),
            cgroups.required,
            if cgroups.memory {
                cgroups.detail.clone()
            } else {
                format!("{}; the MEMORY limit is not enforced", cgroups.detail)
            },
        ),
    );
    let apparmor = crate::apparmor::layer_detail(
        settings.apparmor_profile.as_deref(),
        crate::apparmor::kernel_has_apparmor_cached(),
        crate::apparmor::configured_profile_loaded(settings.apparmor_profile.as_deref()),
        probe_ok,
    );
    layers.insert(
        "apparmor".into(),
        match apparmor {
            Ok(d) => layer(LayerState::Full, settings.apparmor_required, d),
            Err(d) => layer(LayerState::Unavailable, settings.apparmor_required, d),
        },
    );
    if let (Ok(()), Some(command)) = (&probe.verdict, &probe.forked) {
        note_forked(&mut layers, command, settings.run_ids.is_some());
    }
    StatusReport {
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        mode: settings.mode,
        layers,
        load: Load {
            max_running: settings.max_running,
            max_queue: settings.max_queue,
            max_connections: settings.max_connections.get(),
            connections_fitted: settings.max_connections.is_fitted(),
            ..Load::default()
        },
        pool: Default::default(),
        commands: settings
            .commands
            .iter()
            .map(|(name, c)| {
                let info = CommandInfo {
                    bin: c.bin.to_string_lossy().into_owned(),
                    allow_exec: c.allow_exec,
                };
                (name.clone(), info)
            })
            .collect(),
        limits: LimitsReport::new(
            &settings.limits.defaults,
            &settings.limits.ceilings,
            &settings.limits.contexts,
        ),
    }
}

/// Exec denial: full when no command allows exec (the self-test saw a subprocess
/// denied); partial, and then not required, when some command opts out.
fn exec_layer(settings: &Settings, probe_ok: bool, probe_detail: &dyn Fn(&str) -> String) -> Layer {
    let allowing: Vec<&str> = settings
        .commands
        .iter()
        .filter(|(_, c)| c.allow_exec)
        .map(|(name, _)| name.as_str())
        .collect();
    let denied = "after the program's own start every execve/execveat of the run fails with EACCES (a seccomp user-notification filter answered by the run's init)";
    if !probe_ok {
        return layer(
            LayerState::Unavailable,
            allowing.is_empty(),
            probe_detail(denied),
        );
    }
    if allowing.is_empty() {
        layer(LayerState::Full, true, denied)
    } else {
        layer(
            LayerState::Partial,
            false,
            format!(
                "{denied}, except for commands with allow_exec = true: {}",
                allowing.join(", ")
            ),
        )
    }
}

/// What a run forked from `command`'s zygote achieves, layer by layer, appended to
/// each layer's detail: the start-up probe held in such a run too, with the same
/// Landlock and seccomp (docs/architecture.md, "Fork server").
fn note_forked(layers: &mut BTreeMap<String, Layer>, command: &str, per_run_ids: bool) {
    let same = "the same (the start-up probe ran in one)";
    let identity = if per_run_ids {
        "the zygote clones the run's init with the run's ids as its effective ids (it holds only CAP_SETUID and CAP_SETGID for it), so the run's user namespace is the run's uid's, as a cold stage's; the init holds no capability outside it"
    } else {
        "the broker's ids, as cold runs"
    };
    for (name, how) in [
        (
            "namespaces",
            "the same, made by the zygote's clone of the run's init, its PID 1 (the probe ran in one)",
        ),
        (
            "rlimits",
            "the same; CPU counted from the fork, VMEM counting the zygote's mappings",
        ),
        ("workspace", same),
        ("filesystem_view", same),
        ("landlock", same),
        ("seccomp", same),
        (
            "exec",
            "the program returns into its interpreter (no exec) and every exec after it is refused",
        ),
        ("capabilities", same),
        ("identity", identity),
        (
            "cgroups",
            "the zygote's child, the run's init, enters the run's cgroup first, before anything else",
        ),
    ] {
        // (A layer that does not hold at all, e.g. no cgroups, has nothing to add.)
        if let Some(layer) = layers
            .get_mut(name)
            .filter(|l| l.state != LayerState::Unavailable)
        {
            layer.detail = format!(
                "{}; runs forked from the {command} zygote: {how}",
                layer.detail
            );
        }
    }
}

/// The identity detail when every run shares one outside uid.
fn shared_identity_detail(settings: &Settings) -> String {
    let id = settings.identity;
    let own_uid = nix::unistd::geteuid().as_raw();
    let detail = if id.outer_uid == own_uid {
        format!(
            "runs are uid 1000 in their own user namespace, mapped to the broker's own uid {own_uid} (shared by all runs: each run gets an equal share of its queued-signal budget, RLIMIT_SIGPENDING); supplementary groups kept (unprivileged: setgroups denied)"
        )
    } else {
        format!(
            "runs are uid 1000 in their own user namespace, mapped to uid {} / gid {} (shared by all runs); supplementary groups cleared",
            id.outer_uid, id.outer_gid
        )
    };
    detail
        + "; per-run uids need run_ids = { first, count } in the config and CAP_SETUID/CAP_SETGID (dev: --run-ids FIRST:COUNT)"
}

/// The report as lines for the start-up log and `--dev`'s banner.
pub fn render(report: &StatusReport) -> String {
    codejail_protocol::render::layers_banner(report)
}

/// What each Landlock ABI adds to the rules the stage asks for, and what covers it on
/// a kernel without it (docs/operating.md,
/// "Kernels: Landlock ABIs and AppArmor", says the same to operators).
const LANDLOCK_ABIS: [(u32, &str, &str); 6] = [
    (
        2,
        "linking and renaming across directories",
        "denied outright without it",
    ),
    (
        3,
        "truncate",
        "only the run's tmp/ is writable at all; the rest of its view is read-only",
    ),
    (
        4,
        "TCP bind and connect",
        "the run's own network namespace has no interface up, and seccomp refuses non-AF_UNIX sockets",
    ),
    (
        5,
        "device ioctls",
        "the run's /dev holds only null, zero, random and urandom",
    ),
    (
        6,
        "abstract unix socket and signal scopes",
        "each run has its own network namespace (abstract sockets are per namespace) and pid namespace",
    ),
    (
        7,
        "audit logging flags",
        "nothing to cover: logging only",
    ),
];

/// The `landlock` layer: `achieved` by the start-up probe (`None`: it did not get
/// there), against the configured minimum ABI (0: not required). `holds` when the
/// kernel's ABI is at least the minimum, `partial` or not.
fn landlock_layer(
    achieved: Option<Achieved>,
    min_abi: u32,
    probe_detail: &dyn Fn(&str) -> String,
) -> Layer {
    let required = min_abi > 0;
    let minimum = if required {
        format!("minimum configured: ABI {min_abi} (landlock_min_abi)")
    } else {
        "not required (landlock_min_abi = 0)".to_string()
    };
    let (state, detail) = match achieved {
        Some(Achieved::Full { abi }) => (
            LayerState::Full,
            format!(
                "ABI {abi}: read/exec on the interpreter and libraries only, read on the \
                 workspace, write on its tmp/; TCP bind/connect denied; abstract-socket and \
                 signal scopes; {minimum}"
            ),
        ),
        Some(Achieved::Partial { abi }) => {
            let missing: Vec<String> = LANDLOCK_ABIS
                .iter()
                .filter(|(needs, _, _)| *needs > abi)
                .map(|(needs, what, covered)| format!("{what} (ABI {needs}; {covered})"))
                .collect();
            (
                LayerState::Partial,
                format!(
                    "ABI {abi}: the filesystem rules hold (read/exec on the interpreter and \
                     libraries only, read on the workspace, write on its tmp/); this kernel \
                     lacks {}; {minimum}",
                    missing.join(", ")
                ),
            )
        }
        Some(Achieved::None) => (
            LayerState::Unavailable,
            format!(
                "the kernel has no Landlock (enable CONFIG_SECURITY_LANDLOCK and \
                 lsm=landlock,...); {minimum}"
            ),
        ),
        None => (
            LayerState::Unavailable,
            probe_detail("the probe did not reach the Landlock step"),
        ),
    };
    Layer {
        state,
        required,
        holds: achieved.is_some_and(|a| a.abi() >= min_abi.max(1)),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_detail(what: &str) -> String {
        what.to_string()
    }

    #[test]
    fn landlock_holds_at_its_minimum_abi_and_says_what_covers_the_rest() {
        // Debian 12's 6.1: ABI 2, under the shipped minimum of 1.
        let l = landlock_layer(Some(Achieved::Partial { abi: 2 }), 1, &probe_detail);
        assert_eq!(l.state, LayerState::Partial);
        assert!(l.required && l.holds, "{l:?}");
        for part in [
            "ABI 2: the filesystem rules hold",
            "TCP bind and connect (ABI 4; the run's own network namespace",
            "abstract unix socket and signal scopes (ABI 6;",
            "minimum configured: ABI 1",
        ] {
            assert!(l.detail.contains(part), "{part}: {}", l.detail);
        }
        assert!(!l.detail.contains("across directories"), "ABI 2 has it");
        // The same kernel under a minimum of 4 does not hold.
        let l = landlock_layer(Some(Achieved::Partial { abi: 2 }), 4, &probe_detail);
        assert!(l.required && !l.holds, "{l:?}");
        let l = landlock_layer(Some(Achieved::Full { abi: 7 }), 7, &probe_detail);
        assert_eq!(l.state, LayerState::Full);
        assert!(l.holds && l.detail.starts_with("ABI 7:"), "{l:?}");
        // No Landlock: required, it does not hold; not required (the dev mode), it is
        // reported and does not matter.
        let l = landlock_layer(Some(Achieved::None), 1, &probe_detail);
        assert!(l.required && !l.holds && l.state == LayerState::Unavailable);
        let l = landlock_layer(Some(Achieved::None), 0, &probe_detail);
        assert!(!l.required && l.detail.contains("not required"), "{l:?}");
        let l = landlock_layer(None, 1, &probe_detail);
        assert!(!l.holds && l.detail.contains("did not reach"), "{l:?}");
    }

    #[test]
    fn the_forked_path_is_described_layer_by_layer() {
        let names = [
            "namespaces",
            "rlimits",
            "workspace",
            "filesystem_view",
            "landlock",
            "seccomp",
            "exec",
            "capabilities",
            "identity",
            "cgroups",
        ];
        let mut layers: BTreeMap<String, Layer> = names
            .iter()
            .map(|n| (n.to_string(), layer(LayerState::Full, true, "cold")))
            .collect();
        note_forked(&mut layers, "python", true);
        for name in names {
            let d = &layers[name].detail;
            assert!(
                d.starts_with("cold; runs forked from the python zygote: "),
                "{name}: {d}"
            );
        }
        assert!(layers["identity"].detail.contains("CAP_SETUID"));
        assert!(layers["rlimits"]
            .detail
            .contains("CPU counted from the fork"));
        // A layer that does not hold (no cgroups) gets no note.
        let mut layers = BTreeMap::from([(
            "cgroups".to_string(),
            layer(LayerState::Unavailable, false, "none"),
        )]);
        note_forked(&mut layers, "python", false);
        assert_eq!(layers["cgroups"].detail, "none");
    }
}
