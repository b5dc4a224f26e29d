//! Config-file helpers shared by guests and snapshots: which keys are volumes, sizes, and the
//! typed JSON the GET config endpoints return.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::guest::GuestKind;

/// Config keys the API returns as JSON numbers (from the GET config return schemas).
const QEMU_NUMERIC: &[&str] = &[
    "acpi",
    "allow-ksm",
    "autostart",
    "balloon",
    "ciupgrade",
    "cores",
    "cpulimit",
    "cpuunits",
    "freeze",
    "keephugepages",
    "kvm",
    "localtime",
    "migrate_downtime",
    "migrate_speed",
    "numa",
    "onboot",
    "protection",
    "reboot",
    "shares",
    "smp",
    "snaptime",
    "sockets",
    "tablet",
    "tdf",
    "template",
    "vcpus",
];
const LXC_NUMERIC: &[&str] = &[
    "console",
    "cores",
    "cpulimit",
    "cpuunits",
    "debug",
    "memory",
    "onboot",
    "protection",
    "swap",
    "template",
    "tty",
    "unprivileged",
];

/// Keys that hold volumes.
pub(crate) fn is_volume_key(kind: GuestKind, key: &str) -> bool {
    let stem = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let indexed = stem.len() < key.len();
    match kind {
        GuestKind::Qemu => {
            (indexed && matches!(stem, "scsi" | "virtio" | "sata" | "ide" | "unused"))
                || key == "efidisk0"
                || key == "tpmstate0"
        }
        GuestKind::Lxc => key == "rootfs" || (indexed && matches!(stem, "mp" | "unused")),
    }
}

/// Parses `1G`, `512M`, `32` (GiB when no unit, as PVE sizes disks) into bytes.
pub(crate) fn parse_size(text: &str) -> u64 {
    let (num, unit) = text.split_at(text.trim_end_matches(['K', 'M', 'G', 'T']).len());
    let n: f64 = num.parse().unwrap_or(0.0);
    let mult: f64 = match unit {
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    };
    (n * mult) as u64
}

/// Volumes of a config map.
pub(crate) fn volumes_of(
    kind: GuestKind,
    config: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (key, value) in config {
        if !is_volume_key(kind, key) || value.contains("media=cdrom") {
            continue;
        }
        let first = value.split(',').next().unwrap_or("");
        let volid = first
            .strip_prefix("file=")
            .or(first.strip_prefix("volume="))
            .unwrap_or(first);
        if let Some((storage, _)) = volid.split_once(':') {
            out.push((key.clone(), volid.to_string(), storage.to_string()));
        }
    }
    out
}

/// A config map as API JSON (numeric keys as numbers, raw `lxc.*` keys as pairs).
pub(crate) fn config_map_json(kind: GuestKind, config: &BTreeMap<String, String>) -> Map<String, Value> {
    let numeric = match kind {
        GuestKind::Qemu => QEMU_NUMERIC,
        GuestKind::Lxc => LXC_NUMERIC,
    };
    let mut map = Map::new();
    let mut raw_lxc = Vec::new();
    for (k, v) in config {
        if k.starts_with("lxc.") {
            raw_lxc.push(json!([k, v]));
            continue;
        }
        let value = if numeric.contains(&k.as_str()) {
            v.parse::<i64>()
                .map(Value::from)
                .or_else(|_| v.parse::<f64>().map(Value::from))
                .unwrap_or(json!(v))
        } else {
            json!(v)
        };
        map.insert(k.clone(), value);
    }
    if !raw_lxc.is_empty() {
        map.insert("lxc".into(), Value::Array(raw_lxc));
    }
    map
}
