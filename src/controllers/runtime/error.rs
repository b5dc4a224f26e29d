//! The error type of the controllers layer and the policy contract every reconcile error
//! follows: a fixed PascalCase `category()` (Event reason, condition reason, metric label) and
//! `is_transient()` (retry with backoff, or wait long for a human).

/// What the runtime needs to know about a reconcile error.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// A fixed PascalCase string naming what went wrong (`ClusterNotFound`, `StatusPatchFailed`).
    /// Used as the Warning Event's reason, the condition reason and the `category` metric label,
    /// so it must not contain data (names, ids, messages).
    fn category(&self) -> &'static str;

    /// True if retrying soon may succeed (API unreachable, conflict, guest locked): the object is
    /// retried with exponential backoff. False if a human must act (invalid spec, missing RBAC):
    /// the object is retried only after a long delay or when it changes.
    fn is_transient(&self) -> bool;
}

/// Errors of the controllers layer: the runtime's own failures plus the steps every controller
/// shares. Controllers add their own variants here as they land.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status subresource could not be patched.
    #[error("cannot update the status of {kind} {namespace}/{name}: {source}")]
    PatchStatus {
        /// Kind of the object.
        kind: String,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An Event could not be published.
    #[error("cannot publish Event {reason} for {kind} {namespace}/{name}: {source}")]
    PublishEvent {
        /// Reason of the Event.
        reason: String,
        /// Kind of the regarding object.
        kind: String,
        /// Namespace of the regarding object.
        namespace: String,
        /// Name of the regarding object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading an object the reconcile depends on (a Secret, the referenced ProxmoxCluster) failed.
    #[error("cannot read {kind} {namespace}/{name}: {source}")]
    ReadObject {
        /// Kind of the object.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing the objects of a kind the reconcile depends on (the Services a policy selects)
    /// failed.
    #[error("cannot list {kind} in namespace {namespace}: {source}")]
    ListObjects {
        /// Kind of the objects.
        kind: String,
        /// Their namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace or no name (only possible for objects not read from the API).
    #[error("the {kind} object has no {field}; only stored, namespaced objects can be reconciled")]
    MissingObjectKey {
        /// Kind of the object.
        kind: String,
        /// `metadata.namespace` or `metadata.name`.
        field: &'static str,
    },
    /// Adding or removing our finalizer failed.
    #[error("cannot {action} our finalizer: {source}")]
    Finalizer {
        /// `add` or `remove`.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Waiting for a CustomResourceDefinition to be established failed.
    #[error("cannot wait for CustomResourceDefinition {crd} to be established: {source}")]
    WaitForCrd {
        /// Name of the CRD (`<plural>.<group>`).
        crd: String,
        /// The watch error.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Reading or writing the leader election Lease failed in a way that cannot be retried.
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// This replica lost the leader lease: its controllers were stopped so that two replicas
    /// never act at once. The process exits non-zero and the pod restarts as a candidate.
    #[error("lost the leader election lease {namespace}/{name}: {reason}; controllers stopped")]
    LeadershipLost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// Why (another holder, or no renewal within the deadline).
        reason: String,
    },
    /// A controller stopped although no shutdown was requested.
    #[error("controller {controller} stopped unexpectedly")]
    ControllerStopped {
        /// Name of the controller.
        controller: String,
    },
}

/// True for API errors worth retrying soon: the API server was unreachable or overloaded, or a
/// write conflicted with another writer.
pub fn kube_error_is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500..=599),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Self::PatchStatus { .. } => "StatusPatchFailed",
            Self::PublishEvent { .. } => "EventPublishFailed",
            Self::ReadObject { .. } | Self::ListObjects { .. } => "ReadObjectFailed",
            Self::MissingObjectKey { .. } => "InvalidObject",
            Self::Finalizer { .. } => "FinalizerFailed",
            Self::WaitForCrd { .. } => "CrdNotEstablished",
            Self::Lease { .. } | Self::LeadershipLost { .. } => "LeaderElectionFailed",
            Self::ControllerStopped { .. } => "ControllerStopped",
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Self::PatchStatus { source, .. }
            | Self::PublishEvent { source, .. }
            | Self::ReadObject { source, .. }
            | Self::ListObjects { source, .. }
            | Self::Finalizer { source, .. }
            | Self::Lease { source, .. } => kube_error_is_transient(source),
            Self::WaitForCrd { .. } => true,
            Self::MissingObjectKey { .. } | Self::LeadershipLost { .. } | Self::ControllerStopped { .. } => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            reason: "r".into(),
            ..Default::default()
        }))
    }

    fn patch(code: u16) -> Error {
        Error::PatchStatus {
            kind: "Service".into(),
            namespace: "lab".into(),
            name: "nextcloud".into(),
            source: api_error(code),
        }
    }

    #[test]
    fn patch_status_conflict_or_server_error_is_transient() {
        for code in [409, 429, 500, 503, 504] {
            assert!(patch(code).is_transient(), "{code}");
        }
    }

    #[test]
    fn patch_status_forbidden_or_invalid_is_permanent() {
        for code in [400, 403, 404, 422] {
            assert!(!patch(code).is_transient(), "{code}");
        }
        assert_eq!(patch(403).category(), "StatusPatchFailed");
    }

    #[test]
    fn finalizer_failure_keeps_kube_transience() {
        let e = Error::Finalizer {
            action: "add",
            source: api_error(503),
        };
        assert_eq!(e.category(), "FinalizerFailed");
        assert!(e.is_transient());
    }

    #[test]
    fn leadership_lost_is_permanent_and_names_the_lease() {
        let e = Error::LeadershipLost {
            namespace: "ops".into(),
            name: "homelab-autopilot".into(),
            reason: "held by pod-b".into(),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("ops/homelab-autopilot"));
    }
}
