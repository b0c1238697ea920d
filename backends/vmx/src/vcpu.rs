//! The VMX vCPU on the running processor: VMXON, the VMCS, VM entry and exit, and
//! `impl X86Ops for VmxVcpu`.
//!
//! One vCPU per processor: [`VmxVcpu::enable`] enters VMX root operation, loads the
//! VMCS (which then stays current), and the operations read and write guest state with
//! VMREAD/VMWRITE. The guest general registers other than RSP live in [`VmxVcpu`] and
//! are swapped by the entry/exit assembly below; CR2, the SYSCALL MSRs and the
//! x87/MMX/SSE registers, which VMX does not switch, are kept in the processor (the
//! host never uses them).
//!
//! The few processor operations the vCPU needs besides VMREAD/VMWRITE (VM entry,
//! INVEPT, the MSRs VMX does not switch, the TSC) go through [`VmxProcessor`], which
//! [`HardwareVmcs`] implements with the real instructions. `VmxVcpu` is generic over it
//! (defaulting to the hardware) for one reason: [`crate::replay::ReplayVmcs`]
//! implements it on an in-memory VMCS that replays scripted exits, so the host can run
//! and benchmark the exit-handling half of [`X86Ops::run`] (decode, core's handler,
//! the completion's VMCS writes) without VT-x. The hardware path is the same code,
//! monomorphised for `HardwareVmcs`.

use crate::bitmaps::{
    IoBitmaps, MsrBitmap, MSR_FS_BASE, MSR_GS_BASE, MSR_SYSENTER_CS, MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
};
use crate::caps::{HardwareMsrs, InveptType, MsrRead, VmxCaps};
use crate::controls::{entry_ctls, proc_based, Controls};
use crate::debug::{Completing, DebugState};
use crate::enable::{
    check_features, feature_control_action, host_control_registers, EnableError,
    FeatureControlAction, GuestCrRules, IA32_FEATURE_CONTROL,
};
use crate::ept_tables::{EptError, EptTables};
use crate::event::{EntryEvent, VectoringEvent, BLOCKING_BY_NMI};
use crate::exits::entry_failure::instruction_failure;
use crate::exits::{
    BackendExit, ControlRegister, CrAccess, EptViolation, ExitDecoder, Gprs, StringIo, VmxExit,
};
use crate::mmio::{self, MmioInstruction};
use crate::page::{HostPhys, Page};
use crate::root::{LogicalCpu, SwitchOps, Unswitched};
use crate::state::{read_segment, write_guest_defaults, write_segment, ResetState, PAT_DEFAULT};
use crate::string_io::{self, Element, InsStore, StringIoError};
use crate::vmcs::hardware::vmx_outcome;
use crate::vmcs::{fields, Field, HardwareVmcs, InstructionError, VmcsAccess, VmxError};
use alloc::boxed::Box;
use alloc::rc::Rc;
use core::arch::{asm, global_asm};
use core::cell::{Cell, RefCell};
use core::marker::PhantomData;
use opsvisor_core::cpuid::{CpuidPolicy, Feature};
use opsvisor_core::emulate::fetch_instruction;
use opsvisor_core::emulate::strings::{self, StringMmio};
use opsvisor_core::exit::Direction;
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::mmu::walk::PagingRegs;
use opsvisor_core::ops::{
    DebugRegs, DescriptorTable, Event, Gpr, GuestDebug, ResetKind, RunLimit, SegReg, Segment,
    X86Ops,
};
use opsvisor_core::{Exit, GuestMemory};

// VM entry and exit.
//
// `opsvisor_vmx_run(gprs, launched)` (System V ABI) saves the host's callee-saved
// registers and the `gprs` pointer on the stack, writes that stack pointer into
// HOST_RSP, loads the guest's general registers from `gprs` (RSP is the VMCS's) and
// executes VMRESUME, or VMLAUNCH when `launched` is 0. If the instruction fails, it
// falls through with CF (VMfailInvalid) or ZF (VMfailValid) set and returns 1 or 2.
// A VM exit arrives at `opsvisor_vmx_exit` (HOST_RIP) with RSP = HOST_RSP, whose top
// slot holds the `gprs` pointer: it stores the guest registers there, restores the
// host's and returns 0 from `opsvisor_vmx_run`. RFLAGS after an exit is 0x2, so DF is
// clear as the ABI requires.
global_asm!(
    r#"
    .text
    .p2align 4
    .global opsvisor_vmx_run
opsvisor_vmx_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, 0x6c14
    vmwrite rax, rsp
    jbe 3f
    test rsi, rsi
    mov rax, [rdi]
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
    jnz 1f
    vmlaunch
    jmp 3f
1:
    vmresume
3:
    mov eax, 1
    jc 4f
    mov eax, 2
4:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .p2align 4
    .global opsvisor_vmx_exit
opsvisor_vmx_exit:
    xchg rdi, [rsp]
    mov [rdi], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    xor eax, eax
    ret
"#
);

extern "sysv64" {
    fn opsvisor_vmx_run(gprs: *mut u64, launched: u64) -> u64;
    fn opsvisor_vmx_exit();
}

/// What [`VmxVcpu`] needs from the processor besides VMREAD and VMWRITE.
///
/// [`HardwareVmcs`] executes the instructions; [`crate::replay::ReplayVmcs`] plays
/// scripted exits back on the host (tests and benchmarks of the exit path).
pub trait VmxProcessor: VmcsAccess {
    /// VM entry: VMLAUNCH (`launched` false) or VMRESUME with the guest's general
    /// registers from `gprs` (RSP is the VMCS's) and CR2 from `cr2`; returns at the next
    /// VM exit with both updated, or `Err` when the entry instruction failed.
    ///
    /// # Safety
    ///
    /// On hardware: the VMCS is current and fully set up (controls, host state whose
    /// HOST_RIP is this module's exit stub, EPT that maps guest RAM alone), so that
    /// the guest cannot reach host memory and the exit returns here.
    unsafe fn enter(
        &mut self,
        gprs: &mut Gprs,
        cr2: &mut u64,
        launched: bool,
    ) -> Result<(), VmxError>;

    /// INVEPT of type `kind` for `eptp`.
    ///
    /// # Safety
    ///
    /// The processor supports INVEPT (it has EPT); an unsupported type only fails.
    unsafe fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError>;

    /// RDMSR of an MSR whose guest value lives in the processor (VMX does not switch
    /// it).
    ///
    /// # Safety
    ///
    /// The MSR exists on this processor.
    unsafe fn read_msr(&self, index: u32) -> u64;

    /// WRMSR of such an MSR.
    ///
    /// # Safety
    ///
    /// The MSR exists, `value` is valid for it (canonical addresses), and it affects
    /// nothing the host relies on (SYSCALL/SWAPGS/RDTSCP state: the host never executes
    /// them).
    unsafe fn write_msr(&mut self, index: u32, value: u64);

    /// The host's time-stamp counter.
    fn tsc(&self) -> u64;

    /// FXSAVE64 of the processor's x87/MMX/SSE state into `area`: between VM exits that
    /// state is the guest's, since VMX does not switch it and the host code never uses
    /// x87 or SSE (the image is built soft-float). Fields FXSAVE does not store (the
    /// reserved bytes) keep their contents.
    ///
    /// XMM0-15 and MXCSR are stored only with CR4.OSFXSR set, which
    /// [`VmxVcpu::enable`] sets.
    ///
    /// # Safety
    ///
    /// On hardware: CR0.EM and CR0.TS are clear (FXSAVE raises #NM otherwise), as the
    /// host runs (its boot code clears them and every VM exit loads HOST_CR0).
    unsafe fn fxsave(&self, area: &mut FxsaveArea);

    /// CPUID on the processor: what a guest can execute natively.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];

    /// Debug register DR`n` (0-3 or 6) of the processor: between VM exits it holds the
    /// guest's value, since VMX switches only DR7 and the host code never uses the
    /// debug registers.
    ///
    /// # Safety
    ///
    /// On hardware: CPL 0, `n` is 0-3 or 6.
    unsafe fn read_dr(&self, n: u8) -> u64;

    /// Load DR`n` (0-3 or 6) for the guest.
    ///
    /// # Safety
    ///
    /// As for [`VmxProcessor::read_dr`]; for DR6 the upper 32 bits of `value` are 0.
    /// The host enables no breakpoint (its DR7, loaded at every VM exit, is 0x400), so
    /// the addresses affect only the guest.
    unsafe fn write_dr(&mut self, n: u8, value: u64);

    /// FXRSTOR64 of the x87/MMX/SSE state from `area`: the state the guest runs with
    /// from the next VM entry.
    ///
    /// # Safety
    ///
    /// As for [`VmxProcessor::fxsave`], and MXCSR in `area` sets no bit outside the
    /// processor's MXCSR_MASK (FXRSTOR raises #GP(0) otherwise); nothing on the host
    /// relies on the x87/SSE state it replaces.
    unsafe fn fxrstor(&mut self, area: &FxsaveArea);
}

impl VmxProcessor for HardwareVmcs {
    unsafe fn enter(
        &mut self,
        gprs: &mut Gprs,
        cr2: &mut u64,
        launched: bool,
    ) -> Result<(), VmxError> {
        // This vCPU's VMCS must be the current one and the registers VMX does not
        // switch its guest's (another vCPU may have run since).
        self.make_current()?;
        self.root().cpu.claim(self.guest());
        let guest_cr2 = *cr2;
        // SAFETY: CR2 holds only the last page-fault address; the host reads it solely
        // in its exception report. The guest's value must be in place at entry.
        unsafe { asm!("mov cr2, {}", in(reg) guest_cr2, options(nomem, nostack, preserves_flags)) };
        // SAFETY: the caller guarantees a fully set up VMCS (HOST_RIP at
        // `opsvisor_vmx_exit`), made current above; `gprs` is a valid 16-quadword array
        // the assembly reads and writes only while this call runs. The assembly
        // preserves every callee-saved register and the stack pointer, and guest
        // execution touches host memory only through the EPT, which maps guest RAM
        // alone.
        let result = unsafe { opsvisor_vmx_run(gprs.as_mut_ptr(), u64::from(launched)) };
        // SAFETY: reading CR2 has no side effect.
        unsafe {
            asm!(
                "mov {}, cr2",
                out(reg) * cr2,
                options(nomem, nostack, preserves_flags)
            )
        };
        match result {
            0 => Ok(()),
            1 => Err(VmxError::FailInvalid),
            _ => Err(VmxError::FailValid(InstructionError(
                self.read(fields::VM_INSTRUCTION_ERROR).unwrap_or(0) as u32,
            ))),
        }
    }

    unsafe fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError> {
        let descriptor: [u64; 2] = [eptp, 0];
        let cf: u8;
        let zf: u8;
        // SAFETY: VMX root operation at CPL 0 (`HardwareVmcs`' contract) on a processor
        // with INVEPT (the caller's); the descriptor is a local 16-byte array. INVEPT
        // only invalidates cached translations; an unsupported type sets CF/ZF.
        unsafe {
            asm!(
                "invept {k}, [{d}]",
                "setc {cf}",
                "setz {zf}",
                k = in(reg) kind as u64,
                d = in(reg) descriptor.as_ptr(),
                cf = out(reg_byte) cf,
                zf = out(reg_byte) zf,
                options(nostack),
            );
        }
        vmx_outcome(cf, zf)
    }

    unsafe fn read_msr(&self, index: u32) -> u64 {
        self.root().cpu.read_msr(self.guest(), index)
    }

    unsafe fn write_msr(&mut self, index: u32, value: u64) {
        self.root().cpu.write_msr(self.guest(), index, value)
    }

    fn tsc(&self) -> u64 {
        rdtsc()
    }

    unsafe fn fxsave(&self, area: &mut FxsaveArea) {
        self.root().cpu.fxsave(self.guest(), area)
    }

    unsafe fn fxrstor(&mut self, area: &FxsaveArea) {
        self.root().cpu.fxrstor(self.guest(), area)
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    unsafe fn read_dr(&self, n: u8) -> u64 {
        self.root().cpu.read_dr(self.guest(), n)
    }

    unsafe fn write_dr(&mut self, n: u8, value: u64) {
        self.root().cpu.write_dr(self.guest(), n, value)
    }
}

/// DR`n` (0-3; any other `n` is DR6) of the processor.
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
            3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)),
        }
    }
    v
}

/// Load DR`n` (0-3; any other `n` is DR6) of the processor.
///
/// # Safety
///
/// CPL 0; for DR6 the upper 32 bits of `value` are 0. The host enables no breakpoint
/// (its DR7, loaded at every VM exit, is 0x400), so the addresses affect only the guest.
unsafe fn write_dr(n: u8, value: u64) {
    // SAFETY: the caller's contract; the host's DR7 enables no breakpoint, so the
    // addresses and the status register matter only to the guest.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov dr1, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov dr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov dr3, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov dr6, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
        }
    }
}

/// FXSAVE64: the processor's x87/MMX/SSE state into `area`.
///
/// # Safety
///
/// CR0.EM and CR0.TS are clear (FXSAVE raises #NM otherwise).
pub(crate) unsafe fn fxsave64(area: &mut FxsaveArea) {
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

/// FXRSTOR64: the processor's x87/MMX/SSE state from `area`.
///
/// # Safety
///
/// CR0.EM and CR0.TS are clear (FXRSTOR raises #NM otherwise) and MXCSR in `area`
/// sets no bit outside the processor's MXCSR_MASK (#GP(0) otherwise).
pub(crate) unsafe fn fxrstor64(area: &FxsaveArea) {
    // SAFETY: `area` is a valid, 16-byte aligned 512-byte buffer that FXRSTOR64 only
    // reads; with the caller's contract it cannot fault. It replaces the x87, MMX and
    // SSE registers, declared clobbered (the C ABI's caller-saved set includes all of
    // them) so that compiled code keeps nothing there across it; MXCSR and FCW change
    // too, which the host code, built soft-float, never consults.
    unsafe {
        asm!(
            "fxrstor64 [{}]",
            in(reg) core::ptr::from_ref(area),
            clobber_abi("C"),
            options(readonly, nostack, preserves_flags),
        )
    };
}

/// RFLAGS.RF (resume flag).
const RFLAGS_RF: u64 = 1 << 16;
/// IA32_EFER.
const MSR_EFER: u32 = 0xc000_0080;
/// IA32_PAT.
const MSR_PAT: u32 = 0x277;
/// IA32_STAR.
const MSR_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR.
const MSR_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR.
const MSR_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK.
const MSR_SFMASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE.
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TSC_AUX.
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// IA32_DEBUGCTL (switched by VM entry and exit with the debug controls).
const MSR_DEBUGCTL: u32 = 0x1d9;

const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR0_PE: u64 = 1;
const CR0_TS: u64 = 1 << 3;
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR: FXSAVE/FXRSTOR include the SSE state.
const CR4_OSFXSR: u64 = 1 << 9;
const RFLAGS_IF: u64 = 1 << 9;
/// Interruptibility state: blocking by STI and by MOV SS.
const BLOCKING_BY_STI: u64 = 1;
const BLOCKING_BY_MOV_SS: u64 = 2;
/// Exit reasons handled here that the decoder leaves to the backend.
const REASON_RDTSC: u16 = 16;
const REASON_RDTSCP: u16 = 51;
/// Longest stretch the guest runs without the core looking at the clock.
const MAX_SLICE_NS: u64 = 10_000_000;
/// #UD.
const UD: u8 = 6;
/// #DB.
const DB: u8 = 1;
/// #BP.
const BP: u8 = 3;
/// #GP.
const GP: u8 = 13;

fn rdmsr(index: u32) -> u64 {
    // SAFETY: only called (by VmxVcpu, which exists only after `enable` succeeded at
    // CPL 0) for architectural MSRs every VMX-capable 64-bit processor has, or TSC_AUX
    // when RDTSCP is enabled; RDMSR writes only EDX:EAX.
    unsafe { HardwareMsrs::new() }.read_msr(index).unwrap_or(0)
}

fn wrmsr(index: u32, value: u64) {
    // SAFETY: as for `rdmsr`: CPL 0, an MSR that exists; the callers pass values core
    // has validated (canonical addresses) for MSRs that only affect SYSCALL/SWAPGS/
    // RDTSCP, which the host never executes.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") index,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear at CPL 0 anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Read CR0, CR3 or CR4 of the host.
macro_rules! read_cr {
    ($cr:literal) => {{
        let v: u64;
        // SAFETY: reading a control register at CPL 0 has no side effect.
        unsafe { asm!(concat!("mov {}, ", $cr), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Read a segment selector of the host.
macro_rules! read_sel {
    ($seg:literal) => {{
        let v: u16;
        // SAFETY: reading a segment selector has no side effect.
        unsafe { asm!(concat!("mov {0:x}, ", $seg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// A VMX instruction on a physical-address operand (VMXON, VMCLEAR, VMPTRLD).
macro_rules! vmx_phys_op {
    ($insn:literal, $phys:expr) => {{
        let phys: u64 = $phys;
        let cf: u8;
        let zf: u8;
        // SAFETY: the callers run at CPL 0 with CR4.VMXE set (VMXON) or in VMX root
        // operation (VMCLEAR, VMPTRLD), on a page-aligned region this vCPU owns for its
        // whole life; the operand is the address of a local. Failures are reported in
        // CF/ZF, captured at once.
        unsafe {
            asm!(
                concat!($insn, " qword ptr [{p}]"),
                "setc {cf}",
                "setz {zf}",
                p = in(reg) &phys,
                cf = out(reg_byte) cf,
                zf = out(reg_byte) zf,
                options(nostack),
            );
        }
        vmx_outcome(cf, zf)
    }};
}

/// What the backend needs from the host.
#[derive(Clone, Copy, Debug)]
pub struct VmxConfig {
    /// Host virtual to physical translation of heap memory.
    pub to_phys: HostPhys,
    /// The host TSC frequency in Hz (for the preemption timer and guest RDTSC).
    pub tsc_hz: u64,
}

/// The instructions of [`SwitchOps`] on this processor.
pub struct HardwareSwitch {
    _this_cpu: PhantomData<*mut ()>,
}

impl SwitchOps for HardwareSwitch {
    fn vmptrld(&self, phys: u64) -> Result<(), VmxError> {
        vmx_phys_op!("vmptrld", phys)
    }

    fn read_msr(&self, index: u32) -> u64 {
        // A `HardwareSwitch` exists only in a `Root`, made at CPL 0; the index is one
        // of the unswitched MSRs (TSC_AUX only on a processor with RDTSCP).
        rdmsr(index)
    }

    fn write_msr(&self, index: u32, value: u64) {
        // As `read_msr`; the value is the guest's, validated by core or read back
        // from the processor, and affects only SYSCALL/SWAPGS/RDTSCP, which the host
        // never executes.
        wrmsr(index, value)
    }

    fn read_dr(&self, n: u8) -> u64 {
        // SAFETY: CPL 0 (a `HardwareSwitch` exists only in a `Root`).
        unsafe { read_dr(n) }
    }

    fn write_dr(&self, n: u8, value: u64) {
        // SAFETY: CPL 0; DR6 values come from the processor or from `set_debug_regs`,
        // which keeps the upper 32 bits 0.
        unsafe { write_dr(n, value) }
    }

    fn fxsave(&self, area: &mut FxsaveArea) {
        // SAFETY: the host runs with CR0.EM and CR0.TS clear (its boot code clears
        // them and every VM exit loads HOST_CR0).
        unsafe { fxsave64(area) }
    }

    fn fxrstor(&self, area: &FxsaveArea) {
        // SAFETY: CR0.EM/TS clear (as in `fxsave`); the image came from FXSAVE64 on
        // this processor or passed `check_mxcsr` against its MXCSR_MASK.
        unsafe { fxrstor64(area) }
    }
}

/// Why the last run ended in [`Exit::EmulationFailure`] or [`Exit::EntryFailed`], for
/// the host's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxFailure {
    /// An exit the backend cannot handle.
    Unhandled(BackendExit),
    /// The exit information did not decode.
    Decode(crate::exits::DecodeError),
    /// A VMREAD or VMWRITE failed.
    Vmcs(VmxError),
    /// The EPT tables could not be built.
    Ept(EptError),
    /// An event could not be encoded for injection.
    Inject(crate::event::InjectError),
    /// An INS/OUTS element could not be completed (MMIO operand, undecodable).
    StringIo(StringIoError),
}

/// The VMX vCPU, on the processor ([`HardwareVmcs`], the default) or, for host tests
/// and benchmarks, on [`crate::replay::ReplayVmcs`].
pub struct VmxVcpu<V: VmxProcessor = HardwareVmcs> {
    /// Guest RAX..R15 in encoding order (the RSP slot is unused: RSP is in the VMCS).
    gprs: Gprs,
    vmcs: V,
    caps: VmxCaps,
    controls: Controls,
    decoder: ExitDecoder,
    rules: GuestCrRules,
    /// The primary processor-based controls as currently written.
    proc: u32,
    launched: bool,
    /// The event to inject at the next entry.
    pending: Option<EntryEvent>,
    /// Size of the port read the core is completing.
    pio_in_size: u8,
    /// What the instruction the last exit reported raises when it is skipped: the
    /// single-step trap (every one but HLT) and the I/O breakpoints of its port access.
    completing: Completing,
    /// The MMIO instruction the core is completing.
    mmio: Option<MmioInstruction>,
    /// The string instruction on MMIO in progress: its MMIO access is the one the core
    /// is completing, and the next `run` goes on with it before entering the guest (see
    /// [`opsvisor_core::emulate::strings`]).
    string_mmio: Option<StringMmio>,
    /// The INS/OUTS element the core is completing (see [`crate::string_io`]).
    string_op: Option<Element>,
    /// A completed INS element's value, stored into guest memory before the next
    /// entry (`complete_pio_in` has no access to it).
    ins_store: Option<InsStore>,
    /// The CR4 bits the guest's CPU model lets it set ([`X86Ops::set_cpuid`]); the
    /// others are host-owned in the CR4 guest/host mask, so setting one exits and
    /// raises #GP.
    cr4_allowed: u64,
    /// Guest CR2 (not switched by VMX).
    cr2: u64,
    /// CR0, CR3, CR4 or EFER changed through the backend: with EPT, a guest in PAE paging
    /// takes its four PDPTEs from the VMCS at entry (SDM 3C 28.3.1.6), so they must be
    /// reloaded from guest memory before the next entry. (A MOV CR3 the guest runs
    /// itself loads them in the processor.)
    pdptes_stale: bool,
    ept: Option<EptTables>,
    ept_map_id: u64,
    eptp: u64,
    msr_bitmap: MsrBitmap,
    io_bitmaps: IoBitmaps,
    /// The VMCS region (the processor's while the VMCS is active: declared after
    /// `vmcs`, whose drop clears it, so that it is freed only then).
    vmcs_region: Box<Page>,
    /// The vCPU's VPID: its translations are its own in the TLB.
    vpid: u16,
    config: VmxConfig,
    /// Guest TSC as of the host TSC `entry_host_tsc` (RDTSC exiting): core's clock
    /// reading ([`RunLimit::tsc`]) and the host TSC when this vCPU first saw it.
    entry_guest_tsc: u64,
    entry_host_tsc: u64,
    /// Whether `entry_guest_tsc`/`entry_host_tsc` hold a reading (see `anchor_clock`).
    tsc_anchored: bool,
    last_guest_tsc: u64,
    vmcs_error: Option<VmxError>,
    failure: Option<VmxFailure>,
    /// What a debugger asked for ([`X86Ops::set_guest_debug`]).
    guest_debug: GuestDebug,
    /// While a debugger's single step runs (on RFLAGS.TF, hidden from the guest as KVM
    /// hides it): the guest's own TF, put back at the exit.
    step_tf: Option<u64>,
    /// The instruction of a debugger's single step was completed by the core: the next
    /// run stops at once.
    step_completed: bool,
}

impl<V: VmxProcessor> core::fmt::Debug for VmxVcpu<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmxVcpu")
            .field("launched", &self.launched)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// Whether CPUID reports VMX (CPUID.1:ECX bit 5).
pub fn cpu_has_vmx() -> bool {
    // CPUID is always available in 64-bit mode.
    core::arch::x86_64::__cpuid(1).ecx & (1 << 5) != 0
}

/// VMX root operation on this processor (see [`crate::root`]): VMXON's region, the
/// capabilities and controls every vCPU uses, and the VPIDs handed out. Shared by the
/// [`VmxRoot`] handle and every vCPU made from it; the last one gone leaves VMX
/// operation (VMXOFF).
pub(crate) struct Root {
    pub(crate) cpu: LogicalCpu<HardwareSwitch>,
    caps: VmxCaps,
    controls: Controls,
    config: VmxConfig,
    /// The VMXON region: the processor's own while in VMX operation.
    vmxon_region: Box<Page>,
    /// The VPID the next vCPU gets (0 is the host's).
    next_vpid: Cell<u16>,
}

impl Drop for Root {
    fn drop(&mut self) {
        // SAFETY: the processor entered VMX root operation in `VmxRoot::enable`, and
        // every VMCS made on it was cleared by its handle's drop (each holds this
        // `Root`). VMXOFF leaves VMX operation; the VMXON region is then free to go.
        unsafe { asm!("vmxoff", options(nostack)) };
    }
}

/// VMX root operation on the processor the image runs on: VMXON once, then any number
/// of vCPUs ([`VmxRoot::new_vcpu`]), each with its own VMCS and VPID, switched with
/// VMPTRLD as they take turns (see [`crate::root`]).
pub struct VmxRoot {
    root: Rc<Root>,
}

impl core::fmt::Debug for VmxRoot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmxRoot")
            .field("vmptrlds", &self.root.cpu.vmptrlds())
            .finish_non_exhaustive()
    }
}

/// The most vCPUs one [`VmxRoot`] makes: one VPID each, 1 to 0xFFFF.
pub const MAX_VMX_VCPUS: u16 = u16::MAX;

impl VmxRoot {
    /// Enter VMX root operation: the CPUID and capability checks, IA32_FEATURE_CONTROL,
    /// the CR0/CR4 fixed bits and VMXON.
    ///
    /// # Safety
    ///
    /// Runs at CPL 0 on the only processor in use, with interrupts disabled, in 64-bit
    /// mode with a GDT holding a TSS in TR; `config.to_phys` gives the true physical
    /// address of heap memory. The processor stays in VMX root operation for as long as
    /// the root or a vCPU made from it lives, and on this processor alone.
    pub unsafe fn enable(config: VmxConfig) -> Result<VmxRoot, EnableError> {
        if !cpu_has_vmx() {
            return Err(EnableError::NoVmx);
        }
        // SAFETY: CPL 0 (the caller's contract) and CPUID reports VMX.
        let msrs = unsafe { HardwareMsrs::new() };
        let caps = VmxCaps::read(&msrs).map_err(EnableError::Caps)?;
        let controls = Controls::compute(&caps).map_err(EnableError::Controls)?;
        check_features(&controls)?;
        match feature_control_action(rdmsr(IA32_FEATURE_CONTROL)) {
            FeatureControlAction::Ready => {}
            FeatureControlAction::LockedOff => return Err(EnableError::DisabledByFirmware),
            // Unlocked: writing it is allowed once (it exists on every VMX processor).
            FeatureControlAction::Write(value) => wrmsr(IA32_FEATURE_CONTROL, value),
        }
        let cr0 = read_cr!("cr0");
        let cr4 = read_cr!("cr4");
        let (new_cr0, new_cr4) =
            host_control_registers(cr0, cr4, &caps).ok_or(EnableError::FixedBits { cr0, cr4 })?;
        // The guest's x87/SSE state lives in the processor and is read and loaded with
        // FXSAVE/FXRSTOR, which move XMM0-15 and MXCSR only with CR4.OSFXSR set. The
        // host code never executes SSE (it is built soft-float), so the bit changes
        // nothing else; every VMX processor allows it (IA32_VMX_CR4_FIXED1).
        let new_cr4 = if caps.cr4.fixed1 & CR4_OSFXSR != 0 {
            new_cr4 | CR4_OSFXSR
        } else {
            new_cr4
        };
        // SAFETY: the new values differ from the running ones only in CR0.NE,
        // CR4.VMXE (checked by `host_control_registers`) and CR4.OSFXSR, which change
        // neither paging nor how the host's code runs.
        unsafe {
            asm!("mov cr0, {}", in(reg) new_cr0, options(nostack, preserves_flags));
            asm!("mov cr4, {}", in(reg) new_cr4, options(nostack, preserves_flags));
        }
        let mut vmxon_region = Page::zeroed();
        vmxon_region.0[0] = u64::from(caps.basic.revision_id());
        let vmxon_phys = (config.to_phys)(vmxon_region.addr());
        if caps.basic.physical_address_32bit() && vmxon_phys >> 32 != 0 {
            return Err(EnableError::Address(vmxon_phys));
        }
        vmx_phys_op!("vmxon", vmxon_phys).map_err(EnableError::Vmxon)?;
        let switch = HardwareSwitch {
            _this_cpu: PhantomData,
        };
        Ok(VmxRoot {
            root: Rc::new(Root {
                cpu: LogicalCpu::new(switch, controls.features.rdtscp),
                caps,
                controls,
                config,
                vmxon_region,
                next_vpid: Cell::new(1),
            }),
        })
    }

    /// A new vCPU on this processor: its VMCS (VMCLEAR, so that its launch state is
    /// clear and the first entry is VMLAUNCH, SDM 3C 25.11.3; then VMPTRLD), its VPID,
    /// the controls, the host state and the guest's power-on state.
    pub fn new_vcpu(&self) -> Result<VmxVcpu<HardwareVmcs>, EnableError> {
        let root = &self.root;
        let vpid = root.next_vpid.get();
        if vpid == 0 {
            return Err(EnableError::TooManyVcpus);
        }
        let mut vmcs_region = Page::zeroed();
        vmcs_region.0[0] = u64::from(root.caps.basic.revision_id());
        let vmcs_phys = (root.config.to_phys)(vmcs_region.addr());
        if root.caps.basic.physical_address_32bit() && vmcs_phys >> 32 != 0 {
            return Err(EnableError::Address(vmcs_phys));
        }
        vmx_phys_op!("vmclear", vmcs_phys).map_err(EnableError::Vmcs)?;
        root.cpu
            .make_current(vmcs_phys)
            .map_err(EnableError::Vmcs)?;
        root.next_vpid.set(vpid.wrapping_add(1));
        // A new vCPU's saved x87/SSE image carries this processor's MXCSR_MASK (what
        // `set_fpu_state` checks against) and nothing of another guest's registers.
        let mut processor = FxsaveArea::zeroed();
        // SAFETY: the host runs with CR0.EM and CR0.TS clear.
        unsafe { fxsave64(&mut processor) };
        let mut fpu = FxsaveArea::zeroed();
        fpu.set_mxcsr_mask(processor.mxcsr_mask());
        // SAFETY: the processor is in VMX root operation at CPL 0 for as long as `root`
        // lives, which the handle keeps alive.
        let vmcs = unsafe {
            HardwareVmcs::new(
                vmcs_phys,
                Rc::clone(root),
                Rc::new(RefCell::new(Unswitched::new(fpu))),
            )
        };
        let mut vcpu = VmxVcpu::assemble(
            vmcs,
            root.caps,
            root.controls,
            root.config,
            vmcs_region,
            vpid,
        );
        vcpu.setup().map_err(EnableError::Vmcs)?;
        vcpu.vcpu_reset(ResetKind::PowerOn);
        match vcpu.vmcs_error.take() {
            Some(e) => Err(EnableError::Vmcs(e)),
            None => Ok(vcpu),
        }
    }

    /// The controls every vCPU runs with (features found, for the host's log).
    pub fn controls(&self) -> &Controls {
        &self.root.controls
    }

    /// The capability MSRs.
    pub fn caps(&self) -> &VmxCaps {
        &self.root.caps
    }

    /// The host-physical address of the VMXON region.
    pub fn vmxon_region(&self) -> u64 {
        (self.root.config.to_phys)(self.root.vmxon_region.addr())
    }

    /// VMPTRLDs so far (each time an access or an entry needed another vCPU's VMCS).
    pub fn vmptrlds(&self) -> u64 {
        self.root.cpu.vmptrlds()
    }

    /// Times the registers VMX does not switch went from one vCPU's guest to another's.
    pub fn handovers(&self) -> u64 {
        self.root.cpu.handovers()
    }
}

impl VmxVcpu<HardwareVmcs> {
    /// Enter VMX root operation and set up one vCPU: [`VmxRoot::enable`] and
    /// [`VmxRoot::new_vcpu`] (the root lives as long as the vCPU).
    ///
    /// # Safety
    ///
    /// As for [`VmxRoot::enable`].
    pub unsafe fn enable(config: VmxConfig) -> Result<VmxVcpu<HardwareVmcs>, EnableError> {
        // SAFETY: the caller's contract is `VmxRoot::enable`'s.
        unsafe { VmxRoot::enable(config) }?.new_vcpu()
    }

    /// The VMX root operation this vCPU runs in (to make more vCPUs on the processor).
    pub fn root(&self) -> VmxRoot {
        VmxRoot {
            root: Rc::clone(self.vmcs.root()),
        }
    }

    /// Write the controls, the host state and the guest defaults.
    fn setup(&mut self) -> Result<(), VmxError> {
        use fields::*;
        self.write_controls()?;
        // Host state: as the processor runs now.
        self.vmcs.write(HOST_CR0, read_cr!("cr0"))?;
        self.vmcs.write(HOST_CR3, read_cr!("cr3"))?;
        self.vmcs.write(HOST_CR4, read_cr!("cr4"))?;
        // VM entry requires RPL 0 and TI 0 in the host selectors.
        let sel = |s: u16| u64::from(s & 0xf8);
        self.vmcs.write(HOST_CS_SELECTOR, sel(read_sel!("cs")))?;
        self.vmcs.write(HOST_SS_SELECTOR, sel(read_sel!("ss")))?;
        self.vmcs.write(HOST_DS_SELECTOR, sel(read_sel!("ds")))?;
        self.vmcs.write(HOST_ES_SELECTOR, sel(read_sel!("es")))?;
        self.vmcs.write(HOST_FS_SELECTOR, sel(read_sel!("fs")))?;
        self.vmcs.write(HOST_GS_SELECTOR, sel(read_sel!("gs")))?;
        let mut gdtr = [0u8; 10];
        let mut idtr = [0u8; 10];
        let tr: u16;
        // SAFETY: SGDT/SIDT store 10 bytes into the local buffers; STR reads TR.
        unsafe {
            asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack, preserves_flags));
            asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack, preserves_flags));
            asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags));
        }
        let table_base = |b: &[u8; 10]| {
            let mut base = [0u8; 8];
            base.copy_from_slice(&b[2..10]);
            u64::from_le_bytes(base)
        };
        let gdt_base = table_base(&gdtr);
        let gdt_limit = u64::from(u16::from_le_bytes([gdtr[0], gdtr[1]]));
        self.vmcs.write(HOST_GDTR_BASE, gdt_base)?;
        self.vmcs.write(HOST_IDTR_BASE, table_base(&idtr))?;
        self.vmcs.write(HOST_TR_SELECTOR, sel(tr))?;
        let tr_index = u64::from(tr & 0xfff8);
        let tr_base = if tr_index + 15 <= gdt_limit {
            // SAFETY: the 16-byte TSS descriptor lies inside the loaded GDT (checked
            // against its limit), which is mapped memory the host set up.
            let (low, high) = unsafe {
                let p = (gdt_base + tr_index) as *const u64;
                (p.read_unaligned(), p.add(1).read_unaligned())
            };
            ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
        } else {
            0
        };
        self.vmcs.write(HOST_TR_BASE, tr_base)?;
        self.vmcs.write(HOST_FS_BASE, rdmsr(MSR_FS_BASE))?;
        self.vmcs.write(HOST_GS_BASE, rdmsr(MSR_GS_BASE))?;
        self.vmcs.write(HOST_IA32_SYSENTER_CS, 0)?;
        self.vmcs.write(HOST_IA32_SYSENTER_ESP, 0)?;
        self.vmcs.write(HOST_IA32_SYSENTER_EIP, 0)?;
        if self.controls.features.efer_switch {
            self.vmcs.write(HOST_IA32_EFER, rdmsr(MSR_EFER))?;
        }
        if self.controls.features.pat_switch {
            self.vmcs.write(HOST_IA32_PAT, rdmsr(MSR_PAT))?;
        }
        self.vmcs
            .write(HOST_RIP, opsvisor_vmx_exit as *const () as u64)?;
        write_guest_defaults(&mut self.vmcs)
    }
}

impl<V: VmxProcessor> VmxVcpu<V> {
    /// A vCPU around `vmcs`, whose controls, host state and guest defaults the caller
    /// writes next.
    pub(crate) fn assemble(
        vmcs: V,
        caps: VmxCaps,
        controls: Controls,
        config: VmxConfig,
        vmcs_region: Box<Page>,
        vpid: u16,
    ) -> VmxVcpu<V> {
        let rules = GuestCrRules::new(&caps, controls.features.unrestricted_guest);
        let mut proc = controls.proc;
        // Guest RDTSC/RDTSCP exit so that the guest's TSC is core's 1 GHz clock.
        if caps.proc.allows(proc_based::RDTSC_EXITING) {
            proc |= proc_based::RDTSC_EXITING;
        }
        VmxVcpu {
            gprs: [0; 16],
            vmcs,
            caps,
            controls,
            decoder: ExitDecoder::new(&caps),
            rules,
            proc,
            launched: false,
            pending: None,
            pio_in_size: 1,
            completing: Completing::default(),
            mmio: None,
            string_mmio: None,
            string_op: None,
            ins_store: None,
            cr4_allowed: CpuidPolicy::emulator().cr4_allowed(),
            cr2: 0,
            pdptes_stale: true,
            ept: None,
            ept_map_id: 0,
            eptp: 0,
            msr_bitmap: MsrBitmap::new(),
            io_bitmaps: IoBitmaps::new(),
            vmcs_region,
            vpid,
            config,
            entry_guest_tsc: 0,
            entry_host_tsc: 0,
            tsc_anchored: false,
            last_guest_tsc: 0,
            vmcs_error: None,
            failure: None,
            guest_debug: GuestDebug::default(),
            step_tf: None,
            step_completed: false,
        }
    }

    /// Write the execution, exit and entry controls and the structures they point to
    /// (bitmaps, CR masks): everything but the host state and the guest state.
    pub(crate) fn write_controls(&mut self) -> Result<(), VmxError> {
        use fields::*;
        let phys = self.config.to_phys;
        self.controls.write(&mut self.vmcs)?;
        self.vmcs
            .write(PRIMARY_PROC_BASED_VM_EXEC_CONTROLS, self.proc.into())?;
        self.vmcs.write(EXCEPTION_BITMAP, 0)?;
        self.vmcs.write(PAGE_FAULT_ERROR_CODE_MASK, 0)?;
        self.vmcs.write(PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
        self.vmcs.write(CR3_TARGET_COUNT, 0)?;
        self.vmcs.write(VM_EXIT_MSR_STORE_COUNT, 0)?;
        self.vmcs.write(VM_EXIT_MSR_LOAD_COUNT, 0)?;
        self.vmcs.write(VM_ENTRY_MSR_LOAD_COUNT, 0)?;
        self.vmcs.write(VM_ENTRY_INTR_INFO, 0)?;
        self.vmcs.write(TSC_OFFSET, 0)?;
        self.vmcs
            .write(IO_BITMAP_A, phys(self.io_bitmaps.a().addr()))?;
        self.vmcs
            .write(IO_BITMAP_B, phys(self.io_bitmaps.b().addr()))?;
        self.vmcs
            .write(MSR_BITMAP, phys(self.msr_bitmap.page().addr()))?;
        if self.controls.features.vpid {
            self.vmcs
                .write(VIRTUAL_PROCESSOR_ID, u64::from(self.vpid))?;
        }
        self.vmcs
            .write(CR0_GUEST_HOST_MASK, self.rules.cr0_mask())?;
        self.vmcs.write(CR4_GUEST_HOST_MASK, self.cr4_mask())?;

        Ok(())
    }

    /// Write the controls and the guest defaults, then reset: the setup of a vCPU
    /// whose processor needs no host state ([`crate::replay::ReplayVmcs`]).
    pub(crate) fn setup_for_replay(&mut self) -> Result<(), VmxError> {
        self.write_controls()?;
        write_guest_defaults(&mut self.vmcs)?;
        self.vcpu_reset(ResetKind::PowerOn);
        self.vmcs_error.take().map_or(Ok(()), Err)
    }

    /// The processor (or its stand-in) this vCPU runs on.
    pub fn processor(&self) -> &V {
        &self.vmcs
    }

    /// The processor, mutable: only for stand-ins (on hardware, VMWRITEs behind the
    /// vCPU's back could break the host state).
    pub(crate) fn processor_mut(&mut self) -> &mut V {
        &mut self.vmcs
    }

    /// The controls in use (features found, for the host's log).
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// The capability MSRs.
    pub fn caps(&self) -> &VmxCaps {
        &self.caps
    }

    /// Why the last run failed, if it did.
    pub fn last_failure(&self) -> Option<VmxFailure> {
        self.failure
    }

    /// The host-physical address of the VMCS.
    pub fn vmcs_region(&self) -> u64 {
        (self.config.to_phys)(self.vmcs_region.addr())
    }

    /// The vCPU's VPID.
    pub fn vpid(&self) -> u16 {
        self.vpid
    }

    fn read(&self, field: Field) -> u64 {
        // The fields this backend reads exist on every processor it accepts; a failure
        // would be a bug, reported at the next run through `vmcs_error` of the write
        // side, and reads as 0 here.
        self.vmcs.read(field).unwrap_or(0)
    }

    fn write(&mut self, field: Field, value: u64) {
        if let Err(e) = self.vmcs.write(field, value) {
            self.vmcs_error.get_or_insert(e);
        }
    }

    fn fail(&mut self, failure: VmxFailure) -> Exit {
        self.failure = Some(failure);
        Exit::EmulationFailure { rip: self.rip() }
    }

    /// Retiring an instruction ends a STI or MOV SS interrupt shadow.
    fn clear_interrupt_shadow(&mut self) {
        let state = self.read(fields::GUEST_INTERRUPTIBILITY_STATE);
        if state & (BLOCKING_BY_STI | BLOCKING_BY_MOV_SS) != 0 {
            self.write(
                fields::GUEST_INTERRUPTIBILITY_STATE,
                state & !(BLOCKING_BY_STI | BLOCKING_BY_MOV_SS),
            );
        }
    }

    /// Make EFER.LMA and the "IA-32e mode guest" entry control follow EFER.LME and
    /// CR0.PG, as the processor does when software sets CR0.PG.
    fn sync_long_mode(&mut self) {
        let efer = self.read(fields::GUEST_IA32_EFER);
        let lma = efer & EFER_LME != 0 && self.read(fields::GUEST_CR0) & CR0_PG != 0;
        let new_efer = if lma {
            efer | EFER_LMA
        } else {
            efer & !EFER_LMA
        };
        if new_efer != efer {
            self.write(fields::GUEST_IA32_EFER, new_efer);
        }
        self.set_ia32e(new_efer & EFER_LMA != 0);
    }

    fn set_ia32e(&mut self, on: bool) {
        let entry = self.read(fields::VM_ENTRY_CONTROLS) as u32;
        let want = if on {
            entry | entry_ctls::IA32E_MODE_GUEST
        } else {
            entry & !entry_ctls::IA32E_MODE_GUEST
        };
        if want != entry {
            self.write(fields::VM_ENTRY_CONTROLS, want.into());
        }
    }

    fn set_proc_bit(&mut self, bit: u32, on: bool) {
        let proc = if on {
            self.proc | bit
        } else {
            self.proc & !bit
        };
        if proc != self.proc {
            self.proc = proc;
            self.write(fields::PRIMARY_PROC_BASED_VM_EXEC_CONTROLS, proc.into());
        }
    }

    /// (Re)build the EPT tables when the memory map changed.
    fn ensure_ept(&mut self, mem: &GuestMemory) -> Result<(), VmxFailure> {
        if self.ept.is_some() && self.ept_map_id == mem.map_id() {
            return Ok(());
        }
        let tables = EptTables::build(
            mem,
            self.config.to_phys,
            self.caps.ept_vpid.unwrap_or(crate::caps::EptVpidCaps(0)),
        )
        .map_err(VmxFailure::Ept)?;
        let ept_caps = self.caps.ept_vpid.unwrap_or(crate::caps::EptVpidCaps(0));
        let eptp = ept_caps
            .eptp(tables.root(), false)
            .ok_or(VmxFailure::Ept(EptError::UnalignedRegion { gpa: 0 }))?;
        self.ept = Some(tables);
        self.ept_map_id = mem.map_id();
        self.eptp = eptp;
        self.write(fields::EPT_POINTER, eptp);
        self.flush_tlb_all();
        Ok(())
    }

    fn host_ns(&self, ticks: u64) -> u64 {
        let hz = self.config.tsc_hz.max(1);
        (u128::from(ticks) * 1_000_000_000 / u128::from(hz)).min(u128::from(u64::MAX)) as u64
    }

    fn host_ticks(&self, ns: u64) -> u64 {
        (u128::from(ns) * u128::from(self.config.tsc_hz) / 1_000_000_000).min(u128::from(u64::MAX))
            as u64
    }

    /// The guest TSC now: core's clock at the last clock read plus the host time since.
    fn guest_tsc(&mut self) -> u64 {
        let elapsed = self.vmcs.tsc().wrapping_sub(self.entry_host_tsc);
        let tsc = self.entry_guest_tsc.wrapping_add(self.host_ns(elapsed));
        // Never step back (the core may hand an older clock reading at the next run).
        self.last_guest_tsc = self.last_guest_tsc.max(tsc);
        self.last_guest_tsc
    }

    /// One VM entry and exit; `Err` when the entry instruction failed.
    fn enter(&mut self) -> Result<(), VmxError> {
        if let Some(event) = self.pending {
            if let Err(e) = event.write(&mut self.vmcs) {
                self.vmcs_error.get_or_insert(e);
            }
        }
        if let Some(e) = self.vmcs_error.take() {
            return Err(e);
        }
        // SAFETY: `setup` (hardware) or the replay constructor wrote the controls and
        // the host state; EPT is loaded by `ensure_ept` before every entry.
        let result = unsafe {
            self.vmcs
                .enter(&mut self.gprs, &mut self.cr2, self.launched)
        };
        if result.is_ok() {
            self.launched = true;
            // Delivered, or reported again in the IDT-vectoring information.
            self.pending = None;
        }
        result
    }

    /// The host TSC at which this run must give control back to the core: the core's
    /// next deadline, and at most [`MAX_SLICE_NS`] from now.
    fn run_deadline(&self, limit: &RunLimit, now: u64) -> u64 {
        let slice_end = now.saturating_add(self.host_ticks(MAX_SLICE_NS));
        match limit.deadline {
            // The deadline is on core's clock, anchored at `entry_host_tsc`.
            Some(d) => {
                let budget = d.saturating_sub(self.entry_guest_tsc);
                slice_end.min(self.entry_host_tsc.saturating_add(self.host_ticks(budget)))
            }
            None => slice_end,
        }
    }

    /// Tie core's clock reading to the host TSC. Core refreshes [`RunLimit::tsc`] only
    /// when it reads its clock (not after every exit), so the same reading comes back
    /// for several runs: it is anchored to the host TSC of the run that first sees it,
    /// and the guest's TSC runs on from there. Re-anchoring a stale reading at every
    /// run would step the guest's TSC back (clamped, it would stand still, and a guest
    /// comparing two RDTSCs would see no time pass).
    fn anchor_clock(&mut self, limit: &RunLimit, now: u64) {
        if !self.tsc_anchored || limit.tsc != self.entry_guest_tsc {
            self.entry_guest_tsc = limit.tsc;
            self.entry_host_tsc = now;
            self.tsc_anchored = true;
        }
    }

    /// Arm the preemption timer for what is left until `deadline` (host TSC): exits the
    /// backend handles itself re-enter without resetting the budget.
    fn preemption_timer(&mut self, deadline: u64) {
        if !self.controls.features.preemption_timer {
            return;
        }
        let ticks = deadline.saturating_sub(self.vmcs.tsc())
            >> self.controls.features.preemption_timer_rate;
        self.write(
            fields::VMX_PREEMPTION_TIMER_VALUE,
            ticks.min(u64::from(u32::MAX)),
        );
    }

    /// Up to 15 bytes of the instruction at the guest's CS:RIP, read through the guest's
    /// page tables; fewer when the instruction runs into memory that is not RAM.
    fn fetch_instruction(&self, mem: &mut GuestMemory, buf: &mut [u8; 15]) -> usize {
        let paging = self.paging_regs();
        fetch_instruction(self, mem, &paging, buf)
    }

    /// An EPT violation: an access to guest-physical memory that is not RAM. A data
    /// access by a plain move becomes core's MMIO exit, a string instruction is run by
    /// core's string emulation (its MMIO accesses core's MMIO exits); anything else ends
    /// the run.
    fn handle_ept_violation(&mut self, mem: &mut GuestMemory, v: EptViolation) -> Option<Exit> {
        let Some(direction) = v.direction() else {
            // Fetching code from outside RAM.
            return Some(v.to_slat_violation());
        };
        if mem.is_ram(v.gpa, 1) {
            // RAM is always mapped: the tables are out of step with the map.
            self.ept = None;
            return Some(self.fail(VmxFailure::Unhandled(BackendExit::EptViolation(v))));
        }
        let mut bytes = [0u8; 15];
        let n = self.fetch_instruction(mem, &mut bytes);
        let cs = self.segment(SegReg::Cs);
        let bitness = if self.efer() & EFER_LMA != 0 && cs.attr & Segment::L != 0 {
            64
        } else if cs.attr & Segment::DB != 0 {
            32
        } else {
            16
        };
        let gprs = self.gprs;
        let rsp = self.read(fields::GUEST_RSP);
        let decoded = mmio::decode(bytes.get(..n).unwrap_or(&[]), bitness, |r| match r {
            Gpr::Rsp => rsp,
            r => gprs[r as usize],
        });
        match decoded {
            Some(insn) if insn.direction == direction => {
                self.mmio = Some(insn);
                Some(Exit::Mmio {
                    gpa: v.gpa,
                    size: insn.size,
                    direction,
                    data: insn.data,
                })
            }
            Some(_) => Some(self.fail(VmxFailure::Unhandled(BackendExit::EptViolation(v)))),
            None => match strings::decode(bytes.get(..n).unwrap_or(&[]), bitness) {
                Some(op) => self.step_string_mmio(mem, StringMmio::new(op)),
                None => Some(self.fail(VmxFailure::Unhandled(BackendExit::EptViolation(v)))),
            },
        }
    }

    /// Go on with a string instruction on MMIO: `Some` is its next MMIO access for the
    /// core, `None` enters the guest (the instruction retired, faulted, or paused between
    /// batches with RIP at it).
    fn step_string_mmio(&mut self, mem: &mut GuestMemory, mut op: StringMmio) -> Option<Exit> {
        let paging = self.paging_regs();
        match op.step(self, mem, &paging) {
            strings::Step::Mmio(exit) => {
                self.string_mmio = Some(op);
                Some(exit)
            }
            strings::Step::Enter => None,
            strings::Step::Retired | strings::Step::Iterated => {
                // Its single-step trap, after the last element or (TF set, iterations
                // left) after this one (it has no port), and a debugger's step ends here.
                self.completing = Completing::INSTRUCTION;
                self.debug_traps_after_skip();
                self.step_completed = self.guest_debug.single_step;
                None
            }
        }
    }

    /// Handle an exit the core does not see; `Some` ends the run with that exit.
    fn handle_backend_exit(&mut self, mem: &mut GuestMemory, exit: BackendExit) -> Option<Exit> {
        match exit {
            BackendExit::EptViolation(v) => self.handle_ept_violation(mem, v),
            BackendExit::HostInterrupt { .. } | BackendExit::HostNmi => {
                // The host runs with interrupts off and handles no device interrupt:
                // the core re-evaluates events and re-enters.
                Some(Exit::ExternalInterrupt)
            }
            BackendExit::Init | BackendExit::Sipi { .. } => None,
            BackendExit::DebugException { pending_dr6, .. } => {
                self.handle_debug_exception(pending_dr6)
            }
            BackendExit::ControlRegister(access) => self.handle_cr(access),
            BackendExit::StringIo(s) => self.handle_string_io(mem, s),
            BackendExit::RefusedInstruction { .. } => {
                self.inject_event(Event::Exception {
                    vector: UD,
                    error_code: None,
                });
                None
            }
            BackendExit::Invlpg { address } => {
                self.flush_tlb_gva(address);
                self.skip_emulated_instruction();
                None
            }
            BackendExit::Unexpected { reason }
                if reason == REASON_RDTSC || reason == REASON_RDTSCP =>
            {
                let tsc = self.guest_tsc();
                self.gprs[Gpr::Rax as usize] = tsc & 0xffff_ffff;
                self.gprs[Gpr::Rdx as usize] = tsc >> 32;
                if reason == REASON_RDTSCP {
                    // SAFETY: RDTSCP exits only when it is enabled, so TSC_AUX exists.
                    let aux = unsafe { self.vmcs.read_msr(MSR_TSC_AUX) };
                    self.gprs[Gpr::Rcx as usize] = aux & 0xffff_ffff;
                }
                self.skip_emulated_instruction();
                None
            }
            other => Some(self.fail(VmxFailure::Unhandled(other))),
        }
    }

    /// Before an entry of a debugger's single step: RFLAGS.TF with the guest's own TF
    /// kept aside (and, under an interrupt shadow, the BS bit the VM-entry checks then
    /// require, SDM 3C 27.3.1.5). The step is KVM's (TF), not the monitor trap flag's:
    /// under Bochs 2.7 (tigerlake) an entry with the monitor trap flag ran on to the next
    /// intercepted instruction instead of exiting after one.
    fn arm_step(&mut self) {
        if !self.guest_debug.single_step {
            return;
        }
        let rflags = self.read(fields::GUEST_RFLAGS);
        self.step_tf = Some(rflags & crate::debug::TF);
        self.write(fields::GUEST_RFLAGS, rflags | crate::debug::TF);
        if self.interrupt_shadow() {
            let pending = self.read(fields::GUEST_PENDING_DEBUG_EXCEPTIONS);
            self.write(
                fields::GUEST_PENDING_DEBUG_EXCEPTIONS,
                pending | crate::debug::BS,
            );
        }
    }

    /// After the entry of a TF single step: the guest's own TF back.
    fn disarm_step(&mut self) {
        if let Some(tf) = self.step_tf.take() {
            let rflags = self.read(fields::GUEST_RFLAGS);
            self.write(fields::GUEST_RFLAGS, (rflags & !crate::debug::TF) | tf);
        }
    }

    /// An intercepted #DB, which the exception bitmap holds only for a debugger: its
    /// single step (on TF) or its breakpoints in DR0-DR3, or one of the guest's own that
    /// came while the debugger intercepts (the debugger gives that back). DR6 gets the
    /// matched breakpoints and BS, as the debugger reads them ([`X86Ops::debug_regs`]).
    fn handle_debug_exception(&mut self, pending_dr6: u64) -> Option<Exit> {
        if self.guest_debug.intercept_debug || self.guest_debug.single_step {
            // SAFETY: DR6 is the guest's while the vCPU runs (it stays in the processor,
            // see crate::debug); the host uses no breakpoints.
            unsafe {
                let dr6 = self.vmcs.read_dr(6);
                self.vmcs
                    .write_dr(6, (dr6 & !0x400f) | (pending_dr6 & 0x400f));
            }
            return Some(Exit::Exception {
                vector: DB,
                error_code: None,
            });
        }
        Some(
            self.fail(VmxFailure::Unhandled(BackendExit::DebugException {
                pending_dr6,
                int1: false,
            })),
        )
    }

    /// The exception bitmap for what the debugger asked.
    fn write_debug_controls(&mut self) {
        let d = self.guest_debug;
        let bitmap = (u64::from(d.intercept_breakpoints) << BP)
            | (u64::from(d.intercept_debug || d.single_step) << DB);
        self.write(fields::EXCEPTION_BITMAP, bitmap);
    }

    /// In PAE paging (CR0.PG, CR4.PAE, not IA32e), load the four PDPTEs at CR3 from guest
    /// memory into the VMCS, as MOV CR3 would have loaded them into the processor. A
    /// PDPTE outside RAM reads as not present.
    fn load_pdptes(&mut self, mem: &GuestMemory) {
        self.pdptes_stale = false;
        let pae =
            self.cr0() & CR0_PG != 0 && self.cr4() & CR4_PAE != 0 && self.efer() & EFER_LMA == 0;
        if !pae {
            return;
        }
        let table = self.cr3() & 0xffff_ffe0;
        for (i, field) in [
            fields::GUEST_PDPTE0,
            fields::GUEST_PDPTE1,
            fields::GUEST_PDPTE2,
            fields::GUEST_PDPTE3,
        ]
        .into_iter()
        .enumerate()
        {
            let entry = mem.read_u64(table + 8 * i as u64).unwrap_or(0);
            self.write(field, entry);
        }
    }

    /// The CR4 guest/host mask: the bits VMX fixes and the bits of features the CPU
    /// model does not offer.
    /// The single-step and I/O breakpoint traps of the instruction the backend or the
    /// core completed (see [`crate::debug`]), pending for the next VM entry, and RF
    /// cleared.
    fn debug_traps_after_skip(&mut self) {
        let done = core::mem::take(&mut self.completing);
        let rflags = self.read(fields::GUEST_RFLAGS);
        if rflags & RFLAGS_RF != 0 {
            // The processor clears RF after every instruction it completes; for one the
            // core completed, that is the backend's job.
            self.write(fields::GUEST_RFLAGS, rflags & !RFLAGS_RF);
        }
        let dr7 = self.read(fields::GUEST_DR7);
        // An event already queued (re-injected) goes first: the entry that delivers it
        // is vectoring, which discards the field, as SVM drops the trap.
        if !done.may_trap(rflags, dr7) || self.pending.is_some() {
            return;
        }
        let state = DebugState {
            dr: self.debug_regs().db,
            dr7,
            cr4: self.cr4(),
            rflags,
            debugctl: self.get_msr(MSR_DEBUGCTL).unwrap_or(0),
        };
        let bits = done.pending(&state);
        if bits != 0 {
            let old = self.read(fields::GUEST_PENDING_DEBUG_EXCEPTIONS);
            self.write(fields::GUEST_PENDING_DEBUG_EXCEPTIONS, old | bits);
        }
    }

    /// A trap is in the pending-debug-exceptions field (BS or an enabled breakpoint):
    /// it is delivered before an NMI or external interrupt (SDM 3C, delivery of pending
    /// debug exceptions after VM entry), and an entry that injected one would discard
    /// it, so the core injects neither until the trap is delivered.
    fn debug_trap_pending(&self) -> bool {
        self.read(fields::GUEST_PENDING_DEBUG_EXCEPTIONS)
            & (crate::debug::BS | crate::debug::ENABLED_BP)
            != 0
    }

    fn cr4_mask(&self) -> u64 {
        self.rules.cr4_mask() | !self.cr4_allowed
    }

    /// Whether MOV to CR4 of `value` raises #GP(0) (SDM 2, MOV CR: bits of features the
    /// model lacks, PAE cleared or LA57 changed in IA-32e mode, PCIDE set outside IA-32e
    /// mode or with CR3[11:0] not zero). The processor checks these only after the VM
    /// exit a host-owned bit causes.
    fn cr4_faults(&self, value: u64) -> bool {
        use opsvisor_core::arch::{CR4_LA57, CR4_PCIDE};
        let old = self.cr4();
        let long = self.efer() & EFER_LMA != 0;
        value & !self.cr4_allowed != 0
            || (long && value & CR4_PAE == 0)
            || (long && (value ^ old) & CR4_LA57 != 0)
            || (value & !old & CR4_PCIDE != 0 && (!long || self.cr3() & 0xfff != 0))
    }

    fn handle_cr(&mut self, access: CrAccess) -> Option<Exit> {
        match access {
            CrAccess::MovTo { cr, gpr } => {
                let value = self.gpr(gpr);
                match cr {
                    ControlRegister::Cr0 => self.set_cr0(value),
                    ControlRegister::Cr3 => self.set_cr3(value),
                    ControlRegister::Cr4 if self.cr4_faults(value) => {
                        self.inject_event(Event::Exception {
                            vector: GP,
                            error_code: Some(0),
                        });
                        return None;
                    }
                    ControlRegister::Cr4 => self.set_cr4(value),
                    // CR8 is the local APIC's TPR, which the core holds.
                    ControlRegister::Cr8 => {
                        return Some(Exit::Cr8 {
                            direction: Direction::Write,
                            gpr,
                        })
                    }
                }
            }
            CrAccess::MovFrom { cr, gpr } => {
                let value = match cr {
                    // Reads of CR0/CR4 come from the read shadows and do not exit; should
                    // one arrive, the guest gets the same shadowed value.
                    ControlRegister::Cr0 => self.cr0(),
                    ControlRegister::Cr3 => self.cr3(),
                    ControlRegister::Cr4 => self.cr4(),
                    ControlRegister::Cr8 => {
                        return Some(Exit::Cr8 {
                            direction: Direction::Read,
                            gpr,
                        })
                    }
                };
                self.set_gpr(gpr, value);
            }
            CrAccess::Clts => {
                let cr0 = self.cr0() & !CR0_TS;
                self.set_cr0(cr0);
            }
            CrAccess::Lmsw { source, .. } => {
                // LMSW loads PE, MP, EM and TS, and cannot clear PE.
                let old = self.cr0();
                let new = (old & !0xe) | (u64::from(source) & 0xf) | (old & CR0_PE);
                self.set_cr0(new);
            }
        }
        self.skip_emulated_instruction();
        None
    }
}

impl<V: VmxProcessor> VmxVcpu<V> {
    /// The control registers the processor translates guest-linear addresses with.
    fn paging_regs(&self) -> PagingRegs {
        PagingRegs {
            cr0: self.read(fields::GUEST_CR0),
            cr3: self.cr3(),
            cr4: self.read(fields::GUEST_CR4),
            efer: self.efer(),
            // This backend does not offer protection keys (see `supported_cpuid`).
            pkru: 0,
        }
    }

    /// INS/OUTS: one element to the core (see [`crate::string_io`]).
    fn handle_string_io(&mut self, mem: &mut GuestMemory, exit: StringIo) -> Option<Exit> {
        let operand = match exit.operand {
            Some(operand) => operand,
            None => {
                // The processor does not report the address size: decode the instruction.
                let mut bytes = [0u8; 15];
                let n = self.fetch_instruction(mem, &mut bytes);
                let bitness = string_io::code_bitness(self);
                let decoded = string_io::decode_operand(
                    bytes.get(..n).unwrap_or(&[]),
                    bitness,
                    exit.direction,
                );
                match decoded {
                    Some(operand) => operand,
                    None => {
                        let rip = self.rip();
                        return Some(
                            self.fail(VmxFailure::StringIo(StringIoError::Undecodable { rip })),
                        );
                    }
                }
            }
        };
        let paging = self.paging_regs();
        match string_io::start(self, mem, &paging, &exit.insn(), operand) {
            string_io::Start::Io(io, element) => {
                self.string_op = Some(element);
                Some(io)
            }
            string_io::Start::Retire => {
                self.skip_emulated_instruction();
                None
            }
            string_io::Start::Faulted => None,
            string_io::Start::Fail(e) => Some(self.fail(VmxFailure::StringIo(e))),
        }
    }
}

impl<V: VmxProcessor> X86Ops for VmxVcpu<V> {
    fn name(&self) -> &'static str {
        "vmx"
    }

    fn vcpu_reset(&mut self, kind: ResetKind) {
        self.gprs = [0; 16];
        // EDX holds the processor signature after reset.
        self.gprs[Gpr::Rdx as usize] = 0x600;
        self.write(fields::GUEST_RSP, 0);
        for seg in SegReg::ALL {
            self.set_segment(seg, &ResetState::segment(seg));
        }
        self.set_gdt(DescriptorTable {
            base: 0,
            limit: 0xffff,
        });
        self.set_idt(DescriptorTable {
            base: 0,
            limit: 0xffff,
        });
        if kind == ResetKind::PowerOn {
            self.set_efer(0);
            self.write(fields::GUEST_IA32_PAT, PAT_DEFAULT);
            // A new guest must not see the previous one's x87/SSE registers. KVM's reset
            // state (FNINIT, MXCSR 0x1F80), not the SDM's power-on FCW 0x0040; INIT
            // leaves the state alone. MXCSR 0x1F80 is within every MXCSR_MASK, so the
            // load cannot be refused.
            let _ = self.set_fpu_state(&FxsaveArea::reset());
        }
        self.set_cr4(0);
        self.set_cr3(0);
        self.set_cr0(ResetState::CR0);
        self.cr2 = 0;
        self.write(fields::GUEST_RIP, ResetState::RIP);
        self.write(fields::GUEST_RFLAGS, ResetState::RFLAGS);
        self.write(fields::GUEST_INTERRUPTIBILITY_STATE, 0);
        self.write(fields::GUEST_ACTIVITY_STATE, 0);
        self.pending = None;
        self.string_op = None;
        self.string_mmio = None;
        self.ins_store = None;
        // A new guest brings a new clock.
        self.tsc_anchored = false;
    }

    fn gpr(&self, reg: Gpr) -> u64 {
        match reg {
            Gpr::Rsp => self.read(fields::GUEST_RSP),
            r => self.gprs[r as usize],
        }
    }

    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        match reg {
            Gpr::Rsp => self.write(fields::GUEST_RSP, value),
            r => self.gprs[r as usize] = value,
        }
    }

    fn rip(&self) -> u64 {
        self.read(fields::GUEST_RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        self.write(fields::GUEST_RIP, rip);
    }

    fn rflags(&self) -> u64 {
        self.read(fields::GUEST_RFLAGS)
    }

    fn set_rflags(&mut self, rflags: u64) {
        // Bit 1 is always 1; the reserved bits are 0 (a VM-entry check).
        self.write(fields::GUEST_RFLAGS, (rflags & 0x3f_7fd5) | 2);
    }

    fn segment(&self, seg: SegReg) -> Segment {
        read_segment(&self.vmcs, seg).unwrap_or_default()
    }

    fn set_segment(&mut self, seg: SegReg, value: &Segment) {
        if let Err(e) = write_segment(&mut self.vmcs, seg, value) {
            self.vmcs_error.get_or_insert(e);
        }
    }

    fn cpl(&self) -> u8 {
        ((self.read(fields::GUEST_SS_ACCESS_RIGHTS) >> 5) & 3) as u8
    }

    fn cr0(&self) -> u64 {
        GuestCrRules::visible(
            self.read(fields::GUEST_CR0),
            self.read(fields::CR0_READ_SHADOW),
            self.rules.cr0_mask(),
        )
    }

    fn set_cr0(&mut self, value: u64) {
        self.write(fields::CR0_READ_SHADOW, value);
        self.write(fields::GUEST_CR0, self.rules.cr0_actual(value));
        self.sync_long_mode();
        self.pdptes_stale = true;
    }

    fn cr2(&self) -> u64 {
        self.cr2
    }

    fn set_cr2(&mut self, value: u64) {
        self.cr2 = value;
    }

    fn cr3(&self) -> u64 {
        self.read(fields::GUEST_CR3)
    }

    fn set_cr3(&mut self, value: u64) {
        self.write(fields::GUEST_CR3, value);
        self.flush_tlb_current();
        self.pdptes_stale = true;
    }

    fn cr4(&self) -> u64 {
        GuestCrRules::visible(
            self.read(fields::GUEST_CR4),
            self.read(fields::CR4_READ_SHADOW),
            self.rules.cr4_mask(),
        )
    }

    fn set_cr4(&mut self, value: u64) {
        self.write(fields::CR4_READ_SHADOW, value);
        self.write(fields::GUEST_CR4, self.rules.cr4_actual(value));
        self.pdptes_stale = true;
    }

    fn efer(&self) -> u64 {
        self.read(fields::GUEST_IA32_EFER)
    }

    fn set_efer(&mut self, value: u64) {
        self.write(fields::GUEST_IA32_EFER, value);
        self.set_ia32e(value & EFER_LMA != 0);
        self.pdptes_stale = true;
    }

    fn gdt(&self) -> DescriptorTable {
        DescriptorTable {
            base: self.read(fields::GUEST_GDTR_BASE),
            limit: self.read(fields::GUEST_GDTR_LIMIT) as u16,
        }
    }

    fn set_gdt(&mut self, table: DescriptorTable) {
        self.write(fields::GUEST_GDTR_BASE, table.base);
        self.write(fields::GUEST_GDTR_LIMIT, table.limit.into());
    }

    fn idt(&self) -> DescriptorTable {
        DescriptorTable {
            base: self.read(fields::GUEST_IDTR_BASE),
            limit: self.read(fields::GUEST_IDTR_LIMIT) as u16,
        }
    }

    fn set_idt(&mut self, table: DescriptorTable) {
        self.write(fields::GUEST_IDTR_BASE, table.base);
        self.write(fields::GUEST_IDTR_LIMIT, table.limit.into());
    }

    /// What the guest can be given: the emulator's model (the core's emulation of the
    /// APIC, the timers and the MSRs is the same here) cut down to what this processor
    /// executes natively and VMX lets it run: each instruction-set and paging feature
    /// the processor's CPUID lacks is removed, RDTSCP and RDPID need the "enable
    /// RDTSCP" control, INVPCID "enable INVPCID", and a CR4 bit the VMX fixed bits
    /// forbid removes its feature. Protection keys are not offered (PKRU is neither
    /// switched nor read for the page walks this backend makes), nor is XSAVE (XCR0 is
    /// not switched).
    fn supported_cpuid(&self) -> CpuidPolicy {
        use opsvisor_core::arch::*;
        let mut policy = CpuidPolicy::emulator();
        policy.keep_host_features(|leaf, subleaf| self.vmcs.cpuid(leaf, subleaf));
        let f = &self.controls.features;
        if !f.rdtscp {
            policy.set_feature(Feature::Rdtscp, false);
            policy.set_feature(Feature::Rdpid, false);
        }
        if !f.invpcid {
            policy.set_feature(Feature::Invpcid, false);
        }
        for (feature, bit) in [
            (Feature::Umip, CR4_UMIP),
            (Feature::La57, CR4_LA57),
            (Feature::Fsgsbase, CR4_FSGSBASE),
            (Feature::Pcid, CR4_PCIDE),
            (Feature::Smep, CR4_SMEP),
            (Feature::Smap, CR4_SMAP),
        ] {
            if self.rules.cr4.fixed1 & bit == 0 {
                policy.set_feature(feature, false);
            }
        }
        policy.set_feature(Feature::Pku, false);
        // Core's IA32_ARCH_CAPABILITIES says "not affected" to every flaw it lists, true
        // of the emulator only: the processor's own value would have to be reported.
        policy.set_feature(Feature::ArchCapabilities, false);
        policy.set_feature(Feature::Xsave, false);
        policy.sync_derived_leaves();
        policy
    }

    fn set_cpuid(&mut self, policy: &CpuidPolicy) {
        self.cr4_allowed = policy.cr4_allowed();
        let mask = self.cr4_mask();
        self.write(fields::CR4_GUEST_HOST_MASK, mask);
    }

    fn debug_regs(&self) -> DebugRegs {
        // SAFETY: CPL 0 on hardware (the image's host), indices 0-3 and 6.
        let dr = |n| unsafe { self.vmcs.read_dr(n) };
        DebugRegs {
            db: [dr(0), dr(1), dr(2), dr(3)],
            dr6: dr(6),
            dr7: self.read(fields::GUEST_DR7),
        }
    }

    fn set_debug_regs(&mut self, regs: &DebugRegs) {
        for (n, &value) in regs.db.iter().enumerate() {
            // SAFETY: CPL 0 on hardware, index 0-3; the host enables no breakpoint.
            unsafe { self.vmcs.write_dr(n as u8, value) };
        }
        // The fixed bits as the processor keeps them (see the emulator backend).
        // SAFETY: as above; the value has no bit above 31.
        unsafe { self.vmcs.write_dr(6, (regs.dr6 & 0xe00f) | 0xffff_0ff0) };
        self.write(fields::GUEST_DR7, (regs.dr7 & 0xffff_2fff) | 0x400);
    }

    fn set_guest_debug(&mut self, debug: GuestDebug) -> Result<(), &'static str> {
        self.guest_debug = debug;
        self.step_completed = false;
        self.write_debug_controls();
        Ok(())
    }

    fn get_msr(&self, index: u32) -> Option<u64> {
        Some(match index {
            MSR_DEBUGCTL if self.controls.features.debug_controls_switch => {
                self.read(fields::GUEST_IA32_DEBUGCTL)
            }
            MSR_FS_BASE => self.read(fields::GUEST_FS_BASE),
            MSR_GS_BASE => self.read(fields::GUEST_GS_BASE),
            MSR_SYSENTER_CS => self.read(fields::GUEST_IA32_SYSENTER_CS),
            MSR_SYSENTER_ESP => self.read(fields::GUEST_IA32_SYSENTER_ESP),
            MSR_SYSENTER_EIP => self.read(fields::GUEST_IA32_SYSENTER_EIP),
            MSR_PAT if self.controls.features.pat_switch => self.read(fields::GUEST_IA32_PAT),
            // Not switched by VMX: the guest's values live in the processor.
            // SAFETY: every 64-bit processor has these; TSC_AUX only with RDTSCP.
            MSR_STAR | MSR_LSTAR | MSR_CSTAR | MSR_SFMASK | MSR_KERNEL_GS_BASE => unsafe {
                self.vmcs.read_msr(index)
            },
            // SAFETY: as above.
            MSR_TSC_AUX if self.controls.features.rdtscp => unsafe { self.vmcs.read_msr(index) },
            _ => return None,
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        match index {
            MSR_DEBUGCTL if self.controls.features.debug_controls_switch => {
                self.write(fields::GUEST_IA32_DEBUGCTL, value)
            }
            MSR_FS_BASE => self.write(fields::GUEST_FS_BASE, value),
            MSR_GS_BASE => self.write(fields::GUEST_GS_BASE, value),
            MSR_SYSENTER_CS => self.write(fields::GUEST_IA32_SYSENTER_CS, value),
            MSR_SYSENTER_ESP => self.write(fields::GUEST_IA32_SYSENTER_ESP, value),
            MSR_SYSENTER_EIP => self.write(fields::GUEST_IA32_SYSENTER_EIP, value),
            MSR_PAT if self.controls.features.pat_switch => {
                self.write(fields::GUEST_IA32_PAT, value)
            }
            // SAFETY: these MSRs exist on every 64-bit processor (TSC_AUX with RDTSCP);
            // core has validated the values (canonical addresses), and they only affect
            // SYSCALL/SWAPGS/RDTSCP, which the host never executes.
            MSR_STAR | MSR_LSTAR | MSR_CSTAR | MSR_SFMASK | MSR_KERNEL_GS_BASE => unsafe {
                self.vmcs.write_msr(index, value)
            },
            // SAFETY: as above.
            MSR_TSC_AUX if self.controls.features.rdtscp => unsafe {
                self.vmcs.write_msr(index, value)
            },
            _ => return false,
        }
        true
    }

    fn run(&mut self, mem: &mut GuestMemory, limit: &RunLimit) -> Exit {
        self.failure = None;
        // A string I/O element completes before the next exit or not at all.
        self.string_op = None;
        if let Some(store) = self.ins_store.take() {
            // The destination was RAM when the element exited; if the core has changed
            // the map since, the store is dropped (as in the emulator backend).
            let _ = store.write(mem);
        }
        if let Err(f) = self.ensure_ept(mem) {
            return self.fail(f);
        }
        if let Some(op) = self.string_mmio.take() {
            // The core completed the string instruction's MMIO access: its elements go
            // on, without entering the guest, until the next access or the batch's end.
            if let Some(exit) = self.step_string_mmio(mem, op) {
                return exit;
            }
        }
        if core::mem::take(&mut self.step_completed) && self.guest_debug.single_step {
            return Exit::Exception {
                vector: DB,
                error_code: None,
            };
        }
        let now = self.vmcs.tsc();
        self.anchor_clock(limit, now);
        let deadline = self.run_deadline(limit, now);
        loop {
            self.preemption_timer(deadline);
            if self.pdptes_stale {
                self.load_pdptes(mem);
            }
            self.arm_step();
            let entered = self.enter();
            self.disarm_step();
            if let Err(e) = entered {
                self.failure = Some(VmxFailure::Vmcs(e));
                return instruction_failure(e);
            }
            match VectoringEvent::read(&self.vmcs) {
                Ok(Some(event)) => self.pending = Some(event.reinjection()),
                Ok(None) => {}
                Err(e) => return self.fail(VmxFailure::Decode(e)),
            }
            let exit = match self.decoder.decode(&self.vmcs, &self.gprs) {
                Ok(exit) => exit,
                Err(e) => return self.fail(VmxFailure::Decode(e)),
            };
            // What a skip of this exit's instruction raises after it (the backend's own
            // handlers skip some before the match below returns).
            self.completing = Completing {
                step: !matches!(exit, VmxExit::Core(Exit::Hlt)),
                io: None,
            };
            let exit = match exit {
                VmxExit::Core(exit) => exit,
                VmxExit::Backend(exit) => match self.handle_backend_exit(mem, exit) {
                    Some(exit) => exit,
                    None => continue,
                },
            };
            if let Exit::Io {
                port,
                size,
                direction,
                ..
            } = exit
            {
                if direction == Direction::Read {
                    self.pio_in_size = size;
                }
                self.completing.io = Some((port, size));
            }
            return exit;
        }
    }

    fn skip_emulated_instruction(&mut self) {
        self.step_completed = self.guest_debug.single_step;
        if let Some(element) = self.string_op.take() {
            if !element.advance(self) {
                // REP with a count left: RIP stays, the next entry runs the next element
                // (after the element's debug traps, as the processor takes them).
                self.debug_traps_after_skip();
                return;
            }
        }
        let len = self.read(fields::VM_EXIT_INSTRUCTION_LEN);
        let rip = self.rip().wrapping_add(len);
        self.set_rip(rip);
        self.clear_interrupt_shadow();
        self.debug_traps_after_skip();
    }

    fn complete_pio_in(&mut self, value: u32) {
        if let Some(element) = self.string_op {
            if element.is_input() {
                self.ins_store = Some(element.ins_store(value));
            }
            self.skip_emulated_instruction();
            return;
        }
        let rax = self.gprs[Gpr::Rax as usize];
        self.gprs[Gpr::Rax as usize] = match self.pio_in_size {
            1 => (rax & !0xff) | u64::from(value & 0xff),
            2 => (rax & !0xffff) | u64::from(value & 0xffff),
            // A 32-bit IN zero-extends into RAX.
            _ => u64::from(value),
        };
        self.skip_emulated_instruction();
    }

    fn complete_mmio(&mut self, read: Option<u64>) {
        if let Some(op) = self.string_mmio.as_mut() {
            op.complete(read);
            return;
        }
        // Without a decoded MMIO instruction there is nothing to retire.
        let Some(insn) = self.mmio.take() else {
            return;
        };
        if let (Some(value), Some(dest)) = (read, insn.dest) {
            let old = self.gpr(dest.reg);
            self.set_gpr(dest.reg, dest.merge(old, value, insn.size));
        }
        // The exit instruction length is undefined for EPT violations: use the decoded one.
        let rip = self.rip().wrapping_add(u64::from(insn.len));
        self.set_rip(rip);
        self.clear_interrupt_shadow();
        // A move to or from MMIO single-steps as any other (it has no port).
        self.completing = Completing::INSTRUCTION;
        self.debug_traps_after_skip();
        self.step_completed = self.guest_debug.single_step;
    }

    fn interrupt_shadow(&self) -> bool {
        self.read(fields::GUEST_INTERRUPTIBILITY_STATE) & (BLOCKING_BY_STI | BLOCKING_BY_MOV_SS)
            != 0
    }

    fn set_interrupt_shadow(&mut self, shadow: bool) {
        let state = self.read(fields::GUEST_INTERRUPTIBILITY_STATE)
            & !(BLOCKING_BY_STI | BLOCKING_BY_MOV_SS);
        // Blocking by STI requires RFLAGS.IF = 1 at entry: use MOV SS blocking
        // otherwise.
        let bit = if self.rflags() & RFLAGS_IF != 0 {
            BLOCKING_BY_STI
        } else {
            BLOCKING_BY_MOV_SS
        };
        self.write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            if shadow { state | bit } else { state },
        );
    }

    fn interrupt_allowed(&self) -> bool {
        self.pending.is_none()
            && !self.debug_trap_pending()
            && self.rflags() & RFLAGS_IF != 0
            && !self.interrupt_shadow()
    }

    fn nmi_allowed(&self) -> bool {
        self.pending.is_none()
            && !self.debug_trap_pending()
            && self.read(fields::GUEST_INTERRUPTIBILITY_STATE)
                & (BLOCKING_BY_NMI | BLOCKING_BY_MOV_SS)
                == 0
    }

    fn inject_event(&mut self, event: Event) {
        // An event re-injected after an interrupted delivery goes first; the core queues
        // new ones only when `event_pending` is false.
        if self.pending.is_some() {
            return;
        }
        let protected = self.read(fields::GUEST_CR0) & CR0_PE != 0;
        if let Event::Exception { vector, .. } = event {
            // The processor sets RF in the RFLAGS image a fault pushes (SDM 3A
            // 17.3.1.1), but not for an injected one: set it first, as KVM does, so the
            // guest sees the frame silicon would have pushed. Real mode pushes 16 bits.
            if protected && opsvisor_core::arch::exception_is_fault(vector) {
                let rflags = self.read(fields::GUEST_RFLAGS) | RFLAGS_RF;
                self.write(fields::GUEST_RFLAGS, rflags);
            }
        }
        match EntryEvent::from_event(
            event,
            protected,
            self.controls.features.any_exception_error_code,
        ) {
            Ok(entry) => self.pending = Some(entry),
            Err(e) => self.failure = Some(VmxFailure::Inject(e)),
        }
    }

    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn enable_irq_window(&mut self, enable: bool) {
        self.set_proc_bit(proc_based::INTERRUPT_WINDOW_EXITING, enable);
    }

    fn set_pause_exiting(&mut self, on: bool) {
        // Without the control PAUSE runs in the guest, and the turn ends at its
        // deadline instead.
        if self.caps.proc.allows(proc_based::PAUSE_EXITING) {
            self.set_proc_bit(proc_based::PAUSE_EXITING, on);
        }
    }

    fn enable_nmi_window(&mut self, enable: bool) {
        if self.controls.features.nmi_window {
            self.set_proc_bit(proc_based::NMI_WINDOW_EXITING, enable);
        }
    }

    fn flush_tlb_all(&mut self) {
        if self.eptp == 0 {
            // No EPT hierarchy loaded yet: nothing cached for this guest.
            return;
        }
        let kind = self
            .controls
            .features
            .invept
            .unwrap_or(InveptType::AllContext);
        // SAFETY: a non-zero EPTP means EPT is in use, so the processor has INVEPT.
        if let Err(e) = unsafe { self.vmcs.invept(kind, self.eptp) } {
            self.vmcs_error.get_or_insert(e);
        }
    }

    fn fpu_state(&self) -> Option<FxsaveArea> {
        // Zeroed first: FXSAVE leaves the reserved bytes as they are.
        let mut area = FxsaveArea::zeroed();
        // SAFETY: this vCPU's processor is one `enable` set up, with CR0.EM/TS clear
        // in the host, or a stand-in.
        unsafe { self.vmcs.fxsave(&mut area) };
        Some(area)
    }

    fn set_fpu_state(&mut self, state: &FxsaveArea) -> Result<(), FpuStateError> {
        // FXRSTOR would raise #GP(0) in the host for MXCSR bits this processor lacks
        // (DAZ on early SSE processors): check against its own MXCSR_MASK first.
        let mut current = FxsaveArea::zeroed();
        // SAFETY: as in `fpu_state`.
        unsafe { self.vmcs.fxsave(&mut current) };
        state.check_mxcsr(current.effective_mxcsr_mask())?;
        // SAFETY: as in `fpu_state`, and MXCSR was just checked against MXCSR_MASK;
        // the x87/SSE state belongs to the guest, the host code never uses it.
        unsafe { self.vmcs.fxrstor(state) };
        Ok(())
    }
}
