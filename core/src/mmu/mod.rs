//! The guest's memory: the guest-physical map ([`memory`]), the guest page-table
//! walker ([`walk`]), and the record of pages whose code vCPUs hold decoded
//! ([`code_pages`]).

pub mod code_pages;
pub mod memory;
pub mod walk;
