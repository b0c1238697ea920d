//! A cell for statics that a single CPU shares with its interrupt handlers.

use core::cell::UnsafeCell;

/// Interior mutability for a guest's statics. The guest has one CPU; users keep
/// accesses from overlapping with handlers that touch the same value (by construction or
/// with interrupts disabled).
pub struct Racy<T>(UnsafeCell<T>);

// SAFETY: one CPU, and the users uphold the rule above.
unsafe impl<T> Sync for Racy<T> {}

impl<T> Racy<T> {
    /// A cell holding `v`.
    pub const fn new(v: T) -> Self {
        Racy(UnsafeCell::new(v))
    }
    /// The raw pointer to the value.
    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}
