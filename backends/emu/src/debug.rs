//! The debug facilities (SDM 3B chapter 18): the breakpoint conditions of DR0-DR3 as
//! DR7 arms them, the status DR6 reports, and the state the run loop keeps to raise #DB.
//!
//! The block loop pays for none of this unless it is switched on: [`Cpu::dbg`] is set
//! while DR7 enables a breakpoint, and then (as with RFLAGS.TF) every instruction runs
//! alone through the slow path of [`crate::EmuVcpu`]'s loop, which checks instruction
//! breakpoints before the instruction and raises the traps after it. Data breakpoints
//! are found in the memory slow paths: while one is armed ([`Cpu::dbg_data`]) the TLB
//! gives no fast-access tag to a page that holds a data breakpoint, so every access to
//! such a page goes through `read_slow`/`write_slow`, which call [`data_access`].

use crate::cpu::{cr4, sr, Cpu};

/// DR6.B0-B3: the breakpoint conditions met.
pub const DR6_B: u64 = 0xf;
/// DR6.BD: the debug exception is a MOV DR with DR7.GD set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single-step.
pub const DR6_BS: u64 = 1 << 14;
/// DR7.GD: general detect (MOV DR raises #DB).
pub const DR7_GD: u64 = 1 << 13;
/// In [`Cpu::db_after`]: the intercepted instruction has debug work when it completes
/// (at least RF to clear), besides the DR6 bits of its trap.
pub const AFTER_SKIP: u64 = 1 << 63;

/// The R/W field of breakpoint `n`: 0 instruction, 1 data write, 2 I/O (CR4.DE), 3 data
/// read or write.
fn kind(dr7: u64, n: usize) -> u64 {
    (dr7 >> (16 + 4 * n)) & 3
}

/// The byte count of breakpoint `n` (LEN 00: 1, 01: 2, 11: 4, 10: 8).
fn len(dr7: u64, n: usize) -> u64 {
    match (dr7 >> (18 + 4 * n)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

/// Bit `n` set when DR7 enables breakpoint `n` locally or globally.
pub fn enabled(dr7: u64) -> u8 {
    let mut m = 0;
    for n in 0..4 {
        if (dr7 >> (2 * n)) & 3 != 0 {
            m |= 1 << n;
        }
    }
    m
}

/// Whether `[a, a + alen)` and breakpoint `n`'s range overlap. The breakpoint's address
/// is masked to its length, as the processor compares it (SDM 3B 18.2.5).
fn overlaps(c: &Cpu, n: usize, a: u64, alen: u64) -> bool {
    let l = len(c.dr[7], n);
    let start = c.dr[n] & !(l - 1);
    let end = start.wrapping_add(l);
    a < end && start < a.wrapping_add(alen)
}

/// Recompute [`Cpu::dbg`] and [`Cpu::dbg_data`] after DR0-DR3, DR7 or CR4 changed. The
/// TLB is flushed whenever data breakpoints are or were armed, so that no page holding
/// one keeps a fast-access tag (see the module's documentation).
pub fn update(c: &mut Cpu) {
    let dr7 = c.dr[7];
    let en = enabled(dr7);
    let data = (0..4).any(|n| en & (1 << n) != 0 && kind(dr7, n) & 1 != 0);
    let was = c.dbg_data;
    c.dbg = en != 0;
    c.dbg_data = data;
    if data || was {
        c.tlb.flush(true);
        c.new_fetch_epoch();
    }
    c.brk = true;
}

/// Whether linear page `vpn` holds the range of a data breakpoint: such a page takes no
/// fast-access tag in the TLB while [`Cpu::dbg_data`] is set. Every data breakpoint
/// counts, enabled or not, so that the conditions met are reported for all of them.
pub fn page_watched(c: &Cpu, vpn: u64) -> bool {
    (0..4).any(|n| kind(c.dr[7], n) & 1 != 0 && (c.dr[n] & !(len(c.dr[7], n) - 1)) >> 12 == vpn)
}

/// A data access of `size` bytes at linear `la` (a write when `write`): note the
/// breakpoint conditions it meets in [`Cpu::db_hits`].
#[cold]
pub fn data_access(c: &mut Cpu, la: u64, size: u32, write: bool) {
    for n in 0..4 {
        let k = kind(c.dr[7], n);
        if (k == 3 || (k == 1 && write)) && overlaps(c, n, la, u64::from(size)) {
            c.db_hits |= 1 << n;
        }
    }
}

/// An I/O access of `size` bytes at `port`: note the I/O breakpoint conditions it meets
/// (they exist only with CR4.DE).
#[inline(always)]
pub fn io_access(c: &mut Cpu, port: u16, size: u8) {
    if c.dbg && c.cr4 & cr4::DE != 0 {
        io_breakpoints(c, port, size);
    }
}

/// [`io_access`] with breakpoints armed and CR4.DE set.
#[cold]
#[inline(never)]
fn io_breakpoints(c: &mut Cpu, port: u16, size: u8) {
    for n in 0..4 {
        if kind(c.dr[7], n) == 2 && overlaps(c, n, u64::from(port), u64::from(size)) {
            c.db_hits |= 1 << n;
        }
    }
}

/// The instruction breakpoints whose address is the linear address of RIP (enabled or
/// not), when at least one of them is enabled: the B0-B3 bits of the #DB fault.
pub fn code_hits(c: &Cpu) -> u8 {
    let la = if c.bits == 64 {
        c.rip
    } else {
        c.seg[sr::CS as usize].base.wrapping_add(c.rip) & 0xffff_ffff
    };
    let mut hits = 0;
    for n in 0..4 {
        if kind(c.dr[7], n) == 0 && c.dr[n] == la {
            hits |= 1 << n;
        }
    }
    if hits & enabled(c.dr[7]) != 0 {
        hits
    } else {
        0
    }
}

/// The data and I/O breakpoint conditions the instruction met, when one of them is
/// enabled (otherwise nothing is reported).
pub fn take_hits(c: &mut Cpu) -> u64 {
    let hits = core::mem::take(&mut c.db_hits);
    if hits & enabled(c.dr[7]) != 0 {
        u64::from(hits)
    } else {
        0
    }
}

/// Record a debug exception's causes in DR6: B0-B3 are replaced by the conditions met
/// now, BD and BS are added to what software left there (as Bochs does; the SDM lets
/// the processor leave B0-B3 of earlier exceptions set).
pub fn report(c: &mut Cpu, bits: u64) {
    c.dr[6] = (c.dr[6] & !DR6_B) | bits;
}
