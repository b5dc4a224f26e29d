//! `homelab-autopilot demo`, run as a user runs it: the binary, from a directory without the
//! repository, twice (the output must be the same).

use std::process::Command;

fn run_demo() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .arg("demo")
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn demo_binary_plays_every_scene_deterministically_and_exits_zero() {
    let first = run_demo();
    for expected in [
        // Scene 1: kubectl get proxmoxclusters, columns from the CRD.
        "NAME      CONNECTED   QUORATE   NODES   VERSION   AGE\nhomelab   True        True      3/3     9.1.3     0s\n",
        "Normal   Connected   proxmoxcluster/homelab   Connected to https://pvesim:8006 (Proxmox VE 9.1.3, cluster homelab, 3/3 nodes online)",
        // Scene 2: the guests, found where they run.
        "NAME        NODE   VMID   TYPE   POWER     HEALTHY   UP    AGE\n\
         gitea       pve2   201    LXC    Running   True      3d    30s\n\
         nextcloud   pve1   200    VM     Running   True      3d    30s\n",
        // Scene 3: a migration.
        "GuestMigrated   service/nextcloud   nextcloud (VM 200) moved from pve1 to pve2",
        // Scene 4: stopped by hand, started by the operator.
        "nextcloud   pve2   200    VM     Stopped   False           10m\n",
        "Warning   GuestDown       service/nextcloud   nextcloud (VM 200) is stopped on pve2",
        "Warning   Unhealthy       service/nextcloud   nextcloud (VM 200): the guest is stopped; its health checks resume when it runs",
        "Normal    StartingGuest   service/nextcloud   Asked Proxmox VE to start nextcloud (VM 200) on pve2",
        "GuestRecovered   service/nextcloud   nextcloud (VM 200) is running again on pve2",
        "Normal   Healthy          service/nextcloud   nextcloud (VM 200): all 3 health checks pass",
        // Scene 5: a failing health check.
        "nextcloud   pve2   200    VM     Running   False     12m   22m\n",
        "Warning   Unhealthy   service/nextcloud   nextcloud (VM 200): check web (HTTP) is failing: HTTP 503, expected 200 (3 failures in a row)",
        // Scene 6: recovered.
        "Normal   Healthy   service/nextcloud   nextcloud (VM 200): all 3 health checks pass",
        "nextcloud   pve2   200    VM     Running   True      13m   23m\n",
        // Scene 7: a backup run on demand, to PBS.
        "NAME      LAST BACKUP   RESULT      NEXT                   STORED              AGE\n\
         nightly   0s            Succeeded   2026-06-02T00:30:00Z   1.2 MiB (logical)   25m\n",
        "Normal   BackupSucceeded   backuppolicy/nightly   run now-20260601-102430: 2/2 Services backed up",
        // Scene 8: a RestoreTest on demand: nextcloud restored into isolation, RTO measured, copy removed.
        "NAME                SERVICE     RESULT   RTO   TARGET   LAST RUN   AGE\n",
        "nextcloud-monthly   nextcloud   Passed   20    900      5m35s      31m\n",
        "Normal   CleanedUp            restoretest/nextcloud-monthly   nextcloud: removed the restored copy 9900 from pve3",
        "RTO 20 s = restore 5 s + boot 15 s + application 0 s (target 900 s)",
    ] {
        assert!(first.contains(expected), "missing:\n{expected}\nin:\n{first}");
    }
    assert!(
        !first.contains("127.0.0.1"),
        "ephemeral addresses leak into the output:\n{first}"
    );
    let second = run_demo();
    assert_eq!(first, second, "the demo output differs between runs");
}
