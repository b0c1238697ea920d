//! INS and OUTS (string port I/O), with and without REP, one element per exit.
//!
//! Core's [`Exit::Io`] carries one element, so the backend turns each INS/OUTS exit into
//! one element the way KVM virtualizes REP string I/O on hardware: the element's memory
//! operand is checked (segment limit and type, canonical form), translated through the
//! guest's page tables (core's walker, which also sets the accessed and dirty bits) and,
//! for OUTS, read from guest RAM; the core performs the port access; the completion then
//! moves RSI/RDI by the element size (RFLAGS.DF gives the direction) and, with REP,
//! decrements the count register. RIP advances only when the count reaches 0: otherwise
//! the instruction runs again at the next entry and exits for the next element.
//!
//! An INS element's value arrives through `complete_pio_in`, which has no access to
//! guest memory: [`Element::ins_store`] keeps it, and the vCPU writes it before the next
//! VM entry (as the emulator backend does).
//!
//! Faults on the memory operand become the guest's exception (#GP(0)/#SS(0) for the
//! segment checks, #PF for the translation, CR2 set first) without an exit to the core.
//! Memory that is not RAM (string I/O to or from MMIO) ends the run with
//! [`StringIoError::NotRam`]. Everything here is allocation-free and statically
//! dispatched: it runs on the exit path.

use super::address::{alignment_fault, linear_address, mode, translate, update, Mode};
use crate::exit::{Direction, Exit};
use crate::mmu::memory::{GuestMemory, MemError};
use crate::mmu::walk::PagingRegs;
use crate::ops::{Gpr, SegReg, X86Ops};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

pub use super::code_bitness;

pub use super::address::AddressSize;

/// The memory operand of INS/OUTS: what the processor reports (VMX's VM-exit
/// instruction information, SVM's EXITINFO1) or what decoding the instruction gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringIoOperand {
    /// Address size.
    pub address_size: AddressSize,
    /// Segment of the memory operand: ES for INS (not overridable), DS or the
    /// override for OUTS.
    pub segment: SegReg,
}

/// The port side of an INS or OUTS exit, as every hardware backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringInsn {
    /// The port.
    pub port: u16,
    /// Element size in bytes: 1, 2 or 4.
    pub size: u8,
    /// INS reads the port into memory, OUTS writes memory to the port.
    pub direction: Direction,
    /// With a REP prefix: the count register says how many elements remain.
    pub rep: bool,
}

impl StringInsn {
    /// The index register that walks memory: RDI for INS, RSI for OUTS.
    pub fn index_register(&self) -> Gpr {
        match self.direction {
            Direction::Read => Gpr::Rdi,
            Direction::Write => Gpr::Rsi,
        }
    }
}

const RFLAGS_DF: u64 = 1 << 10;
const PAGE_SIZE: u64 = 4096;

/// Why a string I/O instruction cannot be completed; the run ends with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringIoError {
    /// An element's memory operand is not guest RAM: string I/O to or from MMIO is not
    /// supported.
    NotRam {
        /// The linear address of the element.
        linear: u64,
        /// The guest-physical address that is not RAM.
        gpa: u64,
    },
    /// The processor did not report the operand's address size, and the instruction at
    /// RIP did not decode as the INS/OUTS that exited.
    Undecodable {
        /// Guest RIP.
        rip: u64,
    },
}

/// One INS/OUTS element handed to the core as [`Exit::Io`], awaiting its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    direction: Direction,
    size: u8,
    address_size: AddressSize,
    rep: bool,
    /// Added to RSI/RDI after the element (negative with RFLAGS.DF).
    stride: u64,
    /// The element's bytes: `first_len` at `gpa[0]`, the rest at `gpa[1]` when the
    /// element crosses a page boundary.
    gpa: [u64; 2],
    first_len: u8,
}

/// An INS element's value, to be stored into guest memory before the next VM entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsStore {
    gpa: [u64; 2],
    first_len: u8,
    size: u8,
    value: u32,
}

/// What the vCPU does with an INS/OUTS exit (see [`start`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Hand this exit to the core; the element completes it.
    Io(Exit, Element),
    /// REP with a count of 0: retire the instruction without any I/O and re-enter.
    Retire,
    /// The memory operand faulted: the exception is queued (CR2 set for #PF); re-enter.
    Faulted,
    /// End the run.
    Fail(StringIoError),
}

/// The address size and segment of the INS/OUTS in `bytes` (fetched at the guest's
/// RIP, code size `bitness`), for processors that do not report them. `None` unless it
/// is a string I/O instruction of `direction`.
pub fn decode_operand(bytes: &[u8], bitness: u32, direction: Direction) -> Option<StringIoOperand> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE).ok()?;
    if !decoder.can_decode() {
        return None;
    }
    let insn = decoder.decode();
    if insn.is_invalid() {
        return None;
    }
    let (kind, decoded) = match insn.mnemonic() {
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => (insn.op0_kind(), Direction::Read),
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => (insn.op1_kind(), Direction::Write),
        _ => return None,
    };
    if decoded != direction {
        return None;
    }
    let address_size = match kind {
        OpKind::MemoryESDI | OpKind::MemorySegSI => AddressSize::Bits16,
        OpKind::MemoryESEDI | OpKind::MemorySegESI => AddressSize::Bits32,
        OpKind::MemoryESRDI | OpKind::MemorySegRSI => AddressSize::Bits64,
        _ => return None,
    };
    let segment = match direction {
        // INS always stores through ES.
        Direction::Read => SegReg::Es,
        Direction::Write => match insn.memory_segment() {
            Register::ES => SegReg::Es,
            Register::CS => SegReg::Cs,
            Register::SS => SegReg::Ss,
            Register::DS => SegReg::Ds,
            Register::FS => SegReg::Fs,
            Register::GS => SegReg::Gs,
            _ => return None,
        },
    };
    Some(StringIoOperand {
        address_size,
        segment,
    })
}

/// Begin the element of the INS/OUTS `exit` at the guest's current RSI/RDI and RCX.
///
/// `paging` holds the control registers the processor translates with; `operand` is
/// the exit's, or the decoded one when the processor does not report it.
pub fn start<C: X86Ops>(
    cpu: &mut C,
    mem: &mut GuestMemory,
    paging: &PagingRegs,
    exit: &StringInsn,
    operand: StringIoOperand,
) -> Start {
    let mask = operand.address_size.mask();
    if exit.rep && cpu.gpr(Gpr::Rcx) & mask == 0 {
        return Start::Retire;
    }
    let size = exit.size.clamp(1, 4);
    let rflags = cpu.rflags();
    let mode = mode(cpu, paging, rflags);
    let offset = cpu.gpr(exit.index_register()) & mask;
    let segment = cpu.segment(operand.segment);
    let write = exit.direction == Direction::Read;
    let linear = match linear_address(&segment, operand.segment, offset, size, mode, write) {
        Ok(linear) => linear,
        Err(event) => {
            cpu.inject_event(event);
            return Start::Faulted;
        }
    };
    // The I/O exit comes before the memory access (SDM 3C 26.1.1), so its alignment
    // check is the backend's: #AC(0) at CPL 3 with CR0.AM and RFLAGS.AC, after the
    // segment checks and before the translation, as the processor orders them.
    if alignment_fault(cpu, linear, size, rflags) {
        return Start::Faulted;
    }

    // The element may cross into the next page: translate each part.
    let first_len = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))).min(u64::from(size)) as u8;
    let mut second_linear = linear.wrapping_add(u64::from(first_len));
    if !matches!(mode, Mode::Long { .. }) {
        second_linear &= 0xffff_ffff;
    }
    let mut gpa = [0u64; 2];
    let parts = [
        (linear, first_len),
        (second_linear, size.saturating_sub(first_len)),
    ];
    for (slot, &(at, len)) in gpa.iter_mut().zip(parts.iter()) {
        if len == 0 {
            continue;
        }
        let Some(t) = translate(cpu, mem, paging, at, write, rflags) else {
            return Start::Faulted;
        };
        if !mem.is_ram(t, len.into()) {
            return Start::Fail(StringIoError::NotRam { linear: at, gpa: t });
        }
        *slot = t;
    }

    let data = match exit.direction {
        Direction::Read => 0,
        Direction::Write => {
            let mut bytes = [0u8; 4];
            let (first, rest) = bytes.split_at_mut(usize::from(first_len));
            let rest_len = usize::from(size - first_len);
            let read = mem
                .read(gpa[0], first)
                .and_then(|()| match rest.get_mut(..rest_len) {
                    Some(rest) => mem.read(gpa[1], rest),
                    None => Ok(()),
                });
            if read.is_err() {
                // Both parts were checked as RAM above, so this does not happen; if it
                // did, the run ends rather than send the core made-up data.
                return Start::Fail(StringIoError::NotRam {
                    linear,
                    gpa: gpa[0],
                });
            }
            u32::from_le_bytes(bytes)
        }
    };
    let stride = if rflags & RFLAGS_DF != 0 {
        u64::from(size).wrapping_neg()
    } else {
        u64::from(size)
    };
    Start::Io(
        Exit::Io {
            port: exit.port,
            size,
            direction: exit.direction,
            data,
        },
        Element {
            direction: exit.direction,
            size,
            address_size: operand.address_size,
            rep: exit.rep,
            stride,
            gpa,
            first_len,
        },
    )
}

impl Element {
    /// Whether this is an INS element (its completion carries a value).
    pub fn is_input(&self) -> bool {
        self.direction == Direction::Read
    }

    /// The store that completes an INS element with `value` read from the port.
    pub fn ins_store(&self, value: u32) -> InsStore {
        InsStore {
            gpa: self.gpa,
            first_len: self.first_len,
            size: self.size,
            value,
        }
    }

    /// The element is done: move RSI/RDI and, with REP, decrement the count register.
    /// Returns whether the instruction retires (no REP, or the count reached 0); if not,
    /// RIP stays on it and it exits again for the next element.
    pub fn advance<C: X86Ops>(&self, cpu: &mut C) -> bool {
        let size = self.address_size;
        let index = match self.direction {
            Direction::Read => Gpr::Rdi,
            Direction::Write => Gpr::Rsi,
        };
        let old = cpu.gpr(index);
        cpu.set_gpr(index, update(old, old.wrapping_add(self.stride), size));
        if !self.rep {
            return true;
        }
        let rcx = cpu.gpr(Gpr::Rcx);
        let count = (rcx & size.mask()).wrapping_sub(1) & size.mask();
        cpu.set_gpr(Gpr::Rcx, update(rcx, count, size));
        count == 0
    }
}

impl InsStore {
    /// Write the value into guest memory.
    pub fn write(&self, mem: &mut GuestMemory) -> Result<(), MemError> {
        let bytes = self.value.to_le_bytes();
        let size = usize::from(self.size).min(bytes.len());
        let first = usize::from(self.first_len).min(size);
        let (low, high) = bytes.split_at(first);
        mem.write(self.gpa[0], low)?;
        match high.get(..size - first) {
            Some(high) if !high.is_empty() => mem.write(self.gpa[1], high),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_decoding() {
        let op = |address_size, segment| {
            Some(StringIoOperand {
                address_size,
                segment,
            })
        };
        use AddressSize::*;
        // 64-bit: REP OUTSB; FS: OUTSD with a 32-bit address; INSW through ES whatever
        // the prefix.
        assert_eq!(
            decode_operand(&[0xf3, 0x6e], 64, Direction::Write),
            op(Bits64, SegReg::Ds)
        );
        assert_eq!(
            decode_operand(&[0x64, 0x67, 0x6f], 64, Direction::Write),
            op(Bits32, SegReg::Fs)
        );
        assert_eq!(
            decode_operand(&[0x2e, 0x66, 0x6d], 64, Direction::Read),
            op(Bits64, SegReg::Es)
        );
        // 16-bit code: INSB with DI.
        assert_eq!(
            decode_operand(&[0x6c], 16, Direction::Read),
            op(Bits16, SegReg::Es)
        );
        // Wrong direction, not string I/O, truncated.
        assert_eq!(decode_operand(&[0x6c], 32, Direction::Write), None);
        assert_eq!(decode_operand(&[0x90], 32, Direction::Read), None);
        assert_eq!(decode_operand(&[0xf3], 32, Direction::Read), None);
        assert_eq!(decode_operand(&[], 32, Direction::Read), None);
    }

    #[test]
    fn the_index_register_follows_the_direction() {
        let insn = StringInsn {
            port: 0x3f8,
            size: 1,
            direction: Direction::Write,
            rep: true,
        };
        assert_eq!(insn.index_register(), Gpr::Rsi);
        let ins = StringInsn {
            direction: Direction::Read,
            ..insn
        };
        assert_eq!(ins.index_register(), Gpr::Rdi);
        assert_eq!(AddressSize::Bits16.mask(), 0xffff);
        assert_eq!(AddressSize::Bits32.mask(), 0xffff_ffff);
        assert_eq!(AddressSize::Bits64.mask(), u64::MAX);
    }
}
