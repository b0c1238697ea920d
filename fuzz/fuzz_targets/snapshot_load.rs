//! Snapshot files as outside input: whatever the bytes, reading them must not panic or
//! allocate past the machine they describe, and a file that is accepted must restore into
//! a machine that then runs. The first byte chooses whether the trailer's checksum is
//! recomputed over the rest first (odd), so that mutations reach the section bodies and
//! the device checks instead of stopping at the checksum. Files describing more than
//! 16 MiB of RAM are left at the parse: building them is the CLI's bound, not the
//! parser's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_backends::{restore_machine, MachineOptions};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::snapshot;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if mode & 1 == 1 && file.len() >= snapshot::TRAILER_LEN {
        let n = file.len() - snapshot::TRAILER_LEN;
        let crc = snapshot::crc32(&file[..n]);
        file[n..].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(info) = snapshot::machine_info(&file) else {
        return;
    };
    let ram: u64 = info.ram.iter().map(|r| r.1).sum();
    if ram > 16 << 20 || info.vcpus > 4 {
        return;
    }
    let opts = MachineOptions {
        max_instructions: Some(5_000),
        timeout: Some(std::time::Duration::from_secs(5)),
        ..MachineOptions::default()
    };
    if let Ok(mut vm) = restore_machine(&file, &opts, CapturePlatform::new()) {
        vm.run();
        // A restored machine saves again, and that file restores.
        let again = snapshot::save(&mut vm).expect("a restored machine saves");
        snapshot::machine_info(&again).expect("a saved file reads back");
    }
});
