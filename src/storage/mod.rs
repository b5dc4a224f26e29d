//! The content-addressed dedup chunk store: content-defined chunking, blake3 ids, zstd, SQLite index.
//!
//! Never imports `kube` or `crate::controllers`.

pub mod cli;
