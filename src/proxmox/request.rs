//! Building one request: the concrete path (each segment percent-encoded: volids contain `:` and
//! `/`, UPIDs `!` and `@`), and the parameters, form-encoded the way PVE expects (booleans as
//! `0`/`1`, arrays as repeated keys). Parameters are checked against the operation's inventory
//! entry so that nothing unlisted is ever sent.

use std::fmt::Display;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::error::Error;
use super::ops::Operation;

/// Everything except RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Fills the `{placeholders}` of `template` with `segments`, in order, percent-encoded.
fn fill_path(template: &str, segments: &[&str]) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    let mut values = segments.iter();
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c);
        let (Some(close), Some(value)) = (close, values.next()) else {
            return Err(path_mismatch(template, segments.len()));
        };
        if value.is_empty() {
            return Err(Error::InvalidRequest {
                message: format!("{} in {template} must not be empty", &rest[open..=close]),
            });
        }
        out.push_str(&rest[..open]);
        out.extend(utf8_percent_encode(value, SEGMENT));
        rest = &rest[close + 1..];
    }
    if values.next().is_some() {
        return Err(path_mismatch(template, segments.len()));
    }
    out.push_str(rest);
    Ok(out)
}

fn path_mismatch(template: &str, n: usize) -> Error {
    Error::InvalidRequest {
        message: format!("{template} was given {n} path segments"),
    }
}

/// Config keys look like `net0`, `memory`, `ha-managed`: lowercase, digits, `-`, `_`.
fn is_config_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// One call to make: operation, concrete path, parameters.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) op: Operation,
    pub(crate) path: String,
    pub(crate) params: Vec<(String, String)>,
    /// Whether it may be retried after an ambiguous failure (from the operation, can be lowered).
    pub(crate) idempotent: bool,
    /// The response carries credentials (login): keep its body out of errors.
    pub(crate) sensitive_response: bool,
    /// Send the auth headers (everything except the login itself).
    pub(crate) authenticated: bool,
    error: Option<Error>,
}

impl Call {
    /// A call of `op` with its path placeholders filled from `segments`.
    pub(crate) fn new(op: Operation, segments: &[&str]) -> Self {
        let (path, error) = match fill_path(op.path_template, segments) {
            Ok(p) => (p, None),
            Err(e) => (String::new(), Some(e)),
        };
        Self {
            op,
            path,
            params: Vec::new(),
            idempotent: op.idempotent,
            sensitive_response: false,
            authenticated: true,
            error,
        }
    }

    fn push(&mut self, key: &str, value: String) {
        if self.error.is_some() {
            return;
        }
        if !self.op.params.contains(&key) {
            self.error = Some(Error::InvalidRequest {
                message: format!("parameter {key:?} is not in the inventory of {}", self.op),
            });
            return;
        }
        self.params.push((key.to_owned(), value));
    }

    /// Adds a parameter.
    pub(crate) fn arg(mut self, key: &str, value: impl Display) -> Self {
        self.push(key, value.to_string());
        self
    }

    /// Adds a parameter when set.
    pub(crate) fn opt(self, key: &str, value: Option<impl Display>) -> Self {
        match value {
            Some(v) => self.arg(key, v),
            None => self,
        }
    }

    /// Adds a boolean as `1`/`0`.
    pub(crate) fn flag(self, key: &str, value: bool) -> Self {
        self.arg(key, u8::from(value))
    }

    /// Adds a boolean as `1`/`0` when set.
    pub(crate) fn opt_flag(self, key: &str, value: Option<bool>) -> Self {
        self.opt(key, value.map(u8::from))
    }

    /// Adds an array parameter as repeated keys (`command=ls&command=-l`).
    pub(crate) fn array<S: AsRef<str>>(mut self, key: &str, values: &[S]) -> Self {
        for v in values {
            self.push(key, v.as_ref().to_owned());
        }
        self
    }

    /// Adds guest config keys given by the caller (`net0`, `memory`, ...), for operations that take
    /// them. Keys the operation has as named parameters must go through their typed field instead.
    pub(crate) fn config_keys<'a>(
        mut self,
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        for (k, v) in entries {
            if self.error.is_some() {
                break;
            }
            let reserved = self.op.params.contains(&k.as_str()) || matches!(k.as_str(), "node" | "vmid");
            if !self.op.config_keys || !is_config_key(k) || reserved {
                self.error = Some(Error::InvalidRequest {
                    message: format!(
                        "{k:?} cannot be passed as a config key to {}: use lowercase config keys like `net0` \
                         and the typed fields for the operation's own parameters",
                        self.op
                    ),
                });
                break;
            }
            self.params.push((k.clone(), v.clone()));
        }
        self
    }

    /// Marks the call as not safe to repeat (e.g. a config update guarded by a digest).
    pub(crate) fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// The first problem found while building, if any.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxmox::ops;

    #[test]
    fn path_segments_are_percent_encoded() {
        let c = Call::new(
            ops::STORAGE_VOLUME_DELETE,
            &["pve1", "local", "local:backup/vzdump-qemu-100-x.vma.zst"],
        );
        assert_eq!(
            c.path,
            "/nodes/pve1/storage/local/content/local%3Abackup%2Fvzdump-qemu-100-x.vma.zst"
        );
        let c = Call::new(
            ops::TASK_STATUS,
            &[
                "pve1",
                "UPID:pve1:0000000A:0000000B:0000000C:vzdump:100:ap@pve!op:",
            ],
        );
        assert_eq!(
            c.path,
            "/nodes/pve1/tasks/UPID%3Apve1%3A0000000A%3A0000000B%3A0000000C%3Avzdump%3A100%3Aap%40pve%21op%3A/status"
        );
    }

    #[test]
    fn path_with_wrong_segment_count_or_empty_segment_is_refused() {
        assert!(Call::new(ops::NODE_STATUS, &[]).take_error().is_some());
        assert!(Call::new(ops::NODE_STATUS, &["a", "b"]).take_error().is_some());
        assert!(Call::new(ops::NODE_STATUS, &[""]).take_error().is_some());
        assert!(Call::new(ops::VERSION, &[]).take_error().is_none());
    }

    #[test]
    fn params_encode_booleans_and_arrays_and_check_inventory() {
        let mut c = Call::new(ops::AGENT_EXEC, &["pve1", "100"])
            .array("command", &["ls", "-l"])
            .opt("input-data", None::<&str>);
        assert!(c.take_error().is_none());
        assert_eq!(
            c.params,
            vec![("command".into(), "ls".into()), ("command".into(), "-l".into())]
        );
        let mut c = Call::new(ops::QEMU_CLONE, &["pve1", "100"])
            .arg("newid", 200)
            .flag("full", true)
            .opt_flag("x", None);
        assert!(c.take_error().is_none());
        assert_eq!(c.params[1], ("full".into(), "1".into()));
        let mut c = Call::new(ops::QEMU_CLONE, &["pve1", "100"]).flag("fulll", false);
        let e = c.take_error().unwrap();
        assert!(e.to_string().contains("\"fulll\""), "{e}");
    }

    #[test]
    fn config_keys_only_where_allowed_and_well_formed() {
        let entries = |k: &str| vec![(k.to_owned(), "v".to_owned())];
        let mut ok = Call::new(ops::QEMU_CONFIG_UPDATE, &["pve1", "100"]);
        ok = ok.config_keys(entries("net0").iter().map(|(k, v)| (k, v)));
        assert!(ok.take_error().is_none());
        for bad in ["Net0", "net 0", "digest", "vmid", "node", ""] {
            let e = entries(bad);
            let mut c = Call::new(ops::QEMU_CONFIG_UPDATE, &["pve1", "100"])
                .config_keys(e.iter().map(|(k, v)| (k, v)));
            assert!(c.take_error().is_some(), "{bad:?}");
        }
        let e = entries("memory");
        let mut c = Call::new(ops::QEMU_STATUS, &["pve1", "100"]).config_keys(e.iter().map(|(k, v)| (k, v)));
        assert!(c.take_error().is_some());
    }
}
