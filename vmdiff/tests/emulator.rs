//! The environment and the comparison, checked on the emulator backend: every mode
//! starts where the layout says, faults end in the right handler, and the comparison
//! finds exactly the fields two different runs leave different.

use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::ops::{Gpr, SegReg};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_emu::EmuVcpu;
use opsvisor_vmdiff::case::{BranchOp, Case, Item, Mode};
use opsvisor_vmdiff::layout::{self, CODE, DATA_POINTER};
use opsvisor_vmdiff::minimize::minimize;
use opsvisor_vmdiff::run::{run_pair, Runner, Verdict};
use opsvisor_vmdiff::snapshot::Ending;

fn runner() -> Runner<EmuVcpu, CapturePlatform> {
    Runner::new(
        EmuVcpu::new(),
        CapturePlatform::new(),
        CpuidPolicy::emulator(),
    )
    .unwrap()
}

fn case(mode: Mode, items: Vec<Item>) -> Case {
    Case {
        mode,
        user: false,
        gprs: [0x1111; 16],
        rflags: 0,
        cr0: 0,
        cr4: 0,
        efer: 0,
        seed: 1,
        fpu_seed: 0x5eed,
        items,
    }
}

/// The linear address the final RIP points at.
fn linear_rip(s: &opsvisor_vmdiff::Snapshot) -> u64 {
    s.segments[SegReg::Cs as usize].base + s.regs.rip
}

#[test]
fn every_mode_runs_to_the_final_hlt() {
    let mut r = runner();
    for mode in Mode::ALL {
        // A NOP, then the environment's HLT.
        let s = r.run(&case(mode, vec![Item::Insn(vec![0x90])])).unwrap();
        assert_eq!(s.ending, Ending::Halted, "{mode:?}");
        assert_eq!(linear_rip(&s), CODE + 2, "{mode:?}");
        assert_eq!(s.vector(), None);
    }
}

#[test]
fn faults_end_in_their_handler_with_the_frame_on_the_stack() {
    let mut r = runner();
    for mode in Mode::ALL {
        // UD2 is #UD (6) everywhere; INT3 is #BP (3).
        let s = r
            .run(&case(mode, vec![Item::Insn(vec![0x0f, 0x0b])]))
            .unwrap();
        assert_eq!(s.vector(), Some(6), "{mode:?}");
        let s = r.run(&case(mode, vec![Item::Insn(vec![0xcc])])).unwrap();
        assert_eq!(s.vector(), Some(3), "{mode:?}");
    }
    // In 64-bit mode the frame's RIP is the faulting instruction's.
    let s = r
        .run(&case(
            Mode::Long64,
            vec![Item::Insn(vec![0x90]), Item::Insn(vec![0x0f, 0x0b])],
        ))
        .unwrap();
    let mem = r.memory().unwrap();
    let rsp = s.regs.gpr[Gpr::Rsp as usize];
    assert_eq!(mem.read_u64(rsp).unwrap(), CODE + 1);
}

#[test]
fn memory_outside_ram_faults_instead_of_reaching_nothing() {
    let mut r = runner();
    // mov eax, [0x300000] (past the 2 MiB of RAM): #GP past the segment limit in the
    // 32-bit modes, #PF in 64-bit mode (no limits; the page is not mapped).
    let load = Item::Insn(vec![0x8b, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00]);
    for mode in [
        Mode::Protected32,
        Mode::Paged32,
        Mode::Pae32,
        Mode::Compat32,
    ] {
        let s = r.run(&case(mode, vec![load.clone()])).unwrap();
        assert_eq!(s.vector(), Some(13), "{mode:?}");
    }
    let s = r.run(&case(Mode::Long64, vec![load])).unwrap();
    assert_eq!(s.vector(), Some(14));
    assert_eq!(s.control[1], 0x30_0000);
}

#[test]
fn branches_skip_items() {
    let mut r = runner();
    // stc; jc over "mov eax, 5"; the final HLT.
    let s = r
        .run(&case(
            Mode::Protected32,
            vec![
                Item::Insn(vec![0xf9]),
                Item::Branch {
                    op: BranchOp::Jcc,
                    cond: 2,
                    skip: 1,
                },
                Item::Insn(vec![0xb8, 5, 0, 0, 0]),
            ],
        ))
        .unwrap();
    assert_eq!(s.regs.gpr[Gpr::Rax as usize], 0x1111);
    assert_eq!(s.ending, Ending::Halted);
}

#[test]
fn the_comparison_names_what_differs() {
    let mut left = runner();
    let mut right = runner();
    let same = case(Mode::Long64, vec![Item::Insn(vec![0x48, 0x01, 0xc8])]);
    assert!(matches!(
        run_pair(&mut left, &mut right, &same).unwrap(),
        Verdict::Same
    ));

    // Different cases stand in for two backends that disagree: mov [rbx+4], al vs a NOP
    // of the same length: the code bytes differ, and RAM at DATA_POINTER + 4; nothing else.
    let a = left
        .run(&case(
            Mode::Long64,
            vec![Item::Insn(vec![0x88, 0x43, 0x04])],
        ))
        .unwrap();
    let b = right
        .run(&case(
            Mode::Long64,
            vec![Item::Insn(vec![0x0f, 0x1f, 0x00])],
        ))
        .unwrap();
    let diffs = opsvisor_vmdiff::snapshot::compare(
        &a,
        left.memory().unwrap(),
        &b,
        right.memory().unwrap(),
        0,
        0,
    );
    let names: Vec<&str> = diffs.iter().map(|d| d.what.as_str()).collect();
    let mut want: Vec<String> = (0..3).map(|i| format!("memory {:#x}", CODE + i)).collect();
    want.push(format!("memory {:#x}", DATA_POINTER + 4));
    assert_eq!(names, want);
}

#[test]
fn a_difference_minimizes_to_the_instruction_that_causes_it() {
    // Stand-in for a backend bug: the right side runs the case with its CPUID removed.
    let mut left = runner();
    let mut right = runner();
    let cpuid = Item::Insn(vec![0x0f, 0xa2]);
    let big = case(
        Mode::Long64,
        vec![
            Item::Insn(vec![0x90]),
            Item::Insn(vec![0x31, 0xc0]),
            cpuid.clone(),
            Item::Insn(vec![0xf8]),
        ],
    );
    let (small, _) = minimize(&big, |c| {
        let mut without = c.clone();
        without.items.retain(|i| *i != cpuid);
        let a = left.run(c).unwrap();
        let b = right.run(&without).unwrap();
        !opsvisor_vmdiff::snapshot::compare(
            &a,
            left.memory().unwrap(),
            &b,
            right.memory().unwrap(),
            0,
            0,
        )
        .is_empty()
    });
    assert_eq!(small.items, vec![cpuid]);
}

#[test]
fn state_does_not_leak_from_one_case_to_the_next() {
    let mut r = runner();
    let plain = case(Mode::Long64, vec![Item::Insn(vec![0x90])]);
    let first = r.run(&plain).unwrap();
    // wrmsr FS_BASE (ecx = 0xc0000100, edx:eax = 0x1111:0x1111), lgdt-free but stateful.
    let mut wr = case(
        Mode::Long64,
        vec![
            Item::Insn(vec![0xb9, 0x00, 0x01, 0x00, 0xc0]),
            Item::Insn(vec![0x0f, 0x30]),
        ],
    );
    wr.gprs[Gpr::Rdx as usize] = 0;
    let s = r.run(&wr).unwrap();
    assert_eq!(s.msrs[0], Some(0x1111));
    assert_eq!(r.run(&plain).unwrap(), first);
    assert_eq!(
        layout::handler_vector(layout::HANDLERS + 8 * 13 + 1),
        Some(13)
    );
}

#[test]
fn every_case_gets_the_whole_instruction_budget() {
    use opsvisor_core::X86Ops;
    use opsvisor_vmdiff::run::CASE_INSTRUCTION_LIMIT;
    let mut r = runner();
    // jmp $ never ends: each run must stop at its own budget, not at the vCPU's
    // lifetime count (the emulator never resets that).
    let spin = case(Mode::Long64, vec![Item::Insn(vec![0xeb, 0xfe])]);
    for _ in 0..3 {
        let before = r.vcpu().unwrap().instructions_retired().unwrap();
        let s = r.run(&spin).unwrap();
        assert_eq!(s.ending, Ending::Unfinished);
        let ran = r.vcpu().unwrap().instructions_retired().unwrap() - before;
        assert!(ran >= CASE_INSTRUCTION_LIMIT, "ran {ran}");
    }
}

#[test]
fn user_mode_cases_fault_into_ring_0_on_the_kernel_stack() {
    use opsvisor_vmdiff::layout::KERNEL_STACK_TOP;
    let mut r = runner();
    for mode in [
        Mode::Protected32,
        Mode::Paged32,
        Mode::Pae32,
        Mode::Long64,
        Mode::Compat32,
    ] {
        let user = |items| Case {
            user: true,
            ..case(mode, items)
        };
        // CLI at CPL 3 with IOPL 0: #GP(0), delivered on the ring-0 stack.
        let s = r.run(&user(vec![Item::Insn(vec![0xfa])])).unwrap();
        assert_eq!(s.vector(), Some(13), "{mode:?}");
        assert_eq!(s.segments[SegReg::Cs as usize].selector & 3, 0);
        let rsp = s.regs.gpr[Gpr::Rsp as usize];
        assert!(
            rsp < KERNEL_STACK_TOP && rsp > KERNEL_STACK_TOP - 64,
            "{mode:?} {rsp:#x}"
        );
        // INT 0x80 has a DPL-3 gate; INT 0x20 does not (#GP).
        let s = r.run(&user(vec![Item::Insn(vec![0xcd, 0x80])])).unwrap();
        assert_eq!(s.vector(), Some(0x80), "{mode:?}");
        let s = r.run(&user(vec![Item::Insn(vec![0xcd, 0x20])])).unwrap();
        assert_eq!(s.vector(), Some(13), "{mode:?}");
        // The code itself runs: a NOP reaches the final HLT, which is privileged (#GP).
        let s = r.run(&user(vec![Item::Insn(vec![0x90])])).unwrap();
        assert_eq!(s.vector(), Some(13), "{mode:?}");
    }
}

#[test]
fn user_mode_port_access_follows_the_tss_io_bitmap() {
    // The environment's TSS has I/O map base 0: the bitmap is the TSS's own bytes, so
    // byte 5 (bits of ports 0x28-0x2f) is the second byte of the ring-0 stack pointer,
    // 0x20: port 0x2d is denied, 0x2c allowed; ports past the TSS limit are denied.
    let mut r = runner();
    for mode in [Mode::Protected32, Mode::Long64] {
        for (port, vector) in [(0x2cu64, 13), (0x2d, 13), (0x400, 13), (0x80, 13)] {
            let mut c = Case {
                user: true,
                // out dx, al
                ..case(mode, vec![Item::Insn(vec![0xee])])
            };
            c.gprs[Gpr::Rdx as usize] = port;
            let s = r.run(&c).unwrap();
            // A permitted OUT retires and the final HLT faults (RIP after the OUT);
            // a denied one faults on the OUT itself.
            let denied = matches!(port, 0x2d | 0x400);
            let mem = r.memory().unwrap();
            let frame_rip = mem
                .read_u32(s.regs.gpr[Gpr::Rsp as usize] + if mode == Mode::Long64 { 8 } else { 4 })
                .unwrap();
            assert_eq!(s.vector(), Some(vector));
            assert_eq!(
                u64::from(frame_rip),
                CODE + u64::from(!denied),
                "{mode:?} port {port:#x}"
            );
        }
    }
}

#[test]
fn a_faulting_x87_store_leaves_the_status_word_alone() {
    // Found by vmx-diff (seed 7, case 1071): fbstp tbyte [ebx-0x22] at CPL 3 with CR0.AM
    // and RFLAGS.AC, ST(0) empty. The misaligned destination raises #AC before the stack
    // underflow is noticed: FSW keeps IE and SF clear (Bochs, and the SDM's order).
    let hex = "010100000000000000000000000000000000000000000000000070e6b2aebcb12ee4080000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000453804000000000022000500000000000000000000000000000000000000000000000000000000001d3408647b523a9c01000003df73de";
    let case = Case::decode(&opsvisor_vmdiff::case::from_hex(hex).unwrap()).unwrap();
    let mut r = runner();
    let s = r.run(&case).unwrap();
    assert_eq!(s.vector(), Some(17));
    let fsw = s.fpu.unwrap().fsw();
    assert_eq!(fsw & 0x41, 0, "fsw {fsw:#x}");
}

#[test]
fn pae_paging_maps_the_environment() {
    use opsvisor_vmdiff::layout::{data_bytes, DATA, DATA_SIZE, PAE_PDPT};
    let mut r = runner();
    // mov eax, [ebx+4]: the data area is mapped through the PDPT, directory and table.
    let s = r
        .run(&case(Mode::Pae32, vec![Item::Insn(vec![0x8b, 0x43, 0x04])]))
        .unwrap();
    assert_eq!(s.vector(), None);
    assert_eq!(s.control[3] & (1 << 5), 1 << 5, "CR4.PAE");
    assert_eq!(s.control[2], PAE_PDPT);
    let mut data = vec![0u8; DATA_SIZE as usize];
    data_bytes(1, &mut data);
    let at = (DATA_POINTER + 4 - DATA) as usize;
    let want = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    assert_eq!(s.regs.gpr[Gpr::Rax as usize], u64::from(want));
}

#[test]
fn the_frame_rf_tolerance_leaves_out_that_bit_alone() {
    use opsvisor_core::GuestMemory;
    use opsvisor_vmdiff::snapshot::{compare, compare_tolerating, Tolerances};
    let tolerant = Tolerances { frame_rf: true };
    for (mode, width) in [(Mode::Protected32, 4u64), (Mode::Long64, 8)] {
        let mut r = runner();
        // UD2: #UD, a fault without an error code.
        let s = r
            .run(&case(mode, vec![Item::Insn(vec![0x0f, 0x0b])]))
            .unwrap();
        assert_eq!(s.vector(), Some(6), "{mode:?}");
        let mem = r.memory().unwrap();
        let copy = |flip: u64, bit: u8| {
            let mut other = GuestMemory::with_ram(layout::RAM).unwrap();
            for page in (0..layout::RAM).step_by(4096) {
                other.write(page, mem.slice(page, 4096).unwrap()).unwrap();
            }
            let b = other.read_u8(flip).unwrap();
            other.write_u8(flip, b ^ bit).unwrap();
            other
        };
        // The frame: EIP, CS, EFLAGS from RSP up; RF is bit 0 of EFLAGS' third byte.
        let rf_byte =
            s.segments[SegReg::Ss as usize].base + s.regs.gpr[Gpr::Rsp as usize] + 2 * width + 2;
        assert_eq!(mem.read_u8(rf_byte).unwrap() & 1, 1, "{mode:?}: RF pushed");
        let without_rf = copy(rf_byte, 1);
        assert_eq!(compare(&s, mem, &s, &without_rf, 0, 0).len(), 1, "{mode:?}");
        assert!(compare_tolerating(&s, mem, &s, &without_rf, 0, 0, tolerant).is_empty());
        // Any other bit of that byte, or RF anywhere else, still counts.
        let vm = copy(rf_byte, 2);
        assert_eq!(
            compare_tolerating(&s, mem, &s, &vm, 0, 0, tolerant).len(),
            1
        );
        let elsewhere = copy(rf_byte + width, 1);
        assert_eq!(
            compare_tolerating(&s, mem, &s, &elsewhere, 0, 0, tolerant).len(),
            1
        );
    }
}
