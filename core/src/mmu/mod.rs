//! The guest's memory: the guest-physical map ([`memory`]) and the guest page-table
//! walker ([`walk`]).

pub mod memory;
pub mod walk;
