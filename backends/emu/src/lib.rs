//! opsvisor's emulator backend: a software x86-64 CPU on the iced-x86 decoder.
#![no_std]

extern crate alloc;
