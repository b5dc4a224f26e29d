//! API-level tests: real HTTP on loopback against the PVE simulator, real stores in tempdirs.

mod store_badinput;
mod store_common;
mod store_concurrency;
mod store_corruption;
mod store_crash;
mod store_roundtrip;
mod store_s3;
