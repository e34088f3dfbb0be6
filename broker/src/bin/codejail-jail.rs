//! The jail stage binary: spawned by the broker once per run (see `jail::plan`).

fn main() {
    std::process::exit(2);
}
