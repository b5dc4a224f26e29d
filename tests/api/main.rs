//! API-level tests: real HTTP on loopback against the PVE simulator, real stores in tempdirs.

mod crds;
