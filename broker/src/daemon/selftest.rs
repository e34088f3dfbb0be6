//! The start-up self-test: one real run through the normal path, checking that the
//! layers the report claims actually hold: its own pid namespace (the program is PID 2,
//! its parent our init, PID 1), the inner run uid, and that reading a host file,
//! creating a network socket, listing `/` and `/proc` and starting a subprocess all
//! fail with `EACCES` (as codejail-service's start-up checks demand), the subprocess
//! unless the command allows exec.

use std::collections::BTreeMap;

use codejail_plan::Achieved;
use codejail_protocol::{Exec, Finished, LimitName, Response};

use crate::run::{Caller, Client, Runs, Warmth};

/// What the probe prints when the jail holds (the last word: the subprocess).
fn expected(allow_exec: bool) -> String {
    let exec = if allow_exec { "ALLOWED" } else { "denied" };
    format!("2 1 1000 denied denied denied denied {exec}")
}

const PROBE: &str = r#"import os, socket, subprocess
def attempt(f):
    try:
        f()
        return 'ALLOWED'
    except PermissionError as e:
        return 'denied' if e.errno == 13 else 'errno%d' % e.errno
    except OSError as e:
        return 'errno%d' % e.errno
print(os.getpid(), os.getppid(), os.getuid(),
      attempt(lambda: open('/etc/passwd').read()),
      attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
      attempt(lambda: os.listdir('/')),
      attempt(lambda: os.listdir('/proc')),
      attempt(lambda: subprocess.run(['/usr/bin/true'], check=True)))
"#;

/// What the probe established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `Err` says what did not hold.
    pub verdict: Result<(), String>,
    /// What Landlock achieved in the probe run.
    pub landlock: Option<Achieved>,
    /// Entries of the seccomp deny list the probe run got.
    pub seccomp_denied: Option<u32>,
    /// The command whose pool forks its jails from a zygote, when the probe also held
    /// in a jail of that pool (the forked path), with the same Landlock and seccomp.
    pub forked: Option<String>,
}

impl Probe {
    /// A probe that has not run (its report shows every probed layer as not held).
    pub fn not_run() -> Probe {
        Probe {
            verdict: Err("not run yet".into()),
            landlock: None,
            seccomp_denied: None,
            forked: None,
        }
    }
}

/// Run the probe in a cold jail, then (when a pool is configured) in a warm one.
pub async fn probe(runs: &Runs) -> Probe {
    let cold = probe_in(runs, Warmth::Cold).await;
    if cold.verdict.is_err() || runs.pools().is_empty() {
        return cold;
    }
    let warm = probe_in(runs, Warmth::Warm).await;
    runs.pools().reset_counts();
    // The probe's warm run is the python pool's (`probe_in`).
    let forked = runs
        .settings()
        .pools
        .get("python")
        .filter(|spec| spec.fork_server)
        .map(|_| "python".to_string());
    match warm.verdict {
        Ok(()) if (warm.landlock, warm.seccomp_denied) == (cold.landlock, cold.seccomp_denied) => {
            Probe { forked, ..cold }
        }
        Ok(()) => Probe {
            verdict: Err(format!(
                "the warm jail's confinement (landlock {:?}, seccomp {:?}) differs from a cold one's ({:?}, {:?})",
                warm.landlock, warm.seccomp_denied, cold.landlock, cold.seccomp_denied
            )),
            ..cold
        },
        Err(e) => Probe {
            verdict: Err(format!("warm run: {e}")),
            ..cold
        },
    }
}

/// What the probe's run sent back.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    finished: Option<Finished>,
    error: Option<String>,
    landlock: Option<Achieved>,
    seccomp_denied: Option<u32>,
}

impl Client for Collected {
    async fn send(&mut self, response: Response) -> bool {
        match response {
            Response::Stdout(b) => self.stdout.extend(b),
            Response::Stderr(b) => self.stderr.extend(b),
            Response::Finished(f) => self.finished = Some(f),
            Response::Error { message, .. } => self.error = Some(message),
            _ => {}
        }
        true
    }

    async fn left(&mut self) -> bool {
        std::future::pending().await
    }

    fn confined(&mut self, landlock: Option<Achieved>, seccomp_denied: Option<u32>) {
        self.landlock = landlock;
        self.seccomp_denied = seccomp_denied;
    }
}

/// Run the probe in a jail of this warmth, as a request runs: through [`Runs::exec`],
/// with its own uid from the pool and its own cgroup.
async fn probe_in(runs: &Runs, warmth: Warmth) -> Probe {
    let failed = |e: String| Probe {
        verdict: Err(e),
        landlock: None,
        seccomp_denied: None,
        forked: None,
    };
    let Some(python) = runs.settings().commands.get("python") else {
        return failed("no `python` command configured to probe with".into());
    };
    let expected = expected(python.allow_exec);
    let exec = Exec {
        command: "python".into(),
        code: Some(PROBE.as_bytes().to_vec()),
        limits: probe_limits(&runs.settings().limits.ceilings),
        slug: Some("self-test".into()),
        ..Exec::default()
    };
    let caller = Caller {
        peer_uid: nix::unistd::getuid().as_raw(),
        held: None,
        warmth,
    };
    let mut got = Collected::default();
    runs.exec(exec, caller, &mut got).await;
    let finished = match (got.finished, got.error) {
        (Some(f), _) => f,
        (None, Some(e)) => return failed(e),
        (None, None) => return failed("the probe run gave no answer".into()),
    };
    let out = String::from_utf8_lossy(&got.stdout);
    let verdict = if finished.status != 0 || out.trim() != expected {
        Err(format!(
            "probe run gave status {} stdout {:?} stderr {:?}; expected {expected:?}",
            finished.status,
            out.trim(),
            String::from_utf8_lossy(&got.stderr).trim()
        ))
    } else if runs.cgroups().makes_run_cgroups()
        && runs.cgroups().status().memory
        && finished.usage.peak_memory_bytes.is_none()
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
        landlock: got.landlock,
        seccomp_denied: got.seccomp_denied,
        forked: None,
    }
}

/// The probe's REALTIME and CPU: generous, because a host's first interpreter start
/// can be slow (cold caches; a software-emulated VM took seconds), but within the
/// configured ceilings. A limit above its ceiling would be refused, and leaving it out
/// would give the probe the defaults (upstream's REALTIME of 1 s), which such a start
/// outlasts.
fn probe_limits(ceilings: &BTreeMap<LimitName, u64>) -> BTreeMap<String, u64> {
    [(LimitName::Realtime, 30u64), (LimitName::Cpu, 10u64)]
        .into_iter()
        .map(|(name, wanted)| {
            let value = match ceilings.get(&name) {
                Some(&ceiling) if ceiling > 0 => wanted.min(ceiling),
                _ => wanted,
            };
            (name.as_str().to_string(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_gets_generous_limits_within_the_ceilings() {
        let none = probe_limits(&BTreeMap::new());
        assert_eq!(none["REALTIME"], 30);
        assert_eq!(none["CPU"], 10);
        // The shipped broker.toml's ceilings: the probe keeps its limits, clamped.
        let ceilings = [(LimitName::Realtime, 20), (LimitName::Cpu, 10)]
            .into_iter()
            .collect();
        let clamped = probe_limits(&ceilings);
        assert_eq!((clamped["REALTIME"], clamped["CPU"]), (20, 10));
    }
}
