//! Errors and exit codes of the store CLI: the library speaks in store terms (its messages end
//! up in resource conditions), the CLI adds its flags, and every outcome has its own exit code.

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
