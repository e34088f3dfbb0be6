//! Config parsing and validation: every key named in its error.

use super::*;
use codejail_protocol::LimitName;
use std::collections::BTreeMap;

fn parse(s: &str) -> Result<Settings, ConfigError> {
    let cfg: FileConfig = toml::from_str(s).map_err(|e| ConfigError::Parse {
        path: "t.toml".into(),
        message: e.to_string(),
    })?;
    Settings::from_config(&cfg, Mode::Confined)
}

const PY: &str = "[commands.python]\nbin = \"/usr/bin/python3\"\n";

#[test]
fn nul_bytes_and_a_relative_tmpfs_mount_fail_start_up() {
    // fuzz/config: each was accepted, then every run failed at the stage's plan
    // check ("contains a NUL", "not an absolute path").
    for (text, key) in [
        (
            "[commands.python]\nbin = \"/usr/bin/py\\u0000\"\n",
            "commands.python.bin",
        ),
        (
            &format!("{PY}args = [\"-\\u0000\"]\n"),
            "commands.python.args",
        ),
        (
            &format!("{PY}env = {{ A = \"x\\u0000\" }}\n"),
            "commands.python.env",
        ),
        (
            &format!("{PY}env = {{ \"A\\u0000\" = \"x\" }}\n"),
            "commands.python.env",
        ),
        (
            &format!("{PY}ro_paths = [\"/opt/\\u0000\"]\n"),
            "commands.python.ro_paths",
        ),
        (
            &format!("tmpfs_mount = \"/srv/\\u0000\"\n{PY}"),
            "tmpfs_mount",
        ),
        (&format!("tmpfs_mount = \"srv\"\n{PY}"), "tmpfs_mount"),
    ] {
        let err = parse(text).expect_err(text);
        assert!(
            err.to_string().contains(&format!("`{key}`")),
            "{text}: {err}"
        );
    }
    parse(&format!("tmpfs_mount = \"/srv\"\n{PY}args = [\"-E\"]\n")).expect("plain");
}

#[test]
fn unknown_key_is_named() {
    let err = parse(&format!("{PY}bogus_key = 1\n")).expect_err("unknown key");
    assert!(err.to_string().contains("bogus_key"), "{err}");
    let err = parse(&format!("{PY}[limits.defaults]\nCPUS = 1\n")).expect_err("unknown limit");
    assert!(err.to_string().contains("limits.defaults.CPUS"), "{err}");
}

#[test]
fn defaults_above_ceiling_fail_start_up() {
    let err = parse(&format!(
        "{PY}[limits.ceilings]\nCPU = 3\n[limits.defaults]\nCPU = 5\n"
    ))
    .expect_err("above");
    assert!(err.to_string().contains("limits.defaults.CPU"), "{err}");
    // VMEM default 0 = unlimited, which a VMEM ceiling forbids.
    let err = parse(&format!("{PY}[limits.ceilings]\nVMEM = 1000\n")).expect_err("unlimited");
    assert!(err.to_string().contains("VMEM"), "{err}");
    let err = parse(&format!(
        "{PY}[limits.ceilings]\nNPROC = 20\n[limits.contexts.c1]\nNPROC = 30\n"
    ))
    .expect_err("context above");
    assert!(err.to_string().contains("NPROC"), "{err}");
}

#[test]
fn resolve_layers_defaults_context_request() {
    let s = parse(&format!(
        "{PY}[limits.defaults]\nCPU = 2\n[limits.ceilings]\nCPU = 10\n[limits.contexts.\"course-v1:X\"]\nCPU = 5\nREALTIME = 7\n"
    ))
    .expect("valid");
    let none = BTreeMap::new();
    let l = s.limits.resolve(None, &none).expect("ok");
    assert_eq!(l.get(LimitName::Cpu), 2);
    let l = s.limits.resolve(Some("course-v1:X"), &none).expect("ok");
    assert_eq!((l.get(LimitName::Cpu), l.get(LimitName::Realtime)), (5, 7));
    let l = s.limits.resolve(Some("unknown course"), &none).expect("ok");
    assert_eq!(l.get(LimitName::Cpu), 2, "unknown context = no overrides");
    let req = [("CPU".to_string(), 3u64)].into_iter().collect();
    let l = s.limits.resolve(Some("course-v1:X"), &req).expect("ok");
    assert_eq!(l.get(LimitName::Cpu), 3, "request wins");
    let req = [("CPU".to_string(), 11u64)].into_iter().collect();
    let err = s.limits.resolve(None, &req).expect_err("above ceiling");
    assert!(err.to_string().contains("CPU=11"), "{err}");
    let req = [("CPU".to_string(), 0u64)].into_iter().collect();
    assert!(
        s.limits.resolve(None, &req).is_err(),
        "0 = unlimited is above a ceiling"
    );
    let req = [("NOPE".to_string(), 1u64)].into_iter().collect();
    assert!(s.limits.resolve(None, &req).is_err());
}

#[test]
fn root_never_runs_programs_as_root() {
    let id = identity_for(0, 0, None, None);
    assert_eq!(
        (id.outer_uid, id.outer_gid),
        (DEV_ROOT_RUN_ID, DEV_ROOT_RUN_ID)
    );
    assert!(id.clear_groups);
    let id = identity_for(4242, 4242, None, None);
    assert_eq!((id.outer_uid, id.clear_groups), (4242, false));
    assert!(parse(&format!("{PY}run_uid = 0\n")).is_err());
}

#[test]
fn bad_values_name_their_key() {
    let err = parse(&format!("{PY}[socket]\nmode = \"999\"\n")).expect_err("mode");
    assert!(err.to_string().contains("socket.mode"), "{err}");
    let err = parse("[commands.python]\nbin = \"python3\"\n").expect_err("relative");
    assert!(err.to_string().contains("commands.python.bin"), "{err}");
    let err = parse(&format!("{PY}max_running = 0\n")).expect_err("zero");
    assert!(err.to_string().contains("max_running"), "{err}");
}

#[test]
fn cgroup_and_run_ids_errors_name_their_key() {
    let err = parse(&format!("{PY}[cgroup]\nmode = \"v3\"\n")).expect_err("mode");
    assert!(
        err.to_string().contains("v3") && err.to_string().contains("mode"),
        "{err}"
    );
    let err = parse(&format!("{PY}[cgroup]\nbogus = 1\n")).expect_err("unknown");
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = parse(&format!("{PY}[cgroup]\nmode = \"none\"\n")).expect_err("required by default");
    assert!(err.to_string().contains("cgroup.required"), "{err}");
    parse(&format!(
        "{PY}[cgroup]\nmode = \"none\"\nrequired = false\n"
    ))
    .expect("explicitly not required");
    let err =
        parse(&format!("{PY}[cgroup]\nv1_memory = \"memory/codejail\"\n")).expect_err("relative");
    assert!(err.to_string().contains("cgroup.v1_memory"), "{err}");
    let err = parse(&format!("{PY}[cgroup]\nunlimited_pids = 2\n")).expect_err("too few");
    assert!(err.to_string().contains("cgroup.unlimited_pids"), "{err}");

    let err = parse(&format!(
        "max_running = 8\nrun_ids = {{ first = 300000, count = 4 }}\n{PY}"
    ))
    .expect_err("count < max_running");
    assert!(
        err.to_string().contains("run_ids.count") && err.to_string().contains("max_running (8)"),
        "{err}"
    );
    let err = parse(&format!("run_ids = {{ first = 0, count = 4 }}\n{PY}")).expect_err("root");
    assert!(err.to_string().contains("run_ids.first"), "{err}");
    let err = parse(&format!(
        "run_ids = {{ first = 4294967290, count = 10 }}\n{PY}"
    ))
    .expect_err("overflow");
    assert!(err.to_string().contains("run_ids.count"), "{err}");
    let err = parse(&format!(
        "run_ids = {{ first = 65000, count = 1000 }}\n{PY}"
    ))
    .expect_err("nobody");
    assert!(err.to_string().contains("65534"), "{err}");
    let err = parse(&format!(
        "run_uid = 5000\nrun_ids = {{ first = 300000, count = 4 }}\n{PY}"
    ))
    .expect_err("both");
    assert!(err.to_string().contains("run_ids"), "{err}");
    let err =
        parse(&format!("run_ids = {{ first = 300000, cnt = 4 }}\n{PY}")).expect_err("unknown key");
    assert!(err.to_string().contains("cnt"), "{err}");
    let s = parse(&format!("run_ids = {{ first = 300000, count = 64 }}\n{PY}")).expect("valid");
    let r = s.run_ids.expect("range");
    assert_eq!(
        (r.first, r.last(), r.to_string()),
        (300000, 300063, "300000-300063".to_string())
    );
    assert!(r.overlaps(300063, 1) && !r.overlaps(300064, 5) && !r.overlaps(0, 300000));
    assert!(s.cgroup.required, "production requires cgroups by default");
    assert_eq!(s.cgroup.mode, CgroupMode::Auto);
}

#[test]
fn memory_is_a_limit_with_a_default() {
    let s = parse(PY).expect("valid");
    assert_eq!(s.limits.defaults.get(LimitName::Memory), 512 << 20);
    let s =
        parse(&format!("{PY}[limits.defaults]\nMEMORY = 0\n")).expect("0 = no cgroup memory cap");
    assert_eq!(s.limits.defaults.effective(LimitName::Memory), None);
}

#[test]
fn landlock_min_abi_defaults_to_any_landlock_and_is_bounded() {
    let s = parse(PY).expect("valid");
    assert_eq!(
        s.landlock_min_abi, 1,
        "confined: any Landlock (Debian 12: ABI 2)"
    );
    let cfg: FileConfig = toml::from_str(PY).expect("toml");
    let dev = Settings::from_config(&cfg, Mode::Dev).expect("valid");
    assert_eq!(dev.landlock_min_abi, 0, "dev: not required");
    let s = parse(&format!("landlock_min_abi = 4\n{PY}")).expect("valid");
    assert_eq!(s.landlock_min_abi, 4);
    let e = parse(&format!("landlock_min_abi = 8\n{PY}")).expect_err("too new");
    assert!(
        e.to_string().contains("landlock_min_abi") && e.to_string().contains("(7)"),
        "{e}"
    );
}

#[test]
fn a_fork_server_needs_per_run_ids_or_the_brokers_own() {
    let pool = "[pool.python]\nsize = 1\nfork_server = true\n";
    let ids = "run_ids = { first = 300000, count = 64 }\n";
    let settings = parse(&format!("{ids}{PY}{pool}")).expect("per-run ids");
    assert!(settings.pools["python"].fork_server);
    // With AppArmor too: a forked program stacks the profile when it is confined.
    let settings = parse(&format!(
        "{ids}apparmor_profile = \"codejail-sandbox\"\n{PY}{pool}"
    ))
    .expect("per-run ids and a profile");
    assert!(settings.pools["python"].fork_server);
    assert_eq!(
        settings.apparmor_profile.as_deref(),
        Some("codejail-sandbox")
    );
    let err =
        parse(&format!("run_uid = 5000\nrun_gid = 5000\n{PY}{pool}")).expect_err("one run_uid");
    assert!(
        err.to_string().contains("`pool.python.fork_server`"),
        "one run_uid: {err}"
    );
}

#[test]
fn a_zygotes_life_is_configured_per_pool() {
    let ids = "run_ids = { first = 300000, count = 64 }\n";
    let settings = parse(&format!(
        "{ids}{PY}[pool.python]\nsize = 1\nfork_server = true\n"
    ))
    .expect("defaults");
    assert_eq!(settings.pools["python"].zygote, ZygoteLife::default());
    assert_eq!(settings.pools["python"].zygote.max_forks, 1000);
    let settings = parse(&format!(
        "{ids}{PY}[pool.python]\nsize = 1\nfork_server = true\nzygote_max_forks = 3\nzygote_max_age_secs = 30\n"
    ))
    .expect("both keys");
    assert_eq!(
        settings.pools["python"].zygote,
        ZygoteLife {
            max_forks: 3,
            max_age: Duration::from_secs(30)
        }
    );
    for (keys, key, why) in [
        (
            "zygote_max_forks = 3\n",
            "zygote_max_forks",
            "only with fork_server",
        ),
        (
            "fork_server = true\nzygote_max_forks = 0\n",
            "zygote_max_forks",
            "at least 1",
        ),
        (
            "fork_server = true\nzygote_max_age_secs = 0\n",
            "zygote_max_age_secs",
            "at least 1",
        ),
    ] {
        let err = parse(&format!("{ids}{PY}[pool.python]\nsize = 1\n{keys}")).expect_err(keys);
        let err = err.to_string();
        assert!(
            err.contains(&format!("`pool.python.{key}`")) && err.contains(why),
            "{keys}: {err}"
        );
    }
}
