//! Pure logic: no I/O, no async, no system calls. Takes data, returns data.

pub mod mirrors;
pub mod phases;
