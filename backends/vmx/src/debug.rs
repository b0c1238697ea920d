//! The debug traps of instructions the backend or the core completes. The guest owns the debug
//! registers (no MOV-DR exiting; DR7 and IA32_DEBUGCTL are switched by the VMCS, DR0-DR3
//! and DR6 stay in the processor), so breakpoints and single-stepping work natively
//! except where an instruction VM-exits: the processor then never completes it, and the
//! backend that skips it must raise what the instruction would have raised after it, as
//! KVM does when it skips an emulated instruction: after every instruction the backend
//! completes itself (MOV CR, INVLPG, RDTSC/RDTSCP, string I/O elements) and every one the
//! core completes (port I/O, MMIO moves, the last element of a string instruction on
//! MMIO, the other exits), but HLT.
//!
//! The traps go into the guest's pending-debug-exceptions field, not an injected #DB.
//! A VM entry that is not vectoring delivers the field as the processor delivers a trap
//! of the previous instruction (SDM 3C 26.7.3, delivery of pending debug exceptions
//! after VM entry): with that priority (before an NMI or external interrupt), held off
//! by MOV-SS blocking, and writing DR6 itself (B0-B3 and BS) as #DB does. An injected
//! #DB writes neither DR6 nor DR7 (the backend would have to, as SVM does), and the
//! field is where the processor itself keeps a trap still pending at a VM exit (27.3.4,
//! saving the pending debug exceptions): the state the guest would be in had the
//! instruction run. An entry that injects an event discards the field, so while it
//! holds a trap the vCPU allows no interrupt or NMI injection, and a trap is not raised
//! over an event already queued. The bits are core's
//! ([`opsvisor_core::emulate::debug_trap`], which SVM shares).

pub use opsvisor_core::emulate::debug_trap::{Completing, DebugState, BS, ENABLED_BP, TF};
