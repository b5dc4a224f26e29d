//! rustls configuration for the client: CA bundle, SHA-256 fingerprint pinning, system roots, or
//! (explicitly) no verification. Always the `ring` provider: reqwest is built without one and is
//! handed the finished `ClientConfig`.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::config::TlsVerify;
use super::error::Error;

/// Formats a SHA-256 digest as PVE shows it: `AA:BB:...`.
pub fn format_fingerprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The SHA-256 fingerprint of a DER certificate, formatted `AA:BB:...`.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    format_fingerprint(&Sha256::digest(cert_der))
}

/// Parses `AA:BB:...` (colons optional, any case) into the 32 digest bytes.
fn parse_fingerprint(s: &str) -> Result<[u8; 32], Error> {
    let hex: String = s.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex, &mut out).map_err(|_| Error::Config {
        field: "tls.fingerprint",
        message: format!(
            "{s:?} is not a SHA-256 fingerprint; expected 32 hex bytes like `AA:BB:...` \
             (PVE: Node > System > Certificates)"
        ),
    })?;
    Ok(out)
}

/// A rejected server certificate, with its fingerprint so the user can compare or pin it.
#[derive(Debug)]
pub(crate) struct CertRejected {
    /// The pinned fingerprint, when pinning.
    pub(crate) expected: Option<String>,
    pub(crate) presented: String,
    /// Why a CA-verified certificate was rejected.
    pub(crate) reason: Option<String>,
}

impl fmt::Display for CertRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.expected, &self.reason) {
            (Some(expected), _) => write!(
                f,
                "server certificate fingerprint is {}, but {expected} is pinned; if the certificate was renewed, update the pinned fingerprint",
                self.presented
            ),
            (None, reason) => write!(
                f,
                "server certificate (SHA-256 fingerprint {}) was rejected: {}",
                self.presented,
                reason.as_deref().unwrap_or("untrusted")
            ),
        }
    }
}

impl std::error::Error for CertRejected {}

fn rejected(r: CertRejected) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(r))))
}

/// How the server certificate is checked. Handshake signatures are verified in every case.
#[derive(Debug)]
enum CertCheck {
    /// Chain and host name, by webpki against a root store.
    Chain(Arc<WebPkiServerVerifier>),
    /// Exactly the leaf certificate with this SHA-256.
    Pinned([u8; 32]),
    /// Anything (`InsecureSkipVerify`).
    Any,
}

/// The client's certificate verifier; a rejection carries the presented fingerprint.
#[derive(Debug)]
struct Verifier {
    check: CertCheck,
    provider: Arc<CryptoProvider>,
}

type SigResult = Result<HandshakeSignatureValid, rustls::Error>;

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            CertCheck::Any => Ok(ServerCertVerified::assertion()),
            CertCheck::Pinned(expected) => {
                let presented = Sha256::digest(end_entity.as_ref());
                if presented.as_slice() == expected {
                    return Ok(ServerCertVerified::assertion());
                }
                Err(rejected(CertRejected {
                    expected: Some(format_fingerprint(expected)),
                    presented: format_fingerprint(&presented),
                    reason: None,
                }))
            }
            CertCheck::Chain(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map_err(|e| {
                    rejected(CertRejected {
                        expected: None,
                        presented: fingerprint_of(end_entity),
                        reason: Some(e.to_string()),
                    })
                }),
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> SigResult {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> SigResult {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn webpki(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
    field: &'static str,
) -> Result<CertCheck, Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Config {
            field,
            message: format!("cannot build a verifier: {e}"),
        })?;
    Ok(CertCheck::Chain(verifier))
}

/// Builds the rustls client configuration for `tls`.
pub(crate) fn client_config(tls: &TlsVerify) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match tls {
        TlsVerify::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| Error::Config {
                    field: "tls.caPem",
                    message: format!("cannot read a certificate from the PEM: {e}"),
                })?;
                roots.add(cert).map_err(|e| Error::Config {
                    field: "tls.caPem",
                    message: format!("certificate cannot be used as a CA: {e}"),
                })?;
            }
            if roots.is_empty() {
                return Err(Error::Config {
                    field: "tls.caPem",
                    message: "contains no `-----BEGIN CERTIFICATE-----` block; paste PVE's pve-root-ca.pem"
                        .into(),
                });
            }
            webpki(roots, provider.clone(), "tls.caPem")?
        }
        TlsVerify::Fingerprint(fp) => CertCheck::Pinned(parse_fingerprint(fp)?),
        TlsVerify::InsecureSkipVerify => {
            tracing::warn!(
                "TLS certificate verification is disabled for this Proxmox VE connection (insecureSkipVerify); \
                 pin the certificate fingerprint instead"
            );
            CertCheck::Any
        }
        TlsVerify::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            if roots.is_empty() {
                return Err(Error::Config {
                    field: "tls",
                    message: "no system root certificates found; give a CA PEM or pin the fingerprint".into(),
                });
            }
            webpki(roots, provider.clone(), "tls")?
        }
    };
    let verifier = Arc::new(Verifier {
        check,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            field: "tls",
            message: format!("cannot set up TLS: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// What a failed TLS handshake tells us, found in an error's source chain.
pub(crate) struct TlsFailure {
    pub(crate) expected: Option<String>,
    pub(crate) presented: Option<String>,
    pub(crate) detail: String,
}

/// Looks for a rustls error in `err`'s chain (looking inside `io::Error`s, whose `source()` skips
/// the error they wrap).
pub(crate) fn find_tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut stack: Vec<&(dyn std::error::Error + 'static)> = vec![err];
    while let Some(e) = stack.pop() {
        if let Some(rustls_err) = e.downcast_ref::<rustls::Error>() {
            if let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = rustls_err
                && let Some(r) = other.0.downcast_ref::<CertRejected>()
            {
                return Some(TlsFailure {
                    expected: r.expected.clone(),
                    presented: Some(r.presented.clone()),
                    detail: r.to_string(),
                });
            }
            return Some(TlsFailure {
                expected: None,
                presented: None,
                detail: rustls_err.to_string(),
            });
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            stack.push(inner);
        }
        if let Some(next) = e.source() {
            stack.push(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parse_accepts_pve_format_and_rejects_garbage() {
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&fp).unwrap(), [0xAB; 32]);
        assert_eq!(parse_fingerprint(&"ab".repeat(32)).unwrap(), [0xAB; 32]);
        for bad in ["", "AB:CD", &"ZZ:".repeat(32)] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert!(e.to_string().contains("tls.fingerprint"), "{e}");
        }
        assert_eq!(format_fingerprint(&[0x0A, 0xFF]), "0A:FF");
    }

    #[test]
    fn tls_config_rejects_empty_ca_pem() {
        let e = client_config(&TlsVerify::CaPem("not a pem".into())).unwrap_err();
        assert!(e.to_string().contains("tls.caPem"), "{e}");
    }

    #[test]
    fn tls_failure_is_found_through_io_errors() {
        let mismatch = CertRejected {
            expected: Some("AA".into()),
            presented: "BB".into(),
            reason: None,
        };
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rejected(mismatch));
        let f = find_tls_failure(&io).expect("found");
        assert_eq!(
            (f.expected.as_deref(), f.presented.as_deref()),
            (Some("AA"), Some("BB"))
        );
        let plain = std::io::Error::other("connection refused");
        assert!(find_tls_failure(&plain).is_none());
    }
}
