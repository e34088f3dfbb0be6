//! The start-up self-test: one real run through the normal path, checking that the
//! layers the report claims actually hold: its own pid namespace with our init as
//! PID 1 and /proc showing only the run, the inner run uid, and that reading a host
//! file, creating a network socket and listing `/` all fail (as codejail-service's
//! start-up checks do).

use std::collections::BTreeMap;

use codejail_protocol::Exec;
use tokio::sync::mpsc;

use super::Shared;
use crate::jail::landlock::Achieved;
use crate::run::{self, Output};

/// What the probe prints when the jail holds.
const EXPECTED: &str = "2 1000 ['1', '2'] denied denied denied";

const PROBE: &str = r#"import os, socket
def attempt(f):
    try:
        f()
        return 'ALLOWED'
    except PermissionError:
        return 'denied'
    except OSError as e:
        return 'errno%d' % e.errno
print(os.getpid(), os.getuid(), sorted(p for p in os.listdir('/proc') if p.isdigit()),
      attempt(lambda: open('/etc/passwd').read()),
      attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
      attempt(lambda: os.listdir('/')))
"#;

/// What the probe established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `Err` says what did not hold.
    pub verdict: Result<(), String>,
    /// What Landlock achieved in the probe run.
    pub landlock: Option<Achieved>,
}

/// Run the probe.
pub async fn probe(shared: &Shared) -> Probe {
    let failed = |e: String| Probe {
        verdict: Err(e),
        landlock: None,
    };
    if !shared.settings.commands.contains_key("python") {
        return failed("no `python` command configured to probe with".into());
    }
    let exec = Exec {
        command: "python".into(),
        code: Some(PROBE.as_bytes().to_vec()),
        limits: [("REALTIME".to_string(), 10u64), ("CPU".to_string(), 5u64)]
            .into_iter()
            .filter(|(k, _)| {
                k.parse()
                    .ok()
                    .and_then(|n| shared.settings.limits.ceilings.get(&n))
                    .is_none()
            })
            .collect::<BTreeMap<_, _>>(),
        slug: Some("self-test".into()),
        ..Exec::default()
    };
    let mut spec = match super::handler::prepare(shared, exec) {
        Ok((spec, _)) => spec,
        Err(r) => return failed(r.1),
    };
    // The probe runs as a real run does: its own uid from the pool, its own cgroup.
    let lease = match super::handler::assign_identity(shared, &mut spec) {
        Ok(l) => l,
        Err(r) => return failed(r.1),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Output::Stdout(b) => out.extend(b),
                Output::Stderr(b) => err.extend(b),
            }
        }
        (out, err)
    };
    let ((result, cleanup), (out, err)) =
        tokio::join!(run::execute(spec, tx, std::future::pending()), collect);
    cleanup.finish().await;
    if let Some(l) = lease {
        l.release().await;
    }
    let result = match result {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    let out = String::from_utf8_lossy(&out);
    let verdict = if result.finished.status != 0 || out.trim() != EXPECTED {
        Err(format!(
            "probe run gave status {} stdout {:?} stderr {:?}; expected {EXPECTED:?}",
            result.finished.status,
            out.trim(),
            String::from_utf8_lossy(&err).trim()
        ))
    } else if shared.cgroups.makes_run_cgroups()
        && shared.cgroups.status().memory
        && result.finished.usage.peak_memory_bytes.is_none()
    {
        Err(
            "the run's memory cgroup recorded no peak memory: the cgroups layer does not hold"
                .into(),
        )
    } else {
        Ok(())
    };
    Probe {
        verdict,
        landlock: result.landlock,
    }
}
