//! The processor side of SVM: VMRUN/#VMEXIT in assembly, EFER.SVME and the host save
//! area, VMLOAD/VMSAVE of the host's state, INVLPGA, the MSRs VMRUN does not switch,
//! the x87/SSE state, and the host timer that bounds a run.
//!
//! [`HardwareSvm`] implements [`SvmProcessor`] with the real instructions; the vCPU
//! logic above it is the same code that [`crate::replay::ReplayVmcb`] runs on the host.

use crate::enable::{reachable, EFER_SVME, MSR_VM_HSAVE_PA};
use crate::exits::Gprs;
use crate::page::{HostPhys, Pages};
use crate::vcpu::SvmProcessor;
use crate::vmcb::{Field, VmcbAccess, VmcbError, VmcbPage};
use alloc::boxed::Box;
use core::arch::{asm, global_asm};
use core::marker::PhantomData;
use opsvisor_core::fpu::FxsaveArea;

// The world switch.
//
// `opsvisor_svm_run(gprs, vmcb_pa, host_vmcb_pa, interrupts)` (System V ABI) saves the
// host's callee-saved registers and its three pointer arguments on the stack, clears
// GIF (CLGI: no interrupt, NMI or SMI reaches the host until STGI), sets RFLAGS.IF when
// `interrupts` is non-zero (with V_INTR_MASKING, a physical interrupt then exits the
// guest instead of being held until the guest's own IF allows it), loads the guest's
// general registers from `gprs` (RAX and RSP are the VMCB's), then VMLOAD (the guest's
// FS, GS, TR, LDTR, KernelGsBase, STAR/LSTAR/CSTAR/SFMASK and SYSENTER MSRs), VMRUN,
// and at #VMEXIT VMSAVE of the same back into the VMCB. VMRUN saves the host's RSP, RIP,
// RFLAGS and RAX (the VMCB's address) in the host save area and #VMEXIT restores them,
// so the stack and RAX are the host's again: the guest registers are stored into
// `gprs`, VMLOAD of the host's VMCB (saved once by `SvmVcpu::enable`) restores the
// host's FS, GS, TR and the rest, STGI lets in the interrupt that ended the run (taken
// by the host's handler, which acknowledges it), and CLI leaves the host as it was.
// RFLAGS after #VMEXIT is the host's at VMRUN, so DF is clear as the ABI requires.
//
// Until the host's VMLOAD, TR is the guest's: an exception taken there through an IST
// gate would look its stack up in the guest's TSS. The host sets no TF and arms no
// breakpoint (#VMEXIT loads DR7 with 0x400), so no #DB of its own can arrive there, but
// Bochs' SVM keeps the single-step trap of a guest instruction with TF set pending
// across the #VMEXIT of that instruction's intercept (its `Svm_Vmexit` clears the
// pending debug trap only for exception intercepts) and raises it in the host at the
// first instruction after VMRUN. Hardware completes no intercepted instruction, so the
// trap is not the host's to take: the guest's, if any, is raised by the backend when it
// skips the instruction. The global label `opsvisor_svm_vmexit` is that first
// instruction: the host's #DB gate must not use an IST and must return from a #DB whose
// RIP is that address (see `HardwareSvm::new`).
global_asm!(
    r#"
    .text
    .p2align 4
    .global opsvisor_svm_run
opsvisor_svm_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    push rdx
    push rsi
    clgi
    test ecx, ecx
    jz 1f
    sti
1:
    mov rax, rsi
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8, [rdi + 64]
    mov r9, [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    vmload rax
    vmrun rax
    .global opsvisor_svm_vmexit
opsvisor_svm_vmexit:
    vmsave rax
    mov rax, [rsp + 16]
    mov [rax + 8], rcx
    mov [rax + 16], rdx
    mov [rax + 24], rbx
    mov [rax + 40], rbp
    mov [rax + 48], rsi
    mov [rax + 56], rdi
    mov [rax + 64], r8
    mov [rax + 72], r9
    mov [rax + 80], r10
    mov [rax + 88], r11
    mov [rax + 96], r12
    mov [rax + 104], r13
    mov [rax + 112], r14
    mov [rax + 120], r15
    mov rax, [rsp + 8]
    vmload rax
    stgi
    cli
    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#
);

extern "sysv64" {
    fn opsvisor_svm_run(gprs: *mut u64, vmcb_pa: u64, host_vmcb_pa: u64, interrupts: u64);
}

extern "C" {
    static opsvisor_svm_vmexit: u8;
}

/// The address where the host resumes at #VMEXIT (the instruction after VMRUN in the
/// world switch): a #DB the host takes there is a guest's trap that the processor
/// carried over the #VMEXIT, which the host's handler dismisses (see
/// [`HardwareSvm::new`]'s contract).
pub fn vmexit_rip() -> u64 {
    core::ptr::addr_of!(opsvisor_svm_vmexit) as u64
}

/// The host's local APIC timer, which ends a run at core's next deadline (SVM has no
/// preemption timer): one-shot, unmasked, on a vector whose handler in the host
/// acknowledges it with an EOI and returns. Without it a guest runs until its next
/// exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTimer {
    /// The host virtual address of the xAPIC register page.
    pub apic_base: u64,
    /// The vector the host handles.
    pub vector: u8,
    /// Timer ticks per second at divide-by-1.
    pub hz: u64,
}

/// xAPIC register offsets.
const APIC_LVT_TIMER: u64 = 0x320;
const APIC_TIMER_INITIAL: u64 = 0x380;
const APIC_TIMER_DIVIDE: u64 = 0x3e0;
/// Divide configuration: divide by 1.
const DIVIDE_BY_1: u32 = 0xb;

impl HostTimer {
    fn write(&self, reg: u64, value: u32) {
        // SAFETY: `apic_base` is the host's xAPIC page, mapped uncached-or-not by the
        // host (the contract of `HardwareSvm::new`); the offsets are the architectural
        // timer registers, 16-byte aligned 32-bit registers inside the page.
        unsafe { ((self.apic_base + reg) as *mut u32).write_volatile(value) };
    }

    /// One-shot, divide by 1, the vector unmasked: counting starts at the first
    /// initial-count write.
    fn program(&self) {
        self.write(APIC_TIMER_DIVIDE, DIVIDE_BY_1);
        self.write(APIC_LVT_TIMER, u32::from(self.vector));
    }

    /// Fire after `tsc_ticks` of a TSC running at `tsc_hz` (at least one timer tick,
    /// at most the counter's range).
    fn arm(&self, tsc_ticks: u64, tsc_hz: u64) {
        let ticks = u128::from(tsc_ticks) * u128::from(self.hz) / u128::from(tsc_hz.max(1));
        self.write(
            APIC_TIMER_INITIAL,
            ticks.clamp(1, u128::from(u32::MAX)) as u32,
        );
    }

    /// Stop the count (an interrupt already pending stays pending and is taken at
    /// STGI).
    fn disarm(&self) {
        self.write(APIC_TIMER_INITIAL, 0);
    }
}

/// The processor's SVM, with the guest's VMCB page.
///
/// SVM is a property of one logical processor, so the handle is neither `Send` nor
/// `Sync`.
pub struct HardwareSvm {
    vmcb: VmcbPage,
    vmcb_phys: u64,
    host_vmcb: Box<Pages<1>>,
    host_vmcb_phys: u64,
    /// The host save area VM_HSAVE_PA names; the processor alone reads and writes it.
    _host_save: Box<Pages<1>>,
    timer: Option<HostTimer>,
    tsc_hz: u64,
    _this_cpu: PhantomData<*mut ()>,
}

impl core::fmt::Debug for HardwareSvm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HardwareSvm")
            .field("vmcb_phys", &format_args!("{:#x}", self.vmcb_phys))
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

/// RDMSR.
pub(crate) fn rdmsr(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers pass MSRs the processor has (EFER, TSC_AUX when RDTSCP exists);
    // RDMSR only writes EDX:EAX.
    unsafe {
        asm!("rdmsr", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR.
///
/// # Safety
///
/// The MSR exists and `value` is valid for it; the change affects nothing the host
/// relies on.
pub(crate) unsafe fn wrmsr(index: u32, value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") index,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        )
    };
}

impl HardwareSvm {
    /// Turn SVM on in this processor and set up the host save area, the host's VMCB
    /// (saved with VMSAVE) and the guest's VMCB page.
    ///
    /// # Safety
    ///
    /// Runs at CPL 0 in 64-bit mode on a processor whose CPUID reports SVM with VM_CR
    /// allowing it (the caller checked), on the only processor in use, with interrupts
    /// disabled; `to_phys` gives the true physical address of heap memory. `timer`,
    /// when given, names the host's xAPIC page (mapped) and a vector whose IDT handler
    /// sends the APIC an EOI and returns; the host keeps the 8259 PICs masked (they
    /// would interrupt on exception vectors). The host's #DB gate uses no IST (TR is
    /// the guest's when it may fire) and returns from a #DB at [`vmexit_rip`] (a debug
    /// trap an emulated processor carried over the #VMEXIT: see the world switch).
    /// EFER.SVME stays set afterwards.
    pub(crate) unsafe fn new(
        to_phys: HostPhys,
        phys_bits: u8,
        tsc_hz: u64,
        timer: Option<HostTimer>,
    ) -> Result<HardwareSvm, u64> {
        let host_save = Pages::<1>::zeroed();
        let host_vmcb = Pages::<1>::zeroed();
        let vmcb = VmcbPage::new();
        let host_save_phys = to_phys(host_save.addr());
        let host_vmcb_phys = to_phys(host_vmcb.addr());
        let vmcb_phys = to_phys(vmcb.addr());
        for phys in [host_save_phys, host_vmcb_phys, vmcb_phys] {
            if !reachable(phys, 4096, phys_bits) {
                return Err(phys);
            }
        }
        // SAFETY: the caller checked that SVM may be enabled; setting EFER.SVME changes
        // nothing else about how the host runs. VM_HSAVE_PA takes the page-aligned
        // physical address of a page this value owns for its whole life.
        unsafe {
            wrmsr(0xc000_0080, rdmsr(0xc000_0080) | EFER_SVME);
            wrmsr(MSR_VM_HSAVE_PA, host_save_phys);
        }
        // SAFETY: EFER.SVME is set at CPL 0, and the operand is the physical address
        // of a 4 KiB-aligned page this value owns: VMSAVE stores the host's FS, GS,
        // TR, LDTR, KernelGsBase and SYSCALL/SYSENTER MSRs there, and nothing else.
        unsafe {
            asm!("vmsave rax", in("rax") host_vmcb_phys, options(nostack, preserves_flags));
        }
        if let Some(t) = &timer {
            t.program();
            t.disarm();
        }
        Ok(HardwareSvm {
            vmcb,
            vmcb_phys,
            host_vmcb,
            host_vmcb_phys,
            _host_save: host_save,
            timer,
            tsc_hz,
            _this_cpu: PhantomData,
        })
    }

    /// The host-physical address of the guest's VMCB.
    pub fn vmcb_phys(&self) -> u64 {
        self.vmcb_phys
    }

    /// The host timer, if one bounds the runs.
    pub fn timer(&self) -> Option<HostTimer> {
        self.timer
    }

    /// The host's VMCB (the state VMLOAD restores after every #VMEXIT).
    pub fn host_vmcb_addr(&self) -> u64 {
        self.host_vmcb.addr()
    }
}

impl VmcbAccess for HardwareSvm {
    fn read(&self, field: Field) -> u64 {
        self.vmcb.read(field)
    }

    fn write(&mut self, field: Field, value: u64) -> Result<(), VmcbError> {
        self.vmcb.write(field, value)
    }
}

impl SvmProcessor for HardwareSvm {
    unsafe fn run(&mut self, gprs: &mut Gprs, timer_ticks: Option<u64>) {
        let armed = match (self.timer, timer_ticks) {
            (Some(t), Some(ticks)) => {
                t.arm(ticks, self.tsc_hz);
                true
            }
            _ => false,
        };
        // SAFETY: the caller guarantees a fully set up VMCB (intercepts that keep
        // interrupts, NMIs, SMIs, INIT and shutdown with the host; nested paging that
        // maps guest RAM alone; the I/O and MSR maps); `gprs` is a valid 16-quadword
        // array the assembly reads and writes only while this call runs; the host VMCB
        // holds the host's state from VMSAVE. The assembly preserves every callee-saved
        // register and the stack pointer, and leaves IF clear. With `armed`, IF is set
        // for the guest's run and the timer's interrupt is taken at STGI by the host's
        // handler (`HardwareSvm::new`'s contract).
        unsafe {
            opsvisor_svm_run(
                gprs.as_mut_ptr(),
                self.vmcb_phys,
                self.host_vmcb_phys,
                u64::from(armed),
            )
        };
        if let (true, Some(t)) = (armed, self.timer) {
            t.disarm();
        }
    }

    unsafe fn load_cr2(&mut self, cr2: u64) {
        // SAFETY: CPL 0 (the caller's contract); CR2 holds only the last page-fault
        // address, which the host reads solely in its exception report.
        unsafe { asm!("mov cr2, {}", in(reg) cr2, options(nomem, nostack, preserves_flags)) };
    }

    unsafe fn invlpga(&mut self, gva: u64, asid: u32) {
        // SAFETY: EFER.SVME is set at CPL 0 (this value exists only after `new`);
        // INVLPGA only invalidates the TLB entry of `gva` in `asid`.
        unsafe {
            asm!("invlpga rax, ecx", in("rax") gva, in("ecx") asid, options(nostack, preserves_flags))
        };
    }

    unsafe fn read_msr(&self, index: u32) -> u64 {
        rdmsr(index)
    }

    unsafe fn write_msr(&mut self, index: u32, value: u64) {
        // SAFETY: the caller's contract is `wrmsr`'s.
        unsafe { wrmsr(index, value) }
    }

    fn tsc(&self) -> u64 {
        // SAFETY: RDTSC only reads the counter (CR4.TSD is clear at CPL 0 anyway).
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    unsafe fn read_dr(&self, n: u8) -> u64 {
        let v: u64;
        // SAFETY: CPL 0 (the caller's contract); reading a debug register has no side
        // effect.
        unsafe {
            match n {
                0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack, preserves_flags)),
                1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack, preserves_flags)),
                2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack, preserves_flags)),
                _ => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack, preserves_flags)),
            }
        }
        v
    }

    unsafe fn write_dr(&mut self, n: u8, value: u64) {
        // SAFETY: CPL 0 (the caller's contract); the host's DR7 enables no breakpoint,
        // so the addresses matter only to the guest.
        unsafe {
            match n {
                0 => asm!("mov dr0, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
                1 => asm!("mov dr1, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
                2 => asm!("mov dr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
                _ => asm!("mov dr3, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            }
        }
    }

    unsafe fn fxsave(&self, area: &mut FxsaveArea) {
        // SAFETY: `area` is a valid, 16-byte aligned (`FxsaveArea` is `align(16)`)
        // 512-byte buffer that FXSAVE64 writes and nothing else; with CR0.EM/TS clear
        // (the caller's contract) it cannot fault.
        unsafe {
            asm!(
                "fxsave64 [{}]",
                in(reg) core::ptr::from_mut(area),
                options(nostack, preserves_flags),
            )
        };
    }

    unsafe fn fxrstor(&mut self, area: &FxsaveArea) {
        // SAFETY: `area` is a valid, 16-byte aligned 512-byte buffer that FXRSTOR64
        // only reads; with the caller's contract (CR0.EM/TS clear, MXCSR within
        // MXCSR_MASK) it cannot fault. It replaces the x87, MMX and SSE registers,
        // declared clobbered so that compiled code keeps nothing there across it; MXCSR
        // and FCW change too, which the host code, built soft-float, never consults.
        unsafe {
            asm!(
                "fxrstor64 [{}]",
                in(reg) core::ptr::from_ref(area),
                clobber_abi("C"),
                options(readonly, nostack, preserves_flags),
            )
        };
    }
}
