//! `opsvisor exec`'s state parser, machine builder and output on arbitrary text: every
//! state is run or refused with one error naming a field, without a panic, within the
//! parser's limits on memory (libFuzzer's -rss_limit_mb / -malloc_limit_mb: a state
//! must not make the program allocate in proportion to a number in it).
//!
//! Input: the state (UTF-8, else skipped). States the parser accepts are built and run
//! for at most 2,000 instructions, output to a sink, when their regions total at most
//! 16 MiB (a 1 GiB region runs the same code, only slower). Inputs without a "mode"
//! field get `"mode":64,` prepended after the first `{`, so most reach the fields after
//! it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor::exec::output::MemoryOutput;
use opsvisor::exec::{run_state, state, RunOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let owned;
    let text = if !text.contains("\"mode\"") && text.starts_with('{') {
        owned = format!("{{\"mode\":64,{}", &text[1..]);
        owned.as_str()
    } else {
        text
    };
    let Ok(spec) = state::parse(text) else {
        return;
    };
    let total: u64 = spec.regions.iter().map(state::RegionSpec::size).sum();
    if total > 16 << 20 {
        return;
    }
    let options = RunOptions {
        trace: data.len() % 2 == 0,
        max_instructions: 2_000,
        memory: if data.len() % 3 == 0 {
            MemoryOutput::All
        } else {
            MemoryOutput::Changed
        },
    };
    let mut sink = std::io::sink();
    match run_state(text, &options, &mut sink, data.len() % 5 == 0) {
        Ok(written) => written.expect("a sink takes everything"),
        // The builder may still refuse a parsed state (no room for its system area).
        Err(e) => assert!(!e.is_empty() && !e.contains('\n'), "one line: {e:?}"),
    }
});
