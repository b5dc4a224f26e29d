//! PVE 9.1's vzdump option permissions (`PVE::API2::VZDump`): `tmpdir`, `dumpdir`, `script`
//! and `job-id` are root@pam's only; `bwlimit`/`ionice` need `Sys.Modify` on `/`;
//! `prune-backups` needs `Datastore.Allocate` on the target storage; a backup needs
//! `Datastore.AllocateSpace` on it and `VM.Backup` on the guest. Privilege-separated tokens from
//! the seed's `acl`.

use homelab_autopilot::pvesim::SimConfig;
use homelab_autopilot::pvesim::seed::{AclSpec, TokenSpec};

use crate::pvesim_common::{Api, Auth, fast_config};

fn acl(path: &str, privs: &[&str]) -> AclSpec {
    AclSpec {
        path: path.into(),
        privs: privs.iter().map(|p| (*p).to_string()).collect(),
        propagate: true,
    }
}

fn config_with(tokens: &[(&str, Vec<AclSpec>)]) -> SimConfig {
    let mut config = fast_config();
    for (id, entries) in tokens {
        config.seed.users[0].tokens.push(TokenSpec {
            id: (*id).into(),
            secret: format!("secret-{id}"),
            acl: Some(entries.clone()),
        });
    }
    config
}

fn token(id: &str) -> Auth {
    Auth::Token(format!("PVEAPIToken=root@pam!{id}=secret-{id}"))
}

fn backup_only() -> Vec<AclSpec> {
    vec![
        acl("/vms", &["VM.Backup"]),
        acl("/storage", &["Datastore.AllocateSpace"]),
    ]
}

#[tokio::test]
async fn vzdump_option_permissions_follow_pve_9_1() {
    let mut tuner = backup_only();
    tuner.push(acl("/", &["Sys.Modify"]));
    let mut pruner = backup_only();
    pruner.push(acl("/storage/local", &["Datastore.Allocate"]));
    let api = Api::start(config_with(&[
        ("plain", backup_only()),
        ("tuner", tuner),
        ("pruner", pruner),
        ("nothing", vec![]),
    ]))
    .await;
    let plain = api.with_auth(token("plain"));
    let tuner = api.with_auth(token("tuner"));
    let pruner = api.with_auth(token("pruner"));

    for (key, value) in [("bwlimit", "1000"), ("ionice", "5")] {
        let r = plain
            .post("/nodes/pve1/vzdump", &[("vmid", "100"), (key, value)])
            .await;
        assert_eq!(r.status, 403, "{key}: {}", r.raw);
        assert_eq!(
            r.reason.as_deref(),
            Some("Permission check failed (/, Sys.Modify)")
        );
        let ok = tuner
            .post("/nodes/pve1/vzdump", &[("vmid", "100"), (key, value)])
            .await;
        assert_eq!(ok.status, 200, "{key} with Sys.Modify: {}", ok.raw);
        api.wait_task(ok.data().as_str().expect("upid")).await;
    }

    let prune = [("vmid", "100"), ("prune-backups", "keep-last=1")];
    let r = tuner.post("/nodes/pve1/vzdump", &prune).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(
        r.reason.as_deref(),
        Some("Permission check failed (/storage/local, Datastore.Allocate)")
    );
    let ok = pruner.post("/nodes/pve1/vzdump", &prune).await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    api.wait_task(ok.data().as_str().expect("upid")).await;
    // Datastore.Allocate on `local` does not cover `pbs`.
    let r = pruner
        .post(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "100"),
                ("storage", "pbs"),
                ("prune-backups", "keep-last=1"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.raw);

    // root@pam only, whatever the privileges: even Sys.Modify does not help.
    for (key, value) in [
        ("tmpdir", "/tmp"),
        ("dumpdir", "/tmp"),
        ("script", "/bin/true"),
        ("job-id", "backup-1"),
    ] {
        let r = tuner
            .post("/nodes/pve1/vzdump", &[("vmid", "100"), (key, value)])
            .await;
        assert_eq!(r.status, 400, "{key}: {}", r.raw);
        assert_eq!(r.body["errors"][key], "Only root may set this option.");
    }

    // No privileges at all: the backup itself is refused.
    let r = api
        .with_auth(token("nothing"))
        .post("/nodes/pve1/vzdump", &[("vmid", "100")])
        .await;
    assert_eq!(r.status, 403, "{}", r.raw);
}
