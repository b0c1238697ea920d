//! CLC STC CMC CLD STD CLI STI LAHF SAHF SALC.

use crate::arith::flags::{AF, CF, DF, IF, PF, SF, ZF};
use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::{Ex, GP};
use iced_x86::Mnemonic;
use opsvisor_core::mmu::memory::GuestMemory;

/// CLC STC CMC CLD STD.
pub fn simple(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    match op.i.mnemonic() {
        Mnemonic::Clc => c.update_flags(|f| f & !CF),
        Mnemonic::Stc => c.update_flags(|f| f | CF),
        Mnemonic::Cmc => c.update_flags(|f| f ^ CF),
        Mnemonic::Cld => c.update_flags(|f| f & !DF),
        _ => c.update_flags(|f| f | DF),
    }
    Ok(())
}

/// Whether CLI/STI are allowed (IOPL sensitive in protected mode).
fn if_allowed(c: &Cpu) -> Result<(), Ex> {
    if c.protected() && c.cpl > c.iopl() {
        return Err(GP(0));
    }
    Ok(())
}

/// CLI.
pub fn cli(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if_allowed(c)?;
    c.rf &= !IF;
    Ok(())
}

/// STI: sets IF; if IF was clear, interrupts stay blocked until the next instruction
/// retires.
pub fn sti(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if_allowed(c)?;
    if c.rf & IF == 0 {
        c.rf |= IF;
        c.shadow = true;
        c.ss_shadow = false;
        c.brk = true;
    }
    Ok(())
}

/// LAHF (64-bit mode: requires CPUID LAHF-SAHF, which the policy advertises).
pub fn lahf(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    let v = (c.rflags() & (SF | ZF | AF | PF | CF)) | 2;
    c.set(0x10, 1, v);
    Ok(())
}

/// SAHF.
pub fn sahf(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    let m = SF | ZF | AF | PF | CF;
    let ah = (c.gpr[0] >> 8) & 0xff;
    c.set_rflags((c.rflags() & !m) | (ah & m));
    Ok(())
}

/// SALC (undocumented): AL = CF ? 0xff : 0; #UD in 64-bit mode.
pub fn salc(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if c.long64() {
        return Err(crate::exception::ud());
    }
    let v = if c.rflags() & CF != 0 { 0xff } else { 0 };
    c.set(0, 1, v);
    Ok(())
}
