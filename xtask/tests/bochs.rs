//! Whole-system runs: the image boots corpus guests under Bochs and QEMU.
//!
//! The emulator runs are ignored by default (they need Bochs, QEMU and GRUB:
//! `bash scripts/setup.sh --test-machines`); run them with
//! `cargo test -p xtask -- --ignored`. The command-line checks run always.

use std::path::PathBuf;
use std::process::{Command, Output};

const NEEDS: &str = "needs bochs/qemu: bash scripts/setup.sh --test-machines";

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

/// Everything a run printed; a failed run's kept temporary directory is removed.
fn text(out: &Output) -> String {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(at) = all.find("files kept in ") {
        let rest = &all[at + "files kept in ".len()..];
        let dir = rest.split(')').next().unwrap_or("");
        if dir.contains("opsvisor-xtask-") {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    all
}

/// A multiboot v1 kernel (a.out kludge, loaded at 1 MiB) that writes 1 to the debug-exit
/// port: a guest that FAILs with status 3.
fn failing_kernel() -> PathBuf {
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 0x0001_0003;
    const LOAD: u32 = 0x10_0000;
    // mov eax, 1; out 0xf4, eax; hlt; jmp $-1
    let code = [0xB8, 1, 0, 0, 0, 0xE7, 0xF4, 0xF4, 0xEB, 0xFD];
    let total = 32 + code.len() as u32;
    let header = [
        MAGIC,
        FLAGS,
        0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS)),
        LOAD,
        LOAD,
        LOAD + total,
        0,
        LOAD + 32,
    ];
    let mut bytes: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.extend(code);
    let path = std::env::temp_dir().join(format!("opsvisor-fail-{}.bin", std::process::id()));
    std::fs::write(&path, bytes).expect("write the failing kernel");
    path
}

#[test]
fn help_and_bad_input() {
    let out = xtask(&["help"]);
    assert!(out.status.success());
    assert!(text(&out).contains("Usage: cargo xtask <COMMAND>"));
    assert!(text(&out).contains("Boot under headless Bochs"));
    let out = xtask(&["bochs", "--help"]);
    assert!(out.status.success());
    assert!(text(&out).contains("Usage: cargo xtask bochs [OPTIONS] [GUEST]"));
    assert!(text(&out).contains("--timeout <SECS>"));
    for args in [
        &["bochs"][..],
        &["qemu", "hello", "--timeout", "x"],
        &["qemu", "hello", "--megs", "64", "--megs", "128"],
        &["bochs-vmx", "--corpus", "hello"],
        &["warp"],
    ] {
        let out = xtask(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("xtask: "), "{args:?}: {err}");
    }
    let out = xtask(&["qemu", "./no/such/kernel"]);
    assert_eq!(out.status.code(), Some(2));
    // A path that is not UTF-8 reaches the check for the file, named as given.
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("qemu")
        .arg(std::ffi::OsStr::from_bytes(b"./no/such/k\xffernel"))
        .output()
        .expect("xtask runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("guest './no/such/k\u{fffd}ernel' is not a file"),
        "{err}"
    );
}

#[test]
#[ignore = "needs bochs/qemu: bash scripts/setup.sh --test-machines"]
fn bochs_hello_passes() {
    let out = xtask(&["bochs", "hello", "--timeout", "120"]);
    let log = text(&out);
    assert!(out.status.success(), "{NEEDS}\n{log}");
    assert!(log.contains("hello from opsvisor guest"), "{log}");
    assert!(log.contains("opsvisor-image: guest exit status 1"), "{log}");
    assert!(log.contains("loader multiboot2"), "{log}");
}

#[test]
#[ignore = "needs bochs/qemu: bash scripts/setup.sh --test-machines"]
fn qemu_hello_passes() {
    let out = xtask(&["qemu", "hello", "--timeout", "120"]);
    let log = text(&out);
    assert!(out.status.success(), "{NEEDS}\n{log}");
    assert!(log.contains("hello from opsvisor guest"), "{log}");
    assert!(log.contains("loader PVH"), "{log}");
}

#[test]
#[ignore = "needs bochs/qemu: bash scripts/setup.sh --test-machines"]
fn failures_are_reported() {
    let kernel = failing_kernel();
    let kernel = kernel.to_str().expect("a UTF-8 temp path");
    for cmd in ["qemu", "bochs"] {
        let out = xtask(&[cmd, kernel, "--timeout", "120"]);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {log}");
        assert!(log.contains("guest exit status 3"), "{cmd}: {log}");
    }
    let _ = std::fs::remove_file(kernel);
    // An exception in the image: reported, no hang.
    let out = xtask(&["qemu", "hello", "--append", "fault"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("failed: exception #UD (vector 6)"), "{log}");
    // A module that is not a kernel.
    let out = xtask(&["qemu", env!("CARGO_MANIFEST_PATH")]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("is not a multiboot kernel"), "{log}");
}

#[test]
#[ignore = "needs bochs/qemu: bash scripts/setup.sh --test-machines"]
fn missing_module_is_reported() {
    let out = xtask(&["image"]);
    assert!(out.status.success(), "{}", text(&out));
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = Command::new("qemu-system-x86_64")
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .args(["-serial", "stdio", "-m", "256", "-accel", "tcg"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&image)
        .output()
        .expect("qemu runs");
    let log = text(&out);
    assert!(
        log.contains("opsvisor-image: failed: no boot module"),
        "{log}"
    );
    // The image's own failure: debug-exit code 0x7f, QEMU status 255.
    assert_eq!(out.status.code(), Some(255), "{log}");
}
