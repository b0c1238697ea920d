//! ELF32/ELF64 parsing for the loaders (program headers of x86 and x86-64 executables).
//!
//! INTERFACE STUB — being implemented.
