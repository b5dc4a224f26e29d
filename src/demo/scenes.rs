//! The scenes of `homelab-autopilot demo`, in order. Each is an `async fn(&mut Demo)` that
//! changes the world (or the simulated Proxmox), runs reconcile passes at the demo clock and
//! prints what `kubectl` would show. Later kinds add their scenes to [`SCENES`].

use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;

use super::Demo;
use crate::proxmox::{
    GuestRef, GuestType, NodeName, Vmid,
    api::{MigrateRequest, StopOptions},
};

/// A scene.
pub type Scene = for<'a> fn(&'a mut Demo) -> BoxFuture<'a, anyhow::Result<()>>;

/// Every scene, in order.
pub const SCENES: &[Scene] = &[
    |d| Box::pin(connect(d)),
    |d| Box::pin(guests_found(d)),
    |d| Box::pin(migration(d)),
    |d| Box::pin(stopped_and_restarted(d)),
    |d| Box::pin(failing_check(d)),
    |d| Box::pin(recovery(d)),
    |d| Box::pin(backup_run(d)),
    |d| Box::pin(restore_test(d)),
];

/// Printed before the scenes.
pub const INTRO: &str = "\
homelab-autopilot demo: the operator's reconcile logic against a simulated Proxmox VE cluster
(pvesim, in-process), with no Kubernetes and no Proxmox needed.

The manifests in examples/ are loaded as if applied with `kubectl apply -n homelab -f examples/`.
The ProxmoxCluster's endpoint, API token and certificate fingerprint are pointed at the simulator
(shown as https://pvesim:8006), and the Services' HTTP and TCP health checks at local stand-in
servers. Time runs on a demo clock, so every run prints the same.";

/// Printed after the scenes.
pub const OUTRO: &str = "
Done. The same reconcile code runs in `homelab-autopilot operator` against a real API server
(tests/kind) and against this simulator (tests/api). Install it on k3s: see the README.";

fn nextcloud_on(node: &str) -> anyhow::Result<GuestRef> {
    Ok(GuestRef::new(
        NodeName::new(node)?,
        GuestType::Qemu,
        Vmid::new(200)?,
    ))
}

async fn connect(d: &mut Demo) -> anyhow::Result<()> {
    d.heading("1. The operator connects to the cluster");
    d.say("$ kubectl apply -n homelab -f examples/");
    d.say("The ProxmoxCluster controller reads the token Secret, pins the certificate fingerprint and");
    d.say("reads version, quorum, nodes and storages:");
    d.clusters_pass().await?;
    d.kubectl_get("proxmoxclusters");
    d.new_events();
    Ok(())
}

async fn guests_found(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(30));
    d.heading("2. Services find their guests");
    d.say("Each Service asks the cluster where its guest really runs (the node in spec is only a hint)");
    d.say("and runs its health checks: HTTP, TCP, the QEMU guest agent, and a command through the agent.");
    d.services_pass_and_show().await?;
    Ok(())
}

async fn migration(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(5 * 60));
    d.heading("3. A guest moves to another node");
    d.say("Someone live-migrates nextcloud (VM 200) from pve1 to pve2 in the Proxmox UI.");
    let target = NodeName::new("pve2")?;
    let task = d
        .admin
        .migrate_guest(&nextcloud_on("pve1")?, &MigrateRequest::new(target, true))
        .await?;
    d.wait(&task).await?;
    d.services_pass_and_show().await?;
    Ok(())
}

async fn stopped_and_restarted(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(5 * 60));
    d.heading("4. A stopped guest is started again");
    d.say("nextcloud is stopped by hand. A stopped guest is not healthy (reason GuestNotRunning) and its");
    d.say("checks wait. Its Service says `powerState: Running`, so the operator starts it: it records the");
    d.say("start task's UPID in status, and looks at the task again on the next pass.");
    let task = d
        .admin
        .stop_guest(&nextcloud_on("pve2")?, &StopOptions::default())
        .await?;
    d.wait(&task).await?;
    d.services_pass_and_show().await?;
    d.say("\nThe start task finishes; the next pass sees the guest running and runs every check at once:");
    d.wait_pending().await?;
    d.services_pass().await?;
    d.new_events();
    Ok(())
}

async fn failing_check(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(10 * 60));
    d.heading("5. A health check fails");
    d.say("nextcloud's web server starts answering HTTP 503. The `web` check runs every 60 s and turns");
    d.say("unhealthy after 3 failures in a row (failureThreshold):");
    d.nextcloud_web.set_status(503);
    for pass in 0..3 {
        if pass > 0 {
            d.advance(Duration::from_secs(60));
        }
        d.services_pass().await?;
    }
    d.kubectl_get("services");
    d.new_events();
    Ok(())
}

async fn recovery(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(60));
    d.heading("6. It recovers");
    d.say("The web server is fixed; one passing probe makes the check healthy again.");
    d.nextcloud_web.set_status(200);
    d.services_pass().await?;
    d.clusters_pass().await?;
    d.new_events();
    d.kubectl_get("proxmoxclusters");
    d.kubectl_get("services");
    Ok(())
}

async fn backup_run(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(60));
    d.heading("7. A backup run, on demand");
    d.say("The BackupPolicy `nightly` backs up every Service labelled backup=nightly to the Proxmox Backup");
    d.say("Server at 02:30 Europe/Berlin. It can also be started now:");
    d.say(
        "$ kubectl annotate backuppolicy nightly -n homelab autopilot.homelab.dev/run-now=demo --overwrite",
    );
    d.world.annotate::<crate::crd::BackupPolicy>(
        "nightly",
        crate::controllers::kit::schedule::RUN_NOW_ANNOTATION,
        "demo",
    )?;
    d.say("The run is recorded in status before any guest is touched; then each guest gets a vzdump whose");
    d.say("notes carry the policy's UID (that note, never a file name, proves a backup ours), one guest per");
    d.say("node at a time, each backup is checked, and retention prunes only this policy's backups.");
    d.backups_until_idle().await?;
    d.kubectl_get("backuppolicies");
    d.new_events();
    Ok(())
}

async fn restore_test(d: &mut Demo) -> anyhow::Result<()> {
    d.advance(Duration::from_secs(60));
    d.heading("8. How fast can nextcloud be restored?");
    d.say("The RestoreTest `nextcloud-monthly` restores nextcloud's latest verified backup on pve3 under a");
    d.say(
        "fresh VMID from 9900-9949, with every NIC on vmbr99 (a bridge without uplink), boots it, runs its",
    );
    d.say("checks and measures the RTO. It runs on the 1st of the month; it can also be started now:");
    d.say(
        "$ kubectl annotate restoretest nextcloud-monthly -n homelab autopilot.homelab.dev/run-now=demo --overwrite",
    );
    d.world.annotate::<crate::crd::RestoreTest>(
        "nextcloud-monthly",
        crate::controllers::kit::schedule::RUN_NOW_ANNOTATION,
        "demo",
    )?;
    d.say("The copy's VMID is recorded in status before the restore starts; the copy carries the tag");
    d.say("`autopilot` and the RestoreTest's UID, and is removed cleanup.afterSeconds (300 s) after its checks.");
    d.restore_tests_until_idle().await?;
    d.kubectl_get("restoretests");
    d.say("(gitea-nightly and random-weekly have not run yet: they wait for their schedules, 04:30 daily");
    d.say("and Sundays 07:00.)");
    d.new_events();
    let test = d.world.get::<crate::crd::RestoreTest>("nextcloud-monthly")?;
    let run = test
        .status
        .and_then(|s| s.last_run)
        .context("nextcloud-monthly has no finished run")?;
    let r = run.restores.first().context("the run restored nothing")?;
    let secs = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
    d.say(&format!(
        "\nThe breakdown (`kubectl describe restoretest nextcloud-monthly`, status.lastRun.restores):\n\
         RTO {} = restore {} + boot {} + application {} (target {})",
        secs(r.rto_seconds),
        secs(r.restore_seconds),
        secs(r.boot_seconds),
        secs(r.application_seconds),
        secs(run.rto_target_seconds),
    ));
    Ok(())
}
