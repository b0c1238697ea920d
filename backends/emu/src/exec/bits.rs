//! BT BTS BTR BTC, BSF BSR TZCNT LZCNT POPCNT, BSWAP, BMI1/BMI2 and ADX.

use super::{ea, rd, wr};
use crate::arith::bits as b;
use crate::arith::flags::sign_extend;
use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::Ex;
use iced_x86::{Mnemonic, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

/// BT/BTS/BTR/BTC r/m, r/imm8. A register bit offset on a memory operand addresses
/// memory outside the operand (signed, in operand-size units).
pub fn bt(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let m = op.i.mnemonic();
    let reg_off = op.i.op_kind(1) == OpKind::Register;
    let bit = if reg_off {
        c.get(op.r[1], size)
    } else {
        op.imm & u64::from(size * 8 - 1)
    };
    if op.i.op_kind(0) == OpKind::Register {
        let v = c.get(op.r[0], size);
        let (r, f) = apply(m, size, v, bit, c.rflags());
        if m != Mnemonic::Bt {
            c.set(op.r[0], size, r);
        }
        c.set_rflags(f);
        return Ok(());
    }
    let mut addr = ea(c, op);
    let mut bit = bit;
    if reg_off {
        let sbit = sign_extend(size, bit) as i64;
        let width = i64::from(size * 8);
        let unit = sbit.div_euclid(width);
        addr = addr.wrapping_add((unit * i64::from(size)) as u64) & op.amask;
        bit = sbit.rem_euclid(width) as u64;
    }
    // BTS/BTR/BTC write the operand back: their read is checked as a write.
    let v = if m == Mnemonic::Bt {
        c.rd(mem, op.seg, addr, size)?
    } else {
        c.rd_rmw(mem, op.seg, addr, size)?
    };
    let (r, f) = apply(m, size, v, bit, c.rflags());
    if m != Mnemonic::Bt {
        c.wr(mem, op.seg, addr, size, r)?;
    }
    c.set_rflags(f);
    Ok(())
}

fn apply(m: Mnemonic, size: u32, v: u64, bit: u64, f: u64) -> (u64, u64) {
    match m {
        Mnemonic::Bts => b::bts(size, v, bit, f),
        Mnemonic::Btr => b::btr(size, v, bit, f),
        Mnemonic::Btc => b::btc(size, v, bit, f),
        _ => (v, b::bt(size, v, bit, f)),
    }
}

/// BSF BSR TZCNT LZCNT POPCNT r, r/m.
pub fn scan(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let src = rd(c, mem, op, 1, size)?;
    let old = c.get(op.r[0], size);
    let (r, f) = match op.i.mnemonic() {
        Mnemonic::Bsf => b::bsf(size, src, old, c.rflags()),
        Mnemonic::Bsr => b::bsr(size, src, old, c.rflags()),
        Mnemonic::Tzcnt => b::tzcnt(size, src, c.rflags()),
        Mnemonic::Lzcnt => b::lzcnt(size, src, c.rflags()),
        _ => b::popcnt(size, src, c.rflags()),
    };
    // BSF/BSR with a zero source leave the destination unwritten: all 64 bits stay, even
    // for a 32-bit destination (AMD documents the destination as unchanged; Intel calls it
    // undefined, and the host, the oracle's reference, does not zero-extend). TZCNT and
    // LZCNT always write the operand size, POPCNT too.
    let keep = src == 0 && matches!(op.i.mnemonic(), Mnemonic::Bsf | Mnemonic::Bsr);
    if !keep {
        c.set(op.r[0], size, r);
    }
    c.set_rflags(f);
    Ok(())
}

/// BSWAP r32/r64.
pub fn bswap(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let v = c.get(op.r[0], size);
    c.set(op.r[0], size, b::bswap(size, v));
    Ok(())
}

/// ANDN BEXTR BLSI BLSMSK BLSR BZHI PDEP PEXT.
pub fn bmi(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let f = c.rflags();
    let (r, nf) = match op.i.mnemonic() {
        Mnemonic::Andn => b::andn(size, c.get(op.r[1], size), rd(c, mem, op, 2, size)?, f),
        Mnemonic::Bextr => b::bextr(size, rd(c, mem, op, 1, size)?, c.get(op.r[2], size), f),
        Mnemonic::Bzhi => b::bzhi(size, rd(c, mem, op, 1, size)?, c.get(op.r[2], size), f),
        Mnemonic::Pdep => (
            b::pdep(size, c.get(op.r[1], size), rd(c, mem, op, 2, size)?),
            f,
        ),
        Mnemonic::Pext => (
            b::pext(size, c.get(op.r[1], size), rd(c, mem, op, 2, size)?),
            f,
        ),
        Mnemonic::Blsi => b::blsi(size, rd(c, mem, op, 1, size)?, f),
        Mnemonic::Blsmsk => b::blsmsk(size, rd(c, mem, op, 1, size)?, f),
        _ => b::blsr(size, rd(c, mem, op, 1, size)?, f),
    };
    c.set(op.r[0], size, r);
    c.set_rflags(nf);
    Ok(())
}

/// ADCX ADOX r, r/m.
pub fn adx(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = c.get(op.r[0], size);
    let s = rd(c, mem, op, 1, size)?;
    let (r, f) = if op.i.mnemonic() == Mnemonic::Adcx {
        b::adcx(size, a, s, c.rflags())
    } else {
        b::adox(size, a, s, c.rflags())
    };
    wr(c, mem, op, 0, size, r)?;
    c.set_rflags(f);
    Ok(())
}
