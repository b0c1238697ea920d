//! The concrete backend set.
