//! API-level tests: real HTTP on loopback against the PVE simulator, real stores in tempdirs.

mod architecture;
mod cli_pipe;
mod crds;
// Example and invalid-resource loaders, shared with the end-to-end suite.
mod controllers;
mod controllers_common;
mod controllers_demo;
mod controllers_kube;
mod controllers_service;
#[path = "../kind/fixtures.rs"]
mod fixtures;
mod proxmox_client_archive;
mod proxmox_client_backup;
mod proxmox_client_cluster;
mod proxmox_client_common;
mod proxmox_client_faults;
mod proxmox_client_migrate;
mod proxmox_client_network;
mod proxmox_client_tls;
mod proxmox_client_walk;
mod pvesim_backup;
mod pvesim_cli;
mod pvesim_common;
mod pvesim_endpoints;
mod pvesim_faults;
mod pvesim_guests;
mod pvesim_restore;
mod pvesim_schema;
mod pvesim_snapshots;
mod pvesim_wire;
mod store_badinput;
mod store_browse;
mod store_common;
mod store_concurrency;
mod store_corruption;
mod store_crash;
mod store_errors;
mod store_incomplete;
mod store_roundtrip;
mod store_s3;
mod store_safety;
mod store_select;
