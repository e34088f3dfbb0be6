//! The JSON shapes of `codejail-client exec --json` and `status --json` (documented in
//! docs/contracts.md).
//! Kept in the library so that the exact keys are unit-tested in one place.

use serde_json::{json, Map, Value};

use codejail_protocol::{ForkServerStatus, StatusReport};

use crate::JailResult;

/// `exec --json`: `{"status", "stdout", "stderr", "limit_hit", "truncated", "usage"}`,
/// output decoded as UTF-8 with invalid bytes replaced.
pub fn jail_result(r: &JailResult) -> Value {
    json!({
        "status": r.status,
        "stdout": String::from_utf8_lossy(&r.stdout),
        "stderr": String::from_utf8_lossy(&r.stderr),
        "limit_hit": r.limit_hit,
        "truncated": r.truncated,
        "usage": {
            "cpu_user_ms": r.usage.cpu_user_ms,
            "cpu_sys_ms": r.usage.cpu_sys_ms,
            "wall_ms": r.usage.wall_ms,
            "max_rss_kib": r.usage.max_rss_kib,
            "peak_memory_bytes": r.usage.peak_memory_bytes,
        },
    })
}

/// A pool's `fork_server` in `status --json`: `{"pid", "preimport", "age_secs",
/// "forks", "forks_per_sec", "rss_kib", "replacements", "forks_total"}` (docs/contracts.md).
fn fork_server(f: &ForkServerStatus, preimport: &[String]) -> Value {
    let age_secs = f.age_ms as f64 / 1000.0;
    let per_sec = if f.age_ms == 0 {
        0.0
    } else {
        f.forks as f64 / age_secs
    };
    json!({
        "pid": f.pid,
        "preimport": preimport,
        "age_secs": age_secs,
        "forks": f.forks,
        "forks_per_sec": per_sec,
        "rss_kib": f.rss_kib,
        "replacements": f.started.saturating_sub(1),
        "forks_total": f.forks_total,
    })
}

/// `status --json`: `{"broker_version", "protocol_version", "mode", "layers", "load",
/// "commands", "pool", "limits"}`; `limits` is `{"defaults", "ceilings", "contexts"}`.
pub fn status_report(s: &StatusReport) -> Value {
    let layers: Map<String, Value> = s
        .layers
        .iter()
        .map(|(name, l)| {
            let layer = json!({
                "state": l.state.as_str(),
                "required": l.required,
                "holds": l.holds,
                "detail": l.detail,
            });
            (name.clone(), layer)
        })
        .collect();
    let commands: Map<String, Value> = s
        .commands
        .iter()
        .map(|(name, c)| {
            let command = json!({"bin": c.bin, "allow_exec": c.allow_exec});
            (name.clone(), command)
        })
        .collect();
    let pool: Map<String, Value> = s
        .pool
        .iter()
        .map(|(name, p)| {
            let pool = json!({
                "size": p.size,
                "ready": p.ready,
                "preimport": p.preimport,
                "hits": p.hits,
                "misses": p.misses,
                "idle_rss_kib": p.idle_rss_kib,
                "idle_memory_bytes": p.idle_memory_bytes,
                "forked_now": p.forked_now,
                "fork_server": p.fork_server.as_ref().map(|f| fork_server(f, &p.preimport)),
            });
            (name.clone(), pool)
        })
        .collect();
    json!({
        "broker_version": s.broker_version,
        "protocol_version": s.protocol_version,
        "mode": s.mode.as_str(),
        "layers": layers,
        "load": {
            "running": s.load.running,
            "queued": s.load.queued,
            "max_running": s.load.max_running,
            "max_queue": s.load.max_queue,
            "max_connections": s.load.max_connections,
            "connections_fitted": s.load.connections_fitted,
        },
        "commands": commands,
        "pool": pool,
        "limits": {
            "defaults": s.limits.defaults,
            "ceilings": s.limits.ceilings,
            "contexts": s.limits.contexts,
        },
    })
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use super::*;
    use codejail_protocol::{
        CommandInfo, Layer, LayerState, LimitName, Limits, LimitsReport, Load, Mode, PoolStatus,
        Usage,
    };

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn exec_json_has_exactly_the_contract_keys() {
        let r = JailResult {
            stdout: b"ok\n".to_vec(),
            stderr: b"bad \xff byte".to_vec(),
            status: -9,
            usage: Usage {
                cpu_user_ms: 1,
                cpu_sys_ms: 2,
                wall_ms: 3,
                max_rss_kib: 4,
                peak_memory_bytes: None,
            },
            limit_hit: Some("REALTIME".into()),
            truncated: false,
            output_limit: 1 << 20,
            run_id: 7,
            workdir: "/tmp/codejail-7".into(),
            pid: 70,
        };
        let v = jail_result(&r);
        assert_eq!(
            keys(&v),
            [
                "limit_hit",
                "status",
                "stderr",
                "stdout",
                "truncated",
                "usage"
            ]
        );
        assert_eq!(
            keys(&v["usage"]),
            [
                "cpu_sys_ms",
                "cpu_user_ms",
                "max_rss_kib",
                "peak_memory_bytes",
                "wall_ms"
            ]
        );
        assert_eq!(v["status"], json!(-9));
        assert_eq!(v["stdout"], json!("ok\n"));
        assert_eq!(v["stderr"], json!("bad \u{fffd} byte"));
        assert_eq!(v["limit_hit"], json!("REALTIME"));
        assert_eq!(v["truncated"], json!(false));
        assert_eq!(v["usage"]["wall_ms"], json!(3));
        assert_eq!(v["usage"]["peak_memory_bytes"], Value::Null);

        let none = jail_result(&JailResult {
            limit_hit: None,
            usage: Usage {
                peak_memory_bytes: Some(5),
                ..Usage::default()
            },
            ..r
        });
        assert_eq!(none["limit_hit"], Value::Null);
        assert_eq!(none["usage"]["peak_memory_bytes"], json!(5));
    }

    #[test]
    fn status_json_has_exactly_the_contract_keys() {
        let s = StatusReport {
            broker_version: "0.1.0".into(),
            protocol_version: 1,
            mode: Mode::Dev,
            layers: [(
                "landlock".to_string(),
                Layer {
                    state: LayerState::Partial,
                    required: true,
                    holds: true,
                    detail: "ABI 3".into(),
                },
            )]
            .into_iter()
            .collect(),
            load: Load {
                running: 1,
                queued: 2,
                max_running: 3,
                max_queue: 4,
                max_connections: 912,
                connections_fitted: true,
            },
            pool: [(
                "python".to_string(),
                PoolStatus {
                    size: 2,
                    ready: 1,
                    preimport: vec!["numpy".into()],
                    hits: 5,
                    misses: 1,
                    idle_rss_kib: 31000,
                    idle_memory_bytes: None,
                    forked_now: 3,
                    fork_server: Some(ForkServerStatus {
                        pid: Some(77),
                        age_ms: 4000,
                        forks: 10,
                        rss_kib: 29000,
                        started: 2,
                        forks_total: 12,
                    }),
                },
            )]
            .into_iter()
            .collect(),
            commands: [(
                "python".to_string(),
                CommandInfo {
                    bin: "/sandbox/bin/python".into(),
                    allow_exec: false,
                },
            )]
            .into_iter()
            .collect(),
            limits: LimitsReport::new(
                &Limits::default(),
                &[(LimitName::Cpu, 10)].into_iter().collect(),
                &[(
                    "course-v1:big".to_string(),
                    [(LimitName::Realtime, 10)].into_iter().collect(),
                )]
                .into_iter()
                .collect(),
            ),
        };
        let v = status_report(&s);
        assert_eq!(
            keys(&v),
            [
                "broker_version",
                "commands",
                "layers",
                "limits",
                "load",
                "mode",
                "pool",
                "protocol_version"
            ]
        );
        assert_eq!(v["mode"], json!("dev"));
        assert_eq!(keys(&v["limits"]), ["ceilings", "contexts", "defaults"]);
        assert_eq!(v["limits"]["defaults"]["REALTIME"], json!(1));
        assert_eq!(
            v["limits"]["defaults"]
                .as_object()
                .map(serde_json::Map::len),
            Some(LimitName::ALL.len())
        );
        assert_eq!(v["limits"]["ceilings"], json!({"CPU": 10}));
        assert_eq!(
            v["limits"]["contexts"],
            json!({"course-v1:big": {"REALTIME": 10}})
        );
        assert_eq!(v["protocol_version"], json!(1));
        assert_eq!(
            v["pool"],
            json!({"python": {"size": 2, "ready": 1, "preimport": ["numpy"], "hits": 5,
                "misses": 1, "idle_rss_kib": 31000, "idle_memory_bytes": null, "forked_now": 3,
                "fork_server": {"pid": 77, "preimport": ["numpy"], "age_secs": 4.0, "forks": 10,
                    "forks_per_sec": 2.5, "rss_kib": 29000, "replacements": 1, "forks_total": 12}}})
        );
        assert_eq!(
            v["layers"],
            json!({"landlock": {"state": "partial", "required": true, "holds": true,
                "detail": "ABI 3"}})
        );
        assert_eq!(
            v["load"],
            json!({"running": 1, "queued": 2, "max_running": 3, "max_queue": 4,
                "max_connections": 912, "connections_fitted": true})
        );
        assert_eq!(
            v["commands"],
            json!({"python": {"bin": "/sandbox/bin/python", "allow_exec": false}})
        );
    }
}
