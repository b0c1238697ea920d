//! #UD (exception intercept vector 6, exit code 0x46): VMCALL is the hypercall on every
//! backend, but an AMD processor does not know it and raises #UD. As KVM does on AMD, the
//! backend intercepts #UD, reads the instruction at CS:RIP through the guest's page
//! tables, and completes a VMCALL exactly as a VMMCALL exit (core's hypercall, with its
//! CPL rule, the instruction retired); any other #UD goes back to the guest unchanged.
//!
//! The instruction is decoded the way the emulator backend decodes it (iced-x86 with no
//! vendor option), so that both answer the same bytes alike: segment-override and
//! address-size prefixes, and REX in 64-bit mode, are ignored as on an Intel processor,
//! while 66, F2 and F3 (which select other instructions in the 0F 01 opcode space) and
//! LOCK make the bytes something other than VMCALL, and so does running past 15 bytes.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};

/// The length of the VMCALL at the start of `bytes` for a code size of `bitness` (16,
/// 32 or 64), or `None` when the bytes do not hold one.
pub fn vmcall_length(bytes: &[u8], bitness: u32) -> Option<u8> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE).ok()?;
    if !decoder.can_decode() {
        return None;
    }
    let mut insn = Instruction::default();
    decoder.decode_out(&mut insn);
    if insn.code() != Code::Vmcall {
        return None;
    }
    u8::try_from(insn.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};
    use super::vmcall_length;

    #[test]
    fn invalid_opcode_is_the_backends() {
        assert_eq!(
            decode(code::EXCP0 + 6, &[]),
            Ok(SvmExit::Backend(BackendExit::InvalidOpcode))
        );
    }

    #[test]
    fn vmcall_in_every_code_size() {
        for bits in [16, 32, 64] {
            assert_eq!(vmcall_length(&[0x0f, 0x01, 0xc1], bits), Some(3), "{bits}");
            // Bytes after the instruction do not matter.
            assert_eq!(
                vmcall_length(&[0x0f, 0x01, 0xc1, 0x0f, 0x0b], bits),
                Some(3),
                "{bits}"
            );
        }
    }

    #[test]
    fn ignored_prefixes_count_in_the_length() {
        // CS and ES overrides, the address-size prefix, REX.W in 64-bit mode.
        assert_eq!(vmcall_length(&[0x2e, 0x0f, 0x01, 0xc1], 32), Some(4));
        assert_eq!(vmcall_length(&[0x67, 0x0f, 0x01, 0xc1], 16), Some(4));
        assert_eq!(vmcall_length(&[0x48, 0x0f, 0x01, 0xc1], 64), Some(4));
        // Twelve prefixes: 15 bytes in all, the longest instruction there is.
        let mut long = [0x26u8; 15];
        long[12..].copy_from_slice(&[0x0f, 0x01, 0xc1]);
        assert_eq!(vmcall_length(&long, 64), Some(15));
    }

    #[test]
    fn other_bytes_are_not_vmcall() {
        for bytes in [
            // UD2, VMMCALL (which exits on its own), VMLAUNCH, MONITOR.
            &[0x0f, 0x0b][..],
            &[0x0f, 0x01, 0xd9],
            &[0x0f, 0x01, 0xc2],
            &[0x0f, 0x01, 0xc8],
            // Operand-size, REPNE and REP prefixes select other instructions; LOCK is
            // #UD on any of them.
            &[0x66, 0x0f, 0x01, 0xc1],
            &[0xf2, 0x0f, 0x01, 0xc1],
            &[0xf3, 0x0f, 0x01, 0xc1],
            &[0xf0, 0x0f, 0x01, 0xc1],
            // Cut short (the fetch ran into memory that is not RAM), or nothing.
            &[0x0f, 0x01],
            &[],
        ] {
            for bits in [16, 32, 64] {
                assert_eq!(vmcall_length(bytes, bits), None, "{bytes:02x?} {bits}");
            }
        }
        // REX is DEC outside 64-bit mode; 13 prefixes make 16 bytes.
        assert_eq!(vmcall_length(&[0x48, 0x0f, 0x01, 0xc1], 32), None);
        let mut long = [0x26u8; 16];
        long[13..].copy_from_slice(&[0x0f, 0x01, 0xc1]);
        assert_eq!(vmcall_length(&long, 64), None);
        // An unknown code size.
        assert_eq!(vmcall_length(&[0x0f, 0x01, 0xc1], 8), None);
    }
}
