//! Snapshots of corpus guests on the emulator: a guest run straight through, and the
//! same guest run to N instructions, saved, restored into a new machine and run on,
//! end with the same console output, the same outcome and the same final state (the
//! final snapshots, which hold every register, device and page, are byte for byte
//! equal). With `--icount` time (`VmConfig::icount`), so that the timers fire at the same
//! instructions in both runs. N is taken at several points of each guest's run, which
//! for the timer guest is also taken where its local APIC timer is armed, found by running
//! the guest in slices.

use opsvisor_backends::{build_machine, restore_machine, MachineOptions};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::snapshot;
use opsvisor_core::vm::RunOutcome;
use std::time::Duration;

fn options(guest: &opsvisor_corpus::Guest) -> MachineOptions {
    MachineOptions {
        memory: 64 << 20,
        cmdline: guest.cmdline.as_bytes().to_vec(),
        timeout: Some(Duration::from_secs(guest.timeout_secs)),
        icount: true,
        vcpus: guest.vcpus,
        pc_testdev: guest.pc_testdev,
        ..MachineOptions::default()
    }
}

/// A console holding `input`, with a wall clock that stands at one moment, so that every
/// machine's CMOS clock starts at the same time and the runs compare.
fn platform(input: &[u8]) -> CapturePlatform {
    let mut p = CapturePlatform::new();
    p.input.extend(input);
    p.wall_clock_ns = Some(1_700_000_000_123_456_789);
    p
}

/// What a run left: its outcome, its console output, the machine's final snapshot, and
/// the instructions it ran.
struct End {
    outcome: RunOutcome,
    output: Vec<u8>,
    state: Vec<u8>,
    instructions: u64,
}

fn straight_through(name: &str) -> End {
    let guest = opsvisor_corpus::guest(name).unwrap();
    let image = opsvisor_corpus::image(name);
    let mut vm = build_machine(&image, &options(guest), platform(guest.input)).unwrap();
    let outcome = vm.run();
    End {
        outcome,
        output: vm.platform.output.clone(),
        state: snapshot::save(&mut vm).unwrap(),
        instructions: vm.instructions_retired().unwrap(),
    }
}

/// Run to `n` instructions, save, restore into a new machine (with the console input not
/// yet taken), run that to the end. Also returns what was pending at the save: whether a
/// local APIC timer was armed and whether COM1's interrupt line was high.
fn save_restore_continue(name: &str, n: u64) -> (End, bool, bool) {
    let guest = opsvisor_corpus::guest(name).unwrap();
    let image = opsvisor_corpus::image(name);
    let mut opts = options(guest);
    opts.max_instructions = Some(n);
    let mut vm = build_machine(&image, &opts, platform(guest.input)).unwrap();
    assert_eq!(vm.run(), RunOutcome::InstructionLimit, "{name} at {n}");
    let saved = snapshot::save(&mut vm).unwrap();
    let timer_armed = vm.vcpus()[0].apic.next_deadline().is_some();
    let com1_line = vm.devices.irqchip.line(opsvisor_core::vm::COM1_IRQ);
    let mut output = vm.platform.output.clone();
    let input: Vec<u8> = vm.platform.input.iter().copied().collect();
    drop(vm);

    opts.max_instructions = None;
    let mut vm = restore_machine(&saved, &opts, platform(&input)).unwrap();
    let outcome = vm.run();
    output.extend_from_slice(&vm.platform.output);
    let end = End {
        outcome,
        output,
        state: snapshot::save(&mut vm).unwrap(),
        instructions: vm.instructions_retired().unwrap(),
    };
    (end, timer_armed, com1_line)
}

/// The first multiple of `step` instructions at which `pending` holds for the guest's
/// machine (the guest run in slices of `step`), if one comes before the guest ends.
fn first_point(
    name: &str,
    step: u64,
    pending: impl Fn(&opsvisor_backends::Machine<CapturePlatform>) -> bool,
) -> Option<u64> {
    let guest = opsvisor_corpus::guest(name).unwrap();
    let image = opsvisor_corpus::image(name);
    let mut opts = options(guest);
    opts.max_instructions = Some(step);
    let mut vm = build_machine(&image, &opts, platform(guest.input)).unwrap();
    while vm.run() == RunOutcome::InstructionLimit {
        if pending(&vm) {
            return vm.instructions_retired();
        }
    }
    None
}

/// The guest straight through, then saved and restored at `parts` points spread over its
/// run and at `extra` points; returns how many of the saves had a timer armed and the
/// COM1 line high.
fn continues_exactly(name: &str, parts: u64, extra: &[u64]) -> (usize, usize) {
    let whole = straight_through(name);
    assert!(
        matches!(whole.outcome, RunOutcome::DebugExit { status: 1 }),
        "{name}: {:?}\n{}",
        whole.outcome,
        String::from_utf8_lossy(&whole.output)
    );
    let (mut armed, mut line) = (0, 0);
    let spread = (1..=parts).map(|k| whole.instructions * k / (parts + 1));
    for n in spread.chain(extra.iter().copied()) {
        let (end, timer_armed, com1_line) = save_restore_continue(name, n);
        armed += usize::from(timer_armed);
        line += usize::from(com1_line);
        assert_eq!(end.outcome, whole.outcome, "{name} restored at {n}");
        assert_eq!(
            String::from_utf8_lossy(&end.output),
            String::from_utf8_lossy(&whole.output),
            "{name} restored at {n}: console output"
        );
        assert_eq!(
            end.instructions, whole.instructions,
            "{name} restored at {n}"
        );
        assert!(
            end.state == whole.state,
            "{name} restored at {n}: the final states differ in {}",
            difference(&whole.state, &end.state)
        );
    }
    (armed, line)
}

/// The sections of a snapshot: (tag, index, body).
fn sections(bytes: &[u8]) -> Vec<(String, u32, &[u8])> {
    let mut out = Vec::new();
    let mut pos = snapshot::HEADER_LEN;
    while pos + snapshot::SECTION_HEADER_LEN <= bytes.len() - snapshot::TRAILER_LEN {
        let tag = String::from_utf8_lossy(&bytes[pos..pos + 4]).into_owned();
        let index = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        let len = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap()) as usize;
        let body = &bytes[pos + 16..pos + 16 + len];
        out.push((tag, index, body));
        pos += 16 + len;
    }
    out
}

/// Where two snapshots first differ: the section and the offset in its body.
fn difference(a: &[u8], b: &[u8]) -> String {
    for ((tag, index, x), (_, _, y)) in sections(a).into_iter().zip(sections(b)) {
        if x != y {
            let at = x
                .iter()
                .zip(y)
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            return format!(
                "section '{tag}' {index} at byte {at} of {} / {}: {:02x?} / {:02x?}",
                x.len(),
                y.len(),
                &x[at..(at + 16).min(x.len())],
                &y[at..(at + 16).min(y.len())]
            );
        }
    }
    String::from("the trailer")
}

#[test]
fn apic_timer_periodic_continues_exactly_from_a_snapshot() {
    let armed_at = first_point("apic_timer_periodic", 5_000, |vm| {
        vm.vcpus()[0].apic.next_deadline().is_some()
    })
    .expect("the guest arms its timer");
    let (armed, _) = continues_exactly("apic_timer_periodic", 4, &[armed_at, armed_at + 20_000]);
    assert!(armed >= 1, "a timer was armed at {armed} of the saves");
}

#[test]
fn hello_continues_exactly_from_a_snapshot() {
    continues_exactly("hello", 3, &[]);
}

#[test]
fn com1_rx_continues_exactly_from_a_snapshot() {
    continues_exactly("com1_rx", 5, &[]);
}

#[test]
fn ioapic_irq_continues_exactly_from_a_snapshot() {
    continues_exactly("ioapic_irq", 4, &[]);
}

#[test]
fn timer_busy_loop_continues_exactly_from_a_snapshot() {
    continues_exactly("timer_busy_loop", 4, &[]);
}

#[test]
fn pc_testdev_continues_exactly_from_a_snapshot() {
    // The test device's scratch register and MMIO window travel in the file.
    continues_exactly("pc_testdev", 4, &[]);
}

#[test]
fn cpu_features_continues_exactly_from_a_snapshot() {
    // XCR0, PKRU, CR4's feature bits and the CPU model travel in the file.
    continues_exactly("cpu_features", 5, &[]);
}

#[test]
fn debug_breakpoints_continues_exactly_from_a_snapshot() {
    // The debug registers, armed breakpoints included, travel in the file.
    continues_exactly("debug_breakpoints", 5, &[]);
}

#[test]
fn smp_spinlock_continues_exactly_from_a_snapshot() {
    continues_exactly("smp_spinlock", 4, &[]);
}

#[test]
fn the_fuzzers_checked_in_snapshot_restores_and_takes_input() {
    // fuzz/snapshots/com1_rx_waiting.snap is where every snapshot_uart input starts: it
    // must be of this version's format (regenerate it as its fuzz target says when the
    // format changes), and the guest in it, waiting at its prompt, sees what is typed.
    let bytes = include_bytes!("../../fuzz/snapshots/com1_rx_waiting.snap");
    let opts = MachineOptions {
        max_instructions: Some(2_000_000),
        timeout: Some(Duration::from_secs(60)),
        ..MachineOptions::default()
    };
    let mut console = CapturePlatform::new();
    console.input.extend(b"opsvisor rx 42\n");
    let mut vm = restore_machine(bytes, &opts, console).expect("the fuzzer's snapshot restores");
    let outcome = vm.run();
    let output = String::from_utf8_lossy(&vm.platform.output).into_owned();
    // The guest's next wait is 50 ms of guest time (50 million instructions with
    // --icount): the fuzzer's budget ends inside it, after the input arrived.
    assert_eq!(outcome, RunOutcome::InstructionLimit, "{output}");
    assert!(
        output.contains("ok: LSR.DR: console input arrived"),
        "{output}"
    );
}
