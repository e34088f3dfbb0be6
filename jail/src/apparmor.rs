//! AppArmor, where the kernel has it (the broker decides: `codejail_broker::apparmor`
//! and the plan's `apparmor_profile`): the program asks to be confined by the sandbox
//! profile, *stacked* on whatever confines the stage (so it can only ever narrow),
//! before `no_new_privs` (after which only such narrowing transitions are allowed
//! anyway). A program the stage execs asks for the stack at that `execve`, at the end
//! of its checklist (apparmor(7), "change_onexec"; libapparmor's `aa_stack_onexec`
//! writes the same string); a program forked from a zygote, which returns into an
//! interpreter already running, takes it at once, at the same point of the checklist
//! (libapparmor's `aa_stack_profile`): either way before anything of the user's runs.
//!
//! The program has no procfs (its `/proc` is a mode-0 directory), so the attribute is
//! reached through the host's procfs: the init opens it (`O_PATH`) before
//! `pivot_root` leaves it behind ([`open_host_proc`]), only when a profile is
//! configured; the program writes its own attribute through it (`thread-self`
//! resolves to the caller) and closes it, long before anything of the user's runs.
//! Even if it leaked, Landlock has no rule for anything below it, and every fd above
//! stderr closes at exec (a forked program's is closed before it returns).
//!
//! On kernels without AppArmor (this project's CI) the layer is reported
//! Unavailable. It is never the only line of defence: the namespaces, Landlock,
//! seccomp and the rlimits confine the program without it (the layers and their
//! order: `docs/architecture.md`).

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::error::JailError;

/// When the sandbox profile is stacked on the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// At the program's `execve` (the exec attribute).
    AtExec,
    /// At once (the current attribute): a forked program, which has no exec to come.
    Now,
}

impl Transition {
    /// The per-LSM attribute file (kernel >= 5.1), then the legacy shared one, relative
    /// to a procfs root.
    fn attrs(self) -> [&'static CStr; 2] {
        match self {
            Transition::AtExec => [c"thread-self/attr/apparmor/exec", c"thread-self/attr/exec"],
            Transition::Now => [
                c"thread-self/attr/apparmor/current",
                c"thread-self/attr/current",
            ],
        }
    }
}

/// Open the host's procfs root (`O_PATH`, close-on-exec), for
/// [`request_transition`] once the run's root has no procfs. Called by the init
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

/// The request written to the attribute (the same words for both).
fn stack_request(profile: &str) -> String {
    format!("stack {profile}")
}

/// Stack `profile` on the current confinement, at the next exec or at once (`when`),
/// through `proc` (from [`open_host_proc`]), which is closed afterwards.
pub(crate) fn request_transition(
    profile: &str,
    proc: OwnedFd,
    when: Transition,
) -> Result<(), JailError> {
    let request = stack_request(profile);
    let mut last = None;
    for attr in when.attrs() {
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
        source: last.unwrap_or_else(|| std::io::Error::other("no attribute")),
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
    fn a_forked_program_writes_the_current_attribute() {
        assert!(Transition::Now
            .attrs()
            .iter()
            .all(|a| a.to_str().unwrap().ends_with("/current")));
        assert!(Transition::AtExec
            .attrs()
            .iter()
            .all(|a| a.to_str().unwrap().ends_with("/exec")));
    }
}
