//! The guest environment every case runs in: 2 MiB of RAM holding descriptor tables,
//! exception handlers, page tables, the code, a data area and a stack, and the initial
//! vCPU state for the case's mode.
//!
//! Every exception and interrupt vector leads to a handler that is a single HLT with
//! interrupts off, so a case always ends in the core's "halted with nothing to wake it"
//! outcome: either at the HLT after its code, or in vector N's handler (the final RIP
//! says which, the stack holds the frame and error code). The state compared is therefore
//! architecture only — registers, memory, descriptor-table and page-table bits — and the
//! same on silicon, Bochs and the emulator.
//!
//! Page-table entries start with their accessed and dirty bits set, so a processor that
//! sets them speculatively (silicon may) leaves nothing to compare; only the case's own
//! writes change the tables.

use crate::case::{Case, Mode};
use opsvisor_core::arch::{CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::ops::{DescriptorTable, Gpr, ResetKind, SegReg, Segment, X86Ops};
use opsvisor_core::{GuestMemory, MemError};

/// Guest RAM of the environment.
pub const RAM: u64 = 2 << 20;
/// The real-mode interrupt vector table.
pub const IVT: u64 = 0x0;
/// The GDT.
pub const GDT: u64 = 0x1000;
/// The protected- and long-mode IDT.
pub const IDT: u64 = 0x2000;
/// The handler page: vector N's handler is the HLT at `HANDLERS + 8 * N`.
pub const HANDLERS: u64 = 0x3000;
/// The TSS (TR points here in the protected and long modes).
pub const TSS: u64 = 0x4000;
/// An LDT with two descriptors, for LLDT and selectors with TI set.
pub const LDT: u64 = 0x5000;
/// Long mode: PML4 (CR3), PDPT, PD and one page table mapping 0..2 MiB in 4 KiB pages.
pub const PML4: u64 = 0x10000;
/// A second PML4 with the same mappings (a valid other value for MOV CR3).
pub const PML4_ALT: u64 = 0x16000;
/// 32-bit paging: the page directory (CR3) and its page table.
pub const PD32: u64 = 0x14000;
/// A second 32-bit page directory with the same mappings.
pub const PD32_ALT: u64 = 0x17000;
/// PAE paging: the page-directory-pointer table (CR3; only its first entry present),
/// whose directory maps 0..2 MiB through the long-mode page table.
pub const PAE_PDPT: u64 = 0x18000;
/// A second PAE PDPT with the same mappings (32-byte aligned, as CR3 requires).
pub const PAE_PDPT_ALT: u64 = 0x18020;
/// The PAE page directory.
pub const PAE_PD: u64 = 0x19000;
/// The code: the case's instructions, then HLT.
pub const CODE: u64 = 0x20000;
/// The data area the generated memory operands use (RBX points into its middle).
pub const DATA: u64 = 0x30000;
/// Size of the data area.
pub const DATA_SIZE: u64 = 0x2000;
/// RBX at the start: `[rbx + disp8]` stays inside the data area.
pub const DATA_POINTER: u64 = DATA + 0x800;
/// The stack page.
pub const STACK: u64 = 0x40000;
/// RSP at the start (the middle of the stack page).
pub const STACK_POINTER: u64 = STACK + 0x800;
/// The stack an event from CPL 3 switches to (the TSS's RSP0/ESP0): the top of the
/// page after the stack.
pub const KERNEL_STACK_TOP: u64 = 0x42000;

/// Selectors of the GDT.
pub mod selector {
    /// Flat 32-bit code, DPL 0.
    pub const CODE32: u16 = 0x08;
    /// Flat read/write data, DPL 0.
    pub const DATA: u16 = 0x10;
    /// 64-bit code, DPL 0.
    pub const CODE64: u16 = 0x18;
    /// The TSS (16 bytes in long mode: 0x20 and 0x28).
    pub const TSS: u16 = 0x20;
    /// 16-bit code, base 0, limit 64 KiB.
    pub const CODE16: u16 = 0x30;
    /// 16-bit data, base 0, limit 64 KiB.
    pub const DATA16: u16 = 0x38;
    /// Flat read/write data, DPL 3.
    pub const DATA_DPL3: u16 = 0x40;
    /// Flat read-only data.
    pub const DATA_READ_ONLY: u16 = 0x48;
    /// Flat execute-only code.
    pub const CODE_EXECUTE_ONLY: u16 = 0x50;
    /// The LDT.
    pub const LDT: u16 = 0x58;
    /// Read/write data, not present (in IA-32e mode: the upper half of the LDT's
    /// 16-byte descriptor, all zero).
    pub const DATA_NOT_PRESENT: u16 = 0x60;
    /// Read/write data at the data area with a 4 KiB byte-granular limit.
    pub const DATA_SMALL: u16 = 0x68;
    /// Flat 32-bit code, DPL 3.
    pub const CODE32_DPL3: u16 = 0x70;
    /// 64-bit code, DPL 3.
    pub const CODE64_DPL3: u16 = 0x78;
    /// LDT entry 0 (flat data), TI set.
    pub const LDT_DATA: u16 = 0x04;
    /// LDT entry 1 (flat 32-bit code), TI set.
    pub const LDT_CODE: u16 = 0x0c;
    /// The GDT limit: selectors up to 0x78 exist.
    pub const GDT_LIMIT: u16 = 0x7f;
}

/// CR0 bits a case may set at the start: MP, EM, TS, NE, WP, AM.
pub const CR0_OPTIONAL: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 16) | (1 << 18);
/// CR4 bits a case may set at the start: DE, PSE, PGE, OSFXSR, OSXMMEXCPT.
pub const CR4_OPTIONAL: u64 = (1 << 3) | (1 << 4) | (1 << 7) | (1 << 9) | (1 << 10);
/// EFER bits a case may set at the start (modes with EFER): SCE, NXE.
pub const EFER_OPTIONAL: u64 = (1 << 0) | (1 << 11);
/// RFLAGS bits a case may set at the start: CF, PF, AF, ZF, SF, DF, OF, IOPL (CPL 3
/// port access, CLI/STI) and AC (alignment checks at CPL 3 with CR0.AM).
pub const RFLAGS_OPTIONAL: u64 = 0x0cd5 | (3 << 12) | (1 << 18);
/// IDT vectors whose gates have DPL 3, so that INT n from CPL 3 reaches them (#BP and
/// #OF for INT3/INTO, and 0x80-0x8f); INT n to any other vector from CPL 3 is a #GP.
pub fn user_gate(vector: u64) -> bool {
    matches!(vector, 3 | 4 | 0x80..=0x8f)
}

/// A GDT/LDT descriptor.
const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | ((base as u64 & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((flags as u64) & 0xf) << 52)
        | (((base as u64) >> 24) << 56)
}

/// The GDT (the TSS slots are filled per mode).
///
/// The "flat" segments end at the end of RAM (limit 2 MiB, page-granular): outside
/// paging, an access past RAM is then a #GP or #SS on every backend instead of an
/// access to nothing, which silicon and the emulator would reach by different paths.
const GDT_ENTRIES: [u64; 16] = [
    0,
    descriptor(0, RAM_PAGES_LIMIT, 0x9b, 0xc),
    descriptor(0, RAM_PAGES_LIMIT, 0x93, 0xc),
    descriptor(0, RAM_PAGES_LIMIT, 0x9b, 0xa),
    0,
    0,
    descriptor(0, 0xffff, 0x9b, 0x0),
    descriptor(0, 0xffff, 0x93, 0x0),
    descriptor(0, RAM_PAGES_LIMIT, 0xf3, 0xc),
    descriptor(0, RAM_PAGES_LIMIT, 0x91, 0xc),
    descriptor(0, RAM_PAGES_LIMIT, 0x99, 0xc),
    descriptor(LDT as u32, 0x0f, 0x82, 0x0),
    descriptor(0, RAM_PAGES_LIMIT, 0x13, 0xc),
    descriptor(DATA as u32, 0xfff, 0x93, 0x4),
    descriptor(0, RAM_PAGES_LIMIT, 0xfb, 0xc),
    descriptor(0, RAM_PAGES_LIMIT, 0xfb, 0xa),
];

/// The limit field of a page-granular segment that ends with RAM.
const RAM_PAGES_LIMIT: u32 = (RAM >> 12) as u32 - 1;

/// The LDT: flat data and flat 32-bit code.
const LDT_ENTRIES: [u64; 2] = [
    descriptor(0, RAM_PAGES_LIMIT, 0x93, 0xc),
    descriptor(0, RAM_PAGES_LIMIT, 0x9b, 0xc),
];

/// The hidden part of a GDT "flat" segment as loaded from its descriptor.
pub fn flat_segment(selector: u16, attr: u32) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: RAM as u32 - 1,
        attr,
    }
}

/// The vector whose handler holds `rip` after it halted there, if it is one.
pub fn handler_vector(rip: u64) -> Option<u8> {
    let off = rip.checked_sub(HANDLERS + 1)?;
    (off < 256 * 8 && off % 8 == 0).then_some((off / 8) as u8)
}

/// One step of splitmix64: advances `state` and returns the next value.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The data area's initial contents from `seed` (splitmix64).
pub fn data_bytes(seed: u64, out: &mut [u8]) {
    let mut state = seed;
    for chunk in out.chunks_mut(8) {
        let bytes = splitmix(&mut state).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// The random source of [`fpu_image`].
struct FpuRng(u64);

impl FpuRng {
    fn next(&mut self) -> u64 {
        splitmix(&mut self.0)
    }
    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// An index drawn with probability proportional to `weights`.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut r = self.below(total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

/// A random IEEE value with `exp_bits` exponent bits and `frac_bits` fraction bits
/// (binary32: 8 and 23, binary64: 11 and 52), as its bit pattern: mostly normal numbers
/// near 1 and small integers, then zeros, infinities, quiet and signalling NaNs,
/// denormals and normals of any exponent.
fn ieee(rng: &mut FpuRng, exp_bits: u32, frac_bits: u32) -> u64 {
    let sign = (rng.next() & 1) << (exp_bits + frac_bits);
    let exp_max = (1u64 << exp_bits) - 1;
    let bias = exp_max >> 1;
    let frac_mask = (1u64 << frac_bits) - 1;
    let quiet = 1u64 << (frac_bits - 1);
    let frac = rng.next() & frac_mask;
    let (exp, frac) = match rng.weighted(&[30, 12, 12, 8, 5, 5, 5, 8, 15]) {
        // Near 1: exponents within 2^±24.
        0 => (bias - 24 + rng.below(49), frac),
        // A small integer (1..=1024, exact).
        1 => {
            let n = 1 + rng.below(1024);
            let top = 63 - u64::from(n.leading_zeros());
            (bias + top, ((n << frac_bits) >> top) & frac_mask)
        }
        2 => (0, 0),
        3 => (exp_max, 0),
        4 => (exp_max, quiet | (frac & (quiet - 1))),
        // Signalling: quiet bit clear, some other fraction bit set.
        5 => (exp_max, (frac & (quiet - 1)) | 1),
        // Denormal.
        6 => (0, frac | 1),
        // Near the ends of the exponent range (overflow and underflow).
        7 => {
            let e = if rng.next() & 1 == 0 {
                1 + rng.below(4)
            } else {
                exp_max - 1 - rng.below(4)
            };
            (e, frac)
        }
        _ => (1 + rng.below(exp_max - 1), frac),
    };
    sign | (exp << frac_bits) | frac
}

/// A random 80-bit x87 value in one of the formats every vendor handles alike:
/// normals (integer bit set), zeros, infinities, quiet and signalling NaNs (integer bit
/// set) and denormals (exponent 0, integer bit clear). No unnormals, pseudo-NaNs,
/// pseudo-infinities or pseudo-denormals, which processors treat differently.
fn extended(rng: &mut FpuRng) -> [u8; 10] {
    const INTEGER: u64 = 1 << 63;
    const QUIET: u64 = 1 << 62;
    let sign = (rng.next() & 1) << 15;
    let frac = rng.next() & !INTEGER;
    let (exp, mantissa) = match rng.weighted(&[30, 12, 12, 8, 5, 5, 5, 8, 15]) {
        0 => (0x3fff - 64 + rng.below(129), INTEGER | frac),
        // A small integer (1..=1024, exact).
        1 => {
            let n = 1 + rng.below(1024);
            let lz = u64::from(n.leading_zeros());
            (0x3fff + 63 - lz, n << lz)
        }
        2 => (0, 0),
        3 => (0x7fff, INTEGER),
        4 => (0x7fff, INTEGER | QUIET | frac),
        5 => (0x7fff, INTEGER | (frac & !QUIET) | 1),
        6 => (0, frac | 1),
        7 => {
            let e = if rng.next() & 1 == 0 {
                1 + rng.below(4)
            } else {
                0x7ffe - rng.below(4)
            };
            (e, INTEGER | frac)
        }
        _ => (1 + rng.below(0x7ffe), INTEGER | frac),
    };
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&mantissa.to_le_bytes());
    out[8..].copy_from_slice(&((sign as u16) | exp as u16).to_le_bytes());
    out
}

/// A random 128-bit XMM value: four binary32 lanes, two binary64 lanes, or integers.
fn xmm_value(rng: &mut FpuRng) -> u128 {
    match rng.weighted(&[35, 35, 20, 10]) {
        0 => (0..4).fold(0u128, |v, i| {
            v | (u128::from(ieee(rng, 8, 23) as u32) << (32 * i))
        }),
        1 => u128::from(ieee(rng, 11, 52)) | (u128::from(ieee(rng, 11, 52)) << 64),
        2 => u128::from(rng.next()) | (u128::from(rng.next()) << 64),
        // Small and boundary integers per 32-bit lane.
        _ => (0..4).fold(0u128, |v, i| {
            let lane: u32 = match rng.below(6) {
                0 => 0,
                1 => u32::MAX,
                2 => 0x8000_0000,
                3 => 0x7fff_ffff,
                4 => rng.below(256) as u32,
                _ => rng.next() as u32,
            };
            v | (u128::from(lane) << (32 * i))
        }),
    }
}

/// The initial x87/MMX/SSE state of a case from `seed` (splitmix64, like
/// [`data_bytes`]).
///
/// - FCW: every x87 exception masked (an unmasked pending one would need #MF/FERR
///   handling, left out), random rounding control and a random precision control of
///   24, 53 or 64 bits (not the reserved 01).
/// - FSW: 0 but a random TOP.
/// - Abridged FTW random; ST0-7 random values of the formats [`extended`] draws.
/// - MXCSR: every SIMD exception masked, no flags set, random RC, FTZ and DAZ.
/// - XMM0-15: floats, doubles, zeros, infinities, NaNs, denormals and integers.
/// - FOP, FIP, FDP and MXCSR_MASK: 0.
pub fn fpu_image(seed: u64) -> FxsaveArea {
    let mut rng = FpuRng(seed);
    let mut a = FxsaveArea::zeroed();
    let pc = [0u16, 2, 3][rng.below(3) as usize];
    let rc = rng.below(4) as u16;
    // Bit 6 is reserved and reads as 1 (FNINIT's 0x037f has it).
    a.set_fcw(0x007f | (pc << 8) | (rc << 10));
    a.set_fsw((rng.below(8) as u16) << 11);
    a.set_ftw(rng.next() as u8);
    for n in 0..8 {
        let v = extended(&mut rng);
        a.set_st(n, v);
    }
    let bits = rng.next();
    let mxcsr = FxsaveArea::RESET_MXCSR
        | ((bits & 3) as u32) << 13
        | if bits & 4 != 0 { 1 << 15 } else { 0 }
        | if bits & 8 != 0 { 1 << 6 } else { 0 };
    a.set_mxcsr(mxcsr);
    for n in 0..16 {
        let v = xmm_value(&mut rng);
        a.set_xmm(n, v);
    }
    a
}

/// Why a case could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// Guest memory refused a write (the memory is smaller than [`RAM`]).
    Memory(MemError),
    /// The code does not fit in its page.
    CodeTooLong(usize),
    /// The runner's backend is missing (an earlier run did not give it back).
    Unavailable,
    /// The backend did not load the case's x87/MMX/SSE state (the differential needs
    /// it on both sides, so a backend without it is an error too).
    Fpu(FpuStateError),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Memory(e) => write!(f, "guest memory: {e}"),
            SetupError::CodeTooLong(n) => write!(f, "the case's code is {n} bytes, over 4 KiB"),
            SetupError::Unavailable => f.write_str("the runner's backend was not given back"),
            SetupError::Fpu(e) => write!(f, "the case's x87/SSE state was not loaded: {e}"),
        }
    }
}

impl From<MemError> for SetupError {
    fn from(e: MemError) -> Self {
        SetupError::Memory(e)
    }
}

/// Backend-held MSRs the environment sets at the start and the comparison reads back.
pub const MSRS: [(u32, &str, u64); 12] = [
    (0xc000_0100, "FS_BASE", 0),
    (0xc000_0101, "GS_BASE", 0),
    (0xc000_0102, "KERNEL_GS_BASE", 0),
    (0xc000_0081, "STAR", 0),
    (0xc000_0082, "LSTAR", 0),
    (0xc000_0083, "CSTAR", 0),
    (0xc000_0084, "SFMASK", 0),
    (0x174, "SYSENTER_CS", 0),
    (0x175, "SYSENTER_ESP", 0),
    (0x176, "SYSENTER_EIP", 0),
    (0xc000_0103, "TSC_AUX", 0),
    (0x277, "PAT", 0x0007_0406_0007_0406),
];

fn write_tables(mem: &mut GuestMemory, mode: Mode) -> Result<(), MemError> {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        mem.write_u64(GDT + 8 * i as u64, *e)?;
    }
    let long = matches!(mode, Mode::Long64 | Mode::Compat32);
    if long {
        // IA-32e mode: system descriptors are 16 bytes; the LDT's upper half (base 63:32
        // and a zero type field) takes the slot of the not-present data descriptor.
        mem.write_u64(GDT + u64::from(selector::DATA_NOT_PRESENT), 0)?;
    }
    // The TSS: a busy 32-bit TSS, or in long mode the low half of a 64-bit one (the
    // upper half, base 63:32, is the zero entry after it). An event from CPL 3 switches
    // to its ring-0 stack: RSP0 (64-bit TSS) or SS0:ESP0 (32-bit).
    mem.write_u64(GDT + 0x20, descriptor(TSS as u32, 0x67, 0x8b, 0))?;
    if long {
        mem.write_u64(TSS + 4, KERNEL_STACK_TOP)?;
    } else {
        mem.write_u32(TSS + 4, KERNEL_STACK_TOP as u32)?;
        mem.write_u32(TSS + 8, u32::from(selector::DATA))?;
    }
    for (i, e) in LDT_ENTRIES.iter().enumerate() {
        mem.write_u64(LDT + 8 * i as u64, *e)?;
    }
    // Handlers: a page of HLT.
    mem.write(HANDLERS, &[0xf4; 4096])?;
    for v in 0..256u64 {
        let handler = HANDLERS + 8 * v;
        // Real-mode vectors: segment 0x300, offset 8 * v.
        mem.write_u32(IVT + 4 * v, (0x300 << 16) | (8 * v) as u32)?;
        let gate_type = if user_gate(v) { 0xee } else { 0x8e };
        if long {
            let lo = (handler & 0xffff)
                | (u64::from(selector::CODE64) << 16)
                | (gate_type << 40)
                | ((handler >> 16 & 0xffff) << 48);
            mem.write_u64(IDT + 16 * v, lo)?;
            mem.write_u64(IDT + 16 * v + 8, handler >> 32)?;
        } else if mode != Mode::Real {
            let gate = (handler & 0xffff)
                | (u64::from(selector::CODE32) << 16)
                | (gate_type << 40)
                | ((handler >> 16 & 0xffff) << 48);
            mem.write_u64(IDT + 8 * v, gate)?;
        }
    }
    // Identity map of 0..2 MiB in 4 KiB pages, user-accessible (CPL 3 cases run in the
    // same tables), accessed and dirty already.
    const PRESENT_RW_A: u64 = 0x27;
    const PRESENT_RW_AD: u64 = 0x67;
    for root in [PML4, PML4_ALT] {
        mem.write_u64(root, (PML4 + 0x1000) | PRESENT_RW_A)?;
    }
    mem.write_u64(PML4 + 0x1000, (PML4 + 0x2000) | PRESENT_RW_A)?;
    mem.write_u64(PML4 + 0x2000, (PML4 + 0x3000) | PRESENT_RW_A)?;
    for root in [PD32, PD32_ALT] {
        mem.write_u32(root, ((PD32 + 0x1000) | PRESENT_RW_A) as u32)?;
    }
    // PAE: a PDPTE holds only P (its bits 2:1 and 8:5 are reserved); the directory's
    // first entry points at the same page table as long mode's.
    for root in [PAE_PDPT, PAE_PDPT_ALT] {
        mem.write_u64(root, PAE_PD | 1)?;
    }
    mem.write_u64(PAE_PD, (PML4 + 0x3000) | PRESENT_RW_A)?;
    for page in 0..512u64 {
        mem.write_u64(PML4 + 0x3000 + 8 * page, (page << 12) | PRESENT_RW_AD)?;
        mem.write_u32(
            PD32 + 0x1000 + 4 * page,
            ((page << 12) | PRESENT_RW_AD) as u32,
        )?;
    }
    Ok(())
}

/// Write the environment and the case's code and data into `mem` (all of it is zeroed
/// first) and put `vcpu` in the case's initial state.
pub fn prepare<B: X86Ops>(
    case: &Case,
    mem: &mut GuestMemory,
    vcpu: &mut B,
) -> Result<(), SetupError> {
    let (code, _) = case.assemble();
    if code.len() > 4096 {
        return Err(SetupError::CodeTooLong(code.len()));
    }
    mem.zero_range(0, RAM)?;
    write_tables(mem, case.mode)?;
    mem.write(CODE, &code)?;
    let mut data = [0u8; DATA_SIZE as usize];
    data_bytes(case.seed, &mut data);
    mem.write(DATA, &data)?;

    vcpu.vcpu_reset(ResetKind::PowerOn);
    let long = matches!(case.mode, Mode::Long64 | Mode::Compat32);
    let (cr0, cr3, cr4, efer) = match case.mode {
        Mode::Real => (CR0_ET, 0, 0, 0),
        Mode::Protected32 => (CR0_ET | CR0_PE, 0, 0, case.efer & EFER_OPTIONAL),
        Mode::Paged32 => (CR0_ET | CR0_PE | CR0_PG, PD32, 0, case.efer & EFER_OPTIONAL),
        Mode::Pae32 => (
            CR0_ET | CR0_PE | CR0_PG,
            PAE_PDPT,
            CR4_PAE,
            case.efer & EFER_OPTIONAL,
        ),
        Mode::Long64 | Mode::Compat32 => (
            CR0_ET | CR0_PE | CR0_PG,
            PML4,
            CR4_PAE,
            EFER_LME | EFER_LMA | (case.efer & EFER_OPTIONAL),
        ),
    };
    let mut cr0 = cr0 | (case.cr0 & CR0_OPTIONAL);
    if cr0 & CR0_PG == 0 {
        // WP means nothing without paging; keep the start state one a real OS would have.
        cr0 &= !(1 << 16);
    }
    let mut cr4 = cr4 | (case.cr4 & CR4_OPTIONAL);
    if case.mode == Mode::Real {
        cr4 &= !(1 << 7);
    }
    vcpu.set_efer(efer);
    vcpu.set_cr4(cr4);
    vcpu.set_cr3(cr3);
    vcpu.set_cr0(cr0);
    vcpu.set_cr2(0);
    vcpu.set_gdt(DescriptorTable {
        base: GDT,
        limit: selector::GDT_LIMIT,
    });
    vcpu.set_idt(match case.mode {
        Mode::Real => DescriptorTable {
            base: IVT,
            limit: 0x3ff,
        },
        _ if long => DescriptorTable {
            base: IDT,
            limit: 0xfff,
        },
        _ => DescriptorTable {
            base: IDT,
            limit: 0x7ff,
        },
    });

    let mut regs = opsvisor_core::ops::Regs {
        gpr: case.gprs,
        rip: 0,
        rflags: (case.rflags & RFLAGS_OPTIONAL) | 2,
    };
    if case.mode != Mode::Long64 {
        // Outside 64-bit mode only the low halves exist.
        for g in regs.gpr.iter_mut() {
            *g &= 0xffff_ffff;
        }
    }
    if case.mode == Mode::Real {
        let seg = |sel: u16, code| Segment::real_mode(sel, code);
        vcpu.set_segment(SegReg::Cs, &seg((CODE >> 4) as u16, true));
        for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            vcpu.set_segment(s, &seg((DATA >> 4) as u16, false));
        }
        vcpu.set_segment(SegReg::Ss, &seg((STACK >> 4) as u16, false));
        regs.gpr[Gpr::Rbx as usize] = DATA_POINTER - DATA;
        regs.gpr[Gpr::Rsp as usize] = STACK_POINTER - STACK;
    } else {
        // CPL 3: the DPL-3 descriptors with RPL 3 (the CPL is SS.DPL).
        let (rpl, dpl) = if case.user { (3, 3 << 5) } else { (0, 0) };
        let cs = match case.mode {
            Mode::Long64 => flat_segment(
                if case.user {
                    selector::CODE64_DPL3
                } else {
                    selector::CODE64
                } | rpl,
                Segment::CODE64 | dpl,
            ),
            _ => flat_segment(
                if case.user {
                    selector::CODE32_DPL3
                } else {
                    selector::CODE32
                } | rpl,
                Segment::CODE32 | dpl,
            ),
        };
        let data_selector = if case.user {
            selector::DATA_DPL3 | rpl
        } else {
            selector::DATA
        };
        for s in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss] {
            vcpu.set_segment(s, &flat_segment(data_selector, Segment::DATA | dpl));
        }
        vcpu.set_segment(SegReg::Cs, &cs);
        vcpu.set_segment(
            SegReg::Tr,
            &Segment {
                selector: selector::TSS,
                base: TSS,
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
        regs.gpr[Gpr::Rbx as usize] = DATA_POINTER;
        regs.gpr[Gpr::Rsp as usize] = STACK_POINTER;
        regs.rip = CODE;
    }
    vcpu.set_regs(&regs);
    for (index, _, value) in MSRS {
        // A backend that does not hold one leaves it to the core, which starts fresh.
        let _ = vcpu.set_msr(index, value);
    }
    vcpu.set_interrupt_shadow(false);
    vcpu.set_fpu_state(&fpu_image(case.fpu_seed))
        .map_err(SetupError::Fpu)?;
    Ok(())
}
