//! End-to-end tests against a real Kubernetes API server (`KUBECONFIG`).
//!
//! Without a reachable API server every test prints
//! `SKIP tests/kind: no Kubernetes API (set KUBECONFIG)` and passes, so `cargo test` stays
//! green on a laptop and in CI, which starts no control plane. Run them against any disposable
//! cluster (k3s, kind, minikube): the suite applies the CRDs and works in namespaces of its own.
//!
//! ```sh
//! KUBECONFIG=~/.kube/k3s-test.yaml cargo test --test kind
//! bash tests/kind/run-in-kind.sh   # the Helm-installed operator in a kind cluster (Docker, kind)
//! ```
//!
//! What these tests prove about our requests to the API server is also proven everywhere,
//! without a cluster: `tests/api/controllers_kube.rs` and the runtime's unit tests drive the
//! controllers and the leader election against kube's tower-test mock service, and
//! `tests/api/crds.rs` checks every example and every entry of `invalid_crs.yaml` against the
//! generated schemas and CEL rules.
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
