//! Running one case on one backend through core's run loop.
//!
//! A [`Runner`] owns a backend, its 2 MiB of guest RAM and a platform. Each case gets a
//! fresh [`Vm`] around them (fresh core MSRs, APIC and devices), so nothing one case does
//! can leak into the next except what the backend itself keeps — which
//! [`crate::layout::prepare`] resets. The RAM is the same allocation from case to case,
//! so a hardware backend builds its second-level page tables once.

use crate::case::Case;
use crate::flags::{undefined_flags, undefined_fsw};
use crate::layout::{self, SetupError};
use crate::snapshot::{compare_tolerating, Difference, Ending, Snapshot, Tolerances};
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::platform::Platform;
use opsvisor_core::vm::{Vm, VmConfig};
use opsvisor_core::{GuestMemory, MemError, X86Ops};

/// Instructions a case may retire on a backend that counts them (the emulator). Cases
/// have no backward branches and small string counts: a few hundred at most.
pub const CASE_INSTRUCTION_LIMIT: u64 = 100_000;
/// Host time a case may take on a backend that does not count instructions.
pub const CASE_TIMEOUT_NS: u64 = 500_000_000;

/// The run-loop settings for a case.
pub fn case_config() -> VmConfig {
    VmConfig {
        max_instructions: Some(CASE_INSTRUCTION_LIMIT),
        timeout_ns: Some(CASE_TIMEOUT_NS),
        ..VmConfig::default()
    }
}

/// One backend with its guest RAM, ready to run cases.
pub struct Runner<B: X86Ops, P: Platform> {
    // `Option` only so the parts can move into a `Vm` for a run and back.
    vcpu: Option<B>,
    mem: Option<GuestMemory>,
    platform: Option<P>,
    cpuid: CpuidPolicy,
    config: VmConfig,
}

impl<B: X86Ops, P: Platform> Runner<B, P> {
    /// A runner for `vcpu`; allocates the environment's RAM.
    pub fn new(vcpu: B, platform: P, cpuid: CpuidPolicy) -> Result<Self, MemError> {
        Ok(Runner {
            vcpu: Some(vcpu),
            mem: Some(GuestMemory::with_ram(layout::RAM)?),
            platform: Some(platform),
            cpuid,
            config: case_config(),
        })
    }

    /// Run `case` from its initial state and capture the final one.
    pub fn run(&mut self, case: &Case) -> Result<Snapshot, SetupError> {
        let (Some(mut vcpu), Some(mut mem), Some(platform)) =
            (self.vcpu.take(), self.mem.take(), self.platform.take())
        else {
            // Only a run that panicked midway could leave the parts out; nothing here
            // panics, but say so rather than unwrap.
            return Err(SetupError::Unavailable);
        };
        if let Err(e) = layout::prepare(case, &mut mem, &mut vcpu) {
            self.vcpu = Some(vcpu);
            self.mem = Some(mem);
            self.platform = Some(platform);
            return Err(e);
        }
        let mut vm = Vm::new(vcpu, mem, platform, self.cpuid.clone(), self.config);
        let outcome = vm.run();
        let snapshot = Snapshot::capture(&vm.bsp().backend, outcome);
        let (backends, mem, platform) = vm.into_parts();
        self.vcpu = backends.into_iter().next();
        self.mem = Some(mem);
        self.platform = Some(platform);
        Ok(snapshot)
    }

    /// The guest RAM as the last case left it.
    pub fn memory(&self) -> Option<&GuestMemory> {
        self.mem.as_ref()
    }

    /// The backend.
    pub fn vcpu(&self) -> Option<&B> {
        self.vcpu.as_ref()
    }

    /// Give the backend back.
    pub fn into_vcpu(self) -> Option<B> {
        self.vcpu
    }
}

/// What running one case on two backends found.
#[derive(Debug)]
pub enum Verdict {
    /// Both ended in the same state.
    Same,
    /// Both ran out of their limits: nothing to compare (a case that loops).
    Unfinished,
    /// The states differ.
    Differ(alloc::vec::Vec<Difference>),
}

/// Run `case` on both runners and compare.
pub fn run_pair<A: X86Ops, P: Platform, B: X86Ops, Q: Platform>(
    left: &mut Runner<A, P>,
    right: &mut Runner<B, Q>,
    case: &Case,
) -> Result<Verdict, SetupError> {
    run_pair_tolerating(left, right, case, Tolerances::default())
}

/// [`run_pair`], the comparison tolerating what `tolerances` names of the left runner's
/// processor.
pub fn run_pair_tolerating<A: X86Ops, P: Platform, B: X86Ops, Q: Platform>(
    left: &mut Runner<A, P>,
    right: &mut Runner<B, Q>,
    case: &Case,
    tolerances: Tolerances,
) -> Result<Verdict, SetupError> {
    let l = left.run(case)?;
    let r = right.run(case)?;
    if l.ending == Ending::Unfinished && r.ending == Ending::Unfinished {
        return Ok(Verdict::Unfinished);
    }
    let (Some(lm), Some(rm)) = (left.memory(), right.memory()) else {
        return Err(SetupError::Unavailable);
    };
    let diffs = compare_tolerating(
        &l,
        lm,
        &r,
        rm,
        undefined_flags(case),
        undefined_fsw(case),
        tolerances,
    );
    Ok(if diffs.is_empty() {
        Verdict::Same
    } else {
        Verdict::Differ(diffs)
    })
}
