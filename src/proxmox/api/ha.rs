//! HA resources: list and migrate.

use serde::Deserialize;

use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::types::{GuestType, NodeName};

/// One row of `GET /cluster/ha/resources` (the full resource config).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct HaResource {
    /// `vm:100` or `ct:101`.
    pub sid: String,
    /// `vm` or `ct`.
    #[serde(rename = "type", default)]
    pub resource_type: Option<String>,
    /// Requested state (`started`, `stopped`, `disabled`, `ignored`).
    #[serde(default)]
    pub state: Option<String>,
    /// HA group (before PVE 9 rules).
    #[serde(default)]
    pub group: Option<String>,
    /// Restart attempts before relocating.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub max_restart: Option<u64>,
    /// Relocation attempts.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub max_relocate: Option<u64>,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A resource that blocks an HA migration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HaBlockingResource {
    /// Its sid.
    pub sid: String,
    /// Why (`resource-affinity`).
    #[serde(default)]
    pub cause: String,
}

/// `POST /cluster/ha/resources/{sid}/migrate` response (PVE 9; older versions return null).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HaMigrateResult {
    /// The resource.
    #[serde(default)]
    pub sid: String,
    /// The requested node.
    #[serde(rename = "requested-node", default)]
    pub requested_node: String,
    /// Resources that move along (positive affinity).
    #[serde(rename = "comigrated-resources", default)]
    pub comigrated_resources: Vec<String>,
    /// Resources that block the move.
    #[serde(rename = "blocking-resources", default)]
    pub blocking_resources: Vec<HaBlockingResource>,
}

impl PveClient {
    /// `GET /cluster/ha/resources`, optionally only VMs or containers, sorted by sid.
    pub async fn ha_resources(&self, guest_type: Option<GuestType>) -> Result<Vec<HaResource>> {
        let call = Call::new(ops::HA_RESOURCES, &[]).opt("type", guest_type.map(GuestType::ha_prefix));
        let mut rows: Vec<HaResource> = self.run(call).await?;
        rows.sort_by(|a, b| a.sid.cmp(&b.sid));
        Ok(rows)
    }

    /// `POST /cluster/ha/resources/{sid}/migrate`: asks the HA manager to move `sid` (see
    /// [`GuestRef::ha_sid`](crate::proxmox::GuestRef::ha_sid)) to `node`. The move happens
    /// asynchronously: watch `/cluster/resources` for the guest's node.
    pub async fn ha_migrate(&self, sid: &str, node: &NodeName) -> Result<HaMigrateResult> {
        let valid = sid.split_once(':').is_some_and(|(t, id)| {
            matches!(t, "vm" | "ct") && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
        });
        if !valid {
            return Err(Error::InvalidRequest {
                message: format!("HA resource id {sid:?} is not `vm:<vmid>` or `ct:<vmid>`"),
            });
        }
        let res: Option<HaMigrateResult> = self
            .run(Call::new(ops::HA_MIGRATE, &[sid]).arg("node", node))
            .await?;
        Ok(res.unwrap_or_default())
    }
}
