//! Running the snippet one instruction at a time, recognising how it ended, and the
//! JSON output.
//!
//! Each step is one `run` with a one-instruction budget (and the interrupt shadow set, see
//! `run`). Stepping costs some speed but
//! gives what a tool wants: the end of the code region is seen at the first instruction
//! outside it, each step can be traced, and an exception is reported with the state the
//! CPU had when it raised it (the bytes a mode-16/32 frame push overwrote on the
//! snippet's stack are put back, so memory shows only what the snippet wrote).

use super::machine::Machine;
use super::state::{Mode, Spec, SEGMENT_NAMES};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, Mnemonic};
use opsvisor_core::cpuid::{CpuidDynamic, CpuidPolicy};
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::ops::{Gpr, RunLimit, SegReg, Segment, X86Ops};
use serde_json::{json, Map, Value};

/// Bytes below the stack pointer saved before each step in modes 16 and 32 (a frame is
/// at most 16 bytes, and a trapping instruction may itself have pushed up to 8).
const STACK_SAVE: u64 = 32;

/// `{:#x}` as a JSON string.
pub fn hex(v: impl std::fmt::LowerHex) -> Value {
    Value::String(format!("{v:#x}"))
}

/// The architectural state compared between steps.
#[derive(Clone, PartialEq, Eq)]
struct Snapshot {
    gpr: [u64; 16],
    rip: u64,
    rflags: u64,
    segs: [Segment; 6],
    cr: [u64; 5],
    fx: [u8; 512],
}

fn snapshot(v: &opsvisor_emu::EmuVcpu) -> Snapshot {
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
fn fpu_fields(mode: Mode) -> Vec<(String, usize, usize)> {
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

fn le(bytes: &[u8]) -> u128 {
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
    /// One record per step, with `--trace`.
    pub trace: Vec<Value>,
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

/// Run until the end of the code region, HLT, an exception, another exit, or `max`
/// instructions.
pub fn run(m: &mut Machine, code: (u64, u64), max: u64, tracing: bool) -> Run {
    let policy = CpuidPolicy::emulator();
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1,
    };
    let mut trace = Vec::new();
    let mut executed = 0u64;
    let fields = fpu_fields(m.mode);
    let end = loop {
        if executed >= max {
            break json!({"reason": "instruction-limit"});
        }
        let before = snapshot(&m.vcpu);
        let at = linear_ip(&m.vcpu);
        let bits = code_bitness(&m.vcpu);
        let text = read_linear(m, at, 15);
        let instr = {
            let mut d = Decoder::with_ip(bits, &text, at, DecoderOptions::NONE);
            d.decode()
        };
        let saved = save_stack(m);
        let cpl = m.vcpu.cpl();
        let retired = m.vcpu.instructions_retired().unwrap_or(0);
        // The interrupt shadow makes the emulator leave its block loop after one
        // instruction (it runs whole blocks otherwise); nothing here raises interrupts,
        // so the shadow changes nothing else.
        m.vcpu.set_interrupt_shadow(true);
        let exit = m.vcpu.run(&mut m.mem, &limit);
        let mut record = Map::new();
        if tracing {
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
        let here = linear_ip(&m.vcpu);
        let handler = here.wrapping_sub(m.handlers);
        let stop = match exit {
            Exit::Preempted | Exit::Hlt if handler < 256 => {
                let vector = handler as u8;
                let software = matches!(instr.mnemonic(), Mnemonic::Int | Mnemonic::Into)
                    && instr.code() != iced_x86::Code::Int3;
                Some(deliver_end(m, &before, cpl, vector, software, &saved))
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
                    },
                );
                for (reg, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].into_iter().zip(r) {
                    m.vcpu.set_gpr(reg, u64::from(v));
                }
                m.vcpu.skip_emulated_instruction();
                None
            }
            Exit::TripleFault if m.mode != Mode::Long => Some(json!({"reason": "triple-fault",
                "note": "in modes 16 and 32 the CPU pushes an exception frame at SS:ESP, which must be writable memory"})),
            Exit::TripleFault => Some(json!({"reason": "triple-fault"})),
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
        executed += now.saturating_sub(retired).max(u64::from(stop.is_none()));
        if tracing {
            let after = snapshot(&m.vcpu);
            record.insert(
                "changed".into(),
                Value::Object(changes(m.mode, &before, &after, &fields)),
            );
            if let Some(e) = &stop {
                if e["reason"] != "completed" {
                    record.insert("end".into(), e.clone());
                }
            }
            trace.push(Value::Object(record));
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
    Run {
        end,
        executed,
        trace,
    }
}

fn access(d: Direction) -> &'static str {
    match d {
        Direction::Read => "read",
        Direction::Write => "write",
    }
}

/// The stack bytes a same-privilege frame push may overwrite (modes 16 and 32).
fn save_stack(m: &Machine) -> Vec<(u64, u8)> {
    if m.mode == Mode::Long || m.vcpu.cpl() != 0 {
        return Vec::new();
    }
    let ss = m.vcpu.segment(SegReg::Ss);
    let sp = m.vcpu.gpr(Gpr::Rsp);
    let mask: u64 = if ss.attr & Segment::DB != 0 && m.vcpu.cr0() & 1 != 0 {
        0xffff_ffff
    } else {
        0xffff
    };
    (1..=STACK_SAVE)
        .filter_map(|k| {
            let linear = ss.base.wrapping_add(sp.wrapping_sub(k) & mask) & 0xffff_ffff;
            m.mem.read_u8(linear).ok().map(|b| (linear, b))
        })
        .collect()
}

/// Names of exception vectors.
fn vector_name(v: u8) -> Option<&'static str> {
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS", "#NP", "#SS",
        "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    NAMES.get(usize::from(v)).copied().filter(|n| !n.is_empty())
}

fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The vCPU halted (or is about to) in the handler of `vector`: read the frame, put the
/// interrupted state back, and describe the event.
fn deliver_end(
    m: &mut Machine,
    before: &Snapshot,
    cpl: u8,
    vector: u8,
    software: bool,
    saved: &[(u64, u8)],
) -> Value {
    let ec_pushed = !software && has_error_code(vector);
    let sp = m.vcpu.gpr(Gpr::Rsp);
    // (word size, frame base (linear), words, whether the frame holds SS:RSP)
    let (word, words, with_stack) = match m.mode {
        _ if in_64bit_frame(m) => (8u64, 5 + u64::from(ec_pushed), true),
        Mode::Real => (2, 3, false),
        _ if cpl != 0 => (4, 5 + u64::from(ec_pushed), true),
        _ => (4, 3 + u64::from(ec_pushed), false),
    };
    let ss_base = m.vcpu.segment(SegReg::Ss).base;
    let frame_at = if m.mode == Mode::Long {
        sp
    } else {
        ss_base.wrapping_add(sp) & 0xffff_ffff
    };
    let mut frame = Vec::new();
    for i in 0..words {
        // Wrapping: a snippet can also jump to a handler itself, with any RSP.
        let bytes = read_linear(m, frame_at.wrapping_add(i * word), word as usize);
        frame.push(if bytes.len() == word as usize {
            le(&bytes) as u64
        } else {
            0
        });
    }
    let (ec, rest) = if ec_pushed {
        (frame.first().copied(), frame.get(1..).unwrap_or(&[]))
    } else {
        (None, &frame[..])
    };
    let get = |i: usize| rest.get(i).copied().unwrap_or(0);
    let rip = get(0);
    let rflags = get(2);
    let new_sp = if with_stack {
        get(3)
    } else {
        let size = words * word;
        let mask = if word == 2 { 0xffff } else { 0xffff_ffff };
        (sp & !mask) | (sp.wrapping_add(size) & mask)
    };
    for &(at, b) in saved {
        let _ = m.mem.write_u8(at, b);
    }
    m.vcpu.set_segment(SegReg::Cs, &before.segs[1]);
    m.vcpu.set_segment(SegReg::Ss, &before.segs[2]);
    m.vcpu.set_rip(rip);
    m.vcpu.set_gpr(Gpr::Rsp, new_sp);
    let rflags = if word == 2 {
        (before.rflags & !0xffff) | rflags
    } else {
        rflags
    };
    m.vcpu.set_rflags(rflags);
    let mut e = Map::new();
    let kind = if software && vector != 3 && vector != 4 {
        "interrupt"
    } else {
        "exception"
    };
    e.insert("reason".into(), json!(kind));
    e.insert("vector".into(), json!(vector));
    if let Some(name) = vector_name(vector).filter(|_| kind == "exception") {
        e.insert("name".into(), json!(name));
    }
    if let Some(ec) = ec {
        e.insert("error_code".into(), hex(ec as u32));
    }
    if vector == 14 && kind == "exception" {
        e.insert("cr2".into(), hex(m.vcpu.cr2()));
    }
    Value::Object(e)
}

fn in_64bit_frame(m: &Machine) -> bool {
    m.mode == Mode::Long
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

/// The output document.
pub fn output(m: &Machine, spec: &Spec, initial: &[u8; 512], run: Run, tracing: bool) -> Value {
    let mode = m.mode;
    let v = &m.vcpu;
    let mut doc = Map::new();
    doc.insert("mode".into(), json!(mode.bits()));
    doc.insert("end".into(), Value::Object(run.end));
    doc.insert("instructions".into(), json!(run.executed));
    let width_mask = if mode == Mode::Long {
        u64::MAX
    } else {
        0xffff_ffff
    };
    let mut regs = Map::new();
    for (i, name) in mode.gpr_names().iter().take(mode.reg_count()).enumerate() {
        let reg = Gpr::ALL[i];
        regs.insert((*name).into(), hex(v.gpr(reg) & width_mask));
    }
    regs.insert(mode.ip_name().into(), hex(v.rip() & width_mask));
    regs.insert(mode.flags_name().into(), hex(v.rflags() & width_mask));
    doc.insert("regs".into(), Value::Object(regs));
    let flags = [
        (0, "CF"),
        (2, "PF"),
        (4, "AF"),
        (6, "ZF"),
        (7, "SF"),
        (8, "TF"),
        (9, "IF"),
        (10, "DF"),
        (11, "OF"),
        (18, "AC"),
    ];
    let set: Vec<Value> = flags
        .iter()
        .filter(|(bit, _)| v.rflags() >> bit & 1 != 0)
        .map(|(_, n)| json!(n))
        .collect();
    doc.insert("flags".into(), Value::Array(set));
    let segs = snapshot(v).segs;
    let mut seg_out = Map::new();
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        if spec.segments[i].is_some() {
            let s = segs[i];
            seg_out.insert(
                (*name).into(),
                json!({"selector": hex(s.selector), "base": hex(s.base), "limit": hex(s.limit)}),
            );
        }
    }
    if !seg_out.is_empty() {
        doc.insert("segments".into(), Value::Object(seg_out));
    }
    for (name, given) in [("cr0", spec.cr0), ("cr4", spec.cr4), ("efer", spec.efer)] {
        if given.is_some() {
            let value = match name {
                "cr0" => v.cr0(),
                "cr4" => v.cr4(),
                _ => v.efer(),
            };
            doc.insert(name.into(), hex(value));
        }
    }
    // FPU/SSE: the fields given in the state or changed by the run.
    let fx = v.fpu().fxsave();
    let mut xmm = Map::new();
    let mut x87 = Map::new();
    for (name, at, len) in fpu_fields(mode) {
        let (was, now) = (&initial[at..at + len], &fx[at..at + len]);
        let given = match name.as_str() {
            "mxcsr" => spec.mxcsr.is_some(),
            "fcw" => spec.x87.fcw.is_some(),
            "fsw" => spec.x87.fsw.is_some(),
            "ftw" => spec.x87.ftw.is_some() || spec.x87.st.iter().any(Option::is_some),
            n if n.starts_with("st") => spec.x87.st[n[2..].parse::<usize>().unwrap_or(0)].is_some(),
            n => spec.xmm[n[3..].parse::<usize>().unwrap_or(0)].is_some(),
        };
        if !given && was == now {
            continue;
        }
        let value = hex(le(now));
        match name.as_str() {
            "mxcsr" => {
                doc.insert(name, value);
            }
            n if n.starts_with("xmm") => {
                xmm.insert(name, value);
            }
            _ => {
                x87.insert(name, value);
            }
        }
    }
    if !xmm.is_empty() {
        doc.insert("xmm".into(), Value::Object(xmm));
    }
    if !x87.is_empty() {
        doc.insert("x87".into(), Value::Object(x87));
    }
    let memory: Vec<Value> = spec
        .regions
        .iter()
        .filter(|r| r.writable)
        .map(|r| {
            let bytes = m
                .mem
                .slice(r.address, r.bytes.len() as u64)
                .map(|s| s.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .unwrap_or_default();
            json!({"address": hex(r.address), "bytes": bytes})
        })
        .collect();
    doc.insert("memory".into(), Value::Array(memory));
    if tracing {
        doc.insert("trace".into(), Value::Array(run.trace));
    }
    Value::Object(doc)
}
