//! The ELF parser and loader on arbitrary bytes: every input parses into segments and
//! notes that lie inside the file, or is refused with an error; a parsed image loads
//! into guest RAM or is refused, without a panic, without touching host memory outside
//! the guest's (ASan) and without allocating in proportion to a field of the file
//! (libFuzzer's memory limits, see scripts/fuzz.sh).
//!
//! Input: the file. When it does not start with the ELF magic, a 64-byte ELF64 header
//! for x86-64 whose program-header fields come from the input's first bytes is put in
//! front of it, so most inputs reach the program headers and the segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_core::loader::elf::{self, EM_X86_64};
use opsvisor_core::mmu::memory::GuestMemory;

/// An ELF64 x86-64 executable header whose phoff, phnum and phentsize come from `seed`.
fn header(seed: &[u8]) -> Vec<u8> {
    let byte = |i: usize| seed.get(i).copied().unwrap_or(0);
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&u64::from(byte(0)).wrapping_mul(0x1000).to_le_bytes()); // entry
    h[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff: right after the header
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    let phentsize = if byte(1) & 1 == 0 {
        56
    } else {
        u16::from(byte(1))
    };
    h[54..56].copy_from_slice(&phentsize.to_le_bytes());
    h[56..58].copy_from_slice(&u16::from(byte(2) % 8).to_le_bytes()); // phnum
    h
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let image = if elf::is_elf(data) {
        data
    } else {
        let mut v = header(data);
        v.extend_from_slice(data);
        owned = v;
        &owned[..]
    };
    let Ok(parsed) = elf::parse(image) else {
        return;
    };
    for seg in parsed.segments() {
        assert!(seg.filesz <= seg.memsz);
        let data = parsed.segment_data(seg);
        assert_eq!(data.len() as u64, seg.filesz);
    }
    for note in parsed.notes() {
        let _ = note;
    }
    let _ = parsed.phys_extent();
    let Ok(mut mem) = GuestMemory::with_ram(4 << 20) else {
        return;
    };
    if parsed.load(&mut mem).is_ok() {
        // Every segment is in RAM; the last one written holds its file bytes (earlier
        // ones may be overwritten by later overlapping ones).
        for seg in parsed.segments() {
            assert!(mem.is_ram_range(seg.paddr, seg.memsz));
        }
        if let Some(last) = parsed.segments().last() {
            let data = parsed.segment_data(last);
            let mut back = vec![0u8; data.len()];
            mem.read(last.paddr, &mut back).expect("in RAM");
            assert_eq!(back, data);
        }
    }
});
