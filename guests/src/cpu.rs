//! Privileged instructions (the `x86_64` crate's, under the names the guests use), and
//! "probes": run one instruction that may fault, and get the fault back instead of an
//! unexpected-exception failure.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::segmentation::{Segment, CS};
use x86_64::instructions::{interrupts, tlb};
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::registers::model_specific::Msr;
use x86_64::registers::rflags;
use x86_64::VirtAddr;

/// Port I/O (shared with the image).
pub use opsvisor_bare::port::{inb, inl, inw, outb, outl, outw};

/// CPUID leaf/subleaf: (EAX, EBX, ECX, EDX).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// RDMSR (faults with #GP on an absent MSR; see [`try_rdmsr`]).
pub fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the guest runs at CPL 0; an absent MSR faults into the IDT.
    unsafe { Msr::new(msr).read() }
}

/// WRMSR.
pub fn wrmsr(msr: u32, v: u64) {
    // SAFETY: as for rdmsr; the callers own the state the MSR controls.
    unsafe { Msr::new(msr).write(v) };
}

/// RDTSC (inline asm: the `x86_64` crate has no RDTSC).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads a counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Read CR0.
pub fn cr0() -> u64 {
    Cr0::read_raw()
}
/// Read CR2.
pub fn cr2() -> u64 {
    Cr2::read_raw()
}
/// Read CR3.
pub fn cr3() -> u64 {
    let (frame, low_bits) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(low_bits)
}
/// Read CR4.
pub fn cr4() -> u64 {
    Cr4::read_raw()
}
/// Write CR4.
pub fn set_cr4(v: u64) {
    // SAFETY: callers set bits whose features they checked.
    unsafe { Cr4::write_raw(v) };
}

/// Invalidate the TLB entry of `addr` (a canonical address).
pub fn invlpg(addr: u64) {
    tlb::flush(VirtAddr::new(addr));
}

/// Read RFLAGS.
pub fn rflags() -> u64 {
    rflags::read_raw()
}

/// Read CS.
pub fn cs() -> u16 {
    CS::get_reg().0
}

/// Enable interrupts.
pub fn sti() {
    interrupts::enable();
}
/// Disable interrupts.
pub fn cli() {
    interrupts::disable();
}
/// `sti; hlt`: the STI shadow makes the pair atomic, so an interrupt that arrives
/// between a check done with interrupts off and the HLT still wakes it.
pub fn sti_hlt() {
    interrupts::enable_and_hlt();
}

/// A fault a probe caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The exception vector.
    pub vector: u8,
    /// Its error code (zero for vectors without one).
    pub error_code: u64,
}

/// The address of the instruction the armed probe expects may fault (0: none armed).
pub(crate) static PROBE_RIP: AtomicU64 = AtomicU64::new(0);
/// Its length: a caught fault resumes after it.
pub(crate) static PROBE_LEN: AtomicU64 = AtomicU64::new(0);
/// The caught fault's vector plus one (0: nothing caught).
pub(crate) static PROBE_VECTOR: AtomicU64 = AtomicU64::new(0);
/// The caught fault's error code.
pub(crate) static PROBE_ERROR: AtomicU64 = AtomicU64::new(0);

/// Arm a probe for an instruction at `rip` of `len` bytes: a fault raised with that RIP is
/// recorded and the instruction skipped. Returns nothing; see [`take_probe`].
pub fn arm_probe(rip: u64, len: u64) {
    PROBE_VECTOR.store(0, Ordering::SeqCst);
    PROBE_ERROR.store(0, Ordering::SeqCst);
    PROBE_LEN.store(len, Ordering::SeqCst);
    PROBE_RIP.store(rip, Ordering::SeqCst);
}

/// Disarm the probe and return what it caught.
pub fn take_probe() -> Option<Fault> {
    PROBE_RIP.store(0, Ordering::SeqCst);
    let v = PROBE_VECTOR.load(Ordering::SeqCst);
    (v != 0).then(|| Fault {
        vector: (v - 1) as u8,
        error_code: PROBE_ERROR.load(Ordering::SeqCst),
    })
}

/// Called by the interrupt dispatcher: if the fault is at the probed instruction, record
/// it, move RIP past the instruction and return true.
pub(crate) fn probe_catch(vector: u64, error_code: u64, rip: &mut u64) -> bool {
    let want = PROBE_RIP.load(Ordering::SeqCst);
    if want == 0 || want != *rip || vector >= 32 {
        return false;
    }
    PROBE_VECTOR.store(vector + 1, Ordering::SeqCst);
    PROBE_ERROR.store(error_code, Ordering::SeqCst);
    *rip += PROBE_LEN.load(Ordering::SeqCst);
    PROBE_RIP.store(0, Ordering::SeqCst);
    true
}

/// RDMSR that reports a fault instead of failing the guest.
pub fn try_rdmsr(msr: u32) -> Result<u64, Fault> {
    let (mut lo, mut hi): (u32, u32) = (0, 0);
    PROBE_VECTOR.store(0, Ordering::SeqCst);
    // SAFETY: the probe turns a #GP on the RDMSR (2 bytes: 0F 32) into a skip.
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [{len}], 2",
            "mov qword ptr [{rip}], {t}",
            "2:",
            "rdmsr",
            t = out(reg) _,
            rip = in(reg) PROBE_RIP.as_ptr(),
            len = in(reg) PROBE_LEN.as_ptr(),
            in("ecx") msr,
            inout("eax") lo,
            inout("edx") hi,
            options(nostack),
        );
    }
    match take_probe() {
        Some(f) => Err(f),
        None => Ok((u64::from(hi) << 32) | u64::from(lo)),
    }
}

/// WRMSR that reports a fault instead of failing the guest.
pub fn try_wrmsr(msr: u32, v: u64) -> Result<(), Fault> {
    PROBE_VECTOR.store(0, Ordering::SeqCst);
    // SAFETY: as for try_rdmsr (WRMSR is 0F 30).
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov qword ptr [{len}], 2",
            "mov qword ptr [{rip}], {t}",
            "2:",
            "wrmsr",
            t = out(reg) _,
            rip = in(reg) PROBE_RIP.as_ptr(),
            len = in(reg) PROBE_LEN.as_ptr(),
            in("ecx") msr,
            in("eax") v as u32,
            in("edx") (v >> 32) as u32,
            options(nostack),
        );
    }
    match take_probe() {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Whether CPUID reports `bit` of `reg` (0 = EAX .. 3 = EDX) for `leaf`, checking the
/// leaf is in range first (an out-of-range leaf returns another leaf's data).
pub fn has_feature(leaf: u32, sub: u32, reg: usize, bit: u32) -> bool {
    let max = if leaf >= 0x8000_0000 {
        cpuid(0x8000_0000, 0).0
    } else {
        cpuid(0, 0).0
    };
    if leaf > max {
        return false;
    }
    let r = cpuid(leaf, sub);
    let v = [r.0, r.1, r.2, r.3][reg & 3];
    v & (1 << bit) != 0
}

/// Whether this is QEMU's TCG emulator (its brand string says so). A few known TCG
/// deviations from silicon are tolerated under it, and only under it: see
/// [`crate::check_or_tcg!`].
pub fn is_qemu_tcg() -> bool {
    if cpuid(0x8000_0000, 0).0 < 0x8000_0004 {
        return false;
    }
    let (a, b, c, d) = cpuid(0x8000_0002, 0);
    let mut brand = [0u8; 16];
    for (i, r) in [a, b, c, d].iter().enumerate() {
        brand[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
    }
    brand.starts_with(b"QEMU TCG")
}

/// Whether opsvisor runs this guest (its signature in CPUID leaf 0x4000_0000): then the
/// machine is opsvisor's PC even where the CPU is QEMU's TCG, whose brand opsvisor's
/// hardware backends pass through to the guest.
pub fn is_opsvisor() -> bool {
    if cpuid(1, 0).2 & (1 << 31) == 0 {
        return false;
    }
    let (_, b, c, d) = cpuid(0x4000_0000, 0);
    let mut signature = [0u8; 12];
    for (i, r) in [b, c, d].iter().enumerate() {
        signature[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
    }
    &signature == b"opsvisor\0\0\0\0"
}

/// Whether the machine's devices are QEMU's own (`-M pc` under TCG, as the corpus's QEMU
/// runner starts it) rather than opsvisor's, which a guest also meets on QEMU's CPU when
/// opsvisor's image runs it there.
pub fn qemu_devices() -> bool {
    is_qemu_tcg() && !is_opsvisor()
}

/// Run inline assembly whose instruction labelled `2:` may fault: `probe!(LEN, [asm
/// lines...], operands...)`, where LEN is that instruction's length in bytes. A fault it
/// raises is caught (the instruction skipped) and returned as `Some(Fault)` instead of
/// ending the guest; `None` when nothing faulted. The operands are `asm!`'s and must
/// declare every register the lines change.
#[macro_export]
macro_rules! probe {
    ($len:literal, [$($code:literal),+] $(, $($operands:tt)+)?) => {{
        $crate::cpu::arm_probe(0, 0);
        let (slot_rip, slot_len) = $crate::cpu::probe_slots();
        // SAFETY: the probed instruction's fault is caught and skipped; the operands
        // declare every register the code changes.
        unsafe {
            core::arch::asm!(
                "lea {t}, [rip + 2f]",
                concat!("mov qword ptr [{len}], ", $len),
                "mov qword ptr [{rip}], {t}",
                $($code),+,
                t = out(reg) _,
                rip = in(reg) slot_rip,
                len = in(reg) slot_len,
                $($($operands)+)?
            );
        }
        $crate::cpu::take_probe()
    }};
}

/// The probe's RIP and length slots, for guests that write their own probed asm: store
/// the faulting instruction's address and length there (after [`arm_probe`]`(0, 0)` to
/// clear the last result), run it, then [`take_probe`].
pub fn probe_slots() -> (*mut u64, *mut u64) {
    (PROBE_RIP.as_ptr(), PROBE_LEN.as_ptr())
}
