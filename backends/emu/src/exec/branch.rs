//! Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPE/LOOPNE, JCXZ/JECXZ/JRCXZ.

use super::rd;
use crate::arith::flags::ZF;
use crate::cpu::Cpu;
use crate::decode::{addr_mask, Handler, Op};
use crate::exception::{Ex, GP};
use iced_x86::Mnemonic;
use opsvisor_core::mmu::memory::GuestMemory;

/// Check a new RIP: canonical in 64-bit mode, inside CS's limit elsewhere.
#[inline(always)]
pub fn check_target(c: &Cpu, target: u64) -> Result<(), Ex> {
    if c.bits == 64 {
        if !c.canonical(target) {
            return Err(GP(0));
        }
    } else if c.protected() && target > u64::from(c.seg[crate::cpu::sr::CS as usize].limit) {
        return Err(GP(0));
    }
    Ok(())
}

/// The operand size of a near branch from its push/pop width (CALL/RET) or target form.
#[inline(always)]
fn branch_size(op: &Op) -> u32 {
    op.i.stack_pointer_increment().unsigned_abs().max(2)
}

/// JMP rel (the target is in `op.imm`, see [`super::select`]).
pub fn jmp_rel(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let t = op.imm;
    check_target(c, t)?;
    c.rip = t;
    Ok(())
}

/// JMP r/m.
pub fn jmp_ind(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let t = rd(c, mem, op, 0, size)?;
    check_target(c, t)?;
    c.rip = t;
    Ok(())
}

/// Jcc rel, specialised per condition (the target is in `op.imm`).
pub fn jcc<const CC: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.cond(CC) {
        let t = op.imm;
        check_target(c, t)?;
        c.rip = t;
    }
    Ok(())
}

/// The Jcc handler for condition index `cc`.
pub fn jcc_for(cc: u8) -> Handler {
    const T: [Handler; 17] = [
        jcc::<0>, jcc::<1>, jcc::<2>, jcc::<3>, jcc::<4>, jcc::<5>, jcc::<6>, jcc::<7>, jcc::<8>,
        jcc::<9>, jcc::<10>, jcc::<11>, jcc::<12>, jcc::<13>, jcc::<14>, jcc::<15>, jcc::<16>,
    ];
    T[usize::from(cc) % 17]
}

/// CALL rel (the target is in `op.imm`).
pub fn call_rel(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let t = op.imm;
    check_target(c, t)?;
    c.push(mem, op.next_ip, branch_size(op))?;
    c.rip = t;
    Ok(())
}

/// CALL r/m.
pub fn call_ind(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = branch_size(op);
    let t = rd(c, mem, op, 0, size)?;
    check_target(c, t)?;
    c.push(mem, op.next_ip, size)?;
    c.rip = t;
    Ok(())
}

/// RET / RET imm16.
pub fn ret(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = match op.i.code() {
        iced_x86::Code::Retnw | iced_x86::Code::Retnw_imm16 => 2,
        iced_x86::Code::Retnd | iced_x86::Code::Retnd_imm16 => 4,
        _ => 8,
    };
    let save = c.gpr[4];
    let t = c.pop(mem, size)?;
    if let Err(e) = check_target(c, t) {
        c.gpr[4] = save;
        return Err(e);
    }
    if op.i.op_count() > 0 {
        let m = c.stack_mask();
        c.gpr[4] = (c.gpr[4] & !m) | (c.gpr[4].wrapping_add(op.imm & 0xffff) & m);
    }
    c.rip = t;
    Ok(())
}

/// LOOP / LOOPE / LOOPNE.
pub fn loop_(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = addr_mask(&op.i);
    let cx = c.gpr[1].wrapping_sub(1) & m;
    let taken = cx != 0
        && match op.i.mnemonic() {
            Mnemonic::Loope => c.rflags() & ZF != 0,
            Mnemonic::Loopne => c.rflags() & ZF == 0,
            _ => true,
        };
    let t = op.i.near_branch_target();
    if taken {
        check_target(c, t)?;
    }
    c.gpr[1] = crate::cpu::addr_reg_write(c.gpr[1], cx, m);
    if taken {
        c.rip = t;
    }
    Ok(())
}

/// JCXZ / JECXZ / JRCXZ.
pub fn jcxz(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.gpr[1] & addr_mask(&op.i) == 0 {
        let t = op.i.near_branch_target();
        check_target(c, t)?;
        c.rip = t;
    }
    Ok(())
}
