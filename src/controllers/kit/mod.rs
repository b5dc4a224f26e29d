//! Kube-free helpers shared by every controller: plain functions and types over plain data
//! (`jiff` timestamps, strings, maps), unit-tested without an API server.
//!
//! Nothing in `kit/` imports `kube` or `k8s-openapi`, and nothing here names a kind: a
//! controller hands in the values it read from its object (a schedule string, an annotation
//! map, a status field) and gets back a decision.
//!
//! - [`schedule`]: cron schedules in an IANA time zone, the missed-run rule
//!   (`startingDeadlineSeconds`), run ids, capped requeue, the `run-now` annotation and the one
//!   time zone check every scheduled kind uses.

pub mod schedule;
