//! The typed Proxmox VE REST client, and a Proxmox Backup Server client ([`pbs`]). The simulator it is tested against is
//! [`crate::pvesim`], which never imports this module.
//!
//! Never imports `kube` or `crate::controllers`: usable from the CLI, benches and tests.
//!
//! The client is a thin typed layer over reqwest + rustls: [`PveClient`] (built from a
//! [`ClientConfig`]) does transport, endpoint failover, auth, timeouts, retries and metrics; the
//! operations live in `api/<area>.rs` as methods on [`PveClient`]; every `(method, path)` it can
//! call is listed in [`ops::ALL`].

pub mod api;
mod auth;
mod client;
mod config;
pub(crate) mod decode;
mod error;
mod metrics;
pub mod ops;
pub mod pbs;
mod request;
mod task;
mod tls;
mod types;
mod upid;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod transport_tests;

pub use auth::{Credentials, Secret};
pub use client::PveClient;
pub use config::{ClientConfig, Endpoint, RetryPolicy, Timeouts, TlsVerify};
pub use error::{Error, Result, guest_lock};
pub use metrics::ClientMetrics;
pub use pbs::PbsClient;
pub use task::{LOG_TAIL_LINES, TaskExit, TaskLog, TaskLogLine, TaskRef, TaskStatus, TaskSuccess};
/// The rustls configuration the client uses, for other HTTPS clients of the operator (HTTP
/// health checks) that need the same trust options.
pub(crate) use tls::client_config as rustls_client_config;
pub use tls::fingerprint_of;
pub use types::{GuestRef, GuestType, NodeName, ParseIdError, SnapshotName, Vmid};
pub use upid::Upid;
