//! A minimal lzop container (the `.lzo` of `vzdump --compress lzo`).
//!
//! lzop stores a block verbatim when its "compressed" size equals its size, so a writer that
//! never compresses still produces files `lzop -d` accepts. The reader handles exactly those
//! stored blocks (files compressed by a real lzop are rejected with a clear error).

use std::io::{self, Read, Write};

const MAGIC: [u8; 9] = [0x89, 0x4C, 0x5A, 0x4F, 0x00, 0x0D, 0x0A, 0x1A, 0x0A];
const BLOCK: usize = 256 * 1024;
const F_ADLER32_D: u32 = 0x0001;
const F_ADLER32_C: u32 = 0x0002;
const F_H_FILTER: u32 = 0x0800;
const F_CRC32_D: u32 = 0x0100;
const F_CRC32_C: u32 = 0x0200;

/// Adler-32 (lzop's header and block checksum).
pub(crate) fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Writes an lzop file of stored blocks.
pub(crate) struct LzopWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> LzopWriter<W> {
    pub(crate) fn new(mut inner: W, mtime: u32) -> io::Result<Self> {
        let mut header = Vec::new();
        header.extend_from_slice(&0x1030u16.to_be_bytes()); // version
        header.extend_from_slice(&0x2080u16.to_be_bytes()); // LZO library version
        header.extend_from_slice(&0x0940u16.to_be_bytes()); // version needed to extract
        header.push(1); // method M_LZO1X_1
        header.push(5); // level
        header.extend_from_slice(&F_ADLER32_D.to_be_bytes()); // flags
        header.extend_from_slice(&0o100644u32.to_be_bytes()); // mode
        header.extend_from_slice(&mtime.to_be_bytes());
        header.extend_from_slice(&0u32.to_be_bytes()); // mtime high
        header.push(0); // no file name
        inner.write_all(&MAGIC)?;
        inner.write_all(&header)?;
        inner.write_all(&adler32(&header).to_be_bytes())?;
        Ok(Self {
            inner,
            buf: Vec::with_capacity(BLOCK),
        })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len() as u32;
        self.inner.write_all(&len.to_be_bytes())?;
        self.inner.write_all(&len.to_be_bytes())?; // stored: compressed size == size
        self.inner.write_all(&adler32(&self.buf).to_be_bytes())?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the end marker and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.inner.write_all(&0u32.to_be_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for LzopWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.flush_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("lzop: {msg}"))
}

/// Reads an lzop file of stored blocks.
pub(crate) struct LzopReader<R: Read> {
    inner: R,
    flags: u32,
    block: Vec<u8>,
    pos: usize,
    done: bool,
}

fn read_u32<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

impl<R: Read> LzopReader<R> {
    pub(crate) fn new(mut inner: R) -> io::Result<Self> {
        let mut magic = [0u8; 9];
        inner.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("not an lzop file"));
        }
        let mut header = Vec::new();
        let take = |r: &mut R, n: usize, header: &mut Vec<u8>| -> io::Result<Vec<u8>> {
            let mut b = vec![0u8; n];
            r.read_exact(&mut b)?;
            header.extend_from_slice(&b);
            Ok(b)
        };
        let v = take(&mut inner, 2, &mut header)?;
        let version = u16::from_be_bytes([v[0], v[1]]);
        take(&mut inner, 2, &mut header)?; // lib version
        if version >= 0x0940 {
            take(&mut inner, 2, &mut header)?;
        }
        take(&mut inner, 1, &mut header)?; // method
        if version >= 0x0940 {
            take(&mut inner, 1, &mut header)?;
        }
        let f = take(&mut inner, 4, &mut header)?;
        let flags = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        if flags & F_H_FILTER != 0 {
            take(&mut inner, 4, &mut header)?;
        }
        take(&mut inner, 8, &mut header)?; // mode, mtime low
        if version >= 0x0940 {
            take(&mut inner, 4, &mut header)?;
        }
        let name_len = take(&mut inner, 1, &mut header)?[0] as usize;
        take(&mut inner, name_len, &mut header)?;
        let checksum = read_u32(&mut inner)?;
        if checksum != adler32(&header) {
            return Err(invalid("header checksum mismatch"));
        }
        Ok(Self {
            inner,
            flags,
            block: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn next_block(&mut self) -> io::Result<()> {
        let dst = read_u32(&mut self.inner)? as usize;
        if dst == 0 {
            self.done = true;
            return Ok(());
        }
        let src = read_u32(&mut self.inner)? as usize;
        if dst > 64 * 1024 * 1024 || src > dst {
            return Err(invalid("corrupt block header"));
        }
        let mut expected = None;
        if self.flags & F_ADLER32_D != 0 {
            expected = Some(read_u32(&mut self.inner)?);
        }
        if self.flags & F_CRC32_D != 0 {
            read_u32(&mut self.inner)?;
        }
        if src < dst {
            if self.flags & (F_ADLER32_C | F_CRC32_C) != 0 {
                read_u32(&mut self.inner)?;
            }
            return Err(invalid(
                "LZO-compressed blocks are not supported by the simulator",
            ));
        }
        self.block.resize(dst, 0);
        self.inner.read_exact(&mut self.block)?;
        if expected.is_some_and(|sum| sum != adler32(&self.block)) {
            return Err(invalid("block checksum mismatch"));
        }
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for LzopReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if self.done {
                return Ok(0);
            }
            self.next_block()?;
            if self.done {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzop_round_trips_stored_blocks_and_detects_corruption() -> io::Result<()> {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = LzopWriter::new(Vec::new(), 0)?;
        w.write_all(&data)?;
        let file = w.finish()?;
        let mut back = Vec::new();
        LzopReader::new(&file[..])?.read_to_end(&mut back)?;
        assert_eq!(back, data);
        let mut corrupt = file.clone();
        let last = corrupt.len() - 10;
        corrupt[last] ^= 0xFF;
        let mut sink = Vec::new();
        assert!(LzopReader::new(&corrupt[..])?.read_to_end(&mut sink).is_err());
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        Ok(())
    }
}
