//! Directory restores bring back what was saved: owner and group (as root), hard links as links,
//! fifos and device nodes (devices only as root), sub-second mtimes, extended attributes and
//! POSIX ACLs, and a tree with a mode-000 directory restores for a user who is not root.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Restores snapshot `id` of `repo` as user 65534 (nobody) into `<dir>/nobody/r`, after opening
/// `dir` and the repository to that user; the target and the CLI's output.
fn restore_as_nobody(dir: &Path, repo: &Path, id: &str) -> (PathBuf, Output) {
    for p in [dir, repo] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(repo)
        .status()
        .unwrap();
    let out_dir = dir.join("nobody");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(65534), Some(65534)).unwrap();
    let to = out_dir.join("r");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .args(["store", "--repo", repo.to_str().unwrap(), "restore", id, "--to"])
        .arg(&to)
        .env("RUST_LOG", "warn")
        .env_remove("AUTOPILOT_STORE_KEY")
        .env_remove("AUTOPILOT_STORE_KEY_FILE")
        .output()
        .unwrap();
    no_panic(&out);
    (to, out)
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
    let (to, out) = restore_as_nobody(d.path(), &repo, &id);
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

/// An extended attribute of `p` itself, `None` when it has none of that name.
fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 4096];
    let len = rustix::fs::lgetxattr(p, name, &mut v[..]).ok()?;
    v.truncate(len);
    Some(v)
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
}

/// A backup's `--json` summary.
fn backup_json(repo: &Path, name: &str, path: &Path) -> serde_json::Value {
    let out = ok(
        repo,
        &["--json", "backup", "--name", name, path.to_str().unwrap()],
    );
    serde_json::from_str(&out).expect("backup --json output")
}

/// A tree with `user.*` attributes on a file, a read-only file, a directory and a read-only
/// directory; `None` (and a message) when the file system refuses `user.*` attributes.
fn make_xattr_tree(src: &Path) -> Option<()> {
    std::fs::create_dir_all(src.join("dir/ro")).unwrap();
    write(src, "plain", b"no attributes");
    write(src, "f", b"attributed");
    write(&src.join("dir/ro"), "readonly", b"read-only file");
    if let Err(e) = set_xattr(&src.join("f"), "user.comment", b"hello") {
        println!("SKIP store xattr test: the test file system refuses user xattrs ({e})");
        return None;
    }
    // A value with a newline and binary bytes, and an empty one.
    set_xattr(&src.join("f"), "user.bin", &[0, b'\n', 0xff, b'=']).unwrap();
    set_xattr(&src.join("f"), "user.empty", b"").unwrap();
    set_xattr(&src.join("dir"), "user.dir", b"on a directory").unwrap();
    set_xattr(&src.join("dir/ro"), "user.ro", b"read-only dir").unwrap();
    set_xattr(&src.join("dir/ro/readonly"), "user.ro", b"read-only file").unwrap();
    std::fs::set_permissions(
        src.join("dir/ro/readonly"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::set_permissions(src.join("dir/ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    Some(())
}

fn assert_user_xattrs(to: &Path) {
    assert_eq!(
        xattr(&to.join("f"), "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr(&to.join("f"), "user.bin").as_deref(),
        Some(&[0, b'\n', 0xff, b'='][..])
    );
    assert_eq!(xattr(&to.join("f"), "user.empty").as_deref(), Some(&b""[..]));
    assert_eq!(
        xattr(&to.join("dir"), "user.dir").as_deref(),
        Some(&b"on a directory"[..])
    );
    assert_eq!(
        xattr(&to.join("dir/ro"), "user.ro").as_deref(),
        Some(&b"read-only dir"[..])
    );
    assert_eq!(
        xattr(&to.join("dir/ro/readonly"), "user.ro").as_deref(),
        Some(&b"read-only file"[..])
    );
    assert_eq!(
        rustix::fs::llistxattr_query(to.join("plain")).unwrap(),
        0,
        "nothing invented"
    );
    assert_eq!(mode(&to.join("dir/ro")), 0o555);
    assert_eq!(mode(&to.join("dir/ro/readonly")), 0o444);
}

#[test]
fn store_directory_restore_keeps_user_xattrs_and_an_unchanged_tree_dedups() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    // A tree without attributes: backing it up again adds nothing (the stream of an entry
    // without attributes is unchanged; the unit tests pin its bytes).
    let plain = d.path().join("plain");
    std::fs::create_dir_all(plain.join("sub")).unwrap();
    write(&plain, "a", &seeded(1, 200_000));
    write(&plain.join("sub"), "b", b"small");
    backup_json(&repo, "plain", &plain);
    let again = backup_json(&repo, "plain", &plain);
    assert_eq!(again["new_chunks"], 0, "{again}");

    let src = d.path().join("src");
    if make_xattr_tree(&src).is_none() {
        return;
    }
    let first = backup_json(&repo, "xattr", &src);
    let again = backup_json(&repo, "xattr", &src);
    assert_eq!(
        again["new_chunks"], 0,
        "attributes are recorded deterministically: {again}"
    );
    let id = first["snapshot"]["id"].as_str().unwrap();
    let to = d.path().join("restored");
    let out = store(&repo, &["restore", id, "--to", to.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_user_xattrs(&to);
    // A restore with an include pattern brings back the attributes of what it takes.
    let part = d.path().join("part");
    ok(
        &repo,
        &["restore", id, "--to", part.to_str().unwrap(), "--include", "f"],
    );
    assert_eq!(
        xattr(&part.join("f"), "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
}

/// The binary `system.posix_acl_access` value of `setfacl -m u:10:r--` on a 0644 file: version
/// 2, then (tag, perm, id) for the owner, user 10 (a newline byte in the value), the owning
/// group, the mask and others.
fn acl_bytes() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 10),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn setfacl_installed() -> bool {
    Command::new("setfacl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn store_directory_restore_as_root_keeps_acls_and_trusted_xattrs() {
    if !is_root() {
        println!("SKIP store ACL restore test: needs root to set trusted.* attributes");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    if make_xattr_tree(&src).is_none() {
        return;
    }
    let acl_file = write(&src, "acl", b"with an ACL");
    std::fs::set_permissions(&acl_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(src.join("acldir")).unwrap();
    let set = if setfacl_installed() {
        let st = Command::new("setfacl")
            .args(["-m", "u:10:r--"])
            .arg(&acl_file)
            .status()
            .unwrap();
        let st2 = Command::new("setfacl")
            .args(["-d", "-m", "u:10:r-x"])
            .arg(src.join("acldir"))
            .status()
            .unwrap();
        st.success() && st2.success()
    } else {
        set_xattr(&acl_file, "system.posix_acl_access", &acl_bytes()).is_ok()
            && set_xattr(&src.join("acldir"), "system.posix_acl_default", &acl_bytes()).is_ok()
    };
    if !set {
        println!("SKIP store ACL restore test: the test file system refuses POSIX ACLs");
        return;
    }
    set_xattr(&src.join("f"), "trusted.note", b"root only").unwrap();
    // A second one: the non-root restore warns once, not per file.
    set_xattr(&src.join("dir"), "trusted.note", b"root only").unwrap();
    let want_access = xattr(&acl_file, "system.posix_acl_access").unwrap();
    let want_default = xattr(&src.join("acldir"), "system.posix_acl_default").unwrap();
    let id = backup(&repo, "acl", &src);

    let to = d.path().join("restored");
    ok(&repo, &["restore", &id, "--to", to.to_str().unwrap()]);
    assert_user_xattrs(&to);
    assert_eq!(
        xattr(&to.join("acl"), "system.posix_acl_access"),
        Some(want_access)
    );
    assert_eq!(
        xattr(&to.join("acldir"), "system.posix_acl_default"),
        Some(want_default)
    );
    assert_eq!(
        mode(&to.join("acl")),
        0o644,
        "the ACL mask and the group bits agree"
    );
    assert_eq!(
        xattr(&to.join("f"), "trusted.note").as_deref(),
        Some(&b"root only"[..])
    );

    if !setpriv_works() {
        println!("SKIP non-root half of the xattr restore test: setpriv does not work here");
        return;
    }
    // Restored by a user who is not root: user.* attributes and ACLs come back (the user owns
    // the restored files), trusted.* is skipped with one warning, and the restore succeeds.
    let (to, out) = restore_as_nobody(d.path(), &repo, &id);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("only root may set them").count(), 1, "{err}");
    assert_user_xattrs(&to);
    assert_eq!(xattr(&to.join("f"), "trusted.note"), None);
    assert_eq!(
        xattr(&to.join("acl"), "system.posix_acl_access"),
        xattr(&acl_file, "system.posix_acl_access")
    );
}
