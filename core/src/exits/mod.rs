//! Exit handlers, one exit family per file (written with the run loop).
