//! The fork server (`--fork-server`, `[pool.<command>] fork_server = true`): a pool's
//! warm jails are forked from the command's zygote, an interpreter started once with
//! the preimports (docs/architecture.md, "Fork server"). What the rest of the suite
//! checks of every run holds for these too (scripts/test.sh runs jail_code, safe_exec,
//! confinement, robustness and run_semantics with `CODEJAIL_TEST_FORK_SERVER=1`); this
//! file checks the fork server itself:
//!
//! - a warm run's program is a fork of the zygote, three generations down (zygote ->
//!   stage -> the run's init -> the program), not an interpreter of its own;
//! - generators the zygote imported draw afresh in every run (`random`, numpy's,
//!   `random2`);
//! - the zygote is out of a run's reach: it cannot signal it, see it or trace it, and
//!   the zygote still serves afterwards;
//! - a zygote killed under load is replaced, and no run fails meanwhile;
//! - the production shape with per-run uids refuses a fork server (not built yet),
//!   naming the key.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use codejail_tests::{
    broker, processes, processes_with, text, unique_marker, wait_until, with_limit, BrokerOpts,
    JailRequest, Marked, ProcInfo, Shape, TestBroker,
};

/// A dev broker whose python pool of 2 is forked from a zygote with `json` preimported.
fn forked_pool() -> BrokerOpts {
    BrokerOpts::new().args(["--fork-server", "--pool-size", "2", "--preimport", "json"])
}

fn py(code: &str) -> JailRequest {
    with_limit(
        with_limit(codejail_tests::py(code), "REALTIME", 20),
        "CPU",
        10,
    )
}

/// The pids of the zygotes the broker started, in order (its log).
fn zygotes_started(b: &TestBroker) -> Vec<i32> {
    b.log()
        .lines()
        .filter(|l| l.contains("zygote started"))
        .filter_map(|l| {
            let at = l.find("zygote=")? + "zygote=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn process(pid: i32) -> Option<ProcInfo> {
    processes().into_iter().find(|p| p.pid == pid)
}

#[tokio::test]
async fn warm_runs_are_forked_from_the_zygote() {
    let b = broker!(forked_pool());
    let zygotes = zygotes_started(&b);
    assert_eq!(zygotes.len(), 1, "one zygote at start: {}", b.log());
    let zygote = process(zygotes[0]).expect("the zygote runs");
    assert_eq!(
        zygote.ppid as u32,
        b.pid(),
        "the broker's child: {zygote:?}"
    );
    assert!(
        zygote.cmdline.contains("python") && zygote.cmdline.ends_with("jailed_code"),
        "the command's interpreter, started as a warm jail's: {zygote:?}"
    );
    let marker = unique_marker("forked");
    let mut req = py("import time, sys\nprint('json' in sys.modules)\ntime.sleep(2)\n");
    req.mark(&marker);
    // The run's program, its init and its stage, seen from the host while it runs.
    let watch = async {
        for _ in 0..300 {
            if let Some(program) = processes_with(&marker).first().cloned() {
                let init = process(program.ppid).expect("its init");
                let stage = process(init.ppid).expect("its stage");
                return Some((program, init, stage));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    };
    let (res, found) = tokio::join!(b.run(&req), watch);
    assert_eq!(res.status, 0, "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout).trim(), "True", "the preimport is loaded");
    let (program, init, stage) = found.expect("the run's program seen from the host");
    assert_eq!(
        stage.ppid, zygotes[0],
        "program {program:?} <- init {init:?} <- stage {stage:?}: forked from the zygote"
    );
    // The program is the zygote's interpreter, not one exec'd for the run.
    assert_eq!(program.cmdline, zygote.cmdline, "{program:?}");
    assert!(
        b.log().contains("served=\"forked\""),
        "the journal says how the run was served: {}",
        b.log()
    );
}

/// Global generators seeded in the zygote would give every run the same numbers: the
/// stdlib's `random` reseeds itself at fork, the hook reseeds numpy's and capa's
/// `random2`. With all three preimported in the zygote, the same unseeded code draws
/// different numbers in two runs, and seeding still gives the documented values.
#[tokio::test]
async fn preimported_generators_draw_afresh_in_every_run() {
    let Some(python) = codejail_tests::edx_python() else {
        return;
    };
    let b = broker!(BrokerOpts::new().python(python).args([
        "--fork-server",
        "--pool-size",
        "2",
        // numpy.random itself: `import numpy` leaves it to the first use, which a
        // zygote importing only numpy would leave to each run.
        "--preimport",
        "numpy.random",
        "--preimport",
        "random2",
        "--preimport",
        "random",
    ]));
    let code = r#"
import json, random, random2, numpy
draws = [random.random(), random2.random(), numpy.random.random()]
random.seed(42); random2.seed(42); numpy.random.seed(42)
seeded = [random.random(), random2.random(), numpy.random.random()]
print(json.dumps([draws, seeded]))
"#;
    let first = b.run(&py(code)).await;
    let second = b.run(&py(code)).await;
    let parse = |r: &codejail_tests::JailResult| -> Vec<Vec<f64>> {
        assert_eq!(r.status, 0, "{}", text(&r.stderr));
        serde_json::from_str(text(&r.stdout).trim()).expect("json")
    };
    let (first, second) = (parse(&first), parse(&second));
    for (i, name) in ["random", "random2", "numpy.random"].iter().enumerate() {
        assert_ne!(
            first[0][i], second[0][i],
            "{name} drew the same number in two forked runs"
        );
        assert_eq!(first[1][i], second[1][i], "{name} seeded");
    }
    assert_eq!(first[1][0], 0.6394267984578837, "random seeded with 42");
    assert_eq!(first[1][2], 0.3745401188473625, "numpy seeded with 42");
    let status = codejail_client::status(&b.cfg()).await.expect("status");
    assert!(
        status.pool["python"].hits >= 2,
        "both runs forked: {status:?}"
    );
}

#[tokio::test]
async fn a_run_cannot_reach_its_zygote() {
    let b = broker!(forked_pool());
    let zygote = zygotes_started(&b)[0];
    let code = format!(
        r#"
import ctypes, errno, os, signal
def attempt(name, f):
    try:
        f()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
attempt("kill", lambda: os.kill({zygote}, signal.SIGKILL))
attempt("signal 0", lambda: os.kill({zygote}, 0))
attempt("open its mem", lambda: open("/proc/{zygote}/mem", "rb"))
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, {zygote}, None, None)  # PTRACE_ATTACH
print("ptrace", "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno()))
attempt("pidfd_open", lambda: os.pidfd_open({zygote}))
"#
    );
    let res = b.run(&py(&code)).await;
    assert_eq!(res.status, 0, "{}", text(&res.stderr));
    let out = text(&res.stdout);
    for (what, errnos) in [
        ("kill", &["ESRCH"][..]),
        ("signal 0", &["ESRCH"]),
        ("open its mem", &["ENOENT", "EACCES"]),
        ("ptrace", &["EPERM"]),
        ("pidfd_open", &["ESRCH", "EPERM"]),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{what} ")))
            .unwrap_or_else(|| panic!("{what}: no result in {out}"));
        let got = &line[what.len() + 1..];
        assert!(errnos.contains(&got), "{what}: {got} (want {errnos:?})");
    }
    // Still the same zygote, still serving.
    assert!(process(zygote).is_some(), "the zygote survived");
    let res = b.run(&py("print(6 * 7)")).await;
    assert_eq!(text(&res.stdout).trim(), "42");
    assert_eq!(zygotes_started(&b), vec![zygote], "not replaced");
}

#[tokio::test]
async fn a_killed_zygote_is_replaced_and_no_run_fails() {
    let b = broker!(forked_pool());
    let first = zygotes_started(&b)[0];
    // Runs keep coming while the zygote is killed: each one succeeds (warm, or cold
    // while the pool cannot build).
    let runs = async {
        let mut outs = Vec::new();
        for i in 0..12 {
            let res = b.run(&py(&format!("print({i})"))).await;
            outs.push((i, res.status, text(&res.stdout).trim().to_string()));
        }
        outs
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the zygote");
    };
    let (outs, ()) = tokio::join!(runs, kill);
    for (i, status, out) in outs {
        assert_eq!(
            (status, out.as_str()),
            (0, i.to_string().as_str()),
            "run {i}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || zygotes_started(&b).len() >= 2),
        "a new zygote was started: {}",
        b.log()
    );
    let second = *zygotes_started(&b).last().expect("a second zygote");
    assert_ne!(second, first);
    // The pool is served from the new zygote again: within a few runs (the jails
    // built before the kill are used first), one is forked from it.
    let mut parents = Vec::new();
    for _ in 0..6 {
        let marker = unique_marker("again");
        let mut req = py("import time\ntime.sleep(1)\n");
        req.mark(&marker);
        let watch = async {
            for _ in 0..300 {
                if let Some(p) = processes_with(&marker).first() {
                    let init = process(p.ppid)?;
                    let stage = process(init.ppid)?;
                    return Some(stage.ppid);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        };
        let (res, parent) = tokio::join!(b.run(&req), watch);
        assert_eq!(res.status, 0, "{}", text(&res.stderr));
        parents.push(parent);
        if parent == Some(second) {
            return;
        }
    }
    panic!("no run forked from the new zygote {second}: the stages' parents were {parents:?}");
}

#[tokio::test]
async fn per_run_uids_refuse_a_fork_server() {
    let Some((status, log)) = TestBroker::start_expecting_failure(
        BrokerOpts::new()
            .shape(Shape::Production)
            .args(["--fork-server"]),
    ) else {
        return;
    };
    assert!(!status.success());
    assert!(
        log.contains("pool.python.fork_server") && log.contains("run_ids"),
        "the refusal names the key and why: {log}"
    );
}
