//! MOVS STOS LODS CMPS SCAS with REP/REPE/REPNE, every address size, both directions.
//! A long REP runs in chunks: between chunks the instruction stays current (RIP at it),
//! so budgets, interrupts and exits see progress as on hardware.

use crate::arith::alu::{alu, AluOp};
use crate::arith::flags::{DF, TF, ZF};
use crate::cpu::{addr_reg_write, sr, Cpu};
use crate::decode::Op;
use crate::exception::Ex;
use iced_x86::Mnemonic;
use opsvisor_core::mmu::memory::GuestMemory;

/// Iterations of one REP instruction between two instruction boundaries.
const CHUNK: u64 = 4096;

fn elem(m: Mnemonic) -> u32 {
    match m {
        Mnemonic::Movsb | Mnemonic::Stosb | Mnemonic::Lodsb | Mnemonic::Cmpsb | Mnemonic::Scasb => {
            1
        }
        Mnemonic::Movsw | Mnemonic::Stosw | Mnemonic::Lodsw | Mnemonic::Cmpsw | Mnemonic::Scasw => {
            2
        }
        Mnemonic::Movsd | Mnemonic::Stosd | Mnemonic::Lodsd | Mnemonic::Cmpsd | Mnemonic::Scasd => {
            4
        }
        _ => 8,
    }
}

#[inline(always)]
fn step(c: &mut Cpu, r: usize, d: u64, m: u64) {
    c.gpr[r] = addr_reg_write(c.gpr[r], c.gpr[r].wrapping_add(d), m);
}

/// Run `body` once, or under REP until RCX reaches 0 (or `stop` says so), in chunks.
#[inline(always)]
fn repeat(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    cond_rep: bool,
    mut body: impl FnMut(&mut Cpu, &mut GuestMemory, u64, u32) -> Result<bool, Ex>,
) -> Result<(), Ex> {
    let size = elem(op.i.mnemonic());
    let d = if c.rf & DF != 0 {
        (u64::from(size)).wrapping_neg()
    } else {
        u64::from(size)
    };
    let m = op.amask;
    let rep = op.i.has_rep_prefix() || op.i.has_repne_prefix();
    if !rep {
        body(c, mem, d, size)?;
        return Ok(());
    }
    // Single-stepping, and data breakpoints, see each iteration as an instruction: the
    // trap comes after the iteration, with RIP at the instruction while it repeats
    // (SDM 3B 18.3.1.4 and 18.2.5).
    let chunk = if c.rf & TF != 0 || c.dbg_data {
        1
    } else {
        CHUNK
    };
    let mut n = 0;
    while c.gpr[1] & m != 0 {
        let go_on = body(c, mem, d, size)?;
        let cx = c.gpr[1].wrapping_sub(1) & m;
        c.gpr[1] = addr_reg_write(c.gpr[1], cx, m);
        if cond_rep && !go_on {
            return Ok(());
        }
        n += 1;
        // An element that reached MMIO (a store waiting to be reported, a replayed read)
        // or code ends the chunk, so each such element gets its own exit (one element per
        // exit, as VMX reports REP string accesses to MMIO) and each read its own replay.
        if (n >= chunk || c.brk) && cx != 0 {
            // Come back to this instruction at the next boundary.
            c.rip = op.i.ip();
            c.brk = true;
            return Ok(());
        }
    }
    Ok(())
}

/// REP MOVS in 64-bit mode, upwards, with a 64-bit address size, when the whole copy
/// stays inside one page on each side and both translations are in the TLB: one memmove.
/// Returns false when the general path must run.
#[inline(always)]
fn movs_fast(c: &mut Cpu, op: &Op, size: u32) -> bool {
    if c.bits != 64 || op.amask != u64::MAX || c.rf & DF != 0 || op.seg >= sr::FS {
        return false;
    }
    if c.cpl == 3 && c.rf & crate::arith::flags::AC != 0 {
        // Alignment checking may fault part-way: the element loop checks each access.
        return false;
    }
    let count = c.gpr[1];
    if count == 0 || count > 4096 / u64::from(size) {
        return false;
    }
    let len = count * u64::from(size);
    let (src, dst) = (c.gpr[6], c.gpr[7]);
    let sel = c.tlb.sel;
    if !c.copy_lin_fast(src, dst, len, sel) {
        return false;
    }
    c.gpr[6] = src.wrapping_add(len);
    c.gpr[7] = dst.wrapping_add(len);
    c.gpr[1] = 0;
    true
}

/// MOVS.
pub fn movs(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    if op.i.has_rep_prefix() && c.rf & TF == 0 && movs_fast(c, op, elem(op.i.mnemonic())) {
        return Ok(());
    }
    repeat(c, mem, op, false, |c, mem, d, size| {
        let v = c.rd(mem, seg, c.gpr[6] & m, size)?;
        c.wr(mem, sr::ES, c.gpr[7] & m, size, v)?;
        step(c, 6, d, m);
        step(c, 7, d, m);
        Ok(true)
    })
}

/// STOS.
pub fn stos(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    repeat(c, mem, op, false, |c, mem, d, size| {
        let v = c.gpr[0];
        c.wr(mem, sr::ES, c.gpr[7] & m, size, v)?;
        step(c, 7, d, m);
        Ok(true)
    })
}

/// LODS.
pub fn lods(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    repeat(c, mem, op, false, |c, mem, d, size| {
        let v = c.rd(mem, seg, c.gpr[6] & m, size)?;
        c.set(0, size, v);
        step(c, 6, d, m);
        Ok(true)
    })
}

fn rep_continue(op: &Op, rflags: u64) -> bool {
    if op.i.has_repne_prefix() {
        rflags & ZF == 0
    } else {
        rflags & ZF != 0
    }
}

/// CMPS.
pub fn cmps(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    let seg = op.seg;
    repeat(c, mem, op, true, |c, mem, d, size| {
        // ES:[RDI] is read first: when both operands fault, the processor reports the
        // destination's fault, #PF or #GP alike (observed on the AMD host of the
        // differential tests; the SDM leaves the order open).
        let b = c.rd(mem, sr::ES, c.gpr[7] & m, size)?;
        let a = c.rd(mem, seg, c.gpr[6] & m, size)?;
        let (_, f) = alu(AluOp::Sub, size, a, b, c.rflags());
        c.set_rflags(f);
        step(c, 6, d, m);
        step(c, 7, d, m);
        Ok(rep_continue(op, f))
    })
}

/// SCAS.
pub fn scas(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let m = op.amask;
    repeat(c, mem, op, true, |c, mem, d, size| {
        let b = c.rd(mem, sr::ES, c.gpr[7] & m, size)?;
        let (_, f) = alu(AluOp::Sub, size, c.gpr[0], b, c.rflags());
        c.set_rflags(f);
        step(c, 7, d, m);
        Ok(rep_continue(op, f))
    })
}
