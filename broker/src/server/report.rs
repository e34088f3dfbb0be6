//! The confinement report (ARCHITECTURE §5): what each layer achieves on this host,
//! and whether policy requires it. Shown in `Welcome`, `codejail-client status` and the
//! start-up log. Claims here are checked by the start-up self-test (`selftest`).

use std::collections::BTreeMap;

use codejail_protocol::{Layer, LayerState, Load, StatusReport, PROTOCOL_VERSION};

use crate::config::Settings;

fn layer(state: LayerState, required: bool, detail: impl Into<String>) -> Layer {
    Layer {
        state,
        required,
        detail: detail.into(),
    }
}

/// Build the report for these settings. `self_test` is the start-up probe's verdict.
pub fn build(settings: &Settings, self_test: Result<(), String>) -> StatusReport {
    let mut layers = BTreeMap::new();
    let probe_ok = self_test.is_ok();
    let held = |ok: bool| {
        if ok {
            LayerState::Full
        } else {
            LayerState::Unavailable
        }
    };
    let probe_detail = |what: &str| match &self_test {
        Ok(()) => what.to_string(),
        Err(e) => format!("start-up self-test failed: {e}"),
    };
    layers.insert(
        "namespaces".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("user, pid (with an init as PID 1), mount, network (no interfaces up), ipc and uts namespaces per run"),
        ),
    );
    layers.insert(
        "rlimits".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail("CPU, VMEM (RLIMIT_AS), FSIZE, NPROC (counted per run's user namespace), core dumps off"),
        ),
    );
    layers.insert(
        "workspace".into(),
        layer(
            held(probe_ok),
            true,
            probe_detail(&format!(
                "private tmpfs over {} in each run's mount namespace, size and inodes capped by TMP; fresh /proc",
                settings.tmpfs_mount.display()
            )),
        ),
    );
    let id = settings.identity;
    let own_uid = nix::unistd::geteuid().as_raw();
    let identity_detail = if id.outer_uid == own_uid {
        format!(
            "runs are uid 1000 in their own user namespace, mapped to the broker's own uid {own_uid} (shared by all runs); supplementary groups kept (unprivileged: setgroups denied)"
        )
    } else {
        format!(
            "runs are uid 1000 in their own user namespace, mapped to uid {} / gid {} (shared by all runs); supplementary groups cleared",
            id.outer_uid, id.outer_gid
        )
    };
    layers.insert(
        "identity".into(),
        layer(
            LayerState::Partial,
            false,
            identity_detail + "; per-run uids not built yet",
        ),
    );
    for (name, detail) in [
        ("filesystem_view", "pivot_root into a minimal read-only root: not built yet; the host filesystem is visible read-only per file permissions"),
        ("landlock", "not built yet"),
        ("seccomp", "not built yet"),
        ("cgroups", "not built yet: memory and CPU are bounded per process only (RLIMIT_AS, RLIMIT_CPU x NPROC)"),
        ("apparmor", "not built yet"),
    ] {
        layers.insert(name.into(), layer(LayerState::Unavailable, false, detail));
    }
    StatusReport {
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        mode: settings.mode,
        layers,
        load: Load::default(),
    }
}

/// The report as lines for the start-up log and `--dev`'s banner.
pub fn render(report: &StatusReport) -> String {
    let mut s = format!(
        "codejail-broker {} ({} mode), confinement:\n",
        report.broker_version,
        report.mode.as_str()
    );
    for (name, l) in &report.layers {
        s.push_str(&format!(
            "  {name:<16} {:<11} {:<9} {}\n",
            l.state.as_str(),
            if l.required { "required" } else { "optional" },
            l.detail
        ));
    }
    s
}
