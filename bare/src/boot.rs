//! The 32-bit to 64-bit switch both kernels' boot code runs, as `global_asm!` text.
//!
//! Both kernels are entered by their loader in 32-bit protected mode with paging off, and
//! both identity-map the first 4 GiB the same way before entering long mode. The text here
//! is AT&T syntax (`options(att_syntax)`), 32-bit code (`.code32` in force), and is placed
//! by the caller between its own entry code (zeroing .bss, keeping the loader's registers)
//! and its own 64-bit entry label.
//!
//! Hand-written, not the `x86_64` crate: this runs as 32-bit code with paging off, before
//! any Rust can (the crate's page tables, control-register and EFER writers are 64-bit code),
//! and the tables sit at link-time symbols the assembly fills in.

/// The assembly that builds the identity map of 0..4 GiB with 2 MiB pages and enters long
/// mode: PML4[0] -> PDPT, PDPT[0..4] -> four page directories of 512 large pages each, the
/// 4th GiB (the MMIO hole: local APIC, I/O APIC, ...) uncached (PCD | PWT); then CR3,
/// CR4.PAE, EFER.LME, CR0 (PG | WP | PE set; CD, NW, TS, EM clear), LGDT and a far jump.
///
/// Expands to a string literal, one argument of `global_asm!` (with
/// `options(att_syntax)`), to be placed where `.code32` is in force:
///
/// ```text
/// opsvisor_bare::long_mode_switch!(pages: kernel, gdt_ptr: "gdt_ptr", cs: "0x08", entry: "long_entry")
/// ```
///
/// - `pages: kernel` maps every level supervisor-only (P | RW); `pages: user` also sets
///   U/S at every level (P | RW | US), so ring-3 code can run and keep stacks anywhere
///   in the map (SMEP and SMAP are off).
/// - `gdt_ptr`: the symbol of the caller's 10-byte LGDT operand, a GDT holding a 64-bit
///   code segment at selector `cs`.
/// - `entry`: the caller's 64-bit label (after `.code64`) the far jump lands on, which
///   loads the data segments and a stack.
///
/// The tables are the symbols `boot_pml4`, `boot_pdpt` and `boot_pd`, which
/// [`long_mode_page_tables!`] defines (zeroed: in .bss, which the caller must have
/// cleared). Clobbers EAX, ECX, EDX, EDI and the flags; preserves EBX, ESI, EBP, ESP.
#[macro_export]
macro_rules! long_mode_switch {
    (pages: kernel, gdt_ptr: $gdt_ptr:literal, cs: $cs:literal, entry: $entry:literal) => {
        $crate::long_mode_switch!(@ "3", "0x83", "P | RW | PS", $gdt_ptr, $cs, $entry)
    };
    (pages: user, gdt_ptr: $gdt_ptr:literal, cs: $cs:literal, entry: $entry:literal) => {
        $crate::long_mode_switch!(@ "7", "0x87", "P | RW | US | PS", $gdt_ptr, $cs, $entry)
    };
    (@ $table:literal, $page:literal, $page_doc:literal, $gdt_ptr:literal, $cs:literal, $entry:literal) => {
        concat!(
            "    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories; 2048 2 MiB pages cover 0..4 GiB. */\n",
            "    movl $boot_pdpt, %eax\n",
            "    orl $", $table, ", %eax\n",
            "    movl %eax, boot_pml4\n",
            "    movl $boot_pdpt, %edi\n",
            "    movl $boot_pd, %eax\n",
            "    orl $", $table, ", %eax\n",
            "    movl $4, %ecx\n",
            "1:  movl %eax, (%edi)\n",
            "    addl $4096, %eax\n",
            "    addl $8, %edi\n",
            "    loop 1b\n",
            "    movl $boot_pd, %edi\n",
            "    movl $", $page, ", %eax            /* ", $page_doc, " */\n",
            "    xorl %ecx, %ecx\n",
            "2:  movl %eax, (%edi,%ecx,8)\n",
            "    cmpl $1536, %ecx            /* the 4th GiB is the MMIO hole: PCD | PWT */\n",
            "    jb 3f\n",
            "    orl $0x18, (%edi,%ecx,8)\n",
            "3:  addl $0x200000, %eax\n",
            "    incl %ecx\n",
            "    cmpl $2048, %ecx\n",
            "    jb 2b\n",
            "\n",
            "    movl $boot_pml4, %eax\n",
            "    movl %eax, %cr3\n",
            "    movl %cr4, %eax\n",
            "    orl $0x20, %eax             /* PAE */\n",
            "    movl %eax, %cr4\n",
            "    movl $0xC0000080, %ecx      /* EFER.LME */\n",
            "    rdmsr\n",
            "    orl $0x100, %eax\n",
            "    wrmsr\n",
            "    movl %cr0, %eax\n",
            "    andl $0x9FFFFFF3, %eax      /* clear CD, NW, TS, EM */\n",
            "    orl $0x80010001, %eax       /* PG | WP | PE */\n",
            "    movl %eax, %cr0\n",
            "    lgdt ", $gdt_ptr, "\n",
            "    ljmp $", $cs, ", $", $entry, "\n",
        )
    };
}

/// The page tables [`long_mode_switch!`] fills: `boot_pml4`, `boot_pdpt` and `boot_pd`
/// (four page directories), page-aligned, in .bss. Expands to a string literal for
/// `global_asm!` that switches to the .bss section; the caller's text after it is in .bss
/// too (its boot stack, say) until the caller changes section.
#[macro_export]
macro_rules! long_mode_page_tables {
    () => {
        concat!(
            "    .section .bss, \"aw\", @nobits\n",
            "    .balign 4096\n",
            "boot_pml4:\n",
            "    .skip 4096\n",
            "boot_pdpt:\n",
            "    .skip 4096\n",
            "boot_pd:\n",
            "    .skip 4 * 4096\n",
        )
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_flags_follow_the_choice() {
        let k = long_mode_switch!(pages: kernel, gdt_ptr: "gp", cs: "0x08", entry: "le");
        let u = long_mode_switch!(pages: user, gdt_ptr: "gp", cs: "0x08", entry: "le");
        assert_eq!(k.matches("orl $3, %eax\n").count(), 2);
        assert!(k.contains("movl $0x83, %eax"));
        assert!(!k.contains("$7,") && !k.contains("0x87"));
        assert_eq!(u.matches("orl $7, %eax\n").count(), 2);
        assert!(u.contains("movl $0x87, %eax"));
        assert!(!u.contains("$3,") && !u.contains("0x83"));
        for s in [k, u] {
            assert!(s.contains("\n    lgdt gp\n    ljmp $0x08, $le\n"));
            assert!(s.ends_with('\n'));
        }
    }

    #[test]
    fn tables_define_each_symbol_once() {
        let t = long_mode_page_tables!();
        for sym in ["boot_pml4:", "boot_pdpt:", "boot_pd:"] {
            assert_eq!(t.matches(sym).count(), 1, "{sym}");
        }
    }
}
