//! The intercepts this backend runs a guest with (APM 2 15.9-15.14): what must reach
//! core, what the host must keep, and what is refused.
//!
//! - Physical interrupts, NMIs, SMIs and INIT exit, so that the host keeps them (with
//!   V_INTR_MASKING the guest's RFLAGS.IF masks only its own interrupts).
//! - CPUID, HLT, port I/O (through the all-ones I/O permission map), MSRs (through the
//!   MSR permission map), XSETBV, INVD/WBINVD and VMMCALL go to core.
//! - #UD exits: VMCALL, which an AMD processor does not know, is the hypercall as
//!   VMMCALL is (see `exits::invalid_opcode`); any other #UD goes back to the guest.
//! - RDTSC and RDTSCP exit so that the guest's TSC is core's 1 GHz clock, as on VMX.
//! - Reads and writes of CR8 exit: CR8 is the local APIC's task-priority register, which
//!   core holds (one value with the TPR of the xAPIC page and the x2APIC MSR), as on
//!   VMX. V_TPR is not used: core's APIC decides which interrupt is delivered and injects
//!   it with EVENTINJ, and the interrupt window ignores V_TPR.
//! - Writes of CR4 exit when the guest's CPU model lacks a feature whose CR4 bit the
//!   processor has, so that setting that bit raises #GP (see `SvmVcpu::set_cpuid`);
//!   INVPCID exits when the model lacks it and the processor has it, and raises #UD.
//! - Shutdown exits: a triple fault in the guest must not shut the processor down.
//! - The SVM instructions (VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA) exit and
//!   become #UD: the guest's CPUID does not offer SVM. VMRUN's intercept is also one of
//!   VMRUN's consistency checks.
//! - RDPMC and RDPRU (host counters), MONITOR and MWAIT (they would idle the physical
//!   processor) are refused with #UD, as VMX refuses them.
//!
//! The virtual-interrupt window (VINTR), IRET (NMI blocking) and #DB (the step after
//! that IRET) are turned on and off by the vCPU as it needs them.

use crate::vmcb::fields::{self, misc1, misc2};
use crate::vmcb::{VmcbAccess, VmcbError};

/// The read intercept of CR8 in the CR vector (bit 8).
pub const CR8_READ: u32 = 1 << 8;
/// The write intercept of CR4 in the CR vector (bit 16 + 4).
pub const CR4_WRITE: u32 = 1 << 20;
/// The write intercept of CR8 in the CR vector (bit 16 + 8).
pub const CR8_WRITE: u32 = 1 << 24;
/// The intercept of #UD in the exception vector (bit 6).
pub const INVALID_OPCODE: u32 = 1 << 6;

/// The intercept vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intercepts {
    /// CR reads (15:0) and writes (31:16).
    pub cr: u32,
    /// DR reads (15:0) and writes (31:16).
    pub dr: u32,
    /// Exception vectors.
    pub exceptions: u32,
    /// Vector 3.
    pub misc1: u32,
    /// Vector 4.
    pub misc2: u32,
    /// Vector 5.
    pub misc3: u32,
}

impl Intercepts {
    /// The intercepts every guest of this backend runs with (see the module
    /// documentation).
    pub const BASE: Intercepts = Intercepts {
        cr: CR8_READ | CR8_WRITE,
        dr: 0,
        exceptions: INVALID_OPCODE,
        misc1: misc1::INTR
            | misc1::NMI
            | misc1::SMI
            | misc1::INIT
            | misc1::RDTSC
            | misc1::RDPMC
            | misc1::CPUID
            | misc1::INVD
            | misc1::HLT
            | misc1::INVLPGA
            | misc1::IOIO_PROT
            | misc1::MSR_PROT
            | misc1::SHUTDOWN,
        misc2: misc2::VMRUN
            | misc2::VMMCALL
            | misc2::VMLOAD
            | misc2::VMSAVE
            | misc2::STGI
            | misc2::CLGI
            | misc2::SKINIT
            | misc2::RDTSCP
            | misc2::WBINVD
            | misc2::MONITOR
            | misc2::MWAIT
            | misc2::XSETBV
            | misc2::RDPRU,
        misc3: 0,
    };

    /// Write the vectors into the VMCB.
    pub fn write<V: VmcbAccess>(&self, vmcb: &mut V) -> Result<(), VmcbError> {
        vmcb.write(fields::INTERCEPT_CR, self.cr.into())?;
        vmcb.write(fields::INTERCEPT_DR, self.dr.into())?;
        vmcb.write(fields::INTERCEPT_EXCEPTIONS, self.exceptions.into())?;
        vmcb.write(fields::INTERCEPT_MISC1, self.misc1.into())?;
        vmcb.write(fields::INTERCEPT_MISC2, self.misc2.into())?;
        vmcb.write(fields::INTERCEPT_MISC3, self.misc3.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcb::InMemoryVmcb;

    #[test]
    fn the_base_set() {
        let i = Intercepts::BASE;
        // VMRUN must be intercepted (a VMRUN consistency check).
        assert_ne!(i.misc2 & misc2::VMRUN, 0);
        // What core handles, and what protects the host.
        for bit in [
            misc1::CPUID,
            misc1::HLT,
            misc1::IOIO_PROT,
            misc1::MSR_PROT,
            misc1::SHUTDOWN,
            misc1::INTR,
            misc1::NMI,
        ] {
            assert_ne!(i.misc1 & bit, 0, "{bit:#x}");
        }
        // With nested paging, neither CR3 nor INVLPG nor #PF need the host; task
        // switches and PAUSE run in the guest. CR8 is core's TPR.
        assert_eq!(i.cr, CR8_READ | CR8_WRITE);
        assert_eq!(i.misc3, 0);
        // #UD alone, for VMCALL.
        assert_eq!(i.exceptions, INVALID_OPCODE);
        for bit in [
            misc1::INVLPG,
            misc1::TASK_SWITCH,
            misc1::PAUSE,
            misc1::IRET,
            misc1::VINTR,
        ] {
            assert_eq!(i.misc1 & bit, 0, "{bit:#x}");
        }
        let mut vmcb = InMemoryVmcb::new();
        i.write(&mut vmcb).unwrap();
        assert_eq!(vmcb.read(fields::INTERCEPT_MISC1), u64::from(i.misc1));
        assert_eq!(vmcb.read(fields::INTERCEPT_MISC2), u64::from(i.misc2));
        assert_eq!(vmcb.read(fields::INTERCEPT_EXCEPTIONS), 1 << 6);
    }
}
