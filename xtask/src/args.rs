//! The command line of `cargo xtask`.

use std::path::PathBuf;
use std::time::Duration;

/// The default Bochs CPU model: Skylake-X has VMX with EPT, VPID and unrestricted guest.
pub const DEFAULT_BOCHS_CPU: &str = "corei7_skylake_x";
/// Default limit on one emulator run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default Bochs instructions per emulated second (the notes' value: keeps the BIOS's
/// timed waits short).
pub const DEFAULT_IPS: u64 = 5_000_000;
/// Default RAM of the emulated machine, MiB (the image keeps 64 MiB for the guest and
/// needs some for itself).
pub const DEFAULT_MEGS: u32 = 256;

/// Where the guest comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestSpec {
    /// A file.
    Path(PathBuf),
    /// A corpus guest (guests/src/bin/NAME.rs), built on demand.
    Corpus(String),
}

/// Options shared by the commands that run the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The guest.
    pub guest: GuestSpec,
    /// Bochs CPU model.
    pub cpu: String,
    /// Give up after this long.
    pub timeout: Duration,
    /// Machine RAM, MiB.
    pub megs: u32,
    /// Bochs: instructions per emulated second (sets how fast the TSC runs against the
    /// instructions executed).
    pub ips: u64,
    /// The image's command line (`mem=<MiB>`, `interactive`).
    pub append: String,
    /// QEMU: boot the GRUB ISO instead of `-kernel`/`-initrd`.
    pub iso: bool,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the help text.
    Help,
    /// Build the image and print its path.
    Image,
    /// Build a GRUB ISO with the image and the guest.
    Iso {
        /// The guest and the image's command line.
        run: RunOptions,
        /// Where to write it (default: next to the image).
        out: Option<PathBuf>,
    },
    /// Write a bootable USB disk image (the hybrid ISO).
    Usb {
        /// The guest and the image's command line.
        run: RunOptions,
        /// The file to write.
        out: PathBuf,
    },
    /// Run under Bochs.
    Bochs(RunOptions),
    /// Run under QEMU TCG.
    Qemu(RunOptions),
    /// Run under QEMU with KVM (nested VMX).
    QemuKvm(RunOptions),
    /// Regenerate docs/emu-coverage.md, or with `check` fail when it is out of date.
    Coverage {
        /// Only check.
        check: bool,
    },
}

/// The help text.
pub const HELP: &str = "\
cargo xtask: build the opsvisor bare-metal image and run it under Bochs and QEMU

USAGE:
    cargo xtask image                       build the image, print its path
    cargo xtask iso GUEST [--out FILE]      GRUB ISO: the image (multiboot2) + GUEST as module
    cargo xtask usb GUEST OUT.img           bootable USB disk image (the hybrid GRUB ISO)
    cargo xtask bochs GUEST [OPTIONS]       boot under headless Bochs
    cargo xtask bochs-vmx GUEST [OPTIONS]   the same, named for its VMX CPU model
    cargo xtask qemu GUEST [OPTIONS]        boot under QEMU TCG (-kernel, PVH)
    cargo xtask qemu-kvm GUEST [OPTIONS]    boot under QEMU with KVM (-cpu host, nested VMX)
    cargo xtask coverage [--check]          regenerate docs/emu-coverage.md (the emulator's
                                            instruction coverage); --check fails if it is stale
    cargo xtask help                        this text

GUEST is a file (a multiboot v1 kernel) or the name of a corpus guest (guests/src/bin/NAME.rs,
built with `cargo build --release` in guests/).

OPTIONS:
    --cpu MODEL       Bochs CPU model (default corei7_skylake_x; ryzen for SVM)
    --timeout SECS    give up after SECS seconds (default 120); the emulator is killed
    --megs MIB        RAM of the emulated machine (default 256)
    --ips N           Bochs instructions per emulated second (default 5000000); the emulated
                      clock runs slower against the work done with a larger N, which timing-
                      sensitive guests on the image's emulator backend may need (50000000)
    --append ARGS     the image's command line: mem=<MiB> (guest RAM, default 64), interactive,
                      fault (raise #UD first: checks the exception report)
    --iso             qemu: boot the GRUB ISO as a CD instead of -kernel/-initrd

The guest's serial output is streamed to stdout as it arrives. Exit status: 0 when the image
reports the guest's PASS (`opsvisor-image: guest exit status 1`), 1 when the guest or the
image failed, 2 on bad input or a missing tool, 3 on timeout.

To boot real hardware: `cargo xtask usb hello opsvisor.img`, then
`sudo dd if=opsvisor.img of=/dev/sdX bs=4M conv=fsync` (sdX: the whole USB stick, not a
partition; everything on it is lost). The stick boots in BIOS mode (and UEFI if GRUB's EFI
files are installed); the image reports on COM1 at 115200 baud.
";

/// Parse the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "image" => {
            if let Some(extra) = rest.first() {
                return Err(format!("'image' takes no arguments (got '{extra}')"));
            }
            Ok(Command::Image)
        }
        "iso" => {
            let (run, out, positional) = parse_run(rest, true)?;
            no_more(cmd, &positional)?;
            Ok(Command::Iso { run, out })
        }
        "usb" => {
            let (run, out, positional) = parse_run(rest, false)?;
            if out.is_some() {
                return Err("'usb' takes the output file as its second argument".into());
            }
            match positional.as_slice() {
                [out] => Ok(Command::Usb {
                    run,
                    out: PathBuf::from(out),
                }),
                [] => Err("'usb' needs an output file: cargo xtask usb GUEST OUT.img".into()),
                [_, extra, ..] => Err(format!("'usb': unexpected argument '{extra}'")),
            }
        }
        "bochs" | "bochs-vmx" => {
            let (run, _, positional) = parse_run(rest, false)?;
            no_more(cmd, &positional)?;
            Ok(Command::Bochs(run))
        }
        "qemu" => {
            let (run, _, positional) = parse_run(rest, false)?;
            no_more(cmd, &positional)?;
            Ok(Command::Qemu(run))
        }
        "qemu-kvm" => {
            let (run, _, positional) = parse_run(rest, false)?;
            no_more(cmd, &positional)?;
            Ok(Command::QemuKvm(run))
        }
        "coverage" => match rest {
            [] => Ok(Command::Coverage { check: false }),
            [flag] if flag == "--check" => Ok(Command::Coverage { check: true }),
            [extra, ..] => Err(format!("'coverage': unexpected argument '{extra}'")),
        },
        other => Err(format!("unknown command '{other}'")),
    }
}

fn no_more(cmd: &str, positional: &[String]) -> Result<(), String> {
    match positional.first() {
        Some(extra) => Err(format!("'{cmd}': unexpected argument '{extra}'")),
        None => Ok(()),
    }
}

/// The guest, the run options, `--out` (if `allow_out`) and the positional arguments
/// after the guest.
fn parse_run(
    args: &[String],
    allow_out: bool,
) -> Result<(RunOptions, Option<PathBuf>, Vec<String>), String> {
    let mut guest = None;
    let mut positional = Vec::new();
    let mut run = RunOptions {
        guest: GuestSpec::Corpus(String::new()),
        cpu: DEFAULT_BOCHS_CPU.into(),
        timeout: DEFAULT_TIMEOUT,
        megs: DEFAULT_MEGS,
        ips: DEFAULT_IPS,
        append: String::new(),
        iso: false,
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--cpu" => {
                let model = value("--cpu")?;
                if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!("--cpu: '{model}' is not a Bochs CPU model name"));
                }
                run.cpu = model;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .ok_or_else(|| {
                        format!("--timeout: '{v}' is not a number of seconds (0 < s <= 86400)")
                    })?;
                run.timeout = Duration::from_secs_f64(secs);
            }
            "--megs" => {
                let v = value("--megs")?;
                run.megs = v
                    .parse()
                    .ok()
                    .filter(|m| (32..=65536).contains(m))
                    .ok_or_else(|| {
                        format!("--megs: '{v}' is not a RAM size in MiB (32 to 65536)")
                    })?;
            }
            "--ips" => {
                let v = value("--ips")?;
                run.ips = v
                    .parse()
                    .ok()
                    .filter(|n| (1_000_000..=1_000_000_000).contains(n))
                    .ok_or_else(|| {
                        format!("--ips: '{v}' is not an instruction rate (1000000 to 1000000000)")
                    })?;
            }
            "--append" => run.append = value("--append")?,
            "--iso" => run.iso = true,
            "--out" if allow_out => out = Some(PathBuf::from(value("--out")?)),
            flag if flag.starts_with("--") => return Err(format!("unknown option '{flag}'")),
            _ if guest.is_none() => guest = Some(guest_spec(arg)?),
            _ => positional.push(arg.clone()),
        }
    }
    run.guest = guest.ok_or("missing GUEST: a kernel file or a corpus guest name (e.g. hello)")?;
    Ok((run, out, positional))
}

/// A path if it looks like one (has a slash or a dot, or names an existing file),
/// otherwise a corpus guest name.
pub fn guest_spec(arg: &str) -> Result<GuestSpec, String> {
    if arg.is_empty() {
        return Err("GUEST is empty".into());
    }
    let path = PathBuf::from(arg);
    if arg.contains('/') || arg.contains('.') || path.is_file() {
        return Ok(GuestSpec::Path(path));
    }
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(GuestSpec::Corpus(arg.into()))
    } else {
        Err(format!("'{arg}' is neither a file nor a corpus guest name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn no_arguments_is_help() {
        assert_eq!(parse(&[]), Ok(Command::Help));
        assert_eq!(parse(&args("help")), Ok(Command::Help));
        assert_eq!(
            parse(&args("coverage")),
            Ok(Command::Coverage { check: false })
        );
        assert_eq!(
            parse(&args("coverage --check")),
            Ok(Command::Coverage { check: true })
        );
        assert!(parse(&args("coverage --fix")).is_err());
        assert_eq!(parse(&args("image")), Ok(Command::Image));
        assert!(parse(&args("image x")).is_err());
    }

    #[test]
    fn bochs_defaults_and_options() {
        let Ok(Command::Bochs(run)) = parse(&args("bochs hello")) else {
            panic!("not a bochs command");
        };
        assert_eq!(run.guest, GuestSpec::Corpus("hello".into()));
        assert_eq!(run.cpu, DEFAULT_BOCHS_CPU);
        assert_eq!(run.timeout, DEFAULT_TIMEOUT);
        assert_eq!(run.megs, DEFAULT_MEGS);

        let Ok(Command::Bochs(run)) = parse(&args(
            "bochs-vmx --cpu ryzen ./k.elf --timeout 7.5 --megs 512 --ips 50000000",
        )) else {
            panic!("not a bochs command");
        };
        assert_eq!(run.guest, GuestSpec::Path("./k.elf".into()));
        assert_eq!(run.cpu, "ryzen");
        assert_eq!(run.timeout, Duration::from_millis(7500));
        assert_eq!(run.megs, 512);
        assert_eq!(run.ips, 50_000_000);
    }

    #[test]
    fn qemu_options() {
        let Ok(Command::Qemu(run)) = parse(&args("qemu hello --iso --append mem=32")) else {
            panic!("not a qemu command");
        };
        assert!(run.iso);
        assert_eq!(run.append, "mem=32");
        assert!(matches!(
            parse(&args("qemu-kvm cpuid")),
            Ok(Command::QemuKvm(_))
        ));
    }

    #[test]
    fn iso_and_usb_outputs() {
        let Ok(Command::Iso { out, .. }) = parse(&args("iso hello --out /tmp/x.iso")) else {
            panic!("not an iso command");
        };
        assert_eq!(out, Some(PathBuf::from("/tmp/x.iso")));
        let Ok(Command::Usb { out, .. }) = parse(&args("usb hello stick.img")) else {
            panic!("not a usb command");
        };
        assert_eq!(out, PathBuf::from("stick.img"));
        assert!(parse(&args("usb hello"))
            .unwrap_err()
            .contains("output file"));
        assert!(parse(&args("bochs hello --out x")).is_err());
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        for (line, want) in [
            ("bochs", "missing GUEST"),
            ("frobnicate", "unknown command"),
            ("bochs hello --timeout", "needs a value"),
            ("bochs hello --timeout -3", "--timeout"),
            ("bochs hello --timeout nan", "--timeout"),
            ("bochs hello --megs 1", "--megs"),
            ("bochs hello --ips 5", "--ips"),
            ("bochs hello --cpu a;b", "--cpu"),
            ("bochs hello --bogus", "unknown option"),
            ("bochs hello extra", "unexpected argument"),
            ("qemu he$llo", "neither a file"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{line}: {err}");
        }
    }
}
