//! `opsvisor exec`: run a code snippet on the emulator from a state given as JSON and
//! print the final state as JSON (the emulator as a tool, like Unicorn-based tools), one
//! state at a time or many in one process (`--batch`, JSON lines). [`FORMAT`] documents
//! the format.

pub mod machine;
pub mod output;
pub mod run;
pub mod state;

use crate::args::{max_instructions, Checked};
use output::{Doc, MemoryOutput};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// `opsvisor exec` options.
#[derive(Debug)]
pub struct ExecArgs {
    /// The state file, or in batch mode the file of states; `None` (or "-") for
    /// standard input.
    pub input: Option<PathBuf>,
    /// Read JSON lines, write one result line per state.
    pub batch: bool,
    /// How each state runs and what its output shows.
    pub options: RunOptions,
}

/// How a state runs and what its output shows.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Add a per-instruction trace to the output.
    pub trace: bool,
    /// Stop after this many instructions.
    pub max_instructions: u64,
    /// Which memory the output shows.
    pub memory: MemoryOutput,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            trace: false,
            max_instructions: DEFAULT_MAX,
            memory: MemoryOutput::Changed,
        }
    }
}

/// Instructions run when `--max-instructions` is not given.
const DEFAULT_MAX: u64 = 1_000_000;

/// `opsvisor exec` as clap sees it.
#[derive(clap::Args, Debug)]
pub struct ExecCli {
    /// The state file (- reads standard input); in batch mode the file of states
    /// [default in batch mode: standard input]
    #[arg(value_name = "STATE.json", value_parser = clap::value_parser!(std::ffi::OsString))]
    input: Option<std::ffi::OsString>,
    /// Add a per-instruction trace to the output
    #[arg(long)]
    trace: bool,
    /// Stop after N instructions [default: 1000000]
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = Checked(max_instructions))]
    max_instructions: Option<u64>,
    /// Memory in the output: the bytes that changed, or every writable region whole
    /// [default: changed]
    #[arg(long, value_name = "changed|all", allow_hyphen_values = true,
          value_parser = Checked(memory_output))]
    memory_output: Option<MemoryOutput>,
    /// Read one state per line and write one result per line (JSON lines)
    #[arg(long)]
    batch: bool,
}

fn memory_output(text: &str) -> Result<MemoryOutput, String> {
    match text {
        "changed" => Ok(MemoryOutput::Changed),
        "all" => Ok(MemoryOutput::All),
        other => Err(format!(
            "invalid --memory-output '{other}': expected changed or all"
        )),
    }
}

impl ExecCli {
    /// The options, checked: a state file is needed unless in batch mode.
    pub(crate) fn into_args(self) -> Result<ExecArgs, String> {
        if self.input.is_none() && !self.batch {
            return Err("exec: no STATE.json given".into());
        }
        Ok(ExecArgs {
            input: self.input.map(PathBuf::from),
            batch: self.batch,
            options: RunOptions {
                trace: self.trace,
                max_instructions: self.max_instructions.unwrap_or(DEFAULT_MAX),
                memory: self.memory_output.unwrap_or(MemoryOutput::Changed),
            },
        })
    }
}

/// The end of `opsvisor exec --help`: the state and output formats.
pub const FORMAT: &str = r#"The state is one JSON object; numbers are JSON integers or strings ("0x1f", "31"),
byte strings are hex ("4801d8", spaces allowed). Unknown fields are errors.

    mode       16 (real mode), 32 (flat protected mode, paging) or 64 (long mode)
    cpl        0 (default) or 3 (modes 32 and 64): the privilege level the snippet runs
               at. At CPL 3 the segments are user segments (CS 0x23 in mode 32, 0x33 in
               mode 64; SS, DS, ES 0x2b; FS and GS 0x2b in mode 32, null in mode 64), the
               regions are user pages, CR0.AM is set (RFLAGS.AC enables #AC), RFLAGS
               defaults to 0x202 (IF set), IOPL is as given (IN, OUT, CLI, STI need IOPL
               3; the TSS has no I/O bitmap), and INT n other than INT3, INTO and INT 0x80
               raises #GP: what a user-mode process on Linux sees
    regs       mode 64: rax..r15, rip, rflags; mode 32: eax..edi, eip, eflags;
               mode 16: as mode 32, or ax..di, ip, flags. Absent ones are 0 (rflags 0x2)
    code       the snippet as hex, placed at CS base + rip as a read-only region. The run
               ends when the next instruction lies outside it. Without "code", the code
               region is the memory region rip starts in
    memory     a list of {"address", "bytes": hex | "size": n (zero-filled),
               "writable": true|false (default true)}. Regions may not overlap; at most
               4096 of them, in total at most 1 GiB (0x40000000 bytes); mode 16/32 below
               4 GiB, mode 64 below 2^47
    segments   {"cs"|"ds"|"es"|"fs"|"gs"|"ss": {"selector", "base", "limit"}}; the hidden
               part is loaded as given (mode 16: base = selector * 16 unless given)
    cr0, cr4   control registers (mode bits PE, PG, PAE, PSE, LA57, PCIDE are set by the
               mode); defaults CR0 = MP|ET|NE|WP (|AM at CPL 3), CR4 = OSFXSR|OSXMMEXCPT
    efer       modes 32 and 64 (LME and LMA are set by the mode); default NXE in mode 64
    xmm        {"xmm0".."xmm15": 128-bit value} (xmm0..xmm7 outside mode 64)
    mxcsr      MXCSR (default 0x1f80)
    x87        {"fcw", "fsw", "ftw" (the FXSAVE tag byte), "st0".."st7" (80-bit, ST(i) in
               stack order)}; a value given without "ftw" is tagged valid

A state is at most 64 MiB of text with at most 262144 JSON values (so bytes given
inline are at most 32 MiB; give larger regions with "size").

The machine: guest RAM covers the regions' pages (4 KiB granularity: the rest of a
region's page reads as zero), identity-mapped in modes 32 and 64 with read-only
regions mapped read-only, so an access outside every region is a #PF (in mode 16 it ends
the run as "unmapped-access"). The emulator's own GDT, IDT and page tables sit in a page
range no region uses. Exceptions and interrupts are reported where they arise: nothing
is pushed, no handler runs, and memory shows only what the snippet itself wrote.

The run stops when the next instruction is outside the code region ("completed"), at a
HLT ("hlt"; rip after it), at an exception ("exception": vector, name, error_code, cr2
for #PF; the registers are those at the fault, rip at the faulting instruction; for
INT3 and INTO rip after it), at INT n ("interrupt"; rip after it), after
--max-instructions ("instruction-limit"), or at an exit the snippet cannot continue past
("unmapped-access", "io", "rdmsr", "wrmsr", "emulation-failure"). CPUID is answered
from the emulator's CPUID table.

Output (stdout, one JSON object): mode; end {reason, ...}; instructions (retired);
regs; flags (the set flags by name); cpl at CPL 3; segments, cr0/cr4/efer if given;
xmm, mxcsr, x87 fields given or changed; memory: [{address, bytes}], each a run of
bytes that differ from the state's initial contents (with --memory-output all: every
writable region whole). With --trace, "trace" lists every step as it runs: {address,
bytes, instruction (Intel syntax), changed: {register: new value}, end (for the step
that ended the run)}.

Batch mode (--batch): each line of the input is one state; each non-blank line gives
exactly one line of output, in order and flushed at once: the result object (as above,
on one line), or {"line": N, "error": "..."} for a line that is not a valid state. One
process runs them all, so the cost per state is the run's, not a process start's.

Exit status: 0 when the snippet ran (however it ended; in batch mode, when the input
was read to its end, whatever each line gave), 2 for a bad command line or state, with
one error line on stderr naming the field, e.g.
    opsvisor: state.json: regs.rax: expected a number or hex string
"#;

/// Run one state document and write its result to `out` as one JSON object (`pretty`:
/// one field per line; otherwise on one line). `Err` is a bad state (one line, nothing
/// written), `Ok(Err)` a failure to write.
pub fn run_state<W: Write>(
    text: &str,
    options: &RunOptions,
    out: &mut W,
    pretty: bool,
) -> Result<io::Result<()>, String> {
    prepare(text)
        .map(|(spec, code, mut m)| {
            let initial = m.vcpu.fpu().fxsave();
            write_run(&mut m, &spec, code, &initial, options, out, pretty)
        })
        .map_err(|e| crate::one_line(&e))
}

/// The parsed state, its code region and its machine.
fn prepare(text: &str) -> Result<(state::Spec, (u64, u64), machine::Machine), String> {
    let spec = state::parse(text)?;
    let code = match spec.code_region {
        Some(i) => {
            let r = &spec.regions[i];
            (r.address, r.end())
        }
        None => {
            let at = state::code_address(&spec);
            let r = spec
                .regions
                .iter()
                .find(|r| r.address <= at && at < r.end())
                .ok_or_else(|| {
                    format!(
                        "regs.{}: {at:#x} is in no memory region (give \"code\" or a region holding it)",
                        spec.mode.ip_name()
                    )
                })?;
            (r.address, r.end())
        }
    };
    let m = machine::build(&spec)?;
    Ok((spec, code, m))
}

fn write_run<W: Write>(
    m: &mut machine::Machine,
    spec: &state::Spec,
    code: (u64, u64),
    initial: &[u8; 512],
    options: &RunOptions,
    out: &mut W,
    pretty: bool,
) -> io::Result<()> {
    let mut doc = Doc::begin(out, pretty)?;
    doc.field("mode", &serde_json::json!(m.mode.bits()))?;
    let result = if options.trace {
        doc.begin_list("trace")?;
        let mut sink = |record: serde_json::Value| doc.item(&record);
        let result = run::run(m, code, options.max_instructions, Some(&mut sink))?;
        doc.end_list()?;
        result
    } else {
        run::run(m, code, options.max_instructions, None)?
    };
    output::finish(doc, m, spec, initial, result, options.memory)
}

/// A line read with a bound.
enum Line {
    /// The input ended.
    End,
    /// A line (without its newline) in the buffer.
    Text,
    /// A line longer than the bound (skipped to its end).
    TooLong,
}

/// Read one line into `buf`, keeping at most `limit` bytes of it.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, limit: u64) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Text,
            });
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        if !too_long {
            if (buf.len() + part.len()) as u64 > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let ended = done > part.len();
        input.consume(done);
        if ended {
            return Ok(if too_long { Line::TooLong } else { Line::Text });
        }
    }
}

/// Run `opsvisor exec` and return the program's exit status.
pub fn main(args: &ExecArgs) -> ExitCode {
    let stdin_named = args.input.as_ref().is_none_or(|p| p.as_os_str() == "-");
    let result = if args.batch {
        if stdin_named {
            batch(io::stdin().lock(), &args.options)
        } else {
            let path = args.input.as_deref().unwrap_or(std::path::Path::new("-"));
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read states '{}': {e}", path.display()))
                .and_then(|f| batch(io::BufReader::new(f), &args.options))
        }
    } else {
        single(args, stdin_named)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("opsvisor: {}", crate::one_line(&message));
            ExitCode::from(2)
        }
    }
}

/// One state from a file or standard input, its result pretty-printed.
fn single(args: &ExecArgs, stdin_named: bool) -> Result<(), String> {
    let (name, bytes) = if stdin_named {
        let limit = state::MAX_TEXT;
        let bytes = crate::input::read_bounded(io::stdin().lock(), limit, || {
            format!("-: the state holds more than {}", state_bound())
        })
        .map_err(|e| format!("cannot read standard input: {e}"))??;
        (String::from("-"), bytes)
    } else {
        let path = args.input.as_deref().unwrap_or(std::path::Path::new("-"));
        let bytes = crate::input::read_file(path, "state", state::MAX_TEXT, &state_bound())?;
        (path.display().to_string(), bytes)
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("{name}: not UTF-8 text: {e}"))?;
    let mut out = BufWriter::new(io::stdout().lock());
    run_state(text, &args.options, &mut out, true)
        .map_err(|e| format!("{name}: {e}"))?
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the output: {e}"))
}

/// The limit on a state's text, for errors.
fn state_bound() -> String {
    format!(
        "the {} limit for a state",
        crate::input::size_text(state::MAX_TEXT)
    )
}

/// Batch mode: one result line per state line.
fn batch(mut input: impl BufRead, options: &RunOptions) -> Result<(), String> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut buf = Vec::new();
    let mut number = 0u64;
    let write_err = |e: io::Error| format!("cannot write the output: {e}");
    loop {
        let line = read_line(&mut input, &mut buf, state::MAX_TEXT)
            .map_err(|e| format!("cannot read the states: {e}"))?;
        number += 1;
        let problem = match line {
            Line::End => return Ok(()),
            Line::TooLong => Some(format!("the state is more than {}", state_bound())),
            Line::Text if buf.trim_ascii().is_empty() => continue,
            Line::Text => match std::str::from_utf8(&buf) {
                Err(e) => Some(format!("not UTF-8 text: {e}")),
                Ok(text) => match run_state(text, options, &mut out, false) {
                    Ok(written) => {
                        written.map_err(write_err)?;
                        None
                    }
                    Err(e) => Some(e),
                },
            },
        };
        if let Some(error) = problem {
            let line = serde_json::json!({"line": number, "error": error});
            writeln!(out, "{line}").map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
    }
}
