//! vzdump archives on `dir` storages: real files named like PVE names them
//! (`vzdump-qemu-100-2024_06_01-02_00_00.vma.zst`) with a `.log` and optional `.notes` beside.
//!
//! The content is the simulator's own container, not a real VMA/tar (only the simulator reads it
//! back): after decompression (zstd, gzip, lzop or none, by extension) a file is
//!
//! ```text
//! PVESIM-VZDUMP/1\n
//! <one line of JSON: DumpHeader>\n
//! <disk_size bytes of the guest's pseudo-disk at backup time>
//! SHA256:<64 hex digits of those bytes>\n
//! ```
//!
//! Restore streams the file back and fails on any corruption or truncation.

mod lzop;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::state::PseudoDisk;

const MAGIC: &str = "PVESIM-VZDUMP/1";

/// Metadata at the start of every simulated archive.
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
    /// Disk lineage frozen at backup time (its bytes follow the header).
    pub disk: PseudoDisk,
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

/// Counts and hashes what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_payload(out: &mut dyn Write, header: &DumpHeader) -> io::Result<()> {
    let json = serde_json::to_string(header).map_err(io::Error::other)?;
    out.write_all(format!("{MAGIC}\n{json}\n").as_bytes())?;
    let day = header.backup_time.div_euclid(super::clock::DAY_SECS);
    let mut hashing = HashingWriter {
        inner: &mut *out,
        hasher: Sha256::new(),
    };
    header.disk.write_to(day, &mut hashing)?;
    let digest = hex::encode(hashing.hasher.finalize());
    out.write_all(format!("SHA256:{digest}\n").as_bytes())
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

fn read_line_limited(reader: &mut dyn BufRead, limit: usize) -> Result<String, String> {
    let mut line = Vec::new();
    reader
        .take(limit as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("read error: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err("unexpected end of archive header".into());
    }
    line.pop();
    String::from_utf8(line).map_err(|_| "archive header is not UTF-8".into())
}

fn open_header(path: &Path) -> Result<(DumpHeader, BufReader<Box<dyn Read>>), String> {
    let decoded =
        open_decoded(path).map_err(|e| format!("unable to open archive '{}' - {e}", path.display()))?;
    let mut reader = BufReader::new(decoded);
    let magic = read_line_limited(&mut reader, 64)?;
    if magic != MAGIC {
        return Err(format!(
            "archive '{}' is not a vzdump archive of this simulator",
            path.display()
        ));
    }
    let json = read_line_limited(&mut reader, 4 << 20)?;
    let header: DumpHeader =
        serde_json::from_str(&json).map_err(|e| format!("corrupt archive header: {e}"))?;
    Ok((header, reader))
}

/// Reads only the header (`vzdump/extractconfig`).
pub(crate) fn read_dump_header(path: &Path) -> Result<DumpHeader, String> {
    open_header(path).map(|(h, _)| h)
}

/// Reads an archive completely, verifying size and checksum; returns its header.
pub fn read_dump(path: &Path) -> Result<DumpHeader, String> {
    let (header, mut reader) = open_header(path)?;
    let mut hasher = Sha256::new();
    let mut remaining = header.disk.size;
    let mut buf = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        let n = reader
            .read(&mut buf[..want])
            .map_err(|e| format!("archive read error: {e}"))?;
        if n == 0 {
            return Err("unexpected end of archive (truncated file)".into());
        }
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    let trailer = read_line_limited(&mut reader, 128)?;
    let expected = trailer
        .strip_prefix("SHA256:")
        .ok_or("archive trailer missing (truncated file)")?;
    if hex::encode(hasher.finalize()) != expected {
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

    fn header() -> DumpHeader {
        DumpHeader {
            vmid: 100,
            kind: "qemu".into(),
            node: "pve1".into(),
            backup_time: 1_717_200_000,
            config: "name: web\n".into(),
            disk: PseudoDisk::new(5, 64 * 1024, 19_000).frozen(19_875),
        }
    }

    #[test]
    fn every_compression_round_trips_and_truncation_is_detected() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for c in [
            Compression::None,
            Compression::Zstd,
            Compression::Gzip,
            Compression::Lzo,
        ] {
            let path = dir.path().join(format!(
                "vzdump-qemu-100-2024_06_01-00_00_00.vma{}",
                c.extension()
            ));
            write_dump(&path, c, &header())?;
            assert_eq!(read_dump(&path), Ok(header()));
            assert!(!temp_path(&path).exists());
            let bytes = std::fs::read(&path)?;
            std::fs::write(&path, &bytes[..bytes.len() * 2 / 3])?;
            assert!(read_dump(&path).is_err(), "{c:?} truncation undetected");
        }
        Ok(())
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
