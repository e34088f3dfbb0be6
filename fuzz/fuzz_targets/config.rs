//! The config parser: any text as the broker's TOML config, then `Settings::from_config`
//! in both modes. Errors are fine, panics are not; settings that come out hold the
//! start-up invariants, and every configured command gives plans the stage accepts (a
//! config the broker starts with must not fail every run).
#![no_main]

use codejail_broker::config::{FileConfig, Settings};
use codejail_plan::{Plan, RunLimits};
use codejail_protocol::Mode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    for mode in [Mode::Confined, Mode::Dev] {
        let Ok(s) = Settings::from_config(&cfg, mode) else {
            continue;
        };
        assert!(s.max_running >= 1);
        assert!((4096..=1 << 30).contains(&s.max_frame));
        assert!(!s.commands.is_empty());
        assert!(s.identity.outer_uid != 0 && s.identity.outer_gid != 0);
        assert!(s.socket_mode <= 0o777);
        for (name, spec) in &s.commands {
            assert!(spec.bin.is_absolute());
            let program = spec.bin.to_string_lossy().into_owned();
            let mut argv = vec![program.clone()];
            argv.extend(spec.args.iter().cloned());
            argv.push(codejail_plan::layout::CODE_FILE.into());
            let plan = Plan {
                program,
                argv,
                env: spec.env.clone(),
                code: Some(b"pass".to_vec()),
                files: vec![],
                extra_files: vec![],
                skeleton_root: s.tmpfs_mount.to_string_lossy().into_owned(),
                ro_paths: spec
                    .ro_paths
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect(),
                workdir_name: "codejail-0123abcd".into(),
                limits: RunLimits::default(),
                sigpending: None,
                hostname: "codejail".into(),
                landlock_min_abi: s.landlock_min_abi,
                landlock_max_abi: s.landlock_max_abi,
                apparmor_profile: s.apparmor_profile.clone(),
                allow_exec: spec.allow_exec,
                warm: None,
            };
            if let Err(e) = codejail_jail::fuzz_check_plan(&plan) {
                panic!("the broker starts with command {name:?} whose runs the stage refuses: {e}");
            }
        }
        if let Some(r) = s.run_ids {
            assert!(r.first != 0 && r.count >= s.max_running);
        }
    }
});
