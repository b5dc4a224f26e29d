//! TLS like a PVE cluster: one cluster CA (`pve-root-ca.pem`) signs a distinct certificate per
//! node (`pve-ssl.pem`). Clients either trust the CA (any node verifies) or pin one node's leaf
//! SHA-256 fingerprint (only that node verifies). With a state directory the CA and the node
//! certificates survive restarts, as they do when a real pveproxy restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::SimError;

/// File of the cluster CA certificate in the state directory (as on PVE, `/etc/pve/`).
const CA_CERT: &str = "pve-root-ca.pem";
/// File of the cluster CA key in the state directory.
const CA_KEY: &str = "pve-root-ca.key";

/// One node's served certificate.
pub(crate) struct NodeCert {
    /// `AA:BB:...` SHA-256 fingerprint of the node's leaf certificate (what a client pins).
    pub(crate) fingerprint: String,
    /// The rustls configuration serving the leaf and the CA.
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

/// The certificate material of the simulated cluster.
pub(crate) struct TlsMaterial {
    /// PEM of the cluster CA (what a client trusts).
    pub(crate) ca_pem: String,
    /// Every node's certificate, by node name.
    pub(crate) nodes: BTreeMap<String, NodeCert>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fingerprints: BTreeMap<&str, &str> = self
            .nodes
            .iter()
            .map(|(n, c)| (n.as_str(), c.fingerprint.as_str()))
            .collect();
        f.debug_struct("TlsMaterial")
            .field("fingerprints", &fingerprints)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// The fingerprint of every node's certificate.
    pub(crate) fn fingerprints(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .map(|(n, c)| (n.clone(), c.fingerprint.clone()))
            .collect()
    }
}

fn tls_err(e: impl std::fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Tls(format!("--state-dir: {}: {e}", path.display()))
}

/// The CA's parameters. Deterministic apart from the key: with a stored key, the rebuilt issuer
/// signs leaves that chain to the stored CA certificate (same subject, same key).
fn ca_params(cluster: &str) -> Result<CertificateParams, SimError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Proxmox Virtual Environment ({cluster})"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "PVE Cluster Manager CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Reads `path` if it exists.
fn read_opt(path: &Path) -> Result<Option<String>, SimError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(path, e)),
    }
}

/// Writes `contents` to `path` (owner-only for keys), through a temporary file.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), SimError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(|e| state_err(&tmp, e))?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(|e| state_err(&tmp, e))?;
    file.sync_all().map_err(|e| state_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| state_err(path, e))
}

/// PEM certificate and PEM key of a CA or a node, loaded from `dir` or made by `make` (and then
/// stored there).
fn load_or_make(
    dir: Option<&Path>,
    cert_file: &str,
    key_file: &str,
    make: impl FnOnce() -> Result<(String, KeyPair), SimError>,
) -> Result<(String, KeyPair), SimError> {
    if let Some(dir) = dir {
        let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
        match (read_opt(&cert_path)?, read_opt(&key_path)?) {
            (Some(cert), Some(key)) => {
                let key = KeyPair::from_pem(&key).map_err(|e| state_err(&key_path, e))?;
                return Ok((cert, key));
            }
            (None, None) => {}
            _ => {
                return Err(state_err(
                    dir,
                    format!("has only one of {cert_file} and {key_file}; restore the other or remove both"),
                ));
            }
        }
        let (cert, key) = make()?;
        write_file(&key_path, &key.serialize_pem(), true)?;
        write_file(&cert_path, &cert, false)?;
        return Ok((cert, key));
    }
    make()
}

/// The cluster CA and one certificate per node, each valid for `localhost`, `127.0.0.1`, `::1`
/// and the node's name. With `state_dir`, reuses what an earlier start stored there and stores
/// what it creates (`pve-root-ca.pem`, `pve-root-ca.key`, `nodes/<node>/pve-ssl.{pem,key}`).
pub(crate) fn load_or_generate(
    cluster: &str,
    node_names: &[String],
    state_dir: Option<&Path>,
) -> Result<TlsMaterial, SimError> {
    let (ca_pem, ca_key) = load_or_make(state_dir, CA_CERT, CA_KEY, || {
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = ca_params(cluster)?.self_signed(&key).map_err(tls_err)?;
        Ok((cert.pem(), key))
    })?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params(cluster)?, ca_key);
    let mut nodes = BTreeMap::new();
    for node in node_names {
        let node_dir = state_dir.map(|d| d.join("nodes").join(node));
        let (leaf_pem, leaf_key) = load_or_make(node_dir.as_deref(), "pve-ssl.pem", "pve-ssl.key", || {
            let key = KeyPair::generate().map_err(tls_err)?;
            let names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
                node.clone(),
            ];
            let mut params = CertificateParams::new(names).map_err(tls_err)?;
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{node}.pvesim"));
            params
                .distinguished_name
                .push(DnType::OrganizationName, "PVE Cluster Node");
            let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
            Ok((cert.pem(), key))
        })?;
        let leaf_der = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(tls_err)?;
        let fingerprint = fingerprint_of(&leaf_der);
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).map_err(tls_err)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_der, ca_der.clone()], key)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        nodes.insert(
            node.clone(),
            NodeCert {
                fingerprint,
                server_config: Arc::new(config),
            },
        );
    }
    Ok(TlsMaterial { ca_pem, nodes })
}

/// `AA:BB:...` (upper-case hex) SHA-256 of a DER certificate, as PVE shows it.
pub(crate) fn fingerprint_of(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["pve1".to_string(), "pve2".to_string()]
    }

    #[test]
    fn every_node_gets_its_own_certificate_from_one_ca() {
        let material = load_or_generate("c", &names(), None).unwrap();
        assert!(material.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let fps = material.fingerprints();
        assert_eq!(fps.len(), 2);
        assert_eq!(fps["pve1"].split(':').count(), 32);
        assert_ne!(fps["pve1"], fps["pve2"]);
        assert!(!format!("{material:?}").contains("BEGIN"));
    }

    #[test]
    fn state_dir_keeps_ca_and_node_certificates_and_adds_new_nodes() {
        let dir = std::env::temp_dir().join(format!("pvesim-tls-{}", rand::random::<u64>()));
        let first = load_or_generate("c", &names(), Some(&dir)).unwrap();
        let mut more = names();
        more.push("pve3".to_string());
        let second = load_or_generate("c", &more, Some(&dir)).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.fingerprints()["pve2"], second.fingerprints()["pve2"]);
        assert!(second.fingerprints().contains_key("pve3"));
        std::fs::remove_file(dir.join("nodes/pve1/pve-ssl.key")).unwrap();
        let err = load_or_generate("c", &names(), Some(&dir)).unwrap_err();
        assert!(err.to_string().contains("pve-ssl.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
