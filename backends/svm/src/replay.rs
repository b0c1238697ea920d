//! Scripted #VMEXITs on the host: an [`SvmProcessor`] whose "VMRUN" writes the next exit
//! of a script into an [`InMemoryVmcb`], as the processor records an exit.
//!
//! With it, [`SvmVcpu`]'s [`X86Ops::run`](opsvisor_core::X86Ops::run) runs its whole
//! exit-handling half on the host: EXITINTINFO, exit decoding, the backend's own
//! handling (nested page fault → MMIO instruction fetch and decode, string I/O, the
//! instruction length without NRIP save), and, once core's handler has run, the
//! completion's VMCB writes. Only the world switch itself is missing. The benchmarks of
//! the SVM exit path (`benches/benches/svm_exit.rs`) and the tests use it; the
//! bare-metal image never does.
//!
//! On request ([`ReplayVmcb::check_clean_bits`]) it also checks the VMCB clean bits the
//! vCPU hands the processor: a field that changed since the last VMRUN while its clean
//! bit was set is counted ([`ReplayVmcb::clean_violations`]), since a processor would
//! have run with its stale cached copy. (The check copies the page at every VMRUN, which
//! the benchmarks leave out.)
//!
//! A script is one exit replayed `count` times (a guest looping on one instruction:
//! each replay puts RIP back on the instruction), then a final exit, replayed for every
//! VMRUN after (typically the guest's OUT to the debug-exit port, which ends core's run
//! loop).

use crate::caps::SvmCaps;
use crate::enable::EnableError;
use crate::exits::{code, Gprs};
use crate::vcpu::{SvmConfig, SvmProcessor, SvmVcpu};
use crate::vmcb::fields::{self, clean, Field};
use crate::vmcb::{InMemoryVmcb, VmcbAccess, VmcbError};
use core::fmt;
use opsvisor_core::fpu::FxsaveArea;
use opsvisor_core::ops::Gpr;

/// The host-physical translation for a replaying vCPU ([`SvmConfig::to_phys`]): no
/// processor reads what a replay builds, so any page-aligned value serves; this rounds
/// the virtual address down to its page.
pub fn replay_phys(addr: u64) -> u64 {
    addr & !0xfff
}

/// A [`SvmConfig::probe_msr`] for replays: no MSR is read.
pub fn no_msr(_: u32) -> Option<u64> {
    None
}

/// Fields one scripted exit can set besides the exit code.
pub const MAX_SCRIPTED_FIELDS: usize = 8;

/// Why a script was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// A scripted exit sets more than [`MAX_SCRIPTED_FIELDS`] fields.
    TooManyFields,
    /// A scripted field is not an aligned field of the page.
    BadField(Field),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::TooManyFields => write!(
                f,
                "a scripted exit sets more than {MAX_SCRIPTED_FIELDS} VMCB fields"
            ),
            ReplayError::BadField(field) => {
                write!(f, "VMCB field at {:#x} is not scriptable", field.offset())
            }
        }
    }
}

/// One #VMEXIT as the processor would record it: the exit code and information, the
/// state it leaves (RIP, NRIP), the fetched instruction bytes, the guest registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptedExit {
    code: u64,
    fields: [(Field, u64); MAX_SCRIPTED_FIELDS],
    len: usize,
    overflow: bool,
    gprs: [Option<u64>; 16],
    bytes: [u8; 15],
    byte_count: u8,
}

/// EXITINFO1 of a nested page fault on a read of the final guest-physical address with
/// the entry not present, as a user access (every nested walk is one).
const NPF_READ: u64 = (1 << 32) | (1 << 2);

impl ScriptedExit {
    /// An exit with code `code` and nothing else set.
    pub fn new(code: u64) -> ScriptedExit {
        ScriptedExit {
            code,
            fields: [(fields::EXITINFO1, 0); MAX_SCRIPTED_FIELDS],
            len: 0,
            overflow: false,
            gprs: [None; 16],
            bytes: [0; 15],
            byte_count: 0,
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

    /// Also set guest register `reg` at the exit (RSP is a VMCB field: use
    /// [`ScriptedExit::field`]).
    pub fn gpr(mut self, reg: Gpr, value: u64) -> ScriptedExit {
        if let Some(slot) = self.gprs.get_mut(reg as usize) {
            *slot = Some(value);
        }
        self
    }

    /// Also record the instruction bytes decode assists fetch (at most 15).
    pub fn bytes(mut self, bytes: &[u8]) -> ScriptedExit {
        let n = bytes.len().min(15);
        self.bytes[..n].copy_from_slice(&bytes[..n]);
        self.byte_count = n as u8;
        self
    }

    /// An instruction exit at `rip` whose instruction is `len` bytes long (NRIP).
    fn instruction(c: u64, rip: u64, len: u64) -> ScriptedExit {
        ScriptedExit::new(c)
            .field(fields::RIP, rip)
            .field(fields::NRIP, rip.wrapping_add(len))
    }

    /// CPUID (0F A2) at `rip` with EAX = `leaf`, ECX = `subleaf`.
    pub fn cpuid(rip: u64, leaf: u32, subleaf: u32) -> ScriptedExit {
        ScriptedExit::instruction(code::CPUID, rip, 2)
            .gpr(Gpr::Rax, leaf.into())
            .gpr(Gpr::Rcx, subleaf.into())
    }

    /// RDMSR (0F 32) at `rip` with ECX = `index`.
    pub fn rdmsr(rip: u64, index: u32) -> ScriptedExit {
        ScriptedExit::instruction(code::MSR, rip, 2)
            .field(fields::EXITINFO1, 0)
            .gpr(Gpr::Rcx, index.into())
    }

    /// WRMSR (0F 30) at `rip` of `value` (EDX:EAX) to MSR `index`.
    pub fn wrmsr(rip: u64, index: u32, value: u64) -> ScriptedExit {
        ScriptedExit::instruction(code::MSR, rip, 2)
            .field(fields::EXITINFO1, 1)
            .gpr(Gpr::Rcx, index.into())
            .gpr(Gpr::Rax, value & 0xffff_ffff)
            .gpr(Gpr::Rdx, value >> 32)
    }

    /// VMMCALL (0F 01 D9) at `rip`.
    pub fn vmmcall(rip: u64) -> ScriptedExit {
        ScriptedExit::instruction(code::VMMCALL, rip, 3)
    }

    /// HLT (F4) at `rip`.
    pub fn hlt(rip: u64) -> ScriptedExit {
        ScriptedExit::instruction(code::HLT, rip, 1)
    }

    /// OUT of `size` bytes (1, 2 or 4; anything else is taken as 4) of RAX to `port`:
    /// `OUT DX, AL/AX/EAX` (1 byte, 2 with the operand-size prefix for AX) with DX =
    /// `port`, or, with `immediate`, `OUT imm8, AL/AX/EAX` (2 or 3 bytes). EXITINFO2
    /// holds the next RIP, as it does for every I/O exit.
    pub fn out(rip: u64, port: u16, size: u8, immediate: bool, rax: u64) -> ScriptedExit {
        // EXITINFO1: OUT (bit 0 clear), SZ8/16/32 in bits 6:4, 64-bit addressing (bit 9,
        // as in long mode), the port in bits 31:16.
        let size_bit = match size {
            1 => 1,
            2 => 2,
            _ => 4,
        };
        let info1 = (size_bit << 4) | (1 << 9) | (u64::from(port) << 16);
        let len = u64::from(immediate) + 1 + u64::from(size == 2);
        let exit = ScriptedExit::instruction(code::IOIO, rip, len)
            .field(fields::EXITINFO1, info1)
            .field(fields::EXITINFO2, rip.wrapping_add(len))
            .gpr(Gpr::Rax, rax);
        if immediate {
            exit
        } else {
            exit.gpr(Gpr::Rdx, port.into())
        }
    }

    /// A nested page fault at `rip` on a data read of guest-physical `gpa` (an MMIO
    /// load: the backend takes the instruction from the fetched bytes, or from guest
    /// memory through the guest's page tables).
    pub fn npf_read(rip: u64, gpa: u64) -> ScriptedExit {
        ScriptedExit::new(code::NPF)
            .field(fields::RIP, rip)
            .field(fields::EXITINFO1, NPF_READ)
            .field(fields::EXITINFO2, gpa)
    }

    /// Record this exit in `vmcb` and `gprs`, as the processor does at #VMEXIT.
    pub fn record(&self, vmcb: &mut InMemoryVmcb, gprs: &mut Gprs) -> Result<(), VmcbError> {
        vmcb.set_exit_info(fields::EXITCODE, self.code)?;
        vmcb.set_exit_info(fields::EXITINTINFO, 0)?;
        for &(field, value) in self.fields.iter().take(self.len) {
            vmcb.set_exit_info(field, value)?;
        }
        vmcb.set_instruction_bytes(&self.bytes[..usize::from(self.byte_count)]);
        for (i, (slot, value)) in gprs.iter_mut().zip(self.gprs).enumerate() {
            if let Some(value) = value {
                *slot = value;
                if i == Gpr::Rax as usize {
                    vmcb.set_exit_info(fields::RAX, value)?;
                }
            }
        }
        Ok(())
    }
}

/// The MXCSR_MASK of a [`ReplayVmcb`]: every bit of the low 16, DAZ included.
pub const REPLAY_MXCSR_MASK: u32 = 0xffff;

/// The byte ranges each clean bit covers, for the clean-bit check.
const CLEAN_RANGES: [(u32, u16, u16); 11] = [
    (clean::INTERCEPTS, 0x000, 0x018),
    (clean::IOPM, 0x040, 0x050),
    (clean::ASID, 0x058, 0x05c),
    (clean::TPR, 0x060, 0x068),
    (clean::NP, 0x090, 0x098),
    (clean::CRX, 0x548, 0x560),
    (clean::DRX, 0x560, 0x570),
    (clean::DT, 0x460, 0x470),
    (clean::SEG, 0x400, 0x440),
    (clean::CR2, 0x640, 0x648),
    (clean::LBR, 0x670, 0x698),
];

/// An in-memory VMCB whose VMRUNs replay a script of exits (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct ReplayVmcb {
    vmcb: InMemoryVmcb,
    repeat: ScriptedExit,
    remaining: u64,
    last: ScriptedExit,
    runs: u64,
    invlpgas: u64,
    /// The processor's CR2 as [`SvmProcessor::load_cr2`] set it, and how often it did.
    processor_cr2: u64,
    cr2_loads: u64,
    /// The VMCB as the last #VMEXIT left it (what the processor caches), once there was
    /// one (allocated up front: the exit path allocates nothing).
    cached: InMemoryVmcb,
    has_cached: bool,
    checking_clean_bits: bool,
    clean_violations: u64,
    /// TSC_AUX, which on hardware lives in the processor.
    tsc_aux: u64,
    /// DR0-DR3, which on hardware live in the processor.
    dr: [u64; 4],
    /// The x87/MMX/SSE state, which on hardware lives in the processor.
    fpu: FxsaveArea,
    fxrstors: u64,
}

impl ReplayVmcb {
    /// A zeroed VMCB that replays `repeat` `count` times, then `last` for ever.
    pub fn new(
        repeat: ScriptedExit,
        count: u64,
        last: ScriptedExit,
    ) -> Result<ReplayVmcb, ReplayError> {
        // Check both scripts once, so that `run` cannot fail on them.
        for script in [&repeat, &last] {
            if script.overflow {
                return Err(ReplayError::TooManyFields);
            }
            let mut scratch = InMemoryVmcb::new();
            for &(field, value) in script.fields.iter().take(script.len) {
                scratch
                    .set_exit_info(field, value)
                    .map_err(|_| ReplayError::BadField(field))?;
            }
        }
        Ok(ReplayVmcb {
            vmcb: InMemoryVmcb::new(),
            repeat,
            remaining: count,
            last,
            runs: 0,
            invlpgas: 0,
            processor_cr2: 0,
            cr2_loads: 0,
            cached: InMemoryVmcb::new(),
            has_cached: false,
            checking_clean_bits: false,
            clean_violations: 0,
            tsc_aux: 0,
            dr: [0; 4],
            fpu: FxsaveArea::zeroed(),
            fxrstors: 0,
        })
    }

    /// Replay the repeated exit `count` more times before the last one.
    pub fn rearm(&mut self, count: u64) {
        self.remaining = count;
    }

    /// Replace the script (the VMCB keeps its contents).
    pub fn rescript(
        &mut self,
        repeat: ScriptedExit,
        count: u64,
        last: ScriptedExit,
    ) -> Result<(), ReplayError> {
        let checked = ReplayVmcb::new(repeat, count, last)?;
        self.repeat = checked.repeat;
        self.remaining = checked.remaining;
        self.last = checked.last;
        Ok(())
    }

    /// VMRUNs so far.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// INVLPGAs so far.
    pub fn invlpgas(&self) -> u64 {
        self.invlpgas
    }

    /// The processor's CR2 as the vCPU last loaded it, and how many loads there were.
    pub fn processor_cr2(&self) -> (u64, u64) {
        (self.processor_cr2, self.cr2_loads)
    }

    /// FXRSTORs so far.
    pub fn fxrstors(&self) -> u64 {
        self.fxrstors
    }

    /// Check the clean bits from now on (see the module documentation).
    pub fn check_clean_bits(mut self) -> ReplayVmcb {
        self.checking_clean_bits = true;
        self
    }

    /// VMRUNs that marked clean a field that had changed since the last #VMEXIT.
    pub fn clean_violations(&self) -> u64 {
        self.clean_violations
    }

    /// The VMCB as the vCPU left it.
    pub fn vmcb(&self) -> &InMemoryVmcb {
        &self.vmcb
    }

    /// Count the clean bits set over fields that changed since the last #VMEXIT.
    fn count_clean_violations(&mut self) {
        let clean_bits = self.vmcb.read(fields::VMCB_CLEAN) as u32;
        if !self.has_cached {
            // The first VMRUN loads everything whatever the bits say; a processor
            // would, as the VMCB is new to it.
            return;
        }
        for (bit, start, end) in CLEAN_RANGES {
            let range = usize::from(start)..usize::from(end);
            if clean_bits & bit != 0
                && self.vmcb.bytes()[range.clone()] != self.cached.bytes()[range]
            {
                self.clean_violations += 1;
            }
        }
    }
}

impl VmcbAccess for ReplayVmcb {
    #[inline]
    fn read(&self, field: Field) -> u64 {
        self.vmcb.read(field)
    }

    #[inline]
    fn write(&mut self, field: Field, value: u64) -> Result<(), VmcbError> {
        self.vmcb.write(field, value)
    }
}

impl SvmProcessor for ReplayVmcb {
    /// Records the next scripted exit.
    unsafe fn run(&mut self, gprs: &mut Gprs, _timer_ticks: Option<u64>) {
        self.runs = self.runs.wrapping_add(1);
        if self.checking_clean_bits {
            self.count_clean_violations();
        }
        let script = if self.remaining > 0 {
            self.remaining -= 1;
            &self.repeat
        } else {
            &self.last
        };
        // The scripts were checked by `new`: recording cannot fail.
        let _ = script.record(&mut self.vmcb, gprs);
        if self.checking_clean_bits {
            self.cached.copy_from(&self.vmcb);
            self.has_cached = true;
        }
    }

    unsafe fn load_cr2(&mut self, cr2: u64) {
        self.cr2_loads = self.cr2_loads.wrapping_add(1);
        self.processor_cr2 = cr2;
    }

    unsafe fn invlpga(&mut self, _gva: u64, _asid: u32) {
        self.invlpgas = self.invlpgas.wrapping_add(1);
    }

    unsafe fn read_msr(&self, _index: u32) -> u64 {
        self.tsc_aux
    }

    unsafe fn write_msr(&mut self, _index: u32, value: u64) {
        self.tsc_aux = value;
    }

    fn tsc(&self) -> u64 {
        // SAFETY: RDTSC only reads the counter; user mode may execute it unless the OS
        // set CR4.TSD, which Linux does not by default.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    unsafe fn read_dr(&self, n: u8) -> u64 {
        self.dr[usize::from(n & 3)]
    }

    unsafe fn write_dr(&mut self, n: u8, value: u64) {
        self.dr[usize::from(n & 3)] = value;
    }

    /// Stores what FXSAVE64 stores: the held state and this stand-in's MXCSR_MASK.
    unsafe fn fxsave(&self, area: &mut FxsaveArea) {
        let held = self.fpu.as_bytes();
        let out = area.as_bytes_mut();
        out[..28].copy_from_slice(&held[..28]);
        for n in 0..8 {
            out[32 + 16 * n..48 + 16 * n].copy_from_slice(&held[32 + 16 * n..48 + 16 * n]);
        }
        out[160..416].copy_from_slice(&held[160..416]);
        area.set_mxcsr_mask(REPLAY_MXCSR_MASK);
    }

    /// Holds what FXRSTOR64 loads.
    unsafe fn fxrstor(&mut self, area: &FxsaveArea) {
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
}

impl SvmVcpu<ReplayVmcb> {
    /// A vCPU of the processor described by `caps` on `replay`: the VMCB set up as
    /// [`SvmVcpu::enable`] sets it up, then a power-on reset.
    pub fn replay(
        caps: SvmCaps,
        config: SvmConfig,
        replay: ReplayVmcb,
    ) -> Result<SvmVcpu<ReplayVmcb>, EnableError> {
        let asids = crate::asid::AsidAllocator::new(caps.asids).ok_or(EnableError::Caps(
            crate::caps::CapsError::NoAsids(caps.asids),
        ))?;
        let asids = alloc::rc::Rc::new(core::cell::RefCell::new(asids));
        let mut vcpu = SvmVcpu::assemble(replay, caps, config, asids)?;
        vcpu.setup().map_err(EnableError::Vmcb)?;
        Ok(vcpu)
    }

    /// The replaying VMCB (to re-arm its script between runs).
    pub fn replay_mut(&mut self) -> &mut ReplayVmcb {
        self.processor_mut()
    }

    /// The replaying VMCB.
    pub fn replay_vmcb(&self) -> &ReplayVmcb {
        self.processor()
    }
}
