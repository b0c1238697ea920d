//! MOVS, STOS, LODS, CMPS and SCAS when one operand or both are MMIO: an EPT violation
//! or a nested page fault on such an instruction gives one guest-physical address and a
//! direction, while the instruction has up to two memory operands, repeats, and moves
//! its index registers. The backend decodes it ([`decode`]) and drives a
//! [`StringMmio`], which does the instruction's elements as the SDM describes them
//! (vol. 2B, MOVS/STOS/LODS/CMPS/SCAS and REP/REPE/REPNE):
//!
//! - each operand's linear address comes from its segment (DS or the override for the
//!   RSI operand, ES for the RDI one) with the segment and canonical checks, the
//!   alignment check, and core's page-table walker with the guest's paging; a fault is
//!   queued for the guest at the element that takes it, RCX, RSI and RDI as they stand
//!   after the elements completed before it, RIP at the instruction;
//! - RSI and RDI move by the element size, down with RFLAGS.DF; the address size masks
//!   them and RCX (the 16-bit forms keep the upper bits, the 32-bit forms zero-extend);
//! - REP stops when RCX reaches 0; CMPS and SCAS set the flags of the subtraction and
//!   REPE/REPNE also stop on ZF clear/set;
//! - RAM is read and written through guest memory; every MMIO access becomes one
//!   [`Exit::Mmio`] for core's bus, split at a page boundary when the element straddles
//!   one, its value coming back through [`StringMmio::complete`].
//!
//! An element's operands are translated and checked before either is accessed, so an
//! element that faults has no effect on a device.
//!
//! Work per exit is bounded: after [`BATCH`] elements, or sooner once the core has
//! queued an event for the guest, the backend re-enters the guest with RIP still at the
//! instruction and the registers of the elements done. The guest takes pending
//! interrupts there (the instruction is interruptible between iterations, SDM vol. 1
//! 7.3.9.2), and the instruction exits again for the rest, as KVM's emulator restarts a
//! long REP string instruction; without the bound one `REP MOVSB` with a huge count
//! would keep the vCPU in the host for as long as it runs.
//!
//! Everything here runs on the exit path: no allocation, no dynamic dispatch.

use super::address::{alignment_fault, linear_address, mode, translate, update, AddressSize, Mode};
use crate::exit::{Direction, Exit};
use crate::mmu::memory::GuestMemory;
use crate::mmu::walk::PagingRegs;
use crate::ops::{Gpr, SegReg, X86Ops};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

/// Elements of one string instruction done between two entries into the guest (KVM
/// re-enters the guest every 1024 iterations of an emulated REP string instruction).
pub const BATCH: u32 = 1024;

const PAGE_SIZE: u64 = 4096;
const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_PF: u64 = 1 << 2;
const RFLAGS_AF: u64 = 1 << 4;
const RFLAGS_ZF: u64 = 1 << 6;
const RFLAGS_SF: u64 = 1 << 7;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_OF: u64 = 1 << 11;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_STATUS: u64 = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF;

/// Which string instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// MOVS: `[ES:rDI] = [seg:rSI]`.
    Movs,
    /// STOS: `[ES:rDI] = rAX`.
    Stos,
    /// LODS: `rAX = [seg:rSI]`.
    Lods,
    /// CMPS: the flags of `[seg:rSI] - [ES:rDI]`.
    Cmps,
    /// SCAS: the flags of `rAX - [ES:rDI]`.
    Scas,
}

impl Kind {
    /// Reads its rSI operand.
    fn uses_source(self) -> bool {
        matches!(self, Kind::Movs | Kind::Lods | Kind::Cmps)
    }

    /// Accesses its rDI operand.
    fn uses_destination(self) -> bool {
        !matches!(self, Kind::Lods)
    }

    /// Writes its rDI operand (CMPS and SCAS read it).
    fn writes_destination(self) -> bool {
        matches!(self, Kind::Movs | Kind::Stos)
    }

    /// Ends a REPE/REPNE repetition on ZF.
    fn compares(self) -> bool {
        matches!(self, Kind::Cmps | Kind::Scas)
    }
}

/// The repeat prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// None: one element.
    Once,
    /// F3: REP (MOVS, STOS, LODS) or REPE (CMPS, SCAS).
    Rep,
    /// F2: REPNE (CMPS, SCAS); on MOVS, STOS and LODS the processor repeats as with REP.
    Repne,
}

/// A decoded string instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringOp {
    /// Which instruction.
    pub kind: Kind,
    /// Element size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Address size of rSI, rDI and rCX.
    pub address_size: AddressSize,
    /// Segment of the rSI operand: DS or the override (rDI's is always ES).
    pub segment: SegReg,
    /// The repeat prefix.
    pub repeat: Repeat,
    /// The instruction's length.
    pub len: u8,
}

/// Decode the instruction in `bytes` (fetched at the guest's RIP) for a code size of
/// `bitness` (16, 32 or 64); `None` unless it is MOVS, STOS, LODS, CMPS or SCAS.
pub fn decode(bytes: &[u8], bitness: u32) -> Option<StringOp> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE).ok()?;
    if !decoder.can_decode() {
        return None;
    }
    let insn = decoder.decode();
    if insn.is_invalid() || !insn.is_string_instruction() {
        return None;
    }
    use Mnemonic as M;
    let (kind, size) = match insn.mnemonic() {
        M::Movsb => (Kind::Movs, 1),
        M::Movsw => (Kind::Movs, 2),
        M::Movsd => (Kind::Movs, 4),
        M::Movsq => (Kind::Movs, 8),
        M::Stosb => (Kind::Stos, 1),
        M::Stosw => (Kind::Stos, 2),
        M::Stosd => (Kind::Stos, 4),
        M::Stosq => (Kind::Stos, 8),
        M::Lodsb => (Kind::Lods, 1),
        M::Lodsw => (Kind::Lods, 2),
        M::Lodsd => (Kind::Lods, 4),
        M::Lodsq => (Kind::Lods, 8),
        M::Cmpsb => (Kind::Cmps, 1),
        M::Cmpsw => (Kind::Cmps, 2),
        M::Cmpsd => (Kind::Cmps, 4),
        M::Cmpsq => (Kind::Cmps, 8),
        M::Scasb => (Kind::Scas, 1),
        M::Scasw => (Kind::Scas, 2),
        M::Scasd => (Kind::Scas, 4),
        M::Scasq => (Kind::Scas, 8),
        _ => return None,
    };
    let address_size = (0..insn.op_count()).find_map(|i| match insn.op_kind(i) {
        OpKind::MemorySegSI | OpKind::MemoryESDI => Some(AddressSize::Bits16),
        OpKind::MemorySegESI | OpKind::MemoryESEDI => Some(AddressSize::Bits32),
        OpKind::MemorySegRSI | OpKind::MemoryESRDI => Some(AddressSize::Bits64),
        _ => None,
    })?;
    let segment = if kind.uses_source() {
        match insn.memory_segment() {
            Register::ES => SegReg::Es,
            Register::CS => SegReg::Cs,
            Register::SS => SegReg::Ss,
            Register::DS => SegReg::Ds,
            Register::FS => SegReg::Fs,
            Register::GS => SegReg::Gs,
            _ => return None,
        }
    } else {
        SegReg::Ds
    };
    let repeat = if insn.has_repne_prefix() {
        Repeat::Repne
    } else if insn.has_rep_prefix() {
        Repeat::Rep
    } else {
        Repeat::Once
    };
    Some(StringOp {
        kind,
        size,
        address_size,
        segment,
        repeat,
        len: u8::try_from(insn.len()).ok()?,
    })
}

/// One memory access of an element: `len` bytes at `gpa`, bytes `offset..offset + len`
/// of the operand's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Part {
    gpa: u64,
    offset: u8,
    len: u8,
    ram: bool,
    /// Reads go to the rDI operand's value, not the rSI one's; writes come from `value`.
    destination: bool,
    write: bool,
}

/// The element in progress: its accesses in order (the rSI operand's reads first), and
/// the values read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Element {
    parts: [Part; 4],
    count: u8,
    next: u8,
    /// An MMIO access went to the core and its completion has not arrived.
    waiting: bool,
    source: u64,
    destination: u64,
    /// What the writes store (MOVS: the source, STOS: rAX).
    store: u64,
}

/// What the backend does next with a string instruction on MMIO (see [`StringMmio::step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Hand this [`Exit::Mmio`] to the core; its completion goes to
    /// [`StringMmio::complete`], and the backend calls [`StringMmio::step`] again before
    /// entering the guest.
    Mmio(Exit),
    /// Enter the guest: a fault was queued, or the batch ended with RIP still at the
    /// instruction.
    Enter,
    /// Enter the guest after the instruction's debug traps: it retired (RIP past it, RF
    /// and the interrupt shadow cleared), so its single-step trap is the backend's to
    /// raise, as after any instruction it completes ([`crate::emulate::debug_trap`]).
    Retired,
    /// Enter the guest after the single-step trap of one iteration: RFLAGS.TF is set and
    /// iterations remain, so RIP is still at the instruction. Under TF a repeated string
    /// instruction traps after each iteration, as the processor does (a debugger steps it
    /// one element at a time); the backend raises the trap as for [`Step::Retired`].
    Iterated,
}

/// A string instruction on MMIO in progress on one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringMmio {
    op: StringOp,
    /// Elements completed since the instruction exited.
    done: u32,
    element: Option<Element>,
}

impl StringMmio {
    /// The instruction `op` at the guest's RIP, which has just exited on an MMIO access.
    pub fn new(op: StringOp) -> StringMmio {
        StringMmio {
            op,
            done: 0,
            element: None,
        }
    }

    /// The instruction being run.
    pub fn op(&self) -> &StringOp {
        &self.op
    }

    /// Whether an MMIO access was handed to the core and awaits [`StringMmio::complete`].
    pub fn waiting(&self) -> bool {
        self.element.is_some_and(|e| e.waiting)
    }

    /// The core completed the MMIO access of the last [`Step::Mmio`]: `read` holds the
    /// value of a read.
    pub fn complete(&mut self, read: Option<u64>) {
        let Some(e) = self.element.as_mut() else {
            return;
        };
        if !e.waiting {
            return;
        }
        e.waiting = false;
        let Some(part) = e.parts.get(usize::from(e.next)).copied() else {
            return;
        };
        if !part.write {
            e.absorb(&part, read.unwrap_or(u64::MAX));
        }
        e.next += 1;
    }

    /// Run the instruction on from where it stands: elements are done until one needs
    /// the core's bus ([`Step::Mmio`]) or the guest must run again ([`Step::Enter`],
    /// [`Step::Retired`]).
    /// `paging` holds the control registers the processor translates with.
    pub fn step<C: X86Ops>(
        &mut self,
        cpu: &mut C,
        mem: &mut GuestMemory,
        paging: &PagingRegs,
    ) -> Step {
        if self.waiting() {
            // The core never completed the access (the run ended in between): the
            // element is dropped and the guest runs the instruction again from it, its
            // registers those of the elements completed.
            self.element = None;
            return Step::Enter;
        }
        loop {
            let element = match self.element.as_mut() {
                Some(e) => e,
                None => {
                    let mask = self.op.address_size.mask();
                    if self.op.repeat != Repeat::Once && cpu.gpr(Gpr::Rcx) & mask == 0 {
                        self.retire(cpu);
                        return Step::Retired;
                    }
                    if self.done >= BATCH || (self.done > 0 && cpu.event_pending()) {
                        self.pause(cpu);
                        return Step::Enter;
                    }
                    match self.begin(cpu, mem, paging) {
                        Some(e) => self.element.insert(e),
                        None => return Step::Enter,
                    }
                }
            };
            while element.next < element.count {
                let Some(part) = element.parts.get(usize::from(element.next)).copied() else {
                    break;
                };
                let mask = width_mask(part.len);
                let data = (element.store >> (8 * u32::from(part.offset))) & mask;
                if !part.ram {
                    element.waiting = true;
                    return Step::Mmio(Exit::Mmio {
                        gpa: part.gpa,
                        size: part.len,
                        direction: if part.write {
                            Direction::Write
                        } else {
                            Direction::Read
                        },
                        data: if part.write { data } else { 0 },
                    });
                }
                let mut bytes = [0u8; 8];
                let len = usize::from(part.len).min(bytes.len());
                if part.write {
                    bytes = data.to_le_bytes();
                    // Translated as RAM a moment ago; a store the map no longer takes is
                    // dropped, as the other string paths drop theirs.
                    let _ = mem.write(part.gpa, &bytes[..len]);
                } else {
                    let value = match mem.read(part.gpa, &mut bytes[..len]) {
                        Ok(()) => u64::from_le_bytes(bytes),
                        Err(_) => u64::MAX,
                    };
                    element.absorb(&part, value);
                }
                element.next += 1;
            }
            let element = *element;
            self.element = None;
            self.done += 1;
            if self.finish(cpu, &element) {
                return Step::Retired;
            }
            if cpu.rflags() & RFLAGS_TF != 0 {
                self.pause(cpu);
                return Step::Iterated;
            }
        }
    }

    /// Check and translate the operands of the element at the current registers; `None`
    /// when one faulted (the exception is queued).
    fn begin<C: X86Ops>(
        &self,
        cpu: &mut C,
        mem: &mut GuestMemory,
        paging: &PagingRegs,
    ) -> Option<Element> {
        let op = self.op;
        let rflags = cpu.rflags();
        let mode = mode(cpu, paging, rflags);
        let mut e = Element::default();
        if op.kind.uses_source() {
            self.operand(cpu, mem, paging, false, mode, &mut e)?;
        }
        if op.kind.uses_destination() {
            self.operand(cpu, mem, paging, true, mode, &mut e)?;
        }
        if op.kind == Kind::Stos {
            e.store = cpu.gpr(Gpr::Rax) & width_mask(op.size);
        }
        Some(e)
    }

    /// The element's accesses are done: store what it loads, set the flags, move the
    /// registers, and retire the instruction when its repetition ends. Returns whether
    /// it retired.
    fn finish<C: X86Ops>(&mut self, cpu: &mut C, e: &Element) -> bool {
        let op = self.op;
        let size = op.address_size;
        let rflags = cpu.rflags();
        let stride = if rflags & RFLAGS_DF != 0 {
            u64::from(op.size).wrapping_neg()
        } else {
            u64::from(op.size)
        };
        let mut rflags_out = rflags;
        match op.kind {
            Kind::Lods => {
                let rax = cpu.gpr(Gpr::Rax);
                cpu.set_gpr(Gpr::Rax, load_accumulator(rax, e.source, op.size));
            }
            Kind::Cmps => {
                rflags_out =
                    (rflags & !RFLAGS_STATUS) | sub_flags(e.source, e.destination, op.size);
            }
            Kind::Scas => {
                let rax = cpu.gpr(Gpr::Rax);
                rflags_out = (rflags & !RFLAGS_STATUS) | sub_flags(rax, e.destination, op.size);
            }
            Kind::Movs | Kind::Stos => {}
        }
        if rflags_out != rflags {
            cpu.set_rflags(rflags_out);
        }
        if op.kind.uses_source() {
            let rsi = cpu.gpr(Gpr::Rsi);
            cpu.set_gpr(Gpr::Rsi, update(rsi, rsi.wrapping_add(stride), size));
        }
        if op.kind.uses_destination() {
            let rdi = cpu.gpr(Gpr::Rdi);
            cpu.set_gpr(Gpr::Rdi, update(rdi, rdi.wrapping_add(stride), size));
        }
        let retire = match op.repeat {
            Repeat::Once => true,
            repeat => {
                let rcx = cpu.gpr(Gpr::Rcx);
                let count = (rcx & size.mask()).wrapping_sub(1) & size.mask();
                cpu.set_gpr(Gpr::Rcx, update(rcx, count, size));
                let zf = rflags_out & RFLAGS_ZF != 0;
                count == 0
                    || (op.kind.compares()
                        && match repeat {
                            Repeat::Rep => !zf,
                            _ => zf,
                        })
            }
        };
        if retire {
            self.retire(cpu);
        }
        retire
    }

    /// The instruction is complete: RIP past it, RF and the interrupt shadow cleared as
    /// after any instruction.
    fn retire<C: X86Ops>(&self, cpu: &mut C) {
        let rip = cpu.rip().wrapping_add(u64::from(self.op.len));
        cpu.set_rip(rip);
        let rflags = cpu.rflags();
        if rflags & RFLAGS_RF != 0 {
            cpu.set_rflags(rflags & !RFLAGS_RF);
        }
        cpu.set_interrupt_shadow(false);
    }

    /// The batch ends between two elements with RIP at the instruction. RF is set, as
    /// the processor sets it in the RFLAGS an interrupt pushes in the middle of a
    /// repeated string instruction (SDM vol. 3A 18.3.1.1), so an instruction breakpoint
    /// on it does not fire again for the rest; an interrupt shadow ended with the first
    /// element.
    fn pause<C: X86Ops>(&self, cpu: &mut C) {
        cpu.set_rflags(cpu.rflags() | RFLAGS_RF);
        cpu.set_interrupt_shadow(false);
    }

    /// Check and translate the element's rDI operand (`destination`) or its rSI one at
    /// the current registers, adding its accesses (one per page it touches) to `e`; `None`
    /// when it faulted (queued).
    fn operand<C: X86Ops>(
        &self,
        cpu: &mut C,
        mem: &mut GuestMemory,
        paging: &PagingRegs,
        destination: bool,
        mode: Mode,
        e: &mut Element,
    ) -> Option<()> {
        let op = &self.op;
        let (seg, index) = if destination {
            (SegReg::Es, Gpr::Rdi)
        } else {
            (op.segment, Gpr::Rsi)
        };
        let offset = cpu.gpr(index) & op.address_size.mask();
        let write = destination && op.kind.writes_destination();
        let size = op.size;
        let segment = cpu.segment(seg);
        let linear = match linear_address(&segment, seg, offset, size, mode, write) {
            Ok(linear) => linear,
            Err(event) => {
                cpu.inject_event(event);
                return None;
            }
        };
        let rflags = cpu.rflags();
        if alignment_fault(cpu, linear, size, rflags) {
            return None;
        }
        let first_len = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))).min(u64::from(size)) as u8;
        let mut second = linear.wrapping_add(u64::from(first_len));
        if !matches!(mode, Mode::Long { .. }) {
            second &= 0xffff_ffff;
        }
        for (at, offset, len) in [
            (linear, 0, first_len),
            (second, first_len, size.saturating_sub(first_len)),
        ] {
            if len == 0 {
                continue;
            }
            let gpa = translate(cpu, mem, paging, at, write, rflags)?;
            let slot = e.parts.get_mut(usize::from(e.count))?;
            *slot = Part {
                gpa,
                offset,
                len,
                ram: mem.is_ram(gpa, u64::from(len)),
                destination,
                write,
            };
            e.count += 1;
        }
        Some(())
    }
}

impl Element {
    /// Merge `value`, read for `part`, into its operand's value.
    fn absorb(&mut self, part: &Part, value: u64) {
        let bits = (value & width_mask(part.len)) << (8 * u32::from(part.offset));
        if part.destination {
            self.destination |= bits;
        } else {
            self.source |= bits;
            self.store |= bits;
        }
    }
}

fn width_mask(len: u8) -> u64 {
    match len {
        0 => 0,
        1..=7 => (1u64 << (8 * u32::from(len))) - 1,
        _ => u64::MAX,
    }
}

/// rAX after LODS loads `value` of `size` bytes: AL and AX keep the other bits, EAX
/// zero-extends into RAX.
fn load_accumulator(rax: u64, value: u64, size: u8) -> u64 {
    match size {
        1 => (rax & !0xff) | (value & 0xff),
        2 => (rax & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

/// The status flags (CF, PF, AF, ZF, SF, OF) of `a - b` at `size` bytes, as CMP sets
/// them.
fn sub_flags(a: u64, b: u64, size: u8) -> u64 {
    let mask = width_mask(size);
    let sign = 1u64 << (8 * u32::from(size.clamp(1, 8)) - 1);
    let (a, b) = (a & mask, b & mask);
    let r = a.wrapping_sub(b) & mask;
    let mut flags = 0;
    if a < b {
        flags |= RFLAGS_CF;
    }
    if (r as u8).count_ones() % 2 == 0 {
        flags |= RFLAGS_PF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        flags |= RFLAGS_AF;
    }
    if r == 0 {
        flags |= RFLAGS_ZF;
    }
    if r & sign != 0 {
        flags |= RFLAGS_SF;
    }
    if (a ^ b) & (a ^ r) & sign != 0 {
        flags |= RFLAGS_OF;
    }
    flags
}

#[cfg(test)]
mod tests;
