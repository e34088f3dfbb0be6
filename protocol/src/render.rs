//! The human-readable status, in one place for both binaries: the broker's start-up
//! banner ([`layers_banner`]) and `codejail-client status` ([`status_table`]).

use crate::StatusReport;

/// The confinement layers as lines, for the broker's start-up log and `--dev`'s banner.
pub fn layers_banner(report: &StatusReport) -> String {
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
    if let Some(line) = connections_line(&report.load) {
        s.push_str(&format!("  {line}\n"));
    }
    s.push_str(&pool_lines(report, ""));
    s
}

/// The connection cap, saying when it was fitted to the open-file limit (`None` when
/// the report does not carry it).
fn connections_line(l: &crate::Load) -> Option<String> {
    if l.max_connections == 0 {
        return None;
    }
    Some(format!(
        "connections at most {}{}",
        l.max_connections,
        if l.connections_fitted {
            " (the default, lowered to fit the broker's open-file limit)"
        } else {
            ""
        }
    ))
}

/// `codejail-client status` without `--json`.
pub fn status_table(r: &StatusReport) -> String {
    let mut s = String::new();
    let l = &r.load;
    s.push_str(&format!(
        "broker    codejail-broker {} (protocol {})\n",
        r.broker_version, r.protocol_version
    ));
    s.push_str(&format!("mode      {}\n", r.mode.as_str()));
    s.push_str(&format!(
        "load      {} of {} running, {} of {} queued\n",
        l.running, l.max_running, l.queued, l.max_queue
    ));
    if let Some(line) = connections_line(l) {
        s.push_str(&format!(
            "{:<10}{}\n",
            "conns",
            line.trim_start_matches("connections ")
        ));
    }
    s.push_str("layers\n");
    let width = r
        .layers
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max("LAYER".len());
    s.push_str(&format!(
        "  {:<width$}  {:<11}  {:<8}  DETAIL\n",
        "LAYER", "STATE", "REQUIRED"
    ));
    for (name, layer) in &r.layers {
        s.push_str(&format!(
            "  {:<width$}  {:<11}  {:<8}  {}\n",
            name,
            layer.state.as_str(),
            if layer.required { "yes" } else { "no" },
            layer.detail
        ));
    }
    s.push_str(&pool_lines(r, "pool\n"));
    s.push_str(&limits_lines(r));
    let missing: Vec<&str> = r.missing_required().map(|(n, _)| n.as_str()).collect();
    if r.required_layers_hold() {
        s.push_str("verdict   OK: serving with every required layer\n");
    } else {
        s.push_str(&format!(
            "verdict   DEGRADED: required layers not fully applied: {}\n",
            missing.join(", ")
        ));
    }
    s
}

/// One line per pooled command (nothing without a pool), after `heading`.
fn pool_lines(r: &StatusReport, heading: &str) -> String {
    if r.pool.is_empty() {
        return String::new();
    }
    let mut s = heading.to_string();
    for (command, p) in &r.pool {
        let memory = p
            .idle_memory_bytes
            .map_or_else(|| "unknown".to_string(), |b| format!("{} KiB", b / 1024));
        let preimport = if p.preimport.is_empty() {
            "none".to_string()
        } else {
            p.preimport.join(",")
        };
        s.push_str(&format!(
            "  warm {command}: {} of {} ready, preimport {preimport}, {} hits, {} misses, idle rss {} KiB, idle cgroup memory {memory}\n",
            p.ready, p.size, p.hits, p.misses, p.idle_rss_kib
        ));
        if let Some(f) = &p.fork_server {
            let zygote = f.pid.map_or_else(
                || "no zygote running".to_string(),
                |pid| {
                    format!(
                        "zygote {pid}, {} s old, {} forks, rss {} KiB",
                        f.age_ms / 1000,
                        f.forks,
                        f.rss_kib
                    )
                },
            );
            s.push_str(&format!(
                "    fork server {command}: {zygote}; {} started, {} forks in all, {} runs forked on demand\n",
                f.started, f.forks_total, p.forked_now
            ));
        }
    }
    s
}

/// The limit policy: defaults, ceilings, then one line per override context.
fn limits_lines(r: &StatusReport) -> String {
    let values = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let l = &r.limits;
    let mut s = format!("limits    defaults {}\n", values(&l.defaults));
    if !l.ceilings.is_empty() {
        s.push_str(&format!("          ceilings {}\n", values(&l.ceilings)));
    }
    for (context, overrides) in &l.contexts {
        s.push_str(&format!(
            "          context {context:?}: {}\n",
            values(overrides)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layer, LayerState, Load, Mode};

    #[test]
    fn status_table_names_degraded_layers() {
        let layer = |state, required| Layer {
            state,
            required,
            holds: state == LayerState::Full,
            detail: "d".into(),
        };
        let mut r = StatusReport {
            broker_version: "0.1.0".into(),
            protocol_version: 1,
            mode: Mode::Confined,
            layers: [
                ("landlock".to_string(), layer(LayerState::Full, true)),
                ("seccomp".to_string(), layer(LayerState::Partial, false)),
            ]
            .into_iter()
            .collect(),
            load: Load::default(),
            pool: Default::default(),
            commands: Default::default(),
            limits: crate::LimitsReport {
                defaults: [("CPU".to_string(), 1), ("REALTIME".to_string(), 3)].into(),
                ceilings: Default::default(),
                contexts: [(
                    "course-v1:x".to_string(),
                    [("REALTIME".to_string(), 9)].into(),
                )]
                .into(),
            },
        };
        let t = status_table(&r);
        assert!(t.contains("mode      confined"), "{t}");
        assert!(
            t.contains("limits    defaults CPU=1 REALTIME=3\n")
                && t.contains("          context \"course-v1:x\": REALTIME=9\n")
                && !t.contains("ceilings"),
            "{t}"
        );
        assert!(t.contains("OK"), "{t}");
        // A required layer that is partial but meets its minimum (Landlock's ABI).
        r.layers.insert(
            "landlock".into(),
            Layer {
                holds: true,
                ..layer(LayerState::Partial, true)
            },
        );
        let t = status_table(&r);
        assert!(t.contains("verdict   OK"), "{t}");
        r.layers
            .insert("userns".into(), layer(LayerState::Unavailable, true));
        let t = status_table(&r);
        assert!(
            t.contains("DEGRADED: required layers not fully applied: userns"),
            "{t}"
        );
        assert!(t.contains("unavailable"), "{t}");
    }
}
