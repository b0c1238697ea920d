//! The guest's memory: the guest-physical map ([`memory`]), the guest page-table walker
//! ([`walk`]) and the second-level tables hardware backends translate it with
//! ([`slat`]: EPT and NPT).

pub mod memory;
pub mod slat;
pub mod walk;
