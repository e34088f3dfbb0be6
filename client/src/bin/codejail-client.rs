//! The `codejail-client` CLI.
fn main() {
    std::process::exit(125);
}
