//! The S3 backend against a real S3-compatible server on loopback (moto's server, from PyPI
//! `moto[server]`): the bucket is the source of truth and a lost local index is rebuilt from it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::store_common::*;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Result<Moto, String> {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server"])
        .output()
        .map_err(|e| e.to_string())?;
    if !probe.status.success() {
        return Err("python3 cannot import moto.server (pip install 'moto[server]')".into());
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http(port, "PUT", "/store-test").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            return Ok(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("moto server did not answer within 30 s".into())
}

fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r)
}

fn s3(port: u16, cache: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(["store", "--repo", "s3://store-test/homelab", "--cache-dir"])
        .arg(cache)
        .args(args);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("RUST_LOG", "warn")
        .env_remove("AUTOPILOT_STORE_KEY");
    let out = c.output().unwrap();
    no_panic(&out);
    out
}

fn s3_ok(port: u16, cache: &Path, args: &[&str]) -> String {
    let out = s3(port, cache, args);
    assert!(
        out.status.success(),
        "store {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A moto server with a repository initialised in its bucket, a tempdir, and the index cache
/// path in it; `None` (after printing SKIP) when moto is not installed.
fn moto_repo() -> Option<(Moto, tempfile::TempDir, std::path::PathBuf)> {
    let moto = match start_moto() {
        Ok(m) => m,
        Err(why) => {
            println!("SKIP store S3 test: {why}");
            return None;
        }
    };
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let mut args = vec!["init"];
    args.extend_from_slice(SMALL);
    s3_ok(moto.port, &cache, &args);
    Some((moto, d, cache))
}

#[test]
fn store_s3_round_trip_and_reindex_from_bucket() {
    let Some((moto, d, cache)) = moto_repo() else {
        return;
    };
    let p = moto.port;
    let v1 = seeded(60, 3 << 20);
    let mut v2 = v1.clone();
    v2[100_000..104_096].copy_from_slice(&seeded(61, 4096));
    let f1 = write(d.path(), "v1", &v1);
    let f2 = write(d.path(), "v2", &v2);
    let b1: serde_json::Value = serde_json::from_str(&s3_ok(
        p,
        &cache,
        &["--json", "backup", "--name", "vm", f1.to_str().unwrap()],
    ))
    .unwrap();
    let b2: serde_json::Value = serde_json::from_str(&s3_ok(
        p,
        &cache,
        &["--json", "backup", "--name", "vm", f2.to_str().unwrap()],
    ))
    .unwrap();
    assert!(b2["new_bytes"].as_u64().unwrap() < 300_000, "{b2}");
    let id1 = b1["snapshot"]["id"].as_str().unwrap().to_string();
    let restored = s3(p, &cache, &["restore", &id1, "--to", "-"]);
    assert!(restored.stdout == v1);
    // Lose the local cache: the bucket alone is enough.
    std::fs::remove_dir_all(&cache).unwrap();
    let list: serde_json::Value = serde_json::from_str(&s3_ok(p, &cache, &["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(s3(p, &cache, &["restore", "vm@latest", "--to", "-"]).stdout == v2);
    assert!(s3_ok(p, &cache, &["reindex"]).contains("2 snapshots"));
    assert!(s3_ok(p, &cache, &["verify", "--read-data"]).contains("verify OK"));
    // A second machine (its own index cache) backs up into the same bucket; gc on the first
    // machine must not mistake the second one's packs for garbage.
    let cache_b = d.path().join("cache-b");
    let ct = seeded(62, 1 << 20);
    let fct = write(d.path(), "ct", &ct);
    s3_ok(
        p,
        &cache_b,
        &["backup", "--name", "ct-200", fct.to_str().unwrap()],
    );
    // The first machine sees it without a reindex (its index syncs from the bucket on open).
    assert!(s3_ok(p, &cache, &["list"]).contains("ct-200"));
    s3_ok(p, &cache, &["prune", "--keep-last", "1"]);
    s3_ok(p, &cache, &["gc", "--grace", "0"]);
    assert!(s3_ok(p, &cache, &["verify", "--read-data"]).contains("verify OK"));
    assert!(s3(p, &cache, &["restore", "vm@latest", "--to", "-"]).stdout == v2);
    assert!(s3(p, &cache_b, &["restore", "ct-200@latest", "--to", "-"]).stdout == ct);
    assert!(s3(p, &cache, &["restore", "ct-200@latest", "--to", "-"]).stdout == ct);
}

/// The repository generation lives in the bucket: every commit bumps it, and a machine whose
/// index cache was replaced by an older copy (or emptied) never lets gc delete what the bucket's
/// snapshot files need.
#[test]
fn store_s3_gc_with_stale_or_emptied_cache_keeps_every_snapshot() {
    let Some((moto, d, cache)) = moto_repo() else {
        return;
    };
    let p = moto.port;
    // `reindex` reports the generation it read from the bucket.
    let generation = || {
        let r: serde_json::Value = serde_json::from_str(&s3_ok(p, &cache, &["--json", "reindex"])).unwrap();
        r["generation"].as_u64().unwrap()
    };
    let v1 = seeded(63, 2 << 20);
    let v2 = seeded(64, 1 << 20);
    let f1 = write(d.path(), "v1", &v1);
    let f2 = write(d.path(), "v2", &v2);
    s3_ok(p, &cache, &["backup", "--name", "vm", f1.to_str().unwrap()]);
    let g1 = generation();
    assert!(g1 >= 1, "no generation in the bucket after a backup");
    let old = d.path().join("old-cache");
    std::fs::create_dir_all(&old).unwrap();
    for f in std::fs::read_dir(&cache).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), old.join(f.file_name())).unwrap();
        }
    }
    s3_ok(p, &cache, &["backup", "--name", "ct", f2.to_str().unwrap()]);
    assert!(generation() > g1);
    for stale in ["older copy", "emptied"] {
        std::fs::remove_dir_all(&cache).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        if stale == "emptied" {
            std::fs::write(cache.join("index.sqlite"), b"").unwrap();
        } else {
            for f in std::fs::read_dir(&old).unwrap().flatten() {
                std::fs::copy(f.path(), cache.join(f.file_name())).unwrap();
            }
        }
        let gc: serde_json::Value =
            serde_json::from_str(&s3_ok(p, &cache, &["--json", "gc", "--grace", "0"])).unwrap();
        assert_eq!(gc["packs_deleted"], 0, "{stale}: {gc}");
        assert_eq!(gc["stray_files_deleted"], 0, "{stale}: {gc}");
        assert!(
            s3(p, &cache, &["restore", "vm@latest", "--to", "-"]).stdout == v1,
            "{stale}"
        );
        assert!(
            s3(p, &cache, &["restore", "ct@latest", "--to", "-"]).stdout == v2,
            "{stale}"
        );
    }
    assert!(s3_ok(p, &cache, &["verify", "--read-data"]).contains("verify OK"));
}
