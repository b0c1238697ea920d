//! Exit handlers, one exit family per file. Each is an `impl Vm` block: the handlers
//! reach the vCPU only through [`crate::X86Ops`], so they are the same for every backend.

mod cpuid;
mod cr8;
mod failure;
mod hlt;
pub mod hypercall;
mod io;
mod mmio;
mod msr;
pub mod xsetbv;
