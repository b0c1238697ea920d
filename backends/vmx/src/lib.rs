//! opsvisor's Intel VT-x backend (SDM volume 3C).
//!
//! This part is host-testable: the VMCS field encodings and access trait
//! ([`vmcs`]), the capability MSRs ([`caps`]) and the controls computed from them
//! ([`controls`]), exit decoding into core's [`opsvisor_core::Exit`] ([`exits`]) and
//! event injection ([`event`]).
#![no_std]
#![deny(missing_docs)]

pub mod caps;
pub mod controls;
pub mod event;
pub mod exits;
pub mod vmcs;
