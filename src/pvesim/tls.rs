//! TLS like a PVE node: a cluster CA (`pve-root-ca.pem`) signs each node's certificate
//! (`pve-ssl.pem`). Clients either trust the CA or pin the leaf's SHA-256 fingerprint.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::SimError;

/// The certificate material of the simulated cluster.
pub(crate) struct TlsMaterial {
    /// PEM of the cluster CA (what a client trusts).
    pub(crate) ca_pem: String,
    /// `AA:BB:...` SHA-256 fingerprint of the leaf certificate (what a client pins).
    pub(crate) fingerprint: String,
    /// The rustls configuration serving the leaf.
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Generates a CA and a leaf for `localhost`, `127.0.0.1` and the node names.
pub(crate) fn generate(cluster: &str, node_names: &[String]) -> Result<TlsMaterial, SimError> {
    let tls = |e: rcgen::Error| SimError::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("Proxmox Virtual Environment ({cluster})"),
    );
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "PVE Cluster Manager CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(node_names.iter().cloned());
    let leaf_key = KeyPair::generate().map_err(tls)?;
    let mut leaf_params = CertificateParams::new(names).map_err(tls)?;
    let first = node_names.first().map(String::as_str).unwrap_or("localhost");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, format!("{first}.pvesim"));
    leaf_params
        .distinguished_name
        .push(DnType::OrganizationName, "PVE Cluster Node");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(tls)?;

    let fingerprint = fingerprint_of(leaf.der());
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        fingerprint,
        server_config: Arc::new(config),
    })
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

    #[test]
    fn generate_gives_ca_pem_and_fingerprint_of_32_bytes() {
        let material = generate("c", &["pve1".to_string()]);
        let material = match material {
            Ok(m) => m,
            Err(e) => panic!("tls: {e}"),
        };
        assert!(material.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(material.fingerprint.split(':').count(), 32);
        assert!(!format!("{material:?}").contains("BEGIN"));
    }
}
