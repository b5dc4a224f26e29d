//! `proxmox::Error`: one enum for everything the client can fail with, classified so that callers
//! can decide what to do without parsing messages.
//!
//! PVE reports errors in the HTTP reason phrase and in the body (`{"data":null,"message":"...\n"}`,
//! plus `"errors":{param: msg}` on parameter verification failures). Most failures are HTTP 500
//! whatever their cause, so [`Error::from_response`] also recognises the messages PVE's own code
//! produces: pve-guest-common `AbstractConfig::check_lock` dies with `"VM is locked (backup)"` /
//! `"CT is locked (snapshot)"`, `lock_file_full` with `"can't lock file '...' - got timeout"`, and
//! missing objects with `"... does not exist"` / `"no such ..."`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::auth::Redactor;

/// Result alias for the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a PVE call can fail with. Messages never contain a secret: texts that come from the
/// server pass through the client's redactor first.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is unusable (bad URL, CA PEM, fingerprint, token id...).
    #[error("invalid PVE client configuration: {field}: {message}")]
    Config {
        /// The configuration field at fault.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The caller asked for something the client refuses to send (checked before any request).
    #[error("invalid PVE request: {message}")]
    InvalidRequest {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// No connection could be made: the request was never sent. Fails over to the next endpoint.
    #[error("cannot connect to PVE at {endpoint}: {detail}")]
    Connect {
        /// The endpoint URL.
        endpoint: String,
        /// The underlying cause (e.g. `Connection refused`).
        detail: String,
    },
    /// The server's certificate was rejected. Never retried.
    #[error("TLS verification of {endpoint} failed: {detail}")]
    Tls {
        /// The endpoint URL.
        endpoint: String,
        /// The pinned SHA-256 fingerprint, when pinning was used.
        expected: Option<String>,
        /// The fingerprint of the certificate the server presented, when known.
        presented: Option<String>,
        /// What did not match.
        detail: String,
    },
    /// The connection failed after the request may have reached PVE: a POST must not be repeated
    /// blindly.
    #[error("transport error talking to PVE at {endpoint}: {detail}")]
    Transport {
        /// The endpoint URL.
        endpoint: String,
        /// The underlying cause.
        detail: String,
    },
    /// A request or a wait ran out of time.
    #[error("timed out: {what}")]
    Timeout {
        /// What timed out.
        what: String,
    },
    /// HTTP 401: bad or expired credentials.
    #[error("PVE rejected the credentials: {message}")]
    Unauthorized {
        /// PVE's message.
        message: String,
    },
    /// HTTP 403: the user or token lacks a privilege.
    #[error("PVE permission denied: {message}")]
    PermissionDenied {
        /// PVE's message, e.g. `Permission check failed (/vms/100, VM.PowerMgmt)`.
        message: String,
    },
    /// The guest, snapshot, volume, node... does not exist.
    #[error("not found in PVE: {message}")]
    NotFound {
        /// PVE's message.
        message: String,
    },
    /// HTTP 400 `Parameter verification failed.` with PVE's per-parameter messages.
    #[error("PVE rejected the parameters: {}", format_errors(errors))]
    ParameterVerification {
        /// PVE's overall message.
        message: String,
        /// Parameter name to PVE's message about it.
        errors: BTreeMap<String, String>,
    },
    /// The guest's config is locked by another operation (backup, snapshot, migrate...).
    #[error("guest is locked in PVE: {message}")]
    Locked {
        /// The lock name (`backup`, `snapshot`, ...), or `None` for a config file lock timeout.
        lock: Option<String>,
        /// PVE's message.
        message: String,
    },
    /// Any other HTTP error.
    #[error("PVE API error {status}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// PVE's message (reason phrase or body `message`).
        message: String,
    },
    /// A response did not have the expected shape.
    #[error("cannot decode PVE response of {what}: {detail}")]
    Decode {
        /// The call (`GET /cluster/resources`).
        what: String,
        /// The decoder's message.
        detail: String,
    },
    /// A PVE task ended with an error.
    #[error("PVE task {upid} failed: {exit_status}{}", last_line(log_tail))]
    TaskFailed {
        /// The task's UPID.
        upid: String,
        /// PVE's `exitstatus` (the text after `TASK ERROR: `).
        exit_status: String,
        /// The last lines of the task log.
        log_tail: Vec<String>,
    },
}

fn format_errors(errors: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (i, (k, v)) in errors.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(out, "{sep}{k}: {v}");
    }
    out
}

fn last_line(tail: &[String]) -> String {
    tail.iter()
        .rev()
        .find(|l| !l.starts_with("TASK ") && !l.trim().is_empty())
        .map(|l| format!(" (log: {l})"))
        .unwrap_or_default()
}

impl Error {
    /// A fixed PascalCase name for the kind of failure: used as condition reason, Event reason and
    /// metric label. Stable: it is API.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config { .. } => "InvalidConfig",
            Self::InvalidRequest { .. } => "InvalidRequest",
            Self::Connect { .. } => "ConnectFailed",
            Self::Tls { .. } => "TlsVerificationFailed",
            Self::Transport { .. } => "TransportError",
            Self::Timeout { .. } => "Timeout",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::PermissionDenied { .. } => "PermissionDenied",
            Self::NotFound { .. } => "NotFound",
            Self::ParameterVerification { .. } => "ParameterVerificationFailed",
            Self::Locked { .. } => "GuestLocked",
            Self::Api { .. } => "ApiError",
            Self::Decode { .. } => "DecodeFailed",
            Self::TaskFailed { .. } if self.is_locked() => "GuestLocked",
            Self::TaskFailed { .. } => "TaskFailed",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything: network trouble,
    /// timeouts, locks held by running tasks, 5xx (except 501) and 429.
    pub fn is_transient(&self) -> bool {
        if self.is_locked() {
            return true;
        }
        match self {
            Self::Connect { .. } | Self::Transport { .. } | Self::Timeout { .. } | Self::Locked { .. } => {
                true
            }
            Self::Api { status, .. } => is_retryable_status(*status),
            _ => false,
        }
    }

    /// Whether the guest was locked by another operation: a [`Error::Locked`] answer, or a task
    /// that failed on the lock. PVE checks the lock of task-based operations (snapshot, rollback,
    /// clone, migrate, vzdump, destroy...) inside the worker, so there the conflict arrives as a
    /// failed task (`exitstatus` `VM is locked (backup)`); the category is `GuestLocked` either way.
    pub fn is_locked(&self) -> bool {
        match self {
            Self::Locked { .. } => true,
            Self::TaskFailed { exit_status, .. } => guest_lock(exit_status).is_some(),
            _ => false,
        }
    }

    /// Whether PVE refused a config change because the `digest` no longer matches (someone else
    /// changed the config): re-read and try again.
    pub fn is_digest_mismatch(&self) -> bool {
        matches!(self, Self::Api { message, .. } if message.contains("detected modified configuration"))
    }

    /// Builds the error for a non-2xx response from its status, reason phrase and body.
    pub(crate) fn from_response(status: u16, reason: Option<&str>, body: &[u8], redactor: &Redactor) -> Self {
        #[derive(Deserialize, Default)]
        struct ErrorBody {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            errors: Option<BTreeMap<String, serde_json::Value>>,
        }
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let message = parsed
            .message
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .or_else(|| reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()))
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = redactor.redact(&message);
        let errors: BTreeMap<String, String> = parsed
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.trim().to_owned(),
                    other => other.to_string(),
                };
                (redactor.redact(&k), redactor.redact(&v))
            })
            .collect();
        classify(status, message, errors)
    }
}

/// 5xx except 501 (`Method ... not implemented`: will not change), and 429.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    (status >= 500 && status != 501) || status == 429
}

fn classify(status: u16, message: String, errors: BTreeMap<String, String>) -> Error {
    match status {
        400 if !errors.is_empty() => return Error::ParameterVerification { message, errors },
        401 => return Error::Unauthorized { message },
        403 => return Error::PermissionDenied { message },
        404 => return Error::NotFound { message },
        _ => {}
    }
    if let Some(lock) = guest_lock(&message) {
        return Error::Locked { lock, message };
    }
    if status == 500 && is_not_found_message(&message) {
        return Error::NotFound { message };
    }
    Error::Api { status, message }
}

/// Recognises PVE's lock messages (also in task log lines, e.g. vzdump's per-guest `ERROR:`
/// lines, whose job only ends with `job errors`). `Some(Some(lock))` for `VM is locked (backup)`,
/// `CT 101 is locked (snapshot)`, `... - VM is locked (migrate)`; `Some(None)` for a config file
/// lock timeout (`can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout`).
pub fn guest_lock(message: &str) -> Option<Option<String>> {
    if let Some(pos) = message.find(" is locked") {
        let before = message[..pos].trim_end();
        // The subject is `VM`/`CT`, optionally followed by the VMID.
        let subject = before.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end();
        if subject.ends_with("VM") || subject.ends_with("CT") {
            let rest = &message[pos + " is locked".len()..];
            let lock = rest
                .trim_start()
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .map(|(l, _)| l.trim().to_owned())
                .filter(|l| !l.is_empty());
            return Some(lock);
        }
    }
    if message.contains("can't lock file") && message.contains("got timeout") {
        return Some(None);
    }
    None
}

fn is_not_found_message(message: &str) -> bool {
    message.contains("does not exist") || message.starts_with("no such ") || message.contains(": no such ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, reason: &str, body: &str) -> Error {
        Error::from_response(status, Some(reason), body.as_bytes(), &Redactor::default())
    }

    #[test]
    fn error_parameter_verification_keeps_errors_map() {
        let e = err(
            400,
            "Parameter verification failed.",
            r#"{"data":null,"message":"Parameter verification failed.\n","errors":{"vmid":"VM 100 already exists\n","snapname":"invalid format - invalid configuration ID 'a b'\n"}}"#,
        );
        let Error::ParameterVerification { message, errors } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(message, "Parameter verification failed.");
        assert_eq!(errors["vmid"], "VM 100 already exists");
        assert_eq!(e.category(), "ParameterVerificationFailed");
        assert!(!e.is_transient());
        assert!(e.to_string().contains("vmid: VM 100 already exists"), "{e}");
    }

    #[test]
    fn error_auth_and_permission_statuses_are_classified() {
        let e = err(
            401,
            "authentication failure",
            r#"{"data":null,"message":"authentication failure\n"}"#,
        );
        assert!(
            matches!(e, Error::Unauthorized { .. }) && !e.is_transient(),
            "{e:?}"
        );
        let e = err(403, "Permission check failed (/vms/100, VM.PowerMgmt)", "");
        assert!(matches!(&e, Error::PermissionDenied { message } if message.contains("VM.PowerMgmt")));
        assert_eq!(e.category(), "PermissionDenied");
    }

    #[test]
    fn error_lock_messages_become_locked() {
        let cases = [
            ("VM is locked (backup)", Some("backup")),
            ("CT is locked (snapshot)", Some("snapshot")),
            ("VM 106 is locked (clone)", Some("clone")),
            (
                "unable to destroy VM 106: VM is locked (snapshot-delete)",
                Some("snapshot-delete"),
            ),
            (
                "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
                None,
            ),
        ];
        for (msg, lock) in cases {
            let body = format!(r#"{{"data":null,"message":"{msg}\n"}}"#);
            let e = err(500, msg, &body);
            let Error::Locked { lock: got, .. } = &e else {
                panic!("{msg}: {e:?}")
            };
            assert_eq!(got.as_deref(), lock, "{msg}");
            assert!(e.is_transient());
            assert_eq!(e.category(), "GuestLocked");
        }
        // Not a guest lock.
        assert!(matches!(err(500, "file is locked (x)", ""), Error::Api { .. }));
    }

    #[test]
    fn error_missing_objects_become_not_found() {
        for msg in [
            "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist",
            "snapshot 'ap-x' does not exist",
            "no such cluster node 'pve9'",
            "no such resource 'vm:100'",
        ] {
            assert!(matches!(err(500, msg, ""), Error::NotFound { .. }), "{msg}");
        }
    }

    #[test]
    fn error_other_statuses_keep_status_and_transience() {
        let e = err(
            500,
            "QEMU guest agent is not running",
            r#"{"message":"QEMU guest agent is not running\n","data":null}"#,
        );
        assert!(
            matches!(&e, Error::Api { status: 500, message } if message == "QEMU guest agent is not running")
        );
        assert!(e.is_transient());
        assert!(err(503, "Service Unavailable", "").is_transient());
        assert!(err(429, "Too Many Requests", "").is_transient());
        assert!(
            err(
                595,
                "Errors during connection establishment, proxy handshake: No route to host",
                ""
            )
            .is_transient()
        );
        let e = err(501, "Method 'GET /nodes/pve1/nothing' not implemented", "");
        assert!(!e.is_transient());
        assert!(e.to_string().contains("not implemented"));
        // Body without message: the reason phrase is the message.
        assert!(matches!(err(500, "boom", "not json"), Error::Api { message, .. } if message == "boom"));
    }

    #[test]
    fn error_digest_mismatch_is_detected() {
        let e = err(
            500,
            "detected modified configuration - file changed by other user? Try again.",
            "",
        );
        assert!(e.is_digest_mismatch());
        assert!(!err(500, "other", "").is_digest_mismatch());
    }

    #[test]
    fn error_task_failed_message_shows_last_log_line() {
        let e = Error::TaskFailed {
            upid: "UPID:pve1:00000001:00000002:00000003:vzdump:100:root@pam:".into(),
            exit_status: "job errors".into(),
            log_tail: vec![
                "ERROR: Backup of VM 100 failed - no space".into(),
                "TASK ERROR: job errors".into(),
            ],
        };
        assert!(
            e.to_string()
                .ends_with("job errors (log: ERROR: Backup of VM 100 failed - no space)"),
            "{e}"
        );
        assert_eq!(e.category(), "TaskFailed");
        assert!(!e.is_transient() && !e.is_locked());
        // A task-based operation that ran into a lock fails inside its task.
        let locked = Error::TaskFailed {
            upid: "UPID:pve1:00000001:00000002:00000003:qmsnapshot:100:root@pam:".into(),
            exit_status: "VM is locked (backup)".into(),
            log_tail: vec!["TASK ERROR: VM is locked (backup)".into()],
        };
        assert!(locked.is_locked() && locked.is_transient());
        assert_eq!(locked.category(), "GuestLocked");
    }
}
