//! Request decode + validation: a frame body decoded as a `Request` and, for an `Exec`,
//! every check the broker makes before it runs anything (names, command, limits,
//! something to run), against a production-shape config. Nothing may panic; what the
//! broker accepts stays within the ceilings, and the plan it would build from an
//! accepted request passes the stage's own checks (the broker must never accept what
//! the stage refuses).
#![no_main]

use codejail_broker::run::request::fuzz_check_exec;
use codejail_fuzz::SETTINGS;
use codejail_plan::{Plan, RunLimits};
use codejail_protocol::{decode, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Request::Exec(exec)) = decode::<Request>(data) else {
        return;
    };
    let settings = &*SETTINGS;
    let limits = match fuzz_check_exec(settings, &exec) {
        Ok(limits) => limits,
        Err((_, message)) => {
            assert!(!message.is_empty(), "a refusal says why");
            return;
        }
    };
    for (name, ceiling) in &settings.limits.ceilings {
        let value = limits.get(*name);
        assert!(
            value <= *ceiling,
            "{name:?}={value} above its ceiling {ceiling}"
        );
        assert!(
            value != 0 || !name.zero_disables(),
            "{name:?} unlimited despite a ceiling"
        );
    }
    let command = &settings.commands[&exec.command];
    let mut argv = vec![command.bin.to_string_lossy().into_owned()];
    argv.extend(command.args.iter().cloned());
    argv.extend(exec.argv.iter().cloned());
    let plan = Plan {
        program: command.bin.to_string_lossy().into_owned(),
        argv,
        env: command.env.clone(),
        code: exec.code.clone(),
        files: exec.files.clone(),
        extra_files: exec.extra_files.clone(),
        skeleton_root: settings.tmpfs_mount.to_string_lossy().into_owned(),
        ro_paths: vec![],
        workdir_name: "codejail-0123abcd".into(),
        limits: RunLimits::default(),
        sigpending: None,
        hostname: "codejail".into(),
        landlock_min_abi: settings.landlock_min_abi,
        landlock_max_abi: settings.landlock_max_abi,
        apparmor_profile: None,
        allow_exec: command.allow_exec,
        warm: None,
    };
    if let Err(e) = codejail_jail::fuzz_check_plan(&plan) {
        panic!("the broker accepted a request whose plan the stage refuses: {e}");
    }
});
