//! The native oracle: user-mode x86-64 snippets run on the host CPU (Linux x86-64 only).
