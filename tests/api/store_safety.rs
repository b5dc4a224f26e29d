//! The index is a cache: gc and prune never trust a stale or emptied index (they rebuild it from
//! the packs and snapshot files first, and never delete a pack a snapshot file needs), and a lost
//! or truncated pack is found by `verify` (exit 4, naming the snapshot), marked by `repair`, and
//! healed by the next backup of the same data.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::store_common::*;

/// Exit status of `verify` (and `repair`) when damage is found.
const EXIT_DAMAGE: i32 = 4;

struct Repo {
    dir: tempfile::TempDir,
    repo: PathBuf,
    snaps: Vec<(String, Vec<u8>)>,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        init_small(&repo, &[]);
        Repo {
            dir,
            repo,
            snaps: Vec::new(),
        }
    }

    fn backup(&mut self, name: &str, data: Vec<u8>) -> String {
        let f = write(self.dir.path(), &format!("src-{}", self.snaps.len()), &data);
        let id = backup(&self.repo, name, &f);
        self.snaps.push((id.clone(), data));
        id
    }

    fn index_files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|s| self.repo.join(format!("index/index.sqlite{s}")))
            .collect()
    }

    /// Copies the index files (as a file-system backup of the repository would).
    fn save_index(&self) -> PathBuf {
        let to = self.dir.path().join(format!("index-copy-{}", self.snaps.len()));
        std::fs::create_dir_all(&to).unwrap();
        for f in self.index_files() {
            if f.exists() {
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
        to
    }

    /// Puts a saved copy back in place of the current index.
    fn restore_index(&self, copy: &Path) {
        for f in self.index_files() {
            let _ = std::fs::remove_file(&f);
            let saved = copy.join(f.file_name().unwrap());
            if saved.exists() {
                std::fs::copy(&saved, &f).unwrap();
            }
        }
    }

    fn assert_all_restore(&self) {
        let list: serde_json::Value = serde_json::from_str(&ok(&self.repo, &["list", "--json"])).unwrap();
        assert_eq!(list.as_array().unwrap().len(), self.snaps.len(), "{list}");
        for (id, data) in &self.snaps {
            assert!(
                restore_bytes(&self.repo, id) == *data,
                "snapshot {id} restored different bytes"
            );
        }
        assert!(ok(&self.repo, &["verify", "--read-data"]).contains("verify OK"));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `gc --grace 0` and asserts it deleted no pack and no file.
fn gc_deletes_nothing(repo: &Path) {
    let gc: serde_json::Value = serde_json::from_str(&ok(repo, &["--json", "gc", "--grace", "0"])).unwrap();
    assert_eq!(gc["packs_deleted"], 0, "{gc}");
    assert_eq!(gc["stray_files_deleted"], 0, "{gc}");
}

#[test]
fn store_gc_and_prune_with_index_replaced_by_older_copy_keep_every_snapshot() {
    let mut r = Repo::new();
    r.backup("vm-100", seeded(1, 2 << 20));
    let old = r.save_index();
    let mut v2 = seeded(1, 2 << 20);
    v2[500_000..520_000].copy_from_slice(&seeded(2, 20_000));
    r.backup("vm-100", v2);
    r.backup("ct-200", seeded(3, 1 << 20));
    r.restore_index(&old);
    // The old copy knows one snapshot only.
    let list: serde_json::Value = serde_json::from_str(&ok(&r.repo, &["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // prune judges from the repository, not from the stale index: keep-last 5 removes nothing.
    let p = ok(&r.repo, &["prune", "--keep-last", "5"]);
    assert!(p.contains("removed 0 snapshots"), "{p}");
    r.restore_index(&old);
    gc_deletes_nothing(&r.repo);
    r.assert_all_restore();
}

#[test]
fn store_gc_with_emptied_index_keeps_every_snapshot() {
    let mut r = Repo::new();
    r.backup("vm-100", seeded(4, 2 << 20));
    r.backup("vm-101", seeded(5, 1 << 20));
    // An emptied index: a valid SQLite file without rows.
    for f in r.index_files() {
        let _ = std::fs::remove_file(&f);
    }
    std::fs::write(&r.index_files()[0], b"").unwrap();
    assert!(ok(&r.repo, &["list"]).lines().count() == 1);
    gc_deletes_nothing(&r.repo);
    r.assert_all_restore();
}

/// Defence in depth: an index that matches the repository's generation and snapshot list but
/// lost a pack's rows (damage no check sees) still cannot make gc delete that pack.
#[test]
fn store_gc_never_deletes_a_pack_a_snapshot_file_needs() {
    let mut r = Repo::new();
    r.backup("vm-100", seeded(6, 2 << 20));
    let pack = packs(&r.repo)[0].clone();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let db = r.index_files()[0].clone();
    let py = format!(
        "import sqlite3; c = sqlite3.connect({db:?}); \
         c.execute(\"DELETE FROM chunks WHERE pack = (SELECT id FROM packs WHERE name = '{name}')\"); \
         c.execute(\"DELETE FROM packs WHERE name = '{name}'\"); c.commit()"
    );
    let st = std::process::Command::new("python3").args(["-c", &py]).status();
    if !st.is_ok_and(|s| s.success()) {
        println!("SKIP defence-in-depth gc test: python3 with sqlite3 is not available");
        return;
    }
    let gc: serde_json::Value =
        serde_json::from_str(&ok(&r.repo, &["--json", "gc", "--grace", "0"])).unwrap();
    assert!(pack.exists(), "gc deleted a pack the snapshot needs: {gc}");
    assert!(gc["packs_kept"][0].as_str().unwrap().contains(&name), "{gc}");
    ok(&r.repo, &["reindex"]);
    r.assert_all_restore();
}

struct Damaged {
    r: Repo,
    alpha: String,
    beta: String,
}

/// Two snapshots with disjoint data; `damage` is applied to one of alpha's packs.
fn damaged(damage: impl FnOnce(&Path)) -> Damaged {
    let mut r = Repo::new();
    let alpha = r.backup("alpha", seeded(7, 3 << 20));
    let alpha_packs = packs(&r.repo);
    let beta = r.backup("beta", seeded(8, 2 << 20));
    damage(&alpha_packs[1]);
    Damaged { r, alpha, beta }
}

fn remove(p: &Path) {
    std::fs::remove_file(p).unwrap();
}

fn damaged_flags(repo: &Path) -> Vec<(String, bool)> {
    let list: serde_json::Value = serde_json::from_str(&ok(repo, &["list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["damaged"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn verify_repair_and_heal(d: Damaged) {
    let repo = &d.r.repo;
    // verify (without --read-data) finds it, names alpha only, and exits with the damage code.
    let out = store(repo, &["verify"]);
    assert_eq!(out.status.code(), Some(EXIT_DAMAGE), "{}", text(&out));
    let affected = text(&out);
    let affected = affected.split("affected snapshots:").nth(1).unwrap_or_default();
    assert!(
        affected.contains(&d.alpha) && !affected.contains(&d.beta),
        "{}",
        text(&out)
    );
    // repair marks alpha (never deletes it) and still exits with the damage code.
    let out = store(repo, &["repair"]);
    assert_eq!(out.status.code(), Some(EXIT_DAMAGE), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("marked DAMAGED {}", d.alpha)),
        "{}",
        text(&out)
    );
    let flags = damaged_flags(repo);
    assert_eq!(flags, vec![(d.alpha.clone(), true), (d.beta.clone(), false)]);
    assert!(ok(repo, &["list"]).contains("DAMAGED"));
    // The mark lives in the repository: a rebuilt index still shows it.
    ok(repo, &["reindex"]);
    assert_eq!(damaged_flags(repo)[0], (d.alpha.clone(), true));
    // The next backup of the same data stores the lost chunks again and restores intact.
    let again = {
        let f = write(d.r.dir.path(), "alpha-again", &d.r.snaps[0].1);
        backup(repo, "alpha", &f)
    };
    assert!(restore_bytes(repo, &again) == d.r.snaps[0].1);
    // That also made the old snapshot whole: repair unmarks it, verify passes.
    let out = ok(repo, &["repair"]);
    assert!(out.contains(&format!("unmarked {}", d.alpha)), "{out}");
    assert!(damaged_flags(repo).iter().all(|(_, dmg)| !dmg));
    assert!(ok(repo, &["verify", "--read-data"]).contains("verify OK"));
    assert!(restore_bytes(repo, &d.alpha) == d.r.snaps[0].1);
    assert!(restore_bytes(repo, &d.beta) == d.r.snaps[1].1);
}

#[test]
fn store_deleted_pack_verify_names_snapshot_repair_marks_backup_heals() {
    verify_repair_and_heal(damaged(remove));
}

#[test]
fn store_truncated_pack_verify_names_snapshot_repair_marks_backup_heals() {
    verify_repair_and_heal(damaged(truncate_to_third));
}

/// Without `repair`, a backup after a lost pack does not dedup against it.
#[test]
fn store_backup_after_lost_pack_stores_its_chunks_again() {
    for damage in [remove as fn(&Path), truncate_to_third] {
        let d = damaged(damage);
        let f = write(d.r.dir.path(), "alpha-again", &d.r.snaps[0].1);
        let id = backup(&d.r.repo, "alpha", &f);
        assert!(restore_bytes(&d.r.repo, &id) == d.r.snaps[0].1);
        let out = store(&d.r.repo, &["verify", &id, "--read-data"]);
        assert!(out.status.success(), "{}", text(&out));
    }
}
