//! The `opsvisor` program end to end: a corpus guest's output and status, and one clear
//! error line with status 2 for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn opsvisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the opsvisor binary runs")
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file written");
    path
}

/// Exactly one line on stderr, status 2, and the line mentions `needle`.
fn assert_one_error_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one error line, got: {stderr}"
    );
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

/// A minimal ELF64 header (no program headers) for machine `machine`, optionally with a
/// multiboot header (without the a.out kludge) right after it.
fn elf64(machine: u16, multiboot: bool) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&machine.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    if multiboot {
        let (magic, flags) = (0x1bad_b002u32, 0u32);
        let checksum = 0u32.wrapping_sub(magic).wrapping_sub(flags);
        for v in [magic, flags, checksum] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    }
    f
}

#[test]
fn a_corpus_guest_prints_and_exits_with_its_status() {
    let guest = opsvisor_corpus::image_path("hello");
    let out = opsvisor(&[
        "run",
        "--timeout",
        "60",
        "--append",
        "from the test",
        guest.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello from opsvisor guest"),
        "stdout: {stdout}"
    );
    // The multiboot command line is the kernel's path as given, a space and --append's
    // text, as GRUB and QEMU pass it (hello prints it after "cmdline: ").
    assert!(
        stdout.contains(&format!("cmdline: {} from the test", guest.display())),
        "the command line reaches the guest after the kernel's name: {stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_append_the_multiboot_command_line_is_the_kernel_name() {
    // Run from the guests' directory with a relative path: the name is passed as given.
    let guest = opsvisor_corpus::image_path("hello");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .current_dir(guest.parent().unwrap())
        .args(["run", "--timeout", "60", "./hello"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.trim_end() == "cmdline: ./hello"),
        "stdout: {stdout}"
    );
}

#[test]
fn stats_report_exits_and_instruction_rate() {
    let guest = opsvisor_corpus::image_path("hello");
    let out = opsvisor(&["run", "--stats", "--timeout", "60", guest.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exit reason"), "{stderr}");
    assert!(stderr.contains("io"), "{stderr}");
    assert!(stderr.contains("million/s"), "{stderr}");
}

#[test]
fn limits_stop_the_run() {
    let spin = scratch("spin.bin", &[0xeb, 0xfe]); // jmp $
    let out = opsvisor(&[
        "run",
        "--flat",
        "--max-instructions",
        "100000",
        spin.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(8));
    let out = opsvisor(&["run", "--flat", "--timeout", "0.2", spin.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(8));
    let halt = scratch("halt.bin", &[0xfa, 0xf4]); // cli; hlt
    let out = opsvisor(&["run", "--flat", halt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn a_flat_binary_runs_in_real_mode() {
    // mov al, 0x21; out 0xf4, al  → status (0x21 << 1) | 1 = 0x43
    let code = scratch("real.bin", &[0xb0, 0x21, 0xe6, 0xf4, 0xf4]);
    let out = opsvisor(&[
        "run",
        "--mode",
        "real",
        "--load-addr",
        "0x7c00",
        code.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0x43));
}

#[test]
fn a_missing_kernel_is_one_error_line() {
    assert_one_error_line(
        &opsvisor(&["run", "/nonexistent/kernel"]),
        "cannot read kernel",
    );
}

#[test]
fn a_missing_module_is_one_error_line() {
    let guest = opsvisor_corpus::image_path("hello");
    let out = opsvisor(&[
        "run",
        "--module",
        "/nonexistent/module",
        guest.to_str().unwrap(),
    ]);
    assert_one_error_line(&out, "cannot read module");
}

#[test]
fn a_truncated_kernel_is_one_error_line() {
    let image = std::fs::read(opsvisor_corpus::image_path("hello")).unwrap();
    let cut = scratch("truncated.elf", &image[..image.len().min(600)]);
    let out = opsvisor(&["run", cut.to_str().unwrap()]);
    assert_one_error_line(&out, "truncated.elf");
}

#[test]
fn a_non_x86_elf_is_one_error_line() {
    // EM_ARM with a multiboot header: the loader must refuse the machine.
    let arm = scratch("arm.elf", &elf64(40, true));
    assert_one_error_line(&opsvisor(&["run", arm.to_str().unwrap()]), "arm.elf");
    // An ELF without a multiboot header.
    let plain = scratch("plain.elf", &elf64(62, false));
    assert_one_error_line(&opsvisor(&["run", plain.to_str().unwrap()]), "multiboot");
}

#[test]
fn a_file_that_is_no_kernel_is_one_error_line() {
    let text = scratch("notes.txt", b"this is not a kernel\n");
    assert_one_error_line(
        &opsvisor(&["run", text.to_str().unwrap()]),
        "not a multiboot kernel, a Linux bzImage or an ELF kernel with a PVH entry note",
    );
}

#[test]
fn a_kernel_that_does_not_fit_is_one_error_line() {
    let code = scratch("far.bin", &[0x90; 64]);
    let out = opsvisor(&[
        "run",
        "--memory",
        "2M",
        "--load-addr",
        "0x300000",
        code.to_str().unwrap(),
    ]);
    assert_one_error_line(&out, "far.bin");
}

#[test]
fn bad_options_are_one_error_line() {
    assert_one_error_line(&opsvisor(&["run", "--memory", "lots", "k"]), "--memory");
    assert_one_error_line(&opsvisor(&["run", "--memory", "1M", "k"]), "from 2M to 64G");
    assert_one_error_line(
        &opsvisor(&["run", "--backend", "vmx", "k"]),
        "bare-metal image",
    );
    assert_one_error_line(&opsvisor(&["run", "--timeout", "soon", "k"]), "--timeout");
    assert_one_error_line(&opsvisor(&["run"]), "no KERNEL");
}
