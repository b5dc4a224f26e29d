//! API-level tests: real HTTP on loopback against the PVE simulator, real stores in tempdirs.

mod pvesim_backup;
mod pvesim_common;
mod pvesim_guests;
mod pvesim_wire;
