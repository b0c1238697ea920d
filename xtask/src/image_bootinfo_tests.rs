//! Host tests of the image's boot-information parser (image/src/bootinfo.rs), which has no
//! dependency on the bare-metal image and is included here by path.

use crate::image_bootinfo::*;

/// Physical memory: `bytes` at `base`, nothing else readable.
struct Mem {
    base: u64,
    bytes: Vec<u8>,
}

impl Mem {
    fn new(base: u64, size: usize) -> Mem {
        Mem {
            base,
            bytes: vec![0; size],
        }
    }

    fn put(&mut self, addr: u64, data: &[u8]) {
        let at = (addr - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    fn put32(&mut self, addr: u64, v: u32) {
        self.put(addr, &v.to_le_bytes());
    }

    fn put64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }
}

impl Phys for Mem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(off) = addr.checked_sub(self.base) else {
            return false;
        };
        let Some(end) = (off as usize).checked_add(buf.len()) else {
            return false;
        };
        match self.bytes.get(off as usize..end) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

const MBI: u64 = 0x9000;

/// A multiboot2 information structure: tags as (type, body), then the end tag.
fn mb2(tags: &[(u32, Vec<u8>)]) -> Mem {
    let mut mem = Mem::new(MBI, 0x1000);
    let mut at = MBI + 8;
    for (kind, body) in tags {
        mem.put32(at, *kind);
        mem.put32(at + 4, 8 + body.len() as u32);
        mem.put(at + 8, body);
        at = (at + 8 + body.len() as u64 + 7) & !7;
    }
    mem.put32(at, 0);
    mem.put32(at + 4, 8);
    mem.put32(MBI, (at + 8 - MBI) as u32);
    mem
}

fn module_tag(start: u32, end: u32, name: &str) -> (u32, Vec<u8>) {
    let mut body = start.to_le_bytes().to_vec();
    body.extend(end.to_le_bytes());
    body.extend(name.as_bytes());
    body.push(0);
    (3, body)
}

fn mmap_tag(entries: &[(u64, u64, u32)]) -> (u32, Vec<u8>) {
    let mut body = 24u32.to_le_bytes().to_vec();
    body.extend(0u32.to_le_bytes());
    for (base, len, kind) in entries {
        body.extend(base.to_le_bytes());
        body.extend(len.to_le_bytes());
        body.extend(kind.to_le_bytes());
        body.extend(0u32.to_le_bytes());
    }
    (6, body)
}

#[test]
fn multiboot2_modules_map_and_command_line() {
    let mem = mb2(&[
        (1, b"mem=32 interactive\0".to_vec()),
        module_tag(0x20_0000, 0x20_3000, "hello"),
        mmap_tag(&[
            (0, 0x9_f000, 1),
            (0xf_0000, 0x1_0000, 2),
            (0x10_0000, 0x7f0_0000, 1),
        ]),
    ]);
    let info = parse(&mem, MULTIBOOT2_MAGIC, MBI as u32, ENTRY_MULTIBOOT2).unwrap();
    assert_eq!(info.protocol, Protocol::Multiboot2);
    assert_eq!(info.cmdline.as_str(), "mem=32 interactive");
    assert_eq!(info.modules().len(), 1);
    assert_eq!(
        info.modules()[0].range,
        Range {
            start: 0x20_0000,
            end: 0x20_3000
        }
    );
    assert_eq!(info.modules()[0].cmdline.as_str(), "hello");
    assert_eq!(info.ram().len(), 2);
    assert_eq!(info.ram()[1].end, 0x800_0000);
}

#[test]
fn multiboot2_basic_memory_is_the_fallback() {
    let mut body = 639u32.to_le_bytes().to_vec();
    body.extend((127 * 1024u32).to_le_bytes());
    let info = parse_multiboot2(&mb2(&[(4, body)]), MBI).unwrap();
    assert_eq!(
        info.ram(),
        &[Range {
            start: 0x10_0000,
            end: 0x800_0000
        }]
    );
}

#[test]
fn malformed_multiboot2_is_an_error() {
    // Wrong magic or entry.
    let mem = mb2(&[]);
    assert!(matches!(
        parse(&mem, 0x2BAD_B002, MBI as u32, ENTRY_MULTIBOOT2),
        Err(BootError::UnknownLoader { .. })
    ));
    // No RAM at all.
    assert_eq!(
        parse(&mem, MULTIBOOT2_MAGIC, MBI as u32, ENTRY_MULTIBOOT2).unwrap_err(),
        BootError::NoMemoryMap
    );
    // Unreadable, misaligned, absurd sizes.
    assert!(matches!(
        parse_multiboot2(&mem, 0x10_0000),
        Err(BootError::Unreadable { .. })
    ));
    assert!(parse_multiboot2(&mem, MBI + 4).is_err());
    let mut huge = mb2(&[]);
    huge.put32(MBI, 0xffff_fff0);
    assert!(parse_multiboot2(&huge, MBI).is_err());
    // A tag whose size runs past the structure, or is below 8 (would loop forever).
    let mut bad = mb2(&[module_tag(0x1000, 0x2000, "x")]);
    bad.put32(MBI + 12, 0x800);
    assert!(parse_multiboot2(&bad, MBI).is_err());
    bad.put32(MBI + 12, 4);
    assert!(parse_multiboot2(&bad, MBI).is_err());
    // An inverted module.
    let inverted = mb2(&[module_tag(0x3000, 0x2000, "x")]);
    assert!(matches!(
        parse_multiboot2(&inverted, MBI),
        Err(BootError::BadModule { index: 0, .. })
    ));
    // Too many modules.
    let many: Vec<_> = (0..=MAX_MODULES as u32)
        .map(|i| module_tag(0x10000 * (i + 1), 0x10000 * (i + 1) + 0x1000, ""))
        .collect();
    assert_eq!(
        parse_multiboot2(&mb2(&many), MBI).unwrap_err(),
        BootError::TooManyModules
    );
    // A command line without NUL stops at the tag's end; a long one is cut.
    let long = vec![b'a'; 600];
    let info = parse_multiboot2(&mb2(&[(1, long)]), MBI).unwrap();
    assert_eq!(info.cmdline.as_str().len(), MAX_TEXT);
    // Errors print as one line.
    assert!(!BootError::TooManyModules.to_string().contains('\n'));
}

const START: u64 = 0x1000;

/// A PVH start info (version 1) with modules (paddr, size) and a memory map.
fn pvh(modules: &[(u64, u64)], map: &[(u64, u64, u32)]) -> Mem {
    let mut mem = Mem::new(0, 0x4000);
    mem.put32(START, PVH_MAGIC);
    mem.put32(START + 4, 1);
    mem.put32(START + 12, modules.len() as u32);
    mem.put64(START + 16, 0x2000);
    mem.put64(START + 24, 0x3000);
    mem.put(0x3000, b"mem=16\0");
    mem.put64(START + 40, 0x2800);
    mem.put32(START + 48, map.len() as u32);
    for (i, (paddr, size)) in modules.iter().enumerate() {
        let at = 0x2000 + 32 * i as u64;
        mem.put64(at, *paddr);
        mem.put64(at + 8, *size);
    }
    for (i, (base, len, kind)) in map.iter().enumerate() {
        let at = 0x2800 + 24 * i as u64;
        mem.put64(at, *base);
        mem.put64(at + 8, *len);
        mem.put32(at + 16, *kind);
    }
    mem
}

#[test]
fn pvh_start_info() {
    let mem = pvh(
        &[(0x7fd_0000, 0x2345)],
        &[
            (0, 0x9fc00, 1),
            (0x10_0000, 0x7f0_0000, 1),
            (0xfffc_0000, 0x4_0000, 2),
        ],
    );
    let info = parse(&mem, 0, START as u32, ENTRY_PVH).unwrap();
    assert_eq!(info.protocol, Protocol::Pvh);
    assert_eq!(info.cmdline.as_str(), "mem=16");
    assert_eq!(info.modules()[0].range.len(), 0x2345);
    assert_eq!(info.modules()[0].cmdline.as_str(), "");
    assert_eq!(info.ram().len(), 2);
}

#[test]
fn malformed_pvh_is_an_error() {
    let mut mem = pvh(&[], &[(0x10_0000, 0x100_0000, 1)]);
    mem.put32(START + 12, 100_000);
    assert!(parse_pvh(&mem, START).is_err());
    let mut mem = pvh(&[(u64::MAX - 4, 0x100)], &[(0x10_0000, 0x100_0000, 1)]);
    assert!(matches!(
        parse_pvh(&mem, START),
        Err(BootError::BadModule { .. })
    ));
    mem.put32(START, 0x1234);
    assert!(parse_pvh(&mem, START).is_err());
    assert!(parse_pvh(&mem, 0).is_err());
    // Version 0 has no memory map: no RAM.
    let mut v0 = pvh(&[], &[(0x10_0000, 0x100_0000, 1)]);
    v0.put32(START + 4, 0);
    assert_eq!(
        parse(&v0, 0, START as u32, ENTRY_PVH).unwrap_err(),
        BootError::NoMemoryMap
    );
    // A memory map that lies outside memory.
    let mut far = pvh(&[], &[(0x10_0000, 0x100_0000, 1)]);
    far.put64(START + 40, 0xffff_0000);
    assert!(matches!(
        parse_pvh(&far, START),
        Err(BootError::Unreadable { .. })
    ));
}

fn r(start: u64, end: u64) -> Range {
    Range { start, end }
}

#[test]
fn heap_avoids_reserved_ranges() {
    let ram = [r(0, 0x9f000), r(0x10_0000, 0x1000_0000)];
    // The image at 1 MiB and a module near the top: the largest gap is in between.
    let reserved = [r(0x10_0000, 0x22_0000), r(0xff0_0000, 0xff0_2345)];
    assert_eq!(
        largest_free(&ram, &reserved, 0x10_0000, 1 << 32),
        Some(r(0x22_0000, 0xff0_0000))
    );
    // A module in the middle: the bigger side wins; unaligned ends are rounded inwards.
    let reserved = [r(0x10_0000, 0x22_0800), r(0x300_0000, 0x300_0010)];
    assert_eq!(
        largest_free(&ram, &reserved, 0x10_0000, 1 << 32),
        Some(r(0x300_1000, 0x1000_0000))
    );
    // Overlapping reserved ranges and a ceiling.
    let reserved = [r(0x10_0000, 0x80_0000), r(0x40_0000, 0x90_0000)];
    assert_eq!(
        largest_free(&ram, &reserved, 0x10_0000, 0x100_0000),
        Some(r(0x90_0000, 0x100_0000))
    );
    // Nothing free.
    assert_eq!(
        largest_free(&ram, &[r(0, u64::MAX)], 0x10_0000, 1 << 32),
        None
    );
    assert_eq!(largest_free(&[], &[], 0, 1 << 32), None);
}
