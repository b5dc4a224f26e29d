//! One kube-runtime controller per kind, and the `operator` runtime that runs them.

pub mod cli;
