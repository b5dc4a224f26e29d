//! Condition and Event reasons every Proxmox-driving kind uses (stable API: alerts match on
//! them), and the reason of a client failure. Kind-specific reasons live in the kind's own
//! `reasons.rs`.

use crate::proxmox;

/// Condition/Event reason: PVE rejected the credentials.
pub const AUTH_FAILED: &str = "AuthenticationFailed";
/// Condition/Event reason: the server certificate did not match the configured trust.
pub const TLS_MISMATCH: &str = "TlsMismatch";
/// Condition/Event reason: no endpoint could be reached.
pub const UNREACHABLE: &str = "Unreachable";
/// Condition/Event reason: the referenced ProxmoxCluster does not exist.
pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
/// Condition/Event reason (Normal): the referenced ProxmoxCluster does not exist yet, within the
/// grace period after the referring object was created.
pub const WAITING_FOR_CLUSTER: &str = "WaitingForCluster";
/// Condition/Event reason: the spec failed the operator's own checks (`Validate`).
pub const INVALID_SPEC: &str = "InvalidSpec";

/// The condition reason of a client failure: `AuthenticationFailed`, `PermissionDenied`,
/// `TlsMismatch`, `Unreachable`, `InvalidConfig`, or the error's category.
pub fn failure_reason(e: &proxmox::Error) -> &'static str {
    use proxmox::Error as E;
    match e {
        E::Unauthorized { .. } => AUTH_FAILED,
        E::PermissionDenied { .. } => "PermissionDenied",
        E::Tls { .. } => TLS_MISMATCH,
        E::Connect { .. } | E::Timeout { .. } | E::Transport { .. } => UNREACHABLE,
        E::Config { .. } => "InvalidConfig",
        other => other.category(),
    }
}
