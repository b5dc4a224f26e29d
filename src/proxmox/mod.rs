//! The typed Proxmox VE (and PBS) REST client, and the PVE API simulator.
//!
//! Never imports `kube` or `crate::controllers`: usable from the CLI, benches and tests.

pub mod sim;
