//! Helpers for the controller tests: the simulator seeded with the cluster the examples
//! describe, ProxmoxClusters and Services pointed at it, and one-call reconcile passes of the
//! cores (the same functions the kube controllers and the demo drive).

use std::collections::BTreeMap;
use std::time::Duration;

use homelab_autopilot::controllers::kit::Outcome;
use homelab_autopilot::controllers::proxmox_cluster;
use homelab_autopilot::controllers::proxmox_cluster::plan::ClusterPlan;
use homelab_autopilot::controllers::pve::guest::Unavailable;
use homelab_autopilot::controllers::pve::resolve::SecretData;
use homelab_autopilot::controllers::pve::{ClusterAccess, ClusterRefs, ProxmoxDeps, Tuning, cluster_client};
use homelab_autopilot::controllers::service::{self, ServiceDeps, ServiceRefs};
use homelab_autopilot::crd::conditions::{Condition, ConditionStatus, find_condition};
use homelab_autopilot::crd::proxmox_cluster::ProxmoxClusterStatus;
use homelab_autopilot::crd::{ProxmoxClusterSpec, ServiceSpec, ServiceStatus};
use homelab_autopilot::demo::sim_seed;
use homelab_autopilot::proxmox::api::StopOptions;
use homelab_autopilot::proxmox::{
    ClientConfig, Credentials, Endpoint, GuestRef, PveClient, Secret, TlsVerify,
};
use homelab_autopilot::pvesim::{SimConfig, SimHandle, Simulator};
use jiff::Timestamp;

use crate::pvesim_common::schema_path;

/// A simulator of the examples' cluster, and the core's dependencies.
pub struct Lab {
    pub sim: SimHandle,
    pub deps: ProxmoxDeps,
    /// The Service controller's own state (health-check clients, per-Service memory).
    pub service: ServiceDeps,
    /// What a human uses in the Proxmox UI.
    pub admin: PveClient,
    pub cluster: ProxmoxClusterSpec,
    pub secret: SecretData,
    /// Bumped by [`Lab::set_secret`] (the Secret's resourceVersion).
    pub secret_version: u64,
}

pub const NAMESPACE: &str = "lab";
pub const CLUSTER_UID: &str = "uid-cluster";

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

pub fn cond<'a>(conditions: &'a [Condition], t: &str) -> &'a Condition {
    find_condition(conditions, t).unwrap_or_else(|| panic!("no {t} in {conditions:#?}"))
}

/// Status and reason of a condition, to compare in one assertion.
pub fn summary(c: &Condition) -> (ConditionStatus, &str) {
    (c.status, c.reason.as_str())
}

pub fn event_reasons<S>(o: &Outcome<S>) -> Vec<&str> {
    o.events.iter().map(|e| e.reason.as_str()).collect()
}

impl Lab {
    /// A fast, schema-validating simulator of `src/demo/pvesim-seed.yaml`.
    pub async fn start() -> Lab {
        Self::start_with(SimConfig::default()).await
    }

    /// The same with some settings of `config` (seed, schema and time scale are set here).
    pub async fn start_with(config: SimConfig) -> Lab {
        Self::start_seeded(SimConfig {
            seed: sim_seed().unwrap(),
            ..config
        })
        .await
    }

    /// A simulator of `config.seed` (schema and time scale are set here).
    pub async fn start_seeded(config: SimConfig) -> Lab {
        let sim = Simulator::start(SimConfig {
            schema: schema_path(),
            time_scale: 0.001,
            ..config
        })
        .await
        .expect("simulator starts");
        let cluster: ProxmoxClusterSpec = serde_yaml::from_str(&format!(
            "endpoints: [{{url: '{}'}}]\ncredentialsSecretRef: {{name: pve-api-token}}\n\
             tls: {{fingerprint: '{}'}}\nstorages: [{{name: local-lvm}}, {{name: pbs-homelab}}]\n",
            sim.url(),
            sim.fingerprint()
        ))
        .unwrap();
        let secret: SecretData = [
            ("tokenId".to_owned(), sim.token_id().as_bytes().to_vec()),
            ("tokenSecret".to_owned(), sim.token_secret().as_bytes().to_vec()),
        ]
        .into();
        let admin = PveClient::new(ClientConfig::new(
            vec![Endpoint::new(sim.url(), 0)],
            Credentials::ApiToken {
                token_id: sim.token_id().to_owned(),
                secret: Secret::new(sim.token_secret()),
            },
            TlsVerify::Fingerprint(sim.fingerprint().to_owned()),
        ))
        .unwrap();
        let tuning = Tuning {
            task_poll: Duration::from_millis(100),
            ..Tuning::default()
        };
        Lab {
            sim,
            deps: ProxmoxDeps::new(None).with_tuning(tuning),
            service: ServiceDeps::default(),
            admin,
            cluster,
            secret,
            secret_version: 1,
        }
    }

    /// Something changed the cluster outside the operator. The operator sees it when its
    /// `/cluster/resources` snapshot is next refreshed (at most one resync window later); tests
    /// skip that wait.
    pub fn changed_by_hand(&self) {
        self.deps.snapshots.invalidate(CLUSTER_UID);
    }

    /// Replaces the Secret's data (a new resourceVersion).
    pub fn set_secret(&mut self, pairs: &[(&str, &str)]) {
        self.secret = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect::<BTreeMap<_, _>>();
        self.secret_version += 1;
    }

    fn refs<'a>(&'a self, spec: &'a ProxmoxClusterSpec, version: &'a str, secret: bool) -> ClusterRefs<'a> {
        ClusterRefs {
            uid: CLUSTER_UID,
            namespace: NAMESPACE,
            generation: Some(1),
            spec,
            secret: secret.then_some((&self.secret, version)),
            ca: None,
        }
    }

    /// One ProxmoxCluster pass with `spec` (the Secret exists when `secret`).
    pub async fn cluster_pass_with(
        &self,
        spec: &ProxmoxClusterSpec,
        previous: &ProxmoxClusterStatus,
        secret: bool,
        now: Timestamp,
    ) -> ClusterPlan {
        let version = self.secret_version.to_string();
        proxmox_cluster::reconcile_core(&self.deps, self.refs(spec, &version, secret), previous, now).await
    }

    /// One ProxmoxCluster pass with the lab's spec and Secret.
    pub async fn cluster_pass(&self, previous: &ProxmoxClusterStatus, now: Timestamp) -> ClusterPlan {
        self.cluster_pass_with(&self.cluster, previous, true, now).await
    }

    /// How a Service driver finds the lab's cluster.
    pub async fn access(&self) -> ClusterAccess {
        let version = self.secret_version.to_string();
        let client = cluster_client(&self.deps, self.refs(&self.cluster, &version, true))
            .await
            .map_err(|u| Unavailable {
                reason: u.reason.to_owned(),
                message: u.message,
            });
        ClusterAccess {
            name: "homelab".into(),
            uid: CLUSTER_UID.into(),
            resync: Duration::from_secs(300),
            client,
        }
    }

    /// One Service pass.
    pub async fn service_pass_with(
        &self,
        uid: &str,
        spec: &ServiceSpec,
        previous: &ServiceStatus,
        access: &ClusterAccess,
        now: Timestamp,
    ) -> Outcome<ServiceStatus> {
        let refs = ServiceRefs {
            uid,
            generation: Some(1),
            spec,
            status: previous,
            cluster: access,
        };
        service::reconcile_core(&self.deps, &self.service, refs, now).await
    }

    /// One Service pass against the lab's cluster.
    pub async fn service_pass(
        &self,
        uid: &str,
        spec: &ServiceSpec,
        previous: &ServiceStatus,
        now: Timestamp,
    ) -> Outcome<ServiceStatus> {
        let access = self.access().await;
        self.service_pass_with(uid, spec, previous, &access, now).await
    }

    /// The first Service pass (no stored status) at t=0 against the lab's cluster.
    pub async fn first_service_pass(&self, uid: &str, spec: &ServiceSpec) -> Outcome<ServiceStatus> {
        self.service_pass(uid, spec, &ServiceStatus::default(), at(0))
            .await
    }

    /// Waits for a PVE task of the simulator.
    pub async fn wait_task(&self, upid: &str) {
        let task = self
            .sim
            .wait_task(upid, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("task {upid} did not end"));
        assert!(task.succeeded(), "task {upid} failed: {task:?}");
    }

    /// Stops `guest` by hand, as someone in the Proxmox UI would, and waits for the task.
    pub async fn stop_by_hand(&self, guest: &GuestRef) {
        let task = self
            .admin
            .stop_guest(guest, &StopOptions::default())
            .await
            .expect("stop task starts");
        self.wait_task(task.upid.as_str()).await;
        self.changed_by_hand();
    }

    /// Starts `guest` by hand and waits for the task.
    pub async fn start_by_hand(&self, guest: &GuestRef) {
        let task = self.admin.start_guest(guest).await.expect("start task starts");
        self.wait_task(task.upid.as_str()).await;
        self.changed_by_hand();
    }

    /// The node and whether guest `vmid` runs, in the simulator.
    pub fn guest(&self, vmid: u32) -> Option<(String, bool)> {
        self.sim
            .state(|c| c.guest(vmid).map(|g| (g.node.clone(), g.power.is_up())))
    }
}

/// A Service spec.
pub fn service(vmid: i32, type_: &str, extra: &str) -> ServiceSpec {
    serde_yaml::from_str(&format!(
        "clusterRef: {{name: homelab}}\nvmid: {vmid}\ntype: {type_}\n{extra}"
    ))
    .unwrap()
}
