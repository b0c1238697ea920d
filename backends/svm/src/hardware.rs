//! The processor side of SVM: VMRUN/#VMEXIT in assembly, EFER.SVME and the host save
//! area, VMLOAD/VMSAVE of the host's state, INVLPGA, the MSRs VMRUN does not switch,
//! the x87/SSE state, and the host timer that bounds a run.
//!
//! [`HardwareSvm`] implements [`SvmProcessor`] with the real instructions; the vCPU
//! logic above it is the same code that [`crate::replay::ReplayVmcb`] runs on the host.

use crate::asid::AsidAllocator;
use crate::caps::SvmCaps;
use crate::enable::{reachable, EnableError, EFER_SVME, MSR_VM_HSAVE_PA};
use crate::exits::Gprs;
use crate::page::Pages;
use crate::vcpu::{SvmConfig, SvmProcessor, SvmVcpu};
use crate::vmcb::{Field, VmcbAccess, VmcbError, VmcbPage};
use alloc::boxed::Box;
use alloc::rc::Rc;
use core::arch::{asm, global_asm};
use core::cell::{Cell, RefCell};
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

/// The guest registers VMRUN does not switch (TSC_AUX, DR0-DR3, the x87/SSE state),
/// as one vCPU left them. Between runs the processor holds those of the vCPU that ran
/// last; the vCPU about to run claims them ([`SvmHost`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unswitched {
    /// TSC_AUX (only on a processor with RDTSCP).
    pub tsc_aux: u64,
    /// DR0-DR3.
    pub dr: [u64; 4],
    /// The x87/MMX/SSE state, as FXSAVE64 stores it (MXCSR_MASK included).
    pub fpu: FxsaveArea,
}

/// TSC_AUX.
const MSR_TSC_AUX: u32 = 0xc000_0103;

/// SVM on this processor, shared by every vCPU on it: EFER.SVME, the host save area
/// (VM_HSAVE_PA: one per processor, APM 2 15.30.4), the host's VMCB (its state as
/// VMSAVE stored it, which VMLOAD restores after every #VMEXIT), the host timer, the
/// ASIDs, and whose unswitched registers the processor holds.
pub(crate) struct HostCpu {
    host_vmcb: Box<Pages<1>>,
    host_vmcb_phys: u64,
    /// The host save area VM_HSAVE_PA names; the processor alone reads and writes it.
    _host_save: Box<Pages<1>>,
    timer: Option<HostTimer>,
    tsc_hz: u64,
    /// The processor has TSC_AUX.
    rdtscp: bool,
    /// The saved registers of the vCPU whose values the processor holds.
    holder: RefCell<Option<Rc<RefCell<Unswitched>>>>,
    /// Times the unswitched registers changed hands.
    handovers: Cell<u64>,
    asids: Rc<RefCell<AsidAllocator>>,
}

impl HostCpu {
    fn holds(&self, guest: &Rc<RefCell<Unswitched>>) -> bool {
        self.holder
            .borrow()
            .as_ref()
            .is_some_and(|h| Rc::ptr_eq(h, guest))
    }

    /// Give the processor `guest`'s unswitched registers (its vCPU is about to run):
    /// the holder's are saved, `guest`'s loaded. Returns whether they changed hands.
    fn claim(&self, guest: &Rc<RefCell<Unswitched>>) -> bool {
        if self.holds(guest) {
            return false;
        }
        if let Some(previous) = self.holder.borrow().as_ref() {
            let mut p = previous.borrow_mut();
            if self.rdtscp {
                p.tsc_aux = rdmsr(MSR_TSC_AUX);
            }
            for (n, slot) in p.dr.iter_mut().enumerate() {
                // SAFETY: CPL 0 (a `HostCpu` exists only after `SvmHost::enable`).
                *slot = unsafe { read_dr(n as u8) };
            }
            // SAFETY: CR0.EM and CR0.TS are clear in the host (`SvmHost::enable`'s
            // contract).
            unsafe { fxsave64(&mut p.fpu) };
        }
        let g = guest.borrow();
        if self.rdtscp {
            // SAFETY: TSC_AUX exists (RDTSCP); its value only affects the guest's
            // RDTSCP/RDPID, which the host never executes.
            unsafe { wrmsr(MSR_TSC_AUX, g.tsc_aux) };
        }
        for (n, &value) in g.dr.iter().enumerate() {
            // SAFETY: CPL 0; the host's DR7 enables no breakpoint.
            unsafe { write_dr(n as u8, value) };
        }
        // SAFETY: CR0.EM/TS clear; the image came from FXSAVE64 here or passed
        // `check_mxcsr` against this processor's MXCSR_MASK (`set_fpu_state`).
        unsafe { fxrstor64(&g.fpu) };
        drop(g);
        *self.holder.borrow_mut() = Some(Rc::clone(guest));
        self.handovers.set(self.handovers.get().wrapping_add(1));
        true
    }
}

/// SVM on the processor the image runs on: EFER.SVME and the host's state once, then
/// any number of vCPUs ([`SvmHost::new_vcpu`]), each with its own VMCB and ASID; VMRUN
/// takes the VMCB of the vCPU being run.
pub struct SvmHost {
    cpu: Rc<HostCpu>,
    caps: SvmCaps,
    config: SvmConfig,
}

impl core::fmt::Debug for SvmHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SvmHost")
            .field("timer", &self.cpu.timer)
            .finish_non_exhaustive()
    }
}

impl SvmHost {
    /// Turn SVM on: the CPUID and VM_CR checks, CR4.OSFXSR, EFER.SVME, the host save
    /// area and the host's VMCB.
    ///
    /// # Safety
    ///
    /// Runs at CPL 0 on the only processor in use, with interrupts disabled, in 64-bit
    /// mode, with CR0.EM and CR0.TS clear; `config.to_phys` gives the true physical
    /// address of heap memory (and maps the permission maps contiguously);
    /// `config.timer`, when given, is as [`HostTimer`] describes, with the 8259 PICs
    /// masked; `config.probe_msr` survives the #GP of a missing MSR. The host's #DB gate
    /// uses no IST (TR is the guest's when it may fire) and returns from a #DB at
    /// [`vmexit_rip`] (a debug trap an emulated processor carried over the #VMEXIT: see
    /// the world switch). EFER.SVME stays set afterwards (nothing clears it: the image
    /// powers off at the end of its run).
    pub unsafe fn enable(config: SvmConfig) -> Result<SvmHost, EnableError> {
        let caps = SvmCaps::read(&crate::caps::HardwareCpuid).map_err(EnableError::Caps)?;
        crate::enable::check_vm_cr((config.probe_msr)(crate::enable::MSR_VM_CR))?;
        crate::enable::check_features(&caps)?;
        let asids = AsidAllocator::new(caps.asids).ok_or(EnableError::Caps(
            crate::caps::CapsError::NoAsids(caps.asids),
        ))?;
        // The guest's x87/SSE state lives in the processor and is read and loaded with
        // FXSAVE/FXRSTOR, which move XMM0-15 and MXCSR only with CR4.OSFXSR set. The
        // host code never executes SSE (it is built soft-float), so the bit changes
        // nothing else.
        let cr4: u64;
        // SAFETY: reading CR4 at CPL 0 has no side effect; setting OSFXSR changes
        // neither paging nor how the host's code runs.
        unsafe {
            asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
            asm!("mov cr4, {}", in(reg) cr4 | (1 << 9), options(nostack, preserves_flags));
        }
        let to_phys = config.to_phys;
        let host_save = Pages::<1>::zeroed();
        let host_vmcb = Pages::<1>::zeroed();
        let host_save_phys = to_phys(host_save.addr());
        let host_vmcb_phys = to_phys(host_vmcb.addr());
        for phys in [host_save_phys, host_vmcb_phys] {
            if !reachable(phys, 4096, caps.phys_bits) {
                return Err(EnableError::Address(phys));
            }
        }
        // SAFETY: the caller checked that SVM may be enabled (and VM_CR allows it,
        // checked above); setting EFER.SVME changes nothing else about how the host
        // runs. VM_HSAVE_PA takes the page-aligned physical address of a page the
        // `HostCpu` owns for as long as any vCPU on it lives.
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
        if let Some(t) = &config.timer {
            t.program();
            t.disarm();
        }
        Ok(SvmHost {
            cpu: Rc::new(HostCpu {
                host_vmcb,
                host_vmcb_phys,
                _host_save: host_save,
                timer: config.timer,
                tsc_hz: config.tsc_hz,
                rdtscp: caps.rdtscp,
                holder: RefCell::new(None),
                handovers: Cell::new(0),
                asids: Rc::new(RefCell::new(asids)),
            }),
            caps,
            config,
        })
    }

    /// A new vCPU on this processor: its VMCB, ASID, permission maps, and the guest's
    /// power-on state.
    pub fn new_vcpu(&self) -> Result<SvmVcpu<HardwareSvm>, EnableError> {
        let to_phys = self.config.to_phys;
        let vmcb = VmcbPage::new();
        let vmcb_phys = to_phys(vmcb.addr());
        if !reachable(vmcb_phys, 4096, self.caps.phys_bits) {
            return Err(EnableError::Address(vmcb_phys));
        }
        // A new vCPU's saved x87/SSE image carries this processor's MXCSR_MASK (what
        // `set_fpu_state` checks against) and nothing of another guest's registers.
        let mut processor = FxsaveArea::zeroed();
        // SAFETY: CR0.EM/TS clear in the host (`enable`'s contract).
        unsafe { fxsave64(&mut processor) };
        let mut fpu = FxsaveArea::zeroed();
        fpu.set_mxcsr_mask(processor.mxcsr_mask());
        let cpu = HardwareSvm {
            vmcb,
            vmcb_phys,
            host: Rc::clone(&self.cpu),
            guest: Rc::new(RefCell::new(Unswitched {
                tsc_aux: 0,
                dr: [0; 4],
                fpu,
            })),
            _this_cpu: PhantomData,
        };
        let mut vcpu = SvmVcpu::assemble(cpu, self.caps, self.config, Rc::clone(&self.cpu.asids))?;
        for (addr, size) in [
            (vcpu.msrpm_addr(), crate::bitmaps::MSRPM_SIZE),
            (vcpu.iopm_addr(), crate::bitmaps::IOPM_SIZE),
        ] {
            let phys = to_phys(addr);
            if !reachable(phys, size, self.caps.phys_bits) {
                return Err(EnableError::Address(phys));
            }
        }
        vcpu.setup().map_err(EnableError::Vmcb)?;
        Ok(vcpu)
    }

    /// The processor's SVM capabilities.
    pub fn caps(&self) -> &SvmCaps {
        &self.caps
    }

    /// The host timer, if one bounds the runs.
    pub fn timer(&self) -> Option<HostTimer> {
        self.cpu.timer
    }

    /// Times the registers VMRUN does not switch went from one vCPU's guest to
    /// another's.
    pub fn handovers(&self) -> u64 {
        self.cpu.handovers.get()
    }
}

/// One vCPU's VMCB on this processor's SVM, with its saved copy of the registers VMRUN
/// does not switch.
///
/// SVM is a property of one logical processor, so the handle is neither `Send` nor
/// `Sync`.
pub struct HardwareSvm {
    vmcb: VmcbPage,
    vmcb_phys: u64,
    host: Rc<HostCpu>,
    guest: Rc<RefCell<Unswitched>>,
    _this_cpu: PhantomData<*mut ()>,
}

impl Drop for HardwareSvm {
    fn drop(&mut self) {
        if self.host.holds(&self.guest) {
            *self.host.holder.borrow_mut() = None;
        }
    }
}

impl core::fmt::Debug for HardwareSvm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HardwareSvm")
            .field("vmcb_phys", &format_args!("{:#x}", self.vmcb_phys))
            .field("timer", &self.host.timer)
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
    /// The host-physical address of the guest's VMCB.
    pub fn vmcb_phys(&self) -> u64 {
        self.vmcb_phys
    }

    /// The host timer, if one bounds the runs.
    pub fn timer(&self) -> Option<HostTimer> {
        self.host.timer
    }

    /// The host's VMCB (the state VMLOAD restores after every #VMEXIT).
    pub fn host_vmcb_addr(&self) -> u64 {
        self.host.host_vmcb.addr()
    }

    /// The processor's SVM, as [`SvmHost`] hands it out.
    pub(crate) fn host(&self, caps: SvmCaps, config: SvmConfig) -> SvmHost {
        SvmHost {
            cpu: Rc::clone(&self.host),
            caps,
            config,
        }
    }

    /// Whether the processor holds this vCPU's unswitched registers.
    fn holds(&self) -> bool {
        self.host.holds(&self.guest)
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
        if self.host.claim(&self.guest) {
            // The processor's CR2 is another vCPU's: VMRUN loads the VMCB's, but Bochs
            // drops it (see `load_cr2`).
            let cr2 = self.vmcb.read(crate::vmcb::fields::CR2);
            // SAFETY: CPL 0; CR2 holds only the last page-fault address.
            unsafe { self.load_cr2(cr2) };
        }
        let timer = self.host.timer;
        let armed = match (timer, timer_ticks) {
            (Some(t), Some(ticks)) => {
                t.arm(ticks, self.host.tsc_hz);
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
                self.host.host_vmcb_phys,
                u64::from(armed),
            )
        };
        if let (true, Some(t)) = (armed, timer) {
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
        if self.holds() {
            rdmsr(index)
        } else {
            // TSC_AUX is the one MSR the processor holds for the guest.
            self.guest.borrow().tsc_aux
        }
    }

    unsafe fn write_msr(&mut self, index: u32, value: u64) {
        if self.holds() {
            // SAFETY: the caller's contract is `wrmsr`'s.
            unsafe { wrmsr(index, value) }
        } else {
            self.guest.borrow_mut().tsc_aux = value;
        }
    }

    fn tsc(&self) -> u64 {
        // SAFETY: RDTSC only reads the counter (CR4.TSD is clear at CPL 0 anyway).
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    unsafe fn read_dr(&self, n: u8) -> u64 {
        if self.holds() {
            // SAFETY: the caller's contract is `read_dr`'s.
            unsafe { read_dr(n) }
        } else {
            self.guest.borrow().dr[usize::from(n.min(3))]
        }
    }

    unsafe fn write_dr(&mut self, n: u8, value: u64) {
        if self.holds() {
            // SAFETY: the caller's contract is `write_dr`'s.
            unsafe { write_dr(n, value) }
        } else {
            self.guest.borrow_mut().dr[usize::from(n.min(3))] = value;
        }
    }

    unsafe fn fxsave(&self, area: &mut FxsaveArea) {
        if self.holds() {
            // SAFETY: the caller's contract is `fxsave64`'s.
            unsafe { fxsave64(area) }
        } else {
            *area = self.guest.borrow().fpu;
        }
    }

    unsafe fn fxrstor(&mut self, area: &FxsaveArea) {
        if self.holds() {
            // SAFETY: the caller's contract is `fxrstor64`'s.
            unsafe { fxrstor64(area) }
        } else {
            // Loaded at the vCPU's next run, under the same contract. FXSAVE stores the
            // processor's MXCSR_MASK whatever FXRSTOR loaded: the copy keeps the one it
            // has, which the next MXCSR check reads.
            let mut saved = self.guest.borrow_mut();
            let mask = saved.fpu.mxcsr_mask();
            saved.fpu = *area;
            saved.fpu.set_mxcsr_mask(mask);
        }
    }
}

/// DR`n` (0-3) of the processor.
///
/// # Safety
///
/// CPL 0.
unsafe fn read_dr(n: u8) -> u64 {
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

/// Load DR`n` (0-3) of the processor.
///
/// # Safety
///
/// CPL 0. The host enables no breakpoint (its DR7, which #VMEXIT restores from the
/// host save area, is 0x400), so the addresses affect only the guest.
unsafe fn write_dr(n: u8, value: u64) {
    // SAFETY: the caller's contract; the host's DR7 enables no breakpoint, so the
    // addresses matter only to the guest.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov dr1, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov dr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov dr3, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
        }
    }
}

/// FXSAVE64 of the processor's x87/MMX/SSE state into `area`.
///
/// # Safety
///
/// CR0.EM and CR0.TS are clear.
unsafe fn fxsave64(area: &mut FxsaveArea) {
    // SAFETY: `area` is a valid, 16-byte aligned (`FxsaveArea` is `align(16)`) 512-byte
    // buffer that FXSAVE64 writes and nothing else; with CR0.EM/TS clear (the caller's
    // contract) it cannot fault.
    unsafe {
        asm!(
            "fxsave64 [{}]",
            in(reg) core::ptr::from_mut(area),
            options(nostack, preserves_flags),
        )
    };
}

/// FXRSTOR64 of the processor's x87/MMX/SSE state from `area`.
///
/// # Safety
///
/// CR0.EM and CR0.TS are clear and MXCSR in `area` sets no bit outside the processor's
/// MXCSR_MASK.
unsafe fn fxrstor64(area: &FxsaveArea) {
    // SAFETY: `area` is a valid, 16-byte aligned 512-byte buffer that FXRSTOR64 only
    // reads; with the caller's contract it cannot fault. It replaces the x87, MMX and
    // SSE registers, declared clobbered so that compiled code keeps nothing there
    // across it; MXCSR and FCW change too, which the host code, built soft-float, never
    // consults.
    unsafe {
        asm!(
            "fxrstor64 [{}]",
            in(reg) core::ptr::from_ref(area),
            clobber_abi("C"),
            options(readonly, nostack, preserves_flags),
        )
    };
}
