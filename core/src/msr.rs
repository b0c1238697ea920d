//! MSR policy: the table of MSRs the core emulates, one implementation for every backend.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

use crate::apic::LocalApic;
use crate::cpuid::CpuidPolicy;
use crate::ops::X86Ops;

/// An MSR access the guest must see fail with #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

/// What an MSR access may touch besides the MSR table itself.
pub struct MsrContext<'a, B: X86Ops> {
    /// The vCPU (EFER, segment bases, SYSCALL/SYSENTER MSRs, PAT live in its state).
    pub vcpu: &'a mut B,
    /// The local APIC (IA32_APIC_BASE, the x2APIC range, IA32_TSC_DEADLINE).
    pub apic: &'a mut LocalApic,
    /// The CPU model (which MSRs exist depends on the features it reports).
    pub cpuid: &'a CpuidPolicy,
    /// The host clock in guest TSC ticks, before the guest's TSC offset is added.
    pub host_tsc: u64,
}

/// The MSRs the core holds, and the count of accesses to MSRs nobody implements.
#[derive(Clone, Debug)]
pub struct MsrState {}

impl MsrState {
    /// Power-on values.
    pub fn new() -> MsrState {
        todo!()
    }
    /// The offset from the host clock to the guest's TSC (IA32_TSC writes move it).
    pub fn tsc_offset(&self) -> i64 {
        todo!()
    }
    /// RDMSR.
    pub fn read<B: X86Ops>(&mut self, index: u32, cx: MsrContext<'_, B>) -> Result<u64, MsrFault> {
        let _ = (index, cx);
        todo!()
    }
    /// WRMSR.
    pub fn write<B: X86Ops>(&mut self, index: u32, value: u64, cx: MsrContext<'_, B>) -> Result<(), MsrFault> {
        let _ = (index, value, cx);
        todo!()
    }
    /// Accesses to unknown MSRs so far (each raised #GP in the guest).
    pub fn unknown_accesses(&self) -> u64 {
        todo!()
    }
    /// The most recent unknown MSR index, for the report.
    pub fn last_unknown(&self) -> Option<u32> {
        todo!()
    }
}

impl Default for MsrState {
    fn default() -> Self {
        Self::new()
    }
}
