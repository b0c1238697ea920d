//! Application processors for the SMP guests: the bootstrap processor copies a real-mode
//! trampoline below 1 MiB and starts the others with INIT and two start-up IPIs through
//! its local APIC's ICR, as an operating system does (Intel SDM vol. 3, 9.4.4, "MP
//! Initialization Example"). Each AP enters the trampoline in real mode at
//! [`TRAMPOLINE`], switches to protected mode and long mode on the bootstrap processor's
//! page tables, loads the kernel's GDT and IDT, takes a stack of its own and calls the
//! function the guest gave [`start_aps`] with its APIC ID. The APs print nothing (the
//! console is the bootstrap processor's); they report through shared memory.

use crate::apic::Apic;
use crate::cpu::{cpuid, cr3};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Where the trampoline runs: the start-up IPIs' vector 0x70 names this page. Free
/// conventional memory: above the multiboot information at 0x9000 and below the EBDA.
pub const TRAMPOLINE: u64 = 0x7_0000;
/// The most APs the stacks are made for; APs beyond them halt at once.
pub const MAX_APS: u32 = 15;
/// ICR: INIT delivery mode.
pub const ICR_INIT: u32 = 5 << 8;
/// ICR: start-up delivery mode.
pub const ICR_STARTUP: u32 = 6 << 8;
/// ICR: level assert.
pub const ICR_ASSERT: u32 = 1 << 14;
/// ICR: the send is still pending (xAPIC).
pub const ICR_PENDING: u32 = 1 << 12;
/// ICR destination shorthand: all excluding self.
pub const ICR_ALL_BUT_SELF: u32 = 3 << 18;
/// xAPIC ICR low and high.
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;

global_asm!(
    r#"
    .set AP_BASE, 0x70000
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .code16
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (ap_gdt_ptr - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(AP_BASE + ap_pm32 - ap_trampoline_start)
    .code32
ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl ap_cr3, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(AP_BASE + ap_lm64 - ap_trampoline_start)
    .code64
ap_lm64:
    /* The kernel's GDT, and its code selector by an indirect far jump: no stack yet
       (the APs share this page, so none is taken here). */
    lgdt gdt64_ptr
    ljmpl *(AP_BASE + ap_far - ap_trampoline_start)
    .balign 8
ap_far:
    .long ap_long
    .word 0x08
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF    /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
    .quad 0x00AF9A000000FFFF    /* 0x18: 64-bit code */
ap_gdt_ptr:
    .word 31
    .long AP_BASE + ap_gdt - ap_trampoline_start
    .global ap_trampoline_end
ap_trampoline_end:

    .text
ap_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    lock xaddl %eax, ap_next(%rip)
    cmpl $15, %eax
    jae 2f
    incl %eax
    shlq $14, %rax
    leaq ap_stacks(%rip), %rsp
    addq %rax, %rsp
    xorl %ebp, %ebp
    call rust_ap_start
2:  cli
    hlt
    jmp 2b

    .data
    .balign 4
    .global ap_cr3
ap_cr3:
    .long 0
    .global ap_next
ap_next:
    .long 0
    .bss
    .balign 16
ap_stacks:
    .skip 15 * 16384
    .text
"#,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static mut ap_cr3: u32;
    static ap_next: AtomicU32;
}

/// The function each AP runs (a `fn(u32)`, stored as an address).
static AP_MAIN: AtomicUsize = AtomicUsize::new(0);

/// This CPU's initial APIC ID (CPUID leaf 1, EBX bits 31-24).
pub fn apic_id() -> u32 {
    cpuid(1, 0).1 >> 24
}

#[no_mangle]
extern "C" fn rust_ap_start() -> ! {
    crate::interrupts::load();
    let main = AP_MAIN.load(Ordering::SeqCst);
    if main != 0 {
        // SAFETY: `start_aps` stored a `fn(u32)` before sending the start-up IPIs.
        let main: fn(u32) = unsafe { core::mem::transmute::<usize, fn(u32)>(main) };
        main(apic_id());
    }
    loop {
        crate::cpu::cli();
        // SAFETY: HLT with interrupts disabled parks this AP for good.
        unsafe { core::arch::asm!("hlt") };
    }
}

/// How many APs have entered long mode (each took a stack).
pub fn aps_started() -> u32 {
    // SAFETY: a static of the trampoline's, only ever used atomically.
    unsafe { ap_next.load(Ordering::SeqCst) }
}

/// Send an IPI: `low` is the ICR's low word (vector, delivery mode, level, shorthand),
/// `dest` the destination APIC ID (ignored with a shorthand). Waits until an xAPIC has
/// sent it.
pub fn send_ipi(apic: Apic, dest: u32, low: u32) {
    match apic {
        Apic::X(_) => {
            apic.write(ICR_HIGH, dest << 24);
            apic.write(ICR_LOW, low);
            while apic.read(ICR_LOW) & ICR_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
        Apic::X2 => crate::cpu::wrmsr(0x830, u64::from(dest) << 32 | u64::from(low)),
    }
}

/// Start every other processor with INIT, start-up, start-up (all excluding self, the
/// SDM's delays), each running `ap_main(apic_id)`; returns once `expected` APs have
/// started or after a second, with the number that did.
pub fn start_aps(apic: Apic, expected: u32, ap_main: fn(u32)) -> u32 {
    // SAFETY: the trampoline's bytes are a static; the page at TRAMPOLINE is free
    // conventional memory inside the identity map, which nothing else uses.
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let len = core::ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
        core::ptr::addr_of_mut!(ap_cr3).write_volatile(cr3() as u32);
    }
    AP_MAIN.store(ap_main as usize, Ordering::SeqCst);
    let wait_ms = |ms| crate::apic::spin_until(crate::apic::tsc_ticks_for_ms(ms), || false);
    send_ipi(apic, 0, ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_INIT);
    wait_ms(10);
    let vector = (TRAMPOLINE >> 12) as u32;
    for _ in 0..2 {
        send_ipi(
            apic,
            0,
            ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_STARTUP | vector,
        );
        crate::apic::spin_until(crate::apic::tsc_ticks_for_ms(1), || {
            aps_started() >= expected
        });
    }
    crate::apic::spin_until(crate::apic::tsc_ticks_for_ms(1000), || {
        aps_started() >= expected
    });
    aps_started()
}
