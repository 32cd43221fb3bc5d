//! rhel-node-agent: the node agent for RHEL workers of OpenShift/Kubernetes clusters.
//!
//! `core` holds pure logic (the mirror engine, …); `adapters` do the effects (files, …); `cli`
//! wires them to the command line. See `docs/ARCHITECTURE.md`.

pub mod core;
