//! The instruction behind an MMIO access: an EPT violation on an address that is not RAM
//! gives the guest-physical address and the direction but not the operand, so the
//! backend decodes the instruction. The decoder is core's, shared with SVM's nested page
//! faults ([`opsvisor_core::emulate::mmio`]).

pub use opsvisor_core::emulate::mmio::{decode, MmioDest, MmioInstruction};
