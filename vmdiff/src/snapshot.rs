//! The final state of a case and the comparison of two of them.
//!
//! Compared: how the run ended, RAX..R15, RIP, RFLAGS, the eight segment registers with
//! their hidden parts, CR0, CR2, CR3, CR4, EFER, GDTR, IDTR, the backend-held MSRs of
//! [`crate::layout::MSRS`], the x87/MMX/SSE state, and every byte of guest RAM
//! (descriptor tables, page tables, data, stack — whatever the case wrote).
//!
//! Of the x87/MMX/SSE state, FCW, FSW, the abridged tag word, MXCSR, ST0-7 (their ten
//! significant bytes; MM0-7 are their low eight) and XMM0-15 are compared. FOP, FIP/FCS
//! and FDP/FDS are not (the emulator does not track them as silicon does: which
//! instructions update them, and how, varies between processors), nor MXCSR_MASK (a
//! property of the processor, not state). FSW's C0/C2/C3 are left out when an
//! instruction of the case may leave them undefined (see [`crate::flags::undefined_fsw`]).

use crate::layout::{self, MSRS};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use opsvisor_core::fpu::FxsaveArea;
use opsvisor_core::ops::{DescriptorTable, Gpr, Regs, SegReg, Segment, X86Ops};
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::GuestMemory;

/// How a case's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Halted with nothing to wake it: at the HLT after the code, or in a handler.
    Halted,
    /// The case wrote to the debug-exit port.
    DebugExit(i32),
    /// The case powered the machine off (ACPI S5).
    PowerOff,
    /// The case reset the machine.
    Reset,
    /// Triple fault (shutdown).
    TripleFault,
    /// The instruction or time limit ran out.
    Unfinished,
    /// The run loop stopped with this failure (an exit a backend could not handle).
    Failed(String),
}

impl Ending {
    fn from_outcome(outcome: RunOutcome) -> Ending {
        match outcome {
            RunOutcome::HaltedForever => Ending::Halted,
            RunOutcome::DebugExit { status } => Ending::DebugExit(status),
            RunOutcome::TripleFault { .. } => Ending::TripleFault,
            RunOutcome::PowerOff => Ending::PowerOff,
            RunOutcome::Reset => Ending::Reset,
            RunOutcome::InstructionLimit | RunOutcome::Timeout | RunOutcome::Quit => {
                Ending::Unfinished
            }
            RunOutcome::Failed(why) => Ending::Failed(why),
        }
    }
}

/// The architectural state at the end of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// How the run ended.
    pub ending: Ending,
    /// General registers, RIP, RFLAGS.
    pub regs: Regs,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR.
    pub segments: [Segment; 8],
    /// CR0, CR2, CR3, CR4, EFER.
    pub control: [u64; 5],
    /// GDTR and IDTR.
    pub tables: [DescriptorTable; 2],
    /// The values of [`MSRS`] (`None`: the backend does not hold it).
    pub msrs: [Option<u64>; MSRS.len()],
    /// The x87/MMX/SSE state (`None`: the backend does not hold it).
    pub fpu: Option<FxsaveArea>,
}

/// CR0.PE.
const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
/// The code/data bit of a segment's type.
const CODE_BIT: u32 = 1 << 3;

/// Names of [`Snapshot::control`].
const CONTROL_NAMES: [&str; 5] = ["cr0", "cr2", "cr3", "cr4", "efer"];
/// Names of the general registers.
const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
/// Names of the segment registers.
const SEGMENT_NAMES: [&str; 8] = ["es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr"];

impl Snapshot {
    /// Read the state of `vcpu` after a run that ended with `outcome`.
    pub fn capture<B: X86Ops>(vcpu: &B, outcome: RunOutcome) -> Snapshot {
        let mut segments = [Segment::default(); 8];
        for seg in SegReg::ALL {
            segments[seg as usize] = vcpu.segment(seg);
        }
        let mut msrs = [None; MSRS.len()];
        for (slot, (index, _, _)) in msrs.iter_mut().zip(MSRS) {
            *slot = vcpu.get_msr(index);
        }
        Snapshot {
            ending: Ending::from_outcome(outcome),
            regs: vcpu.regs(),
            segments,
            control: [vcpu.cr0(), vcpu.cr2(), vcpu.cr3(), vcpu.cr4(), vcpu.efer()],
            tables: [vcpu.gdt(), vcpu.idt()],
            msrs,
            fpu: vcpu.fpu_state(),
        }
    }

    /// The exception vector whose handler the case ended in, if it ended in one.
    pub fn vector(&self) -> Option<u8> {
        if self.ending != Ending::Halted {
            return None;
        }
        // The handlers are code-segment offsets in real mode, linear addresses elsewhere.
        let cs_base = self.segments[SegReg::Cs as usize].base;
        layout::handler_vector(cs_base.wrapping_add(self.regs.rip))
    }
}

/// One field that differs between the two runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// What differs ("rax", "ds.base", "memory 0x30812", "ending", ...).
    pub what: String,
    /// The first run's value.
    pub left: String,
    /// The second run's value.
    pub right: String,
}

/// At most this many differing memory bytes are listed (the count says how many).
pub const MAX_MEMORY_LINES: usize = 8;

/// A segment as compared: an unusable segment's other hidden fields are undefined (SDM
/// 3C 25.4.1), so only the selector and the unusable bit count then.
fn comparable(s: Segment) -> Segment {
    if s.attr & Segment::UNUSABLE != 0 {
        Segment {
            selector: s.selector,
            base: 0,
            limit: 0,
            attr: Segment::UNUSABLE,
        }
    } else {
        s
    }
}

/// Deviations from the architecture a reference processor is known for, which the
/// comparison tolerates when told to; each names where it was found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tolerances {
    /// RF in the RFLAGS image of the exception frame a case ended with: QEMU 7.2's TCG
    /// delivers a fault without setting it (SDM 3A 17.3.1.1; Bochs and silicon set it),
    /// so under QEMU every case that ends in a fault would differ by that bit alone.
    pub frame_rf: bool,
}

/// The guest-physical address of the byte holding RF (bit 0 of it) in the RFLAGS image
/// of the frame of the fault the case in `s` ended with; `None` if it ended otherwise,
/// in a trap or an interrupt, or in real mode (whose FLAGS image has no RF). The layout
/// maps its stacks 1:1.
fn frame_rf_byte(s: &Snapshot) -> Option<u64> {
    let vector = s.vector()?;
    if !opsvisor_core::arch::exception_is_fault(vector) {
        return None;
    }
    let long = s.control[4] & EFER_LMA != 0;
    let width = if long {
        8
    } else if s.control[0] & CR0_PE != 0 {
        4
    } else {
        return None;
    };
    let error_code = if matches!(vector, 8 | 10..=14 | 17 | 21) {
        width
    } else {
        0
    };
    let rsp = s.regs.gpr[Gpr::Rsp as usize];
    // After the frame: [error code], RIP, CS, RFLAGS; RF is bit 16, in RFLAGS' third
    // byte.
    let offset = error_code + 2 * width + 2;
    Some(if long {
        rsp.wrapping_add(offset)
    } else {
        s.segments[SegReg::Ss as usize]
            .base
            .wrapping_add(rsp & 0xffff_ffff)
            .wrapping_add(offset)
            & 0xffff_ffff
    })
}

/// Compare two final states and the guest RAM each run left, RFLAGS without the bits
/// of `undefined_flags` and FSW without those of `undefined_fsw` (see [`crate::flags`]);
/// empty when they agree.
pub fn compare(
    left: &Snapshot,
    left_mem: &GuestMemory,
    right: &Snapshot,
    right_mem: &GuestMemory,
    undefined_flags: u64,
    undefined_fsw: u16,
) -> Vec<Difference> {
    compare_tolerating(
        left,
        left_mem,
        right,
        right_mem,
        undefined_flags,
        undefined_fsw,
        Tolerances::default(),
    )
}

/// [`compare`], tolerating what `tolerances` names (the left run's processor's known
/// deviations).
pub fn compare_tolerating(
    left: &Snapshot,
    left_mem: &GuestMemory,
    right: &Snapshot,
    right_mem: &GuestMemory,
    undefined_flags: u64,
    undefined_fsw: u16,
    tolerances: Tolerances,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut field = |what: &str, l: u64, r: u64| {
        if l != r {
            out.push(Difference {
                what: what.into(),
                left: format!("{l:#x}"),
                right: format!("{r:#x}"),
            });
        }
    };
    for reg in Gpr::ALL {
        let i = reg as usize;
        field(GPR_NAMES[i], left.regs.gpr[i], right.regs.gpr[i]);
    }
    field("rip", left.regs.rip, right.regs.rip);
    field(
        "rflags",
        left.regs.rflags & !undefined_flags,
        right.regs.rflags & !undefined_flags,
    );
    let real_mode = left.control[0] & CR0_PE == 0 && right.control[0] & CR0_PE == 0;
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        let (mut l, mut r) = (comparable(left.segments[i]), comparable(right.segments[i]));
        if real_mode && i == SegReg::Cs as usize {
            // Real mode never looks at CS's type: silicon keeps what was loaded (0x9b
            // after a far transfer on some models, 0x93 at reset), Bochs' VM exit
            // reports a data type. Only the code/data bit is left out.
            l.attr &= !CODE_BIT;
            r.attr &= !CODE_BIT;
        }
        field(
            &format!("{name}.selector"),
            l.selector.into(),
            r.selector.into(),
        );
        field(&format!("{name}.base"), l.base, r.base);
        field(&format!("{name}.limit"), l.limit.into(), r.limit.into());
        field(&format!("{name}.attr"), l.attr.into(), r.attr.into());
    }
    for (i, name) in CONTROL_NAMES.iter().enumerate() {
        field(name, left.control[i], right.control[i]);
    }
    for (i, name) in ["gdtr", "idtr"].iter().enumerate() {
        let (l, r) = (left.tables[i], right.tables[i]);
        field(&format!("{name}.base"), l.base, r.base);
        field(&format!("{name}.limit"), l.limit.into(), r.limit.into());
    }
    for (i, (_, name, _)) in MSRS.iter().enumerate() {
        // A backend that does not hold an MSR leaves it to the core, which both share.
        if let (Some(l), Some(r)) = (left.msrs[i], right.msrs[i]) {
            field(name, l, r);
        }
    }
    compare_fpu(
        left.fpu.as_ref(),
        right.fpu.as_ref(),
        undefined_fsw,
        &mut out,
    );
    if left.ending != right.ending {
        out.push(Difference {
            what: "ending".into(),
            left: format!("{:?}", left.ending),
            right: format!("{:?}", right.ending),
        });
    }
    let mut ignored = [None; 2];
    if tolerances.frame_rf {
        ignored = [frame_rf_byte(left), frame_rf_byte(right)];
    }
    compare_memory(left_mem, right_mem, &ignored, &mut out);
    out
}

/// Add the differing fields of the x87/MMX/SSE state (see the module documentation).
fn compare_fpu(
    left: Option<&FxsaveArea>,
    right: Option<&FxsaveArea>,
    undefined_fsw: u16,
    out: &mut Vec<Difference>,
) {
    let (l, r) = match (left, right) {
        (Some(l), Some(r)) => (l, r),
        (None, None) => return,
        // The setup loads the state on both sides, so a backend that cannot give it back
        // is a difference, not something to skip.
        (l, r) => {
            let show = |a: Option<&FxsaveArea>| match a {
                Some(_) => String::from("held"),
                None => String::from("not held"),
            };
            out.push(Difference {
                what: "fpu".into(),
                left: show(l),
                right: show(r),
            });
            return;
        }
    };
    let mut field = |what: &str, a: u128, b: u128, digits: usize| {
        if a != b {
            out.push(Difference {
                what: what.into(),
                left: format!("{a:#0w$x}", w = digits + 2),
                right: format!("{b:#0w$x}", w = digits + 2),
            });
        }
    };
    field("fcw", l.fcw().into(), r.fcw().into(), 4);
    field(
        "fsw",
        (l.fsw() & !undefined_fsw).into(),
        (r.fsw() & !undefined_fsw).into(),
        4,
    );
    field("ftw", l.ftw().into(), r.ftw().into(), 2);
    field("mxcsr", l.mxcsr().into(), r.mxcsr().into(), 8);
    let ten = |a: [u8; 10]| {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&a);
        u128::from_le_bytes(b)
    };
    for n in 0..8 {
        field(&format!("st{n}"), ten(l.st(n)), ten(r.st(n)), 20);
    }
    for n in 0..16 {
        field(&format!("xmm{n}"), l.xmm(n), r.xmm(n), 32);
    }
}

/// Add the differing bytes of guest RAM (page by page; the first few listed), leaving
/// out bit 0 of the bytes at `rf_bytes` (see [`Tolerances::frame_rf`]).
fn compare_memory(
    left: &GuestMemory,
    right: &GuestMemory,
    rf_bytes: &[Option<u64>; 2],
    out: &mut Vec<Difference>,
) {
    const PAGE: u64 = 4096;
    let mut listed = 0;
    let mut total = 0u64;
    let mut page = 0;
    while page < layout::RAM {
        let (Some(l), Some(r)) = (left.slice(page, PAGE), right.slice(page, PAGE)) else {
            out.push(Difference {
                what: format!("memory {page:#x}"),
                left: "unreadable".into(),
                right: "unreadable".into(),
            });
            return;
        };
        if l != r {
            for (i, (a, b)) in l.iter().zip(r).enumerate() {
                let at = page + i as u64;
                let mask = if rf_bytes.contains(&Some(at)) {
                    0xfe
                } else {
                    0xff
                };
                if a & mask != b & mask {
                    total += 1;
                    if listed < MAX_MEMORY_LINES {
                        listed += 1;
                        out.push(Difference {
                            what: format!("memory {:#x}", page + i as u64),
                            left: format!("{a:#04x}"),
                            right: format!("{b:#04x}"),
                        });
                    }
                }
            }
        }
        page += PAGE;
    }
    if total > listed as u64 {
        out.push(Difference {
            what: "memory".into(),
            left: format!("{total} bytes differ"),
            right: format!("{} not listed", total - listed as u64),
        });
    }
}
