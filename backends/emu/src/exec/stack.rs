//! PUSH POP PUSHF POPF PUSHA POPA ENTER LEAVE.

use super::{ea, rd};
use crate::arith::flags::{AC, ID, IF, IOPL, NT, RF, TF, VM};
use crate::cpu::{sr, Cpu};
use crate::decode::Op;
use crate::exception::{ud, Ex, GP};
use iced_x86::OpKind;
use opsvisor_core::mmu::memory::GuestMemory;

/// The push/pop size of a stack instruction.
#[inline(always)]
fn stack_size(op: &Op) -> u32 {
    op.i.stack_pointer_increment().unsigned_abs()
}

/// PUSH r (operand size `S`).
pub fn push_r<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = c.get_s::<S>(op.r[0]);
    c.push(mem, v, u32::from(S))
}

/// POP r (operand size `S`).
pub fn pop_r<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = c.pop(mem, u32::from(S))?;
    c.set_s::<S>(op.r[0], v);
    Ok(())
}

/// PUSH m / imm.
pub fn push(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = stack_size(op);
    let v = if op.i.op_kind(0) == OpKind::Memory {
        rd(c, mem, op, 0, size)?
    } else {
        op.imm
    };
    c.push(mem, v, size)
}

/// POP m (the address is computed with RSP already incremented).
pub fn pop(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = stack_size(op);
    let old = c.gpr[4];
    let v = c.pop(mem, size)?;
    let a = ea(c, op);
    if let Err(e) = c.wr(mem, op.seg, a, size, v) {
        c.gpr[4] = old;
        return Err(e);
    }
    Ok(())
}

/// PUSHF/PUSHFD/PUSHFQ (VM and RF are pushed as 0).
pub fn pushf(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.rf & VM != 0 && c.iopl() < 3 {
        return Err(GP(0));
    }
    let size = stack_size(op);
    c.push(mem, c.rflags() & !(VM | RF), size)
}

/// The RFLAGS bits POPF and IRET may change at the current privilege.
pub fn writable_flags(c: &Cpu, size: u32) -> u64 {
    let mut m = crate::arith::flags::ARITH
        | crate::arith::flags::TF
        | crate::arith::flags::DF
        | NT
        | AC
        | ID;
    if !c.protected() || c.cpl == 0 {
        m |= IOPL | IF;
    } else if c.cpl <= c.iopl() {
        m |= IF;
    }
    if size == 2 {
        m &= 0xffff;
    }
    m
}

/// POPF/POPFD/POPFQ.
pub fn popf(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.rf & VM != 0 && c.iopl() < 3 {
        return Err(GP(0));
    }
    let size = stack_size(op);
    let v = c.pop(mem, size)?;
    let m = writable_flags(c, size);
    let old = c.rflags();
    c.set_rflags(((c.rflags() & !m) | (v & m) | 2) & !RF);
    // AC may have changed: the SMAP override picks the TLB class.
    c.update_sel();
    if (old & IF == 0 && c.rf & IF != 0) || (old ^ c.rflags()) & TF != 0 {
        // A newly opened interrupt window, or single-stepping switched on or off, must
        // be noticed at the next instruction boundary, not at the end of the block.
        c.brk = true;
    }
    Ok(())
}

/// PUSHA/PUSHAD (#UD in 64-bit mode).
pub fn pusha(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.long64() {
        return Err(ud());
    }
    let size = u32::from(op.size.max(2));
    let size = if op.i.stack_pointer_increment() == -16 {
        2
    } else {
        size.max(4)
    };
    let sp = c.gpr[4];
    let save = c.gpr[4];
    for r in 0..8usize {
        let v = if r == 4 { sp } else { c.gpr[r] };
        if let Err(e) = c.push(mem, v, size) {
            c.gpr[4] = save;
            return Err(e);
        }
    }
    Ok(())
}

/// POPA/POPAD (#UD in 64-bit mode; the saved SP is skipped).
pub fn popa(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.long64() {
        return Err(ud());
    }
    let size = if op.i.stack_pointer_increment() == 16 {
        2
    } else {
        4
    };
    let mut vals = [0u64; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = c.peek(mem, k as u64, size)?;
    }
    for (k, v) in vals.iter().enumerate() {
        let r = 7 - k;
        if r != 4 {
            c.set(r as u8, size, *v);
        }
    }
    let m = c.stack_mask();
    c.gpr[4] = (c.gpr[4] & !m) | (c.gpr[4].wrapping_add(u64::from(size) * 8) & m);
    Ok(())
}

/// ENTER imm16, imm8.
pub fn enter(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = if c.long64() {
        if op.i.op_count() > 0 && op.size == 2 {
            2
        } else {
            8
        }
    } else {
        u32::from(op.size).clamp(2, 4)
    };
    let size = match op.i.code() {
        iced_x86::Code::Enterw_imm16_imm8 => 2,
        iced_x86::Code::Enterd_imm16_imm8 => 4,
        iced_x86::Code::Enterq_imm16_imm8 => 8,
        _ => size,
    };
    let alloc = u64::from(op.i.immediate16());
    let level = u64::from(op.i.immediate8_2nd() & 31);
    let save_sp = c.gpr[4];
    let save_bp = c.gpr[5];
    let r = (|| {
        c.push(mem, c.get(5, size), size)?;
        let frame = c.gpr[4];
        let m = c.stack_mask();
        let mut bp = c.gpr[5];
        for _ in 1..level.max(1) {
            if level == 0 {
                break;
            }
            bp = bp.wrapping_sub(u64::from(size));
            let v = c.rd(mem, sr::SS, bp & m, size)?;
            c.push(mem, v, size)?;
        }
        if level > 0 {
            c.push(mem, frame, size)?;
        }
        c.set(5, size, frame);
        c.gpr[4] = (c.gpr[4] & !m) | (c.gpr[4].wrapping_sub(alloc) & m);
        // Check the new stack top as an operand-size write so a #AC/#PF/#SS happens now,
        // as on the processor (which reports it as a write: W=1 in the #PF error code).
        let top = c.gpr[4] & m;
        let la = c.linear(sr::SS, top, size, true)?;
        c.check_alignment(la, size)?;
        c.probe_write(mem, sr::SS, top, size)?;
        Ok(())
    })();
    if r.is_err() {
        c.gpr[4] = save_sp;
        c.gpr[5] = save_bp;
    }
    r
}

/// LEAVE.
pub fn leave(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = match op.i.code() {
        iced_x86::Code::Leavew => 2,
        iced_x86::Code::Leaved => 4,
        _ => 8,
    };
    let m = c.stack_mask();
    let save = c.gpr[4];
    c.gpr[4] = (c.gpr[4] & !m) | (c.gpr[5] & m);
    match c.pop(mem, size) {
        Ok(v) => {
            c.set(5, size, v);
            Ok(())
        }
        Err(e) => {
            c.gpr[4] = save;
            Err(e)
        }
    }
}
