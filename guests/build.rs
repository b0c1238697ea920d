//! Links every guest with link.ld, the script that places the image at 1 MiB.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
    // Keep the section headers and symbols (useful with objdump) but no build id, whose
    // note section would otherwise be an orphan outside the loaded image.
    println!("cargo:rustc-link-arg-bins=--build-id=none");
    println!("cargo:rustc-link-arg-bins=--orphan-handling=error");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
