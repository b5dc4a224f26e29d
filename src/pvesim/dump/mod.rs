//! vzdump archives on `dir` storages: real files named like PVE names them
//! (`vzdump-qemu-100-2024_06_01-02_00_00.vma.zst`) with a `.log` and optional `.notes` beside,
//! in PVE's real formats (after decompression: zstd, gzip, lzop or none, by extension):
//!
//! - QEMU: a VMA archive ([`vma`]) with the config blob `qemu-server.conf` and one device
//!   `drive-<disk key>` holding the guest's pseudo-disk (zero blocks not stored);
//! - LXC: a tar of the root filesystem ([`lxc_tar`]) led by `./etc/vzdump/pct.conf`, with a small
//!   file tree derived from the pseudo-disk.
//!
//! Both also carry `pvesim.json` (a VMA config blob / `./etc/vzdump/pvesim.json`): the
//! simulator's own metadata with the disk's lineage and the SHA-256 of its bytes. PVE ignores
//! config blobs it does not know; restore uses the lineage to continue the disk's history and the
//! digest to detect corruption and truncation, which VMA's header-only checksums would miss.

mod lxc_tar;
mod lzop;
mod vma;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::clock::DAY_SECS;
use super::state::guest::is_volume_key;
use super::state::{GuestKind, PseudoDisk};

/// Name of the simulator's metadata in an archive.
const META_NAME: &str = "pvesim.json";
/// Name of the QEMU config blob (`qemu-server.conf`, as vzdump writes it).
const QEMU_CONFIG_NAME: &str = "qemu-server.conf";

/// Metadata of a backup archive (what restore and `extractconfig` read back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpHeader {
    /// Backed-up guest.
    pub vmid: u32,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Node that made the backup.
    pub node: String,
    /// Backup time (epoch seconds).
    pub backup_time: i64,
    /// The guest config (`qemu-server.conf` / `pct.conf`) without snapshot sections.
    pub config: String,
    /// Disk lineage frozen at backup time.
    pub disk: PseudoDisk,
}

/// `pvesim.json`: the header without the config (that is in the archive's own config entry)
/// plus the digest of the disk bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimMeta {
    vmid: u32,
    #[serde(rename = "type")]
    kind: String,
    node: String,
    backup_time: i64,
    disk: PseudoDisk,
    sha256: String,
}

impl SimMeta {
    fn into_header(self, config: String) -> (DumpHeader, String) {
        let header = DumpHeader {
            vmid: self.vmid,
            kind: self.kind,
            node: self.node,
            backup_time: self.backup_time,
            config,
            disk: self.disk,
        };
        (header, self.sha256)
    }
}

/// Compression of an archive, from `compress` or the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Lzo,
    Gzip,
    Zstd,
}

impl Compression {
    /// From vzdump's `compress` option (`0`, `1`, `gzip`, `lzo`, `zstd`).
    pub(crate) fn from_option(value: &str) -> Compression {
        match value {
            "1" | "lzo" => Compression::Lzo,
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The extension after `.vma`/`.tar` (empty for none).
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Lzo => ".lzo",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    fn from_path(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some("zst") => Compression::Zstd,
            Some("gz") | Some("tgz") => Compression::Gzip,
            Some("lzo") => Compression::Lzo,
            _ => Compression::None,
        }
    }
}

/// Hashes and counts what passes through, writing nothing.
#[derive(Default)]
struct Digesting {
    hasher: Sha256,
    len: u64,
}

impl Write for Digesting {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The VMA device name: `drive-` plus the first disk key of the config (`drive-scsi0`).
fn device_name(config: &str) -> String {
    config
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v))
        .find(|(k, v)| {
            is_volume_key(GuestKind::Qemu, k) && !k.starts_with("unused") && !v.contains("media=cdrom")
        })
        .map_or_else(|| "drive-scsi0".to_string(), |(k, _)| format!("drive-{k}"))
}

/// A stable archive UUID (version 4 layout) from what is backed up, so that the same disk
/// backed up at the same time gives the same bytes.
fn archive_uuid(header: &DumpHeader) -> [u8; 16] {
    let digest = Sha256::digest(format!(
        "{}:{}:{:?}",
        header.vmid, header.backup_time, header.disk.layers
    ));
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn write_payload(out: &mut dyn Write, header: &DumpHeader) -> io::Result<()> {
    let day = header.backup_time.div_euclid(DAY_SECS);
    let meta = SimMeta {
        vmid: header.vmid,
        kind: header.kind.clone(),
        node: header.node.clone(),
        backup_time: header.backup_time,
        disk: header.disk.clone(),
        sha256: hex::encode(header.disk.digest(day)),
    };
    let meta_json = serde_json::to_string(&meta).map_err(io::Error::other)?;
    if header.kind == "lxc" {
        let hostname = header
            .config
            .lines()
            .find_map(|l| l.strip_prefix("hostname:"))
            .map_or_else(|| format!("CT{}", header.vmid), |h| h.trim().to_string());
        lxc_tar::write(
            out,
            &header.config,
            &meta_json,
            &hostname,
            &header.disk,
            day,
            header.backup_time,
        )
    } else {
        let configs: [(&str, &[u8]); 2] = [
            (QEMU_CONFIG_NAME, header.config.as_bytes()),
            (META_NAME, meta_json.as_bytes()),
        ];
        let device = device_name(&header.config);
        vma::write(
            out,
            archive_uuid(header),
            header.backup_time,
            &configs,
            &device,
            &header.disk,
            day,
        )
    }
}
/// Writes an archive to `target` (via a `.dat` temporary, like vzdump) and returns its size.
pub(crate) fn write_dump(target: &Path, compression: Compression, header: &DumpHeader) -> io::Result<u64> {
    let tmp = temp_path(target);
    let result = (|| {
        let file = io::BufWriter::new(File::create(&tmp)?);
        match compression {
            Compression::None => {
                let mut file = file;
                write_payload(&mut file, header)?;
                file.flush()?;
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(file, 3)?;
                write_payload(&mut enc, header)?;
                enc.finish()?.flush()?;
            }
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                write_payload(&mut enc, header)?;
                enc.finish()?.flush()?;
            }
            Compression::Lzo => {
                let mut enc = lzop::LzopWriter::new(file, header.backup_time as u32)?;
                write_payload(&mut enc, header)?;
                enc.finish()?;
            }
        }
        std::fs::rename(&tmp, target)?;
        Ok(std::fs::metadata(target)?.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp); // our own temporary
    }
    result
}

fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("vzdump");
    let stem = name.split('.').next().unwrap_or(name);
    target.with_file_name(format!("{stem}.dat"))
}

fn open_decoded(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = BufReader::new(File::open(path)?);
    Ok(match Compression::from_path(path) {
        Compression::None => Box::new(file),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Lzo => Box::new(lzop::LzopReader::new(file)?),
    })
}

fn is_vma(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".vma"))
}

fn meta_from(json: &[u8]) -> Result<SimMeta, String> {
    serde_json::from_slice(json).map_err(|e| format!("corrupt archive metadata ({META_NAME}): {e}"))
}

/// Reads an archive's header, and with `data` streams the disk bytes to it; returns the header
/// and the digest the metadata promises.
fn read_archive(path: &Path, data: Option<&mut dyn Write>) -> Result<(DumpHeader, String), String> {
    let fail = |e: io::Error| format!("{e}");
    let mut input =
        open_decoded(path).map_err(|e| format!("unable to open archive '{}' - {e}", path.display()))?;
    if is_vma(path) {
        let (contents, uuid) = vma::read_header(&mut input).map_err(fail)?;
        let config = contents
            .config(QEMU_CONFIG_NAME)
            .ok_or("VMA archive has no qemu-server.conf")?;
        let config = String::from_utf8(config.to_vec()).map_err(|_| "qemu-server.conf is not UTF-8")?;
        let meta = meta_from(
            contents
                .config(META_NAME)
                .ok_or("VMA archive has no pvesim.json")?,
        )?;
        let size = contents
            .devices
            .first()
            .map(|(_, s)| *s)
            .ok_or("VMA archive has no device")?;
        if size != meta.disk.size {
            return Err("VMA device size does not match the backed-up disk".into());
        }
        if let Some(out) = data {
            vma::read_disk(&mut input, &uuid, size, out).map_err(fail)?;
        }
        Ok(meta.into_header(config))
    } else {
        let contents = lxc_tar::read(&mut input, data).map_err(fail)?;
        Ok(meta_from(contents.meta_json.as_bytes())?.into_header(contents.config))
    }
}

/// Reads only the header (`vzdump/extractconfig`).
pub(crate) fn read_dump_header(path: &Path) -> Result<DumpHeader, String> {
    read_archive(path, None).map(|(h, _)| h)
}

/// Reads an archive completely, verifying size and checksum of the disk data; returns its header.
pub fn read_dump(path: &Path) -> Result<DumpHeader, String> {
    let mut digest = Digesting::default();
    let (header, expected) = read_archive(path, Some(&mut digest))?;
    if digest.len != header.disk.size {
        return Err("unexpected end of archive (truncated file)".into());
    }
    if hex::encode(digest.hasher.finalize()) != expected {
        return Err("archive checksum mismatch (corrupt file)".into());
    }
    Ok(header)
}

/// A backup file name parsed like `PVE::Storage::archive_info`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArchiveName {
    pub(crate) kind: String,
    pub(crate) vmid: u32,
    pub(crate) ctime: i64,
    /// `vma.zst`, `tar.gz`, `vma`...
    pub(crate) format: String,
}

/// Parses `vzdump-{qemu|lxc}-VMID-YYYY_MM_DD-HH_MM_SS.{vma|tar}[.zst|.gz|.lzo]`.
pub(crate) fn parse_archive_name(name: &str) -> Option<ArchiveName> {
    let rest = name.strip_prefix("vzdump-")?;
    let (kind, rest) = rest.split_once('-')?;
    if kind != "qemu" && kind != "lxc" {
        return None;
    }
    let (vmid, rest) = rest.split_once('-')?;
    let vmid: u32 = vmid.parse().ok()?;
    let (stamp, format) = rest.split_once('.')?;
    let ctime = super::clock::parse_vzdump_time(stamp)?;
    let ok = matches!(
        format,
        "vma" | "tar" | "vma.zst" | "tar.zst" | "vma.gz" | "tar.gz" | "vma.lzo" | "tar.lzo" | "tgz"
    );
    ok.then(|| ArchiveName {
        kind: kind.to_string(),
        vmid,
        ctime,
        format: format.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: &str) -> DumpHeader {
        DumpHeader {
            vmid: 100,
            kind: kind.into(),
            node: "pve1".into(),
            backup_time: 1_717_200_000,
            config: "name: web\nscsi0: local-lvm:vm-100-disk-0,size=32G\n".into(),
            disk: PseudoDisk::new(5, 300 * 1024, 19_000).frozen(19_875),
        }
    }

    #[test]
    fn every_format_and_compression_round_trips_and_damage_is_detected() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for (kind, format) in [("qemu", "vma"), ("lxc", "tar")] {
            for c in [
                Compression::None,
                Compression::Zstd,
                Compression::Gzip,
                Compression::Lzo,
            ] {
                let path = dir.path().join(format!(
                    "vzdump-{kind}-100-2024_06_01-00_00_00.{format}{}",
                    c.extension()
                ));
                write_dump(&path, c, &header(kind))?;
                assert_eq!(read_dump(&path), Ok(header(kind)), "{kind} {c:?}");
                assert_eq!(read_dump_header(&path), Ok(header(kind)));
                assert!(!temp_path(&path).exists());
                let bytes = std::fs::read(&path)?;
                std::fs::write(&path, &bytes[..bytes.len() * 2 / 3])?;
                assert!(read_dump(&path).is_err(), "{kind} {c:?} truncation undetected");
            }
            // A flipped bit in the disk data of an uncompressed archive (VMA checksums only
            // cover headers) is caught by the digest.
            let path = dir
                .path()
                .join(format!("vzdump-{kind}-100-2024_06_01-00_00_01.{format}"));
            write_dump(&path, Compression::None, &header(kind))?;
            let mut bytes = std::fs::read(&path)?;
            let at = bytes.len() - 4096;
            let at = at - bytes[..at].iter().rev().position(|b| *b != 0).unwrap_or(0) - 1;
            bytes[at] ^= 0x10;
            std::fs::write(&path, &bytes)?;
            let err = read_dump(&path).unwrap_err();
            assert!(err.contains("corrupt"), "{kind}: {err}");
        }
        Ok(())
    }

    #[test]
    fn vma_device_is_named_after_the_first_disk() {
        assert_eq!(
            device_name("name: a\nide2: none,media=cdrom\nvirtio0: x:y\n"),
            "drive-virtio0"
        );
        assert_eq!(device_name("name: a\n"), "drive-scsi0");
    }

    #[test]
    fn archive_names_parse_like_pve() {
        let a = parse_archive_name("vzdump-lxc-101-2024_06_01-02_00_00.tar.zst");
        assert_eq!(
            a.map(|a| (a.kind, a.vmid, a.format)),
            Some(("lxc".into(), 101, "tar.zst".into()))
        );
        assert!(parse_archive_name("vzdump-qemu-100-2024_06_01-02_00_00.vma.zst.notes").is_none());
        assert!(parse_archive_name("vzdump-qemu-100-2024_06_01-02_00_00.log").is_none());
    }
}
