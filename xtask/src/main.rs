//! `cargo xtask`: builds the bare-metal image and runs it under Bochs and QEMU.

fn main() {
    eprintln!("xtask: no commands yet");
    std::process::exit(2);
}
