//! QEMU's fw_cfg interface as firmware and QEMU-targeted kernels read it (SeaBIOS's
//! `qemu_cfg_*`, Linux's `qemu_fw_cfg`): through the selector at 0x510 and the data port
//! at 0x511 the signature "QEMU", the ID with its DMA bit, NB_CPUS and MAX_CPUS against
//! the local APIC and the CMOS CPU count, RAM_SIZE against the multiboot memory map, the
//! file directory walked entry by entry and `etc/e820` read from it and compared with the
//! multiboot map, an unknown selector and the end of an item reading zeros; through the
//! DMA interface at 0x514 its "QEMU CFG" signature and transfers into guest memory: a
//! select-and-read of the signature, of `etc/e820` (the same bytes as through the data
//! port), a skip, and a read past an item's end (zeros).
//!
//! QEMU, the reference this guest also runs on, fills `etc/e820` with its RAM only and
//! lets its firmware carve the boot map out of it; opsvisor gives the kernel's map. The
//! comparison checks what must hold everywhere and notes QEMU's difference.

#![no_std]
#![no_main]

use core::sync::atomic::{compiler_fence, Ordering};
use rt::cell::Racy;
use rt::cpu::{inb, inl, outb, outl, outw};
use rt::multiboot::{Info, MmapEntry};
use rt::{check, check_eq, check_or_qemu, println};

rt::entry!(main);

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const DMA: u16 = 0x514;

const SIGNATURE: u16 = 0x00;
const ID: u16 = 0x01;
const RAM_SIZE: u16 = 0x03;
const NB_CPUS: u16 = 0x05;
const MAX_CPUS: u16 = 0x0f;
const FILE_DIR: u16 = 0x19;
const FILE_FIRST: u16 = 0x20;

const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SKIP: u32 = 1 << 2;
const DMA_SELECT: u32 = 1 << 3;

const QEMU_E820: &str = "QEMU's etc/e820 lists RAM before its firmware reserves parts";

fn select(key: u16) {
    outw(SELECTOR, key);
}

fn read_bytes(buf: &mut [u8]) {
    for b in buf {
        *b = inb(DATA);
    }
}

/// Select `key` and read `n` (at most 8) bytes as a little-endian number.
fn read_le(key: u16, n: usize) -> u64 {
    select(key);
    (0..n).fold(0, |v, i| v | u64::from(inb(DATA)) << (8 * i))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One directory entry.
#[derive(Clone, Copy)]
struct File {
    size: u32,
    select: u16,
    name: [u8; 56],
}

impl File {
    fn name(&self) -> &str {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(56);
        core::str::from_utf8(&self.name[..end]).unwrap_or("<not UTF-8>")
    }
}

fn main(info: &'static Info) {
    let mut sig = [0u8; 5];
    select(SIGNATURE);
    read_bytes(&mut sig);
    check_eq!(&sig[..4], b"QEMU", "signature: QEMU");
    check_eq!(sig[4], 0, "past the item's end the data port reads 0");
    select(SIGNATURE);
    check_eq!(inb(DATA), b'Q', "selecting again starts the item over");

    let id = read_le(ID, 4);
    check!(id & 1 != 0, "ID {:#x}: the traditional interface", id);
    check!(id & 2 != 0, "ID {:#x}: the DMA interface", id);

    cpus();
    let ram_size = read_le(RAM_SIZE, 8);
    ram_size_against_the_map(info, ram_size);

    let e820 = directory(info);
    unknown_selectors();
    dma(e820);
}

fn cpus() {
    let nb = read_le(NB_CPUS, 2);
    let max = read_le(MAX_CPUS, 2);
    println!("NB_CPUS {}, MAX_CPUS {}", nb, max);
    check!(nb >= 1 && nb <= max, "1 <= NB_CPUS <= MAX_CPUS");
    let apic_id = u64::from(rt::cpu::cpuid(1, 0).1 >> 24);
    check!(
        apic_id < max,
        "this CPU's APIC ID {} is below MAX_CPUS (one more than the highest APIC ID)",
        apic_id
    );
    // SeaBIOS reads the CPU count from CMOS 0x5F (count - 1); QEMU and opsvisor fill it.
    outb(0x70, 0x5F);
    let cmos = u64::from(inb(0x71));
    check_eq!(nb, cmos + 1, "NB_CPUS agrees with the CMOS CPU count");
}

fn ram_size_against_the_map(info: &Info, ram_size: u64) {
    // The memory that runs without a gap from 1 MiB (available RAM, and whatever firmware
    // reserved directly above it) ends where RAM below the PCI hole ends.
    let mut entries = [MmapEntry {
        base: 0,
        len: 0,
        kind: 0,
    }; 64];
    let mut n = 0;
    info.for_each_mmap(|e| {
        if n < entries.len() {
            entries[n] = e;
            n += 1;
        }
    });
    check!(n > 0, "the multiboot memory map has {} entries", n);
    let mut end = 0x10_0000u64;
    loop {
        let next = entries[..n]
            .iter()
            .find(|e| e.base <= end && e.base + e.len > end);
        match next {
            Some(e) => end = e.base + e.len,
            None => break,
        }
    }
    println!(
        "RAM_SIZE {:#x}; the map runs without a gap from 1 MiB to {:#x}",
        ram_size, end
    );
    check_eq!(
        end,
        ram_size,
        "RAM_SIZE is where the memory from 1 MiB ends in the multiboot map"
    );
    let available_to = entries[..n]
        .iter()
        .filter(|e| e.kind == 1 && e.base >= 0x10_0000 && e.base < 1 << 32)
        .map(|e| e.base + e.len)
        .max()
        .unwrap_or(0);
    check!(
        available_to <= ram_size,
        "available RAM below 4 GiB ends at {:#x}, within RAM_SIZE",
        available_to
    );
}

fn read_file_entry() -> File {
    let mut raw = [0u8; 64];
    read_bytes(&mut raw);
    let mut name = [0u8; 56];
    name.copy_from_slice(&raw[8..]);
    File {
        size: be32(&raw[0..4]),
        select: u16::from_be_bytes([raw[4], raw[5]]),
        name,
    }
}

/// Walk the file directory, find `etc/e820`, and compare it with the multiboot map.
/// Returns the e820 file's entry.
fn directory(info: &Info) -> File {
    select(FILE_DIR);
    let mut count_bytes = [0u8; 4];
    read_bytes(&mut count_bytes);
    let count = be32(&count_bytes);
    println!("file directory: {} files", count);
    check!(
        (1..=0x3FE0).contains(&count),
        "the directory holds {} files",
        count
    );
    let mut e820 = None;
    let mut seen = [0u64; 0x3FE0 / 64 + 1];
    let mut names_valid = true;
    let mut selectors_valid = true;
    for _ in 0..count {
        let f = read_file_entry();
        println!("  {:#06x} {:>8} {}", f.select, f.size, f.name());
        let name_len = f.name.iter().position(|&c| c == 0);
        names_valid &=
            name_len.is_some_and(|l| l > 0 && f.name[..l].iter().all(|c| (0x20..0x7F).contains(c)));
        let index = usize::from(f.select.wrapping_sub(FILE_FIRST));
        if f.select < FILE_FIRST || f.select >= 0x4000 || seen[index / 64] & 1 << (index % 64) != 0
        {
            selectors_valid = false;
        } else {
            seen[index / 64] |= 1 << (index % 64);
        }
        if f.name() == "etc/e820" {
            e820 = Some(f);
        }
    }
    check!(names_valid, "every name is printable and NUL-terminated");
    check!(
        selectors_valid,
        "every file has its own selector from 0x20 on"
    );
    let Some(e820) = e820 else {
        println!("FAIL: no etc/e820 in the directory");
        rt::exit(rt::EXIT_FAIL);
    };
    check!(
        e820.size > 0 && e820.size % 20 == 0 && e820.size <= 20 * 128,
        "etc/e820: {} bytes, whole 20-byte entries",
        e820.size
    );

    // Read it through the data port.
    select(e820.select);
    let mut fw = [(0u64, 0u64, 0u32); 128];
    let n = (e820.size / 20) as usize;
    for slot in fw.iter_mut().take(n) {
        let mut raw = [0u8; 20];
        read_bytes(&mut raw);
        let u64_at = |o: usize| {
            u64::from_le_bytes([
                raw[o],
                raw[o + 1],
                raw[o + 2],
                raw[o + 3],
                raw[o + 4],
                raw[o + 5],
                raw[o + 6],
                raw[o + 7],
            ])
        };
        *slot = (
            u64_at(0),
            u64_at(8),
            u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]),
        );
        println!(
            "  etc/e820 {:#012x}..{:#012x} type {}",
            slot.0,
            slot.0 + slot.1,
            slot.2
        );
    }
    let fw = &fw[..n];

    // Everywhere: every available range of the boot map is RAM in etc/e820.
    let mut covered = true;
    let mut same = true;
    let mut i = 0;
    let count = info.for_each_mmap(|e| {
        if e.kind == 1 {
            covered &= fw.iter().any(|&(base, len, kind)| {
                kind == 1 && base <= e.base && e.base + e.len <= base + len
            });
        }
        same &= fw.get(i) == Some(&(e.base, e.len, e.kind));
        i += 1;
    });
    check!(
        covered,
        "every available range of the multiboot map is RAM in etc/e820"
    );
    check_or_qemu!(
        same && count == n,
        QEMU_E820,
        "etc/e820 is the multiboot memory map, entry for entry"
    );
    e820
}

fn unknown_selectors() {
    // A file selector past the directory's last file, and one past every file slot.
    select(FILE_DIR);
    let mut count = [0u8; 4];
    read_bytes(&mut count);
    let unused = FILE_FIRST + be32(&count) as u16;
    for key in [unused, 0x3FFF] {
        select(key);
        let mut b = [0xAAu8; 8];
        read_bytes(&mut b);
        check_eq!(b, [0u8; 8], "selector {:#x} (no item) reads zeros", key);
    }
}

/// `FWCfgDmaAccess`: control, length, address, all big-endian.
#[repr(C, align(16))]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}

static ACCESS: Racy<DmaAccess> = Racy::new(DmaAccess {
    control: 0,
    length: 0,
    address: 0,
});
static BUFFER: Racy<[u8; 4096]> = Racy::new([0; 4096]);

/// Run one DMA transfer as SeaBIOS's `qemu_cfg_dma_transfer` does: the access structure
/// in memory, its address written to the DMA register (high half, then the low half,
/// which starts it), each half big-endian. Returns the control word afterwards.
fn dma_transfer(control: u32, length: u32, address: u64) -> u32 {
    let access = ACCESS.get();
    // SAFETY: single CPU, no interrupts; the device writes the structure only during the
    // OUT below, and the fences keep the compiler from moving accesses across it.
    unsafe {
        core::ptr::write_volatile(
            access,
            DmaAccess {
                control: control.to_be(),
                length: length.to_be(),
                address: address.to_be(),
            },
        );
    }
    compiler_fence(Ordering::SeqCst);
    let at = access as u64;
    outl(DMA, ((at >> 32) as u32).to_be());
    outl(DMA + 4, (at as u32).to_be());
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above.
    u32::from_be(unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*access).control)) })
}

fn buffer() -> &'static mut [u8; 4096] {
    // SAFETY: single CPU; only this guest's main path touches the buffer, one use at a
    // time.
    unsafe { &mut *BUFFER.get() }
}

fn dma(e820: File) {
    let mut sig = [0u8; 8];
    for (i, b) in sig.iter_mut().enumerate() {
        *b = inb(DMA + i as u16);
    }
    check_eq!(&sig, b"QEMU CFG", "the DMA register reads \"QEMU CFG\"");
    let sig_hi = inl(DMA).to_le_bytes();
    check_eq!(&sig_hi, b"QEMU", "a dword read of it, in string order");

    let buf = buffer();
    buf.fill(0xAA);
    let at = buf.as_ptr() as u64;
    let status = dma_transfer(u32::from(SIGNATURE) << 16 | DMA_SELECT | DMA_READ, 6, at);
    check_eq!(
        status,
        0,
        "DMA: select and read the signature: done, no error"
    );
    check_eq!(
        &buffer()[..7],
        b"QEMU\0\0\xAA",
        "DMA: the signature, zeros past its end, nothing past the length"
    );

    // etc/e820 by DMA: the same bytes as through the data port.
    let buf = buffer();
    buf.fill(0xAA);
    let len = e820.size as usize;
    let status = dma_transfer(
        u32::from(e820.select) << 16 | DMA_SELECT | DMA_READ,
        e820.size,
        buf.as_ptr() as u64,
    );
    check_eq!(status, 0, "DMA: etc/e820 read");
    select(e820.select);
    let mut same = true;
    for &b in &buffer()[..len] {
        same &= b == inb(DATA);
    }
    check!(same, "DMA: etc/e820's {} bytes match the data port's", len);
    check_eq!(buffer()[len], 0xAA, "DMA: nothing written past the length");

    // Skip 20 bytes, then read 8: the second entry's address.
    let buf = buffer();
    buf.fill(0xAA);
    let status = dma_transfer(u32::from(e820.select) << 16 | DMA_SELECT | DMA_SKIP, 20, 0);
    check_eq!(status, 0, "DMA: skip");
    let status = dma_transfer(DMA_READ, 8, buf.as_ptr() as u64);
    check_eq!(
        status & DMA_ERROR,
        0,
        "DMA: a read continuing after the skip"
    );
    select(e820.select);
    let mut second = [0u8; 28];
    read_bytes(&mut second);
    if e820.size >= 28 {
        check_eq!(
            &buffer()[..8],
            &second[20..28],
            "DMA: the read after the skip starts at byte 20"
        );
    }
}
