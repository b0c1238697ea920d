//! The corpus guests carry the multiboot a.out kludge (so QEMU's `-kernel` loads them).
//! These tests boot the same `hello` guest through the loader's other two paths — the
//! ELF64 program headers and an ELF32 rewrite of the same image — and check that it
//! passes exactly as through the kludge.

use opsvisor_backends::{build_machine, MachineOptions};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;
use std::time::Duration;

const MULTIBOOT_MAGIC: u32 = 0x1bad_b002;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Clear the a.out-kludge flag of the multiboot header (fixing its checksum), so the
/// loader must use the ELF program headers.
fn without_kludge(mut image: Vec<u8>) -> Vec<u8> {
    let at = (0..8192usize.min(image.len() - 12))
        .step_by(4)
        .find(|&i| {
            let (magic, flags, sum) = (
                u32_at(&image, i),
                u32_at(&image, i + 4),
                u32_at(&image, i + 8),
            );
            magic == MULTIBOOT_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0
        })
        .expect("the guest has a multiboot header");
    let flags = u32_at(&image, at + 4);
    assert_ne!(
        flags & FLAG_AOUT_KLUDGE,
        0,
        "the corpus guests use the kludge"
    );
    let flags = flags & !FLAG_AOUT_KLUDGE;
    image[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
    let sum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
    image[at + 8..at + 12].copy_from_slice(&sum.to_le_bytes());
    image
}

/// Rewrite an ELF64 executable as ELF32 (EM_386) with the same segments: the file body
/// stays where it is, a 32-bit header replaces the 64-bit one and a 32-bit program
/// header table is appended.
fn as_elf32(elf64: &[u8]) -> Vec<u8> {
    assert_eq!(&elf64[..5], b"\x7fELF\x02");
    let entry = u64_at(elf64, 24);
    let phoff = u64_at(elf64, 32) as usize;
    let phentsize = usize::from(u16_at(elf64, 54));
    let phnum = u16_at(elf64, 56);
    let mut out = elf64.to_vec();
    while out.len() % 4 != 0 {
        out.push(0);
    }
    let table = out.len();
    for i in 0..usize::from(phnum) {
        let ph = &elf64[phoff + i * phentsize..];
        let field = |at: usize| u32::try_from(u64_at(ph, at)).expect("fits in 32 bits");
        for v in [
            u32_at(ph, 0), // p_type
            field(8),      // p_offset
            field(16),     // p_vaddr
            field(24),     // p_paddr
            field(32),     // p_filesz
            field(40),     // p_memsz
            u32_at(ph, 4), // p_flags
            field(48),     // p_align
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut header = [0u8; 52];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 1; // ELFCLASS32
    header[5] = 1; // little-endian
    header[6] = 1; // EV_CURRENT
    header[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    header[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    header[20..24].copy_from_slice(&1u32.to_le_bytes());
    header[24..28].copy_from_slice(&u32::try_from(entry).unwrap().to_le_bytes());
    header[28..32].copy_from_slice(&u32::try_from(table).unwrap().to_le_bytes());
    header[40..42].copy_from_slice(&52u16.to_le_bytes()); // e_ehsize
    header[42..44].copy_from_slice(&32u16.to_le_bytes()); // e_phentsize
    header[44..46].copy_from_slice(&phnum.to_le_bytes());
    out[..52].copy_from_slice(&header);
    // The rest of the old 64-bit header is now padding nothing refers to.
    out[52..64].fill(0);
    out
}

fn boot(image: &[u8]) -> (RunOutcome, String) {
    let opts = MachineOptions {
        memory: 64 << 20,
        cmdline: "multiboot-forms".into(),
        timeout: Some(Duration::from_secs(30)),
        ..MachineOptions::default()
    };
    let mut vm = build_machine(image, &opts, CapturePlatform::new()).expect("the image loads");
    let outcome = vm.run();
    (
        outcome,
        String::from_utf8_lossy(&vm.platform.output).into_owned(),
    )
}

fn assert_passes(image: &[u8]) {
    let (outcome, output) = boot(image);
    assert_eq!(
        outcome,
        RunOutcome::DebugExit { status: 1 },
        "output:\n{output}"
    );
    assert!(
        output.contains("cmdline: multiboot-forms"),
        "output:\n{output}"
    );
    assert!(output.contains("PASS"), "output:\n{output}");
}

#[test]
fn hello_boots_through_the_aout_kludge() {
    assert_passes(&opsvisor_corpus::image("hello"));
}

#[test]
fn hello_boots_through_elf64_program_headers() {
    assert_passes(&without_kludge(opsvisor_corpus::image("hello")));
}

#[test]
fn hello_boots_through_elf32_program_headers() {
    assert_passes(&as_elf32(&without_kludge(opsvisor_corpus::image("hello"))));
}
