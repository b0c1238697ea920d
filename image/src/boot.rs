//! The boot headers, the 32-bit entries, the page tables and the exception entry stubs.
//!
//! Two loaders can start the image, both in 32-bit protected mode with paging off:
//!
//! - a multiboot2 loader (GRUB's `multiboot2`): enters `_start_mb2` (the ELF entry) with
//!   EAX = 0x36D76289 and EBX = the boot information;
//! - a PVH loader (QEMU's `-kernel`, which finds the Xen note `XEN_ELFNOTE_PHYS32_ENTRY`):
//!   enters `_start_pvh` with EBX = the `hvm_start_info` structure.
//!
//! Both zero .bss, identity-map the first 4 GiB with 2 MiB pages (the last GiB, the MMIO
//! hole, uncached), enable PAE, EFER.LME and paging, load the GDT (`gdt` in [`crate::cpu`])
//! and jump to 64-bit code,
//! which calls [`crate::rust_main`] with (EAX, EBX, entry point: 1 multiboot2, 2 PVH;
//! see [`crate::bootinfo::ENTRY_MULTIBOOT2`]) on a 512 KiB stack.

use core::arch::global_asm;

/// Kernel code selector (64-bit).
pub const KERNEL_CS: u16 = 0x08;
/// The TSS selector.
pub const TSS_SEL: u16 = 0x18;

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xE85250D6                        /* magic */
    .long 0                                 /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header       /* header length */
    .long -(0xE85250D6 + (mb2_header_end - mb2_header))
    .balign 8
    .word 6, 0                              /* module alignment: page-align modules */
    .long 8
    .balign 8
    .word 0, 0                              /* end tag */
    .long 8
mb2_header_end:

    .section .note.Xen, "a"
    .balign 4
    .long 4                                 /* name size ("Xen\0") */
    .long 4                                 /* descriptor size */
    .long 18                                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start_pvh

    .section .text.boot, "ax"
    .code32
    .global _start_mb2
_start_mb2:
    movl $1, %edx
    jmp start32
    .global _start_pvh
_start_pvh:
    movl $2, %edx
start32:
    cli
    cld
    /* Keep EAX/EBX/protocol out of the registers rep stosb uses. */
    movl %eax, %esi
    movl %ebx, %ebp
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl %esi, boot_eax
    movl %ebp, boot_ebx
    movl %edx, boot_proto

"#,
    // Identity-map 0..4 GiB with 2 MiB supervisor pages and enter long mode.
    opsvisor_bare::long_mode_switch!(pages: kernel, gdt_ptr: "gdt_ptr", cs: "0x08", entry: "long_entry"),
    r#"

    .code64
long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_eax, %edi
    movl boot_ebx, %esi
    movl boot_proto, %edx
    call rust_main
4:  cli
    hlt
    jmp 4b

    /* Exception entry: 32 stubs of 16 bytes, stub N at exception_stubs + 16 * N. Vectors
       without an error code push a zero one; every stub then pushes its vector, so the
       handler sees one frame shape. The handler never returns. Assembly, not the x86_64
       crate's typed handlers, which need the nightly x86-interrupt ABI. */
    .text
    .balign 16
    .global exception_stubs
exception_stubs:
    .set vec, 0
    .rept 32
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp exception_common
    .set vec, vec + 1
    .endr
exception_common:
    cld
    movq %rsp, %rdi
    andq $-16, %rsp
    call exception_handler
5:  cli
    hlt
    jmp 5b

    .data
    .balign 8
gdt_ptr:
    .word 5 * 8 - 1                         /* the 5 slots of crate::cpu's gdt */
    .quad gdt
    .balign 4
boot_eax:
    .long 0
boot_ebx:
    .long 0
boot_proto:
    .long 0

"#,
    opsvisor_bare::long_mode_page_tables!(),
    r#"
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .skip 512 * 1024
boot_stack_top:
    .text
"#,
    options(att_syntax)
);
