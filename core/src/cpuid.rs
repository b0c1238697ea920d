//! CPUID policy: what the guest sees, exactly what the backend implements.
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

/// The CPU model the guest sees.
#[derive(Clone, Debug)]
pub struct CpuidPolicy {}

impl CpuidPolicy {
    /// The policy for the emulator backend: the features it implements and no more.
    pub fn emulator() -> CpuidPolicy {
        todo!()
    }
    /// The result of CPUID for `leaf`/`subleaf`, as [EAX, EBX, ECX, EDX]. `apic_id` fills
    /// the initial APIC ID fields; `osxsave` mirrors CR4.OSXSAVE into leaf 1 ECX;
    /// `apic_enabled` mirrors IA32_APIC_BASE.EN into leaf 1 EDX.APIC.
    pub fn lookup(&self, leaf: u32, subleaf: u32, dynamic: &CpuidDynamic) -> [u32; 4] {
        let _ = (leaf, subleaf, dynamic);
        todo!()
    }
}

/// The parts of CPUID that depend on the vCPU's current state.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidDynamic {
    /// The vCPU's APIC ID.
    pub apic_id: u32,
    /// CR4.OSXSAVE.
    pub osxsave: bool,
    /// IA32_APIC_BASE.EN.
    pub apic_enabled: bool,
}
