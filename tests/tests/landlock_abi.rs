//! The broker on older Landlock ABIs, emulated on this machine's newer kernel: the
//! stage asks Landlock for at most ABI N (`--landlock-abi N`), which is what a kernel
//! of that ABI applies (Ubuntu 22.04's 5.15 has ABI 1, Debian 12's 6.1 ABI 2, Ubuntu
//! 24.04's 6.8 ABI 4). Each must serve under the default minimum (ABI 1), report
//! Landlock `partial` with what covers the rest, and keep the confinement battery's
//! errnos; a minimum above the ABI refuses to start, naming both. The real kernels
//! 6.1 and 6.12 are booted by tests/hosts/.

use codejail_tests::*;

/// What a run sees when it tries the attacks whose errnos depend on Landlock or the
/// layers that stand in for its newer rules (after [`PY_ATTEMPT`]).
const ATTACKS: &str = r#"
import os, socket
attempt("read /etc/passwd", lambda: open("/etc/passwd").read())
attempt("list /", lambda: os.listdir("/"))
attempt("write the workdir", lambda: open("x", "w"))
attempt("write tmp/", lambda: open(os.path.join(os.environ["TMPDIR"], "f"), "w").write("x"))
attempt("AF_INET socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
os.mkdir(os.path.join(os.environ["TMPDIR"], "d"))
attempt("rename within tmp/", lambda: os.rename(os.path.join(os.environ["TMPDIR"], "f"), os.path.join(os.environ["TMPDIR"], "d", "f")))
"#;

const EXPECTED: &str = "read /etc/passwd EACCES\nlist / EACCES\nwrite the workdir EACCES\n\
                        write tmp/ ok\nAF_INET socket EACCES\n";

#[tokio::test]
async fn older_landlock_abis_serve_report_partial_and_keep_the_errnos() {
    for abi in [1u32, 2, 4] {
        let b = broker!(BrokerOpts::new().args([
            "--landlock-abi",
            &abi.to_string(),
            "--landlock-min-abi",
            "1",
        ]));
        let status = codejail_client::status(&b.cfg()).await.expect("status");
        let landlock = &status.layers["landlock"];
        assert_eq!(
            (landlock.state, landlock.required, landlock.holds),
            (codejail_protocol::LayerState::Partial, true, true),
            "ABI {abi}: {landlock:?}"
        );
        assert!(
            landlock.detail.starts_with(&format!("ABI {abi}: ")),
            "ABI {abi}: {}",
            landlock.detail
        );
        assert!(status.required_layers_hold(), "ABI {abi}: {status:?}");
        let res = b.run(&py(&format!("{PY_ATTEMPT}{ATTACKS}"))).await;
        let out = text(&res.stdout);
        assert!(
            out.starts_with(EXPECTED),
            "ABI {abi}: {out}\nstderr: {}",
            text(&res.stderr)
        );
        // Moving a file between directories: ABI 1 denies it outright (EXDEV, as a
        // kernel without ABI 2's rule does); from ABI 2 on the run's tmp/ allows it.
        let rename = if abi == 1 { "EXDEV" } else { "ok" };
        assert!(
            out.ends_with(&format!("rename within tmp/ {rename}\n")),
            "ABI {abi}: {out}"
        );
    }
}

#[test]
fn a_minimum_above_the_kernels_abi_refuses_to_start_naming_both() {
    let Some((status, log)) = TestBroker::start_expecting_failure(BrokerOpts::new().args([
        "--landlock-abi",
        "2",
        "--landlock-min-abi",
        "4",
    ])) else {
        return;
    };
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(
            "landlock ABI 4 or newer is required (landlock_min_abi) but this kernel has ABI 2"
        ),
        "{log}"
    );
}

/// Without Landlock's signal scope (ABI < 6, as on Debian 12's 6.1), `kill(0, ...)`
/// reaches the caller's whole process group across pid namespaces. The run's init
/// gives it a session and group of its own, so a run signalling its group ends only
/// itself: a concurrent run of the same broker (in the dev shape, of the same uid as
/// the broker and as this run) finishes, and the broker keeps serving.
async fn signalling_its_process_group_reaches_only_the_run(shape: Shape) {
    let mut b = broker!(BrokerOpts::new().shape(shape).args([
        "--landlock-abi",
        "2",
        "--landlock-min-abi",
        "1",
    ]));
    let other = async {
        b.run(&with_limit(
            py("import time\ntime.sleep(2)\nprint('other run done')"),
            "REALTIME",
            20,
        ))
        .await
    };
    let attacker = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        b.run(&py(
            "import os, signal\nprint(os.getsid(0) == os.getpgid(0) == 1, flush=True)\nos.kill(0, signal.SIGKILL)\nprint('survived')",
        ))
        .await
    };
    let (other, attacker) = tokio::join!(other, attacker);
    assert_eq!(
        (attacker.status, text(&attacker.stdout).as_str()),
        (-libc::SIGKILL, "True\n"),
        "the attacker's own group is the run's (its init's session): {}",
        text(&attacker.stderr)
    );
    assert_eq!(
        (other.status, text(&other.stdout).as_str()),
        (0, "other run done\n"),
        "the other run is untouched: {}",
        text(&other.stderr)
    );
    assert!(b.is_running(), "the broker survived: {}", b.log());
    let res = b.run(&py("print(6 * 7)")).await;
    assert_eq!(text(&res.stdout), "42\n");
}

both_shapes!(signalling_its_process_group_reaches_only_the_run);
