//! A simulated guest (QEMU VM or LXC container): its config file, snapshots, power state, guest
//! agent and pseudo-disk, rendered the way qemu-server and pve-container render them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub(crate) use super::config::{
    config_map_json, is_volume_key, parse_size, smbios1, vmgenid, volumes_of, with_mac,
};
use super::disk::{PseudoDisk, mix};
use crate::pvesim::http::pve_bool;

/// QEMU or LXC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GuestKind {
    /// A QEMU/KVM virtual machine (`qemu`).
    Qemu,
    /// An LXC container (`lxc`).
    Lxc,
}

impl GuestKind {
    /// `qemu` or `lxc` (API path segment, `/cluster/resources` type).
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }

    /// `VM` or `CT` (`guest_type()` in PVE messages).
    pub(crate) fn label(self) -> &'static str {
        match self {
            GuestKind::Qemu => "VM",
            GuestKind::Lxc => "CT",
        }
    }

    /// Parses `qemu` / `lxc`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "qemu" => Some(GuestKind::Qemu),
            "lxc" => Some(GuestKind::Lxc),
            _ => None,
        }
    }

    /// Task type prefix: `qm` or `vz`.
    pub(crate) fn task_prefix(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qm",
            GuestKind::Lxc => "vz",
        }
    }

    /// Directory of config files in `/etc/pve/nodes/<node>/`.
    pub(crate) fn config_dir(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu-server",
            GuestKind::Lxc => "lxc",
        }
    }

    /// Key holding the display name (`name` / `hostname`).
    pub(crate) fn name_key(self) -> &'static str {
        match self {
            GuestKind::Qemu => "name",
            GuestKind::Lxc => "hostname",
        }
    }

    /// HA resource type (`vm` / `ct`).
    pub(crate) fn ha_type(self) -> &'static str {
        match self {
            GuestKind::Qemu => "vm",
            GuestKind::Lxc => "ct",
        }
    }
}

/// Power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Not running.
    Stopped,
    /// Running since the given epoch second.
    Running {
        /// Start time.
        since: i64,
    },
    /// Started at `since`, currently paused (suspend-mode backup, `qm suspend`).
    Paused {
        /// Start time.
        since: i64,
    },
}

impl Power {
    /// Whether a process exists (running or paused).
    pub fn is_up(self) -> bool {
        !matches!(self, Power::Stopped)
    }
}

/// Whether the QEMU guest agent answers (it is only reachable when configured and running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// qemu-ga answers `guest-ping`.
    Responding,
    /// qemu-ga does not answer (not installed, crashed, or still booting).
    NotResponding,
}

/// One snapshot (`[name]` section of the config file).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The config at snapshot time (includes `parent`).
    pub config: BTreeMap<String, String>,
    /// Description (free text).
    pub description: String,
    /// Creation time (epoch seconds).
    pub snaptime: i64,
    /// Whether RAM was saved (qemu only).
    pub vmstate: bool,
    /// `prepare` / `delete` while a task works on it.
    pub snapstate: Option<String>,
    /// Disk content at snapshot time.
    pub disk: PseudoDisk,
}

impl Snapshot {
    /// The snapshot's config as the API returns it (`snaptime`, `description`, `vmstate`).
    pub(crate) fn config_json(&self, kind: GuestKind) -> Map<String, Value> {
        let mut map = config_map_json(kind, &self.config);
        map.insert("snaptime".into(), json!(self.snaptime));
        if !self.description.is_empty() {
            map.insert("description".into(), json!(self.description));
        }
        if self.vmstate {
            map.insert("vmstate".into(), json!(1));
        }
        map
    }
}

/// A guest-agent `exec` in progress or finished but not yet collected.
#[derive(Debug, Clone)]
pub struct ExecJob {
    /// When the command exits (real time; its simulated run time scaled by `time_scale`).
    pub ends_at: std::time::Instant,
    /// Exit code.
    pub exitcode: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A simulated VM or container.
#[derive(Debug, Clone)]
pub struct Guest {
    /// VMID.
    pub vmid: u32,
    /// QEMU or LXC.
    pub kind: GuestKind,
    /// Node whose `/etc/pve/nodes/<node>` holds the config.
    pub node: String,
    /// Current config keys (values are PVE property strings).
    pub config: BTreeMap<String, String>,
    /// Snapshots by name.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Power state.
    pub power: Power,
    /// Guest agent (qemu only; ignored for containers).
    pub agent: AgentState,
    /// The root disk's content.
    pub disk: PseudoDisk,
    /// Guest-agent exec jobs by pid.
    pub exec: BTreeMap<u32, ExecJob>,
    /// Next guest-agent pid.
    pub next_exec_pid: u32,
    /// IPv4 address the guest OS uses (reported by the agent; `None`: derived from the VMID).
    pub ip: Option<String>,
}

impl Guest {
    /// The display name (`name` or `hostname`), defaulting like PVE (`VM 100` / `CT100`).
    pub fn name(&self) -> String {
        self.config
            .get(self.kind.name_key())
            .cloned()
            .unwrap_or_else(|| match self.kind {
                GuestKind::Qemu => format!("VM {}", self.vmid),
                GuestKind::Lxc => format!("CT{}", self.vmid),
            })
    }

    /// The config lock (`backup`, `snapshot`, `clone`, `migrate`...).
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    /// Whether the guest is a template.
    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|t| t == "1")
    }

    /// Tags as configured (`;` separated).
    pub fn tags(&self) -> Option<&str> {
        self.config.get("tags").map(String::as_str)
    }

    /// `PVE::AbstractConfig::check_lock`: `VM is locked (backup)`.
    pub(crate) fn check_lock(&self) -> Result<(), String> {
        match self.lock() {
            Some(lock) => Err(format!("{} is locked ({lock})", self.kind.label())),
            None => Ok(()),
        }
    }

    /// `(config key, volid, storage id)` of every disk volume (CD-ROMs excluded).
    pub fn volumes(&self) -> Vec<(String, String, String)> {
        volumes_of(self.kind, &self.config)
    }

    /// Sum of configured disk sizes (`maxdisk`).
    pub fn maxdisk(&self) -> u64 {
        self.config
            .iter()
            .filter(|(k, _)| is_volume_key(self.kind, k) && !k.starts_with("unused"))
            .filter_map(|(_, v)| v.split(',').find_map(|p| p.strip_prefix("size=")).map(parse_size))
            .sum()
    }

    /// Configured memory in bytes.
    pub fn maxmem(&self) -> u64 {
        let mib = self
            .config
            .get("memory")
            .and_then(|m| {
                m.split(',').find_map(|p| {
                    p.strip_prefix("current=")
                        .or(Some(p).filter(|p| !p.contains('=')))
                })
            })
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(512);
        mib * 1024 * 1024
    }

    /// Configured vCPUs.
    pub fn cpus(&self) -> u64 {
        let cores = self
            .config
            .get("cores")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1u64);
        let sockets = self
            .config
            .get("sockets")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1u64);
        match self.kind {
            GuestKind::Qemu => cores * sockets,
            GuestKind::Lxc => cores,
        }
    }

    /// Seconds since start (0 when stopped).
    pub fn uptime(&self, now: i64) -> i64 {
        match self.power {
            Power::Running { since } | Power::Paused { since } => (now - since).max(0),
            Power::Stopped => 0,
        }
    }

    /// The config file text (`/etc/pve/.../<vmid>.conf`): description as `#` lines, sorted keys,
    /// then one `[snapname]` section per snapshot.
    pub fn config_text(&self) -> String {
        let mut text = String::new();
        if let Some(description) = self.config.get("description") {
            for line in description.lines() {
                text.push_str(&format!("#{line}\n"));
            }
        }
        for (k, v) in &self.config {
            if k != "description" {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        for (name, snap) in &self.snapshots {
            text.push_str(&format!("\n[{name}]\n"));
            if !snap.description.is_empty() {
                for line in snap.description.lines() {
                    text.push_str(&format!("#{line}\n"));
                }
            }
            for (k, v) in &snap.config {
                if k != "description" {
                    text.push_str(&format!("{k}: {v}\n"));
                }
            }
            if let Some(state) = &snap.snapstate {
                text.push_str(&format!("snapstate: {state}\n"));
            }
            text.push_str(&format!("snaptime: {}\n", snap.snaptime));
            if snap.vmstate {
                text.push_str("vmstate: 1\n");
            }
        }
        text
    }

    /// SHA digest of the config file (40 hex characters, like PVE's SHA-1 digests).
    pub fn digest(&self) -> String {
        let digest = Sha256::digest(self.config_text().as_bytes());
        digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
    }

    /// `GET .../config`: typed values plus `digest`.
    pub fn config_json(&self) -> Value {
        let mut map = config_map_json(self.kind, &self.config);
        map.insert("digest".into(), json!(self.digest()));
        Value::Object(map)
    }

    /// A deterministic per-guest number in `0..modulo` (for plausible usage figures).
    pub(crate) fn jitter(&self, salt: u64, modulo: u64) -> u64 {
        mix(u64::from(self.vmid) ^ salt.rotate_left(13)) % modulo.max(1)
    }

    /// Status fields shared by list rows, `status/current` and `/cluster/resources`.
    pub(crate) fn usage_fields(&self, now: i64, map: &mut Map<String, Value>) {
        let up = self.power.is_up();
        let uptime = self.uptime(now) as u64;
        let maxmem = self.maxmem();
        map.insert("status".into(), json!(if up { "running" } else { "stopped" }));
        map.insert("name".into(), json!(self.name()));
        map.insert("uptime".into(), json!(uptime));
        map.insert("maxmem".into(), json!(maxmem));
        map.insert(
            "mem".into(),
            json!(if up {
                maxmem / 100 * (30 + self.jitter(1, 30))
            } else {
                0
            }),
        );
        map.insert("maxdisk".into(), json!(self.maxdisk()));
        let disk = if self.kind == GuestKind::Lxc && up {
            self.maxdisk() / 100 * (20 + self.jitter(2, 40))
        } else {
            0
        };
        map.insert("disk".into(), json!(disk));
        map.insert("cpus".into(), json!(self.cpus()));
        map.insert(
            "cpu".into(),
            json!(if up {
                (1 + self.jitter(3, 40)) as f64 / 1000.0
            } else {
                0.0
            }),
        );
        map.insert("netin".into(), json!(uptime * (1000 + self.jitter(4, 9000))));
        map.insert("netout".into(), json!(uptime * (500 + self.jitter(5, 4000))));
        map.insert("diskread".into(), json!(uptime * (2000 + self.jitter(6, 20000))));
        map.insert("diskwrite".into(), json!(uptime * (1000 + self.jitter(7, 10000))));
        if let Some(lock) = self.lock() {
            map.insert("lock".into(), json!(lock));
        }
        if let Some(tags) = self.tags() {
            map.insert("tags".into(), json!(tags));
        }
        if self.is_template() {
            map.insert("template".into(), pve_bool(true));
        }
        if up && self.kind == GuestKind::Qemu {
            map.insert("pid".into(), json!(10_000 + self.vmid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Guest {
        let mut config = BTreeMap::new();
        config.insert("name".to_string(), "web".to_string());
        config.insert("cores".to_string(), "2".to_string());
        config.insert("memory".to_string(), "2048".to_string());
        config.insert(
            "scsi0".to_string(),
            "local-lvm:vm-100-disk-0,size=32G".to_string(),
        );
        config.insert("ide2".to_string(), "local:iso/debian.iso,media=cdrom".to_string());
        Guest {
            vmid: 100,
            kind: GuestKind::Qemu,
            node: "pve1".into(),
            config,
            snapshots: BTreeMap::new(),
            power: Power::Stopped,
            agent: AgentState::NotResponding,
            disk: PseudoDisk::new(1, 4096, 0),
            exec: BTreeMap::new(),
            next_exec_pid: 1,
            ip: None,
        }
    }

    #[test]
    fn guest_config_json_types_numbers_and_digest_changes_with_config() {
        let mut g = guest();
        let json = g.config_json();
        assert_eq!(json["cores"], json!(2));
        assert_eq!(json["memory"], json!("2048"));
        assert_eq!(json["digest"].as_str().map(str::len), Some(40));
        let before = g.digest();
        g.config.insert("lock".into(), "backup".into());
        assert_ne!(g.digest(), before);
        assert_eq!(g.check_lock(), Err("VM is locked (backup)".to_string()));
    }

    #[test]
    fn guest_volumes_skip_cdrom_and_sizes_parse() {
        let g = guest();
        assert_eq!(
            g.volumes(),
            vec![(
                "scsi0".into(),
                "local-lvm:vm-100-disk-0".into(),
                "local-lvm".into()
            )]
        );
        assert_eq!(g.maxdisk(), 32 * 1024 * 1024 * 1024);
        assert_eq!(g.maxmem(), 2048 * 1024 * 1024);
        assert_eq!(parse_size("512M"), 512 * 1024 * 1024);
    }
}
