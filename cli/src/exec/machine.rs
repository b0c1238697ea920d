//! Building the machine a state describes: guest RAM for the regions, the system
//! structures that catch exceptions (descriptor tables, handlers, an exception stack),
//! identity paging in modes 32 and 64, and the vCPU's registers.
//!
//! The system structures sit in a free stretch of guest-physical memory that no region
//! touches (below 1 MiB in mode 16, so real-mode vectors reach it; otherwise as high
//! below 4 GiB as there is room). The vCPU runs with event exits on
//! ([`EmuVcpu::set_event_exits`]): an exception or software interrupt ends the run before
//! anything is pushed, so no exception frame ever touches the snippet's memory. The IDT
//! still holds a gate for every vector (each leading to a one-byte `HLT`), because INT n
//! checks its gate before it is reported: DPL 3 for INT3, INTO and INT 0x80, DPL 0 for
//! the rest, as Linux sets them, so at CPL 3 the other vectors raise #GP as in a user
//! process.
//!
//! At CPL 3 the snippet's segments are user segments (Linux's selectors: 0x23/0x2b in
//! mode 32, 0x33/0x2b in mode 64), its pages are user pages, the TSS has no I/O
//! permission bitmap (IN/OUT need IOPL 3), CR0.AM is set (so RFLAGS.AC enables #AC) and
//! RFLAGS defaults to IF set: the environment of a user-mode host process.

use super::state::{Contents, Mode, Spec};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::{DescriptorTable, Gpr, ResetKind, SegReg, Segment, X86Ops};
use opsvisor_emu::EmuVcpu;
use std::collections::BTreeSet;

const PAGE: u64 = 4096;

/// Where the system area appears in the linear address space in mode 64: the top 2 GiB,
/// out of reach of the identity-mapped regions (which end below 2^47).
pub(super) const KBASE: u64 = 0xffff_ffff_8000_0000;

// Offsets in the system area (modes 32 and 64).
const GDT: u64 = 0x000;
const TSS: u64 = 0x100;
const HANDLERS: u64 = 0x200;
const IDT: u64 = 0x1000;
const STACK_TOP: u64 = 0x3000;
const TABLES: u64 = 0x3000;
// Mode 16: the IVT at offset 0, the handlers after it.
const REAL_HANDLERS: u64 = 0x400;

const CODE_SEL: u16 = 0x08;
const DATA_SEL: u16 = 0x10;
const TSS_SEL: u16 = 0x18;
/// User code in mode 32 (GDT index 4, RPL 3).
const USER_CODE32_SEL: u16 = 0x23;
/// User data in modes 32 and 64 (GDT index 5, RPL 3).
const USER_DATA_SEL: u16 = 0x2b;
/// User code in mode 64 (GDT index 6, RPL 3).
const USER_CODE64_SEL: u16 = 0x33;
/// The I/O map base a TSS of 0x68 bytes gets: past its limit, so there is no bitmap.
const NO_IO_BITMAP: u32 = 0x68;

// CR0, CR4 and EFER bits.
const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_LA57: u64 = 1 << 12;
const CR4_PCIDE: u64 = 1 << 17;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const PTE_P: u64 = 1;
const PTE_W: u64 = 2;
const PTE_U: u64 = 4;
/// RFLAGS.IF.
const IF: u64 = 1 << 9;
/// The DPL bits of a segment's attributes.
const DPL3: u32 = 3 << 5;

/// The built machine.
pub struct Machine {
    /// The vCPU, loaded with the state.
    pub vcpu: EmuVcpu,
    /// Guest RAM.
    pub mem: GuestMemory,
    /// The mode it started in.
    pub mode: Mode,
    /// Guest-physical start and size of the system area.
    pub system: (u64, u64),
}

/// A page-granular range of guest-physical memory.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
}

/// The page-rounded ranges of the regions, merged where they touch.
fn spans(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<Span> {
    let mut list: Vec<Span> = ranges
        .map(|(a, e)| Span {
            start: a & !(PAGE - 1),
            end: e.div_ceil(PAGE) * PAGE,
        })
        .collect();
    list.sort_by_key(|s| s.start);
    let mut merged: Vec<Span> = Vec::new();
    for s in list {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    merged
}

/// The highest page-aligned `size`-byte stretch below `top` that no span touches.
fn free_below(used: &[Span], top: u64, size: u64) -> Option<u64> {
    let mut start = top.checked_sub(size)? & !(PAGE - 1);
    loop {
        let end = start.checked_add(size)?;
        match used.iter().find(|s| s.start < end && start < s.end) {
            None => return Some(start),
            Some(s) => start = s.start.checked_sub(size)? & !(PAGE - 1),
        }
    }
}

/// Page-table pages to map `pages` (linear page numbers) with `levels` levels of
/// `bits` index bits each (4 levels of 9 for long mode, 2 of 10 for 32-bit paging).
fn table_count(pages: &BTreeSet<u64>, levels: u32, bits: u32) -> u64 {
    let mut count = 1; // the root
    for level in 1..levels {
        let shift = bits * level;
        let distinct: BTreeSet<u64> = pages.iter().map(|p| p >> shift).collect();
        count += distinct.len() as u64;
    }
    count
}

/// Allocates page-table pages in the system area and fills in entries.
struct Tables<'a> {
    mem: &'a mut GuestMemory,
    next: u64,
    end: u64,
    root: u64,
    long: bool,
}

impl Tables<'_> {
    fn alloc(&mut self) -> Result<u64, String> {
        if self.next >= self.end {
            return Err("internal error: page-table pool exhausted".into());
        }
        let page = self.next;
        self.next += PAGE;
        Ok(page)
    }

    fn entry(&self, table: u64, index: u64) -> u64 {
        if self.long {
            table + 8 * index
        } else {
            table + 4 * index
        }
    }

    fn read(&self, at: u64) -> Result<u64, String> {
        if self.long {
            self.mem.read_u64(at).map_err(|e| e.to_string())
        } else {
            self.mem
                .read_u32(at)
                .map(u64::from)
                .map_err(|e| e.to_string())
        }
    }

    fn write(&mut self, at: u64, v: u64) -> Result<(), String> {
        let r = if self.long {
            self.mem.write_u64(at, v)
        } else {
            self.mem.write_u32(at, v as u32)
        };
        r.map_err(|e| e.to_string())
    }

    /// Map the 4 KiB page at `linear` to `phys`, for user accesses too when `user`.
    fn map(&mut self, linear: u64, phys: u64, writable: bool, user: bool) -> Result<(), String> {
        let (levels, bits, mask) = if self.long {
            (4u32, 9u32, 0x000f_ffff_ffff_f000u64)
        } else {
            (2, 10, 0xffff_f000)
        };
        let mut table = self.root;
        for level in (1..levels).rev() {
            let shift = 12 + bits * level;
            let at = self.entry(table, (linear >> shift) & ((1 << bits) - 1));
            let e = self.read(at)?;
            table = if e & PTE_P != 0 {
                e & mask
            } else {
                let t = self.alloc()?;
                // Intermediate levels allow everything; the leaf decides.
                self.write(at, t | PTE_P | PTE_W | PTE_U)?;
                t
            };
        }
        let at = self.entry(table, (linear >> 12) & ((1 << bits) - 1));
        let flags = PTE_P | if writable { PTE_W } else { 0 } | if user { PTE_U } else { 0 };
        self.write(at, phys | flags)
    }
}

fn gdt_entry(base: u64, limit: u32, access: u64, flags: u64) -> u64 {
    (u64::from(limit) & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (access << 40)
        | ((u64::from(limit) >> 16 & 0xf) << 48)
        | (flags << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// The system area's size for `tables` page-table pages.
fn system_size(tables: u64) -> u64 {
    TABLES + tables * PAGE
}

/// Where the system area goes and how many page-table pages it holds: enough for the
/// regions' pages and for the system area's own pages (which depend on where it lands
/// and on its size, hence the loop; it ends because the count only grows and each
/// round adds at most a few tables).
fn place_system(
    mode: Mode,
    used: &[Span],
    user_pages: &BTreeSet<u64>,
) -> Result<(u64, u64, u64), String> {
    let top = match mode {
        // Below the EBDA/ROM hole: a real-mode far pointer reaches it.
        Mode::Real => 0xa_0000,
        _ => 1 << 32,
    };
    let no_room = |size: u64| {
        format!(
            "memory: the regions leave no free {size:#x}-byte stretch below {top:#x} for the emulator's descriptor tables, handlers and page tables"
        )
    };
    if mode == Mode::Real {
        let sys = free_below(used, top, PAGE).ok_or_else(|| no_room(PAGE))?;
        return Ok((sys, PAGE, 0));
    }
    let (levels, bits) = if mode == Mode::Long { (4, 9) } else { (2, 10) };
    let mut tables = table_count(user_pages, levels, bits);
    for _ in 0..16 {
        let size = system_size(tables);
        let sys = free_below(used, top, size).ok_or_else(|| no_room(size))?;
        let linear = if mode == Mode::Long { KBASE } else { sys };
        let mut all = user_pages.clone();
        all.extend((linear / PAGE)..(linear + size) / PAGE);
        let need = table_count(&all, levels, bits);
        if need <= tables {
            return Ok((sys, size, tables));
        }
        tables = need;
    }
    Err(String::from(
        "memory: the regions are spread so widely that their page tables cannot be placed",
    ))
}

/// Build the machine for `spec`.
pub fn build(spec: &Spec) -> Result<Machine, String> {
    let mode = spec.mode;
    let user = spec.cpl == 3;
    let used = spans(spec.regions.iter().map(|r| (r.address, r.end())));
    let writable_pages: BTreeSet<u64> = spec
        .regions
        .iter()
        .filter(|r| r.writable)
        .flat_map(|r| (r.address / PAGE)..r.end().div_ceil(PAGE))
        .collect();
    let user_pages: BTreeSet<u64> = used
        .iter()
        .flat_map(|s| (s.start / PAGE)..(s.end / PAGE))
        .collect();
    let (sys, sys_size, tables) = place_system(mode, &used, &user_pages)?;

    let mut mem = GuestMemory::new();
    let all = spans(
        used.iter()
            .map(|s| (s.start, s.end))
            .chain(std::iter::once((sys, sys + sys_size))),
    );
    for s in &all {
        mem.add_ram(s.start, s.end - s.start)
            .map_err(|e| format!("memory: {e}"))?;
    }
    for r in &spec.regions {
        // Guest RAM starts zeroed: regions given by size need no writing.
        if let Contents::Bytes(bytes) = &r.contents {
            mem.write(r.address, bytes)
                .map_err(|e| format!("{}: {e}", r.name))?;
        }
    }
    let w =
        |mem: &mut GuestMemory, at: u64, v: u64| mem.write_u64(at, v).map_err(|e| e.to_string());

    let sys_linear = if mode == Mode::Long { KBASE } else { sys };
    let mut vcpu = EmuVcpu::new();
    vcpu.vcpu_reset(ResetKind::PowerOn);
    vcpu.set_event_exits(true);
    let stack_top = sys_linear + STACK_TOP;
    match mode {
        Mode::Real => {
            let seg = sys >> 4;
            for v in 0..256u64 {
                // Far pointer offset:segment to the handler (sys is page-aligned, so the
                // handler's offset in that segment is REAL_HANDLERS + v).
                let ptr = (REAL_HANDLERS + v) | (seg << 16);
                mem.write_u32(sys + 4 * v, ptr as u32)
                    .map_err(|e| e.to_string())?;
            }
            mem.write(sys + REAL_HANDLERS, &[0xf4; 256])
                .map_err(|e| e.to_string())?;
            vcpu.set_idt(DescriptorTable {
                base: sys,
                limit: 0x3ff,
            });
            vcpu.set_gdt(DescriptorTable { base: 0, limit: 0 });
        }
        Mode::Protected | Mode::Long => {
            let long = mode == Mode::Long;
            let handlers = sys_linear + HANDLERS;
            mem.write(sys + HANDLERS, &[0xf4; 256])
                .map_err(|e| e.to_string())?;
            // GDT: null, code (64- or 32-bit), data, TSS (two slots in mode 64), then the
            // user segments.
            let code_flags = if long { 0xa } else { 0xc };
            w(
                &mut mem,
                sys + GDT + 8,
                gdt_entry(0, 0xfffff, 0x9b, code_flags),
            )?;
            w(&mut mem, sys + GDT + 16, gdt_entry(0, 0xfffff, 0x93, 0xc))?;
            let tss = sys_linear + TSS;
            w(&mut mem, sys + GDT + 24, gdt_entry(tss, 0x67, 0x8b, 0))?;
            if long {
                w(&mut mem, sys + GDT + 32, tss >> 32)?;
                w(
                    &mut mem,
                    sys + GDT + u64::from(USER_CODE64_SEL & !7),
                    gdt_entry(0, 0xfffff, 0xfb, 0xa),
                )?;
                // RSP0 and IST1 point at the system area's stack.
                w(&mut mem, sys + TSS + 4, stack_top)?;
                w(&mut mem, sys + TSS + 0x24, stack_top)?;
            } else {
                w(
                    &mut mem,
                    sys + GDT + u64::from(USER_CODE32_SEL & !7),
                    gdt_entry(0, 0xfffff, 0xfb, 0xc),
                )?;
                mem.write_u32(sys + TSS + 4, stack_top as u32)
                    .map_err(|e| e.to_string())?;
                mem.write_u32(sys + TSS + 8, u32::from(DATA_SEL))
                    .map_err(|e| e.to_string())?;
            }
            w(
                &mut mem,
                sys + GDT + u64::from(USER_DATA_SEL & !7),
                gdt_entry(0, 0xfffff, 0xf3, 0xc),
            )?;
            // No I/O permission bitmap: IN/OUT at CPL 3 need IOPL 3.
            mem.write_u16(sys + TSS + 0x66, NO_IO_BITMAP as u16)
                .map_err(|e| e.to_string())?;
            for v in 0..256u64 {
                let h = handlers + v;
                // Linux's DPL-3 gates: INT3, INTO, INT 0x80.
                let dpl: u64 = if matches!(v, 3 | 4 | 0x80) { 3 } else { 0 };
                let lo = (h & 0xffff)
                    | (u64::from(CODE_SEL) << 16)
                    | ((0x8e | dpl << 5) << 40)
                    | (((h >> 16) & 0xffff) << 48);
                if long {
                    w(&mut mem, sys + IDT + 16 * v, lo | (1 << 32))?;
                    w(&mut mem, sys + IDT + 16 * v + 8, h >> 32)?;
                } else {
                    w(&mut mem, sys + IDT + 8 * v, lo)?;
                }
            }
            vcpu.set_gdt(DescriptorTable {
                base: sys_linear + GDT,
                limit: if long { 0x37 } else { 0x2f },
            });
            vcpu.set_idt(DescriptorTable {
                base: sys_linear + IDT,
                limit: if long { 0xfff } else { 0x7ff },
            });
            // Identity paging for the regions (read-only pages stay read-only for CPL 0
            // too: CR0.WP is set by default; user pages at CPL 3), the system area
            // mapped behind them for the supervisor only.
            let mut t = Tables {
                mem: &mut mem,
                next: sys + TABLES,
                end: sys + TABLES + tables * PAGE,
                root: 0,
                long,
            };
            t.root = t.alloc()?;
            for &page in &user_pages {
                let a = page * PAGE;
                t.map(a, a, writable_pages.contains(&page), user)?;
            }
            for off in (0..sys_size).step_by(PAGE as usize) {
                t.map(sys_linear + off, sys + off, true, false)?;
            }
            let root = t.root;
            vcpu.set_cr3(root);
            vcpu.set_segment(
                SegReg::Tr,
                &Segment {
                    selector: TSS_SEL,
                    base: tss,
                    limit: 0x67,
                    attr: Segment::TSS_BUSY,
                },
            );
            vcpu.set_segment(
                SegReg::Ldtr,
                &Segment {
                    selector: 0,
                    base: 0,
                    limit: 0,
                    attr: Segment::LDT_UNUSABLE,
                },
            );
        }
    }

    // Control registers: the state's values, with the bits that define the mode forced.
    let default_cr0 = CR0_MP | CR0_ET | CR0_NE | CR0_WP | if user { CR0_AM } else { 0 };
    let (cr0, cr4) = (
        spec.cr0.unwrap_or(default_cr0),
        spec.cr4.unwrap_or(CR4_OSFXSR | CR4_OSXMMEXCPT),
    );
    let cr4_mode = CR4_PAE | CR4_PSE | CR4_LA57 | CR4_PCIDE;
    let (cr0, cr4, efer) = match mode {
        Mode::Real => (cr0 & !(CR0_PE | CR0_PG), cr4 & !cr4_mode, 0),
        Mode::Protected => (
            cr0 | CR0_PE | CR0_PG,
            cr4 & !cr4_mode,
            spec.efer.unwrap_or(0) & !(EFER_LME | EFER_LMA),
        ),
        Mode::Long => (
            cr0 | CR0_PE | CR0_PG,
            (cr4 & !cr4_mode) | CR4_PAE,
            spec.efer.unwrap_or(EFER_NXE) | EFER_LME | EFER_LMA,
        ),
    };
    vcpu.set_cr4(cr4);
    vcpu.set_efer(efer);
    vcpu.set_cr0(cr0);

    // Segments: the mode's defaults, then what the state gives (hidden part loaded
    // directly, no descriptor check). CS last: it sets the CPL and the code size.
    let order = [
        SegReg::Es,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
        SegReg::Cs,
    ];
    for seg in order {
        let is_cs = seg == SegReg::Cs;
        let fs_gs = matches!(seg, SegReg::Fs | SegReg::Gs);
        let mut s = match (mode, user) {
            (Mode::Real, _) => Segment::real_mode(0, is_cs),
            (Mode::Protected, false) if is_cs => Segment::flat(CODE_SEL, Segment::CODE32),
            (Mode::Long, false) if is_cs => Segment::flat(CODE_SEL, Segment::CODE64),
            (Mode::Protected, true) if is_cs => {
                Segment::flat(USER_CODE32_SEL, Segment::CODE32 | DPL3)
            }
            (Mode::Long, true) if is_cs => Segment::flat(USER_CODE64_SEL, Segment::CODE64 | DPL3),
            // Null FS and GS with base 0, as a 64-bit Linux process starts.
            (Mode::Long, _) if fs_gs => {
                Segment::flat(0, Segment::DATA | if user { DPL3 } else { 0 })
            }
            (_, false) => Segment::flat(DATA_SEL, Segment::DATA),
            (_, true) => Segment::flat(USER_DATA_SEL, Segment::DATA | DPL3),
        };
        if let Some(given) = spec.segments[seg as usize] {
            if let Some(sel) = given.selector {
                s.selector = sel;
                if mode == Mode::Real {
                    s.base = u64::from(sel) << 4;
                }
            }
            if let Some(base) = given.base {
                s.base = base;
            }
            if let Some(limit) = given.limit {
                s.limit = limit;
            }
        }
        vcpu.set_segment(seg, &s);
    }

    for (i, reg) in Gpr::ALL.iter().enumerate() {
        vcpu.set_gpr(*reg, spec.gpr[i]);
    }
    vcpu.set_rip(spec.rip);
    // Bit 1 is always set; a user process runs with interrupts enabled.
    let rflags = if spec.rflags_given || !user {
        spec.rflags
    } else {
        spec.rflags | IF
    };
    vcpu.set_rflags(rflags | 0x2);
    load_fpu(&mut vcpu, spec, mode)?;
    vcpu.invalidate_code();
    Ok(Machine {
        vcpu,
        mem,
        mode,
        system: (sys, sys_size),
    })
}

fn load_fpu(vcpu: &mut EmuVcpu, spec: &Spec, mode: Mode) -> Result<(), String> {
    let mut f = vcpu.fpu().fxsave();
    let x = &spec.x87;
    if let Some(fcw) = x.fcw {
        f[0..2].copy_from_slice(&fcw.to_le_bytes());
    }
    if let Some(fsw) = x.fsw {
        f[2..4].copy_from_slice(&fsw.to_le_bytes());
    }
    let top = (u16::from_le_bytes([f[2], f[3]]) >> 11) & 7;
    let mut ftw = f[4];
    for (i, st) in x.st.iter().enumerate() {
        if let Some(v) = st {
            let at = 32 + 16 * i;
            f[at..at + 10].copy_from_slice(&v.to_le_bytes()[..10]);
            // A value given without a tag byte is marked valid (the physical register
            // ST(i) lives in is (TOP + i) mod 8).
            ftw |= 1 << ((usize::from(top) + i) & 7);
        }
    }
    f[4] = x.ftw.unwrap_or(ftw);
    if let Some(m) = spec.mxcsr {
        f[24..28].copy_from_slice(&m.to_le_bytes());
    }
    for (i, v) in spec.xmm.iter().enumerate() {
        if let Some(v) = v {
            let at = 160 + 16 * i;
            f[at..at + 16].copy_from_slice(&v.to_le_bytes());
        }
    }
    vcpu.fpu_mut()
        .fxrstor(&f, mode.reg_count())
        .map_err(|_| "mxcsr: sets reserved bits".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_stretch_avoids_regions() {
        let used = spans([(0x9f000, 0x9f010), (0x9d000, 0x9e000)].into_iter());
        assert_eq!(free_below(&used, 0xa0000, 0x1000), Some(0x9e000));
        assert_eq!(free_below(&used, 0xa0000, 0x2000), Some(0x9b000));
        assert_eq!(
            free_below(&spans([(0, 0x2000)].into_iter()), 0x2000, 0x1000),
            None
        );
    }

    #[test]
    fn spans_merge_shared_pages() {
        let s = spans([(0x1000, 0x1010), (0x1800, 0x1810), (0x2000, 0x2001)].into_iter());
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start, s[0].end), (0x1000, 0x3000));
    }

    fn spec(text: &str) -> Spec {
        super::super::state::parse(text).unwrap()
    }

    /// The page tables are sized from the request: scattered regions (each needing its
    /// own tables) and a system area that itself needs many tables both fit.
    #[test]
    fn page_tables_fit_scattered_regions() {
        for (mode, step, count) in [(64, 30, 4000u64), (32, 22, 1000)] {
            let regions: Vec<String> = (1..=count)
                .map(|i| format!(r#"{{"address":"{:#x}","size":16}}"#, i << step))
                .collect();
            let ip = if mode == 64 { "rip" } else { "eip" };
            let s = spec(&format!(
                r#"{{"mode":{mode},"regs":{{"{ip}":"0x1000"}},"code":"90","memory":[{}]}}"#,
                regions.join(",")
            ));
            let m = build(&s).unwrap_or_else(|e| panic!("mode {mode}: {e}"));
            // Every region is mapped: the first and the last byte translate.
            for r in &s.regions {
                assert!(m.mem.is_ram(r.address, 1));
            }
            let (_, size) = m.system;
            assert!(size < 64 << 20, "mode {mode}: {size:#x}");
        }
    }

    #[test]
    fn cpl3_machines_have_user_segments() {
        let m = build(&spec(
            r#"{"mode":64,"cpl":3,"regs":{"rip":"0x1000"},"code":"90"}"#,
        ))
        .unwrap();
        assert_eq!(m.vcpu.cpl(), 3);
        assert_eq!(m.vcpu.segment(SegReg::Cs).selector, USER_CODE64_SEL);
        assert_eq!(m.vcpu.segment(SegReg::Ss).selector, USER_DATA_SEL);
        assert_eq!(m.vcpu.rflags(), 0x202);
        assert_ne!(m.vcpu.cr0() & CR0_AM, 0);
        let m = build(&spec(
            r#"{"mode":32,"cpl":3,"regs":{"eip":"0x1000","eflags":"0x3002"},"code":"90"}"#,
        ))
        .unwrap();
        assert_eq!(m.vcpu.segment(SegReg::Cs).selector, USER_CODE32_SEL);
        assert_eq!(m.vcpu.rflags(), 0x3002, "given flags are kept");
    }
}
