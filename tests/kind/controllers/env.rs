//! The environment of the controller e2e tests: a namespace, the PVE simulator, and the
//! operator's ProxmoxCluster and Service controllers.
//!
//! Two modes, chosen by `AUTOPILOT_E2E_OPERATOR`:
//! - unset / `in-process` (default): the simulator (seeded with `src/demo/pvesim-seed.yaml`) and
//!   the controllers run in this test process, against the real API server in `KUBECONFIG`.
//! - `chart`: the operator was installed with the Helm chart (`tests/kind/run-in-kind.sh`) and
//!   watches every namespace; a `pvesim` runs outside. `AUTOPILOT_E2E_PVESIM_INFO` is its
//!   `--info-file` (how the tests reach it) and `AUTOPILOT_E2E_PVESIM_URL` the URL the operator's
//!   pod uses. Tests that need an in-process simulator or operator skip in this mode.

use std::time::Duration;

use homelab_autopilot::controllers::pve::{ProxmoxDeps, Tuning};
use homelab_autopilot::controllers::{Health, LeaseConfig, Operator, OperatorDeps, register_controllers};
use homelab_autopilot::crd::{ProxmoxCluster, Service};
use homelab_autopilot::demo::{sim_seed, standin::StandIn};
use homelab_autopilot::metrics::Metrics;
use homelab_autopilot::proxmox::{ClientConfig, Credentials, Endpoint, PveClient, Secret, TlsVerify};
use homelab_autopilot::pvesim::{SimConfig, SimHandle, Simulator};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fixtures::example_manifests;
use crate::harness::{DEADLINE, Harness, TestNamespace, poll};

/// Whether the operator under test is the chart-installed one.
pub fn chart_mode() -> bool {
    std::env::var("AUTOPILOT_E2E_OPERATOR").is_ok_and(|m| m == "chart")
}

/// How to reach the simulated Proxmox VE.
pub struct Pve {
    /// The in-process simulator (in-process mode).
    pub sim: Option<SimHandle>,
    /// The URL the operator uses (the ProxmoxCluster's endpoint).
    pub operator_url: String,
    /// API token id and secret.
    pub token_id: String,
    pub token_secret: String,
    /// Certificate fingerprint.
    pub fingerprint: String,
    /// What a human uses in the Proxmox UI (migrate, stop) and what tests read PVE with.
    pub admin: PveClient,
}

impl Pve {
    async fn start() -> Pve {
        if chart_mode() {
            let path =
                std::env::var("AUTOPILOT_E2E_PVESIM_INFO").expect("AUTOPILOT_E2E_PVESIM_INFO in chart mode");
            let info: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("pvesim info file")).unwrap();
            let text = |k: &str| {
                info[k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{k} in {path}"))
                    .to_owned()
            };
            let operator_url = std::env::var("AUTOPILOT_E2E_PVESIM_URL").unwrap_or_else(|_| text("url"));
            return Pve::new(
                None,
                &text("url"),
                operator_url,
                &text("tokenId"),
                &text("tokenSecret"),
                &text("fingerprint"),
            );
        }
        let sim = Simulator::start(SimConfig {
            seed: sim_seed().unwrap(),
            time_scale: 0.01,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let (url, id, secret, fp) = (
            sim.url().to_owned(),
            sim.token_id().to_owned(),
            sim.token_secret().to_owned(),
            sim.fingerprint().to_owned(),
        );
        Pve::new(Some(sim), &url, url.clone(), &id, &secret, &fp)
    }

    fn new(sim: Option<SimHandle>, url: &str, operator_url: String, id: &str, secret: &str, fp: &str) -> Pve {
        let admin = PveClient::new(ClientConfig::new(
            vec![Endpoint::new(url, 0)],
            Credentials::ApiToken {
                token_id: id.to_owned(),
                secret: Secret::new(secret),
            },
            TlsVerify::Fingerprint(fp.to_owned()),
        ))
        .unwrap();
        Pve {
            sim,
            operator_url,
            token_id: id.to_owned(),
            token_secret: secret.to_owned(),
            fingerprint: fp.to_owned(),
            admin,
        }
    }
}

/// A running in-process operator.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), homelab_autopilot::controllers::Error>>,
}

/// A namespace, the simulator and the controllers.
pub struct Env {
    pub harness: Harness,
    pub ns: TestNamespace,
    pub pve: Pve,
    /// The in-process operator's metrics.
    pub metrics: Metrics,
    /// Stand-in for the guests' web and SSH servers (in-process mode).
    pub web: Option<StandIn>,
    operator: Option<Running>,
    stopped: bool,
}

/// Timing for tests: poll tasks often and look for drift every second; reconnect to a failing
/// cluster only after a long time, so that a quick recovery proves the Secret watch re-triggered
/// the cluster.
pub fn test_tuning() -> Tuning {
    Tuning {
        task_poll: Duration::from_millis(200),
        reconnect_min: Duration::from_secs(600),
        reconnect_max: Duration::from_secs(600),
        drift_check_max: Duration::from_secs(1),
        ..Tuning::default()
    }
}

impl Env {
    /// Connects (or returns `None` after the SKIP line), installs the CRDs, creates a namespace,
    /// starts the simulator and, in in-process mode, the operator with the admin client.
    pub async fn start(prefix: &str) -> Option<Env> {
        let harness = Harness::connect().await?;
        harness.install_crds().await;
        let ns = TestNamespace::create(&harness.client(), prefix).await;
        let mut env = Env::prepare(harness, ns).await;
        if !chart_mode() {
            let client = env.harness.client();
            env.run_operator(client, None).await;
        }
        Some(env)
    }

    /// The namespace and simulator, without an operator (the caller starts one).
    pub async fn prepare(harness: Harness, ns: TestNamespace) -> Env {
        let pve = Pve::start().await;
        let web = if chart_mode() {
            None
        } else {
            Some(StandIn::start().await.unwrap())
        };
        Env {
            harness,
            ns,
            pve,
            metrics: Metrics::new(),
            web,
            operator: None,
            stopped: false,
        }
    }

    /// Starts the controllers in-process with `client`, watching only the test namespace.
    pub async fn run_operator(&mut self, client: Client, lease: Option<LeaseConfig>) {
        let deps = OperatorDeps::new(
            "/nonexistent".into(),
            None,
            ProxmoxDeps::new(None).with_tuning(test_tuning()),
        );
        let mut operator = Operator::new(
            client,
            self.metrics.clone(),
            Some(self.ns.name.clone()),
            "e2e-operator",
            deps,
        );
        operator = register_controllers(operator);
        if let Some(lease) = lease {
            operator = operator.leader_election(lease);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(operator.run(Health::new(), stop.clone()));
        self.operator = Some(Running { stop, task });
    }

    /// Rewrites an example for this environment: the cluster's endpoint, fingerprint and token
    /// point at the simulator; HTTP/TCP checks at the stand-in (or are dropped in chart mode,
    /// where the operator's pod cannot reach this process).
    pub fn rewrite(&self, mut doc: Value) -> Value {
        match doc["kind"].as_str() {
            Some("ProxmoxCluster") => {
                doc["spec"]["endpoints"] = json!([{"url": self.pve.operator_url}]);
                doc["spec"]["tls"] = json!({"fingerprint": self.pve.fingerprint});
                doc["spec"]["resyncIntervalSeconds"] = json!(30);
            }
            Some("Service") => {
                let checks = doc["spec"]["healthChecks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let kept: Vec<Value> = checks
                    .into_iter()
                    .filter_map(|mut c| match (c["type"].as_str(), &self.web) {
                        (Some("HTTP"), Some(web)) => {
                            let url = url::Url::parse(c["http"]["url"].as_str()?).ok()?;
                            c["http"]["url"] = json!(format!("{}{}", web.url(), url.path()));
                            Some(c)
                        }
                        (Some("TCP"), Some(web)) => {
                            c["tcp"] = json!({"host": "127.0.0.1", "port": web.addr().port()});
                            Some(c)
                        }
                        (Some("HTTP" | "TCP"), None) => None,
                        _ => Some(c),
                    })
                    .collect();
                doc["spec"]["healthChecks"] = Value::Array(kept);
            }
            _ => {}
        }
        doc
    }

    /// Creates the token Secret the examples' ProxmoxCluster uses, as README's install steps do
    /// (the examples ship no Secrets), holding the simulator's token.
    pub async fn create_token_secret(&self) {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pve-token"},
            "stringData": {"tokenId": self.pve.token_id, "tokenSecret": self.pve.token_secret},
        });
        self.ns
            .apply(&secret, false)
            .await
            .unwrap_or_else(|e| panic!("creating Secret pve-token: {e:?}"));
    }

    /// Applies the examples `select` picks, rewritten for this environment.
    pub async fn apply_examples(&self, select: impl Fn(&Value) -> bool) {
        for m in example_manifests() {
            if select(&m.value) {
                let doc = self.rewrite(m.value);
                self.ns
                    .apply(&doc, false)
                    .await
                    .unwrap_or_else(|e| panic!("applying {}: {e:?}", m.origin));
            }
        }
    }

    /// The ProxmoxClusters of the namespace.
    pub fn clusters(&self) -> Api<ProxmoxCluster> {
        Api::namespaced(self.harness.client(), &self.ns.name)
    }

    /// The Services of the namespace.
    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.harness.client(), &self.ns.name)
    }

    /// Waits until the ProxmoxCluster `name` satisfies `check`.
    pub async fn wait_cluster(
        &self,
        what: &str,
        name: &str,
        check: impl Fn(&ProxmoxCluster) -> bool,
    ) -> ProxmoxCluster {
        let api = self.clusters();
        let (api, check) = (&api, &check);
        poll(what, DEADLINE, || async move {
            api.get(name).await.ok().filter(|c| check(c))
        })
        .await
    }

    /// Waits until the Service `name` satisfies `check`.
    pub async fn wait_service(&self, what: &str, name: &str, check: impl Fn(&Service) -> bool) -> Service {
        let api = self.services();
        let (api, check) = (&api, &check);
        poll(what, DEADLINE, || async move {
            api.get(name).await.ok().filter(|s| check(s))
        })
        .await
    }

    /// Stops the operator (gracefully) and deletes the namespace.
    pub async fn stop(mut self) {
        if let Some(op) = self.operator.take() {
            op.stop.cancel();
            let result = tokio::time::timeout(DEADLINE, op.task).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "the operator did not stop cleanly: {result:?}"
            );
        }
        self.stopped = true;
        self.ns.clone().delete().await;
        if let Some(sim) = self.pve.sim.take() {
            sim.shutdown().await;
        }
    }
}

impl Drop for Env {
    /// A test that panicked before [`Env::stop`] still gets its namespace deleted (from a thread
    /// of its own with a fresh client: the test's runtime is unwinding).
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Some(op) = &self.operator {
            op.stop.cancel();
        }
        let name = self.ns.name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = Client::try_default().await {
                    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
                    let _ = namespaces.delete(&name, &Default::default()).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Whether the condition `type_` of `conditions` has `status` (and `reason`, if given).
pub fn has_condition(
    conditions: &[homelab_autopilot::crd::Condition],
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> bool {
    conditions.iter().any(|c| {
        c.type_ == type_
            && serde_json::to_value(c.status)
                .ok()
                .as_ref()
                .and_then(Value::as_str)
                == Some(status)
            && reason.is_none_or(|r| c.reason == r)
    })
}
