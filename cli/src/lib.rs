//! The opsvisor command-line program as a library: its option parsing, bounded input
//! reading and `opsvisor exec`, so that tests and fuzz targets can call each parser
//! without running a guest. `src/main.rs` is the program.

pub mod args;
pub mod exec;
pub mod input;
