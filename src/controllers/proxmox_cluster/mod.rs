//! The ProxmoxCluster controller: connect to a Proxmox VE cluster (endpoint failover, API token
//! or password from a Secret, pinned fingerprint or CA), read its version, quorum, nodes and
//! storages, and report them as conditions `Connected`, `Quorate`, `Ready` and status fields.
//!
//! The core here ([`reconcile_core`] = [`resolve`] -> [`observe`] -> [`plan`]) imports no kube
//! types: [`controller`] drives it from the API server, `homelab-autopilot demo` from in-memory
//! objects. The Service controller reuses [`cluster_client`] to reach its cluster.

pub mod controller;
pub mod observe;
pub mod plan;
pub mod resolve;

use jiff::Timestamp;

use self::plan::{ClusterPlan, Failure, PlanInput};
use self::resolve::{SecretData, Unresolved};
use super::shared::ProxmoxDeps;
use crate::crd::ProxmoxCluster;
use crate::crd::proxmox_cluster::{ProxmoxClusterSpec, ProxmoxClusterStatus};
use crate::proxmox::PveClient;

/// A CA bundle read from a Secret, with that Secret's resourceVersion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    /// The PEM text.
    pub pem: String,
    /// resourceVersion of the object it came from (rebuilds the client when it changes).
    pub version: String,
}

/// Everything the driver read for one ProxmoxCluster.
#[derive(Clone, Copy, Debug)]
pub struct ClusterRefs<'a> {
    /// The cluster's UID (client cache key).
    pub uid: &'a str,
    /// Its namespace (for messages).
    pub namespace: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The spec.
    pub spec: &'a ProxmoxClusterSpec,
    /// The credentials Secret's data and resourceVersion; `None` if it does not exist.
    pub secret: Option<(&'a SecretData, &'a str)>,
    /// The CA bundle when `spec.tls.caSecretRef` points at a Secret (`None` otherwise).
    pub ca: Option<&'a Result<CaBundle, Unresolved>>,
}

/// What a driver read for one ProxmoxCluster, owned: its credentials Secret and CA bundle.
#[derive(Clone, Debug, Default)]
pub struct ClusterInputs {
    /// The credentials Secret's data and resourceVersion; `None` if it does not exist.
    pub secret: Option<(SecretData, String)>,
    /// The CA bundle when `spec.tls.caSecretRef` points at a Secret (`None` otherwise).
    pub ca: Option<Result<CaBundle, Unresolved>>,
}

impl ClusterInputs {
    /// The core's view of `cluster` (UID `uid`, in `namespace`) with these inputs.
    pub fn refs<'a>(
        &'a self,
        cluster: &'a ProxmoxCluster,
        uid: &'a str,
        namespace: &'a str,
    ) -> ClusterRefs<'a> {
        ClusterRefs {
            uid,
            namespace,
            generation: cluster.metadata.generation,
            spec: &cluster.spec,
            secret: self.secret.as_ref().map(|(d, rv)| (d, rv.as_str())),
            ca: self.ca.as_ref(),
        }
    }
}

/// The cached client of the cluster, built (and cached) if its spec, Secret or CA changed.
pub async fn cluster_client(deps: &ProxmoxDeps, refs: ClusterRefs<'_>) -> Result<PveClient, Unresolved> {
    let credentials = resolve::credentials(
        refs.namespace,
        &refs.spec.credentials_secret_ref.name,
        refs.secret.map(|(data, _)| data),
    )?;
    let (ca_pem, ca_version) = match refs.ca {
        None => (None, None),
        Some(Ok(bundle)) => (Some(bundle.pem.as_str()), Some(bundle.version.as_str())),
        Some(Err(unresolved)) => return Err(unresolved.clone()),
    };
    let tls = resolve::tls_verify(refs.spec, ca_pem)?;
    let version = resolve::cache_version(refs.generation, refs.secret.map(|(_, rv)| rv), ca_version);
    deps.clients
        .get_or_try_insert(refs.uid, &version, || async {
            let config = resolve::client_config(refs.spec, credentials, tls, deps.client_metrics.clone());
            PveClient::new(config).map_err(|e| Unresolved::new(resolve::REASON_INVALID_CONFIG, e.to_string()))
        })
        .await
}

/// One pass over a ProxmoxCluster: resolve its client, observe the cluster, plan the status.
/// `previous` is the stored status.
pub async fn reconcile_core(
    deps: &ProxmoxDeps,
    refs: ClusterRefs<'_>,
    previous: &ProxmoxClusterStatus,
    now: Timestamp,
) -> ClusterPlan {
    let observed = match cluster_client(deps, refs).await {
        Ok(client) => observe::observe(&client).await.map_err(Failure::Pve),
        Err(unresolved) => Err(Failure::Unresolved(unresolved)),
    };
    let input = PlanInput {
        spec: refs.spec,
        generation: refs.generation,
        previous,
        now,
        tuning: &deps.tuning,
    };
    plan::plan(input, observed.as_ref())
}
