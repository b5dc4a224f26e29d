//! Custom resource types for the `autopilot.homelab.dev/v1alpha1` API (no IO).

pub mod cli;

/// The API group of every kind.
pub const GROUP: &str = "autopilot.homelab.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
