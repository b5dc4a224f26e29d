//! Directory restores bring back what was saved: owner and group (as root), hard links as links,
//! fifos and device nodes (devices only as root), sub-second mtimes, and a tree with a mode-000
//! directory restores for a user who is not root.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::store_common::*;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn setpriv_works() -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mknod(path: &Path, args: &[&str]) {
    let st = Command::new("mknod").arg(path).args(args).status().unwrap();
    assert!(st.success(), "mknod {args:?}");
}

/// A tree with every kind of entry a root backup keeps.
fn make_tree(src: &Path) {
    std::fs::create_dir_all(src.join("locked")).unwrap();
    std::fs::create_dir_all(src.join("ro/inner")).unwrap();
    write(src, "owned", b"owned by 1234:5678");
    std::os::unix::fs::chown(src.join("owned"), Some(1234), Some(5678)).unwrap();
    write(src, "one", b"linked data");
    std::fs::hard_link(src.join("one"), src.join("two")).unwrap();
    write(&src.join("locked"), "secret", b"in a mode-000 directory");
    write(&src.join("ro/inner"), "f", b"in a read-only directory");
    mknod(&src.join("fifo"), &["p"]);
    mknod(&src.join("null"), &["c", "1", "3"]);
    let t = filetime::FileTime::from_unix_time(1_700_000_000, 123_456_789);
    for p in ["owned", "ro", "ro/inner/f", "fifo"] {
        filetime::set_symlink_file_times(src.join(p), t, t).unwrap();
    }
    std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(src.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn store_directory_restore_keeps_owners_links_fifos_devices_and_modes() {
    if !is_root() {
        println!("SKIP store metadata restore test: needs root to create owned files and device nodes");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    make_tree(&src);
    let id = backup(&repo, "tree", &src);
    let to = d.path().join("root-restore");
    ok(&repo, &["restore", &id, "--to", to.to_str().unwrap()]);
    let m = std::fs::metadata(to.join("owned")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    for p in ["owned", "ro", "ro/inner/f", "fifo"] {
        let m = std::fs::symlink_metadata(to.join(p)).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789), "{p}");
    }
    let (one, two) = (
        std::fs::metadata(to.join("one")).unwrap(),
        std::fs::metadata(to.join("two")).unwrap(),
    );
    assert_eq!(one.ino(), two.ino(), "hard link restored as a copy");
    assert_eq!(one.nlink(), 2);
    assert!(
        std::fs::symlink_metadata(to.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let null = std::fs::symlink_metadata(to.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), std::fs::metadata(src.join("null")).unwrap().rdev());
    assert_eq!(mode(&to.join("locked")), 0o000);
    assert_eq!(mode(&to.join("ro")), 0o555);
    assert_eq!(
        std::fs::read(to.join("locked/secret")).unwrap(),
        b"in a mode-000 directory"
    );

    if !setpriv_works() {
        println!("SKIP non-root half of the metadata restore test: setpriv does not work here");
        return;
    }
    // The same snapshot restored by a user who is not root: owners become the user's, device
    // nodes are skipped with a warning, modes (000 and 0555 directories too) are kept.
    for p in [d.path(), repo.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&repo)
        .status()
        .unwrap();
    let out_dir = d.path().join("nobody");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(65534), Some(65534)).unwrap();
    let to = out_dir.join("r");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .args(["store", "--repo", repo.to_str().unwrap(), "restore", &id, "--to"])
        .arg(&to)
        .env("RUST_LOG", "warn")
        .env_remove("AUTOPILOT_STORE_KEY")
        .env_remove("AUTOPILOT_STORE_KEY_FILE")
        .output()
        .unwrap();
    no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("device node not restored"), "{err}");
    assert!(!to.join("null").exists());
    assert!(
        std::fs::symlink_metadata(to.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(mode(&to.join("locked")), 0o000);
    assert_eq!(mode(&to.join("ro")), 0o555);
    assert_eq!(std::fs::metadata(to.join("owned")).unwrap().uid(), 65534);
    assert_eq!(
        std::fs::read(to.join("locked/secret")).unwrap(),
        b"in a mode-000 directory"
    );
    assert_eq!(
        std::fs::metadata(to.join("one")).unwrap().ino(),
        std::fs::metadata(to.join("two")).unwrap().ino()
    );
}
