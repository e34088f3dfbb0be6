//! The stage's plan decoding and name checks: the control pipe's bytes read as one
//! `Plan` frame (`read_frame`, with the stage's cap), then the checks the stage makes
//! before it builds anything (`check_names`, then what `execve` needs). Nothing may
//! panic; a plan that passes has only relative, dot-free names.
#![no_main]

use codejail_plan::{read_frame, Plan, MAX_PLAN_FRAME};
use codejail_protocol::EntryKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let Ok(Some(plan)) = read_frame::<_, Plan>(&mut r, MAX_PLAN_FRAME) else {
        return;
    };
    if codejail_jail::fuzz_check_plan(&plan).is_err() {
        return;
    }
    assert!(plan.skeleton_root.starts_with('/'));
    assert!(plan.program.starts_with('/'));
    assert!(!plan.argv.is_empty());
    let plain = |name: &str| {
        !name.is_empty()
            && !name.starts_with('/')
            && !name.contains('\0')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
    };
    assert!(plain(&plan.workdir_name) && !plan.workdir_name.contains('/'));
    for entry in &plan.files {
        assert!(plain(&entry.path), "{:?} accepted", entry.path);
        if let EntryKind::Symlink { target } = &entry.kind {
            assert!(!target.is_empty() && !target.contains('\0'));
        }
    }
    for (name, _) in &plan.extra_files {
        assert!(plain(name) && !name.contains('/'), "{name:?} accepted");
    }
});
