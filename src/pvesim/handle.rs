//! Starting a simulator and the [`SimHandle`] tests use to reach, steer and inspect it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::auth::Auth;
use super::clock::Clock;
use super::faults::{EndpointFault, Faults};
use super::state::Cluster;
use super::tasks::{TaskInfo, Tasks};
use super::{Fault, SchemaIndex, Shared, SimConfig, SimError, routes, seed, server, tls};

/// A running simulator. Dropping it stops the listeners (prefer [`SimHandle::shutdown`]).
pub struct SimHandle {
    shared: Arc<Shared>,
    url: String,
    node_urls: BTreeMap<String, String>,
    token_id: String,
    token_secret: String,
    username: String,
    password: String,
    fingerprints: BTreeMap<String, String>,
    local_node: String,
    ca_pem: String,
    dump_dir: PathBuf,
    owns_dump_dir: bool,
    servers: Vec<JoinHandle<()>>,
    /// The PBS listener's URL and certificate fingerprint (with `pbs_listen`).
    pbs: Option<(String, String)>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("url", &self.url)
            .field("token_id", &self.token_id)
            .field("token_secret", &"***")
            .field("username", &self.username)
            .field("password", &"***")
            .field("fingerprints", &self.fingerprints)
            .finish_non_exhaustive()
    }
}

fn temp_dump_dir() -> Result<PathBuf, SimError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "pvesim-{}-{n}-{:08x}",
        std::process::id(),
        rand::rng().next_u32()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| SimError::DumpDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn url_for(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Listen { addr, source })
}

pub(crate) async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    let (dump_dir, owns_dump_dir) = match &config.dump_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| SimError::DumpDir {
                path: dir.clone(),
                source,
            })?;
            (dir.canonicalize().unwrap_or_else(|_| dir.clone()), false)
        }
        None => (temp_dump_dir()?, true),
    };
    let result = start_in(config, dump_dir.clone(), owns_dump_dir).await;
    if result.is_err() && owns_dump_dir {
        let _ = std::fs::remove_dir_all(&dump_dir); // created above by us
    }
    result
}

async fn start_in(config: SimConfig, dump_dir: PathBuf, owns_dump_dir: bool) -> Result<SimHandle, SimError> {
    let offset = config
        .clock_start
        .map_or(0, |start| start - super::clock::real_epoch());
    let clock = Clock::new(offset, config.time_scale);
    let now = clock.now();
    let schema = config.schema.as_deref().map(SchemaIndex::load).transpose()?;
    let built = seed::build_cluster(
        &config.seed,
        Path::new("seed"),
        now,
        config.rng_seed,
        dump_dir.clone(),
    )?;
    for storage in built
        .cluster
        .storages
        .values()
        .filter(|s| s.is_file_based() && s.has_content("backup"))
    {
        let dir = built.cluster.backup_dir(&storage.id);
        std::fs::create_dir_all(&dir).map_err(|source| SimError::DumpDir {
            path: dir.clone(),
            source,
        })?;
    }
    let first_user = config.seed.users.first();
    let username = first_user.map(|u| u.userid.clone()).unwrap_or_default();
    let password = first_user.map(|u| u.password.clone()).unwrap_or_default();
    let (token_id, token_secret) = config
        .seed
        .users
        .iter()
        .find_map(|u| {
            u.tokens
                .first()
                .map(|t| (format!("{}!{}", u.userid, t.id), t.secret.clone()))
        })
        .unwrap_or_default();
    let node_names: Vec<String> = built.cluster.nodes.keys().cloned().collect();
    let material = if config.plain_http {
        None
    } else {
        Some(tls::load_or_generate(
            &built.cluster.name,
            &node_names,
            config.state_dir.as_deref(),
        )?)
    };
    let local_node = built.cluster.local_node.clone();
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let shared = Arc::new(Shared {
        cluster_lock: Mutex::new(built.cluster),
        tasks_lock: Mutex::new(Tasks::default()),
        clock,
        auth: Auth::new(built.users, key),
        faults: Faults::new(config.rng_seed),
        schema,
        router: routes::router(),
        durations: config.task_durations.clone(),
        agent_commands: built.agent_commands,
        fingerprints: material
            .as_ref()
            .map(tls::TlsMaterial::fingerprints)
            .unwrap_or_default(),
        journal: Default::default(),
    });
    for fault in config.faults.iter().cloned() {
        shared.apply_fault(fault).map_err(SimError::Config)?;
    }
    // Each listener serves its own node's certificate, as each PVE node's pveproxy does.
    let acceptor = |node: &str| {
        material
            .as_ref()
            .and_then(|m| m.nodes.get(node))
            .map(|c| TlsAcceptor::from(c.server_config.clone()))
    };
    let main = bind(config.listen).await?;
    let main_addr = main.local_addr().map_err(|source| SimError::Listen {
        addr: config.listen,
        source,
    })?;
    let url = url_for(main_addr, material.is_some());
    let mut node_urls = BTreeMap::new();
    node_urls.insert(local_node.clone(), url.clone());
    let mut servers = vec![server::serve(
        main,
        shared.clone(),
        local_node.clone(),
        acceptor(&local_node),
    )];
    if config.node_listeners {
        // Next to a fixed main port (8006) the other nodes listen on the following ports (8007,
        // 8008...), so the endpoints are known in advance; next to an ephemeral one, ephemeral.
        let others = node_names.iter().filter(|n| **n != local_node);
        for (i, node) in others.enumerate() {
            let port = match config.listen.port() {
                0 => 0,
                main => u16::try_from(i + 1)
                    .ok()
                    .and_then(|offset| main.checked_add(offset))
                    .ok_or_else(|| SimError::Config(format!("no port left after {main} for node {node}")))?,
            };
            let listener = bind(SocketAddr::new(main_addr.ip(), port)).await?;
            let addr = listener.local_addr().map_err(|source| SimError::Listen {
                addr: main_addr,
                source,
            })?;
            node_urls.insert(node.clone(), url_for(addr, material.is_some()));
            servers.push(server::serve(
                listener,
                shared.clone(),
                node.clone(),
                acceptor(node),
            ));
        }
    }
    let pbs = match config.pbs_listen {
        None => None,
        Some(addr) => {
            // A PBS has its own self-signed certificate (clients pin its fingerprint).
            let pbs_tls = if config.plain_http {
                None
            } else {
                let names = [crate::pvesim::pbs::PBS_NODE.to_string()];
                let state = config.state_dir.as_ref().map(|d| d.join("pbs"));
                Some(tls::load_or_generate("pbs", &names, state.as_deref())?)
            };
            let cert = pbs_tls
                .as_ref()
                .and_then(|m| m.nodes.get(crate::pvesim::pbs::PBS_NODE));
            let listener = bind(addr).await?;
            let local = listener
                .local_addr()
                .map_err(|source| SimError::Listen { addr, source })?;
            let fingerprint = cert.map(|c| c.fingerprint.clone()).unwrap_or_default();
            let acceptor = cert.map(|c| TlsAcceptor::from(c.server_config.clone()));
            servers.push(crate::pvesim::pbs::serve(listener, shared.clone(), acceptor));
            Some((url_for(local, cert.is_some()), fingerprint))
        }
    };
    Ok(SimHandle {
        pbs,
        shared,
        url,
        node_urls,
        token_id,
        token_secret,
        username,
        password,
        fingerprints: material
            .as_ref()
            .map(tls::TlsMaterial::fingerprints)
            .unwrap_or_default(),
        local_node,
        ca_pem: material.map(|m| m.ca_pem).unwrap_or_default(),
        dump_dir,
        owns_dump_dir,
        servers,
    })
}

impl SimHandle {
    /// Base URL of the main listener (`https://127.0.0.1:PORT`, without `/api2/json`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Base URL of a node's own listener (with [`SimConfig::node_listeners`]; the first node is
    /// always [`SimHandle::url`]).
    pub fn node_url(&self, node: &str) -> Option<&str> {
        self.node_urls.get(node).map(String::as_str)
    }

    /// API token id (`user@realm!tokenid`).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// API token secret.
    pub fn token_secret(&self) -> &str {
        &self.token_secret
    }

    /// Ticket login user (`user@realm`).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Password of [`SimHandle::username`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `AA:BB:...` SHA-256 fingerprint of the certificate the main listener (the first node)
    /// serves; empty with plain HTTP. Every node has its own: see [`SimHandle::node_fingerprint`].
    pub fn fingerprint(&self) -> &str {
        self.node_fingerprint(&self.local_node).unwrap_or_default()
    }

    /// `AA:BB:...` SHA-256 fingerprint of the certificate `node`'s listener serves (`None` with
    /// plain HTTP or for an unknown node).
    pub fn node_fingerprint(&self, node: &str) -> Option<&str> {
        self.fingerprints.get(node).map(String::as_str)
    }

    /// PEM of the cluster CA that signed every node's certificate (empty with plain HTTP).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Base URL of the simulated PBS (`https://127.0.0.1:PORT`, without `/api2/json`), when
    /// started with [`SimConfig::pbs_listen`](super::SimConfig::pbs_listen). It accepts the
    /// seed's API tokens as `PBSAPIToken=user@realm!name:secret`.
    pub fn pbs_url(&self) -> Option<&str> {
        self.pbs.as_ref().map(|(url, _)| url.as_str())
    }

    /// `AA:BB:...` SHA-256 fingerprint of the PBS listener's own self-signed certificate
    /// (`None` without a PBS listener; empty with plain HTTP).
    pub fn pbs_fingerprint(&self) -> Option<&str> {
        self.pbs.as_ref().map(|(_, fp)| fp.as_str())
    }

    /// Sets the verification state of the PBS snapshot behind `volid`
    /// (`pbs:backup/vm/100/<time>`): `Some("ok")`, `Some("failed")`, or `None` (never verified).
    pub fn set_pbs_verification(&self, volid: &str, state: Option<&str>) -> Result<(), SimError> {
        self.inject(Fault::PbsVerification {
            volid: volid.to_string(),
            state: state.map(str::to_string),
        })
    }

    /// Directory holding the `dir` storage's backup files.
    pub fn dump_dir(&self) -> &Path {
        &self.dump_dir
    }

    /// The JSON `--info-file` contains (includes the secrets: keep it private).
    pub fn info_json(&self) -> Value {
        json!({
            "url": self.url, "tokenId": self.token_id, "tokenSecret": self.token_secret,
            "username": self.username, "password": self.password, "fingerprint": self.fingerprint(),
            "nodeFingerprints": self.fingerprints, "caPem": self.ca_pem, "dumpDir": self.dump_dir.display().to_string(),
            "pbsUrl": self.pbs_url(), "pbsFingerprint": self.pbs_fingerprint(),
        })
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) -> Result<(), SimError> {
        self.shared.apply_fault(fault).map_err(SimError::Config)
    }

    /// Fails the next `n` calls of `method` on the path template with HTTP `status`.
    pub fn fail_next(&self, method: &str, template: &str, n: u32, status: u16, message: &str) {
        self.shared.faults.add_endpoint(EndpointFault {
            method: Some(method.to_string()),
            path: template.to_string(),
            fail_next: n,
            status,
            message: message.to_string(),
            ..EndpointFault::default()
        });
    }

    /// Fails matching calls with probability `rate` (deterministic per RNG seed).
    pub fn set_error_rate(&self, method: Option<&str>, template: &str, rate: f64, status: u16) {
        self.shared.faults.add_endpoint(EndpointFault {
            method: method.map(str::to_string),
            path: template.to_string(),
            error_rate: rate,
            status,
            ..EndpointFault::default()
        });
    }

    /// Adds real-time latency to matching calls (`"*"` for all).
    pub fn add_latency(&self, method: Option<&str>, template: &str, latency: Duration) {
        self.shared.faults.add_endpoint(EndpointFault {
            method: method.map(str::to_string),
            path: template.to_string(),
            latency,
            ..EndpointFault::default()
        });
    }

    /// Carries out the next `n` matching calls, then drops their connections instead of
    /// answering: the caller cannot tell whether they were done.
    pub fn lose_answer_next(&self, method: Option<&str>, template: &str, n: u32) {
        self.shared.faults.add_endpoint(EndpointFault {
            method: method.map(str::to_string),
            path: template.to_string(),
            lose_answer_next: n,
            ..EndpointFault::default()
        });
    }

    /// Drops the connections of the next `n` matching calls without answering.
    pub fn drop_next(&self, method: Option<&str>, template: &str, n: u32) {
        self.shared.faults.add_endpoint(EndpointFault {
            method: method.map(str::to_string),
            path: template.to_string(),
            drop_next: n,
            ..EndpointFault::default()
        });
    }

    /// Takes a node offline or brings it back.
    pub fn set_node_online(&self, node: &str, online: bool) -> Result<(), SimError> {
        let fault = if online {
            Fault::NodeOnline { node: node.into() }
        } else {
            Fault::NodeOffline { node: node.into() }
        };
        self.inject(fault)
    }

    /// Forces quorum loss (or returns to vote counting).
    pub fn set_quorum_lost(&self, lost: bool) {
        self.shared.cluster().quorum_lost = lost;
    }

    /// The next task of `task_type` fails with `message`.
    pub fn fail_next_task(&self, task_type: &str, message: &str) {
        self.shared.faults.add_task_failure(task_type, message, 1);
    }

    /// Invalidates every ticket issued so far.
    pub fn expire_tickets(&self) {
        self.shared.auth.expire_tickets();
    }

    /// Removes endpoint and task faults.
    pub fn clear_faults(&self) {
        // `Clear` cannot fail.
        let _ = self.shared.apply_fault(Fault::Clear);
    }

    /// Moves the simulated clock forward (pseudo-disks drift by day; tickets age).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by.as_secs() as i64);
    }

    /// Simulated now (epoch seconds).
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// Reads the simulated cluster.
    pub fn state<R>(&self, f: impl FnOnce(&Cluster) -> R) -> R {
        let cluster = self.shared.cluster();
        f(&cluster)
    }

    /// Changes the simulated cluster directly (test setup).
    pub fn state_mut<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let mut cluster = self.shared.cluster();
        f(&mut cluster)
    }

    /// All tasks, oldest first.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let mut tasks: Vec<TaskInfo> = self.shared.tasks().list.values().cloned().collect();
        tasks.sort_by_key(|t| (t.starttime, t.pid));
        tasks
    }

    /// The API requests answered so far, oldest first (the newest 10 000): method, path template,
    /// parameter names and status. Dropped connections are not recorded.
    pub fn requests(&self) -> Vec<super::RequestRecord> {
        self.shared.journal.records()
    }

    /// One task by UPID.
    pub fn task(&self, upid: &str) -> Option<TaskInfo> {
        self.shared.tasks().list.get(upid).cloned()
    }

    /// Waits (polling, real time) until the task stopped; `None` on timeout or unknown UPID.
    pub async fn wait_task(&self, upid: &str, timeout: Duration) -> Option<TaskInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let task = self.task(upid)?;
            if !task.running() {
                return Some(task);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The guest's current pseudo-disk bytes (what a backup taken now would contain).
    pub fn disk_image(&self, vmid: u32) -> Option<Vec<u8>> {
        let day = self.shared.clock.day();
        self.state(|c| c.guest(vmid).map(|g| g.disk.clone()))
            .map(|disk| disk.bytes(day))
    }

    /// `(method, path template)` of every endpoint the simulator implements.
    pub fn endpoints(&self) -> Vec<(&'static str, &'static str)> {
        self.shared.router.endpoints()
    }

    /// Stops the listeners and removes the temporary dump directory (if it created one).
    pub async fn shutdown(mut self) {
        for server in std::mem::take(&mut self.servers) {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
        if self.owns_dump_dir {
            let _ = std::fs::remove_dir_all(&self.dump_dir); // created by us in start()
        }
    }
}
