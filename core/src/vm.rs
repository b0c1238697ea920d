//! The VM and its run loop.
