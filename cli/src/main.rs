//! The opsvisor command-line program.
fn main() {}
