//! API-level tests: real HTTP on loopback against the PVE simulator, real stores in tempdirs.

mod crds;
// Example and invalid-resource loaders, shared with the end-to-end suite.
#[path = "../kind/fixtures.rs"]
mod fixtures;
