//! The command line on arbitrary arguments (any bytes, UTF-8 or not): every argument list
//! parses into a command or one error, without a panic. NUL bytes split the input into
//! arguments (no argument can hold one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor::args::{parse, Command};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    let argv: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    match parse(&argv).map(|invocation| invocation.command) {
        Ok(Command::Run(run)) => {
            if let Some(t) = run.machine.timeout {
                assert!(t.as_secs_f64() > 0.0);
            }
            assert!(run.machine.memory % 4096 == 0);
            assert!((1..=255).contains(&run.machine.vcpus));
        }
        Ok(Command::Exec(exec)) => {
            assert!(exec.options.max_instructions > 0);
        }
        Ok(Command::Help(text)) => assert!(!text.is_empty()),
        Ok(Command::Version) | Ok(Command::Completions(_)) => {}
        Err(e) => {
            assert!(!e.is_empty());
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }
});
