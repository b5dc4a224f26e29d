//! Concurrency and retention through the CLI: parallel backups into one repository, gc racing
//! backups that reuse chunks gc would otherwise delete, and prune + gc reclaiming space.

use std::process::{Child, Stdio};

use super::store_common::*;

fn spawn(repo: &std::path::Path, args: &[&str]) -> Child {
    store_cmd(repo, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ok(c: Child, what: &str) -> String {
    let out = c.wait_with_output().unwrap();
    no_panic(&out);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn store_concurrent_backups_and_gc_keep_every_snapshot_intact() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    // Shared content across the backups so they race on the same new chunk ids.
    let common = seeded(10, 1 << 20);
    let inputs: Vec<Vec<u8>> = (0..3u64)
        .map(|i| {
            let mut v = common.clone();
            v.extend_from_slice(&seeded(20 + i, 1 << 20));
            v
        })
        .collect();
    // Chunks that gc may consider dead: an old snapshot pruned away, whose data the new
    // backups reuse.
    let old = write(d.path(), "old", &inputs[0]);
    backup(&repo, "old", &old);
    backup(&repo, "old", &write(d.path(), "other", &seeded(30, 200_000)));
    ok(&repo, &["prune", "--keep-last", "1"]);
    let files: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, v)| write(d.path(), &format!("in{i}"), v))
        .collect();
    let mut kids = Vec::new();
    for (i, f) in files.iter().enumerate() {
        kids.push((
            format!("backup {i}"),
            spawn(
                &repo,
                &[
                    "--json",
                    "backup",
                    "--name",
                    &format!("vm-{i}"),
                    f.to_str().unwrap(),
                ],
            ),
        ));
        if i == 1 {
            kids.push(("gc".to_string(), spawn(&repo, &["gc", "--grace", "0"])));
        }
    }
    let mut ids = Vec::new();
    for (what, c) in kids {
        let out = wait_ok(c, &what);
        if what.starts_with("backup") {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            ids.push(v["snapshot"]["id"].as_str().unwrap().to_string());
        }
    }
    ok(&repo, &["gc", "--grace", "0"]);
    assert!(ok(&repo, &["verify", "--read-data"]).contains("verify OK"));
    for (id, want) in ids.iter().zip(&inputs) {
        assert!(restore_bytes(&repo, id) == *want, "snapshot {id}");
    }
    let list: serde_json::Value = serde_json::from_str(&ok(&repo, &["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4);
}

#[test]
fn store_prune_then_gc_reclaims_space_and_keeps_newest() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let mut ids = Vec::new();
    for i in 0..4u64 {
        ids.push(backup(
            &repo,
            "vm-100",
            &write(d.path(), "f", &seeded(40 + i, 1 << 20)),
        ));
    }
    let keep_other = backup(&repo, "ct-200", &write(d.path(), "g", &seeded(50, 300_000)));
    let before: serde_json::Value = serde_json::from_str(&ok(&repo, &["stats", "--json"])).unwrap();
    let dry = ok(&repo, &["prune", "--keep-last", "2", "--dry-run"]);
    assert!(dry.contains("would remove 2 snapshots"), "{dry}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ok(&repo, &["list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let e = fails(&repo, &["prune"]);
    assert!(e.contains("--keep-"), "{e}");
    let pr: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["prune", "--keep-last", "2", "--json"])).unwrap();
    assert_eq!(pr["removed"], 2);
    let gc: serde_json::Value = serde_json::from_str(&ok(&repo, &["gc", "--grace", "0", "--json"])).unwrap();
    assert!(gc["bytes_freed"].as_u64().unwrap() > 1 << 20, "{gc}");
    let after: serde_json::Value = serde_json::from_str(&ok(&repo, &["stats", "--json"])).unwrap();
    assert!(after["stored_bytes"].as_u64().unwrap() < before["stored_bytes"].as_u64().unwrap());
    // Rewritten packs are merged, so gc never multiplies files.
    assert!(
        after["packs"].as_u64().unwrap() < before["packs"].as_u64().unwrap(),
        "{before} -> {after}"
    );
    let list: serde_json::Value = serde_json::from_str(&ok(&repo, &["list", "--json"])).unwrap();
    let left: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![ids[2].as_str(), ids[3].as_str(), keep_other.as_str()]);
    assert!(ok(&repo, &["verify", "--read-data"]).contains("verify OK"));
    assert_eq!(restore_bytes(&repo, &ids[3]), seeded(43, 1 << 20));
    let e = fails(&repo, &["restore", &ids[0], "--to", "-"]);
    assert!(e.contains("no snapshot matches"), "{e}");
}
