//! Architectural constants the core's handlers share (Intel SDM volume 3A).

/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET (always 1 on processors since the i486).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// IA32_EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the local APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// CR4.OSXSAVE.
pub const CR4_OSXSAVE: u64 = 1 << 18;

/// Whether exception `vector` is a fault (SDM 3A table 6-1; the same rule as KVM's
/// `exception_type`): every vector below 32 but #DB (a trap: instruction breakpoints are
/// not emulated), NMI, #BP, #OF, #DF and #MC. A fault's pushed RFLAGS image has RF set
/// (SDM 3A 17.3.1.1), which both the emulator's delivery and VMX's injection apply.
pub fn exception_is_fault(vector: u8) -> bool {
    vector < 32 && !matches!(vector, 1 | 2 | 3 | 4 | 8 | 18)
}
