//! The jail stage binary: spawned by the broker once per run (see `codejail_plan` for
//! its fds). Single-threaded; all the work is in the `codejail_jail` library.

fn main() {
    std::process::exit(codejail_jail::run_stage());
}
