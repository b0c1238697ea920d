//! Bare-metal pieces that the opsvisor image (`image/`, the hypervisor as a
//! multiboot2/PVH kernel) and the guest corpus (`guests/`, multiboot v1 test kernels) share.
//!
//! - [`port`]: port I/O (the `x86_64` crate's);
//! - [`uart`]: a polled 16550 UART;
//! - [`desc`]: the 64-bit TSS and its descriptor, the flat GDT segments, an IDT of
//!   interrupt gates (the `x86_64` crate's structures);
//! - [`long_mode_switch!`] and [`long_mode_page_tables!`]: the 32-bit boot code that
//!   identity-maps the first 4 GiB and enters long mode, as `global_asm!` text.
//!
//! The callers are kernels that run at CPL 0 and own the machine's devices, which is why
//! port I/O is exposed as safe functions. The crate builds for `x86_64-unknown-none` (its
//! users) and for the x86-64 host (its unit tests).

#![cfg_attr(not(test), no_std)]

#[cfg(not(target_arch = "x86_64"))]
compile_error!("opsvisor-bare is x86-64 code");

pub mod boot;
pub mod desc;
pub mod port;
pub mod uart;
