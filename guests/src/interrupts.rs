//! The IDT, the common interrupt frame and handler registration.

use crate::cell::Racy;
use crate::cpu::{self, outb};
use core::sync::atomic::{AtomicUsize, Ordering};
use opsvisor_bare::desc::Idt;

/// The registers the entry stubs save, then the vector, the error code (zero for vectors
/// without one) and the frame the CPU pushed. A handler may change any of them; they are
/// restored on return (IRETQ).
#[repr(C)]
#[derive(Debug)]
#[allow(missing_docs)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A handler for one vector.
pub type Handler = fn(&mut Frame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

static IDT: Racy<Idt> = Racy::new(Idt::new());

extern "C" {
    static isr_stubs: u8;
}

/// Load the IDT [`init`] built on this CPU (an application processor shares the
/// bootstrap processor's table).
pub fn load() {
    // SAFETY: the IDT is a static that lives for the whole run, filled in by `init`.
    unsafe { (*IDT.get()).load() };
}

/// Build the IDT (every vector: an interrupt gate, DPL 0, to its stub; #DF on IST1),
/// load it, and mask the legacy PICs so only the local APIC interrupts.
pub fn init() {
    // Only the address of the stub table is taken: no unsafe needed.
    let base = core::ptr::addr_of!(isr_stubs) as u64;
    for v in 0..256u64 {
        set_gate(v as u8, base + v * 16, 0, if v == 8 { 1 } else { 0 });
    }
    load();
    mask_pic();
}

fn set_gate(vector: u8, handler: u64, dpl: u8, ist: u8) {
    // SAFETY: single CPU; the entry is written whole before an interrupt of this vector
    // can use it (callers change gates with interrupts disabled). `handler` is the
    // vector's stub in `isr_stubs`, which pushes the frame `isr_dispatch` takes and
    // returns with IRETQ; IST1 (the #DF stack) is set in the TSS by `gdt::init`.
    unsafe {
        (*IDT.get()).set_interrupt_gate(vector, handler, crate::boot::KERNEL_CS, ist, dpl);
    }
}

/// Make `vector`'s gate usable by `INT n` from ring `dpl` (3: from user mode).
pub fn set_dpl(vector: u8, dpl: u8) {
    // Only the address of the stub table is taken: no unsafe needed.
    let base = core::ptr::addr_of!(isr_stubs) as u64;
    set_gate(vector, base + u64::from(vector) * 16, dpl, 0);
}

/// Route `vector` to `handler`.
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::SeqCst);
}

/// Remove `vector`'s handler: it becomes unexpected again.
pub fn clear_handler(vector: u8) {
    HANDLERS[vector as usize].store(0, Ordering::SeqCst);
}

/// Remap the 8259s to vectors 0x20..0x2F (away from the exception vectors, where the
/// BIOS left them) and mask every line.
fn mask_pic() {
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, 0x20);
    outb(0xA1, 0x28);
    outb(0x21, 0x04);
    outb(0xA1, 0x02);
    outb(0x21, 0x01);
    outb(0xA1, 0x01);
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

const NAMES: [&str; 21] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "(15)", "#MF", "#AC", "#MC", "#XM", "#VE",
];

/// The name of an exception vector, for messages.
pub fn vector_name(v: u64) -> &'static str {
    NAMES.get(v as usize).copied().unwrap_or("interrupt")
}

#[no_mangle]
extern "C" fn isr_dispatch(frame: &mut Frame) {
    if cpu::probe_catch(frame.vector, frame.error_code, &mut frame.rip) {
        return;
    }
    let h = HANDLERS[(frame.vector & 0xFF) as usize].load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: only set_handler stores here, and it stores a `Handler`.
        let h: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        h(frame);
        return;
    }
    // Spurious interrupts of the (masked) PICs and the APIC's spurious vector are
    // harmless: no EOI, just return.
    if frame.vector == 0x27 || frame.vector == 0x2F || frame.vector == 0xFF {
        return;
    }
    crate::println!(
        "FAIL: unexpected {} (vector {:#x}) error {:#x} at rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} cr2 {:#x}",
        vector_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        cpu::cr2()
    );
    crate::exit(crate::EXIT_UNEXPECTED_INTERRUPT);
}
