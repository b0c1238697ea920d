//! Differential runs between two backends inside one host: the same case, run from the
//! same initial state on each backend, must end in the same architectural state.
//!
//! The bare-metal image runs every case of a pack (see [`case`]) on the VMX backend and
//! on the emulator compiled into it, compares the final states ([`snapshot`]) and, for a
//! case that differs, shrinks it to the fewest instructions and the simplest registers
//! that still differ ([`minimize`]). `cargo xtask vmx-diff` generates the cases with
//! proptest (feature `generate`), packs them into a boot module, boots the image under
//! Bochs (or QEMU/KVM, or a USB stick on bare metal) and reports the differences.
//!
//! Everything here is generic over [`opsvisor_core::X86Ops`]: the host tests run cases on
//! the emulator, the image runs them on VMX and the emulator through the same code.

#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod case;
pub mod flags;
pub mod layout;
pub mod minimize;
pub mod run;
pub mod snapshot;

#[cfg(feature = "generate")]
pub mod generate;

pub use case::{Case, Item, Mode};
pub use run::Runner;
pub use snapshot::Snapshot;
