//! `opsvisor exec`: run a code snippet on the emulator from a state given as JSON and
//! print the final state as JSON (the emulator as a tool, like Unicorn-based tools).
//! [`USAGE`] documents the format.

mod machine;
mod run;
mod state;

use serde_json::Value;

/// `opsvisor exec` options.
#[derive(Debug)]
pub struct ExecArgs {
    /// The state file ("-" for standard input).
    pub state: String,
    /// Add a per-instruction trace to the output.
    pub trace: bool,
    /// Stop after this many instructions.
    pub max_instructions: u64,
}

/// Instructions run when `--max-instructions` is not given.
const DEFAULT_MAX: u64 = 1_000_000;

/// `opsvisor exec --help`.
pub const USAGE: &str = r#"opsvisor exec: run a code snippet on the emulator from a JSON state

USAGE:
    opsvisor exec [--trace] [--max-instructions N] STATE.json   (- reads standard input)

The state is one JSON object; numbers are JSON integers or strings ("0x1f", "31"),
byte strings are hex ("4801d8", spaces allowed). Unknown fields are errors.

    mode       16 (real mode), 32 (flat protected mode, paging) or 64 (long mode)
    regs       mode 64: rax..r15, rip, rflags; mode 32: eax..edi, eip, eflags;
               mode 16: as mode 32, or ax..di, ip, flags. Absent ones are 0 (rflags 0x2)
    code       the snippet as hex, placed at CS base + rip as a read-only region. The run
               ends when the next instruction lies outside it. Without "code", the code
               region is the memory region rip starts in
    memory     a list of {"address", "bytes": hex | "size": n (zero-filled),
               "writable": true|false (default true)}. Regions may not overlap; in total
               at most 1 GiB; mode 16/32 below 4 GiB, mode 64 below 2^47
    segments   {"cs"|"ds"|"es"|"fs"|"gs"|"ss": {"selector", "base", "limit"}}; the hidden
               part is loaded as given (mode 16: base = selector * 16 unless given)
    cr0, cr4   control registers (mode bits PE, PG, PAE, PSE, LA57, PCIDE are set by the
               mode); defaults CR0 = MP|ET|NE|WP, CR4 = OSFXSR|OSXMMEXCPT
    efer       modes 32 and 64 (LME and LMA are set by the mode); default NXE in mode 64
    xmm        {"xmm0".."xmm15": 128-bit value} (xmm0..xmm7 outside mode 64)
    mxcsr      MXCSR (default 0x1f80)
    x87        {"fcw", "fsw", "ftw" (the FXSAVE tag byte), "st0".."st7" (80-bit, ST(i) in
               stack order)}; a value given without "ftw" is tagged valid

The machine: guest RAM covers the regions' pages (4 KiB granularity: the rest of a
region's page reads as zero), identity-mapped in modes 32 and 64 with read-only
regions mapped read-only, so an access outside every region is a #PF (in mode 16 it ends
the run as "unmapped-access"). The snippet runs at CPL 0. The emulator's own GDT
(code 0x08, data 0x10, TSS 0x18), IDT and handlers sit in a page range no region uses.

The run stops when the next instruction is outside the code region ("completed"), at a
HLT ("hlt"; rip after it), at an exception ("exception": vector, name, error_code, cr2
for #PF; the registers are those at the fault, and in modes 16/32 the stack bytes the
CPU's frame push overwrote are restored), at INT n ("interrupt"), after
--max-instructions ("instruction-limit", default 1000000), or at an exit the snippet
cannot continue past ("unmapped-access", "io", "rdmsr", "wrmsr", "triple-fault",
"emulation-failure"). CPUID is answered from the emulator's CPUID table.

Output (stdout, one JSON object): mode; end {reason, ...}; instructions (retired);
regs; flags (the set flags by name); segments, cr0/cr4/efer if given; xmm, mxcsr, x87
fields given or changed; memory: [{address, bytes}] of every writable region. With
--trace, "trace" lists every step: {address, bytes, instruction (Intel syntax),
changed: {register: new value}, end (for the step that ended the run)}.

Exit status: 0 when the snippet ran (however it ended), 2 for a bad command line or
state, with one error line on stderr naming the field, e.g.
    opsvisor: state.json: regs.rax: expected a number or hex string
"#;

/// Parse the arguments after `exec`.
pub fn parse_args(argv: &[String]) -> Result<ExecArgs, String> {
    let mut state = None;
    let mut trace = false;
    let mut max = DEFAULT_MAX;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        match name {
            "--trace" => trace = true,
            "--max-instructions" => {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or("option --max-instructions needs a value")?,
                };
                max = crate::args::parse_u64(&v, "--max-instructions")?;
                if max == 0 {
                    return Err("--max-instructions must be at least 1".into());
                }
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option '{flag}' for exec"))
            }
            path => {
                if state.replace(path.to_string()).is_some() {
                    return Err(format!(
                        "more than one state file given ('{path}' is extra)"
                    ));
                }
            }
        }
    }
    Ok(ExecArgs {
        state: state.ok_or("exec: no STATE.json given")?,
        trace,
        max_instructions: max,
    })
}

/// Run `opsvisor exec`; `Err` is the one error line (without the program name).
pub fn exec(args: &ExecArgs) -> Result<String, String> {
    let text = if args.state == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(&args.state)
            .map_err(|e| format!("cannot read state '{}': {e}", args.state))?
    };
    let name = &args.state;
    let spec = state::parse(&text).map_err(|e| format!("{name}: {e}"))?;
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
                        "{name}: regs.{}: {at:#x} is in no memory region (give \"code\" or a region holding it)",
                        spec.mode.ip_name()
                    )
                })?;
            (r.address, r.end())
        }
    };
    let mut m = machine::build(&spec).map_err(|e| format!("{name}: {e}"))?;
    let initial = m.vcpu.fpu().fxsave();
    let result = run::run(&mut m, code, args.max_instructions, args.trace);
    let doc: Value = run::output(&m, &spec, &initial, result, args.trace);
    serde_json::to_string_pretty(&doc).map_err(|e| format!("cannot format the output: {e}"))
}
