//! Test helpers: the shared reference data, certificates minted with rcgen, and minimal loopback
//! HTTP/HTTPS servers for transport edge cases (the simulator covers PVE behaviour).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{
    ClientConfig, Credentials, Endpoint, GuestRef, GuestType, NodeName, RetryPolicy, Secret, Timeouts,
    TlsVerify, Vmid,
};

/// `../shared/proxmox`, or `None` (with a printed note) when the checkout has no `../shared`.
pub(crate) fn shared_proxmox_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/proxmox");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} not found (reference data lives beside the repository)",
            dir.display()
        );
        None
    }
}

/// A CA and a leaf certificate for `localhost` / `127.0.0.1` signed by it.
pub(crate) struct TestCerts {
    pub(crate) ca_pem: String,
    pub(crate) leaf_der: CertificateDer<'static>,
    leaf_key: Vec<u8>,
    pub(crate) fingerprint: String,
}

pub(crate) fn mint_certs() -> TestCerts {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    TestCerts {
        ca_pem: ca.pem(),
        fingerprint: super::fingerprint_of(leaf.der()),
        leaf_der: leaf.der().clone(),
        leaf_key: leaf_key.serialize_der(),
    }
}

/// A server on 127.0.0.1, stopped when dropped.
pub(crate) struct TestServer {
    pub(crate) url: String,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` over plain HTTP.
pub(crate) async fn serve_plain(router: Router) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    TestServer { url, task }
}

/// Serves `router` over HTTPS with the leaf certificate of `certs`.
pub(crate) async fn serve_tls(router: Router, certs: &TestCerts) -> TestServer {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.leaf_key.clone()));
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certs.leaf_der.clone()], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                // A client that rejects our certificate aborts the handshake: nothing to serve.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    TestServer { url, task }
}

/// A URL on which nothing listens (connections are refused).
pub(crate) async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// The test token secret; tests assert it never shows up in Debug output or errors.
pub(crate) const TOKEN_SECRET: &str = "5e0c1d2f-aaaa-4bbb-8ccc-0123456789ab";

/// A client config with an API token, fast retries and the given endpoints (priority = order).
pub(crate) fn token_config(urls: &[&str], tls: TlsVerify) -> ClientConfig {
    let endpoints = urls
        .iter()
        .enumerate()
        .map(|(i, u)| Endpoint::new(*u, i as i32))
        .collect();
    let credentials = Credentials::ApiToken {
        token_id: "autopilot@pve!operator".into(),
        secret: Secret::new(TOKEN_SECRET),
    };
    let mut config = ClientConfig::new(endpoints, credentials, tls);
    config.retries = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    config.timeouts = Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(10),
    };
    config
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [("content-type", "application/json")], body.into()).into_response()
}

/// Guest `id` of type `t` on node `pve1`.
pub(crate) fn guest_on_pve1(t: GuestType, id: u32) -> GuestRef {
    GuestRef::new(NodeName::new("pve1").unwrap(), t, Vmid::new(id).unwrap())
}
