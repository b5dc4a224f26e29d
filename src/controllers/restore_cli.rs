//! `homelab-autopilot restore`: put any backup (a PVE volid, or `chunkstore/<id>` from the
//! operator's store) back as a new guest, with a VMID that must be free. It never overwrites a
//! guest. The same function the RestoreTest controller uses ([`crate::controllers::pve::restore`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::controllers::pve::restore::{Backup, RestoreRequest, remove_staged, start_restore};
use crate::crd::common::GuestType;
use crate::proxmox::{ClientConfig, Credentials, Endpoint, NodeName, PveClient, Secret, TlsVerify, Vmid};
use crate::storage::StoreLocation;

/// Arguments of `homelab-autopilot restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup: a PVE volid (`pbs-homelab:backup/vm/200/2026-06-01T00:30:00Z`,
    /// `nfs:backup/vzdump-qemu-200-….vma.zst`) or `chunkstore/<snapshot id>` as a BackupPolicy's
    /// status shows it.
    pub backup: String,
    /// Node to restore on.
    #[arg(long)]
    pub node: String,
    /// VMID of the new guest; it must be free (nothing is ever overwritten).
    #[arg(long)]
    pub vmid: u32,
    /// `vm` or `lxc`.
    #[arg(long = "type", value_parser = ["vm", "lxc"])]
    pub guest_type: String,
    /// Storage for the restored disks (PVE's default when absent).
    #[arg(long)]
    pub storage: Option<String>,
    /// New MAC addresses (and SMBIOS UUID): use when the original still runs.
    #[arg(long)]
    pub unique: bool,
    /// Start the guest when restored.
    #[arg(long)]
    pub start: bool,
    /// Live restore (PBS backups of VMs only): the VM runs while its disks are restored.
    #[arg(long)]
    pub live_restore: bool,
    /// Bandwidth limit in KiB/s.
    #[arg(long)]
    pub bwlimit: Option<u64>,
    /// PVE API URL, e.g. `https://pve1.lan:8006`.
    #[arg(long, env = "AUTOPILOT_PVE_ENDPOINT")]
    pub endpoint: String,
    /// API token id, e.g. `autopilot@pve!operator`.
    #[arg(long, env = "AUTOPILOT_PVE_TOKEN_ID")]
    pub token_id: String,
    /// File holding the API token secret (never on the command line).
    #[arg(long, env = "AUTOPILOT_PVE_TOKEN_SECRET_FILE")]
    pub token_secret_file: PathBuf,
    /// Pin the node's certificate by its SHA-256 fingerprint.
    #[arg(long, conflicts_with = "ca_file")]
    pub fingerprint: Option<String>,
    /// Trust this CA (PVE's `/etc/pve/pve-root-ca.pem`).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Chunk store (for `chunkstore/<id>` backups).
    #[arg(long, env = "AUTOPILOT_STORE_REPO")]
    pub store: Option<PathBuf>,
    /// The chunk store's key file.
    #[arg(long, env = "AUTOPILOT_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,
    /// PVE storage the chunk-store backup is staged on (as the BackupPolicy's `stagingStorage`).
    #[arg(long)]
    pub staging_storage: Option<String>,
    /// Where that storage's `dump/` directory is mounted here.
    #[arg(long)]
    pub staging_path: Option<PathBuf>,
    /// Print the task id and return instead of waiting for the restore to finish.
    #[arg(long)]
    pub no_wait: bool,
}

/// Runs `homelab-autopilot restore`.
pub async fn run(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let secret = std::fs::read_to_string(&args.token_secret_file).with_context(|| {
        format!(
            "cannot read --token-secret-file {}",
            args.token_secret_file.display()
        )
    })?;
    let tls = match (&args.fingerprint, &args.ca_file) {
        (Some(fp), _) => TlsVerify::Fingerprint(fp.clone()),
        (None, Some(ca)) => TlsVerify::CaPem(
            std::fs::read_to_string(ca).with_context(|| format!("cannot read --ca-file {}", ca.display()))?,
        ),
        (None, None) => TlsVerify::SystemRoots,
    };
    let client = PveClient::new(ClientConfig::new(
        vec![Endpoint::new(&args.endpoint, 0)],
        Credentials::ApiToken {
            token_id: args.token_id.clone(),
            secret: Secret::new(secret.trim()),
        },
        tls,
    ))?;
    let chunk_store = match (&args.store, &args.staging_storage, &args.staging_path) {
        (Some(repo), Some(storage), Some(path)) => Some((
            StoreLocation {
                repo: repo.clone(),
                key_file: args.store_key_file.clone().filter(|p| !p.as_os_str().is_empty()),
            },
            storage.clone(),
            path.clone(),
        )),
        _ => None,
    };
    let backup = Backup::parse(&args.backup, chunk_store)
        .map_err(|e| anyhow::anyhow!("{e} (--store, --staging-storage, --staging-path)"))?;
    let request = RestoreRequest {
        backup,
        guest_type: if args.guest_type == "lxc" {
            GuestType::Lxc
        } else {
            GuestType::Vm
        },
        node: NodeName::new(&args.node).context("--node")?,
        vmid: Vmid::new(args.vmid).context("--vmid")?,
        storage: args.storage.clone(),
        unique: args.unique,
        start: args.start,
        live_restore: args.live_restore,
        bwlimit: args.bwlimit,
        overrides: Default::default(),
    };
    let started = start_restore(&client, &request)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "restoring {} as {} {} on {}: task {}",
        started.archive, args.guest_type, args.vmid, args.node, started.task.upid
    );
    if args.no_wait && started.staged.is_none() {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
    let result = client
        .wait_task(&started.task, Duration::from_secs(2), deadline)
        .await;
    if let Some(staged) = &started.staged
        && let Err(e) = remove_staged(&staged.path)
    {
        eprintln!("warning: {e}");
    }
    match result {
        Ok(_) => {
            println!("restored: {} {} on {}", args.guest_type, args.vmid, args.node);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: the restore failed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
