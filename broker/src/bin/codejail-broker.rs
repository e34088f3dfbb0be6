//! The broker daemon binary.
fn main() {}
