//! IN OUT INS OUTS: one `Exit::Io` per element, completed by the core.

use crate::arith::flags::{DF, VM};
use crate::cpu::{sr, Cpu, InterceptKind};
use crate::decode::{addr_mask, Op};
use crate::exception::{Ex, GP};
use crate::exec::system::intercept;
use iced_x86::OpKind;
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Segment;

/// I/O permission (SDM 1 19.5): free in real mode and when CPL <= IOPL; otherwise (and
/// always in virtual-8086 mode) every bit of the TSS's I/O permission bitmap covering
/// the `size` ports from `port` must be clear. The processor reads the bitmap two bytes
/// at a time, so both must lie inside the TSS limit; a 16-bit TSS has no bitmap.
#[inline(always)]
fn check_io(c: &mut Cpu, mem: &mut GuestMemory, port: u16, size: u8) -> Result<(), Ex> {
    if !c.protected() || (c.rf & VM == 0 && c.cpl <= c.iopl()) {
        return Ok(());
    }
    check_io_bitmap(c, mem, port, size)
}

/// The I/O permission bitmap's part of [`check_io`].
#[cold]
#[inline(never)]
fn check_io_bitmap(c: &mut Cpu, mem: &mut GuestMemory, port: u16, size: u8) -> Result<(), Ex> {
    let tr = c.seg[sr::TR as usize];
    let tss32 = matches!(tr.attr & 0xf, 0x9 | 0xb);
    if tr.attr & Segment::UNUSABLE != 0 || !tss32 || tr.limit < 0x67 {
        return Err(GP(0));
    }
    let map = c.rd_sys(mem, tr.base.wrapping_add(0x66), 2)?;
    let byte = map + u64::from(port / 8);
    if byte + 1 > u64::from(tr.limit) {
        return Err(GP(0));
    }
    let bits = c.rd_sys(mem, tr.base.wrapping_add(byte), 2)?;
    let wanted = ((1u64 << size) - 1) << (port & 7);
    if bits & wanted != 0 {
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
pub fn in_(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = op.size;
    let port = port_of(c, op, 1);
    check_io(c, mem, port, size)?;
    crate::debug::io_access(c, port, size);
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
pub fn out(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = op.size1;
    let port = port_of(c, op, 0);
    check_io(c, mem, port, size)?;
    crate::debug::io_access(c, port, size);
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
    let size = element_size(op);
    // The permission check comes first, even for a REP form with a zero count (which then
    // does nothing), as on Bochs and in KVM's emulator.
    check_io(c, mem, c.gpr[2] as u16, size)?;
    crate::debug::io_access(c, c.gpr[2] as u16, size);
    let amask = addr_mask(&op.i);
    let rep = op.i.has_rep_prefix() || op.i.has_repne_prefix();
    if rep && c.gpr[1] & amask == 0 {
        return Ok(());
    }
    let di = c.gpr[7] & amask;
    // The destination is checked before the port is read: segment, alignment (#AC at
    // CPL 3 with CR0.AM and RFLAGS.AC), then paging, of both pages when the element
    // crosses a page boundary.
    let (gpa, gpa2) = c.probe_write_split(mem, sr::ES, di, u32::from(size), u32::from(size))?;
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
            gpa2,
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
    let size = element_size(op);
    check_io(c, mem, c.gpr[2] as u16, size)?;
    crate::debug::io_access(c, c.gpr[2] as u16, size);
    let amask = addr_mask(&op.i);
    let rep = op.i.has_rep_prefix() || op.i.has_repne_prefix();
    if rep && c.gpr[1] & amask == 0 {
        return Ok(());
    }
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
            gpa2: 0,
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
