//! `GET /nodes/{node}/status`.

use serde::{Deserialize, Deserializer};

use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::Result;
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::types::NodeName;

/// Total/used/free of memory, swap or the root filesystem, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct UsageInfo {
    /// Size.
    #[serde(default, deserialize_with = "decode::u64_or_zero")]
    pub total: u64,
    /// Used.
    #[serde(default, deserialize_with = "decode::u64_or_zero")]
    pub used: u64,
    /// Free.
    #[serde(default, deserialize_with = "decode::u64_or_zero")]
    pub free: u64,
}

/// The running kernel (`current-kernel`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct KernelInfo {
    /// e.g. `Linux`.
    #[serde(default)]
    pub sysname: String,
    /// e.g. `6.14.8-2-pve`: compare with the newest installed kernel to see if a reboot is due.
    #[serde(default)]
    pub release: String,
    /// Build string.
    #[serde(default)]
    pub version: String,
    /// e.g. `x86_64`.
    #[serde(default)]
    pub machine: String,
}

/// How the node booted (`boot-info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BootInfo {
    /// `efi` or `legacy-bios`.
    #[serde(default)]
    pub mode: String,
    /// Secure boot, when EFI.
    #[serde(default, deserialize_with = "decode::opt_bool")]
    pub secureboot: Option<bool>,
}

/// `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeStatus {
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub uptime: Option<u64>,
    /// CPU usage, 0..1.
    #[serde(default, deserialize_with = "decode::opt_f64")]
    pub cpu: Option<f64>,
    /// Load averages (1, 5, 15 min).
    #[serde(default, deserialize_with = "load_averages")]
    pub loadavg: Vec<f64>,
    /// Memory.
    #[serde(default)]
    pub memory: UsageInfo,
    /// Root filesystem.
    #[serde(default)]
    pub rootfs: UsageInfo,
    /// Swap.
    #[serde(default)]
    pub swap: UsageInfo,
    /// e.g. `pve-manager/9.1.2/...`.
    #[serde(default)]
    pub pveversion: String,
    /// The running kernel.
    #[serde(default, rename = "current-kernel")]
    pub current_kernel: KernelInfo,
    /// Boot mode.
    #[serde(default, rename = "boot-info")]
    pub boot_info: BootInfo,
}

/// `loadavg` is a list of strings in PVE (numbers in some versions).
fn load_averages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    struct Item(#[serde(deserialize_with = "decode::opt_f64")] Option<f64>);
    let items: Option<Vec<Item>> = Option::deserialize(d)?;
    Ok(items
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.0.unwrap_or(0.0))
        .collect())
}

impl PveClient {
    /// `GET /nodes/{node}/status`.
    pub async fn node_status(&self, node: &NodeName) -> Result<NodeStatus> {
        self.run(Call::new(ops::NODE_STATUS, &[node.as_str()])).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_decodes_pve_shape() {
        let st: NodeStatus = serde_json::from_str(
            r##"{"uptime":"874373","cpu":0.01,"loadavg":["0.10","0.20",0.3],
                "memory":{"total":33567911936,"used":8127873024,"free":25440038912,"available":1},
                "rootfs":{"total":100,"used":"40","free":60,"avail":60},
                "pveversion":"pve-manager/9.1.2/abc","kversion":"Linux 6.14",
                "current-kernel":{"sysname":"Linux","release":"6.14.8-2-pve","version":"#1","machine":"x86_64"},
                "boot-info":{"mode":"efi","secureboot":0},"ksm":{"shared":0}}"##,
        )
        .unwrap();
        assert_eq!(st.uptime, Some(874_373));
        assert_eq!(st.loadavg, vec![0.1, 0.2, 0.3]);
        assert_eq!(st.rootfs.used, 40);
        assert_eq!(st.current_kernel.release, "6.14.8-2-pve");
        assert_eq!(st.boot_info.secureboot, Some(false));
        assert_eq!(st.swap, UsageInfo::default());
    }
}
