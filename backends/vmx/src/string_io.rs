//! INS and OUTS (string port I/O), with and without REP, one element per exit.
//!
//! The element logic (segment checks, translation through core's walker, the completion
//! that moves RSI/RDI and the count) is core's, shared with SVM
//! ([`opsvisor_core::emulate::string_io`]); VMX adds only where the exit's operand comes
//! from (the VM-exit instruction information, or decoding the instruction when
//! IA32_VMX_BASIC bit 54 is clear). The tests below drive it through this backend's
//! exits on the replay VMCS.

pub use opsvisor_core::emulate::string_io::{
    code_bitness, decode_operand, start, AddressSize, Element, InsStore, Start, StringInsn,
    StringIoError, StringIoOperand,
};

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::caps::fixtures::{MsrFixture, CORE_I7_SKYLAKE_X};
    use crate::caps::VmxCaps;
    use crate::exits::reason;
    use crate::replay::{replay_phys, ReplayVmcs, ScriptedExit};
    use crate::vcpu::{VmxConfig, VmxFailure, VmxVcpu};
    use crate::vmcs::{fields, VmcsAccess};
    use opsvisor_core::exit::{Direction, Exit};
    use opsvisor_core::ops::RunLimit;
    use opsvisor_core::ops::{Gpr, SegReg, Segment, X86Ops};
    use opsvisor_core::GuestMemory;

    const CR0_AM: u64 = 1 << 18;
    const EFER_LMA: u64 = 1 << 10;
    const RFLAGS_DF: u64 = 1 << 10;
    const RFLAGS_AC: u64 = 1 << 18;

    const LIMIT: RunLimit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 1000,
    };
    const RIP: u64 = 0x1000;
    const DF: u64 = RFLAGS_DF | 2;
    const COM1: u16 = 0x3f8;

    /// The exit after the scripted one: a HLT that leaves RIP alone, so that the RIP
    /// the string instruction left can be checked after the run that reports it.
    fn hlt() -> ScriptedExit {
        ScriptedExit::new(reason::HLT)
    }

    /// VM-exit instruction information of INS/OUTS: address size in bits 9:7, segment
    /// in bits 17:15.
    fn info(address_size: AddressSize, segment: SegReg) -> u64 {
        let size = match address_size {
            AddressSize::Bits16 => 0,
            AddressSize::Bits32 => 1,
            AddressSize::Bits64 => 2,
        };
        (size << 7) | ((segment as u64) << 15)
    }

    /// An INS (`input`) or OUTS exit at [`RIP`] of an instruction `len` bytes long.
    fn string_exit(
        len: u64,
        port: u16,
        size: u8,
        input: bool,
        rep: bool,
        info: u64,
    ) -> ScriptedExit {
        // SDM 3C table 28-5: size - 1, bit 3 IN, bit 4 string, bit 5 REP, port 31:16.
        let size_bits = match size {
            1 => 0,
            2 => 1,
            _ => 3,
        };
        let qualification = size_bits
            | (u64::from(input) << 3)
            | (1 << 4)
            | (u64::from(rep) << 5)
            | (u64::from(port) << 16);
        ScriptedExit::new(reason::IO_INSTRUCTION)
            .field(fields::GUEST_RIP, RIP)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, len)
            .field(fields::EXIT_QUALIFICATION, qualification)
            .field(fields::VM_EXIT_INSTRUCTION_INFO, info)
    }

    fn vcpu_of(fixture: &MsrFixture, exit: ScriptedExit, count: u64) -> VmxVcpu<ReplayVmcs> {
        let caps = VmxCaps::read(fixture).unwrap();
        let config = VmxConfig {
            to_phys: replay_phys,
            tsc_hz: 1_000_000_000,
        };
        let replay = ReplayVmcs::new(exit, count, hlt()).unwrap();
        VmxVcpu::replay(caps, config, replay).unwrap()
    }

    fn vcpu(exit: ScriptedExit, count: u64) -> VmxVcpu<ReplayVmcs> {
        vcpu_of(&CORE_I7_SKYLAKE_X, exit, count)
    }

    /// 32-bit flat protected mode, no paging.
    fn flat32(vcpu: &mut VmxVcpu<ReplayVmcs>) {
        vcpu.set_cr0(0x11);
        vcpu.set_segment(SegReg::Cs, &Segment::flat(8, Segment::CODE32));
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            vcpu.set_segment(seg, &Segment::flat(0x10, Segment::DATA));
        }
    }

    const PML4: u64 = 0x10000;
    const PDPT: u64 = 0x11000;
    const PD: u64 = 0x12000;
    const PT: u64 = 0x13000;
    const PTE_P: u64 = 1;
    const PTE_RW: u64 = 2;
    const PTE_PS: u64 = 1 << 7;
    /// Linear 0x30000 maps to this page; every other page of the first 2 MiB is
    /// identity-mapped.
    const REMAPPED: u64 = 0x50000;

    /// 64-bit mode with 4-level paging and CR0.WP over 4 MiB of RAM: the first 2 MiB
    /// in 4-KiB pages (identity, except linear 0x30000 → [`REMAPPED`]), 2..4 MiB as a
    /// read-only 2-MiB page, nothing above.
    fn long64(vcpu: &mut VmxVcpu<ReplayVmcs>) -> GuestMemory {
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        mem.write_u64(PML4, PDPT | PTE_P | PTE_RW).unwrap();
        mem.write_u64(PDPT, PD | PTE_P | PTE_RW).unwrap();
        mem.write_u64(PD, PT | PTE_P | PTE_RW).unwrap();
        mem.write_u64(PD + 8, (2 << 20) | PTE_P | PTE_PS).unwrap();
        for page in 0..512u64 {
            let frame = if page == 0x30 { REMAPPED } else { page << 12 };
            mem.write_u64(PT + 8 * page, frame | PTE_P | PTE_RW)
                .unwrap();
        }
        vcpu.set_efer(1 << 8);
        vcpu.set_cr4(1 << 5);
        vcpu.set_cr3(PML4);
        vcpu.set_cr0(0x8001_0011);
        vcpu.set_segment(SegReg::Cs, &Segment::flat(8, Segment::CODE64));
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            vcpu.set_segment(seg, &Segment::flat(0x10, Segment::DATA));
        }
        assert_ne!(vcpu.efer() & EFER_LMA, 0, "long mode is active");
        mem
    }

    fn io(port: u16, size: u8, direction: Direction, data: u32) -> Exit {
        Exit::Io {
            port,
            size,
            direction,
            data,
        }
    }

    /// The injected event as the replay left it (valid bit cleared at "delivery") and
    /// its error code.
    fn injected(vcpu: &VmxVcpu<ReplayVmcs>) -> (u64, u64) {
        let vmcs = vcpu.processor().vmcs();
        (
            vmcs.read(fields::VM_ENTRY_INTR_INFO).unwrap(),
            vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE).unwrap(),
        )
    }

    #[test]
    fn outsb_without_rep() {
        // OUTSB (6E), 32-bit addressing through DS.
        let exit = string_exit(
            1,
            COM1,
            1,
            false,
            false,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write_u8(0x2000, b'A').unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0x2000);
        vcpu.set_gpr(Gpr::Rcx, 7);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(
            e,
            io(COM1, 1, Direction::Write, 0x41),
            "{:?}",
            vcpu.last_failure()
        );
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001);
        assert_eq!(vcpu.gpr(Gpr::Rcx), 7, "no REP: the count is not used");
        assert_eq!(vcpu.rip(), RIP + 1);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
    }

    #[test]
    fn misaligned_element_at_cpl3_with_alignment_checks_is_an_ac() {
        // OUTSW (66 6F) from an odd address at CPL 3, CR0.AM and RFLAGS.AC set.
        let exit = string_exit(
            2,
            COM1,
            2,
            false,
            false,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        vcpu.set_cr0(0x11 | CR0_AM);
        let user_data = Segment {
            attr: Segment::DATA | (3 << 5),
            ..Segment::flat(0x23, Segment::DATA)
        };
        for seg in [SegReg::Ds, SegReg::Ss] {
            vcpu.set_segment(seg, &user_data);
        }
        vcpu.set_segment(
            SegReg::Cs,
            &Segment {
                attr: Segment::CODE32 | (3 << 5),
                ..Segment::flat(0x1b, Segment::CODE32)
            },
        );
        vcpu.set_rflags(2 | RFLAGS_AC);
        vcpu.set_gpr(Gpr::Rsi, 0x2001);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt, "no I/O exit");
        assert_eq!(injected(&vcpu), (0xb11, 0));
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001);
    }

    #[test]
    fn rep_outsb_exits_once_per_element() {
        // REP OUTSB (F3 6E).
        let exit = string_exit(
            2,
            COM1,
            1,
            false,
            true,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 3);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x2000, b"xyz!").unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0x2000);
        vcpu.set_gpr(Gpr::Rcx, 3);
        for (i, &byte) in b"xyz".iter().enumerate() {
            let i = i as u64;
            let e = vcpu.run(&mut mem, &LIMIT);
            assert_eq!(e, io(COM1, 1, Direction::Write, byte.into()), "element {i}");
            vcpu.skip_emulated_instruction();
            assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001 + i);
            assert_eq!(vcpu.gpr(Gpr::Rcx), 2 - i);
            let rip = if i == 2 { RIP + 2 } else { RIP };
            assert_eq!(vcpu.rip(), rip, "RIP moves only when the count reaches 0");
        }
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(vcpu.processor().entries(), 4);
        assert_eq!(vcpu.last_failure(), None);
    }

    #[test]
    fn rep_insw_backwards_stores_before_the_next_entry() {
        // REP INSW (66 F3 6D) with DF = 1: RDI walks down.
        let exit = string_exit(
            3,
            0x1f0,
            2,
            true,
            true,
            info(AddressSize::Bits32, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 3);
        flat32(&mut vcpu);
        vcpu.set_rflags(DF);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(0x2ffc, &[0xee; 8]).unwrap();
        vcpu.set_gpr(Gpr::Rdi, 0x3000);
        vcpu.set_gpr(Gpr::Rcx, 3);
        vcpu.set_gpr(Gpr::Rax, 0x5555);
        for i in 0..3u64 {
            let e = vcpu.run(&mut mem, &LIMIT);
            assert_eq!(e, io(0x1f0, 2, Direction::Read, 0), "element {i}");
            if i > 0 {
                // The previous element's value is in memory now.
                let at = 0x3000 - 2 * (i - 1);
                assert_eq!(mem.read_u16(at).unwrap(), 0x1100 + i as u16 - 1);
            }
            vcpu.complete_pio_in(0x1100 + i as u32);
            assert_eq!(vcpu.gpr(Gpr::Rdi), 0x3000 - 2 * (i + 1));
            assert_eq!(vcpu.gpr(Gpr::Rcx), 2 - i);
            assert_eq!(vcpu.rip(), if i == 2 { RIP + 3 } else { RIP });
        }
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        let mut bytes = [0u8; 10];
        mem.read(0x2ffa, &mut bytes).unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0x02, 0x11, 0x01, 0x11, 0x00, 0x11, 0xee, 0xee],
            "three words at 0x2ffc, 0x2ffe, 0x3000 and nothing else"
        );
        assert_eq!(vcpu.gpr(Gpr::Rax), 0x5555, "INS leaves RAX alone");
    }

    #[test]
    fn rep_with_count_zero_retires_without_io() {
        // REP OUTSB with ECX = 0 (the upper half of RCX does not count at 32 bits).
        let exit = string_exit(
            2,
            COM1,
            1,
            false,
            true,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0x2000);
        vcpu.set_gpr(Gpr::Rcx, 0x1_0000_0000);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt, "no I/O exit");
        assert_eq!(vcpu.rip(), RIP + 2);
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2000);
        assert_eq!(vcpu.gpr(Gpr::Rcx), 0x1_0000_0000);
        assert_eq!(vcpu.processor().entries(), 2);
    }

    #[test]
    fn address_size_32_in_64_bit_mode() {
        // 67 F3 6E: REP OUTSB with ESI/ECX. DS's base does not apply in 64-bit mode.
        let exit = string_exit(
            3,
            COM1,
            1,
            false,
            true,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 2);
        let mut mem = long64(&mut vcpu);
        let ds = Segment {
            base: 0x8000,
            ..Segment::flat(0x10, Segment::DATA)
        };
        vcpu.set_segment(SegReg::Ds, &ds);
        mem.write(0x2000, b"ok").unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0xffff_ffff_0000_2000);
        vcpu.set_gpr(Gpr::Rcx, 0xdead_0000_0000_0002);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(
            e,
            io(COM1, 1, Direction::Write, b'o'.into()),
            "{:?}",
            vcpu.last_failure()
        );
        vcpu.skip_emulated_instruction();
        // The 32-bit forms zero-extend into the 64-bit registers.
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0x2001);
        assert_eq!(vcpu.gpr(Gpr::Rcx), 1);
        assert_eq!(vcpu.rip(), RIP);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            io(COM1, 1, Direction::Write, b'k'.into())
        );
        vcpu.skip_emulated_instruction();
        assert_eq!((vcpu.gpr(Gpr::Rsi), vcpu.gpr(Gpr::Rcx)), (0x2002, 0));
        assert_eq!(vcpu.rip(), RIP + 3);
    }

    #[test]
    fn unmapped_page_injects_a_page_fault() {
        // OUTSB from linear 4 MiB, which no page maps.
        let exit = string_exit(
            1,
            COM1,
            1,
            false,
            false,
            info(AddressSize::Bits64, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rsi, 4 << 20);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt, "no I/O exit");
        assert_eq!(vcpu.cr2(), 4 << 20);
        // #PF (14), hardware exception (3), error code delivered (bit 11); not present,
        // supervisor read.
        assert_eq!(injected(&vcpu), (0xb0e, 0));
        assert_eq!(vcpu.rip(), RIP, "the instruction does not retire");
        assert_eq!(vcpu.gpr(Gpr::Rsi), 4 << 20);
        assert_eq!(vcpu.last_failure(), None);
    }

    #[test]
    fn ins_into_a_read_only_page_faults_with_write_and_present() {
        // INSB (6C) to linear 2 MiB: mapped read-only, and CR0.WP is set.
        let exit = string_exit(
            1,
            0x60,
            1,
            true,
            false,
            info(AddressSize::Bits64, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rdi, 2 << 20);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(vcpu.cr2(), 2 << 20);
        assert_eq!(injected(&vcpu), (0xb0e, 3));
    }

    #[test]
    fn ins_element_crossing_a_page_is_split() {
        // INSD (6D) at linear 0x30ffe: two bytes in the remapped page, two in the next.
        let exit = string_exit(
            1,
            0x60,
            4,
            true,
            false,
            info(AddressSize::Bits64, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rdi, 0x30ffe);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), io(0x60, 4, Direction::Read, 0));
        vcpu.complete_pio_in(0x4433_2211);
        assert_eq!(vcpu.gpr(Gpr::Rdi), 0x31002);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(mem.read_u16(REMAPPED + 0xffe).unwrap(), 0x2211);
        assert_eq!(mem.read_u16(0x31000).unwrap(), 0x4433);
        assert_eq!(
            mem.read_u16(0x30ffe).unwrap(),
            0,
            "the identity page is untouched"
        );
    }

    #[test]
    fn real_mode_16_bit_forms_and_the_segment_limit() {
        // INSB (6C) at ES:FFFF in real mode: the last byte of the segment. DI wraps and
        // the upper bits of RDI are kept.
        let exit = string_exit(
            1,
            0x60,
            1,
            true,
            false,
            info(AddressSize::Bits16, SegReg::Es),
        );
        let mut first = vcpu(exit, 2);
        first.set_segment(SegReg::Es, &Segment::real_mode(0x1000, false));
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        first.set_gpr(Gpr::Rdi, 0xabcd_ffff);
        assert_eq!(first.run(&mut mem, &LIMIT), io(0x60, 1, Direction::Read, 0));
        first.complete_pio_in(0x5a);
        assert_eq!(first.gpr(Gpr::Rdi), 0xabcd_0000);
        assert_eq!(first.rip(), RIP + 1);
        // The next element is stored at the next entry, which exits again: DI = 0 now.
        assert_eq!(first.run(&mut mem, &LIMIT), io(0x60, 1, Direction::Read, 0));
        assert_eq!(mem.read_u8(0x1ffff).unwrap(), 0x5a);

        // INSW at ES:FFFF runs past the limit: #GP(0), without an error code in real mode.
        let exit = string_exit(
            1,
            0x60,
            2,
            true,
            false,
            info(AddressSize::Bits16, SegReg::Es),
        );
        let mut vcpu = vcpu(exit, 1);
        vcpu.set_segment(SegReg::Es, &Segment::real_mode(0x1000, false));
        vcpu.set_gpr(Gpr::Rdi, 0xffff);
        assert_eq!(vcpu.run(&mut mem, &LIMIT), Exit::Hlt);
        assert_eq!(injected(&vcpu).0, 0x30d);
        assert_eq!(vcpu.rip(), RIP);
    }

    #[test]
    fn string_io_to_mmio_ends_the_run() {
        let exit = string_exit(
            1,
            COM1,
            4,
            false,
            false,
            info(AddressSize::Bits32, SegReg::Ds),
        );
        let mut vcpu = vcpu(exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0xfee0_0000);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::EmulationFailure { rip: RIP }
        );
        assert_eq!(
            vcpu.last_failure(),
            Some(VmxFailure::StringIo(StringIoError::NotRam {
                linear: 0xfee0_0000,
                gpa: 0xfee0_0000
            }))
        );
    }

    /// A processor that does not report the INS/OUTS operand (IA32_VMX_BASIC bit 54).
    fn without_ins_outs_info() -> MsrFixture {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.basic &= !(1 << 54);
        fixture
    }

    #[test]
    fn unreported_address_size_is_decoded() {
        // 67 66 F3 6F in 32-bit code: REP OUTSW with SI/CX (16-bit addressing).
        let exit = string_exit(4, COM1, 2, false, true, 0);
        let mut vcpu = vcpu_of(&without_ins_outs_info(), exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        mem.write(RIP, &[0x67, 0x66, 0xf3, 0x6f]).unwrap();
        mem.write_u16(0x10, 0xbeef).unwrap();
        vcpu.set_gpr(Gpr::Rsi, 0xabcd_0010);
        vcpu.set_gpr(Gpr::Rcx, 0x1_0001);
        let e = vcpu.run(&mut mem, &LIMIT);
        assert_eq!(
            e,
            io(COM1, 2, Direction::Write, 0xbeef),
            "{:?}",
            vcpu.last_failure()
        );
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.gpr(Gpr::Rsi), 0xabcd_0012, "only SI moves");
        assert_eq!(vcpu.gpr(Gpr::Rcx), 0x1_0000, "only CX counts");
        assert_eq!(vcpu.rip(), RIP + 4);
    }

    #[test]
    fn undecodable_string_instruction_ends_the_run() {
        let exit = string_exit(1, COM1, 1, false, false, 0);
        let mut vcpu = vcpu_of(&without_ins_outs_info(), exit, 1);
        flat32(&mut vcpu);
        let mut mem = GuestMemory::with_ram(2 << 20).unwrap();
        // INSB where the exit says OUTS: the instruction changed under the exit.
        mem.write_u8(RIP, 0x6c).unwrap();
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::EmulationFailure { rip: RIP }
        );
        assert_eq!(
            vcpu.last_failure(),
            Some(VmxFailure::StringIo(StringIoError::Undecodable {
                rip: RIP
            }))
        );
    }

    /// MOV to/from CR8 (SDM 3C table 28-3): CR number, access type in bits 5:4, GPR in
    /// bits 11:8.
    fn mov_cr8(to: bool, gpr: Gpr, rip: u64) -> ScriptedExit {
        let qualification = 8 | (u64::from(!to) << 4) | ((gpr as u64) << 8);
        ScriptedExit::new(reason::CONTROL_REGISTER_ACCESS)
            .field(fields::GUEST_RIP, rip)
            .field(fields::VM_EXIT_INSTRUCTION_LEN, 4)
            .field(fields::EXIT_QUALIFICATION, qualification)
    }

    #[test]
    fn cr8_accesses_are_exits_to_the_core() {
        // CR8 is the local APIC's TPR, which the core holds: both directions exit with
        // the register operand, and the MOV retires when the core skips it.
        let mut vcpu = vcpu(mov_cr8(true, Gpr::Rax, RIP), 1);
        let mut mem = long64(&mut vcpu);
        vcpu.set_gpr(Gpr::Rax, 9);
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Cr8 {
                direction: Direction::Write,
                gpr: Gpr::Rax
            },
            "{:?}",
            vcpu.last_failure()
        );
        assert_eq!(vcpu.rip(), RIP, "not retired until the core skips it");
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.rip(), RIP + 4);
        vcpu.replay_mut()
            .rescript(mov_cr8(false, Gpr::R10, 0x2000), 1, hlt())
            .unwrap();
        assert_eq!(
            vcpu.run(&mut mem, &LIMIT),
            Exit::Cr8 {
                direction: Direction::Read,
                gpr: Gpr::R10
            }
        );
        vcpu.set_gpr(Gpr::R10, 9);
        vcpu.skip_emulated_instruction();
        assert_eq!(vcpu.rip(), 0x2004);
        assert_eq!(vcpu.gpr(Gpr::R10), 9);
    }
}
