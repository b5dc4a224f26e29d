//! `verify --read-data-subset N%|n/t`: a part of the packs is read per run.

use super::store_common::*;

#[test]
fn store_verify_read_data_subset_reads_part_of_the_packs() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    init_small(&repo, &[]);
    let f = write(d.path(), "f", &seeded(21, 6 << 20));
    backup(&repo, "f", &f);
    let n = packs(&repo).len() as u64;
    assert!(n >= 4, "want several packs, have {n}");
    let run = |arg: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&repo, &["--json", "verify", "--read-data-subset", arg])).unwrap()
    };
    let v = run("25%");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["packs_needed"], n);
    assert_eq!(v["packs_read"], n.div_ceil(4), "{v}");
    assert_eq!(v["read_data_subset"], "25%");
    let v = run("100%");
    assert_eq!(v["packs_read"], n);
    // n/t: the t groups together read every pack once.
    let total: u64 = (1..=3)
        .map(|i| run(&format!("{i}/3"))["packs_read"].as_u64().unwrap())
        .sum();
    assert_eq!(total, n);
    let human = ok(&repo, &["verify", "--read-data-subset", "10%"]);
    assert!(
        human.contains("verify OK") && human.contains(&format!("of {n} packs, subset 10%")),
        "{human}"
    );
    for bad in ["0%", "101%", "0/3", "4/3", "abc"] {
        let out = store(&repo, &["verify", "--read-data-subset", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad} accepted");
    }
    // A damaged pack is found when the subset reads it.
    let p = &packs(&repo)[0];
    let mut bytes = std::fs::read(p).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(p, &bytes).unwrap();
    let out = store(&repo, &["verify", "--read-data-subset", "100%"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
