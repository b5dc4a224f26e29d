//! Future-dated snapshots (a clock that was ahead): `backup` warns, and `prune` keeps them out of
//! its rules so they never take the place of today's real backups.

use super::store_common::*;

#[test]
fn store_future_dated_snapshot_warns_and_takes_no_prune_bucket() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let f = write(d.path(), "f", b"data");
    let ahead = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 365))
        .unwrap()
        .to_string();
    let out = ok(
        &repo,
        &[
            "--json",
            "backup",
            "--name",
            "daily",
            "--time",
            &ahead,
            f.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let future = v["snapshot"]["id"].as_str().unwrap().to_string();
    assert!(v.get("warnings").is_none(), "{v}");
    // Today's real backups: the clock is now behind the newest snapshot.
    let out = ok(
        &repo,
        &["--json", "backup", "--name", "daily", f.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let older = v["snapshot"]["id"].as_str().unwrap().to_string();
    let w = v["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("clock is behind") && w.contains(&future), "{v}");
    let human = ok(&repo, &["backup", "--name", "daily", f.to_str().unwrap()]);
    assert!(
        human.contains("warning") && human.contains("clock is behind"),
        "{human}"
    );
    let newest = ok(&repo, &["--json", "list", "--last", "3"]);
    let list: serde_json::Value = serde_json::from_str(&newest).unwrap();
    let today = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|id| *id != future && *id != older)
        .unwrap();

    // Without the rule, the snapshot a year ahead would be the newest day's backup and the only
    // one kept.
    let out = ok(&repo, &["--json", "prune", "--keep-daily", "1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mark = |id: &str| {
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["mark"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(mark(&future), "keep-future", "{v}");
    assert_eq!(mark(&today), "keep", "{v}");
    assert_eq!(mark(&older), "remove", "{v}");
    assert_eq!(v["removed"], 1);
    let human = ok(&repo, &["prune", "--keep-last", "1", "--dry-run"]);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("keep-future") && l.contains(&future)),
        "{human}"
    );
    assert!(human.contains("would remove 0 snapshots"), "{human}");
}
