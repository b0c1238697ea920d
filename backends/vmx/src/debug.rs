//! The debug traps of instructions the core completes. The guest owns the debug
//! registers (no MOV-DR exiting; DR7 and IA32_DEBUGCTL are switched by the VMCS, DR0-DR3
//! and DR6 stay in the processor), so breakpoints and single-stepping work natively
//! except where an instruction VM-exits: the processor then never completes it, and the
//! backend that skips it must raise what the instruction would have raised after it, as
//! KVM does when it skips an emulated instruction. The traps go into the guest's
//! pending-debug-exceptions field, which VM entry delivers as a #DB before the next
//! instruction (SDM 3C 27.7.3). The bits are core's
//! ([`opsvisor_core::emulate::debug_trap`], which SVM shares).

pub use opsvisor_core::emulate::debug_trap::{pending_after_skip, DebugState, BS, TF};
