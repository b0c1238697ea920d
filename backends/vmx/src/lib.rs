//! opsvisor's Intel VT-x backend (SDM volume 3C).
//!
//! This part is host-testable: the VMCS field encodings and access trait
//! ([`vmcs`]), the capability MSRs ([`caps`]) and the controls computed from them
//! ([`controls`]), exit decoding into core's [`opsvisor_core::Exit`] ([`exits`]),
//! event injection ([`event`]), the VMXON decisions and guest CR rules ([`enable`](mod@crate::enable)), EPT
//! construction ([`ept_tables`]), the MSR and I/O bitmaps ([`bitmaps`]), guest state in
//! the VMCS ([`state`]) and the MMIO instruction decoder ([`mmio`]). The part that needs
//! the processor, VMXON, VM entry/exit and `impl X86Ops for VmxVcpu`, is in `vcpu`
//! (x86-64 only); `replay` runs that vCPU's exit-handling half on the host against
//! scripted exits, for tests and benchmarks.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod bitmaps;
pub mod caps;
pub mod controls;
pub mod debug;
pub mod enable;
pub mod ept_tables;
pub mod event;
pub mod exits;
pub mod mmio;
pub mod page;
#[cfg(target_arch = "x86_64")]
pub mod replay;
pub mod root;
pub mod state;
pub mod string_io;
#[cfg(target_arch = "x86_64")]
pub mod vcpu;
pub mod vmcs;

#[cfg(target_arch = "x86_64")]
pub use vcpu::{VmxConfig, VmxFailure, VmxRoot, VmxVcpu};
