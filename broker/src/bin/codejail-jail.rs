//! The jail stage binary: spawned by the broker once per run (see `jail::plan` for
//! its fds). Single-threaded; all the work is in `codejail_broker::jail`.

fn main() {
    std::process::exit(codejail_broker::jail::run_stage());
}
