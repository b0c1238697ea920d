//! The guest corpus on the emulator backend.

opsvisor_corpus::corpus_tests!(emu, opsvisor_corpus::run_on_emulator);
