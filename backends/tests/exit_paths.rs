//! The exits a guest makes most (RDMSR of the TSC, port output, local APIC reads over
//! MMIO) on a whole machine behind the emulator: each completes with the value the guest
//! must see, however the core takes its short paths.

use iced_x86::code_asm::*;
use opsvisor_backends::{build_machine, FlatMode, MachineOptions};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;
use std::time::Duration;

const LOAD: u64 = 0x10_0000;
/// Where the guests below store what they read.
const OUT: u32 = 0x8000;

/// Run 32-bit protected-mode code (CPL 0); returns how it ended and the machine.
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
        timeout: Some(Duration::from_secs(20)),
        ..MachineOptions::default()
    };
    let mut vm = build_machine(&code, &opts, CapturePlatform::new()).unwrap();
    let outcome = vm.run();
    (outcome, vm)
}

/// The dword the guest stored at `OUT + at`.
fn word(vm: &opsvisor_backends::Machine<CapturePlatform>, at: u32) -> u32 {
    vm.mem.read_u32(u64::from(OUT + at)).unwrap()
}

/// The qword the guest stored as two dwords at `OUT + at` (EAX) and `OUT + at + 4` (EDX).
fn edx_eax(vm: &opsvisor_backends::Machine<CapturePlatform>, at: u32) -> u64 {
    u64::from(word(vm, at)) | u64::from(word(vm, at + 4)) << 32
}

#[test]
fn rdmsr_of_the_tsc_reads_the_counter_rdtsc_reads() {
    let (outcome, vm) = run(|a| {
        let store = |a: &mut CodeAssembler, at: u32| {
            a.mov(dword_ptr(OUT + at), eax).unwrap();
            a.mov(dword_ptr(OUT + at + 4), edx).unwrap();
        };
        // RDTSC, two stores, the MOV of ECX, then RDMSR: the counter moved by the four
        // instructions between them (RDTSC itself included), one tick each.
        a.rdtsc().unwrap();
        store(a, 0);
        a.mov(ecx, 0x10u32).unwrap();
        a.rdmsr().unwrap();
        store(a, 8);
        // And RDTSC goes on from there: the RDMSR and the two stores (or further, if the
        // core read its clock after the RDMSR's exit).
        a.rdtsc().unwrap();
        store(a, 16);
        // Many RDMSRs later (each an exit, with clock reads between them), still
        // monotonic.
        a.mov(ebx, 1000u32).unwrap();
        let mut again = a.create_label();
        a.set_label(&mut again).unwrap();
        a.mov(ecx, 0x10u32).unwrap();
        a.rdmsr().unwrap();
        a.dec(ebx).unwrap();
        a.jnz(again).unwrap();
        store(a, 24);
        a.rdtsc().unwrap();
        store(a, 32);
    });
    assert_eq!(outcome, RunOutcome::DebugExit { status: 1 });
    let first = edx_eax(&vm, 0);
    let msr = edx_eax(&vm, 8);
    let next = edx_eax(&vm, 16);
    assert_eq!(
        msr - first,
        4,
        "RDMSR(TSC) at {msr:#x}, RDTSC at {first:#x}"
    );
    assert!(
        next >= msr + 3,
        "RDTSC at {next:#x} after RDMSR(TSC) at {msr:#x}"
    );
    let later_msr = edx_eax(&vm, 24);
    let last = edx_eax(&vm, 32);
    assert!(
        later_msr >= next + 4000 && last > later_msr,
        "{next:#x}, then {later_msr:#x} and {last:#x}"
    );
}

#[test]
fn loads_from_device_registers_read_the_device_every_time() {
    let (outcome, vm) = run(|a| {
        // The local APIC's version register, 100 times (the TLB entry for its page is
        // filled by the first load), as a dword, a word and a byte; its ID register
        // (vCPU 0); an address no device claims (all ones); and RAM in between.
        a.mov(dword_ptr(OUT + 0x40), 0x1234_5678u32).unwrap();
        a.xor(esi, esi).unwrap();
        a.mov(ecx, 100u32).unwrap();
        let mut again = a.create_label();
        a.set_label(&mut again).unwrap();
        a.mov(eax, dword_ptr(0xfee0_0030u32)).unwrap();
        a.add(esi, eax).unwrap();
        a.mov(ebx, dword_ptr(OUT + 0x40)).unwrap();
        a.add(esi, ebx).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(again).unwrap();
        a.mov(dword_ptr(OUT), esi).unwrap();
        a.movzx(eax, word_ptr(0xfee0_0030u32)).unwrap();
        a.mov(dword_ptr(OUT + 4), eax).unwrap();
        a.movzx(eax, byte_ptr(0xfee0_0032u32)).unwrap();
        a.mov(dword_ptr(OUT + 8), eax).unwrap();
        a.mov(eax, dword_ptr(0xfee0_0020u32)).unwrap();
        a.mov(dword_ptr(OUT + 12), eax).unwrap();
        a.mov(eax, dword_ptr(0xfed0_0000u32)).unwrap();
        a.mov(dword_ptr(OUT + 16), eax).unwrap();
    });
    assert_eq!(outcome, RunOutcome::DebugExit { status: 1 });
    let version = opsvisor_core::apic::APIC_VERSION;
    assert_eq!(
        word(&vm, 0),
        100u32.wrapping_mul(version.wrapping_add(0x1234_5678)),
        "100 loads of the version register and of RAM"
    );
    assert_eq!(word(&vm, 4), version & 0xffff);
    assert_eq!(word(&vm, 8), (version >> 16) & 0xff);
    assert_eq!(word(&vm, 12), 0, "vCPU 0's APIC ID");
    assert_eq!(word(&vm, 16), u32::MAX, "no device");
}
