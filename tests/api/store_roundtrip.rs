//! Round trips through the real CLI: edge sizes around chunk bounds, encryption, directories,
//! stdin/stdout, dedup of shifted data, and a multi-GiB sparse file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use super::store_common::*;

#[test]
fn store_roundtrip_edge_sizes_restore_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let (min, max) = (4096usize, 65536usize);
    let sizes = [
        0,
        1,
        min - 1,
        min,
        min + 1,
        16384,
        max - 1,
        max,
        max + 1,
        2 * max,
        3 * max + 17,
        1 << 20,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        // Half random, half compressible, so both stored forms (zstd and raw) are exercised.
        let mut data = seeded(i as u64, n);
        if i % 2 == 1 {
            data.iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (j / 100) as u8);
        }
        let f = write(d.path(), &format!("in-{n}"), &data);
        let id = backup(&repo, &format!("size-{n}"), &f);
        assert_eq!(restore_bytes(&repo, &id), data, "size {n} via stdout");
        let to = d.path().join(format!("out-{n}"));
        ok(
            &repo,
            &[
                "restore",
                &format!("size-{n}@latest"),
                "--to",
                to.to_str().unwrap(),
            ],
        );
        assert_eq!(std::fs::read(&to).unwrap(), data, "size {n} via file");
    }
    let v = ok(&repo, &["verify", "--read-data"]);
    assert!(v.contains("verify OK"), "{v}");
}

#[test]
fn store_roundtrip_encrypted_stdin_and_directory() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let key = d.path().join("key");
    let kf = key.to_str().unwrap();
    init_small(&repo, &["--encrypt", "--key-file", kf]);
    assert!(std::fs::read_to_string(&key).unwrap().trim().len() == 64);
    let data = seeded(99, 300_000);
    let out = store_stdin(
        &repo,
        &[
            "--key-file",
            kf,
            "--json",
            "backup",
            "--name",
            "piped",
            "--tag",
            "vm=100",
            "-",
        ],
        &data,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Chunk bytes are not stored in the clear: no 64-byte window of the input appears in packs.
    for p in packs(&repo) {
        let bytes = std::fs::read(p).unwrap();
        assert!(!bytes.windows(64).any(|w| w == &data[1000..1064]));
    }
    let restored = store_cmd(&repo, &["--key-file", kf, "restore", "piped@latest", "--to", "-"])
        .output()
        .unwrap();
    assert!(restored.status.success());
    assert_eq!(restored.stdout, data);
    let list: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["--key-file", kf, "list", "--json"])).unwrap();
    assert_eq!(list[0]["tags"]["vm"], "100");
    assert_eq!(list[0]["kind"], "stream");

    // A directory round-trips as a tree, with nested files and an empty file.
    let src = d.path().join("tree");
    std::fs::create_dir_all(src.join("etc/pve/nodes")).unwrap();
    write(
        &src.join("etc/pve"),
        "storage.cfg",
        b"dir: local\n\tpath /var/lib/vz\n",
    );
    write(&src.join("etc/pve/nodes"), "empty", b"");
    write(&src, "disk.raw", &seeded(5, 200_000));
    // A file of several copy buffers with a zero run (written out: the file was not sparse).
    let mut big = seeded(6, 1 << 20);
    big[300_000..900_000].fill(0);
    write(&src, "big.raw", &big);
    {
        use std::os::unix::fs::PermissionsExt;
        let cfg = src.join("etc/pve/storage.cfg");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let f = std::fs::File::options().write(true).open(&cfg).unwrap();
        f.set_modified(t).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(src.join("big.raw"))
            .unwrap();
        f.set_modified(t).unwrap();
        // Directories keep their mtimes too (set last: creating entries changes them).
        for dir in ["etc/pve/nodes", "etc/pve", "etc"] {
            std::fs::File::open(src.join(dir))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
    let backup_tree = || -> serde_json::Value {
        let out = ok(
            &repo,
            &[
                "--key-file",
                kf,
                "--json",
                "backup",
                "--name",
                "etc",
                src.to_str().unwrap(),
            ],
        );
        serde_json::from_str(&out).unwrap()
    };
    let id1 = backup_tree();
    let again = backup_tree();
    assert_eq!(
        again["new_chunks"], 0,
        "an unchanged tree must dedup completely: {again}"
    );
    let dst = d.path().join("restored");
    ok(
        &repo,
        &[
            "--key-file",
            kf,
            "restore",
            id1["snapshot"]["id"].as_str().unwrap(),
            "--to",
            dst.to_str().unwrap(),
        ],
    );
    for rel in [
        "etc/pve/storage.cfg",
        "etc/pve/nodes/empty",
        "disk.raw",
        "big.raw",
    ] {
        assert!(
            std::fs::read(src.join(rel)).unwrap() == std::fs::read(dst.join(rel)).unwrap(),
            "{rel} differs"
        );
        // Mode and mtime come back too.
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            std::fs::metadata(src.join(rel)).unwrap(),
            std::fs::metadata(dst.join(rel)).unwrap(),
        );
        assert_eq!(a.mode(), b.mode(), "{rel} mode");
        assert_eq!(a.mtime(), b.mtime(), "{rel} mtime");
    }
    for dir in ["etc/pve/nodes", "etc/pve", "etc"] {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(src.join(dir)).unwrap().mtime(),
            std::fs::metadata(dst.join(dir)).unwrap().mtime(),
            "{dir}/ mtime"
        );
    }
    // Restore never overwrites.
    let e = fails(
        &repo,
        &[
            "--key-file",
            kf,
            "restore",
            "etc@latest",
            "--to",
            dst.to_str().unwrap(),
        ],
    );
    assert!(e.contains("already exists"), "{e}");
    // An existing empty directory is a valid target for a directory snapshot (like restic's
    // --target); a file snapshot still needs a new path.
    let empty = d.path().join("empty-target");
    std::fs::create_dir(&empty).unwrap();
    let to = empty.to_str().unwrap();
    ok(&repo, &["--key-file", kf, "restore", "etc@latest", "--to", to]);
    assert_eq!(
        std::fs::read(empty.join("etc/pve/storage.cfg")).unwrap(),
        std::fs::read(src.join("etc/pve/storage.cfg")).unwrap()
    );
    let empty = d.path().join("empty-for-stream");
    std::fs::create_dir(&empty).unwrap();
    let to = empty.to_str().unwrap();
    let e = fails(&repo, &["--key-file", kf, "restore", "piped@latest", "--to", to]);
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn store_relative_repo_path_works_from_its_parent_directory() {
    let d = tempfile::tempdir().unwrap();
    let data = seeded(9, 300_000);
    write(d.path(), "in.raw", &data);
    let run = |args: &[&str]| {
        let out = store_cmd(std::path::Path::new("repo"), args)
            .current_dir(d.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "store {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&["init"]);
    run(&["backup", "--name", "rel", "in.raw"]);
    run(&["restore", "rel@latest", "--to", "out.raw"]);
    assert!(std::fs::read(d.path().join("out.raw")).unwrap() == data);
    assert!(run(&["restore", "rel@latest", "--to", "-"]) == data);
}

#[test]
fn store_backup_of_shifted_data_stores_only_nearby_chunks() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let base = seeded(7, 2 << 20);
    let mut shifted = base[..100_000].to_vec();
    shifted.extend_from_slice(b"an inserted tar member header that shifts everything after it");
    shifted.extend_from_slice(&base[100_000..]);
    backup(&repo, "ct", &write(d.path(), "v1", &base));
    let out = ok(
        &repo,
        &[
            "--json",
            "backup",
            "--name",
            "ct",
            write(d.path(), "v2", &shifted).to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new = v["new_bytes"].as_u64().unwrap();
    assert!(new < 200_000, "an insertion re-stored {new} bytes of 2 MiB");
    let stats: serde_json::Value = serde_json::from_str(&ok(&repo, &["stats", "--json"])).unwrap();
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 1.8, "{stats}");
}

#[test]
fn store_roundtrip_multi_gib_sparse_file_stays_sparse() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    ok(&repo, &["init"]);
    let size: u64 = 3 << 30;
    let src = d.path().join("disk.raw");
    let islands: Vec<(u64, Vec<u8>)> = (0..6u64)
        .map(|i| (i * (size / 6) + 12345 * i, seeded(100 + i, 300_000)))
        .collect();
    {
        let mut f = std::fs::File::create(&src).unwrap();
        f.set_len(size).unwrap();
        for (off, data) in &islands {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(data).unwrap();
        }
    }
    let id = backup(&repo, "sparse", &src);
    let stats: serde_json::Value = serde_json::from_str(&ok(&repo, &["stats", "--json"])).unwrap();
    assert!(
        stats["stored_bytes"].as_u64().unwrap() < 8 << 20,
        "zero runs must dedup: {stats}"
    );
    let dst = d.path().join("restored.raw");
    ok(&repo, &["restore", &id, "--to", dst.to_str().unwrap()]);
    let meta = std::fs::metadata(&dst).unwrap();
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() * 512 < 64 << 20,
        "restored file is not sparse: {} blocks",
        meta.blocks()
    );
    let (mut a, mut b) = (
        std::fs::File::open(&src).unwrap(),
        std::fs::File::open(&dst).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let mut pos = 0u64;
    loop {
        let n = a.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        b.read_exact(&mut bb[..n]).unwrap();
        assert!(ba[..n] == bb[..n], "restored bytes differ near offset {pos}");
        pos += n as u64;
    }
    assert_eq!(pos, size);
}

#[test]
fn store_directory_restore_keeps_sparse_files_sparse_and_dense_files_dense() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let src = d.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    // A sparse VM image: 40 MiB with data islands (one spanning a copy-buffer boundary, one
    // with a zero block inside it) and a hole at the end, size not a multiple of 4 KiB.
    let size: u64 = (40 << 20) + 1234;
    let islands: [(u64, usize); 4] = [
        (0, 5000),
        ((1 << 20) - 3000, 9000),
        (17 << 20, 3 << 20),
        ((30 << 20) + 512, 70_000),
    ];
    {
        let mut f = std::fs::File::create(src.join("disk.raw")).unwrap();
        f.set_len(size).unwrap();
        for (i, &(off, len)) in islands.iter().enumerate() {
            let mut data = seeded(200 + i as u64, len);
            if len > 1 << 20 {
                data[(1 << 20)..(1 << 20) + 8192].fill(0);
            }
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&data).unwrap();
        }
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // A dense file with 3 MiB of written zeros: it must come back fully allocated (a swap file
    // or a preallocated database file must not gain holes).
    let mut dense = seeded(300, 5 << 20);
    dense[(1 << 20)..(4 << 20)].fill(0);
    write(&src, "dense.img", &dense);
    std::fs::set_permissions(src.join("dense.img"), std::fs::Permissions::from_mode(0o751)).unwrap();
    let src_sparse = std::fs::metadata(src.join("disk.raw")).unwrap();
    assert!(
        src_sparse.blocks() * 512 < 8 << 20,
        "this file system cannot make sparse files; the test needs one"
    );

    let id = backup(&repo, "tree", &src);
    let dst = d.path().join("restored");
    ok(&repo, &["restore", &id, "--to", dst.to_str().unwrap()]);

    for (rel, mode) in [("disk.raw", 0o100600), ("dense.img", 0o100751)] {
        let (a, b) = (src.join(rel), dst.join(rel));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{rel} differs"
        );
        let (ma, mb) = (std::fs::metadata(&a).unwrap(), std::fs::metadata(&b).unwrap());
        assert_eq!(mb.len(), ma.len(), "{rel} size");
        assert_eq!(mb.mode(), mode, "{rel} mode");
        assert_eq!(mb.mtime(), ma.mtime(), "{rel} mtime");
    }
    let sparse = std::fs::metadata(dst.join("disk.raw")).unwrap();
    // The islands hold about 3.1 MiB (less the zero block inside one): allow some slack for
    // block rounding and file system metadata, nothing like the 40 MiB a dense copy takes.
    assert!(
        sparse.blocks() * 512 <= src_sparse.blocks() * 512 + (1 << 20),
        "restored sparse file lost its holes: {} KiB allocated, source {} KiB",
        sparse.blocks() / 2,
        src_sparse.blocks() / 2
    );
    let dense_meta = std::fs::metadata(dst.join("dense.img")).unwrap();
    assert!(
        dense_meta.blocks() * 512 >= 5 << 20,
        "dense file gained holes: {} KiB allocated of 5120",
        dense_meta.blocks() / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_library_backup_reader_and_restore_to_writer_work_from_tokio() {
    use homelab_autopilot::storage::{ChunkStore, NoProgress, OpenOptions, RepoParams, SourceKind};
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo").to_str().unwrap().to_string();
    ChunkStore::init(&repo, RepoParams::default(), None, None).unwrap();
    let data = seeded(77, 700_000);
    let expected = data.clone();
    // The operator streams vzdump archives from a reader on a blocking thread.
    let (summary, restored) = tokio::task::spawn_blocking(move || {
        let store = ChunkStore::open(&repo, OpenOptions::default()).unwrap();
        let tags = [("vmid".to_string(), "100".to_string())].into_iter().collect();
        let summary = store
            .backup_reader(
                &data[..],
                "vzdump-qemu-100",
                &tags,
                SourceKind::Stream,
                &NoProgress,
            )
            .unwrap();
        let mut out = Vec::new();
        store
            .restore_to_writer(&summary.snapshot, &mut out, &NoProgress)
            .unwrap();
        (summary, out)
    })
    .await
    .unwrap();
    assert_eq!(restored, expected);
    assert_eq!(summary.bytes_read, 700_000);
    assert_eq!(summary.snapshot.tags["vmid"], "100");
}
