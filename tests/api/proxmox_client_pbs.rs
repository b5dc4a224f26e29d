//! The typed PBS client against the simulator's PBS listener: snapshots of the `pbs` storage's
//! datastore, verify tasks (ok and failed), datastore status, deleting a snapshot, and the PVE
//! volid to PBS snapshot mapping.

use std::time::Duration;

use homelab_autopilot::proxmox::api::{ContentKind, VzdumpRequest};
use homelab_autopilot::proxmox::pbs::{BackupType, SnapshotFilter, SnapshotRef, VerifyState};
use homelab_autopilot::proxmox::{ClientConfig, Credentials, Endpoint, Error, PbsClient, Secret, TlsVerify};
use homelab_autopilot::pvesim::Fault;

use crate::proxmox_client_common::{AuthKind, Env, node, pbs_client, sim_config_with_pbs, vmid};

async fn backup(env: &Env, id: u32, node_name: &str) -> String {
    let req = VzdumpRequest {
        vmids: vec![vmid(id)],
        storage: Some("pbs".into()),
        remove: Some(false),
        notes_template: Some("autopilot {{vmid}}".into()),
        ..VzdumpRequest::default()
    };
    let task = env.client.vzdump(&node(node_name), &req).await.expect("vzdump");
    env.wait(&task).await;
    env.sim.advance_clock(Duration::from_secs(120));
    env.client
        .storage_content(&node(node_name), "pbs", Some(ContentKind::Backup), Some(vmid(id)))
        .await
        .expect("content")
        .remove(0)
        .volid
}

#[tokio::test]
async fn pbs_client_lists_verifies_and_deletes_snapshots() {
    let Some(env) = Env::start_with(sim_config_with_pbs(), AuthKind::Token).await else {
        return;
    };
    env.sim
        .inject(Fault::PbsVerifyNew { enabled: false })
        .expect("setting");
    let pbs = pbs_client(&env.sim);
    let vm_volid = backup(&env, 100, "pve1").await;
    let ct_volid = backup(&env, 102, "pve2").await;

    let all = pbs
        .snapshots("homelab", &SnapshotFilter::default())
        .await
        .expect("snapshots");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].backup_time > all[1].backup_time, "newest first");
    let (storage, vm_ref) = SnapshotRef::from_pve_volid(&vm_volid).expect("pbs volid");
    assert_eq!(storage, "pbs");
    let vm = pbs
        .snapshot("homelab", &vm_ref)
        .await
        .expect("lookup")
        .expect("the PVE backup is a PBS snapshot");
    assert_eq!((vm.backup_type, vm.backup_id.as_str()), (BackupType::Vm, "100"));
    assert_eq!(vm.comment.as_deref(), Some("autopilot 100"));
    assert!(vm.size.is_some_and(|s| s > 0) && !vm.protected && vm.verify_state().is_none());
    let cts = pbs
        .snapshots(
            "homelab",
            &SnapshotFilter {
                backup_type: Some(BackupType::Ct),
                ..SnapshotFilter::default()
            },
        )
        .await
        .expect("cts");
    assert_eq!(cts.len(), 1);
    assert_eq!(
        SnapshotRef::from_pve_volid(&ct_volid).map(|(_, r)| r),
        Some(cts[0].snapshot_ref())
    );

    // Verify: the task succeeds and the snapshot (and PVE's listing) says ok.
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(20);
    let upid = pbs.verify_snapshot("homelab", &vm_ref).await.expect("verify");
    assert_eq!(upid.worker_type(), "verify_snapshot");
    assert_eq!(upid.auth_id(), env.sim.token_id());
    let done = pbs
        .wait_task(&upid, Duration::from_millis(5), deadline())
        .await
        .expect("verify ok");
    assert_eq!(done.exitstatus.as_deref(), Some("OK"));
    let vm = pbs
        .snapshot("homelab", &vm_ref)
        .await
        .expect("lookup")
        .expect("snapshot");
    let v = vm.verification.expect("verified");
    assert_eq!((v.state, v.upid.as_str()), (VerifyState::Ok, upid.as_str()));
    let pve_row = env
        .client
        .storage_content(&node("pve1"), "pbs", Some(ContentKind::Backup), Some(vmid(100)))
        .await
        .expect("content")
        .remove(0);
    assert_eq!(pve_row.verification.map(|v| v.state).as_deref(), Some("ok"));

    // A damaged snapshot: the verify task fails, with PBS's message and log tail.
    env.sim
        .inject(Fault::PbsVerifyFailure {
            vmid: Some(102),
            count: 1,
        })
        .expect("fault");
    let ct_ref = cts[0].snapshot_ref();
    let upid = pbs.verify_snapshot("homelab", &ct_ref).await.expect("verify");
    let failed = pbs
        .wait_task(&upid, Duration::from_millis(5), deadline())
        .await
        .unwrap_err();
    let Error::TaskFailed {
        exit_status,
        log_tail,
        ..
    } = &failed
    else {
        panic!("{failed:?}")
    };
    assert_eq!(
        exit_status,
        "verification failed - please check the log for details"
    );
    assert!(
        log_tail
            .iter()
            .any(|l| l.contains("chunks could not be verified")),
        "{log_tail:?}"
    );
    let ct = pbs
        .snapshot("homelab", &ct_ref)
        .await
        .expect("lookup")
        .expect("snapshot");
    assert_eq!(ct.verify_state(), Some(VerifyState::Failed));

    // Datastore status, then delete: gone from PBS and from PVE's storage listing.
    let status = pbs.datastore_status("homelab").await.expect("status");
    assert!(
        status.total > 0 && status.used + status.avail == status.total,
        "{status:?}"
    );
    pbs.delete_snapshot("homelab", &ct_ref).await.expect("delete");
    assert!(pbs.snapshot("homelab", &ct_ref).await.expect("lookup").is_none());
    let gone = env
        .client
        .storage_content(&node("pve1"), "pbs", Some(ContentKind::Backup), Some(vmid(102)))
        .await
        .expect("content");
    assert!(gone.is_empty(), "{gone:?}");
    let again = pbs.delete_snapshot("homelab", &ct_ref).await.unwrap_err();
    assert!(matches!(again, Error::NotFound { .. }), "{again:?}");
    let bad_store = pbs.datastore_status("nope").await.unwrap_err();
    assert!(
        bad_store.to_string().contains("datastore 'nope' does not exist"),
        "{bad_store}"
    );
}

#[tokio::test]
async fn pbs_client_logs_in_with_a_password_refuses_bad_tokens_and_pins_the_pbs_certificate() {
    let Some(env) = Env::start_with(sim_config_with_pbs(), AuthKind::Token).await else {
        return;
    };
    let url = env.sim.pbs_url().expect("pbs listener").to_owned();
    let pin = TlsVerify::Fingerprint(env.sim.pbs_fingerprint().expect("pbs fingerprint").to_owned());
    // A user and password: a PBS ticket (cookie PBSAuthCookie, CSRF header on writes).
    let mut password = ClientConfig::new(
        vec![Endpoint::new(&url, 0)],
        Credentials::Password {
            username: env.sim.username().into(),
            password: Secret::new(env.sim.password()),
        },
        pin.clone(),
    );
    crate::proxmox_client_common::fast_policy(&mut password);
    let with_ticket = PbsClient::new(password.clone()).expect("client");
    assert!(
        with_ticket
            .datastore_status("homelab")
            .await
            .expect("status")
            .total
            > 0
    );
    backup(&env, 100, "pve1").await;
    let snap = with_ticket
        .snapshots("homelab", &SnapshotFilter::default())
        .await
        .expect("snapshots")
        .remove(0)
        .snapshot_ref();
    let upid = with_ticket
        .verify_snapshot("homelab", &snap)
        .await
        .expect("verify is a write: the CSRF header goes with it");
    assert_eq!(upid.auth_id(), env.sim.username());
    with_ticket
        .wait_task(
            &upid,
            Duration::from_millis(5),
            tokio::time::Instant::now() + Duration::from_secs(20),
        )
        .await
        .expect("verified");
    password.credentials = Credentials::Password {
        username: env.sim.username().into(),
        password: Secret::new("wrong"),
    };
    let e = PbsClient::new(password)
        .expect("client")
        .datastore_status("homelab")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    let mut wrong = ClientConfig::new(
        vec![Endpoint::new(&url, 0)],
        Credentials::ApiToken {
            token_id: env.sim.token_id().into(),
            secret: Secret::new("wrong-secret"),
        },
        pin,
    );
    crate::proxmox_client_common::fast_policy(&mut wrong);
    let e = PbsClient::new(wrong)
        .expect("client")
        .datastore_status("homelab")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!e.to_string().contains("wrong-secret"), "{e}");
    // The PVE node's certificate is not the PBS's: pinning the wrong one fails.
    let mut pve_pin = ClientConfig::new(
        vec![Endpoint::new(&url, 0)],
        Credentials::ApiToken {
            token_id: env.sim.token_id().into(),
            secret: Secret::new(env.sim.token_secret()),
        },
        TlsVerify::Fingerprint(env.sim.fingerprint().into()),
    );
    crate::proxmox_client_common::fast_policy(&mut pve_pin);
    let e = PbsClient::new(pve_pin)
        .expect("client")
        .datastore_status("homelab")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    let ok = pbs_client(&env.sim)
        .datastore_status("homelab")
        .await
        .expect("status");
    assert!(ok.total > 0);
}
