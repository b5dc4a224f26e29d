//! Bad input: wrong or missing key, a newer repository format, a read-only repository and a full
//! disk give clear errors and leave the repository intact.

use std::process::Command;

use super::store_common::*;

#[test]
fn store_wrong_or_missing_key_is_clear_error_and_harmless() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let k1 = d.path().join("k1");
    let k1s = k1.to_str().unwrap();
    init_small(&repo, &["--encrypt", "--key-file", k1s]);
    let data = seeded(3, 100_000);
    let f = write(d.path(), "f", &data);
    ok(
        &repo,
        &["--key-file", k1s, "backup", "--name", "x", f.to_str().unwrap()],
    );
    let k2 = write(d.path(), "k2", format!("{}\n", "ab".repeat(32)).as_bytes());
    let e = fails(
        &repo,
        &[
            "--key-file",
            k2.to_str().unwrap(),
            "backup",
            "--name",
            "x",
            f.to_str().unwrap(),
        ],
    );
    assert!(e.contains("wrong key"), "{e}");
    assert!(!e.contains(&"ab".repeat(32)), "the key leaked into an error: {e}");
    let e = fails(&repo, &["list"]);
    assert!(e.contains("encrypted") && e.contains("--key-file"), "{e}");
    let out = store_cmd(&repo, &["list"])
        .env("AUTOPILOT_STORE_KEY", "not-hex")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("AUTOPILOT_STORE_KEY") && e.contains("64 hex"),
        "{e}"
    );
    // Env var with the right key works; the repository is unchanged.
    let key = std::fs::read_to_string(&k1).unwrap();
    let out = store_cmd(&repo, &["restore", "x@latest", "--to", "-"])
        .env("AUTOPILOT_STORE_KEY", key.trim())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    let e = fails(&repo, &["init", "--encrypt", "--key-file", k1s]);
    assert!(e.contains("already holds a repository"), "{e}");
}

#[test]
fn store_newer_format_version_refused_with_upgrade_hint() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let cfg = repo.join("config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let newer = text.replace("\"format_version\": 1", "\"format_version\": 7");
    assert_ne!(text, newer);
    std::fs::write(&cfg, &newer).unwrap();
    for args in [&["list"][..], &["backup", "--name", "x", "-"][..], &["gc"][..]] {
        let e = fails(&repo, args);
        assert!(
            e.contains("format version 7 is newer") && e.contains("upgrade"),
            "{e}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        newer,
        "config was modified"
    );
    let e = fails(&d.path().join("nothing"), &["list"]);
    assert!(e.contains("no repository") && e.contains("init"), "{e}");
}

/// Runs `script` (sh) in a private user+mount namespace; `$BIN` is the binary under test.
fn in_namespace(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .env("BIN", bin())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn store_read_only_repository_refuses_writes_but_reads() {
    if let Err(why) = unshare_works() {
        println!("SKIP store read-only test: cannot create a mount namespace ({why})");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let data = seeded(4, 500_000);
    let f = write(d.path(), "f", &data);
    let id = backup(&repo, "ro", &f);
    let before = packs(&repo);
    let r = repo.display();
    let script = format!(
        "mount --bind {r} {r} && mount -o remount,bind,ro {r} || exit 99
         $BIN store --repo {r} backup --name ro {f} 2>&1; echo BACKUP_RC=$?
         $BIN store --repo {r} list 2>&1; echo LIST_RC=$?
         $BIN store --repo {r} restore {id} --to - | cmp - {f}; echo RESTORE_RC=$?
         $BIN store --repo {r} verify --read-data 2>&1; echo VERIFY_RC=$?",
        f = f.display()
    );
    let out = in_namespace(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !text.contains("BACKUP_RC=0") && text.contains("read-only"),
        "{text}"
    );
    for ok_marker in ["LIST_RC=0", "RESTORE_RC=0", "VERIFY_RC=0"] {
        assert!(text.contains(ok_marker), "{ok_marker} missing: {text}");
    }
    assert_eq!(packs(&repo), before);
    assert!(ok(&repo, &["verify", "--read-data"]).contains("verify OK"));
}

#[test]
fn store_full_disk_fails_clearly_and_keeps_earlier_snapshots() {
    if let Err(why) = unshare_works() {
        println!("SKIP store full-disk test: cannot mount a small tmpfs ({why})");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let small = write(d.path(), "small", &seeded(5, 300_000));
    let big = write(d.path(), "big", &seeded(6, 12 << 20));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.display();
    let script = format!(
        "mount -t tmpfs -o size=6m tmpfs {m} || exit 99
         R={m}/repo
         $BIN store --repo $R init --chunk-avg 16K --chunk-min 4K --chunk-max 64K --pack-size 1M >/dev/null || exit 98
         $BIN store --repo $R backup --name small {s} >/dev/null 2>&1; echo SMALL_RC=$?
         $BIN store --repo $R backup --name big {b} 2>&1; echo BIG_RC=$?
         $BIN store --repo $R verify --read-data 2>&1; echo VERIFY_RC=$?
         $BIN store --repo $R restore small@latest --to - | cmp - {s}; echo RESTORE_RC=$?
         $BIN store --repo $R list 2>&1
         $BIN store --repo $R gc --grace 0 2>&1; echo GC_RC=$?
         $BIN store --repo $R backup --name small2 {s} >/dev/null 2>&1; echo AGAIN_RC=$?",
        s = small.display(),
        b = big.display()
    );
    let out = in_namespace(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(99),
        "tmpfs mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("SMALL_RC=0"), "{text}");
    assert!(
        !text.contains("BIG_RC=0") && text.contains("disk is full"),
        "{text}"
    );
    for marker in ["VERIFY_RC=0", "RESTORE_RC=0", "GC_RC=0", "AGAIN_RC=0"] {
        assert!(text.contains(marker), "{marker} missing: {text}");
    }
    assert!(!text.contains(" big "), "the failed backup is listed: {text}");
}

#[test]
fn store_full_disk_still_lists_restores_verifies_and_frees_space() {
    if let Err(why) = unshare_works() {
        println!("SKIP store full-disk maintenance test: cannot mount a small tmpfs ({why})");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let keep = write(d.path(), "keep", &seeded(7, 300_000));
    let drop = write(d.path(), "drop", &seeded(8, 600_000));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.display();
    // `fill` takes every free block; then only what needs no new space can work.
    let script = format!(
        "mount -t tmpfs -o size=10m tmpfs {m} || exit 99
         R={m}/repo
         $BIN store --repo $R init --chunk-avg 16K --chunk-min 4K --chunk-max 64K --pack-size 1M >/dev/null || exit 98
         $BIN store --repo $R backup --name keep {k} >/dev/null 2>&1 || exit 97
         $BIN store --repo $R backup --name drop {dr} >/dev/null 2>&1 || exit 96
         dd if=/dev/zero of={m}/fill bs=4k 2>/dev/null
         echo AVAIL_BEFORE=$(df --output=avail {m} | tail -1 | tr -d ' ')
         $BIN store --repo $R list 2>&1; echo LIST_RC=$?
         $BIN store --repo $R restore keep@latest --to - | cmp - {k}; echo RESTORE_RC=$?
         $BIN store --repo $R verify 2>&1; echo VERIFY_RC=$?
         $BIN store --repo $R verify --read-data 2>&1; echo VERIFYDATA_RC=$?
         $BIN store --repo $R prune --name drop --keep-last 1 2>&1; echo PRUNE_RC=$?
         $BIN store --repo $R forget drop@latest 2>&1; echo FORGET_RC=$?
         $BIN store --repo $R gc --grace 0 2>&1; echo GC_RC=$?
         echo AVAIL_AFTER=$(df --output=avail {m} | tail -1 | tr -d ' ')
         $BIN store --repo $R restore keep@latest --to - | cmp - {k}; echo AFTER_RC=$?",
        k = keep.display(),
        dr = drop.display()
    );
    let out = in_namespace(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(99),
        "tmpfs mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("AVAIL_BEFORE=0\n"), "the disk is not full: {text}");
    for marker in [
        "LIST_RC=0",
        "RESTORE_RC=0",
        "VERIFY_RC=0",
        "VERIFYDATA_RC=0",
        "PRUNE_RC=0",
        "FORGET_RC=0",
        "GC_RC=0",
        "AFTER_RC=0",
    ] {
        assert!(text.contains(marker), "{marker} missing: {text}");
    }
    assert!(text.contains("1 packs deleted"), "{text}");
    let avail: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("AVAIL_AFTER="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(avail >= 500, "gc freed only {avail} KiB: {text}");
}
