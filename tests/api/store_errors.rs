//! Errors and exit codes of the store CLI: the library speaks in store terms (its messages end
//! up in resource conditions), the CLI adds its flags, and every outcome has its own exit code.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use homelab_autopilot::storage::{ChunkStore, ChunkerParams, Error, OpenOptions, Param, RepoParams};

use super::store_common::*;

#[test]
fn store_errors_library_names_the_parameter_and_cli_names_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nothing");
    let missing_s = missing.to_str().unwrap();
    let enc = d.path().join("enc");
    let key = d.path().join("key");
    init_small(&enc, &["--encrypt", "--key-file", key.to_str().unwrap()]);
    let small_min = RepoParams {
        chunker: ChunkerParams {
            min: 30,
            ..ChunkerParams::default()
        },
        ..RepoParams::default()
    };

    // The library: what is wrong and what to do, without a flag or a command line.
    let lib_errors = [
        ChunkStore::open(missing_s, OpenOptions::default()).err().unwrap(),
        ChunkStore::open(enc.to_str().unwrap(), OpenOptions::default())
            .err()
            .unwrap(),
        ChunkStore::init(missing_s, small_min, None, None).unwrap_err(),
    ];
    assert!(matches!(
        lib_errors[2],
        Error::InvalidConfig {
            param: Param::ChunkMin,
            ..
        }
    ));
    for e in &lib_errors {
        let s = e.to_string();
        assert!(
            !s.contains("--") && !s.contains("homelab-autopilot") && !s.contains("AUTOPILOT_"),
            "a CLI instruction in a storage error: {s}"
        );
    }
    assert!(
        lib_errors[0]
            .to_string()
            .contains("create (initialise) one there")
    );
    assert!(lib_errors[1].to_string().contains("its key is needed"));
    assert!(
        lib_errors[2]
            .to_string()
            .starts_with("invalid minimum chunk size: 30 must be")
    );

    // The CLI: the same errors, plus the flag or command that fixes them.
    let e = fails(&missing, &["list"]);
    assert!(
        e.contains("no repository at") && e.contains(&format!("store --repo {missing_s} init")),
        "{e}"
    );
    let e = fails(&enc, &["list"]);
    assert!(
        e.contains("its key is needed") && e.contains("--key-file") && e.contains("AUTOPILOT_STORE_KEY"),
        "{e}"
    );
    let e = fails(&d.path().join("new"), &["init", "--chunk-min", "30"]);
    assert!(
        e.contains("invalid minimum chunk size: 30") && e.contains("(--chunk-min)"),
        "{e}"
    );
    let plain = d.path().join("plain");
    init_small(&plain, &[]);
    let e = fails(&plain, &["prune"]);
    assert!(
        e.contains("invalid retention rules") && e.contains("--keep-last"),
        "{e}"
    );
    let e = fails(&plain, &["restore", "zz", "--to", "-"]);
    assert!(e.contains("invalid snapshot") && e.contains("(SNAPSHOT)"), "{e}");
}

/// The exit status of a finished store command.
fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

/// The JSON error object a failed `--json` command prints on stdout.
fn json_error(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a JSON error ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn store_exit_codes_tell_outcomes_apart_and_json_errors_go_to_stdout() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nothing");
    let out = store(&missing, &["--json", "list"]);
    assert_eq!(code(&out), 10, "missing repository");
    let v = json_error(&out);
    assert_eq!(v["exit_code"], 10);
    assert_eq!(v["category"], "RepoNotFound");
    assert!(v["error"].as_str().unwrap().contains("no repository at"), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: no repository at"));

    let enc = d.path().join("enc");
    let key = d.path().join("key");
    init_small(&enc, &["--encrypt", "--key-file", key.to_str().unwrap()]);
    let other = write(d.path(), "other-key", "cd".repeat(32).as_bytes());
    let out = store(&enc, &["--key-file", other.to_str().unwrap(), "--json", "list"]);
    assert_eq!(code(&out), 12, "wrong key");
    assert_eq!(json_error(&out)["category"], "WrongKey");
    assert_eq!(
        code(&store(&enc, &["list"])),
        12,
        "no key for an encrypted repository"
    );

    // A backup from a pipe that stays open holds the shared lock; gc needs it exclusively.
    let plain = d.path().join("plain");
    init_small(&plain, &[]);
    let mut holder = store_cmd(&plain, &["backup", "--name", "held", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    stdin.write_all(b"some bytes").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let locked = loop {
        let out = store(&plain, &["--lock-wait", "0", "--json", "gc"]);
        if code(&out) != 0 || Instant::now() > deadline {
            break out;
        }
        // gc ran before the backup took its lock; it deleted nothing a backup needs.
        std::thread::yield_now();
    };
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    assert_eq!(code(&locked), 11, "{}", String::from_utf8_lossy(&locked.stderr));
    let v = json_error(&locked);
    assert_eq!(v["category"], "RepositoryLocked");
    assert!(v["error"].as_str().unwrap().contains("--lock-wait"), "{v}");

    let out = store(&plain, &["--json", "restore", "abcdef", "--to", "-"]);
    assert_eq!(code(&out), 1, "any other error is fatal");
    assert_eq!(json_error(&out)["category"], "SnapshotNotFound");

    let help = String::from_utf8_lossy(
        &Command::new(bin())
            .args(["store", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for line in [
        "3  snapshot saved but incomplete",
        "4  verify found damage",
        "10  the repository does not exist",
        "11  the repository lock could not be taken",
        "12  wrong key",
        "AUTOPILOT_STORE_REPO",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}: {help}");
    }
}

#[test]
fn store_repo_anywhere_or_from_env_and_empty_env_counts_as_unset() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let f = write(d.path(), "f", &seeded(1, 50_000));
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(bin());
        c.arg("store").args(args).env("RUST_LOG", "warn");
        for v in [
            "AUTOPILOT_STORE_REPO",
            "AUTOPILOT_STORE_KEY",
            "AUTOPILOT_STORE_KEY_FILE",
        ] {
            c.env_remove(v);
        }
        c.envs(env.iter().copied());
        let out = c.output().unwrap();
        no_panic(&out);
        out
    };
    let r = repo.to_str().unwrap();
    let out = run(
        &["backup", "--name", "after", f.to_str().unwrap(), "--repo", r],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["list"], &[("AUTOPILOT_STORE_REPO", r)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
    // Empty variables are unset: no empty key file path, no empty repository.
    let out = run(
        &["list", "--repo", r],
        &[("AUTOPILOT_STORE_KEY_FILE", ""), ("AUTOPILOT_STORE_KEY", "")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["list"], &[("AUTOPILOT_STORE_REPO", "")]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("no repository given") && e.contains("--repo"),
        "{e}"
    );
    // An encrypted repository takes its key file from the variable when the flag is absent.
    let enc = d.path().join("enc");
    let key = d.path().join("key");
    init_small(&enc, &["--encrypt", "--key-file", key.to_str().unwrap()]);
    let out = run(
        &["--repo", enc.to_str().unwrap(), "list"],
        &[
            ("AUTOPILOT_STORE_KEY_FILE", key.to_str().unwrap()),
            ("AUTOPILOT_STORE_KEY", ""),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn store_name_at_time_matching_two_snapshots_lists_both() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    // Two backups started together usually land in the same second; retry until they do.
    for _ in 0..10 {
        let children: Vec<_> = (0..2)
            .map(|i| {
                let mut c = store_cmd(&repo, &["--json", "backup", "--name", "twin", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(&seeded(i, 1000)).unwrap();
                c
            })
            .collect();
        let snaps: Vec<serde_json::Value> = children
            .into_iter()
            .map(|c| serde_json::from_slice(&c.wait_with_output().unwrap().stdout).unwrap())
            .collect();
        let (a, b) = (&snaps[0]["snapshot"], &snaps[1]["snapshot"]);
        if a["time"] != b["time"] {
            continue;
        }
        let spec = format!("twin@{}", a["time"].as_str().unwrap());
        let e = fails(&repo, &["restore", &spec, "--to", "-"]);
        for id in [&a["id"], &b["id"]] {
            assert!(e.contains(id.as_str().unwrap()), "{id} not listed: {e}");
        }
        assert!(e.contains("ambiguous"), "{e}");
        return;
    }
    panic!("ten pairs of concurrent backups never shared a second");
}

#[test]
fn store_fully_deduplicated_backup_shows_its_real_dedup_ratio() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let f = write(d.path(), "f", &seeded(2, 2 << 20));
    backup(&repo, "a", &f);
    let out = ok(&repo, &["--json", "backup", "--name", "a", f.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["new_chunks"], 0, "{v}");
    let ratio = v["dedup_ratio"].as_f64().unwrap();
    assert!(
        ratio > 100.0,
        "2 MiB stored as one small snapshot object, ratio {ratio}"
    );
    let human = ok(&repo, &["backup", "--name", "a", f.to_str().unwrap()]);
    assert!(!human.contains("dedup ratio   0.00"), "{human}");
}

#[test]
fn store_list_into_a_closed_pipe_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    backup(&repo, "x", &write(d.path(), "f", b"data"));
    for args in [
        &["list"][..],
        &["--json", "list"][..],
        &["restore", "x@latest", "--to", "-"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = store_cmd(&repo, args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{args:?} printed {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}");
    }
}
