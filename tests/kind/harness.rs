//! Shared e2e plumbing: connect to the API server from `KUBECONFIG` (or skip), install the
//! CRDs, give each test a fresh namespace that is deleted afterwards, wait on conditions with
//! a deadline (never sleep), and talk to resources of any kind.
//!
//! Later suites (controllers run in-process against the PVE simulator) use the same
//! [`Harness`]: `Harness::connect()`, `install_crds()`, then `in_namespace(|ns| async { .. })`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use homelab_autopilot::controllers::{self, Health};
use homelab_autopilot::metrics::Metrics;
use k8s_openapi::api::events::v1::Event;
use kube::CustomResourceExt;
use kube::ResourceExt;
use kube::api::ListParams;
use tokio_util::sync::CancellationToken;

use homelab_autopilot::crd::generate::crds;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::KubeConfigOptions;
use kube::core::{GroupVersionKind, Status};
use kube::discovery::{ApiResource, pinned_kind};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Config, Resource};
use serde_json::Value;

/// The message a run without a reachable cluster prints (and the test passes).
pub const SKIP_MESSAGE: &str = "SKIP tests/kind: no Kubernetes API (set KUBECONFIG)";
/// Prints [`SKIP_MESSAGE`] once per test run, straight to stderr: libtest captures what passing
/// tests print with `eprintln!`, so the line would never show in `cargo test`.
fn print_skip() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{SKIP_MESSAGE}");
    });
}

/// Field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "homelab-autopilot-e2e";
/// Default deadline of waits.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A connection to the test cluster.
#[derive(Clone)]
pub struct Harness {
    client: Client,
}

impl Harness {
    /// Connects to the API server `KUBECONFIG` points to. Returns `None` (after printing
    /// [`SKIP_MESSAGE`]) when `KUBECONFIG` is unset or the server does not answer, so the
    /// calling test passes without a cluster.
    pub async fn connect() -> Option<Self> {
        if std::env::var_os("KUBECONFIG").is_none_or(|p| p.is_empty()) {
            print_skip();
            return None;
        }
        let connected = async {
            let config = Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .ok()?;
            let client = Client::try_from(config).ok()?;
            client.apiserver_version().await.ok()?;
            Some(Self { client })
        };
        match tokio::time::timeout(Duration::from_secs(10), connected).await {
            Ok(Some(harness)) => Some(harness),
            _ => {
                print_skip();
                None
            }
        }
    }

    /// The kube client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Server-side applies every generated CRD and waits until each is `Established`.
    pub async fn install_crds(&self) -> Vec<CustomResourceDefinition> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut installed = Vec::new();
        for crd in crds() {
            let name = crd.metadata.name.clone().expect("CRD has a name");
            api.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            let established = wait_for(api.clone(), &name, conditions::is_crd_established(), DEADLINE).await;
            installed.push(established);
        }
        installed
    }

    /// Runs `test` with a fresh namespace and deletes the namespace afterwards, also when the
    /// test panics (the panic is then re-raised).
    pub async fn in_namespace<F, Fut>(&self, test: F)
    where
        F: FnOnce(TestNamespace) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let ns = TestNamespace::create(&self.client, "e2e").await;
        let name = ns.name.clone();
        let outcome = tokio::spawn(test(ns.clone())).await;
        ns.delete().await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("test task in {name} failed: {e}"),
            }
        }
    }

    /// The API of `kind` (`apiVersion` + `kind` of a manifest), found through discovery.
    pub async fn resource(&self, api_version: &str, kind: &str) -> ApiResource {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, _caps) = pinned_kind(&self.client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discovering {api_version} {kind}: {e}"));
        resource
    }
}

/// A namespace that exists for one test.
#[derive(Clone)]
pub struct TestNamespace {
    harness: Harness,
    /// The namespace's name.
    pub name: String,
}

impl TestNamespace {
    /// Creates a namespace `<prefix>-<random>` (labelled as an e2e namespace).
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/part-of".to_string(),
                        "homelab-autopilot-e2e".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self {
            harness: Harness {
                client: client.clone(),
            },
            name,
        }
    }

    /// Deletes the namespace (and so everything in it).
    pub async fn delete(self) {
        let namespaces: Api<Namespace> = Api::all(self.harness.client());
        if let Err(e) = namespaces.delete(&self.name, &DeleteParams::default()).await {
            eprintln!("warning: deleting namespace {}: {e}", self.name);
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The harness.
    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// A dynamic API for the manifest's kind in this namespace.
    pub async fn api_for(&self, manifest: &Value) -> Api<DynamicObject> {
        let api_version = manifest["apiVersion"].as_str().expect("manifest has apiVersion");
        let kind = manifest["kind"].as_str().expect("manifest has kind");
        let resource = self.harness.resource(api_version, kind).await;
        Api::namespaced_with(self.harness.client(), &self.name, &resource)
    }

    /// Server-side applies `manifest` into this namespace (with `dry_run`, nothing is stored).
    pub async fn apply(&self, manifest: &Value, dry_run: bool) -> Result<DynamicObject, Box<Status>> {
        let api = self.api_for(manifest).await;
        let name = manifest["metadata"]["name"]
            .as_str()
            .expect("manifest has a name");
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        api.patch(name, &params, &Patch::Apply(manifest))
            .await
            .map_err(api_error)
    }

    /// Server-side applies `status` (a partial object with apiVersion, kind, metadata.name and
    /// status) to the status subresource.
    pub async fn apply_status(&self, manifest: &Value) -> DynamicObject {
        let api = self.api_for(manifest).await;
        let name = manifest["metadata"]["name"]
            .as_str()
            .expect("manifest has a name");
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(manifest),
        )
        .await
        .unwrap_or_else(|e| panic!("applying status of {name}: {e}"))
    }

    /// Creates `manifest` as a server-side dry run and returns the API server's answer.
    pub async fn dry_run_create(&self, manifest: &Value) -> Result<DynamicObject, Box<Status>> {
        let api = self.api_for(manifest).await;
        let object: DynamicObject = serde_json::from_value(manifest.clone()).expect("manifest is an object");
        api.create(
            &PostParams {
                dry_run: true,
                field_manager: Some(FIELD_MANAGER.into()),
            },
            &object,
        )
        .await
        .map_err(api_error)
    }

    /// Creates `manifest` as a server-side dry run with strict field validation (what
    /// `kubectl create`/`apply` ask for by default): unknown fields are an error, not dropped.
    pub async fn dry_run_create_strict(&self, manifest: &Value) -> Result<Value, Box<Status>> {
        let api = self.api_for(manifest).await;
        let path = format!(
            "{}?dryRun=All&fieldValidation=Strict&fieldManager={FIELD_MANAGER}",
            api.resource_url()
        );
        let request = ::http::Request::post(path)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(manifest).expect("manifest serializes"))
            .expect("request builds");
        self.harness
            .client
            .request::<Value>(request)
            .await
            .map_err(api_error)
    }

    /// Lists `plural` in this namespace as the server-side table `kubectl get` prints.
    pub async fn get_table(&self, group: &str, version: &str, plural: &str) -> Value {
        let path = format!("/apis/{group}/{version}/namespaces/{}/{plural}", self.name);
        let request = ::http::Request::get(path)
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .expect("request builds");
        self.harness
            .client
            .request::<Value>(request)
            .await
            .expect("table request")
    }
}

/// The API server's `Status` of a failed request, or a panic for transport errors.
fn api_error(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(status) => status,
        other => panic!("request failed before the API server answered: {other}"),
    }
}

/// Waits until `cond` holds for the object `name`, at most `deadline`; returns the object.
pub async fn wait_for<K>(api: Api<K>, name: &str, cond: impl Condition<K>, deadline: Duration) -> K
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(deadline, await_condition(api, name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} does not exist"),
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!("{name} did not reach the expected state within {deadline:?}"),
    }
}

/// A client for `KUBECONFIG`, or `None` after printing [`SKIP_MESSAGE`].
pub async fn client_or_skip() -> Option<Client> {
    Harness::connect().await.map(|h| h.client())
}

/// Polls `check` every 100 ms until it returns `Some`, failing after `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Installs (server-side apply) the CRD of `K` and waits until it is established.
pub async fn apply_crd<K: CustomResourceExt>(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = K::crd_name();
    api.patch(
        name,
        &PatchParams::apply("homelab-autopilot-runtime-test").force(),
        &Patch::Apply(K::crd()),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        DEADLINE,
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    .unwrap()
    .unwrap();
}

/// Deletes the CRD of `K` if present and waits until it is gone.
pub async fn delete_crd<K: CustomResourceExt>(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = K::crd_name();
    let Some(crd) = api.get_opt(name).await.unwrap() else {
        return;
    };
    let uid = crd.uid().unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(DEADLINE, await_condition(api, name, conditions::is_deleted(&uid)))
        .await
        .unwrap()
        .unwrap();
}

/// Waits for an Event with `reason` regarding object `name`.
pub async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> Event {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let api = &api;
    poll(&format!("Event {reason} on {name}"), DEADLINE, || async move {
        api.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
    })
    .await
}

/// Serves the operator's HTTP endpoints on a free loopback port.
pub async fn start_http(metrics: Metrics, health: Health) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(controllers::http::serve(
        listener,
        metrics,
        health,
        stop.clone().cancelled_owned(),
    ));
    (addr, stop)
}

/// GET `path` over real HTTP: status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A loopback address with a port that was free a moment ago (for a child process to bind).
pub fn free_loopback_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Like [`get`], but `None` while nothing listens yet.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    Some((resp.status().as_u16(), resp.text().await.ok()?))
}
