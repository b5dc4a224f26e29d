//! `backup --exclude/--exclude-file` and `restore --include/--exclude` through the CLI.

use std::path::Path;

use super::store_common::*;

fn ls_paths(repo: &Path, snap: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&ok(repo, &["--json", "ls", snap])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

fn tree_paths(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

fn make_tree(src: &Path) {
    for dir in ["cache", "sub/keep/cache", "sub/deep"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    for f in [
        "a.txt",
        "a.log",
        "cache/x",
        "sub/b.txt",
        "sub/b.log",
        "sub/keep/k.txt",
        "sub/keep/cache/z",
        "sub/deep/d.txt",
    ] {
        write(src, f, f.as_bytes());
    }
}

#[test]
fn store_backup_exclude_and_exclude_file_leave_paths_out() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    make_tree(&src);
    let list = write(d.path(), "excludes", b"# build output\n\n  /sub/keep  \n");
    let out = ok(
        &repo,
        &[
            "--json",
            "backup",
            "--name",
            "t",
            "--exclude",
            "*.log",
            "--exclude",
            "/cache",
            "--exclude-file",
            list.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["snapshot"]["id"].as_str().unwrap();
    assert_eq!(
        ls_paths(&repo, id),
        ["a.txt", "sub", "sub/b.txt", "sub/deep", "sub/deep/d.txt"]
    );
    // Unanchored patterns match at any depth; `**` spans directories.
    let id = {
        let out = ok(
            &repo,
            &[
                "--json",
                "backup",
                "--name",
                "t",
                "--exclude",
                "cache",
                "--exclude",
                "/sub/**/*.txt",
                src.to_str().unwrap(),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["snapshot"]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(
        ls_paths(&repo, &id),
        ["a.log", "a.txt", "sub", "sub/b.log", "sub/deep", "sub/keep"]
    );
    let e = fails(
        &repo,
        &["backup", "--name", "t", "--exclude", "a[b", src.to_str().unwrap()],
    );
    assert!(e.contains("not closed") && e.contains("--exclude"), "{e}");
    let e = fails(&repo, &["backup", "--name", "t", "--exclude", "x", "-"]);
    assert!(e.contains("directory backups"), "{e}");
    let e = fails(
        &repo,
        &[
            "backup",
            "--name",
            "t",
            "--exclude-file",
            "/nonexistent",
            src.to_str().unwrap(),
        ],
    );
    assert!(e.contains("--exclude-file /nonexistent"), "{e}");
}

#[test]
fn store_restore_include_and_exclude_select_paths() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    make_tree(&src);
    let id = backup(&repo, "t", &src);
    let to = d.path().join("inc");
    ok(
        &repo,
        &[
            "restore",
            &id,
            "--to",
            to.to_str().unwrap(),
            "--include",
            "/sub/keep",
            "--include",
            "*.log",
        ],
    );
    assert_eq!(
        tree_paths(&to),
        [
            "a.log",
            "sub",
            "sub/b.log",
            "sub/keep",
            "sub/keep/cache",
            "sub/keep/cache/z",
            "sub/keep/k.txt"
        ]
    );
    assert_eq!(
        std::fs::read(to.join("sub/keep/k.txt")).unwrap(),
        b"sub/keep/k.txt"
    );
    let to = d.path().join("exc");
    ok(
        &repo,
        &[
            "restore",
            &id,
            "--to",
            to.to_str().unwrap(),
            "--exclude",
            "cache",
            "--exclude",
            "/sub/deep",
        ],
    );
    assert_eq!(
        tree_paths(&to),
        [
            "a.log",
            "a.txt",
            "sub",
            "sub/b.log",
            "sub/b.txt",
            "sub/keep",
            "sub/keep/k.txt"
        ]
    );
    let to = d.path().join("both");
    ok(
        &repo,
        &[
            "restore",
            &id,
            "--to",
            to.to_str().unwrap(),
            "--include",
            "/sub",
            "--exclude",
            "*.txt",
        ],
    );
    assert_eq!(
        tree_paths(&to),
        [
            "sub",
            "sub/b.log",
            "sub/deep",
            "sub/keep",
            "sub/keep/cache",
            "sub/keep/cache/z"
        ]
    );
    let e = fails(&repo, &["restore", &id, "--to", "-", "--include", "a.txt"]);
    assert!(e.contains("--to PATH"), "{e}");
    let f = write(d.path(), "file", b"file");
    let fid = backup(&repo, "f", &f);
    let e = fails(
        &repo,
        &[
            "restore",
            &fid,
            "--to",
            d.path().join("f2").to_str().unwrap(),
            "--include",
            "x",
        ],
    );
    assert!(e.contains("directory snapshots"), "{e}");
}
