//! Fixtures shared by `tests/kind` and `tests/api` (which includes this file with `#[path]`):
//! the documents of `examples/*.yaml` and the invalid resources of `invalid_crs.yaml`.

use std::path::PathBuf;

use homelab_autopilot::crd::{GROUP, VERSION};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `autopilot.homelab.dev/v1alpha1`.
pub fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

/// The version `v1alpha1` of `crd` (the one every CRD serves and stores).
pub fn served_version(crd: &CustomResourceDefinition) -> &CustomResourceDefinitionVersion {
    crd.spec
        .versions
        .iter()
        .find(|v| v.name == VERSION)
        .expect("served version")
}

/// One YAML document of an example file.
pub struct Manifest {
    /// `file.yaml document N`, for messages.
    pub origin: String,
    /// The document.
    pub value: Value,
}

impl Manifest {
    /// Whether the document is one of our kinds (not, say, a Secret).
    pub fn is_ours(&self) -> bool {
        self.value["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("{GROUP}/")))
    }
}

/// Every document of `examples/*.yaml` (the top level only, which is what
/// `kubectl apply -f examples/` applies), in file order. The simulator's seed lives in
/// `examples/pvesim/` because it is not a Kubernetes manifest.
pub fn example_manifests() -> Vec<Manifest> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut manifests = Vec::new();
    for path in paths {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{file} document {i} is not YAML: {e}"));
            if !value.is_null() {
                manifests.push(Manifest {
                    origin: format!("{file} document {i}"),
                    value,
                });
            }
        }
    }
    manifests
}

/// One entry of `tests/kind/invalid_crs.yaml`; `object` has apiVersion and metadata filled in.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
// Each suite reads the flags it needs: the API server runs every case.
#[allow(dead_code)]
pub struct InvalidCase {
    /// Case name (also the object's name).
    pub case: String,
    /// Field path the API server names in its error.
    pub field: String,
    /// Text the error must contain.
    pub message: String,
    /// Only the API server can tell (list-map key uniqueness).
    #[serde(default)]
    pub server_only: bool,
    /// A plain schema bound or pattern the runtime `validate()` does not repeat.
    #[serde(default)]
    pub schema_only: bool,
    /// The resource.
    pub object: Value,
}

/// The cases of `tests/kind/invalid_crs.yaml`.
pub fn invalid_cases() -> Vec<InvalidCase> {
    let text = std::fs::read_to_string(repo_root().join("tests/kind/invalid_crs.yaml"))
        .expect("tests/kind/invalid_crs.yaml readable");
    let mut cases: Vec<InvalidCase> = serde_yaml::from_str(&text).expect("invalid_crs.yaml parses");
    for c in &mut cases {
        c.object["apiVersion"] = json!(api_version());
        c.object["metadata"] = json!({ "name": c.case });
    }
    cases
}
