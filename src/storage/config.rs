//! The repository config object (`config`): format version, chunking, compression, packing and
//! the key check. Written once by `init`; every open reads it first.

use serde::{Deserialize, Serialize};

use super::error::{Error, Param, Result};

/// The newest repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// FastCDC limits (of the `fastcdc` v2020 implementation).
const MIN_LIMITS: (u32, u32) = (64, 1 << 20);
const AVG_LIMITS: (u32, u32) = (256, 4 << 20);
const MAX_LIMITS: (u32, u32) = (1024, 16 << 20);

/// Content-defined chunking bounds, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk (except the last of a stream).
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 64 KiB average (16 KiB..256 KiB): small enough to dedup scattered 4 KiB block rewrites in
    /// VM images, large enough that per-chunk costs stay small; packs keep the file count low.
    fn default() -> Self {
        ChunkerParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds against each other and the chunker's limits.
    pub fn validate(&self) -> Result<()> {
        let check = |param: Param, v: u32, (lo, hi): (u32, u32)| {
            if v < lo || v > hi || !v.is_multiple_of(2) {
                Err(Error::InvalidConfig {
                    param,
                    reason: format!("{v} must be an even number of bytes between {lo} and {hi}"),
                })
            } else {
                Ok(())
            }
        };
        check(Param::ChunkMin, self.min, MIN_LIMITS)?;
        check(Param::ChunkAvg, self.avg, AVG_LIMITS)?;
        check(Param::ChunkMax, self.max, MAX_LIMITS)?;
        if !(self.min < self.avg && self.avg < self.max) {
            return Err(Error::InvalidConfig {
                param: Param::ChunkSizes,
                reason: format!(
                    "need min < avg < max, got {} / {} / {}",
                    self.min, self.avg, self.max
                ),
            });
        }
        Ok(())
    }
}

/// Tunables chosen at `init` and recorded in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoParams {
    /// Chunking bounds.
    pub chunker: ChunkerParams,
    /// zstd level (negative levels are zstd's fast modes; 0 means zstd's default, 3).
    pub zstd_level: i32,
    /// Target pack file size in bytes.
    pub pack_size: u32,
}

impl Default for RepoParams {
    fn default() -> Self {
        RepoParams {
            chunker: ChunkerParams::default(),
            zstd_level: 3,
            pack_size: 16 << 20,
        }
    }
}

impl RepoParams {
    /// Validates every field.
    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if !(-7..=19).contains(&self.zstd_level) {
            return Err(Error::InvalidConfig {
                param: Param::ZstdLevel,
                reason: format!("{} is outside -7..=19", self.zstd_level),
            });
        }
        if self.pack_size < (1 << 20) || self.pack_size > (512 << 20) {
            return Err(Error::InvalidConfig {
                param: Param::PackSize,
                reason: format!("{} bytes is outside 1 MiB..=512 MiB", self.pack_size),
            });
        }
        Ok(())
    }
}

/// The stored repository config (JSON, never secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Repository format version.
    pub format_version: u32,
    /// Random repository id (hex).
    pub repo_id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Chunking, compression and packing.
    pub params: RepoParams,
    /// Present when the repository is encrypted: a one-way check value derived from the key.
    pub key_check: Option<String>,
}

impl RepoConfig {
    /// Parses the config object, refusing newer format versions with a clear error.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("repository config", e.to_string()))?;
        if v.format_version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                found: v.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let cfg: RepoConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("repository config", e.to_string()))?;
        cfg.params.validate()?;
        Ok(cfg)
    }

    /// The config as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_newer_version_is_refused_with_upgrade_hint() {
        let cfg = RepoConfig {
            format_version: FORMAT_VERSION + 1,
            repo_id: "x".into(),
            created: "2026-01-01T00:00:00Z".into(),
            params: RepoParams::default(),
            key_check: None,
        };
        let err = RepoConfig::parse(&cfg.to_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NewerFormat {
                    found: 2,
                    supported: 1
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade"));
    }

    #[test]
    fn chunker_params_out_of_order_name_the_parameter_not_a_flag() {
        let p = ChunkerParams {
            min: 8192,
            avg: 4096,
            max: 65536,
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("invalid chunk sizes: need min < avg < max"), "{e}");
        assert!(!e.contains("--"), "a flag name in a storage error: {e}");
        let p = ChunkerParams {
            min: 8192,
            avg: 16384,
            max: 64 << 20,
        };
        let e = p.validate().unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    param: Param::ChunkMax,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("invalid maximum chunk size: "), "{e}");
    }
}
