//! Exit handlers, one exit family per file. Each is an `impl Vm` block that handles an
//! exit of the current vCPU ([`crate::vm::Vm::cur`]): the handlers reach its backend only
//! through [`crate::X86Ops`], so they are the same for every backend.

mod cpuid;
mod cr8;
mod failure;
mod hlt;
pub mod hypercall;
mod io;
mod mmio;
pub(crate) mod msr;
mod pause;
pub(crate) mod quick;
pub mod xsetbv;
