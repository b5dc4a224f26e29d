//! Helpers for the client-against-simulator tests: a schema-validating simulator on loopback
//! HTTPS and a [`PveClient`] pointed at it, authenticated with the API token or with a
//! user/password ticket, verifying TLS by fingerprint pin or by the simulator's CA.

use std::path::PathBuf;
use std::time::Duration;

use homelab_autopilot::proxmox::{
    ClientConfig, Credentials, Endpoint, GuestRef, GuestType, NodeName, PbsClient, PveClient, RetryPolicy,
    Secret, TaskRef, TaskSuccess, Timeouts, TlsVerify, Vmid,
};
use homelab_autopilot::pvesim::{SimConfig, SimHandle, Simulator};

/// How the client authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// `PVEAPIToken=...`.
    Token,
    /// `POST /access/ticket`, cookie + CSRF header.
    Ticket,
}

/// How the client verifies the simulator's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsKind {
    /// Pin the SHA-256 fingerprint of the leaf (the homelab default).
    Pin,
    /// Trust the simulator's CA.
    Ca,
}

/// The official schema; `None` (with a printed note) when `../shared` is absent: these tests
/// only run against a schema-validating simulator.
pub fn schema() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/proxmox/pve-apischema.json");
    if path.exists() {
        Some(path)
    } else {
        println!(
            "SKIP proxmox client integration test: {} not found (the simulator must validate against the official schema)",
            path.display()
        );
        None
    }
}

/// A simulator config with schema validation and tasks 1000x faster; `None` to skip.
pub fn sim_config() -> Option<SimConfig> {
    Some(SimConfig {
        schema: Some(schema()?),
        time_scale: 0.001,
        ..SimConfig::default()
    })
}

/// Credentials for the simulator.
pub fn credentials(sim: &SimHandle, auth: AuthKind) -> Credentials {
    match auth {
        AuthKind::Token => Credentials::ApiToken {
            token_id: sim.token_id().to_owned(),
            secret: Secret::new(sim.token_secret()),
        },
        AuthKind::Ticket => Credentials::Password {
            username: sim.username().to_owned(),
            password: Secret::new(sim.password()),
        },
    }
}

/// TLS verification for the simulator.
pub fn tls(sim: &SimHandle, kind: TlsKind) -> TlsVerify {
    match kind {
        TlsKind::Pin => TlsVerify::Fingerprint(sim.fingerprint().to_owned()),
        TlsKind::Ca => TlsVerify::CaPem(sim.ca_pem().to_owned()),
    }
}

/// Fast retries and short timeouts, so fault tests finish quickly.
pub fn fast_policy(config: &mut ClientConfig) {
    config.retries = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    config.timeouts = Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(20),
    };
}

/// A client config for the simulator's main endpoint.
pub fn config(sim: &SimHandle, auth: AuthKind, tls_kind: TlsKind) -> ClientConfig {
    let mut config = ClientConfig::new(
        vec![Endpoint::new(sim.url(), 0)],
        credentials(sim, auth),
        tls(sim, tls_kind),
    );
    fast_policy(&mut config);
    config
}

/// A client for the simulator's main endpoint.
pub fn client(sim: &SimHandle, auth: AuthKind, tls_kind: TlsKind) -> PveClient {
    PveClient::new(config(sim, auth, tls_kind)).expect("client config is valid")
}

/// A typed PBS client for the simulator's PBS listener (started with `pbs_listen`), with the
/// default API token and the PBS certificate's fingerprint pinned.
pub fn pbs_client(sim: &SimHandle) -> PbsClient {
    let url = sim.pbs_url().expect("simulator started with pbs_listen");
    let fingerprint = sim.pbs_fingerprint().unwrap_or_default().to_owned();
    let mut config = ClientConfig::new(
        vec![Endpoint::new(url, 0)],
        credentials(sim, AuthKind::Token),
        TlsVerify::Fingerprint(fingerprint),
    );
    fast_policy(&mut config);
    PbsClient::new(config).expect("PBS client config is valid")
}

/// [`sim_config`] plus the simulated PBS on an ephemeral port; `None` to skip.
pub fn sim_config_with_pbs() -> Option<SimConfig> {
    Some(SimConfig {
        pbs_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..sim_config()?
    })
}

/// A simulator plus a client for it.
pub struct Env {
    pub sim: SimHandle,
    pub client: PveClient,
}

impl Env {
    /// Starts a simulator with `config` and a fingerprint-pinning client; `None` to skip.
    pub async fn start_with(config: Option<SimConfig>, auth: AuthKind) -> Option<Env> {
        let sim = Simulator::start(config?).await.expect("simulator starts");
        let client = client(&sim, auth, TlsKind::Pin);
        Some(Env { sim, client })
    }

    /// The default fast, schema-validating simulator; `None` to skip.
    pub async fn start(auth: AuthKind) -> Option<Env> {
        Env::start_with(sim_config(), auth).await
    }

    /// Waits for a task through the client's task API (poll 5 ms, deadline 20 s).
    pub async fn wait(&self, task: &TaskRef) -> TaskSuccess {
        wait(&self.client, task)
            .await
            .unwrap_or_else(|e| panic!("task {task} failed: {e}"))
    }
}

/// Waits for a task with `client` (poll 5 ms, deadline 20 s).
pub async fn wait(client: &PveClient, task: &TaskRef) -> homelab_autopilot::proxmox::Result<TaskSuccess> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    client.wait_task(task, Duration::from_millis(5), deadline).await
}

/// A node name.
pub fn node(name: &str) -> NodeName {
    NodeName::new(name).expect("valid node name")
}

/// A VMID.
pub fn vmid(id: u32) -> Vmid {
    Vmid::new(id).expect("valid VMID")
}

/// A QEMU guest reference.
pub fn vm(node_name: &str, id: u32) -> GuestRef {
    GuestRef::new(node(node_name), GuestType::Qemu, vmid(id))
}

/// An LXC guest reference.
pub fn ct(node_name: &str, id: u32) -> GuestRef {
    GuestRef::new(node(node_name), GuestType::Lxc, vmid(id))
}

/// Runs `$scenario(AuthKind)` as one test per authentication kind.
macro_rules! per_auth {
    ($scenario:ident: $token:ident, $ticket:ident) => {
        #[tokio::test]
        async fn $token() {
            $scenario($crate::proxmox_client_common::AuthKind::Token).await;
        }
        #[tokio::test]
        async fn $ticket() {
            $scenario($crate::proxmox_client_common::AuthKind::Ticket).await;
        }
    };
}
pub(crate) use per_auth;
