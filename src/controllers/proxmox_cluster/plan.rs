//! Plan: the ProxmoxCluster status and Events from what one pass saw. Pure: same inputs, same
//! outputs; an unchanged cluster yields an unchanged status (conditions keep their transition
//! time, no per-pass timestamps).

use std::time::Duration;

use jiff::Timestamp;

use super::observe::ClusterObservation;
use super::reasons;
use crate::controllers::kit::{Change, Conditions, Outcome, PlannedEvent, time::elapsed};
use crate::controllers::pve::{self, Tuning, resolve::Unresolved};
use crate::crd::conditions::{ConditionStatus, READY, find_condition};
use crate::crd::proxmox_cluster::{
    CONDITION_CONNECTED, CONDITION_QUORATE, NodeStatus, ProxmoxClusterSpec, ProxmoxClusterStatus,
    StorageStatus,
};
use crate::proxmox;

/// Why a pass could not read the cluster.
#[derive(Clone, Debug)]
pub enum Failure {
    /// No client could be built (Secret, CA, spec).
    Unresolved(Unresolved),
    /// The client failed.
    Pve(proxmox::Error),
}

impl Failure {
    /// The condition reason and message for this failure. `secret` is the credentials Secret's
    /// name (for auth failures).
    pub fn describe(&self, spec: &ProxmoxClusterSpec) -> (&'static str, String) {
        let secret = &spec.credentials_secret_ref.name;
        match self {
            Self::Unresolved(u) => (u.reason, u.message.clone()),
            Self::Pve(e) => describe_pve(e, spec, secret),
        }
    }
}

fn describe_pve(e: &proxmox::Error, spec: &ProxmoxClusterSpec, secret: &str) -> (&'static str, String) {
    use proxmox::Error as E;
    let reason = pve::reasons::failure_reason(e);
    let message = match e {
        E::Unauthorized { message } => format!(
            "Proxmox VE rejected the credentials in Secret {secret:?} ({message}); check tokenId and tokenSecret, \
             and that the token still exists and has not expired"
        ),
        E::PermissionDenied { message } => format!(
            "the credentials in Secret {secret:?} lack a privilege ({message}); grant the HomelabAutopilot role on / \
             (see the README)"
        ),
        E::Tls {
            endpoint,
            expected,
            presented,
            detail,
        } => tls_message(spec, endpoint, expected.as_deref(), presented.as_deref(), detail),
        E::Connect { endpoint, detail } => {
            let all: Vec<&str> = spec
                .endpoints_by_priority()
                .iter()
                .map(|e| e.url.as_str())
                .collect();
            format!(
                "cannot connect to any endpoint ({}); last error from {endpoint}: {detail}. Check the URLs and that \
                 pveproxy listens on port 8006",
                all.join(", ")
            )
        }
        E::Timeout { what } => format!("no answer in time: {what}"),
        E::Transport { endpoint, detail } => format!("the connection to {endpoint} failed: {detail}"),
        E::Config { field, message } => format!("{field}: {message}"),
        other => other.to_string(),
    };
    (reason, message)
}

/// The spec field holding the pin `endpoint` was checked against: its own `fingerprint`, or
/// the shared `spec.tls.fingerprint`.
fn pin_field(spec: &ProxmoxClusterSpec, endpoint: &str) -> String {
    let trimmed = |u: &str| u.trim().trim_end_matches('/').to_owned();
    spec.endpoints
        .iter()
        .position(|e| e.fingerprint.is_some() && trimmed(&e.url) == trimmed(endpoint))
        .map(|i| format!("spec.endpoints[{i}].fingerprint"))
        .unwrap_or_else(|| "spec.tls.fingerprint".to_owned())
}

fn tls_message(
    spec: &ProxmoxClusterSpec,
    endpoint: &str,
    expected: Option<&str>,
    presented: Option<&str>,
    detail: &str,
) -> String {
    match (presented, expected) {
        (Some(p), Some(e)) => {
            let field = pin_field(spec, endpoint);
            format!(
                "the certificate of {endpoint} has SHA-256 fingerprint {p}, but {field} pins {e}; if the \
                 certificate was renewed and you trust it, set {field} to \"{p}\" (every node has its own \
                 certificate: pin each endpoint's own, or trust the cluster CA with spec.tls.caPem)"
            )
        }
        (Some(p), None) => format!(
            "the certificate of {endpoint} (SHA-256 fingerprint {p}) was rejected: {detail}; give the CA that signed it \
             (spec.tls.caPem or caSecretRef) or pin it with spec.tls.fingerprint: \"{p}\""
        ),
        (None, _) => format!("the TLS handshake with {endpoint} failed: {detail}"),
    }
}

/// The status, Events and requeue of one pass, plus whether the cluster answered (the
/// `pve_cluster_connected` gauge).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPlan {
    /// Status, Events, requeue.
    pub outcome: Outcome<ProxmoxClusterStatus>,
    /// Whether the cluster answered.
    pub connected: bool,
}

/// What a pass needs to plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The spec.
    pub spec: &'a ProxmoxClusterSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as stored.
    pub previous: &'a ProxmoxClusterStatus,
    /// Now.
    pub now: Timestamp,
    /// Timing.
    pub tuning: &'a Tuning,
}

struct Builder<'a> {
    input: PlanInput<'a>,
    status: ProxmoxClusterStatus,
    events: Vec<PlannedEvent>,
}

impl Builder<'_> {
    /// Sets a condition; the [`Change`] says whether it is news (an Event) and what was stored.
    fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) -> Change {
        let input = self.input;
        Conditions::new(&input.previous.conditions, input.generation, input.now).set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
        )
    }
}

/// Plans one pass from its input and what it saw (`Ok`: the cluster answered).
pub fn plan(input: PlanInput<'_>, observed: Result<&ClusterObservation, &Failure>) -> ClusterPlan {
    let mut b = Builder {
        input,
        status: ProxmoxClusterStatus {
            observed_generation: input.generation,
            conditions: input.previous.conditions.clone(),
            ..Default::default()
        },
        events: Vec::new(),
    };
    // Keep the order Ready, Connected, Quorate for objects seen the first time.
    if b.status.conditions.is_empty() {
        b.set(READY, ConditionStatus::Unknown, "Reconciling", "");
    }
    let connected = match observed {
        Ok(obs) => {
            connected_status(&mut b, obs);
            true
        }
        Err(failure) => {
            failed_status(&mut b, failure);
            false
        }
    };
    let requeue = requeue(&b.status, &input, connected);
    ClusterPlan {
        outcome: Outcome {
            status: b.status,
            events: b.events,
            requeue,
        },
        connected,
    }
}

fn connected_status(b: &mut Builder<'_>, obs: &ClusterObservation) {
    let previous = b.input.previous;
    let online = obs.cluster.nodes.iter().filter(|n| n.online).count();
    let total = obs.cluster.nodes.len();
    b.status.endpoint = Some(obs.endpoint.clone());
    b.status.version = Some(obs.version.clone());
    b.status.cluster_name = obs.cluster.cluster.as_ref().map(|c| c.name.clone());
    b.status.quorate = Some(obs.cluster.is_quorate());
    b.status.nodes_online = Some(format!("{online}/{total}"));
    b.status.nodes = obs
        .cluster
        .nodes
        .iter()
        .map(|n| NodeStatus {
            name: n.name.clone(),
            online: n.online,
            ip: n.ip.clone(),
            version: obs.node_versions.get(&n.name).cloned(),
        })
        .collect();

    let what = match &b.status.cluster_name {
        Some(name) => format!("cluster {name}"),
        None => "a standalone node".to_owned(),
    };
    let message = format!(
        "connected to {} (Proxmox VE {}, {what}, {online}/{total} nodes online)",
        obs.endpoint, obs.version
    );
    let changed = b
        .set(
            CONDITION_CONNECTED,
            ConditionStatus::True,
            reasons::CONNECTED,
            &message,
        )
        .is_news();
    if changed {
        b.events.push(PlannedEvent::normal(
            reasons::CONNECTED,
            reasons::ACTION_CONNECT,
            upper_first(&message),
        ));
    } else if let Some(before) = previous.endpoint.as_deref().filter(|e| *e != obs.endpoint) {
        b.events.push(PlannedEvent::warning(
            "EndpointFailover",
            reasons::ACTION_CONNECT,
            format!("{before} stopped answering; now using {}", obs.endpoint),
        ));
    }

    quorum(b, obs, online, total);
    node_transitions(b, previous);
    let missing = storages(b, obs);
    ready(b, &missing, online, total);
}

fn quorum(b: &mut Builder<'_>, obs: &ClusterObservation, online: usize, total: usize) {
    let (status, reason, message) = match &obs.cluster.cluster {
        None => (
            ConditionStatus::True,
            "Standalone",
            "a standalone node (no cluster) is always quorate".to_owned(),
        ),
        Some(c) if c.quorate => (
            ConditionStatus::True,
            "Quorate",
            format!("cluster {} has quorum ({online}/{total} nodes online)", c.name),
        ),
        Some(c) => (
            ConditionStatus::False,
            reasons::QUORUM_LOST,
            format!(
                "cluster {} has lost quorum ({online}/{total} nodes online): guests cannot be started, changed or \
                 backed up until enough nodes are back",
                c.name
            ),
        ),
    };
    let change = b.set(CONDITION_QUORATE, status, reason, &message);
    let (changed, existed) = (change.is_news(), change.existed());
    if changed && status == ConditionStatus::False {
        b.events.push(PlannedEvent::warning(
            reasons::QUORUM_LOST,
            reasons::ACTION_OBSERVE,
            upper_first(&message),
        ));
    } else if changed && existed && was_false(b.input.previous, CONDITION_QUORATE) {
        b.events.push(PlannedEvent::normal(
            "QuorumRegained",
            reasons::ACTION_OBSERVE,
            upper_first(&message),
        ));
    }
}

fn was_false(previous: &ProxmoxClusterStatus, type_: &str) -> bool {
    find_condition(&previous.conditions, type_).is_some_and(|c| c.status == ConditionStatus::False)
}

fn node_transitions(b: &mut Builder<'_>, previous: &ProxmoxClusterStatus) {
    if previous.nodes.is_empty() {
        return;
    }
    let mut events = Vec::new();
    for node in &b.status.nodes {
        let before = previous.nodes.iter().find(|n| n.name == node.name);
        match (before.map(|n| n.online), node.online) {
            (Some(true), false) => events.push(PlannedEvent::warning(
                "NodeOffline",
                reasons::ACTION_OBSERVE,
                format!("Node {} went offline; its guests' state is unknown", node.name),
            )),
            (Some(false), true) => events.push(PlannedEvent::normal(
                "NodeOnline",
                reasons::ACTION_OBSERVE,
                format!("Node {} is back online", node.name),
            )),
            (None, _) => events.push(PlannedEvent::normal(
                "NodeAdded",
                reasons::ACTION_OBSERVE,
                format!("Node {} joined the cluster", node.name),
            )),
            _ => {}
        }
    }
    for gone in previous
        .nodes
        .iter()
        .filter(|p| !b.status.nodes.iter().any(|n| n.name == p.name))
    {
        events.push(PlannedEvent::warning(
            "NodeRemoved",
            reasons::ACTION_OBSERVE,
            format!("Node {} is no longer a member of the cluster", gone.name),
        ));
    }
    b.events.extend(events);
}

/// Fills the storages; returns the declared storages the cluster does not have.
fn storages(b: &mut Builder<'_>, obs: &ClusterObservation) -> Vec<String> {
    let declared = &b.input.spec.storages;
    let to_status = |s: &super::observe::ObservedStorage| StorageStatus {
        name: s.name.clone(),
        type_: s.type_.clone(),
        shared: s.shared,
        nodes: s.active_nodes.clone(),
    };
    if declared.is_empty() {
        b.status.storages = obs.storages.iter().map(to_status).collect();
        return Vec::new();
    }
    b.status.storages = obs
        .storages
        .iter()
        .filter(|s| declared.iter().any(|d| d.name == s.name))
        .map(to_status)
        .collect();
    declared
        .iter()
        .filter(|d| !obs.storages.iter().any(|s| s.name == d.name))
        .map(|d| d.name.clone())
        .collect()
}

fn ready(b: &mut Builder<'_>, missing_storages: &[String], online: usize, total: usize) {
    let quorate = b.status.quorate == Some(true);
    let (status, reason, message) = if !quorate {
        (
            ConditionStatus::False,
            reasons::QUORUM_LOST.to_owned(),
            "the cluster has lost quorum".to_owned(),
        )
    } else if !missing_storages.is_empty() {
        (
            ConditionStatus::False,
            reasons::STORAGE_NOT_FOUND.to_owned(),
            format!(
                "spec.storages lists {} but the cluster has no such storage; fix the name or remove the entry",
                missing_storages.join(", ")
            ),
        )
    } else {
        (
            ConditionStatus::True,
            "Ready".to_owned(),
            format!("connected and quorate, {online}/{total} nodes online"),
        )
    };
    let changed = b.set(READY, status, &reason, &message).is_news();
    if changed && reason == reasons::STORAGE_NOT_FOUND {
        b.events.push(PlannedEvent::warning(
            reason,
            reasons::ACTION_OBSERVE,
            upper_first(&message),
        ));
    }
}

fn failed_status(b: &mut Builder<'_>, failure: &Failure) {
    let previous = b.input.previous;
    let (reason, message) = failure.describe(b.input.spec);
    // What was read before stays (inventory); what describes the live connection goes.
    b.status.version = previous.version.clone();
    b.status.cluster_name = previous.cluster_name.clone();
    b.status.storages = previous.storages.clone();
    let changed = b
        .set(CONDITION_CONNECTED, ConditionStatus::False, reason, &message)
        .is_news();
    if changed {
        b.events.push(PlannedEvent::warning(
            reason,
            reasons::ACTION_CONNECT,
            upper_first(&message),
        ));
    }
    b.set(
        CONDITION_QUORATE,
        ConditionStatus::Unknown,
        "NotConnected",
        "unknown while the cluster cannot be reached",
    );
    b.set(READY, ConditionStatus::False, reason, &message);
}

fn requeue(status: &ProxmoxClusterStatus, input: &PlanInput<'_>, connected: bool) -> Duration {
    let resync =
        Duration::from_secs(u64::try_from(input.spec.resync_interval_seconds.max(30)).unwrap_or(300));
    if connected {
        return resync.min(input.tuning.drift_check_max);
    }
    // Retry sooner while the outage is young, then back off: half the time since it began.
    let since =
        find_condition(&status.conditions, CONDITION_CONNECTED).map_or(input.now, |c| c.last_transition_time);
    let outage = elapsed(since, input.now);
    let max = input
        .tuning
        .reconnect_max
        .min(resync)
        .max(input.tuning.reconnect_min);
    (outage / 2).clamp(input.tuning.reconnect_min, max)
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
