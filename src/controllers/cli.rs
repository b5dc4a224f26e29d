//! `homelab-autopilot operator`: the controllers, the probes and metrics server, leader election
//! and graceful shutdown.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::ArgAction;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{
    OperatorDeps,
    http::{self, Health},
    leader::LeaseConfig,
    pve::ProxmoxDeps,
    register_controllers,
    runtime::Operator,
};
use crate::metrics::Metrics;
use crate::proxmox::ClientMetrics;

/// Where the service account's namespace is mounted in a pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Arguments of `homelab-autopilot operator`.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "AUTOPILOT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "AUTOPILOT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Run the controllers only while holding the leader Lease (keep on with more than one replica).
    #[arg(long, env = "AUTOPILOT_LEADER_ELECTION", value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "homelab-autopilot")]
    pub lease_name: String,
    /// Namespace of the leader election Lease (default in a pod: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds the leader may fail to renew its Lease (e.g. while the API server restarts)
    /// before it steps down and the operator exits, so its pod restarts (2-300, default 10). The
    /// Lease lasts 5 s longer, so a new leader can only take over after the old one stopped.
    #[arg(
        long,
        env = "AUTOPILOT_LEASE_RENEW_DEADLINE",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(2..=300)
    )]
    pub lease_renew_deadline: u64,
    /// Directory of the chunk store used by BackupPolicies whose destination is `chunkStore`.
    #[arg(
        long,
        env = "AUTOPILOT_STORE_PATH",
        default_value = "/var/lib/homelab-autopilot/store"
    )]
    pub store_path: PathBuf,
    /// File holding the chunk store's encryption key (optional).
    #[arg(long, env = "AUTOPILOT_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,
}

/// The operator's settings after validation.
#[derive(Debug)]
struct Settings {
    namespace: Option<String>,
    http_addr: SocketAddr,
    lease: Option<LeaseConfig>,
    instance: String,
    store_path: PathBuf,
    store_key_file: Option<PathBuf>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The pod name (`POD_NAME`), or the hostname outside a pod.
fn instance_name(pod_name: Option<String>) -> (String, bool) {
    match non_empty(pod_name) {
        Some(pod) => (pod, true),
        None => {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "homelab-autopilot".into());
            (host, false)
        }
    }
}

impl OperatorArgs {
    fn resolve(self, pod_name: Option<String>, sa_namespace: Option<String>) -> anyhow::Result<Settings> {
        let (instance, in_pod) = instance_name(pod_name);
        let lease = if self.leader_election {
            let namespace = non_empty(self.lease_namespace).or(non_empty(sa_namespace)).context(
                "--lease-namespace (env POD_NAMESPACE) is required when --leader-election is true outside a pod; \
                 set it to the namespace for the Lease, or pass --leader-election false",
            )?;
            // Outside a pod two processes on one host share the hostname: a random suffix keeps
            // their identities apart so that they never both believe they hold the Lease.
            let identity = if in_pod {
                instance.clone()
            } else {
                format!("{instance}-{:08x}", rand::random::<u32>())
            };
            let config = LeaseConfig::new(self.lease_name, namespace, identity)
                .with_renew_deadline(Duration::from_secs(self.lease_renew_deadline));
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("--lease-name/--lease-namespace: {e}"))?;
            Some(config)
        } else {
            None
        };
        if let Some(key) = &self.store_key_file {
            check_key_file(key)?;
        }
        Ok(Settings {
            namespace: non_empty(self.namespace),
            http_addr: self.http_addr,
            lease,
            instance,
            store_path: self.store_path,
            store_key_file: self.store_key_file,
        })
    }
}

fn check_key_file(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "--store-key-file {}: cannot read it; mount the key Secret there or leave the flag unset",
            path.display()
        )
    })?;
    anyhow::ensure!(
        meta.is_file(),
        "--store-key-file {}: not a regular file; point it at the key file itself",
        path.display()
    );
    Ok(())
}

/// Runs the operator until SIGTERM/SIGINT (exit 0) or until it loses the leader lease (exit 1,
/// so the pod restarts as a candidate).
pub async fn run(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let sa_namespace = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok();
    let settings = args.resolve(std::env::var("POD_NAME").ok(), sa_namespace)?;
    let client = kube::Client::try_default().await.context(
        "cannot configure the Kubernetes client (in a pod: its service account; outside: KUBECONFIG)",
    )?;
    let listener = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("--http-addr {}: cannot listen", settings.http_addr))?;
    info!(
        http_addr = %settings.http_addr,
        namespace = settings.namespace.as_deref().unwrap_or("all"),
        leader_election = settings.lease.is_some(),
        instance = %settings.instance,
        "starting operator"
    );

    let metrics = Metrics::new();
    let health = Health::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        http_stop.clone().cancelled_owned(),
    ));

    let client_metrics =
        ClientMetrics::new(&metrics.registry).context("cannot register the Proxmox client metrics")?;
    let deps = OperatorDeps::new(
        settings.store_path,
        settings.store_key_file,
        ProxmoxDeps::new(Some(client_metrics)),
    );
    let mut operator = Operator::new(client, metrics, settings.namespace, settings.instance, deps);
    operator = register_controllers(operator);
    if let Some(lease) = settings.lease {
        operator = operator.leader_election(lease);
    }
    let result = operator.run(health, shutdown).await;

    http_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "HTTP server failed"),
        Err(e) => error!(error = %e, "HTTP server task failed"),
    }
    result?;
    info!("operator stopped");
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on the first SIGTERM or SIGINT.
async fn shutdown_on_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    info!("shutdown requested: finishing in-flight reconciles");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    fn parse(argv: &[&str]) -> OperatorArgs {
        Cli::try_parse_from(std::iter::once("operator").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn resolve_in_pod_uses_pod_name_and_service_account_namespace() {
        let s = parse(&[])
            .resolve(Some("ap-7d9f".into()), Some("autopilot\n".into()))
            .unwrap();
        let lease = s.lease.unwrap();
        assert_eq!(lease.identity, "ap-7d9f");
        assert_eq!(lease.namespace, "autopilot");
        assert_eq!(lease.name, "homelab-autopilot");
        assert_eq!(
            lease.renew_deadline,
            Duration::from_secs(10),
            "the default deadline"
        );
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
        assert_eq!(s.instance, "ap-7d9f");
        assert_eq!(s.namespace, None);
        assert_eq!(s.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.store_path, PathBuf::from("/var/lib/homelab-autopilot/store"));
    }

    #[test]
    fn lease_renew_deadline_sets_the_step_down_time_and_keeps_the_lease_longer() {
        let s = parse(&["--lease-namespace", "ops", "--lease-renew-deadline", "60"])
            .resolve(None, None)
            .unwrap();
        let lease = s.lease.unwrap();
        assert_eq!(lease.renew_deadline, Duration::from_secs(60));
        assert_eq!(lease.lease_duration, Duration::from_secs(65));
        assert_eq!(lease.renew_interval, Duration::from_secs(5));
        lease.validate().unwrap();
        let short = LeaseConfig::new("l", "ns", "id").with_renew_deadline(Duration::from_secs(2));
        assert_eq!(short.renew_interval, Duration::from_secs(1));
        short.validate().unwrap();
        for bad in ["1", "301", "ten"] {
            let cli = Cli::try_parse_from(["operator", "--lease-renew-deadline", bad]);
            assert!(cli.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn readme_documents_the_exit_on_a_missed_renewal_and_the_flag_that_changes_it() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let default = LeaseConfig::new("l", "ns", "id").renew_deadline.as_secs();
        assert_eq!(parse(&[]).lease_renew_deadline, default);
        for needle in [
            format!("cannot renew the Lease for {default} s"),
            "--lease-renew-deadline SECONDS".to_owned(),
            "AUTOPILOT_LEASE_RENEW_DEADLINE".to_owned(),
            "leaderElection.renewDeadlineSeconds".to_owned(),
        ] {
            assert!(
                readme.contains(&needle),
                "README's operating section lacks {needle:?}"
            );
        }
    }

    #[test]
    fn resolve_outside_pod_without_lease_namespace_names_the_flag() {
        let err = parse(&[]).resolve(None, None).unwrap_err().to_string();
        assert!(err.contains("--lease-namespace"), "{err}");
        assert!(err.contains("--leader-election false"), "{err}");
    }

    #[test]
    fn resolve_outside_pod_gets_unique_identity_suffix() {
        let a = parse(&["--lease-namespace", "ops"]).resolve(None, None).unwrap();
        let b = parse(&["--lease-namespace", "ops"]).resolve(None, None).unwrap();
        let (ia, ib) = (a.lease.unwrap().identity, b.lease.unwrap().identity);
        assert!(ia.starts_with(&a.instance), "{ia}");
        assert_ne!(ia, ib);
    }

    #[test]
    fn resolve_without_leader_election_needs_no_namespace() {
        let s = parse(&["--leader-election", "false", "--namespace", "lab"])
            .resolve(None, None)
            .unwrap();
        assert!(s.lease.is_none());
        assert_eq!(s.namespace.as_deref(), Some("lab"));
    }

    #[test]
    fn resolve_empty_namespace_means_all_namespaces() {
        let s = parse(&["--leader-election=false", "--namespace", ""])
            .resolve(None, None)
            .unwrap();
        assert_eq!(s.namespace, None);
    }

    #[test]
    fn parse_invalid_http_addr_names_the_flag() {
        let err = Cli::try_parse_from(["operator", "--http-addr", "localhost"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--http-addr"), "{err}");
    }

    #[test]
    fn resolve_missing_key_file_names_the_flag() {
        let err = parse(&["--leader-election=false", "--store-key-file", "/nonexistent/key"])
            .resolve(None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--store-key-file /nonexistent/key"), "{err}");
    }

    #[test]
    fn resolve_existing_key_file_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, b"k").unwrap();
        let s = parse(&[
            "--leader-election=false",
            "--store-key-file",
            key.to_str().unwrap(),
        ])
        .resolve(None, None)
        .unwrap();
        assert_eq!(s.store_key_file, Some(key));
        let err = parse(&[
            "--leader-election=false",
            "--store-key-file",
            dir.path().to_str().unwrap(),
        ])
        .resolve(None, None)
        .unwrap_err();
        assert!(err.to_string().contains("not a regular file"));
    }
}
