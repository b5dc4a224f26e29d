//! `ProxmoxCluster`: how to reach a Proxmox VE cluster (endpoints with failover, credentials,
//! TLS trust), its Proxmox Backup Servers, the storages the operator may use, and the network
//! plan for guests it creates. Every other kind points at one through `clusterRef`.

use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel::{at_most_one_of, rule};
use super::common::{ENTRY_NAME_PATTERN, STORAGE_PATTERN, is_false};
use super::conditions::Condition;
use super::network::NetworkPlan;
use super::refs::{SecretKeySelector, SecretReference};
use super::validation::{Errors, InvalidSpec, Validate};

/// Condition type: an endpoint answered and the credentials were accepted.
pub const CONDITION_CONNECTED: &str = "Connected";
/// Condition type: the cluster has quorum.
pub const CONDITION_QUORATE: &str = "Quorate";

/// Shape of an API endpoint URL: scheme, host and optional port, nothing else.
pub const ENDPOINT_URL_PATTERN: &str = r"^https?://[^/\s?#]+/?$";
/// Shape of a SHA-256 certificate fingerprint, `AA:BB:...` (32 octets).
pub const FINGERPRINT_PATTERN: &str = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$";

/// A Proxmox VE cluster (or single node) the operator manages.
///
/// The operator connects through the endpoints in priority order (failing over when one is
/// unreachable), reads the version, quorum, nodes and storages, and reports them in status.
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autopilot.homelab.dev",
    version = "v1alpha1",
    kind = "ProxmoxCluster",
    plural = "proxmoxclusters",
    namespaced,
    status = "ProxmoxClusterStatus",
    shortname = "pxc",
    category = "autopilot",
    derive = "PartialEq",
    doc = "A Proxmox VE cluster the operator connects to: endpoints with failover, API credentials, TLS trust, backup servers, storages and the network plan for guests it creates.",
    printcolumn(
        name = "Connected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Connected\")].status"
    ),
    printcolumn(
        name = "Quorate",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Quorate\")].status"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "string",
        json_path = ".status.nodesOnline",
        description = "Online nodes / all nodes"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Proxmox VE version"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        priority = 1,
        description = "Endpoint in use"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = shared_pin_rule(), validation = distinct_endpoint_pins_rule())]
pub struct ProxmoxClusterSpec {
    /// API endpoints, e.g. `https://pve1.home.lan:8006`. The operator uses the reachable one
    /// with the lowest `priority` and fails over to the next when it cannot connect. Any node
    /// of a cluster serves the whole cluster, so list two or three. Every node has its own
    /// certificate: trust the cluster CA (`tls.caPem`/`tls.caSecretRef`) or give each endpoint
    /// its own `fingerprint`. 1-16 entries.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["url".into()]))]
    pub endpoints: Vec<Endpoint>,
    /// Secret (same namespace) with the API credentials: keys `tokenId`
    /// (`user@realm!tokenname`) and `tokenSecret` for an API token (recommended), or
    /// `username` (`user@realm`) and `password`.
    pub credentials_secret_ref: SecretReference,
    /// How to trust the endpoints' TLS certificates. Set at most one of `fingerprint`,
    /// `caSecretRef`, `caPem` or `insecureSkipVerify`; with none, the system's root CAs are
    /// used (right for certificates from a public CA). An endpoint's own `fingerprint` wins
    /// over this. For a multi-node cluster trust its CA (`/etc/pve/pve-root-ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Proxmox Backup Servers the operator reads directly (verification state, datastore
    /// usage). Backups themselves go through the PVE storage named in each entry's `storage`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub backup_servers: Vec<BackupServer>,
    /// Storages the operator may write to (backups, restored disks, clones), and what for.
    /// Other resources naming a storage outside this list are refused. Empty: no restriction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub storages: Vec<StorageDeclaration>,
    /// Addressing and naming for guests the operator creates (replicas, restore tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPlan>,
    /// Seconds between two full reads of the cluster (30-86400, default 300).
    #[serde(default = "default_resync")]
    #[schemars(range(min = 30, max = 86400))]
    pub resync_interval_seconds: i32,
    /// Seconds one API request may take before the endpoint counts as failing (1-300, default 30).
    #[serde(default = "default_request_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub request_timeout_seconds: i32,
}

fn default_resync() -> i32 {
    300
}

fn default_request_timeout() -> i32 {
    30
}

/// One API endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Base URL without the `/api2/json` path, e.g. `https://192.168.1.10:8006`. Plain
    /// `http://` is only for the simulator: credentials would travel unencrypted.
    #[schemars(length(min = 8, max = 256), regex(pattern = ENDPOINT_URL_PATTERN))]
    pub url: String,
    /// Lower is tried first (0-1000, default 0); equal priorities keep list order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: Option<i32>,
    /// SHA-256 fingerprint of this node's own certificate, `AA:BB:...` (`pvenode cert info`
    /// on that node). Pins exactly that certificate for this endpoint, whatever `tls` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 95), regex(pattern = FINGERPRINT_PATTERN))]
    pub fingerprint: Option<String>,
}

/// The message of a spec whose endpoints lean on one pinned certificate.
const ONE_CERT_PER_NODE: &str = "every Proxmox VE node has its own certificate, so failing over \
     to the other would fail with TlsMismatch: trust the cluster CA instead (tls.caPem or \
     tls.caSecretRef with /etc/pve/pve-root-ca.pem), or give each endpoint the fingerprint of \
     its own node (endpoints[].fingerprint, from `pvenode cert info` on that node)";

/// CEL over `self` (the spec): the endpoints that use `tls.fingerprint` (they have none of
/// their own).
const ENDPOINTS_ON_SHARED_PIN: &str = "self.endpoints.filter(e, !has(e.fingerprint))";

/// CEL over `self` (the spec): the endpoints whose own fingerprint another endpoint repeats.
const ENDPOINTS_WITH_REPEATED_PIN: &str = "self.endpoints.filter(a, has(a.fingerprint) && \
     self.endpoints.filter(b, has(b.fingerprint) && \
     b.fingerprint.lowerAscii() == a.fingerprint.lowerAscii()).size() > 1)";

/// A spec rule (reported at `fieldPath`) with a message built from CEL string concatenation.
fn spec_rule(expr: String, message: String, field_path: &str) -> Rule {
    let mut rule = Rule::new(expr).message(Message::Expression(message));
    rule.field_path = Some(field_path.to_owned());
    rule
}

/// CEL: `tls.fingerprint` is pinned for at most one endpoint (one certificate is one node).
fn shared_pin_rule() -> Rule {
    spec_rule(
        format!("!has(self.tls) || !has(self.tls.fingerprint) || {ENDPOINTS_ON_SHARED_PIN}.size() <= 1"),
        format!(
            "'endpoints ' + {e}[0].url + ' and ' + {e}[1].url + ' share the one certificate \
             pinned in tls.fingerprint, but {ONE_CERT_PER_NODE}'",
            e = ENDPOINTS_ON_SHARED_PIN
        ),
        ".tls.fingerprint",
    )
}

/// CEL: no two endpoints pin the same certificate.
fn distinct_endpoint_pins_rule() -> Rule {
    spec_rule(
        format!("{ENDPOINTS_WITH_REPEATED_PIN}.size() == 0"),
        format!(
            "'endpoints ' + {e}[0].url + ' and ' + {e}[1].url + ' pin the same fingerprint, \
             but {ONE_CERT_PER_NODE}'",
            e = ENDPOINTS_WITH_REPEATED_PIN
        ),
        ".endpoints",
    )
}

/// TLS trust for a Proxmox endpoint. At most one option may be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    format!("{} && !(has(self.insecureSkipVerify) && self.insecureSkipVerify && {})",
        at_most_one_of(&["fingerprint", "caSecretRef", "caPem"]),
        "(has(self.fingerprint) || has(self.caSecretRef) || has(self.caPem))"),
    "set at most one of fingerprint, caSecretRef, caPem or insecureSkipVerify"
))]
pub struct TlsConfig {
    /// SHA-256 fingerprint of the server certificate, `AA:BB:...` (as shown under
    /// Datacenter > Node > Certificates, or `pvenode cert info`). Pins exactly that certificate,
    /// so it fits one endpoint only: each node of a cluster has its own certificate (use the
    /// endpoints' own `fingerprint`, or `caPem`/`caSecretRef` with `pve-root-ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 95), regex(pattern = FINGERPRINT_PATTERN))]
    pub fingerprint: Option<String>,
    /// A PEM CA bundle in a Secret key (same namespace), e.g. `{name: pve-ca, key: ca.crt}`.
    /// A CA bundle is not secret, but it goes into a Secret (or `caPem`): the operator may
    /// read Secrets and is deliberately given no access to ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,
    /// A PEM CA bundle inline (`-----BEGIN CERTIFICATE-----...`), e.g. `/etc/pve/pve-root-ca.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536), regex(pattern = r"-----BEGIN CERTIFICATE-----"))]
    pub ca_pem: Option<String>,
    /// Accept any certificate. Only for throwaway test setups: anyone on the path can read the
    /// credentials. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_verify: bool,
}

/// The TLS trust a [`TlsConfig`] selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsTrust<'a> {
    /// The system's root CAs (nothing set).
    SystemRoots,
    /// Pin this SHA-256 fingerprint.
    Fingerprint(&'a str),
    /// CA bundle from a Secret key.
    CaSecret(&'a SecretKeySelector),
    /// Inline CA bundle.
    CaPem(&'a str),
    /// Accept any certificate.
    InsecureSkipVerify,
}

impl TlsConfig {
    /// The selected trust, or an error naming the conflicting fields.
    pub fn trust(&self) -> Result<TlsTrust<'_>, String> {
        let mut set = Vec::new();
        if let Some(f) = &self.fingerprint {
            set.push(("fingerprint", TlsTrust::Fingerprint(f)));
        }
        if let Some(r) = &self.ca_secret_ref {
            set.push(("caSecretRef", TlsTrust::CaSecret(r)));
        }
        if let Some(p) = &self.ca_pem {
            set.push(("caPem", TlsTrust::CaPem(p)));
        }
        if self.insecure_skip_verify {
            set.push(("insecureSkipVerify", TlsTrust::InsecureSkipVerify));
        }
        match set.as_slice() {
            [] => Ok(TlsTrust::SystemRoots),
            [(_, trust)] => Ok(*trust),
            many => Err(format!(
                "{} are all set; keep exactly one",
                many.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// A Proxmox Backup Server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupServer {
    /// Name of this entry, unique in the list, e.g. `pbs`.
    #[schemars(length(min = 1, max = 63), regex(pattern = ENTRY_NAME_PATTERN))]
    pub name: String,
    /// PBS API URL, e.g. `https://pbs.home.lan:8007`.
    #[schemars(length(min = 8, max = 256), regex(pattern = ENDPOINT_URL_PATTERN))]
    pub url: String,
    /// Datastore name on the server, e.g. `homelab`.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"))]
    pub datastore: String,
    /// PBS namespace inside the datastore, if the PVE storage uses one, e.g. `pve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub namespace: Option<String>,
    /// ID of the PVE storage (type `pbs`) that points at this datastore, e.g. `pbs-homelab`.
    /// BackupPolicies with a `pbs` destination naming this storage use this entry.
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub storage: String,
    /// Secret (same namespace) with keys `tokenId` + `tokenSecret` or `username` + `password`
    /// for the PBS API (read-only access is enough).
    pub credentials_secret_ref: SecretReference,
    /// TLS trust for the server (same rules as the cluster's `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// A storage the operator may write to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageDeclaration {
    /// PVE storage ID, e.g. `local-lvm`, `nfs-backup`, `pbs-homelab`.
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub name: String,
    /// What the operator may put there: `Backup` (vzdump archives), `Images` (VM disks of
    /// restore tests and clones), `Rootdir` (container volumes). Empty: anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub content: Vec<StorageContent>,
}

/// Kind of content on a storage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum StorageContent {
    /// Backup archives.
    Backup,
    /// VM disk images.
    Images,
    /// Container root and mount point volumes.
    Rootdir,
}

/// Observed state of a ProxmoxCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxmoxClusterStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Connected` (reasons e.g. `AuthenticationFailed`, `TlsMismatch`,
    /// `Unreachable`) and `Quorate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// URL of the endpoint in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Proxmox VE version reported by the endpoint, e.g. `9.1.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Cluster name (absent for a standalone node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Whether the cluster has quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorate: Option<bool>,
    /// Online nodes out of all nodes, e.g. `3/3` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_online: Option<String>,
    /// Every node of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// Storages the cluster has (the declared ones, or all when none are declared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<StorageStatus>,
    /// Reachability of each backup server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_servers: Vec<BackupServerStatus>,
}

/// One node, as the cluster reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Whether the node is online in the cluster.
    pub online: bool,
    /// The node's address in the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Proxmox VE version on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One storage, as the cluster reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// Storage ID.
    pub name: String,
    /// Storage type, e.g. `lvmthin`, `nfs`, `pbs`, `zfspool`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether every node sees the same storage (needed for cross-node clones).
    pub shared: bool,
    /// Nodes where the storage is active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// Reachability of one backup server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupServerStatus {
    /// Name of the entry in spec.
    pub name: String,
    /// Whether the server answered and accepted the credentials.
    pub connected: bool,
    /// PBS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it is not connected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Endpoint {
    /// `priority` or its default 0.
    pub fn priority(&self) -> i32 {
        self.priority.unwrap_or(0)
    }
}

impl ProxmoxClusterSpec {
    /// Endpoints in the order the operator tries them (priority, then list order).
    pub fn endpoints_by_priority(&self) -> Vec<&Endpoint> {
        let mut eps: Vec<&Endpoint> = self.endpoints.iter().collect();
        eps.sort_by_key(|e| e.priority());
        eps
    }

    /// Why the spec's endpoints cannot all verify: two or more endpoints lean on one pinned
    /// certificate (`tls.fingerprint`, or one endpoint fingerprint repeated), while every PVE
    /// node has its own. The CRD refuses this too; this is the runtime backstop.
    pub fn shared_pin_problem(&self) -> Option<String> {
        let shared_pin = self.tls.as_ref().and_then(|t| t.fingerprint.as_ref());
        let on_shared: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|e| e.fingerprint.is_none())
            .map(|e| e.url.as_str())
            .collect();
        if shared_pin.is_some()
            && let [a, b, ..] = on_shared.as_slice()
        {
            return Some(format!(
                "endpoints {a} and {b} share the one certificate pinned in tls.fingerprint, but {ONE_CERT_PER_NODE}"
            ));
        }
        let repeated: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|a| {
                a.fingerprint.as_ref().is_some_and(|fa| {
                    self.endpoints
                        .iter()
                        .filter(|b| {
                            b.fingerprint
                                .as_ref()
                                .is_some_and(|fb| fb.eq_ignore_ascii_case(fa))
                        })
                        .count()
                        > 1
                })
            })
            .map(|e| e.url.as_str())
            .collect();
        match repeated.as_slice() {
            [a, b, ..] => Some(format!(
                "endpoints {a} and {b} pin the same fingerprint, but {ONE_CERT_PER_NODE}"
            )),
            _ => None,
        }
    }

    /// The field [`Self::shared_pin_problem`] reports, as the CRD rules do.
    fn shared_pin_field(&self) -> &'static str {
        let shared = self.tls.as_ref().is_some_and(|t| t.fingerprint.is_some())
            && self.endpoints.iter().filter(|e| e.fingerprint.is_none()).count() > 1;
        if shared {
            "spec.tls.fingerprint"
        } else {
            "spec.endpoints"
        }
    }

    /// The network plan, or the defaults when none is given.
    pub fn network_or_default(&self) -> NetworkPlan {
        self.network.clone().unwrap_or_default()
    }
}

impl Validate for ProxmoxClusterSpec {
    fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Errors::new();
        if self.endpoints.is_empty() {
            errors.add(
                "spec.endpoints",
                "list at least one endpoint, e.g. https://pve1.home.lan:8006",
            );
        }
        for (i, ep) in self.endpoints.iter().enumerate() {
            if self.endpoints[..i].iter().any(|e| e.url == ep.url) {
                errors.add(
                    format!("spec.endpoints[{i}].url"),
                    format!("{:?} is listed twice", ep.url),
                );
            }
        }
        if let Some(tls) = &self.tls {
            errors.check("spec.tls", tls.trust().map(|_| ()));
        }
        if let Some(message) = self.shared_pin_problem() {
            errors.add(self.shared_pin_field(), message);
        }
        for (i, server) in self.backup_servers.iter().enumerate() {
            let path = format!("spec.backupServers[{i}]");
            if self.backup_servers[..i].iter().any(|s| s.name == server.name) {
                errors.add(format!("{path}.name"), format!("{:?} is used twice", server.name));
            }
            if let Some(tls) = &server.tls {
                errors.check(&format!("{path}.tls"), tls.trust().map(|_| ()));
            }
        }
        for (i, storage) in self.storages.iter().enumerate() {
            if self.storages[..i].iter().any(|s| s.name == storage.name) {
                errors.add(
                    format!("spec.storages[{i}].name"),
                    format!("{:?} is listed twice", storage.name),
                );
            }
        }
        if let Some(network) = &self.network {
            network.validate_into("spec.network", &mut errors);
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ProxmoxClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const MINIMAL: &str = "endpoints:\n- url: https://pve1:8006\n  priority: 10\n- url: https://pve2:8006\ncredentialsSecretRef: {name: pve-token}\n";

    #[test]
    fn proxmox_cluster_defaults_and_failover_order() {
        let s = spec(MINIMAL);
        assert_eq!((s.resync_interval_seconds, s.request_timeout_seconds), (300, 30));
        let order: Vec<_> = s.endpoints_by_priority().iter().map(|e| e.url.as_str()).collect();
        assert_eq!(order, ["https://pve2:8006", "https://pve1:8006"]);
        assert_eq!(s.network_or_default().mac_prefix, "02:00:00");
        assert!(s.validate().is_ok());
        let pxc = ProxmoxCluster::new("homelab", s);
        let back: ProxmoxCluster = serde_json::from_value(serde_json::to_value(&pxc).unwrap()).unwrap();
        assert_eq!(back, pxc);
    }

    #[test]
    fn tls_trust_selects_exactly_one_option() {
        assert_eq!(TlsConfig::default().trust().unwrap(), TlsTrust::SystemRoots);
        let fp = TlsConfig {
            fingerprint: Some("AA".into()),
            ..Default::default()
        };
        assert_eq!(fp.trust().unwrap(), TlsTrust::Fingerprint("AA"));
        let both = TlsConfig {
            insecure_skip_verify: true,
            ..fp
        };
        assert_eq!(
            both.trust().unwrap_err(),
            "fingerprint, insecureSkipVerify are all set; keep exactly one"
        );
    }

    #[test]
    fn one_pinned_certificate_for_several_nodes_is_refused_naming_the_endpoints() {
        let (a, b) = (["AA"; 32].join(":"), ["BB"; 32].join(":"));
        let mut s = spec(MINIMAL);
        assert_eq!(s.shared_pin_problem(), None, "no pin at all");
        s.tls = Some(TlsConfig {
            fingerprint: Some(a.clone()),
            ..Default::default()
        });
        let problem = s.shared_pin_problem().expect("two endpoints on one pin");
        assert!(
            problem.starts_with("endpoints https://pve1:8006 and https://pve2:8006 share"),
            "{problem}"
        );
        let err = s.validate().unwrap_err();
        assert_eq!(err.errors()[0].path, "spec.tls.fingerprint");
        s.endpoints[1].fingerprint = Some(b);
        assert_eq!(
            s.shared_pin_problem(),
            None,
            "pve2 has its own pin, pve1 uses tls"
        );
        s.endpoints[0].fingerprint = Some(a.to_lowercase());
        s.endpoints[1].fingerprint = Some(a);
        let problem = s.shared_pin_problem().expect("the same pin twice");
        assert!(problem.contains("pin the same fingerprint"), "{problem}");
        assert_eq!(s.validate().unwrap_err().errors()[0].path, "spec.endpoints");
        s.endpoints.truncate(1);
        s.endpoints[0].fingerprint = None;
        assert_eq!(
            s.shared_pin_problem(),
            None,
            "one endpoint may use tls.fingerprint"
        );
    }

    #[test]
    fn proxmox_cluster_validate_names_duplicate_fields() {
        let mut s = spec(MINIMAL);
        s.endpoints[1].url = s.endpoints[0].url.clone();
        s.tls = Some(TlsConfig {
            ca_pem: Some("x".into()),
            insecure_skip_verify: true,
            ..Default::default()
        });
        let err = s.validate().unwrap_err();
        let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.endpoints[1].url", "spec.tls"]);
    }
}
