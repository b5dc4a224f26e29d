//! A simulator of the Proxmox VE API: `homelab-autopilot pvesim`.
//!
//! A real HTTP(S) server with a stateful multi-node cluster that behaves like PVE 9.1 on the
//! wire: `{"data": ...}` envelopes, errors in the reason phrase, 400s with an `errors` map from
//! validating every request against the official schema (`--schema`), 401s after a 3 s delay,
//! asynchronous tasks with real UPIDs and logs, guest locks, migration between nodes, vzdump
//! files written to a directory and read back on restore, storage capacity, per-node local
//! storages, fault injection, and (with [`SimConfig::pbs_listen`]) a Proxmox Backup Server API
//! over the snapshots of the `pbs` storages (see [`pbs`]).
//!
//! Tests start it with [`Simulator::start`] on `127.0.0.1:0` and talk to it with plain HTTP
//! clients; the [`SimHandle`] exposes credentials, the TLS fingerprint, fault injection and read
//! access to the simulated [`Cluster`]. It never depends on the typed client in `proxmox`.
//!
//! ```ignore
//! let sim = Simulator::start(SimConfig {
//!     schema: Some("../shared/proxmox/pve-apischema.json".into()),
//!     time_scale: 0.001, // a 30 s vzdump takes 30 ms
//!     ..SimConfig::default()
//! })
//! .await?;
//! // connect: sim.url(), sim.token_id(), sim.token_secret(), sim.fingerprint() / sim.node_fingerprint("pve2") / sim.ca_pem()
//! sim.fail_next("POST", "/nodes/{node}/vzdump", 1, 500, "backup storage full");
//! sim.set_node_online("pve2", false)?;
//! let node = sim.state(|c| c.guest(100).map(|g| g.node.clone()));
//! sim.shutdown().await;
//! ```

mod admin;
pub mod cli;
mod clock;
mod dump;
mod faults;
mod handle;
mod http;
mod journal;
pub mod pbs;
mod router;
mod routes;
mod schema;
pub mod seed;
mod server;
pub mod state;
mod tasks;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use dump::{DumpHeader, read_dump};
pub use faults::{EndpointFault, Fault};
pub use handle::SimHandle;
pub use journal::{CAPACITY as JOURNAL_CAPACITY, RequestRecord};
pub use schema::SchemaIndex;
pub use seed::SeedSpec;
pub use state::{Cluster, Guest, GuestKind, Pool, Power, PseudoDisk};
pub use tasks::TaskInfo;

use auth::Auth;
use clock::Clock;
use faults::Faults;
use router::Router;
use tasks::Tasks;

mod auth;

/// Errors starting or configuring the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The seed file could not be read or is invalid.
    #[error("seed {path}: {reason}")]
    Seed {
        /// The seed file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The schema file could not be read or parsed.
    #[error("schema {path}: {reason} (pass the official pve-apischema.json with --schema)")]
    Schema {
        /// The schema file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The dump directory cannot be used.
    #[error("dump directory {path}: {source}")]
    DumpDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Generating the TLS certificate failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The configuration is inconsistent.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address of the main listener (serves the first node). Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The cluster to simulate (default: [`SeedSpec::default_cluster`]).
    pub seed: SeedSpec,
    /// Where the `dir` storage keeps backup files (default: a fresh temporary directory that is
    /// removed on shutdown).
    pub dump_dir: Option<PathBuf>,
    /// The official `pve-apischema.json`; when set, every request is validated against it.
    pub schema: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Real seconds per simulated second for task runs and delays (`0.001`: 1000x faster).
    pub time_scale: f64,
    /// Seed of every random decision (MAC addresses, fault rates...).
    pub rng_seed: u64,
    /// Simulated duration per task type (overrides the defaults, e.g. `"vzdump" => 30s`).
    pub task_durations: BTreeMap<String, Duration>,
    /// Also open one listener per other node (see [`SimHandle::node_url`]), so clients can fail
    /// over between nodes; a listener drops connections while its node is offline. With a fixed
    /// `listen` port P the other nodes take P+1, P+2... in name order; with port 0, ephemeral ones.
    pub node_listeners: bool,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
    /// Also serve the simulated Proxmox Backup Server's API here (HTTPS with its own
    /// self-signed certificate, or plain HTTP with `plain_http`): its datastores hold the
    /// snapshots of the cluster's `pbs` storages. See [`SimHandle::pbs_url`].
    pub pbs_listen: Option<SocketAddr>,
    /// Where the cluster CA and the node certificates are kept across restarts (created when
    /// missing); `None`: new ones on every start.
    pub state_dir: Option<PathBuf>,
    /// Simulated wall clock at start, Unix seconds (default: the real clock). The demo starts
    /// at a fixed instant so every run prints the same.
    pub clock_start: Option<i64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: SeedSpec::default_cluster(),
            dump_dir: None,
            schema: None,
            plain_http: false,
            time_scale: 1.0,
            rng_seed: 1,
            task_durations: BTreeMap::new(),
            node_listeners: false,
            faults: Vec::new(),
            pbs_listen: None,
            state_dir: None,
            clock_start: None,
        }
    }
}

/// Simulated duration of each task type unless overridden.
fn default_task_duration(kind: &str) -> Duration {
    let secs = match kind {
        "qmstart" | "vzstart" | "hastart" | "hastop" | "qmstop" | "qmtemplate" => 3,
        "vzstop" | "imgdel" | "qmconfig" | "vzdestroy" | "vztemplate" => 1,
        "qmshutdown" | "vzshutdown" | "qmcreate" | "qmreboot" | "vzreboot" | "qmdestroy" => 5,
        "qmsnapshot" | "vzsnapshot" | "qmdelsnapshot" | "vzdelsnapshot" | "qmrollback" | "vzrollback" => 4,
        "qmclone" | "vzclone" | "aptupdate" | "vzcreate" => 15,
        "qmigrate" | "vzmigrate" | "hamigrate" | "vzdump" => 30,
        "qmrestore" | "vzrestore" => 40,
        _ => 2,
    };
    Duration::from_secs(secs)
}

/// State shared by the listeners, handlers and tasks.
pub(crate) struct Shared {
    cluster_lock: Mutex<Cluster>,
    tasks_lock: Mutex<Tasks>,
    pub(crate) clock: Clock,
    pub(crate) auth: Auth,
    pub(crate) faults: Faults,
    pub(crate) schema: Option<Arc<SchemaIndex>>,
    pub(crate) router: Router,
    durations: BTreeMap<String, Duration>,
    /// Guest-agent exec behaviour from the seed.
    pub(crate) agent_commands: Vec<seed::AgentCommand>,
    /// SHA-256 fingerprint of each node's certificate (`ssl_fingerprint` in `/nodes`); empty
    /// with plain HTTP.
    pub(crate) fingerprints: BTreeMap<String, String>,
    /// The requests answered so far (bounded).
    pub(crate) journal: journal::Journal,
}

impl Shared {
    /// Locks the cluster (a panicking handler must not wedge the simulator).
    pub(crate) fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.cluster_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Simulated duration of a task type.
    pub(crate) fn task_duration(&self, kind: &str) -> Duration {
        self.durations
            .get(kind)
            .copied()
            .unwrap_or_else(|| default_task_duration(kind))
    }

    /// Applies a fault.
    pub(crate) fn apply_fault(&self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Endpoint(e) => self.faults.add_endpoint(e),
            Fault::NodeOffline { node } => self.set_node_online(&node, false)?,
            Fault::NodeOnline { node } => self.set_node_online(&node, true)?,
            Fault::QuorumLoss { lost } => self.cluster().quorum_lost = lost,
            Fault::TaskFailure {
                task_type,
                message,
                count,
            } => self.faults.add_task_failure(&task_type, &message, count),
            Fault::ExpireTickets => self.auth.expire_tickets(),
            Fault::AdvanceClock { seconds } => self.clock.advance(seconds),
            Fault::StorageFull { storage, avail_bytes } => {
                let mut cluster = self.cluster();
                let s = cluster
                    .storages
                    .get_mut(&storage)
                    .ok_or_else(|| format!("storage '{storage}' does not exist"))?;
                s.avail_limit = Some(avail_bytes);
            }
            Fault::StorageFree { storage } => {
                let mut cluster = self.cluster();
                let s = cluster
                    .storages
                    .get_mut(&storage)
                    .ok_or_else(|| format!("storage '{storage}' does not exist"))?;
                s.avail_limit = None;
            }
            Fault::PbsVerifyFailure { vmid, count } => self.cluster().pbs.add_verify_failure(vmid, count),
            Fault::PbsVerifyNew { enabled } => self.cluster().pbs.verify_new = enabled,
            Fault::PbsVerification { volid, state } => {
                let now = self.clock.now();
                pbs::set_verification(&mut self.cluster(), &volid, state.as_deref(), now)?;
            }
            Fault::Clear => {
                self.faults.clear();
                let mut cluster = self.cluster();
                cluster.pbs.clear_faults();
                for s in cluster.storages.values_mut() {
                    s.avail_limit = None;
                }
            }
        }
        Ok(())
    }

    fn set_node_online(&self, node: &str, online: bool) -> Result<(), String> {
        let now = self.clock.now();
        let mut cluster = self.cluster();
        let entry = cluster
            .nodes
            .get_mut(node)
            .ok_or_else(|| format!("no such cluster node '{node}'"))?;
        if online && !entry.online {
            entry.boot_time = now;
        }
        entry.online = online;
        Ok(())
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Builds the cluster from the config and starts serving; returns once the listeners are
    /// bound (milliseconds; the schema is parsed once per process and cached).
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        handle::start(config).await
    }
}
