//! Running the snippet one instruction at a time and recognising how it ended.
//!
//! Each step is one `run` with a one-instruction budget (and the interrupt shadow set, see
//! `run`). Stepping costs some speed but gives what a tool wants: the end of the code
//! region is seen at the first instruction outside it, each step can be traced (each
//! record handed on as soon as it is made, so a trace costs no memory), and an exception
//! is reported with the state the CPU had when it raised it: the vCPU runs with event
//! exits, so nothing is pushed and memory shows only what the snippet wrote.

use super::machine::Machine;
use super::state::{Mode, SEGMENT_NAMES};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, Mnemonic};
use opsvisor_core::cpuid::{CpuidDynamic, CpuidPolicy};
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::ops::{Gpr, RunLimit, SegReg, Segment, X86Ops};
use serde_json::{json, Map, Value};

/// `{:#x}` as a JSON string.
pub fn hex(v: impl std::fmt::LowerHex) -> Value {
    Value::String(format!("{v:#x}"))
}

/// The architectural state compared between steps.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    gpr: [u64; 16],
    rip: u64,
    rflags: u64,
    pub(super) segs: [Segment; 6],
    cr: [u64; 5],
    fx: [u8; 512],
}

pub(super) fn snapshot(v: &opsvisor_emu::EmuVcpu) -> Snapshot {
    let regs = v.regs();
    Snapshot {
        gpr: regs.gpr,
        rip: regs.rip,
        rflags: regs.rflags,
        segs: [
            SegReg::Es,
            SegReg::Cs,
            SegReg::Ss,
            SegReg::Ds,
            SegReg::Fs,
            SegReg::Gs,
        ]
        .map(|s| v.segment(s)),
        cr: [v.cr0(), v.cr2(), v.cr3(), v.cr4(), v.efer()],
        fx: v.fpu().fxsave(),
    }
}

const CR_NAMES: [&str; 5] = ["cr0", "cr2", "cr3", "cr4", "efer"];

/// Fields of the FXSAVE image the output reports: (name, offset, length).
pub(super) fn fpu_fields(mode: Mode) -> Vec<(String, usize, usize)> {
    let mut v = vec![
        ("mxcsr".to_string(), 24, 4),
        ("fcw".to_string(), 0, 2),
        ("fsw".to_string(), 2, 2),
        ("ftw".to_string(), 4, 1),
    ];
    for i in 0..8 {
        v.push((format!("st{i}"), 32 + 16 * i, 10));
    }
    for i in 0..mode.reg_count() {
        v.push((format!("xmm{i}"), 160 + 16 * i, 16));
    }
    v
}

pub(super) fn le(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..bytes.len()].copy_from_slice(bytes);
    u128::from_le_bytes(b)
}

/// Whether the CPU currently runs 64-bit code.
fn in_64bit(v: &opsvisor_emu::EmuVcpu) -> bool {
    v.efer() & (1 << 10) != 0 && v.segment(SegReg::Cs).attr & Segment::L != 0
}

/// The linear address of the next instruction.
fn linear_ip(v: &opsvisor_emu::EmuVcpu) -> u64 {
    if in_64bit(v) {
        v.rip()
    } else {
        v.segment(SegReg::Cs).base.wrapping_add(v.rip()) & 0xffff_ffff
    }
}

fn code_bitness(v: &opsvisor_emu::EmuVcpu) -> u32 {
    let cs = v.segment(SegReg::Cs);
    if in_64bit(v) {
        64
    } else if v.cr0() & 1 != 0 && cs.attr & Segment::DB != 0 {
        32
    } else {
        16
    }
}

/// The outcome of a run.
pub struct Run {
    /// How it ended (`{"reason": ...}` and details).
    pub end: Map<String, Value>,
    /// Instructions retired.
    pub executed: u64,
}

/// Bytes at linear `addr` (identity-mapped outside the system area), up to `len`.
fn read_linear(m: &Machine, addr: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..len as u64 {
        match m.mem.read_u8(m.phys(addr.wrapping_add(i))) {
            Ok(b) => out.push(b),
            Err(_) => break,
        }
    }
    out
}

impl Machine {
    /// The guest-physical address behind linear `addr` in the mapping `build` made.
    pub fn phys(&self, addr: u64) -> u64 {
        let (sys, size) = self.system;
        if self.mode == Mode::Long && addr >= super::machine::KBASE {
            let off = addr - super::machine::KBASE;
            if off < size {
                return sys + off;
            }
        }
        addr
    }
}

/// The vector an instruction raises as a software interrupt or trap (INT n, INT3,
/// INTO, INT1), if it is one: for those the event is reported after the instruction.
fn software_vector(i: &iced_x86::Instruction) -> Option<u8> {
    match i.mnemonic() {
        Mnemonic::Int => Some(i.immediate8()),
        Mnemonic::Int3 => Some(3),
        Mnemonic::Into => Some(4),
        Mnemonic::Int1 => Some(1),
        _ => None,
    }
}

/// Run until the end of the code region, HLT, an exception, another exit, or `max`
/// instructions. With `trace`, each step's record goes to it as soon as the step is
/// done; an error from it (the output closed) ends the run.
pub fn run(
    m: &mut Machine,
    code: (u64, u64),
    max: u64,
    mut trace: Option<&mut dyn FnMut(Value) -> std::io::Result<()>>,
) -> std::io::Result<Run> {
    let policy = CpuidPolicy::emulator();
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1,
    };
    let mut executed = 0u64;
    let fields = fpu_fields(m.mode);
    let end = loop {
        if executed >= max {
            break json!({"reason": "instruction-limit"});
        }
        let before = trace.is_some().then(|| snapshot(&m.vcpu));
        let at = linear_ip(&m.vcpu);
        let bits = code_bitness(&m.vcpu);
        let text = read_linear(m, at, 15);
        let instr = {
            let mut d = Decoder::with_ip(bits, &text, at, DecoderOptions::NONE);
            d.decode()
        };
        let retired = m.vcpu.instructions_retired().unwrap_or(0);
        // The interrupt shadow makes the emulator leave its block loop after one
        // instruction (it runs whole blocks otherwise); nothing here raises interrupts,
        // so the shadow changes nothing else.
        m.vcpu.set_interrupt_shadow(true);
        let exit = m.vcpu.run(&mut m.mem, &limit);
        let mut record = Map::new();
        if trace.is_some() {
            let mut s = String::new();
            if instr.is_invalid() {
                s.push_str("(bad)");
            } else {
                IntelFormatter::new().format(&instr, &mut s);
            }
            let len = instr.len().min(text.len());
            record.insert("address".into(), hex(at));
            record.insert(
                "bytes".into(),
                Value::String(text[..len].iter().map(|b| format!("{b:02x}")).collect()),
            );
            record.insert("instruction".into(), Value::String(s));
        }
        // A software interrupt or trap instruction completes before its event.
        let mut completed = 0;
        let stop = match exit {
            Exit::Exception { vector, error_code } => {
                let software = error_code.is_none() && software_vector(&instr) == Some(vector);
                if software {
                    let ip_mask = match bits {
                        16 => 0xffff,
                        32 => 0xffff_ffff,
                        _ => u64::MAX,
                    };
                    let next = m.vcpu.rip().wrapping_add(instr.len() as u64) & ip_mask;
                    m.vcpu.set_rip(next);
                    completed = 1;
                }
                Some(event_end(m, vector, error_code, software))
            }
            Exit::Preempted => None,
            Exit::Hlt => {
                m.vcpu.skip_emulated_instruction();
                Some(json!({"reason": "hlt"}))
            }
            Exit::Cpuid => {
                let (leaf, sub) = (m.vcpu.gpr(Gpr::Rax) as u32, m.vcpu.gpr(Gpr::Rcx) as u32);
                let osxsave = m.vcpu.cr4() & (1 << 18) != 0;
                let r = policy.lookup(
                    leaf,
                    sub,
                    &CpuidDynamic {
                        apic_id: 0,
                        osxsave,
                        apic_enabled: true,
                        pke: m.vcpu.cr4() & (1 << 22) != 0,
                    },
                );
                for (reg, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].into_iter().zip(r) {
                    m.vcpu.set_gpr(reg, u64::from(v));
                }
                m.vcpu.skip_emulated_instruction();
                None
            }
            Exit::Mmio {
                gpa,
                size,
                direction,
                data,
            } => {
                let mut e = json!({"reason": "unmapped-access", "address": hex(gpa), "size": size,
                    "access": access(direction)});
                if direction == Direction::Write {
                    e["data"] = hex(data);
                }
                Some(e)
            }
            Exit::Io {
                port,
                size,
                direction,
                data,
            } => {
                let mut e = json!({"reason": "io", "port": hex(port), "size": size,
                    "access": access(direction)});
                if direction == Direction::Write {
                    e["data"] = hex(data);
                }
                Some(e)
            }
            Exit::Rdmsr { index } => Some(json!({"reason": "rdmsr", "msr": hex(index)})),
            Exit::Wrmsr { index, value } => {
                Some(json!({"reason": "wrmsr", "msr": hex(index), "value": hex(value)}))
            }
            Exit::EmulationFailure { rip } => {
                Some(json!({"reason": "emulation-failure", "rip": hex(rip)}))
            }
            other => Some(json!({"reason": other.kind().name()})),
        };
        let now = m.vcpu.instructions_retired().unwrap_or(0);
        executed += now.saturating_sub(retired).max(u64::from(stop.is_none())) + completed;
        if let (Some(sink), Some(before)) = (trace.as_mut(), before) {
            let after = snapshot(&m.vcpu);
            record.insert(
                "changed".into(),
                Value::Object(changes(m.mode, &before, &after, &fields)),
            );
            if let Some(e) = &stop {
                record.insert("end".into(), e.clone());
            }
            sink(Value::Object(record))?;
        }
        if let Some(e) = stop {
            break e;
        }
        let next = linear_ip(&m.vcpu);
        if next < code.0 || next >= code.1 {
            break json!({"reason": "completed"});
        }
    };
    let end = match end {
        Value::Object(map) => map,
        other => Map::from_iter([("reason".to_string(), other)]),
    };
    Ok(Run { end, executed })
}

fn access(d: Direction) -> &'static str {
    match d {
        Direction::Read => "read",
        Direction::Write => "write",
    }
}

/// Names of exception vectors.
fn vector_name(v: u8) -> Option<&'static str> {
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS", "#NP", "#SS",
        "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    NAMES.get(usize::from(v)).copied().filter(|n| !n.is_empty())
}

/// How a run that an exception or software interrupt ended is described.
fn event_end(m: &Machine, vector: u8, error_code: Option<u32>, software: bool) -> Value {
    let mut e = Map::new();
    // INT3, INTO and INT 3/4 raise the exceptions #BP and #OF; INT n is an interrupt.
    let kind = if software && vector != 1 && vector != 3 && vector != 4 {
        "interrupt"
    } else {
        "exception"
    };
    e.insert("reason".into(), json!(kind));
    e.insert("vector".into(), json!(vector));
    if let Some(name) = vector_name(vector).filter(|_| kind == "exception") {
        e.insert("name".into(), json!(name));
    }
    if let Some(ec) = error_code {
        e.insert("error_code".into(), hex(ec));
    }
    if vector == 14 && kind == "exception" {
        e.insert("cr2".into(), hex(m.vcpu.cr2()));
    }
    Value::Object(e)
}

/// Registers that differ between two snapshots, by name.
fn changes(
    mode: Mode,
    a: &Snapshot,
    b: &Snapshot,
    fields: &[(String, usize, usize)],
) -> Map<String, Value> {
    let mut out = Map::new();
    let names = mode.gpr_names();
    for (i, name) in names.iter().enumerate().take(mode.reg_count()) {
        if a.gpr[i] != b.gpr[i] {
            out.insert((*name).into(), hex(b.gpr[i]));
        }
    }
    if a.rflags != b.rflags {
        out.insert(mode.flags_name().into(), hex(b.rflags));
    }
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        let (x, y) = (a.segs[i], b.segs[i]);
        if x.selector != y.selector || x.base != y.base {
            out.insert(
                (*name).into(),
                json!({"selector": hex(y.selector), "base": hex(y.base)}),
            );
        }
    }
    for (i, name) in CR_NAMES.iter().enumerate() {
        if a.cr[i] != b.cr[i] {
            out.insert((*name).into(), hex(b.cr[i]));
        }
    }
    for (name, at, len) in fields {
        let (x, y) = (&a.fx[*at..at + len], &b.fx[*at..at + len]);
        if x != y {
            out.insert(name.clone(), hex(le(y)));
        }
    }
    out
}
