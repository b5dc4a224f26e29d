//! Config of created and restored guests: qemu-server's `restore_merge_config` (given options
//! win over the backup, `unique` renews MACs and the SMBIOS UUID) and pve-container's
//! `sanitize_and_merge_config` (backed-up keys fill in what was not given; with `unique` the
//! backed-up NICs win with new MACs).

use std::collections::BTreeMap;

use super::config::prepare_value;
use crate::pvesim::http::{Params, value_text};
use crate::pvesim::state::guest::{is_volume_key, smbios1, vmgenid, with_mac};
use crate::pvesim::state::{Cluster, GuestKind};

/// Parameters of the create/restore calls that are not config keys.
const NOT_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "archive",
    "storage",
    "force",
    "unique",
    "bwlimit",
    "live-restore",
    "pool",
    "start",
    "ha-managed",
    "ostemplate",
    "restore",
    "ignore-unpack-errors",
    "password",
    "ssh-public-keys",
    "import-working-storage",
];

/// Parses `key: value` lines (`#` lines are the description).
pub(crate) fn parse_config_text(text: &str) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    let mut description = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            break; // snapshot sections are not restored
        }
        if let Some(d) = line.strip_prefix('#') {
            description.push(d.to_string());
        } else if let Some((k, v)) = line.split_once(':') {
            config.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    if !description.is_empty() {
        config.insert("description".into(), description.join("\n"));
    }
    config
}

fn given(params: &Params) -> BTreeMap<String, String> {
    params
        .keys()
        .filter(|k| !NOT_CONFIG.contains(&k.as_str()))
        .filter_map(|k| params.get(k).and_then(value_text).map(|v| (k.clone(), v)))
        .collect()
}

/// The config keys given with a create/restore call (sorted), what qemu-server passes on as
/// `override_conf`.
pub(crate) fn override_keys(params: &Params) -> Vec<String> {
    given(params).into_keys().collect()
}

/// The config of a restored guest plus `(old volid, new volid)` of every disk.
pub(crate) fn merge_config(
    cluster: &mut Cluster,
    kind: GuestKind,
    vmid: u32,
    backup_text: &str,
    storage: Option<&str>,
    unique: bool,
    params: &Params,
) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let backed = parse_config_text(backup_text);
    let mut given = given(params);
    let mut config: BTreeMap<String, String> = BTreeMap::new();
    let mut renames = Vec::new();
    let mut disk = 0;
    for (key, value) in &backed {
        if matches!(key.as_str(), "lock" | "parent" | "snapstate" | "vmstate") || key.starts_with("unused") {
            continue;
        }
        if is_volume_key(kind, key) && !value.contains("media=cdrom") {
            if kind == GuestKind::Lxc && key.starts_with("mp") {
                continue;
            }
            let mut parts: Vec<String> = value.split(',').map(str::to_string).collect();
            let old = parts[0].clone();
            let old_storage = old.split(':').next().unwrap_or("local-lvm").to_string();
            let target = storage.map(str::to_string).unwrap_or(old_storage);
            parts[0] = format!("{target}:vm-{vmid}-disk-{disk}");
            disk += 1;
            renames.push((old, parts[0].clone()));
            config.insert(key.clone(), parts.join(","));
            continue;
        }
        config.insert(key.clone(), value.clone());
    }
    match kind {
        GuestKind::Qemu => {
            for (k, v) in given.iter_mut() {
                let _ = prepare_value(cluster, kind, vmid, k, v);
            }
            config.extend(given);
            let nets: Vec<String> = config.keys().filter(|k| k.starts_with("net")).cloned().collect();
            if unique {
                for key in nets {
                    let mac = cluster.random_mac();
                    if let Some(v) = config.get_mut(&key) {
                        *v = with_mac(v, kind, &mac);
                    }
                }
                let seed = cluster.fresh_seed();
                config.insert("smbios1".into(), smbios1(seed));
            }
            let seed = cluster.fresh_seed();
            config.insert("vmgenid".into(), vmgenid(seed));
        }
        GuestKind::Lxc => {
            for (k, v) in given.iter_mut() {
                let _ = prepare_value(cluster, kind, vmid, k, v);
            }
            let backed_nets: Vec<(String, String)> = config
                .iter()
                .filter(|(k, _)| k.starts_with("net"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in given {
                config.insert(k, v);
            }
            if unique {
                for (key, value) in backed_nets {
                    let mac = cluster.random_mac();
                    config.insert(key, with_mac(&value, kind, &mac));
                }
            }
        }
    }
    config.remove("template");
    (config, renames)
}

/// The config of a newly created guest.
pub(crate) fn new_guest_config(
    cluster: &mut Cluster,
    kind: GuestKind,
    vmid: u32,
    params: &Params,
    _storage: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let mut config = given(params);
    for (k, v) in config.iter_mut() {
        prepare_value(cluster, kind, vmid, k, v).map_err(|e| e.message.trim_end().to_string())?;
    }
    let seed = cluster.fresh_seed();
    match kind {
        GuestKind::Qemu => {
            config.entry("smbios1".into()).or_insert_with(|| smbios1(seed));
            config
                .entry("vmgenid".into())
                .or_insert_with(|| vmgenid(seed ^ 1));
        }
        GuestKind::Lxc => {
            config
                .entry("hostname".into())
                .or_insert_with(|| format!("CT{vmid}"));
            config.entry("arch".into()).or_insert_with(|| "amd64".into());
            let ostype = params.str("ostemplate").and_then(|t| {
                t.split('/')
                    .nth(1)
                    .and_then(|n| n.split(['-', '_']).next())
                    .map(str::to_string)
            });
            config
                .entry("ostype".into())
                .or_insert_with(|| ostype.unwrap_or_else(|| "debian".into()));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_config_text_reads_keys_description_and_stops_at_snapshots() {
        let c = parse_config_text(
            "#hello\nname: web\nscsi0: local-lvm:vm-100-disk-0,size=8G\n\n[snap]\nname: old\n",
        );
        assert_eq!(c.get("name").map(String::as_str), Some("web"));
        assert_eq!(c.get("description").map(String::as_str), Some("hello"));
        assert_eq!(c.len(), 3);
    }
}
