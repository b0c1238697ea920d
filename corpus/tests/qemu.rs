//! The guest corpus under QEMU TCG, the reference it was verified on. Ignored by
//! default (it needs qemu-system-x86_64, which `bash scripts/setup.sh --test-machines` installs):
//! `cargo test -p opsvisor-corpus --test qemu -- --ignored`.

opsvisor_corpus::corpus_tests!(
    qemu,
    opsvisor_corpus::run_on_qemu,
    "needs qemu-system-x86_64 (bash scripts/setup.sh --test-machines)"
);
