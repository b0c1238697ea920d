//! The guest's memory: the guest-physical map ([`memory`]), the guest page-table walker
//! ([`walk`]), the second-level tables hardware backends translate it with ([`slat`]:
//! EPT and NPT), and the record of pages whose code vCPUs hold decoded
//! ([`code_pages`]).

pub mod code_pages;
pub mod memory;
pub mod slat;
pub mod walk;
