//! The debug-exit port: a guest write of V ends the run with exit status `(V << 1) | 1`,
//! as QEMU's `isa-debug-exit` device does, so a guest reports pass/fail the same way on
//! opsvisor and on QEMU.

/// The port QEMU's test setups use (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The exit status a write of `value` produces. The status is what a process sees, so it
/// is truncated to 8 bits the way `exit(2)` truncates it.
pub fn exit_status(value: u32) -> i32 {
    (((u64::from(value) << 1) | 1) & 0xff) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matches_qemu_isa_debug_exit() {
        assert_eq!(exit_status(0), 1);
        assert_eq!(exit_status(0x10), 0x21);
        assert_eq!(exit_status(0x7f), 0xff);
        // QEMU's exit(2) keeps the low 8 bits.
        assert_eq!(exit_status(0x80), 1);
    }
}
