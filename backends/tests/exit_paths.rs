//! The exits a guest makes most (RDMSR of the TSC, port output, local APIC reads over
//! MMIO) on a whole machine behind the emulator: each completes with the value the guest
//! must see, however the core takes its short paths.

use iced_x86::code_asm::*;
use opsvisor_backends::{build_machine, FlatMode, MachineOptions};
use opsvisor_core::exit::ExitKind;
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
    run_timed(build, false)
}

/// [`run`], with the run loop timing every exit if `collect_timing` (which sends every
/// exit through the run loop, none through the quick path).
fn run_timed(
    build: impl FnOnce(&mut CodeAssembler),
    collect_timing: bool,
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
        collect_timing,
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

/// The exits the run loop answers during the emulator's run (`exits::quick`: CPUID, RDMSR
/// of the TSC, local APIC reads, port accesses no device claims, POST codes) get the
/// answers, counts and effects the run loop's handlers give, next to the exits it does
/// not take (a leaf-0xB CPUID is one it does take; the APIC timer's count and a claimed
/// port are not).
#[test]
fn the_quick_path_answers_as_the_run_loop_does() {
    let guest = |a: &mut CodeAssembler| {
        // ESI and EDI sum what the exits return; EBP counts down 500 rounds.
        a.xor(esi, esi).unwrap();
        a.xor(edi, edi).unwrap();
        a.mov(ebp, 500u32).unwrap();
        let mut again = a.create_label();
        a.set_label(&mut again).unwrap();
        for (leaf, subleaf) in [(0u32, 0u32), (1, 0), (0xb, 1)] {
            a.mov(eax, leaf).unwrap();
            a.mov(ecx, subleaf).unwrap();
            a.cpuid().unwrap();
            a.add(esi, eax).unwrap();
            a.add(esi, ebx).unwrap();
            a.add(edi, ecx).unwrap();
            a.add(edi, edx).unwrap();
        }
        // RDMSR of the TSC: it must not run backwards.
        a.mov(ecx, 0x10u32).unwrap();
        a.rdmsr().unwrap();
        a.mov(ebx, dword_ptr(OUT + 0x20)).unwrap();
        a.mov(ecx, dword_ptr(OUT + 0x24)).unwrap();
        a.mov(dword_ptr(OUT + 0x20), eax).unwrap();
        a.mov(dword_ptr(OUT + 0x24), edx).unwrap();
        a.sub(eax, ebx).unwrap();
        a.sbb(edx, ecx).unwrap();
        a.shr(edx, 31).unwrap();
        a.add(dword_ptr(OUT + 0x28), edx).unwrap();
        // Local APIC: version, TPR, a byte of the version, the timer's current count.
        a.add(esi, dword_ptr(0xfee0_0030u32)).unwrap();
        a.add(esi, dword_ptr(0xfee0_0080u32)).unwrap();
        a.movzx(eax, byte_ptr(0xfee0_0032u32)).unwrap();
        a.add(edi, eax).unwrap();
        a.add(edi, dword_ptr(0xfee0_0390u32)).unwrap();
        // Ports: a POST code, a read and a write no device claims, the RTC's index and
        // data ports (claimed).
        a.mov(eax, ebp).unwrap();
        a.out(0x80, al).unwrap();
        a.mov(dx, 0x2f8u32).unwrap();
        a.in_(eax, dx).unwrap();
        a.add(esi, eax).unwrap();
        a.out(dx, ax).unwrap();
        a.mov(al, 0x0au32).unwrap();
        a.out(0x70, al).unwrap();
        a.in_(al, 0x71).unwrap();
        a.and(eax, 0x7fu32).unwrap();
        a.add(edi, eax).unwrap();
        a.dec(ebp).unwrap();
        a.jnz(again).unwrap();
        a.mov(dword_ptr(OUT), esi).unwrap();
        a.mov(dword_ptr(OUT + 4), edi).unwrap();
    };
    let (quick_outcome, quick) = run_timed(guest, false);
    let (loop_outcome, run_loop) = run_timed(guest, true);
    assert_eq!(quick_outcome, RunOutcome::DebugExit { status: 1 });
    assert_eq!(loop_outcome, RunOutcome::DebugExit { status: 1 });
    for vm in [&quick, &run_loop] {
        assert_eq!(word(vm, 0x28), 0, "the TSC ran backwards");
        assert_eq!(vm.devices.post_code.last, Some(1), "the last POST code");
        // 500 rounds of 3 CPUIDs, 1 RDMSR, 4 APIC reads and 5 port accesses (and the
        // final OUT to the debug-exit port).
        assert_eq!(vm.stats.exits(ExitKind::Cpuid), 1500);
        assert_eq!(vm.stats.exits(ExitKind::Rdmsr), 500);
        assert_eq!(vm.stats.exits(ExitKind::Mmio), 2000);
        assert_eq!(vm.stats.exits(ExitKind::Io), 2501);
    }
    // The timer is not running: its current count reads 0 either way, and the sums match.
    assert_eq!(
        word(&quick, 0),
        word(&run_loop, 0),
        "CPUID, APIC and port sums"
    );
    assert_eq!(
        word(&quick, 4),
        word(&run_loop, 4),
        "CPUID, APIC and RTC sums"
    );
    assert_ne!(word(&quick, 0), 0);
}
