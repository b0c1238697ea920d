//! What the guest's CPU model lets it use, taken from its CPUID policy when the core sets
//! it ([`opsvisor_core::X86Ops::set_cpuid`]): the CR4 bits that exist, the XCR0 state
//! components, and the instructions whose feature bit gates them.
//!
//! The emulator implements every feature of [`CpuidPolicy::emulator`]; a smaller model
//! turns features off, and then the guest sees what a processor without them does: #GP
//! for their CR4 bits, #UD for their instructions (RDTSCP, RDPID, INVPCID, STAC/CLAC,
//! XSAVEOPT, XSAVEC). Instruction-set extensions whose instructions need no bit of
//! CR4 (SSE4.2, BMI, ...) keep running when a model hides them, as under KVM, which
//! cannot make them fault either.

use opsvisor_core::cpuid::{CpuidPolicy, Feature};

/// The parts of the CPU model the emulator consults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// CR4 bits the guest may set.
    pub cr4_allowed: u64,
    /// XCR0 bits the guest may set (0 without XSAVE).
    pub xcr0_supported: u64,
    /// RDTSCP.
    pub rdtscp: bool,
    /// RDPID.
    pub rdpid: bool,
    /// INVPCID.
    pub invpcid: bool,
    /// SMAP: STAC and CLAC.
    pub smap: bool,
    /// XSAVEOPT.
    pub xsaveopt: bool,
    /// XSAVEC.
    pub xsavec: bool,
    /// The linear-address width the processor supports (57 with LA57, else 48), for the
    /// canonical checks of addresses loaded into registers (MSRs, descriptor-table
    /// bases), which do not depend on the paging mode.
    pub max_la_bits: u32,
}

impl Features {
    /// The features of `policy`.
    pub fn from_policy(policy: &CpuidPolicy) -> Features {
        Features {
            cr4_allowed: policy.cr4_allowed(),
            xcr0_supported: policy.xcr0_supported(),
            rdtscp: policy.has_feature(Feature::Rdtscp),
            rdpid: policy.has_feature(Feature::Rdpid),
            invpcid: policy.has_feature(Feature::Invpcid),
            smap: policy.has_feature(Feature::Smap),
            xsaveopt: policy.has_feature(Feature::Xsaveopt),
            xsavec: policy.has_feature(Feature::Xsavec),
            max_la_bits: policy.virt_addr_bits(),
        }
    }
}

impl Default for Features {
    /// Everything the emulator implements.
    fn default() -> Self {
        Features::from_policy(&CpuidPolicy::emulator())
    }
}
