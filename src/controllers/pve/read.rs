//! Reading what reaching a cluster needs, through the driver's [`Source`] (the API server, or the
//! demo's objects): the ProxmoxCluster an object refers to and the Secrets it uses. A missing
//! object is data for the status (`WaitingForCluster`, `ClusterNotFound`, `SecretNotFound`); a failure to ask is an
//! error.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::ProxmoxDeps;
use super::access::{ClusterAccess, ClusterInputs};
use super::resolve::{self, SecretData};
use crate::controllers::runtime::{driver::Source, error::Error};
use crate::crd::ProxmoxCluster;

/// Reads the Secrets (credentials and CA bundle) `cluster` points at.
pub async fn cluster_inputs<S: Source>(source: &S, cluster: &ProxmoxCluster) -> Result<ClusterInputs, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let read = |name: String| {
        let namespace = namespace.clone();
        async move {
            let found: Option<Secret> = source.get(&namespace, &name).await?;
            Ok::<_, Error>(found.map(|s| (secret_data(&s), s.resource_version().unwrap_or_default())))
        }
    };
    let secret = read(cluster.spec.credentials_secret_ref.name.clone()).await?;
    let ca = match resolve::ca_secret(&cluster.spec) {
        None => None,
        Some(selector) => {
            let found = read(selector.name.clone()).await?;
            Some(resolve::ca_bundle(
                selector,
                found.as_ref().map(|(data, rv)| (data, rv.as_str())),
            ))
        }
    };
    Ok(ClusterInputs { secret, ca })
}

/// The data of a Secret as the resolvers read it (key -> bytes).
pub fn secret_data(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Who refers to a ProxmoxCluster: its namespace, when it was created, and the time of the pass.
#[derive(Clone, Copy, Debug)]
pub struct Referrer<'a> {
    /// Namespace of the referring object (and of the cluster).
    pub namespace: &'a str,
    /// Its `metadata.creationTimestamp` (a missing cluster is awaited for a while after it).
    pub created: Option<Timestamp>,
    /// The time of this pass.
    pub now: Timestamp,
}

impl<'a> Referrer<'a> {
    /// The object `obj` in `namespace`, at the pass time `now`.
    pub fn of(obj: &impl kube::Resource, namespace: &'a str, now: Timestamp) -> Self {
        Self {
            namespace,
            created: obj.meta().creation_timestamp.as_ref().map(|t| t.0),
            now,
        }
    }
}

/// The ProxmoxCluster `name` in the referrer's namespace and its client, or why there is none.
pub async fn cluster_access<S: Source>(
    source: &S,
    deps: &ProxmoxDeps,
    referrer: Referrer<'_>,
    name: &str,
) -> Result<ClusterAccess, Error> {
    let namespace = referrer.namespace;
    let Some(cluster) = source.get::<ProxmoxCluster>(namespace, name).await? else {
        return Ok(ClusterAccess::missing(
            name,
            namespace,
            referrer.created,
            referrer.now,
        ));
    };
    let inputs = cluster_inputs(source, &cluster).await?;
    Ok(ClusterAccess::through(deps, &cluster, &inputs, namespace).await)
}
