//! Effects: everything that touches the machine lives here, behind small functions and types that
//! the pure `core` never sees.

pub mod cluster_policies;
pub mod drain;
pub mod firewalld;
pub mod fs;
pub mod hooks;
pub mod journald;
pub mod kube;
pub mod lease;
pub mod mhc;
pub mod policy_scan;
pub mod registries;
pub mod systemd;
