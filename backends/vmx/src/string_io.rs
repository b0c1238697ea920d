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

use crate::exits::{AddressSize, StringIo, StringIoOperand};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use opsvisor_core::exit::Direction;
use opsvisor_core::mmu::memory::MemError;
use opsvisor_core::mmu::walk::{walk_with_ac, Access, PagingRegs};
use opsvisor_core::ops::{Event, Gpr, SegReg, Segment, X86Ops};
use opsvisor_core::{Exit, GuestMemory};

const CR0_PE: u64 = 1;
const CR0_AM: u64 = 1 << 18;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_AC: u64 = 1 << 18;
/// #SS, #GP and #PF.
const SS_FAULT: u8 = 12;
const GP_FAULT: u8 = 13;
const PF_FAULT: u8 = 14;
/// #AC.
const AC_FAULT: u8 = 17;
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

/// The operating mode, as far as the memory operand's checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Real mode or virtual-8086 mode: limit checks only.
    Real,
    /// Protected mode (IA-32e compatibility mode included): limit and type checks.
    Protected,
    /// 64-bit mode: no limits, canonical addresses; `bits` of linear address.
    Long { bits: u32 },
}

/// The code size of the guest's CS (16, 32 or 64), to decode the instruction at RIP.
pub fn code_bitness<C: X86Ops>(cpu: &C) -> u32 {
    let cs = cpu.segment(SegReg::Cs);
    if cpu.efer() & EFER_LMA != 0 && cs.attr & Segment::L != 0 {
        64
    } else if cs.attr & Segment::DB != 0 {
        32
    } else {
        16
    }
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

/// Begin the element of `exit` at the guest's current RSI/RDI and RCX.
///
/// `paging` holds the control registers the processor translates with; `operand` is
/// the exit's, or the decoded one when the processor does not report it.
pub fn start<C: X86Ops>(
    cpu: &mut C,
    mem: &mut GuestMemory,
    paging: &PagingRegs,
    exit: &StringIo,
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
    if cpu.cpl() == 3
        && cpu.cr0() & CR0_AM != 0
        && rflags & RFLAGS_AC != 0
        && linear & (u64::from(size) - 1) != 0
    {
        cpu.inject_event(Event::Exception {
            vector: AC_FAULT,
            error_code: Some(0),
        });
        return Start::Faulted;
    }

    // The element may cross into the next page: translate each part.
    let first_len = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))).min(u64::from(size)) as u8;
    let mut second_linear = linear.wrapping_add(u64::from(first_len));
    if !matches!(mode, Mode::Long { .. }) {
        second_linear &= 0xffff_ffff;
    }
    let access = Access {
        write,
        user: cpu.cpl() == 3,
        fetch: false,
    };
    let ac = rflags & RFLAGS_AC != 0;
    let mut gpa = [0u64; 2];
    let parts = [
        (linear, first_len),
        (second_linear, size.saturating_sub(first_len)),
    ];
    for (slot, &(at, len)) in gpa.iter_mut().zip(parts.iter()) {
        if len == 0 {
            continue;
        }
        let t = match walk_with_ac(mem, paging, at, access, ac) {
            Ok(t) => t,
            Err(fault) => {
                cpu.set_cr2(at);
                cpu.inject_event(Event::Exception {
                    vector: PF_FAULT,
                    error_code: Some(fault.error_code),
                });
                return Start::Faulted;
            }
        };
        if !mem.is_ram(t.gpa, len.into()) {
            return Start::Fail(StringIoError::NotRam {
                linear: at,
                gpa: t.gpa,
            });
        }
        *slot = t.gpa;
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

/// A register after a string instruction writes `new` to it at address size `size`:
/// the 16-bit forms change only the low 16 bits, the 32-bit forms zero-extend (SDM 1
/// 3.4.1.1), the 64-bit forms write it all.
fn update(old: u64, new: u64, size: AddressSize) -> u64 {
    match size {
        AddressSize::Bits16 => (old & !0xffff) | (new & 0xffff),
        AddressSize::Bits32 => new & 0xffff_ffff,
        AddressSize::Bits64 => new,
    }
}

fn mode<C: X86Ops>(cpu: &C, paging: &PagingRegs, rflags: u64) -> Mode {
    let cs = cpu.segment(SegReg::Cs);
    if paging.efer & EFER_LMA != 0 && cs.attr & Segment::L != 0 {
        Mode::Long {
            bits: if paging.cr4 & CR4_LA57 != 0 { 57 } else { 48 },
        }
    } else if cpu.cr0() & CR0_PE != 0 && rflags & RFLAGS_VM == 0 {
        Mode::Protected
    } else {
        Mode::Real
    }
}

/// Whether `addr` is canonical for a `bits`-bit linear address space.
fn canonical(addr: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((addr << shift) as i64) >> shift) as u64 == addr
}

/// The linear address of `size` bytes at `offset` in `segment` (register `reg`), or
/// the fault the access raises: #SS(0) through SS, #GP(0) otherwise. `write` for a store
/// (INS), otherwise a load (OUTS).
fn linear_address(
    segment: &Segment,
    reg: SegReg,
    offset: u64,
    size: u8,
    mode: Mode,
    write: bool,
) -> Result<u64, Event> {
    let fault = Event::Exception {
        vector: if reg == SegReg::Ss {
            SS_FAULT
        } else {
            GP_FAULT
        },
        error_code: Some(0),
    };
    let last_offset = offset.checked_add(u64::from(size) - 1).ok_or(fault)?;
    match mode {
        Mode::Long { bits } => {
            // Only FS and GS have a base in 64-bit mode.
            let base = if matches!(reg, SegReg::Fs | SegReg::Gs) {
                segment.base
            } else {
                0
            };
            let linear = base.wrapping_add(offset);
            let last = base.wrapping_add(last_offset);
            if canonical(linear, bits) && canonical(last, bits) {
                Ok(linear)
            } else {
                Err(fault)
            }
        }
        Mode::Real | Mode::Protected => {
            let kind = segment.attr & Segment::TYPE_MASK;
            let code = kind & 0x8 != 0;
            if mode == Mode::Protected {
                // A null selector, or a segment the access cannot use: stores need a
                // writable data segment, loads a readable one (data is always readable).
                let usable = segment.attr & Segment::UNUSABLE == 0;
                let allowed = if write {
                    !code && kind & 0x2 != 0
                } else {
                    !code || kind & 0x2 != 0
                };
                if !usable || !allowed {
                    return Err(fault);
                }
            }
            let limit = u64::from(segment.limit);
            let within = if !code && kind & 0x4 != 0 {
                // Expand-down: the valid offsets are above the limit.
                let upper = if segment.attr & Segment::DB != 0 {
                    0xffff_ffff
                } else {
                    0xffff
                };
                offset > limit && last_offset <= upper
            } else {
                last_offset <= limit
            };
            if within {
                Ok(segment.base.wrapping_add(offset) & 0xffff_ffff)
            } else {
                Err(fault)
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::caps::fixtures::{MsrFixture, CORE_I7_SKYLAKE_X};
    use crate::caps::VmxCaps;
    use crate::exits::reason;
    use crate::replay::{replay_phys, ReplayVmcs, ScriptedExit};
    use crate::vcpu::{VmxConfig, VmxFailure, VmxVcpu};
    use crate::vmcs::{fields, VmcsAccess};
    use opsvisor_core::ops::RunLimit;

    const LIMIT: RunLimit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };
    const RIP: u64 = 0x1000;
    const DF: u64 = RFLAGS_DF | 2;
    const COM1: u16 = 0x3f8;

    /// The exit after the scripted one: a HLT that leaves RIP alone, so that the RIP
    /// the string instruction left can be checked after the run that reports it.
    fn hlt() -> ScriptedExit {
        ScriptedExit::new(reason::HLT)
    }

    /// VM-exit instruction information of INS/OUTS: address size in bits 9:7, segment
    /// in bits 17:15.
    fn info(address_size: AddressSize, segment: SegReg) -> u64 {
        let size = match address_size {
            AddressSize::Bits16 => 0,
            AddressSize::Bits32 => 1,
            AddressSize::Bits64 => 2,
        };
        (size << 7) | ((segment as u64) << 15)
    }

    /// An INS (`input`) or OUTS exit at [`RIP`] of an instruction `len` bytes long.
    fn string_exit(
        len: u64,
        port: u16,
        size: u8,
        input: bool,
        rep: bool,
        info: u64,
    ) -> ScriptedExit {
        // SDM 3C table 28-5: size - 1, bit 3 IN, bit 4 string, bit 5 REP, port 31:16.
        let size_bits = match size {
            1 => 0,
            2 => 1,
            _ => 3,
        };
        let qualification = size_bits
            | (u64::from(input) << 3)
            | (1 << 4)
            | (u64::from(rep) << 5)
            | (u64::from(port) << 16);
        ScriptedExit::new(reason::IO_INSTRUCTION)
            .field(fields::GUEST_RIP, RIP)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, len)
            .field(fields::EXIT_QUALIFICATION, qualification)
            .field(fields::VM_EXIT_INSTRUCTION_INFO, info)
    }

    fn vcpu_of(fixture: &MsrFixture, exit: ScriptedExit, count: u64) -> VmxVcpu<ReplayVmcs> {
        let caps = VmxCaps::read(fixture).unwrap();
        let config = VmxConfig {
            to_phys: replay_phys,
            tsc_hz: 1_000_000_000,
        };
        let replay = ReplayVmcs::new(exit, count, hlt()).unwrap();
        VmxVcpu::replay(caps, config, replay).unwrap()
    }

    fn vcpu(exit: ScriptedExit, count: u64) -> VmxVcpu<ReplayVmcs> {
        vcpu_of(&CORE_I7_SKYLAKE_X, exit, count)
    }

    /// 32-bit flat protected mode, no paging.
    fn flat32(vcpu: &mut VmxVcpu<ReplayVmcs>) {
        vcpu.set_cr0(0x11);
        vcpu.set_segment(SegReg::Cs, &Segment::flat(8, Segment::CODE32));
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            vcpu.set_segment(seg, &Segment::flat(0x10, Segment::DATA));
        }
    }

    const PML4: u64 = 0x10000;
    const PDPT: u64 = 0x11000;
    const PD: u64 = 0x12000;
    const PT: u64 = 0x13000;
    const PTE_P: u64 = 1;
    const PTE_RW: u64 = 2;
    const PTE_PS: u64 = 1 << 7;
    /// Linear 0x30000 maps to this page; every other page of the first 2 MiB is
    /// identity-mapped.
    const REMAPPED: u64 = 0x50000;

    /// 64-bit mode with 4-level paging and CR0.WP over 4 MiB of RAM: the first 2 MiB
    /// in 4-KiB pages (identity, except linear 0x30000 → [`REMAPPED`]), 2..4 MiB as a
    /// read-only 2-MiB page, nothing above.
    fn long64(vcpu: &mut VmxVcpu<ReplayVmcs>) -> GuestMemory {
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        mem.write_u64(PML4, PDPT | PTE_P | PTE_RW).unwrap();
        mem.write_u64(PDPT, PD | PTE_P | PTE_RW).unwrap();
        mem.write_u64(PD, PT | PTE_P | PTE_RW).unwrap();
        mem.write_u64(PD + 8, (2 << 20) | PTE_P | PTE_PS).unwrap();
        for page in 0..512u64 {
            let frame = if page == 0x30 { REMAPPED } else { page << 12 };
            mem.write_u64(PT + 8 * page, frame | PTE_P | PTE_RW)
                .unwrap();
        }
        vcpu.set_efer(1 << 8);
        vcpu.set_cr4(1 << 5);
        vcpu.set_cr3(PML4);
        vcpu.set_cr0(0x8001_0011);
        vcpu.set_segment(SegReg::Cs, &Segment::flat(8, Segment::CODE64));
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            vcpu.set_segment(seg, &Segment::flat(0x10, Segment::DATA));
        }
        assert_ne!(vcpu.efer() & EFER_LMA, 0, "long mode is active");
        mem
    }

    fn io(port: u16, size: u8, direction: Direction, data: u32) -> Exit {
        Exit::Io {
            port,
            size,
            direction,
            data,
        }
    }

    /// The injected event as the replay left it (valid bit cleared at "delivery") and
    /// its error code.
    fn injected(vcpu: &VmxVcpu<ReplayVmcs>) -> (u64, u64) {
        let vmcs = vcpu.processor().vmcs();
        (
            vmcs.read(fields::VM_ENTRY_INTR_INFO).unwrap(),
            vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE).unwrap(),
        )
    }

    #[test]
    fn outsb_without_rep() {
        // OUTSB (6E), 32-bit addressing through DS.
        let exit = string_exit(
            1,
            COM1,
            1,
            false,
            false,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write_u8(0x2000, b'A').unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0x2000);
        vcpu.set_gpr(Gpr::Rcx, 7);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(
            e,
            io(COM1, 1, Direction::Write, 0x41),
            "{:?}",
            vcpu.last_failure()
        );
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001);
        assert_eq!(vcpu.gpr(Gpr::Rcx), 7, "no REP: the count is not used");
        assert_eq!(vcpu.rip(), RIP + 1);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
    }

    #[test]
    fn misaligned_element_at_cpl3_with_alignment_checks_is_an_ac() {
        // OUTSW (66 6F) from an odd address at CPL 3, CR0.AM and RFLAGS.AC set.
        let exit = string_exit(
            2,
            COM1,
            2,
            false,
            false,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        vcpu.set_cr0(0x11 | CR0_AM);
        let user_data = Segment {
            attr: Segment::DATA | (3 << 5),
            ..Segment::flat(0x23, Segment::DATA)
        };
        for seg in [SegReg::Ds, SegReg::Ss] {
            vcpu.set_segment(seg, &user_data);
        }
        vcpu.set_segment(
            SegReg::Cs,
            &Segment {
                attr: Segment::CODE32 | (3 << 5),
                ..Segment::flat(0x1b, Segment::CODE32)
            },
        );
        vcpu.set_rflags(2 | RFLAGS_AC);
        vcpu.set_gpr(Gpr::Rsi, 0x2001);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt, "no I/O exit");
        assert_eq!(injected(&vcpu), (0xb11, 0));
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001);
    }

    #[test]
    fn rep_outsb_exits_once_per_element() {
        // REP OUTSB (F3 6E).
        let exit = string_exit(
            2,
            COM1,
            1,
            false,
            true,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 3);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x2000, b"xyz!").unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0x2000);
        vcpu.set_gpr(Gpr::Rcx, 3);
        for (i, &byte) in b"xyz".iter().enumerate() {
            let i = i as u64;
            let e = vcpu.run(&mut mem, &LIMIT);
            assert_eq!(e, io(COM1, 1, Direction::Write, byte.into()), "element {i}");
            vcpu.skip_emulated_instruction();
            assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001 + i);
            assert_eq!(vcpu.gpr(Gpr::Rcx), 2 - i);
            let rip = if i == 2 { RIP + 2 } else { RIP };
            assert_eq!(vcpu.rip(), rip, "RIP moves only when the count reaches 0");
        }
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(vcpu.processor().entries(), 4);
        assert_eq!(vcpu.last_failure(), None);
    }

    #[test]
    fn rep_insw_backwards_stores_before_the_next_entry() {
        // REP INSW (66 F3 6D) with DF = 1: RDI walks down.
        let exit = string_exit(
            3,
            0x1f0,
            2,
            true,
            true,
            info(AddressSize::Bits32, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 3);
        flat32(&mut vcpu);
        vcpu.set_rflags(DF);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x2ffc, &[0xee; 8]).unwrap();
        vcpu.set_gpr(Gpr::Rdi, 0x3000);
        vcpu.set_gpr(Gpr::Rcx, 3);
        vcpu.set_gpr(Gpr::Rax, 0x5555);
        for i in 0..3u64 {
            let e = vcpu.run(&mut mem, &LIMIT);
            assert_eq!(e, io(0x1f0, 2, Direction::Read, 0), "element {i}");
            if i > 0 {
                // The previous element's value is in memory now.
                let at = 0x3000 - 2 * (i - 1);
                assert_eq!(mem.read_u16(at).unwrap(), 0x1100 + i as u16 - 1);
            }
            vcpu.complete_pio_in(0x1100 + i as u32);
            assert_eq!(vcpu.gpr(Gpr::Rdi), 0x3000 - 2 * (i + 1));
            assert_eq!(vcpu.gpr(Gpr::Rcx), 2 - i);
            assert_eq!(vcpu.rip(), if i == 2 { RIP + 3 } else { RIP });
        }
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        let mut bytes = [0u8; 10];
        mem.read(0x2ffa, &mut bytes).unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0x02, 0x11, 0x01, 0x11, 0x00, 0x11, 0xee, 0xee],
            "three words at 0x2ffc, 0x2ffe, 0x3000 and nothing else"
        );
        assert_eq!(vcpu.gpr(Gpr::Rax), 0x5555, "INS leaves RAX alone");
    }

    #[test]
    fn rep_with_count_zero_retires_without_io() {
        // REP OUTSB with ECX = 0 (the upper half of RCX does not count at 32 bits).
        let exit = string_exit(
            2,
            COM1,
            1,
            false,
            true,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0x2000);
        vcpu.set_gpr(Gpr::Rcx, 0x1_0000_0000);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt, "no I/O exit");
        assert_eq!(vcpu.rip(), RIP + 2);
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2000);
        assert_eq!(vcpu.gpr(Gpr::Rcx), 0x1_0000_0000);
        assert_eq!(vcpu.processor().entries(), 2);
    }

    #[test]
    fn address_size_32_in_64_bit_mode() {
        // 67 F3 6E: REP OUTSB with ESI/ECX. DS's base does not apply in 64-bit mode.
        let exit = string_exit(
            3,
            COM1,
            1,
            false,
            true,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 2);
        let mut mem = long64(&mut vcpu);
        let ds = Segment {
            base: 0x8000,
            ..Segment::flat(0x10, Segment::DATA)
        };
        vcpu.set_segment(SegReg::Ds, &ds);
        mem.write(0x2000, b"ok").unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0xffff_ffff_0000_2000);
        vcpu.set_gpr(Gpr::Rcx, 0xdead_0000_0000_0002);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(
            e,
            io(COM1, 1, Direction::Write, b'o'.into()),
            "{:?}",
            vcpu.last_failure()
        );
        vcpu.skip_emulated_instruction();
        // The 32-bit forms zero-extend into the 64-bit registers.
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001);
        assert_eq!(vcpu.gpr(Gpr::Rcx), 1);
        assert_eq!(vcpu.rip(), RIP);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            io(COM1, 1, Direction::Write, b'k'.into())
        );
        vcpu.skip_emulated_instruction();
        assert_eq!((vcpu.gpr(Gpr::Rsi), vcpu.gpr(Gpr::Rcx)), (0x2002, 0));
        assert_eq!(vcpu.rip(), RIP + 3);
    }

    #[test]
    fn unmapped_page_injects_a_page_fault() {
        // OUTSB from linear 4 MiB, which no page maps.
        let exit = string_exit(
            1,
            COM1,
            1,
            false,
            false,
            info(AddressSize::Bits64, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rsi, 4 << 20);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt, "no I/O exit");
        assert_eq!(vcpu.cr2(), 4 << 20);
        // #PF (14), hardware exception (3), error code delivered (bit 11); not present,
        // supervisor read.
        assert_eq!(injected(&vcpu), (0xb0e, 0));
        assert_eq!(vcpu.rip(), RIP, "the instruction does not retire");
        assert_eq!(vcpu.gpr(Gpr::Rsi), 4 << 20);
        assert_eq!(vcpu.last_failure(), None);
    }

    #[test]
    fn ins_into_a_read_only_page_faults_with_write_and_present() {
        // INSB (6C) to linear 2 MiB: mapped read-only, and CR0.WP is set.
        let exit = string_exit(
            1,
            0x60,
            1,
            true,
            false,
            info(AddressSize::Bits64, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rdi, 2 << 20);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(vcpu.cr2(), 2 << 20);
        assert_eq!(injected(&vcpu), (0xb0e, 3));
    }

    #[test]
    fn ins_element_crossing_a_page_is_split() {
        // INSD (6D) at linear 0x30ffe: two bytes in the remapped page, two in the next.
        let exit = string_exit(
            1,
            0x60,
            4,
            true,
            false,
            info(AddressSize::Bits64, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rdi, 0x30ffe);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), io(0x60, 4, Direction::Read, 0));
        vcpu.complete_pio_in(0x4433_2211);
        assert_eq!(vcpu.gpr(Gpr::Rdi), 0x31002);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(mem.read_u16(REMAPPED + 0xffe).unwrap(), 0x2211);
        assert_eq!(mem.read_u16(0x31000).unwrap(), 0x4433);
        assert_eq!(
            mem.read_u16(0x30ffe).unwrap(),
            0,
            "the identity page is untouched"
        );
    }

    #[test]
    fn real_mode_16_bit_forms_and_the_segment_limit() {
        // INSB (6C) at ES:FFFF in real mode: the last byte of the segment. DI wraps and
        // the upper bits of RDI are kept.
        let exit = string_exit(
            1,
            0x60,
            1,
            true,
            false,
            info(AddressSize::Bits16, SegReg::Es),
        );
        let mut first = vcpu(exit, 2);
        first.set_segment(SegReg::Es, &Segment::real_mode(0x1000, false));
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        first.set_gpr(Gpr::Rdi, 0xabcd_ffff);
        assert_eq!(first.run(&mut mem, &LIMIT), io(0x60, 1, Direction::Read, 0));
        first.complete_pio_in(0x5a);
        assert_eq!(first.gpr(Gpr::Rdi), 0xabcd_0000);
        assert_eq!(first.rip(), RIP + 1);
        // The next element is stored at the next entry, which exits again: DI = 0 now.
        assert_eq!(first.run(&mut mem, &LIMIT), io(0x60, 1, Direction::Read, 0));
        assert_eq!(mem.read_u8(0x1ffff).unwrap(), 0x5a);

        // INSW at ES:FFFF runs past the limit: #GP(0), without an error code in real mode.
        let exit = string_exit(
            1,
            0x60,
            2,
            true,
            false,
            info(AddressSize::Bits16, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 1);
        vcpu.set_segment(SegReg::Es, &Segment::real_mode(0x1000, false));
        vcpu.set_gpr(Gpr::Rdi, 0xffff);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(injected(&vcpu).0, 0x30d);
        assert_eq!(vcpu.rip(), RIP);
    }

    #[test]
    fn protected_mode_segment_checks() {
        let seg = |attr: u32, limit: u32| Segment {
            selector: 0x10,
            base: 0x1000,
            limit,
            attr,
        };
        let gp = Err(Event::Exception {
            vector: GP_FAULT,
            error_code: Some(0),
        });
        let ss = Err(Event::Exception {
            vector: SS_FAULT,
            error_code: Some(0),
        });
        let data = seg(Segment::DATA, 0xfff);
        let p = Mode::Protected;
        assert_eq!(
            linear_address(&data, SegReg::Ds, 0xffc, 4, p, false),
            Ok(0x1ffc)
        );
        assert_eq!(linear_address(&data, SegReg::Ds, 0xffd, 4, p, false), gp);
        assert_eq!(linear_address(&data, SegReg::Ss, 0xffd, 4, p, false), ss);
        // A read-only data segment cannot take INS; an execute-only code segment
        // cannot feed OUTS; a readable one can.
        let read_only = seg(0xc091, 0xfff);
        assert_eq!(linear_address(&read_only, SegReg::Es, 0, 1, p, true), gp);
        assert_eq!(
            linear_address(&read_only, SegReg::Ds, 0, 1, p, false),
            Ok(0x1000)
        );
        let exec_only = seg(0xc099, 0xfff);
        assert_eq!(linear_address(&exec_only, SegReg::Cs, 0, 1, p, false), gp);
        let code = seg(Segment::CODE32, 0xfff);
        assert_eq!(
            linear_address(&code, SegReg::Cs, 0, 1, p, false),
            Ok(0x1000)
        );
        // Unusable (null selector).
        let null = seg(Segment::UNUSABLE | Segment::DATA, 0xfff);
        assert_eq!(linear_address(&null, SegReg::Es, 0, 1, p, true), gp);
        // Expand-down, 32-bit: valid offsets are above the limit.
        let down = seg(Segment::DATA | 0x4, 0xfff);
        assert_eq!(linear_address(&down, SegReg::Ds, 0xfff, 1, p, false), gp);
        assert_eq!(
            linear_address(&down, SegReg::Ds, 0x1000, 1, p, false),
            Ok(0x2000)
        );
        assert_eq!(
            linear_address(&down, SegReg::Ds, 0xffff_fffe, 2, p, false),
            Ok(0xffe)
        );
        assert_eq!(
            linear_address(&down, SegReg::Ds, 0xffff_ffff, 2, p, false),
            gp
        );
        // 64-bit mode: FS keeps its base, a non-canonical element faults.
        let long = Mode::Long { bits: 48 };
        let fs = Segment {
            base: 0x7fff_ffff_f000,
            ..data
        };
        assert_eq!(
            linear_address(&fs, SegReg::Fs, 0xffc, 4, long, false),
            Ok(0x7fff_ffff_fffc)
        );
        assert_eq!(linear_address(&fs, SegReg::Fs, 0xffd, 4, long, false), gp);
        assert_eq!(
            linear_address(&fs, SegReg::Ss, 0xffd, 4, long, false),
            Ok(0xffd)
        );
    }

    #[test]
    fn string_io_to_mmio_ends_the_run() {
        let exit = string_exit(
            1,
            COM1,
            4,
            false,
            false,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0xfee0_0000);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::EmulationFailure { rip: RIP }
        );
        assert_eq!(
            vcpu.last_failure(),
            Some(VmxFailure::StringIo(StringIoError::NotRam {
                linear: 0xfee0_0000,
                gpa: 0xfee0_0000
            }))
        );
    }

    /// A processor that does not report the INS/OUTS operand (IA32_VMX_BASIC bit 54).
    fn without_ins_outs_info() -> MsrFixture {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.basic &= !(1 << 54);
        fixture
    }

    #[test]
    fn unreported_address_size_is_decoded() {
        // 67 66 F3 6F in 32-bit code: REP OUTSW with SI/CX (16-bit addressing).
        let exit = string_exit(4, COM1, 2, false, true, 0);
        let mut vcpu = vcpu_of(&without_ins_outs_info(), exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(RIP, &[0x67, 0x66, 0xf3, 0x6f]).unwrap();
        mem.write_u16(0x10, 0xbeef).unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0xabcd_0010);
        vcpu.set_gpr(Gpr::Rcx, 0x1_0001);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(
            e,
            io(COM1, 2, Direction::Write, 0xbeef),
            "{:?}",
            vcpu.last_failure()
        );
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0xabcd_0012, "only SI moves");
        assert_eq!(vcpu.gpr(Gpr::Rcx), 0x1_0000, "only CX counts");
        assert_eq!(vcpu.rip(), RIP + 4);
    }

    #[test]
    fn undecodable_string_instruction_ends_the_run() {
        let exit = string_exit(1, COM1, 1, false, false, 0);
        let mut vcpu = vcpu_of(&without_ins_outs_info(), exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        // INSB where the exit says OUTS: the instruction changed under the exit.
        mem.write_u8(RIP, 0x6c).unwrap();
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::EmulationFailure { rip: RIP }
        );
        assert_eq!(
            vcpu.last_failure(),
            Some(VmxFailure::StringIo(StringIoError::Undecodable {
                rip: RIP
            }))
        );
    }

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

    /// MOV to/from CR8 (SDM 3C table 28-3): CR number, access type in bits 5:4, GPR in
    /// bits 11:8.
    fn mov_cr8(to: bool, gpr: Gpr, rip: u64) -> ScriptedExit {
        let qualification = 8 | (u64::from(!to) << 4) | ((gpr as u64) << 8);
        ScriptedExit::new(reason::CONTROL_REGISTER_ACCESS)
            .field(fields::GUEST_RIP, rip)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 4)
            .field(fields::EXIT_QUALIFICATION, qualification)
    }

    #[test]
    fn cr8_accesses_are_exits_to_the_core() {
        // CR8 is the local APIC's TPR, which the core holds: both directions exit with
        // the register operand, and the MOV retires when the core skips it.
        let mut vcpu = vcpu(mov_cr8(true, Gpr::Rax, RIP), 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rax, 9);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Cr8 {
                direction: Direction::Write,
                gpr: Gpr::Rax
            },
            "{:?}",
            vcpu.last_failure()
        );
        assert_eq!(vcpu.rip(), RIP, "not retired until the core skips it");
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.rip(), RIP + 4);
        vcpu.replay_mut()
            .rescript(mov_cr8(false, Gpr::R10, 0x2000), 1, hlt())
            .unwrap();
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Cr8 {
                direction: Direction::Read,
                gpr: Gpr::R10
            }
        );
        vcpu.set_gpr(Gpr::R10, 9);
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.rip(), 0x2004);
        assert_eq!(vcpu.gpr(Gpr::R10), 9);
    }
}
