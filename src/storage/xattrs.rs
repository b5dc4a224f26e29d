//! Extended attributes in directory snapshots, POSIX ACLs among them (they are the attributes
//! `system.posix_acl_access` and `system.posix_acl_default`). A backup reads them without
//! following symlinks and records them as pax `SCHILY.xattr.NAME=VALUE` records (raw value
//! bytes), as GNU tar and libarchive write them; a restore sets them again.
//!
//! A value with a newline byte (binary ACLs and capabilities have them) is recorded as
//! libarchive's `LIBARCHIVE.xattr.NAME=BASE64` instead: the `tar` crate, which reads the stream
//! on restore, splits pax data at newlines rather than by record length, so a raw newline would
//! cut the record and let the bytes after it pass for records of their own (a `path` among
//! them: any user may set `user.*` attributes on a file a root backup saves). Whatever cannot be
//! read or set (a file system without extended attributes, a user who may not set `user.*` on
//! an entry) is a warning, once per kind and run, never an error.

use std::collections::HashSet;
use std::path::Path;

/// An entry's extended attributes: `(name, value)`, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The pax record key prefix GNU tar and libarchive use for an extended attribute.
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
/// libarchive's prefix for an attribute with a %-encoded name and a base64 value.
const PAX_XATTR_B64: &[u8] = b"LIBARCHIVE.xattr.";

/// Appends the pax records of `xattrs`: raw values as `SCHILY.xattr.NAME`, values with a
/// newline (or a name with one, or with `%`) as `LIBARCHIVE.xattr.NAME` in base64.
pub(crate) fn pax_records(out: &mut Vec<u8>, xattrs: &Xattrs) {
    use base64::Engine;
    let mut key = Vec::new();
    for (name, value) in xattrs {
        key.clear();
        if value.contains(&b'\n') || name.iter().any(|&c| c == b'\n' || c == b'%') {
            key.extend_from_slice(PAX_XATTR_B64);
            for &c in name {
                if c.is_ascii_graphic() && c != b'%' && c != b'=' {
                    key.push(c);
                } else {
                    key.extend_from_slice(format!("%{c:02X}").as_bytes());
                }
            }
            let v = base64::engine::general_purpose::STANDARD.encode(value);
            pax_record(out, &key, v.as_bytes());
        } else {
            key.extend_from_slice(PAX_XATTR);
            key.extend_from_slice(name);
            pax_record(out, &key, value);
        }
    }
}

/// Undoes the %-encoding of a `LIBARCHIVE.xattr.` name.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Appends one pax extended header record, `LEN KEY=VALUE\n`, where LEN counts the whole record
/// including its own digits.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Warns the first time a kind of problem is seen in one backup or restore.
#[derive(Default)]
struct Once(HashSet<String>);

impl Once {
    fn first(&mut self, kind: String) -> bool {
        self.0.insert(kind)
    }
}

/// The namespace of an attribute name, for warnings: `user`, `trusted`, `security`, `system`.
fn namespace(name: &[u8]) -> String {
    let ns = name.split(|&c| c == b'.').next().unwrap_or_default();
    String::from_utf8_lossy(ns).into_owned()
}

fn is_unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP
}

/// Reads extended attributes during a backup; keeps its buffers between entries, so an entry
/// without attributes costs one `llistxattr` call.
pub(crate) struct XattrReader {
    list: Vec<u8>,
    value: Vec<u8>,
    warned: Once,
}

impl Default for XattrReader {
    fn default() -> Self {
        XattrReader {
            list: vec![0; 4096],
            value: vec![0; 4096],
            warned: Once::default(),
        }
    }
}

impl XattrReader {
    /// The attributes of `path` itself (a symlink's own, not its target's), sorted by name.
    /// Names with `=` (which a pax record cannot hold) are left out with a warning, as is
    /// everything on a file system without extended attributes.
    pub(crate) fn read(&mut self, path: &Path) -> Xattrs {
        let n = loop {
            match rustix::fs::llistxattr(path, &mut self.list[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => match rustix::fs::llistxattr_query(path) {
                    Ok(need) => self.list.resize(need.max(self.list.len() * 2), 0),
                    Err(e) => return self.failed(path, "listing", None, e),
                },
                Err(e) => return self.failed(path, "listing", None, e),
            }
        };
        if n == 0 {
            return Vec::new();
        }
        let names: Vec<Vec<u8>> = self.list[..n]
            .split(|&c| c == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if name.contains(&b'=') {
                if self.warned.first("name with =".into()) {
                    tracing::warn!(path = %path.display(), name = %String::from_utf8_lossy(&name), "extended attribute name with '=' cannot be recorded; left out");
                }
                continue;
            }
            let got = loop {
                match rustix::fs::lgetxattr(path, &name[..], &mut self.value[..]) {
                    Ok(len) => break Ok(len),
                    Err(rustix::io::Errno::RANGE) => match rustix::fs::lgetxattr_query(path, &name[..]) {
                        Ok(need) => self.value.resize(need.max(self.value.len() * 2), 0),
                        Err(e) => break Err(e),
                    },
                    Err(e) => break Err(e),
                }
            };
            match got {
                Ok(len) => out.push((name, self.value[..len].to_vec())),
                // Removed since it was listed.
                Err(rustix::io::Errno::NODATA) => {}
                Err(e) => {
                    self.failed(path, "reading", Some(&name), e);
                }
            }
        }
        out.sort();
        out
    }

    fn failed(&mut self, path: &Path, op: &str, name: Option<&[u8]>, e: rustix::io::Errno) -> Xattrs {
        let ns = name.map(namespace).unwrap_or_default();
        let kind = if is_unsupported(e) {
            "unsupported".to_string()
        } else {
            format!("{op} {ns} {e:?}")
        };
        if self.warned.first(kind) {
            let error = std::io::Error::from(e);
            if is_unsupported(e) {
                tracing::warn!(path = %path.display(), "file system does not support extended attributes; none recorded there (warned once)");
            } else {
                let name = name.map(String::from_utf8_lossy).unwrap_or_default();
                tracing::warn!(path = %path.display(), name = %name, error = %error, "cannot read extended attributes; not recorded (warned once per kind)");
            }
        }
        Vec::new()
    }
}

/// The extended attributes recorded for a tar entry (its pax `SCHILY.xattr.*` records), sorted
/// by name.
pub(crate) fn from_entry<R: std::io::Read>(e: &mut tar::Entry<R>) -> Xattrs {
    let Ok(Some(exts)) = e.pax_extensions() else {
        return Vec::new();
    };
    use base64::Engine;
    let mut out: Xattrs = exts
        .flatten()
        .filter_map(|x| {
            let (name, value) = if let Some(name) = x.key_bytes().strip_prefix(PAX_XATTR) {
                (name.to_vec(), x.value_bytes().to_vec())
            } else {
                let name = percent_decode(x.key_bytes().strip_prefix(PAX_XATTR_B64)?)?;
                let v = x.value_bytes();
                let v = v
                    .strip_suffix(b"==")
                    .or_else(|| v.strip_suffix(b"="))
                    .unwrap_or(v);
                let value = base64::engine::general_purpose::STANDARD_NO_PAD.decode(v).ok()?;
                (name, value)
            };
            (!name.is_empty()).then_some((name, value))
        })
        .collect();
    out.sort();
    out
}

/// Sets extended attributes during a restore: `trusted.*` and `security.*` only as root (a
/// user who is not root is told once that they were skipped); any failure is a warning once per
/// namespace and error, and the restore goes on.
pub(crate) struct XattrWriter {
    root: bool,
    warned: Once,
}

impl XattrWriter {
    pub(crate) fn new(root: bool) -> Self {
        XattrWriter {
            root,
            warned: Once::default(),
        }
    }

    /// Sets `xattrs` on `path` itself (not through a symlink).
    pub(crate) fn set_path(&mut self, path: &Path, xattrs: &Xattrs) {
        self.set(path, xattrs, |name, value| {
            rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        });
    }

    /// Sets `xattrs` on the open file `f`, which is `path`.
    pub(crate) fn set_file(&mut self, f: &std::fs::File, path: &Path, xattrs: &Xattrs) {
        self.set(path, xattrs, |name, value| {
            rustix::fs::fsetxattr(f, name, value, rustix::fs::XattrFlags::empty())
        });
    }

    fn set(&mut self, path: &Path, xattrs: &Xattrs, set: impl Fn(&[u8], &[u8]) -> rustix::io::Result<()>) {
        for (name, value) in xattrs {
            let privileged = name.starts_with(b"trusted.") || name.starts_with(b"security.");
            if privileged && !self.root {
                if self.warned.first("privileged".into()) {
                    tracing::warn!(path = %path.display(), name = %String::from_utf8_lossy(name), "trusted.* and security.* extended attributes not restored: only root may set them (warned once)");
                }
                continue;
            }
            let Err(e) = set(name, value) else {
                continue;
            };
            let ns = namespace(name);
            let kind = if is_unsupported(e) {
                format!("unsupported {ns}")
            } else {
                format!("{ns} {e:?}")
            };
            if self.warned.first(kind) {
                let error = std::io::Error::from(e);
                tracing::warn!(path = %path.display(), name = %String::from_utf8_lossy(name), error = %error, "cannot set extended attribute; not restored (warned once per namespace and error)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_pax_record_length_counts_its_own_digits() {
        let mut v = Vec::new();
        pax_record(&mut v, b"mtime", b"1700000000.123456789");
        assert_eq!(v, b"30 mtime=1700000000.123456789\n");
        // 9 bytes of body plus one digit would be 10: two digits, 11.
        let mut v = Vec::new();
        pax_record(&mut v, b"k", b"vvvvv");
        assert_eq!(v, b"11 k=vvvvv\n");
        let mut v = Vec::new();
        pax_record(&mut v, b"SCHILY.xattr.user.bin", &[0, b'\n', 0xff]);
        assert_eq!(v, b"29 SCHILY.xattr.user.bin=\0\n\xff\n");
    }

    #[test]
    fn xattr_values_with_newlines_go_base64_and_come_back() {
        let x: Xattrs = vec![
            (
                b"system.posix_acl_access".to_vec(),
                vec![2, 0, 0, 0, 1, 0, 6, 0, 10, 0],
            ),
            (b"user.plain".to_vec(), b"text".to_vec()),
        ];
        let mut records = Vec::new();
        pax_records(&mut records, &x);
        assert!(
            !records[..records.len() - 1]
                .split(|&c| c == b'\n')
                .any(|l| l.is_empty()),
            "one line per record"
        );
        assert_eq!(records.iter().filter(|&&c| c == b'\n').count(), 2);
        let text = String::from_utf8(records.clone()).unwrap();
        assert!(
            text.contains(" LIBARCHIVE.xattr.system.posix_acl_access=AgAAAAEABgAKAA==\n"),
            "{text}"
        );
        assert!(text.contains(" SCHILY.xattr.user.plain=text\n"), "{text}");

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(records.len() as u64);
        b.append_data(&mut h, "././@PaxHeader", &records[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        b.append_data(&mut h, "f", std::io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap(), Path::new("f"));
        assert_eq!(from_entry(&mut e), x);
        assert_eq!(percent_decode(b"user.a%3Db%25").unwrap(), b"user.a=b%");
    }

    #[test]
    fn xattr_namespace_is_the_first_component() {
        assert_eq!(namespace(b"user.comment"), "user");
        assert_eq!(namespace(b"system.posix_acl_access"), "system");
    }
}
