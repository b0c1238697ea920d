//! Exit handlers, one exit family per file. Each is an `impl Vm` block that handles an
//! exit of the current vCPU ([`crate::vm::Vm::cur`]): the handlers reach its backend only
//! through [`crate::X86Ops`], so they are the same for every backend. The commonest exits
//! that need little of the machine are answered by free functions of their family's file,
//! which the run loop's handler calls and so does the quick path (`quick.rs`), which
//! answers them during the backend's run.

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
