//! Builds the guest corpus (../guests, a separate cargo project for
//! x86_64-unknown-none) with a nested `cargo build --release`, copies the images to
//! `$OUT_DIR/guests/<name>` and tells the crate where they are
//! (`OPSVISOR_GUESTS_DIR`).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const TARGET: &str = "x86_64-unknown-none";

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    exit(1);
}

fn env_path(name: &str) -> PathBuf {
    match env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => fail(&format!("cargo did not set {name}")),
    }
}

/// The guest binaries: one per `guests/src/bin/*.rs`, sorted.
fn guest_names(guests: &Path) -> Vec<String> {
    let dir = guests.join("src/bin");
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| fail(&format!("reading {}: {e}", dir.display())));
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "rs"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))?
        })
        .collect();
    names.sort();
    names
}

/// Whether the standard library for `TARGET` is installed in `rustc`'s sysroot.
fn target_installed(rustc: &OsString) -> bool {
    let out = match Command::new(rustc).args(["--print", "sysroot"]).output() {
        Ok(o) if o.status.success() => o,
        // Cannot tell: let the build itself report what is wrong.
        _ => return true,
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = sysroot.join("lib/rustlib").join(TARGET).join("lib");
    fs::read_dir(&lib).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
    })
}

fn main() {
    let manifest = env_path("CARGO_MANIFEST_DIR");
    let out_dir = env_path("OUT_DIR");
    let guests = match manifest.parent() {
        Some(root) => root.join("guests"),
        None => fail("corpus/ has no parent directory"),
    };
    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "link.ld",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", guests.join(p).display());
    }

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if !target_installed(&rustc) {
        fail(&format!(
            "the {TARGET} target is not installed; the guest corpus is built for it. Run: rustup target add {TARGET}"
        ));
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("guests-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args([
            "build",
            "--release",
            "--offline",
            "--bins",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings must not leak into the guests' build: its flags,
    // target, target dir, profile overrides and wrappers (clippy's, sccache) are for
    // the host crates. Kept: CARGO_HOME, the jobserver (CARGO_MAKEFLAGS, so the nested
    // build shares the outer job slots) and RUSTC/RUSTUP_TOOLCHAIN (the same toolchain).
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        let cargo_var = (k.starts_with("CARGO_") || k.starts_with("__CARGO"))
            && k != "CARGO_HOME"
            && k != "CARGO_MAKEFLAGS";
        let flags = matches!(
            k.as_ref(),
            "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
        );
        if cargo_var || flags {
            cmd.env_remove(&key);
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("running cargo for the guests: {e}")));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{stderr}");
        let hint = if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!(" (is the target installed? rustup target add {TARGET})")
        } else {
            String::new()
        };
        fail(&format!(
            "building the guest corpus in {} failed{hint}",
            guests.display()
        ));
    }

    let built = target_dir.join(TARGET).join("release");
    let dest = out_dir.join("guests");
    fs::create_dir_all(&dest)
        .unwrap_or_else(|e| fail(&format!("creating {}: {e}", dest.display())));
    for name in guest_names(&guests) {
        let from = built.join(&name);
        let to = dest.join(&name);
        fs::copy(&from, &to).unwrap_or_else(|e| {
            fail(&format!(
                "copying {} to {}: {e}",
                from.display(),
                to.display()
            ))
        });
    }
    println!("cargo:rustc-env=OPSVISOR_GUESTS_DIR={}", dest.display());
}
