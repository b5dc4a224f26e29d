//! Cluster-wide reads: version, status (quorum, nodes), resources (where guests really run),
//! next free VMID, node list.

use serde::Deserialize;

use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::types::{GuestRef, GuestType, NodeName, Vmid};

/// `GET /version`.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    /// Full pve-manager version, e.g. `9.1.2`.
    pub version: String,
    /// Point release, e.g. `9.1`.
    #[serde(default)]
    pub release: String,
    /// Git revision.
    #[serde(default)]
    pub repoid: String,
}

/// One row of `GET /cluster/status`: the cluster itself or a node.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterStatusEntry {
    /// `cluster` or `node`.
    #[serde(rename = "type")]
    pub entry_type: String,
    /// `cluster` or `node/<name>`.
    #[serde(default)]
    pub id: String,
    /// Cluster or node name.
    #[serde(default)]
    pub name: String,
    /// Cluster row: whether the cluster has quorum.
    #[serde(default, deserialize_with = "decode::opt_bool")]
    pub quorate: Option<bool>,
    /// Cluster row: number of nodes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub nodes: Option<u64>,
    /// Cluster row: config version.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub version: Option<u64>,
    /// Node row: corosync node id.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub nodeid: Option<u64>,
    /// Node row: address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Node row: whether the node is online.
    #[serde(default, deserialize_with = "decode::opt_bool")]
    pub online: Option<bool>,
    /// Node row: whether this is the node that answered.
    #[serde(default, deserialize_with = "decode::opt_bool")]
    pub local: Option<bool>,
}

/// The cluster row of [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterSummary {
    /// Cluster name.
    pub name: String,
    /// Whether the cluster has quorum.
    pub quorate: bool,
    /// Number of nodes.
    pub nodes: u64,
}

/// A node row of [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterNodeStatus {
    /// Node name.
    pub name: String,
    /// Whether it is online.
    pub online: bool,
    /// Whether it is the node that answered the request.
    pub local: bool,
    /// Its address.
    pub ip: Option<String>,
}

/// `GET /cluster/status`, summarised.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// The cluster row; `None` on a standalone node (no cluster configured).
    pub cluster: Option<ClusterSummary>,
    /// The node rows, sorted by name.
    pub nodes: Vec<ClusterNodeStatus>,
}

impl ClusterStatus {
    /// Summarises the raw rows.
    pub fn from_entries(entries: Vec<ClusterStatusEntry>) -> Self {
        let mut cluster = None;
        let mut nodes = Vec::new();
        for e in entries {
            match e.entry_type.as_str() {
                "cluster" => {
                    cluster = Some(ClusterSummary {
                        name: e.name,
                        quorate: e.quorate.unwrap_or(false),
                        nodes: e.nodes.unwrap_or(0),
                    })
                }
                "node" => nodes.push(ClusterNodeStatus {
                    name: e.name,
                    online: e.online.unwrap_or(false),
                    local: e.local.unwrap_or(false),
                    ip: e.ip,
                }),
                _ => {}
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Self { cluster, nodes }
    }

    /// Whether writes are safe: the cluster is quorate, or this is a standalone node.
    pub fn is_quorate(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.quorate)
    }
}

/// Filter for `GET /cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Guests (QEMU and LXC).
    Vm,
    /// Storages.
    Storage,
    /// Nodes.
    Node,
    /// SDN zones.
    Sdn,
}

impl ResourceKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Storage => "storage",
            Self::Node => "node",
            Self::Sdn => "sdn",
        }
    }
}

/// One row of `GET /cluster/resources`. Guests on an offline node come back with only id, type,
/// vmid, node, `status: unknown` and maybe name/tags/pool: everything else is optional.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterResource {
    /// `qemu/100`, `lxc/101`, `node/pve1`, `storage/pve1/local`, ...
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `pool`, `sdn`, ...
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The node it is on.
    #[serde(default)]
    pub node: Option<NodeName>,
    /// Guest id.
    #[serde(default)]
    pub vmid: Option<Vmid>,
    /// Guest name.
    #[serde(default)]
    pub name: Option<String>,
    /// `running`, `stopped`, `online`, `available`, `unknown`...
    #[serde(default)]
    pub status: Option<String>,
    /// Whether the guest is a template.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub template: bool,
    /// HA state, when HA-managed.
    #[serde(default)]
    pub hastate: Option<String>,
    /// Config lock, if any.
    #[serde(default)]
    pub lock: Option<String>,
    /// Tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// Pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// Storage id (storage rows).
    #[serde(default)]
    pub storage: Option<String>,
    /// CPU usage (0..maxcpu).
    #[serde(default, deserialize_with = "decode::opt_f64")]
    pub cpu: Option<f64>,
    /// Memory used, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub mem: Option<u64>,
    /// Memory size, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub maxmem: Option<u64>,
    /// Disk size (guests) or storage size, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub maxdisk: Option<u64>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub uptime: Option<u64>,
}

impl ClusterResource {
    /// QEMU or LXC, for guest rows.
    pub fn guest_type(&self) -> Option<GuestType> {
        self.resource_type.parse().ok()
    }
}

/// Where a guest runs now, from `/cluster/resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLocation {
    /// Node, type and id: ready for per-guest calls.
    pub guest: GuestRef,
    /// `running`, `stopped`, or `unknown` when its node is offline.
    pub status: String,
    /// Guest name.
    pub name: Option<String>,
    /// Whether it is a template.
    pub template: bool,
    /// Config lock, if any.
    pub lock: Option<String>,
    /// HA state, when HA-managed.
    pub hastate: Option<String>,
}

/// One row of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeListEntry {
    /// Node name.
    pub node: NodeName,
    /// `online`, `offline` or `unknown`.
    #[serde(default)]
    pub status: String,
    /// The node's certificate fingerprint.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub uptime: Option<u64>,
}

impl PveClient {
    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo> {
        self.run(Call::new(ops::VERSION, &[])).await
    }

    /// `GET /cluster/status`: quorum and node membership.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let rows: Vec<ClusterStatusEntry> = self.run(Call::new(ops::CLUSTER_STATUS, &[])).await?;
        Ok(ClusterStatus::from_entries(rows))
    }

    /// `GET /cluster/resources`, optionally filtered.
    pub async fn cluster_resources(&self, kind: Option<ResourceKind>) -> Result<Vec<ClusterResource>> {
        self.run(Call::new(ops::CLUSTER_RESOURCES, &[]).opt("type", kind.map(ResourceKind::as_str)))
            .await
    }

    /// Where guest `vmid` is now (after a migration or HA failover it may have moved).
    /// [`Error::NotFound`] if no guest has that id.
    pub async fn locate_guest(&self, vmid: Vmid) -> Result<GuestLocation> {
        let rows = self.cluster_resources(Some(ResourceKind::Vm)).await?;
        let not_found = || Error::NotFound {
            message: format!("no guest with VMID {vmid} in /cluster/resources"),
        };
        let row = rows
            .into_iter()
            .find(|r| r.vmid == Some(vmid) && r.guest_type().is_some())
            .ok_or_else(not_found)?;
        let (Some(node), Some(guest_type)) = (row.node.clone(), row.guest_type()) else {
            return Err(not_found());
        };
        Ok(GuestLocation {
            guest: GuestRef::new(node, guest_type, vmid),
            status: row.status.unwrap_or_else(|| "unknown".into()),
            name: row.name,
            template: row.template,
            lock: row.lock,
            hastate: row.hastate,
        })
    }

    /// `GET /cluster/nextid`: the next free VMID (PVE sends it as a string or a number). It is not
    /// reserved: creating the guest can still race with someone else.
    pub async fn next_vmid(&self) -> Result<Vmid> {
        self.run(Call::new(ops::CLUSTER_NEXTID, &[])).await
    }

    /// `GET /cluster/nextid?vmid=N`: whether `vmid` is free right now.
    pub async fn is_vmid_free(&self, vmid: Vmid) -> Result<bool> {
        match self
            .run::<Vmid>(Call::new(ops::CLUSTER_NEXTID, &[]).arg("vmid", vmid))
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::ParameterVerification { errors, .. })
                if errors.get("vmid").is_some_and(|m| m.contains("already exists")) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeListEntry>> {
        self.run(Call::new(ops::NODES, &[])).await
    }
}
