//! Turns a [`SeedSpec`] into the simulated [`Cluster`], filling in the config keys a freshly
//! created guest would have (MACs, disks, `smbios1`, `vmgenid`...).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{AgentCommand, GuestSpec, SeedSpec};
use crate::pvesim::SimError;
use crate::pvesim::auth::{AclEntry, User};
use crate::pvesim::clock::DAY_SECS;
use crate::pvesim::state::disk::mix;
use crate::pvesim::state::guest::{smbios1, vmgenid};
use crate::pvesim::state::network::{default_interfaces, default_sdn};
use crate::pvesim::state::{
    AgentState, AptPackage, Cluster, Guest, GuestKind, HaResource, Networks, Node, Pool, Power, PseudoDisk,
    Snapshot, Storage,
};

/// The cluster, its users and the agent command table.
pub(crate) struct Built {
    pub(crate) cluster: Cluster,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) agent_commands: Vec<AgentCommand>,
}

fn apt(package: &str, version: &str, old: Option<&str>, title: &str, section: &str) -> AptPackage {
    AptPackage {
        package: package.into(),
        version: version.into(),
        old_version: old.map(str::to_string),
        title: title.into(),
        origin: "Proxmox".into(),
        section: section.into(),
    }
}

fn default_updates() -> Vec<AptPackage> {
    vec![
        apt(
            "proxmox-kernel-6.14",
            "6.14.11-5",
            Some("6.14.11-4"),
            "Latest Proxmox Kernel Image",
            "kernel",
        ),
        apt(
            "pve-qemu-kvm",
            "10.1.2-2",
            Some("10.1.2-1"),
            "Full virtualization on x86 hardware",
            "admin",
        ),
        apt(
            "libpve-common-perl",
            "9.0.12",
            Some("9.0.11"),
            "Proxmox VE base library",
            "perl",
        ),
    ]
}

fn installed(pve_version: &str, kernel: &str) -> Vec<AptPackage> {
    vec![
        apt(
            "proxmox-ve",
            "9.1.0",
            None,
            "Proxmox Virtual Environment",
            "admin",
        ),
        apt(
            "pve-manager",
            pve_version,
            None,
            "Proxmox Virtual Environment Management Tools",
            "admin",
        ),
        apt(
            &format!("proxmox-kernel-{kernel}-signed"),
            kernel.trim_end_matches("-pve"),
            None,
            "Proxmox Kernel Image (signed)",
            "kernel",
        ),
        apt("qemu-server", "9.0.23", None, "Qemu Server Tools", "admin"),
        apt(
            "pve-container",
            "6.0.13",
            None,
            "Proxmox VE Container management tool",
            "perl",
        ),
        apt(
            "pve-qemu-kvm",
            "10.1.2-1",
            None,
            "Full virtualization on x86 hardware",
            "admin",
        ),
    ]
}

fn err(path: &Path, reason: String) -> SimError {
    SimError::Seed {
        path: path.to_path_buf(),
        reason,
    }
}

fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Builds the cluster described by `spec` at simulated time `now`.
pub(crate) fn build_cluster(
    spec: &SeedSpec,
    path: &Path,
    now: i64,
    rng_seed: u64,
    dump_root: PathBuf,
) -> Result<Built, SimError> {
    if spec.nodes.is_empty() {
        return Err(err(path, "nodes: at least one node is required".into()));
    }
    let mut users = BTreeMap::new();
    for user in &spec.users {
        if !user.userid.contains('@') {
            return Err(err(
                path,
                format!("users: '{}' must be user@realm (e.g. root@pam)", user.userid),
            ));
        }
        let tokens = user
            .tokens
            .iter()
            .map(|t| (t.id.clone(), t.secret.clone()))
            .collect();
        let acl = |entries: &[super::AclSpec]| -> Vec<AclEntry> {
            entries
                .iter()
                .map(|a| AclEntry {
                    path: a.path.clone(),
                    privs: a.privs.clone(),
                    propagate: a.propagate,
                })
                .collect()
        };
        let token_acls = user
            .tokens
            .iter()
            .filter_map(|t| t.acl.as_deref().map(|a| (t.id.clone(), acl(a))))
            .collect();
        users.insert(
            user.userid.clone(),
            User {
                password: user.password.clone(),
                tokens,
                acl: user.acl.as_deref().map(acl),
                token_acls,
            },
        );
    }
    let mut nodes = BTreeMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        if !valid_node_name(&n.name) || nodes.contains_key(&n.name) {
            return Err(err(
                path,
                format!(
                    "nodes: '{}' is not a valid, unique node name (letters, digits, '-')",
                    n.name
                ),
            ));
        }
        nodes.insert(
            n.name.clone(),
            Node {
                name: n.name.clone(),
                nodeid: i as u32 + 1,
                ip: n.ip.clone().unwrap_or_else(|| format!("192.168.100.{}", 11 + i)),
                online: n.online,
                votes: n.votes,
                cpus: n.cpus,
                memory: n.memory_gib << 30,
                rootfs: 100 << 30,
                boot_time: now - 12 * 86_400 - i as i64 * 600,
                pve_version: n.pve_version.clone(),
                kernel: n.kernel.clone(),
                apt_updates: Vec::new(),
                apt_available: n.apt_updates.clone().unwrap_or_else(default_updates),
                apt_installed: installed(&n.pve_version, &n.kernel),
            },
        );
    }
    let mut storages = BTreeMap::new();
    for s in &spec.storages {
        if storages.contains_key(&s.id) {
            return Err(err(path, format!("storages: duplicate id '{}'", s.id)));
        }
        let default_shared = matches!(s.kind.as_str(), "nfs" | "cifs" | "cephfs" | "rbd" | "pbs");
        if let Some(bad) = s.nodes.iter().flatten().find(|n| !nodes.contains_key(*n)) {
            return Err(err(
                path,
                format!("storages: '{}' names unknown node '{bad}'", s.id),
            ));
        }
        storages.insert(
            s.id.clone(),
            Storage {
                id: s.id.clone(),
                kind: s.kind.clone(),
                content: s.content.clone(),
                shared: s.shared.unwrap_or(default_shared),
                nodes: s.nodes.clone(),
                path: s.path.clone().or_else(|| {
                    matches!(s.kind.as_str(), "dir" | "nfs" | "cifs" | "cephfs")
                        .then(|| format!("/mnt/pve/{}", s.id))
                }),
                total: s.total_gib << 30,
                prune_backups: s.prune_backups.clone(),
                datastore: s.datastore.clone(),
                server: s.server.clone(),
                avail_limit: None,
            },
        );
    }
    let mut cluster = Cluster {
        name: spec.cluster.clone(),
        local_node: spec.nodes[0].name.clone(),
        nodes,
        storages,
        guests: BTreeMap::new(),
        ha: BTreeMap::new(),
        pools: BTreeMap::new(),
        pbs_backups: Vec::new(),
        pbs: Default::default(),
        quorum_lost: false,
        dump_root,
        vzdump_defaults: spec.vzdump_defaults.clone(),
        network: networks(spec, path)?,
        rng: StdRng::seed_from_u64(rng_seed),
    };
    for g in &spec.guests {
        let guest = build_guest(&mut cluster, g, path, now, rng_seed)?;
        cluster.guests.insert(g.vmid, guest);
    }
    for ha in &spec.ha {
        let ok = ha.sid.split_once(':').and_then(|(t, id)| {
            let vmid: u32 = id.parse().ok()?;
            let g = cluster.guests.get(&vmid)?;
            (g.kind.ha_type() == t).then_some(())
        });
        if ok.is_none() {
            return Err(err(
                path,
                format!(
                    "ha: '{}' must be vm:<vmid> or ct:<vmid> of a seeded guest",
                    ha.sid
                ),
            ));
        }
        let mut options = BTreeMap::new();
        if let Some(group) = &ha.group {
            options.insert("group".into(), group.clone());
        }
        cluster.ha.insert(
            ha.sid.clone(),
            HaResource {
                sid: ha.sid.clone(),
                state: ha.state.clone(),
                options,
            },
        );
    }
    for pool in &spec.pools {
        if let Some(bad) = pool.members.iter().find(|m| !cluster.guests.contains_key(m)) {
            return Err(err(
                path,
                format!("pools: '{}' lists {bad}, which is not a seeded guest", pool.id),
            ));
        }
        let members = pool.members.iter().copied().collect();
        let comment = pool.comment.clone();
        cluster.pools.insert(pool.id.clone(), Pool { comment, members });
    }
    Ok(Built {
        cluster,
        users,
        agent_commands: spec.agent_commands.clone(),
    })
}

/// Node interfaces (given or the defaults) and the SDN configuration, checked for names.
fn networks(spec: &SeedSpec, path: &Path) -> Result<Networks, SimError> {
    let mut interfaces = BTreeMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let ip = n.ip.clone().unwrap_or_else(|| format!("192.168.100.{}", 11 + i));
        let list = n.network.clone().unwrap_or_else(|| default_interfaces(&ip));
        let mut seen = std::collections::BTreeSet::new();
        if let Some(bad) = list
            .iter()
            .find(|i| !(2..=20).contains(&i.iface.len()) || !seen.insert(i.iface.clone()))
        {
            return Err(err(
                path,
                format!(
                    "nodes: '{}' has an invalid or duplicate interface '{}'",
                    n.name, bad.iface
                ),
            ));
        }
        interfaces.insert(n.name.clone(), list);
    }
    let sdn = spec.sdn.clone().unwrap_or_else(default_sdn);
    for v in &sdn.vnets {
        if !sdn.zones.iter().any(|z| z.zone == v.zone) {
            return Err(err(
                path,
                format!("sdn: vnet '{}' names unknown zone '{}'", v.vnet, v.zone),
            ));
        }
    }
    Ok(Networks { interfaces, sdn })
}

fn build_guest(
    cluster: &mut Cluster,
    g: &GuestSpec,
    path: &Path,
    now: i64,
    rng_seed: u64,
) -> Result<Guest, SimError> {
    let kind = GuestKind::parse(&g.kind).ok_or_else(|| {
        err(
            path,
            format!("guests: vmid {} has type '{}', use qemu or lxc", g.vmid, g.kind),
        )
    })?;
    if !(100..=999_999_999).contains(&g.vmid) || cluster.guests.contains_key(&g.vmid) {
        return Err(err(
            path,
            format!(
                "guests: vmid {} is out of range (100..999999999) or duplicate",
                g.vmid
            ),
        ));
    }
    if !cluster.nodes.contains_key(&g.node) {
        return Err(err(
            path,
            format!("guests: vmid {} is on unknown node '{}'", g.vmid, g.node),
        ));
    }
    let storage = g.storage.clone().unwrap_or_else(|| "local-lvm".into());
    let needed = if kind == GuestKind::Qemu {
        "images"
    } else {
        "rootdir"
    };
    match cluster.storages.get(&storage) {
        Some(s) if s.has_content(needed) => {}
        _ => {
            return Err(err(
                path,
                format!(
                    "guests: vmid {} needs storage '{storage}' with content '{needed}'",
                    g.vmid
                ),
            ));
        }
    }
    let running = match g.status.as_str() {
        "running" => !g.template,
        "stopped" => false,
        other => {
            return Err(err(
                path,
                format!(
                    "guests: vmid {} has status '{other}', use running or stopped",
                    g.vmid
                ),
            ));
        }
    };
    let vmid = g.vmid;
    let name = g.name.clone().unwrap_or_else(|| format!("guest{vmid}"));
    let disk_gib = g.disk_gib.unwrap_or(if kind == GuestKind::Qemu { 32 } else { 8 });
    let prefix = if g.template { "base" } else { "vm" };
    let ip =
        g.ip.clone()
            .unwrap_or_else(|| format!("192.168.100.{}", vmid % 250 + 2));
    let mac = cluster.random_mac();
    let mut config: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        config.insert(k.to_string(), v);
    };
    match kind {
        GuestKind::Qemu => {
            set("name", name);
            set("memory", g.memory.unwrap_or(2048).to_string());
            set("cores", g.cores.unwrap_or(2).to_string());
            set("sockets", "1".into());
            set("cpu", "x86-64-v2-AES".into());
            set("ostype", "l26".into());
            set("scsihw", "virtio-scsi-single".into());
            set(
                "scsi0",
                format!("{storage}:{prefix}-{vmid}-disk-0,iothread=1,size={disk_gib}G"),
            );
            set("ide2", "none,media=cdrom".into());
            set("net0", format!("virtio={mac},bridge=vmbr0,firewall=1"));
            set("boot", "order=scsi0;ide2;net0".into());
            let seed = mix(rng_seed ^ u64::from(vmid));
            set("smbios1", smbios1(mix(seed)));
            set("vmgenid", vmgenid(mix(seed ^ 1)));
            set(
                "meta",
                format!("creation-qemu=10.1.2,ctime={}", now - 90 * DAY_SECS),
            );
            match g.agent.as_str() {
                "none" => {}
                "disabled" => set("agent", "0".into()),
                "running" | "not-running" => set("agent", "1".into()),
                other => {
                    return Err(err(
                        path,
                        format!(
                            "guests: vmid {vmid} has agent '{other}', use none, disabled, not-running or running"
                        ),
                    ));
                }
            }
        }
        GuestKind::Lxc => {
            set("hostname", name);
            set("memory", g.memory.unwrap_or(512).to_string());
            set("swap", "512".into());
            set("cores", g.cores.unwrap_or(1).to_string());
            set("ostype", "debian".into());
            set("arch", "amd64".into());
            set(
                "rootfs",
                format!("{storage}:{prefix}-{vmid}-disk-0,size={disk_gib}G"),
            );
            set(
                "net0",
                format!("name=eth0,bridge=vmbr0,gw=192.168.100.1,hwaddr={mac},ip={ip}/24,type=veth"),
            );
            set("unprivileged", "1".into());
            set("features", "nesting=1".into());
        }
    }
    if !g.tags.is_empty() {
        set("tags", g.tags.join(";"));
    }
    if g.template {
        set("template", "1".into());
    }
    for (k, v) in &g.config {
        set(k, v.clone());
    }
    let day = now.div_euclid(DAY_SECS);
    let disk = PseudoDisk::new(
        mix(rng_seed.rotate_left(7) ^ u64::from(vmid)),
        g.image_kib.max(4) * 1024,
        day - 60,
    );
    let mut guest = Guest {
        vmid,
        kind,
        node: g.node.clone(),
        config,
        snapshots: BTreeMap::new(),
        power: if running {
            Power::Running {
                since: now - 3 * DAY_SECS - i64::from(vmid % 97) * 60,
            }
        } else {
            Power::Stopped
        },
        agent: if g.agent == "running" {
            AgentState::Responding
        } else {
            AgentState::NotResponding
        },
        disk,
        exec: BTreeMap::new(),
        next_exec_pid: 1000 + vmid % 1000,
        ip: g.ip.clone(),
    };
    let count = g.snapshots.len() as i64;
    let mut parent: Option<String> = None;
    for (i, s) in g.snapshots.iter().enumerate() {
        let valid = crate::pvesim::schema::check_named("pve-configid", &s.name).is_ok() && s.name.len() <= 40;
        if !valid || guest.snapshots.contains_key(&s.name) || s.name == "current" {
            return Err(err(
                path,
                format!(
                    "guests: vmid {vmid} has an invalid, duplicate or reserved snapshot name '{}' (letters, digits, '-', '_'; 2 to 40 characters)",
                    s.name
                ),
            ));
        }
        let age = s.age_days.unwrap_or(count - i as i64);
        let snaptime = now - age * DAY_SECS;
        let mut snap_config = guest.config.clone();
        snap_config.remove("lock");
        match &parent {
            Some(p) => snap_config.insert("parent".into(), p.clone()),
            None => snap_config.remove("parent"),
        };
        guest.snapshots.insert(
            s.name.clone(),
            Snapshot {
                config: snap_config,
                description: s.description.clone(),
                snaptime,
                vmstate: s.vmstate && kind == GuestKind::Qemu,
                snapstate: None,
                disk: guest.disk.frozen(snaptime.div_euclid(DAY_SECS)),
            },
        );
        parent = Some(s.name.clone());
    }
    if let Some(p) = parent {
        guest.config.insert("parent".into(), p);
    }
    Ok(guest)
}

/// The IPv4 address a guest reports (agent / LXC interfaces).
pub(crate) fn guest_ip(guest: &Guest) -> String {
    if let Some(ip) = &guest.ip {
        return ip.clone();
    }
    if let Some(net0) = guest.config.get("net0")
        && let Some(ip) = net0.split(',').find_map(|p| p.strip_prefix("ip="))
        && ip.contains('.')
    {
        return ip.split('/').next().unwrap_or(ip).to_string();
    }
    format!("192.168.100.{}", guest.vmid % 250 + 2)
}
