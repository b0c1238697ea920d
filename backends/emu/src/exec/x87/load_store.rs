//! Loads and stores: FLD/FST/FSTP of m32fp, m64fp, m80fp and ST(i), FILD/FIST/FISTP of
//! m16int, m32int, m64int, FISTTP (SSE3), FBLD/FBSTP (m80bcd).
//!
//! Loads push (stack overflow when ST(7) is not empty: IE, SF, C1 and, masked, the
//! indefinite pushed); stores read ST(0) (stack underflow when it is empty: IE, SF, C1
//! clear and, masked, the indefinite of the destination format stored). An unmasked
//! exception that suppresses the result also suppresses the pop.

use super::f80::{self, INDEFINITE};
use super::{
    env, is_empty, masked, overflow, pop, push, set_st, signal, st, start, sti, underflow,
    with_roundup,
};
use crate::arith::softfloat::{self, exc, Format, F32, F64, F80};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::exec::ea;
use crate::fpu::{fsw, X87};
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code` if it is a load or store.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fld_m32fp => fld_mfp::<4>,
        C::Fld_m64fp => fld_mfp::<8>,
        C::Fld_m80fp => fld_m80,
        C::Fld_sti => fld_sti,
        C::Fild_m16int => fild::<2>,
        C::Fild_m32int => fild::<4>,
        C::Fild_m64int => fild::<8>,
        C::Fbld_m80bcd => fbld,
        C::Fst_m32fp => fst_mfp::<4, false>,
        C::Fstp_m32fp => fst_mfp::<4, true>,
        C::Fst_m64fp => fst_mfp::<8, false>,
        C::Fstp_m64fp => fst_mfp::<8, true>,
        C::Fstp_m80fp => fstp_m80,
        C::Fst_sti => fst_sti::<false>,
        C::Fstp_sti | C::Fstp_sti_DFD0 | C::Fstp_sti_DFD8 => fst_sti::<true>,
        C::Fstpnce_sti => fstpnce,
        C::Fist_m16int => fist::<2, false, false>,
        C::Fist_m32int => fist::<4, false, false>,
        C::Fistp_m16int => fist::<2, true, false>,
        C::Fistp_m32int => fist::<4, true, false>,
        C::Fistp_m64int => fist::<8, true, false>,
        C::Fisttp_m16int => fist::<2, true, true>,
        C::Fisttp_m32int => fist::<4, true, true>,
        C::Fisttp_m64int => fist::<8, true, true>,
        C::Fbstp_m80bcd => fbstp,
        _ => return None,
    })
}

/// The binary format of a `W`-byte memory float.
pub fn fmt_of(w: u32) -> Format {
    if w == 4 {
        F32
    } else {
        F64
    }
}

/// Read a `w`-byte float (4 or 8) or integer operand.
pub fn read_mem(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, w: u32) -> Result<u64, Ex> {
    let a = ea(c, op);
    c.rd(mem, op.seg, a, w)
}

/// Read the 10-byte memory operand.
pub fn read_m80(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<u128, Ex> {
    let a = ea(c, op);
    let mut b = [0u8; 16];
    c.rd_bytes(mem, op.seg, a, &mut b[..10])?;
    Ok(u128::from_le_bytes(b))
}

/// Write the 10-byte memory operand.
pub fn write_m80(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, v: u128) -> Result<(), Ex> {
    let a = ea(c, op);
    c.wr_bytes(mem, op.seg, a, &v.to_le_bytes()[..10])
}

/// Check that the `w`-byte destination can be written (segment, and paging for its
/// first byte and, when it crosses into another page, that page) before anything else
/// happens, and return its effective address. The host raises the #PF of the
/// destination even when an unmasked exception then suppresses the store, and a
/// faulting store leaves the status word and the stack unchanged.
pub fn check_dest(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, w: u32) -> Result<u64, Ex> {
    let a = ea(c, op);
    // Segment, then alignment (#AC at CPL 3: an 80-bit operand needs 8-byte alignment,
    // as the 8-byte access it starts with), then paging: all before the stack check
    // touches FSW.
    c.probe_write_aligned(mem, op.seg, a, w, if w == 10 { 8 } else { w })?;
    let last = a.wrapping_add(u64::from(w) - 1);
    if last & !0xfff != a & !0xfff {
        c.probe_write(mem, op.seg, last & !0xfff, 1)?;
    }
    Ok(a)
}

/// Convert a memory float to double extended (exact; IE for a signaling NaN, DE for a
/// denormal).
pub fn widen(x: &X87, w: u32, raw: u64) -> (u128, u32) {
    let mut e = env(x, false);
    let v = softfloat::convert(fmt_of(w), F80, u128::from(raw), &mut e);
    (v, e.flags)
}

/// Push `v` after a load that raised `flags`: C1 cleared, stack overflow checked, and
/// nothing pushed when an unmasked exception suppresses the result.
pub fn push_loaded(x: &mut X87, v: u128, flags: u32) {
    x.fsw &= !fsw::C1;
    if !is_empty(x, 7) {
        if overflow(x) {
            push(x, INDEFINITE);
        }
        return;
    }
    // A denormal source is loaded even when DE is unmasked (the exception is reported
    // after the load); only an unmasked invalid operation suppresses it.
    signal(x, flags);
    if flags & exc::IE != 0 && !masked(x, exc::IE) {
        return;
    }
    push(x, v);
}

fn fld_mfp<const W: u32>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_mem(c, mem, op, W)?;
    let x = &mut c.fpu.x87;
    let (v, flags) = widen(x, W, raw);
    push_loaded(x, v, flags);
    Ok(())
}

fn fld_m80(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let v = read_m80(c, mem, op)?;
    // Double extended loads are bit copies: no SNaN or denormal exceptions.
    push_loaded(&mut c.fpu.x87, v, 0);
    Ok(())
}

fn fld_sti(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 0);
    let x = &mut c.fpu.x87;
    if is_empty(x, i) {
        // An empty source is a stack underflow (C1 clear) even when ST(7) is full too,
        // as on the host; masked, the indefinite is pushed over ST(7).
        x.fsw &= !fsw::C1;
        if underflow(x) {
            push(x, INDEFINITE);
        }
        return Ok(());
    }
    let v = st(x, i);
    push_loaded(x, v, 0);
    Ok(())
}

/// Sign-extend the low `w` bytes.
pub fn sext(v: u64, w: u32) -> i64 {
    match w {
        2 => i64::from(v as i16),
        4 => i64::from(v as i32),
        _ => v as i64,
    }
}

/// An integer as double extended (always exact).
pub fn int80(x: &X87, v: i64) -> u128 {
    let mut e = env(x, false);
    softfloat::from_int(F80, v, &mut e)
}

fn fild<const W: u32>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_mem(c, mem, op, W)?;
    let x = &mut c.fpu.x87;
    let v = int80(x, sext(raw, W));
    push_loaded(x, v, 0);
    Ok(())
}

fn fbld(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_m80(c, mem, op)?;
    let x = &mut c.fpu.x87;
    // 18 packed digits, least significant first; invalid digits give an undefined
    // result, here their binary weight.
    let mut n: i64 = 0;
    for k in (0..9).rev() {
        let b = (raw >> (8 * k)) as u8;
        n = n
            .wrapping_mul(100)
            .wrapping_add(i64::from(b >> 4) * 10 + i64::from(b & 15));
    }
    let neg = raw & (1 << 79) != 0;
    let v = if n == 0 {
        f80::zero(neg)
    } else {
        let m = int80(x, n);
        if neg {
            f80::neg(m)
        } else {
            m
        }
    };
    push_loaded(x, v, 0);
    Ok(())
}

/// ST(0) for a store, or the stack-underflow response: `Err(true)` when IE is masked
/// (store the indefinite, then pop as usual), `Err(false)` when it is not.
fn source(x: &mut X87) -> Result<u128, bool> {
    if is_empty(x, 0) {
        return Err(underflow(x));
    }
    Ok(st(x, 0))
}

/// The start of a store of ST(0) to a `W`-byte memory float or integer: the destination
/// is checked for writing first, C1 cleared, and the value returned with its address.
/// From an empty ST(0) the masked response stores `indefinite` (and pops for the
/// popping forms) and there is nothing left to do: `None`.
fn store_operand<const W: u32, const P: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    indefinite: u64,
) -> Result<Option<(u64, u128)>, Ex> {
    start(c, op)?;
    let a = check_dest(c, mem, op, W)?;
    c.fpu.x87.fsw &= !fsw::C1;
    match source(&mut c.fpu.x87) {
        Ok(v) => Ok(Some((a, v))),
        Err(masked_ie) => {
            if masked_ie {
                c.wr(mem, op.seg, a, W, indefinite)?;
                if P {
                    pop(&mut c.fpu.x87);
                }
            }
            Ok(None)
        }
    }
}

/// The indefinite of a memory float format.
fn indefinite(w: u32) -> u64 {
    if w == 4 {
        0xffc0_0000
    } else {
        0xfff8_0000_0000_0000
    }
}

/// Whether a converted result of `w` bytes is tiny (denormal, or zero from a nonzero
/// source): with UE unmasked that alone signals underflow.
fn tiny(w: u32, r: u64, src: u128) -> bool {
    let (exp_mask, frac_mask) = if w == 4 {
        (0x7f80_0000u64, 0x007f_ffffu64)
    } else {
        (0x7ff0_0000_0000_0000, 0x000f_ffff_ffff_ffff)
    };
    r & exp_mask == 0 && (r & frac_mask != 0 || !matches!(f80::kind(src), f80::Kind::Zero))
}

fn fst_mfp<const W: u32, const P: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let Some((a, v)) = store_operand::<W, P>(c, mem, op, indefinite(W))? else {
        return Ok(());
    };
    let x = &c.fpu.x87;
    let mut e = env(x, false);
    let (r, up) = with_roundup(&mut e, |e| softfloat::convert(F80, fmt_of(W), v, e));
    let mut flags = e.flags & !exc::DE;
    let r = r as u64;
    if !masked(x, exc::UE) && tiny(W, r, v) && f80::kind(v) != f80::Kind::Nan {
        flags |= exc::UE;
    }
    // Unmasked overflow or underflow with a memory destination: nothing is stored.
    let unmasked = flags & !u32::from(x.fcw);
    if unmasked & (exc::IE | exc::OE | exc::UE) != 0 {
        // Nor is the inexact result reported: the host shows OE or UE without PE, and
        // C1 clear.
        signal(&mut c.fpu.x87, flags & !exc::PE);
        return Ok(());
    }
    c.wr(mem, op.seg, a, W, r)?;
    let x = &mut c.fpu.x87;
    signal(x, flags);
    if up {
        x.fsw |= fsw::C1;
    }
    if P {
        pop(x);
    }
    Ok(())
}

fn fstp_m80(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    check_dest(c, mem, op, 10)?;
    c.fpu.x87.fsw &= !fsw::C1;
    let v = match source(&mut c.fpu.x87) {
        Ok(v) => v,
        Err(false) => return Ok(()),
        Err(true) => INDEFINITE,
    };
    write_m80(c, mem, op, v)?;
    pop(&mut c.fpu.x87);
    Ok(())
}

fn fst_sti<const P: bool>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 0);
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    let v = match source(x) {
        Ok(v) => v,
        Err(false) => return Ok(()),
        Err(true) => INDEFINITE,
    };
    set_st(x, i, v);
    if P {
        pop(x);
    }
    Ok(())
}

/// FSTPNCE ST(i) (D9 D8+i, the undocumented alias of FSTP ST(i)): as FSTP, except that
/// from an empty ST(0) the host raises nothing (no IE, no SF) and only pops, leaving
/// ST(i) unchanged.
fn fstpnce(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if is_empty(&c.fpu.x87, 0) {
        start(c, op)?;
        let x = &mut c.fpu.x87;
        x.fsw &= !fsw::C1;
        pop(x);
        return Ok(());
    }
    fst_sti::<true>(c, mem, op)
}

/// The integer indefinite of a `w`-byte integer.
fn int_indefinite(w: u32) -> u64 {
    1u64 << (8 * w - 1)
}

fn fist<const W: u32, const P: bool, const T: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let Some((a, v)) = store_operand::<W, P>(c, mem, op, int_indefinite(W))? else {
        return Ok(());
    };
    let x = &c.fpu.x87;
    let mut e = env(x, false);
    let r = softfloat::to_int(F80, v, 8 * W, T, &mut e);
    let mut up = false;
    if let (Some(n), false) = (r, T) {
        if e.flags & exc::PE != 0 {
            let mut z = env(x, false);
            let t = softfloat::to_int(F80, v, 8 * W, true, &mut z);
            up = t.is_some_and(|t| n.unsigned_abs() > t.unsigned_abs());
        }
    }
    let flags = e.flags & !exc::DE;
    let out = match r {
        Some(n) => n as u64,
        None => int_indefinite(W),
    };
    if flags & exc::IE != 0 && !masked(x, exc::IE) {
        signal(&mut c.fpu.x87, flags);
        return Ok(());
    }
    c.wr(mem, op.seg, a, W, out)?;
    let x = &mut c.fpu.x87;
    signal(x, flags);
    if up {
        x.fsw |= fsw::C1;
    }
    if P {
        pop(x);
    }
    Ok(())
}

/// The packed-BCD indefinite.
const BCD_INDEFINITE: u128 = 0xffff_c000_0000_0000_0000;

fn fbstp(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    check_dest(c, mem, op, 10)?;
    c.fpu.x87.fsw &= !fsw::C1;
    let v = match source(&mut c.fpu.x87) {
        Ok(v) => v,
        Err(false) => return Ok(()),
        Err(true) => {
            write_m80(c, mem, op, BCD_INDEFINITE)?;
            pop(&mut c.fpu.x87);
            return Ok(());
        }
    };
    let x = &c.fpu.x87;
    let mut e = env(x, false);
    let r = softfloat::to_int(F80, v, 64, false, &mut e);
    let mut flags = e.flags & !exc::DE;
    let mut up = false;
    let n = match r {
        Some(n) if n.unsigned_abs() <= 999_999_999_999_999_999 => {
            if flags & exc::PE != 0 {
                let mut z = env(x, false);
                let t = softfloat::to_int(F80, v, 64, true, &mut z);
                up = t.is_some_and(|t| n.unsigned_abs() > t.unsigned_abs());
            }
            Some(n)
        }
        _ => {
            flags = (flags | exc::IE) & !exc::PE;
            None
        }
    };
    let out = match n {
        Some(n) => {
            let mut m = n.unsigned_abs();
            let mut bcd: u128 = 0;
            for k in 0..9 {
                let lo = (m % 10) as u128;
                m /= 10;
                let hi = (m % 10) as u128;
                m /= 10;
                bcd |= (lo | (hi << 4)) << (8 * k);
            }
            // The sign follows the source, also for a result rounded to zero.
            if v & f80::SIGN != 0 {
                bcd |= 0x80u128 << 72;
            }
            bcd
        }
        None => {
            if !masked(x, exc::IE) {
                signal(&mut c.fpu.x87, flags);
                return Ok(());
            }
            BCD_INDEFINITE
        }
    };
    write_m80(c, mem, op, out)?;
    let x = &mut c.fpu.x87;
    signal(x, flags);
    if up {
        x.fsw |= fsw::C1;
    }
    pop(x);
    Ok(())
}
