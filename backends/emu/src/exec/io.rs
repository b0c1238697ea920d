//! IN OUT INS OUTS: one `Exit::Io` per element, completed by the core.

use crate::arith::flags::DF;
use crate::cpu::{sr, Cpu, InterceptKind};
use crate::decode::{addr_mask, Op};
use crate::exception::{Ex, GP};
use crate::exec::system::intercept;
use iced_x86::OpKind;
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::mmu::memory::GuestMemory;

/// I/O permission: CPL <= IOPL in protected mode (the TSS bitmap is not consulted: a
/// guest that lowers IOPL gets #GP for every port).
fn check_io(c: &Cpu) -> Result<(), Ex> {
    if c.protected() && c.cpl > c.iopl() {
        return Err(GP(0));
    }
    Ok(())
}

fn port_of(c: &Cpu, op: &Op, n: u32) -> u16 {
    if op.i.op_kind(n) == OpKind::Register {
        c.gpr[2] as u16
    } else {
        op.imm as u16
    }
}

/// IN AL/AX/EAX, imm8/DX.
pub fn in_(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    check_io(c)?;
    let size = op.size;
    let port = port_of(c, op, 1);
    intercept(
        c,
        op,
        InterceptKind::In { size },
        Exit::Io {
            port,
            size,
            direction: Direction::Read,
            data: 0,
        },
    )
}

/// OUT imm8/DX, AL/AX/EAX.
pub fn out(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    check_io(c)?;
    let size = op.size1;
    let port = port_of(c, op, 0);
    let data = c.get(0, u32::from(size)) as u32;
    intercept(
        c,
        op,
        InterceptKind::Plain,
        Exit::Io {
            port,
            size,
            direction: Direction::Write,
            data,
        },
    )
}

fn element_size(op: &Op) -> u8 {
    match op.i.mnemonic() {
        iced_x86::Mnemonic::Insb | iced_x86::Mnemonic::Outsb => 1,
        iced_x86::Mnemonic::Insw | iced_x86::Mnemonic::Outsw => 2,
        _ => 4,
    }
}

/// INS m, DX (with REP: one exit per element).
pub fn ins(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    check_io(c)?;
    let amask = addr_mask(&op.i);
    let rep = op.i.has_rep_prefix() || op.i.has_repne_prefix();
    if rep && c.gpr[1] & amask == 0 {
        return Ok(());
    }
    let size = element_size(op);
    let di = c.gpr[7] & amask;
    // The destination is checked before the port is read.
    let gpa = c.probe_write(mem, sr::ES, di, u32::from(size))?;
    let port = c.gpr[2] as u16;
    intercept(
        c,
        op,
        InterceptKind::Str {
            size,
            ins: true,
            rep,
            amask,
            gpa,
        },
        Exit::Io {
            port,
            size,
            direction: Direction::Read,
            data: 0,
        },
    )
}

/// OUTS DX, m (with REP: one exit per element).
pub fn outs(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    check_io(c)?;
    let amask = addr_mask(&op.i);
    let rep = op.i.has_rep_prefix() || op.i.has_repne_prefix();
    if rep && c.gpr[1] & amask == 0 {
        return Ok(());
    }
    let size = element_size(op);
    let si = c.gpr[6] & amask;
    let data = c.rd(mem, op.seg, si, u32::from(size))? as u32;
    let port = c.gpr[2] as u16;
    intercept(
        c,
        op,
        InterceptKind::Str {
            size,
            ins: false,
            rep,
            amask,
            gpa: 0,
        },
        Exit::Io {
            port,
            size,
            direction: Direction::Write,
            data,
        },
    )
}

/// Advance the string registers after one completed INS/OUTS element; returns whether
/// the instruction is finished (RIP may move on).
pub fn string_io_step(c: &mut Cpu, size: u8, ins: bool, rep: bool, amask: u64) -> bool {
    let delta = if c.rf & DF != 0 {
        (u64::from(size)).wrapping_neg()
    } else {
        u64::from(size)
    };
    let r = if ins { 7 } else { 6 };
    c.gpr[r] = crate::cpu::addr_reg_write(c.gpr[r], c.gpr[r].wrapping_add(delta), amask);
    if !rep {
        return true;
    }
    let cx = c.gpr[1].wrapping_sub(1) & amask;
    c.gpr[1] = crate::cpu::addr_reg_write(c.gpr[1], cx, amask);
    cx == 0
}
