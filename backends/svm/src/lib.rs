//! opsvisor's AMD-V backend (AMD64 Architecture Programmer's Manual volume 2, chapter
//! 15, "Secure Virtual Machine").
//!
//! This part is host-testable: the VMCB behind a small trait ([`vmcb`]: the page VMRUN
//! runs, and an in-memory one for tests), the capabilities from CPUID ([`caps`]), the
//! decisions that turn SVM on ([`enable`](mod@crate::enable)), the intercepts
//! ([`intercepts`]), the I/O and MSR permission maps ([`bitmaps`]), ASIDs ([`asid`]),
//! event injection and re-injection ([`event`]), guest state in the VMCB ([`state`]),
//! exit decoding into core's [`opsvisor_core::Exit`] one family per file ([`exits`]) and
//! VMRUN's consistency checks ([`consistency`]). The nested page tables are core's
//! ([`opsvisor_core::mmu::slat`]), as are the MMIO operand decoder and string I/O
//! ([`opsvisor_core::emulate`]). The part that needs the processor, the world switch
//! ([`hardware`]) and `impl X86Ops for SvmVcpu` ([`vcpu`]), is x86-64 only;
//! [`replay`] runs that vCPU's exit-handling half on the host against scripted exits,
//! for tests and benchmarks.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod asid;
pub mod bitmaps;
pub mod caps;
pub mod consistency;
pub mod enable;
pub mod event;
pub mod exits;
#[cfg(target_arch = "x86_64")]
pub mod hardware;
pub mod intercepts;
pub mod page;
#[cfg(target_arch = "x86_64")]
pub mod replay;
pub mod state;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
#[cfg(target_arch = "x86_64")]
pub mod vcpu;
pub mod vmcb;

#[cfg(target_arch = "x86_64")]
pub use hardware::SvmHost;
pub use vcpu::{HostTimer, SvmConfig, SvmFailure, SvmVcpu};
