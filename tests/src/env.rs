//! The test machine: privileges (skip or fail), the interpreter, where the binaries are.

use std::fs::{self};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;
use std::time::Duration;

/// Environment variable naming the sandbox interpreter (set by `scripts/test.sh`).
pub const ENV_PYTHON: &str = "CODEJAIL_TEST_PYTHON";
/// Environment variable naming the edx-platform profile's interpreter (what capa
/// imports: requirements/sandbox-edx-platform.txt; set by `scripts/test.sh`).
pub const ENV_EDX_PYTHON: &str = "CODEJAIL_TEST_EDX_PYTHON";
/// When `1`, tests that cannot run for lack of privileges fail instead of skipping.
pub const ENV_REQUIRE_PRIVILEGED: &str = "CODEJAIL_REQUIRE_PRIVILEGED";
/// Directory holding the binaries, when they are not next to the test executable.
pub const ENV_BIN_DIR: &str = "CODEJAIL_TEST_BIN_DIR";
/// The interpreter used when [`ENV_PYTHON`] is not set.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";
/// The socket's file name inside the broker's directory.
pub const SOCKET_NAME: &str = "b.sock";
/// How long a broker may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a raw read may wait before the test fails (nothing should take that long).
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// First uid used for brokers under test when running as root. Each broker gets its own
/// uid (see [`TestBroker::uid`](crate::TestBroker::uid)) so that a `/proc` scan by uid sees only its runs.
pub(crate) const BROKER_UID_BASE: u32 = 200_000;
/// A uid that no broker under test allows (used to test peer refusal).
pub const OUTSIDER_UID: u32 = BROKER_UID_BASE - 1;

pub(crate) static NEXT_BROKER: AtomicU32 = AtomicU32::new(0);

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `CODEJAIL_REQUIRE_PRIVILEGED=1`.
pub fn privileged_required() -> bool {
    std::env::var(ENV_REQUIRE_PRIVILEGED).is_ok_and(|v| v == "1")
}

/// Skip (print the reason, return `false`) or, under `CODEJAIL_REQUIRE_PRIVILEGED=1`, fail.
pub fn skip_or_fail(reason: &str) -> bool {
    if privileged_required() {
        panic!("{ENV_REQUIRE_PRIVILEGED}=1 but this test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason} (set {ENV_REQUIRE_PRIVILEGED}=1 to make this a failure)");
    false
}

/// `true` when the test runs as root; otherwise skip or fail (see [`skip_or_fail`]).
pub fn require_privileged(what: &str) -> bool {
    is_root() || skip_or_fail(&format!("{what} needs root"))
}

/// The sandbox interpreter the brokers under test use.
pub fn python() -> PathBuf {
    std::env::var_os(ENV_PYTHON)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON))
}

/// The edx-platform profile's interpreter ([`ENV_EDX_PYTHON`]), or `None` after a
/// printed skip when it is not set (a failure under `CODEJAIL_REQUIRE_PRIVILEGED=1`:
/// scripts/test.sh always sets it).
pub fn edx_python() -> Option<PathBuf> {
    match std::env::var_os(ENV_EDX_PYTHON).filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            skip_or_fail(&format!(
                "{ENV_EDX_PYTHON} is not set, so there is no edx-platform sandbox venv \
                 (scripts/test.sh builds it with scripts/setup-sandbox-venv.sh)"
            ));
            None
        }
    }
}

/// `CODEJAIL_TEST_POOL`: the warm pool size every broker under test gets (unset or 0:
/// none), so that the suites run against warm jails as well as cold ones.
pub fn test_pool_size() -> Option<u32> {
    std::env::var("CODEJAIL_TEST_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
}

/// `CODEJAIL_TEST_FORK_SERVER=1`: every broker under test forks its warm jails from a
/// zygote (`--fork-server`; with `CODEJAIL_TEST_POOL`, scripts/test.sh).
pub fn test_fork_server() -> bool {
    std::env::var("CODEJAIL_TEST_FORK_SERVER").is_ok_and(|v| v == "1")
}

/// The directory holding `codejail-broker`, `codejail-jail` and `codejail-client`.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os(ENV_BIN_DIR).filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => {
                // target/debug/deps/<test> -> target/debug
                let exe = std::env::current_exe().expect("current_exe");
                exe.parent()
                    .and_then(Path::parent)
                    .expect("the test executable lives in target/<profile>/deps")
                    .to_path_buf()
            }
        };
        for name in ["codejail-broker", "codejail-jail", "codejail-client"] {
            assert!(
                dir.join(name).is_file(),
                "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
                dir.join(name).display()
            );
        }
        dir
    })
    .clone()
}

/// The path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Check that a uid other than the owner can execute `path` (every ancestor directory
/// searchable by others, the file executable by others).
pub fn reachable_by_others(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o005 != 0o005 {
        return Err(format!(
            "{} is not readable and executable by others",
            path.display()
        ));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let meta = fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "{} is not searchable by others (mode {:o})",
                d.display(),
                meta.permissions().mode() & 0o7777
            ));
        }
        dir = d.parent();
    }
    Ok(())
}

/// Whether a process running as `uid` can create user, pid and mount namespaces here
/// (the dev broker needs them). Checked once with `unshare(1)`; `true` when unknown.
pub(crate) fn namespaces_usable(uid: Option<u32>) -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let unshare = Path::new("/usr/bin/unshare");
            if !unshare.exists() {
                return Ok(());
            }
            let mut cmd = Command::new(unshare);
            cmd.args([
                "--user",
                "--map-root-user",
                "--pid",
                "--mount",
                "--fork",
                "--mount-proc",
                "true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            if let Some(uid) = uid {
                cmd.uid(uid).gid(uid);
            }
            match cmd.output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "user/pid/mount namespaces are not usable here (unshare: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Err(format!("could not run unshare(1): {e}")),
            }
        })
        .clone()
}

/// The repository's root (the tests crate is one of its folders).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A finished command's exit code, stdout and stderr, for failure messages.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
