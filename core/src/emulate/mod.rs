//! What the hardware backends (VMX, SVM) share to complete an exit whose instruction the
//! processor does not describe fully: fetching the instruction at the guest's RIP
//! through the guest's page tables, its length, the operand of an MMIO access
//! ([`mmio`]) and string port I/O one element per exit ([`string_io`]). KVM keeps the
//! same in common code (`arch/x86/kvm/emulate.c`, `x86.c`); here it is one
//! implementation for both vendors. Everything here runs on the exit path: no
//! allocation, no dynamic dispatch.

mod address;
pub mod debug_trap;
pub mod mmio;
pub mod string_io;
pub mod strings;

use crate::arch::EFER_LMA;
use crate::mmu::memory::GuestMemory;
use crate::mmu::walk::{walk, Access, PagingRegs};
use crate::ops::{SegReg, Segment, X86Ops};
use iced_x86::{Decoder, Instruction};

/// The longest x86 instruction, in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 15;

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

/// Up to 15 bytes of the instruction at the guest's CS:RIP, read through the guest's
/// page tables (`paging`: the control registers the processor translates with, which a
/// backend may hold apart from the ones the guest reads); fewer when the instruction
/// runs into memory that is not RAM or not mapped. Returns how many bytes were read.
pub fn fetch_instruction<C: X86Ops>(
    cpu: &C,
    mem: &mut GuestMemory,
    paging: &PagingRegs,
    buf: &mut [u8; MAX_INSTRUCTION_LEN],
) -> usize {
    let long = paging.efer & EFER_LMA != 0;
    let cs = cpu.segment(SegReg::Cs);
    let mut linear = cs.base.wrapping_add(cpu.rip());
    if !(long && cs.attr & Segment::L != 0) {
        linear &= 0xffff_ffff;
    }
    let access = Access {
        fetch: true,
        user: cpu.cpl() == 3,
        ..Access::default()
    };
    let mut done = 0;
    while done < buf.len() {
        let at = linear.wrapping_add(done as u64);
        let Ok(t) = walk(mem, paging, at, access) else {
            break;
        };
        let in_page = (4096 - (at & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        let Some(dst) = buf.get_mut(done..done + n) else {
            break;
        };
        if mem.read(t.gpa, dst).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// The length of the instruction at the start of `bytes` for a code size of `bitness`
/// (16, 32 or 64), decoded with iced's `options` (`DecoderOptions::AMD` on an AMD
/// processor, where for instance LOCK MOV CR0 is MOV CR8), or `None` when the bytes do
/// not hold a whole valid instruction. Backends whose processor does not report the next
/// RIP (SVM without NRIP save) retire an intercepted instruction with it.
pub fn instruction_length(bytes: &[u8], bitness: u32, options: u32) -> Option<u8> {
    let mut decoder = Decoder::try_new(bitness, bytes, options).ok()?;
    if !decoder.can_decode() {
        return None;
    }
    let mut insn = Instruction::default();
    decoder.decode_out(&mut insn);
    if insn.is_invalid() {
        return None;
    }
    u8::try_from(insn.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use iced_x86::DecoderOptions;

    const NONE: u32 = DecoderOptions::NONE;

    #[test]
    fn lengths_include_prefixes_and_operands() {
        // CPUID; CPUID with an operand-size prefix; RDMSR; HLT; WRMSR.
        assert_eq!(instruction_length(&[0x0f, 0xa2, 0x90], 64, NONE), Some(2));
        assert_eq!(instruction_length(&[0x66, 0x0f, 0xa2], 32, NONE), Some(3));
        assert_eq!(instruction_length(&[0x0f, 0x32], 16, NONE), Some(2));
        assert_eq!(instruction_length(&[0xf4], 16, NONE), Some(1));
        // OUT imm8, AL; IN EAX, DX.
        assert_eq!(instruction_length(&[0xe6, 0x80], 32, NONE), Some(2));
        assert_eq!(instruction_length(&[0xed], 64, NONE), Some(1));
        // VMMCALL, XSETBV, WBINVD.
        assert_eq!(instruction_length(&[0x0f, 0x01, 0xd9], 64, NONE), Some(3));
        assert_eq!(instruction_length(&[0x0f, 0x01, 0xd1], 32, NONE), Some(3));
        assert_eq!(instruction_length(&[0x0f, 0x09], 16, NONE), Some(2));
        // Truncated, empty, invalid, a bad code size.
        assert_eq!(instruction_length(&[0x0f], 64, NONE), None);
        assert_eq!(instruction_length(&[], 64, NONE), None);
        assert_eq!(instruction_length(&[0x0f, 0xff], 64, NONE), None);
        assert_eq!(instruction_length(&[0x90], 8, NONE), None);
        // LOCK MOV CR0, EDI is AMD's MOV CR8 in 32-bit code, #UD on Intel.
        assert_eq!(
            instruction_length(&[0xf0, 0x0f, 0x22, 0xc7], 32, NONE),
            None
        );
        assert_eq!(
            instruction_length(&[0xf0, 0x0f, 0x22, 0xc7], 32, DecoderOptions::AMD),
            Some(4)
        );
    }
}
