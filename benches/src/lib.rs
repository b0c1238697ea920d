//! Guest programs for the benchmarks.
