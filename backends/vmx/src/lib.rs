//! opsvisor's Intel VT-x backend (SDM volume 3C).
#![no_std]
