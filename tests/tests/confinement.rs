//! Confinement attacks: what a jailed program tries in order to reach the
//! host, the broker or another run, and the layer that stops each attempt, through a
//! real broker started in both shapes:
//!
//! - **dev**: `--dev` as a plain non-root uid with no capabilities (every run maps the
//!   broker's own uid; no cgroups);
//! - **production**: a non-root uid holding only ambient CAP_SETUID/CAP_SETGID (as
//!   systemd's `AmbientCapabilities=` gives), per-run outside uids (`--run-ids`) and
//!   v1 memory+pids cgroups (`--require-cgroups`); needs root to set up, so it skips
//!   without root, and fails under `CODEJAIL_REQUIRE_PRIVILEGED=1`.
//!
//! Every scenario `NAME(shape)` is generated as `NAME::dev` and `NAME::production`
//! ([`both_shapes!`]). Each asserts the specific denial (an errno, an exception, a
//! status), and where it matters a positive control shows the attempt would work
//! without the jail (the host listener does accept, the run's own tmp/ is writable,
//! allowed syscalls work). Most probes report one JSON object of `name -> outcome`,
//! where an outcome is `ok ...` (the attempt worked: with a denial expected, that is a
//! hole) or the errno name (`EACCES`, `EPERM`, ...), so a failure shows exactly which
//! attempt got through and what it saw.
//!
//! Layers, as the stage builds them (docs/architecture.md §4): user ns (identity), pid/mount/net/ipc/uts
//! ns, `pivot_root` into a minimal read-only root, Landlock (paths, TCP, abstract
//! sockets, signals), capabilities dropped + no_new_privs, seccomp deny list, rlimits,
//! the workspace tmpfs caps, cgroups (production).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::ErrorKind as IoErrorKind;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use codejail_protocol::Response;
use codejail_tests::{
    both_shapes, broker, processes, processes_named, processes_with, python, raw_python, text,
    unique_marker, wait_until, with_limit, BrokerOpts, JailRequest, JailResult, Marked, RawConn,
    Shape, TestBroker,
};

// ---------------------------------------------------------------- harness of this file

/// Start a broker of `shape` (or skip the test; see the module doc).
macro_rules! shaped_broker {
    ($shape:expr) => {
        broker!(BrokerOpts::new().shape($shape))
    };
}

/// Room for probes that import ctypes/urllib or fork: the upstream defaults (1 s) are
/// tight on a loaded CI machine.
fn roomy(req: JailRequest) -> JailRequest {
    with_limit(with_limit(req, "REALTIME", 20), "CPU", 10)
}

/// What every probe starts with: `attempt(name, f)` records `ok <result>` or the errno
/// name (or `Exception: message`); `done()` prints the results as one JSON line.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, signal, socket, sys, time
R = {}
def attempt(name, f):
    try:
        r = f()
    except OSError as e:
        R[name] = errno.errorcode.get(e.errno, "errno %s" % e.errno) if e.errno else "%s: %s" % (type(e).__name__, e)
    except Exception as e:
        R[name] = "%s: %s" % (type(e).__name__, e)
    else:
        R[name] = ("ok %r" % (r,))[:300]
def done():
    print(json.dumps(R), flush=True)
"#;

/// A probe: [`PRELUDE`] then `body` (dedented), with each `@KEY@` replaced.
fn probe(body: &str, subs: &[(&str, String)]) -> JailRequest {
    let mut code = format!("{}{}", PRELUDE, codejail_tests::dedent(body));
    for (key, value) in subs {
        code = code.replace(&format!("@{key}@"), value);
    }
    assert!(
        !code.contains("@MARK@"),
        "an unreplaced placeholder in the probe"
    );
    roomy(JailRequest::python(code))
}

/// The probe's results (its last stdout line); panics with everything it printed.
#[track_caller]
fn results(res: &JailResult, b: &TestBroker) -> BTreeMap<String, String> {
    let stdout = text(&res.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "the probe printed no results (status {}); stdout: {stdout:?}; stderr: {:?}; broker log:\n{}",
                res.status,
                text(&res.stderr),
                b.log()
            )
        });
    let r = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad results line {line:?}: {e}"));
    // Shown with --nocapture, and for a failed test.
    eprintln!("probe results: {r:#?}");
    r
}

/// `name`'s outcome is one of `allowed` (errno names, or exact outcomes).
#[track_caller]
fn expect(r: &BTreeMap<String, String>, name: &str, allowed: &[&str]) {
    let got = r
        .get(name)
        .unwrap_or_else(|| panic!("the probe did not record {name:?}: {r:#?}"));
    assert!(
        allowed.contains(&got.as_str()),
        "{name}: expected one of {allowed:?}, got {got:?} (`ok ...` means the attempt worked); \
         every result: {r:#?}"
    );
}

/// `name`'s outcome is a failure of any kind (not `ok ...`).
#[track_caller]
fn expect_failed(r: &BTreeMap<String, String>, name: &str) {
    let got = r
        .get(name)
        .unwrap_or_else(|| panic!("the probe did not record {name:?}: {r:#?}"));
    assert!(
        !got.starts_with("ok"),
        "{name}: the attempt worked ({got:?}); every result: {r:#?}"
    );
}

/// `name`'s outcome is `ok ...` (a positive control).
#[track_caller]
fn expect_ok(r: &BTreeMap<String, String>, name: &str) -> String {
    let got = r
        .get(name)
        .unwrap_or_else(|| panic!("the probe did not record {name:?}: {r:#?}"));
    assert!(
        got.starts_with("ok"),
        "{name} (a positive control) failed: {got:?}; every result: {r:#?}"
    );
    got.clone()
}

/// What a run started on `conn` printed up to its first newline (it runs on: the
/// caller reads the rest later); panics on anything but its start and output.
async fn first_stdout_line(conn: &mut RawConn, b: &TestBroker, what: &str) -> Vec<u8> {
    let mut first = Vec::new();
    while !first.contains(&b'\n') {
        match conn.recv().await {
            Some(Response::Stdout(chunk)) => first.extend(chunk),
            Some(Response::Queued { .. } | Response::Started { .. }) => {}
            other => panic!("{what}: unexpected {other:?}; broker log:\n{}", b.log()),
        }
    }
    first
}

/// After a scenario: no process of the broker's runs is left (verified from the host:
/// the broker's uid in dev, its run uid range in production; nothing to scan when the
/// tests do not run as root), no run cgroup is left, and the broker still serves.
async fn assert_clean(b: &TestBroker) {
    assert!(
        wait_until(Duration::from_secs(5), || b.stray_processes().is_empty()),
        "processes of the runs outlived them: {:?}",
        b.stray_processes()
    );
    if let Some(parents) = b.cgroup_parents() {
        assert!(
            wait_until(Duration::from_secs(5), || parents
                .leftover_runs()
                .is_empty()),
            "run cgroups left: {:?}",
            parents.leftover_runs()
        );
    }
    let res = b.run(&roomy(JailRequest::python("print(1)"))).await;
    assert_eq!(
        (text(&res.stdout).as_str(), res.status),
        ("1\n", 0),
        "the broker must keep serving; stderr: {:?}",
        text(&res.stderr)
    );
}

/// The host paths a jailed program must never reach.
fn host_dirs_to_scan() -> Vec<PathBuf> {
    ["/tmp", "/var/tmp", "/dev/shm", "/"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

/// Host entries (one level below each of `dirs`) whose name contains `marker`.
fn host_entries_with(marker: &str, dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().contains(marker))
        .map(|e| e.path())
        .collect()
}

// ---------------------------------------------------------------- upstream's tests

/// Upstream `test_cant_write_files`. Stopped by Landlock: the workdir has a read rule
/// only (the workspace tmpfs itself is writable; tmp/ alone has a write rule), so
/// creating a file in the cwd is EACCES, upstream's "Permission denied".
async fn test_cant_write_files(shape: Shape) {
    let b = shaped_broker!(shape);
    let res = b
        .run(&roomy(codejail_tests::py(
            r#"
            print("Trying")
            with open("mydata.txt", "w") as f:
                f.write("hello")
            with open("mydata.txt") as f2:
                print("Got this:", f2.read())
            "#,
        )))
        .await;
    assert_ne!(res.status, 0);
    assert_eq!(text(&res.stdout), "Trying\n");
    assert!(
        text(&res.stderr).contains("ermission denied"),
        "stderr: {:?}",
        text(&res.stderr)
    );
    assert_clean(&b).await;
}
both_shapes!(test_cant_write_files);

/// Upstream's fixture: a directory `copied` (copied into the jail) holding `here.txt`,
/// `herelink.txt -> here.txt` and `link.txt -> <abs>/not_copied/linked.txt`, a file
/// that is not copied; as upstream, in a fresh host temp dir (`tempfile.mkdtemp()`).
struct SymlinkFixture {
    _dir: tempfile::TempDir,
    copied: PathBuf,
    linked: PathBuf,
}

fn symlink_fixture() -> SymlinkFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let not_copied = dir.path().join("not_copied");
    std::fs::create_dir(&not_copied).expect("mkdir");
    let linked = not_copied.join("linked.txt");
    std::fs::write(&linked, "Hi!").expect("write");
    let copied = dir.path().join("copied");
    std::fs::create_dir(&copied).expect("mkdir");
    std::fs::write(copied.join("here.txt"), "012345").expect("write");
    std::os::unix::fs::symlink(&linked, copied.join("link.txt")).expect("symlink");
    std::os::unix::fs::symlink("here.txt", copied.join("herelink.txt")).expect("symlink");
    // Positive control: on the host, the link does lead to the secret.
    assert_eq!(
        std::fs::read_to_string(copied.join("link.txt")).expect("read"),
        "Hi!"
    );
    SymlinkFixture {
        _dir: dir,
        copied,
        linked,
    }
}

/// Upstream `test_symlinks_in_directories_wont_copy_data`. Stopped by the client and
/// the workspace (a symlink is copied as a symlink, never followed) and by the
/// filesystem view (the link's absolute host target is not in the jail's root);
/// upstream expects "Permission denied" (Landlock's EACCES where the path exists).
async fn test_symlinks_in_directories_wont_copy_data(shape: Shape) {
    let b = shaped_broker!(shape);
    let fx = symlink_fixture();
    let mut req = roomy(codejail_tests::py(
        r#"
        print(open('copied/here.txt').read())        # can read
        print(open('copied/herelink.txt').read())    # can read
        print(open('copied/link.txt').read())        # can't read
        "#,
    ));
    req.files = vec![fx.copied.clone()];
    let res = b.run(&req).await;
    assert_eq!(text(&res.stdout), "012345\n012345\n");
    assert!(!text(&res.stdout).contains("Hi!"), "the secret leaked");
    assert_ne!(res.status, 0);
    assert!(
        text(&res.stderr).contains("ermission denied"),
        "upstream expects \"Permission denied\" for a link to {} (not copied); stderr: {:?}",
        fx.linked.display(),
        text(&res.stderr)
    );
    assert_clean(&b).await;
}
both_shapes!(test_symlinks_in_directories_wont_copy_data);

/// Upstream `test_symlinks_wont_copy_data`: the same links given one by one. Stopped
/// as [`test_symlinks_in_directories_wont_copy_data`].
async fn test_symlinks_wont_copy_data(shape: Shape) {
    let b = shaped_broker!(shape);
    let fx = symlink_fixture();
    let mut req = roomy(codejail_tests::py(
        r#"
        print(open('here.txt').read())       # can read
        print(open('herelink.txt').read())   # can read
        print(open('link.txt').read())       # can't read
        "#,
    ));
    req.files = ["here.txt", "herelink.txt", "link.txt"]
        .iter()
        .map(|n| fx.copied.join(n))
        .collect();
    let res = b.run(&req).await;
    assert_eq!(text(&res.stdout), "012345\n012345\n");
    assert_ne!(res.status, 0);
    assert!(
        text(&res.stderr).contains("ermission denied"),
        "upstream expects \"Permission denied\" for a link to {} (not copied); stderr: {:?}",
        fx.linked.display(),
        text(&res.stderr)
    );
    assert_clean(&b).await;
}
both_shapes!(test_symlinks_wont_copy_data);

/// Upstream `test_read_etc_passwd`. Stopped by Landlock: /etc is in the jail's root
/// (read-only) but has no rule, so opening /etc/passwd is EACCES.
async fn test_read_etc_passwd(shape: Shape) {
    let b = shaped_broker!(shape);
    // Positive control: the host file exists and anyone on the host can read it.
    assert!(std::fs::read_to_string("/etc/passwd")
        .expect("read /etc/passwd on the host")
        .contains("root:"));
    let res = b
        .run(&roomy(codejail_tests::py(
            r#"
            bytes = len(open('/etc/passwd').read())
            print('Gotcha', bytes)
            "#,
        )))
        .await;
    assert_ne!(res.status, 0);
    assert_eq!(text(&res.stdout), "");
    assert!(
        text(&res.stderr).contains("ermission denied"),
        "stderr: {:?}",
        text(&res.stderr)
    );
    assert_clean(&b).await;
}
both_shapes!(test_read_etc_passwd);

/// Upstream `test_find_other_sandboxes`: every listing must raise. Stopped by Landlock
/// (`/`, `..` = the workspace root, `/tmp`, `/etc`, `/var`: no rule, EACCES) and the
/// filesystem view (`/home` is not in the jail's root).
async fn test_find_other_sandboxes(shape: Shape) {
    let b = shaped_broker!(shape);
    let res = b
        .run(&roomy(codejail_tests::py(
            r#"
            import os
            places = [
                "..", "/tmp", "/", "/home", "/etc", "/var"
                ]
            for place in places:
                try:
                    files = os.listdir(place)
                except Exception:
                    # darn
                    pass
                else:
                    print("Files in %r: %r" % (place, files))
            print("Done.")
            "#,
        )))
        .await;
    assert_eq!(
        (
            text(&res.stdout).as_str(),
            text(&res.stderr).as_str(),
            res.status
        ),
        ("Done.\n", "", 0)
    );
    assert_clean(&b).await;
}
both_shapes!(test_find_other_sandboxes);

/// A TCP listener on the host's loopback, shown to accept connections (the positive
/// control); afterwards, [`assert_no_connection`] checks the jail never reached it.
fn host_tcp_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a host listener");
    let port = listener.local_addr().expect("addr").port();
    let _probe = TcpStream::connect(("127.0.0.1", port)).expect("the host can connect");
    let (_accepted, _) = listener.accept().expect("the listener accepts");
    listener.set_nonblocking(true).expect("nonblocking");
    (listener, port)
}

#[track_caller]
fn assert_no_connection(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the host listener got a connection from the jail ({peer})"),
        Err(e) => panic!("accept: {e}"),
    }
}

/// Upstream `test_cant_use_network`, against a listener on the host's loopback (by
/// name) instead of google.com. Stopped by seccomp (no AF_INET socket: EACCES), under
/// it the network namespace (the jail's loopback is its own, and down) and Landlock
/// (TCP connect denied).
async fn test_cant_use_network(shape: Shape) {
    let b = shaped_broker!(shape);
    let (listener, port) = host_tcp_listener();
    let res = b
        .run(&roomy(codejail_tests::py(&format!(
            r#"
            from urllib.request import urlopen
            print("Reading the host")
            u = urlopen("http://localhost:{port}/")
            page = u.read()
            print(len(page))
            "#
        ))))
        .await;
    assert_ne!(res.status, 0);
    assert_eq!(text(&res.stdout), "Reading the host\n");
    assert!(
        text(&res.stderr).contains("URLError"),
        "stderr: {:?}",
        text(&res.stderr)
    );
    assert_no_connection(&listener);
    assert_clean(&b).await;
}
both_shapes!(test_cant_use_network);

/// Upstream `test_cant_use_raw_network` (by address), plus raw and packet sockets.
/// Stopped as [`test_cant_use_network`]; raw/packet sockets by seccomp (and the lack
/// of CAP_NET_RAW).
async fn test_cant_use_raw_network(shape: Shape) {
    let b = shaped_broker!(shape);
    let (listener, port) = host_tcp_listener();
    let res = b
        .run(&roomy(codejail_tests::py(&format!(
            r#"
            import socket
            for family, kind, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                                        (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                                        (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)]:
                try:
                    socket.socket(family, kind, proto)
                except PermissionError as e:
                    print("raw socket denied:", e.errno)
                else:
                    print("RAW SOCKET OPENED")
            from urllib.request import urlopen
            print("Reading 127.0.0.1")
            u = urlopen("http://127.0.0.1:{port}/")
            page = u.read()
            print(len(page))
            "#
        ))))
        .await;
    assert_ne!(res.status, 0);
    // EACCES, as an AppArmor-confined upstream answers (its callers match errno 13).
    let eacces = libc::EACCES;
    assert_eq!(
        text(&res.stdout),
        format!(
            "raw socket denied: {eacces}\nraw socket denied: {eacces}\nraw socket denied: {eacces}\n\
             Reading 127.0.0.1\n"
        )
    );
    assert!(
        text(&res.stderr).contains("URLError"),
        "stderr: {:?}",
        text(&res.stderr)
    );
    assert_no_connection(&listener);
    assert_clean(&b).await;
}
both_shapes!(test_cant_use_raw_network);

// ---------------------------------------------------------------- host files

/// Reading what belongs to the host or the broker. Stopped by the filesystem view
/// (`pivot_root`: /root, /home, the broker's state dir, socket and log are not in the
/// jail's root, or masked: ENOENT or EACCES), Landlock (/etc is there read-only but has
/// no rule: EACCES), and the absence of any procfs (`/proc` is a mode-0 directory:
/// every process's environ, the broker's or the run's own init's, gives EACCES, as
/// upstream's AppArmor profile answers).
async fn host_files_are_unreadable(shape: Shape) {
    let b = shaped_broker!(shape);
    // A secret the test plants on the host, world-readable, in a world-searchable dir.
    let secret_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(secret_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let marker = unique_marker("secret");
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, &marker).expect("write the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // Positive controls: the host can read them all.
    for p in ["/etc/passwd", "/etc/shadow", "/root"] {
        assert!(Path::new(p).exists(), "{p} exists on the host");
    }
    assert!(b.socket().exists() && b.root_dir().join("broker.log").exists());
    let broker_pid = b.pid();
    assert!(Path::new(&format!("/proc/{broker_pid}/environ")).exists());

    let req = probe(
        r#"
        def read(p):
            with open(p, "rb") as f:
                return f.read(200)
        attempt("/etc/passwd", lambda: read("/etc/passwd"))
        attempt("/etc/shadow", lambda: read("/etc/shadow"))
        attempt("/etc/hostname", lambda: read("/etc/hostname"))
        attempt("list /etc", lambda: os.listdir("/etc"))
        attempt("/root", lambda: os.listdir("/root"))
        attempt("/root/.bashrc", lambda: read("/root/.bashrc"))
        attempt("/home", lambda: os.listdir("/home"))
        attempt("secret", lambda: read("@SECRET@"))
        attempt("state dir", lambda: os.listdir("@STATE@"))
        attempt("socket dir", lambda: os.listdir("@SOCKDIR@"))
        attempt("broker log", lambda: read("@LOG@"))
        attempt("broker environ", lambda: read("/proc/@BPID@/environ"))
        attempt("broker status", lambda: read("/proc/@BPID@/status"))
        attempt("init environ", lambda: read("/proc/1/environ"))
        attempt("init mem", lambda: read("/proc/1/mem"))
        attempt("init root", lambda: os.listdir("/proc/1/root"))
        attempt("/proc/self/environ", lambda: read("/proc/self/environ"))
        attempt("/proc/1/cmdline", lambda: read("/proc/1/cmdline"))
        attempt("list /proc", lambda: os.listdir("/proc"))
        attempt("own environment", lambda: sorted(os.environ))
        attempt("own code", lambda: read("jailed_code")[:10])
        attempt("python stdlib", lambda: read(os.__file__)[:10])
        honey = []
        for pid in range(1, 4096):
            try:
                if b"HONEY" in read("/proc/%s/environ" % pid):
                    honey.append(pid)
            except OSError:
                pass
        R["honey"] = repr(honey)
        done()
        "#,
        &[
            ("SECRET", secret.display().to_string()),
            ("STATE", b.state_dir().display().to_string()),
            (
                "SOCKDIR",
                b.socket().parent().unwrap().display().to_string(),
            ),
            ("LOG", b.root_dir().join("broker.log").display().to_string()),
            ("BPID", broker_pid.to_string()),
        ],
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    assert!(
        !text(&res.stdout).contains(&marker) && !text(&res.stdout).contains("root:x:0"),
        "a host secret leaked: {r:#?}"
    );
    expect(&r, "/etc/passwd", &["EACCES"]);
    expect(&r, "/etc/shadow", &["EACCES"]);
    // Not in the view at all: its /etc holds only what the interpreter reads and
    // the placeholders above (`host_etc_files_cannot_be_stat`).
    expect(&r, "/etc/hostname", &["ENOENT"]);
    expect(&r, "list /etc", &["EACCES"]);
    expect(&r, "/root", &["ENOENT", "EACCES"]);
    expect(&r, "/root/.bashrc", &["ENOENT", "EACCES"]);
    expect(&r, "/home", &["ENOENT", "EACCES"]);
    expect(&r, "secret", &["ENOENT", "EACCES"]);
    expect(&r, "state dir", &["ENOENT", "EACCES"]);
    expect(&r, "socket dir", &["ENOENT", "EACCES"]);
    expect(&r, "broker log", &["ENOENT", "EACCES"]);
    for name in [
        "broker environ",
        "broker status",
        "init environ",
        "init mem",
        "init root",
        "/proc/self/environ",
        "/proc/1/cmdline",
        "list /proc",
    ] {
        expect(&r, name, &["EACCES"]);
    }
    expect(&r, "honey", &["[]"]);
    // Positive controls: the run reads its own files, environment and interpreter.
    expect_ok(&r, "own environment");
    expect_ok(&r, "own code");
    expect_ok(&r, "python stdlib");
    assert_clean(&b).await;
}
both_shapes!(host_files_are_unreadable);

/// `stat()` is not mediated by Landlock, so whatever the view shares with the host can
/// be probed for existence, size and times even where it cannot be opened. The view's
/// `/etc` holds only the loader's cache and the time zone (readable, as the
/// interpreter needs them) and fixed, empty, mode-0 placeholders (`passwd` must give
/// upstream's EACCES): host files such as `/etc/shadow`'s size, `/etc/machine-id` or
/// the test's own file planted in the host's `/etc` are not there to stat.
async fn host_etc_files_cannot_be_stat(shape: Shape) {
    let b = shaped_broker!(shape);
    let planted = tempfile::Builder::new()
        .prefix("codejail-etc-probe-")
        .tempfile_in("/etc")
        .expect("a file in the host's /etc");
    std::fs::write(planted.path(), "host data").expect("write");
    let name = planted
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    // Positive controls on the host.
    let host_shadow = std::fs::metadata("/etc/shadow").expect("host /etc/shadow");
    assert!(host_shadow.len() > 0);
    let req = probe(
        r#"
        def st(p):
            s = os.stat(p)
            return (oct(s.st_mode), s.st_size)
        for p in ["/etc/passwd", "/etc/shadow", "/etc/machine-id", "/etc/os-release",
                  "/etc/@NAME@", "/etc/apt"]:
            attempt("stat " + p, lambda p=p: st(p))
        attempt("read /etc/passwd", lambda: open("/etc/passwd").read())
        attempt("read /etc/ld.so.cache", lambda: len(open("/etc/ld.so.cache", "rb").read()) > 0)
        attempt("list /etc", lambda: os.listdir("/etc"))
        done()
        "#,
        &[("NAME", name.clone())],
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    expect(&r, "stat /etc/passwd", &["ok ('0o100000', 0)"]);
    expect(&r, "stat /etc/shadow", &["ok ('0o100000', 0)"]);
    for p in ["/etc/machine-id", "/etc/os-release", "/etc/apt"] {
        expect(&r, &format!("stat {p}"), &["ENOENT"]);
    }
    expect(&r, &format!("stat /etc/{name}"), &["ENOENT"]);
    expect(&r, "read /etc/passwd", &["EACCES"]);
    expect(&r, "read /etc/ld.so.cache", &["ok True"]);
    expect(&r, "list /etc", &["EACCES"]);
    assert_clean(&b).await;
}
both_shapes!(host_etc_files_cannot_be_stat);

// ---------------------------------------------------------------- writes

/// Writing anywhere but the run's tmp/. Stopped by Landlock where the mount is
/// writable (the cwd and `/tmp`, both on the workspace tmpfs, and /proc/sys: no write
/// rule, EACCES; chmod is not a Landlock right, so the run may chmod its own workdir,
/// and that changes nothing), by the read-only root (the skeleton `/`, /dev, /var/tmp,
/// and the binds of /etc, /usr and the interpreter's directory: EROFS, which the kernel
/// checks before Landlock) and by the filesystem view (/dev/shm, the host's /var/tmp
/// and the broker's directory do not exist in the jail). Nothing may appear on the
/// host.
async fn writes_outside_tmp_fail_and_leave_nothing_on_host(shape: Shape) {
    let b = shaped_broker!(shape);
    let marker = unique_marker("write");
    let venv_bin = python()
        .parent()
        .expect("the interpreter's directory")
        .to_path_buf();
    let core_pattern_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok();
    let req = with_limit(
        probe(
            r#"
            M = "@MARK@"
            def create(p):
                with open(p, "w") as f:
                    f.write("pwned")
            attempt("cwd", lambda: create(M))
            attempt("cwd mkdir", lambda: os.mkdir(M + ".d"))
            attempt("cwd symlink", lambda: os.symlink("/", M + ".l"))
            attempt("cwd rename code", lambda: os.rename("jailed_code", M + ".r"))
            attempt("cwd unlink code", lambda: os.unlink("jailed_code"))
            # Landlock (ABI 7) has no right for metadata: the run may chmod its own
            # workdir, which must change nothing about what it may write.
            attempt("cwd chmod", lambda: os.chmod(".", 0o777))
            attempt("cwd after chmod", lambda: create(M + ".c"))
            attempt("code chmod", lambda: os.chmod("jailed_code", 0o666))
            attempt("code after chmod", lambda: create("jailed_code"))
            attempt("interpreter dir", lambda: create(os.path.join(os.path.dirname(sys.executable), M)))
            attempt("interpreter", lambda: open(sys.executable, "r+b"))
            attempt("/tmp", lambda: create("/tmp/" + M))
            attempt("/tmp mkdir", lambda: os.mkdir("/tmp/" + M))
            attempt("/dev/shm", lambda: create("/dev/shm/" + M))
            attempt("/dev/shm mkdir", lambda: os.mkdir("/dev/shm"))
            attempt("/dev/null write", lambda: create("/dev/null"))
            attempt("/dev node", lambda: create("/dev/" + M))
            attempt("/var/tmp", lambda: create("/var/tmp/" + M))
            attempt("/", lambda: create("/" + M))
            attempt("/etc", lambda: create("/etc/" + M))
            attempt("/usr", lambda: create("/usr/" + M))
            attempt("state dir", lambda: create("@STATE@/" + M))
            def core_pattern():
                with open("/proc/sys/kernel/core_pattern") as f:
                    current = f.read()
                with open("/proc/sys/kernel/core_pattern", "w") as f:
                    f.write(current)
            attempt("core_pattern", core_pattern)
            attempt("tmp", lambda: create(os.path.join(os.environ["TMPDIR"], M)))
            attempt("tmp read back", lambda: open(os.path.join(os.environ["TMPDIR"], M)).read())
            done()
            "#,
            &[
                ("MARK", marker.clone()),
                ("STATE", b.state_dir().display().to_string()),
            ],
        ),
        "FSIZE",
        4096,
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    for name in [
        "cwd",
        "cwd mkdir",
        "cwd symlink",
        "cwd rename code",
        "cwd unlink code",
        "/tmp",
        "/tmp mkdir",
    ] {
        expect(&r, name, &["EACCES"]);
    }
    expect(&r, "cwd after chmod", &["EACCES"]);
    expect(&r, "code after chmod", &["EACCES"]);
    for name in [
        "interpreter dir",
        "interpreter",
        "/dev/shm",
        "/dev/shm mkdir",
        "/dev node",
        "/var/tmp",
        "/",
        "/etc",
        "/usr",
        "state dir",
        "core_pattern",
    ] {
        expect(&r, name, &["EACCES", "EROFS", "ENOENT", "EPERM"]);
    }
    // Positive controls: tmp/ is writable, and /dev/null takes writes.
    expect_ok(&r, "tmp");
    expect(&r, "tmp read back", &["ok 'pwned'"]);
    expect_ok(&r, "/dev/null write");

    // Nothing on the host: not in its /tmp, /var/tmp, /dev/shm, /, the interpreter's
    // directory or the broker's directory.
    let mut dirs = host_dirs_to_scan();
    dirs.extend([
        venv_bin,
        b.state_dir().to_path_buf(),
        PathBuf::from("/etc"),
        PathBuf::from("/usr"),
    ]);
    assert_eq!(host_entries_with(&marker, &dirs), Vec::<PathBuf>::new());
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok(),
        core_pattern_before
    );
    assert_clean(&b).await;
}
both_shapes!(writes_outside_tmp_fail_and_leave_nothing_on_host);

// ---------------------------------------------------------------- sockets

/// UDP to the host's loopback, an abstract Unix socket the host listens on, and the
/// broker's own socket. Stopped by seccomp (no AF_INET socket: EACCES), the network
/// namespace (the jail's loopback is not the host's, and abstract socket names are per
/// network namespace), Landlock's abstract-unix-socket scope, and the filesystem view
/// (the broker's socket path does not exist in the jail).
async fn sockets_to_the_host_and_broker_are_unreachable(shape: Shape) {
    let b = shaped_broker!(shape);
    let marker = unique_marker("sock");
    // UDP: a host socket that demonstrably receives datagrams sent to it.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let udp_port = udp.local_addr().expect("addr").port();
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .send_to(b"control", ("127.0.0.1", udp_port))
        .expect("send");
    let mut buf = [0u8; 64];
    udp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = udp.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"control");
    udp.set_nonblocking(true).expect("nonblocking");
    // An abstract Unix socket, demonstrably accepting.
    let abstract_name = format!("codejail-{marker}");
    let addr = UnixAddr::from_abstract_name(abstract_name.as_bytes()).expect("abstract addr");
    let abstract_listener = UnixListener::bind_addr(&addr).expect("bind abstract");
    let _control = UnixStream::connect_addr(&addr).expect("the host can connect");
    let _ = abstract_listener.accept().expect("accept");
    abstract_listener
        .set_nonblocking(true)
        .expect("nonblocking");
    // The broker's socket, demonstrably connectable from the host.
    let _host_conn = UnixStream::connect(b.socket()).expect("the host reaches the broker");

    let req = probe(
        r#"
        def udp():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"@MARK@", ("127.0.0.1", @UDP@))
        attempt("udp", udp)
        attempt("udp6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
        attempt("socketpair inet", lambda: socket.socketpair(socket.AF_INET))
        def unix_connect(addr, kind=socket.SOCK_STREAM):
            s = socket.socket(socket.AF_UNIX, kind)
            s.connect(addr)
            return "connected"
        attempt("abstract", lambda: unix_connect("\0@ABSTRACT@"))
        def abstract_dgram():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(b"x", "\0@ABSTRACT@")
        attempt("abstract dgram", abstract_dgram)
        attempt("broker socket", lambda: unix_connect("@SOCKET@"))
        attempt("systemd notify", lambda: unix_connect("/run/systemd/notify", socket.SOCK_DGRAM))
        attempt("journal", lambda: unix_connect("/dev/log", socket.SOCK_DGRAM))
        attempt("/proc/net/unix", lambda: open("/proc/net/unix").read().count("\n") - 1)
        attempt("interfaces", lambda: sorted(os.listdir("/sys/class/net")))
        def open_fds():
            fds = []
            for fd in range(0, 4096):
                try:
                    os.fstat(fd)
                    fds.append(fd)
                except OSError:
                    pass
            return fds
        attempt("fds", open_fds)
        # Positive control: AF_UNIX sockets themselves are allowed.
        attempt("unix pair", lambda: len(socket.socketpair(socket.AF_UNIX)))
        done()
        "#,
        &[
            ("MARK", marker.clone()),
            ("UDP", udp_port.to_string()),
            ("ABSTRACT", abstract_name.clone()),
            ("SOCKET", b.socket().display().to_string()),
        ],
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    expect(&r, "udp", &["EACCES"]);
    expect(&r, "udp6", &["EACCES"]);
    expect(
        &r,
        "socketpair inet",
        &["EACCES", "EOPNOTSUPP", "EAFNOSUPPORT"],
    );
    expect(&r, "abstract", &["ECONNREFUSED", "EPERM", "EACCES"]);
    expect(&r, "abstract dgram", &["ECONNREFUSED", "EPERM", "EACCES"]);
    expect(&r, "broker socket", &["ENOENT", "EACCES"]);
    expect(&r, "systemd notify", &["ENOENT", "EACCES"]);
    expect(&r, "journal", &["ENOENT", "EACCES"]);
    // No socket of the host (the broker's included) is even listed in the jail: it
    // has no procfs.
    expect(&r, "/proc/net/unix", &["EACCES"]);
    expect_failed(&r, "interfaces");
    // Only stdin, stdout, stderr: no broker fd.
    expect(&r, "fds", &["ok [0, 1, 2]"]);
    expect(&r, "unix pair", &["ok 2"]);

    match udp.recv(&mut buf) {
        Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
        Ok(n) => panic!("the host's UDP socket got {:?} from the jail", &buf[..n]),
        Err(e) => panic!("recv: {e}"),
    }
    match abstract_listener.accept() {
        Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
        Ok(_) => panic!("the host's abstract socket got a connection from the jail"),
        Err(e) => panic!("accept: {e}"),
    }
    assert_clean(&b).await;
}
both_shapes!(sockets_to_the_host_and_broker_are_unreachable);

// ---------------------------------------------------------------- processes

/// Seeing and signalling the broker, the host, and the run's own init. Stopped by the
/// pid namespace (only the run's processes exist: the broker's host pid is not there,
/// `kill(-1)` reaches the run's own processes only), the absence of a procfs (no
/// command line of anything can be read), Landlock's signal scope, and seccomp
/// (ptrace). Which pids exist is asked with `kill(pid, 0)`: ESRCH for none, EPERM for
/// one that exists out of reach.
async fn broker_and_host_processes_are_invisible_and_unsignalable(shape: Shape) {
    let b = shaped_broker!(shape);
    let broker_pid = b.pid();
    // Positive control: the broker is a live process on the host.
    assert!(Path::new(&format!("/proc/{broker_pid}")).exists());
    let host_pids = processes().len();
    assert!(host_pids > 3, "the host has processes: {host_pids}");
    let req = probe(
        r#"
        def exists(p):
            try:
                os.kill(p, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        R["pids"] = repr([p for p in range(1, 1 << 16) if exists(p)])
        R["broker visible"] = repr(exists(@BPID@))
        attempt("list /proc", lambda: os.listdir("/proc"))
        attempt("init cmdline", lambda: open("/proc/1/cmdline", "rb").read())
        R["ppid"] = repr(os.getppid())
        attempt("probe broker", lambda: os.kill(@BPID@, 0))
        attempt("kill broker", lambda: os.kill(@BPID@, signal.SIGKILL))
        attempt("kill init", lambda: os.kill(1, signal.SIGKILL))
        attempt("stop init", lambda: os.kill(1, signal.SIGSTOP))
        attempt("kill pgrp 0 of host", lambda: os.killpg(@BPID@, signal.SIGKILL))
        attempt("sched of broker", lambda: os.sched_getaffinity(@BPID@))
        attempt("priority of init", lambda: os.setpriority(os.PRIO_PROCESS, 1, 19))
        # Everything the program may signal: only its own processes (none but itself,
        # which kill(-1) spares, and the init, which it cannot signal).
        attempt("kill -1", lambda: os.kill(-1, signal.SIGKILL))
        done()
        "#,
        &[("BPID", broker_pid.to_string())],
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    // The run's init (PID 1) and the program (PID 2), nothing of the host.
    expect(&r, "pids", &["[1, 2]"]);
    expect(&r, "broker visible", &["False"]);
    expect(&r, "list /proc", &["EACCES"]);
    expect(&r, "init cmdline", &["EACCES"]);
    expect(&r, "ppid", &["1"]);
    expect(&r, "probe broker", &["ESRCH"]);
    expect(&r, "kill broker", &["ESRCH"]);
    expect(&r, "kill pgrp 0 of host", &["ESRCH"]);
    expect(&r, "sched of broker", &["ESRCH"]);
    // The init: a different Landlock domain (signal scope) and PID 1 of the namespace
    // (only the signals it handles reach it from inside).
    expect(&r, "kill init", &["EPERM", "ok None"]);
    expect(&r, "stop init", &["EPERM", "ok None"]);
    expect(&r, "priority of init", &["EPERM", "EACCES"]);
    // kill(-1) with nothing else signalable in the namespace: ESRCH.
    expect(&r, "kill -1", &["ESRCH", "ok None"]);
    assert_eq!(res.status, 0, "stderr: {:?}", text(&res.stderr));
    assert!(
        Path::new(&format!("/proc/{broker_pid}")).exists(),
        "the broker died"
    );
    assert_clean(&b).await;
}
both_shapes!(broker_and_host_processes_are_invisible_and_unsignalable);

/// ptrace of the parent (the run's init) and reading its memory. Stopped by seccomp
/// (ptrace, process_vm_readv: EPERM); under it, Landlock's ptrace restriction (the init
/// is outside the program's domain) and the dropped capabilities.
async fn ptrace_of_the_parent_is_denied(shape: Shape) {
    let b = shaped_broker!(shape);
    let req = probe(
        r#"
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        def ptrace(req, pid):
            ctypes.set_errno(0)
            if libc.ptrace(req, pid, None, None) == -1:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            return "attached"
        PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206
        R["ppid"] = repr(os.getppid())
        attempt("attach parent", lambda: ptrace(PTRACE_ATTACH, os.getppid()))
        attempt("seize parent", lambda: ptrace(PTRACE_SEIZE, os.getppid()))
        attempt("traceme", lambda: ptrace(PTRACE_TRACEME, 0))
        def child_attach():
            pid = os.fork()
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            try:
                return ptrace(PTRACE_ATTACH, pid)
            finally:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        attempt("attach own child", child_attach)
        attempt("parent mem", lambda: open("/proc/%d/mem" % os.getppid(), "rb").read(1))
        attempt("parent maps", lambda: open("/proc/%d/maps" % os.getppid()).read(10))
        done()
        "#,
        &[],
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    expect(&r, "ppid", &["1"]);
    expect(&r, "attach parent", &["EPERM"]);
    expect(&r, "seize parent", &["EPERM"]);
    expect(&r, "traceme", &["EPERM"]);
    expect(&r, "attach own child", &["EPERM"]);
    // No procfs: /proc is a mode-0 directory.
    expect(&r, "parent mem", &["EACCES"]);
    expect(&r, "parent maps", &["EACCES"]);
    assert_clean(&b).await;
}
both_shapes!(ptrace_of_the_parent_is_denied);

// ---------------------------------------------------------------- seccomp

/// One syscall attempt: name, number, arguments, the errno seccomp gives.
struct Call {
    name: &'static str,
    nr: libc::c_long,
    args: Vec<i64>,
    errno: &'static str,
}

fn call(name: &'static str, nr: libc::c_long, args: &[i64], errno: &'static str) -> Call {
    Call {
        name,
        nr,
        args: args.to_vec(),
        errno,
    }
}

/// The denied syscalls, with arguments that would *not* give EPERM without the filter
/// where possible (bad pointers: EFAULT; a non-namespace fd: EINVAL; a no-op query:
/// success), so EPERM shows the filter answered.
fn denied_calls() -> Vec<Call> {
    let newuser = i64::from(libc::CLONE_NEWUSER);
    vec![
        call(
            "unshare(CLONE_NEWUSER)",
            libc::SYS_unshare,
            &[newuser],
            "EPERM",
        ),
        call(
            "unshare(CLONE_NEWNS)",
            libc::SYS_unshare,
            &[i64::from(libc::CLONE_NEWNS)],
            "EPERM",
        ),
        // The run's clocks are its time namespace's: it may not make its own.
        call(
            "unshare(CLONE_NEWTIME)",
            libc::SYS_unshare,
            &[i64::from(libc::CLONE_NEWTIME)],
            "EPERM",
        ),
        call("setns(0, 0)", libc::SYS_setns, &[0, 0], "EPERM"),
        call("mount", libc::SYS_mount, &[0, 0, 0, 0, 0], "EPERM"),
        call("umount2", libc::SYS_umount2, &[0, 0], "EPERM"),
        call("pivot_root", libc::SYS_pivot_root, &[0, 0], "EPERM"),
        call("chroot", libc::SYS_chroot, &[0], "EPERM"),
        call("open_tree", libc::SYS_open_tree, &[-100, 0, 0], "EPERM"),
        call("fsopen", libc::SYS_fsopen, &[0, 0], "EPERM"),
        call("bpf", libc::SYS_bpf, &[0, 0, 0], "EPERM"),
        call("keyctl", libc::SYS_keyctl, &[0, 0, 0, 0, 0], "EPERM"),
        call("add_key", libc::SYS_add_key, &[0, 0, 0, 0, 0], "EPERM"),
        call("request_key", libc::SYS_request_key, &[0, 0, 0, 0], "EPERM"),
        call(
            "perf_event_open",
            libc::SYS_perf_event_open,
            &[0, 0, -1, -1, 0],
            "EPERM",
        ),
        call("userfaultfd", libc::SYS_userfaultfd, &[0], "EPERM"),
        call("io_uring_setup", libc::SYS_io_uring_setup, &[1, 0], "EPERM"),
        call(
            "io_uring_enter",
            libc::SYS_io_uring_enter,
            &[0, 0, 0, 0, 0, 0],
            "EPERM",
        ),
        call(
            "io_uring_register",
            libc::SYS_io_uring_register,
            &[0, 0, 0, 0],
            "EPERM",
        ),
        #[allow(clippy::unnecessary_cast)]
        call(
            "ioctl(0, TIOCSTI)",
            libc::SYS_ioctl,
            &[0, libc::TIOCSTI as i64, 0],
            "EPERM",
        ),
        call(
            "personality(query)",
            libc::SYS_personality,
            &[0xffff_ffff],
            "EPERM",
        ),
        call(
            "process_vm_readv(1)",
            libc::SYS_process_vm_readv,
            &[1, 0, 0, 0, 0, 0],
            "EPERM",
        ),
        call(
            "process_vm_writev(1)",
            libc::SYS_process_vm_writev,
            &[1, 0, 0, 0, 0, 0],
            "EPERM",
        ),
        call(
            "ptrace(ATTACH, 1)",
            libc::SYS_ptrace,
            &[16, 1, 0, 0],
            "EPERM",
        ),
        call("kcmp", libc::SYS_kcmp, &[1, 1, 0, 0, 0], "EPERM"),
        call("pidfd_getfd", libc::SYS_pidfd_getfd, &[0, 0, 0], "EPERM"),
        call("kexec_load", libc::SYS_kexec_load, &[0, 0, 0, 0], "EPERM"),
        call("init_module", libc::SYS_init_module, &[0, 0, 0], "EPERM"),
        call("finit_module", libc::SYS_finit_module, &[-1, 0, 0], "EPERM"),
        call("delete_module", libc::SYS_delete_module, &[0, 0], "EPERM"),
        call(
            "name_to_handle_at",
            libc::SYS_name_to_handle_at,
            &[-100, 0, 0, 0, 0],
            "EPERM",
        ),
        call(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            &[0, 0, 0],
            "EPERM",
        ),
        call(
            "settimeofday(NULL)",
            libc::SYS_settimeofday,
            &[0, 0],
            "EPERM",
        ),
        call("syslog(size)", libc::SYS_syslog, &[10, 0, 0], "EPERM"),
        // Denied socket families give EACCES, as an AppArmor-confined upstream.
        call(
            "socket(AF_NETLINK)",
            libc::SYS_socket,
            &[16, 3, 0],
            "EACCES",
        ),
        call("socket(AF_VSOCK)", libc::SYS_socket, &[40, 1, 0], "EACCES"),
        // Watching files the view shares with the host and other runs (without the
        // filter: EBADF, ENOTDIR).
        call("inotify_init1", libc::SYS_inotify_init1, &[0], "EPERM"),
        call(
            "inotify_add_watch",
            libc::SYS_inotify_add_watch,
            &[-1, 0, 0],
            "EPERM",
        ),
        call(
            "fcntl(F_NOTIFY)",
            libc::SYS_fcntl,
            &[0, i64::from(libc::F_NOTIFY), 0],
            "EPERM",
        ),
        // Memory beyond RLIMIT_AS that only a memory cgroup would count.
        call("memfd_create", libc::SYS_memfd_create, &[0, 0], "EPERM"),
        call("shmget", libc::SYS_shmget, &[0, 4096, 0o600], "EPERM"),
        call("msgget", libc::SYS_msgget, &[0, 0o600], "EPERM"),
        call("semget", libc::SYS_semget, &[0, 1, 0o600], "EPERM"),
        call("clone3", libc::SYS_clone3, &[0, 0], "ENOSYS"),
        call(
            "clone(CLONE_NEWUSER)",
            libc::SYS_clone,
            &[newuser | i64::from(libc::SIGCHLD), 0, 0, 0, 0],
            "EPERM",
        ),
        call(
            "clone(CLONE_NEWNET)",
            libc::SYS_clone,
            &[
                i64::from(libc::CLONE_NEWNET) | i64::from(libc::SIGCHLD),
                0,
                0,
                0,
                0,
            ],
            "EPERM",
        ),
    ]
}

/// Each syscall the seccomp policy denies, called raw through ctypes. Stopped by
/// seccomp (EPERM; clone3 ENOSYS, so that libc falls back to clone, whose flags the
/// filter can see; the x32 and i386 ABIs kill the process with SIGSYS). Positive
/// controls: ordinary calls through the same path work.
async fn seccomp_denies_each_listed_syscall(shape: Shape) {
    let b = shaped_broker!(shape);
    let calls = denied_calls();
    let table: Vec<(&str, libc::c_long, &Vec<i64>)> =
        calls.iter().map(|c| (c.name, c.nr, &c.args)).collect();
    let x86_64 = if cfg!(target_arch = "x86_64") {
        "True"
    } else {
        "False"
    };
    let req = probe(
        r#"
        import mmap
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        def sc(nr, args):
            ctypes.set_errno(0)
            r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
            if r == 0 and nr == @CLONE@:
                os._exit(0)  # a clone that worked: this is the child
            if r == -1:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            if nr == @CLONE@:
                os.waitpid(r, 0)
            return r
        for name, nr, args in json.loads('@TABLE@'):
            attempt(name, lambda: sc(nr, args))
        # Positive controls through the same path.
        attempt("getpid", lambda: sc(@GETPID@, []) == os.getpid())
        attempt("socket(AF_UNIX)", lambda: os.close(sc(@SOCKET@, [1, 1, 0])))
        def fork_works():
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            return os.WEXITSTATUS(os.waitpid(pid, 0)[1])
        attempt("fork", fork_works)
        def thread_works():
            import threading
            out = []
            t = threading.Thread(target=lambda: out.append(1))
            t.start(); t.join()
            return out
        attempt("thread", thread_works)
        # No procfs to read /proc/self/status from: prctl tells the same.
        PR_GET_SECCOMP, PR_GET_NO_NEW_PRIVS = 21, 39
        R["Seccomp"] = str(libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0))
        R["NoNewPrivs"] = str(libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))
        # The foreign ABIs: a forked child makes the call; its wait status tells.
        def in_child(f):
            pid = os.fork()
            if pid == 0:
                f()
                os._exit(0)
            st = os.waitpid(pid, 0)[1]
            return "signal %d" % os.WTERMSIG(st) if os.WIFSIGNALED(st) else "exit %d" % os.WEXITSTATUS(st)
        if @X86_64@:
            R["x32 getpid"] = in_child(lambda: libc.syscall(ctypes.c_long(0x40000000 | 39)))
            def int80():
                # mov eax, 20 (i386 getpid); int 0x80; ret
                code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
                m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
                m.write(code)
                addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
                ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
            R["i386 getpid"] = in_child(int80)
            R["native getpid in child"] = in_child(lambda: libc.syscall(ctypes.c_long(39)))
        done()
        "#,
        &[
            ("TABLE", serde_json::to_string(&table).unwrap()),
            ("CLONE", libc::SYS_clone.to_string()),
            ("GETPID", libc::SYS_getpid.to_string()),
            ("SOCKET", libc::SYS_socket.to_string()),
            ("X86_64", x86_64.to_string()),
        ],
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    for c in &calls {
        expect(&r, c.name, &[c.errno]);
    }
    expect(&r, "getpid", &["ok True"]);
    expect(&r, "socket(AF_UNIX)", &["ok None"]);
    expect(&r, "fork", &["ok 7"]);
    expect(&r, "thread", &["ok [1]"]);
    // 2 = SECCOMP_MODE_FILTER.
    expect(&r, "Seccomp", &["2"]);
    expect(&r, "NoNewPrivs", &["1"]);
    if cfg!(target_arch = "x86_64") {
        let sigsys = format!("signal {}", libc::SIGSYS);
        expect(&r, "x32 getpid", &[&sigsys]);
        expect(&r, "i386 getpid", &[&sigsys]);
        expect(&r, "native getpid in child", &["exit 0"]);
    }
    assert_clean(&b).await;
}
both_shapes!(seccomp_denies_each_listed_syscall);

// ---------------------------------------------------------------- identity

/// `setuid(0)` and friends. Stopped by the user namespace (uid 0 is not mapped in the
/// run's namespace: EINVAL; only the run's own id is), the dropped capabilities
/// (CAP_SETUID gone: EPERM) and no_new_privs. From the host: the program runs as the
/// broker's uid (dev) or as a per-run uid of the range that is not the broker's
/// (production), never as root.
async fn setuid_root_fails(shape: Shape) {
    let b = shaped_broker!(shape);
    let marker = unique_marker("ids");
    let mut req = probe(
        r#"
        attempt("setuid(0)", lambda: os.setuid(0))
        attempt("setgid(0)", lambda: os.setgid(0))
        attempt("setresuid(0)", lambda: os.setresuid(0, 0, 0))
        attempt("seteuid(0)", lambda: os.seteuid(0))
        attempt("setgroups([0])", lambda: os.setgroups([0]))
        attempt("setuid(1001)", lambda: os.setuid(1001))
        R["uids"] = repr(os.getresuid())
        R["gids"] = repr(os.getresgid())
        R["root group"] = repr(0 in os.getgroups())
        # No procfs to read /proc/self/status from: capget(2) and prctl tell the same.
        libc = ctypes.CDLL(None, use_errno=True)
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (ctypes.c_uint32 * 6)()
        assert libc.capget(header, data) == 0
        # data: [effective, permitted, inheritable] x 2 words
        word = lambda lo, hi: "%08x%08x" % (hi, lo)
        R["CapEff"] = word(data[0], data[3])
        R["CapPrm"] = word(data[1], data[4])
        R["CapInh"] = word(data[2], data[5])
        PR_CAPBSET_READ, PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET = 23, 47, 1
        R["CapBnd"] = "%016x" % sum(1 << c for c in range(64) if libc.prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
        R["CapAmb"] = "%016x" % sum(1 << c for c in range(64) if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1)
        print("waiting", flush=True)
        time.sleep(3)
        done()
        "#,
        &[],
    );
    req.mark(&marker);
    // The run has no procfs: its uid map is read from the host.
    let observe = async {
        let mut seen = None;
        for _ in 0..200 {
            if let Some(p) = processes_with(&marker).first() {
                let map =
                    std::fs::read_to_string(format!("/proc/{}/uid_map", p.pid)).unwrap_or_default();
                seen = Some((p.uid, map.split_whitespace().collect::<Vec<_>>().join(" ")));
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        seen
    };
    let (res, seen) = tokio::join!(b.run(&req), observe);
    let r = results(&res, &b);
    for name in ["setuid(0)", "setgid(0)", "setresuid(0)", "seteuid(0)"] {
        expect(&r, name, &["EINVAL", "EPERM"]);
    }
    expect(&r, "setgroups([0])", &["EPERM", "EINVAL"]);
    expect(&r, "setuid(1001)", &["EINVAL", "EPERM"]);
    expect(&r, "uids", &["(1000, 1000, 1000)"]);
    expect(&r, "gids", &["(1000, 1000, 1000)"]);
    expect(&r, "root group", &["False"]);
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        expect(&r, key, &["0000000000000000"]);
    }
    let (outer_uid, uid_map) = seen.expect("the host never saw the program");
    assert!(
        uid_map.starts_with("1000 ") && uid_map.ends_with(" 1"),
        "one id mapped, the run's: {uid_map:?}"
    );
    assert_ne!(outer_uid, 0, "the program runs as host root");
    match (shape, b.uid()) {
        (Shape::Production, Some(broker_uid)) => {
            let range = b.run_ids().expect("run ids");
            assert!(
                range.contains(&outer_uid) && outer_uid != broker_uid,
                "production: uid {outer_uid} should be a per-run uid of {range:?}"
            );
            assert_eq!(uid_map, format!("1000 {outer_uid} 1"));
        }
        (_, Some(broker_uid)) => assert_eq!(outer_uid, broker_uid, "dev: the broker's uid"),
        (_, None) => {}
    }
    assert_clean(&b).await;
}
both_shapes!(setuid_root_fails);

// ---------------------------------------------------------------- upstream's view

/// What an AppArmor-confined upstream's callers see, paths and errnos: the run's
/// directory is `/tmp/codejail-XXXXXXXX` (8 of `[a-z0-9_]`), `TMPDIR` its `tmp/`, and a
/// traceback names `/tmp/codejail-XXXXXXXX/jailed_code`; `/tmp` is the writable
/// workspace tmpfs, so creating anything there or in `..` meets Landlock's EACCES
/// (not EROFS), and listing it gives EACCES too; an AF_UNIX socket binds in `tmp/` but
/// nowhere else (EACCES); a copied symlink into the caller's own `/tmp/tmpXXXX/` gives
/// "Permission denied" (its first component is masked), as upstream's `TestSymlinks`
/// expects, while one to a copied sibling works; `PATH` is sudo's.
async fn upstream_paths_and_errnos(shape: Shape) {
    let b = shaped_broker!(shape);
    // A caller-side directory in the host's /tmp, as upstream's tests make one, with a
    // file that is not copied and a link to it that is.
    let caller = tempfile::Builder::new()
        .prefix("tmp")
        .tempdir_in("/tmp")
        .expect("caller tmp dir");
    let secret = caller.path().join("secret.txt");
    std::fs::write(&secret, "caller secret").expect("write");
    let copied = caller.path().join("copied");
    std::fs::create_dir(&copied).expect("mkdir");
    std::fs::write(copied.join("sibling.txt"), "sibling").expect("write");
    std::os::unix::fs::symlink(&secret, copied.join("out")).expect("symlink out");
    std::os::unix::fs::symlink("sibling.txt", copied.join("in")).expect("symlink in");
    let mut req = with_limit(
        probe(
            r#"
            import re
            R["cwd"] = os.getcwd()
            R["tmpdir is cwd/tmp"] = repr(os.environ["TMPDIR"] == os.path.join(os.getcwd(), "tmp"))
            R["PATH"] = os.environ.get("PATH", "")
            attempt("list /tmp", lambda: os.listdir("/tmp"))
            attempt("create /tmp/x", lambda: open("/tmp/x", "w"))
            attempt("create ../x", lambda: open("../x", "w"))
            attempt("mkdir /tmp/d", lambda: os.mkdir("/tmp/d"))
            def bind(path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(path)
                return "bound"
            attempt("bind tmp/", lambda: bind("./tmp/sock"))
            attempt("bind /tmp", lambda: bind("/tmp/sock"))
            attempt("bind cwd", lambda: bind("./sock"))
            attempt("symlink out", lambda: open("copied/out").read())
            attempt("symlink in", lambda: open("copied/in").read())
            attempt("listdir ..", lambda: os.listdir(".."))
            try:
                raise ValueError("where am I")
            except ValueError:
                import traceback
                R["traceback"] = traceback.format_exc().splitlines()[1].strip()
            done()
            "#,
            &[],
        ),
        "FSIZE",
        1 << 20,
    );
    req.files = vec![copied.clone()];
    let res = b.run(&req).await;
    let r = results(&res, &b);
    let cwd = r["cwd"].clone();
    let suffix = cwd.strip_prefix("/tmp/codejail-").unwrap_or("");
    assert!(
        suffix.len() == 8
            && suffix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
        "upstream's /tmp/codejail-XXXXXXXX: {cwd:?}"
    );
    expect(&r, "tmpdir is cwd/tmp", &["True"]);
    expect(&r, "PATH", &["/usr/local/bin:/usr/bin:/bin"]);
    for name in [
        "list /tmp",
        "create /tmp/x",
        "create ../x",
        "mkdir /tmp/d",
        "bind /tmp",
        "bind cwd",
        "symlink out",
        "listdir ..",
    ] {
        expect(&r, name, &["EACCES"]);
    }
    // Positive controls: the run's own tmp/ takes a socket, a link to a copied
    // sibling is followed.
    expect(&r, "bind tmp/", &["ok 'bound'"]);
    expect(&r, "symlink in", &["ok 'sibling'"]);
    let traceback = &r["traceback"];
    assert!(
        traceback.starts_with(&format!("File \"{cwd}/jailed_code\", line "))
            && traceback.ends_with(", in <module>"),
        "{r:#?}"
    );
    assert!(!text(&res.stdout).contains("caller secret"));
    // Two runs never share a directory name.
    let again = results(&b.run(&req).await, &b);
    assert_ne!(again["cwd"], cwd);
    assert_clean(&b).await;
}
both_shapes!(upstream_paths_and_errnos);

// ---------------------------------------------------------------- exec

/// Every way to start another program once the run's own has started: a path, `ls`
/// and `ps` through subprocess, a `#!` script, `sys.executable`, `python3` on PATH, the
/// dynamic loader, an ELF and a script by fd (`execveat` on an fd), a path that
/// does not exist, raw `execveat`, from a forked child and from a thread. Stopped by
/// the init's exec guard (a seccomp user-notification filter: EACCES, upstream's
/// AppArmor answer). Also tried: installing a listener of one's own to answer one's
/// own exec (the kernel refuses a second listener: EBUSY). A memfd, the usual way to
/// exec what was never on disk, cannot even be made (seccomp: EPERM). Positive
/// control: fork works, so the denial is the exec's.
async fn exec_after_start_is_denied(shape: Shape) {
    let b = shaped_broker!(shape);
    let req = with_limit(
        probe(
            r##"
            import subprocess, threading
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            def raise_errno(r):
                if r == -1:
                    e = ctypes.get_errno()
                    raise OSError(e, os.strerror(e))
                return r
            def run(argv, **kw):
                return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw).returncode
            attempt("true", lambda: run(["/usr/bin/true"]))
            attempt("ls", lambda: run(["ls"]))
            attempt("ps", lambda: run("ps"))
            attempt("sh -c", lambda: run("exit 0", shell=True))
            script = os.path.join(os.environ["TMPDIR"], "s.sh")
            with open(script, "w") as f:
                f.write("#!/bin/sh\necho hi\n")
            os.chmod(script, 0o755)
            attempt("#! script", lambda: run([script]))
            attempt("sys.executable", lambda: run([sys.executable, "-c", "pass"]))
            attempt("python3 on PATH", lambda: run(["python3", "-c", "pass"]))
            loaders = [p for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1") if os.path.exists(p)]
            attempt("dynamic loader", lambda: run([loaders[0], "/usr/bin/true"]))
            attempt("does not exist", lambda: os.execv("/nonexistent/program", ["x"]))
            attempt("memfd_create", lambda: os.memfd_create("elf", 0))
            elf = os.open("/usr/bin/true", os.O_RDONLY)
            attempt("ELF by fd (execveat)", lambda: os.execve(elf, ["true"], {}))
            sh = os.open(script, os.O_RDONLY)
            attempt("script by fd", lambda: os.execve(sh, ["sh"], {}))
            AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
            argv = (ctypes.c_char_p * 2)(b"true", None)
            envp = (ctypes.c_char_p * 1)(None)
            attempt("raw execveat", lambda: raise_errno(libc.syscall(ctypes.c_long(@EXECVEAT@), ctypes.c_long(AT_FDCWD), b"/usr/bin/true", argv, envp, ctypes.c_long(0))))
            attempt("raw execveat on fd", lambda: raise_errno(libc.syscall(ctypes.c_long(@EXECVEAT@), ctypes.c_long(elf), b"", argv, envp, ctypes.c_long(AT_EMPTY_PATH))))
            def in_child():
                pid = os.fork()
                if pid == 0:
                    try:
                        os.execv("/usr/bin/true", ["true"])
                    except OSError as e:
                        os._exit(e.errno)
                    os._exit(0)
                return os.WEXITSTATUS(os.waitpid(pid, 0)[1])
            R["forked child's errno"] = str(in_child())
            out = []
            def thread_exec():
                try:
                    os.execv("/usr/bin/true", ["true"])
                except OSError as e:
                    out.append(errno.errorcode[e.errno])
            t = threading.Thread(target=thread_exec)
            t.start(); t.join()
            R["thread"] = repr(out)
            # A listener of our own, to answer our own execve: a filter that notifies
            # on everything (ret SECCOMP_RET_USER_NOTIF).
            class SockFilter(ctypes.Structure):
                _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]
            prog_insns = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0x7fc00000))
            prog = SockFprog(1, prog_insns)
            SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER = 1, 8
            attempt("own listener", lambda: raise_errno(libc.syscall(ctypes.c_long(@SECCOMP@), ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(SECCOMP_FILTER_FLAG_NEW_LISTENER), ctypes.byref(prog))))
            # Positive control: forking itself works.
            def fork_works():
                pid = os.fork()
                if pid == 0:
                    os._exit(7)
                return os.WEXITSTATUS(os.waitpid(pid, 0)[1])
            attempt("fork", fork_works)
            done()
            "##,
            &[
                ("EXECVEAT", libc::SYS_execveat.to_string()),
                ("SECCOMP", libc::SYS_seccomp.to_string()),
            ],
        ),
        "FSIZE",
        16 << 20,
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    for name in [
        "true",
        "ls",
        "ps",
        "sh -c",
        "#! script",
        "sys.executable",
        "python3 on PATH",
        "dynamic loader",
        "does not exist",
        "ELF by fd (execveat)",
        "script by fd",
        "raw execveat",
        "raw execveat on fd",
    ] {
        expect(&r, name, &["EACCES"]);
    }
    expect(&r, "memfd_create", &["EPERM"]);
    expect(&r, "forked child's errno", &[&libc::EACCES.to_string()]);
    expect(&r, "thread", &["['EACCES']"]);
    expect(&r, "own listener", &["EBUSY"]);
    expect(&r, "fork", &["ok 7"]);
    assert_clean(&b).await;
}
both_shapes!(exec_after_start_is_denied);

/// With `--allow-exec` (config `allow_exec = true`) a program may start others, and
/// what it starts keeps every layer: the interpreter exec'd again, with code of the
/// run's, still cannot read /etc/passwd or open an AF_INET socket, and has the seccomp
/// filter and no_new_privs. No memfd can be made (EPERM), the usual way to exec code
/// that was never on disk.
async fn allowed_exec_stays_confined(shape: Shape) {
    let b = broker!(BrokerOpts::new().shape(shape).args(["--allow-exec"]));
    let req = with_limit(
        probe(
            r##"
            import subprocess
            attempt("true", lambda: subprocess.run(["/usr/bin/true"]).returncode)
            attempt("memfd_create", lambda: os.memfd_create("python", 0))
            inner = ("import ctypes, socket\n"
                     "libc = ctypes.CDLL(None)\n"
                     "try:\n    print(open('/etc/passwd').read()[:100])\n"
                     "except OSError as e:\n    print('passwd', e.errno)\n"
                     "try:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    print('SOCKET OPENED')\n"
                     "except OSError as e:\n    print('socket', e.errno)\n"
                     "print('seccomp', libc.prctl(21, 0, 0, 0, 0), 'nnp', libc.prctl(39, 0, 0, 0, 0))\n")
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.dup2(w, 1); os.dup2(w, 2)
                try:
                    os.execve(sys.executable, ["python", "-I", "-c", inner], {})
                except OSError as e:
                    os.write(1, b"EXEC DENIED %d" % e.errno)
                os._exit(127)
            os.close(w)
            out = b""
            while True:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                out += chunk
            os.waitpid(pid, 0)
            R["interpreter"] = out.decode(errors="replace")
            done()
            "##,
            &[],
        ),
        "FSIZE",
        64 << 20,
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    expect(&r, "true", &["ok 0"]);
    expect(&r, "memfd_create", &["EPERM"]);
    assert_eq!(
        r.get("interpreter").map(String::as_str),
        Some(
            format!(
                "passwd {}\nsocket {}\nseccomp 2 nnp 1\n",
                libc::EACCES,
                libc::EACCES
            )
            .as_str()
        ),
        "{r:#?}"
    );
    assert_clean(&b).await;
}
both_shapes!(allowed_exec_stays_confined);

// ---------------------------------------------------------------- resources

/// Filling the tmp quota with many small files (upstream's skipped "many small temp
/// files" test) and with bytes. Stopped by the workspace tmpfs caps (`nr_inodes` and
/// `size` from TMP: ENOSPC, "No space left on device"); the host's disk is never used.
async fn tmp_quota_holds_against_many_small_files(shape: Shape) {
    let b = shaped_broker!(shape);
    let req = with_limit(
        with_limit(
            probe(
                r#"
                tmp = os.environ["TMPDIR"]
                n = 0
                try:
                    for n in range(100000):
                        open(os.path.join(tmp, "f%d" % n), "w").close()
                    R["files"] = "ok all %d" % (n + 1)
                except OSError as e:
                    R["files"] = errno.errorcode[e.errno]
                    R["count"] = str(n)
                    R["message"] = e.strerror
                for i in range(n):
                    os.unlink(os.path.join(tmp, "f%d" % i))
                def big():
                    with open(os.path.join(tmp, "big"), "wb") as f:
                        for i in range(8):
                            f.write(b"x" * (512 * 1024))
                attempt("bytes", big)
                R["big size"] = str(os.path.getsize(os.path.join(tmp, "big")))
                done()
                "#,
                &[],
            ),
            "TMP",
            1 << 20,
        ),
        "FSIZE",
        16 << 20,
    );
    let res = b.run(&req).await;
    let r = results(&res, &b);
    expect(&r, "files", &["ENOSPC"]);
    expect(&r, "message", &["No space left on device"]);
    let count: u64 = r["count"].parse().unwrap();
    // Positive control: tmp/ took some files; the cap (TMP/4096, at least 1024 inodes)
    // held well before 100 000.
    assert!((100..=2048).contains(&count), "{count} files: {r:#?}");
    expect(&r, "bytes", &["ENOSPC"]);
    let big: u64 = r["big size"].parse().unwrap();
    assert!(
        (256 << 10..=(1 << 20) + (64 << 10)).contains(&big),
        "the file grew to {big} bytes under a 1 MiB TMP"
    );
    assert_eq!(res.status, 0, "stderr: {:?}", text(&res.stderr));
    assert_clean(&b).await;
}
both_shapes!(tmp_quota_holds_against_many_small_files);

/// Memory a run could hold beyond its address space, where no memory cgroup counts it
/// (dev, and hosts or pods with `cgroup.mode = "none"`): with `VMEM` 128 MiB and `TMP`
/// 16 MiB, touching 256 MiB of anonymous memory fails (RLIMIT_AS), SysV shared memory,
/// message queues, semaphores and memfds cannot be made (seccomp: EPERM), there is no
/// `/dev/shm` and no mqueue file system, and the workspace holds at most `TMP`
/// (ENOSPC). Positive controls: 64 MiB of anonymous memory and 8 MiB in tmp/ work.
async fn memory_stays_within_vmem_and_tmp_without_a_cgroup(shape: Shape) {
    let b = shaped_broker!(shape);
    let mut req = probe(
        r#"
        import mmap
        libc = ctypes.CDLL(None, use_errno=True)
        def raise_errno(r):
            if r == -1:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            return r
        def touch(mib):
            m = mmap.mmap(-1, mib << 20)
            for off in range(0, mib << 20, 4096):
                m[off] = 1
            m.close()
            return mib
        attempt("anonymous 64 MiB", lambda: touch(64))
        attempt("anonymous 256 MiB", lambda: touch(256))
        attempt("shmget", lambda: raise_errno(libc.shmget(0, 64 << 20, 0o600)))
        attempt("msgget", lambda: raise_errno(libc.msgget(0, 0o600)))
        attempt("semget", lambda: raise_errno(libc.semget(0, 1, 0o600)))
        attempt("memfd_create", lambda: os.memfd_create("m", 0))
        attempt("/dev/shm", lambda: open("/dev/shm/x", "w"))
        attempt("mq_open", lambda: raise_errno(libc.mq_open(b"/m", os.O_CREAT | os.O_RDWR, 0o600, None)))
        def fill(path, mib):
            with open(path, "wb") as f:
                for _ in range(mib):
                    f.write(b"x" * (1 << 20))
                    f.flush()
            return mib
        tmp = os.environ["TMPDIR"]
        attempt("tmp 8 MiB", lambda: fill(os.path.join(tmp, "a"), 8))
        attempt("tmp 32 MiB more", lambda: fill(os.path.join(tmp, "b"), 32))
        done()
        "#,
        &[],
    );
    for (name, value) in [("VMEM", 128 << 20), ("TMP", 16 << 20), ("FSIZE", 64 << 20)] {
        req = with_limit(req, name, value);
    }
    let res = b.run(&req).await;
    let r = results(&res, &b);
    expect(&r, "anonymous 64 MiB", &["ok 64"]);
    expect(&r, "anonymous 256 MiB", &["ENOMEM", "MemoryError: "]);
    for call in ["shmget", "msgget", "semget", "memfd_create"] {
        expect(&r, call, &["EPERM"]);
    }
    expect(&r, "/dev/shm", &["ENOENT", "EACCES"]);
    expect(&r, "mq_open", &["EACCES"]);
    expect(&r, "tmp 8 MiB", &["ok 8"]);
    expect(&r, "tmp 32 MiB more", &["ENOSPC"]);
    assert_clean(&b).await;
}
both_shapes!(memory_stays_within_vmem_and_tmp_without_a_cgroup);

const FORK_BOMB: &str = "
    import os
    print('bombing', flush=True)
    while True:
        try:
            os.fork()
        except OSError:
            pass
";

/// Run a fork bomb under `nproc` while counting, from the host, the processes of the
/// run's outside uid(s); the most seen at once (`None` when there is no uid to scan).
/// A pooled broker's stray processes leave its descendants out (its idle warm jails
/// among them), so the bomb's processes are also counted by the name they inherit
/// ([`Marked`]), and the larger count taken. Neither count reads a command line, which
/// would wait on the forking processes' memory-map locks.
async fn bomb(b: &TestBroker, nproc: u64) -> (JailResult, Option<usize>) {
    let marker = unique_marker("bomb");
    let mut req = with_limit(
        with_limit(
            with_limit(codejail_tests::py(FORK_BOMB), "NPROC", nproc),
            "REALTIME",
            3,
        ),
        "CPU",
        3,
    );
    req.mark(&marker);
    let done = AtomicBool::new(false);
    let run = async {
        let res = b.run(&req).await;
        done.store(true, Ordering::SeqCst);
        res
    };
    let watch = async {
        let mut most = 0;
        while !done.load(Ordering::SeqCst) {
            most = most.max(b.stray_count().max(processes_named(&marker).len()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    };
    let (res, most) = tokio::join!(run, watch);
    eprintln!("fork bomb under NPROC={nproc}: at most {most} processes of the run seen at once");
    (res, b.uid().map(|_| most))
}

/// A fork bomb. Stopped by RLIMIT_NPROC, counted per (user namespace, uid), i.e. per
/// run (NPROC + 2 for the stage and the init), and in production with NPROC=0 (no
/// rlimit at all) by the run's pids cgroup; REALTIME then kills the whole pid
/// namespace, and the broker serves the next run.
async fn fork_bomb_is_contained_and_the_broker_keeps_serving(shape: Shape) {
    let b = shaped_broker!(shape);
    let (res, most) = bomb(&b, 5).await;
    assert_eq!(
        (res.status, res.limit_hit.as_deref()),
        (-9, Some("REALTIME")),
        "stdout {:?} stderr {:?}",
        text(&res.stdout),
        text(&res.stderr)
    );
    assert_eq!(text(&res.stdout), "bombing\n");
    if let Some(most) = most {
        assert!(
            most <= 5 + 2,
            "{most} processes of the run at once under NPROC=5"
        );
    }
    assert_clean(&b).await;
    if shape == Shape::Production {
        // No RLIMIT_NPROC at all: only the run's pids cgroup (256 tasks) holds.
        let (res, most) = bomb(&b, 0).await;
        assert_eq!(
            res.status,
            -9,
            "stdout {:?} stderr {:?}",
            text(&res.stdout),
            text(&res.stderr)
        );
        assert!(
            matches!(res.limit_hit.as_deref(), Some("REALTIME" | "PIDS")),
            "{:?}",
            res.limit_hit
        );
        let most = most.expect("the production shape runs as root");
        assert!(
            most <= 256,
            "{most} processes of the run at once under the pids cgroup"
        );
        assert!(most > 7, "the bomb did fork ({most})");
        assert_clean(&b).await;
    }
}
both_shapes!(fork_bomb_is_contained_and_the_broker_keeps_serving);

/// A daemon: setsid, double fork, SIGTERM/SIGHUP ignored, stdio kept. Stopped by the
/// pid namespace: when the program ends the init exits, and the kernel SIGKILLs every
/// process left in the namespace (the broker's stage waits for that).
async fn daemonized_grandchild_does_not_survive(shape: Shape) {
    let b = shaped_broker!(shape);
    let marker = unique_marker("daemon");
    let mut req = probe(
        r#"
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                for _ in range(500):  # until the middle child is gone
                    if os.getppid() == 1:
                        break
                    time.sleep(0.01)
                os.write(w, b"up %d %d\n" % (os.getppid(), os.getpid()))
                # No exec (denied): the daemon is this fork, whose command line
                # carries the run's marker argument.
                time.sleep(120)
            os._exit(0)
        os.close(w)
        os.waitpid(middle, 0)
        line = os.read(r, 100).decode().split()
        R["daemon"] = line[0]
        R["daemon's parent"] = line[1]
        time.sleep(0.5)
        def alive(pid):
            os.kill(pid, 0)
            return True
        attempt("alive", lambda: alive(int(line[2])))
        done()
        "#,
        &[],
    );
    req.mark(&marker);
    let res = b.run(&req).await;
    let r = results(&res, &b);
    // Positive control: the daemon was up, re-parented to the run's init.
    expect(&r, "daemon", &["up"]);
    expect(&r, "daemon's parent", &["1"]);
    expect(&r, "alive", &["ok True"]);
    assert_eq!(res.status, 0, "stderr: {:?}", text(&res.stderr));
    // The run has ended: nothing with the marker is left on the host, now or later.
    assert_eq!(
        processes_with(&marker),
        vec![],
        "the daemon survived the run"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        processes_with(&marker),
        vec![],
        "the daemon survived the run"
    );
    assert_clean(&b).await;
}
both_shapes!(daemonized_grandchild_does_not_survive);

// ---------------------------------------------------------------- clocks

/// A host clock now, in nanoseconds.
fn host_clock_ns(clock: nix::time::ClockId) -> i128 {
    let t = nix::time::clock_gettime(clock).expect("clock_gettime");
    i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
}

/// The integer a probe recorded as `ok N`.
#[track_caller]
fn recorded_int(r: &BTreeMap<String, String>, name: &str) -> i128 {
    let got = expect_ok(r, name);
    got.trim_start_matches("ok ")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {got:?} is not an integer ({e}); {r:#?}"))
}

/// The host's uptime does not leak through the clocks that count it: in the run's
/// time namespace `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` (read through the vDSO and
/// through the raw syscall, and their RAW and COARSE variants) and sysinfo(2)'s
/// uptime start at the jail's build, so they are at most the time the test has
/// measured on the host since before it started the broker (a warm jail is built after
/// that too) — the host's own clocks, read by the same test, are far beyond that. Stopped
/// by the time namespace. `/proc/uptime` and `/proc/stat` (whose `btime` is the boot's
/// wall-clock time, in no namespace) are unreadable: the run has no procfs. (What stays
/// visible — times(2)'s return, the TSC, the host device nodes' timestamps — is in
/// docs/jail-clocks.md.)
async fn clocks_start_at_the_jails_build(shape: Shape) {
    use nix::time::ClockId;
    let (mono0, boot0) = (
        host_clock_ns(ClockId::CLOCK_MONOTONIC),
        host_clock_ns(ClockId::CLOCK_BOOTTIME),
    );
    let b = shaped_broker!(shape);
    let req = probe(
        r#"
        import struct
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        class timespec(ctypes.Structure):
            _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
        def raw(clock):
            ts = timespec()
            if libc.syscall(ctypes.c_long(@CLOCK_GETTIME@), ctypes.c_long(clock), ctypes.byref(ts)) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            return ts.s * 10**9 + ts.ns
        CLOCKS = [("monotonic", 1), ("boottime", 7), ("monotonic_raw", 4), ("monotonic_coarse", 6)]
        for name, clock in CLOCKS:
            attempt(name, lambda: time.clock_gettime_ns(clock))
            attempt(name + " syscall", lambda: raw(clock))
        def sysinfo_uptime():
            buf = ctypes.create_string_buffer(256)
            if libc.sysinfo(buf) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            return struct.unpack_from("l", buf.raw)[0]
        attempt("sysinfo uptime", sysinfo_uptime)
        attempt("/proc/uptime", lambda: open("/proc/uptime").read())
        attempt("/proc/stat", lambda: open("/proc/stat").read())
        attempt("/proc/self/stat", lambda: open("/proc/self/stat").read())
        done()
        "#,
        &[("CLOCK_GETTIME", libc::SYS_clock_gettime.to_string())],
    );
    let res = b.run(&req).await;
    let (mono1, boot1) = (
        host_clock_ns(ClockId::CLOCK_MONOTONIC),
        host_clock_ns(ClockId::CLOCK_BOOTTIME),
    );
    // MONOTONIC_RAW is offset by MONOTONIC's offset: it may run ahead of it by as much
    // as the host's raw clock has drifted from its NTP-slewed one since boot.
    let raw_drift = (host_clock_ns(ClockId::CLOCK_MONOTONIC_RAW) - mono1).max(0);
    let r = results(&res, &b);
    let (mono_bound, boot_bound) = (mono1 - mono0, boot1 - boot0);
    for (name, bound) in [
        ("monotonic", mono_bound),
        ("boottime", boot_bound),
        ("monotonic_coarse", mono_bound),
        ("monotonic_raw", mono_bound + raw_drift + 10_000_000),
    ] {
        for name in [name.to_string(), format!("{name} syscall")] {
            let value = recorded_int(&r, &name);
            assert!(
                value <= bound,
                "the run's {name} reads {value} ns, more than the {bound} ns the host counted \
                 since before the broker started (the host's boottime is {boot1} ns): the \
                 run sees the host's clock"
            );
        }
    }
    for name in ["monotonic", "boottime"] {
        let value = recorded_int(&r, name);
        assert!(value >= 0, "{name} reads {value} ns");
    }
    // sysinfo rounds up to the second.
    let uptime = recorded_int(&r, "sysinfo uptime");
    let bound = (boot_bound + 999_999_999) / 1_000_000_000;
    assert!(
        uptime <= bound,
        "sysinfo's uptime is {uptime} s, more than the {bound} s since before the broker started"
    );
    // No procfs (a mode-0 mask): /proc/stat's btime, in no namespace, never shows.
    for name in ["/proc/uptime", "/proc/stat", "/proc/self/stat"] {
        expect(&r, name, &["EACCES"]);
    }
    assert_clean(&b).await;
}
both_shapes!(clocks_start_at_the_jails_build);

// ---------------------------------------------------------------- run vs run

/// Two concurrent runs: A leaves a file in its tmp/ and an abstract socket, and tries
/// a SysV shared memory segment, then sleeps; B looks for all of them and tries to
/// signal everything. Stopped by the mount namespace (each run's workspace tmpfs is
/// its own: A's path does not exist for B), Landlock (`/tmp` cannot be listed), the pid
/// namespace (B sees and signals only its own processes), seccomp (SysV IPC is denied
/// to both: EPERM; each run's ipc namespace would keep them apart anyway), the network
/// namespace (A's abstract socket: B can neither reach A's name nor tell that it is
/// taken, and binds it itself). Landlock's abstract-socket scope alone (ABI 6) would not
/// do: in one shared network namespace B's connect fails with EPERM where a free name
/// gives ECONNREFUSED, and B's bind of a taken name with EADDRINUSE, a channel between
/// the runs either way (docs/architecture.md, "Network"). In production the runs also
/// have distinct outside uids (checked from the host).
async fn concurrent_runs_cannot_see_each_other(shape: Shape) {
    let b = shaped_broker!(shape);
    let marker_a = unique_marker("runa");
    let key: u32 = 0x0c0d_e000 | (std::process::id() & 0xfff);
    let mut exec_a = raw_python(
        &r#"
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
open(os.path.join(os.environ["TMPDIR"], "@MARK@"), "w").close()
shm = libc.shmget(@KEY@, 4096, 0o1666)
shm = "made" if shm >= 0 else __import__("errno").errorcode[ctypes.get_errno()]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0@MARK@")
s.listen()
print(os.getcwd(), shm, flush=True)
time.sleep(8)
print(os.path.exists(os.path.join(os.environ["TMPDIR"], "@MARK@")), flush=True)
"#
        .replace("@MARK@", &marker_a)
        .replace("@KEY@", &key.to_string()),
    );
    exec_a.mark(&marker_a);
    exec_a.limits = codejail_tests::limits(&[("REALTIME", 30), ("CPU", 10)]);
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    conn.exec(exec_a).await;
    // Wait until A has written its file and says where it is.
    let first = String::from_utf8(first_stdout_line(&mut conn, &b, "run A").await).unwrap();
    let (workdir_a, shm_a) = first.trim().split_once(' ').expect("cwd and shm");
    assert_eq!(shm_a, "EPERM", "A's SysV segment");
    let suffix = workdir_a.strip_prefix("/tmp/codejail-").unwrap_or("");
    assert!(
        suffix.len() == 8
            && suffix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
        "upstream's /tmp/codejail-XXXXXXXX: {workdir_a}"
    );
    // From the host, A is a live process.
    let a_procs = processes_with(&marker_a);
    assert!(!a_procs.is_empty(), "run A is not visible from the host");

    let mut req = probe(
        r#"
        libc = ctypes.CDLL(None, use_errno=True)
        attempt("list /tmp", lambda: os.listdir("/tmp"))
        attempt("A's workdir", lambda: os.listdir("@WORKDIR@"))
        attempt("A's file", lambda: open("@WORKDIR@/tmp/@MARK@").read())
        attempt("A's file stat", lambda: os.stat("@WORKDIR@/tmp/@MARK@").st_size)
        R["own workdir"] = os.getcwd()
        def shm():
            ctypes.set_errno(0)
            if libc.shmget(@KEY@, 0, 0) == -1:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            return "found"
        attempt("A's shm", shm)
        def abstract():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect("\0@MARK@")
        attempt("A's abstract socket", abstract)
        squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        attempt("A's abstract name, bound", lambda: squatter.bind("\0@MARK@"))
        def exists(p):
            try:
                os.kill(p, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        R["pids"] = repr([p for p in range(1, 1 << 16) if exists(p)])
        attempt("list /proc", lambda: os.listdir("/proc"))
        attempt("kill -1", lambda: os.kill(-1, signal.SIGKILL))
        time.sleep(1)  # for the host to see B's outside uid
        done()
        "#,
        &[
            ("WORKDIR", workdir_a.to_string()),
            ("MARK", marker_a.clone()),
            ("KEY", key.to_string()),
        ],
    );
    let marker_b = unique_marker("runb");
    req.mark(&marker_b);
    let observe_b = async {
        for _ in 0..500 {
            if let Some(p) = processes_with(&marker_b).first() {
                return Some(p.uid);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    };
    let (res_b, uid_b) = tokio::join!(b.run(&req), observe_b);
    let r = results(&res_b, &b);
    expect(&r, "list /tmp", &["EACCES"]);
    expect(&r, "A's workdir", &["ENOENT"]);
    expect(&r, "A's file", &["ENOENT"]);
    expect(&r, "A's file stat", &["ENOENT"]);
    assert_ne!(
        r["own workdir"], workdir_a,
        "both runs got the same workdir"
    );
    expect(&r, "A's shm", &["EPERM"]);
    expect(&r, "A's abstract socket", &["ECONNREFUSED"]);
    expect(&r, "A's abstract name, bound", &["ok None"]);
    expect(&r, "pids", &["[1, 2]"]);
    expect(&r, "list /proc", &["EACCES"]);
    expect(&r, "kill -1", &["ESRCH", "ok None"]);

    // Outside, the runs are the broker's uid (dev) or two distinct uids of its range
    // (production).
    let uid_a = a_procs[0].uid;
    let uid_b = uid_b.expect("the host never saw run B");
    match (shape, b.uid()) {
        (Shape::Production, Some(_)) => {
            let range = b.run_ids().expect("run ids");
            assert!(
                uid_a != uid_b && range.contains(&uid_a) && range.contains(&uid_b),
                "production runs share uid {uid_a}/{uid_b} (range {range:?})"
            );
        }
        (_, Some(broker_uid)) => assert_eq!((uid_a, uid_b), (broker_uid, broker_uid)),
        (_, None) => {}
    }
    // A was untouched: it finishes normally and still has its file.
    let rest = conn.collect().await;
    let fin = rest.expect_finished("run A");
    assert_eq!(
        (fin.status, text(&rest.stdout).as_str()),
        (0, "True\n"),
        "run A; stderr {:?}",
        text(&rest.stderr)
    );
    // And nothing of A's workspace is on the host.
    assert!(!Path::new(workdir_a).exists(), "A's workdir is on the host");
    assert_eq!(
        host_entries_with(&marker_a, &host_dirs_to_scan()),
        Vec::<PathBuf>::new()
    );
    assert_clean(&b).await;
}
both_shapes!(concurrent_runs_cannot_see_each_other);

// ---------------------------------------------------------------- the kernel's per-user budgets

/// What a run can take from the kernel's per-user budgets (`ucounts`: pending signals,
/// which every POSIX timer preallocates, and POSIX message queue bytes), as Python with
/// ctypes reaches them; each tries at most `most` and says how many it got and why it
/// stopped. `@HOLD@` is replaced by code run once the budgets are tried.
const BUDGETS: &str = r#"
import ctypes, json, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
R = {}
def errno_name():
    e = ctypes.get_errno()
    return __import__("errno").errorcode.get(e, str(e))
class SigEvent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]
SIGEV_NONE = 1
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
def timers(most):
    ev, tid, n = SigEvent(notify=SIGEV_NONE), ctypes.c_void_p(), 0
    while n < most:
        if libc.timer_create(time.CLOCK_MONOTONIC, ctypes.byref(ev), ctypes.byref(tid)) != 0:
            return n, errno_name()
        n += 1
    return n, "ok"
def sigqueue(most):
    n = 0
    while n < most:
        if libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_void_p(0)) != 0:
            return n, errno_name()
        n += 1
    return n, "ok"
def queues(most):
    n = 0
    while n < most:
        name = b"/cj-budget-%d" % n
        if libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None) == -1:
            return n, errno_name()
        n += 1
    return n, "ok"
@HOLD@
"#;

/// Two concurrent runs: A takes every pending signal, timer and message-queue byte the
/// kernel lets it take, then holds them while B asks for one of each. Per-run uids
/// (production) charge each run's user namespace to its own uid; in dev, where every
/// run is the broker's uid, each run's share is bounded instead. Either way B's calls
/// work; before, A's exhaustion made them fail with EAGAIN/EMFILE in every run.
async fn per_user_budgets_of_one_run_leave_the_others_theirs(shape: Shape) {
    let b = shaped_broker!(shape);
    let a_code = BUDGETS.replace(
        "@HOLD@",
        r#"
R["timers"] = timers(1 << 22)
R["sigqueue"] = sigqueue(1 << 22)
R["queues"] = queues(1 << 16)
print(json.dumps(R), flush=True)
time.sleep(30)
"#,
    );
    let mut exec_a = raw_python(&a_code);
    exec_a.limits = codejail_tests::limits(&[("REALTIME", 60), ("CPU", 30)]);
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    conn.exec(exec_a).await;
    let first = first_stdout_line(&mut conn, &b, "run A").await;
    let a: BTreeMap<String, (u64, String)> =
        serde_json::from_slice(&first).expect("run A's counts");
    // A really exhausted each budget (else B proves nothing).
    assert_eq!(a["sigqueue"].1, "EAGAIN", "A: {a:?}");
    assert_eq!(a["timers"].1, "EAGAIN", "A: {a:?}");
    // POSIX message queues (the MSGQUEUE budget) are out of reach: a run's ipc
    // namespace has no mqueue file system in its view, and Landlock refuses creating
    // one in the kernel's internal mount.
    assert_eq!(a["queues"], (0, "EACCES".to_string()), "A: {a:?}");
    let b_code = BUDGETS.replace(
        "@HOLD@",
        r#"
R["timers"] = timers(1)
R["sigqueue"] = sigqueue(1)
R["queues"] = queues(1)
print(json.dumps(R))
"#,
    );
    let res = b
        .run(&with_limit(
            with_limit(codejail_tests::py(&b_code), "REALTIME", 20),
            "CPU",
            10,
        ))
        .await;
    assert_eq!(res.status, 0, "run B: {}", text(&res.stderr));
    let got: BTreeMap<String, (u64, String)> =
        serde_json::from_slice(&res.stdout).expect("run B's counts");
    for call in ["sigqueue", "timers"] {
        assert_eq!(
            got[call],
            (1, "ok".to_string()),
            "run B's {call} while A holds its budgets ({a:?}): {got:?}"
        );
    }
    assert_eq!(got["queues"], (0, "EACCES".to_string()), "B: {got:?}");
    drop(conn);
    assert_clean(&b).await;
}
both_shapes!(per_user_budgets_of_one_run_leave_the_others_theirs);

// ---------------------------------------------------------------- the shapes themselves

/// The shapes are what the attacks above claim to run against: the production broker
/// holds exactly CAP_SETUID and CAP_SETGID (effective, permitted, ambient, bounding),
/// reports identity and cgroups as full, and is not dumpable; the dev broker holds no
/// capability at all.
async fn the_broker_is_started_in_the_claimed_shape(shape: Shape) {
    // capability.h
    const CAP_SETGID: u32 = 6;
    const CAP_SETUID: u32 = 7;
    let b = shaped_broker!(shape);
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let log = b.log();
    match shape {
        Shape::Production => {
            let setid = format!("{:016x}", (1u64 << CAP_SETUID) | (1u64 << CAP_SETGID));
            for key in ["CapPrm:", "CapEff:", "CapAmb:", "CapBnd:"] {
                assert_eq!(field(key), setid, "{key} of the production broker");
            }
            let uid = b.uid().expect("production runs as a uid of its own");
            assert_ne!(uid, 0);
            assert!(
                field("Uid:")
                    .split_whitespace()
                    .all(|u| u == uid.to_string()),
                "{status}"
            );
            assert!(log.contains("identity         full"), "{log}");
            assert!(log.contains("cgroups          full"), "{log}");
            let range = b.run_ids().expect("run ids");
            assert!(
                log.contains(&format!("{}-{}", range.start, range.end - 1)),
                "{log}"
            );
            // Not dumpable: the kernel makes its /proc files root's.
            let environ = std::fs::metadata(format!("/proc/{}/environ", b.pid())).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&environ), 0);
        }
        Shape::Dev => {
            if b.uid().is_some() {
                for key in ["CapPrm:", "CapEff:", "CapAmb:"] {
                    assert_eq!(field(key), "0000000000000000", "{key} of the dev broker");
                }
            }
            assert!(log.contains("dev mode"), "{log}");
        }
    }
    assert_clean(&b).await;
}
both_shapes!(the_broker_is_started_in_the_claimed_shape);
