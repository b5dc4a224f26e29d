//! Incomplete backups are reported, not hidden or fatal: unreadable paths are skipped and
//! listed, a file that shrinks while it is read is listed, both exit 3; a producer command that
//! fails leaves no snapshot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::store_common::*;

/// How this test can run the binary as a user that root's permission bypass does not cover.
enum Runner {
    /// Not root: permissions already apply.
    Direct,
    /// Root: run as nobody through `setpriv`.
    Nobody,
}

fn runner() -> Result<Runner, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(Runner::Direct);
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    if probe.status.success() {
        Ok(Runner::Nobody)
    } else {
        Err(String::from_utf8_lossy(&probe.stderr).trim().to_string())
    }
}

fn run_store(runner: &Runner, repo: &Path, args: &[&str]) -> Output {
    let mut c = match runner {
        Runner::Direct => Command::new(bin()),
        Runner::Nobody => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
            c
        }
    };
    c.arg("store")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("RUST_LOG", "warn");
    for v in [
        "AUTOPILOT_STORE_REPO",
        "AUTOPILOT_STORE_KEY",
        "AUTOPILOT_STORE_KEY_FILE",
    ] {
        c.env_remove(v);
    }
    let out = c.output().unwrap();
    no_panic(&out);
    out
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn store_backup_skips_unreadable_paths_lists_them_and_exits_3() {
    let runner = match runner() {
        Ok(r) => r,
        Err(why) => {
            println!("SKIP store unreadable-file test: running as root and cannot drop to nobody ({why})");
            return;
        }
    };
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o777);
    let repo = d.path().join("repo");
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("open/deeper")).unwrap();
    std::fs::create_dir_all(src.join("closed")).unwrap();
    write(&src, "a-readable", &seeded(1, 70_000));
    write(&src.join("open/deeper"), "kept", b"kept");
    write(&src.join("closed"), "hidden", b"hidden");
    let secret = write(&src, "secret", b"secret");
    chmod(&secret, 0o000);
    chmod(&src.join("closed"), 0o000);

    let init = run_store(&runner, &repo, &["init"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let s = src.to_str().unwrap();
    let out = run_store(&runner, &repo, &["backup", "--name", "tree", s]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("saved but INCOMPLETE"), "{stdout}");
    for skipped in [
        secret.display().to_string(),
        src.join("closed").display().to_string(),
    ] {
        assert!(
            stdout.contains(&format!("skipped       {skipped}")),
            "{skipped}: {stdout}"
        );
        assert!(
            stderr.contains(&skipped) && stderr.contains("cannot read"),
            "no warning: {stderr}"
        );
    }
    let out = run_store(&runner, &repo, &["--json", "backup", "--name", "tree", s]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [src.join("closed").to_str().unwrap(), secret.to_str().unwrap()]
    );
    assert!(
        v["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{v}"
    );

    // What could be read is in the snapshot. (Read as a tar stream: restoring a directory
    // whose mode is 000 as a non-root user is another matter.)
    let tar = restore_bytes(&repo, "tree@latest");
    let mut files = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.insert(path, data);
    }
    assert_eq!(files["open/deeper/kept"], b"kept");
    assert_eq!(files["a-readable"], seeded(1, 70_000));
    assert!(
        files.contains_key("closed"),
        "the unreadable directory itself is kept, empty"
    );
    assert!(
        !files.contains_key("secret") && !files.contains_key("closed/hidden"),
        "{:?}",
        files.keys()
    );
}

/// The pids' open files include `path`.
fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
        })
        .unwrap_or(false)
}

/// Starts `store --json backup --name <name> <src>` while a live lock of another host holds the
/// repository: the backup waits for it, and its tar side meanwhile starts reading and opens
/// `victim`. Returns the lock (remove it to let the backup go on) and the running backup.
fn backup_held_at_lock(repo: &Path, src: &Path, name: &str, victim: &Path) -> (PathBuf, Child) {
    std::fs::create_dir_all(repo.join("locks")).unwrap();
    let lock = repo.join("locks/0123456789abcdef0123456789abcdef");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        &lock,
        format!(
            r#"{{"mode":"exclusive","op":"test","host":"elsewhere","pid":1,"start_ticks":0,"time":{now}}}"#
        ),
    )
    .unwrap();
    let child = store_cmd(repo, &["--json", "backup", "--name", name, src.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_open(child.id(), victim) {
        assert!(Instant::now() < deadline, "the backup never opened the file");
        std::thread::sleep(Duration::from_millis(20));
    }
    (lock, child)
}

#[test]
fn store_backup_reports_a_file_that_shrank_while_read_and_exits_3() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = write(&src, "victim", &seeded(7, 48 << 20));
    // An exclusive lock held by a live "process elsewhere" makes the backup wait for it; the tar
    // side starts reading meanwhile and stops, blocked, inside the 48 MiB file once the stream's
    // few buffers are full. Then the file shrinks and the lock goes away.
    let (lock, child) = backup_held_at_lock(&repo, &src, "shrink", &victim);
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    std::fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    no_panic(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shrunk"][0]["path"], victim.to_str().unwrap(), "{v}");
    assert_eq!(v["shrunk"][0]["size"], 48 << 20);
    assert!(v["shrunk"][0]["read"].as_u64().unwrap() < 48 << 20, "{v}");
    assert!(v["skipped"].as_array().unwrap().is_empty());
}

#[test]
fn store_backup_stdin_from_command_commits_only_when_the_command_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let from_command = |script: &str| {
        let args = [
            "backup",
            "--name",
            "vm-100",
            "--stdin-from-command",
            "sh",
            "-c",
            script,
        ];
        store(&repo, &args)
    };
    let out = from_command("head -c 3000000 /dev/urandom; exit 5");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("backup command sh failed") && e.contains("nothing was saved"),
        "{e}"
    );
    let out = store(&repo, &["--json", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[]",
        "a failed producer left a snapshot"
    );

    let out = from_command("printf 'vzdump bytes'");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("saved") && !out.contains("INCOMPLETE"), "{out}");
    assert_eq!(restore_bytes(&repo, "vm-100@latest"), b"vzdump bytes");
}

#[test]
fn store_backup_reports_a_sparse_file_that_shrank_while_read_and_keeps_the_stream_valid() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 1 MiB of data every 2 MiB over 64 MiB: a file with holes, archived as a GNU sparse entry.
    let victim = src.join("sparse");
    let f = std::fs::File::create(&victim).unwrap();
    f.set_len(64 << 20).unwrap();
    for i in 0..32u64 {
        f.write_all_at(&seeded(100 + i, 1 << 20), i * (2 << 20)).unwrap();
    }
    drop(f);
    let m = std::fs::metadata(&victim).unwrap();
    if m.blocks() * 512 >= m.len() {
        println!("SKIP sparse shrink test: this file system does not keep holes");
        return;
    }
    let after = write(&src, "z-after", b"the entry after the shrunk file");
    let (lock, child) = backup_held_at_lock(&repo, &src, "sparse", &victim);
    // Let the tar side fill the stream's buffers and block inside the file.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(3 << 20)
        .unwrap();
    std::fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    no_panic(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shrunk"][0]["path"], victim.to_str().unwrap(), "{v}");
    assert_eq!(v["shrunk"][0]["size"], 64 << 20);
    assert!(v["shrunk"][0]["read"].as_u64().unwrap() < 64 << 20, "{v}");
    // The stream stayed aligned: the snapshot restores, the file at its recorded size, and the
    // entry after it intact.
    let id = v["snapshot"]["id"].as_str().unwrap();
    let to = d.path().join("restored");
    ok(&repo, &["restore", id, "--to", to.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(to.join("sparse")).unwrap().len(), 64 << 20);
    assert_eq!(
        std::fs::read(to.join("z-after")).unwrap(),
        std::fs::read(&after).unwrap()
    );
    let restored = std::fs::read(to.join("sparse")).unwrap();
    assert_eq!(&restored[..1 << 20], &seeded(100, 1 << 20)[..]);
}
