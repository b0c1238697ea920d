//! The local APIC (xAPIC MMIO and x2APIC MSRs, timer on the guest's TSC clock).
//!
//! INTERFACE STUB — being implemented; signatures are fixed.

/// Default xAPIC MMIO base.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// First x2APIC MSR (0x800); the range is 0x800..=0x8ff.
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;

/// Why an APIC access must raise #GP in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicFault;

/// One vCPU's local APIC.
#[derive(Debug)]
pub struct LocalApic {}

impl LocalApic {
    /// A power-on APIC with this ID: enabled in xAPIC mode at the default base, software
    /// disabled (SVR bit 8 clear), every LVT masked.
    pub fn new(apic_id: u32) -> LocalApic {
        let _ = apic_id;
        todo!()
    }
    /// IA32_APIC_BASE.
    pub fn base_msr(&self) -> u64 {
        todo!()
    }
    /// Write IA32_APIC_BASE; illegal transitions (SDM 3A 11.12.5) and reserved bits fault.
    pub fn set_base_msr(&mut self, value: u64) -> Result<(), ApicFault> {
        let _ = value;
        todo!()
    }
    /// Guest-physical base of the xAPIC MMIO page while the APIC is in xAPIC mode.
    pub fn mmio_base(&self) -> Option<u64> {
        todo!()
    }
    /// A 32-bit read of the register at `offset` in the xAPIC page.
    pub fn mmio_read(&mut self, offset: u32, now: u64) -> u32 {
        let _ = (offset, now);
        todo!()
    }
    /// A 32-bit write to the register at `offset` in the xAPIC page.
    pub fn mmio_write(&mut self, offset: u32, value: u32, now: u64) {
        let _ = (offset, value, now);
        todo!()
    }
    /// RDMSR of an x2APIC MSR (0x800..=0x8ff).
    pub fn x2apic_read(&mut self, msr: u32, now: u64) -> Result<u64, ApicFault> {
        let _ = (msr, now);
        todo!()
    }
    /// WRMSR of an x2APIC MSR.
    pub fn x2apic_write(&mut self, msr: u32, value: u64, now: u64) -> Result<(), ApicFault> {
        let _ = (msr, value, now);
        todo!()
    }
    /// IA32_TSC_DEADLINE.
    pub fn tsc_deadline(&self) -> u64 {
        todo!()
    }
    /// Write IA32_TSC_DEADLINE (ignored unless the timer is in TSC-deadline mode).
    pub fn set_tsc_deadline(&mut self, value: u64, now: u64) {
        let _ = (value, now);
        todo!()
    }
    /// Advance the timer to `now`, raising its interrupt if it expired.
    pub fn update(&mut self, now: u64) {
        let _ = now;
        todo!()
    }
    /// The guest TSC at which the timer next fires, if it is armed.
    pub fn next_deadline(&self) -> Option<u64> {
        todo!()
    }
    /// The highest-priority requested interrupt that may be delivered now (IRR above PPR).
    pub fn pending_interrupt(&self) -> Option<u8> {
        todo!()
    }
    /// The interrupt `vector` is being delivered: move it from IRR to ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        let _ = vector;
        todo!()
    }
    /// Whether any interrupt is requested at all (to end HLT: any IRR bit, whatever the
    /// priority, does not wake HLT; only a deliverable one does).
    pub fn has_deliverable(&self) -> bool {
        self.pending_interrupt().is_some()
    }
}
