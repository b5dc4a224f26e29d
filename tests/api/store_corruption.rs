//! Corruption: a flipped bit, a truncated pack, a deleted pack and a damaged SQLite file are
//! found by `verify --read-data`, which names the affected snapshots and exits non-zero; nothing
//! panics; unaffected snapshots still restore; `reindex` rebuilds a lost index.

use std::path::{Path, PathBuf};

use super::store_common::*;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    a: (String, Vec<u8>),
    b: (String, Vec<u8>),
    a_packs: Vec<PathBuf>,
}

/// Two snapshots with disjoint data, so the packs written by the first belong to it alone.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_small(&repo, &[]);
    let a = seeded(1, 3 << 20);
    let id_a = backup(&repo, "alpha", &write(dir.path(), "a", &a));
    let a_packs = packs(&repo);
    let b = seeded(2, 2 << 20);
    let id_b = backup(&repo, "beta", &write(dir.path(), "b", &b));
    assert!(a_packs.len() >= 2);
    Fixture {
        _dir: dir,
        repo,
        a: (id_a, a),
        b: (id_b, b),
        a_packs,
    }
}

fn verify_names_only_alpha(f: &Fixture, read_data: bool) {
    let mut args = vec!["verify"];
    if read_data {
        args.push("--read-data");
    }
    let out = store(&f.repo, &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verify passed on a damaged repository: {text}"
    );
    let affected = text.split("affected snapshots:").nth(1).unwrap_or_default();
    assert!(affected.contains(&f.a.0) && affected.contains("alpha"), "{text}");
    assert!(!affected.contains(&f.b.0), "{text}");
    // The damaged snapshot fails to restore with an error; the other one is intact.
    let r = store(&f.repo, &["restore", &f.a.0, "--to", "-"]);
    assert!(!r.status.success() || r.stdout != f.a.1);
    assert_eq!(restore_bytes(&f.repo, &f.b.0), f.b.1);
    let json: serde_json::Value =
        serde_json::from_slice(&store(&f.repo, &["verify", "--read-data", "--json"]).stdout).unwrap();
    assert_eq!(json["ok"], false);
    // The outcome is recorded per snapshot and shown by `list`.
    let list: serde_json::Value = serde_json::from_str(&ok(&f.repo, &["list", "--json"])).unwrap();
    for s in list.as_array().unwrap() {
        let damaged = s["id"] == f.a.0.as_str();
        assert_eq!(s["last_verify"]["ok"], !damaged, "{s}");
    }
    assert!(ok(&f.repo, &["list"]).contains("VERIFY FAILED"));
}

fn flip_bit(p: &Path, at: usize) {
    let mut bytes = std::fs::read(p).unwrap();
    bytes[at] ^= 0x04;
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn store_verify_flipped_bit_in_chunk_names_snapshot() {
    let f = fixture();
    let p = &f.a_packs[0];
    let len = std::fs::metadata(p).unwrap().len() as usize;
    flip_bit(p, len / 2);
    // A flipped bit is only visible when the data is read.
    assert!(store(&f.repo, &["verify"]).status.success());
    verify_names_only_alpha(&f, true);
}

#[test]
fn store_verify_truncated_pack_names_snapshot() {
    let f = fixture();
    truncate_to_third(&f.a_packs[1]);
    verify_names_only_alpha(&f, false);
    verify_names_only_alpha(&f, true);
}

#[test]
fn store_verify_deleted_pack_names_snapshot() {
    let f = fixture();
    std::fs::remove_file(&f.a_packs[0]).unwrap();
    verify_names_only_alpha(&f, true);
    let text = fails(&f.repo, &["verify", "--read-data"]);
    assert!(text.contains("is missing"), "{text}");
}

#[test]
fn store_verify_damaged_index_names_snapshots_and_reindex_repairs() {
    let f = fixture();
    let db = f.repo.join("index/index.sqlite");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..100].fill(0x5a);
    std::fs::write(&db, bytes).unwrap();
    let out = store(&f.repo, &["verify", "--read-data"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("index database is damaged") && text.contains("reindex"),
        "{text}"
    );
    assert!(text.contains(&f.a.0) && text.contains(&f.b.0), "{text}");
    let e = fails(&f.repo, &["restore", &f.b.0, "--to", "-"]);
    assert!(e.contains("reindex"), "{e}");
    let r = ok(&f.repo, &["reindex"]);
    assert!(r.contains("2 snapshots"), "{r}");
    assert!(ok(&f.repo, &["verify", "--read-data"]).contains("verify OK"));
    assert_eq!(restore_bytes(&f.repo, &f.a.0), f.a.1);
    assert_eq!(restore_bytes(&f.repo, &f.b.0), f.b.1);
}

#[test]
fn store_reindex_after_index_loss_restores_everything() {
    let f = fixture();
    std::fs::remove_dir_all(f.repo.join("index")).unwrap();
    // Opening rebuilds a missing index on its own.
    assert_eq!(restore_bytes(&f.repo, &f.b.0), f.b.1);
    assert!(ok(&f.repo, &["verify", "--read-data"]).contains("verify OK"));
}
