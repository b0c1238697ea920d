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
//! written once, in [`__with_guest_list!`] (`src/guest_list.rs`): both [`GUESTS`] and the
//! generated tests come from it, and a test checks it against the guests that were built.
//!
//! Conventions of the guests: exit code 0 (process status 1) is PASS, anything else
//! FAIL; every check prints `ok: ...` or `FAIL: ...`; a guest whose subject the CPU does
//! not have (for instance no TSC-deadline timer) prints `SKIP: <why>` and passes. A guest
//! whose subject is resetting or powering off the machine passes when the run ends that
//! way ([`Outcome`]), with its expected output and no `FAIL:` line. A guest given console
//! input ([`Guest::input`]) prints [`INPUT_PROMPT`] when it is ready for it; a runner
//! that cannot type later (the emulator's console buffer, the bare-metal image's
//! `console-input=`) gives it from the start.

use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;
use std::path::PathBuf;
use std::time::Duration;

mod guest_list;

/// The line a guest given console input prints when it is ready to receive it: a runner
/// that types into a live console (QEMU's) waits for it.
pub const INPUT_PROMPT: &str = "ready for console input";

/// How a passing run of a guest ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote PASS (0) to the debug-exit port: [`RunOutcome::DebugExit`] with
    /// status 1.
    Pass,
    /// The guest reset the machine: [`RunOutcome::Reset`].
    Reset,
    /// The guest powered the machine off through ACPI S5: [`RunOutcome::PowerOff`].
    PowerOff,
}

impl Outcome {
    /// Whether a run that ended with `outcome` ended this way.
    pub fn matches(self, outcome: &RunOutcome) -> bool {
        match self {
            Outcome::Pass => matches!(outcome, RunOutcome::DebugExit { status: 1 }),
            Outcome::Reset => matches!(outcome, RunOutcome::Reset),
            Outcome::PowerOff => matches!(outcome, RunOutcome::PowerOff),
        }
    }
}

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
    /// How a passing run ends.
    pub outcome: Outcome,
    /// Console input for the guest (typed once it prints [`INPUT_PROMPT`]).
    pub input: &'static [u8],
    /// The machine's vCPUs (`--smp`; the bare-metal image's `smp=N`).
    pub vcpus: u32,
    /// Whether the machine has QEMU's ISA test device (`--device pc-testdev`).
    pub pc_testdev: bool,
    /// Why the bare-metal image's runners skip the guest, if they do.
    pub image_skip: Option<&'static str>,
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

/// Expands the guest list into the [`GUESTS`] table.
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_table {
    ({} $($name:ident : (
        $cmdline:expr,
        [$($expect:expr),* $(,)?],
        $timeout:expr
        $(, outcome = $outcome:ident)?
        $(, input = $input:expr)?
        $(, smp = $smp:expr)?
        $(, pc_testdev = $testdev:expr)?
        $(, image_skip = $image_skip:expr)?
    )),* $(,)?) => {
        &[$($crate::Guest {
            name: stringify!($name),
            cmdline: $cmdline,
            expect_output: &[$($expect),*],
            timeout_secs: $timeout,
            outcome: $crate::__given_or!($crate::Outcome::Pass $(, $crate::Outcome::$outcome)?),
            input: $crate::__given_or!(b"" $(, $input)?),
            vcpus: $crate::__given_or!(1 $(, $smp)?),
            pc_testdev: $crate::__given_or!(false $(, $testdev)?),
            image_skip: $crate::__given_or!(None $(, Some($image_skip))?),
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
pub const GUESTS: &[Guest] = crate::__with_guest_list!(__guest_table! {});

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

/// Whether a report is a PASS for `guest`: the run ended as the guest's [`Outcome`] says
/// (status 1 from the debug-exit port for most), every expected string in the output,
/// and no `FAIL:` line. The error names what is wrong.
pub fn check_report(guest: &Guest, report: &RunReport) -> Result<(), String> {
    let mut problems = Vec::new();
    if !guest.outcome.matches(&report.outcome) {
        let expected = match guest.outcome {
            Outcome::Pass => "DebugExit { status: 1 } (PASS)",
            Outcome::Reset => "Reset (the guest resets the machine)",
            Outcome::PowerOff => "PowerOff (the guest enters ACPI S5)",
        };
        problems.push(format!("outcome {:?}, not {expected}", report.outcome));
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

/// Run `guest` on opsvisor's emulator backend, console captured, with the guest's vCPUs
/// and devices, its image's path as the kernel's name.
pub fn run_on_emulator(guest: &Guest) -> RunReport {
    use opsvisor_backends::{build_machine, BackendKind, MachineOptions};
    let opts = MachineOptions {
        backend: BackendKind::Emu,
        memory: 128 << 20,
        vcpus: guest.vcpus,
        pc_testdev: guest.pc_testdev,
        kernel_name: image_path(guest.name).into_os_string().into_encoded_bytes(),
        cmdline: guest.cmdline.as_bytes().to_vec(),
        timeout: Some(Duration::from_secs(guest.timeout_secs)),
        ..MachineOptions::default()
    };
    let mut platform = CapturePlatform::new();
    platform.echo = std::env::var_os("OPSVISOR_CORPUS_ECHO").is_some();
    // The console buffer holds the input from the start: the UART has it for the guest
    // whenever the guest reads.
    platform.input.extend(guest.input);
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

/// The trace event QEMU logs (on stderr) when the guest asks it to shut down, with the
/// cause: `reason=6` is the guest's ACPI power-off (QEMU's `SHUTDOWN_CAUSE_GUEST_SHUTDOWN`).
/// A reset under `-no-reboot` ends QEMU without it (`qemu_system_reset_request` has no
/// trace event), and so does the debug-exit device.
const QEMU_SHUTDOWN_TRACE: &str = "qemu_system_shutdown_request";

/// How a QEMU run ended, from its exit status and whether it logged the guest's power-off
/// (see [`QEMU_SHUTDOWN_TRACE`]): an odd status is the debug-exit device's, 0 is the end
/// of the machine (`-no-reboot` turns a reset into it).
pub fn qemu_outcome(status: std::process::ExitStatus, stderr: &str) -> RunOutcome {
    let powered_off = stderr
        .lines()
        .any(|l| l.contains(QEMU_SHUTDOWN_TRACE) && l.trim_end().ends_with("reason=6"));
    match status.code() {
        Some(0) if powered_off => RunOutcome::PowerOff,
        Some(0) => RunOutcome::Reset,
        Some(code) => RunOutcome::DebugExit { status: code },
        None => RunOutcome::Failed(format!("QEMU ended by a signal: {status}")),
    }
}

/// Run `guest` under QEMU (TCG, `-cpu max`, 128 MiB, isa-debug-exit on 0xF4,
/// `-no-reboot`), the reference the corpus was verified on. Needs `qemu-system-x86_64` on
/// PATH (or in `OPSVISOR_QEMU`); a missing QEMU is a `Failed` outcome naming it. The
/// guest's console input is typed on QEMU's serial console once the guest prints
/// [`INPUT_PROMPT`] (typed earlier, the runtime's UART set-up would drop it); QEMU's
/// stderr is echoed after the run.
pub fn run_on_qemu(guest: &Guest) -> RunReport {
    use std::io::{Read, Write};
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
            "-trace",
            QEMU_SHUTDOWN_TRACE,
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
        .args(["-smp", &guest.vcpus.to_string()])
        .args(if guest.pc_testdev {
            &["-device", "pc-testdev"][..]
        } else {
            &[]
        })
        .stdin(if guest.input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    // Read stdout and stderr on threads so a chatty guest never blocks on a full pipe;
    // the stdout reader types the input when the prompt appears.
    let mut stdout = child.stdout.take();
    let mut stdin = child.stdin.take();
    let input = guest.input;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut typed = false;
        while let Some(n) = stdout.as_mut().and_then(|s| s.read(&mut chunk).ok()) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if !typed && String::from_utf8_lossy(&buf).contains(INPUT_PROMPT) {
                typed = true;
                if let Some(s) = stdin.as_mut() {
                    // A QEMU that already exited has nobody to type to: nothing to do.
                    let _ = s.write_all(input).and_then(|()| s.flush());
                }
            }
        }
        // stdin closes here, once QEMU has ended: an early EOF is not input either.
        drop(stdin);
        buf
    });
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(guest.timeout_secs);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(RunOutcome::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(RunOutcome::Failed(format!("waiting for QEMU: {e}"))),
        }
    };
    let output = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    for line in stderr.lines().filter(|l| !l.contains(QEMU_SHUTDOWN_TRACE)) {
        eprintln!("{line}");
    }
    let outcome = match status {
        Ok(status) => qemu_outcome(status, &stderr),
        Err(outcome) => outcome,
    };
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
            "guests/src/bin and the guest list in corpus/src/guest_list.rs differ"
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
    fn a_guest_that_resets_or_powers_off_passes_only_that_way() {
        let reset = guest("reset_cf9").expect("reset_cf9 is listed");
        assert_eq!(reset.outcome, Outcome::Reset);
        let output = "ok: SYS_RST alone is kept and does not reset (2)\nresetting through 0xCF9 (SYS_RST | RST_CPU)\n";
        let ended = |outcome| RunReport {
            outcome,
            output: output.to_string(),
        };
        assert!(check_report(reset, &ended(RunOutcome::Reset)).is_ok());
        for wrong in [
            RunOutcome::DebugExit { status: 1 },
            RunOutcome::PowerOff,
            RunOutcome::TripleFault { rip: 0 },
            RunOutcome::Timeout,
        ] {
            let e = check_report(reset, &ended(wrong)).expect_err("not a reset");
            assert!(e.contains("not Reset"), "{e}");
        }
        let off = guest("acpi_s5").expect("acpi_s5 is listed");
        assert_eq!(off.outcome, Outcome::PowerOff);
        assert!(!Outcome::PowerOff.matches(&RunOutcome::Reset));
        assert!(Outcome::PowerOff.matches(&RunOutcome::PowerOff));
        // The default, and the input field.
        assert_eq!(
            guest("hello").map(|g| (g.outcome, g.input)),
            Some((Outcome::Pass, &b""[..]))
        );
        assert_eq!(
            guest("com1_rx").map(|g| g.input),
            Some(&b"opsvisor rx 42\n"[..])
        );
        // vCPUs and the test device: one and none unless the list says.
        assert_eq!(
            guest("hello").map(|g| (g.vcpus, g.pc_testdev)),
            Some((1, false))
        );
        assert_eq!(guest("pc_testdev").map(|g| g.pc_testdev), Some(true));
    }

    #[test]
    fn qemu_exit_statuses_and_the_shutdown_trace() {
        use std::os::unix::process::ExitStatusExt;
        let code = |c: i32| std::process::ExitStatus::from_raw(c << 8);
        assert_eq!(
            qemu_outcome(code(1), ""),
            RunOutcome::DebugExit { status: 1 }
        );
        assert_eq!(qemu_outcome(code(0), "warning: x\n"), RunOutcome::Reset);
        assert_eq!(
            qemu_outcome(code(0), "qemu_system_shutdown_request reason=6\n"),
            RunOutcome::PowerOff
        );
        // Another cause (the host's signal, 4) is not the guest's power-off.
        assert_eq!(
            qemu_outcome(code(0), "123@1.5:qemu_system_shutdown_request reason=4\n"),
            RunOutcome::Reset
        );
        assert!(matches!(
            qemu_outcome(std::process::ExitStatus::from_raw(9), ""),
            RunOutcome::Failed(_)
        ));
    }

    #[test]
    fn skip_is_reported() {
        let r = report(1, "\x1b[0mSKIP: no TSC-deadline timer\nPASS (skipped)\n");
        assert_eq!(r.skipped(), Some("no TSC-deadline timer"));
        assert_eq!(report(1, "PASS\n").skipped(), None);
    }
}
