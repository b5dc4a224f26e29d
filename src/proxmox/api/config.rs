//! Guest config: read (with its `digest`) and update (optionally guarded by the digest, PVE's
//! optimistic concurrency).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::guest_call;
use crate::proxmox::client::PveClient;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::types::{GuestRef, SnapshotName};

/// `GET .../config`: a flat map of config keys to values (mostly property strings like
/// `virtio=BC:24:11:..,bridge=vmbr0`), plus the `digest` to pass back on update.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestConfig {
    /// SHA-1 of the config file; pass it in [`ConfigUpdate::digest`] to update only if unchanged.
    pub digest: String,
    /// Every other key, as PVE sent it (numbers stay numbers; LXC raw `lxc` entries are arrays).
    pub values: BTreeMap<String, Value>,
}

impl<'de> Deserialize<'de> for GuestConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut values = BTreeMap::<String, Value>::deserialize(d)?;
        let digest = match values.remove("digest") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        Ok(Self { digest, values })
    }
}

impl GuestConfig {
    /// A key's value as text (numbers and booleans in their decimal form).
    pub fn get(&self, key: &str) -> Option<String> {
        match self.values.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(u8::from(*b).to_string()),
            _ => None,
        }
    }

    /// The guest's name (`name` for QEMU, `hostname` for LXC).
    pub fn name(&self) -> Option<String> {
        self.get("name").or_else(|| self.get("hostname"))
    }

    /// The config lock (`backup`, `snapshot`, ...), if any.
    pub fn lock(&self) -> Option<String> {
        self.get("lock")
    }

    /// The snapshot the current state derives from.
    pub fn parent(&self) -> Option<String> {
        self.get("parent")
    }

    /// The description (notes), where our ownership marker lives.
    pub fn description(&self) -> Option<String> {
        self.get("description")
    }

    /// Tags, split on PVE's separators (`;`, `,`, space), empty ones dropped.
    pub fn tags(&self) -> Vec<String> {
        self.get("tags")
            .unwrap_or_default()
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A config change for `PUT .../config` (synchronous).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigUpdate {
    /// Keys to set (`net0`, `memory`, `description`, `tags`...).
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    pub delete: Vec<String>,
    /// Apply only if the config still has this digest (from [`GuestConfig::digest`]); on mismatch
    /// the error satisfies [`Error::is_digest_mismatch`]. With a digest the call is never retried.
    pub digest: Option<String>,
}

impl PveClient {
    /// `GET .../config` (pending changes applied, as PVE does by default).
    pub async fn guest_config(&self, guest: &GuestRef) -> Result<GuestConfig> {
        self.run(guest_call(guest, ops::QEMU_CONFIG, ops::LXC_CONFIG, &[]))
            .await
    }

    /// `GET .../config?snapshot=NAME`: the config as it was in a snapshot.
    pub async fn guest_config_at(&self, guest: &GuestRef, snapshot: &SnapshotName) -> Result<GuestConfig> {
        self.run(guest_call(guest, ops::QEMU_CONFIG, ops::LXC_CONFIG, &[]).arg("snapshot", snapshot))
            .await
    }

    /// `PUT .../config`.
    pub async fn update_config(&self, guest: &GuestRef, update: &ConfigUpdate) -> Result<()> {
        if update.set.is_empty() && update.delete.is_empty() {
            return Err(Error::InvalidRequest {
                message: "config update sets and deletes nothing".into(),
            });
        }
        if let Some(k) = update.delete.iter().find(|k| update.set.contains_key(*k)) {
            return Err(Error::InvalidRequest {
                message: format!("config key {k:?} is both set and deleted"),
            });
        }
        if let Some(k) = update
            .delete
            .iter()
            .find(|k| k.is_empty() || k.contains([',', ';', ' ']))
        {
            return Err(Error::InvalidRequest {
                message: format!("cannot delete config key {k:?}"),
            });
        }
        let mut call = guest_call(guest, ops::QEMU_CONFIG_UPDATE, ops::LXC_CONFIG_UPDATE, &[])
            .config_keys(&update.set)
            .opt(
                "delete",
                (!update.delete.is_empty()).then(|| update.delete.join(",")),
            )
            .opt("digest", update.digest.as_deref());
        if update.digest.is_some() {
            call = call.not_idempotent();
        }
        self.run::<Option<Value>>(call).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_config_splits_digest_and_reads_values() {
        let c: GuestConfig = serde_json::from_str(
            r#"{"name":"web","memory":2048,"digest":"abc","tags":"autopilot;web","agent":"1","onboot":1}"#,
        )
        .unwrap();
        assert_eq!(c.digest, "abc");
        assert!(!c.values.contains_key("digest"));
        assert_eq!(c.name().as_deref(), Some("web"));
        assert_eq!(c.get("memory").as_deref(), Some("2048"));
        assert_eq!(c.tags(), vec!["autopilot", "web"]);
        assert_eq!(c.lock(), None);
    }
}
