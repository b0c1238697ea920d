//! The guests' runtime: boot to long mode, console, descriptor tables, interrupts,
//! paging helpers, the local APIC, ACPI table lookup, and pass/fail reporting.
//!
//! A guest is a binary in `src/bin/` that calls [`entry!`] with its `main`. `main`
//! prints what it checks; a failed [`check!`] prints `FAIL: ...` and exits with a
//! non-zero code, `main` returning means PASS.
//!
//! Exit convention (the debug-exit port 0xF4, as QEMU's `isa-debug-exit`): the guest
//! writes a code, the process exits with status `(code << 1) | 1`. Code 0 (status 1) is
//! PASS; every other code is FAIL and below 0x80, since the status keeps 8 bits.
//!
//! A guest whose subject is missing on the CPU it runs on (for instance no TSC-deadline
//! timer) prints `SKIP: <why>` and exits PASS: the run is correct, it just tested less.
//! The corpus runner reports such a skip.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod cell;
pub mod cpu;
pub mod debug;
pub mod gdt;
pub mod interrupts;
pub mod irq;
pub mod multiboot;
pub mod paging;
pub mod serial;
pub mod smp;

pub use interrupts::Frame;

/// Exit code: PASS.
pub const EXIT_PASS: u32 = 0;
/// Exit code: a check failed.
pub const EXIT_FAIL: u32 = 1;
/// Exit code: the loader's EAX was not the multiboot magic.
pub const EXIT_BAD_MAGIC: u32 = 2;
/// Exit code: an exception or interrupt nobody expected.
pub const EXIT_UNEXPECTED_INTERRUPT: u32 = 3;
/// Exit code: a Rust panic.
pub const EXIT_PANIC: u32 = 4;

/// The debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Bochs' shutdown port: the string `Shutdown` written to it ends the simulation.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// Report `code` through the debug-exit port, then stop for good.
pub fn exit(code: u32) -> ! {
    cpu::outl(DEBUG_EXIT_PORT, code);
    // Without a debug-exit device the OUT does nothing. Bochs has none: power it off
    // through its shutdown port once the console has sent everything (the verdict is
    // then read from the console). Elsewhere that port has no device either.
    serial::COM1.drain();
    for &b in b"Shutdown" {
        cpu::outb(BOCHS_SHUTDOWN_PORT, b);
    }
    // Nothing ended the machine: park the CPU.
    loop {
        cpu::cli();
        x86_64::instructions::hlt();
    }
}

/// A guest whose correct ending is the machine going away (a reset, a power-off) calls
/// this after asking for it: if the guest is still running `ms` milliseconds later, the
/// request did nothing, which is a FAIL.
pub fn expect_gone(what: &str, ms: u64) -> ! {
    apic::spin_until(apic::tsc_ticks_for_ms(ms), || false);
    println!(
        "FAIL: {} did not happen: the guest still runs {} ms later",
        what, ms
    );
    exit(EXIT_FAIL)
}

/// Print `SKIP: <why>` and exit PASS (the guest's subject is missing here).
pub fn skip(why: core::fmt::Arguments<'_>) -> ! {
    println!("SKIP: {}", why);
    println!("PASS (skipped)");
    exit(EXIT_PASS)
}

/// Check a condition: print `ok: <what>` or `FAIL: <what>` and exit FAIL.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {{
        if $cond {
            $crate::println!("ok: {}", format_args!($($arg)*));
        } else {
            $crate::println!("FAIL: {} [{}:{}: {}]", format_args!($($arg)*), file!(), line!(), stringify!($cond));
            $crate::exit($crate::EXIT_FAIL);
        }
    }};
}

/// [`check!`] that prints only a failure: for checks repeated in polling loops.
#[macro_export]
macro_rules! check_quiet {
    ($cond:expr, $($arg:tt)*) => {{
        if !$cond {
            $crate::println!("FAIL: {} [{}:{}: {}]", format_args!($($arg)*), file!(), line!(), stringify!($cond));
            $crate::exit($crate::EXIT_FAIL);
        }
    }};
}

/// Check two values are equal, printing both.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr, $($arg:tt)*) => {{
        let (a, b) = (&$a, &$b);
        if a == b {
            $crate::println!("ok: {} ({:x?})", format_args!($($arg)*), a);
        } else {
            $crate::println!("FAIL: {}: {:x?} != {:x?} [{}:{}]", format_args!($($arg)*), a, b, file!(), line!());
            $crate::exit($crate::EXIT_FAIL);
        }
    }};
}

/// Check an architectural rule that QEMU TCG is known to break: strict everywhere else
/// (silicon, opsvisor, other hypervisors); under TCG a miss prints a note naming the
/// deviation instead of failing, so the corpus still runs green under QEMU.
#[macro_export]
macro_rules! check_or_tcg {
    ($cond:expr, $deviation:expr, $($arg:tt)*) => {{
        if $cond {
            $crate::println!("ok: {}", format_args!($($arg)*));
        } else if $crate::cpu::is_qemu_tcg() {
            $crate::println!("note: QEMU TCG deviation ({}): {}", $deviation, format_args!($($arg)*));
        } else {
            $crate::println!("FAIL: {} [{}:{}: {}]", format_args!($($arg)*), file!(), line!(), stringify!($cond));
            $crate::exit($crate::EXIT_FAIL);
        }
    }};
}

/// Check a rule of the PC's devices that QEMU's device models are known to break: strict
/// on opsvisor's machine (whichever CPU runs it, QEMU's TCG included: see
/// [`cpu::qemu_devices`]); on QEMU's own machine a miss prints a note naming the
/// difference instead of failing.
#[macro_export]
macro_rules! check_or_qemu {
    ($cond:expr, $difference:expr, $($arg:tt)*) => {{
        if $cond {
            $crate::println!("ok: {}", format_args!($($arg)*));
        } else if $crate::cpu::qemu_devices() {
            $crate::println!("note: QEMU's devices differ ({}): {}", $difference, format_args!($($arg)*));
        } else {
            $crate::println!("FAIL: {} [{}:{}: {}]", format_args!($($arg)*), file!(), line!(), stringify!($cond));
            $crate::exit($crate::EXIT_FAIL);
        }
    }};
}

/// Print `SKIP: ...` and exit PASS.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => { $crate::skip(format_args!($($arg)*)) };
}

/// Declare the guest's `main(&'static multiboot::Info)`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        extern "C" fn opsvisor_guest_main(info: &'static $crate::multiboot::Info) {
            let main: fn(&'static $crate::multiboot::Info) = $main;
            main(info)
        }
    };
}

extern "C" {
    static boot_magic: u32;
    static boot_info: u32;
    fn opsvisor_guest_main(info: &'static multiboot::Info);
}

#[no_mangle]
extern "C" fn rust_start64() -> ! {
    serial::init();
    // SAFETY: written once by the trampoline before it jumped here.
    let (magic, info) = unsafe { (boot_magic, boot_info) };
    if magic != boot::MULTIBOOT_BOOT_MAGIC {
        println!(
            "FAIL: loader passed EAX={:#x}, not the multiboot magic {:#x}",
            magic,
            boot::MULTIBOOT_BOOT_MAGIC
        );
        exit(EXIT_BAD_MAGIC);
    }
    if info == 0 {
        println!("FAIL: loader passed no multiboot info (EBX=0)");
        exit(EXIT_FAIL);
    }
    gdt::init();
    interrupts::init();
    // SAFETY: EBX pointed at the info structure, identity-mapped below 4 GiB; it stays
    // in place for the whole run (nothing here reuses low memory).
    let info: &'static multiboot::Info = unsafe { &*(info as usize as *const multiboot::Info) };
    // SAFETY: the guest binary defines it with `entry!`.
    unsafe { opsvisor_guest_main(info) };
    println!("PASS");
    exit(EXIT_PASS)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cpu::cli();
    println!("FAIL: panic: {}", info);
    exit(EXIT_PANIC)
}
