//! The demo's stand-in for the API server: the objects of `examples/` (embedded, so the release
//! binary works from anywhere) held in memory, and the same reconcile cores the controllers run,
//! driven pass by pass. Statuses and Events land on these objects instead of the API.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;

use crate::controllers::proxmox_cluster::resolve::{SecretData, Unresolved};
use crate::controllers::proxmox_cluster::{self, CaBundle, ClusterInputs};
use crate::controllers::service::{self, ClusterAccess, ServiceRefs};
use crate::controllers::shared::{PlannedEvent, ProxmoxDeps};
use crate::crd::{ProxmoxCluster, Service};

/// The namespace the examples are "applied" to.
pub const NAMESPACE: &str = "homelab";

/// Every file of `examples/` (a test keeps this list complete), in the order `kubectl apply -f
/// examples/` reads them.
pub const EXAMPLES: &[(&str, &str)] = &[
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
        "proxmoxcluster.yaml",
        include_str!("../../examples/proxmoxcluster.yaml"),
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

/// A Secret: its data and a resourceVersion bumped on every change.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    /// Decoded data.
    pub data: SecretData,
    /// resourceVersion.
    pub version: u64,
}

/// The in-memory objects and the dependencies the cores share.
pub struct World {
    /// Secrets by name.
    pub secrets: BTreeMap<String, StoredSecret>,
    /// ProxmoxClusters.
    pub clusters: Vec<ProxmoxCluster>,
    /// Services.
    pub services: Vec<Service>,
    /// Objects of kinds without a controller yet (kept for the scenes later kinds add).
    pub others: Vec<Value>,
    /// Every Event so far, oldest first.
    pub events: Vec<RecordedEvent>,
    /// Client cache, health-check clients, per-Service memory, timing.
    pub deps: ProxmoxDeps,
}

fn secret_data(doc: &Value) -> anyhow::Result<SecretData> {
    let mut data = SecretData::new();
    if let Some(map) = doc["data"].as_object() {
        for (k, v) in map {
            let text = v.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .with_context(|| format!("Secret data key {k} is not base64"))?;
            data.insert(k.clone(), bytes);
        }
    }
    if let Some(map) = doc["stringData"].as_object() {
        for (k, v) in map {
            data.insert(k.clone(), v.as_str().unwrap_or_default().as_bytes().to_vec());
        }
    }
    Ok(data)
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
    pub fn load(created: Timestamp, deps: ProxmoxDeps) -> anyhow::Result<Self> {
        let mut world = Self {
            secrets: BTreeMap::new(),
            clusters: Vec::new(),
            services: Vec::new(),
            others: Vec::new(),
            events: Vec::new(),
            deps,
        };
        for (file, text) in EXAMPLES {
            for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
                let doc: Value = serde::Deserialize::deserialize(doc)
                    .with_context(|| format!("examples/{file} document {i} is not YAML"))?;
                if doc.is_null() {
                    continue;
                }
                let doc = stored(doc, created);
                let what = || format!("examples/{file} document {i}");
                match doc["kind"].as_str() {
                    Some("Secret") => {
                        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                        let data = secret_data(&doc).with_context(what)?;
                        world.secrets.insert(name, StoredSecret { data, version: 1 });
                    }
                    Some("ProxmoxCluster") => world
                        .clusters
                        .push(serde_json::from_value(doc).with_context(what)?),
                    Some("Service") => world
                        .services
                        .push(serde_json::from_value(doc).with_context(what)?),
                    Some(_) => world.others.push(doc),
                    None => bail!("{}: no kind", what()),
                }
            }
        }
        Ok(world)
    }

    /// Replaces keys of the Secret `name` (like `kubectl apply` of a changed Secret).
    pub fn update_secret(&mut self, name: &str, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
        let secret = self
            .secrets
            .get_mut(name)
            .with_context(|| format!("no Secret {name} in the examples"))?;
        for (k, v) in pairs {
            secret.data.insert((*k).to_owned(), v.as_bytes().to_vec());
        }
        secret.version += 1;
        Ok(())
    }

    fn record(&mut self, at: Timestamp, object: String, events: Vec<PlannedEvent>) {
        self.events.extend(events.into_iter().map(|event| RecordedEvent {
            at,
            object: object.clone(),
            event,
        }));
    }

    fn ca_for(&self, cluster: &ProxmoxCluster) -> Option<Result<CaBundle, Unresolved>> {
        let selector = proxmox_cluster::resolve::ca_secret(&cluster.spec)?;
        let found = self
            .secrets
            .get(&selector.name)
            .map(|s| (&s.data, s.version.to_string()));
        Some(proxmox_cluster::resolve::ca_bundle(
            selector,
            found.as_ref().map(|(data, v)| (*data, v.as_str())),
        ))
    }

    /// What a driver reads for `cluster`: its Secret and CA bundle.
    fn inputs(&self, cluster: &ProxmoxCluster) -> ClusterInputs {
        ClusterInputs {
            secret: self
                .secrets
                .get(&cluster.spec.credentials_secret_ref.name)
                .map(|s| (s.data.clone(), s.version.to_string())),
            ca: self.ca_for(cluster),
        }
    }

    /// One reconcile pass over every ProxmoxCluster at `now`.
    pub async fn reconcile_clusters(&mut self, now: Timestamp) {
        for i in 0..self.clusters.len() {
            let plan = {
                let cluster = &self.clusters[i];
                let uid = cluster.uid().unwrap_or_default();
                let inputs = self.inputs(cluster);
                let previous = cluster.status.clone().unwrap_or_default();
                let refs = inputs.refs(cluster, &uid, NAMESPACE);
                proxmox_cluster::reconcile_core(&self.deps, refs, &previous, now).await
            };
            let object = format!("proxmoxcluster/{}", self.clusters[i].name_any());
            self.clusters[i].status = Some(plan.outcome.status);
            self.record(now, object, plan.outcome.events);
        }
    }

    /// The cluster a Service points at, as its driver would find it.
    async fn access(&self, service: &Service) -> ClusterAccess {
        let name = &service.spec.cluster_ref.name;
        match self.clusters.iter().find(|c| &c.name_any() == name) {
            Some(cluster) => {
                ClusterAccess::through(&self.deps, cluster, &self.inputs(cluster), NAMESPACE).await
            }
            None => ClusterAccess::missing(name, NAMESPACE),
        }
    }

    /// One reconcile pass over every Service at `now`.
    pub async fn reconcile_services(&mut self, now: Timestamp) {
        for i in 0..self.services.len() {
            let outcome = {
                let svc = &self.services[i];
                let access = self.access(svc).await;
                let uid = svc.uid().unwrap_or_default();
                let previous = svc.status.clone().unwrap_or_default();
                let refs = ServiceRefs::of(svc, &uid, &previous, &access);
                service::reconcile_core(&self.deps, refs, now).await
            };
            let object = format!("service/{}", self.services[i].name_any());
            self.services[i].status = Some(outcome.status);
            self.record(now, object, outcome.events);
        }
    }

    /// UPIDs of the power tasks the Services are waiting for.
    pub fn pending_tasks(&self) -> Vec<String> {
        self.services
            .iter()
            .filter_map(|s| s.status.as_ref()?.upid.clone())
            .collect()
    }

    /// The stored objects of `plural` as JSON (what the table printer reads).
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        let to_json = |v: serde_json::Result<Value>| v.unwrap_or(Value::Null);
        match plural {
            "proxmoxclusters" => self
                .clusters
                .iter()
                .map(|c| to_json(serde_json::to_value(c)))
                .collect(),
            "services" => self
                .services
                .iter()
                .map(|s| to_json(serde_json::to_value(s)))
                .collect(),
            other => self
                .others
                .iter()
                .filter(|o| {
                    o["kind"]
                        .as_str()
                        .is_some_and(|k| crate::demo::plural_of(k).as_deref() == Some(other))
                })
                .cloned()
                .collect(),
        }
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
        let world = World::load(created, ProxmoxDeps::new(None)).unwrap();
        assert_eq!(world.clusters.len(), 1);
        let names: Vec<String> = world.services.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["gitea", "nextcloud"]);
        assert_eq!(world.secrets.len(), 2);
        assert_eq!(
            world.secrets["pve-api-token"].data["tokenId"],
            b"autopilot@pve!operator".to_vec()
        );
        assert!(world.others.len() >= 4);
        let svc = &world.services[1];
        assert_eq!(svc.namespace().as_deref(), Some(NAMESPACE));
        assert_eq!(svc.uid().as_deref(), Some("demo-service-nextcloud"));
        assert_eq!(world.objects("backuppolicies").len(), 1);
    }
}
