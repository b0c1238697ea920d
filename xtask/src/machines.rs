//! What the emulated machines are given (Bochs configuration, GRUB menu) and how their
//! serial output is judged.

use std::path::Path;

/// The Bochs configuration for a headless run (see shared/notes/test-machines.md): no
/// display client needed (rfb with timeout 0; Bochs takes the first free port from 5900
/// on, so parallel runs do not clash), dummy sound (Debian's build aborts opening ALSA
/// otherwise), COM1 to `com1`, the ISO as an ATA CD-ROM, triple faults fatal.
pub fn bochsrc(cpu: &str, megs: u32, ips: u64, iso: &Path, com1: &Path, log: &Path) -> String {
    format!(
        "\
config_interface: textconfig
display_library: rfb, options=\"timeout=0\"
megs: {megs}
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
cpu: model={cpu}, count=1, ips={ips}, reset_on_triple_fault=0, ignore_bad_msrs=0
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=\"{iso}\", status=inserted
boot: cdrom
floppy_bootsig_check: disabled=1
clock: sync=none, time0=local
com1: enabled=1, mode=file, dev=\"{com1}\"
port_e9_hack: enabled=1
log: \"{log}\"
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
mouse: enabled=0
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
",
        iso = iso.display(),
        com1 = com1.display(),
        log = log.display(),
    )
}

/// The Bochs configuration's COM2 for the image's GDB stub: a TCP server on
/// localhost:`port` (Bochs waits for the client, gdb, before it starts the machine).
pub fn bochs_gdb_com2(port: u16) -> String {
    format!("com2: enabled=1, mode=socket-server, dev=localhost:{port}\n")
}

/// The GRUB menu: boot the image at once (no menu wait) with `append` as its command
/// line, the guest as its first module with `guest_cmdline` as its string (the guest's
/// command line), and with `initrd` a Linux guest's initrd as the second module.
pub fn grub_cfg(append: &str, guest_cmdline: &str, initrd: bool) -> String {
    let initrd = if initrd {
        "    module2 /boot/initrd initrd\n"
    } else {
        ""
    };
    format!(
        "\
set timeout=0
set default=0
menuentry \"opsvisor\" {{
    multiboot2 /boot/opsvisor-image {append}
    module2 /boot/guest {guest_cmdline}
{initrd}    boot
}}
"
    )
}

/// How a run ended, as the image reported it on the serial console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `opsvisor-image: guest exit status N`.
    GuestExit(u32),
    /// `opsvisor-image: guest powered off` (ACPI S5).
    PoweredOff,
    /// `opsvisor-image: guest reset the machine`.
    Reset,
    /// `opsvisor-image: triple fault ...`.
    TripleFault(String),
    /// `opsvisor-image: failed: ...`.
    Failed(String),
    /// `opsvisor-image: differential: N cases, D differ, U unfinished`.
    Differential {
        /// Cases run.
        cases: u32,
        /// Cases whose final states differ.
        differ: u32,
        /// Cases neither backend finished.
        unfinished: u32,
    },
}

impl Verdict {
    /// Whether the guest passed (its exit status is 1: code 0 through the debug-exit
    /// port, or it powered off, as Linux's `poweroff` does), or every differential case
    /// agreed. A reset is no pass here: a corpus guest that resets on purpose is judged
    /// by its table entry instead (`corpus::Outcome`).
    pub fn passed(&self) -> bool {
        match self {
            Verdict::GuestExit(status) => *status == 1,
            Verdict::PoweredOff => true,
            Verdict::Differential {
                differ, unfinished, ..
            } => *differ == 0 && *unfinished == 0,
            _ => false,
        }
    }

    /// What the verdict says, for the runner's PASS/FAIL line.
    pub fn describe(&self) -> String {
        match self {
            Verdict::GuestExit(n) => format!("guest exit status {n}"),
            Verdict::PoweredOff => "guest powered off".into(),
            Verdict::Reset => "guest reset the machine".into(),
            Verdict::TripleFault(s) => s.clone(),
            Verdict::Failed(s) => format!("image: {s}"),
            Verdict::Differential {
                cases,
                differ,
                unfinished,
            } => format!("{cases} cases, {differ} differ, {unfinished} unfinished"),
        }
    }
}

/// Read `N cases, D differ, U unfinished`.
fn differential_counts(text: &str) -> Option<Verdict> {
    let mut numbers = text.split(", ").map(|part| {
        let (n, _) = part.trim().split_once(' ')?;
        n.parse::<u32>().ok()
    });
    let cases = numbers.next()??;
    let differ = numbers.next()??;
    let unfinished = numbers.next()??;
    Some(Verdict::Differential {
        cases,
        differ,
        unfinished,
    })
}

/// The image's final report in `serial`, if it printed one (the last one wins).
pub fn verdict(serial: &str) -> Option<Verdict> {
    const PREFIX: &str = "opsvisor-image: ";
    serial.lines().rev().find_map(|line| {
        let rest = line.trim_end_matches('\r');
        // The line may follow guest output that did not end its own line.
        let rest = &rest[rest.find(PREFIX)? + PREFIX.len()..];
        if let Some(n) = rest.strip_prefix("guest exit status ") {
            n.trim().parse().ok().map(Verdict::GuestExit)
        } else if let Some(counts) = rest.strip_prefix("differential: ") {
            differential_counts(counts)
        } else if rest.trim() == "guest powered off" {
            Some(Verdict::PoweredOff)
        } else if rest.trim() == "guest reset the machine" {
            Some(Verdict::Reset)
        } else if rest.starts_with("triple fault") {
            Some(Verdict::TripleFault(rest.into()))
        } else {
            rest.strip_prefix("failed: ")
                .map(|why| Verdict::Failed(why.into()))
        }
    })
}

/// Whether /proc/cpuinfo's `flags` lines list `flag`.
pub fn cpuinfo_has_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differential_verdicts() {
        let v = verdict("x\nopsvisor-image: differential: 40 cases, 0 differ, 0 unfinished\r\n");
        assert_eq!(
            v,
            Some(Verdict::Differential {
                cases: 40,
                differ: 0,
                unfinished: 0
            })
        );
        assert!(v.is_some_and(|v| v.passed()));
        let v = verdict("opsvisor-image: differential: 40 cases, 2 differ, 0 unfinished\n");
        assert!(v.is_some_and(|v| !v.passed()));
        assert_eq!(verdict("opsvisor-image: differential: garbage\n"), None);
    }

    #[test]
    fn bochsrc_has_the_headless_essentials() {
        let rc = bochsrc(
            "ryzen",
            512,
            5_000_000,
            Path::new("/t/a.iso"),
            Path::new("/t/com1.txt"),
            Path::new("/t/bochs.log"),
        );
        for want in [
            "display_library: rfb, options=\"timeout=0\"",
            "megs: 512",
            "cpu: model=ryzen, count=1, ips=5000000,",
            "path=\"/t/a.iso\"",
            "com1: enabled=1, mode=file, dev=\"/t/com1.txt\"",
            "sound: waveoutdrv=dummy",
            "boot: cdrom",
            "reset_on_triple_fault=0",
        ] {
            assert!(rc.contains(want), "missing {want}");
        }
    }

    #[test]
    fn grub_menu_boots_at_once() {
        let cfg = grub_cfg("mem=32", "hello", false);
        assert!(!cfg.contains("/boot/initrd"));
        let linux = grub_cfg("mem=256", "console=ttyS0", true);
        assert!(linux.contains("module2 /boot/guest console=ttyS0\n"));
        assert!(linux.contains("module2 /boot/initrd initrd\n"));
        assert_eq!(
            verdict("[ 1.0] reboot: Power down\r\nopsvisor-image: guest powered off\r\n"),
            Some(Verdict::PoweredOff)
        );
        assert!(cfg.contains("set timeout=0"));
        assert!(cfg.contains("multiboot2 /boot/opsvisor-image mem=32"));
        assert!(cfg.contains("module2 /boot/guest hello"));
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(""), None);
        assert_eq!(verdict("PASS\nno report\n"), None);
        let pass = "opsvisor-image: starting\r\nPASS\r\nopsvisor-image: guest exit status 1\r\n";
        assert_eq!(verdict(pass), Some(Verdict::GuestExit(1)));
        assert!(verdict(pass).is_some_and(|v| v.passed()));
        let fail = "FAIL: x\nopsvisor-image: guest exit status 3\n";
        assert_eq!(verdict(fail), Some(Verdict::GuestExit(3)));
        assert!(!Verdict::GuestExit(3).passed());
        assert_eq!(
            verdict("half a lineopsvisor-image: guest exit status 1"),
            Some(Verdict::GuestExit(1))
        );
        assert_eq!(
            verdict("opsvisor-image: failed: no boot module\n"),
            Some(Verdict::Failed("no boot module".into()))
        );
        assert!(matches!(
            verdict("opsvisor-image: triple fault at rip 0x10\n"),
            Some(Verdict::TripleFault(_))
        ));
        let reset = "resetting through 0xCF9\r\nopsvisor-image: guest reset the machine\r\n";
        assert_eq!(verdict(reset), Some(Verdict::Reset));
        assert!(!Verdict::Reset.passed(), "a reset alone is no pass");
    }

    #[test]
    fn cpu_flags() {
        let info = "processor : 0\nflags\t\t: fpu vme vmx sse\nbugs : vmx\n";
        assert!(cpuinfo_has_flag(info, "vmx"));
        assert!(!cpuinfo_has_flag(info, "svm"));
        assert!(!cpuinfo_has_flag("bugs : svm\n", "svm"));
    }
}
