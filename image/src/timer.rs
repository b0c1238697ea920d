//! The host timer that bounds an SVM guest's run: SVM has no preemption timer, so the
//! backend arms the host's local APIC timer (one-shot, [`crate::cpu::HOST_TIMER_VECTOR`])
//! before each VMRUN and lets it interrupt the guest (a physical interrupt exits it),
//! as VMX's preemption timer does. This module finds the APIC, masks the 8259 PICs
//! (their interrupts would land on exception vectors once the host sets RFLAGS.IF for a
//! run), enables the APIC with the image's spurious vector, and measures the timer's
//! rate against the TSC.

use crate::cpu::{rdmsr_probe, rdtsc, set_host_timer_eoi, HOST_TIMER_VECTOR, SPURIOUS_VECTOR};
use opsvisor_bare::port::outb;
use opsvisor_svm::HostTimer;

/// IA32_APIC_BASE.
const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE: the APIC is enabled.
const APIC_ENABLED: u64 = 1 << 11;
/// IA32_APIC_BASE: x2APIC mode.
const APIC_X2APIC: u64 = 1 << 10;
/// xAPIC registers.
const SVR: u64 = 0xf0;
const LVT_TIMER: u64 = 0x320;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_CURRENT: u64 = 0x390;
const TIMER_DIVIDE: u64 = 0x3e0;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// The page tables map 0..4 GiB: the APIC page must lie below.
const IDENTITY_MAPPED: u64 = 1 << 32;

fn write(base: u64, reg: u64, value: u32) {
    // SAFETY: `base` is the xAPIC page (checked to be enabled, in xAPIC mode and inside
    // the identity map); the offsets are architectural 32-bit registers.
    unsafe { ((base + reg) as *mut u32).write_volatile(value) };
}

fn read(base: u64, reg: u64) -> u32 {
    // SAFETY: as for `write`.
    unsafe { ((base + reg) as *const u32).read_volatile() }
}

/// Set up the host timer, or say why there is none.
pub fn host_timer(tsc_hz: u64) -> Result<HostTimer, &'static str> {
    if !crate::host_cpu::has_apic() {
        return Err("the CPU has no local APIC");
    }
    let apic = rdmsr_probe(IA32_APIC_BASE).ok_or("IA32_APIC_BASE does not read")?;
    if apic & APIC_ENABLED == 0 {
        return Err("the local APIC is disabled");
    }
    if apic & APIC_X2APIC != 0 {
        return Err("the local APIC is in x2APIC mode");
    }
    let base = apic & 0xf_ffff_f000;
    if base + 0x1000 > IDENTITY_MAPPED {
        return Err("the local APIC's page is above 4 GiB");
    }
    // Both 8259s: every line masked.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    write(base, SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    set_host_timer_eoi(base);
    // Count down from the top for 2 ms of TSC, masked, divide by 1.
    write(base, TIMER_DIVIDE, 0xb);
    write(base, LVT_TIMER, LVT_MASKED | u32::from(HOST_TIMER_VECTOR));
    let window = (tsc_hz / 500).max(1);
    write(base, TIMER_INITIAL, u32::MAX);
    let start = rdtsc();
    let mut now = start;
    while now.wrapping_sub(start) < window {
        now = rdtsc();
        core::hint::spin_loop();
    }
    let left = read(base, TIMER_CURRENT);
    let elapsed_tsc = rdtsc().wrapping_sub(start);
    write(base, TIMER_INITIAL, 0);
    let ticks = u64::from(u32::MAX - left);
    if ticks == 0 {
        return Err("the APIC timer does not count");
    }
    let hz = (u128::from(ticks) * u128::from(tsc_hz) / u128::from(elapsed_tsc.max(1))) as u64;
    Ok(HostTimer {
        apic_base: base,
        vector: HOST_TIMER_VECTOR,
        hz: hz.max(1),
    })
}
