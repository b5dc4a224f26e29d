//! Reach the Proxmox Backup Server behind a PVE `pbs` storage: the ProxmoxCluster's
//! `spec.backupServers` entry naming that storage, its credentials Secret and TLS trust, as a
//! [`PbsClient`]. Kinds use it to start and read PBS verifications.

use k8s_openapi::api::core::v1::Secret;

use super::read::secret_data;
use super::resolve;
use crate::controllers::runtime::driver::Source;
use crate::controllers::runtime::error::Error;
use crate::crd::ProxmoxCluster;
use crate::crd::proxmox_cluster::TlsTrust;
use crate::proxmox::{ClientConfig, Endpoint, PbsClient, TlsVerify};

/// A PBS datastore and a client for it.
#[derive(Clone, Debug)]
pub struct PbsAccess {
    /// The `backupServers` entry's name.
    pub server: String,
    /// Datastore on the server.
    pub datastore: String,
    /// Namespace inside it (`None`: root).
    pub namespace: Option<String>,
    /// The client.
    pub client: PbsClient,
}

/// The PBS behind PVE storage `storage`, per the ProxmoxCluster `cluster` in `namespace`:
/// `Ok(None)` when no `backupServers` entry names that storage (PBS is then only seen through
/// PVE), `Ok(Some(Err(why)))` when the entry cannot be used (Secret missing, bad TLS settings).
pub async fn pbs_access<S: Source>(
    source: &S,
    namespace: &str,
    cluster: &str,
    storage: &str,
) -> Result<Option<Result<PbsAccess, String>>, Error> {
    let Some(cluster) = source.get::<ProxmoxCluster>(namespace, cluster).await? else {
        return Ok(None);
    };
    let Some(entry) = cluster.spec.backup_servers.iter().find(|b| b.storage == storage) else {
        return Ok(None);
    };
    let what = format!("backupServers entry {:?}", entry.name);
    let secret_name = &entry.credentials_secret_ref.name;
    let secret = source.get::<Secret>(namespace, secret_name).await?;
    let credentials =
        match resolve::credentials(namespace, secret_name, secret.as_ref().map(secret_data).as_ref()) {
            Ok(c) => c,
            Err(u) => return Ok(Some(Err(format!("{what}: {}", u.message)))),
        };
    let tls = match entry.tls.as_ref().map(|t| t.trust()) {
        None => TlsVerify::SystemRoots,
        Some(Err(e)) => return Ok(Some(Err(format!("{what}: tls: {e}")))),
        Some(Ok(TlsTrust::SystemRoots)) => TlsVerify::SystemRoots,
        Some(Ok(TlsTrust::Fingerprint(fp))) => TlsVerify::Fingerprint(fp.to_owned()),
        Some(Ok(TlsTrust::CaPem(pem))) => TlsVerify::CaPem(pem.to_owned()),
        Some(Ok(TlsTrust::InsecureSkipVerify)) => TlsVerify::InsecureSkipVerify,
        Some(Ok(TlsTrust::CaSecret(selector))) => {
            let ca = source.get::<Secret>(namespace, &selector.name).await?;
            let pem = ca
                .as_ref()
                .map(secret_data)
                .and_then(|d| d.get(&selector.key).cloned())
                .and_then(|v| String::from_utf8(v).ok());
            match pem {
                Some(pem) => TlsVerify::CaPem(pem),
                None => {
                    return Ok(Some(Err(format!(
                        "{what}: tls.caSecretRef: Secret {:?} has no PEM under key {}",
                        selector.name, selector.key
                    ))));
                }
            }
        }
    };
    let config = ClientConfig::new(vec![Endpoint::new(entry.url.clone(), 0)], credentials, tls);
    Ok(Some(
        PbsClient::new(config)
            .map(|client| PbsAccess {
                server: entry.name.clone(),
                datastore: entry.datastore.clone(),
                namespace: entry.namespace.clone(),
                client,
            })
            .map_err(|e| format!("{what}: {e}")),
    ))
}
