//! The demo's stand-in for the API server: the objects of `examples/` (embedded, so the release
//! binary works from anywhere) held in memory as the API server would store them. It is the
//! [`Source`] the kinds' cores read through, and [`World::reconcile`] runs any kind's pass with the
//! generic driver's [`run_pass`], as the operator does: no loop per kind. Statuses and Events land
//! on these objects instead of the API.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use jiff::Timestamp;
use kube::Resource;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::controllers::backup_policy::ingest::StoreSettings;
use crate::controllers::backup_policy::{BackupDeps, HasBackupDeps};
use crate::controllers::kit::PlannedEvent;
use crate::controllers::pve::{HasProxmox, ProxmoxDeps};
use crate::controllers::restore_test::{HasRestoreDeps, RestoreDeps};
use crate::controllers::runtime::ControlledKind;
use crate::controllers::runtime::driver::{Env, Reconciler, Source, run_pass};
use crate::controllers::runtime::error::Error;
use crate::controllers::service::{HasServiceDeps, ServiceDeps};
use crate::metrics::Metrics;

/// The namespace the examples are "applied" to.
pub const NAMESPACE: &str = "homelab";

/// Every file of `examples/` (a test keeps this list complete), in the order `kubectl apply -f
/// examples/` reads them.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "00-proxmoxcluster.yaml",
        include_str!("../../examples/00-proxmoxcluster.yaml"),
    ),
    (
        "gitea-service.yaml",
        include_str!("../../examples/gitea-service.yaml"),
    ),
    (
        "nextcloud-backup.yaml",
        include_str!("../../examples/nextcloud-backup.yaml"),
    ),
    (
        "nextcloud-service.yaml",
        include_str!("../../examples/nextcloud-service.yaml"),
    ),
    (
        "replication-job.yaml",
        include_str!("../../examples/replication-job.yaml"),
    ),
    (
        "restore-test.yaml",
        include_str!("../../examples/restore-test.yaml"),
    ),
    (
        "update-policy.yaml",
        include_str!("../../examples/update-policy.yaml"),
    ),
];

/// An Event as `kubectl get events` would list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// When it happened (demo time).
    pub at: Timestamp,
    /// `kind/name` of the regarding object, e.g. `service/nextcloud`.
    pub object: String,
    /// The Event.
    pub event: PlannedEvent,
}

/// What the demo's controllers share, like the operator's `OperatorDeps`.
#[derive(Debug)]
pub struct DemoDeps {
    /// Proxmox clients and timing.
    pub proxmox: ProxmoxDeps,
    /// The Service controller's state.
    pub service: ServiceDeps,
    /// The BackupPolicy controller's state (its chunk store in a temporary directory).
    pub backup: BackupDeps,
    /// The RestoreTest controller's state (the same chunk store).
    pub restore: RestoreDeps,
}

impl HasProxmox for DemoDeps {
    fn proxmox(&self) -> &ProxmoxDeps {
        &self.proxmox
    }
}

impl HasServiceDeps for DemoDeps {
    fn service(&self) -> &ServiceDeps {
        &self.service
    }
}

impl HasBackupDeps for DemoDeps {
    fn backup(&self) -> &BackupDeps {
        &self.backup
    }
}

impl HasRestoreDeps for DemoDeps {
    fn restore(&self) -> &RestoreDeps {
        &self.restore
    }
}

/// The in-memory objects and the dependencies the cores share.
pub struct World {
    /// Every object by (kind, name), as stored JSON (Secrets with base64 `data`).
    objects: BTreeMap<(String, String), Value>,
    /// Every Event so far, oldest first.
    pub events: Vec<RecordedEvent>,
    /// Client cache, health-check clients, per-Service memory, timing.
    pub deps: DemoDeps,
    metrics: Metrics,
}

/// A Secret as the API server stores it: `stringData` folded into base64 `data`.
fn stored_secret(mut doc: Value) -> anyhow::Result<Value> {
    let mut data = serde_json::Map::new();
    if let Some(map) = doc["data"].as_object() {
        for (k, v) in map {
            let text = v.as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .with_context(|| format!("Secret data key {k} is not base64"))?;
            data.insert(k.clone(), Value::from(text));
        }
    }
    if let Some(map) = doc["stringData"].as_object() {
        for (k, v) in map {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            data.insert(k.clone(), Value::from(encoded));
        }
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("stringData");
    }
    doc["data"] = Value::Object(data);
    Ok(doc)
}

/// Fills what the API server would: namespace, UID, generation, creation time.
fn stored(mut doc: Value, created: Timestamp) -> Value {
    let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let meta = &mut doc["metadata"];
    meta["namespace"] = Value::from(NAMESPACE);
    meta["uid"] = Value::from(format!("demo-{kind}-{name}"));
    meta["generation"] = Value::from(1);
    meta["resourceVersion"] = Value::from("1");
    meta["creationTimestamp"] = Value::from(created.to_string());
    doc
}

impl World {
    /// Loads the embedded examples as if applied at `created`.
    pub fn load(created: Timestamp, proxmox: ProxmoxDeps) -> anyhow::Result<Self> {
        let mut world = Self::empty(
            proxmox,
            StoreSettings {
                repo: std::env::temp_dir()
                    .join(format!("homelab-autopilot-demo-store-{}", std::process::id())),
                key_file: None,
            },
        );
        world.apply_at(EXAMPLES, created)?;
        Ok(world)
    }

    /// A world with no objects, its chunk store at `store`.
    pub fn empty(proxmox: ProxmoxDeps, store: StoreSettings) -> Self {
        Self {
            objects: BTreeMap::new(),
            events: Vec::new(),
            deps: DemoDeps {
                proxmox,
                service: ServiceDeps::default(),
                backup: BackupDeps::new(store.clone()),
                restore: RestoreDeps::new(store),
            },
            metrics: Metrics::new(),
        }
    }

    /// Stores the objects of YAML `files` (`(name, text)`, several documents each) as if
    /// `kubectl apply` created them at `created`.
    pub fn apply_at(&mut self, files: &[(&str, &str)], created: Timestamp) -> anyhow::Result<()> {
        let world = self;
        for (file, text) in files {
            for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
                let doc: Value = serde::Deserialize::deserialize(doc)
                    .with_context(|| format!("examples/{file} document {i} is not YAML"))?;
                if doc.is_null() {
                    continue;
                }
                let what = || format!("examples/{file} document {i}");
                let mut doc = stored(doc, created);
                let Some(kind) = doc["kind"].as_str().map(str::to_owned) else {
                    bail!("{}: no kind", what());
                };
                if kind == "Secret" {
                    doc = stored_secret(doc).with_context(what)?;
                }
                let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                world.objects.insert((kind, name), doc);
            }
        }
        Ok(())
    }

    /// Sets annotation `key` to `value` on the stored object `name` of kind `T` (like
    /// `kubectl annotate --overwrite`).
    pub fn annotate<T: Resource<DynamicType = ()>>(
        &mut self,
        name: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let kind = T::kind(&()).into_owned();
        let stored = self
            .objects
            .get_mut(&(kind.clone(), name.to_owned()))
            .with_context(|| format!("no {kind} {name}"))?;
        stored["metadata"]["annotations"][key] = Value::from(value);
        Ok(())
    }

    /// Replaces the stored status of object `name` of kind `T` (a status write that was lost, or
    /// one written by an operator that restarted).
    pub fn set_status<T: Resource<DynamicType = ()>>(
        &mut self,
        name: &str,
        status: &impl Serialize,
    ) -> anyhow::Result<()> {
        let kind = T::kind(&()).into_owned();
        let stored = self
            .objects
            .get_mut(&(kind.clone(), name.to_owned()))
            .with_context(|| format!("no {kind} {name}"))?;
        stored["status"] = serde_json::to_value(status)?;
        Ok(())
    }

    /// The stored object `name` of kind `T`, typed.
    pub fn get<T: Resource<DynamicType = ()> + DeserializeOwned>(&self, name: &str) -> anyhow::Result<T> {
        let kind = T::kind(&()).into_owned();
        let stored = self
            .objects
            .get(&(kind.clone(), name.to_owned()))
            .with_context(|| format!("no {kind} {name}"))?;
        serde_json::from_value(stored.clone()).with_context(|| format!("{kind} {name} does not parse"))
    }

    /// Deletes the object `name` of kind `R::Kind` as the API server does for an object with
    /// our finalizer: the kind's cleanup runs (once per call) and the object goes only when it
    /// reports done. Returns whether the object is gone.
    pub async fn delete<R: Reconciler<DemoDeps>>(
        &mut self,
        name: &str,
        now: Timestamp,
    ) -> anyhow::Result<bool> {
        let obj: R::Kind = self.get(name)?;
        let env = Env {
            deps: &self.deps,
            source: &*self,
            metrics: &self.metrics,
            now,
        };
        let done = matches!(
            R::cleanup(&env, &obj).await?,
            crate::controllers::runtime::driver::Cleanup::Done
        );
        if done {
            let kind = R::Kind::kind(&()).into_owned();
            self.objects.remove(&(kind, name.to_owned()));
        }
        Ok(done)
    }

    /// The stored objects of kind `T`, typed.
    pub fn list<T: Resource<DynamicType = ()> + DeserializeOwned>(&self) -> anyhow::Result<Vec<T>> {
        let kind = T::kind(&());
        self.objects
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), v)| {
                serde_json::from_value(v.clone()).with_context(|| format!("{kind} {name} does not parse"))
            })
            .collect()
    }

    /// Edits every stored object of kind `T` before anything reconciles (the demo rewires the
    /// examples to the simulator as if they had been written that way).
    pub fn edit<T>(&mut self, mut change: impl FnMut(&mut T)) -> anyhow::Result<()>
    where
        T: Resource<DynamicType = ()> + DeserializeOwned + Serialize,
    {
        let kind = T::kind(&());
        for ((k, name), stored) in &mut self.objects {
            if *k != kind {
                continue;
            }
            let mut obj: T = serde_json::from_value(stored.clone())
                .with_context(|| format!("{kind} {name} does not parse"))?;
            change(&mut obj);
            *stored = serde_json::to_value(&obj)?;
        }
        Ok(())
    }

    /// Creates the Secret `name` with these keys, or replaces them in the existing one (like
    /// README's `kubectl create secret generic`, then `kubectl apply` of a changed Secret). The
    /// examples ship no Secrets: the install steps create them.
    pub fn update_secret(&mut self, name: &str, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
        let created = self
            .objects
            .values()
            .find_map(|o| o["metadata"]["creationTimestamp"].as_str().map(str::to_owned));
        let secret = self
            .objects
            .entry(("Secret".to_owned(), name.to_owned()))
            .or_insert_with(|| {
                let mut doc = serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": name}, "data": {},
                });
                doc["metadata"]["creationTimestamp"] = created.map_or(Value::Null, Value::from);
                doc
            });
        let meta = &mut secret["metadata"];
        meta["namespace"] = Value::from(NAMESPACE);
        meta["uid"] = Value::from(format!("demo-secret-{name}"));
        for (k, v) in pairs {
            secret["data"][*k] = Value::from(base64::engine::general_purpose::STANDARD.encode(v));
        }
        let version = secret["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        secret["metadata"]["resourceVersion"] = Value::from((version + 1).to_string());
        Ok(())
    }

    /// One pass of kind `R` over each of its objects at `now`, with the generic driver's
    /// [`run_pass`]: the status is stored when it changed, the Events are recorded.
    pub async fn reconcile<R: Reconciler<DemoDeps>>(&mut self, now: Timestamp) -> anyhow::Result<()> {
        for obj in self.list::<R::Kind>()? {
            let env = Env {
                deps: &self.deps,
                source: &*self,
                metrics: &self.metrics,
                now,
            };
            let pass = run_pass::<R, DemoDeps, World>(&env, &obj).await?;
            let kind = R::Kind::kind(&()).into_owned();
            let name = obj.meta().name.clone().unwrap_or_default();
            if let Some(status) = pass.status {
                let stored = self
                    .objects
                    .get_mut(&(kind.clone(), name.clone()))
                    .context("the object vanished during its pass")?;
                stored["status"] = serde_json::to_value(status)?;
            }
            let object = format!("{}/{name}", kind.to_lowercase());
            self.events
                .extend(pass.events.into_iter().map(|event| RecordedEvent {
                    at: now,
                    object: object.clone(),
                    event,
                }));
        }
        Ok(())
    }

    /// UPIDs of the power tasks the Services are waiting for.
    pub fn pending_tasks(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|((kind, _), _)| kind == "Service")
            .filter_map(|(_, v)| v["status"]["upid"].as_str().map(str::to_owned))
            .collect()
    }

    /// The stored objects of `plural` as JSON (what the table printer reads).
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        // Generate the CRDs once per call, not once per stored object.
        let Some(kind) = crate::crd::generate::crds()
            .into_iter()
            .find(|c| c.spec.names.plural == plural)
            .map(|c| c.spec.names.kind)
        else {
            return Vec::new();
        };
        self.objects
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Source for World {
    async fn get<T: ControlledKind>(&self, _namespace: &str, name: &str) -> Result<Option<T>, Error> {
        let key = (T::kind(&()).into_owned(), name.to_owned());
        Ok(self
            .objects
            .get(&key)
            .and_then(|v| serde_json::from_value(v.clone()).ok()))
    }

    async fn list<T: ControlledKind>(&self, _namespace: &str) -> Result<Vec<T>, Error> {
        let kind = T::kind(&());
        Ok(self
            .objects
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_examples_are_every_file_in_examples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = EXAMPLES.iter().map(|(f, _)| *f).collect();
        assert_eq!(embedded, on_disk, "add the new example to demo::world::EXAMPLES");
    }

    #[test]
    fn load_parses_every_example_into_its_kind() {
        let created: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        use crate::crd::{ProxmoxCluster, Service};
        use k8s_openapi::api::core::v1::Secret;
        use kube::ResourceExt;
        let world = World::load(created, ProxmoxDeps::new(None)).unwrap();
        assert_eq!(world.list::<ProxmoxCluster>().unwrap().len(), 1);
        let services = world.list::<Service>().unwrap();
        let names: Vec<String> = services.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["gitea", "nextcloud"]);
        assert!(
            world.list::<Secret>().unwrap().is_empty(),
            "the examples ship no Secrets: README's install steps create them"
        );
        let mut world = world;
        world
            .update_secret("pve-token", &[("tokenId", "autopilot@pve!operator")])
            .unwrap();
        let secrets = world.list::<Secret>().unwrap();
        assert_eq!(secrets[0].namespace().as_deref(), Some(NAMESPACE));
        assert_eq!(
            secrets[0].data.as_ref().unwrap()["tokenId"].0,
            b"autopilot@pve!operator".to_vec()
        );
        let svc = &services[1];
        assert_eq!(svc.namespace().as_deref(), Some(NAMESPACE));
        assert_eq!(svc.uid().as_deref(), Some("demo-service-nextcloud"));
        assert_eq!(world.objects("backuppolicies").len(), 1);
    }
}
