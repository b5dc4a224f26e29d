//! The Virtual Machine Archive format of QEMU backups (pve-qemu `vma_spec.txt`, `vma.h`,
//! `vma-writer.c`), written and read back by the simulator.
//!
//! ```text
//! header (12288 bytes + blob buffer, a multiple of 512), big endian:
//!   0 magic "VMA\0" | 4 version 1 | 8 uuid | 24 ctime | 32 md5 (of the header, this field zero)
//!   48 blob_buffer_offset (12288) | 52 blob_buffer_size | 56 header_size
//!   2044 config_names[256] | 3068 config_data[256]   (offsets into the blob buffer, 0 = unused)
//!   4096 dev_info[256] (32 bytes each: devname_ptr u32, reserved u32, size u64, reserved 16)
//!   12288 blob buffer: blobs of <u16 little-endian length><bytes>, from offset 1
//! then extents, each a 512-byte header and the data of up to 59 clusters of 64 KiB:
//!   0 magic "VMAE" | 4 reserved | 6 block_count (4 KiB blocks stored) | 8 uuid | 24 md5
//!   40 blockinfo[59]: mask u16 (non-zero 4 KiB blocks) | reserved u8 | dev_id u8 | cluster u32
//!   followed by the non-zero 4 KiB blocks of each cluster, in order
//! ```
//!
//! Strings (config and device names) are stored with their NUL, config data without. Only
//! non-zero blocks are stored; every cluster of a device appears exactly once.

use std::io::{self, Read, Write};

use md5::{Digest, Md5};

use crate::pvesim::state::PseudoDisk;
use crate::pvesim::state::disk::BLOCK_SIZE;

const MAGIC: &[u8; 4] = b"VMA\0";
const EXTENT_MAGIC: &[u8; 4] = b"VMAE";
const VERSION: u32 = 1;
/// Fixed part of the header (`sizeof(VmaHeader)`).
const HEADER_FIXED: usize = 12288;
const CLUSTER_SIZE: usize = 65536;
const BLOCKS_PER_CLUSTER: usize = CLUSTER_SIZE / BLOCK_SIZE;
const EXTENT_HEADER_SIZE: usize = 512;
const CLUSTERS_PER_EXTENT: usize = 59;
const MAX_CONFIGS: usize = 256;
const CONFIG_NAMES_AT: usize = 2044;
const CONFIG_DATA_AT: usize = 3068;
const DEV_INFO_AT: usize = 4096;
/// Upper bound of a blob buffer we accept when reading (header_size is a u32).
const MAX_BLOB_BUFFER: usize = 16 << 20;

/// What a VMA archive holds besides the disk data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VmaContents {
    /// Backup time (header `ctime`).
    pub(crate) ctime: i64,
    /// `(name, data)` of each config blob (`qemu-server.conf`, ...).
    pub(crate) configs: Vec<(String, Vec<u8>)>,
    /// `(name, size)` of each device (`drive-scsi0`, ...), by dev_id order.
    pub(crate) devices: Vec<(String, u64)>,
}

impl VmaContents {
    /// The config blob called `name`.
    pub(crate) fn config(&self, name: &str) -> Option<&[u8]> {
        self.configs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn be64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// The blob buffer being built (`allocate_header_blob`: offset 0 means "none").
struct Blobs(Vec<u8>);

impl Blobs {
    fn add(&mut self, data: &[u8]) -> io::Result<u32> {
        let len = u16::try_from(data.len()).map_err(|_| invalid("VMA blob larger than 64 KiB"))?;
        let at = u32::try_from(self.0.len()).map_err(|_| invalid("VMA blob buffer too large"))?;
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(data);
        Ok(at)
    }

    fn add_string(&mut self, s: &str) -> io::Result<u32> {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.add(&data)
    }
}

fn header(
    uuid: [u8; 16],
    ctime: i64,
    configs: &[(&str, &[u8])],
    devices: &[(&str, u64)],
) -> io::Result<Vec<u8>> {
    if configs.len() > MAX_CONFIGS || devices.len() >= 256 {
        return Err(invalid("too many VMA configs or devices"));
    }
    let mut blobs = Blobs(vec![0]);
    let mut fixed = vec![0u8; HEADER_FIXED];
    for (i, (name, data)) in configs.iter().enumerate() {
        put32(&mut fixed, CONFIG_NAMES_AT + 4 * i, blobs.add_string(name)?);
        put32(&mut fixed, CONFIG_DATA_AT + 4 * i, blobs.add(data)?);
    }
    for (i, (name, size)) in devices.iter().enumerate() {
        let at = DEV_INFO_AT + 32 * (i + 1); // dev_id 0 is unused
        put32(&mut fixed, at, blobs.add_string(name)?);
        put64(&mut fixed, at + 8, *size);
    }
    let blob_size = blobs.0.len().div_ceil(512) * 512;
    blobs.0.resize(blob_size, 0);
    let header_size = u32::try_from(HEADER_FIXED + blob_size).map_err(|_| invalid("VMA header too large"))?;
    fixed[0..4].copy_from_slice(MAGIC);
    put32(&mut fixed, 4, VERSION);
    fixed[8..24].copy_from_slice(&uuid);
    put64(&mut fixed, 24, ctime.max(0) as u64);
    put32(&mut fixed, 48, HEADER_FIXED as u32);
    put32(&mut fixed, 52, blob_size as u32);
    put32(&mut fixed, 56, header_size);
    fixed.extend_from_slice(&blobs.0);
    let md5 = Md5::digest(&fixed);
    fixed[32..48].copy_from_slice(&md5);
    Ok(fixed)
}

/// Writes one extent: header and the non-zero blocks of `clusters` (`(cluster number, data)`).
fn write_extent(
    out: &mut dyn Write,
    uuid: &[u8; 16],
    dev_id: u8,
    clusters: &[(u32, Vec<u8>)],
) -> io::Result<()> {
    let mut head = [0u8; EXTENT_HEADER_SIZE];
    let mut data = Vec::new();
    let mut blocks = 0u16;
    for (i, (num, cluster)) in clusters.iter().enumerate() {
        let mut mask = 0u16;
        for (b, block) in cluster.chunks(BLOCK_SIZE).enumerate() {
            if block.iter().any(|x| *x != 0) {
                mask |= 1 << b;
                data.extend_from_slice(block);
                blocks += 1;
            }
        }
        let info = (u64::from(mask) << 48) | (u64::from(dev_id) << 32) | u64::from(*num);
        put64(&mut head, 40 + 8 * i, info);
    }
    head[0..4].copy_from_slice(EXTENT_MAGIC);
    head[6..8].copy_from_slice(&blocks.to_be_bytes());
    head[8..24].copy_from_slice(uuid);
    let md5 = Md5::digest(head);
    head[24..40].copy_from_slice(&md5);
    out.write_all(&head)?;
    out.write_all(&data)
}

/// Writes a VMA archive with `configs` and one device `device` holding `disk` as of `day`.
pub(crate) fn write(
    out: &mut dyn Write,
    uuid: [u8; 16],
    ctime: i64,
    configs: &[(&str, &[u8])],
    device: &str,
    disk: &PseudoDisk,
    day: i64,
) -> io::Result<()> {
    out.write_all(&header(uuid, ctime, configs, &[(device, disk.size)])?)?;
    let total_blocks = disk.size.div_ceil(BLOCK_SIZE as u64);
    let clusters = total_blocks.div_ceil(BLOCKS_PER_CLUSTER as u64);
    let mut batch: Vec<(u32, Vec<u8>)> = Vec::with_capacity(CLUSTERS_PER_EXTENT);
    let mut block = [0u8; BLOCK_SIZE];
    for c in 0..clusters {
        let mut cluster = vec![0u8; CLUSTER_SIZE];
        for (b, chunk) in cluster.chunks_mut(BLOCK_SIZE).enumerate() {
            let n = c * BLOCKS_PER_CLUSTER as u64 + b as u64;
            if n < total_blocks {
                disk.read_block(n, day, &mut block);
                chunk.copy_from_slice(&block);
            }
        }
        let num = u32::try_from(c).map_err(|_| invalid("disk too large for VMA"))?;
        batch.push((num, cluster));
        if batch.len() == CLUSTERS_PER_EXTENT {
            write_extent(out, &uuid, 1, &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        write_extent(out, &uuid, 1, &batch)?;
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end of input before the first byte.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(invalid("unexpected end of VMA archive (truncated file)")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn blob(buffer: &[u8], at: u32) -> io::Result<&[u8]> {
    let at = at as usize;
    let len = buffer
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| invalid("VMA blob offset out of range"))?;
    buffer
        .get(at + 2..at + 2 + len)
        .ok_or_else(|| invalid("VMA blob out of range"))
}

fn string(buffer: &[u8], at: u32) -> io::Result<String> {
    let data = blob(buffer, at)?;
    let data = data
        .strip_suffix(&[0])
        .ok_or_else(|| invalid("VMA string without NUL"))?;
    String::from_utf8(data.to_vec()).map_err(|_| invalid("VMA string is not UTF-8"))
}

/// Reads and checks the header; returns it and the archive uuid.
pub(crate) fn read_header(input: &mut dyn Read) -> io::Result<(VmaContents, [u8; 16])> {
    let mut head = vec![0u8; HEADER_FIXED];
    if !read_full(input, &mut head)? {
        return Err(invalid("empty VMA archive"));
    }
    if &head[0..4] != MAGIC {
        return Err(invalid("not a VMA archive (bad magic)"));
    }
    if be32(&head, 4) != VERSION {
        return Err(invalid(format!("unsupported VMA version {}", be32(&head, 4))));
    }
    let (blob_at, blob_size, header_size) = (
        be32(&head, 48) as usize,
        be32(&head, 52) as usize,
        be32(&head, 56) as usize,
    );
    if blob_at != HEADER_FIXED || blob_size > MAX_BLOB_BUFFER || header_size != HEADER_FIXED + blob_size {
        return Err(invalid("corrupt VMA header (sizes)"));
    }
    head.resize(header_size, 0);
    if !read_full(input, &mut head[HEADER_FIXED..])? && blob_size > 0 {
        return Err(invalid("unexpected end of VMA archive (truncated file)"));
    }
    let mut expected = [0u8; 16];
    expected.copy_from_slice(&head[32..48]);
    head[32..48].fill(0);
    if Md5::digest(&head).as_slice() != expected {
        return Err(invalid("VMA header checksum mismatch (corrupt file)"));
    }
    let buffer = &head[HEADER_FIXED..];
    let mut configs = Vec::new();
    for i in 0..MAX_CONFIGS {
        let (name, data) = (
            be32(&head, CONFIG_NAMES_AT + 4 * i),
            be32(&head, CONFIG_DATA_AT + 4 * i),
        );
        if name != 0 {
            configs.push((string(buffer, name)?, blob(buffer, data)?.to_vec()));
        }
    }
    let mut devices = Vec::new();
    for id in 1..256 {
        let at = DEV_INFO_AT + 32 * id;
        let name = be32(&head, at);
        if name != 0 {
            devices.push((string(buffer, name)?, be64(&head, at + 8)));
        }
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&head[8..24]);
    let ctime = i64::try_from(be64(&head, 24)).unwrap_or(0);
    Ok((
        VmaContents {
            ctime,
            configs,
            devices,
        },
        uuid,
    ))
}

/// Reads the extents after the header and streams the single device's bytes (zero blocks
/// filled in) to `out`, checking extent magic, uuid and checksum, and that each cluster comes
/// exactly once, in order, and none is missing.
pub(crate) fn read_disk(
    input: &mut dyn Read,
    uuid: &[u8; 16],
    size: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let clusters = size.div_ceil(CLUSTER_SIZE as u64);
    let mut next = 0u64;
    let mut head = [0u8; EXTENT_HEADER_SIZE];
    let mut block = vec![0u8; BLOCK_SIZE];
    while read_full(input, &mut head)? {
        if &head[0..4] != EXTENT_MAGIC || &head[8..24] != uuid {
            return Err(invalid("corrupt VMA extent header"));
        }
        let mut expected = [0u8; 16];
        expected.copy_from_slice(&head[24..40]);
        head[24..40].fill(0);
        if Md5::digest(head).as_slice() != expected {
            return Err(invalid("VMA extent checksum mismatch (corrupt file)"));
        }
        for i in 0..CLUSTERS_PER_EXTENT {
            let info = be64(&head, 40 + 8 * i);
            if info == 0 {
                continue;
            }
            let (mask, dev_id, num) = ((info >> 48) as u16, (info >> 32) as u8, info & 0xFFFF_FFFF);
            if dev_id != 1 || num != next || num >= clusters {
                return Err(invalid(format!(
                    "unexpected VMA cluster {num} of device {dev_id}"
                )));
            }
            for b in 0..BLOCKS_PER_CLUSTER as u64 {
                let offset = num * CLUSTER_SIZE as u64 + b * BLOCK_SIZE as u64;
                if mask & (1 << b) != 0 {
                    if !read_full(input, &mut block)? {
                        return Err(invalid("unexpected end of VMA archive (truncated file)"));
                    }
                } else {
                    block.fill(0);
                }
                if offset < size {
                    let len = (size - offset).min(BLOCK_SIZE as u64) as usize;
                    out.write_all(&block[..len])?;
                }
            }
            next += 1;
        }
    }
    if next != clusters {
        return Err(invalid(format!(
            "VMA archive ends after {next} of {clusters} clusters (truncated file)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vma_round_trips_configs_devices_and_sparse_data() -> io::Result<()> {
        // 70 clusters: two extents, the second partial; a quarter of the blocks are zero.
        let disk = PseudoDisk::new(9, 70 * CLUSTER_SIZE as u64 + 3 * BLOCK_SIZE as u64, 100);
        let mut out = Vec::new();
        let configs: [(&str, &[u8]); 1] = [("qemu-server.conf", b"name: web\n")];
        write(
            &mut out,
            [7; 16],
            1_700_000_000,
            &configs,
            "drive-scsi0",
            &disk,
            100,
        )?;
        assert_eq!(&out[0..4], b"VMA\0");
        assert!((out.len() as u64) < disk.size, "zero blocks are not stored");
        let mut input = out.as_slice();
        let (contents, uuid) = read_header(&mut input)?;
        assert_eq!(uuid, [7; 16]);
        assert_eq!(contents.ctime, 1_700_000_000);
        assert_eq!(contents.config("qemu-server.conf"), Some(&b"name: web\n"[..]));
        assert_eq!(contents.devices, vec![("drive-scsi0".to_string(), disk.size)]);
        let mut data = Vec::new();
        read_disk(&mut input, &uuid, disk.size, &mut data)?;
        assert_eq!(data, disk.bytes(100));
        Ok(())
    }

    #[test]
    fn vma_corruption_and_truncation_are_detected() -> io::Result<()> {
        let disk = PseudoDisk::new(3, 4 * CLUSTER_SIZE as u64, 10);
        let mut out = Vec::new();
        write(
            &mut out,
            [1; 16],
            5,
            &[("qemu-server.conf", b"x")],
            "drive-scsi0",
            &disk,
            10,
        )?;
        let restore = |bytes: &[u8]| -> io::Result<Vec<u8>> {
            let mut input = bytes;
            let (_, uuid) = read_header(&mut input)?;
            let mut data = Vec::new();
            read_disk(&mut input, &uuid, disk.size, &mut data)?;
            Ok(data)
        };
        assert!(restore(&out).is_ok());
        assert!(restore(&out[..out.len() - 100]).is_err(), "truncated data");
        assert!(restore(&out[..HEADER_FIXED + 512]).is_err(), "no extents");
        let mut flipped = out.clone();
        flipped[100] ^= 1; // inside the header
        assert!(restore(&flipped).is_err());
        let mut flipped = out.clone();
        flipped[HEADER_FIXED + 512 + 6] ^= 1; // block_count of the first extent
        assert!(restore(&flipped).is_err());
        Ok(())
    }
}
