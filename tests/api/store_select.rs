//! Selecting snapshots as a BackupPolicy needs: `list` filters, `forget`, and `prune` limited to
//! names and tags, so one policy never prunes another's backups (CLI and library).

use std::path::Path;

use homelab_autopilot::storage::prune::KeepOptions;
use homelab_autopilot::storage::{ChunkStore, OpenOptions, SnapshotFilter};

use super::store_common::*;

/// Backs up `data` as `name` with `tags`; returns the short id.
fn backup_tagged(repo: &Path, name: &str, tags: &[&str], data: &[u8]) -> String {
    let mut args = vec!["--json", "backup", "--name", name];
    for t in tags {
        args.extend(["--tag", t]);
    }
    args.push("-");
    let out = store_stdin(repo, &args, data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshot"]["id"].as_str().unwrap().to_string()
}

/// `list --json ARGS` as (id, name) pairs, oldest first.
fn listed(repo: &Path, args: &[&str]) -> Vec<(String, String)> {
    let mut all = vec!["--json", "list"];
    all.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&ok(repo, &all)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ids(list: &[(String, String)]) -> Vec<&str> {
    list.iter().map(|(id, _)| id.as_str()).collect()
}

/// Three `a` (node=pve1), two `b` (node=pve2), one `c` (untagged), oldest first per name.
fn three_policies(repo: &Path) -> (Vec<String>, Vec<String>, String) {
    init_small(repo, &[]);
    let a: Vec<String> = (0..3)
        .map(|i| backup_tagged(repo, "a", &["node=pve1", "policy=pa"], &seeded(i, 5000)))
        .collect();
    let b: Vec<String> = (0..2)
        .map(|i| backup_tagged(repo, "b", &["node=pve2"], &seeded(10 + i, 5000)))
        .collect();
    let c = backup_tagged(repo, "c", &[], &seeded(20, 5000));
    (a, b, c)
}

#[test]
fn store_list_filters_by_name_tag_and_last() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let (a, b, c) = three_policies(&repo);
    assert_eq!(ids(&listed(&repo, &["--name", "a"])), a);
    assert_eq!(ids(&listed(&repo, &["--tag", "node=pve2"])), b);
    assert!(
        listed(&repo, &["--tag", "node=pve1", "--tag", "policy=other"]).is_empty(),
        "tags: all must match"
    );
    assert_eq!(
        listed(&repo, &["--name", "a", "--name", "c"]).len(),
        4,
        "names: any may match"
    );
    assert_eq!(ids(&listed(&repo, &["--last", "1"])), [&a[2], &b[1], &c]);
    assert_eq!(
        ids(&listed(&repo, &["--name", "a", "--last", "2"])),
        [&a[1], &a[2]]
    );
    let human = ok(&repo, &["list", "--name", "b"]);
    assert!(
        human.contains(&b[0]) && !human.contains(&a[0]) && !human.contains(&c),
        "{human}"
    );
}

#[test]
fn store_forget_removes_exactly_the_given_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let (a, b, c) = three_policies(&repo);
    let out = ok(&repo, &["forget", &a[0], "b@latest"]);
    assert!(out.contains("removed 2 snapshots"), "{out}");
    let left = listed(&repo, &[]);
    assert_eq!(ids(&left), [&a[1], &a[2], &b[0], &c]);
    let e = fails(&repo, &["forget", &a[0]]);
    assert!(e.contains("no snapshot matches"), "{e}");
    ok(&repo, &["gc", "--grace", "0"]);
    assert!(ok(&repo, &["verify", "--read-data"]).contains("verify OK"));
    assert_eq!(restore_bytes(&repo, &b[0]), seeded(10, 5000));
}

#[test]
fn store_prune_by_name_or_tag_never_touches_other_policies() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let (a, b, c) = three_policies(&repo);
    let out = ok(&repo, &["--json", "prune", "--name", "a", "--keep-last", "1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["removed"], 2);
    assert!(
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["name"] == "a"),
        "{v}"
    );
    assert_eq!(ids(&listed(&repo, &[])), [&a[2], &b[0], &b[1], &c]);
    ok(&repo, &["prune", "--tag", "node=pve2", "--keep-last", "1"]);
    assert_eq!(ids(&listed(&repo, &[])), [&a[2], &b[1], &c]);
    // A filter that selects nothing removes nothing.
    let out = ok(&repo, &["prune", "--name", "nobody", "--keep-last", "1"]);
    assert!(out.contains("removed 0 snapshots"), "{out}");
    assert_eq!(listed(&repo, &[]).len(), 3);
}

#[test]
fn store_library_prune_matching_limits_retention_to_the_filter() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let (a, b, c) = three_policies(&repo);
    let store = ChunkStore::open(repo.to_str().unwrap(), OpenOptions::default()).unwrap();
    let keep = KeepOptions {
        last: Some(1),
        ..KeepOptions::default()
    };
    let only_a = SnapshotFilter {
        names: vec!["a".into()],
        tags: [("policy".to_string(), "pa".to_string())].into(),
    };
    let dry = store.prune_matching(&keep, &only_a, true).unwrap();
    assert_eq!(dry.removed, 2);
    assert_eq!(store.list().unwrap().len(), 6, "dry run changed nothing");
    let report = store.prune_matching(&keep, &only_a, false).unwrap();
    assert_eq!(report.removed, 2);
    assert!(report.decisions.iter().all(|d| d.name == "a"));
    let left: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    let left: Vec<&String> = left.iter().collect();
    assert_eq!(left, [&a[2], &b[0], &b[1], &c]);
    let b_only = store
        .list_matching(
            &SnapshotFilter {
                names: vec!["b".into()],
                ..SnapshotFilter::default()
            },
            Some(1),
        )
        .unwrap();
    assert_eq!(b_only.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [&b[1]]);
}
