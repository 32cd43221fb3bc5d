//! Pure logic: no I/O, no async, no system calls. Takes data, returns data.

pub mod firewall;
pub mod mirrors;
pub mod phases;
