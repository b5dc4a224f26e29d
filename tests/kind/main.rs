//! End-to-end tests against a real Kubernetes API server (`KUBECONFIG`).
//!
//! Without a reachable API server every test prints
//! `SKIP tests/kind: no Kubernetes API (set KUBECONFIG)` and passes, so `cargo test` stays
//! green on a laptop. `.ci/run` starts `../shared/kube/up.sh` (kube-apiserver 1.28) first, so
//! CI runs them for real:
//!
//! ```sh
//! eval "$(../shared/kube/up.sh "$PWD/target/kube")"
//! cargo test --test kind
//! ../shared/kube/down.sh --wipe "$PWD/target/kube"
//! ```
//!
//! Layout: [`harness`] holds the shared plumbing (client, CRD install, a fresh namespace per
//! test, waits with deadlines, HTTP probes), [`fixtures`] the examples and invalid resources;
//! each area adds a module here. [`crds`] covers the published API, [`runtime`] the operator
//! runtime, [`controllers`] the ProxmoxCluster and Service controllers against the PVE
//! simulator (in-process, or the chart-installed operator: see `run-in-kind.sh`).

mod controllers;
mod crds;
mod fixtures;
mod harness;
mod runtime;
