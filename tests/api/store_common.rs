//! Helpers for the chunk store tests: run the real binary against repositories in tempdirs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_homelab-autopilot")
}

/// `homelab-autopilot store --repo REPO ARGS...` with extra environment.
pub fn store_cmd(repo: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("store").arg("--repo").arg(repo).args(args);
    c.env_remove("AUTOPILOT_STORE_KEY")
        .env_remove("AUTOPILOT_STORE_REPO")
        .env_remove("AUTOPILOT_STORE_KEY_FILE")
        .env("RUST_LOG", "warn");
    c
}

/// Runs a store command; returns its output.
pub fn store(repo: &Path, args: &[&str]) -> Output {
    let out = store_cmd(repo, args).output().expect("run homelab-autopilot");
    no_panic(&out);
    out
}

/// Asserts the process did not panic.
pub fn no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "process panicked: {err}");
}

/// Runs a store command that must succeed; returns stdout.
pub fn ok(repo: &Path, args: &[&str]) -> String {
    let out = store(repo, args);
    assert!(
        out.status.success(),
        "store {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a store command that must fail; returns stderr + stdout.
pub fn fails(repo: &Path, args: &[&str]) -> String {
    let out = store(repo, args);
    assert!(!out.status.success(), "store {args:?} unexpectedly succeeded");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Small chunks and packs so small test data spans many chunks and packs.
pub const SMALL: &[&str] = &[
    "--chunk-min",
    "4K",
    "--chunk-avg",
    "16K",
    "--chunk-max",
    "64K",
    "--pack-size",
    "1M",
];

/// Creates a repository with `SMALL` parameters plus `extra` init flags.
pub fn init_small(repo: &Path, extra: &[&str]) {
    let mut args = vec!["init"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    ok(repo, &args);
}

/// Backs up `path` as `name`; returns the snapshot's short id.
pub fn backup(repo: &Path, name: &str, path: &Path) -> String {
    let out = ok(
        repo,
        &["--json", "backup", "--name", name, path.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json output");
    v["snapshot"]["id"].as_str().unwrap().to_string()
}

/// Restores a snapshot to standard output.
pub fn restore_bytes(repo: &Path, snapshot: &str) -> Vec<u8> {
    let out = store(repo, &["restore", snapshot, "--to", "-"]);
    assert!(
        out.status.success(),
        "restore {snapshot} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a store command with `input` on stdin; returns the output.
pub fn store_stdin(repo: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = store_cmd(repo, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    no_panic(&out);
    out
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn seeded(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small deterministic generator for test decisions.
pub struct Rng(pub u64);
impl Rng {
    /// Next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Writes `data` to `dir/name`.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// The pack files of a local repository.
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(shards) = std::fs::read_dir(repo.join("packs")) else {
        return v;
    };
    for shard in shards.flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            if !f.file_name().to_string_lossy().starts_with('.') {
                v.push(f.path());
            }
        }
    }
    v.sort();
    v
}

/// Whether `unshare -rm` works here (user + mount namespaces), for tmpfs and read-only mounts.
pub fn unshare_works() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-rm", "true"])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Cuts a file to a third of its length (a pack lost half-way).
pub fn truncate_to_third(p: &Path) {
    let len = std::fs::metadata(p).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
}
