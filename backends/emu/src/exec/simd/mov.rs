//! Data movement: whole-register moves (MOVAPS/APD/DQA aligned, MOVUPS/UPD/DQU and
//! LDDQU unaligned, the non-temporal MOVNT* and MOVNTDQA), scalar moves (MOVSS/MOVSD
//! merge from a register and zero the rest from memory), half moves
//! (MOVLPS/HPS/LPD/HPD, MOVHLPS/MOVLHPS), MOVD/MOVQ between XMM, MMX, general registers
//! and memory, MOVQ2DQ/MOVDQ2Q, MOVNTI, the sign masks (MOVMSKPS/PD, PMOVMSKB) and the
//! byte-masked stores MASKMOVQ/MASKMOVDQU.

use super::{lane, load, mi, reg_val, store, xi, BinOp};
use crate::cpu::Cpu;
use crate::decode::{addr_mask, reg_code, Handler, Op};
use crate::exception::Ex;
use iced_x86::{Code, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

const LO: u128 = 0xffff_ffff_ffff_ffff;

/// MOVAPS/MOVAPD/MOVDQA/MOVNTDQA (`ALIGNED`) and MOVUPS/MOVUPD/MOVDQU/LDDQU xmm,
/// xmm/m128.
fn load_full<const ALIGNED: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let v = match op.i.op_kind(1) {
        OpKind::Memory => load(c, mem, op, 16, ALIGNED)?,
        _ => reg_val(c, op.i.op_register(1)),
    };
    c.fpu.xmm[xi(op.i.op_register(0))] = v;
    Ok(())
}

/// The store forms xmm/m128, xmm of the whole-register moves and MOVNTPS/PD/DQ.
fn store_full<const ALIGNED: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let v = reg_val(c, op.i.op_register(1));
    match op.i.op_kind(0) {
        OpKind::Memory => store(c, mem, op, 16, v, ALIGNED),
        _ => {
            c.fpu.xmm[xi(op.i.op_register(0))] = v;
            Ok(())
        }
    }
}

/// The low `SIZE` bytes set.
const fn low_mask(size: usize) -> u128 {
    if size >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * size)) - 1
    }
}

/// MOVSS/MOVSD xmm, xmm/m32|m64: from a register the low element is replaced and the
/// rest kept; from memory the rest is zeroed.
fn movs_load<const SIZE: usize>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xi(op.i.op_register(0));
    let m = low_mask(SIZE);
    c.fpu.xmm[d] = match op.i.op_kind(1) {
        OpKind::Memory => load(c, mem, op, SIZE, false)?,
        _ => (c.fpu.xmm[d] & !m) | (reg_val(c, op.i.op_register(1)) & m),
    };
    Ok(())
}

/// MOVSS/MOVSD xmm/m32|m64, xmm: to a register the low element merges.
fn movs_store<const SIZE: usize>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let v = reg_val(c, op.i.op_register(1));
    match op.i.op_kind(0) {
        OpKind::Memory => store(c, mem, op, SIZE, v, false),
        _ => {
            let d = xi(op.i.op_register(0));
            let m = low_mask(SIZE);
            c.fpu.xmm[d] = (c.fpu.xmm[d] & !m) | (v & m);
            Ok(())
        }
    }
}

/// MOVLPS/MOVLPD xmm, m64: the low quadword replaced.
pub(crate) struct LoadLow;
impl BinOp for LoadLow {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        (a & !LO) | (b & LO)
    }
}

/// MOVHPS/MOVHPD xmm, m64 and MOVLHPS: the high quadword replaced by the source's low one.
pub(crate) struct LoadHigh;
impl BinOp for LoadHigh {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        (a & LO) | (b << 64)
    }
}

/// MOVHLPS: the low quadword replaced by the source's high one.
pub(crate) struct Movhlps;
impl BinOp for Movhlps {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        (a & !LO) | (b >> 64)
    }
}

/// MOVLPS/MOVLPD/MOVHPS/MOVHPD m64, xmm: store the low or (`HIGH`) high quadword.
fn store_half<const HIGH: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let v = reg_val(c, op.i.op_register(1));
    let v = if HIGH { v >> 64 } else { v };
    store(c, mem, op, 8, v, false)
}

/// Which checks a [`mov_low`] makes and whether it enters MMX state.
const SSE: u8 = 0;
const MMX: u8 = 1;
/// MOVQ2DQ/MOVDQ2Q: SSE2 instructions with the x87-to-MMX transition (SSE checks, a
/// pending x87 exception, MMX state).
const TRANSITION: u8 = 2;
/// MOVNTI: a general-register store with no FPU checks.
const PLAIN: u8 = 3;

/// Move the low `SIZE` bytes (4 or 8) of operand 1 into operand 0, zero-extending into a
/// register: MOVD/MOVQ in all their forms, MOVQ2DQ, MOVDQ2Q, MOVNTQ, MOVNTI.
fn mov_low<const SIZE: usize, const KIND: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    match KIND {
        SSE => c.sse_check()?,
        MMX => c.mmx_check()?,
        TRANSITION => {
            c.sse_check()?;
            c.x87_pending_check()?;
        }
        _ => {}
    }
    let v = match op.i.op_kind(1) {
        OpKind::Memory => load(c, mem, op, SIZE, false)?,
        _ => reg_val(c, op.i.op_register(1)) & low_mask(SIZE),
    };
    match op.i.op_kind(0) {
        OpKind::Memory => store(c, mem, op, SIZE, v, false)?,
        _ => {
            let r = op.i.op_register(0);
            if r.is_xmm() {
                c.fpu.xmm[xi(r)] = v;
            } else if r.is_mm() {
                c.fpu.set_mm(mi(r), v as u64);
            } else {
                c.set(reg_code(r), SIZE as u32, v as u64);
            }
        }
    }
    if KIND == MMX || KIND == TRANSITION {
        c.fpu.enter_mmx();
    }
    Ok(())
}

/// MOVMSKPS/MOVMSKPD r, xmm and PMOVMSKB r, mm/xmm: the sign bits of the `BITS`-bit
/// lanes, zero-extended into the general register.
fn movmsk<const BITS: u32>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s = op.i.op_register(1);
    let mmx = s.is_mm();
    super::check(c, mmx)?;
    let v = reg_val(c, s);
    let n = if mmx { 8 } else { 128 / BITS as usize };
    let mut m = 0u64;
    for i in 0..n {
        m |= (lane(v, i, BITS) >> (BITS - 1)) << i;
    }
    c.set(reg_code(op.i.op_register(0)), 8, m);
    if mmx {
        c.fpu.enter_mmx();
    }
    Ok(())
}

/// MASKMOVQ mm1, mm2 and MASKMOVDQU xmm1, xmm2: store the bytes of operand 1 whose byte
/// in operand 2 has its top bit set to DS:[rDI] (segment override allowed). The whole
/// 8- or 16-byte destination is checked for writing first, whatever the mask (the
/// hardware reports a fault at rDI even when the masked-off bytes are the only ones
/// outside the mapping), so a fault stores nothing.
fn maskmov(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let data_reg = op.i.op_register(1);
    let mmx = data_reg.is_mm();
    super::check(c, mmx)?;
    let data = reg_val(c, data_reg);
    let mask = reg_val(c, op.i.op_register(2));
    let w: u64 = if mmx { 8 } else { 16 };
    let amask = addr_mask(&op.i);
    let base = c.gpr[7] & amask;
    // The MMX form enters MMX state even when the store then faults (unlike the MMX
    // loads, whose faulting source leaves the x87 state alone): so the host CPU does.
    if mmx {
        c.fpu.enter_mmx();
    }
    // Segment limits over the whole range, then paging on each page it touches.
    c.linear(op.seg, base, w as u32, true)?;
    c.probe_write(mem, op.seg, base, 1)?;
    let next = (base | 0xfff).wrapping_add(1);
    if next.wrapping_sub(base) < w {
        c.probe_write(mem, op.seg, next & amask, 1)?;
    }
    for i in 0..w as usize {
        if lane(mask, i, 8) & 0x80 != 0 {
            let a = base.wrapping_add(i as u64) & amask;
            c.wr(mem, op.seg, a, 1, lane(data, i, 8))?;
        }
    }
    Ok(())
}

/// The handler for `op` if it is a move.
pub(super) fn select(op: &Op) -> Option<Handler> {
    use super::bin;
    use Code as C;
    Some(match op.i.code() {
        C::Movaps_xmm_xmmm128
        | C::Movapd_xmm_xmmm128
        | C::Movdqa_xmm_xmmm128
        | C::Movntdqa_xmm_m128 => load_full::<true>,
        C::Movups_xmm_xmmm128
        | C::Movupd_xmm_xmmm128
        | C::Movdqu_xmm_xmmm128
        | C::Lddqu_xmm_m128 => load_full::<false>,
        C::Movaps_xmmm128_xmm
        | C::Movapd_xmmm128_xmm
        | C::Movdqa_xmmm128_xmm
        | C::Movntps_m128_xmm
        | C::Movntpd_m128_xmm
        | C::Movntdq_m128_xmm => store_full::<true>,
        C::Movups_xmmm128_xmm | C::Movupd_xmmm128_xmm | C::Movdqu_xmmm128_xmm => {
            store_full::<false>
        }
        C::Movss_xmm_xmmm32 => movs_load::<4>,
        C::Movsd_xmm_xmmm64 => movs_load::<8>,
        C::Movss_xmmm32_xmm => movs_store::<4>,
        C::Movsd_xmmm64_xmm => movs_store::<8>,
        C::Movlps_xmm_m64 | C::Movlpd_xmm_m64 => bin::<LoadLow, false>,
        C::Movhps_xmm_m64 | C::Movhpd_xmm_m64 | C::Movlhps_xmm_xmm => bin::<LoadHigh, false>,
        C::Movhlps_xmm_xmm => bin::<Movhlps, false>,
        C::Movlps_m64_xmm | C::Movlpd_m64_xmm => store_half::<false>,
        C::Movhps_m64_xmm | C::Movhpd_m64_xmm => store_half::<true>,
        C::Movd_xmm_rm32 | C::Movd_rm32_xmm => mov_low::<4, SSE>,
        C::Movq_xmm_rm64 | C::Movq_rm64_xmm | C::Movq_xmm_xmmm64 | C::Movq_xmmm64_xmm => {
            mov_low::<8, SSE>
        }
        C::Movd_mm_rm32 | C::Movd_rm32_mm => mov_low::<4, MMX>,
        C::Movq_mm_rm64
        | C::Movq_rm64_mm
        | C::Movq_mm_mmm64
        | C::Movq_mmm64_mm
        | C::Movntq_m64_mm => mov_low::<8, MMX>,
        C::Movq2dq_xmm_mm | C::Movdq2q_mm_xmm => mov_low::<8, TRANSITION>,
        C::Movnti_m32_r32 => mov_low::<4, PLAIN>,
        C::Movnti_m64_r64 => mov_low::<8, PLAIN>,
        C::Movmskps_r32_xmm | C::Movmskps_r64_xmm => movmsk::<32>,
        C::Movmskpd_r32_xmm | C::Movmskpd_r64_xmm => movmsk::<64>,
        C::Pmovmskb_r32_mm | C::Pmovmskb_r64_mm | C::Pmovmskb_r32_xmm | C::Pmovmskb_r64_xmm => {
            movmsk::<8>
        }
        C::Maskmovq_rDI_mm_mm | C::Maskmovdqu_rDI_xmm_xmm => maskmov,
        _ => return None,
    })
}
