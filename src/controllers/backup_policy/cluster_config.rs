//! `spec.clusterConfig`: a JSON export of what it takes to rebuild or diff the cluster (every
//! guest's config, the storage configuration, each node's network, the cluster status and the HA
//! resources), stored in the chunk store as snapshot `<namespace>.<policy>.cluster` next to the
//! guests' backups. Guest configs can hold secrets (cloud-init passwords): the store may be
//! encrypted (`--store-key-file`), and the export is never logged or put in status.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::proxmox::api::ClusterResource;
use crate::proxmox::{GuestRef, PveClient};
use crate::storage::{NoProgress, SourceKind, StoreLocation};

use super::ingest::{TAG_RUN, policy_tags};

/// The export, as JSON bytes.
pub async fn export(client: &PveClient, rows: &[ClusterResource]) -> Result<Vec<u8>, String> {
    let mut guests = Vec::new();
    let mut guest_rows: Vec<&ClusterResource> = rows.iter().filter(|r| r.guest_type().is_some()).collect();
    guest_rows.sort_by_key(|r| r.vmid.map(|v| v.get()));
    for row in guest_rows {
        let (Some(node), Some(vmid), Some(kind)) = (row.node.clone(), row.vmid, row.guest_type()) else {
            continue;
        };
        let guest = GuestRef::new(node.clone(), kind, vmid);
        let config = client
            .guest_config(&guest)
            .await
            .map_err(|e| format!("cannot read the config of {guest}: {e}"))?;
        guests.push(json!({
            "vmid": vmid.get(),
            "type": kind.to_string(),
            "node": node.as_str(),
            "name": row.name,
            "template": row.template,
            "config": config.values,
        }));
    }
    let storage = client
        .storage_configs()
        .await
        .map_err(|e| format!("cannot read /storage: {e}"))?;
    let status = client
        .cluster_status()
        .await
        .map_err(|e| format!("cannot read /cluster/status: {e}"))?;
    let mut networks = BTreeMap::new();
    for node in status.nodes.iter().filter(|n| n.online) {
        let Ok(name) = crate::proxmox::NodeName::new(&node.name) else {
            continue;
        };
        let interfaces = client
            .node_network(&name, None)
            .await
            .map_err(|e| format!("cannot read the network of node {}: {e}", node.name))?;
        networks.insert(node.name.clone(), interfaces);
    }
    let ha = client
        .ha_resources(None)
        .await
        .map_err(|e| format!("cannot read the HA resources: {e}"))?;
    let doc: Value = json!({
        "format": "homelab-autopilot cluster config v1",
        "guests": guests,
        "storage": storage,
        "clusterStatus": status,
        "networks": networks,
        "ha": ha,
    });
    serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())
}

/// Stores `bytes` as snapshot `name` tagged with the policy and run; returns its id. Blocking.
pub fn store(
    location: &StoreLocation,
    name: &str,
    policy_uid: &str,
    run_id: &str,
    bytes: &[u8],
) -> Result<String, String> {
    let chunk_store = location
        .open_or_init()
        .map_err(|e| format!("cannot open the chunk store: {e}"))?;
    let mut tags = policy_tags(policy_uid);
    tags.insert(TAG_RUN.to_owned(), run_id.to_owned());
    chunk_store
        .backup_reader(bytes, name, &tags, SourceKind::Stream, &NoProgress)
        .map(|s| s.snapshot.id)
        .map_err(|e| format!("cannot store the cluster config: {e}"))
}
