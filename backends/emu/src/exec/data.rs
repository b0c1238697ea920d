//! MOV, MOVZX, MOVSX(D), MOVBE, LEA, XCHG, CMPXCHG(8B/16B), XADD, the sign extensions,
//! CMOVcc, SETcc, XLAT.

use super::{ea, load, rd, rd_rmw, store, wr};
use crate::arith::alu::{alu, AluOp};
use crate::arith::bits::{bswap, swap16};
use crate::arith::flags::{sign_extend, ZF};
use crate::cpu::{sr, Cpu, Intercept, InterceptKind};
use crate::decode::{Handler, Op};
use crate::exception::{ud, Ex, GP};
use iced_x86::{Mnemonic, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

/// MOV r, r (operand size `S`).
pub fn mov_rr<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = c.get_s::<S>(op.r[1]);
    c.set_s::<S>(op.r[0], v);
    Ok(())
}

/// MOV r, imm (operand size `S`).
pub fn mov_ri<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.set_s::<S>(op.r[0], op.imm);
    Ok(())
}

/// MOV r, m (operand size `S`).
pub fn mov_load<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    match load::<S>(c, mem, op) {
        Ok(v) => {
            c.set_s::<S>(op.r[0], v);
            Ok(())
        }
        Err(Ex::Exit) => Err(mmio_load_exit(c, op, S)),
        Err(e) => Err(e),
    }
}

/// A load exited: when it is the instruction's MMIO read of all its bytes and nothing asks
/// for the instruction to run again (single-stepping, RF), the core's value completes it
/// directly (see [`InterceptKind::MmioLoad`]); otherwise it is replayed as any MMIO
/// access.
#[cold]
#[inline(never)]
fn mmio_load_exit(c: &mut Cpu, op: &Op, size: u8) -> Ex {
    // The whole load in one read: a load split across two pages (or across the end of
    // RAM) reads its parts separately, and is replayed.
    let read = matches!(
        c.exit,
        opsvisor_core::exit::Exit::Mmio {
            direction: opsvisor_core::exit::Direction::Read,
            size: s,
            ..
        } if s == size
    );
    let replaying = c.mmio.len != 0;
    let stepping = c.rf & (crate::arith::flags::TF | crate::arith::flags::RF) != 0;
    if read && !replaying && !stepping && !op.fused {
        c.intercept = Some(Intercept {
            next_ip: op.next_ip,
            kind: InterceptKind::MmioLoad { reg: op.r[0], size },
        });
    }
    Ex::Exit
}

/// MOV m, r (operand size `S`).
pub fn mov_store<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = c.get_s::<S>(op.r[1]);
    store::<S>(c, mem, op, v)
}

/// MOV m, imm (operand size `S`).
pub fn mov_mi<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    store::<S>(c, mem, op, op.imm)
}

/// MOVZX r, m8|m16 (`D`: destination size, `S`: source size).
pub fn movzx_rm<const D: u8, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let v = load::<S>(c, mem, op)?;
    c.set_s::<D>(op.r[0], v);
    Ok(())
}

/// MOVZX r, r8|r16 (`D`: destination size, `S`: source size).
pub fn movzx_rr<const D: u8, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let v = c.get_s::<S>(op.r[1]);
    c.set_s::<D>(op.r[0], v);
    Ok(())
}

/// MOVSX / MOVSXD r, m (`D`: destination size, `S`: source size).
pub fn movsx_rm<const D: u8, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let v = load::<S>(c, mem, op)?;
    c.set_s::<D>(op.r[0], sign_extend(u32::from(S), v));
    Ok(())
}

/// MOVSX / MOVSXD r, r (`D`: destination size, `S`: source size).
pub fn movsx_rr<const D: u8, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let v = c.get_s::<S>(op.r[1]);
    c.set_s::<D>(op.r[0], sign_extend(u32::from(S), v));
    Ok(())
}

/// The MOVZX/MOVSX handler for destination size `d` and source size `s` from register
/// (`reg`) or memory, if the sizes are a form the instruction has.
pub fn pick_extend(sign: bool, reg: bool, d: u8, s: u8) -> Option<crate::decode::Handler> {
    macro_rules! forms {
        ($rr:ident, $rm:ident) => {
            match (reg, d, s) {
                (true, 2, 1) => $rr::<2, 1> as crate::decode::Handler,
                (true, 4, 1) => $rr::<4, 1>,
                (true, 8, 1) => $rr::<8, 1>,
                (true, 4, 2) => $rr::<4, 2>,
                (true, 8, 2) => $rr::<8, 2>,
                (false, 2, 1) => $rm::<2, 1>,
                (false, 4, 1) => $rm::<4, 1>,
                (false, 8, 1) => $rm::<8, 1>,
                (false, 4, 2) => $rm::<4, 2>,
                (false, 8, 2) => $rm::<8, 2>,
                _ if !sign => return None,
                (true, 8, 4) => $rr::<8, 4>,
                (false, 8, 4) => $rm::<8, 4>,
                _ => return None,
            }
        };
    }
    Some(if sign {
        forms!(movsx_rr, movsx_rm)
    } else {
        forms!(movzx_rr, movzx_rm)
    })
}

/// MOV, other forms (moffs, m/imm).
pub fn mov(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let v = rd(c, mem, op, 1, size)?;
    wr(c, mem, op, 0, size, v)
}

/// MOVZX r, r/m8|16.
pub fn movzx(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = rd(c, mem, op, 1, u32::from(op.size1))?;
    c.set(op.r[0], u32::from(op.size), v);
    Ok(())
}

/// MOVSX / MOVSXD r, r/m.
pub fn movsx(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s1 = u32::from(op.size1);
    let v = rd(c, mem, op, 1, s1)?;
    c.set(op.r[0], u32::from(op.size), sign_extend(s1, v));
    Ok(())
}

/// MOVSXD r16, m16 (operand-size prefix with REX.W clear). The vendors differ: Intel
/// documents a 16-bit load; AMD's processors (the reference the oracle was run on) read
/// four bytes, as the 32-bit form does, so the access faults when bytes 2-3 are not
/// readable. This follows AMD; the destination takes the low 16 bits either way.
pub fn movsxd16_load(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = rd(c, mem, op, 1, 4)?;
    c.set(op.r[0], 2, v);
    Ok(())
}

/// MOVBE r, m / m, r. The 16-bit form swaps the two bytes of the operand (unlike BSWAP
/// r16, whose result is undefined).
pub fn movbe(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let v = rd(c, mem, op, 1, size)?;
    let v = if size == 2 { swap16(v) } else { bswap(size, v) };
    wr(c, mem, op, 0, size, v)
}

/// LEA r, m (operand size `S`).
pub fn lea<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let a = ea(c, op);
    c.set_s::<S>(op.r[0], a);
    Ok(())
}

/// XCHG r, r (operand size `S`): two registers, no memory and so no locked access; the
/// register forms of [`xchg`] without its per-operand dispatch. A 32-bit exchange
/// zero-extends both registers, XCHG EAX, EAX (`87 C0`) included.
pub fn xchg_rr<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let a = c.get_s::<S>(op.r[0]);
    let b = c.get_s::<S>(op.r[1]);
    c.set_s::<S>(op.r[0], b);
    c.set_s::<S>(op.r[1], a);
    Ok(())
}

/// XCHG (implicitly locked with memory: a single vCPU makes that ordinary).
pub fn xchg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd_rmw(c, mem, op, 0, size)?;
    let b = rd(c, mem, op, 1, size)?;
    wr(c, mem, op, 0, size, b)?;
    wr(c, mem, op, 1, size, a)
}

/// CMPXCHG r/m, r.
///
/// When the comparison fails, a memory destination is written back unchanged (both
/// vendors document the write cycle, so the access faults as a write). A register
/// destination is not written: Intel's pseudocode writes the old value back, which for a
/// 32-bit register would clear bits 63:32, but AMD processors (the reference the oracle
/// was run on) leave the register untouched, all 64 bits. This follows AMD.
pub fn cmpxchg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let dst = rd_rmw(c, mem, op, 0, size)?;
    let acc = c.get(0, size);
    let (_, f) = alu(AluOp::Sub, size, acc, dst, c.rflags());
    if f & ZF != 0 {
        let src = c.get(op.r[1], size);
        wr(c, mem, op, 0, size, src)?;
    } else {
        if op.i.op_kind(0) == OpKind::Memory {
            wr(c, mem, op, 0, size, dst)?;
        }
        c.set(0, size, dst);
    }
    c.set_rflags(f);
    Ok(())
}

/// CMPXCHG8B / CMPXCHG16B m.
pub fn cmpxchg_wide(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if op.i.op_kind(0) != OpKind::Memory {
        return Err(ud());
    }
    let wide = op.i.mnemonic() == Mnemonic::Cmpxchg16b;
    let half = if wide { 8 } else { 4 };
    let a = ea(c, op);
    if wide && a & 15 != 0 {
        return Err(GP(0));
    }
    // CMPXCHG8B is one 8-byte access for alignment checking.
    let la = c.linear(op.seg, a, 2 * half, true)?;
    c.check_alignment(la, 2 * half)?;
    // The whole operand is written either way, so both halves are checked as writes.
    let lo = c.rd_rmw(mem, op.seg, a, half)?;
    let hi = c.rd_rmw(
        mem,
        op.seg,
        a.wrapping_add(u64::from(half)) & op.amask,
        half,
    )?;
    let (dlo, dhi) = (c.get(0, half), c.get(2, half));
    if lo == dlo && hi == dhi {
        let (blo, bhi) = (c.get(3, half), c.get(1, half));
        c.wr(mem, op.seg, a, half, blo)?;
        c.wr(
            mem,
            op.seg,
            a.wrapping_add(u64::from(half)) & op.amask,
            half,
            bhi,
        )?;
        c.update_flags(|f| f | ZF);
    } else {
        c.wr(mem, op.seg, a, half, lo)?;
        c.set(0, half, lo);
        c.set(2, half, hi);
        c.update_flags(|f| f & !ZF);
    }
    Ok(())
}

/// XADD r/m, r: SRC := DEST, then DEST := the sum, so with the same register for both
/// the sum is what remains.
pub fn xadd(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let d = rd_rmw(c, mem, op, 0, size)?;
    let s = c.get(op.r[1], size);
    let (r, f) = alu(AluOp::Add, size, d, s, c.rflags());
    if op.i.op_kind(0) == OpKind::Memory {
        // The store may fault: it goes first, so a fault leaves the register unchanged.
        wr(c, mem, op, 0, size, r)?;
        c.set(op.r[1], size, d);
    } else {
        c.set(op.r[1], size, d);
        c.set(op.r[0], size, r);
    }
    c.set_rflags(f);
    Ok(())
}

/// CBW / CWDE / CDQE.
pub fn cbw(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let (from, to) = match op.i.mnemonic() {
        Mnemonic::Cbw => (1, 2),
        Mnemonic::Cwde => (2, 4),
        _ => (4, 8),
    };
    let v = sign_extend(from, c.gpr[0]);
    c.set(0, to, v);
    Ok(())
}

/// CWD / CDQ / CQO.
pub fn cwd(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = match op.i.mnemonic() {
        Mnemonic::Cwd => 2,
        Mnemonic::Cdq => 4,
        _ => 8,
    };
    let neg = sign_extend(size, c.gpr[0]) as i64 >> 63;
    c.set(2, size, neg as u64);
    Ok(())
}

/// CMOVcc r, r/m (the source is read even when the condition is false; a 32-bit
/// destination is zero-extended either way).
pub fn cmov(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let v = rd(c, mem, op, 1, size)?;
    let v = if c.cond(op.aux) {
        v
    } else {
        c.get(op.r[0], size)
    };
    c.set(op.r[0], size, v);
    Ok(())
}

/// CMOVcc r, r/m with the operand size `S` and the source's kind (`MEM`) chosen at
/// decode: [`cmov`] without matching on the operands per execution. A memory source is
/// read whatever the condition (it faults either way), and a 32-bit destination has its
/// upper half cleared either way.
pub fn cmov_s<const MEM: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let v = if MEM {
        load::<S>(c, mem, op)?
    } else {
        c.get_s::<S>(op.r[1])
    };
    let v = if c.cond(op.aux) {
        v
    } else {
        c.get_s::<S>(op.r[0])
    };
    c.set_s::<S>(op.r[0], v);
    Ok(())
}

/// The handler of a CMOVcc.
pub fn pick_cmov(op: &Op) -> Handler {
    let form_ok = op.i.op_count() == 2
        && op.i.op_kind(0) == OpKind::Register
        && matches!(op.size, 2 | 4 | 8)
        && match op.i.op_kind(1) {
            OpKind::Register => true,
            OpKind::Memory => op.i.memory_size().size() == usize::from(op.size),
            _ => false,
        };
    match (form_ok, op.i.op_kind(1) == OpKind::Memory) {
        (false, _) => cmov,
        (true, false) => super::sized!(cmov_s::<false>, op.size),
        (true, true) => super::sized!(cmov_s::<true>, op.size),
    }
}

/// SETcc r8.
pub fn setcc_r(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = u64::from(c.cond(op.aux));
    c.set_s::<1>(op.r[0], v);
    Ok(())
}

/// SETcc m8.
pub fn setcc_m(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = u64::from(c.cond(op.aux));
    store::<1>(c, mem, op, v)
}

/// The handler of a SETcc.
pub fn pick_setcc(op: &Op) -> Handler {
    match op.i.op_kind(0) {
        OpKind::Register if op.size == 1 => setcc_r,
        OpKind::Memory if op.i.memory_size().size() == 1 => setcc_m,
        _ => setcc,
    }
}

/// SETcc r/m8.
pub fn setcc(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let v = u64::from(c.cond(op.aux));
    wr(c, mem, op, 0, 1, v)
}

/// XLAT: AL = [seg:rBX + AL].
pub fn xlat(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let amask = match op.i.memory_base() {
        r if r.is_gpr16() => 0xffff,
        r if r.is_gpr32() => 0xffff_ffff,
        _ => u64::MAX,
    };
    let a = c.gpr[3].wrapping_add(c.gpr[0] & 0xff) & amask;
    let seg = if op.seg == sr::CS { sr::CS } else { op.seg };
    let v = c.rd(mem, seg, a, 1)?;
    c.set(0, 1, v);
    Ok(())
}
