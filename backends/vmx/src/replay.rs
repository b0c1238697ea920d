//! Scripted VM exits on the host: a [`VmxProcessor`] whose "VM entry" writes the next
//! exit of a script into an [`InMemoryVmcs`], as the processor records an exit.
//!
//! With it, [`VmxVcpu`]'s [`X86Ops::run`](opsvisor_core::X86Ops::run) runs its whole
//! exit-handling half on the host: vectoring information, exit decoding, the backend's
//! own handling (EPT violation → MMIO instruction fetch and decode), and, once core's
//! handler has run, the completion's VMCS writes (RIP advance, GPRs, interrupt shadow).
//! Only the world switch itself is missing. The benchmarks of the VMX exit path
//! (`benches/benches/vmx_exit.rs`) and this module's tests use it; the bare-metal
//! image never does.
//!
//! A script is one exit replayed `count` times (a guest looping on one instruction:
//! each replay puts RIP back on the instruction), then a final exit, replayed for every
//! entry after (typically the guest's OUT to the debug-exit port, which ends core's
//! run loop).

use crate::caps::{InveptType, VmxCaps};
use crate::enable::{check_features, EnableError};
use crate::exits::{reason, Gprs};
use crate::vcpu::{VmxConfig, VmxProcessor, VmxVcpu};
use crate::vmcs::{fields, Field, InMemoryVmcs, VmcsAccess, VmxError};
use core::fmt;
use opsvisor_core::cpuid::{CpuidPolicy, Feature};
use opsvisor_core::fpu::FxsaveArea;
use opsvisor_core::ops::Gpr;

/// The host-physical translation for a replaying vCPU ([`VmxConfig::to_phys`]): no
/// processor ever reads the structures a replay builds (EPT, bitmaps), so any
/// page-aligned value serves; this rounds the virtual address down to its page, since
/// a host allocator does not align guest RAM to pages the way the bare-metal image's
/// does.
pub fn replay_phys(addr: u64) -> u64 {
    addr & !0xfff
}

/// Fields one scripted exit can set besides the exit reason.
pub const MAX_SCRIPTED_FIELDS: usize = 8;

/// Why a script was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// A scripted exit sets more than [`MAX_SCRIPTED_FIELDS`] fields.
    TooManyFields,
    /// A scripted field is not one the in-memory VMCS knows.
    UnknownField(Field),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::TooManyFields => write!(
                f,
                "a scripted exit sets more than {MAX_SCRIPTED_FIELDS} VMCS fields"
            ),
            ReplayError::UnknownField(field) => {
                write!(f, "VMCS field {:#06x} is not scriptable", field.encoding())
            }
        }
    }
}

/// One VM exit as the processor would record it: the exit-information fields, the
/// guest-state fields the exit leaves (RIP), and the guest registers at the exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptedExit {
    /// The basic exit reason.
    reason: u16,
    fields: [(Field, u64); MAX_SCRIPTED_FIELDS],
    len: usize,
    /// More fields were given than fit (refused by [`ReplayVmcs::new`]).
    overflow: bool,
    gprs: [Option<u64>; 16],
}

/// The bits of an EPT-violation qualification for a data read of a final translation
/// with a valid guest-linear address (SDM 3C table 28-7).
const EPT_READ_TRANSLATED: u64 = 1 | (1 << 7) | (1 << 8);

impl ScriptedExit {
    /// An exit with basic reason `basic` and nothing else set.
    pub fn new(basic: u16) -> ScriptedExit {
        ScriptedExit {
            reason: basic,
            fields: [(fields::VM_EXIT_REASON, 0); MAX_SCRIPTED_FIELDS],
            len: 0,
            overflow: false,
            gprs: [None; 16],
        }
    }

    /// Also set `field` to `value` at the exit.
    pub fn field(mut self, field: Field, value: u64) -> ScriptedExit {
        match self.fields.get_mut(self.len) {
            Some(slot) => {
                *slot = (field, value);
                self.len += 1;
            }
            None => self.overflow = true,
        }
        self
    }

    /// Also set guest register `reg` (not RSP, which is a VMCS field) at the exit.
    pub fn gpr(mut self, reg: Gpr, value: u64) -> ScriptedExit {
        if let Some(slot) = self.gprs.get_mut(reg as usize) {
            *slot = Some(value);
        }
        self
    }

    /// An instruction exit at `rip` whose instruction is `len` bytes long.
    fn instruction(basic: u16, rip: u64, len: u64) -> ScriptedExit {
        ScriptedExit::new(basic)
            .field(fields::GUEST_RIP, rip)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, len)
    }

    /// CPUID (0F A2) at `rip` with EAX = `leaf`, ECX = `subleaf`.
    pub fn cpuid(rip: u64, leaf: u32, subleaf: u32) -> ScriptedExit {
        ScriptedExit::instruction(reason::CPUID, rip, 2)
            .gpr(Gpr::Rax, leaf.into())
            .gpr(Gpr::Rcx, subleaf.into())
    }

    /// RDMSR (0F 32) at `rip` with ECX = `index`.
    pub fn rdmsr(rip: u64, index: u32) -> ScriptedExit {
        ScriptedExit::instruction(reason::RDMSR, rip, 2).gpr(Gpr::Rcx, index.into())
    }

    /// WRMSR (0F 30) at `rip` of `value` (EDX:EAX) to MSR `index`.
    pub fn wrmsr(rip: u64, index: u32, value: u64) -> ScriptedExit {
        ScriptedExit::instruction(reason::WRMSR, rip, 2)
            .gpr(Gpr::Rcx, index.into())
            .gpr(Gpr::Rax, value & 0xffff_ffff)
            .gpr(Gpr::Rdx, value >> 32)
    }

    /// OUT of `size` bytes (1, 2 or 4; anything else is taken as 4) of RAX to `port`:
    /// `OUT DX, AL/AX/EAX` (1 byte, 2 with the operand-size prefix for AX) with DX =
    /// `port`, or, with `immediate`, `OUT imm8, AL/AX/EAX` (2 or 3 bytes).
    pub fn out(rip: u64, port: u16, size: u8, immediate: bool, rax: u64) -> ScriptedExit {
        // Qualification (SDM 3C table 28-5): size - 1 in bits 2:0, bit 3 clear for
        // OUT, bit 6 for an immediate port, the port in bits 31:16.
        let size_bits = match size {
            1 => 0,
            2 => 1,
            _ => 3,
        };
        let qualification =
            size_bits | if immediate { 1 << 6 } else { 0 } | (u64::from(port) << 16);
        let len = u64::from(immediate) + 1 + u64::from(size == 2);
        let exit = ScriptedExit::instruction(reason::IO_INSTRUCTION, rip, len)
            .field(fields::EXIT_QUALIFICATION, qualification)
            .gpr(Gpr::Rax, rax);
        if immediate {
            exit
        } else {
            exit.gpr(Gpr::Rdx, port.into())
        }
    }

    /// An EPT violation at `rip` on a data read of guest-physical `gpa` through
    /// guest-linear `linear` (an MMIO load: the backend fetches and decodes the
    /// instruction at `rip`). The exit instruction length is undefined for EPT
    /// violations, so none is set.
    pub fn ept_read(rip: u64, gpa: u64, linear: u64) -> ScriptedExit {
        ScriptedExit::new(reason::EPT_VIOLATION)
            .field(fields::GUEST_RIP, rip)
            .field(fields::EXIT_QUALIFICATION, EPT_READ_TRANSLATED)
            .field(fields::GUEST_PHYSICAL_ADDRESS, gpa)
            .field(fields::GUEST_LINEAR_ADDRESS, linear)
    }

    /// Record this exit in `vmcs` and `gprs`, as the processor does at a VM exit.
    pub fn record(&self, vmcs: &mut InMemoryVmcs, gprs: &mut Gprs) -> Result<(), VmxError> {
        vmcs.set_exit_info(fields::VM_EXIT_REASON, self.reason.into())?;
        for &(field, value) in self.fields.iter().take(self.len) {
            vmcs.set_exit_info(field, value)?;
        }
        for (slot, value) in gprs.iter_mut().zip(self.gprs) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        Ok(())
    }
}

/// An in-memory VMCS whose VM entries replay a script of exits (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct ReplayVmcs {
    vmcs: InMemoryVmcs,
    repeat: ScriptedExit,
    /// Replays of `repeat` left before `last`.
    remaining: u64,
    last: ScriptedExit,
    entries: u64,
    invepts: u64,
    /// The guest's values of the MSRs VMX does not switch (STAR, LSTAR, CSTAR, SFMASK,
    /// KERNEL_GS_BASE, TSC_AUX), which on hardware live in the processor.
    msrs: [u64; 6],
    /// The x87/MMX/SSE state, which on hardware lives in the processor: the
    /// architectural fields of the last FXRSTOR's image (see [`ReplayVmcs::fxrstor`]).
    fpu: FxsaveArea,
    /// The MXCSR_MASK this stand-in's FXSAVE reports.
    mxcsr_mask: u32,
    /// FXRSTORs so far.
    fxrstors: u64,
    /// What this stand-in's CPUID reports ([`skylake_x_cpuid`] unless set).
    cpuid: CpuidPolicy,
    /// DR0-DR3 and DR6, which on hardware live in the processor.
    dr: [u64; 5],
}

/// The CPUID of the stand-in processor: the features of Bochs' `corei7_skylake_x` model
/// (the VMX test machine) among those the emulator's model has: everything but UMIP,
/// protection keys, RDPID and 5-level paging.
pub fn skylake_x_cpuid() -> CpuidPolicy {
    let mut policy = CpuidPolicy::emulator();
    for feature in [Feature::Umip, Feature::Pku, Feature::Rdpid, Feature::La57] {
        policy.set_feature(feature, false);
    }
    policy.set_feature(Feature::Xsave, true);
    policy.sync_derived_leaves();
    policy
}

/// The MXCSR_MASK of a [`ReplayVmcs`] unless set: every bit of the low 16, DAZ
/// included, as processors since the Pentium 4 report.
pub const REPLAY_MXCSR_MASK: u32 = 0xffff;

/// The MSRs a [`ReplayVmcs`] holds for the guest, in `msrs` order.
const UNSWITCHED_MSRS: [u32; 6] = [
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
    0xc000_0103,
];

impl ReplayVmcs {
    /// A zeroed VMCS that replays `repeat` `count` times, then `last` for ever.
    pub fn new(
        repeat: ScriptedExit,
        count: u64,
        last: ScriptedExit,
    ) -> Result<ReplayVmcs, ReplayError> {
        // Check both scripts once, so that `enter` cannot fail on them.
        for script in [&repeat, &last] {
            if script.overflow {
                return Err(ReplayError::TooManyFields);
            }
            let mut scratch = InMemoryVmcs::new();
            for &(field, value) in script.fields.iter().take(script.len) {
                scratch
                    .set_exit_info(field, value)
                    .map_err(|_| ReplayError::UnknownField(field))?;
            }
        }
        Ok(ReplayVmcs {
            vmcs: InMemoryVmcs::new(),
            repeat,
            remaining: count,
            last,
            entries: 0,
            invepts: 0,
            msrs: [0; 6],
            // What a processor holds before anyone loads it: zeros (a stand-in: the
            // vCPU's power-on reset loads its own state).
            fpu: FxsaveArea::zeroed(),
            mxcsr_mask: REPLAY_MXCSR_MASK,
            fxrstors: 0,
            cpuid: skylake_x_cpuid(),
            dr: [0, 0, 0, 0, 0xffff_0ff0],
        })
    }

    /// Report `policy` as this stand-in processor's CPUID from now on.
    pub fn set_cpuid(&mut self, policy: CpuidPolicy) {
        self.cpuid = policy;
    }

    /// Report `mask` as MXCSR_MASK in FXSAVE images from now on: 0 is an early SSE
    /// processor's (which lacks DAZ), another value a processor that supports exactly
    /// those MXCSR bits.
    pub fn set_mxcsr_mask(&mut self, mask: u32) {
        self.mxcsr_mask = mask;
    }

    /// FXRSTORs so far.
    pub fn fxrstors(&self) -> u64 {
        self.fxrstors
    }

    /// Replay the repeated exit `count` more times before the last one.
    pub fn rearm(&mut self, count: u64) {
        self.remaining = count;
    }

    /// Replace the script: from the next entry on, replay `repeat` `count` times, then
    /// `last` for ever. The VMCS keeps its contents (a guest that goes on to other
    /// instructions); the scripts are checked as in [`ReplayVmcs::new`].
    pub fn rescript(
        &mut self,
        repeat: ScriptedExit,
        count: u64,
        last: ScriptedExit,
    ) -> Result<(), ReplayError> {
        let checked = ReplayVmcs::new(repeat, count, last)?;
        self.repeat = checked.repeat;
        self.remaining = checked.remaining;
        self.last = checked.last;
        Ok(())
    }

    /// VM entries so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// INVEPTs so far.
    pub fn invepts(&self) -> u64 {
        self.invepts
    }

    /// The VMCS as the vCPU left it.
    pub fn vmcs(&self) -> &InMemoryVmcs {
        &self.vmcs
    }
}

impl VmcsAccess for ReplayVmcs {
    #[inline]
    fn read(&self, field: Field) -> Result<u64, VmxError> {
        self.vmcs.read(field)
    }

    #[inline]
    fn write(&mut self, field: Field, value: u64) -> Result<(), VmxError> {
        self.vmcs.write(field, value)
    }
}

/// VM-entry interruption information: valid.
const ENTRY_INFO_VALID: u64 = 1 << 31;

impl VmxProcessor for ReplayVmcs {
    /// Records the next scripted exit. An event queued for injection counts as
    /// delivered (the valid bit of the entry interruption information is cleared, as a
    /// successful entry does).
    unsafe fn enter(
        &mut self,
        gprs: &mut Gprs,
        _cr2: &mut u64,
        _launched: bool,
    ) -> Result<(), VmxError> {
        self.entries = self.entries.wrapping_add(1);
        let info = self.vmcs.read(fields::VM_ENTRY_INTR_INFO)?;
        if info & ENTRY_INFO_VALID != 0 {
            self.vmcs
                .write(fields::VM_ENTRY_INTR_INFO, info & !ENTRY_INFO_VALID)?;
        }
        let script = if self.remaining > 0 {
            self.remaining -= 1;
            &self.repeat
        } else {
            &self.last
        };
        script.record(&mut self.vmcs, gprs)
    }

    unsafe fn invept(&mut self, _kind: InveptType, _eptp: u64) -> Result<(), VmxError> {
        self.invepts = self.invepts.wrapping_add(1);
        Ok(())
    }

    unsafe fn read_msr(&self, index: u32) -> u64 {
        UNSWITCHED_MSRS
            .iter()
            .position(|&m| m == index)
            .and_then(|i| self.msrs.get(i).copied())
            .unwrap_or(0)
    }

    unsafe fn write_msr(&mut self, index: u32, value: u64) {
        if let Some(slot) = UNSWITCHED_MSRS
            .iter()
            .position(|&m| m == index)
            .and_then(|i| self.msrs.get_mut(i))
        {
            *slot = value;
        }
    }

    fn tsc(&self) -> u64 {
        // SAFETY: RDTSC only reads the counter; user mode may execute it unless the OS
        // set CR4.TSD, which Linux does not by default.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Stores what FXSAVE64 stores: the held state and this stand-in's MXCSR_MASK; the
    /// reserved bytes of `area` keep their contents.
    unsafe fn fxsave(&self, area: &mut FxsaveArea) {
        let held = self.fpu.as_bytes();
        let out = area.as_bytes_mut();
        // FCW..MXCSR, then the x87 registers' 10 bytes each, then XMM0-15.
        out[..28].copy_from_slice(&held[..28]);
        for n in 0..8 {
            out[32 + 16 * n..48 + 16 * n].copy_from_slice(&held[32 + 16 * n..48 + 16 * n]);
        }
        out[160..416].copy_from_slice(&held[160..416]);
        area.set_mxcsr_mask(self.mxcsr_mask);
    }

    /// Holds what FXRSTOR64 loads: the fields the processor has, with the bits it does
    /// not keep (byte 5, FOP's top five bits, the six bytes after each x87 register)
    /// zero, as a later FXSAVE stores them.
    unsafe fn fxrstor(&mut self, area: &FxsaveArea) {
        // The caller's contract; the hardware would fault instead.
        debug_assert!(area.check_mxcsr(self.mxcsr_mask).is_ok(), "{area:?}");
        self.fxrstors = self.fxrstors.wrapping_add(1);
        let mut held = FxsaveArea::zeroed();
        held.set_fcw(area.fcw());
        held.set_fsw(area.fsw());
        held.set_ftw(area.ftw());
        held.set_fop(area.fop() & 0x7ff);
        held.set_fip(area.fip());
        held.set_fdp(area.fdp());
        held.set_mxcsr(area.mxcsr());
        for n in 0..8 {
            held.set_st(n, area.st(n));
        }
        for n in 0..16 {
            held.set_xmm(n, area.xmm(n));
        }
        self.fpu = held;
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid.leaf(leaf, subleaf).unwrap_or([0; 4])
    }

    unsafe fn read_dr(&self, n: u8) -> u64 {
        self.dr[usize::from(n.min(4))]
    }

    unsafe fn write_dr(&mut self, n: u8, value: u64) {
        self.dr[usize::from(n.min(4))] = value;
    }
}

impl VmxVcpu<ReplayVmcs> {
    /// A vCPU of the processor described by `caps` on `replay`: the controls and guest
    /// defaults written as [`VmxVcpu::enable`] writes them (no host state: nothing
    /// returns through it), then a power-on reset.
    pub fn replay(
        caps: VmxCaps,
        config: VmxConfig,
        replay: ReplayVmcs,
    ) -> Result<VmxVcpu<ReplayVmcs>, EnableError> {
        let controls = crate::controls::Controls::compute(&caps).map_err(EnableError::Controls)?;
        check_features(&controls)?;
        let revision = u64::from(caps.basic.revision_id());
        let mut vmcs_region = crate::page::Page::zeroed();
        vmcs_region.0[0] = revision;
        let mut vcpu = VmxVcpu::assemble(replay, caps, controls, config, vmcs_region, 1);
        vcpu.setup_for_replay().map_err(EnableError::Vmcs)?;
        Ok(vcpu)
    }

    /// The replaying VMCS (to re-arm its script between runs).
    pub fn replay_mut(&mut self) -> &mut ReplayVmcs {
        self.processor_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::fixtures::CORE_I7_SKYLAKE_X;
    use opsvisor_core::cpuid::CpuidPolicy;
    use opsvisor_core::exit::Direction;
    use opsvisor_core::fpu::FpuStateError;
    use opsvisor_core::ops::{DebugRegs, ResetKind, RunLimit, SegReg, Segment};
    use opsvisor_core::platform::Platform;
    use opsvisor_core::vm::{RunOutcome, Vm, VmConfig};
    use opsvisor_core::{Exit, ExitKind, GuestMemory, X86Ops};

    /// A clock that never moves and no console.
    struct Still;

    impl Platform for Still {
        fn now_ns(&self) -> u64 {
            0
        }
        fn wait(&mut self, _: Option<u64>) -> bool {
            false
        }
        fn console_write(&mut self, _: &[u8]) {}
        fn console_read(&mut self) -> Option<u8> {
            None
        }
        fn console_input_ready(&mut self) -> bool {
            false
        }
    }

    const LIMIT: RunLimit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };

    /// `OUT 0xF4, EAX` with EAX = 0: the debug exit with status 1.
    fn debug_exit(rip: u64) -> ScriptedExit {
        ScriptedExit::out(rip, 0xf4, 4, true, 0)
    }

    fn vcpu(repeat: ScriptedExit, count: u64) -> VmxVcpu<ReplayVmcs> {
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        let config = VmxConfig {
            to_phys: replay_phys,
            tsc_hz: 1_000_000_000,
        };
        let replay = ReplayVmcs::new(repeat, count, debug_exit(0x9000)).unwrap();
        VmxVcpu::replay(caps, config, replay).unwrap()
    }

    /// 32-bit flat protected mode, no paging.
    fn flat32(vcpu: &mut VmxVcpu<ReplayVmcs>) {
        vcpu.set_cr0(0x11);
        vcpu.set_segment(SegReg::Cs, &Segment::flat(8, Segment::CODE32));
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            vcpu.set_segment(seg, &Segment::flat(0x10, Segment::DATA));
        }
    }

    #[test]
    fn pae_paging_takes_its_pdptes_from_guest_memory() {
        use crate::vmcs::fields;
        let mut vcpu = vcpu(ScriptedExit::cpuid(0x1000, 0, 0), 2);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        // Four PDPTEs at 0x5020 (CR3 bits 4:0 are ignored).
        for i in 0..4u64 {
            mem.write_u64(0x5020 + 8 * i, 0x10001 + 0x1000 * i).unwrap();
        }
        flat32(&mut vcpu);
        vcpu.set_cr4(1 << 5);
        vcpu.set_cr3(0x5020 | 0x18);
        vcpu.set_cr0(0x8000_0011);
        let pdptes = |vcpu: &VmxVcpu<ReplayVmcs>| {
            [
                fields::GUEST_PDPTE0,
                fields::GUEST_PDPTE1,
                fields::GUEST_PDPTE2,
                fields::GUEST_PDPTE3,
            ]
            .map(|f| vcpu.processor().vmcs().read(f).unwrap())
        };
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Cpuid);
        assert_eq!(pdptes(&vcpu), [0x10001, 0x11001, 0x12001, 0x13001]);
        // A new CR3 set through the backend reloads them before the next entry.
        mem.write_u64(0x6000, 0x20001).unwrap();
        vcpu.skip_emulated_instruction();
        vcpu.set_cr3(0x6000);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Cpuid);
        assert_eq!(pdptes(&vcpu), [0x20001, 0, 0, 0]);
    }

    #[test]
    fn a_debuggers_stops_intercept_bp_and_db_and_step_on_hidden_tf() {
        use crate::vmcs::fields;
        use opsvisor_core::ops::GuestDebug;
        let mut vcpu = vcpu(ScriptedExit::cpuid(0x1000, 0, 0), 3);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        let bitmap = |v: &VmxVcpu<ReplayVmcs>| v.processor().vmcs().read(fields::EXCEPTION_BITMAP);
        assert_eq!(
            bitmap(&vcpu).unwrap(),
            0,
            "the guest's own exceptions by default"
        );
        let step = GuestDebug {
            single_step: true,
            intercept_breakpoints: true,
            intercept_debug: false,
        };
        vcpu.set_guest_debug(step).unwrap();
        assert_eq!(bitmap(&vcpu).unwrap(), (1 << 3) | (1 << 1));
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Cpuid);
        // TF was the backend's for the entry only: the guest's RFLAGS are as they were.
        assert_eq!(vcpu.rflags() & crate::debug::TF, 0);
        // The core completes the CPUID: that is the step, and the next run stops at
        // once, before entering.
        vcpu.skip_emulated_instruction();
        let entries = vcpu.processor().entries();
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Exception {
                vector: 1,
                error_code: None
            }
        );
        assert_eq!(vcpu.processor().entries(), entries);
        // Nothing asked: the guest owns #BP and #DB again and runs on.
        vcpu.set_guest_debug(GuestDebug::default()).unwrap();
        assert_eq!(bitmap(&vcpu).unwrap(), 0);
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Cpuid);
        assert_eq!(vcpu.processor().entries(), entries + 1);
    }

    #[test]
    fn instruction_exits_complete_in_the_vmcs() {
        let mut vcpu = vcpu(ScriptedExit::cpuid(0x1000, 7, 0), 1);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(e, Exit::Cpuid, "{:?}", vcpu.last_failure());
        assert_eq!(vcpu.gpr(Gpr::Rax), 7);
        vcpu.set_gpr(Gpr::Rbx, 0xabcd);
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.rip(), 0x1002);
        assert_eq!(vcpu.gpr(Gpr::Rbx), 0xabcd);
        // The script's last exit, for ever after.
        for _ in 0..2 {
            assert_eq!(
                vcpu.run(&mut mem, &LIMIT),
                Exit::Io {
                    port: 0xf4,
                    size: 4,
                    direction: Direction::Write,
                    data: 0
                }
            );
        }
        assert_eq!(vcpu.processor().entries(), 3);
        // The EPT was built and flushed once.
        assert_eq!(vcpu.processor().invepts(), 1);
    }

    #[test]
    fn mmio_read_is_fetched_decoded_and_retired() {
        // mov eax, [ecx] at 0x1000, ECX pointing at the xAPIC version register.
        let apic = 0xfee0_0030;
        let exit = ScriptedExit::ept_read(0x1000, apic, apic).gpr(Gpr::Rcx, apic);
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        vcpu.set_gpr(Gpr::Rax, 0xffff_ffff_0000_0000);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x1000, &[0x8b, 0x01]).unwrap();
        let Exit::Mmio {
            gpa,
            size,
            direction,
            ..
        } = vcpu.run(&mut mem, &LIMIT)
        else {
            panic!("not an MMIO exit");
        };
        assert_eq!((gpa, size, direction), (apic, 4, Direction::Read));
        vcpu.complete_mmio(Some(0x5_0014));
        // A 32-bit load zero-extends into RAX.
        assert_eq!(vcpu.gpr(Gpr::Rax), 0x5_0014);
        assert_eq!(vcpu.rip(), 0x1002);
    }

    #[test]
    fn rep_movsb_from_mmio_runs_element_by_element_without_entering_the_guest() {
        // rep movsb at 0x1000 from the pc-testdev window (not RAM) to RAM at 0x8000.
        let window = 0xff00_0000;
        let exit = ScriptedExit::ept_read(0x1000, window, window)
            .gpr(Gpr::Rsi, window)
            .gpr(Gpr::Rdi, 0x8000)
            .gpr(Gpr::Rcx, 3);
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x1000, &[0xf3, 0xa4]).unwrap();
        for (i, value) in [0x11, 0x22, 0x33].into_iter().enumerate() {
            assert_eq!(
                vcpu.run(&mut mem, &LIMIT),
                Exit::Mmio {
                    gpa: window + i as u64,
                    size: 1,
                    direction: Direction::Read,
                    data: 0
                }
            );
            vcpu.complete_mmio(Some(value));
        }
        // The last element's store and the retirement come before the next entry, which
        // meets the script's debug exit: one entry for the whole instruction.
        assert!(matches!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Io { port: 0xf4, .. }
        ));
        assert_eq!(vcpu.processor().entries(), 2);
        let mut copied = [0u8; 3];
        mem.read(0x8000, &mut copied).unwrap();
        assert_eq!(copied, [0x11, 0x22, 0x33]);
        assert_eq!(
            (vcpu.gpr(Gpr::Rcx), vcpu.gpr(Gpr::Rsi), vcpu.gpr(Gpr::Rdi)),
            (0, window + 3, 0x8003)
        );
    }

    #[test]
    fn core_run_loop_handles_replayed_exits() {
        let apic = 0xfee0_0030;
        for (exit, kind, flat) in [
            (ScriptedExit::cpuid(0x1000, 0, 0), ExitKind::Cpuid, false),
            (ScriptedExit::rdmsr(0x1000, 0x10), ExitKind::Rdmsr, false),
            (
                ScriptedExit::wrmsr(0x1000, 0x6e0, u64::MAX >> 1),
                ExitKind::Wrmsr,
                false,
            ),
            (
                ScriptedExit::out(0x1000, 0x2f0, 1, false, 0),
                ExitKind::Io,
                false,
            ),
            (
                ScriptedExit::ept_read(0x1000, apic, apic).gpr(Gpr::Rcx, apic),
                ExitKind::Mmio,
                true,
            ),
        ] {
            let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
            mem.write(0x1000, &[0x8b, 0x01]).unwrap();
            let mut vcpu = vcpu(exit, 50);
            if flat {
                flat32(&mut vcpu);
            }
            let mut vm = Vm::new(
                vcpu,
                mem,
                Still,
                CpuidPolicy::emulator(),
                VmConfig::default(),
            );
            assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 }, "{kind:?}");
            // The final debug exit is one more I/O exit.
            let io = u64::from(kind == ExitKind::Io);
            assert_eq!(vm.stats.exits(kind), 50 + io, "{kind:?}");
            assert_eq!(vm.bsp().backend.processor().entries(), 51, "{kind:?}");
            // The guest saw no exception: nothing was injected.
            assert_eq!(vm.stats.exits(ExitKind::Exception), 0);
            assert!(!vm.bsp().backend.event_pending(), "{kind:?}");
        }
    }

    #[test]
    fn scripts_are_checked() {
        extern crate std;
        use std::string::ToString;
        let mut big = ScriptedExit::new(reason::CPUID);
        for _ in 0..=MAX_SCRIPTED_FIELDS {
            big = big.field(fields::GUEST_RIP, 0);
        }
        let last = ScriptedExit::new(reason::HLT);
        assert_eq!(
            ReplayVmcs::new(big, 1, last).unwrap_err(),
            ReplayError::TooManyFields
        );
        let unknown = Field::from_encoding(0x6fff);
        let bad = ScriptedExit::new(reason::CPUID).field(unknown, 1);
        assert_eq!(
            ReplayVmcs::new(last, 1, bad).unwrap_err(),
            ReplayError::UnknownField(unknown)
        );
        assert!(ReplayError::UnknownField(unknown)
            .to_string()
            .contains("0x6fff"));
    }

    #[test]
    fn replay_vcpu_refuses_a_cpu_without_ept() {
        let caps = VmxCaps::read(&crate::caps::fixtures::CORE2_PENRYN_T9600).unwrap();
        let config = VmxConfig {
            to_phys: replay_phys,
            tsc_hz: 1,
        };
        let replay = ReplayVmcs::new(debug_exit(0), 0, debug_exit(0)).unwrap();
        assert!(matches!(
            VmxVcpu::replay(caps, config, replay),
            Err(EnableError::NoEpt)
        ));
    }

    /// xorshift64*: fixed seeds, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// A random image in the form FXSAVE stores it (FOP in 11 bits, zero padding and
    /// reserved bytes, the stand-in's MXCSR_MASK), MXCSR within `mask`.
    fn random_fpu(rng: &mut Rng, mask: u32) -> FxsaveArea {
        let mut a = FxsaveArea::zeroed();
        a.set_fcw(rng.next() as u16);
        a.set_fsw(rng.next() as u16);
        a.set_ftw(rng.next() as u8);
        a.set_fop(rng.next() as u16 & 0x7ff);
        a.set_fip(rng.next());
        a.set_fdp(rng.next());
        a.set_mxcsr(rng.next() as u32 & mask);
        a.set_mxcsr_mask(REPLAY_MXCSR_MASK);
        for n in 0..8 {
            let mut st = [0u8; 10];
            st[..8].copy_from_slice(&rng.next().to_le_bytes());
            st[8..].copy_from_slice(&rng.next().to_le_bytes()[..2]);
            a.set_st(n, st);
        }
        for n in 0..16 {
            a.set_xmm(n, u128::from(rng.next()) << 64 | u128::from(rng.next()));
        }
        a
    }

    /// The reset image as FXSAVE reports it.
    fn reset_fpu() -> FxsaveArea {
        let mut reset = FxsaveArea::reset();
        reset.set_mxcsr_mask(REPLAY_MXCSR_MASK);
        reset
    }

    #[test]
    fn fpu_state_round_trips() {
        let mut vcpu = vcpu(debug_exit(0), 0);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let image = random_fpu(&mut rng, REPLAY_MXCSR_MASK);
            assert_eq!(vcpu.set_fpu_state(&image), Ok(()));
            let back = vcpu.fpu_state().unwrap();
            assert_eq!(back.as_bytes(), image.as_bytes(), "{image:?}");
        }
    }

    #[test]
    fn fpu_state_ignores_what_fxrstor_ignores() {
        let mut vcpu = vcpu(debug_exit(0), 0);
        let image = random_fpu(&mut Rng(7), REPLAY_MXCSR_MASK);
        let mut noisy = image;
        let b = noisy.as_bytes_mut();
        b[5] = 0xa5;
        b[7] |= 0xf8; // FOP bits 11-15
        b[28..32].fill(0x5a); // MXCSR_MASK
        for n in 0..8 {
            b[42 + 16 * n..48 + 16 * n].fill(0xc3);
        }
        b[416..].fill(0x3c);
        assert_eq!(vcpu.set_fpu_state(&noisy), Ok(()));
        assert_eq!(vcpu.fpu_state().unwrap().as_bytes(), image.as_bytes());
    }

    #[test]
    fn reserved_mxcsr_bits_are_refused_before_fxrstor() {
        let mut vcpu = vcpu(debug_exit(0), 0);
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let good = random_fpu(&mut rng, REPLAY_MXCSR_MASK);
        assert_eq!(vcpu.set_fpu_state(&good), Ok(()));
        let loads = vcpu.processor().fxrstors();
        for bit in 16..32 {
            let mut bad = random_fpu(&mut rng, REPLAY_MXCSR_MASK);
            let mxcsr = bad.mxcsr() | 1 << bit;
            bad.set_mxcsr(mxcsr);
            assert_eq!(
                vcpu.set_fpu_state(&bad),
                Err(FpuStateError::ReservedMxcsrBits {
                    mxcsr,
                    mask: REPLAY_MXCSR_MASK
                })
            );
            assert_eq!(vcpu.fpu_state().unwrap(), good, "bit {bit}");
        }
        assert_eq!(vcpu.processor().fxrstors(), loads);
    }

    #[test]
    fn mxcsr_is_checked_against_the_processors_mask() {
        const DAZ: u32 = 1 << 6;
        let mut image = FxsaveArea::reset();
        image.set_mxcsr(0x1f80 | DAZ);
        // A processor without DAZ: FXSAVE stores MXCSR_MASK 0, meaning 0xFFBF.
        let mut vcpu = vcpu(debug_exit(0), 0);
        vcpu.replay_mut().set_mxcsr_mask(0);
        assert_eq!(
            vcpu.set_fpu_state(&image),
            Err(FpuStateError::ReservedMxcsrBits {
                mxcsr: 0x1fc0,
                mask: 0xffbf
            })
        );
        assert_eq!(vcpu.fpu_state().unwrap().mxcsr(), 0x1f80);
        // One that reports its mask, without DAZ.
        vcpu.replay_mut().set_mxcsr_mask(0xffbf);
        assert!(vcpu.set_fpu_state(&image).is_err());
        // One with DAZ.
        vcpu.replay_mut().set_mxcsr_mask(0xffff);
        assert_eq!(vcpu.set_fpu_state(&image), Ok(()));
        assert_eq!(vcpu.fpu_state().unwrap().mxcsr(), 0x1fc0);
    }

    #[test]
    fn power_on_reset_loads_the_reset_fpu_state_and_init_keeps_it() {
        let mut vcpu = vcpu(debug_exit(0), 0);
        // The stand-in starts with zeros; the vCPU's own power-on reset loaded the
        // reset state.
        assert_eq!(vcpu.fpu_state(), Some(reset_fpu()));
        let image = random_fpu(&mut Rng(99), REPLAY_MXCSR_MASK);
        assert_eq!(vcpu.set_fpu_state(&image), Ok(()));
        vcpu.vcpu_reset(ResetKind::Init);
        assert_eq!(vcpu.fpu_state(), Some(image));
        vcpu.vcpu_reset(ResetKind::PowerOn);
        let after = vcpu.fpu_state().unwrap();
        assert_eq!(after, reset_fpu());
        assert_eq!(
            (after.fcw(), after.ftw(), after.mxcsr()),
            (0x40, 0xff, 0x1f80)
        );
    }

    /// The instructions behind `HardwareVmcs::fxsave`/`fxrstor`, on the host's own
    /// x87/SSE state (user mode may execute them): a loaded image reads back, then the
    /// test thread's state is put back.
    #[test]
    fn fxsave64_reads_back_what_fxrstor64_loaded() {
        use crate::vcpu::{fxrstor64, fxsave64};
        let mut rng = Rng(0x5eed);
        let mut saved = FxsaveArea::zeroed();
        // SAFETY: the OS keeps CR0.EM/TS clear for user code (or handles #NM).
        unsafe { fxsave64(&mut saved) };
        let mask = saved.effective_mxcsr_mask();
        assert_eq!(saved.mxcsr() & !mask, 0);
        // The reset control words (the ones the test harness runs with) and an empty
        // x87 stack, so that nothing between the two restores computes differently;
        // FOP/FIP/FDP stay 0, since AMD processors store them only with an x87
        // exception pending.
        let mut image = FxsaveArea::reset();
        image.set_mxcsr(0x1f80 | (rng.next() as u32 & 0x3f));
        for n in 0..8 {
            let mut st = [0u8; 10];
            st[..8].copy_from_slice(&rng.next().to_le_bytes());
            image.set_st(n, st);
        }
        for n in 0..16 {
            image.set_xmm(n, u128::from(rng.next()) << 64 | u128::from(rng.next()));
        }
        assert_eq!(image.check_mxcsr(mask), Ok(()));
        let mut back = FxsaveArea::zeroed();
        // SAFETY: as above, and both images' MXCSR are within the processor's mask.
        unsafe {
            fxrstor64(&image);
            fxsave64(&mut back);
            fxrstor64(&saved);
        }
        assert_eq!(
            (back.fcw(), back.fsw(), back.ftw(), back.mxcsr()),
            (image.fcw(), image.fsw(), image.ftw(), image.mxcsr())
        );
        assert_eq!(back.mxcsr_mask(), saved.mxcsr_mask());
        for n in 0..8 {
            assert_eq!(back.st(n), image.st(n), "ST{n}");
        }
        for n in 0..16 {
            assert_eq!(back.xmm(n), image.xmm(n), "XMM{n}");
        }
    }

    #[test]
    fn injected_events_count_as_delivered() {
        use opsvisor_core::ops::Event;
        let mut vcpu = vcpu(
            ScriptedExit::new(reason::VMCALL).field(fields::GUEST_RIP, 0x1000),
            2,
        );
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hypercall);
        vcpu.inject_event(Event::Exception {
            vector: 6,
            error_code: None,
        });
        assert!(vcpu.event_pending());
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hypercall);
        assert!(!vcpu.event_pending());
        assert_eq!(
            vcpu.processor().vmcs().read(fields::VM_ENTRY_INTR_INFO),
            Ok(0x306)
        );
    }

    #[test]
    fn supported_cpuid_is_what_the_processor_and_vmx_run() {
        use opsvisor_core::cpuid::Feature;
        let vcpu = vcpu(ScriptedExit::cpuid(0x1000, 0, 0), 1);
        let supported = vcpu.supported_cpuid();
        // Bochs' Skylake-X has these, and VMX runs them natively.
        for f in [
            Feature::Smep,
            Feature::Smap,
            Feature::Fsgsbase,
            Feature::Pcid,
            Feature::Invpcid,
            Feature::Rdtscp,
            Feature::Sse42,
        ] {
            assert!(supported.has_feature(f), "{f:?}");
        }
        // The processor lacks these; PKU and XSAVE are not offered by this backend.
        for f in [
            Feature::Umip,
            Feature::La57,
            Feature::Rdpid,
            Feature::Pku,
            Feature::Xsave,
            Feature::Xsaveopt,
        ] {
            assert!(!supported.has_feature(f), "{f:?}");
        }
        // What the core emulates stays, whatever the processor reports.
        let mut bare = super::skylake_x_cpuid();
        bare.set_feature(Feature::X2apic, false);
        bare.set_feature(Feature::TscDeadline, false);
        bare.set_feature(Feature::Smep, false);
        let mut vcpu = vcpu;
        vcpu.replay_mut().set_cpuid(bare);
        let supported = vcpu.supported_cpuid();
        assert!(supported.has_feature(Feature::X2apic));
        assert!(supported.has_feature(Feature::TscDeadline));
        assert!(!supported.has_feature(Feature::Smep));
    }

    /// MOV to CR4 from RAX (SDM 3C table 28-3: CR 4, access type 0, GPR 0).
    fn mov_to_cr4(rip: u64) -> ScriptedExit {
        ScriptedExit::new(reason::CONTROL_REGISTER_ACCESS)
            .field(fields::GUEST_RIP, rip)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 3)
            .field(fields::EXIT_QUALIFICATION, 4)
    }

    #[test]
    fn cr4_bits_of_features_the_model_lacks_are_host_owned_and_fault() {
        use opsvisor_core::cpuid::Feature;
        const SMEP: u64 = 1 << 20;
        let mut vcpu = vcpu(mov_to_cr4(0x1000), 1);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        let mut model = vcpu.supported_cpuid();
        model.set_feature(Feature::Smep, false);
        vcpu.set_cpuid(&model);
        let mask = vcpu
            .processor()
            .vmcs()
            .read(fields::CR4_GUEST_HOST_MASK)
            .unwrap();
        assert_ne!(mask & SMEP, 0, "SMEP is host-owned");
        // The guest sets SMEP: the exit injects #GP(0), CR4 is unchanged, RIP stays.
        vcpu.set_gpr(Gpr::Rax, SMEP);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Io {
                port: 0xf4,
                size: 4,
                direction: Direction::Write,
                data: 0
            }
        );
        assert_eq!(vcpu.cr4() & SMEP, 0);
        // Delivered (valid bit cleared by the entry): #GP, a hardware exception (real
        // mode after reset: no error code).
        assert_eq!(
            vcpu.processor().vmcs().read(fields::VM_ENTRY_INTR_INFO),
            Ok(0x30d)
        );
        // With SMEP in the model the same write is taken.
        let mut vcpu2 = super::tests::vcpu(mov_to_cr4(0x1000), 1);
        let model = vcpu2.supported_cpuid();
        vcpu2.set_cpuid(&model);
        vcpu2.set_gpr(Gpr::Rax, SMEP);
        vcpu2.run(&mut mem, &LIMIT);
        assert_ne!(vcpu2.cr4() & SMEP, 0);
        assert!(!vcpu2.event_pending());
    }

    #[test]
    fn vmcall_is_answered_by_the_core_with_kvm_enosys() {
        let vmcall = ScriptedExit::new(reason::VMCALL)
            .field(fields::GUEST_RIP, 0x1000)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 3)
            .gpr(Gpr::Rax, 12345);
        let hlt = ScriptedExit::new(reason::HLT)
            .field(fields::GUEST_RIP, 0x1003)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 1);
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        let config = VmxConfig {
            to_phys: replay_phys,
            tsc_hz: 1_000_000_000,
        };
        let vcpu = VmxVcpu::replay(caps, config, ReplayVmcs::new(vmcall, 1, hlt).unwrap()).unwrap();
        let mem = GuestMemory::with_ram(2 << 20).unwrap();
        let mut vm = Vm::new(
            vcpu,
            mem,
            Still,
            CpuidPolicy::emulator(),
            VmConfig::default(),
        );
        // Real mode at reset: the result is truncated to 32 bits; then HLT with
        // interrupts off ends the run.
        assert_eq!(vm.run(), RunOutcome::HaltedForever);
        assert_eq!(vm.stats.exits(ExitKind::Hypercall), 1);
        assert_eq!(vm.bsp().backend.gpr(Gpr::Rax), u64::from(-1000i32 as u32));
    }

    /// RFLAGS.TF and RF; the pending-debug-exceptions bits of BS and of an enabled
    /// breakpoint.
    const TF: u64 = 1 << 8;
    const RF: u64 = 1 << 16;
    const PENDING_BS: u64 = 1 << 14;
    const PENDING_ENABLED_BP: u64 = 1 << 12;

    fn pending_debug(vcpu: &VmxVcpu<ReplayVmcs>) -> u64 {
        vcpu.processor()
            .vmcs()
            .read(fields::GUEST_PENDING_DEBUG_EXCEPTIONS)
            .unwrap()
    }

    /// RDTSC (0F 31) at `rip`, which the backend completes itself.
    fn rdtsc(rip: u64) -> ScriptedExit {
        ScriptedExit::new(reason::RDTSC)
            .field(fields::GUEST_RIP, rip)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 2)
    }

    #[test]
    fn single_step_over_a_skipped_instruction_sets_bs_pending_after_it() {
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        // Exits the core completes (CPUID, RDMSR, an OUT with no breakpoint armed).
        for exit in [
            ScriptedExit::cpuid(0x1000, 0, 0),
            ScriptedExit::rdmsr(0x1000, 0x10),
            ScriptedExit::out(0x1000, 0x80, 1, true, 0x42),
        ] {
            let mut vcpu = self::vcpu(exit, 1);
            vcpu.set_rflags(0x2 | TF | RF);
            let e = vcpu.run(&mut mem, &LIMIT);
            assert!(!matches!(e, Exit::EmulationFailure { .. }), "{e:?}");
            assert_eq!(pending_debug(&vcpu), 0);
            vcpu.skip_emulated_instruction();
            // The trap after the instruction, RF cleared, TF kept; interrupts and NMIs
            // wait for it (an entry injecting one would discard the field).
            assert_eq!(pending_debug(&vcpu), PENDING_BS, "{e:?}");
            assert_eq!(vcpu.rflags(), 0x2 | TF);
            assert!(!vcpu.interrupt_allowed() && !vcpu.nmi_allowed());
        }
        // Exits the backend completes itself: MOV to CR4 and RDTSC, then the debug
        // exit that ends the run.
        for exit in [mov_to_cr4(0x1000), rdtsc(0x1000)] {
            let mut vcpu = self::vcpu(exit, 1);
            vcpu.set_rflags(0x2 | TF | RF);
            vcpu.set_gpr(Gpr::Rax, 0);
            assert!(matches!(
                vcpu.run(&mut mem, &LIMIT),
                Exit::Io { port: 0xf4, .. }
            ));
            assert_eq!(pending_debug(&vcpu), PENDING_BS);
            assert_eq!(vcpu.rflags(), 0x2 | TF);
        }
        // Without TF, or over HLT: nothing pending, RF cleared all the same, events
        // allowed.
        let hlt = ScriptedExit::new(reason::HLT)
            .field(fields::GUEST_RIP, 0x1000)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 1);
        for (exit, rflags) in [
            (ScriptedExit::cpuid(0x1000, 0, 0), 0x202 | RF),
            (hlt, 0x202 | TF | RF),
        ] {
            let mut vcpu = self::vcpu(exit, 1);
            vcpu.set_rflags(rflags);
            vcpu.run(&mut mem, &LIMIT);
            vcpu.skip_emulated_instruction();
            assert_eq!(pending_debug(&vcpu), 0);
            assert_eq!(vcpu.rflags() & RF, 0);
            assert!(vcpu.interrupt_allowed() && vcpu.nmi_allowed());
        }
    }

    #[test]
    fn io_breakpoint_of_a_skipped_port_access_is_pending_after_it() {
        const CR4_DE: u64 = 1 << 3;
        // Breakpoint 2 on ports 0x80-0x81 (R/W 10, LEN 01), locally enabled;
        // breakpoint 0 on the same ports, not enabled.
        let dr7 = 0x400 | (1 << 4) | (2 << 24) | (1 << 26) | (2 << 16);
        let armed = DebugRegs {
            db: [0x80, 0, 0x81, 0],
            dr6: 0xffff_0ff0,
            dr7,
        };
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        let out = ScriptedExit::out(0x1000, 0x80, 1, true, 0x42);
        let mut vcpu = self::vcpu(out, 1);
        vcpu.set_cr4(CR4_DE);
        vcpu.set_debug_regs(&armed);
        assert!(matches!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Io { port: 0x80, .. }
        ));
        vcpu.skip_emulated_instruction();
        assert_eq!(pending_debug(&vcpu), 0b101 | PENDING_ENABLED_BP);
        assert_eq!(vcpu.rip(), 0x1002);
        // With TF too: both. Without CR4.DE, or another port: nothing.
        for (cr4, port, rflags, expected) in [
            (
                CR4_DE,
                0x80,
                0x2 | TF,
                0b101 | PENDING_ENABLED_BP | PENDING_BS,
            ),
            (0, 0x80, 0x2, 0),
            (CR4_DE, 0x82, 0x2, 0),
        ] {
            let mut vcpu = self::vcpu(ScriptedExit::out(0x1000, port, 1, true, 0), 1);
            vcpu.set_cr4(cr4);
            vcpu.set_debug_regs(&armed);
            vcpu.set_rflags(rflags);
            vcpu.run(&mut mem, &LIMIT);
            vcpu.skip_emulated_instruction();
            assert_eq!(pending_debug(&vcpu), expected, "{cr4:#x} {port:#x}");
        }
    }

    #[test]
    fn mmio_moves_and_string_mmio_elements_single_step() {
        let apic = 0xfee0_0030;
        // mov eax, [ecx]: BS pending once it completes.
        let exit = ScriptedExit::ept_read(0x1000, apic, apic).gpr(Gpr::Rcx, apic);
        let mut vcpu = self::vcpu(exit, 1);
        flat32(&mut vcpu);
        vcpu.set_rflags(0x2 | TF);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x1000, &[0x8b, 0x01]).unwrap();
        assert!(matches!(vcpu.run(&mut mem, &LIMIT), Exit::Mmio { .. }));
        vcpu.complete_mmio(Some(0x5_0014));
        assert_eq!(pending_debug(&vcpu), PENDING_BS);

        // rep movsb from the pc-testdev window: as the processor single-steps a REP, BS
        // after the first element, the guest entered with RCX counting the elements
        // left (RIP stays at the instruction: see opsvisor_core::emulate::strings' tests).
        let window = 0xff00_0000;
        let exit = ScriptedExit::ept_read(0x1000, window, window)
            .gpr(Gpr::Rsi, window)
            .gpr(Gpr::Rdi, 0x8000)
            .gpr(Gpr::Rcx, 3);
        let mut vcpu = self::vcpu(exit, 1);
        flat32(&mut vcpu);
        vcpu.set_rflags(0x2 | TF);
        mem.write(0x1000, &[0xf3, 0xa4]).unwrap();
        assert!(matches!(vcpu.run(&mut mem, &LIMIT), Exit::Mmio { .. }));
        assert_eq!(pending_debug(&vcpu), 0);
        assert_eq!(vcpu.rip(), 0x1000);
        vcpu.complete_mmio(Some(0x11));
        assert!(matches!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Io { port: 0xf4, .. }
        ));
        assert_eq!(vcpu.gpr(Gpr::Rcx), 2, "two elements left");
        assert_eq!(pending_debug(&vcpu), PENDING_BS);
    }
}
