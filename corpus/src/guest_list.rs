//! The guest list: the one place a corpus guest is named. Two crates read it: this one
//! (the [`crate::GUESTS`] table and one test per guest on each backend) and `cargo
//! xtask`, which includes this file with `#[path]` for each guest's expected ending and
//! console input when it runs the corpus under Bochs. So the file holds nothing but the
//! list and a helper for its optional fields, and they name no item of either crate
//! except the callback they are given.

/// Calls `$callback!` (a macro exported by the crate that includes this file) with
/// `{ extra tokens }` and then, per guest,
/// `name: (cmdline, [expected output...], timeout in seconds[, outcome = O][, input = I]
/// [, smp = N][, pc_testdev = true][, image_skip = WHY]),`
/// where `O` is how a passing run ends (`Pass`, the default: the debug-exit status 1;
/// `Reset`: the guest reset the machine; `PowerOff`: it entered ACPI S5), `I` is the
/// console input the harness types once the guest prints the input prompt (a byte string;
/// none by default), `N` the vCPUs the machine has (`--smp N`; 1 by default) and
/// `pc_testdev` whether it has QEMU's ISA test device (`--device pc-testdev`), and `WHY`
/// (a string) why the bare-metal image's runners skip the guest, if they do.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_guest_list {
    ($callback:ident ! { $($extra:tt)* }) => {
        $crate::$callback! {
            { $($extra)* }
            hello: ("opsvisor-corpus-args x=1", ["hello from opsvisor guest", "opsvisor-corpus-args x=1", "PASS"], 30),
            page_fault: ("", ["the read completed with the value behind the new mapping", "the write completed after the fix", "PASS"], 30),
            ring3: ("", ["back in the kernel", "one SYSCALL handled", "PASS"], 30),
            apic_timer_oneshot: ("", ["one-shot fired exactly once", "masked timer delivered no interrupt", "PASS"], 30),
            apic_timer_periodic: ("", ["xAPIC MMIO: tick 5 arrived", "xAPIC MMIO: no interrupt after stopping", "PASS"], 30),
            apic_timer_tsc_deadline: ("", ["PASS"], 30),
            hlt_wakeup: ("", ["HLT returned after exactly one timer interrupt", "the pending interrupt woke the HLT", "PASS"], 30),
            timer_busy_loop: ("", ["the timer interrupted a loop that never exits", "PASS"], 30),
            msr: ("", ["SWAPGS: GS_BASE = old KERNEL_GS_BASE", "PASS"], 30),
            cpuid: ("", ["LM set", "PASS"], 30),
            apic_disable: ("", ["APIC globally disabled", "PASS"], 30),
            exceptions: ("", ["all exceptions delivered as expected", "PASS"], 30),
            tlb: ("", ["after INVLPG: frame B", "after the CR3 reload: frame A", "after INVLPG elsewhere in the 2 MiB page", "REP MOVSB finished", "REP STOSQ finished", "PASS"], 30),
            bench: ("", ["table CRC-32 equals the bitwise CRC-32", "the qword loop copied 1 MiB", "bench exit n=1 checksum", "bench cpuid n=1 checksum", "PASS"], 60),
            pic_irq: ("", ["virtual wire: one interrupt", "level-triggered: the interrupt repeats", "the local APIC is globally disabled", "PASS"], 30),
            ioapic_irq: ("", ["IRQ 4 delivered as vector 0x44", "the EOI broadcast cleared remote IRR", "NMI delivery mode: one NMI", "PASS"], 30),
            pit: ("", ["mode 0: OUT2 rose N + 1 clocks after the write", "mode 3: OUT2 rises every 20000 clocks", "PASS"], 60),
            rtc: ("", ["the seconds stepped by one when UIP fell", "the alarm matched at the second update", "PASS"], 60),
            acpi_pm: ("", ["PM timer rate", "TMR_STS set by the toggle of bit 23", "PASS"], 60),
            cpu_features: ("", ["CR4.LA57 cannot change in IA-32e mode", "every CPU feature behaved as its CPUID bit says", "PASS"], 30),
            debug_breakpoints: ("", ["I/O breakpoint 0x80-0x81: traps after OUT and IN of port 0x80", "every breakpoint kind behaved as the SDM says", "PASS"], 30),
            debug_single_step: ("", ["CPUID and OUT, which the hypervisor completes, trap after themselves too", "MOV SS's shadow holds the trap until after the next instruction", "IA32_FMASK cleared TF for the kernel entry", "single-stepping behaved as the SDM says", "PASS"], 30),
            fw_cfg: ("", ["signature: QEMU", "RAM_SIZE is where the memory from 1 MiB ends in the multiboot map", "etc/e820 is the multiboot memory map, entry for entry", "DMA: etc/e820's", "PASS"], 30),
            pci_config: ("", ["00:00.0 is an Intel 440FX host bridge", "00:1f.0 reads all ones", "word and byte writes at 0xCF8-0xCFB leave CONFIG_ADDRESS alone", "PASS"], 30),
            acpi_tables: ("", ["RSDP found by the BIOS-area scan", "MADT: an enabled local APIC with this CPU's APIC ID", "the I/O APIC's ID is what its ID register says", "the PM timer at the FADT's port", "PASS"], 30),
            i8042: ("", ["controller self-test: 0x55", "identify with translation: ACK, 0xAB 0x41", "identify: three interrupts, one per byte", "PASS"], 30),
            com1_rx: ("", ["IIR reports received data", "every byte typed arrived by interrupt, in order", "PASS"], 30, input = b"opsvisor rx 42\n"),
            reset_cf9: ("", ["SYS_RST alone is kept and does not reset", "resetting through 0xCF9"], 30, outcome = Reset),
            reset_8042: ("", ["the reset line is high", "resetting through the 8042"], 30, outcome = Reset),
            acpi_s5: ("", ["\\_S5: SLP_TYPa", "entering S5: PM1a_CNT"], 30, outcome = PowerOff),
            pc_testdev: ("", ["0xE8 is the same register", "edge: a second rising edge interrupts again", "level: the line lowered by the handler interrupts once", "iomem: the last dword of the 64 KiB", "PASS"], 30, pc_testdev = true),
            pc_testdev_strings: ("", ["REPE CMPSB (MMIO to MMIO): RCX after the difference at byte 20", "REP MOVSB copied the 30 bytes", "REP MOVSQ copied the second qword", "PASS"], 30, pc_testdev = true),
            smp_start: ("", ["3 APs started after INIT, SIPI, SIPI", "APIC IDs 1, 2 and 3 reported", "all 4 CPUs up", "PASS"], 30, smp = 4),
            smp_ipi: ("", ["every ping answered before the next was sent", "100 pings and 100 pongs", "PASS"], 30, smp = 2),
            smp_spinlock: ("", ["no increment lost: 4 x 20000 under the lock", "PASS"], 60, smp = 4),
            smp_tlb: ("", ["the AP first reads frame A", "after its INVLPG the AP sees frame B", "PASS"], 30, smp = 2),
        }
    };
}

/// The second expression if there is one, else the first (a list entry's optional field).
#[doc(hidden)]
#[macro_export]
macro_rules! __given_or {
    ($default:expr) => {
        $default
    };
    ($default:expr, $given:expr) => {
        $given
    };
}
