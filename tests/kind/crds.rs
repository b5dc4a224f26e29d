//! The CRDs on a real API server: they install and become Established, every example is
//! accepted (server-side dry run), each invalid resource of `invalid_crs.yaml` is rejected
//! with 422 naming the field, identity fields are immutable, and `kubectl get` shows the
//! designed printer columns filled from status.

use std::collections::BTreeMap;

use homelab_autopilot::crd::service::{Criticality, DesiredPowerState};
use homelab_autopilot::crd::{CATEGORY, GROUP, Service, VERSION};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde_json::{Value, json};

use crate::fixtures::{api_version, example_manifests, invalid_cases, served_version};
use crate::harness::{Harness, TestNamespace};

/// Runs `test` in a fresh namespace of a cluster with our CRDs, or skips without a cluster.
async fn with_crds<F, Fut>(test: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(harness) = Harness::connect().await else {
        return;
    };
    harness.install_crds().await;
    harness.in_namespace(test).await;
}

#[tokio::test]
async fn crds_install_and_become_established_in_the_autopilot_category() {
    let Some(harness) = Harness::connect().await else {
        return;
    };
    let installed: Vec<CustomResourceDefinition> = harness.install_crds().await;
    assert_eq!(installed.len(), 6);
    for crd in installed {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&[CATEGORY.to_string()][..]),
            "{}",
            names.kind
        );
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{} has a short name",
            names.kind
        );
        let accepted = crd.status.as_ref().and_then(|s| s.accepted_names.as_ref());
        assert_eq!(
            accepted.map(|a| a.plural.as_str()),
            Some(names.plural.as_str()),
            "names accepted"
        );
    }
}

#[tokio::test]
async fn examples_apply_with_server_side_dry_run() {
    with_crds(|ns| async move {
        let mut failures = Vec::new();
        let manifests = example_manifests();
        assert!(
            manifests.iter().filter(|m| m.is_ours()).count() >= 6,
            "one example per kind at least"
        );
        for manifest in manifests {
            if let Err(status) = ns.apply(&manifest.value, true).await {
                failures.push(format!("{}: {}", manifest.origin, status.message));
            }
        }
        assert!(
            failures.is_empty(),
            "examples rejected by the API server:\n  {}",
            failures.join("\n  ")
        );
    })
    .await;
}

#[tokio::test]
async fn invalid_resources_are_rejected_with_422_naming_the_field() {
    with_crds(|ns| async move {
        let mut failures = Vec::new();
        for case in invalid_cases() {
            match ns.dry_run_create(&case.object).await {
                Ok(_) => failures.push(format!("{}: accepted", case.case)),
                Err(status) => {
                    let names_field = status.message.contains(&format!("{}: ", case.field));
                    if status.code != 422 || !names_field || !status.message.contains(&case.message) {
                        failures.push(format!(
                            "{}: expected 422 naming `{}` with `{}`, got {} {:?}",
                            case.case, case.field, case.message, status.code, status.message
                        ));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "not rejected as designed:\n  {}",
            failures.join("\n  ")
        );
    })
    .await;
}

#[tokio::test]
async fn service_identity_fields_are_immutable() {
    with_crds(|ns| async move {
        let mut service = json!({
            "apiVersion": api_version(), "kind": "Service",
            "metadata": {"name": "nextcloud"},
            "spec": {"clusterRef": {"name": "homelab"}, "vmid": 200, "type": "VM"}
        });
        ns.apply(&service, false).await.expect("valid Service is stored");
        service["spec"]["node"] = json!("pve2");
        ns.apply(&service, false).await.expect("the node hint may change");
        // The typed client reads what the server stored, with the schema defaults filled in.
        let services: Api<Service> = Api::namespaced(ns.harness().client(), ns.name());
        let stored = services.get("nextcloud").await.expect("typed get");
        assert_eq!(stored.spec.node.as_deref(), Some("pve2"));
        assert_eq!(stored.spec.power_state, DesiredPowerState::Unmanaged);
        assert_eq!(stored.spec.criticality, Criticality::Normal);
        service["spec"]["vmid"] = json!(201);
        let status = ns.apply(&service, false).await.expect_err("vmid change rejected");
        assert_eq!(status.code, 422);
        assert!(
            status.message.contains("spec.vmid: Invalid value"),
            "{}",
            status.message
        );
        assert!(status.message.contains("vmid is immutable"), "{}", status.message);
    })
    .await;
}

/// `spec.tls.caConfigMapRef` was removed: the chart grants the operator no ConfigMap access, so
/// it could never work. A manifest that still sets it is refused by server-side apply and by a
/// strict create (`kubectl apply`/`create` validate strictly by default); a client that asks for
/// no validation gets a warning and the field is dropped, leaving `tls` empty: the operator then
/// verifies against the system roots, which a self-signed PVE certificate fails (never insecure).
#[tokio::test]
async fn removed_ca_config_map_ref_is_refused_by_strict_clients_and_dropped_by_lax_ones() {
    with_crds(|ns| async move {
        let manifest = json!({
            "apiVersion": api_version(), "kind": "ProxmoxCluster",
            "metadata": {"name": "old-ca-config-map"},
            "spec": {
                "endpoints": [{"url": "https://pve1:8006"}],
                "credentialsSecretRef": {"name": "pve-api-token"},
                "tls": {"caConfigMapRef": {"name": "pve-ca", "key": "ca.crt"}}
            }
        });
        let status = ns
            .apply(&manifest, true)
            .await
            .expect_err("server-side apply refuses it");
        assert!(
            status
                .message
                .contains(".spec.tls.caConfigMapRef: field not declared in schema"),
            "{status:?}"
        );
        let status = ns
            .dry_run_create_strict(&manifest)
            .await
            .expect_err("a strict create refuses it");
        assert_eq!(status.code, 400, "{status:?}");
        assert!(
            status
                .message
                .contains(r#"unknown field "spec.tls.caConfigMapRef""#),
            "{status:?}"
        );
        let stored = ns
            .dry_run_create(&manifest)
            .await
            .expect("a lax create is accepted");
        assert_eq!(stored.data["spec"]["tls"], json!({}), "the field is dropped");
    })
    .await;
}

/// Column names (after NAME) `kubectl get` shows for each kind.
fn designed_columns() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        (
            "ProxmoxCluster",
            vec!["Connected", "Quorate", "Nodes", "Version", "Endpoint", "Age"],
        ),
        (
            "Service",
            vec!["Node", "VMID", "Type", "Power", "Healthy", "Up", "Age"],
        ),
        (
            "BackupPolicy",
            vec!["Last Backup", "Result", "Next", "Stored", "Schedule", "Age"],
        ),
        (
            "UpdatePolicy",
            vec!["Scope", "Result", "Last Run", "Next", "Rollbacks", "Age"],
        ),
        (
            "RestoreTest",
            vec!["Service", "Result", "RTO", "Target", "Last Run", "Age"],
        ),
        (
            "ReplicationJob",
            vec!["Source", "Desired", "Ready", "Strategy", "Age"],
        ),
    ])
}

#[tokio::test]
async fn printer_columns_are_served_as_designed() {
    let Some(harness) = Harness::connect().await else {
        return;
    };
    for crd in harness.install_crds().await {
        let kind = crd.spec.names.kind.clone();
        let columns: Vec<&str> = served_version(&crd)
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            designed_columns()[kind.as_str()],
            "printer columns of {kind}"
        );
    }
}

/// Cells of the first table row, by column name.
fn first_row(table: &Value) -> BTreeMap<String, Value> {
    let names = table["columnDefinitions"].as_array().expect("columns");
    let cells = table["rows"][0]["cells"].as_array().expect("one row");
    names
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .zip(cells.iter().cloned())
        .collect()
}

#[tokio::test]
async fn restore_test_row_shows_service_result_rto_and_target_from_status() {
    with_crds(|ns| async move {
        let manifest = example_manifests()
            .into_iter()
            .map(|m| m.value)
            .find(|m| m["kind"] == "RestoreTest")
            .expect("a RestoreTest example");
        let name = manifest["metadata"]["name"].as_str().expect("name").to_string();
        ns.apply(&manifest, false).await.expect("example stored");
        ns.apply_status(&json!({
            "apiVersion": api_version(), "kind": "RestoreTest", "metadata": {"name": name},
            "status": {
                "observedGeneration": 1,
                "conditions": [{
                    "type": "Succeeded", "status": "True", "reason": "Passed",
                    "message": "restored, booted and healthy in 742 s", "lastTransitionTime": "2024-06-01T06:12:22Z"
                }],
                "lastRun": {
                    "runId": "20240601-060000", "startTime": "2024-06-01T06:00:00Z",
                    "completionTime": "2024-06-01T06:12:22Z", "service": "nextcloud",
                    "result": "Passed", "rtoSeconds": 742
                }
            }
        }))
        .await;
        let row = first_row(&ns.get_table(GROUP, VERSION, "restoretests").await);
        assert_eq!(row["Name"], json!(name));
        assert_eq!(row["Service"], json!("nextcloud"));
        assert_eq!(row["Result"], json!("Passed"));
        assert_eq!(row["RTO"], json!(742));
        assert_eq!(row["Target"], manifest["spec"]["rto"]["targetSeconds"]);
        assert!(row["Last Run"].as_str().is_some_and(|s| !s.is_empty()), "{row:?}");
    })
    .await;
}

#[tokio::test]
async fn backup_policy_row_shows_last_backup_result_next_and_stored() {
    with_crds(|ns| async move {
        let manifest = example_manifests()
            .into_iter()
            .map(|m| m.value)
            .find(|m| m["kind"] == "BackupPolicy")
            .expect("a BackupPolicy example");
        let name = manifest["metadata"]["name"].as_str().expect("name").to_string();
        ns.apply(&manifest, false).await.expect("example stored");
        ns.apply_status(&json!({
            "apiVersion": api_version(), "kind": "BackupPolicy", "metadata": {"name": name},
            "status": {
                "lastBackup": {
                    "runId": "20240601-023000", "startTime": "2024-06-01T00:30:00Z",
                    "completionTime": "2024-06-01T00:41:10Z", "result": "Succeeded", "message": "2/2"
                },
                "nextRunTime": "2024-06-02T00:30:00Z",
                "storedBytes": 13314398618_i64,
                "storedSize": "12.4 GiB"
            }
        }))
        .await;
        let row = first_row(&ns.get_table(GROUP, VERSION, "backuppolicies").await);
        assert_eq!(row["Result"], json!("Succeeded"));
        assert_eq!(row["Next"], json!("2024-06-02T00:30:00Z"));
        assert_eq!(row["Stored"], json!("12.4 GiB"));
        assert!(
            row["Last Backup"].as_str().is_some_and(|s| !s.is_empty()),
            "{row:?}"
        );
    })
    .await;
}
