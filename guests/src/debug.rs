//! The debug registers and a #DB handler that logs each debug exception, for the guests
//! that check breakpoints and single-stepping.

use crate::cell::Racy;
use crate::Frame;
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

/// RFLAGS.TF.
pub const TF: u64 = 1 << 8;
/// RFLAGS.RF.
pub const RF: u64 = 1 << 16;
/// DR6.BD.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS.
pub const DR6_BS: u64 = 1 << 14;
/// DR6's bits that read as 1 (bits 4-11 and 16-31).
pub const DR6_FIXED: u64 = 0xffff_0ff0;
/// DR7.GD.
pub const DR7_GD: u64 = 1 << 13;
/// IA32_DEBUGCTL.
pub const MSR_DEBUGCTL: u32 = 0x1d9;

/// One debug exception as the handler saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Db {
    /// The RIP it returns to.
    pub rip: u64,
    /// DR6 in the handler.
    pub dr6: u64,
    /// The RFLAGS image the processor pushed.
    pub rflags: u64,
    /// R14, where the guests' code marks its progress.
    pub mark: u64,
}

/// Records kept (later exceptions are counted only).
const MAX: usize = 32;

static LOG: Racy<[Db; MAX]> = Racy::new(
    [Db {
        rip: 0,
        dr6: 0,
        rflags: 0,
        mark: 0,
    }; MAX],
);
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Read DR`n` (0-3, 6, 7).
pub fn dr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a debug register at CPL 0 (with DR7.GD clear: callers that set GD
    // expect the #DB).
    unsafe {
        match n {
            0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack)),
            1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack)),
            2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack)),
            3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack)),
            6 => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack)),
            _ => asm!("mov {}, dr7", out(reg) v, options(nomem, nostack)),
        }
    }
    v
}

/// Write DR`n` (0-3, 6, 7).
pub fn set_dr(n: u8, v: u64) {
    // SAFETY: CPL 0; the callers' values arm only breakpoints their checks expect, and
    // bits 63:32 of DR6/DR7 are clear.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
            1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
            2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
            3 => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
            6 => asm!("mov dr6, {}", in(reg) v, options(nomem, nostack)),
            _ => asm!("mov dr7, {}", in(reg) v, options(nomem, nostack)),
        }
    }
}

/// DR7's bits for breakpoint `n`: local enable, R/W kind (0 execute, 1 write, 2 I/O,
/// 3 read/write) and LEN field (0: 1 byte, 1: 2, 3: 4, 2: 8).
pub fn dr7_bp(n: u32, rw: u64, len: u64) -> u64 {
    (1 << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n))
}

/// The #DB handler: log the exception, clear DR6 and return with RF set in the image
/// (an instruction breakpoint's fault does not set it, and the instruction must run on
/// return; for traps it changes nothing). TF stays as it was, so single-stepping goes on
/// until the code under test clears it.
pub fn on_db(f: &mut Frame) {
    let n = COUNT.load(Ordering::SeqCst);
    if n < MAX {
        // SAFETY: the log is written here only, and read by the guest between runs of
        // the code under test, never while a #DB can occur.
        unsafe {
            (*LOG.get())[n] = Db {
                rip: f.rip,
                dr6: dr(6),
                rflags: f.rflags,
                mark: f.r14,
            }
        };
    }
    COUNT.store(n + 1, Ordering::SeqCst);
    set_dr(6, 0);
    f.rflags |= RF;
}

/// Install [`on_db`] for vector 1, disarm every breakpoint, clear DR6 and the log.
pub fn reset() {
    crate::interrupts::set_handler(1, on_db);
    set_dr(7, 0);
    set_dr(6, 0);
    COUNT.store(0, Ordering::SeqCst);
}

/// The debug exceptions since [`reset`] (the first 32).
pub fn log() -> &'static [Db] {
    let n = COUNT.load(Ordering::SeqCst).min(MAX);
    // SAFETY: read while no #DB can write it (the code under test has finished).
    unsafe { &(&*LOG.get())[..n] }
}

/// How many debug exceptions there were since [`reset`].
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// Whether the logged exceptions' R14 marks are `expect`, in order.
pub fn marks_are(expect: &[u64]) -> bool {
    log().iter().map(|d| d.mark).eq(expect.iter().copied())
}
