//! The SVM vCPU: the VMCB it runs, VMRUN and #VMEXIT through [`SvmProcessor`], and
//! `impl X86Ops for SvmVcpu`.
//!
//! One vCPU per processor: [`SvmVcpu::enable`] turns SVM on and sets up a VMCB whose
//! state save area holds the guest's registers but RBX..R15, which live in
//! [`SvmVcpu`] and are swapped by the world switch (RAX is copied between the two
//! around VMRUN). CR2, the segments, the SYSCALL and SYSENTER MSRs are in the VMCB;
//! TSC_AUX and the x87/MMX/SSE registers, which VMRUN does not switch, are kept in the
//! processor (the host never uses them).
//!
//! `SvmVcpu` is generic over the processor for one reason: [`crate::replay::ReplayVmcb`]
//! implements [`SvmProcessor`] on an in-memory VMCB that replays scripted exits, so the
//! host can run and benchmark the exit-handling half of [`X86Ops::run`] without AMD-V.
//! The hardware path is the same code, monomorphised for [`HardwareSvm`].

use crate::asid::AsidAllocator;
use crate::bitmaps::{
    Iopm, Msrpm, MSR_CSTAR, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_SFMASK,
    MSR_STAR, MSR_SYSENTER_CS, MSR_SYSENTER_EIP, MSR_SYSENTER_ESP,
};
use crate::caps::SvmCaps;
use crate::consistency::{self, Inconsistency};
use crate::enable::{EnableError, EFER_SVME};
use crate::event::{event_injection, reinjection, EventInfo, InjectError, InvalidExitIntInfo};
use crate::exits::{
    code, exit_code, invalid_opcode, retires_instruction, BackendExit, ControlRegister, CrAccess,
    CrOperand, DecodeError, ExitDecoder, Gprs, NestedPageFault, StringIo, SvmExit,
};
use crate::hardware::{HardwareSvm, SvmHost};
use crate::intercepts::{Intercepts, CR4_WRITE};
use crate::page::HostPhys;
use crate::state::{read_segment, write_guest_defaults, write_segment};
use crate::vmcb::fields::{self, clean, misc1, misc3, tlb_control, vintr, Field, NP_ENABLE};
use crate::vmcb::{VmcbAccess, VmcbError};
use alloc::rc::Rc;
use core::cell::RefCell;
use iced_x86::{Code, Decoder, DecoderOptions, Register};
use opsvisor_core::arch::{ResetState, PAT_DEFAULT};
use opsvisor_core::cpuid::{CpuidPolicy, Feature};
use opsvisor_core::emulate::debug_trap::{self, Completing, DebugState};
use opsvisor_core::emulate::mmio::{self, MmioInstruction};
use opsvisor_core::emulate::string_io::{self, Element, InsStore, StringIoError};
use opsvisor_core::emulate::strings::{self, StringMmio};
use opsvisor_core::emulate::{code_bitness, fetch_instruction, instruction_length};
use opsvisor_core::exit::Direction;
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::mmu::slat::{PageSizes, SlatError, SlatFormat, SlatTables};
use opsvisor_core::mmu::walk::PagingRegs;
use opsvisor_core::ops::{
    DebugRegs, DescriptorTable, Event, Gpr, GuestDebug, ResetKind, RunLimit, SegReg, X86Ops,
};
use opsvisor_core::{Exit, GuestMemory};

pub use crate::hardware::HostTimer;

/// What [`SvmVcpu`] needs from the processor besides the VMCB.
///
/// [`HardwareSvm`] executes the instructions; [`crate::replay::ReplayVmcb`] plays
/// scripted exits back on the host (tests and benchmarks of the exit path).
pub trait SvmProcessor: VmcbAccess {
    /// VMRUN with the guest's general registers from `gprs` (RAX and RSP are the
    /// VMCB's); returns at the next #VMEXIT with `gprs` updated. `timer_ticks`: host
    /// TSC ticks after which the host timer (if any) ends the run.
    ///
    /// # Safety
    ///
    /// On hardware: the VMCB is fully set up (intercepts that keep the host's events,
    /// nested paging that maps guest RAM alone, the permission maps), so that the guest
    /// cannot reach host memory and the #VMEXIT returns here.
    unsafe fn run(&mut self, gprs: &mut Gprs, timer_ticks: Option<u64>);

    /// Put `cr2` in the processor's CR2 before the next VMRUN. VMRUN loads the VMCB's
    /// CR2 itself, but Bochs 2.7 reads the field and drops it (its `SvmEnterGuest`), so
    /// the guest would run with the CR2 its last #PF left; between #VMEXIT and VMRUN the
    /// processor's CR2 is the guest's anyway (VMRUN does not switch the host's, which
    /// the host never uses).
    ///
    /// # Safety
    ///
    /// CPL 0 (as everything here).
    unsafe fn load_cr2(&mut self, cr2: u64);

    /// INVLPGA: drop the translation of `gva` tagged with `asid`.
    ///
    /// # Safety
    ///
    /// EFER.SVME is set (as it is once the processor exists).
    unsafe fn invlpga(&mut self, gva: u64, asid: u32);

    /// RDMSR of an MSR whose guest value lives in the processor (TSC_AUX).
    ///
    /// # Safety
    ///
    /// The MSR exists on this processor.
    unsafe fn read_msr(&self, index: u32) -> u64;

    /// WRMSR of such an MSR.
    ///
    /// # Safety
    ///
    /// The MSR exists, `value` is valid for it, and it affects nothing the host relies
    /// on.
    unsafe fn write_msr(&mut self, index: u32, value: u64);

    /// The host's time-stamp counter.
    fn tsc(&self) -> u64;

    /// Debug register DR`n` (0-3) of the processor: between runs it holds the guest's
    /// value, since VMRUN switches only DR6 and DR7 (they are in the VMCB) and the host
    /// code never uses the debug registers.
    ///
    /// # Safety
    ///
    /// CPL 0; `n` is 0-3.
    unsafe fn read_dr(&self, n: u8) -> u64;

    /// Load DR`n` (0-3) for the guest.
    ///
    /// # Safety
    ///
    /// As for [`SvmProcessor::read_dr`]. The host enables no breakpoint (its DR7, which
    /// #VMEXIT restores from the host save area, is 0x400), so the addresses affect only
    /// the guest.
    unsafe fn write_dr(&mut self, n: u8, value: u64);

    /// FXSAVE64 of the processor's x87/MMX/SSE state (the guest's between runs: VMRUN
    /// does not switch it and the host code never uses it) into `area`.
    ///
    /// # Safety
    ///
    /// CR0.EM and CR0.TS are clear in the host.
    unsafe fn fxsave(&self, area: &mut FxsaveArea);

    /// FXRSTOR64 of the x87/MMX/SSE state from `area`.
    ///
    /// # Safety
    ///
    /// As for [`SvmProcessor::fxsave`], and MXCSR in `area` sets no bit outside the
    /// processor's MXCSR_MASK.
    unsafe fn fxrstor(&mut self, area: &FxsaveArea);
}

/// What the backend needs from the host.
#[derive(Clone, Copy, Debug)]
pub struct SvmConfig {
    /// Host virtual to physical translation of heap memory.
    pub to_phys: HostPhys,
    /// The host TSC frequency in Hz (for guest RDTSC and the run's deadline).
    pub tsc_hz: u64,
    /// The host timer that ends a run at core's deadline, if the host provides one.
    pub timer: Option<HostTimer>,
    /// RDMSR that returns `None` instead of faulting when the MSR does not exist
    /// (VM_CR raises #GP on Bochs); only [`SvmVcpu::enable`] calls it.
    pub probe_msr: fn(u32) -> Option<u64>,
}

/// Why the last run ended in [`Exit::EmulationFailure`] or [`Exit::EntryFailed`], for
/// the host's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmFailure {
    /// An exit the backend cannot handle.
    Unhandled(BackendExit),
    /// The exit information did not decode.
    Decode(DecodeError),
    /// A VMCB write was refused (a backend bug).
    Vmcb(VmcbError),
    /// The nested page tables could not be built.
    Npt(SlatError),
    /// An event could not be encoded for injection.
    Inject(InjectError),
    /// EXITINTINFO did not decode.
    ExitIntInfo(InvalidExitIntInfo),
    /// An INS/OUTS element could not be completed (MMIO operand, undecodable).
    StringIo(StringIoError),
    /// The length of the intercepted instruction at `rip` is unknown (no NRIP save,
    /// and the bytes there did not decode).
    InstructionLength {
        /// Guest RIP.
        rip: u64,
        /// The control registers the instruction was fetched with: CR0, CR3, CR4, EFER.
        paging: [u64; 4],
    },
    /// VMRUN refused the VMCB (VMEXIT_INVALID); the consistency check that fails, or
    /// `None` when every check the APM lists passes.
    Invalid(Option<Inconsistency>),
}

impl core::fmt::Display for SvmFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SvmFailure::Invalid(Some(why)) => write!(f, "VMRUN refused the VMCB: {why}"),
            SvmFailure::Invalid(None) => f.write_str(
                "VMRUN refused the VMCB (VMEXIT_INVALID), though every consistency check of the APM passes",
            ),
            SvmFailure::Decode(e) => write!(f, "{e}"),
            SvmFailure::Vmcb(e) => write!(f, "{e}"),
            SvmFailure::Npt(e) => write!(f, "nested page tables: {e}"),
            SvmFailure::InstructionLength { rip, paging } => write!(
                f,
                "the intercepted instruction at rip {rip:#x} did not decode (no NRIP save; fetched with CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x})",
                paging[0], paging[1], paging[2], paging[3]
            ),
            other => write!(f, "{other:?}"),
        }
    }
}

/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.RF.
const RFLAGS_RF: u64 = 1 << 16;
const CR0_PE: u64 = 1;
const CR0_TS: u64 = 1 << 3;
const CR0_PG: u64 = 1 << 31;
/// CR0 bits whose change flushes the TLB (PG, WP, CD) or changes translation.
const CR0_PAGING_BITS: u64 = CR0_PG | (1 << 16) | (1 << 30) | CR0_PE;
/// CR4 bits whose change flushes the TLB: PSE, PAE, PGE, PCIDE, SMEP, SMAP, PKE, LA57.
const CR4_PAGING_BITS: u64 =
    (1 << 4) | (1 << 5) | (1 << 7) | (1 << 12) | (1 << 17) | (1 << 20) | (1 << 21) | (1 << 22);
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// IA32_PAT.
const MSR_PAT: u32 = 0x277;
/// IA32_TSC_AUX.
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// Longest stretch the guest runs without the core looking at the clock.
const MAX_SLICE_NS: u64 = 10_000_000;
/// #DB, #UD, #GP.
const DB: u8 = 1;
/// #BP.
const BP: u8 = 3;
const UD: u8 = 6;
const GP: u8 = 13;
/// CR4.PAE, CR4.LA57, CR4.PCIDE.
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_PCIDE: u64 = 1 << 17;
/// DR6.B0-B3 and DR6.BS as a #DB reports them (see [`debug_trap`]); DR6 bit 12 is
/// reserved and reads as 0, so the pending-debug format's "enabled breakpoint" bit is
/// not written there.
const DR6_TRAP_BITS: u64 = debug_trap::B | debug_trap::BS;
/// DR7.GD, which delivering a #DB clears.
const DR7_GD: u64 = 1 << 13;
/// DR6 bits software can write (B0-B3, BD, BS, BT); the others read as the processor
/// fixes them.
const DR6_WRITABLE: u64 = 0xe00f;
/// DR7 bits software can write (L0-G3, LE, GE, GD, the R/W and LEN fields); bit 10
/// reads as 1, the others as 0.
const DR7_WRITABLE: u64 = 0xffff_23ff;
/// The VMCB exit code of VMEXIT_INVALID as core reports it (its low 32 bits).
pub const ENTRY_FAILED_INVALID: u32 = u32::MAX;

/// What the vCPU tracks about NMIs, which SVM does not (without vNMI): an injected NMI
/// blocks further NMIs until the guest's IRET, and the window opens once that IRET has
/// run (KVM's IRET intercept and single step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NmiState {
    /// An injected NMI's handler has not returned yet.
    masked: bool,
    /// Core asked for [`Exit::NmiWindow`].
    window: bool,
    /// Stepping over the IRET: the guest's RFLAGS and DR6 before the step.
    stepping: Option<(u64, u64)>,
}

/// The SVM vCPU, on the processor ([`HardwareSvm`], the default) or, for host tests
/// and benchmarks, on [`crate::replay::ReplayVmcb`].
pub struct SvmVcpu<P: SvmProcessor = HardwareSvm> {
    /// Guest RAX..R15 in encoding order (RAX mirrored from the VMCB around VMRUN; the
    /// RSP slot is unused: RSP is in the VMCB).
    gprs: Gprs,
    cpu: P,
    caps: SvmCaps,
    decoder: ExitDecoder,
    /// The intercepts as currently written.
    intercepts: Intercepts,
    /// The processor's ASIDs, shared by every vCPU on it.
    asids: Rc<RefCell<AsidAllocator>>,
    asid: u32,
    /// The allocator's generation `asid` is of.
    asid_generation: u64,
    /// The TLB control for the next VMRUN.
    tlb_control: u64,
    /// Clean bits to clear at the next VMRUN (fields written since the last one).
    dirty: u32,
    /// CR2 was written through the backend since the last VMRUN (see
    /// [`SvmProcessor::load_cr2`]).
    cr2_written: bool,
    /// The event to inject at the next VMRUN.
    pending: Option<EventInfo>,
    /// Size of the port read the core is completing.
    pio_in_size: u8,
    /// Length of the instruction the last exit intercepted.
    insn_len: u8,
    /// What the instruction the last exit intercepted raises when it is skipped: the
    /// single-step trap (every one but HLT, whose halt ends with the interrupt the core
    /// delivers, as on the other backends) and the I/O breakpoints of its port access.
    completing: Completing,
    /// The MMIO instruction the core is completing.
    mmio: Option<MmioInstruction>,
    /// The string instruction on MMIO in progress: its MMIO access is the one the core
    /// is completing, and the next `run` goes on with it before entering the guest (see
    /// [`opsvisor_core::emulate::strings`]).
    string_mmio: Option<StringMmio>,
    /// The INS/OUTS element the core is completing.
    string_op: Option<Element>,
    /// A completed INS element's value, stored into guest memory before the next VMRUN.
    ins_store: Option<InsStore>,
    npt: Option<SlatTables>,
    npt_map_id: u64,
    msrpm: Msrpm,
    iopm: Iopm,
    config: SvmConfig,
    irq_window: bool,
    nmi: NmiState,
    /// Guest TSC as of host TSC `entry_host_tsc` (see `anchor_clock`).
    entry_guest_tsc: u64,
    /// Core's clock reading that `entry_guest_tsc` was anchored for.
    reading: u64,
    entry_host_tsc: u64,
    tsc_anchored: bool,
    last_guest_tsc: u64,
    /// RIP, RSP, RAX and RFLAGS as written before the last VMRUN: both test machines
    /// overwrite them with the host's after VMEXIT_INVALID.
    before_run: [u64; 4],
    vmcb_error: Option<VmcbError>,
    failure: Option<SvmFailure>,
    /// What a debugger asked for ([`X86Ops::set_guest_debug`]).
    guest_debug: GuestDebug,
    /// While a debugger's single step runs (on RFLAGS.TF, hidden from the guest as KVM
    /// hides it): the guest's own TF, put back at the exit.
    step_tf: Option<u64>,
    /// The instruction of a debugger's single step was completed by the core: the next
    /// run stops at once.
    step_completed: bool,
    /// The CR4 bits the guest's CPU model lets it set ([`X86Ops::set_cpuid`]).
    cr4_allowed: u64,
    /// The model offers RDTSCP (the intercepted RDTSCP raises #UD otherwise).
    rdtscp_offered: bool,
}

impl<P: SvmProcessor> core::fmt::Debug for SvmVcpu<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SvmVcpu")
            .field("asid", &self.asid)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl SvmVcpu<HardwareSvm> {
    /// Turn SVM on and set up one vCPU: [`SvmHost::enable`] and [`SvmHost::new_vcpu`]
    /// (the host's part lives as long as the vCPU).
    ///
    /// # Safety
    ///
    /// As for [`SvmHost::enable`].
    pub unsafe fn enable(config: SvmConfig) -> Result<SvmVcpu<HardwareSvm>, EnableError> {
        // SAFETY: the caller's contract is `SvmHost::enable`'s.
        unsafe { SvmHost::enable(config) }?.new_vcpu()
    }

    /// SVM on the processor this vCPU runs on (to make more vCPUs on it).
    pub fn host(&self) -> SvmHost {
        self.cpu.host(self.caps, self.config)
    }
}

impl<P: SvmProcessor> SvmVcpu<P> {
    /// A vCPU around `cpu`, whose VMCB the caller sets up next with `setup`.
    /// `asids` is the processor's allocator, shared with the other vCPUs on it.
    pub(crate) fn assemble(
        cpu: P,
        caps: SvmCaps,
        config: SvmConfig,
        asids: Rc<RefCell<AsidAllocator>>,
    ) -> Result<SvmVcpu<P>, EnableError> {
        crate::enable::check_features(&caps)?;
        // A wrap here is caught by the first VMRUN's generation check (and flushes).
        let (asid, asid_generation) = {
            let mut pool = asids.borrow_mut();
            (pool.allocate().asid, pool.generation())
        };
        Ok(SvmVcpu {
            gprs: [0; 16],
            cpu,
            caps,
            decoder: ExitDecoder::new(caps.features.decode_assists()),
            intercepts: Intercepts::BASE,
            asids,
            asid,
            asid_generation,
            tlb_control: tlb_control::FLUSH_ALL,
            dirty: clean::ALL,
            cr2_written: true,
            pending: None,
            pio_in_size: 1,
            insn_len: 0,
            completing: Completing::default(),
            mmio: None,
            string_mmio: None,
            string_op: None,
            ins_store: None,
            npt: None,
            npt_map_id: 0,
            msrpm: Msrpm::new(),
            iopm: Iopm::new(),
            config,
            irq_window: false,
            nmi: NmiState::default(),
            entry_guest_tsc: 0,
            reading: 0,
            entry_host_tsc: 0,
            tsc_anchored: false,
            last_guest_tsc: 0,
            before_run: [0; 4],
            vmcb_error: None,
            failure: None,
            guest_debug: GuestDebug::default(),
            step_tf: None,
            step_completed: false,
            cr4_allowed: caps.cr4_valid,
            rdtscp_offered: caps.rdtscp,
        })
    }

    /// Write the control area (intercepts, maps, ASID, virtual-interrupt masking,
    /// nested paging) and the guest defaults, then reset to the power-on state.
    pub(crate) fn setup(&mut self) -> Result<(), VmcbError> {
        let phys = self.config.to_phys;
        self.intercepts.write(&mut self.cpu)?;
        self.cpu
            .write(fields::IOPM_BASE_PA, phys(self.iopm.addr()))?;
        self.cpu
            .write(fields::MSRPM_BASE_PA, phys(self.msrpm.addr()))?;
        self.cpu.write(fields::TSC_OFFSET, 0)?;
        self.cpu.write(fields::GUEST_ASID, self.asid.into())?;
        self.cpu.write(fields::VINTR, vintr::V_INTR_MASKING)?;
        self.cpu.write(fields::NP_CONTROL, NP_ENABLE)?;
        self.cpu.write(fields::VIRT_EXT, 0)?;
        self.cpu.write(fields::PAUSE_FILTER_COUNT, 0)?;
        self.cpu.write(fields::PAUSE_FILTER_THRESHOLD, 0)?;
        write_guest_defaults(&mut self.cpu)?;
        self.vcpu_reset(ResetKind::PowerOn);
        self.vmcb_error.take().map_or(Ok(()), Err)
    }

    /// The host-virtual address of the MSR permission map.
    pub(crate) fn msrpm_addr(&self) -> u64 {
        self.msrpm.addr()
    }

    /// The host-virtual address of the I/O permission map.
    pub(crate) fn iopm_addr(&self) -> u64 {
        self.iopm.addr()
    }

    /// The processor (or its stand-in) this vCPU runs on.
    pub fn processor(&self) -> &P {
        &self.cpu
    }

    /// The processor, mutable: only for stand-ins.
    pub(crate) fn processor_mut(&mut self) -> &mut P {
        &mut self.cpu
    }

    /// The capabilities.
    pub fn caps(&self) -> &SvmCaps {
        &self.caps
    }

    /// The guest's ASID.
    pub fn asid(&self) -> u32 {
        self.asid
    }

    /// Why the last run failed, if it did.
    pub fn last_failure(&self) -> Option<SvmFailure> {
        self.failure
    }

    /// The nested page tables, once built.
    pub fn nested_tables(&self) -> Option<&SlatTables> {
        self.npt.as_ref()
    }

    fn read(&self, field: Field) -> u64 {
        self.cpu.read(field)
    }

    fn write(&mut self, field: Field, value: u64) {
        self.dirty |= field.clean_bit();
        if let Err(e) = self.cpu.write(field, value) {
            self.vmcb_error.get_or_insert(e);
        }
    }

    fn fail(&mut self, failure: SvmFailure) -> Exit {
        self.failure = Some(failure);
        Exit::EmulationFailure { rip: self.rip() }
    }

    /// Retiring an instruction ends a STI or MOV SS interrupt shadow.
    fn clear_interrupt_shadow(&mut self) {
        if self.read(fields::INTERRUPT_SHADOW) & 1 != 0 {
            self.write(fields::INTERRUPT_SHADOW, 0);
        }
    }

    /// Set the bits of intercept vector 3 in `mask` to `on`.
    fn set_misc1(&mut self, mask: u32, on: bool) {
        let new = if on {
            self.intercepts.misc1 | mask
        } else {
            self.intercepts.misc1 & !mask
        };
        if new != self.intercepts.misc1 {
            self.intercepts.misc1 = new;
            self.write(fields::INTERCEPT_MISC1, new.into());
        }
    }

    /// Intercept exception `vector` or not.
    fn set_exception_intercept(&mut self, vector: u8, on: bool) {
        let bit = 1u32 << (vector & 31);
        let new = if on {
            self.intercepts.exceptions | bit
        } else {
            self.intercepts.exceptions & !bit
        };
        if new != self.intercepts.exceptions {
            self.intercepts.exceptions = new;
            self.write(fields::INTERCEPT_EXCEPTIONS, new.into());
        }
    }

    /// Ask for a TLB flush at the next VMRUN (the strongest one asked for wins).
    fn request_flush(&mut self, kind: u64) {
        self.tlb_control = match (self.tlb_control, kind) {
            (tlb_control::FLUSH_ALL, _) | (_, tlb_control::FLUSH_ALL) => tlb_control::FLUSH_ALL,
            (tlb_control::FLUSH_ASID, _) | (_, tlb_control::FLUSH_ASID) => tlb_control::FLUSH_ASID,
            (a, b) => a.max(b),
        };
    }

    /// A fresh ASID: the old one's translations are left behind (flushing all of them
    /// when the allocator wraps).
    fn new_asid(&mut self) {
        let (a, generation) = {
            let mut pool = self.asids.borrow_mut();
            (pool.allocate(), pool.generation())
        };
        self.asid = a.asid;
        self.asid_generation = generation;
        self.write(fields::GUEST_ASID, a.asid.into());
        if a.flush_all {
            self.request_flush(tlb_control::FLUSH_ALL);
        }
    }

    /// Make EFER.LMA follow EFER.LME and CR0.PG, as the processor does when software
    /// sets CR0.PG.
    fn sync_long_mode(&mut self) {
        let efer = self.read(fields::EFER);
        let lma = efer & EFER_LME != 0 && self.read(fields::CR0) & CR0_PG != 0;
        let new = if lma {
            efer | EFER_LMA
        } else {
            efer & !EFER_LMA
        };
        if new != efer {
            self.write(fields::EFER, new);
        }
    }

    /// (Re)build the nested page tables when the memory map changed; a new map gets a
    /// new ASID, so nothing cached for the old one is used.
    fn ensure_npt(&mut self, mem: &GuestMemory) -> Result<(), SvmFailure> {
        if self.npt.is_some() && self.npt_map_id == mem.map_id() {
            return Ok(());
        }
        let sizes = PageSizes {
            m2: true,
            g1: self.caps.pages_1g,
        };
        let tables = SlatTables::build(mem, SlatFormat::Npt, self.config.to_phys, sizes)
            .map_err(SvmFailure::Npt)?;
        self.write(fields::N_CR3, tables.root());
        self.npt = Some(tables);
        self.npt_map_id = mem.map_id();
        self.new_asid();
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
        let elapsed = self.cpu.tsc().wrapping_sub(self.entry_host_tsc);
        let tsc = self.entry_guest_tsc.wrapping_add(self.host_ns(elapsed));
        // Never step back (the core may hand an older clock reading at the next run).
        self.last_guest_tsc = self.last_guest_tsc.max(tsc);
        self.last_guest_tsc
    }

    /// Tie core's clock reading to the host TSC. Core refreshes [`RunLimit::tsc`] only
    /// when it reads its clock, so the same reading comes back for several runs: it is
    /// anchored to the host TSC of the run that first sees it. A new reading is older
    /// than the run that sees it by the time core spent between the two (an exit's
    /// handling: tens of microseconds under QEMU's TCG), so the guest's TSC, which ran on
    /// from the previous anchor meanwhile, is already past it: the guest's TSC carries
    /// on from where it is rather than go back to the reading and stand still (clamped)
    /// until the reading catches up, which a guest timing two timer ticks by RDTSC sees
    /// as no time passing between them.
    fn anchor_clock(&mut self, limit: &RunLimit, now: u64) {
        if !self.tsc_anchored || limit.tsc != self.reading {
            let ran_on = if self.tsc_anchored {
                let elapsed = now.wrapping_sub(self.entry_host_tsc);
                self.entry_guest_tsc.wrapping_add(self.host_ns(elapsed))
            } else {
                0
            };
            self.reading = limit.tsc;
            self.entry_guest_tsc = limit.tsc.max(ran_on);
            self.entry_host_tsc = now;
            self.tsc_anchored = true;
        }
    }

    /// The host TSC at which this run must give control back to the core: the core's
    /// next deadline, and at most [`MAX_SLICE_NS`] from now.
    fn run_deadline(&self, limit: &RunLimit, now: u64) -> u64 {
        let slice_end = now.saturating_add(self.host_ticks(MAX_SLICE_NS));
        match limit.deadline {
            // The deadline is on core's clock: count from its reading, anchored at
            // `entry_host_tsc` (the guest's TSC may be a little ahead of it).
            Some(d) => {
                let budget = d.saturating_sub(self.reading);
                slice_end.min(self.entry_host_tsc.saturating_add(self.host_ticks(budget)))
            }
            None => slice_end,
        }
    }

    /// One VMRUN and #VMEXIT.
    fn vmrun(&mut self, deadline: u64) -> Result<(), VmcbError> {
        let eventinj = self.pending.map_or(0, |e| e.0);
        self.write(fields::EVENTINJ, eventinj);
        let rax = self.gprs[Gpr::Rax as usize];
        self.write(fields::RAX, rax);
        // Another vCPU's allocation may have wrapped the processor's ASIDs: an ASID of
        // an older generation may now be another vCPU's, and the first VMRUN after the
        // wrap flushes them all.
        if self.asids.borrow().generation() != self.asid_generation {
            self.new_asid();
        }
        if self.asids.borrow_mut().take_flush() {
            self.request_flush(tlb_control::FLUSH_ALL);
        }
        if self.read(fields::TLB_CONTROL) != self.tlb_control {
            self.write(fields::TLB_CONTROL, self.tlb_control);
        }
        if self.caps.features.vmcb_clean() {
            let clean_bits = clean::ALL & !self.dirty;
            self.write(fields::VMCB_CLEAN, clean_bits.into());
        }
        if let Some(e) = self.vmcb_error.take() {
            return Err(e);
        }
        self.before_run = [
            self.read(fields::RIP),
            self.read(fields::RSP),
            rax,
            self.read(fields::RFLAGS),
        ];
        if self.cr2_written {
            let cr2 = self.read(fields::CR2);
            // SAFETY: CPL 0; CR2 holds only the last page-fault address.
            unsafe { self.cpu.load_cr2(cr2) };
            self.cr2_written = false;
        }
        let ticks = deadline.saturating_sub(self.cpu.tsc());
        // SAFETY: `setup` wrote the control area (intercepts, maps, ASID, nested paging
        // enabled) and `ensure_npt` loaded nested tables that map guest RAM alone.
        unsafe { self.cpu.run(&mut self.gprs, Some(ticks)) };
        self.gprs[Gpr::Rax as usize] = self.read(fields::RAX);
        self.dirty = 0;
        self.tlb_control = tlb_control::DO_NOTHING;
        // Delivered, or reported again in EXITINTINFO.
        self.pending = None;
        Ok(())
    }

    /// The debug work after an instruction the core completed (see
    /// [`opsvisor_core::emulate::debug_trap`]): RF is cleared, as completing an
    /// instruction clears it, and its single-step and I/O-breakpoint traps are raised
    /// before the next instruction. SVM has no pending-debug-exceptions field: the trap
    /// is a #DB injected at the next VMRUN, which sets neither DR6 nor DR7 as a #DB the
    /// processor raises does, so the backend writes them: B0-B3 become the breakpoints
    /// met, BS is added, and DR7.GD is cleared (as KVM does for the #DB it injects).
    /// RIP is already past the instruction, where a trap leaves it.
    fn debug_traps_after_skip(&mut self) {
        let done = core::mem::take(&mut self.completing);
        let rflags = self.read(fields::RFLAGS);
        if rflags & RFLAGS_RF != 0 {
            self.write(fields::RFLAGS, rflags & !RFLAGS_RF);
        }
        // While the backend steps over an IRET for the NMI window, TF is its own: the
        // guest's is the one it saved.
        let guest_rflags = self.nmi.stepping.map_or(rflags, |(saved, _)| saved);
        let dr7 = self.read(fields::DR7);
        // An event already queued (re-injected) goes first; the instruction's trap is
        // not raised over it, as in the emulator.
        if !done.may_trap(guest_rflags, dr7) || self.pending.is_some() {
            return;
        }
        let state = DebugState {
            dr: self.debug_regs().db,
            dr7,
            cr4: self.cr4(),
            rflags: guest_rflags,
            // IA32_DEBUGCTL is core's: the processor runs the guest without BTF, so it
            // single-steps every instruction, and so does this.
            debugctl: 0,
        };
        let bits = done.pending(&state) & DR6_TRAP_BITS;
        if bits == 0 {
            return;
        }
        let dr6 = self.read(fields::DR6);
        self.write(fields::DR6, (dr6 & !debug_trap::B) | bits);
        if dr7 & DR7_GD != 0 {
            self.write(fields::DR7, dr7 & !DR7_GD);
        }
        self.inject_event(Event::Exception {
            vector: DB,
            error_code: None,
        });
    }

    /// VMEXIT_INVALID: put back what the processor overwrote, find the failing check,
    /// and make the next VMRUN load everything again.
    fn invalid_vmcb(&mut self) -> Exit {
        let [rip, rsp, rax, rflags] = self.before_run;
        self.write(fields::RIP, rip);
        self.write(fields::RSP, rsp);
        self.write(fields::RAX, rax);
        self.write(fields::RFLAGS, rflags);
        self.gprs[Gpr::Rax as usize] = rax;
        self.dirty = clean::ALL;
        let why = consistency::check(&self.cpu, &self.caps).err();
        self.failure = Some(SvmFailure::Invalid(why));
        Exit::EntryFailed {
            reason: ENTRY_FAILED_INVALID,
            detail: why.map_or(0, Inconsistency::number),
        }
    }

    /// The control registers the processor translates guest-linear addresses with.
    fn paging_regs(&self) -> PagingRegs {
        PagingRegs {
            cr0: self.read(fields::CR0),
            cr3: self.read(fields::CR3),
            cr4: self.read(fields::CR4),
            efer: self.read(fields::EFER),
            // This backend does not offer protection keys (see `supported_cpuid`).
            pkru: 0,
        }
    }

    /// Whether MOV to CR4 of `value` raises #GP(0) (APM 3, MOV CRn; SDM 2, MOV CR): a
    /// bit of a feature the CPU model lacks, PAE cleared or LA57 changed in long mode,
    /// PCIDE set outside long mode or with CR3[11:0] not zero. The processor makes these
    /// checks for the MOV the guest executes; the backend makes them for the MOV it
    /// intercepted.
    fn cr4_faults(&self, value: u64) -> bool {
        let old = self.cr4();
        let long = self.read(fields::EFER) & EFER_LMA != 0;
        value & !self.cr4_allowed != 0
            || (long && value & CR4_PAE == 0)
            || (long && (value ^ old) & CR4_LA57 != 0)
            || (value & !old & CR4_PCIDE != 0 && (!long || self.cr3() & 0xfff != 0))
    }

    /// Intercept CR vector bits `mask` or not.
    fn set_cr_intercept(&mut self, mask: u32, on: bool) {
        let new = if on {
            self.intercepts.cr | mask
        } else {
            self.intercepts.cr & !mask
        };
        if new != self.intercepts.cr {
            self.intercepts.cr = new;
            self.write(fields::INTERCEPT_CR, new.into());
        }
    }

    /// Intercept vector 5 bits `mask` or not.
    fn set_misc3(&mut self, mask: u32, on: bool) {
        let new = if on {
            self.intercepts.misc3 | mask
        } else {
            self.intercepts.misc3 & !mask
        };
        if new != self.intercepts.misc3 {
            self.intercepts.misc3 = new;
            self.write(fields::INTERCEPT_MISC3, new.into());
        }
    }

    /// The instruction bytes at the guest's RIP: those decode assists fetched, or up to
    /// 15 read through the guest's page tables. The processor fetches them for #NPF and
    /// #PF exits only (APM vol. 2, 15.33.4); after any other exit the VMCB's bytes are
    /// left from an earlier one, so they are read from the guest.
    fn instruction_bytes(&self, mem: &mut GuestMemory, buf: &mut [u8; 15]) -> usize {
        let exit = self.read(fields::EXITCODE);
        let fetched_for_exit = exit == code::NPF
            || exit == code::EXCP0 + u64::from(crate::exits::exception::PAGE_FAULT);
        if self.caps.features.decode_assists() && fetched_for_exit {
            let low = self.read(fields::INSN_FETCHED).to_le_bytes();
            let high = self.read(fields::INSN_BYTES_HIGH).to_le_bytes();
            let n = usize::from(low[0] & 0xf).min(15);
            if n > 0 {
                for (i, slot) in buf.iter_mut().enumerate() {
                    *slot = if i < 7 { low[i + 1] } else { high[i - 7] };
                }
                return n;
            }
        }
        let paging = self.paging_regs();
        fetch_instruction(self, mem, &paging, buf)
    }

    /// The length of the instruction the exit intercepted: from NRIP save, from
    /// EXITINFO2 for I/O, or by decoding it. `None` when none of them gives it.
    fn intercepted_length(&self, mem: &mut GuestMemory, c: u64) -> Option<u8> {
        let rip = self.rip();
        let next = if c == code::IOIO {
            Some(self.read(fields::EXITINFO2))
        } else if self.caps.features.nrip_save() {
            Some(self.read(fields::NRIP))
        } else {
            None
        };
        if let Some(len) = next
            .map(|n| n.wrapping_sub(rip))
            .filter(|len| (1..=15).contains(len))
        {
            return Some(len as u8);
        }
        let mut bytes = [0u8; 15];
        let paging = self.paging_regs();
        let n = fetch_instruction(self, mem, &paging, &mut bytes);
        instruction_length(
            bytes.get(..n).unwrap_or(&[]),
            code_bitness(self),
            DecoderOptions::AMD,
        )
    }

    /// A nested page fault: an access to guest-physical memory that is not RAM. A data
    /// access by a plain move becomes core's MMIO exit, a string instruction is run by
    /// core's string emulation (its MMIO accesses core's MMIO exits); anything else ends
    /// the run.
    fn handle_npf(&mut self, mem: &mut GuestMemory, f: NestedPageFault) -> Option<Exit> {
        if f.misconfigured() {
            self.npt = None;
            return Some(self.fail(SvmFailure::Unhandled(BackendExit::NestedPageFault(f))));
        }
        let Some(direction) = f.direction() else {
            return Some(f.to_slat_violation());
        };
        if mem.is_ram(f.gpa, 1) {
            // RAM is always mapped: the tables are out of step with the map.
            self.npt = None;
            return Some(self.fail(SvmFailure::Unhandled(BackendExit::NestedPageFault(f))));
        }
        let mut bytes = [0u8; 15];
        let n = self.instruction_bytes(mem, &mut bytes);
        let gprs = self.gprs;
        let rsp = self.read(fields::RSP);
        let bitness = code_bitness(self);
        let decoded = mmio::decode(bytes.get(..n).unwrap_or(&[]), bitness, |r| match r {
            Gpr::Rsp => rsp,
            r => gprs[r as usize],
        });
        match decoded {
            Some(insn) if insn.direction == direction => {
                self.mmio = Some(insn);
                Some(Exit::Mmio {
                    gpa: f.gpa,
                    size: insn.size,
                    direction,
                    data: insn.data,
                })
            }
            Some(_) => Some(self.fail(SvmFailure::Unhandled(BackendExit::NestedPageFault(f)))),
            None => match strings::decode(bytes.get(..n).unwrap_or(&[]), bitness) {
                Some(op) => self.step_string_mmio(mem, StringMmio::new(op)),
                None => Some(self.fail(SvmFailure::Unhandled(BackendExit::NestedPageFault(f)))),
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

    /// INS/OUTS: one element to the core (see [`string_io`]).
    fn handle_string_io(&mut self, mem: &mut GuestMemory, exit: StringIo) -> Option<Exit> {
        let operand = match exit.operand() {
            Some(operand) => operand,
            None => {
                // Without decode assists the segment of OUTS is not reported, and QEMU
                // leaves out the address size: the instruction says both.
                let mut bytes = [0u8; 15];
                let n = self.instruction_bytes(mem, &mut bytes);
                let decoded = string_io::decode_operand(
                    bytes.get(..n).unwrap_or(&[]),
                    code_bitness(self),
                    exit.insn.direction,
                );
                match decoded {
                    Some(operand) => operand,
                    None => {
                        let rip = self.rip();
                        return Some(
                            self.fail(SvmFailure::StringIo(StringIoError::Undecodable { rip })),
                        );
                    }
                }
            }
        };
        let paging = self.paging_regs();
        match string_io::start(self, mem, &paging, &exit.insn, operand) {
            string_io::Start::Io(io, element) => {
                self.string_op = Some(element);
                Some(io)
            }
            string_io::Start::Retire => {
                self.skip_emulated_instruction();
                None
            }
            string_io::Start::Faulted => None,
            string_io::Start::Fail(e) => Some(self.fail(SvmFailure::StringIo(e))),
        }
    }

    /// The CR access the instruction at RIP makes, decoded: (write, GPR), or `None` for
    /// CLTS; `Err` when it is not a MOV CR or CLTS this backend emulates (LMSW is
    /// returned as a write of its register's low 16 bits through `lmsw`).
    fn decode_cr(&self, mem: &mut GuestMemory) -> Result<CrInsn, ()> {
        let mut bytes = [0u8; 15];
        let n = self.instruction_bytes(mem, &mut bytes);
        // AMD's decoding: LOCK MOV CR0 is MOV CR8 outside 64-bit mode.
        let mut decoder = Decoder::try_new(
            code_bitness(self),
            bytes.get(..n).unwrap_or(&[]),
            DecoderOptions::AMD,
        )
        .map_err(|_| ())?;
        if !decoder.can_decode() {
            return Err(());
        }
        let insn = decoder.decode();
        let gpr = |reg: Register| {
            let full = reg.full_register();
            full.is_gpr64()
                .then(|| full.number().checked_sub(Register::RAX.number()))
                .flatten()
                .and_then(Gpr::from_index)
        };
        match insn.code() {
            Code::Mov_cr_r64 | Code::Mov_cr_r32 => {
                gpr(insn.op1_register()).map(CrInsn::MovTo).ok_or(())
            }
            Code::Mov_r64_cr | Code::Mov_r32_cr => {
                gpr(insn.op0_register()).map(CrInsn::MovFrom).ok_or(())
            }
            Code::Clts => Ok(CrInsn::Clts),
            Code::Lmsw_rm16 if insn.op0_kind() == iced_x86::OpKind::Register => {
                gpr(insn.op0_register()).map(CrInsn::Lmsw).ok_or(())
            }
            _ => Err(()),
        }
    }

    /// MOV to or from CR0/CR3/CR4/CR8, CLTS and LMSW.
    fn handle_cr(&mut self, mem: &mut GuestMemory, access: CrAccess) -> Option<Exit> {
        let insn = match access.operand {
            CrOperand::Gpr(gpr) if access.write => CrInsn::MovTo(gpr),
            CrOperand::Gpr(gpr) => CrInsn::MovFrom(gpr),
            CrOperand::Decode => match self.decode_cr(mem) {
                Ok(insn) => insn,
                Err(()) => {
                    return Some(
                        self.fail(SvmFailure::Unhandled(BackendExit::ControlRegister(access))),
                    )
                }
            },
        };
        match insn {
            CrInsn::MovTo(gpr) => {
                let value = self.gpr(gpr);
                match access.cr {
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
                    // CR8 is the local APIC's TPR, which the core holds (and checks).
                    ControlRegister::Cr8 => {
                        return Some(Exit::Cr8 {
                            direction: Direction::Write,
                            gpr,
                        })
                    }
                }
            }
            CrInsn::MovFrom(gpr) => {
                let value = match access.cr {
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
            CrInsn::Clts => {
                let cr0 = self.cr0() & !CR0_TS;
                self.set_cr0(cr0);
            }
            CrInsn::Lmsw(gpr) => {
                // LMSW loads PE, MP, EM and TS, and cannot clear PE.
                let old = self.cr0();
                let source = self.gpr(gpr) & 0xf;
                self.set_cr0((old & !0xe) | source | (old & CR0_PE));
            }
        }
        self.skip_emulated_instruction();
        None
    }

    /// An IRET while an injected NMI blocks NMIs: they are unblocked once it has run;
    /// if core waits for the NMI window, step over the IRET to report it then.
    fn handle_iret(&mut self) {
        self.nmi.masked = false;
        self.set_misc1(misc1::IRET, false);
        if self.nmi.window {
            let rflags = self.read(fields::RFLAGS);
            self.nmi.stepping = Some((rflags, self.read(fields::DR6)));
            self.write(fields::RFLAGS, rflags | RFLAGS_TF | RFLAGS_RF);
            self.set_exception_intercept(DB, true);
        }
    }

    /// Whether the debugger's requests intercept #DB: its single step (on TF) or its
    /// breakpoints in DR0-DR3.
    fn debugger_intercepts_db(&self) -> bool {
        self.guest_debug.single_step || self.guest_debug.intercept_debug
    }

    /// Before a VMRUN of a debugger's single step: RFLAGS.TF, the guest's own kept aside
    /// (not while the NMI window's step over an IRET runs on TF already).
    fn arm_step(&mut self) {
        if self.guest_debug.single_step && self.nmi.stepping.is_none() {
            let rflags = self.read(fields::RFLAGS);
            self.step_tf = Some(rflags & RFLAGS_TF);
            self.write(fields::RFLAGS, rflags | RFLAGS_TF);
        }
    }

    /// After the VMRUN of a single step: the guest's own TF back.
    fn disarm_step(&mut self) {
        if let Some(tf) = self.step_tf.take() {
            let rflags = self.read(fields::RFLAGS);
            self.write(fields::RFLAGS, (rflags & !RFLAGS_TF) | tf);
        }
    }

    /// The #DB after the stepped IRET: undo the step; the NMI window is open.
    fn handle_step(&mut self) -> Option<Exit> {
        let (rflags, dr6) = self.nmi.stepping.take()?;
        self.set_exception_intercept(DB, self.debugger_intercepts_db());
        let now = self.read(fields::RFLAGS);
        let mut restored = now;
        if rflags & RFLAGS_TF == 0 {
            restored &= !RFLAGS_TF;
        }
        if rflags & RFLAGS_RF == 0 {
            restored &= !RFLAGS_RF;
        }
        self.write(fields::RFLAGS, restored);
        self.write(fields::DR6, dr6);
        Some(Exit::NmiWindow)
    }

    /// Whether the instruction an RDTSC exit intercepted is RDTSCP: QEMU's TCG checks
    /// the RDTSC intercept for both (its `helper_rdtscp` goes through `helper_rdtsc`), so
    /// RDTSCP arrives as exit code 0x6E there. RDTSC is two bytes (0F 31); only a longer
    /// instruction is decoded.
    fn rdtsc_exit_is_rdtscp(&self, mem: &mut GuestMemory) -> bool {
        if self.insn_len <= 2 {
            return false;
        }
        let mut bytes = [0u8; 15];
        let n = self.instruction_bytes(mem, &mut bytes);
        Decoder::try_new(
            code_bitness(self),
            bytes.get(..n).unwrap_or(&[]),
            DecoderOptions::AMD,
        )
        .is_ok_and(|mut d| d.can_decode() && d.decode().code() == Code::Rdtscp)
    }

    /// An intercepted #UD: a VMCALL at CS:RIP is core's hypercall, as VMMCALL is, with
    /// the instruction's length to retire it; anything else raises #UD in the guest
    /// as the processor would have. The bytes are read through the guest's page tables:
    /// decode assists give them only for #NPF and #PF.
    fn handle_invalid_opcode(&mut self, mem: &mut GuestMemory) -> Option<Exit> {
        let mut bytes = [0u8; 15];
        let paging = self.paging_regs();
        let n = fetch_instruction(self, mem, &paging, &mut bytes);
        let fetched = bytes.get(..n).unwrap_or(&[]);
        if let Some(len) = invalid_opcode::vmcall_length(fetched, code_bitness(self)) {
            self.insn_len = len;
            return Some(Exit::Hypercall);
        }
        self.inject_event(Event::Exception {
            vector: UD,
            error_code: None,
        });
        None
    }

    /// Handle an exit the core does not see; `Some` ends the run with that exit.
    fn handle_backend_exit(&mut self, mem: &mut GuestMemory, exit: BackendExit) -> Option<Exit> {
        let exit = if exit == BackendExit::Rdtsc && self.rdtsc_exit_is_rdtscp(mem) {
            BackendExit::Rdtscp
        } else {
            exit
        };
        match exit {
            BackendExit::NestedPageFault(f) => self.handle_npf(mem, f),
            // The host timer: core's deadline or the end of the slice.
            BackendExit::HostInterrupt => Some(Exit::Preempted),
            // The host took them at STGI: the core re-evaluates events and re-enters.
            BackendExit::HostNmi | BackendExit::HostSmi => Some(Exit::ExternalInterrupt),
            BackendExit::Init => None,
            BackendExit::ControlRegister(access) => self.handle_cr(mem, access),
            BackendExit::StringIo(s) => self.handle_string_io(mem, s),
            BackendExit::SvmInstruction { .. } | BackendExit::RefusedInstruction { .. } => {
                self.inject_event(Event::Exception {
                    vector: UD,
                    error_code: None,
                });
                None
            }
            BackendExit::Rdtscp if !self.rdtscp_offered => {
                self.inject_event(Event::Exception {
                    vector: UD,
                    error_code: None,
                });
                None
            }
            BackendExit::Rdtsc | BackendExit::Rdtscp => {
                let tsc = self.guest_tsc();
                self.gprs[Gpr::Rax as usize] = tsc & 0xffff_ffff;
                self.gprs[Gpr::Rdx as usize] = tsc >> 32;
                if exit == BackendExit::Rdtscp {
                    // SAFETY: RDTSCP exists on this processor (it exited), and with it
                    // TSC_AUX.
                    let aux = unsafe { self.cpu.read_msr(MSR_TSC_AUX) };
                    self.gprs[Gpr::Rcx as usize] = aux & 0xffff_ffff;
                }
                self.skip_emulated_instruction();
                None
            }
            BackendExit::Iret => {
                self.handle_iret();
                None
            }
            BackendExit::DebugException if self.nmi.stepping.is_some() => self.handle_step(),
            BackendExit::DebugException if self.debugger_intercepts_db() => Some(Exit::Exception {
                vector: DB,
                error_code: None,
            }),
            BackendExit::InvalidOpcode => self.handle_invalid_opcode(mem),
            BackendExit::Invalid => Some(self.invalid_vmcb()),
            other => Some(self.fail(SvmFailure::Unhandled(other))),
        }
    }
}

/// A decoded control-register instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrInsn {
    MovTo(Gpr),
    MovFrom(Gpr),
    Clts,
    Lmsw(Gpr),
}

impl<P: SvmProcessor> X86Ops for SvmVcpu<P> {
    fn name(&self) -> &'static str {
        "svm"
    }

    fn vcpu_reset(&mut self, kind: ResetKind) {
        self.gprs = [0; 16];
        // EDX holds the processor signature after reset.
        self.gprs[Gpr::Rdx as usize] = 0x600;
        self.write(fields::RSP, 0);
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
            self.write(fields::G_PAT, PAT_DEFAULT);
            // A new guest must not see the previous one's x87/SSE registers (KVM's
            // reset state; MXCSR 0x1F80 is within every MXCSR_MASK).
            let _ = self.set_fpu_state(&FxsaveArea::reset());
            for f in [
                fields::STAR,
                fields::LSTAR,
                fields::CSTAR,
                fields::SFMASK,
                fields::KERNEL_GS_BASE,
                fields::SYSENTER_CS,
                fields::SYSENTER_ESP,
                fields::SYSENTER_EIP,
            ] {
                self.write(f, 0);
            }
        }
        self.set_cr4(0);
        self.set_cr3(0);
        self.set_cr0(ResetState::CR0);
        self.set_cr2(0);
        self.write(fields::DR6, opsvisor_core::arch::DR6_DEFAULT);
        self.write(fields::DR7, opsvisor_core::arch::DR7_DEFAULT);
        self.write(fields::RIP, ResetState::RIP);
        self.write(fields::RFLAGS, ResetState::RFLAGS);
        self.write(fields::INTERRUPT_SHADOW, 0);
        // V_TPR (the guest's CR8) back to 0, no virtual interrupt pending.
        self.write(fields::VINTR, vintr::V_INTR_MASKING);
        self.irq_window = false;
        self.set_misc1(misc1::VINTR | misc1::IRET, false);
        self.set_exception_intercept(DB, false);
        self.nmi = NmiState::default();
        self.pending = None;
        self.string_op = None;
        self.ins_store = None;
        self.mmio = None;
        self.string_mmio = None;
        self.completing = Completing::default();
        // A new guest brings a new clock.
        self.tsc_anchored = false;
    }

    fn gpr(&self, reg: Gpr) -> u64 {
        match reg {
            Gpr::Rsp => self.read(fields::RSP),
            r => self.gprs[r as usize],
        }
    }

    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        match reg {
            Gpr::Rsp => self.write(fields::RSP, value),
            r => self.gprs[r as usize] = value,
        }
    }

    fn rip(&self) -> u64 {
        self.read(fields::RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        self.write(fields::RIP, rip);
    }

    fn rflags(&self) -> u64 {
        self.read(fields::RFLAGS)
    }

    fn set_guest_debug(&mut self, debug: GuestDebug) -> Result<(), &'static str> {
        self.guest_debug = debug;
        self.step_completed = false;
        let db = self.debugger_intercepts_db() || self.nmi.stepping.is_some();
        self.set_exception_intercept(DB, db);
        self.set_exception_intercept(BP, debug.intercept_breakpoints);
        Ok(())
    }

    fn set_rflags(&mut self, rflags: u64) {
        // Bit 1 is always 1; the reserved bits are 0.
        self.write(fields::RFLAGS, (rflags & 0x3f_7fd5) | 2);
    }

    fn segment(&self, seg: SegReg) -> opsvisor_core::ops::Segment {
        read_segment(&self.cpu, seg)
    }

    fn set_segment(&mut self, seg: SegReg, value: &opsvisor_core::ops::Segment) {
        let f = fields::segment(seg);
        self.dirty |= f.selector.clean_bit() | fields::CPL.clean_bit();
        if let Err(e) = write_segment(&mut self.cpu, seg, value) {
            self.vmcb_error.get_or_insert(e);
        }
    }

    fn cpl(&self) -> u8 {
        (self.read(fields::CPL) & 3) as u8
    }

    fn cr0(&self) -> u64 {
        self.read(fields::CR0)
    }

    fn set_cr0(&mut self, value: u64) {
        let old = self.read(fields::CR0);
        // CR0.ET is fixed to 1 on every processor with SVM.
        self.write(fields::CR0, value | (1 << 4));
        self.sync_long_mode();
        if (old ^ value) & CR0_PAGING_BITS != 0 {
            self.flush_tlb_current();
        }
    }

    fn cr2(&self) -> u64 {
        self.read(fields::CR2)
    }

    fn set_cr2(&mut self, value: u64) {
        self.write(fields::CR2, value);
        self.cr2_written = true;
    }

    fn cr3(&self) -> u64 {
        self.read(fields::CR3)
    }

    fn set_cr3(&mut self, value: u64) {
        self.write(fields::CR3, value);
        // A VMCB write of CR3 does not flush what the ASID cached, as MOV CR3 would.
        self.flush_tlb_current();
    }

    fn cr4(&self) -> u64 {
        self.read(fields::CR4)
    }

    fn set_cr4(&mut self, value: u64) {
        let old = self.read(fields::CR4);
        self.write(fields::CR4, value);
        if (old ^ value) & CR4_PAGING_BITS != 0 {
            self.flush_tlb_all();
        }
    }

    fn efer(&self) -> u64 {
        // SVME is the host's business: the guest never sees it.
        self.read(fields::EFER) & !EFER_SVME
    }

    fn set_efer(&mut self, value: u64) {
        let old = self.read(fields::EFER);
        self.write(fields::EFER, (value & !EFER_SVME) | EFER_SVME);
        if (old ^ value) & (EFER_NXE | EFER_LMA) != 0 {
            self.flush_tlb_current();
        }
    }

    fn gdt(&self) -> DescriptorTable {
        DescriptorTable {
            base: self.read(fields::GDTR.base),
            limit: self.read(fields::GDTR.limit) as u16,
        }
    }

    fn set_gdt(&mut self, table: DescriptorTable) {
        self.write(fields::GDTR.base, table.base);
        self.write(fields::GDTR.limit, table.limit.into());
    }

    fn idt(&self) -> DescriptorTable {
        DescriptorTable {
            base: self.read(fields::IDTR.base),
            limit: self.read(fields::IDTR.limit) as u16,
        }
    }

    fn set_idt(&mut self, table: DescriptorTable) {
        self.write(fields::IDTR.base, table.base);
        self.write(fields::IDTR.limit, table.limit.into());
    }

    /// What the guest can be given: the emulator's model (the core's emulation of the
    /// APIC, the timers and the MSRs is the same here) cut down to what this processor
    /// executes natively ([`CpuidPolicy::keep_host_features`] on its CPUID) and this
    /// backend switches: RDTSCP and RDPID need TSC_AUX, which the backend keeps in the
    /// processor for the guest; protection keys are not offered (VMRUN switches neither
    /// PKRU nor XCR0, and the backend's page walks have no PKRU), nor is XSAVE (XCR0 is not
    /// switched and the guest's x87/SSE state is kept with FXSAVE).
    fn supported_cpuid(&self) -> CpuidPolicy {
        let mut policy = CpuidPolicy::emulator();
        let leaves = self.caps.feature_leaves;
        policy.keep_host_features(|leaf, subleaf| leaves.cpuid(leaf, subleaf));
        if !self.caps.rdtscp {
            policy.set_feature(Feature::Rdtscp, false);
            policy.set_feature(Feature::Rdpid, false);
        }
        policy.set_feature(Feature::Pku, false);
        policy.set_feature(Feature::Xsave, false);
        // Core's IA32_ARCH_CAPABILITIES says "not affected" to every flaw it lists, true
        // of the emulator only (AMD processors have no such MSR in any case).
        policy.set_feature(Feature::ArchCapabilities, false);
        policy.sync_derived_leaves();
        policy
    }

    /// Offer the model `policy`: CR4 writes exit when the processor defines a CR4 bit the
    /// model does not allow (setting it raises #GP there), RDTSCP raises #UD without the
    /// model's RDTSCP, and INVPCID exits to raise #UD when the processor has it and the
    /// model does not. RDPID, and STAC and CLAC, cannot be intercepted: a processor that
    /// has them runs them for a model without them.
    fn set_cpuid(&mut self, policy: &CpuidPolicy) {
        self.cr4_allowed = policy.cr4_allowed();
        let narrower = self.caps.cr4_valid & !self.cr4_allowed != 0;
        self.set_cr_intercept(CR4_WRITE, narrower);
        self.rdtscp_offered = self.caps.rdtscp && policy.has_feature(Feature::Rdtscp);
        let host_invpcid = self.caps.feature_leaves.leaf7[1] & (1 << 10) != 0;
        self.set_misc3(
            misc3::INVPCID,
            host_invpcid && !policy.has_feature(Feature::Invpcid),
        );
    }

    fn debug_regs(&self) -> DebugRegs {
        // SAFETY: CPL 0 (the image's host) or a stand-in; indices 0-3.
        let dr = |n| unsafe { self.cpu.read_dr(n) };
        DebugRegs {
            db: [dr(0), dr(1), dr(2), dr(3)],
            dr6: self.read(fields::DR6),
            dr7: self.read(fields::DR7),
        }
    }

    fn set_debug_regs(&mut self, regs: &DebugRegs) {
        for (n, &value) in regs.db.iter().enumerate() {
            // SAFETY: CPL 0 or a stand-in, index 0-3; the host enables no breakpoint.
            unsafe { self.cpu.write_dr(n as u8, value) };
        }
        // The fixed bits as the processor keeps them: VMRUN's consistency checks refuse
        // a DR6 or DR7 with a bit set in its upper half.
        self.write(
            fields::DR6,
            (regs.dr6 & DR6_WRITABLE) | opsvisor_core::arch::DR6_DEFAULT,
        );
        self.write(
            fields::DR7,
            (regs.dr7 & DR7_WRITABLE) | opsvisor_core::arch::DR7_DEFAULT,
        );
    }

    fn get_msr(&self, index: u32) -> Option<u64> {
        Some(match index {
            MSR_FS_BASE => self.read(fields::FS.base),
            MSR_GS_BASE => self.read(fields::GS.base),
            MSR_KERNEL_GS_BASE => self.read(fields::KERNEL_GS_BASE),
            MSR_STAR => self.read(fields::STAR),
            MSR_LSTAR => self.read(fields::LSTAR),
            MSR_CSTAR => self.read(fields::CSTAR),
            MSR_SFMASK => self.read(fields::SFMASK),
            MSR_SYSENTER_CS => self.read(fields::SYSENTER_CS),
            MSR_SYSENTER_ESP => self.read(fields::SYSENTER_ESP),
            MSR_SYSENTER_EIP => self.read(fields::SYSENTER_EIP),
            MSR_PAT => self.read(fields::G_PAT),
            // Not switched by VMRUN: the guest's value lives in the processor.
            // SAFETY: TSC_AUX exists with RDTSCP.
            MSR_TSC_AUX if self.caps.rdtscp => unsafe { self.cpu.read_msr(index) },
            _ => return None,
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        let field = match index {
            MSR_FS_BASE => fields::FS.base,
            MSR_GS_BASE => fields::GS.base,
            MSR_KERNEL_GS_BASE => fields::KERNEL_GS_BASE,
            MSR_STAR => fields::STAR,
            MSR_LSTAR => fields::LSTAR,
            MSR_CSTAR => fields::CSTAR,
            MSR_SFMASK => fields::SFMASK,
            MSR_SYSENTER_CS => fields::SYSENTER_CS,
            MSR_SYSENTER_ESP => fields::SYSENTER_ESP,
            MSR_SYSENTER_EIP => fields::SYSENTER_EIP,
            // Core has checked the memory types; VMRUN checks them again.
            MSR_PAT => fields::G_PAT,
            MSR_TSC_AUX if self.caps.rdtscp => {
                // SAFETY: TSC_AUX exists with RDTSCP; its value only affects RDTSCP
                // and RDPID, which the host never executes.
                unsafe { self.cpu.write_msr(index, value & 0xffff_ffff) };
                return true;
            }
            _ => return false,
        };
        // SFMASK holds 32 bits (its upper half reads as zero), which VMLOAD keeps of
        // the VMCB's field; store what the register will hold.
        let value = if index == MSR_SFMASK {
            value & 0xffff_ffff
        } else {
            value
        };
        self.write(field, value);
        true
    }

    fn run(&mut self, mem: &mut GuestMemory, limit: &RunLimit) -> Exit {
        self.failure = None;
        // A string I/O element completes before the next exit or not at all.
        self.string_op = None;
        self.mmio = None;
        if let Some(store) = self.ins_store.take() {
            // The destination was RAM when the element exited; if the core has changed
            // the map since, the store is dropped (as in the other backends).
            let _ = store.write(mem);
        }
        if let Err(f) = self.ensure_npt(mem) {
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
        if self.nmi.window && self.nmi_allowed() {
            // As VMX's NMI-window exit, at once when nothing blocks NMIs.
            return Exit::NmiWindow;
        }
        let now = self.cpu.tsc();
        self.anchor_clock(limit, now);
        let deadline = self.run_deadline(limit, now);
        loop {
            self.arm_step();
            let entered = self.vmrun(deadline);
            self.disarm_step();
            if let Err(e) = entered {
                return self.fail(SvmFailure::Vmcb(e));
            }
            let c = exit_code(&self.cpu);
            if c != code::INVALID {
                match reinjection(self.read(fields::EXITINTINFO)) {
                    Ok(event) => self.pending = event,
                    Err(e) => return self.fail(SvmFailure::ExitIntInfo(e)),
                }
            }
            let exit = match self.decoder.decode(&self.cpu, &self.gprs) {
                Ok(exit) => exit,
                Err(e) => return self.fail(SvmFailure::Decode(e)),
            };
            if retires_instruction(c) {
                match self.intercepted_length(mem, c) {
                    Some(len) => self.insn_len = len,
                    None => {
                        let rip = self.rip();
                        let p = self.paging_regs();
                        return self.fail(SvmFailure::InstructionLength {
                            rip,
                            paging: [p.cr0, p.cr3, p.cr4, p.efer],
                        });
                    }
                }
            }
            // What a skip of this exit's instruction raises after it (the backend's own
            // handlers skip some before the match below returns).
            self.completing = Completing {
                step: !matches!(exit, SvmExit::Core(Exit::Hlt)),
                io: None,
            };
            let exit = match exit {
                SvmExit::Core(exit) => exit,
                SvmExit::Backend(exit) => match self.handle_backend_exit(mem, exit) {
                    Some(exit) => exit,
                    None => {
                        // The host timer cannot end a guest that exits to the backend
                        // (RDTSC) more often than its interrupt arrives: each #VMEXIT
                        // disarms it. Past the deadline the run ends here, as VMX's
                        // preemption timer ends it (a vCPU spinning on RDTSC would
                        // otherwise keep its turn, and the other vCPUs would not run).
                        if self.cpu.tsc() >= deadline {
                            return Exit::Preempted;
                        }
                        continue;
                    }
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
                // REP with a count left: RIP stays, the next VMRUN runs the next element
                // (after the element's debug traps, as the processor takes them).
                self.debug_traps_after_skip();
                return;
            }
        }
        let rip = self.rip().wrapping_add(u64::from(self.insn_len));
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
        let rip = self.rip().wrapping_add(u64::from(insn.len));
        self.set_rip(rip);
        self.clear_interrupt_shadow();
        // A move to or from MMIO single-steps as any other (it has no port).
        self.completing = Completing::INSTRUCTION;
        self.debug_traps_after_skip();
        self.step_completed = self.guest_debug.single_step;
    }

    fn interrupt_shadow(&self) -> bool {
        self.read(fields::INTERRUPT_SHADOW) & 1 != 0
    }

    fn set_interrupt_shadow(&mut self, shadow: bool) {
        self.write(fields::INTERRUPT_SHADOW, u64::from(shadow));
    }

    fn interrupt_allowed(&self) -> bool {
        self.pending.is_none() && self.rflags() & RFLAGS_IF != 0 && !self.interrupt_shadow()
    }

    fn nmi_allowed(&self) -> bool {
        self.pending.is_none()
            && !self.nmi.masked
            && self.nmi.stepping.is_none()
            && !self.interrupt_shadow()
    }

    fn inject_event(&mut self, event: Event) {
        // An event re-injected after an interrupted delivery goes first; the core queues
        // new ones only when `event_pending` is false.
        if self.pending.is_some() {
            return;
        }
        let protected = self.read(fields::CR0) & CR0_PE != 0;
        if let Event::Exception { vector, .. } = event {
            // A fault pushes RFLAGS with RF set (SDM 3A 17.3.1.1), an injected one does
            // not get it from the processor: set it first, as KVM does. Real mode pushes
            // 16 bits.
            if protected && opsvisor_core::arch::exception_is_fault(vector) {
                let rflags = self.read(fields::RFLAGS) | RFLAGS_RF;
                self.write(fields::RFLAGS, rflags);
            }
        }
        match event_injection(event, protected) {
            Ok(info) => {
                self.pending = Some(info);
                if event == Event::Nmi {
                    // The processor blocks NMIs until the handler's IRET; SVM does not
                    // tell when that is.
                    self.nmi.masked = true;
                    self.set_misc1(misc1::IRET, true);
                }
            }
            Err(e) => self.failure = Some(SvmFailure::Inject(e)),
        }
    }

    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn enable_irq_window(&mut self, enable: bool) {
        if enable == self.irq_window {
            return;
        }
        self.irq_window = enable;
        // A virtual interrupt of the highest priority, ignoring V_TPR: the VINTR
        // intercept fires as soon as the guest could take it (IF set, no shadow).
        let v = self.read(fields::VINTR)
            & !(vintr::V_IRQ | vintr::V_IGN_TPR | (0xf << vintr::V_INTR_PRIO_SHIFT));
        let v = if enable {
            v | vintr::V_IRQ | vintr::V_IGN_TPR | (0xf << vintr::V_INTR_PRIO_SHIFT)
        } else {
            v
        };
        self.write(fields::VINTR, v);
        self.set_misc1(misc1::VINTR, enable);
    }

    fn enable_nmi_window(&mut self, enable: bool) {
        self.nmi.window = enable;
    }

    fn set_pause_exiting(&mut self, on: bool) {
        // PAUSE_FILTER_COUNT is 0: with the intercept, every PAUSE exits.
        self.set_misc1(misc1::PAUSE, on);
    }

    fn flush_tlb_all(&mut self) {
        if self.caps.features.flush_by_asid() {
            self.request_flush(tlb_control::FLUSH_ASID);
        } else {
            self.new_asid();
        }
    }

    fn flush_tlb_current(&mut self) {
        if self.caps.features.flush_by_asid() {
            self.request_flush(tlb_control::FLUSH_ASID_NON_GLOBAL);
        } else {
            self.new_asid();
        }
    }

    fn flush_tlb_gva(&mut self, gva: u64) {
        // SAFETY: EFER.SVME is set (the processor exists).
        unsafe { self.cpu.invlpga(gva, self.asid) };
    }

    fn fpu_state(&self) -> Option<FxsaveArea> {
        // Zeroed first: FXSAVE leaves the reserved bytes as they are.
        let mut area = FxsaveArea::zeroed();
        // SAFETY: this vCPU's processor is one `enable` set up, with CR0.EM/TS clear
        // in the host, or a stand-in.
        unsafe { self.cpu.fxsave(&mut area) };
        Some(area)
    }

    fn set_fpu_state(&mut self, state: &FxsaveArea) -> Result<(), FpuStateError> {
        // FXRSTOR would raise #GP(0) in the host for MXCSR bits this processor lacks:
        // check against its own MXCSR_MASK first.
        let mut current = FxsaveArea::zeroed();
        // SAFETY: as in `fpu_state`.
        unsafe { self.cpu.fxsave(&mut current) };
        state.check_mxcsr(current.effective_mxcsr_mask())?;
        // SAFETY: as in `fpu_state`, and MXCSR was just checked against MXCSR_MASK.
        unsafe { self.cpu.fxrstor(state) };
        Ok(())
    }
}
