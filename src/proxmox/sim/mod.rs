//! A simulator of the Proxmox VE API: `homelab-autopilot pvesim`.

pub mod cli;
