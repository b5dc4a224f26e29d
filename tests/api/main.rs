//! API-level tests: real HTTP on loopback against the PVE simulator, real stores in tempdirs.

mod pvesim_backup;
mod pvesim_cli;
mod pvesim_common;
mod pvesim_faults;
mod pvesim_guests;
mod pvesim_schema;
mod pvesim_wire;
