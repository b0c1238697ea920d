//! The system features a CPU model offers, each checked where CPUID reports it and its
//! absence checked where it does not: CR4 bits of features CPUID lacks raise #GP(0) (and
//! CR4.LA57 cannot change in IA-32e mode); SMEP stops a supervisor fetch from a user page;
//! SMAP stops a supervisor read of a user page unless STAC set RFLAGS.AC; protection keys
//! deny supervisor data access to a user page whose key PKRU disables; XSETBV follows the
//! XCR0 rules and XSAVE stores the components in use; RDTSCP and RDPID read TSC_AUX;
//! RDGSBASE/WRGSBASE with CR4.FSGSBASE; INVPCID's types.
//!
//! The boot identity map has user pages (the ring-3 guest needs them); this guest makes
//! it supervisor-only first, so SMEP and SMAP apply to its test page alone.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::cell::Racy;
use rt::cpu::{cr2, cr3, cr4, has_feature, invlpg, rdmsr, set_cr4, wrmsr, Fault};
use rt::paging::{self, Page, ADDR, P, PS, RW, US};
use rt::{check, check_eq, println, probe, Frame};

rt::entry!(main);

const CR4_UMIP: u64 = 1 << 11;
const CR4_LA57: u64 = 1 << 12;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;

const GP: u8 = 13;
const PF: u8 = 14;
const UD: u8 = 6;
/// #PF error-code bits.
const PF_P: u64 = 1;
const PF_ID: u64 = 1 << 4;
const PF_PK: u64 = 1 << 5;

/// The test page lives at 256 GiB, mapped only by this guest.
const VA: u64 = 0x40_0000_0000;

static FRAME: Racy<Page> = Racy::new(Page([0; 4096]));
/// XSAVE area: 64-byte aligned, room for the x87 and SSE components and the header.
#[repr(C, align(64))]
struct XsaveArea([u8; 1024]);
static XSAVE_AREA: Racy<XsaveArea> = Racy::new(XsaveArea([0; 1024]));

static SMEP_FAULTS: AtomicU64 = AtomicU64::new(0);

/// Run one instruction of `$len` bytes; a fault it raises is returned (and the
/// instruction skipped) instead of ending the guest.
fn fault(vector: u8, error_code: u64) -> Option<Fault> {
    Some(Fault { vector, error_code })
}

fn try_set_cr4(v: u64) -> Option<Fault> {
    probe!(3, ["2:", "mov cr4, rax"], in("rax") v)
}

fn try_read(addr: u64) -> (Option<Fault>, u64) {
    let mut v = 0u64;
    let f = probe!(3, ["2:", "mov rax, qword ptr [rsi]"], in("rsi") addr, inout("rax") v);
    (f, v)
}

fn try_xsetbv(index: u32, value: u64) -> Option<Fault> {
    probe!(3, ["2:", "xsetbv"], in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32)
}

fn xgetbv() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: called with CR4.OSXSAVE set.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Make every 2 MiB page of the boot identity map supervisor-only.
fn supervisor_identity_map() {
    let pml4 = (cr3() & ADDR) as *mut u64;
    // SAFETY: the boot tables: PML4[0] -> one PDPT whose first four entries are page
    // directories of 2 MiB pages (bare's long_mode_page_tables!).
    unsafe {
        let pdpt = (*pml4 & ADDR) as *mut u64;
        for i in 0..4 {
            let pd = (*pdpt.add(i) & ADDR) as *mut u64;
            for j in 0..512 {
                let e = pd.add(j);
                if *e & (P | PS) == P | PS {
                    *e &= !US;
                }
            }
        }
    }
    // A CR3 write drops the old translations (no global pages in the boot map).
    // SAFETY: reloading the same CR3.
    unsafe { asm!("mov cr3, {}", in(reg) cr3(), options(nostack)) };
}

fn frame() -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!((*FRAME.get()).0) as u64 }
}

fn on_smep_fault(f: &mut Frame) {
    check_eq!(cr2(), VA, "SMEP: CR2 is the user page");
    check_eq!(
        f.error_code,
        PF_P | PF_ID,
        "SMEP: a protection fault on a fetch"
    );
    // Make the page supervisor, and the fetch is retried.
    // SAFETY: paging::pte returns the live entry of VA.
    unsafe { *paging::pte(VA) &= !US };
    invlpg(VA);
    SMEP_FAULTS.fetch_add(1, Ordering::SeqCst);
}

/// (CR4 bit, name, CPUID leaf, register, bit).
const GATED: [(u64, &str, u32, usize, u32); 7] = [
    (CR4_UMIP, "UMIP", 7, 2, 2),
    (CR4_FSGSBASE, "FSGSBASE", 7, 1, 0),
    (CR4_PCIDE, "PCIDE", 1, 2, 17),
    (CR4_OSXSAVE, "OSXSAVE", 1, 2, 26),
    (CR4_SMEP, "SMEP", 7, 1, 7),
    (CR4_SMAP, "SMAP", 7, 1, 20),
    (CR4_PKE, "PKE", 7, 2, 3),
];

fn cr4_gating() {
    let base = cr4();
    for (bit, name, leaf, reg, cpuid_bit) in GATED {
        if has_feature(leaf, 0, reg, cpuid_bit) {
            check_eq!(try_set_cr4(base | bit), None, "CR4.{} can be set", name);
            check!(cr4() & bit != 0, "CR4.{} reads back set", name);
            set_cr4(base);
        } else {
            check_eq!(
                try_set_cr4(base | bit),
                fault(GP, 0),
                "CR4.{} without its CPUID bit: #GP(0)",
                name
            );
            check_eq!(cr4(), base, "CR4 unchanged");
        }
    }
    check_eq!(
        try_set_cr4(base ^ CR4_LA57),
        fault(GP, 0),
        "CR4.LA57 cannot change in IA-32e mode"
    );
}

fn smep() {
    if !has_feature(7, 0, 1, 7) {
        println!("no SMEP: skipped");
        return;
    }
    // mov eax, 0x5e9e1234; ret
    let code: [u8; 6] = [0xB8, 0x34, 0x12, 0x9E, 0x5E, 0xC3];
    for (i, b) in code.iter().enumerate() {
        // SAFETY: the frame is this guest's.
        unsafe { core::ptr::write_volatile((frame() + i as u64) as *mut u8, *b) };
    }
    paging::map(VA, frame(), RW | US);
    rt::interrupts::set_handler(14, on_smep_fault);
    set_cr4(cr4() | CR4_SMEP);
    // SAFETY: the page holds a complete function; the first fetch faults (SMEP) and the
    // handler makes the page supervisor, then it runs and returns.
    let f: extern "C" fn() -> u32 =
        unsafe { core::mem::transmute::<u64, extern "C" fn() -> u32>(VA) };
    let r = f();
    check_eq!(SMEP_FAULTS.load(Ordering::SeqCst), 1, "one SMEP fault");
    check_eq!(
        r,
        0x5E9E_1234u32,
        "the code ran once the page was supervisor"
    );
    set_cr4(cr4() & !CR4_SMEP);
    rt::interrupts::clear_handler(14);
}

fn smap() {
    if !has_feature(7, 0, 1, 20) {
        println!("no SMAP: skipped");
        check_eq!(
            probe!(3, ["2:", "stac"]),
            fault(UD, 0),
            "STAC without SMAP: #UD"
        );
        return;
    }
    // SAFETY: the frame is this guest's.
    unsafe { core::ptr::write_volatile((frame() + 0x100) as *mut u64, 0x5A5A_0F0F) };
    paging::map(VA, frame(), RW | US);
    let (f, v) = try_read(VA + 0x100);
    check!(
        f.is_none() && v == 0x5A5A_0F0F,
        "without SMAP the user page is readable"
    );
    set_cr4(cr4() | CR4_SMAP);
    let (f, _) = try_read(VA + 0x100);
    check_eq!(
        f,
        fault(PF, PF_P),
        "SMAP: a supervisor read of a user page faults"
    );
    check_eq!(probe!(3, ["2:", "stac"]), None, "STAC");
    let (f, v) = try_read(VA + 0x100);
    check!(
        f.is_none() && v == 0x5A5A_0F0F,
        "with RFLAGS.AC the read is allowed"
    );
    check_eq!(probe!(3, ["2:", "clac"]), None, "CLAC");
    let (f, _) = try_read(VA + 0x100);
    check_eq!(f, fault(PF, PF_P), "after CLAC the read faults again");
    set_cr4(cr4() & !CR4_SMAP);
}

fn protection_keys() {
    if !has_feature(7, 0, 2, 3) {
        println!("no PKU: skipped");
        check_eq!(
            probe!(3, ["2:", "rdpkru"], in("ecx") 0, out("eax") _, out("edx") _),
            fault(UD, 0),
            "RDPKRU without CR4.PKE: #UD"
        );
        return;
    }
    check_eq!(
        probe!(3, ["2:", "rdpkru"], in("ecx") 0, out("eax") _, out("edx") _),
        fault(UD, 0),
        "RDPKRU without CR4.PKE: #UD"
    );
    set_cr4(cr4() | CR4_PKE);
    check!(has_feature(7, 0, 2, 4), "CPUID OSPKE mirrors CR4.PKE");
    // Key 1 on the user page; PKRU.AD1 denies data access to it.
    paging::map(VA, frame(), RW | US | (1 << 59));
    check_eq!(
        probe!(3, ["2:", "wrpkru"], in("eax") 1u32 << 2, in("ecx") 0, in("edx") 0),
        None,
        "WRPKRU AD1"
    );
    let mut pkru: u32;
    // SAFETY: CR4.PKE is set; ECX is 0.
    unsafe { asm!("rdpkru", in("ecx") 0, out("eax") pkru, out("edx") _, options(nomem, nostack)) };
    check_eq!(pkru, 4u32, "RDPKRU reads what WRPKRU wrote");
    let (f, _) = try_read(VA);
    check_eq!(
        f,
        fault(PF, PF_P | PF_PK),
        "the key's access-disable bit: #PF with PK"
    );
    check_eq!(
        probe!(3, ["2:", "wrpkru"], in("eax") 0, in("ecx") 1, in("edx") 0),
        fault(GP, 0),
        "WRPKRU with ECX != 0: #GP(0)"
    );
    pkru = 0;
    // SAFETY: CR4.PKE is set; ECX and EDX are 0.
    unsafe { asm!("wrpkru", in("eax") pkru, in("ecx") 0, in("edx") 0, options(nomem, nostack)) };
    let (f, _) = try_read(VA);
    check_eq!(
        f,
        None,
        "with the key's rights restored the read is allowed"
    );
    set_cr4(cr4() & !CR4_PKE);
}

fn xsave() {
    if !has_feature(1, 0, 2, 26) {
        println!("no XSAVE: skipped");
        check_eq!(
            probe!(3, ["2:", "xgetbv"], in("ecx") 0, out("eax") _, out("edx") _),
            fault(UD, 0),
            "XGETBV without XSAVE: #UD"
        );
        return;
    }
    check_eq!(
        probe!(3, ["2:", "xgetbv"], in("ecx") 0, out("eax") _, out("edx") _),
        fault(UD, 0),
        "XGETBV without CR4.OSXSAVE: #UD"
    );
    set_cr4(cr4() | CR4_OSXSAVE | 0x600);
    check!(
        has_feature(1, 0, 2, 27),
        "CPUID OSXSAVE mirrors CR4.OSXSAVE"
    );
    let supported = rt::cpu::cpuid(0xd, 0);
    let supported = u64::from(supported.3) << 32 | u64::from(supported.0);
    check!(
        supported & 3 == 3,
        "leaf 0xd: x87 and SSE ({:#x})",
        supported
    );
    check_eq!(xgetbv() & 1, 1, "XCR0.X87 is set");
    check_eq!(try_xsetbv(0, 3), None, "XSETBV x87 | SSE");
    check_eq!(xgetbv(), 3u64, "XCR0 reads back");
    check_eq!(try_xsetbv(0, 2), fault(GP, 0), "XCR0 without x87: #GP(0)");
    check_eq!(try_xsetbv(1, 1), fault(GP, 0), "XCR1: #GP(0)");
    if supported & 4 == 0 {
        check_eq!(
            try_xsetbv(0, 7),
            fault(GP, 0),
            "AVX state the model lacks: #GP(0)"
        );
    }
    check_eq!(xgetbv(), 3u64, "XCR0 unchanged by the refused writes");
    // XSAVE of x87 | SSE with a marker in MXCSR (FTZ): stored at byte 24, and the SSE
    // component is then in use (XSTATE_BV bit 1).
    // SAFETY: the area is this guest's; only its address is taken.
    let area = unsafe { core::ptr::addr_of_mut!((*XSAVE_AREA.get()).0) } as u64;
    let marker: u32 = 0x1F80 | 0x8000;
    // SAFETY: CR4.OSFXSR and OSXSAVE are set; the area is ours and 64-byte aligned; the
    // guest's code uses no SSE state, and MXCSR is put back.
    unsafe {
        asm!(
            "ldmxcsr [{m}]",
            "xsave64 [{a}]",
            "ldmxcsr [{d}]",
            m = in(reg) &marker,
            d = in(reg) &0x1F80u32,
            a = in(reg) area,
            in("eax") 3,
            in("edx") 0,
            options(nostack),
        )
    };
    // SAFETY: the area is ours.
    let (mxcsr, bv) = unsafe {
        (
            core::ptr::read_volatile((area + 24) as *const u32),
            core::ptr::read_volatile((area + 512) as *const u64),
        )
    };
    check_eq!(mxcsr, marker, "XSAVE stored MXCSR");
    check!(bv & 2 == 2, "XSTATE_BV has SSE ({:#x})", bv);
    check_eq!(
        probe!(4, ["2:", "xsave64 [rsi]"], in("rsi") area + 16, in("eax") 3, in("edx") 0),
        fault(GP, 0),
        "XSAVE to a misaligned area: #GP(0)"
    );
}

fn tsc_aux() {
    const TSC_AUX: u32 = 0xC000_0103;
    if has_feature(0x8000_0001, 0, 3, 27) {
        wrmsr(TSC_AUX, 0x1234);
        let ecx: u32;
        // SAFETY: RDTSCP exists (CPUID).
        unsafe {
            asm!("rdtscp", out("ecx") ecx, out("eax") _, out("edx") _, options(nomem, nostack))
        };
        check_eq!(ecx, 0x1234u32, "RDTSCP reads TSC_AUX");
        check_eq!(rdmsr(TSC_AUX), 0x1234u64, "TSC_AUX reads back");
    } else {
        check_eq!(
            probe!(3, ["2:", "rdtscp"], out("eax") _, out("ecx") _, out("edx") _),
            fault(UD, 0),
            "RDTSCP without its CPUID bit: #UD"
        );
    }
    if has_feature(7, 0, 2, 22) {
        let mut v = u64::MAX;
        check_eq!(
            probe!(4, ["2:", "rdpid rax"], inout("rax") v),
            None,
            "RDPID"
        );
        check_eq!(v, 0x1234u64, "RDPID reads TSC_AUX, zero-extended");
    } else {
        check_eq!(
            probe!(4, ["2:", "rdpid rax"], out("rax") _),
            fault(UD, 0),
            "RDPID without its CPUID bit: #UD"
        );
    }
}

fn fsgsbase() {
    check_eq!(
        probe!(5, ["2:", "rdgsbase rax"], out("rax") _),
        fault(UD, 0),
        "RDGSBASE without CR4.FSGSBASE: #UD"
    );
    if !has_feature(7, 0, 1, 0) {
        println!("no FSGSBASE: skipped");
        return;
    }
    set_cr4(cr4() | CR4_FSGSBASE);
    let old = rdmsr(0xC000_0101);
    let mut v = 0u64;
    check_eq!(
        probe!(5, ["2:", "wrgsbase rax"], in("rax") 0xFFFF_8000_1234_5000u64),
        None,
        "WRGSBASE"
    );
    check_eq!(
        probe!(5, ["2:", "rdgsbase rax"], inout("rax") v),
        None,
        "RDGSBASE"
    );
    check_eq!(
        v,
        0xFFFF_8000_1234_5000u64,
        "RDGSBASE reads what WRGSBASE wrote"
    );
    check_eq!(rdmsr(0xC000_0101), v, "GS_BASE is the same register");
    let f = probe!(5, ["2:", "wrgsbase rax"], in("rax") 0x8000_0000_0000_0000u64);
    rt::check_or_tcg!(
        f == fault(GP, 0),
        "WRGSBASE loads a non-canonical base",
        "WRGSBASE of a non-canonical address: #GP(0) ({:?})",
        f
    );
    wrmsr(0xC000_0101, old);
    set_cr4(cr4() & !CR4_FSGSBASE);
}

fn invpcid() {
    #[repr(C, align(16))]
    struct Descriptor([u64; 2]);
    let d = Descriptor([0, VA]);
    let at = core::ptr::addr_of!(d) as u64;
    if !has_feature(7, 0, 1, 10) {
        check_eq!(
            probe!(5, ["2:", "invpcid rax, [rsi]"], in("rax") 2, in("rsi") at),
            fault(UD, 0),
            "INVPCID without its CPUID bit: #UD"
        );
        return;
    }
    for ty in 0..4u64 {
        check_eq!(
            probe!(5, ["2:", "invpcid rax, [rsi]"], in("rax") ty, in("rsi") at),
            None,
            "INVPCID type {}",
            ty
        );
    }
    check_eq!(
        probe!(5, ["2:", "invpcid rax, [rsi]"], in("rax") 4, in("rsi") at),
        fault(GP, 0),
        "INVPCID type 4: #GP(0)"
    );
    let bad = Descriptor([1, VA]);
    check_eq!(
        probe!(5, ["2:", "invpcid rax, [rsi]"], in("rax") 0, in("rsi") core::ptr::addr_of!(bad) as u64),
        fault(GP, 0),
        "INVPCID of PCID 1 with CR4.PCIDE clear: #GP(0)"
    );
}

fn main(_: &'static rt::multiboot::Info) {
    supervisor_identity_map();
    cr4_gating();
    smep();
    smap();
    protection_keys();
    xsave();
    tsc_aux();
    fsgsbase();
    invpcid();
    println!("every CPU feature behaved as its CPUID bit says");
    println!("PASS");
}
