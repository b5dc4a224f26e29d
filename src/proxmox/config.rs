//! What a [`PveClient`](super::PveClient) is built from.

use std::time::Duration;

use url::Url;

use super::auth::Credentials;
use super::error::Error;
use super::metrics::ClientMetrics;

/// Everything needed to talk to one PVE cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The cluster's API endpoints (any node serves the whole cluster's API). At least one.
    pub endpoints: Vec<Endpoint>,
    /// How to authenticate.
    pub credentials: Credentials,
    /// How to verify the servers' certificates, for endpoints without their own [`Endpoint::tls`].
    pub tls: TlsVerify,
    /// Connect and per-request timeouts.
    pub timeouts: Timeouts,
    /// Retry policy for idempotent calls.
    pub retries: RetryPolicy,
    /// Request counters and durations, if wanted.
    pub metrics: Option<ClientMetrics>,
}

impl ClientConfig {
    /// A config with default timeouts and retries and no metrics.
    pub fn new(endpoints: Vec<Endpoint>, credentials: Credentials, tls: TlsVerify) -> Self {
        Self {
            endpoints,
            credentials,
            tls,
            timeouts: Timeouts::default(),
            retries: RetryPolicy::default(),
            metrics: None,
        }
    }
}

/// One API endpoint of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL, e.g. `https://pve1.lan:8006` (a trailing `/api2/json` is accepted).
    pub url: String,
    /// Lower is tried first; equal priorities keep their order.
    pub priority: i32,
    /// This endpoint's own certificate check (e.g. the pin of its node's certificate), used
    /// instead of [`ClientConfig::tls`]. Each PVE node has its own certificate, so a pin fits
    /// one endpoint only.
    pub tls: Option<TlsVerify>,
}

impl Endpoint {
    /// An endpoint with the given priority, verified by the client's [`ClientConfig::tls`].
    pub fn new(url: impl Into<String>, priority: i32) -> Self {
        Self {
            url: url.into(),
            priority,
            tls: None,
        }
    }

    /// The same endpoint verified by `tls` instead of the client's default.
    pub fn with_tls(mut self, tls: TlsVerify) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The `.../api2/json` base this endpoint's calls go to.
    pub(crate) fn api_base(&self) -> Result<Url, Error> {
        let bad = |message: String| Error::Config {
            field: "endpoints[].url",
            message,
        };
        let mut url = Url::parse(self.url.trim()).map_err(|e| {
            bad(format!(
                "{:?} is not a URL ({e}); use e.g. https://pve1.lan:8006",
                self.url
            ))
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(bad(format!(
                "{:?} must start with https:// (or http:// for pvesim)",
                self.url
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad(format!("{:?} has no host", self.url)));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(bad(format!(
                "{:?} must not carry credentials or a query",
                self.url
            )));
        }
        let path = url.path().trim_end_matches('/');
        let path = path.strip_suffix("/api2/json").unwrap_or(path).to_owned();
        url.set_path(&format!("{path}/api2/json"));
        Ok(url)
    }
}

/// How server certificates are verified (rustls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsVerify {
    /// Trust certificates issued by this CA (PEM, one or more certificates), e.g. PVE's
    /// `/etc/pve/pve-root-ca.pem`. Host names are checked.
    CaPem(String),
    /// Pin the SHA-256 fingerprint of the server's leaf certificate (`AA:BB:...`, as shown in
    /// PVE's "Certificates" panel): the usual homelab setup with self-signed certificates.
    Fingerprint(String),
    /// Accept any certificate. Logs a warning when the client is built. Only for trying things out.
    InsecureSkipVerify,
    /// Trust the operating system's root certificates (for a PVE with a public certificate).
    SystemRoots,
}

/// Timeouts applied to every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a TCP + TLS connection to one endpoint.
    pub connect: Duration,
    /// One request, from sending to the end of the response body.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// Retries with jittered exponential backoff. Requests that never reached PVE (connect errors)
/// are always retried; others only when the call is idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per call, including the first (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (`attempt` >= 1): exponential, capped, with "equal
    /// jitter" (a random point between half and all of it) so that clients do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        let half = cap / 2;
        half + cap.saturating_sub(half).mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_url_is_normalised_to_api_base() {
        for (input, want) in [
            ("https://pve1:8006", "https://pve1:8006/api2/json"),
            ("https://pve1:8006/", "https://pve1:8006/api2/json"),
            ("https://pve1:8006/api2/json/", "https://pve1:8006/api2/json"),
            ("http://127.0.0.1:1234", "http://127.0.0.1:1234/api2/json"),
        ] {
            assert_eq!(Endpoint::new(input, 0).api_base().unwrap().as_str(), want);
        }
        for bad in [
            "pve1:8006",
            "ftp://pve1",
            "https://user:pw@pve1:8006",
            "not a url",
            "https://pve1?x=1",
        ] {
            let e = Endpoint::new(bad, 0).api_base().unwrap_err();
            assert!(e.to_string().contains("endpoints[].url"), "{bad}: {e}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b2 = p.backoff(2);
            assert!(
                b2 >= Duration::from_millis(100) && b2 <= Duration::from_millis(200),
                "{b2:?}"
            );
            let b9 = p.backoff(9);
            assert!(
                b9 >= Duration::from_millis(150) && b9 <= Duration::from_millis(300),
                "{b9:?}"
            );
        }
    }
}
