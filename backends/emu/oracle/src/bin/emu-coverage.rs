//! Writes or checks docs/emu-coverage.md (see `opsvisor_oracle::coverage`).
//!
//! `emu-coverage --write FILE` regenerates the report; `emu-coverage --check FILE` exits
//! with status 1 and a message when FILE differs from what the code gives now.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, path) = match args.as_slice() {
        [m, p] if m == "--write" || m == "--check" => (m.as_str(), p.as_str()),
        _ => {
            eprintln!("usage: emu-coverage --write FILE | --check FILE");
            return ExitCode::from(2);
        }
    };
    let report = opsvisor_oracle::coverage::report();
    if mode == "--write" {
        if let Err(e) = std::fs::write(path, &report) {
            eprintln!("emu-coverage: {path}: {e}");
            return ExitCode::from(2);
        }
        println!("emu-coverage: wrote {path}");
        return ExitCode::SUCCESS;
    }
    match std::fs::read_to_string(path) {
        Ok(current) if current == report => {
            println!("emu-coverage: {path} is up to date");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!(
                "emu-coverage: {path} is out of date: run `cargo xtask coverage` and commit the result"
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("emu-coverage: {path}: {e}");
            ExitCode::from(2)
        }
    }
}
