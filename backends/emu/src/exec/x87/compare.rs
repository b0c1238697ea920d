//! Compares and classification: FCOM/FCOMP/FCOMPP, FUCOM/FUCOMP/FUCOMPP, FICOM/FICOMP,
//! FCOMI/FCOMIP/FUCOMI/FUCOMIP (into EFLAGS), FTST, FXAM, and FCMOVcc (which reads
//! EFLAGS).
//!
//! Condition codes: greater 000, less 001 (C0), equal 100 (C3), unordered 111 (C3 C2
//! C0); C1 cleared. The unordered compares raise IE only for signaling NaNs. A stack
//! underflow reports unordered when IE is masked.

use super::f80::{self, Kind, INDEFINITE};
use super::load_store::{int80, read_mem, sext, widen};
use super::{env, is_empty, pop, set_cc, set_st, signal, st, start, sti, underflow, CC};
use crate::arith::softfloat::{self, Ordering, F80};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::fpu::{fsw, X87};
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

const FCOM: u8 = 0;
const FUCOM: u8 = 1;

/// The handler for `code` if it is a compare, FXAM or FCMOVcc.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fcom_m32fp => mem_fp::<4, 0>,
        C::Fcomp_m32fp => mem_fp::<4, 1>,
        C::Fcom_m64fp => mem_fp::<8, 0>,
        C::Fcomp_m64fp => mem_fp::<8, 1>,
        C::Ficom_m16int => mem_int::<2, 0>,
        C::Ficomp_m16int => mem_int::<2, 1>,
        C::Ficom_m32int => mem_int::<4, 0>,
        C::Ficomp_m32int => mem_int::<4, 1>,
        C::Fcom_st0_sti | C::Fcom_st0_sti_DCD0 => reg::<FCOM, 0>,
        C::Fcomp_st0_sti | C::Fcomp_st0_sti_DCD8 | C::Fcomp_st0_sti_DED0 => reg::<FCOM, 1>,
        C::Fcompp => pp::<FCOM>,
        C::Fucom_st0_sti => reg::<FUCOM, 0>,
        C::Fucomp_st0_sti => reg::<FUCOM, 1>,
        C::Fucompp => pp::<FUCOM>,
        C::Fcomi_st0_sti => comi::<FCOM, false>,
        C::Fcomip_st0_sti => comi::<FCOM, true>,
        C::Fucomi_st0_sti => comi::<FUCOM, false>,
        C::Fucomip_st0_sti => comi::<FUCOM, true>,
        C::Ftst => ftst,
        C::Fxam => fxam,
        C::Fcmovb_st0_sti => fcmov::<0>,
        C::Fcmove_st0_sti => fcmov::<1>,
        C::Fcmovbe_st0_sti => fcmov::<2>,
        C::Fcmovu_st0_sti => fcmov::<3>,
        C::Fcmovnb_st0_sti => fcmov::<4>,
        C::Fcmovne_st0_sti => fcmov::<5>,
        C::Fcmovnbe_st0_sti => fcmov::<6>,
        C::Fcmovnu_st0_sti => fcmov::<7>,
        _ => return None,
    })
}

/// Condition codes for an ordering.
fn cc_of(o: Ordering) -> u16 {
    match o {
        Ordering::Greater => 0,
        Ordering::Less => fsw::C0,
        Ordering::Equal => fsw::C3,
        Ordering::Unordered => fsw::C0 | fsw::C2 | fsw::C3,
    }
}

/// Compare ST(0) with `b` and set the condition codes, then pop `pops` times; `extra`
/// flags come from fetching a memory operand.
fn compare_into_cc(x: &mut X87, b: u128, signaling: bool, pops: u32, extra: u32) {
    let a = st(x, 0);
    let mut e = env(x, false);
    let o = softfloat::compare(F80, a, b, signaling, &mut e);
    // The condition codes are set also when the exception is unmasked (the host
    // reports unordered then); only the pops are suppressed.
    let suppressed = signal(x, e.flags | extra);
    set_cc(x, CC, cc_of(o));
    if suppressed {
        return;
    }
    for _ in 0..pops {
        pop(x);
    }
}

/// The stack-underflow response of a compare: unordered (also when IE is unmasked, as
/// the host does), then the pops when IE is masked.
fn compare_underflow(x: &mut X87, pops: u32) {
    let masked = underflow(x);
    set_cc(x, CC, cc_of(Ordering::Unordered));
    if masked {
        for _ in 0..pops {
            pop(x);
        }
    }
}

fn mem_fp<const W: u32, const P: u32>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_mem(c, mem, op, W)?;
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) {
        compare_underflow(x, P);
        return Ok(());
    }
    let (b, fl) = widen(x, W, raw);
    compare_into_cc(x, b, true, P, fl);
    Ok(())
}

fn mem_int<const W: u32, const P: u32>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_mem(c, mem, op, W)?;
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) {
        compare_underflow(x, P);
        return Ok(());
    }
    let b = int80(x, sext(raw, W));
    compare_into_cc(x, b, true, P, 0);
    Ok(())
}

fn reg<const K: u8, const P: u32>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    // FCOM ST(i) has ST(i) as its only (or second) operand.
    let i = if op.i.op_count() > 1 {
        sti(op, 1)
    } else {
        sti(op, 0)
    };
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) || is_empty(x, i) {
        compare_underflow(x, P);
        return Ok(());
    }
    let b = st(x, i);
    compare_into_cc(x, b, K == FCOM, P, 0);
    Ok(())
}

fn pp<const K: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) || is_empty(x, 1) {
        compare_underflow(x, 2);
        return Ok(());
    }
    let b = st(x, 1);
    compare_into_cc(x, b, K == FCOM, 2, 0);
    Ok(())
}

fn comi<const K: u8, const P: bool>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 1);
    let x = &mut c.fpu.x87;
    // C1 is cleared by a stack underflow only (otherwise the host leaves it).
    let o = if is_empty(x, 0) || is_empty(x, i) {
        if !underflow(x) {
            set_eflags(c, Ordering::Unordered);
            return Ok(());
        }
        Ordering::Unordered
    } else {
        let (a, b) = (st(x, 0), st(x, i));
        let mut e = env(x, false);
        let o = softfloat::compare(F80, a, b, K == FCOM, &mut e);
        if signal(x, e.flags) {
            // EFLAGS are still set; the pop is suppressed.
            set_eflags(c, o);
            return Ok(());
        }
        o
    };
    if P {
        pop(x);
    }
    set_eflags(c, o);
    Ok(())
}

/// ZF, PF, CF from an ordering; OF, SF and AF cleared.
fn set_eflags(c: &mut Cpu, o: Ordering) {
    let (zf, pf, cf) = match o {
        Ordering::Greater => (0, 0, 0),
        Ordering::Less => (0, 0, 1),
        Ordering::Equal => (1, 0, 0),
        Ordering::Unordered => (1, 1, 1),
    };
    let rf = c.rflags() & !0x8d5u64;
    c.set_rflags(rf | (zf << 6) | (pf << 2) | cf);
}

fn ftst(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    if is_empty(x, 0) {
        compare_underflow(x, 0);
        return Ok(());
    }
    compare_into_cc(x, f80::zero(false), true, 0, 0);
    Ok(())
}

fn fxam(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    let v = st(x, 0);
    let sign = if v & f80::SIGN != 0 { fsw::C1 } else { 0 };
    let class = if is_empty(x, 0) {
        fsw::C3 | fsw::C0
    } else {
        match f80::kind(v) {
            Kind::Unsupported => 0,
            Kind::Nan => fsw::C0,
            Kind::Normal => fsw::C2,
            Kind::Infinity => fsw::C2 | fsw::C0,
            Kind::Zero => fsw::C3,
            Kind::Denormal => fsw::C3 | fsw::C2,
        }
    };
    set_cc(x, CC, class | sign);
    Ok(())
}

fn fcmov<const K: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 1);
    let rf = c.rflags();
    let (cf, zf, pf) = (rf & 1 != 0, rf & 0x40 != 0, rf & 4 != 0);
    let cond = match K & 3 {
        0 => cf,
        1 => zf,
        2 => cf || zf,
        _ => pf,
    };
    let cond = if K >= 4 { !cond } else { cond };
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) || is_empty(x, i) {
        // Underflow whether or not the condition holds; masked, ST(0) becomes the
        // indefinite. Otherwise C1 is left as it was (as on the host).
        if underflow(x) {
            set_st(x, 0, INDEFINITE);
        }
        return Ok(());
    }
    if cond {
        let v = st(x, i);
        set_st(x, 0, v);
    }
    Ok(())
}
