//! Shared e2e plumbing: connect to the API server from `KUBECONFIG` (or skip), install the
//! CRDs, give each test a fresh namespace that is deleted afterwards, wait on conditions with
//! a deadline (never sleep), and talk to resources of any kind.
//!
//! Later suites (controllers run in-process against the PVE simulator) use the same
//! [`Harness`]: `Harness::connect()`, `install_crds()`, then `in_namespace(|ns| async { .. })`.

use std::future::Future;
use std::time::Duration;

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
            eprintln!("{SKIP_MESSAGE}");
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
                eprintln!("{SKIP_MESSAGE}");
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
        let name = format!("e2e-{:08x}", rand::random::<u32>());
        let namespaces: Api<Namespace> = Api::all(self.client());
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
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let ctx = TestNamespace {
            harness: self.clone(),
            name: name.clone(),
        };
        let outcome = tokio::spawn(test(ctx)).await;
        if let Err(e) = namespaces.delete(&name, &DeleteParams::default()).await {
            eprintln!("warning: deleting namespace {name}: {e}");
        }
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
    name: String,
}

impl TestNamespace {
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

    /// Lists `plural` in this namespace as the server-side table `kubectl get` prints.
    pub async fn get_table(&self, group: &str, version: &str, plural: &str) -> Value {
        let path = format!("/apis/{group}/{version}/namespaces/{}/{plural}", self.name);
        let request = http::Request::get(path)
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
