//! The chart's RBAC is enough: `helm template` renders the ServiceAccount, (Cluster)Roles and
//! bindings (with `watchNamespace` set to the test namespace), the test creates them, and the
//! controllers run with a client impersonating that ServiceAccount, leader election on the
//! chart's Lease name included.

use std::path::PathBuf;
use std::process::Command;

use homelab_autopilot::controllers::LeaseConfig;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::KubeConfigOptions;
use kube::{Api, Client, Config};
use serde_json::Value;

use super::env::{Env, chart_mode, has_condition};
use crate::fixtures::repo_root;
use crate::harness::{Harness, TestNamespace, wait_event};

/// `helm` on PATH, or the one `.ci/install-tools.sh` puts into `target/tools/bin`.
fn helm() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("helm"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(repo_root().join("target/tools/bin/helm")).filter(|p| p.is_file()))
}

/// The chart's RBAC objects for release `ap` in `namespace`, watching only that namespace.
fn render_rbac(helm: &PathBuf, namespace: &str) -> Vec<Value> {
    let out = Command::new(helm)
        .args(["template", "ap"])
        .arg(repo_root().join("charts/homelab-autopilot"))
        .args([
            "--namespace",
            namespace,
            "--set",
            &format!("watchNamespace={namespace}"),
        ])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|doc: &Value| {
            matches!(
                doc["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .collect()
}

fn of<K: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> Vec<K> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .collect()
}

/// Creates the rendered objects; returns the cluster-scoped ones' names (to delete afterwards),
/// the ServiceAccount's name and the leader election Lease name.
async fn create_rbac(
    client: &Client,
    namespace: &str,
    docs: &[Value],
) -> (Vec<String>, Vec<String>, String, String) {
    let pp = PostParams::default();
    let sa: Vec<ServiceAccount> = of(docs, "ServiceAccount");
    let sa_name = sa[0].metadata.name.clone().unwrap();
    for o in sa {
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(&pp, &o)
            .await
            .unwrap();
    }
    let mut lease = None;
    for o in of::<Role>(docs, "Role") {
        let ns = o
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned());
        for rule in o.rules.iter().flatten() {
            if rule.resources.iter().flatten().any(|r| r == "leases") {
                lease = rule
                    .resource_names
                    .as_ref()
                    .and_then(|n| n.first().cloned())
                    .or(lease);
            }
        }
        Api::<Role>::namespaced(client.clone(), &ns)
            .create(&pp, &o)
            .await
            .unwrap();
    }
    for o in of::<RoleBinding>(docs, "RoleBinding") {
        let ns = o
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned());
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .create(&pp, &o)
            .await
            .unwrap();
    }
    let mut roles = Vec::new();
    for o in of::<ClusterRole>(docs, "ClusterRole") {
        roles.push(o.metadata.name.clone().unwrap());
        Api::<ClusterRole>::all(client.clone())
            .create(&pp, &o)
            .await
            .unwrap();
    }
    let mut bindings = Vec::new();
    for o in of::<ClusterRoleBinding>(docs, "ClusterRoleBinding") {
        bindings.push(o.metadata.name.clone().unwrap());
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&pp, &o)
            .await
            .unwrap();
    }
    (
        roles,
        bindings,
        sa_name,
        lease.expect("the chart's leader election Role names its Lease"),
    )
}

async fn impersonating(namespace: &str, sa: &str) -> Client {
    let mut config = Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn controllers_work_with_only_the_charts_rbac() {
    if chart_mode() {
        println!(
            "SKIP controllers_work_with_only_the_charts_rbac: the installed operator already runs under it"
        );
        return;
    }
    let Some(harness) = Harness::connect().await else {
        return;
    };
    let Some(helm) = helm() else {
        println!(
            "SKIP controllers_work_with_only_the_charts_rbac: helm not found (run .ci/install-tools.sh)"
        );
        return;
    };
    harness.install_crds().await;
    let admin = harness.client();
    let ns = TestNamespace::create(&admin, "ctl-rbac").await;
    let docs = render_rbac(&helm, &ns.name);
    let (roles, bindings, sa, lease) = create_rbac(&admin, &ns.name, &docs).await;
    let namespace = ns.name.clone();

    let run = tokio::spawn(async move {
        let client = impersonating(&namespace, &sa).await;
        // The impersonation is in force: other namespaces' Secrets are off limits.
        let err = Api::<Secret>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err}");

        let mut env = Env::prepare(harness, ns).await;
        let identity = "e2e-rbac-pod";
        env.run_operator(client, Some(LeaseConfig::new(lease, namespace.clone(), identity)))
            .await;
        env.create_token_secret().await;
        env.apply_examples(|d| {
            d["kind"] == "ProxmoxCluster" || d["metadata"]["name"] == "nextcloud" && d["kind"] == "Service"
        })
        .await;
        env.wait_cluster("homelab Ready under the chart's RBAC", "homelab", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", None))
        })
        .await;
        env.wait_service("nextcloud Ready under the chart's RBAC", "nextcloud", |s| {
            s.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", None))
        })
        .await;
        let found = wait_event(&env.harness.client(), &namespace, "nextcloud", "GuestFound").await;
        assert_eq!(found.reporting_instance.as_deref(), Some("e2e-operator"));
        env.stop().await;
    })
    .await;

    for name in bindings {
        let _ = Api::<ClusterRoleBinding>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await;
    }
    for name in roles {
        let _ = Api::<ClusterRole>::all(admin.clone())
            .delete(&name, &DeleteParams::default())
            .await;
    }
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}
