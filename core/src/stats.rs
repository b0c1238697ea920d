//! Exit statistics.
