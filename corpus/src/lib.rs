//! The guest corpus: small multiboot kernels (built from `guests/` for
//! `x86_64-unknown-none` by this crate's build script), each checking one area of the
//! machine and reporting pass/fail through the debug-exit port, written once and run on
//! every backend.
//!
//! A backend's test file is one line:
//!
//! ```ignore
//! opsvisor_corpus::corpus_tests!(emu, opsvisor_corpus::run_on_emulator);
//! ```
//!
//! which expands to a module `emu` with one `#[test]` per guest. The guest list is
//! written once, in [`__with_guest_list!`]: both [`GUESTS`] and the generated tests come
//! from it, and a test checks it against the guests that were built.
//!
//! Conventions of the guests: exit code 0 (process status 1) is PASS, anything else
//! FAIL; every check prints `ok: ...` or `FAIL: ...`; a guest whose subject the CPU does
//! not have (for instance no TSC-deadline timer) prints `SKIP: <why>` and passes.

use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;
use std::path::PathBuf;
use std::time::Duration;

/// One corpus guest.
#[derive(Clone, Copy, Debug)]
pub struct Guest {
    /// Its name: the binary in `guests/src/bin/` and the generated test.
    pub name: &'static str,
    /// The multiboot command line it is booted with.
    pub cmdline: &'static str,
    /// Text its console output must contain (each item somewhere in it).
    pub expect_output: &'static [&'static str],
    /// How long a run may take before it counts as hung.
    pub timeout_secs: u64,
}

/// What running a guest produced.
#[derive(Debug)]
pub struct RunReport {
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Everything the guest wrote to its console (lossy UTF-8).
    pub output: String,
}

impl RunReport {
    /// The reason given by the guest's `SKIP:` line, if it skipped.
    pub fn skipped(&self) -> Option<&str> {
        // Anywhere in the line: firmware output (escape sequences, "Booting from ROM..")
        // can precede the guest's first line without a newline.
        self.output
            .lines()
            .find_map(|l| l.find("SKIP: ").map(|i| l[i + "SKIP: ".len()..].trim_end()))
    }
}

/// The guest list: the one place a guest is named. Calls `$callback!` (a macro of this
/// crate) with `{ extra tokens }` and then `name: (cmdline, [expected output...],
/// timeout in seconds),` per guest.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_guest_list {
    ($callback:ident ! { $($extra:tt)* }) => {
        $crate::$callback! {
            { $($extra)* }
            hello: ("opsvisor-corpus-args x=1", ["hello from opsvisor guest", "opsvisor-corpus-args x=1", "PASS"], 30),
            page_fault: ("", ["the read completed with the value behind the new mapping", "the write completed after the fix", "PASS"], 30),
            ring3: ("", ["back in the kernel", "one SYSCALL handled", "PASS"], 30),
            apic_timer_oneshot: ("", ["one-shot fired exactly once", "masked timer delivered no interrupt", "PASS"], 30),
            apic_timer_periodic: ("", ["xAPIC MMIO: tick 5 arrived", "xAPIC MMIO: no interrupt after stopping", "PASS"], 30),
            apic_timer_tsc_deadline: ("", ["PASS"], 30),
            hlt_wakeup: ("", ["HLT returned after exactly one timer interrupt", "the pending interrupt woke the HLT", "PASS"], 30),
            msr: ("", ["SWAPGS: GS_BASE = old KERNEL_GS_BASE", "PASS"], 30),
            cpuid: ("", ["LM set", "PASS"], 30),
            apic_disable: ("", ["APIC globally disabled", "PASS"], 30),
            exceptions: ("", ["all exceptions delivered as expected", "PASS"], 30),
            pic_irq: ("", ["virtual wire: one interrupt", "level-triggered: the interrupt repeats", "the local APIC is globally disabled", "PASS"], 30),
            ioapic_irq: ("", ["IRQ 4 delivered as vector 0x44", "the EOI broadcast cleared remote IRR", "NMI delivery mode: one NMI", "PASS"], 30),
            pit: ("", ["mode 0: OUT2 rose N + 1 clocks after the write", "mode 3: OUT2 rises every 20000 clocks", "PASS"], 60),
            rtc: ("", ["the seconds stepped by one when UIP fell", "the alarm matched at the second update", "PASS"], 60),
            acpi_pm: ("", ["PM timer rate", "TMR_STS set by the toggle of bit 23", "PASS"], 60),
            cpu_features: ("", ["CR4.LA57 cannot change in IA-32e mode", "every CPU feature behaved as its CPUID bit says", "PASS"], 30),
            debug_breakpoints: ("", ["I/O breakpoint 0x80-0x81: traps after OUT and IN of port 0x80", "every breakpoint kind behaved as the SDM says", "PASS"], 30),
            debug_single_step: ("", ["CPUID and OUT, which the hypervisor completes, trap after themselves too", "MOV SS's shadow holds the trap until after the next instruction", "IA32_FMASK cleared TF for the kernel entry", "single-stepping behaved as the SDM says", "PASS"], 30),
        }
    };
}

/// Expands the guest list into the [`GUESTS`] table.
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_table {
    ({} $($name:ident : ($cmdline:expr, [$($expect:expr),* $(,)?], $timeout:expr)),* $(,)?) => {
        &[$($crate::Guest {
            name: stringify!($name),
            cmdline: $cmdline,
            expect_output: &[$($expect),*],
            timeout_secs: $timeout,
        }),*]
    };
}

/// Expands the guest list into one test per guest (see [`corpus_tests!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_tests {
    ({ $backend:ident, $runner:path } $($name:ident : $spec:tt),* $(,)?) => {
        /// The corpus on this backend: one test per guest.
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::run_and_check($runner, stringify!($name));
                }
            )*
        }
    };
    ({ $backend:ident, $runner:path, $ignore:literal } $($name:ident : $spec:tt),* $(,)?) => {
        /// The corpus on this backend: one test per guest, ignored by default.
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                #[ignore = $ignore]
                fn $name() {
                    $crate::run_and_check($runner, stringify!($name));
                }
            )*
        }
    };
}

/// Every corpus guest, in the order of the guest list.
pub const GUESTS: &[Guest] = __with_guest_list!(__guest_table! {});

/// One `#[test]` per corpus guest, in a module named after the backend:
/// `corpus_tests!(backend_name, runner)`, where `runner: fn(&Guest) -> RunReport`. Each
/// test runs its guest and asserts PASS and the expected output. A third argument, a
/// string, marks the tests `#[ignore]` with that reason (for runners that need a tool
/// the machine may not have).
#[macro_export]
macro_rules! corpus_tests {
    ($backend:ident, $runner:path $(,)?) => {
        $crate::__with_guest_list!(__guest_tests! { $backend, $runner });
    };
    ($backend:ident, $runner:path, $ignore:literal $(,)?) => {
        $crate::__with_guest_list!(__guest_tests! { $backend, $runner, $ignore });
    };
}

/// The guest named `name`, if there is one.
pub fn guest(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|g| g.name == name)
}

/// Where the build script put the images.
pub fn guests_dir() -> PathBuf {
    PathBuf::from(env!("OPSVISOR_GUESTS_DIR"))
}

/// The path of the built image of guest `name`.
pub fn image_path(name: &str) -> PathBuf {
    guests_dir().join(name)
}

/// The bytes of guest `name`'s image. Panics (it is for tests) if it is missing.
pub fn image(name: &str) -> Vec<u8> {
    let path = image_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading guest image {}: {e}", path.display()))
}

/// Whether a report is a PASS for `guest`: status 1 from the debug-exit port, every
/// expected string in the output, and no `FAIL:` line. The error names what is wrong.
pub fn check_report(guest: &Guest, report: &RunReport) -> Result<(), String> {
    let mut problems = Vec::new();
    if !matches!(report.outcome, RunOutcome::DebugExit { status: 1 }) {
        problems.push(format!(
            "outcome {:?}, not DebugExit {{ status: 1 }} (PASS)",
            report.outcome
        ));
    }
    for want in guest.expect_output {
        if !report.output.contains(want) {
            problems.push(format!("output lacks {want:?}"));
        }
    }
    if let Some(line) = report.output.lines().find(|l| l.contains("FAIL:")) {
        problems.push(format!("the guest reported {line:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "guest {} failed: {}\n--- guest output ---\n{}\n--- end ---",
            guest.name,
            problems.join("; "),
            report.output
        ))
    }
}

/// Run guest `name` with `runner` and panic unless it passed (the body of every
/// generated test). A skip passes, and is printed.
pub fn run_and_check(runner: impl Fn(&Guest) -> RunReport, name: &str) {
    let Some(g) = guest(name) else {
        panic!("no corpus guest named {name}")
    };
    let report = runner(g);
    if let Err(e) = check_report(g, &report) {
        panic!("{e}");
    }
    if let Some(why) = report.skipped() {
        println!("guest {name} skipped: {why}");
    }
}

/// Run `guest` on opsvisor's emulator backend, console captured.
pub fn run_on_emulator(guest: &Guest) -> RunReport {
    use opsvisor_backends::{build_machine, BackendKind, MachineOptions};
    let opts = MachineOptions {
        backend: BackendKind::Emu,
        memory: 128 << 20,
        cmdline: guest.cmdline.as_bytes().to_vec(),
        timeout: Some(Duration::from_secs(guest.timeout_secs)),
        ..MachineOptions::default()
    };
    let mut platform = CapturePlatform::new();
    platform.echo = std::env::var_os("OPSVISOR_CORPUS_ECHO").is_some();
    let mut vm = match build_machine(&image(guest.name), &opts, platform) {
        Ok(vm) => vm,
        Err(e) => {
            return RunReport {
                outcome: RunOutcome::Failed(format!("building the machine: {e}")),
                output: String::new(),
            }
        }
    };
    let outcome = vm.run();
    RunReport {
        outcome,
        output: String::from_utf8_lossy(&vm.platform.output).into_owned(),
    }
}

/// Run `guest` under QEMU (TCG, `-cpu max`, 128 MiB, isa-debug-exit on 0xF4), the
/// reference the corpus was verified on. Needs `qemu-system-x86_64` on PATH (or in
/// `OPSVISOR_QEMU`); a missing QEMU is a `Failed` outcome naming it.
pub fn run_on_qemu(guest: &Guest) -> RunReport {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let qemu = std::env::var_os("OPSVISOR_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    let image = image_path(guest.name);
    let child = Command::new(&qemu)
        .args([
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args([
            "-m",
            "128",
            "-net",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel",
        ])
        .arg(&image)
        .args(["-append", guest.cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "starting {}: {e} (install qemu-system-x86)",
                qemu.to_string_lossy()
            );
            return RunReport {
                outcome: RunOutcome::Failed(msg),
                output: String::new(),
            };
        }
    };
    // Read stdout on a thread so a chatty guest never blocks on a full pipe.
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(guest.timeout_secs);
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break match status.code() {
                    Some(code) => RunOutcome::DebugExit { status: code },
                    None => RunOutcome::Failed(format!("QEMU ended by a signal: {status}")),
                }
            }
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break RunOutcome::Timeout;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break RunOutcome::Failed(format!("waiting for QEMU: {e}")),
        }
    };
    let output = reader.join().unwrap_or_default();
    RunReport {
        outcome,
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: i32, output: &str) -> RunReport {
        RunReport {
            outcome: RunOutcome::DebugExit { status },
            output: output.to_string(),
        }
    }

    #[test]
    fn table_matches_the_built_guests() {
        let mut built: Vec<String> = std::fs::read_dir(guests_dir())
            .expect("guests dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        built.sort();
        let mut listed: Vec<String> = GUESTS.iter().map(|g| g.name.to_string()).collect();
        listed.sort();
        assert_eq!(
            built, listed,
            "guests/src/bin and the guest list in corpus/src/lib.rs differ"
        );
    }

    #[test]
    fn images_are_multiboot_with_a_consistent_aout_kludge() {
        for g in GUESTS {
            let img = image(g.name);
            let word = |off: usize| {
                u32::from_le_bytes([img[off], img[off + 1], img[off + 2], img[off + 3]])
            };
            let header = (0..8192usize.min(img.len().saturating_sub(32)))
                .step_by(4)
                .find(|&o| word(o) == 0x1BAD_B002)
                .unwrap_or_else(|| panic!("{}: no multiboot header in the first 8 KiB", g.name));
            let (magic, flags, sum) = (word(header), word(header + 4), word(header + 8));
            assert_eq!(
                magic.wrapping_add(flags).wrapping_add(sum),
                0,
                "{}: checksum",
                g.name
            );
            assert!(
                flags & (1 << 16) != 0,
                "{}: a.out kludge flag (QEMU needs it for ELF64)",
                g.name
            );
            let (header_addr, load_addr, load_end, bss_end, entry) = (
                word(header + 12),
                word(header + 16),
                word(header + 20),
                word(header + 24),
                word(header + 28),
            );
            assert_eq!(load_addr, 0x10_0000, "{}: loaded at 1 MiB", g.name);
            assert!(
                header_addr >= load_addr && load_end > header_addr,
                "{}: header inside the image",
                g.name
            );
            let file_start = header - (header_addr - load_addr) as usize;
            assert!(
                file_start as u64 + u64::from(load_end - load_addr) <= img.len() as u64,
                "{}: load_end_addr past the file end",
                g.name
            );
            assert!(bss_end >= load_end, "{}: bss after the loaded part", g.name);
            assert!(
                entry >= load_addr && entry < load_end,
                "{}: entry inside the loaded part",
                g.name
            );
        }
    }

    #[test]
    fn check_report_requires_status_output_and_no_fail_line() {
        let g = guest("hello").expect("hello is listed");
        let good = "hello from opsvisor guest\ncmdline: opsvisor-corpus-args x=1\nPASS\n";
        assert!(check_report(g, &report(1, good)).is_ok());
        assert!(
            check_report(g, &report(3, good)).is_err(),
            "status 3 is FAIL"
        );
        assert!(
            check_report(g, &report(1, "PASS\n")).is_err(),
            "expected output missing"
        );
        let failed = format!("{good}FAIL: something\n");
        assert!(
            check_report(g, &report(1, &failed)).is_err(),
            "a FAIL line fails"
        );
        let timeout = RunReport {
            outcome: RunOutcome::Timeout,
            output: good.to_string(),
        };
        assert!(check_report(g, &timeout).is_err());
    }

    #[test]
    fn skip_is_reported() {
        let r = report(1, "\x1b[0mSKIP: no TSC-deadline timer\nPASS (skipped)\n");
        assert_eq!(r.skipped(), Some("no TSC-deadline timer"));
        assert_eq!(report(1, "PASS\n").skipped(), None);
    }
}
