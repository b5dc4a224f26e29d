//! homelab-autopilot: a Kubernetes operator that keeps a homelab's Proxmox VE estate backed up,
//! updated, restore-tested and replicated.
//!
//! Module map (see `../shared/STYLE.md`, section 1):
//! - [`crd`]: the custom resource types (no IO).
//! - [`controllers`]: one kube-runtime controller per kind, plus the `operator` runtime.
//! - [`proxmox`]: the typed PVE REST client and the PVE API simulator (`pvesim`).
//! - [`storage`]: the content-addressed dedup chunk store (`store`).
//! - [`telemetry`], [`metrics`]: logging and Prometheus metrics.
//! - [`demo`]: the whole product on embedded defaults (`demo`).
//!
//! `proxmox` and `storage` never import `kube` or `controllers`.
#![forbid(unsafe_code)]

pub mod controllers;
pub mod crd;
pub mod demo;
pub mod metrics;
pub mod proxmox;
pub mod storage;
pub mod telemetry;
