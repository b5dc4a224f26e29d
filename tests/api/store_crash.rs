//! Crash safety: SIGKILL the real backup process at seeded random moments; after each kill,
//! verify passes, every earlier snapshot restores byte-for-byte, and the next backup succeeds.

use std::process::Stdio;
use std::time::Duration;

use super::store_common::*;

#[test]
fn store_backup_killed_at_random_points_loses_nothing_committed() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let mut rng = Rng(0x5eed_2026);
    let mut base = seeded(1, 3 << 20);
    let mut saved: Vec<(String, Vec<u8>)> = Vec::new();
    let mut killed_mid_way = 0;
    // Kill points are drawn from the duration of the last completed backup of the same size.
    let mut last_ms = 300u64;
    for round in 0..14u64 {
        // Change some scattered 4 KiB blocks so every backup writes new packs.
        for _ in 0..24 {
            let at = rng.below(base.len() as u64 - 4096) as usize;
            base[at..at + 4096].copy_from_slice(&seeded(round * 1000 + at as u64, 4096));
        }
        let f = write(d.path(), "disk.raw", &base);
        let mut child = store_cmd(&repo, &["backup", "--name", "vm", f.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(last_ms.max(20))));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished {
            killed_mid_way += 1;
        }
        let v = store(&repo, &["verify"]);
        assert!(
            v.status.success(),
            "verify after kill {round}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
        // Every complete snapshot restores byte-for-byte: the earlier ones we know, plus the
        // killed one if it finished before the kill.
        let list: serde_json::Value = serde_json::from_str(&ok(&repo, &["list", "--json"])).unwrap();
        for s in list.as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            if !s["complete"].as_bool().unwrap() {
                continue;
            }
            let got = restore_bytes(&repo, id);
            match saved.iter().find(|(sid, _)| sid == id) {
                Some((_, want)) => assert!(got == *want, "snapshot {id} changed after kill {round}"),
                None => {
                    // Only this round's killed backup can be new here.
                    assert!(got == base, "snapshot {id} completed by killed backup differs");
                    saved.push((id.to_string(), base.clone()));
                }
            }
        }
        // The next backup succeeds.
        let started = std::time::Instant::now();
        let id = backup(&repo, "vm", &f);
        last_ms = started.elapsed().as_millis() as u64;
        saved.push((id, base.clone()));
    }
    println!("{killed_mid_way} of 14 kills hit a running backup");
    assert!(
        killed_mid_way >= 4,
        "only {killed_mid_way} kills hit a running backup"
    );
    // gc cleans up crash leftovers (stale locks of dead processes included) without harm.
    let gc = ok(&repo, &["gc", "--grace", "0"]);
    assert!(gc.contains("gc:"), "{gc}");
    let v = ok(&repo, &["verify", "--read-data"]);
    assert!(v.contains("verify OK"), "{v}");
    for (id, want) in &saved {
        assert!(restore_bytes(&repo, id) == *want, "snapshot {id} after gc");
    }
    let tmp_left: Vec<_> = std::fs::read_dir(repo.join("tmp"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(tmp_left.is_empty(), "staging leftovers after gc: {tmp_left:?}");
}

#[test]
fn store_gc_killed_at_random_points_keeps_live_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let mut rng = Rng(0x6c_2026);
    let mut base = seeded(2, 2 << 20);
    let mut last_ms = 300u64;
    for round in 0..6u64 {
        // Two new versions, then prune to the newest: the older one's chunks become garbage
        // in packs that also hold live chunks, so gc deletes some packs and rewrites others.
        for v in 0..2u64 {
            for _ in 0..40 {
                let at = rng.below(base.len() as u64 - 4096) as usize;
                base[at..at + 4096].copy_from_slice(&seeded(round * 100 + v * 10 + at as u64, 4096));
            }
            backup(&repo, "vm", &write(d.path(), "disk.raw", &base));
        }
        ok(&repo, &["prune", "--keep-last", "1"]);
        let mut child = store_cmd(&repo, &["gc", "--grace", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(last_ms.max(20))));
        child.kill().unwrap();
        child.wait().unwrap();
        let v = store(&repo, &["verify", "--read-data"]);
        assert!(
            v.status.success(),
            "verify after killed gc {round}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
        assert!(
            restore_bytes(&repo, "vm@latest") == base,
            "latest snapshot damaged by killed gc {round}"
        );
        let started = std::time::Instant::now();
        let report = ok(&repo, &["gc", "--grace", "0"]);
        last_ms = started.elapsed().as_millis() as u64;
        println!("round {round}: gc after the killed one: {}", report.trim());
        assert!(ok(&repo, &["verify", "--read-data"]).contains("verify OK"));
    }
}
