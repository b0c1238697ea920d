//! Multiboot header, the 32-bit entry trampoline and the interrupt entry stubs.
//!
//! The loader (QEMU's `-kernel`, opsvisor's multiboot loader, GRUB) enters `_start32` in
//! 32-bit protected mode with paging off, EAX = 0x2BADB002 and EBX = the multiboot info.
//! The trampoline zeroes .bss, identity-maps the first 4 GiB with 2 MiB pages (the local
//! APIC at 0xFEE00000 is inside), enables PAE, EFER.LME and paging, loads the 64-bit GDT
//! ([`crate::gdt`]'s `gdt64`) and far-jumps to 64-bit code, which calls
//! [`crate::rust_start64`].

use core::arch::global_asm;

/// Multiboot v1 header flags: bit 0 (page-align modules), bit 1 (memory information),
/// bit 16 (the address fields below are valid: the "a.out kludge"). QEMU refuses an
/// ELF64 kernel unless bit 16 is set, and then loads the file by these fields alone.
pub const MULTIBOOT_FLAGS: u32 = 0x0001_0003;
/// The header magic.
pub const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// What the loader leaves in EAX.
pub const MULTIBOOT_BOOT_MAGIC: u32 = 0x2BAD_B002;

/// Kernel code selector (64-bit).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector, RPL 3 (SYSRET loads SS = STAR[63:48] + 8).
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (64-bit), RPL 3 (SYSRET loads CS = STAR[63:48] + 16).
pub const USER_CS: u16 = 0x20 | 3;
/// The TSS selector.
pub const TSS_SEL: u16 = 0x28;

global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long 0x1BADB002
    .long 0x00010003
    .long -(0x1BADB002 + 0x00010003)
    .long multiboot_header      /* header_addr */
    .long __image_start         /* load_addr */
    .long __data_end            /* load_end_addr: the end of the file's loaded part */
    .long __bss_end             /* bss_end_addr: zeroed by the loader */
    .long _start32              /* entry_addr */

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    /* Keep the loader's EAX/EBX while .bss is zeroed (the loader should have done it;
       zeroing again costs nothing and does not depend on it). */
    movl %eax, %esi
    movl %ebx, %ebp
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl %esi, boot_magic
    movl %ebp, boot_info
    movl $boot_stack_top, %esp

"#,
    // Identity-map 0..4 GiB with 2 MiB pages and enter long mode. Every level is
    // user-accessible (U=1) so ring-3 tests can run code and use stacks inside the image;
    // SMEP/SMAP stay off.
    opsvisor_bare::long_mode_switch!(pages: user, gdt_ptr: "gdt64_ptr", cs: "0x08", entry: "long_entry"),
    r#"

    .code64
long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    call rust_start64
4:  cli
    hlt
    jmp 4b

    /* Interrupt entry: 256 stubs of 16 bytes each, so stub N is at isr_stubs + 16 * N.
       Vectors without a CPU error code push a zero one, so every frame has one shape.
       Assembly, not the x86_64 crate's typed handlers: those need the nightly
       x86-interrupt ABI, and a handler here may change any saved register. */
    .text
    .balign 16
    .global isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    movq %rsp, %rdi
    /* 15 registers + vector + error code + the 5-word CPU frame = 22 words: RSP is
       16-byte aligned here because the CPU aligned it before pushing its frame. */
    call isr_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    /* enter_user(rip = rdi, rsp = rsi, rflags = rdx): IRETQ to ring 3, keeping the
       kernel's callee-saved registers and stack so leave_user can resume here, as if
       enter_user had returned. */
    .global enter_user
enter_user:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, user_saved_ksp
    pushq $0x1b
    pushq %rsi
    pushq %rdx
    pushq $0x23
    pushq %rdi
    iretq

    /* leave_user(): called in ring 0 (from a handler of a ring-3 trap); abandons the
       trap frame and returns from enter_user. */
    .global leave_user
leave_user:
    movq user_saved_ksp, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

    .data
    .balign 8
    .global gdt64_ptr
gdt64_ptr:
    .word 7 * 8 - 1             /* the 7 slots of crate::gdt's gdt64 */
    .quad gdt64
    .balign 8
    .global boot_magic
boot_magic:
    .long 0
    .global boot_info
boot_info:
    .long 0
user_saved_ksp:
    .quad 0

"#,
    opsvisor_bare::long_mode_page_tables!(),
    r#"
    .global boot_stack_top
    .balign 16
boot_stack:
    .skip 64 * 1024
boot_stack_top:
    .text
"#,
    options(att_syntax)
);
