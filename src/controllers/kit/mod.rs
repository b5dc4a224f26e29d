//! The controller kit: kube-free helpers shared by every controller, plain functions and types
//! over plain data (`jiff` timestamps, strings, maps, CRD status types), unit-tested without an
//! API server. Nothing in `kit/` imports `kube` or `k8s-openapi`, and nothing here names a kind
//! (see `ARCHITECTURE.md`).
//!
//! - [`outcome`]: what a core's pass returns ([`Outcome`], [`PlannedEvent`]).
//! - [`conditions`]: the one way conditions are set ([`Conditions`], [`Change`]).
//! - [`memory`]: per-process memory keyed by object ([`MemoryMap`], [`ClientCache`], [`Claims`]).
//! - [`time`]: timestamp arithmetic that never panics.
//! - [`schedule`]: cron schedules in an IANA time zone, the missed-run rule
//!   (`startingDeadlineSeconds`), run ids, capped requeue, the `run-now` annotation and the one
//!   time zone check every scheduled kind uses.
//! - [`notify`]: notifications to Discord, Slack, ntfy or a webhook, with a cooldown.

pub mod conditions;
pub mod memory;
pub mod notify;
pub mod outcome;
pub mod schedule;
pub mod time;

pub use conditions::{Change, Conditions};
pub use memory::{Claims, ClientCache, MemoryMap};
pub use outcome::{Outcome, PlannedEvent};
