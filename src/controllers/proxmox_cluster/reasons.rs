//! The ProxmoxCluster kind's own condition/Event reasons and Event actions (stable API: alerts
//! match on them). Reasons every Proxmox-driving kind shares are in `pve::reasons`.

/// Event action of connection Events.
pub const ACTION_CONNECT: &str = "Connect";
/// Event action of Events about what was observed.
pub const ACTION_OBSERVE: &str = "Observe";

/// Condition reason when connected; Event reason of the flip to connected.
pub const CONNECTED: &str = "Connected";
/// Condition/Event reason: quorum lost.
pub const QUORUM_LOST: &str = "QuorumLost";
/// Condition/Event reason: a declared storage does not exist.
pub const STORAGE_NOT_FOUND: &str = "StorageNotFound";
