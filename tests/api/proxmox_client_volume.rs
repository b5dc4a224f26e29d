//! The typed client's `update_volume` (`PUT .../storage/{storage}/content/{volume}`) and the
//! PVE 9.1 permission rules of vzdump options, with a least-privilege API token.

use homelab_autopilot::proxmox::api::{ContentKind, VolumeUpdate, VzdumpRequest};
use homelab_autopilot::proxmox::{ClientConfig, Credentials, Endpoint, Error, PveClient, Secret, TlsVerify};
use homelab_autopilot::pvesim::SimConfig;
use homelab_autopilot::pvesim::seed::{AclSpec, TokenSpec};

use crate::proxmox_client_common::{AuthKind, Env, fast_policy, node, per_auth, sim_config, vmid};

per_auth!(update_volume: client_update_volume_with_token, client_update_volume_with_ticket);

async fn update_volume(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;
    let pve1 = node("pve1");
    for storage in ["local", "pbs"] {
        let req = VzdumpRequest {
            vmids: vec![vmid(100)],
            storage: Some(storage.into()),
            notes_template: Some("first line".into()),
            remove: Some(false),
            ..VzdumpRequest::default()
        };
        let task = c.vzdump(&pve1, &req).await.expect("vzdump");
        env.wait(&task).await;
        let row = c
            .storage_content(&pve1, storage, Some(ContentKind::Backup), Some(vmid(100)))
            .await
            .expect("content")
            .remove(0);
        assert_eq!(row.notes.as_deref(), Some("first line"));

        let set = VolumeUpdate {
            notes: Some("autopilot owner=abc".into()),
            protected: Some(true),
        };
        c.update_volume(&pve1, storage, &row.volid, &set)
            .await
            .expect("update");
        // Retried safely: the same update again changes nothing.
        c.update_volume(&pve1, storage, &row.volid, &set)
            .await
            .expect("update again");
        let now = c
            .storage_content(&pve1, storage, Some(ContentKind::Backup), Some(vmid(100)))
            .await
            .expect("content")
            .remove(0);
        assert_eq!(now.notes.as_deref(), Some("autopilot owner=abc"), "{storage}");
        assert!(now.protected, "{storage}");
        let refused = c.delete_volume(&pve1, storage, &row.volid, Some(5)).await;
        let refused = match refused {
            Ok(Some(task)) => crate::proxmox_client_common::wait(c, &task).await.map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        assert!(
            refused.is_err(),
            "a protected backup must not be deleted ({storage})"
        );

        // Only the protection changes; empty notes remove them.
        let unprotect = VolumeUpdate {
            notes: None,
            protected: Some(false),
        };
        c.update_volume(&pve1, storage, &row.volid, &unprotect)
            .await
            .expect("unprotect");
        let clear = VolumeUpdate {
            notes: Some(String::new()),
            protected: None,
        };
        c.update_volume(&pve1, storage, &row.volid, &clear)
            .await
            .expect("clear notes");
        let last = c
            .storage_content(&pve1, storage, Some(ContentKind::Backup), Some(vmid(100)))
            .await
            .expect("content")
            .remove(0);
        assert!(!last.protected && last.notes.is_none(), "{storage}: {last:?}");
    }

    let nothing = c
        .update_volume(&pve1, "local", "local:backup/x.vma", &VolumeUpdate::default())
        .await
        .unwrap_err();
    assert!(matches!(nothing, Error::InvalidRequest { .. }), "{nothing:?}");
    let missing = c
        .update_volume(
            &pve1,
            "local",
            "local:backup/vzdump-qemu-100-2020_01_01-00_00_00.vma",
            &VolumeUpdate {
                notes: Some("x".into()),
                protected: None,
            },
        )
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
}

const LIMITED_SECRET: &str = "0d000000-0000-4000-8000-00000000b0b0";
const TUNER_SECRET: &str = "0d000000-0000-4000-8000-00000000c0c0";

/// root@pam's privilege-separated tokens: `backup` may back up to `local` and `pbs` but not
/// tune or prune; `tuner` also has `Sys.Modify` on `/` and `Datastore.Allocate` on `pbs`.
fn limited_tokens(config: &mut SimConfig) {
    let acl = |path: &str, privs: &[&str]| AclSpec {
        path: path.into(),
        privs: privs.iter().map(|p| (*p).to_string()).collect(),
        propagate: true,
    };
    let base = || {
        vec![
            acl("/vms", &["VM.Backup", "VM.Audit"]),
            acl("/storage", &["Datastore.AllocateSpace", "Datastore.Audit"]),
        ]
    };
    let mut tuner = base();
    tuner.push(acl("/", &["Sys.Modify"]));
    tuner.push(acl("/storage/pbs", &["Datastore.Allocate"]));
    let root = &mut config.seed.users[0];
    root.tokens.push(TokenSpec {
        id: "backup".into(),
        secret: LIMITED_SECRET.into(),
        acl: Some(base()),
    });
    root.tokens.push(TokenSpec {
        id: "tuner".into(),
        secret: TUNER_SECRET.into(),
        acl: Some(tuner),
    });
}

fn token_client(env: &Env, id: &str, secret: &str) -> PveClient {
    let mut config = ClientConfig::new(
        vec![Endpoint::new(env.sim.url(), 0)],
        Credentials::ApiToken {
            token_id: format!("root@pam!{id}"),
            secret: Secret::new(secret),
        },
        TlsVerify::Fingerprint(env.sim.fingerprint().to_owned()),
    );
    fast_policy(&mut config);
    PveClient::new(config).expect("client")
}

#[tokio::test]
async fn vzdump_bwlimit_needs_sys_modify_and_prune_needs_datastore_allocate() {
    let Some(mut config) = sim_config() else { return };
    limited_tokens(&mut config);
    let Some(env) = Env::start_with(Some(config), AuthKind::Token).await else {
        return;
    };
    let limited = token_client(&env, "backup", LIMITED_SECRET);
    let tuner = token_client(&env, "tuner", TUNER_SECRET);
    let pve1 = node("pve1");
    let req = VzdumpRequest {
        vmids: vec![vmid(100)],
        storage: Some("pbs".into()),
        remove: Some(false),
        bwlimit: Some(50_000),
        ..VzdumpRequest::default()
    };

    // Without Sys.Modify on `/`: 403, not a root-only parameter error.
    let refused = limited.vzdump(&pve1, &req).await.unwrap_err();
    assert!(
        matches!(&refused, Error::PermissionDenied { message } if message.contains("/, Sys.Modify")),
        "{refused:?}"
    );
    // The same token backs up fine without the limit.
    let plain = VzdumpRequest {
        bwlimit: None,
        ..req.clone()
    };
    let task = limited
        .vzdump(&pve1, &plain)
        .await
        .expect("vzdump without bwlimit");
    crate::proxmox_client_common::wait(&limited, &task)
        .await
        .expect("backup task");
    // With Sys.Modify: accepted, although the token is not root@pam.
    let task = tuner.vzdump(&pve1, &req).await.expect("vzdump with bwlimit");
    crate::proxmox_client_common::wait(&tuner, &task)
        .await
        .expect("backup task");
    // The default token (root@pam, not privilege-separated) may set it too.
    let task = env.client.vzdump(&pve1, &req).await.expect("root token");
    env.wait(&task).await;

    // Storage without backup permission for the token's ACL path: `dumpdir` stays root@pam's.
    let dumpdir = VzdumpRequest {
        vmids: vec![vmid(100)],
        dumpdir: Some("/tmp".into()),
        ..VzdumpRequest::default()
    };
    for c in [&tuner, &env.client] {
        let e = c.vzdump(&pve1, &dumpdir).await.unwrap_err();
        let Error::ParameterVerification { errors, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(errors["dumpdir"], "Only root may set this option.");
    }
}
