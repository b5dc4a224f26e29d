//! Container backups as PVE writes them: a GNU tar of the root filesystem, entries named `./...`,
//! led by `./etc/vzdump/pct.conf` (pve-manager `PVE::VZDump::LXC::archive` puts the config
//! first, then `.`). The simulated root filesystem is small and derived from the pseudo-disk:
//!
//! ```text
//! ./etc/vzdump/pct.conf       the container config
//! ./etc/vzdump/pvesim.json    the simulator's metadata (disk lineage, SHA-256 of the data)
//! ./  ./etc/  ./etc/hostname  ./etc/os-release
//! ./srv/  ./srv/data/  ./srv/data/NN/  ./srv/data/NN/XXXX.bin
//! ```
//!
//! where `XXXX.bin` (hex file index) holds the pseudo-disk's bytes `[i * 64 KiB, (i + 1) * 64 KiB)`
//! and `NN` is `i / 64`: the disk drifts a few blocks a day, so most files stay the same from one
//! backup to the next, as on a real container.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use crate::pvesim::state::PseudoDisk;
use crate::pvesim::state::disk::BLOCK_SIZE;

/// Bytes of the disk per data file.
const FILE_SIZE: u64 = 64 * 1024;
/// Data files per directory.
const FILES_PER_DIR: u64 = 64;
/// Where the config lives in the archive.
pub(crate) const CONFIG_PATH: &str = "./etc/vzdump/pct.conf";
/// Where the simulator's metadata lives in the archive.
pub(crate) const META_PATH: &str = "./etc/vzdump/pvesim.json";
const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A GNU header named exactly `name` (the tar crate would drop the leading `./`).
fn header(name: &str, kind: EntryType, size: u64, mtime: i64) -> io::Result<Header> {
    let mut h = Header::new_gnu();
    let raw = &mut h.as_gnu_mut().ok_or_else(|| invalid("not a GNU header"))?.name;
    if name.len() >= raw.len() {
        return Err(invalid(format!("tar entry name too long: {name}")));
    }
    raw[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(mtime.max(0) as u64);
    h.set_cksum();
    Ok(h)
}

fn data_file_name(index: u64) -> String {
    format!("./srv/data/{:02x}/{index:04x}.bin", index / FILES_PER_DIR)
}

/// Writes the archive of a container with `config`, `hostname` and `disk` as of `day`.
pub(crate) fn write(
    out: &mut dyn Write,
    config: &str,
    meta_json: &str,
    hostname: &str,
    disk: &PseudoDisk,
    day: i64,
    mtime: i64,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let file = |tar: &mut tar::Builder<&mut dyn Write>, name: &str, data: &[u8]| {
        tar.append(&header(name, EntryType::Regular, data.len() as u64, mtime)?, data)
    };
    file(&mut tar, CONFIG_PATH, config.as_bytes())?;
    file(&mut tar, META_PATH, meta_json.as_bytes())?;
    let dir = |tar: &mut tar::Builder<&mut dyn Write>, name: &str| {
        tar.append(&header(name, EntryType::Directory, 0, mtime)?, io::empty())
    };
    for d in ["./", "./etc/"] {
        dir(&mut tar, d)?;
    }
    file(&mut tar, "./etc/hostname", format!("{hostname}\n").as_bytes())?;
    file(&mut tar, "./etc/os-release", OS_RELEASE.as_bytes())?;
    dir(&mut tar, "./srv/")?;
    dir(&mut tar, "./srv/data/")?;
    let blocks_per_file = FILE_SIZE / BLOCK_SIZE as u64;
    let total_blocks = disk.size.div_ceil(BLOCK_SIZE as u64);
    let mut block = [0u8; BLOCK_SIZE];
    for index in 0..disk.size.div_ceil(FILE_SIZE) {
        if index % FILES_PER_DIR == 0 {
            dir(&mut tar, &format!("./srv/data/{:02x}/", index / FILES_PER_DIR))?;
        }
        let first = index * blocks_per_file;
        let last = (first + blocks_per_file).min(total_blocks);
        let mut data = Vec::with_capacity(FILE_SIZE as usize);
        for b in first..last {
            disk.read_block(b, day, &mut block);
            data.extend_from_slice(&block);
        }
        file(&mut tar, &data_file_name(index), &data)?;
    }
    tar.into_inner()?.flush()
}

/// What a container archive holds.
pub(crate) struct TarContents {
    /// `./etc/vzdump/pct.conf`.
    pub(crate) config: String,
    /// `./etc/vzdump/pvesim.json`.
    pub(crate) meta_json: String,
}

fn read_text(entry: &mut impl Read, what: &str) -> io::Result<String> {
    let mut text = String::new();
    entry
        .take(4 << 20)
        .read_to_string(&mut text)
        .map_err(|e| invalid(format!("cannot read {what}: {e}")))?;
    Ok(text)
}

/// Reads the archive. With `data`, the data files are streamed to it in order (each must come
/// exactly once, in order); without, reading stops once config and metadata are found.
pub(crate) fn read(input: &mut dyn Read, mut data: Option<&mut dyn Write>) -> io::Result<TarContents> {
    let mut archive = tar::Archive::new(input);
    let (mut config, mut meta_json) = (None, None);
    let mut next = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match name.as_str() {
            CONFIG_PATH => config = Some(read_text(&mut entry, "pct.conf")?),
            META_PATH => meta_json = Some(read_text(&mut entry, "pvesim.json")?),
            _ if name.starts_with("./srv/data/") && entry.header().entry_type() == EntryType::Regular => {
                let Some(out) = data.as_deref_mut() else {
                    break;
                };
                if name != data_file_name(next) {
                    return Err(invalid(format!("unexpected data file {name} in the archive")));
                }
                let copied = io::copy(&mut entry, out)?;
                if copied != entry.header().size()? {
                    return Err(invalid("unexpected end of archive (truncated file)"));
                }
                next += 1;
            }
            _ => {}
        }
        if data.is_none() && config.is_some() && meta_json.is_some() {
            break;
        }
    }
    match (config, meta_json) {
        (Some(config), Some(meta_json)) => Ok(TarContents { config, meta_json }),
        _ => Err(invalid(
            "archive has no ./etc/vzdump/pct.conf (not a container backup, or truncated)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_archive_is_a_tar_led_by_pct_conf_and_round_trips_the_disk() -> io::Result<()> {
        let disk = PseudoDisk::new(4, 130 * FILE_SIZE + 2 * BLOCK_SIZE as u64, 50);
        let mut out = Vec::new();
        write(
            &mut out,
            "hostname: pihole\n",
            "{}",
            "pihole",
            &disk,
            50,
            1_700_000_000,
        )?;
        let mut names = Vec::new();
        for entry in tar::Archive::new(out.as_slice()).entries()? {
            names.push(String::from_utf8_lossy(&entry?.path_bytes()).into_owned());
        }
        assert_eq!(&names[..4], [CONFIG_PATH, META_PATH, "./", "./etc/"]);
        assert!(names.contains(&"./srv/data/02/0082.bin".to_string()), "{names:?}");
        let mut data = Vec::new();
        let contents = read(&mut out.as_slice(), Some(&mut data))?;
        assert_eq!(contents.config, "hostname: pihole\n");
        assert_eq!(data, disk.bytes(50));
        let header_only = read(&mut out.as_slice(), None)?;
        assert_eq!(header_only.meta_json, "{}");
        Ok(())
    }
}
