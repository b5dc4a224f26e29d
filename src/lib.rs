//! homelab-autopilot: a Kubernetes operator that keeps a homelab's Proxmox VE estate backed up,
//! updated, restore-tested and replicated.
//!
//! Module map (the layers and their import rules: `ARCHITECTURE.md`):
//! - [`crd`]: the custom resource types (no IO).
//! - [`controllers`]: one kube-runtime controller per kind, plus the `operator` runtime.
//! - [`proxmox`]: the typed PVE REST client.
//! - [`pvesim`]: the PVE API simulator (`homelab-autopilot pvesim`); never imports the client.
//! - [`storage`]: the content-addressed dedup chunk store (`store`).
//! - [`telemetry`], [`metrics`]: logging and Prometheus metrics.
//! - [`demo`]: the whole product on embedded defaults (`demo`).
//!
//! `proxmox`, `pvesim` and `storage` never import `kube` or `controllers`.
#![forbid(unsafe_code)]

pub mod controllers;
pub mod crd;
pub mod demo;
pub mod metrics;
pub mod proxmox;
pub mod pvesim;
pub mod storage;
pub mod telemetry;
