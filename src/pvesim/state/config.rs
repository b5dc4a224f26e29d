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

/// A NIC property string with its MAC replaced (`virtio=...`/`macaddr=` for VMs, `hwaddr=`
/// for containers), as clone and `unique` restores do.
pub(crate) fn with_mac(value: &str, kind: GuestKind, mac: &str) -> String {
    let parts: Vec<String> = value
        .split(',')
        .enumerate()
        .map(|(i, p)| match kind {
            GuestKind::Lxc if p.starts_with("hwaddr=") => format!("hwaddr={mac}"),
            GuestKind::Qemu if i == 0 && p.contains('=') => {
                format!("{}={mac}", p.split('=').next().unwrap_or("virtio"))
            }
            GuestKind::Qemu if p.starts_with("macaddr=") => format!("macaddr={mac}"),
            _ => p.to_string(),
        })
        .collect();
    parts.join(",")
}

/// `smbios1: uuid=...` from a seed.
pub(crate) fn smbios1(seed: u64) -> String {
    format!(
        "uuid={:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        seed as u32,
        (seed >> 32) as u16,
        (seed >> 48) & 0xfff,
        seed & 0xfff,
        (seed >> 16) & 0xffff_ffff_ffff
    )
}

/// A `vmgenid` UUID from a seed.
pub(crate) fn vmgenid(seed: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        (seed >> 7) as u32,
        (seed >> 20) & 0xffff_ffff_ffff
    )
}
