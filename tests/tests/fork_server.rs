//! The fork server (`--fork-server`, `[pool.<command>] fork_server = true`): a pool's
//! warm jails are forked from the command's zygote, an interpreter started once with
//! the preimports (docs/architecture.md, "Fork server"). What the rest of the suite
//! checks of every run holds for these too (scripts/test.sh runs jail_code, safe_exec,
//! confinement, robustness, run_semantics and http with `CODEJAIL_TEST_FORK_SERVER=1`);
//! this file checks the fork server itself:
//!
//! - a warm run's program is a fork of the zygote, two generations down (zygote ->
//!   the run's init -> the program: no stage process), not an interpreter of its own;
//! - generators the zygote imported draw afresh in every run (`random`, numpy's,
//!   `random2`);
//! - the zygote is out of a run's reach: it cannot signal it, see it or trace it, and
//!   the zygote still serves afterwards;
//! - a zygote killed under load is replaced, and no run fails meanwhile; one that has
//!   served its `zygote_max_forks` is replaced too;
//! - a forked run exits without module teardown;
//! - `status` shows the fork server, and a run that finds no jail ready forks its own;
//! - with per-run uids (the production shape) each forked run has its own, its init
//!   in a user namespace of its own.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use codejail_tests::{
    broker, processes, processes_with, text, unique_marker, wait_until, with_limit, BrokerOpts,
    JailRequest, Marked, ProcInfo, Shape, TestBroker, PY_ATTEMPT,
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

/// Wait (up to 5 s) until `b`'s python pool has `size` jails ready again: the start-up
/// self-test takes one, and a run finding none ready forks its own instead (counted
/// as `forked_now`, not as a hit).
async fn wait_pool_full(b: &TestBroker, size: u32) {
    for _ in 0..100 {
        let status = codejail_client::status(&b.cfg()).await.expect("status");
        if status.pool["python"].ready == size {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // The run's program and its init, seen from the host while it runs.
    let watch = async {
        for _ in 0..300 {
            if let Some(program) = processes_with(&marker).first().cloned() {
                let init = process(program.ppid).expect("its init");
                return Some((program, init));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    };
    let (res, found) = tokio::join!(b.run(&req), watch);
    assert_eq!(res.status, 0, "{}", text(&res.stderr));
    assert_eq!(text(&res.stdout).trim(), "True", "the preimport is loaded");
    let (program, init) = found.expect("the run's program seen from the host");
    // No stage between them: the zygote's child is the run's init.
    assert_eq!(
        init.ppid, zygotes[0],
        "program {program:?} <- init {init:?}: the init is the zygote's child"
    );
    // The program is the zygote's interpreter, not one exec'd for the run.
    assert_eq!(program.cmdline, zygote.cmdline, "{program:?}");
    assert!(
        b.log().contains("served=\"forked\""),
        "the journal says how the run was served: {}",
        b.log()
    );
    // `status` shows the fork server: its zygote, and the forks it made (the pool's
    // two jails, this run's replacement).
    let status = codejail_client::status(&b.cfg()).await.expect("status");
    let f = status.pool["python"]
        .fork_server
        .clone()
        .expect("the pool's fork server in status");
    assert_eq!(f.pid, Some(zygotes[0] as u32), "{f:?}");
    assert!(f.forks >= 2 && f.forks_total == f.forks, "{f:?}");
    assert_eq!(f.started, 1, "{f:?}");
    assert!(f.age_ms > 0 && f.rss_kib > 5_000, "{f:?}");
    // The confinement report says what a forked run achieves, layer by layer (the
    // start-up probe ran in one); this dev broker makes no cgroups, so that layer has
    // nothing to add.
    for name in ["namespaces", "rlimits", "landlock", "seccomp", "exec"] {
        let detail = &status.layers[name].detail;
        assert!(
            detail.contains("runs forked from the python zygote: "),
            "{name}: {detail}"
        );
    }
    let cgroups = &status.layers["cgroups"].detail;
    assert!(!cgroups.contains("forked"), "{cgroups}");
    let text_status = codejail_protocol::render::status_table(&status);
    assert!(
        text_status.contains(&format!("fork server python: zygote {}", zygotes[0])),
        "{text_status}"
    );
}

/// When no pooled jail is ready, a run of a fork server's command gets a jail forked
/// for it at once rather than a cold start: with a pool of one, four concurrent runs
/// are all served forked (the pool's jail or one forked on demand), none cold, and
/// `status` counts them.
#[tokio::test]
async fn a_run_finding_no_jail_ready_forks_its_own() {
    let b = broker!(BrokerOpts::new().args([
        "--fork-server",
        "--pool-size",
        "1",
        "--preimport",
        "json"
    ]));
    let req = py("import time\ntime.sleep(0.3)\nprint('ok')\n");
    let (r1, r2, r3, r4) = tokio::join!(b.run(&req), b.run(&req), b.run(&req), b.run(&req));
    for r in [r1, r2, r3, r4] {
        assert_eq!(
            (r.status, text(&r.stdout).trim()),
            (0, "ok"),
            "{}",
            text(&r.stderr)
        );
    }
    let status = codejail_client::status(&b.cfg()).await.expect("status");
    let p = &status.pool["python"];
    assert_eq!(p.misses, 0, "no run went cold: {p:?}\n{}", b.log());
    assert_eq!(p.hits + p.forked_now, 4, "{p:?}");
    assert!(p.forked_now >= 1, "{p:?}");
    let log = b.log();
    let runs = || {
        log.lines()
            .filter(|l| l.contains("run ended") && !l.contains("self-test"))
    };
    assert_eq!(runs().count(), 4, "{log}");
    assert!(
        runs().all(|l| l.contains("served=\"forked\"")),
        "every run served forked: {log}"
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
    wait_pool_full(&b, 2).await;
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

/// A forked run exits as CPython promises (threads joined, atexit handlers run, streams
/// flushed, CPython's status: run_semantics.rs checks those in every pass) but without
/// module teardown (zygote/src/exit.rs): an object still alive at the end is not
/// finalized, where a cold run's is. A run that takes the exit handler away
/// (`atexit._clear()`) gets CPython's own finalization back.
#[tokio::test]
async fn a_forked_run_skips_module_teardown() {
    // No reference cycle (a class of the script's own would make one through its
    // module's dict, which the zygote froze): finalized by teardown, not by a collection.
    let code = "import functools\nD = type('D', (), {'__del__': functools.partial(print, 'finalized')})\nd = D()\nprint('end')\n";
    let cleared = format!("import atexit\natexit._clear()\n{code}");
    let cold = broker!(BrokerOpts::new());
    let forked = broker!(forked_pool());
    for (b, name, want) in [
        (&cold, "cold", "end\nfinalized\n"),
        (&forked, "forked", "end\n"),
    ] {
        for (code, want) in [(code, want), (cleared.as_str(), "end\nfinalized\n")] {
            let res = b.run(&py(code)).await;
            assert_eq!(
                (res.status, text(&res.stdout)),
                (0, want.to_string()),
                "{name}, {code:?}: {}",
                text(&res.stderr)
            );
        }
    }
    let status = codejail_client::status(&forked.cfg())
        .await
        .expect("status");
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
        r#"{PY_ATTEMPT}
import ctypes, os, signal
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
    // Runs keep coming while the zygote is killed mid-load: each one succeeds (warm
    // from a jail built before, or cold while the pool cannot build).
    let runs = async {
        let mut outs = Vec::new();
        for i in 0..40 {
            let res = b.run(&py(&format!("print({i})"))).await;
            outs.push((i, res.status, text(&res.stdout).trim().to_string()));
        }
        outs
    };
    let kill = async {
        // Once some runs have been served (the jails the zygote forked in use).
        while codejail_client::status(&b.cfg())
            .await
            .map_or(0, |s| s.pool["python"].hits)
            < 4
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the zygote");
    };
    let (outs, ()) = tokio::join!(runs, kill);
    assert!(process(first).is_none(), "the zygote was killed");
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
                    return Some(init.ppid);
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
    panic!("no run forked from the new zygote {second}: the inits' parents were {parents:?}");
}

/// A zygote serves the pool's `zygote_max_forks` forks (`--zygote-max-forks`), then
/// another takes its place and it is gone; no run fails for it.
#[tokio::test]
async fn a_zygote_is_replaced_after_its_configured_forks() {
    let b = broker!(BrokerOpts::new().args([
        "--fork-server",
        "--pool-size",
        "1",
        "--zygote-max-forks",
        "3"
    ]));
    let first = zygotes_started(&b)[0];
    // Runs until a third zygote has started (each serves three forks; a run that comes
    // while the next one starts goes cold): every one succeeds.
    let mut i = 0;
    while zygotes_started(&b).len() < 3 {
        assert!(i < 60, "no third zygote after {i} runs: {}", b.log());
        let res = b.run(&py(&format!("print({i})"))).await;
        assert_eq!(
            (res.status, text(&res.stdout).trim()),
            (0, i.to_string().as_str()),
            "run {i}: {}",
            text(&res.stderr)
        );
        i += 1;
    }
    assert!(
        wait_until(Duration::from_secs(10), || process(first).is_none()),
        "the first zygote, replaced, is gone"
    );
    let status = codejail_client::status(&b.cfg()).await.expect("status");
    let f = status.pool["python"]
        .fork_server
        .clone()
        .expect("the pool's fork server in status");
    assert!(f.forks <= 3, "the current zygote within its forks: {f:?}");
    // Every zygote before the current one served exactly its three.
    assert_eq!(f.forks_total, 3 * (f.started - 1) + f.forks, "{f:?}");
}

/// With per-run ids (the production shape) the zygote is root in a user namespace of
/// its own, mapped to the broker's uid on the host, and each forked run has its own
/// outside uid from the broker's range, as a cold run has.
#[tokio::test]
async fn per_run_uids_each_forked_run_has_its_own() {
    let b = broker!(BrokerOpts::new().shape(Shape::Production).args([
        "--fork-server",
        "--pool-size",
        "2"
    ]));
    let zygote = zygotes_started(&b)[0];
    let info = process(zygote).expect("the zygote runs");
    assert_eq!(
        Some(info.uid),
        b.uid(),
        "the broker's uid on the host: {info:?}"
    );
    // The capability sets of a process, from /proc/PID/status (hex masks).
    let caps = |pid: i32| -> Vec<(String, u64)> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                let k = k.strip_prefix("Cap")?;
                Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
            })
            .collect()
    };
    let setid = (1u64 << 6) | (1u64 << 7);
    let zygote_caps = caps(zygote);
    assert!(
        zygote_caps.iter().any(|(k, v)| k == "Eff" && *v == setid),
        "the zygote holds CAP_SETUID and CAP_SETGID, nothing else: {zygote_caps:?}"
    );
    let range = b.run_ids().expect("a production broker has run ids");
    wait_pool_full(&b, 2).await;
    // Two runs at once: each forked from the zygote, each with its own uid, each
    // init without any capability on the host.
    let seen = |marker: String| async move {
        for _ in 0..300 {
            if let Some(program) = processes_with(&marker).first().cloned() {
                let init = process(program.ppid)?;
                let ns = std::fs::read_link(format!("/proc/{}/ns/user", init.pid)).ok()?;
                return Some((program.uid, init.ppid, init.uid, caps(init.pid), ns));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    };
    let (ma, mb) = (unique_marker("uida"), unique_marker("uidb"));
    let (mut ra, mut rb) = (
        py("import time\ntime.sleep(2)\n"),
        py("import time\ntime.sleep(2)\n"),
    );
    ra.mark(&ma);
    rb.mark(&mb);
    let (res_a, res_b, a, c) = tokio::join!(b.run(&ra), b.run(&rb), seen(ma), seen(mb));
    assert_eq!(
        (res_a.status, res_b.status),
        (0, 0),
        "{}",
        text(&res_a.stderr)
    );
    let (uid_a, parent_a, init_uid_a, init_caps_a, ns_a) = a.expect("run A seen");
    let (uid_b, parent_b, _, init_caps_b, ns_b) = c.expect("run B seen");
    assert_eq!(
        (parent_a, parent_b),
        (zygote, zygote),
        "both forked from the zygote"
    );
    assert!(
        range.contains(&uid_a) && range.contains(&uid_b) && uid_a != uid_b,
        "per-run uids {uid_a} and {uid_b} from {range:?}"
    );
    assert_eq!(init_uid_a, uid_a, "the init has its run's uid");
    // Its capabilities are its own user namespace's (as a cold run's init's): none on
    // the host, none kept for an exec (the zygote's CAP_SETUID and CAP_SETGID are gone).
    let host_ns = std::fs::read_link("/proc/self/ns/user").expect("our user namespace");
    assert!(
        ns_a != host_ns && ns_b != host_ns && ns_a != ns_b,
        "each init in a user namespace of its own: {ns_a:?} {ns_b:?} (host {host_ns:?})"
    );
    assert!(!init_caps_a.is_empty(), "the init's capabilities were read");
    for (set, mask) in init_caps_a.iter().chain(&init_caps_b) {
        if set == "Amb" || set == "Inh" {
            assert_eq!(*mask, 0, "a forked init's Cap{set}: {init_caps_a:?}");
        }
    }
}

/// A zygote that cannot start says why: an interpreter without codejail's start-up
/// hook (the system's) never answers, and the broker refuses to start with what the
/// interpreter printed in its error, not only a guess.
///
/// Such an interpreter (no hook: its start-up never stops in the zygote) runs its
/// script as the broker, outside any jail, at the path CPython made from the zygote's
/// cwd: that cwd is /proc, where no file can be put, so a `jailed_code` that anyone
/// left in /tmp (the cwd before) is never run.
#[test]
fn a_zygote_that_cannot_start_says_why() {
    let marker = std::env::temp_dir().join(format!("codejail-zygote-ran-{}", std::process::id()));
    let planted = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open("/tmp/jailed_code")
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(
                f,
                "open({:?}, 'w').write('ran')",
                marker.display().to_string()
            )
        })
        .is_ok();
    let started = TestBroker::start_expecting_failure(
        BrokerOpts::new()
            .python("/usr/bin/python3")
            .args(["--fork-server"]),
    );
    if planted {
        let _ = std::fs::remove_file("/tmp/jailed_code");
    }
    let ran = marker.exists();
    let _ = std::fs::remove_file(&marker);
    let Some((status, log)) = started else {
        return;
    };
    assert!(
        !ran,
        "the zygote ran a file left at /tmp/jailed_code: {log}"
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("ended before it was ready")
            && log.contains("; the interpreter's output: ")
            && log.contains("/proc/jailed_code"),
        "the interpreter's own words in the refusal: {log}"
    );
}

/// A `.pth` file after the hook's that wraps `builtins.__import__` (its wrapper calls
/// the hook's, which waits for site's import of `sitecustomize`): the hook could not
/// put that wrapper back as a cold start has it, so the zygote refuses, saying so, and
/// the broker refuses to start. (Before, the wrapper also hid the hook's mark, and
/// site's second pass over a venv's `.pth` files took the hook into zygote mode again,
/// to wait on its socket for a greeting that never came.)
#[test]
fn a_zygote_whose_import_is_replaced_while_site_runs_refuses() {
    // Not under /tmp: inside a jail that is the run's workspace.
    let venv = std::path::PathBuf::from(format!(
        "/var/tmp/codejail-wrapped-import-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&venv);
    let made = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--copies", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(made.success(), "python3 -m venv {}", venv.display());
    let site = std::fs::read_dir(venv.join("lib"))
        .expect("the venv's lib")
        .next()
        .expect("lib/pythonX.Y")
        .expect("lib/pythonX.Y")
        .path()
        .join("site-packages");
    let warm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jail/warm");
    for file in ["_codejail_warm.py", "zz-codejail-warm.pth"] {
        std::fs::copy(warm.join(file), site.join(file)).expect("the hook's files");
    }
    std::fs::write(
        site.join("zzz-wrap-import.pth"),
        "import builtins; builtins.__import__ = lambda *a, _i=builtins.__import__, **k: _i(*a, **k)\n",
    )
    .expect("a .pth that wraps __import__");
    let python = venv.join("bin/python3");
    let started = TestBroker::start_expecting_failure(
        BrokerOpts::new()
            .python(python.to_str().expect("a UTF-8 path"))
            .args(["--fork-server"]),
    );
    let _ = std::fs::remove_dir_all(&venv);
    let Some((status, log)) = started else {
        return;
    };
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("builtins.__import__ was replaced while site ran"),
        "the zygote's refusal names the replaced __import__: {log}"
    );
}
