//! The memory operand of a string instruction as the processor forms it: the segment
//! checks and canonical check that give its linear address, the alignment check, the
//! translation through the guest's page tables with the #PF it raises, and how the index
//! and count registers change at each address size. String port I/O ([`super::string_io`])
//! and string instructions on MMIO ([`super::strings`]) share it.

use crate::mmu::memory::GuestMemory;
use crate::mmu::walk::{walk_with_ac, Access, PagingRegs};
use crate::ops::{Event, SegReg, Segment, X86Ops};

/// The address size of a string instruction's memory operands and count register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSize {
    /// 16-bit: SI/DI and CX.
    Bits16,
    /// 32-bit: ESI/EDI and ECX.
    Bits32,
    /// 64-bit: RSI/RDI and RCX.
    Bits64,
}

impl AddressSize {
    /// The mask applied to the index and count registers.
    pub fn mask(self) -> u64 {
        match self {
            AddressSize::Bits16 => 0xffff,
            AddressSize::Bits32 => 0xffff_ffff,
            AddressSize::Bits64 => u64::MAX,
        }
    }
}

const CR0_PE: u64 = 1;
const CR0_AM: u64 = 1 << 18;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_AC: u64 = 1 << 18;
/// #SS, #GP, #PF and #AC.
const SS_FAULT: u8 = 12;
const GP_FAULT: u8 = 13;
const PF_FAULT: u8 = 14;
const AC_FAULT: u8 = 17;

/// The operating mode, as far as the memory operand's checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Real mode or virtual-8086 mode: limit checks only.
    Real,
    /// Protected mode (IA-32e compatibility mode included): limit and type checks.
    Protected,
    /// 64-bit mode: no limits, canonical addresses; `bits` of linear address.
    Long { bits: u32 },
}

/// A register after a string instruction writes `new` to it at address size `size`:
/// the 16-bit forms change only the low 16 bits, the 32-bit forms zero-extend (SDM 1
/// 3.4.1.1), the 64-bit forms write it all.
pub(super) fn update(old: u64, new: u64, size: AddressSize) -> u64 {
    match size {
        AddressSize::Bits16 => (old & !0xffff) | (new & 0xffff),
        AddressSize::Bits32 => new & 0xffff_ffff,
        AddressSize::Bits64 => new,
    }
}

pub(super) fn mode<C: X86Ops>(cpu: &C, paging: &PagingRegs, rflags: u64) -> Mode {
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
pub(super) fn linear_address(
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

/// Whether an access of `size` bytes at `linear` takes #AC(0): at CPL 3 with CR0.AM and
/// RFLAGS.AC set, when `linear` is not a multiple of `size`. The exception is queued.
pub(super) fn alignment_fault<C: X86Ops>(cpu: &mut C, linear: u64, size: u8, rflags: u64) -> bool {
    let fault = cpu.cpl() == 3
        && cpu.cr0() & CR0_AM != 0
        && rflags & RFLAGS_AC != 0
        && linear & (u64::from(size).max(1) - 1) != 0;
    if fault {
        cpu.inject_event(Event::Exception {
            vector: AC_FAULT,
            error_code: Some(0),
        });
    }
    fault
}

/// The guest-physical address of the byte at `linear` for a data access (`write` or a
/// read) through the guest's page tables (`paging`), setting accessed and dirty bits as
/// the processor does; or `None` with #PF queued and CR2 set to `linear`.
pub(super) fn translate<C: X86Ops>(
    cpu: &mut C,
    mem: &mut GuestMemory,
    paging: &PagingRegs,
    linear: u64,
    write: bool,
    rflags: u64,
) -> Option<u64> {
    let access = Access {
        write,
        user: cpu.cpl() == 3,
        fetch: false,
    };
    match walk_with_ac(mem, paging, linear, access, rflags & RFLAGS_AC != 0) {
        Ok(t) => Some(t.gpa),
        Err(fault) => {
            cpu.set_cr2(linear);
            cpu.inject_event(Event::Exception {
                vector: PF_FAULT,
                error_code: Some(fault.error_code),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
