//! String instructions between two MMIO regions on a whole machine (core's bus and
//! QEMU's pc-testdev window behind the emulator): they complete with the right registers
//! and the device sees every element.

use iced_x86::code_asm::*;
use opsvisor_backends::{build_machine, FlatMode, MachineOptions};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;
use std::time::Duration;

const LOAD: u64 = 0x10_0000;
const WINDOW: u32 = 0xff00_0000;

/// Run 32-bit protected-mode code with the test device; returns how it ended and the
/// machine.
fn run(
    build: impl FnOnce(&mut CodeAssembler),
) -> (RunOutcome, opsvisor_backends::Machine<CapturePlatform>) {
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(esp, 0x9000u32).unwrap();
    build(&mut a);
    // PASS through the debug-exit port.
    a.mov(al, 0u32).unwrap();
    a.out(0xf4, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(LOAD).unwrap();
    let opts = MachineOptions {
        memory: 16 << 20,
        flat: true,
        flat_load: Some(LOAD),
        flat_mode: FlatMode::Protected,
        pc_testdev: true,
        timeout: Some(Duration::from_secs(20)),
        ..MachineOptions::default()
    };
    let mut vm = build_machine(&code, &opts, CapturePlatform::new()).unwrap();
    let outcome = vm.run();
    (outcome, vm)
}

#[test]
fn repe_cmpsb_and_rep_movsb_between_mmio_regions() {
    strings_between(WINDOW, true);
}

#[test]
fn the_same_strings_in_ram() {
    strings_between(0x40_0000, false);
}

fn strings_between(base: u32, mmio: bool) {
    let (outcome, vm) = run(|a| {
        // 30 bytes i at base, the same at base + 2048 except byte 20.
        a.cld().unwrap();
        a.mov(edi, base).unwrap();
        a.xor(eax, eax).unwrap();
        let mut fill = a.create_label();
        a.set_label(&mut fill).unwrap();
        a.mov(byte_ptr(edi), al).unwrap();
        a.mov(byte_ptr(edi + 2048), al).unwrap();
        a.inc(edi).unwrap();
        a.inc(eax).unwrap();
        a.cmp(eax, 30).unwrap();
        a.jne(fill).unwrap();
        a.mov(byte_ptr(base + 2048 + 20), 0xeeu32).unwrap();
        // REPE CMPSB: stops after byte 20.
        a.mov(esi, base).unwrap();
        a.mov(edi, base + 2048).unwrap();
        a.mov(ecx, 30u32).unwrap();
        a.repe().cmpsb().unwrap();
        a.mov(dword_ptr(0x8000), ecx).unwrap();
        a.mov(dword_ptr(0x8004), esi).unwrap();
        a.mov(dword_ptr(0x8008), edi).unwrap();
        a.pushfd().unwrap();
        a.pop(dword_ptr(0x800c)).unwrap();
        // REP MOVSB of the 30 bytes to base + 4096, REP MOVSD of 4 dwords after it.
        a.mov(esi, base).unwrap();
        a.mov(edi, base + 4096).unwrap();
        a.mov(ecx, 30u32).unwrap();
        a.rep().movsb().unwrap();
        a.mov(dword_ptr(0x8010), ecx).unwrap();
        a.mov(dword_ptr(0x8014), esi).unwrap();
        a.mov(dword_ptr(0x8018), edi).unwrap();
        a.mov(esi, base).unwrap();
        a.mov(edi, base + 8192).unwrap();
        a.mov(ecx, 4u32).unwrap();
        a.rep().movsd().unwrap();
        // REPE CMPSD over the two copies: all equal.
        a.mov(esi, base + 4096).unwrap();
        a.mov(edi, base + 8192).unwrap();
        a.mov(ecx, 4u32).unwrap();
        a.repe().cmpsd().unwrap();
        a.mov(dword_ptr(0x801c), ecx).unwrap();
        a.pushfd().unwrap();
        a.pop(dword_ptr(0x8020)).unwrap();
    });
    assert_eq!(outcome, RunOutcome::DebugExit { status: 1 });
    let word = |at: u64| vm.mem.read_u32(at).unwrap();
    assert_eq!(word(0x8000), 9, "ECX after REPE CMPSB: 30 - 21");
    assert_eq!(word(0x8004), base + 21);
    assert_eq!(word(0x8008), base + 2048 + 21);
    assert_eq!(word(0x800c) & 0x40, 0, "ZF clear: byte 20 differed");
    assert_eq!(word(0x800c) & 1, 1, "CF: 20 < 0xee");
    assert_eq!(word(0x8010), 0);
    assert_eq!(word(0x8014), base + 30);
    assert_eq!(word(0x8018), base + 4096 + 30);
    assert_eq!(word(0x801c), 0);
    assert_eq!(word(0x8020) & 0x40, 0x40, "ZF set: the copies are equal");
    let read = |at: u64, size: u8| {
        if mmio {
            vm.devices.pc_testdev.as_ref().unwrap().iomem_read(at, size)
        } else {
            let mut b = [0u8; 8];
            vm.mem
                .read(u64::from(base) + at, &mut b[..usize::from(size)])
                .unwrap();
            u64::from_le_bytes(b)
        }
    };
    for i in 0..30u64 {
        assert_eq!(read(4096 + i, 1), i, "byte {i} copied");
    }
    assert_eq!(read(8192, 8), 0x0706_0504_0302_0100);
}
