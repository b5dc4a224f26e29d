//! Node packages: refresh the index, list upgradable packages, list versions.

use serde::Deserialize;

use crate::proxmox::client::PveClient;
use crate::proxmox::error::Result;
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::task::TaskRef;
use crate::proxmox::types::NodeName;

/// One row of `GET /nodes/{node}/apt/update`: an upgradable package.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AptPackage {
    /// Package name.
    pub package: String,
    /// Candidate version.
    #[serde(default)]
    pub version: String,
    /// Installed version.
    #[serde(default)]
    pub old_version: Option<String>,
    /// Short description.
    #[serde(default)]
    pub title: Option<String>,
    /// Origin (`Proxmox`, `Debian`...).
    #[serde(default)]
    pub origin: Option<String>,
    /// Priority (`important`, `optional`...).
    #[serde(default)]
    pub priority: Option<String>,
    /// Section.
    #[serde(default)]
    pub section: Option<String>,
}

/// One row of `GET /nodes/{node}/apt/versions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AptPackageVersion {
    /// Package name.
    pub package: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Previously installed version.
    #[serde(default)]
    pub old_version: Option<String>,
    /// `Installed`, `NotInstalled`, `ConfigFiles`...
    #[serde(default)]
    pub current_state: Option<String>,
    /// For the kernel: the running kernel.
    #[serde(default)]
    pub running_kernel: Option<String>,
    /// For pve-manager: the running version.
    #[serde(default)]
    pub manager_version: Option<String>,
}

impl PveClient {
    /// `POST /nodes/{node}/apt/update`: refresh the package index (task `aptupdate`).
    pub async fn apt_refresh(&self, node: &NodeName, notify: bool) -> Result<TaskRef> {
        self.run_task(Call::new(ops::APT_REFRESH, &[node.as_str()]).flag("notify", notify))
            .await
    }

    /// `GET /nodes/{node}/apt/update`: packages with an upgrade available, sorted by name.
    pub async fn apt_updates(&self, node: &NodeName) -> Result<Vec<AptPackage>> {
        let mut rows: Vec<AptPackage> = self.run(Call::new(ops::APT_UPDATES, &[node.as_str()])).await?;
        rows.sort_by(|a, b| a.package.cmp(&b.package));
        Ok(rows)
    }

    /// `GET /nodes/{node}/apt/versions`: versions of the Proxmox packages.
    pub async fn apt_versions(&self, node: &NodeName) -> Result<Vec<AptPackageVersion>> {
        self.run(Call::new(ops::APT_VERSIONS, &[node.as_str()])).await
    }
}
