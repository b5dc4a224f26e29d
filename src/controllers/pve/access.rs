//! Reach a cluster: from a ProxmoxCluster and what its driver read (credentials Secret, CA
//! bundle) to a cached [`PveClient`], or the reason there is none.

use std::time::Duration;

use jiff::Timestamp;

use super::guest::Unavailable;
use super::resolve::{self, SecretData, Unresolved};
use super::{ProxmoxDeps, reasons};
use crate::controllers::kit::time::elapsed;
use crate::crd::ProxmoxCluster;
use crate::crd::proxmox_cluster::ProxmoxClusterSpec;
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

/// The ProxmoxCluster an object refers to (`spec.clusterRef`), as its driver found it.
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    /// Name of the ProxmoxCluster.
    pub name: String,
    /// Its UID (key of its client and its resources snapshot; empty when it does not exist).
    pub uid: String,
    /// Its resync interval (the drift check interval of the objects that use it).
    pub resync: Duration,
    /// Its client, or why there is none (cluster missing, Secret missing...).
    pub client: Result<PveClient, Unavailable>,
}

impl ClusterAccess {
    /// The access of an object whose ProxmoxCluster `name` does not exist in `namespace`.
    ///
    /// `kubectl apply -f examples/` creates the referring objects and the cluster together, in
    /// any order: for [`CLUSTER_GRACE`] after the referring object was `created`, the cluster is
    /// awaited (`WaitingForCluster`, rechecked when the grace ends; creating the cluster wakes
    /// the object earlier), after that it is missing (`ClusterNotFound`).
    pub fn missing(name: &str, namespace: &str, created: Option<Timestamp>, now: Timestamp) -> Self {
        // Created in the future (clock skew): just now.
        let waited = created.map(|c| elapsed(c, now));
        match waited.filter(|w| *w < CLUSTER_GRACE) {
            Some(waited) => Self {
                name: name.to_owned(),
                uid: String::new(),
                // Look again when the grace ends (at least a second from now).
                resync: (CLUSTER_GRACE - waited).max(Duration::from_secs(1)),
                client: Err(Unavailable {
                    reason: reasons::WAITING_FOR_CLUSTER.into(),
                    message: format!(
                        "waiting for ProxmoxCluster {name:?} (spec.clusterRef) to be created in namespace {namespace}; \
                         if it does not exist {} s after this object was created, that is reported as ClusterNotFound",
                        CLUSTER_GRACE.as_secs()
                    ),
                }),
            },
            None => Self {
                name: name.to_owned(),
                uid: String::new(),
                resync: DEFAULT_RESYNC,
                client: Err(Unavailable {
                    reason: reasons::CLUSTER_NOT_FOUND.into(),
                    message: format!(
                        "ProxmoxCluster {name:?} (spec.clusterRef) does not exist in namespace {namespace}; create it or fix \
                         the name"
                    ),
                }),
            },
        }
    }

    /// The access through `cluster`'s cached client, built from what the driver read.
    pub async fn through(
        deps: &ProxmoxDeps,
        cluster: &ProxmoxCluster,
        inputs: &ClusterInputs,
        namespace: &str,
    ) -> Self {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let uid = cluster
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{name}"));
        let client = cluster_client(deps, inputs.refs(cluster, &uid, namespace))
            .await
            .map_err(|u| Unavailable {
                reason: u.reason.to_owned(),
                message: format!("ProxmoxCluster {name}: {}", u.message),
            });
        let resync =
            u64::try_from(cluster.spec.resync_interval_seconds).map_or(DEFAULT_RESYNC, Duration::from_secs);
        Self {
            name,
            uid,
            resync,
            client,
        }
    }
}

/// Drift check interval while the cluster cannot be read (its own interval is unknown).
const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// How long after an object's creation a ProxmoxCluster it refers to may not exist yet before
/// that is a problem (`WaitingForCluster`, then `ClusterNotFound`).
pub const CLUSTER_GRACE: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn reason(access: &ClusterAccess) -> &str {
        &access.client.as_ref().unwrap_err().reason
    }

    #[test]
    fn missing_cluster_is_awaited_for_the_grace_period_after_the_object_was_created() {
        let waiting = ClusterAccess::missing("homelab", "lab", Some(at(0)), at(30));
        assert_eq!(reason(&waiting), "WaitingForCluster");
        assert_eq!(
            waiting.resync,
            CLUSTER_GRACE - Duration::from_secs(30),
            "looks again when it ends"
        );
        let message = &waiting.client.as_ref().unwrap_err().message;
        assert!(
            message.contains("\"homelab\"") && message.contains("namespace lab"),
            "{message}"
        );

        let missing = ClusterAccess::missing("homelab", "lab", Some(at(0)), at(120));
        assert_eq!(reason(&missing), "ClusterNotFound");
        assert_eq!(missing.resync, DEFAULT_RESYNC);
        let unknown_age = ClusterAccess::missing("homelab", "lab", None, at(0));
        assert_eq!(reason(&unknown_age), "ClusterNotFound");
        let clock_skew = ClusterAccess::missing("homelab", "lab", Some(at(10)), at(0));
        assert_eq!(reason(&clock_skew), "WaitingForCluster");
    }
}
