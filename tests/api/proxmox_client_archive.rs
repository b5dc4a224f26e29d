//! The backups the client makes are archives in PVE's real formats, checked by readers written
//! here from the specifications (not the simulator's own code): QEMU backups are VMA archives
//! (pve-qemu `vma_spec.txt`), container backups GNU tar archives led by `./etc/vzdump/pct.conf`.
//! Restore reads them back (the backup scenarios), so our chunk store will later ingest
//! realistic archives.

use std::collections::BTreeMap;
use std::io::Read;

use homelab_autopilot::proxmox::api::{Compression, ContentKind, VzdumpRequest};
use md5::{Digest, Md5};

use crate::proxmox_client_common::{AuthKind, Env, node, vmid};

/// A VMA archive, decoded.
pub struct Vma {
    pub ctime: u64,
    pub configs: BTreeMap<String, Vec<u8>>,
    /// `(dev_id, name, size)`.
    pub devices: Vec<(u8, String, u64)>,
    /// Device contents by dev_id (zero blocks filled in).
    pub data: BTreeMap<u8, Vec<u8>>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A blob of the header's blob buffer: `<u16 LE size><data>`.
fn blob(buffer: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = u16::from_le_bytes([buffer[at], buffer[at + 1]]) as usize;
    &buffer[at + 2..at + 2 + len]
}

fn c_string(buffer: &[u8], at: u32) -> String {
    let b = blob(buffer, at);
    assert_eq!(b.last(), Some(&0), "VMA strings end with NUL");
    String::from_utf8(b[..b.len() - 1].to_vec()).expect("UTF-8 name")
}

/// Decodes a VMA archive per `vma_spec.txt`, checking magic, version, uuid and every MD5.
pub fn parse_vma(bytes: &[u8]) -> Vma {
    assert_eq!(&bytes[0..4], b"VMA\0", "magic");
    assert_eq!(be32(bytes, 4), 1, "version");
    let uuid = &bytes[8..24];
    let (blob_at, blob_size, header_size) = (be32(bytes, 48), be32(bytes, 52), be32(bytes, 56) as usize);
    assert_eq!((blob_at, header_size % 512, blob_size % 512), (12288, 0, 0));
    assert_eq!(header_size, 12288 + blob_size as usize);
    let mut header = bytes[..header_size].to_vec();
    header[32..48].fill(0);
    assert_eq!(Md5::digest(&header).as_slice(), &bytes[32..48], "header MD5");
    let buffer = &bytes[12288..header_size];
    let mut configs = BTreeMap::new();
    for i in 0..256 {
        let (name, data) = (be32(bytes, 2044 + 4 * i), be32(bytes, 3068 + 4 * i));
        if name != 0 {
            configs.insert(c_string(buffer, name), blob(buffer, data).to_vec());
        }
    }
    let mut devices = Vec::new();
    let mut data = BTreeMap::new();
    for id in 1..256usize {
        let at = 4096 + 32 * id;
        if be32(bytes, at) != 0 {
            let size = be64(bytes, at + 8);
            devices.push((id as u8, c_string(buffer, be32(bytes, at)), size));
            data.insert(id as u8, vec![0u8; size as usize]);
        }
    }
    let mut pos = header_size;
    while pos < bytes.len() {
        let head = &bytes[pos..pos + 512];
        assert_eq!(&head[0..4], b"VMAE", "extent magic at {pos}");
        assert_eq!(&head[8..24], uuid, "extent uuid");
        let mut zeroed = head.to_vec();
        zeroed[24..40].fill(0);
        assert_eq!(Md5::digest(&zeroed).as_slice(), &head[24..40], "extent MD5");
        let block_count = u16::from_be_bytes([head[6], head[7]]) as usize;
        pos += 512;
        let mut stored = 0;
        for i in 0..59 {
            let info = be64(head, 40 + 8 * i);
            if info == 0 {
                continue;
            }
            let (mask, dev, cluster) = (
                (info >> 48) as u16,
                (info >> 32) as u8,
                (info & 0xFFFF_FFFF) as usize,
            );
            let disk = data.get_mut(&dev).expect("extent names a known device");
            for b in 0..16 {
                if mask & (1 << b) != 0 {
                    let offset = cluster * 65536 + b * 4096;
                    let end = (offset + 4096).min(disk.len());
                    disk[offset..end].copy_from_slice(&bytes[pos..pos + end - offset]);
                    pos += 4096;
                    stored += 1;
                }
            }
        }
        assert_eq!(stored, block_count, "block_count");
    }
    Vma {
        ctime: be64(bytes, 24),
        configs,
        devices,
        data,
    }
}

/// The `(name, content)` of every entry of a tar archive, in order (directories with no content).
pub fn tar_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("entry data");
        out.push((name, content));
    }
    out
}

/// The newest backup of `id` on `local`: file name, decompressed bytes, ctime.
async fn archive(env: &Env, node_name: &str, id: u32) -> (String, Vec<u8>, Option<u64>) {
    let rows = env
        .client
        .storage_content(
            &node(node_name),
            "local",
            Some(ContentKind::Backup),
            Some(vmid(id)),
        )
        .await
        .expect("content");
    let file = rows[0].volid.trim_start_matches("local:backup/").to_owned();
    let dir = env.sim.state(|c| c.backup_dir_on("local", node_name));
    let raw = std::fs::read(dir.join(&file)).expect("archive file");
    (
        file,
        zstd::decode_all(raw.as_slice()).expect("zstd"),
        rows[0].ctime,
    )
}

#[tokio::test]
async fn client_backups_are_real_vma_and_tar_archives_of_the_guests() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let c = &env.client;
    for (node_name, id) in [("pve1", 100), ("pve2", 102)] {
        let req = VzdumpRequest {
            vmids: vec![vmid(id)],
            storage: Some("local".into()),
            compress: Some(Compression::Zstd),
            ..VzdumpRequest::default()
        };
        env.wait(&c.vzdump(&node(node_name), &req).await.expect("vzdump"))
            .await;
    }
    let (file, bytes, ctime) = archive(&env, "pve1", 100).await;
    assert!(file.ends_with(".vma.zst"), "{file}");
    let vma = parse_vma(&bytes);
    assert_eq!(Some(vma.ctime), ctime, "header ctime is the backup time");
    let config = String::from_utf8(vma.configs["qemu-server.conf"].clone()).expect("config");
    assert!(
        config.contains("name: nextcloud") && config.contains("scsi0: "),
        "{config}"
    );
    assert!(
        !config.contains("lock:"),
        "the backup lock is not in the backed-up config"
    );
    let disk = env.sim.disk_image(100).expect("disk");
    assert_eq!(
        vma.devices,
        vec![(1, "drive-scsi0".to_string(), disk.len() as u64)]
    );
    assert!(vma.data[&1] == disk, "the device holds the guest's pseudo-disk");
    assert!(bytes.len() < disk.len() + 16384, "zero blocks are not stored");

    let (file, bytes, _) = archive(&env, "pve2", 102).await;
    assert!(file.ends_with(".tar.zst"), "{file}");
    let entries = tar_entries(&bytes);
    assert_eq!(
        entries[0].0, "./etc/vzdump/pct.conf",
        "the config leads, as in vzdump"
    );
    let config = String::from_utf8(entries[0].1.clone()).expect("config");
    assert!(
        config.contains("hostname: pihole") && config.contains("rootfs: "),
        "{config}"
    );
    let files: BTreeMap<&str, &Vec<u8>> = entries.iter().map(|(n, d)| (n.as_str(), d)).collect();
    assert_eq!(files["./etc/hostname"].as_slice(), b"pihole\n");
    let data: Vec<u8> = entries
        .iter()
        .filter(|(n, _)| n.starts_with("./srv/data/") && n.ends_with(".bin"))
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    assert!(
        data == env.sim.disk_image(102).expect("disk"),
        "the file tree holds the pseudo-disk"
    );
}
