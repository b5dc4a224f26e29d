//! Observe: read-only calls that describe a Proxmox VE cluster: version, quorum, nodes (with
//! their PVE version), storages and which endpoint answered.

use std::{collections::BTreeMap, time::Duration};

use crate::controllers::pve::snapshot::Snapshots;
use crate::proxmox::{
    self, PveClient,
    api::{ClusterResource, ClusterStatus, StorageConfig},
};

/// One storage as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedStorage {
    /// Storage id.
    pub name: String,
    /// Plugin type.
    pub type_: String,
    /// Whether all nodes see the same content.
    pub shared: bool,
    /// Nodes where it is available now, sorted.
    pub active_nodes: Vec<String>,
}

/// Everything one pass read from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterObservation {
    /// The endpoint that answered.
    pub endpoint: String,
    /// `pve-manager` version of the answering node, e.g. `9.1.2`.
    pub version: String,
    /// Quorum and node membership.
    pub cluster: ClusterStatus,
    /// PVE version per online node (absent when the node could not be asked).
    pub node_versions: BTreeMap<String, String>,
    /// Storages, sorted by name.
    pub storages: Vec<ObservedStorage>,
}

/// `pve-manager/9.1.2/abcdef` -> `9.1.2`.
pub fn manager_version(pveversion: &str) -> Option<String> {
    let mut parts = pveversion.split('/');
    match (parts.next(), parts.next()) {
        (Some("pve-manager"), Some(v)) if !v.is_empty() => Some(v.to_owned()),
        _ => None,
    }
}

/// The enabled storages of `configs` (`GET /storage`), each with the nodes where
/// `/cluster/resources` reports it `available`, sorted by name.
pub fn storages_from(configs: Vec<StorageConfig>, rows: &[ClusterResource]) -> Vec<ObservedStorage> {
    let mut storages: Vec<ObservedStorage> = configs
        .into_iter()
        .filter(|c| !c.disable)
        .map(|c| {
            let mut active_nodes: Vec<String> = rows
                .iter()
                .filter(|r| r.storage.as_deref() == Some(c.storage.as_str()))
                .filter(|r| r.status.as_deref() == Some("available"))
                .filter_map(|r| r.node.as_ref().map(|n| n.to_string()))
                .collect();
            active_nodes.sort();
            active_nodes.dedup();
            ObservedStorage {
                name: c.storage,
                type_: c.storage_type,
                shared: c.shared,
                active_nodes,
            }
        })
        .collect();
    storages.sort_by(|a, b| a.name.cmp(&b.name));
    storages
}

/// Reads the cluster. The first call (`/version`) surfaces connection, TLS and authentication
/// failures; a node that does not answer its status call only lacks a version.
/// Storage usage comes from the cluster's shared `/cluster/resources` snapshot (`snapshots`,
/// keyed by `owner`, at most `max_age` old).
pub async fn observe(
    client: &PveClient,
    snapshots: &Snapshots,
    owner: &str,
    max_age: Duration,
    now: jiff::Timestamp,
) -> Result<ClusterObservation, proxmox::Error> {
    let version = client.version().await?;
    let endpoint = client.endpoint().to_owned();
    let cluster = client.cluster_status().await?;
    let mut node_versions = BTreeMap::new();
    for node in cluster.nodes.iter().filter(|n| n.online) {
        let Ok(name) = proxmox::NodeName::new(node.name.clone()) else {
            continue;
        };
        match client.node_status(&name).await {
            Ok(status) => {
                if let Some(v) = manager_version(&status.pveversion) {
                    node_versions.insert(node.name.clone(), v);
                }
            }
            Err(e) => tracing::debug!(node = %node.name, error = %e, "cannot read node status"),
        }
    }
    let configs = client.storage_configs().await?;
    let rows = snapshots.resources(owner, client, max_age, now).await?;
    let storages = storages_from(configs, &rows);
    Ok(ClusterObservation {
        endpoint,
        version: version.version,
        cluster,
        node_versions,
        storages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storages_from_fixtures_skips_disabled_and_lists_available_nodes() {
        let configs: Vec<StorageConfig> =
            serde_json::from_str(include_str!("testdata/storage_config.json")).unwrap();
        let rows: Vec<ClusterResource> =
            serde_json::from_str(include_str!("testdata/storage_resources.json")).unwrap();
        let got = storages_from(configs, &rows);
        let summary: Vec<_> = got
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.type_.as_str(),
                    s.shared,
                    s.active_nodes.join(","),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("local", "dir", false, "pve1,pve2".to_owned()),
                ("local-lvm", "lvmthin", false, "pve1".to_owned()),
                ("pbs-homelab", "pbs", true, "pve1,pve2".to_owned()),
            ]
        );
    }

    #[test]
    fn manager_version_takes_the_middle_part() {
        assert_eq!(manager_version("pve-manager/9.1.2/abc").as_deref(), Some("9.1.2"));
        assert_eq!(manager_version("pve-manager/8.4.1"), Some("8.4.1".into()));
        assert_eq!(manager_version("proxmox-backup/3"), None);
        assert_eq!(manager_version(""), None);
    }
}
