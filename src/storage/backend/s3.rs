//! S3-compatible object storage through `object_store` (MinIO, Ceph RGW, Garage, AWS). The bucket
//! is the source of truth; the SQLite index is a local cache that `reindex` rebuilds from it.
//!
//! Configuration comes from the usual variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` (for non-AWS servers) and `AWS_ALLOW_HTTP=true` for plain HTTP.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::{Backend, ObjectInfo};
use crate::storage::error::{Error, Param, Result};

/// Objects larger than this are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Size of each ranged read of a streaming reader.
const READ_WINDOW: u64 = 8 << 20;

/// A repository in an S3 bucket (under an optional prefix).
pub struct S3Backend {
    location: String,
    store: Arc<AmazonS3>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    cache: PathBuf,
}

fn backend_err<'a>(op: &'static str, key: &'a str) -> impl FnOnce(object_store::Error) -> Error + 'a {
    move |e| Error::Backend {
        op,
        key: key.to_string(),
        cause: Box::new(e),
    }
}

impl S3Backend {
    /// Connects to `s3://bucket[/prefix]` (no request is made here).
    pub fn open(repo: &str, cache_dir: Option<&Path>) -> Result<Self> {
        // TLS endpoints need a process-wide rustls provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rest = &repo["s3://".len()..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidArgument {
                param: Param::Repository,
                reason: format!("{repo:?} has no bucket: use s3://BUCKET[/PREFIX]"),
            });
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| Error::InvalidArgument {
            param: Param::Repository,
            reason: format!("cannot configure S3 for {repo}: {e} (set AWS_REGION, AWS_ACCESS_KEY_ID, ...)"),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting S3 client runtime", repo, e))?;
        let cache = match cache_dir {
            Some(d) => d.to_path_buf(),
            None => default_cache_root().join(hex::encode(&blake3::hash(repo.as_bytes()).as_bytes()[..8])),
        };
        let prefix = prefix.trim_matches('/').to_string();
        Ok(S3Backend {
            location: repo.to_string(),
            store: Arc::new(store),
            prefix,
            rt,
            cache,
        })
    }

    fn obj(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }
}

fn get_range(
    rt: &tokio::runtime::Handle,
    store: &AmazonS3,
    path: &ObjPath,
    key: &str,
    r: Range<u64>,
) -> Result<Vec<u8>> {
    let want = r.end - r.start;
    let bytes = rt
        .block_on(store.get_range(path, r.clone()))
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Missing {
                what: key.to_string(),
            },
            e => Error::Backend {
                op: "reading",
                key: key.to_string(),
                cause: Box::new(e),
            },
        })?;
    if (bytes.len() as u64) < want {
        return Err(Error::corrupt(key, format!("object ends before byte {}", r.end)));
    }
    Ok(bytes.to_vec())
}

fn default_cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("homelab-autopilot/store");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/homelab-autopilot/store"),
        None => std::env::temp_dir().join("homelab-autopilot-store-cache"),
    }
}

impl Backend for S3Backend {
    fn location(&self) -> &str {
        &self.location
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let res = self.rt.block_on(async {
            let r = self.store.get(&self.obj(key)).await?;
            r.bytes().await
        });
        match res {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err("reading", key)(e)),
        }
    }

    fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        get_range(
            self.rt.handle(),
            &self.store,
            &self.obj(key),
            key,
            start..start + len as u64,
        )
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.rt.block_on(self.store.head(&self.obj(key))) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend_err("reading metadata of", key)(e)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let payload = PutPayload::from(data.to_vec());
        self.rt
            .block_on(self.store.put(&self.obj(key), payload))
            .map_err(backend_err("writing", key))?;
        Ok(())
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let payload = PutPayload::from(data.to_vec());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .rt
            .block_on(self.store.put_opts(&self.obj(key), payload, opts))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(backend_err("creating", key)(e)),
        }
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let io = |e| Error::io("reading staging file", path.display(), e);
        let len = std::fs::metadata(path).map_err(io)?.len();
        let res = if len <= MULTIPART_THRESHOLD {
            let data = std::fs::read(path).map_err(io)?;
            self.put(key, &data)
        } else {
            let mut f = std::fs::File::open(path).map_err(io)?;
            self.rt.block_on(async {
                let upload = self
                    .store
                    .put_multipart(&self.obj(key))
                    .await
                    .map_err(backend_err("writing", key))?;
                let mut w = WriteMultipart::new(upload);
                let mut buf = vec![0u8; 8 << 20];
                loop {
                    let n = super::read_full(&mut f, &mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(2)
                        .await
                        .map_err(backend_err("writing", key))?;
                    w.write(&buf[..n]);
                }
                w.finish().await.map_err(backend_err("writing", key))?;
                Ok(())
            })
        };
        let _ = std::fs::remove_file(path);
        res
    }

    fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let size = self.size(key)?.ok_or_else(|| Error::Missing {
            what: key.to_string(),
        })?;
        Ok(Box::new(RangeReader {
            rt: self.rt.handle().clone(),
            store: self.store.clone(),
            path: self.obj(key),
            key: key.to_string(),
            pos: 0,
            size,
            buf: Vec::new(),
            at: 0,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = self.obj(prefix.trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&p)).try_collect())
            .map_err(backend_err("listing", prefix))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: m
                    .location
                    .as_ref()
                    .strip_prefix(&strip)
                    .unwrap_or(m.location.as_ref())
                    .to_string(),
                size: m.size,
                modified: m.last_modified.into(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.rt.block_on(self.store.delete(&self.obj(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_err("deleting", key)(e)),
        }
    }

    fn staging_dir(&self) -> PathBuf {
        self.cache.join("tmp")
    }

    fn default_index_dir(&self) -> PathBuf {
        self.cache.clone()
    }
}

/// Reads an object sequentially in `READ_WINDOW` ranged requests, so big snapshot objects stream.
struct RangeReader {
    rt: tokio::runtime::Handle,
    store: Arc<AmazonS3>,
    path: ObjPath,
    key: String,
    pos: u64,
    size: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let end = (self.pos + READ_WINDOW).min(self.size);
            self.buf = get_range(&self.rt, &self.store, &self.path, &self.key, self.pos..end)
                .map_err(std::io::Error::other)?;
            self.pos = end;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
