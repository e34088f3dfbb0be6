//! AppArmor, where the kernel has it: the program asks for its exec to land in the
//! sandbox profile, *stacked* on whatever confines the broker (so it can only ever
//! narrow), before `no_new_privs` (after which only such narrowing transitions are
//! allowed anyway). The request takes effect at the `execve` at the end of the
//! program's checklist (apparmor(7), "change_onexec"; libapparmor's `aa_stack_onexec`
//! writes the same string).
//!
//! The program has no procfs (its `/proc` is a mode-0 directory), so the exec
//! attribute is reached through the host's procfs: the init opens it (`O_PATH`) before
//! `pivot_root` leaves it behind ([`open_host_proc`]), only when a profile is
//! configured; the program writes its own attribute through it (`thread-self`
//! resolves to the caller) and closes it, long before anything of the user's runs.
//! Even if it leaked, Landlock has no rule for anything below it, and every fd above
//! stderr closes at exec.
//!
//! On kernels without AppArmor (this project's CI) the layer is reported
//! Unavailable and never the only line of defence (ARCHITECTURE §5).

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::JailError;

/// Where the kernel exposes AppArmor when it is enabled.
const SECURITYFS: &str = "/sys/kernel/security/apparmor";

/// The per-LSM attribute file (kernel >= 5.1), then the legacy shared one, relative to
/// a procfs root.
const EXEC_ATTRS: [&CStr; 2] = [c"thread-self/attr/apparmor/exec", c"thread-self/attr/exec"];

/// Open the host's procfs root (`O_PATH`, close-on-exec), for
/// [`request_exec_transition`] once the run's root has no procfs. Called by the init
/// before `pivot_root`.
pub(crate) fn open_host_proc() -> Result<OwnedFd, JailError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open("/proc")
        .map(OwnedFd::from)
        .map_err(|source| JailError::AppArmor {
            profile: "(opening the host's /proc for the exec attribute)".into(),
            source,
        })
}

/// Whether this kernel has AppArmor enabled (checked by the broker on the host).
pub fn kernel_has_apparmor() -> bool {
    Path::new(SECURITYFS).exists()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false)
}

/// [`kernel_has_apparmor`], asked once per process (the broker asks per run).
pub fn kernel_has_apparmor_cached() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(kernel_has_apparmor)
}

/// The profile a run's program stacks on at exec: the configured `apparmor_profile`,
/// only where the kernel has AppArmor (elsewhere writing the exec attribute fails, and
/// the layer is reported Unavailable instead).
pub fn profile_for_runs(configured: Option<&str>) -> Option<String> {
    configured
        .filter(|_| kernel_has_apparmor_cached())
        .map(str::to_string)
}

/// Whether `name` can be a profile name in the `stack <name>` request: non-empty, one
/// line, no whitespace or NUL (the kernel parses the attribute by whitespace).
pub fn check_profile_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("must be a profile name of 1 to 256 bytes".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} holds whitespace or control characters"));
    }
    Ok(())
}

/// The `apparmor` layer of the confinement report: `Ok(detail)` when it holds (the
/// kernel has AppArmor, a profile is configured and the start-up probe ran under it),
/// `Err(why not, and the fix)` otherwise.
pub fn layer_detail(
    configured: Option<&str>,
    kernel: bool,
    probe_ok: bool,
) -> Result<String, String> {
    match (configured, kernel, probe_ok) {
        (None, _, _) => Err(
            "no apparmor_profile configured (install apparmor/codejail-sandbox and set apparmor_profile = \"codejail-sandbox\")".into(),
        ),
        (Some(p), false, _) => Err(format!(
            "the kernel has no AppArmor enabled (profile {p} configured but not applied; the other layers still hold)"
        )),
        (Some(p), true, false) => Err(format!(
            "profile {p}: the start-up self-test did not pass under it (is the profile loaded? apparmor_parser -r /etc/apparmor.d/{p})"
        )),
        (Some(p), true, true) => Ok(format!(
            "each program is stacked on profile {p} at exec: only its own run's files, no network, signals only from the broker"
        )),
    }
}

/// The request written to the exec attribute.
fn stack_request(profile: &str) -> String {
    format!("stack {profile}")
}

/// Ask for the next exec to stack `profile` on the current confinement, through
/// `proc` (from [`open_host_proc`]), which is closed afterwards.
pub(crate) fn request_exec_transition(profile: &str, proc: OwnedFd) -> Result<(), JailError> {
    let request = stack_request(profile);
    let mut last = None;
    for attr in EXEC_ATTRS {
        match super::sys::open_at(proc.as_fd(), attr, libc::O_WRONLY, 0).map(File::from) {
            // One write: the kernel parses the attribute per write(2).
            Ok(mut f) => match f.write(request.as_bytes()) {
                Ok(n) if n == request.len() => return Ok(()),
                Ok(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "short write",
                    ))
                }
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(JailError::AppArmor {
        profile: profile.to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no exec attribute")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_stacking_change_onexec() {
        assert_eq!(stack_request("codejail-sandbox"), "stack codejail-sandbox");
    }

    #[test]
    fn profile_names_and_layer_details() {
        assert!(check_profile_name("codejail-sandbox").is_ok());
        assert!(check_profile_name("").is_err());
        assert!(check_profile_name("a b").is_err());
        assert!(check_profile_name("a\nstack b").is_err());
        assert!(layer_detail(None, true, true)
            .expect_err("none")
            .contains("apparmor_profile"));
        assert!(layer_detail(Some("p"), false, true)
            .expect_err("no kernel")
            .contains("no AppArmor"));
        assert!(layer_detail(Some("p"), true, false).is_err());
        assert!(layer_detail(Some("p"), true, true).is_ok());
        if !kernel_has_apparmor() {
            assert_eq!(profile_for_runs(Some("p")), None);
        }
        assert_eq!(profile_for_runs(None), None);
    }

    #[test]
    fn this_kernel_reports_no_apparmor() {
        // The project's machines have no AppArmor; where one does, this test tells.
        if Path::new(SECURITYFS).exists() {
            eprintln!("AppArmor present: skipping the absence check");
            return;
        }
        assert!(!kernel_has_apparmor());
    }
}
