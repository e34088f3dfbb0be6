//! AppArmor as the broker sees it: whether the kernel has it, which profile runs stack
//! on (the plan's `apparmor_profile`), and the layer's line in the confinement report.
//! The stacking itself is the jail stage's (`codejail_jail::apparmor`).
//!
//! On kernels without AppArmor (this project's CI) the layer is reported
//! Unavailable and never the only line of defence (docs/architecture.md §8).

use std::path::Path;

/// Where the kernel exposes AppArmor when it is enabled.
const SECURITYFS: &str = "/sys/kernel/security/apparmor";

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

/// The profiles the kernel has loaded, one per line: `name (mode)`.
const LOADED_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// Whether `name` is a loaded profile in `list` (the text of [`LOADED_PROFILES`]).
fn loaded_in(list: &str, name: &str) -> bool {
    list.lines()
        .any(|line| line.rsplit_once(" (").map_or(line, |(n, _)| n) == name)
}

/// Whether the kernel has loaded the configured profile, asked once per process (the
/// configuration names one profile for the broker's life; loading it later needs a
/// restart). `None` when it cannot be told (no profile configured, no AppArmor, the
/// list unreadable): runs then try the profile, as before this check existed.
pub fn configured_profile_loaded(configured: Option<&str>) -> Option<bool> {
    static LOADED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let name = configured?;
    *LOADED.get_or_init(|| {
        if !kernel_has_apparmor_cached() {
            return None;
        }
        let list = std::fs::read_to_string(LOADED_PROFILES).ok()?;
        Some(loaded_in(&list, name))
    })
}

/// The profile a run's program stacks on at exec: the configured `apparmor_profile`,
/// only where the kernel has AppArmor and has not said the profile is missing
/// (elsewhere writing the exec attribute fails with ENOENT and so would every run: the
/// layer is reported Unavailable instead, and a required one stops the start).
pub fn profile_for_runs(configured: Option<&str>) -> Option<String> {
    configured
        .filter(|_| kernel_has_apparmor_cached())
        .filter(|_| configured_profile_loaded(configured) != Some(false))
        .map(str::to_string)
}

/// The broker's own profile (apparmor/codejail-broker), and the one that file stacks on
/// each jail stage it execs (`pix -> &codejail-jail`).
const BROKER_PROFILE: &str = "codejail-broker";
const STAGE_PROFILE: &str = "codejail-jail";

/// The `current` attribute of process `pid` (`self` or a number): the per-LSM file,
/// else the legacy shared one.
fn current_label(pid: &str) -> std::io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/attr/apparmor/current"))
        .or_else(|_| std::fs::read_to_string(format!("/proc/{pid}/attr/current")))
}

/// The label name in a `current` attribute's text (`name (mode)`, or `unconfined`).
fn label_name(current: &str) -> &str {
    let current = current.trim_end_matches(['\n', '\0']);
    current.rsplit_once(" (").map_or(current, |(n, _)| n)
}

/// What a zygote's exec asks for, written to the exec attribute between fork and exec
/// (`stack codejail-jail`): a zygote is a jail stage that forks (its children run the
/// stage's checklist), so it gets the stage's confinement, stacked on the broker's, as
/// a stage does. Its interpreter cannot get it from an exec rule of the broker's
/// profile as the stage's binary does: that profile already runs the sandbox's
/// interpreters `ix` (a stage's program with `allow_exec`), and one path has one exec
/// mode. Only when the broker runs under its own profile (which names the stage's);
/// `None` elsewhere (no AppArmor, unconfined, a site's own profile).
pub fn zygote_exec_request() -> Option<std::ffi::CString> {
    static REQUEST: std::sync::OnceLock<Option<std::ffi::CString>> = std::sync::OnceLock::new();
    REQUEST
        .get_or_init(|| {
            if !kernel_has_apparmor_cached() {
                return None;
            }
            let current = current_label("self").ok()?;
            (label_name(&current) == BROKER_PROFILE)
                .then(|| std::ffi::CString::new(format!("stack {STAGE_PROFILE}")).ok())
                .flatten()
        })
        .clone()
}

/// When the zygote's exec asked for the stage's profile (`requested`), that it got it:
/// its label must be the broker's with `codejail-jail` stacked, as a stage's is, or
/// the fork server would run its runs' stages under the broker's wider profile. `Err`
/// names what it got.
pub fn check_zygote_label(requested: bool, pid: u32) -> Result<(), String> {
    if !requested {
        return Ok(());
    }
    let want = format!("{BROKER_PROFILE}//&{STAGE_PROFILE}");
    let current = current_label(&pid.to_string())
        .map_err(|e| format!("its AppArmor label could not be read: {e}"))?;
    if label_name(&current) == want {
        Ok(())
    } else {
        Err(format!(
            "its AppArmor label is {:?}, not {want:?} (is the installed codejail-broker profile loaded in full?)",
            label_name(&current)
        ))
    }
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
/// kernel has AppArmor, a profile is configured, loaded — `loaded` is
/// [`configured_profile_loaded`] — and the start-up probe ran under it), `Err(why not,
/// and the fix)` otherwise.
pub fn layer_detail(
    configured: Option<&str>,
    kernel: bool,
    loaded: Option<bool>,
    probe_ok: bool,
) -> Result<String, String> {
    match (configured, kernel, probe_ok) {
        (Some(p), true, _) if loaded == Some(false) => Err(format!(
            "profile {p} is not loaded, so runs go without it (the other layers still hold): \
             load it with apparmor_parser -r /etc/apparmor.d/{p} and restart the broker"
        )),
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
            "each program is stacked on profile {p} at exec (a forked one before it returns to its interpreter): only its own run's files, no network, signals only from the broker"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_and_layer_details() {
        assert!(check_profile_name("codejail-sandbox").is_ok());
        assert!(check_profile_name("").is_err());
        assert!(check_profile_name("a b").is_err());
        assert!(check_profile_name("a\nstack b").is_err());
        assert!(layer_detail(None, true, None, true)
            .expect_err("none")
            .contains("apparmor_profile"));
        assert!(layer_detail(Some("p"), false, None, true)
            .expect_err("no kernel")
            .contains("no AppArmor"));
        assert!(layer_detail(Some("p"), true, Some(true), false).is_err());
        assert!(layer_detail(Some("p"), true, Some(true), true).is_ok());
        assert!(layer_detail(Some("p"), true, None, true).is_ok());
        let unloaded = layer_detail(Some("p"), true, Some(false), true).expect_err("unloaded");
        assert!(
            unloaded.contains("not loaded") && unloaded.contains("apparmor_parser -r"),
            "{unloaded}"
        );
        if !kernel_has_apparmor() {
            assert_eq!(profile_for_runs(Some("p")), None);
        }
        assert_eq!(profile_for_runs(None), None);
    }

    #[test]
    fn label_names_drop_the_mode() {
        assert_eq!(label_name("codejail-broker (enforce)\n"), "codejail-broker");
        assert_eq!(label_name("unconfined\n"), "unconfined");
        assert_eq!(
            label_name("codejail-broker//&codejail-jail (enforce)"),
            "codejail-broker//&codejail-jail"
        );
        if !kernel_has_apparmor() {
            assert_eq!(zygote_exec_request(), None);
        }
        // Nothing asked, nothing to check; asked, a process without the stacked label
        // (this test's own, unconfined or without AppArmor) is refused.
        assert_eq!(check_zygote_label(false, std::process::id()), Ok(()));
        let err = check_zygote_label(true, std::process::id()).expect_err("not stacked");
        assert!(err.contains("AppArmor label"), "{err}");
    }

    #[test]
    fn loaded_profiles_are_found_by_their_whole_name() {
        let list = "codejail-broker//&codejail-jail (enforce)\ncodejail-broker (enforce)\n\
                    codejail-sandbox-old (complain)\n/usr/bin/man (enforce)\n";
        assert!(loaded_in(list, "codejail-broker"));
        assert!(loaded_in(list, "/usr/bin/man"));
        assert!(
            !loaded_in(list, "codejail-sandbox"),
            "a prefix is not the profile"
        );
        assert!(!loaded_in("", "codejail-sandbox"));
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
