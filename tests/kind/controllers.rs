//! The ProxmoxCluster and Service controllers end to end: the examples applied to a real API
//! server, the controllers (in-process, or the chart-installed operator) reconciling them
//! against the PVE simulator; status, conditions, Events and the `kubectl get` columns; drift in
//! the simulator (migration, a stopped guest) followed; deleting a Service leaves its guest; the
//! Secret watch; and the controllers working under the chart's RBAC only. The BackupPolicy and
//! RestoreTest examples run on demand (`autopilot.homelab.dev/run-now`) and report.

mod env;
mod rbac;

use std::time::{Duration, Instant};

use homelab_autopilot::crd::{GROUP, VERSION};
use homelab_autopilot::demo::table;
use homelab_autopilot::proxmox::api::{MigrateRequest, StopOptions};
use homelab_autopilot::proxmox::{NodeName, Vmid};
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};

use crate::harness::{DEADLINE, poll, wait_event};
use env::{Env, chart_mode, has_condition};

/// Compares the API server's `kubectl get` table of `plural` with the columns the CRD declares
/// and with the cells the demo's printer computes from the same objects.
async fn check_table(env: &Env, plural: &str, objects: &[Value]) {
    let table_json = env.ns.get_table(GROUP, VERSION, plural).await;
    let defs = table_json["columnDefinitions"]
        .as_array()
        .expect("column definitions");
    let columns = table::columns(plural);
    let names: Vec<&str> = defs.iter().filter_map(|d| d["name"].as_str()).collect();
    let expected: Vec<&str> = std::iter::once("Name")
        .chain(columns.iter().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(names, expected, "{plural}: served columns");
    let rows = table_json["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), objects.len(), "{plural}: one row per object");
    let now = Timestamp::now();
    for row in rows {
        let cells = row["cells"].as_array().unwrap();
        let name = cells[0].as_str().unwrap();
        let obj = objects
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{plural}: no object {name}"));
        for (def, (served, column)) in defs[1..].iter().zip(cells[1..].iter().zip(&columns)) {
            if def["type"] == "date" {
                assert!(
                    served.as_str().is_some_and(|s| !s.is_empty()),
                    "{plural}/{name} {}: {served}",
                    column.name
                );
                continue;
            }
            let ours = table::cell(column, obj, now);
            let served = match served {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            assert_eq!(served, ours, "{plural}/{name} column {}", column.name);
        }
    }
}

async fn wait_task(env: &Env, task: &homelab_autopilot::proxmox::TaskRef) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    env.pve
        .admin
        .wait_task(task, Duration::from_millis(50), deadline)
        .await
        .unwrap_or_else(|e| panic!("task {task}: {e}"));
}

fn event_notes(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{:?} {:?}\n", e.reason, e.note))
        .collect()
}

/// `name` once the operator has put its cleanup finalizer on it (it has seen the object).
async fn with_cleanup_finalizer<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    poll(&format!("the finalizer on {name}"), DEADLINE, || async move {
        api.get(name).await.ok().filter(|o| {
            o.meta()
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "autopilot.homelab.dev/cleanup")
        })
    })
    .await
}

/// Asks for a run of `name` now (`autopilot.homelab.dev/run-now: value`).
async fn run_now<K>(api: &Api<K>, name: &str, value: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {"autopilot.homelab.dev/run-now": value}}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

/// Runs the BackupPolicy `nightly` now and waits until that run (`value`) has finished.
async fn backup_nightly_now(
    policies: &Api<homelab_autopilot::crd::BackupPolicy>,
    value: &str,
) -> homelab_autopilot::crd::BackupPolicy {
    run_now(policies, "nightly", value).await;
    poll(
        "nightly's on-demand run to finish",
        Duration::from_secs(300),
        || async move {
            policies.get("nightly").await.ok().filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.current_run.is_none()
                        && s.last_run_request.as_deref() == Some(value)
                        && s.last_backup.is_some()
                })
            })
        },
    )
    .await
}

#[tokio::test]
async fn examples_reconcile_to_status_events_and_columns_then_follow_drift() {
    let Some(env) = Env::start("ctl-examples").await else {
        return;
    };
    let client = env.harness.client();
    let ns = env.ns.name.clone();
    env.create_token_secret().await;
    env.apply_examples(|_| true).await;

    let cluster = env
        .wait_cluster("homelab to be Ready", "homelab", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", None))
        })
        .await;
    let st = cluster.status.unwrap();
    assert!(has_condition(
        &st.conditions,
        "Connected",
        "True",
        Some("Connected")
    ));
    assert!(has_condition(&st.conditions, "Quorate", "True", Some("Quorate")));
    assert_eq!(st.observed_generation, cluster.metadata.generation);
    assert_eq!(st.nodes_online.as_deref(), Some("3/3"));
    assert_eq!(st.version.as_deref(), Some("9.1.3"));
    assert_eq!(st.endpoint.as_deref(), Some(env.pve.operator_url.as_str()));
    assert_eq!(st.storages.len(), 3, "the declared storages");

    for name in ["nextcloud", "gitea"] {
        let svc = env
            .wait_service(&format!("{name} to be Ready"), name, |s| {
                s.status
                    .as_ref()
                    .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", None))
            })
            .await;
        let st = svc.status.unwrap();
        assert!(has_condition(&st.conditions, "Found", "True", None), "{name}");
        assert!(
            has_condition(&st.conditions, "Healthy", "True", Some("ChecksPassing")),
            "{name}"
        );
        assert!(st.start_time.is_some() && st.node.is_some(), "{name}");
        assert!(st.health.iter().all(|r| r.healthy), "{name}: {:?}", st.health);
        wait_event(&client, &ns, name, "GuestFound").await;
    }
    let nextcloud = env.services().get("nextcloud").await.unwrap().status.unwrap();
    assert!(has_condition(
        &nextcloud.conditions,
        "PowerStateInSync",
        "True",
        Some("InSync")
    ));
    let connected = wait_event(&client, &ns, "homelab", "Connected").await;
    assert_eq!(connected.type_.as_deref(), Some("Normal"));
    assert_eq!(
        connected.reporting_controller.as_deref(),
        Some("homelab-autopilot")
    );

    let clusters: Vec<Value> = env
        .clusters()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    check_table(&env, "proxmoxclusters", &clusters).await;
    let services: Vec<Value> = env
        .services()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    check_table(&env, "services", &services).await;
    if !chart_mode() {
        let metrics = env.metrics.render().unwrap();
        let series =
            format!("homelab_autopilot_pve_cluster_connected{{cluster=\"homelab\",namespace=\"{ns}\"}} 1");
        assert!(metrics.contains(&series), "{metrics}");
    }

    // Drift 1: someone live-migrates nextcloud in Proxmox; the Service follows with an Event.
    let vmid = Vmid::new(200).unwrap();
    let here = env.pve.admin.locate_guest(vmid).await.unwrap().guest;
    let there = if here.node.as_str() == "pve1" {
        "pve2"
    } else {
        "pve1"
    };
    let task = env
        .pve
        .admin
        .migrate_guest(&here, &MigrateRequest::new(NodeName::new(there).unwrap(), true))
        .await
        .unwrap();
    wait_task(&env, &task).await;
    let moved = wait_event(&client, &ns, "nextcloud", "GuestMigrated").await;
    assert!(
        moved
            .note
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("to {there}")),
        "{moved:?}"
    );
    env.wait_service("nextcloud on the new node", "nextcloud", |s| {
        s.status.as_ref().and_then(|s| s.node.as_deref()) == Some(there)
    })
    .await;

    // Drift 2: it is stopped by hand; `powerState: Running` starts it again.
    let guest = env.pve.admin.locate_guest(vmid).await.unwrap().guest;
    let task = env
        .pve
        .admin
        .stop_guest(&guest, &StopOptions::default())
        .await
        .unwrap();
    wait_task(&env, &task).await;
    // While it is stopped it is not healthy; back up, its checks run and pass again.
    for reason in [
        "GuestDown",
        "Unhealthy",
        "StartingGuest",
        "GuestRecovered",
        "Healthy",
    ] {
        wait_event(&client, &ns, "nextcloud", reason).await;
    }
    let svc = env
        .wait_service("nextcloud running, in sync and healthy", "nextcloud", |s| {
            s.status.as_ref().is_some_and(|s| {
                s.upid.is_none()
                    && has_condition(&s.conditions, "PowerStateInSync", "True", Some("InSync"))
                    && has_condition(&s.conditions, "Healthy", "True", Some("ChecksPassing"))
            })
        })
        .await;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for reason in ["Unhealthy", "Healthy"] {
        let published: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("nextcloud")
            })
            .collect();
        assert_eq!(published.len(), 1, "one {reason} Event: {published:#?}");
        assert!(
            published[0].series.is_none(),
            "{reason} was published once, not repeated: {:?}",
            published[0]
        );
    }
    let down = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Unhealthy"))
        .and_then(|e| e.note.as_deref())
        .unwrap_or_default();
    assert!(down.contains("the guest is stopped"), "{down}");
    assert_eq!(
        svc.status.unwrap().power_state,
        Some(homelab_autopilot::crd::service::PowerState::Running)
    );
    assert_eq!(env.pve.admin.locate_guest(vmid).await.unwrap().status, "running");

    // Deleting the Service never touches the guest: there is no finalizer, the object goes at
    // once, and the guest still runs.
    let deleted_at = Instant::now();
    env.services()
        .delete("nextcloud", &DeleteParams::default())
        .await
        .unwrap();
    let api = env.services();
    let api = &api;
    poll("nextcloud to be gone", DEADLINE, || async move {
        api.get_opt("nextcloud").await.unwrap().is_none().then_some(())
    })
    .await;
    let location = env.pve.admin.locate_guest(vmid).await.unwrap();
    assert_eq!(
        location.status,
        "running",
        "deleted {:?} ago",
        deleted_at.elapsed()
    );
    if let Some(sim) = &env.pve.sim {
        let destructive = sim
            .tasks()
            .into_iter()
            .filter(|t| [":qmdestroy:", ":qmshutdown:"].iter().any(|k| t.upid.contains(k)))
            .count();
        assert_eq!(destructive, 0);
        assert!(sim.state(|c| c.guest(200).is_some()));
    }
    env.stop().await;
}

#[tokio::test]
async fn cluster_reports_secret_problems_and_recovers_through_the_secret_watch() {
    let Some(env) = Env::start("ctl-secret").await else {
        return;
    };
    let is_cluster = |d: &Value| d["kind"] == "ProxmoxCluster";
    env.apply_examples(is_cluster).await;
    let missing = env
        .wait_cluster("SecretNotFound", "homelab", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Connected", "False", Some("SecretNotFound")))
        })
        .await;
    assert!(has_condition(
        &missing.status.unwrap().conditions,
        "Ready",
        "False",
        Some("SecretNotFound")
    ));
    let warning = wait_event(&env.harness.client(), &env.ns.name, "homelab", "SecretNotFound").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    let secret = |token: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pve-token"},
               "stringData": {"tokenId": env.pve.token_id, "tokenSecret": token}})
    };
    env.ns.apply(&secret("wrong-token-8d1f"), false).await.unwrap();
    env.wait_cluster("AuthenticationFailed", "homelab", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| has_condition(&s.conditions, "Connected", "False", Some("AuthenticationFailed")))
    })
    .await;
    env.ns.apply(&secret(&env.pve.token_secret), false).await.unwrap();
    let ok = env
        .wait_cluster("Connected after the fix", "homelab", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, "Ready", "True", None))
        })
        .await;

    // Neither the status nor an Event shows a secret.
    let events = Api::<Event>::namespaced(env.harness.client(), &env.ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let everything = format!("{}{}", serde_json::to_string(&ok).unwrap(), event_notes(&events));
    for secret in ["wrong-token-8d1f", env.pve.token_secret.as_str()] {
        assert!(!everything.contains(secret), "a secret leaked:\n{everything}");
    }
    for reason in ["AuthenticationFailed", "Connected"] {
        wait_event(&env.harness.client(), &env.ns.name, "homelab", reason).await;
    }
    env.stop().await;
}

/// `examples/nextcloud-backup.yaml` applied to a real API server: a run started by the
/// `run-now` annotation backs up both Services to PBS, the status, conditions, Events and
/// `kubectl get backuppolicies` columns say so, the PBS storage lists the backups with our
/// marker, and deleting the policy (deletionPolicy Retain) goes through its finalizer and keeps
/// them.
#[tokio::test]
async fn backup_policy_example_runs_on_demand_and_reports() {
    let Some(env) = Env::start("ctl-backup").await else {
        return;
    };
    let client = env.harness.client();
    let ns = env.ns.name.clone();
    env.create_token_secret().await;
    env.apply_examples(|m| {
        matches!(
            m["kind"].as_str(),
            Some("ProxmoxCluster" | "Service" | "BackupPolicy")
        )
    })
    .await;
    let policies: Api<homelab_autopilot::crd::BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let policy = with_cleanup_finalizer(&policies, "nightly").await;
    let uid = policy.metadata.uid.clone().unwrap();
    let done = backup_nightly_now(&policies, "e2e-1").await;
    let st = done.status.clone().unwrap();
    let last = st.last_backup.as_ref().unwrap();
    assert_eq!(serde_json::to_value(last.result).unwrap(), "Succeeded", "{st:#?}");
    assert_eq!(st.last_run_request.as_deref(), Some("e2e-1"));
    assert_eq!(st.services.len(), 2, "nextcloud and gitea carry backup=nightly");
    assert!(has_condition(
        &st.conditions,
        "BackupSucceeded",
        "True",
        Some("BackupSucceeded")
    ));
    assert!(has_condition(&st.conditions, "Ready", "True", Some("Scheduled")));
    assert!(
        st.stored_size
            .as_deref()
            .is_some_and(|s| s.ends_with("(logical)"))
    );
    wait_event(&client, &ns, "nightly", "BackupStarted").await;
    wait_event(&client, &ns, "nightly", "BackupSucceeded").await;
    let objects = vec![serde_json::to_value(&done).unwrap()];
    check_table(&env, "backuppolicies", &objects).await;

    // The backups are on PBS with our marker in their notes.
    let rows = env
        .pve
        .admin
        .storage_content(
            &NodeName::new("pve1").unwrap(),
            "pbs-homelab",
            Some(homelab_autopilot::proxmox::api::ContentKind::Backup),
            None,
        )
        .await
        .unwrap();
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.notes
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("autopilot policy={uid} ")))
        })
        .collect();
    assert_eq!(ours.len(), 2, "{rows:?}");

    // Deleting the policy (Retain) keeps its backups and the finalizer lets it go.
    policies
        .delete("nightly", &DeleteParams::default())
        .await
        .unwrap();
    poll("nightly to be gone", DEADLINE, || {
        let policies = policies.clone();
        async move { policies.get_opt("nightly").await.ok().filter(Option::is_none) }
    })
    .await;
    let after = env
        .pve
        .admin
        .storage_content(
            &NodeName::new("pve1").unwrap(),
            "pbs-homelab",
            Some(homelab_autopilot::proxmox::api::ContentKind::Backup),
            None,
        )
        .await
        .unwrap();
    assert_eq!(after.len(), rows.len(), "Retain keeps every backup");
    env.stop().await;
}

/// The RestoreTest example end to end: after the `nightly` BackupPolicy made a fresh verified
/// backup of nextcloud, a `run-now` annotation on `nextcloud-monthly` restores it into the
/// example's VMID range, boots and checks it, measures the RTO against the 900 s target, removes
/// the copy (after `cleanup.afterSeconds`, lowered to the minimum so the test does not wait five
/// minutes), and the status, conditions, Events, metric and `kubectl get restoretests` columns say
/// so. Deleting the RestoreTest goes through its finalizer.
#[tokio::test]
async fn restore_test_example_restores_on_demand_and_reports() {
    use homelab_autopilot::crd::RestoreTest;
    use homelab_autopilot::crd::restore_test::{RestorePhase, RestoreResult};

    /// The example's `target.vmidRange`.
    const RANGE: std::ops::RangeInclusive<i32> = 9900..=9949;

    let Some(env) = Env::start("ctl-restore").await else {
        return;
    };
    let client = env.harness.client();
    let ns = env.ns.name.clone();
    env.create_token_secret().await;
    // Of the RestoreTest examples only the one under test: the others run on schedules of their
    // own, from other VMID ranges, and would only add rows and guests to tell apart.
    env.apply_examples(|m| match m["kind"].as_str() {
        Some("ProxmoxCluster" | "Service" | "BackupPolicy") => true,
        Some("RestoreTest") => m["metadata"]["name"] == "nextcloud-monthly",
        _ => false,
    })
    .await;
    let merge = |v: Value| kube::api::Patch::Merge(v);
    let params = kube::api::PatchParams::default();

    // A fresh verified backup of nextcloud (selection: Latest, requireVerified, at most 2 days old).
    let policies: Api<homelab_autopilot::crd::BackupPolicy> = Api::namespaced(client.clone(), &ns);
    with_cleanup_finalizer(&policies, "nightly").await;
    let backed_up = backup_nightly_now(&policies, "e2e-1").await;
    let st = backed_up.status.unwrap();
    assert_eq!(
        serde_json::to_value(st.last_backup.as_ref().unwrap().result).unwrap(),
        "Succeeded",
        "nextcloud needs a good backup to restore: {st:#?}"
    );

    // The guest is removed right after the checks instead of 300 s later (the CRD's minimum).
    let tests: Api<RestoreTest> = Api::namespaced(client.clone(), &ns);
    let test = with_cleanup_finalizer(&tests, "nextcloud-monthly").await;
    assert!(
        test.status.as_ref().is_none_or(|s| s.last_run.is_none()),
        "the monthly schedule has not run yet: {:#?}",
        test.status
    );
    tests
        .patch(
            "nextcloud-monthly",
            &params,
            &merge(json!({"spec": {"cleanup": {"afterSeconds": 0}}})),
        )
        .await
        .unwrap();
    run_now(&tests, "nextcloud-monthly", "e2e-1").await;

    let done = poll(
        "nextcloud-monthly's on-demand run to finish",
        Duration::from_secs(300),
        || {
            let tests = tests.clone();
            async move {
                tests.get("nextcloud-monthly").await.ok().filter(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| s.current_run.is_none() && s.last_run.is_some())
                })
            }
        },
    )
    .await;
    let st = done.status.clone().unwrap();
    let last = st.last_run.as_ref().unwrap();
    let result = last.result.expect("a finished run has a result");
    assert!(
        matches!(result, RestoreResult::Passed | RestoreResult::RtoExceeded),
        "{st:#?}"
    );
    assert_eq!(st.last_run_request.as_deref(), Some("e2e-1"));
    assert!(last.rto_seconds.is_some_and(|s| s > 0), "{last:#?}");
    assert_eq!(
        last.rto_target_seconds,
        Some(900),
        "the example's rto.targetSeconds"
    );
    assert_eq!(last.service, "nextcloud");
    assert_eq!(last.restores.len(), 1, "one restore of one Service: {last:#?}");
    for r in &last.restores {
        assert_eq!(r.service, "nextcloud");
        assert!(RANGE.contains(&r.restored_vmid), "{r:#?}");
        assert!(r.cleaned_up || r.phase == RestorePhase::Done, "{r:#?}");
    }
    // Succeeded is True for Passed; RTOExceeded (restored, but slower than the target) is False.
    let succeeded = if result == RestoreResult::Passed {
        "True"
    } else {
        "False"
    };
    assert!(
        has_condition(&st.conditions, "Succeeded", succeeded, None),
        "{st:#?}"
    );
    assert!(has_condition(&st.conditions, "Ready", "True", None), "{st:#?}");
    wait_event(&client, &ns, "nextcloud-monthly", "RestoreTestStarted").await;
    let finished = match result {
        RestoreResult::RtoExceeded => "RTOExceeded",
        _ => "RestoreTestPassed",
    };
    wait_event(&client, &ns, "nextcloud-monthly", finished).await;

    // The copy is gone, in the status and in Proxmox.
    let cleaned = poll("every restored guest to be cleaned up", DEADLINE, || {
        let tests = tests.clone();
        async move {
            tests.get("nextcloud-monthly").await.ok().filter(|t| {
                t.status
                    .as_ref()
                    .and_then(|s| s.last_run.as_ref())
                    .is_some_and(|r| !r.restores.is_empty() && r.restores.iter().all(|d| d.cleaned_up))
            })
        }
    })
    .await;
    let admin = &env.pve.admin;
    poll(
        "no guest left in the VMID range 9900-9949",
        DEADLINE,
        || async move {
            let rows = admin.cluster_resources(None).await.ok()?;
            let left: Vec<_> = rows
                .iter()
                .filter(|r| {
                    r.vmid
                        .is_some_and(|v| i32::try_from(v.get()).is_ok_and(|v| RANGE.contains(&v)))
                })
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;

    // The in-process operator's metrics (the chart-installed one is scraped elsewhere): the
    // timestamp the HomelabAutopilotRestoreTestStale alert reads is this run's.
    if !chart_mode() {
        let labels = [ns.as_str(), "nextcloud-monthly", "nextcloud"];
        let rt = &env.metrics.restore_test;
        let passed_at = rt.last_success_timestamp_seconds.with_label_values(&labels).get();
        assert!(
            passed_at >= last.start_time.as_second() as f64,
            "last_success_timestamp_seconds {passed_at} is not from the run of {}",
            last.start_time
        );
        assert_eq!(rt.rto_target_seconds.with_label_values(&labels).get(), 900.0);
        if result == RestoreResult::Passed {
            assert_eq!(rt.success.with_label_values(&labels).get(), 1);
        }
    }

    let objects = vec![serde_json::to_value(&cleaned).unwrap()];
    let names: Vec<String> = table::columns("restoretests")
        .into_iter()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(names, ["SERVICE", "RESULT", "RTO", "TARGET", "LAST RUN", "AGE"]);
    check_table(&env, "restoretests", &objects).await;

    // Deleting the RestoreTest goes through its finalizer (nothing left to remove).
    tests
        .delete("nextcloud-monthly", &DeleteParams::default())
        .await
        .unwrap();
    poll("nextcloud-monthly to be gone", DEADLINE, || {
        let tests = tests.clone();
        async move {
            tests
                .get_opt("nextcloud-monthly")
                .await
                .ok()
                .filter(Option::is_none)
        }
    })
    .await;
    env.stop().await;
}
