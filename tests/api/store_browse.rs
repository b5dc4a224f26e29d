//! Looking into directory snapshots without restoring them: `ls`, `dump`, `diff`.

use super::store_common::*;

#[test]
fn store_ls_dump_and_diff_directory_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    let big = seeded(3, 300_000);
    write(&src, "big.img", &big);
    write(&src.join("sub"), "b", b"bee");
    write(&src, "same-size", b"aaaa");
    write(&src.join("sub/deep"), "c", b"sea");
    std::os::unix::fs::symlink("big.img", src.join("link")).unwrap();
    let v1 = backup(&repo, "tree", &src);
    let mut big2 = big.clone();
    big2[1000] ^= 1;
    big2.extend_from_slice(b"tail");
    write(&src, "big.img", &big2);
    std::fs::remove_file(src.join("sub/b")).unwrap();
    write(&src, "new", b"new!");
    write(&src, "same-size", b"bbbb");
    let v2 = backup(&repo, "tree", &src);

    let v: serde_json::Value = serde_json::from_str(&ok(&repo, &["--json", "ls", &v1])).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "big.img",
            "link",
            "same-size",
            "sub",
            "sub/b",
            "sub/deep",
            "sub/deep/c"
        ]
    );
    assert_eq!(v[0]["size"], 300_000);
    assert_eq!(v[0]["kind"], "file");
    assert_eq!(v[1]["link"], "big.img");
    let human = ok(&repo, &["ls", &v1, "sub/deep"]);
    assert!(
        human.contains("sub/deep/c") && !human.contains("sub/b") && !human.contains("big.img"),
        "{human}"
    );
    let e = fails(&repo, &["ls", &v1, "nowhere"]);
    assert!(
        e.contains("has no file or directory \"nowhere\"") && e.contains("(PATH)"),
        "{e}"
    );

    let out = store(&repo, &["dump", &v1, "big.img"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == big, "dump differs from the file");
    assert_eq!(
        store(&repo, &["dump", "tree@latest", "./sub/deep/c"]).stdout,
        b"sea"
    );
    let e = fails(&repo, &["dump", &v2, "sub/b"]);
    assert!(e.contains("\"sub/b\""), "{e}");
    let file_snap = backup(&repo, "file", &src.join("new"));
    let e = fails(&repo, &["dump", &file_snap, "x"]);
    assert!(e.contains("only directory snapshots have paths"), "{e}");

    let v: serde_json::Value = serde_json::from_str(&ok(&repo, &["--json", "diff", &v1, &v2])).unwrap();
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("added"), ["new"]);
    assert_eq!(names("removed"), ["sub/b"]);
    assert!(names("changed").contains(&"big.img".to_string()), "{v}");
    let big_change = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "big.img")
        .unwrap();
    assert_eq!(big_change["size_before"], 300_000);
    assert_eq!(big_change["size_after"], 300_004);
    assert!(
        big_change["what"].as_array().unwrap().contains(&"content".into()),
        "{v}"
    );
    let same_size = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "same-size");
    let same_size = same_size.unwrap_or_else(|| panic!("a same-size rewrite is a change: {v}"));
    assert!(
        same_size["what"].as_array().unwrap().contains(&"content".into()),
        "{v}"
    );
    assert_eq!(v["added_bytes"], 4);
    assert_eq!(v["removed_bytes"], 3);
    let human = ok(&repo, &["diff", &v1, &v2]);
    assert!(
        human.contains("+ new (4 B)") && human.contains("- sub/b (3 B)"),
        "{human}"
    );
    let same = ok(&repo, &["--json", "diff", &v2, &v2]);
    let same: serde_json::Value = serde_json::from_str(&same).unwrap();
    assert!(same["added"].as_array().unwrap().is_empty() && same["changed"].as_array().unwrap().is_empty());
}
