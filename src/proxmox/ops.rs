//! The operations inventory: every `(method, path template)` the client can call, with the
//! parameter names it sends. Every request goes through one of these constants, so [`ALL`] is
//! complete by construction; a unit test checks it against `pve-apischema.json`, the request
//! builder refuses a parameter that is not listed here, and the schema walk in `tests/api` calls
//! every operation against the schema-validating simulator, proving each listed parameter is
//! actually sent and accepted (so list only what the client can send).

use std::fmt;

/// HTTP method of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method name as in the schema (`GET`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }

    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API operation the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// HTTP method.
    pub method: Method,
    /// Path under `/api2/json`, with `{placeholders}` as in the schema (also the metric label).
    pub path_template: &'static str,
    /// Names of the query/body parameters the client may send (path parameters excluded).
    pub params: &'static [&'static str],
    /// Whether the call also passes guest config keys (`net0`, `memory`, ...) given by the caller.
    pub config_keys: bool,
    /// Whether repeating the call is harmless, so it may be retried after an ambiguous failure.
    pub idempotent: bool,
}

impl Operation {
    pub(crate) const fn new(
        method: Method,
        path_template: &'static str,
        params: &'static [&'static str],
    ) -> Self {
        let idempotent = matches!(method, Method::Get);
        Self {
            method,
            path_template,
            params,
            config_keys: false,
            idempotent,
        }
    }
    /// A non-GET call that is safe to repeat (starts no task, changes nothing twice).
    const fn retry_safe(self) -> Self {
        Self {
            idempotent: true,
            ..self
        }
    }
    /// A GET that must not be repeated automatically.
    const fn no_retry(self) -> Self {
        Self {
            idempotent: false,
            ..self
        }
    }
    const fn with_config_keys(self) -> Self {
        Self {
            config_keys: true,
            ..self
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path_template)
    }
}

macro_rules! operations {
    ($( $(#[$doc:meta])* $name:ident = $method:ident $path:literal [$($p:literal),* $(,)?] $(.$flag:ident())* ;)*) => {
        $( $(#[$doc])* pub const $name: Operation = Operation::new(Method::$method, $path, &[$($p),*]) $(.$flag())*; )*
        /// Every operation the client can call.
        pub const ALL: &[Operation] = &[$($name),*];
    };
}

operations! {
    /// `GET /version`
    VERSION = Get "/version" [];
    /// `GET /cluster/status`
    CLUSTER_STATUS = Get "/cluster/status" [];
    /// `GET /cluster/resources`
    CLUSTER_RESOURCES = Get "/cluster/resources" ["type"];
    /// `GET /cluster/nextid`
    CLUSTER_NEXTID = Get "/cluster/nextid" ["vmid"];
    /// `GET /cluster/ha/resources`
    HA_RESOURCES = Get "/cluster/ha/resources" ["type"];
    /// `POST /cluster/ha/resources/{sid}/migrate` (a request to the HA manager, not a task)
    HA_MIGRATE = Post "/cluster/ha/resources/{sid}/migrate" ["node"];
    /// `GET /nodes`
    NODES = Get "/nodes" [];
    /// `GET /nodes/{node}/status`
    NODE_STATUS = Get "/nodes/{node}/status" [];
    /// `GET /nodes/{node}/network`: interfaces (and, with some filters, SDN VNets)
    NODE_NETWORK = Get "/nodes/{node}/network" ["type"];
    /// `GET /cluster/sdn/zones`
    SDN_ZONES = Get "/cluster/sdn/zones" [];
    /// `GET /cluster/sdn/vnets`
    SDN_VNETS = Get "/cluster/sdn/vnets" [];
    /// `GET /nodes/{node}/apt/update`: the upgradable packages
    APT_UPDATES = Get "/nodes/{node}/apt/update" [];
    /// `POST /nodes/{node}/apt/update`: refresh the package index (task `aptupdate`)
    APT_REFRESH = Post "/nodes/{node}/apt/update" ["notify"];
    /// `GET /nodes/{node}/apt/versions`
    APT_VERSIONS = Get "/nodes/{node}/apt/versions" [];
    /// `GET /nodes/{node}/tasks/{upid}/status`
    TASK_STATUS = Get "/nodes/{node}/tasks/{upid}/status" [];
    /// `GET /nodes/{node}/tasks/{upid}/log`
    TASK_LOG = Get "/nodes/{node}/tasks/{upid}/log" ["start", "limit"];
    /// `GET /storage`: cluster storage configuration
    STORAGE_CONFIGS = Get "/storage" [];
    /// `GET /nodes/{node}/storage`: storages as seen by one node, with usage
    NODE_STORAGES = Get "/nodes/{node}/storage" ["content"];
    /// `GET /nodes/{node}/storage/{storage}/content`
    STORAGE_CONTENT = Get "/nodes/{node}/storage/{storage}/content" ["content", "vmid"];
    /// `DELETE /nodes/{node}/storage/{storage}/content/{volume}` (task `imgdel`, or null)
    STORAGE_VOLUME_DELETE = Delete "/nodes/{node}/storage/{storage}/content/{volume}" ["delay"];
    /// `PUT /nodes/{node}/storage/{storage}/content/{volume}`: set a volume's notes or protection
    /// (synchronous; setting the same values twice is harmless)
    STORAGE_VOLUME_UPDATE = Put "/nodes/{node}/storage/{storage}/content/{volume}" ["notes", "protected"].retry_safe();
    /// `POST /nodes/{node}/vzdump` (task `vzdump`)
    VZDUMP = Post "/nodes/{node}/vzdump"
        ["vmid", "storage", "dumpdir", "mode", "compress", "notes-template", "remove", "protected", "bwlimit"];
    /// `GET /nodes/{node}/vzdump/extractconfig`
    VZDUMP_EXTRACTCONFIG = Get "/nodes/{node}/vzdump/extractconfig" ["volume"];
    /// `GET /nodes/{node}/qemu`
    QEMU_LIST = Get "/nodes/{node}/qemu" ["full"];
    /// `GET /nodes/{node}/lxc`
    LXC_LIST = Get "/nodes/{node}/lxc" [];
    /// `POST /nodes/{node}/qemu`, used to restore a backup (`archive`; task `qmrestore`)
    QEMU_CREATE = Post "/nodes/{node}/qemu"
        ["vmid", "archive", "storage", "unique", "start", "bwlimit", "live-restore", "pool"]
        .with_config_keys();
    /// `POST /nodes/{node}/lxc`, used to restore a backup (`ostemplate` + `restore=1`; `vzrestore`)
    LXC_CREATE = Post "/nodes/{node}/lxc"
        ["vmid", "ostemplate", "restore", "storage", "unique", "start", "ignore-unpack-errors", "bwlimit", "pool"]
        .with_config_keys();
    /// `DELETE /nodes/{node}/qemu/{vmid}` (task `qmdestroy`)
    QEMU_DELETE = Delete "/nodes/{node}/qemu/{vmid}" ["purge", "destroy-unreferenced-disks"];
    /// `DELETE /nodes/{node}/lxc/{vmid}` (task `vzdestroy`)
    LXC_DELETE = Delete "/nodes/{node}/lxc/{vmid}" ["purge", "destroy-unreferenced-disks"];
    /// `GET .../qemu/{vmid}/status/current`
    QEMU_STATUS = Get "/nodes/{node}/qemu/{vmid}/status/current" [];
    /// `GET .../lxc/{vmid}/status/current`
    LXC_STATUS = Get "/nodes/{node}/lxc/{vmid}/status/current" [];
    /// `POST .../qemu/{vmid}/status/start`
    QEMU_START = Post "/nodes/{node}/qemu/{vmid}/status/start" [];
    /// `POST .../lxc/{vmid}/status/start`
    LXC_START = Post "/nodes/{node}/lxc/{vmid}/status/start" [];
    /// `POST .../qemu/{vmid}/status/stop`
    QEMU_STOP = Post "/nodes/{node}/qemu/{vmid}/status/stop" ["timeout", "overrule-shutdown"];
    /// `POST .../lxc/{vmid}/status/stop`
    LXC_STOP = Post "/nodes/{node}/lxc/{vmid}/status/stop" ["overrule-shutdown"];
    /// `POST .../qemu/{vmid}/status/shutdown`
    QEMU_SHUTDOWN = Post "/nodes/{node}/qemu/{vmid}/status/shutdown" ["timeout", "forceStop"];
    /// `POST .../lxc/{vmid}/status/shutdown`
    LXC_SHUTDOWN = Post "/nodes/{node}/lxc/{vmid}/status/shutdown" ["timeout", "forceStop"];
    /// `POST .../qemu/{vmid}/status/reboot`
    QEMU_REBOOT = Post "/nodes/{node}/qemu/{vmid}/status/reboot" ["timeout"];
    /// `POST .../lxc/{vmid}/status/reboot`
    LXC_REBOOT = Post "/nodes/{node}/lxc/{vmid}/status/reboot" ["timeout"];
    /// `GET .../qemu/{vmid}/config`
    QEMU_CONFIG = Get "/nodes/{node}/qemu/{vmid}/config" ["snapshot"];
    /// `GET .../lxc/{vmid}/config`
    LXC_CONFIG = Get "/nodes/{node}/lxc/{vmid}/config" ["snapshot"];
    /// `PUT .../qemu/{vmid}/config` (synchronous); retried only without `digest`
    QEMU_CONFIG_UPDATE = Put "/nodes/{node}/qemu/{vmid}/config" ["delete", "digest"].retry_safe().with_config_keys();
    /// `PUT .../lxc/{vmid}/config` (synchronous); retried only without `digest`
    LXC_CONFIG_UPDATE = Put "/nodes/{node}/lxc/{vmid}/config" ["delete", "digest"].retry_safe().with_config_keys();
    /// `GET .../qemu/{vmid}/snapshot`
    QEMU_SNAPSHOTS = Get "/nodes/{node}/qemu/{vmid}/snapshot" [];
    /// `GET .../lxc/{vmid}/snapshot`
    LXC_SNAPSHOTS = Get "/nodes/{node}/lxc/{vmid}/snapshot" [];
    /// `POST .../qemu/{vmid}/snapshot` (task `qmsnapshot`)
    QEMU_SNAPSHOT_CREATE = Post "/nodes/{node}/qemu/{vmid}/snapshot" ["snapname", "description", "vmstate"];
    /// `POST .../lxc/{vmid}/snapshot` (task `vzsnapshot`)
    LXC_SNAPSHOT_CREATE = Post "/nodes/{node}/lxc/{vmid}/snapshot" ["snapname", "description"];
    /// `DELETE .../qemu/{vmid}/snapshot/{snapname}` (task `qmdelsnapshot`)
    QEMU_SNAPSHOT_DELETE = Delete "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}" ["force"];
    /// `DELETE .../lxc/{vmid}/snapshot/{snapname}` (task `vzdelsnapshot`)
    LXC_SNAPSHOT_DELETE = Delete "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}" ["force"];
    /// `POST .../qemu/{vmid}/snapshot/{snapname}/rollback` (task `qmrollback`)
    QEMU_SNAPSHOT_ROLLBACK = Post "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback" ["start"];
    /// `POST .../lxc/{vmid}/snapshot/{snapname}/rollback` (task `vzrollback`)
    LXC_SNAPSHOT_ROLLBACK = Post "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback" ["start"];
    /// `GET .../qemu/{vmid}/feature`
    QEMU_FEATURE = Get "/nodes/{node}/qemu/{vmid}/feature" ["feature", "snapname"];
    /// `GET .../lxc/{vmid}/feature`
    LXC_FEATURE = Get "/nodes/{node}/lxc/{vmid}/feature" ["feature", "snapname"];
    /// `POST .../qemu/{vmid}/clone` (task `qmclone`)
    QEMU_CLONE = Post "/nodes/{node}/qemu/{vmid}/clone"
        ["newid", "name", "full", "target", "storage", "format", "snapname", "pool", "description", "bwlimit"];
    /// `POST .../lxc/{vmid}/clone` (task `vzclone`)
    LXC_CLONE = Post "/nodes/{node}/lxc/{vmid}/clone"
        ["newid", "hostname", "full", "target", "storage", "snapname", "pool", "description", "bwlimit"];
    /// `GET .../qemu/{vmid}/migrate`: migration preconditions
    QEMU_MIGRATE_CHECK = Get "/nodes/{node}/qemu/{vmid}/migrate" ["target"];
    /// `GET .../lxc/{vmid}/migrate`: migration preconditions
    LXC_MIGRATE_CHECK = Get "/nodes/{node}/lxc/{vmid}/migrate" ["target"];
    /// `POST .../qemu/{vmid}/migrate` (task `qmigrate`, or `hamigrate`)
    QEMU_MIGRATE = Post "/nodes/{node}/qemu/{vmid}/migrate"
        ["target", "online", "with-local-disks", "targetstorage", "bwlimit"];
    /// `POST .../lxc/{vmid}/migrate` (task `vzmigrate`, or `hamigrate`)
    LXC_MIGRATE = Post "/nodes/{node}/lxc/{vmid}/migrate"
        ["target", "online", "restart", "timeout", "target-storage", "bwlimit"];
    /// `POST .../qemu/{vmid}/agent/ping` (no task; harmless to repeat)
    AGENT_PING = Post "/nodes/{node}/qemu/{vmid}/agent/ping" [].retry_safe();
    /// `GET .../qemu/{vmid}/agent/network-get-interfaces`
    AGENT_NETWORK_INTERFACES = Get "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces" [];
    /// `POST .../qemu/{vmid}/agent/exec` (starts a process in the guest; never repeated)
    AGENT_EXEC = Post "/nodes/{node}/qemu/{vmid}/agent/exec" ["command", "input-data"];
    /// `GET .../qemu/{vmid}/agent/exec-status`. Not retried: the guest agent forgets a pid after
    /// the first read that reports it exited, so a repeated read could lose the result.
    AGENT_EXEC_STATUS = Get "/nodes/{node}/qemu/{vmid}/agent/exec-status" ["pid"].no_retry();
    /// `POST /access/ticket`: log in or renew a ticket (creates nothing; safe to repeat)
    ACCESS_TICKET = Post "/access/ticket" ["username", "password"].retry_safe();
}

// Checked at compile time: reading an exec result twice could lose it, and exec runs a command.
const _: () = assert!(!AGENT_EXEC_STATUS.idempotent && !AGENT_EXEC.idempotent && !VZDUMP.idempotent);

/// The QEMU or LXC variant of an operation.
pub(crate) fn pick(guest_type: super::GuestType, qemu: Operation, lxc: Operation) -> Operation {
    match guest_type {
        super::GuestType::Qemu => qemu,
        super::GuestType::Lxc => lxc,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;
    use crate::proxmox::testutil::shared_proxmox_dir;

    /// `(METHOD, path)` -> the schema's parameter properties.
    fn schema_index(schema: &Value) -> HashMap<(String, String), serde_json::Map<String, Value>> {
        fn walk(node: &Value, out: &mut HashMap<(String, String), serde_json::Map<String, Value>>) {
            let path = node["path"].as_str().unwrap_or_default().to_owned();
            if let Some(info) = node["info"].as_object() {
                for (method, op) in info {
                    let props = op["parameters"]["properties"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    out.insert((method.clone(), path.clone()), props);
                }
            }
            for child in node["children"].as_array().into_iter().flatten() {
                walk(child, out);
            }
        }
        let mut out = HashMap::new();
        for root in schema.as_array().unwrap() {
            walk(root, &mut out);
        }
        out
    }

    /// Whether `name` is a property, directly or through an indexed one (`net[n]` for `net0`).
    fn has_param(props: &serde_json::Map<String, Value>, name: &str) -> bool {
        props.contains_key(name)
            || props.keys().filter_map(|k| k.strip_suffix("[n]")).any(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
    }

    #[test]
    fn ops_inventory_matches_pve_schema() {
        let Some(dir) = shared_proxmox_dir() else { return };
        let text = std::fs::read_to_string(dir.join("pve-apischema.json")).unwrap();
        let index = schema_index(&serde_json::from_str(&text).unwrap());
        let mut seen = std::collections::HashSet::new();
        for op in ALL {
            assert!(seen.insert((op.method, op.path_template)), "{op} listed twice");
            let key = (op.method.as_str().to_owned(), op.path_template.to_owned());
            let props = index
                .get(&key)
                .unwrap_or_else(|| panic!("{op} is not in the PVE schema"));
            for p in op.params {
                assert!(has_param(props, p), "{op}: parameter {p:?} is not in the schema");
                assert!(
                    !op.path_template.contains(&format!("{{{p}}}")),
                    "{op}: {p} is a path parameter"
                );
            }
            if op.config_keys {
                let samples: &[&str] = if op.path_template.contains("lxc") {
                    &["net0", "hostname", "memory", "description", "tags", "onboot"]
                } else {
                    &["net0", "name", "memory", "description", "tags", "onboot"]
                };
                for k in samples {
                    assert!(has_param(props, k), "{op}: config key {k:?} is not in the schema");
                }
            }
        }
    }

    #[test]
    fn ops_idempotency_follows_method_unless_declared() {
        for op in ALL {
            let declared = [
                ACCESS_TICKET,
                AGENT_PING,
                STORAGE_VOLUME_UPDATE,
                QEMU_CONFIG_UPDATE,
                LXC_CONFIG_UPDATE,
                AGENT_EXEC_STATUS,
            ];
            if !declared.contains(op) {
                assert_eq!(op.idempotent, op.method == Method::Get, "{op}");
            }
        }
    }
}
