//! rhel-node-agent: the node agent for RHEL workers of OpenShift/Kubernetes clusters.
//!
//! `core` holds pure logic (the mirror engine, …); `adapters` do the effects (files, …); `config`
//! turns TOML fragments into settings; `cli` wires them to the command line. See
//! `docs/ARCHITECTURE.md`.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod core;
pub mod runtime;
