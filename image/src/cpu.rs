//! CPU helpers, the GDT, the TSS and the IDT (port I/O is `opsvisor_bare::port`).

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use opsvisor_bare::desc::{self, Idt, Tss};
use x86_64::instructions::{hlt, interrupts, tables::load_tss};
use x86_64::registers::control::Cr2;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::VirtAddr;

/// The time-stamp counter (inline asm: the `x86_64` crate has no RDTSC).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads a counter; CR4.TSD is clear (ring 0 anyway).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    Cr2::read_raw()
}

/// Stop the CPU for good (interrupts off, HLT in a loop: NMIs resume into the loop).
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        hlt();
    }
}

/// A cell the boot CPU alone uses (the image runs on one CPU with interrupts off).
pub struct BootCell<T>(UnsafeCell<T>);

// SAFETY: one CPU, interrupts disabled: no concurrent access ever happens.
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    /// A cell holding `v`.
    pub const fn new(v: T) -> Self {
        BootCell(UnsafeCell::new(v))
    }

    /// The pointer to the value.
    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}

static TSS: BootCell<Tss> = BootCell::new(Tss::new());

/// The stack exceptions run on (IST 1): a fault caused by an exhausted or corrupt boot
/// stack can still print its diagnostic.
#[repr(C, align(16))]
struct ExceptionStack([u8; 32 * 1024]);
static EXCEPTION_STACK: BootCell<ExceptionStack> = BootCell::new(ExceptionStack([0; 32 * 1024]));

/// 256 gates: the exception vectors, the host timer's and the APIC's spurious vector; the
/// others are not present (#NP, reported as an exception).
static IDT: BootCell<Idt> = BootCell::new(Idt::new());

/// The GDT the boot code loads (`gdt_ptr` in [`crate::boot`]) before entering long mode,
/// hence a symbol with an initial value: null, code, data, then the TSS's two slots,
/// filled in by [`init_tables`].
#[no_mangle]
static mut gdt: [u64; 5] = [0, desc::KERNEL_CODE64, desc::KERNEL_DATA, 0, 0];

/// The vector of the host timer that bounds an SVM guest's run (see [`crate::timer`]).
pub const HOST_TIMER_VECTOR: u8 = 0xf0;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// #DB.
const DB_VECTOR: u8 = 1;
/// #GP.
const GP_VECTOR: u8 = 13;

/// The address of the local APIC's EOI register, which the host timer's handler writes
/// (0 until [`crate::timer`] sets it; the handler runs only after that).
#[no_mangle]
static HOST_TIMER_EOI: AtomicU64 = AtomicU64::new(0);

/// Where the SVM world switch resumes at #VMEXIT ([`opsvisor_svm::hardware::vmexit_rip`]),
/// for the #DB handler.
#[no_mangle]
static SVM_VMEXIT_RIP: AtomicU64 = AtomicU64::new(0);

// The host timer's handler acknowledges the interrupt and returns to where the host
// was (the STGI after a #VMEXIT); the spurious vector needs no EOI. The #DB handler
// returns from a #DB at the SVM world switch's #VMEXIT address: the host sets no TF and
// arms no breakpoint, so a #DB there is a guest's single-step trap that Bochs' SVM keeps
// pending across the #VMEXIT of an intercepted instruction (the backend raises the
// guest's own when it completes the instruction); any other #DB goes to the exception
// report, through stub 1. Its gate has no IST: there TR is still the guest's, whose TSS
// holds no stack of the host's (IST 1 would be looked up there), and the host's stack is
// the one VMRUN saved. The MSR probe
// executes RDMSR with a #GP gate that resumes after it: `msr_probe(index, out)` returns
// 1 with the value stored, or 0 when RDMSR faulted. Assembly, not the x86_64 crate's
// Msr: the #GP gate must resume at a known address after the one RDMSR.
global_asm!(
    r#"
    .text
    .p2align 4
    .global host_timer_stub
host_timer_stub:
    push rax
    mov rax, qword ptr [rip + HOST_TIMER_EOI]
    mov dword ptr [rax], 0
    pop rax
    iretq

    .p2align 4
    .global spurious_stub
spurious_stub:
    iretq

    .p2align 4
    .global host_debug_stub
host_debug_stub:
    push rax
    mov rax, qword ptr [rip + SVM_VMEXIT_RIP]
    cmp rax, qword ptr [rsp + 8]
    pop rax
    jne exception_stubs + 16
    iretq

    .p2align 4
    .global msr_probe_gp
msr_probe_gp:
    add rsp, 8
    lea rax, [rip + msr_probe_faulted]
    mov [rsp], rax
    iretq

    .p2align 4
    .global msr_probe
msr_probe:
    mov ecx, edi
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [rsi], rax
    mov eax, 1
    ret
msr_probe_faulted:
    xor eax, eax
    ret
"#
);

extern "C" {
    static exception_stubs: u8;
    fn host_timer_stub();
    fn spurious_stub();
    fn host_debug_stub();
    fn msr_probe_gp();
}

extern "sysv64" {
    fn msr_probe(index: u32, out: *mut u64) -> u32;
}

/// Make `vector` a 64-bit interrupt gate, DPL 0, to `handler` on IST 1.
///
/// # Safety
///
/// `handler` is an entry for `vector`'s frame that ends with IRETQ (or never returns), and
/// nothing uses the gate while it changes: one CPU, interrupts off.
unsafe fn set_gate(vector: u8, handler: u64) {
    // SAFETY: the caller's contract, which is `set_gate_on`'s with IST 1, which
    // `init_tables` sets in the TSS before the IDT is loaded.
    unsafe { set_gate_on(vector, handler, 1) };
}

/// Make `vector` a 64-bit interrupt gate, DPL 0, to `handler` on IST `ist` (0: the
/// stack in use).
///
/// # Safety
///
/// As for [`set_gate`], and the stack `ist` names is valid whenever the gate fires.
unsafe fn set_gate_on(vector: u8, handler: u64, ist: u8) {
    // SAFETY: the caller vouches for the handler and the stack.
    unsafe { (*IDT.get()).set_interrupt_gate(vector, handler, crate::boot::KERNEL_CS, ist, 0) };
}

/// RDMSR of `index`, or `None` when the MSR does not exist (RDMSR raises #GP: the
/// probe's own #GP gate resumes after it). Bochs has no VM_CR, QEMU reads it as 0.
pub fn rdmsr_probe(index: u32) -> Option<u64> {
    // SAFETY: one CPU, interrupts off: nothing else uses the IDT while gate 13 points
    // at the probe's handler, which only turns a #GP of the RDMSR below into a return
    // of 0 (the only instruction in `msr_probe` that can fault), and is put back
    // before anything else runs.
    unsafe {
        let saved = (*IDT.get()).0[usize::from(GP_VECTOR)];
        set_gate(GP_VECTOR, msr_probe_gp as *const () as u64);
        let mut value = 0u64;
        let ok = msr_probe(index, &mut value);
        (*IDT.get()).0[usize::from(GP_VECTOR)] = saved;
        (ok != 0).then_some(value)
    }
}

/// Point the host timer's handler at the EOI register of the APIC at `apic_base`.
pub fn set_host_timer_eoi(apic_base: u64) {
    HOST_TIMER_EOI.store(apic_base + 0xb0, Ordering::SeqCst);
}

/// Fill in the TSS descriptor and load TR (VM entry needs a non-zero host TR), then load
/// an IDT whose 32 exception vectors all go to [`crate::exception_handler`] on IST 1,
/// but #DB, which goes there on the stack in use unless it is a guest's trap at the SVM
/// #VMEXIT (see `host_debug_stub`), with the host timer's and the spurious vector's
/// handlers.
pub fn init_tables() {
    let stack_top = EXCEPTION_STACK.get() as u64 + core::mem::size_of::<ExceptionStack>() as u64;
    // SAFETY: boot time, one CPU: nothing else uses the TSS yet, and it is not written
    // after this. The GDT's descriptors 3 and 4 are the TSS slot, unused until the LTR
    // below, which then finds an available TSS descriptor there; addr_of_mut avoids a
    // reference to the mutable static.
    unsafe {
        (*TSS.get()).interrupt_stack_table[0] = VirtAddr::new(stack_top);
        let [low, high] = desc::tss_descriptor(&*TSS.get());
        let g = core::ptr::addr_of_mut!(gdt);
        (*g)[3] = low;
        (*g)[4] = high;
        load_tss(SegmentSelector(crate::boot::TSS_SEL));
    }

    SVM_VMEXIT_RIP.store(opsvisor_svm::hardware::vmexit_rip(), Ordering::SeqCst);
    // The stubs are 16 bytes apart.
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    // SAFETY: boot time, one CPU, the IDT is not loaded yet; each exception stub pushes
    // the frame `exception_handler` takes, which never returns; the host timer's and the
    // spurious vector's stubs end with IRETQ.
    unsafe {
        for vector in 0..32u8 {
            set_gate(vector, stubs + 16 * u64::from(vector));
        }
        set_gate(HOST_TIMER_VECTOR, host_timer_stub as *const () as u64);
        set_gate(SPURIOUS_VECTOR, spurious_stub as *const () as u64);
        // On the stack in use, which is the host's wherever a #DB can come from: the
        // SVM world switch's #VMEXIT (the stack VMRUN saved), or a host bug, reported.
        set_gate_on(DB_VECTOR, host_debug_stub as *const () as u64, 0);
    }
    // SAFETY: the IDT is a static whose present gates are valid; a vector without one
    // raises #NP, which is gate 11.
    unsafe { (*IDT.get()).load() };
}
