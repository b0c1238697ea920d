//! opsvisor core: everything that is the same whichever backend runs the guest.
//!
//! The backends (VMX, SVM, the emulator) implement [`X86Ops`], modelled on Linux KVM's
//! `struct kvm_x86_ops`; the core owns the machine and its run loop ([`vm::Vm`], KVM's
//! `struct kvm`), the vCPUs ([`vcpu::Vcpu`], `struct kvm_vcpu`), the exit handlers, the
//! CPUID and MSR policy, guest memory and the page-table walker, the local APIC, the
//! platform devices and the guest loaders. The concrete backend set is named by the
//! `opsvisor-backends` crate through the generic [`Backend`] enum.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

// `ops` comes first: enum_dispatch must see the trait before the enum that names it,
// so that the generated impl is emitted beside the enum where its types are in scope.
pub mod ops;

pub mod acpi;
pub mod apic;
pub mod arch;
pub mod backend;
pub mod cpu_model;
pub mod cpuid;
pub mod devices;
pub mod emulate;
pub mod exit;
pub mod exits;
pub mod fpu;
pub mod irq;
pub mod loader;
pub mod mmu;
pub mod msr;
pub mod pc;
pub mod platform;
pub mod sched;
pub mod snapshot;
pub mod stats;
#[cfg(test)]
mod test_support;
pub mod vcpu;
pub mod vm;

pub use backend::{Backend, EmuSlot, SvmSlot, Unavailable, VmxSlot};
pub use exit::{Exit, ExitKind};
pub use mmu::memory::{GuestMemory, MemError};
pub use ops::X86Ops;
