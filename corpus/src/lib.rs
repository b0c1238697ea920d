//! The guest corpus.
