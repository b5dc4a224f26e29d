//! `crd` and `demo` into a reader that went away (`| head`) end quietly; `crd --write --dir`
//! only writes into a directory that exists.

use std::process::{Command, Output, Stdio};

use super::store_common::bin;

/// Runs the binary with a stdout pipe whose reader is already closed.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .unwrap()
}

#[test]
fn crd_and_demo_into_a_closed_pipe_end_quietly() {
    for args in [&["crd"][..], &["demo"][..]] {
        let out = into_closed_pipe(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{args:?} printed: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}");
    }
}

#[test]
fn crd_write_refuses_a_dir_that_does_not_exist() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-such-checkout");
    let out = Command::new(bin())
        .args(["crd", "--write", "--dir"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no such directory"),
        "{err}"
    );
    assert!(!missing.exists(), "crd --write created {}", missing.display());
    let out = Command::new(bin())
        .args(["crd", "--write", "--dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(d.path().join("crds").is_dir());
}
