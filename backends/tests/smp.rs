//! Machines of several vCPUs on the emulator, driven as a guest drives them: the
//! bootstrap processor starts the application processors with INIT and two start-up
//! IPIs through its xAPIC's ICR, then exchanges interrupts with each of them; the APs
//! answer through the x2APIC ICR MSR. The guest is a flat binary: the APs' real-mode
//! code at 0x8000 (start-up vector 0x08) and the BSP's 32-bit code at 0x8800. A second
//! guest has every vCPU take a spinlock (LOCK CMPXCHG, PAUSE while it spins) around a
//! plain read-modify-write of a shared counter.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use opsvisor_backends::{build_machine, FlatMode, MachineOptions};
use opsvisor_core::exit::Exit;
use opsvisor_core::ops::SegReg;
use opsvisor_core::platform::{CapturePlatform, Platform};
use opsvisor_core::vcpu::MpState;
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::X86Ops;
use std::time::Duration;

/// Where the APs' code starts: start-up vector 0x08.
const AP_CODE: u64 = 0x8000;
/// Where the BSP's code starts.
const BSP_CODE: u64 = 0x8800;
/// APs that ran their start-up code (one `LOCK INC` each).
const STARTED: u32 = 0x7000;
/// Per APIC ID (4 bytes each, 64 IDs): fixed IPIs (vector 0x40) the vCPU took.
const PINGS: u32 = 0x7100;
/// Per APIC ID: what CPUID leaf 1 reported as the initial APIC ID, plus 1.
const CPUID1_ID: u32 = 0x7200;
/// Per APIC ID: the x2APIC ID of CPUID leaf 0xB, plus 1.
const CPUIDB_ID: u32 = 0x7300;
/// Per APIC ID: the logical processors at CPUID leaf 0xB's core level.
const CPUIDB_COUNT: u32 = 0x7400;
/// Answers (vector 0x41) the BSP took: simultaneous answers of one vector may merge
/// into one interrupt, as on hardware (one IRR bit per vector).
const PONGS: u32 = 0x7004;
/// Pings the APs answered (each counts before it sends its answer).
const ANSWERED: u32 = 0x7008;
/// The BSP's GDT (the loader's selectors: code 0x10, data 0x18), GDTR, IDTR, IDT.
const GDT: u32 = 0x7500;
const GDTR: u32 = 0x7580;
const IDTR: u32 = 0x7590;
const IDT: u32 = 0x7600;
const APIC: u32 = 0xfee0_0000;
const ICR_LO: u32 = APIC + 0x300;
const ICR_HI: u32 = APIC + 0x310;
const PING: u32 = 0x40;
const PONG: u32 = 0x41;

/// The APs' code, assembled for CS = 0x0800, IP = 0: enter x2APIC mode, record CPUID's
/// view of this processor, take a stack of its own, enable the APIC, count itself
/// started, then sleep in `STI; HLT`. The ping handler (returned offset, for the IVT)
/// counts the ping and answers the BSP with a fixed IPI through the x2APIC ICR.
fn ap_code() -> (Vec<u8>, u16) {
    let mut a = CodeAssembler::new(16).unwrap();
    let mut ping = a.create_label();
    let mut idle = a.create_label();
    a.cli().unwrap();
    a.xor(ax, ax).unwrap();
    a.mov(ds, ax).unwrap();
    a.mov(ss, ax).unwrap();
    // IA32_APIC_BASE: EN | EXTD.
    a.mov(ecx, 0x1bu32).unwrap();
    a.rdmsr().unwrap();
    a.or(eax, 0xc00).unwrap();
    a.wrmsr().unwrap();
    // This APIC's ID (x2APIC ID register) in ESI.
    a.mov(ecx, 0x802u32).unwrap();
    a.rdmsr().unwrap();
    a.mov(esi, eax).unwrap();
    a.mov(eax, 1u32).unwrap();
    a.cpuid().unwrap();
    a.shr(ebx, 24).unwrap();
    a.inc(ebx).unwrap();
    a.mov(dword_ptr(esi * 4 + CPUID1_ID), ebx).unwrap();
    a.mov(eax, 0xbu32).unwrap();
    a.mov(ecx, 1u32).unwrap();
    a.cpuid().unwrap();
    a.inc(edx).unwrap();
    a.mov(dword_ptr(esi * 4 + CPUIDB_ID), edx).unwrap();
    a.and(ebx, 0xffff).unwrap();
    a.mov(dword_ptr(esi * 4 + CPUIDB_COUNT), ebx).unwrap();
    // Stack: 0x6000 - 0x100 * ID.
    a.mov(eax, esi).unwrap();
    a.shl(eax, 8).unwrap();
    a.mov(esp, 0x6000u32).unwrap();
    a.sub(esp, eax).unwrap();
    // Spurious-interrupt vector register: APIC software-enabled.
    a.mov(ecx, 0x80fu32).unwrap();
    a.mov(eax, 0x1ffu32).unwrap();
    a.xor(edx, edx).unwrap();
    a.wrmsr().unwrap();
    a.lock().inc(dword_ptr(STARTED)).unwrap();
    a.set_label(&mut idle).unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.jmp(idle).unwrap();

    a.set_label(&mut ping).unwrap();
    a.push(eax).unwrap();
    a.push(ecx).unwrap();
    a.push(edx).unwrap();
    a.mov(ecx, 0x802u32).unwrap();
    a.rdmsr().unwrap();
    a.lock().inc(dword_ptr(eax * 4 + PINGS)).unwrap();
    a.lock().inc(dword_ptr(ANSWERED)).unwrap();
    // x2APIC ICR: fixed, physical, destination (EDX) APIC ID 0.
    a.mov(ecx, 0x830u32).unwrap();
    a.xor(edx, edx).unwrap();
    a.mov(eax, PONG).unwrap();
    a.wrmsr().unwrap();
    // EOI.
    a.mov(ecx, 0x80bu32).unwrap();
    a.xor(eax, eax).unwrap();
    a.wrmsr().unwrap();
    a.pop(edx).unwrap();
    a.pop(ecx).unwrap();
    a.pop(eax).unwrap();
    a.iret().unwrap();
    let r = a
        .assemble_options(0, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .unwrap();
    let offset = r.label_ip(&ping).unwrap() as u16;
    (r.inner.code_buffer, offset)
}

/// The BSP's code: its GDT and IDT (vector 0x41 counts an answer), the APs' IVT entry
/// for the ping, INIT and two start-up IPIs to all but itself, a wait until `aps` APs
/// ran, then one ping to each AP by physical destination, then one to all but itself
/// by shorthand, each time sleeping until every answer came; then the debug-exit port.
fn bsp_code(aps: u32, ping_offset: u16) -> Vec<u8> {
    // Twice: the second time with the handler's address the first one found (MOV EAX,
    // imm32 has one size whatever the value).
    let (_, pong) = bsp_code_with(aps, ping_offset, 0);
    bsp_code_with(aps, ping_offset, pong).0
}

fn bsp_code_with(aps: u32, ping_offset: u16, pong_at: u32) -> (Vec<u8>, u32) {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut pong = a.create_label();
    let mut wait_started = a.create_label();
    let mut next_ping = a.create_label();
    let mut wait_pong = a.create_label();
    let mut wait_all = a.create_label();
    a.cli().unwrap();
    for (at, v) in [
        (GDT, 0),
        (GDT + 4, 0),
        (GDT + 8, 0),
        (GDT + 12, 0),
        (GDT + 0x10, 0x0000_ffff),
        (GDT + 0x14, 0x00cf_9a00),
        (GDT + 0x18, 0x0000_ffff),
        (GDT + 0x1c, 0x00cf_9200),
    ] {
        a.mov(dword_ptr(at), v).unwrap();
    }
    a.mov(word_ptr(GDTR), 0x1fu32).unwrap();
    a.mov(dword_ptr(GDTR + 2), GDT).unwrap();
    a.lgdt(ptr(GDTR)).unwrap();
    a.mov(esp, 0x6800u32).unwrap();
    // The gate for the answers: 32-bit interrupt gate, selector 0x10.
    a.mov(eax, pong_at).unwrap();
    a.mov(edx, eax).unwrap();
    a.and(eax, 0xffff).unwrap();
    a.or(eax, 0x10_0000).unwrap();
    a.mov(dword_ptr(IDT + PONG * 8), eax).unwrap();
    a.and(edx, 0xffff_0000u32 as i32).unwrap();
    a.or(edx, 0x8e00).unwrap();
    a.mov(dword_ptr(IDT + PONG * 8 + 4), edx).unwrap();
    a.mov(word_ptr(IDTR), 0x7ffu32).unwrap();
    a.mov(dword_ptr(IDTR + 2), IDT).unwrap();
    a.lidt(ptr(IDTR)).unwrap();
    // The APs' real-mode IVT entry for the ping: 0x0800:ping_offset.
    a.mov(dword_ptr(PING * 4), 0x0800_0000 | u32::from(ping_offset))
        .unwrap();
    // Software-enable the APIC.
    a.mov(dword_ptr(APIC + 0xf0), 0x1ffu32).unwrap();
    // INIT, assert, all excluding self; then SIPI twice, vector 0x08.
    a.mov(dword_ptr(ICR_LO), 0x000c_4500u32).unwrap();
    a.mov(dword_ptr(ICR_LO), 0x000c_4608u32).unwrap();
    a.mov(dword_ptr(ICR_LO), 0x000c_4608u32).unwrap();
    a.set_label(&mut wait_started).unwrap();
    a.pause().unwrap();
    a.cmp(dword_ptr(STARTED), aps).unwrap();
    a.jb(wait_started).unwrap();
    // One ping per AP, by physical destination; wait for its answer.
    a.mov(ebx, 1u32).unwrap();
    a.set_label(&mut next_ping).unwrap();
    a.mov(eax, ebx).unwrap();
    a.shl(eax, 24).unwrap();
    a.mov(dword_ptr(ICR_HI), eax).unwrap();
    a.mov(dword_ptr(ICR_LO), 0x4000 | PING).unwrap();
    a.set_label(&mut wait_pong).unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.cli().unwrap();
    a.cmp(dword_ptr(ANSWERED), ebx).unwrap();
    a.jb(wait_pong).unwrap();
    a.inc(ebx).unwrap();
    a.cmp(ebx, aps).unwrap();
    a.jbe(next_ping).unwrap();
    // One ping to all but self.
    a.mov(dword_ptr(ICR_LO), 0x000c_4000 | PING).unwrap();
    a.set_label(&mut wait_all).unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.cli().unwrap();
    a.cmp(dword_ptr(ANSWERED), 2 * aps).unwrap();
    a.jb(wait_all).unwrap();
    a.xor(eax, eax).unwrap();
    a.out(0xf4, al).unwrap();
    a.hlt().unwrap();

    a.set_label(&mut pong).unwrap();
    a.lock().inc(dword_ptr(PONGS)).unwrap();
    a.mov(dword_ptr(APIC + 0xb0), 0u32).unwrap();
    a.iretd().unwrap();
    let r = a
        .assemble_options(
            BSP_CODE,
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let pong_at = r.label_ip(&pong).unwrap() as u32;
    (r.inner.code_buffer, pong_at)
}

fn read_u32(mem: &opsvisor_core::mmu::memory::GuestMemory, at: u32) -> u32 {
    mem.read_u32(u64::from(at)).unwrap()
}

/// The guest that starts `vcpus` vCPUs and exchanges the interrupts, and the machine's
/// options.
fn ping_guest(vcpus: u32) -> (Vec<u8>, MachineOptions) {
    let aps = vcpus - 1;
    let (ap, ping_offset) = ap_code();
    assert!(ap.len() <= (BSP_CODE - AP_CODE) as usize);
    let mut image = ap;
    image.resize((BSP_CODE - AP_CODE) as usize, 0x90);
    image.extend(bsp_code(aps, ping_offset));
    let opts = MachineOptions {
        memory: 32 << 20,
        vcpus,
        flat: true,
        flat_load: Some(AP_CODE),
        flat_entry: Some(BSP_CODE),
        flat_mode: FlatMode::Protected,
        timeout: Some(Duration::from_secs(20)),
        ..MachineOptions::default()
    };
    (image, opts)
}

/// Start `vcpus` vCPUs and exchange the interrupts; check what each saw.
fn start_and_ping(vcpus: u32) {
    let aps = vcpus - 1;
    let (image, opts) = ping_guest(vcpus);
    let mut vm = build_machine(&image, &opts, CapturePlatform::new()).unwrap();
    let outcome = vm.run();
    if outcome != (RunOutcome::DebugExit { status: 1 }) {
        use opsvisor_core::X86Ops;
        for v in vm.vcpus() {
            eprintln!(
                "vcpu {} {:?} rip {:#x} cs {:#x} rflags {:#x}",
                v.index(),
                v.mp_state(),
                v.backend.rip(),
                v.backend.segment(opsvisor_core::ops::SegReg::Cs).selector,
                v.backend.rflags()
            );
        }
        let (_, mem, _) = vm.into_parts();
        eprintln!(
            "started {} pongs {} pings {:?}",
            read_u32(&mem, STARTED),
            read_u32(&mem, PONGS),
            (0..4)
                .map(|i| read_u32(&mem, PINGS + 4 * i))
                .collect::<Vec<_>>()
        );
        panic!("{outcome:?}");
    }
    for v in &vm.vcpus()[1..] {
        assert_eq!(
            v.mp_state(),
            MpState::Halted,
            "AP {} sleeps in HLT",
            v.index()
        );
    }
    let (_, mem, _) = vm.into_parts();
    assert_eq!(
        read_u32(&mem, STARTED),
        aps,
        "each AP started once: the second SIPI finds it running and is ignored"
    );
    assert_eq!(read_u32(&mem, ANSWERED), 2 * aps, "pings answered");
    // One answer at a time while pinging by ID; then up to one per AP (answers of one
    // vector that arrive before the BSP takes the first merge into one).
    let pongs = read_u32(&mem, PONGS);
    assert!(
        (aps + 1..=2 * aps).contains(&pongs),
        "the BSP took {pongs} answers"
    );
    assert_eq!(read_u32(&mem, PINGS), 0, "the BSP pinged itself");
    for id in 1..vcpus {
        let at = |base: u32| read_u32(&mem, base + 4 * id);
        assert_eq!(at(PINGS), 2, "APIC {id}: one ping by ID, one by shorthand");
        assert_eq!(at(CPUID1_ID), id + 1, "APIC {id}: CPUID.1:EBX[31:24]");
        assert_eq!(at(CPUIDB_ID), id + 1, "APIC {id}: CPUID.0xB:EDX");
        assert_eq!(at(CPUIDB_COUNT), vcpus, "APIC {id}: CPUID.0xB.1:EBX, cores");
    }
    assert_eq!(
        read_u32(&mem, PINGS + 4 * vcpus),
        0,
        "no APIC beyond the machine's"
    );
}

#[test]
fn aps_start_by_init_sipi_sipi_and_exchange_ipis() {
    start_and_ping(4);
}

#[test]
fn sixty_four_vcpus_start_and_exchange_ipis() {
    start_and_ping(64);
}

/// A host that observes exits (as the program's trace and statistics do) and checks the
/// vCPU index the run loop reports with each against the vCPU's own view: the BSP runs
/// in protected mode (CS 0x10), the APs in real mode, and an AP's read of its x2APIC ID
/// returns its index.
#[derive(Default)]
struct Observer {
    inner: CapturePlatform,
    /// Exits per reported vCPU index.
    exits: Vec<u64>,
    /// Exits whose index disagreed with the vCPU's code segment.
    wrong_mode: Vec<(u32, u16)>,
    /// The index of the last exit when it was a read of the x2APIC ID register.
    id_read_by: Option<u32>,
    /// (reported index, x2APIC ID read) for every such read.
    id_reads: Vec<(u32, u64)>,
}

impl Platform for Observer {
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
        self.inner.wait(deadline_ns)
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.inner.console_write(bytes)
    }
    fn console_read(&mut self) -> Option<u8> {
        self.inner.console_read()
    }
    fn console_input_ready(&mut self) -> bool {
        self.inner.console_input_ready()
    }
    fn console_input_possible(&mut self) -> bool {
        self.inner.console_input_possible()
    }
    fn observe_exit<B: X86Ops>(&mut self, vcpu: u32, exit: &Exit, cpu: &B) {
        let i = vcpu as usize;
        if self.exits.len() <= i {
            self.exits.resize(i + 1, 0);
        }
        self.exits[i] += 1;
        let selector = cpu.segment(SegReg::Cs).selector;
        if (vcpu == 0) != (selector == 0x10) {
            self.wrong_mode.push((vcpu, selector));
        }
        self.id_read_by = matches!(exit, Exit::Rdmsr { index: 0x802 }).then_some(vcpu);
    }
    fn observe_read(&mut self, value: u64) {
        if let Some(vcpu) = self.id_read_by.take() {
            self.id_reads.push((vcpu, value));
        }
    }
}

#[test]
fn exit_observers_get_each_exits_vcpu_index() {
    let (image, opts) = ping_guest(4);
    let mut vm = build_machine(&image, &opts, Observer::default()).unwrap();
    assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
    let (_, _, seen) = vm.into_parts();
    assert_eq!(seen.exits.len(), 4, "exits by vCPU: {:?}", seen.exits);
    assert!(
        seen.exits.iter().all(|&n| n > 0),
        "exits by vCPU: {:?}",
        seen.exits
    );
    assert_eq!(
        seen.wrong_mode,
        [],
        "exits reported with another vCPU's index"
    );
    // Each AP reads its ID once at start-up and once per ping (two pings each).
    let mut reads = seen.id_reads.clone();
    reads.sort_unstable();
    let expected: Vec<(u32, u64)> = (1..4u32).flat_map(|id| [(id, u64::from(id)); 3]).collect();
    assert_eq!(reads, expected);
}

/// The spinlock guest's lock word, counter, spins (attempts that found the lock taken)
/// and finished APs.
const LOCK: u32 = 0x7000;
const COUNTER: u32 = 0x7004;
const SPINS: u32 = 0x7008;
const FINISHED: u32 = 0x700c;
/// Increments per vCPU.
const ROUNDS: u32 = 20_000;

/// `ROUNDS` times: take the lock (LOCK CMPXCHG 0 -> 1; while it is taken, count a spin
/// and PAUSE until it looks free), increment the counter with a plain load and store
/// around a short delay loop,
/// release the lock with a plain store. The same code assembles for 16-bit and 32-bit
/// mode (the counters are 32-bit operands either way).
fn spinlock_loop(a: &mut CodeAssembler) {
    let mut attempt = a.create_label();
    let mut spin = a.create_label();
    let mut taken = a.create_label();
    let mut work = a.create_label();
    a.mov(esi, ROUNDS).unwrap();
    a.set_label(&mut attempt).unwrap();
    a.xor(eax, eax).unwrap();
    a.mov(edx, 1u32).unwrap();
    a.lock().cmpxchg(dword_ptr(LOCK), edx).unwrap();
    a.jz(taken).unwrap();
    a.lock().inc(dword_ptr(SPINS)).unwrap();
    a.set_label(&mut spin).unwrap();
    a.pause().unwrap();
    a.cmp(dword_ptr(LOCK), 0).unwrap();
    a.jne(spin).unwrap();
    a.jmp(attempt).unwrap();
    a.set_label(&mut taken).unwrap();
    a.mov(eax, dword_ptr(COUNTER)).unwrap();
    // Some work in the critical section, across branches (a turn can end there).
    a.mov(ecx, 8u32).unwrap();
    a.set_label(&mut work).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(work).unwrap();
    a.inc(eax).unwrap();
    a.mov(dword_ptr(COUNTER), eax).unwrap();
    a.mov(dword_ptr(LOCK), 0u32).unwrap();
    a.dec(esi).unwrap();
    a.jnz(attempt).unwrap();
}

#[test]
fn a_spinlock_under_contention_loses_no_increment() {
    const VCPUS: u32 = 4;
    let aps = VCPUS - 1;
    let mut ap = CodeAssembler::new(16).unwrap();
    let mut idle = ap.create_label();
    ap.cli().unwrap();
    ap.xor(ax, ax).unwrap();
    ap.mov(ds, ax).unwrap();
    spinlock_loop(&mut ap);
    ap.lock().inc(dword_ptr(FINISHED)).unwrap();
    ap.set_label(&mut idle).unwrap();
    ap.hlt().unwrap();
    ap.jmp(idle).unwrap();
    let mut image = ap.assemble(0).unwrap();
    image.resize((BSP_CODE - AP_CODE) as usize, 0x90);

    let mut bsp = CodeAssembler::new(32).unwrap();
    let mut wait = bsp.create_label();
    bsp.cli().unwrap();
    bsp.mov(dword_ptr(APIC + 0xf0), 0x1ffu32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4500u32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4608u32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4608u32).unwrap();
    spinlock_loop(&mut bsp);
    bsp.set_label(&mut wait).unwrap();
    bsp.pause().unwrap();
    bsp.cmp(dword_ptr(FINISHED), aps).unwrap();
    bsp.jb(wait).unwrap();
    // Status 1 (value 0) if the counter is complete, 3 (value 1) if not.
    bsp.xor(eax, eax).unwrap();
    bsp.cmp(dword_ptr(COUNTER), VCPUS * ROUNDS).unwrap();
    bsp.setne(al).unwrap();
    bsp.out(0xf4, al).unwrap();
    bsp.hlt().unwrap();
    image.extend(bsp.assemble(BSP_CODE).unwrap());

    let opts = MachineOptions {
        memory: 32 << 20,
        vcpus: VCPUS,
        flat: true,
        flat_load: Some(AP_CODE),
        flat_entry: Some(BSP_CODE),
        flat_mode: FlatMode::Protected,
        timeout: Some(Duration::from_secs(60)),
        ..MachineOptions::default()
    };
    let mut vm = build_machine(&image, &opts, CapturePlatform::new()).unwrap();
    let outcome = vm.run();
    let (_, mem, _) = vm.into_parts();
    let counter = read_u32(&mem, COUNTER);
    assert_eq!(
        outcome,
        RunOutcome::DebugExit { status: 1 },
        "counter {counter}"
    );
    assert_eq!(counter, VCPUS * ROUNDS, "no increment lost");
    assert_eq!(read_u32(&mem, LOCK), 0, "the lock is free at the end");
    assert_eq!(read_u32(&mem, FINISHED), aps);
    // A turn that ended inside the critical section made the others find it taken.
    let spins = read_u32(&mem, SPINS);
    assert!(spins > 0, "the lock was never contended");
    eprintln!("{spins} contended attempts");
}

/// A halted vCPU's timer wakes it while another vCPU computes, without cutting the
/// computing vCPU's turns into slivers: when the timer comes due the turn ends, the
/// sleeper takes its interrupt and halts again, and the computing vCPU resumes with a
/// whole turn (before, every run after the due time ended at once until the turn's
/// budget was spent: hundreds of preemptions per tick).
#[test]
fn a_halted_vcpus_timer_wakes_it_while_another_computes() {
    use opsvisor_core::exit::ExitKind;
    const TICKS: u32 = 0x7010;
    const TIMER: u32 = 0x50;
    const LOOPS: u32 = 30_000_000;
    let mut ap = CodeAssembler::new(16).unwrap();
    let mut idle = ap.create_label();
    let mut tick = ap.create_label();
    ap.cli().unwrap();
    ap.xor(ax, ax).unwrap();
    ap.mov(ds, ax).unwrap();
    ap.mov(ss, ax).unwrap();
    ap.mov(esp, 0x6000u32).unwrap();
    let wrmsr = |a: &mut CodeAssembler, msr: u32, value: u32| {
        a.mov(ecx, msr).unwrap();
        a.mov(eax, value).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
    };
    // x2APIC mode, software-enabled, a periodic timer (divide by 1).
    ap.mov(ecx, 0x1bu32).unwrap();
    ap.rdmsr().unwrap();
    ap.or(eax, 0xc00).unwrap();
    ap.wrmsr().unwrap();
    wrmsr(&mut ap, 0x80f, 0x1ff);
    wrmsr(&mut ap, 0x83e, 0xb);
    wrmsr(&mut ap, 0x832, (1 << 17) | TIMER);
    wrmsr(&mut ap, 0x838, 200_000);
    ap.lock().inc(dword_ptr(STARTED)).unwrap();
    ap.set_label(&mut idle).unwrap();
    ap.sti().unwrap();
    ap.hlt().unwrap();
    ap.jmp(idle).unwrap();
    ap.set_label(&mut tick).unwrap();
    ap.lock().inc(dword_ptr(TICKS)).unwrap();
    wrmsr(&mut ap, 0x80b, 0);
    ap.iret().unwrap();
    let r = ap
        .assemble_options(0, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .unwrap();
    let tick_at = r.label_ip(&tick).unwrap() as u32;
    let mut image = r.inner.code_buffer;
    image.resize((BSP_CODE - AP_CODE) as usize, 0x90);

    let mut bsp = CodeAssembler::new(32).unwrap();
    let mut wait = bsp.create_label();
    let mut compute = bsp.create_label();
    bsp.cli().unwrap();
    bsp.mov(dword_ptr(TIMER * 4), 0x0800_0000 | tick_at)
        .unwrap();
    bsp.mov(dword_ptr(APIC + 0xf0), 0x1ffu32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4500u32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4608u32).unwrap();
    bsp.set_label(&mut wait).unwrap();
    bsp.pause().unwrap();
    bsp.cmp(dword_ptr(STARTED), 1).unwrap();
    bsp.jb(wait).unwrap();
    bsp.mov(ecx, LOOPS).unwrap();
    bsp.set_label(&mut compute).unwrap();
    bsp.dec(ecx).unwrap();
    bsp.jnz(compute).unwrap();
    bsp.xor(eax, eax).unwrap();
    bsp.out(0xf4, al).unwrap();
    bsp.hlt().unwrap();
    image.extend(bsp.assemble(BSP_CODE).unwrap());

    let opts = MachineOptions {
        memory: 32 << 20,
        vcpus: 2,
        flat: true,
        flat_load: Some(AP_CODE),
        flat_entry: Some(BSP_CODE),
        flat_mode: FlatMode::Protected,
        timeout: Some(Duration::from_secs(60)),
        ..MachineOptions::default()
    };
    let mut vm = build_machine(&image, &opts, CapturePlatform::new()).unwrap();
    assert_eq!(vm.run(), RunOutcome::DebugExit { status: 1 });
    let preempted = vm.stats.exits(ExitKind::Preempted);
    let turns = u64::from(2 * LOOPS) / vm.config.smp_turn;
    let (_, mem, _) = vm.into_parts();
    let ticks = u64::from(read_u32(&mem, TICKS));
    eprintln!("{ticks} ticks, {preempted} preemptions, {turns} turns of computation");
    assert!(ticks > 0, "the sleeping vCPU's timer never woke it");
    assert!(
        preempted <= 4 * (turns + ticks) + 100,
        "{preempted} preemptions for {ticks} ticks and {turns} turns"
    );
}

/// The emulator under a vCPU of the machine.
fn emu(backend: &mut opsvisor_backends::Backend) -> &mut opsvisor_emu::EmuVcpu {
    match backend {
        opsvisor_core::Backend::Emu(slot) => &mut slot.0,
        opsvisor_core::Backend::Vmx(slot) => match slot.0 {},
        opsvisor_core::Backend::Svm(slot) => match slot.0 {},
    }
}

#[test]
fn a_vcpu_run_alone_runs_while_the_others_stay_stopped() {
    // The AP counts DX to 3000, then sleeps for good (CLI; HLT); the BSP starts it and
    // counts ECX forever.
    let mut ap = CodeAssembler::new(16).unwrap();
    let mut count = ap.create_label();
    ap.set_label(&mut count).unwrap();
    ap.inc(dx).unwrap();
    ap.cmp(dx, 3000).unwrap();
    ap.jb(count).unwrap();
    ap.cli().unwrap();
    ap.hlt().unwrap();
    let mut image = ap.assemble(0).unwrap();
    image.resize((BSP_CODE - AP_CODE) as usize, 0x90);
    let mut bsp = CodeAssembler::new(32).unwrap();
    let mut spin = bsp.create_label();
    bsp.mov(dword_ptr(APIC + 0xf0), 0x1ffu32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4500u32).unwrap();
    bsp.mov(dword_ptr(ICR_LO), 0x000c_4608u32).unwrap();
    bsp.set_label(&mut spin).unwrap();
    bsp.inc(ecx).unwrap();
    bsp.jmp(spin).unwrap();
    image.extend(bsp.assemble(BSP_CODE).unwrap());
    let opts = MachineOptions {
        memory: 32 << 20,
        vcpus: 2,
        flat: true,
        flat_load: Some(AP_CODE),
        flat_entry: Some(BSP_CODE),
        flat_mode: FlatMode::Protected,
        timeout: Some(Duration::from_secs(60)),
        ..MachineOptions::default()
    };
    let mut vm = build_machine(&image, &opts, CapturePlatform::new()).unwrap();
    // Short turns: both vCPUs run within the first 2000 instructions.
    vm.config.smp_turn = 100;
    vm.config.max_instructions = Some(2000);
    assert_eq!(vm.run(), RunOutcome::InstructionLimit);
    let retired = |vm: &opsvisor_backends::Machine<CapturePlatform>, i: usize| {
        vm.vcpus()[i].backend.instructions_retired().unwrap()
    };
    let (bsp_retired, bsp_rip) = (retired(&vm, 0), vm.vcpus()[0].backend.rip());
    let ap_retired = retired(&vm, 1);
    assert!(ap_retired > 0, "the AP started");
    assert_eq!(vm.vcpus()[1].mp_state(), MpState::Runnable);

    // The run's limits apply: 500 instructions, all the AP's.
    vm.config.max_instructions = Some(500);
    assert_eq!(vm.run_alone(1), Some(RunOutcome::InstructionLimit));
    let ran = retired(&vm, 1) - ap_retired;
    assert!(ran >= 500, "the AP ran {ran} instructions");
    assert_eq!(vm.cur(), 1);
    assert_eq!(retired(&vm, 0), bsp_retired, "the BSP stayed stopped");

    // A debugger's single step of the AP alone.
    let step = opsvisor_emu::GuestDebug {
        single_step: true,
        ..Default::default()
    };
    let (vcpus, mem) = vm.vcpus_and_mem_mut();
    emu(&mut vcpus[1].backend)
        .set_guest_debug(mem, Some(step))
        .unwrap();
    let ap_retired = retired(&vm, 1);
    assert_eq!(vm.run_alone(1), Some(RunOutcome::Debug { vector: 1 }));
    assert_eq!(retired(&vm, 1), ap_retired + 1, "one instruction");

    // Run alone until it halts for good: `None`, and the BSP still never ran.
    let (vcpus, mem) = vm.vcpus_and_mem_mut();
    emu(&mut vcpus[1].backend)
        .set_guest_debug(mem, None)
        .unwrap();
    vm.config.max_instructions = Some(1_000_000);
    assert_eq!(vm.run_alone(1), None);
    assert_eq!(vm.vcpus()[1].mp_state(), MpState::Halted);
    assert_eq!(
        vm.vcpus()[1].backend.gpr(opsvisor_core::ops::Gpr::Rdx) & 0xffff,
        3000
    );
    assert_eq!(vm.run_alone(1), None, "a halted vCPU alone cannot run");
    assert_eq!(retired(&vm, 0), bsp_retired, "the BSP stayed stopped");
    assert_eq!(vm.vcpus()[0].backend.rip(), bsp_rip);
    assert!(matches!(vm.run_alone(2), Some(RunOutcome::Failed(why)) if why.contains("no vCPU 2")));

    // Together again: the BSP counts on.
    vm.config.max_instructions = Some(1000);
    assert_eq!(vm.run(), RunOutcome::InstructionLimit);
    assert!(retired(&vm, 0) >= bsp_retired + 1000, "the BSP ran again");
}

/// Four vCPUs exchanging IPIs, run straight through and run to N instructions, saved,
/// restored into a new machine and run on: the same outcome, and the same final state
/// byte for byte (every vCPU, device and page), with `--icount` time and the
/// scheduler's turn carried in the snapshot.
#[test]
fn four_vcpus_continue_exactly_from_a_snapshot() {
    use opsvisor_backends::restore_machine;
    use opsvisor_core::snapshot;
    // A console whose wall clock stands still: every machine's CMOS clock starts alike.
    let fixed = || {
        let mut p = CapturePlatform::new();
        p.wall_clock_ns = Some(1_700_000_000_000_000_000);
        p
    };
    let (image, mut opts) = ping_guest(4);
    opts.icount = true;
    let mut whole = build_machine(&image, &opts, fixed()).unwrap();
    assert_eq!(whole.run(), RunOutcome::DebugExit { status: 1 });
    let total = whole.instructions_retired().unwrap();
    let end = snapshot::save(&mut whole).unwrap();
    for n in [total / 5, total / 2, total * 4 / 5] {
        opts.max_instructions = Some(n);
        let mut vm = build_machine(&image, &opts, fixed()).unwrap();
        assert_eq!(vm.run(), RunOutcome::InstructionLimit);
        let saved = snapshot::save(&mut vm).unwrap();
        drop(vm);
        opts.max_instructions = None;
        let mut vm = restore_machine(&saved, &opts, fixed()).unwrap();
        assert_eq!(
            vm.run(),
            RunOutcome::DebugExit { status: 1 },
            "restored at {n}"
        );
        assert_eq!(vm.instructions_retired(), Some(total), "restored at {n}");
        assert!(
            snapshot::save(&mut vm).unwrap() == end,
            "restored at {n}: the final states differ"
        );
    }
}
