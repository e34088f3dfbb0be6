//! The config keys of issue 5 (operations), through the public API: the group
//! allow-list and the AppArmor settings, validated with the key named.

#![allow(clippy::expect_used)]

use codejail_broker::apparmor;
use codejail_broker::config::{FileConfig, Settings};
use codejail_protocol::Mode;

fn parse(extra: &str) -> Result<Settings, String> {
    let text = format!(
        "{extra}\n[commands.python]\nbin = \"/usr/bin/python3\"\n[cgroup]\nmode = \"none\"\nrequired = false\n"
    );
    let cfg: FileConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
    Settings::from_config(&cfg, Mode::Confined).map_err(|e| e.to_string())
}

#[test]
fn allowed_gids_and_defaults() {
    let s = parse("allowed_gids = [997, 998]").expect("valid");
    assert!(s.allowed_gids.contains(&997) && s.allowed_gids.contains(&998));
    let s = parse("").expect("valid");
    assert!(s.allowed_gids.is_empty());
    assert_eq!(s.apparmor_profile, None);
    assert!(!s.apparmor_required, "AppArmor is optional by default");
    assert!(
        !s.socket_activated,
        "only the binary sets it, from LISTEN_FDS"
    );
    let e = parse("allowed_gids = [-1]").expect_err("negative");
    assert!(e.contains("allowed_gids"), "{e}");
}

#[test]
fn apparmor_keys_are_validated_with_the_key_named() {
    let s =
        parse("apparmor_profile = \"codejail-sandbox\"\napparmor_required = true").expect("valid");
    assert_eq!(s.apparmor_profile.as_deref(), Some("codejail-sandbox"));
    assert!(s.apparmor_required);
    let e = parse("apparmor_required = true").expect_err("no profile");
    assert!(e.contains("apparmor_required"), "{e}");
    for bad in ["\"\"", "\"two words\"", "\"a\\nstack b\""] {
        let e = parse(&format!("apparmor_profile = {bad}")).expect_err("bad name");
        assert!(e.contains("apparmor_profile"), "{bad}: {e}");
    }
}

#[test]
fn runs_get_the_profile_only_where_the_kernel_has_apparmor() {
    let runs = apparmor::profile_for_runs(Some("codejail-sandbox"));
    if apparmor::kernel_has_apparmor() {
        assert_eq!(runs.as_deref(), Some("codejail-sandbox"));
    } else {
        assert_eq!(
            runs, None,
            "no exec transition is requested without AppArmor"
        );
    }
    assert_eq!(apparmor::profile_for_runs(None), None);
}
