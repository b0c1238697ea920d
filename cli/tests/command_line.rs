//! The command line of issue 15: help from clap for the program and each command, shell
//! completions, QEMU's spellings (--kernel, -m, --smp, --serial), the exit trace read
//! back as JSON, `--stats`' breakdowns, and one error line with status 2 for each bad
//! value of the new options.

use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn opsvisor<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the opsvisor binary runs")
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).expect("scratch file written");
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exactly one line on stderr, status 2, and the line mentions `needle`.
fn assert_one_error_line(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "expected one error line, got: {err}"
    );
    assert!(err.starts_with("opsvisor: "), "{err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

/// A flat protected-mode program with one exit of each kind the core handles, each with
/// a known value, ending with a debug exit of 0 (status 1):
///
/// ```text
/// mov eax, 7; xor ecx, ecx; cpuid            cpuid leaf 7 subleaf 0
/// mov eax, 0xd; mov ecx, 1; cpuid            cpuid leaf 0xd subleaf 1
/// mov al, 0x5a; out 0x80, al                 io write 0x80, 1 byte, 0x5a
/// mov dx, 0x2f0; in al, dx; in ax, dx        io reads of a port with no device: 0xff, 0xffff
/// mov ecx, 0x1b; rdmsr; wrmsr                IA32_APIC_BASE: 0xfee00900, written back
/// mov eax, [0xfee00030]                      mmio read of the APIC version: 0x50014
/// mov dword [0xfee00080], 0x10               mmio write of the TPR
/// mov al, 0; out 0xf4, al                    debug exit
/// ```
const EXITS: &[u8] = &[
    0xb8, 0x07, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, // leaf 7
    0xb8, 0x0d, 0x00, 0x00, 0x00, 0xb9, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, // leaf 0xd.1
    0xb0, 0x5a, 0xe6, 0x80, // out 0x80
    0x66, 0xba, 0xf0, 0x02, 0xec, 0x66, 0xed, // in al/ax, dx
    0xb9, 0x1b, 0x00, 0x00, 0x00, 0x0f, 0x32, 0x0f, 0x30, // rdmsr; wrmsr
    0xa1, 0x30, 0x00, 0xe0, 0xfe, // mov eax, [0xfee00030]
    0xc7, 0x05, 0x80, 0x00, 0xe0, 0xfe, 0x10, 0x00, 0x00, 0x00, // mov [0xfee00080], 0x10
    0xb0, 0x00, 0xe6, 0xf4, // debug exit
];

/// Where the program is loaded (the default for a protected-mode flat binary).
const LOAD: u64 = 0x10_0000;

fn trace_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the trace is text");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn the_exit_trace_reads_back_as_json_with_each_exits_fields() {
    let program = scratch("exits.bin", EXITS);
    let trace = Path::new(env!("CARGO_TARGET_TMPDIR")).join("exits.jsonl");
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--flat"),
        OsStr::new("--trace-exits"),
        trace.as_os_str(),
        program.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "nothing on stderr: {}", stderr(&out));
    let records = trace_lines(&trace);
    let mut times = Vec::new();
    for r in &records {
        assert_eq!(r["vcpu"], 0, "{r}");
        times.push(r["time_ns"].as_u64().expect("time_ns is a number"));
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time runs forward");
    // What identifies each exit, in order, with the RIP at the exit (the emulator's time
    // slices may add preemption records between them).
    let seen: Vec<Value> = records
        .iter()
        .filter(|r| r["reason"] != "preempted")
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("time_ns");
            r.as_object_mut().unwrap().remove("vcpu");
            r
        })
        .collect();
    let rip = |offset: u64| format!("{:#x}", LOAD + offset);
    let expected = serde_json::json!([
        {"reason": "cpuid", "rip": rip(7), "leaf": "0x7", "subleaf": "0x0"},
        {"reason": "cpuid", "rip": rip(19), "leaf": "0xd", "subleaf": "0x1"},
        {"reason": "io", "rip": rip(23), "port": "0x80", "size": 1, "direction": "write", "value": "0x5a"},
        {"reason": "io", "rip": rip(29), "port": "0x2f0", "size": 1, "direction": "read", "value": "0xff"},
        {"reason": "io", "rip": rip(30), "port": "0x2f0", "size": 2, "direction": "read", "value": "0xffff"},
        {"reason": "rdmsr", "rip": rip(37), "msr": "0x1b", "value": "0xfee00900"},
        {"reason": "wrmsr", "rip": rip(39), "msr": "0x1b", "value": "0xfee00900"},
        {"reason": "mmio", "rip": rip(41), "gpa": "0xfee00030", "size": 4, "direction": "read", "value": "0x50014"},
        // The emulator posts MMIO writes: the exit comes after the store, at the next
        // instruction.
        {"reason": "mmio", "rip": rip(56), "gpa": "0xfee00080", "size": 4, "direction": "write", "value": "0x10"},
        {"reason": "io", "rip": rip(58), "port": "0xf4", "size": 1, "direction": "write", "value": "0x0"},
    ]);
    assert_eq!(Value::Array(seen), expected);
}

#[test]
fn the_trace_filter_keeps_only_the_named_reasons() {
    let program = scratch("exits-filtered.bin", EXITS);
    let trace = Path::new(env!("CARGO_TARGET_TMPDIR")).join("exits-filtered.jsonl");
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--flat"),
        OsStr::new("--trace-exits"),
        trace.as_os_str(),
        OsStr::new("--trace-filter=msr,cpuid"),
        program.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let reasons: Vec<String> = trace_lines(&trace)
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["cpuid", "cpuid", "rdmsr", "wrmsr"]);
}

#[test]
fn a_corpus_guests_trace_counts_what_stats_counts() {
    let guest = opsvisor_corpus::image_path("hello");
    let trace = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hello.jsonl");
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--stats"),
        OsStr::new("--timeout"),
        OsStr::new("60"),
        OsStr::new("--trace-exits"),
        trace.as_os_str(),
        guest.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let records = trace_lines(&trace);
    let err = stderr(&out);
    // The statistics' total is the trace's length; its port table counts the trace's
    // COM1 writes.
    let total = err
        .lines()
        .find_map(|l| l.strip_prefix("total exits"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .expect("a total line");
    assert_eq!(total, records.len(), "{err}");
    let com1_writes = records
        .iter()
        .filter(|r| r["port"] == "0x3f8" && r["direction"] == "write")
        .count();
    assert!(com1_writes > 100, "the guest prints: {com1_writes}");
    let row = err
        .lines()
        .find(|l| l.trim_start().starts_with("0x3f8:write"))
        .unwrap_or_else(|| panic!("no COM1 row: {err}"));
    let count: usize = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(count, com1_writes, "{row}");
    for section in ["vCPU", "I/O port", "MSR"] {
        assert!(
            err.lines().any(|l| l.starts_with(section)),
            "{section}: {err}"
        );
    }
    assert!(err.contains("0xc0000080:rdmsr"), "{err}");
}

#[test]
fn stats_break_exits_down_by_port_msr_mmio_and_cpuid_leaf() {
    let program = scratch("exits-stats.bin", EXITS);
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--stats"),
        OsStr::new("--flat"),
        program.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    for row in [
        "0x80:write",
        "0x2f0:read",
        "0xf4:write",
        "0x1b:rdmsr",
        "0x1b:wrmsr",
        "0xfee00030:read",
        "0xfee00080:write",
        "0x7 ",
        "0xd ",
    ] {
        assert!(
            err.lines().any(|l| l.trim_start().starts_with(row)),
            "no row {row:?} in: {err}"
        );
    }
    let port_row = err
        .lines()
        .find(|l| l.trim_start().starts_with("0x2f0:read"))
        .unwrap();
    assert_eq!(port_row.split_whitespace().nth(1), Some("2"), "{port_row}");
}

#[test]
fn serial_goes_to_a_file_or_nowhere() {
    let guest = opsvisor_corpus::image_path("hello");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("com1.log");
    let mut serial = OsStr::new("file:").to_os_string();
    serial.push(&log);
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--timeout"),
        OsStr::new("60"),
        OsStr::new("--serial"),
        &serial,
        OsStr::new("--append"),
        OsStr::new("to a file"),
        guest.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout stays empty");
    let text = std::fs::read_to_string(&log).expect("the serial file");
    assert!(text.contains("hello from opsvisor guest"), "{text}");
    // The multiboot command line: the kernel's path as given, then --append's text.
    assert!(
        text.contains(&format!("cmdline: {} to a file", guest.display())),
        "{text}"
    );

    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--timeout"),
        OsStr::new("60"),
        OsStr::new("--serial=none"),
        guest.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty());

    // A file name that is not UTF-8 is a file name.
    let odd = Path::new(env!("CARGO_TARGET_TMPDIR")).join(OsStr::from_bytes(b"com1-\xff.log"));
    let mut serial = OsStr::new("file:").to_os_string();
    serial.push(&odd);
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--serial"),
        &serial,
        guest.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(std::fs::read(&odd)
        .unwrap()
        .starts_with(b"hello from opsvisor guest"));
}

#[test]
fn qemu_spellings_boot_the_same_guest() {
    let guest = opsvisor_corpus::image_path("hello");
    // The APs of --smp 4 wait for start-up IPIs the guest never sends.
    for smp in ["1", "cpus=4"] {
        let out = opsvisor([
            OsStr::new("run"),
            OsStr::new("-m"),
            OsStr::new("64M"),
            OsStr::new("--smp"),
            OsStr::new(smp),
            OsStr::new("--kernel"),
            guest.as_os_str(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "--smp {smp}: stderr: {}",
            stderr(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        // 64 MiB: mem_upper is 63 MiB.
        assert!(
            stdout.contains("mem_upper 64512 KiB"),
            "--smp {smp}: {stdout}"
        );
    }
}

#[test]
fn help_comes_from_clap_for_the_program_and_each_command() {
    let out = opsvisor(["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Usage: opsvisor",
        "run",
        "exec",
        "completions",
        "EXIT STATUS",
        "-v",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
    let out = opsvisor(["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Usage: opsvisor run [OPTIONS] [KERNEL]",
        "--kernel <FILE>",
        "-m, --memory <SIZE>",
        "--smp <N>",
        "--serial <DEV>",
        "--initrd <FILE>",
        "--append <STRING>",
        "--no-reboot",
        "--trace-exits <FILE>",
        "--trace-filter <LIST>",
        "EXIT TRACE",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
    let out = opsvisor(["exec", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--memory-output"), "{text}");
    assert!(text.contains("Batch mode"), "{text}");
    let out = opsvisor(["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "opsvisor 0.1.0"
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef opsvisor"),
        ("fish", "complete -c opsvisor"),
    ] {
        let out = opsvisor(["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("trace-exits"), "{shell}");
    }
    if Command::new("bash").arg("--version").output().is_ok() {
        // The bash script parses.
        let script = opsvisor(["completions", "bash"]).stdout;
        let path = scratch("opsvisor.bash", &script);
        let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(check.status.success(), "{}", stderr(&check));
    }
}

#[test]
fn verbose_runs_say_what_they_do_on_stderr_only() {
    let guest = opsvisor_corpus::image_path("hello");
    let out = opsvisor([OsStr::new("run"), OsStr::new("-v"), guest.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("opsvisor: booting"), "{err}");
    assert!(err.contains("the run ended"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("booting"), "diagnostics stay off stdout");
    // RUST_LOG overrides -v.
    let out = Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .args([OsStr::new("run"), OsStr::new("-v"), guest.as_os_str()])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn bad_values_of_the_new_options_are_one_error_line() {
    let program = scratch("exits-bad.bin", EXITS);
    let p = program.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--serial", "pty", p],
            "invalid --serial 'pty': expected stdio, file:PATH or none",
        ),
        (&["run", "--serial", "file:", p], "file name is missing"),
        (
            &["run", "--serial", "file:/nonexistent/dir/com1.log", p],
            "cannot create the serial output '/nonexistent/dir/com1.log'",
        ),
        (
            &["run", "--smp", "256", p],
            "--smp: '256' is not a vCPU count: expected N or cpus=N with N from 1 to 255",
        ),
        (&["run", "--smp", "0", p], "--smp: '0' is not a vCPU count"),
        (
            &["run", "--smp", "2,sockets=2", p],
            "--smp: '2,sockets=2' is not a vCPU count",
        ),
        (&["run", "--kernel", p, p], "the kernel is given twice"),
        (&["run", "--kernel"], "option --kernel needs a value"),
        (
            &["run", "--trace-filter", "io", p],
            "--trace-filter needs --trace-exits",
        ),
        (
            &[
                "run",
                "--trace-exits",
                "/tmp/t.jsonl",
                "--trace-filter",
                "io,portio",
                p,
            ],
            "unknown exit reason 'portio'",
        ),
        (
            &["run", "--trace-exits", "/nonexistent/dir/t.jsonl", p],
            "cannot create the exit trace '/nonexistent/dir/t.jsonl'",
        ),
        (
            &["run", "--trace-exits", "a", "--trace-exits", "b", p],
            "option --trace-exits is given more than once",
        ),
        (
            &["run", "--no-reboot=1", p],
            "option --no-reboot takes no value",
        ),
        (&["completions", "tcsh"], "unknown shell 'tcsh'"),
        (&["completions"], "completions needs a SHELL"),
        (
            &["exec", "--memory-output", "some", "x.json"],
            "invalid --memory-output 'some'",
        ),
        (&["exec"], "no STATE.json given"),
        (
            &["exec", "a.json", "b.json"],
            "more than one state file given ('b.json' is extra)",
        ),
        (&["-x"], "unknown option '-x'"),
        (
            &["--verbose=3", "run", p],
            "option --verbose takes no value",
        ),
    ];
    for (args, needle) in cases {
        assert_one_error_line(&opsvisor(*args), needle);
    }
    // A non-UTF-8 value where text is needed names the option.
    let out = opsvisor([
        OsStr::new("run"),
        OsStr::new("--trace-exits"),
        OsStr::new("/tmp/t.jsonl"),
        OsStr::new("--trace-filter"),
        OsStr::from_bytes(b"i\xffo"),
        OsStr::new(p),
    ]);
    assert_one_error_line(
        &out,
        "the value of --trace-filter 'i\u{fffd}o' is not valid UTF-8",
    );
}

/// A trace or serial FIFO that nobody reads (nobody even opens) holds the run only until
/// `--timeout`: the run ends on time with its one line, counting what was dropped.
#[test]
fn outputs_nobody_reads_hold_the_run_only_until_the_timeout() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // mov dx, 0x3f8; mov al, 'x'; out dx, al; jmp back to the OUT: an exit per loop.
    let chatter = scratch(
        "chatter-fifo.bin",
        &[0x66, 0xba, 0xf8, 0x03, 0xb0, 0x78, 0xee, 0xeb, 0xfd],
    );
    for (name, option) in [("trace.fifo", "--trace-exits"), ("com1.fifo", "--serial")] {
        let fifo = dir.join(name);
        let _ = std::fs::remove_file(&fifo);
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        let value = if option == "--serial" {
            let mut v = OsStr::new("file:").to_os_string();
            v.push(&fifo);
            v
        } else {
            fifo.clone().into_os_string()
        };
        let started = std::time::Instant::now();
        let out = opsvisor([
            OsStr::new("run"),
            OsStr::new("--flat"),
            OsStr::new("--timeout"),
            OsStr::new("1"),
            OsStr::new(option),
            &value,
            chatter.as_os_str(),
        ]);
        let took = started.elapsed();
        assert!(took.as_secs() < 10, "{option}: took {took:?}");
        assert_one_error_line_with_status(&out, 8, "stopped after the timeout (");
        let dropped = if option == "--serial" {
            "bytes of guest output were dropped"
        } else {
            "exit trace records were dropped"
        };
        assert!(stderr(&out).contains(dropped), "{option}: {}", stderr(&out));
    }
}

/// Exactly one line on stderr, `status`, and the line mentions `needle`.
fn assert_one_error_line_with_status(out: &Output, status: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}
