//! Resolve: from a ProxmoxCluster's spec and the contents of its Secret (and CA bundle, when it
//! comes from a Secret) to a [`ClientConfig`]. Pure; the driver reads the objects.
//!
//! Every failure is an [`Unresolved`] with a stable PascalCase reason and a message that names
//! the Secret and key at fault, never a value.

use std::{collections::BTreeMap, fmt, time::Duration};

use super::CaBundle;
use crate::crd::proxmox_cluster::{ProxmoxClusterSpec, TlsTrust};
use crate::crd::refs::SecretKeySelector;
use crate::proxmox::{ClientConfig, ClientMetrics, Credentials, Endpoint, Secret, Timeouts, TlsVerify};

/// Key of the API token id (`user@realm!tokenid`) in the credentials Secret.
pub const KEY_TOKEN_ID: &str = "tokenId";
/// Key of the API token secret.
pub const KEY_TOKEN_SECRET: &str = "tokenSecret";
/// Key of the user name (`user@realm`) for ticket login.
pub const KEY_USERNAME: &str = "username";
/// Key of the password for ticket login.
pub const KEY_PASSWORD: &str = "password";

/// Condition/Event reason: the credentials Secret does not exist.
pub const REASON_SECRET_NOT_FOUND: &str = "SecretNotFound";
/// Condition/Event reason: the credentials Secret lacks a key or holds an unusable value.
pub const REASON_SECRET_INVALID: &str = "SecretInvalid";
/// Condition/Event reason: the CA bundle's Secret or key is missing or unreadable.
pub const REASON_CA_NOT_FOUND: &str = "CaNotFound";
/// Condition/Event reason: the spec cannot be turned into a client configuration.
pub const REASON_INVALID_CONFIG: &str = "InvalidConfig";

/// Why no client could be built: a stable reason and a message for a human.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// PascalCase reason (`SecretNotFound`, `SecretInvalid`, `CaNotFound`, `InvalidConfig`).
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Unresolved {
    /// An `Unresolved` with `reason` and `message`.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The data of a Secret (`data`, base64-decoded, with `stringData` merged as the API does).
pub type SecretData = BTreeMap<String, Vec<u8>>;

fn key_text(secret: &str, data: &SecretData, key: &str) -> Result<Option<String>, Unresolved> {
    let Some(bytes) = data.get(key) else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes.clone()).map_err(|_| {
        Unresolved::new(
            REASON_SECRET_INVALID,
            format!("Secret {secret:?}: key {key} is not UTF-8 text; store the value as plain text"),
        )
    })?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(Unresolved::new(
            REASON_SECRET_INVALID,
            format!("Secret {secret:?}: key {key} is empty; set it"),
        ));
    }
    Ok(Some(text))
}

/// The credentials in the Secret `secret` (its data, or `None` when it does not exist):
/// `tokenId` + `tokenSecret`, or `username` + `password`.
pub fn credentials(
    namespace: &str,
    secret: &str,
    data: Option<&SecretData>,
) -> Result<Credentials, Unresolved> {
    let Some(data) = data else {
        return Err(Unresolved::new(
            REASON_SECRET_NOT_FOUND,
            format!(
                "Secret {secret:?} (spec.credentialsSecretRef) does not exist in namespace {namespace}; create it with keys \
                 {KEY_TOKEN_ID} and {KEY_TOKEN_SECRET} (or {KEY_USERNAME} and {KEY_PASSWORD})"
            ),
        ));
    };
    let pair = |a: &str, b: &str| -> Result<Option<(String, String)>, Unresolved> {
        match (key_text(secret, data, a)?, key_text(secret, data, b)?) {
            (Some(x), Some(y)) => Ok(Some((x, y))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(missing_partner(secret, a, b)),
            (None, Some(_)) => Err(missing_partner(secret, b, a)),
        }
    };
    if let Some((token_id, token_secret)) = pair(KEY_TOKEN_ID, KEY_TOKEN_SECRET)? {
        if !token_id.contains('!') {
            return Err(Unresolved::new(
                REASON_SECRET_INVALID,
                format!(
                    "Secret {secret:?}: key {KEY_TOKEN_ID} must look like user@realm!tokenname (the token id PVE shows), \
                     not just the user"
                ),
            ));
        }
        return Ok(Credentials::ApiToken {
            token_id,
            secret: Secret::new(token_secret),
        });
    }
    if let Some((username, password)) = pair(KEY_USERNAME, KEY_PASSWORD)? {
        return Ok(Credentials::Password {
            username,
            password: Secret::new(password),
        });
    }
    let present: Vec<&str> = data.keys().map(String::as_str).collect();
    Err(Unresolved::new(
        REASON_SECRET_INVALID,
        format!(
            "Secret {secret:?} has neither keys {KEY_TOKEN_ID} + {KEY_TOKEN_SECRET} nor {KEY_USERNAME} + {KEY_PASSWORD} \
             (its keys: {}); add them",
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            }
        ),
    ))
}

fn missing_partner(secret: &str, have: &str, missing: &str) -> Unresolved {
    Unresolved::new(
        REASON_SECRET_INVALID,
        format!("Secret {secret:?} has key {have} but no key {missing}; add {missing}"),
    )
}

/// The Secret key the driver must read for the CA bundle, if `spec.tls.caSecretRef` selects one.
pub fn ca_secret(spec: &ProxmoxClusterSpec) -> Option<&SecretKeySelector> {
    match spec.tls.as_ref()?.trust().ok()? {
        TlsTrust::CaSecret(s) => Some(s),
        _ => None,
    }
}

/// The CA bundle in the Secret `selector` names, from that Secret's data and resourceVersion
/// (`None`: it does not exist). Missing key or non-text value: `CaNotFound`, naming both.
pub fn ca_bundle(
    selector: &SecretKeySelector,
    found: Option<(&SecretData, &str)>,
) -> Result<CaBundle, Unresolved> {
    let (name, key) = (&selector.name, &selector.key);
    let missing =
        |what: String| Unresolved::new(REASON_CA_NOT_FOUND, format!("spec.tls.caSecretRef: {what}"));
    let (data, version) = found.ok_or_else(|| missing(format!("Secret {name:?} does not exist")))?;
    let value = data
        .get(key)
        .ok_or_else(|| missing(format!("Secret {name:?} has no key {key}")))?;
    let pem = String::from_utf8(value.clone())
        .map_err(|_| missing(format!("key {key} of Secret {name:?} is not PEM text")))?;
    Ok(CaBundle {
        pem,
        version: version.to_owned(),
    })
}

/// The TLS verification the spec selects; `ca_pem` is the bundle the driver read for
/// [`ca_secret`] (ignored otherwise).
pub fn tls_verify(spec: &ProxmoxClusterSpec, ca_pem: Option<&str>) -> Result<TlsVerify, Unresolved> {
    let Some(tls) = &spec.tls else {
        return Ok(TlsVerify::SystemRoots);
    };
    let trust = tls
        .trust()
        .map_err(|e| Unresolved::new(REASON_INVALID_CONFIG, format!("spec.tls: {e}")))?;
    Ok(match trust {
        TlsTrust::SystemRoots => TlsVerify::SystemRoots,
        TlsTrust::Fingerprint(fp) => TlsVerify::Fingerprint(fp.to_owned()),
        TlsTrust::CaPem(pem) => TlsVerify::CaPem(pem.to_owned()),
        TlsTrust::InsecureSkipVerify => TlsVerify::InsecureSkipVerify,
        TlsTrust::CaSecret(_) => TlsVerify::CaPem(
            ca_pem
                .ok_or_else(|| {
                    Unresolved::new(
                        REASON_CA_NOT_FOUND,
                        "spec.tls.caSecretRef: the CA bundle was not read",
                    )
                })?
                .to_owned(),
        ),
    })
}

/// The client configuration for `spec`: endpoints in priority order (each with its own pinned
/// fingerprint, when it has one, instead of `tls`), `credentials`, `tls` and the spec's request
/// timeout.
pub fn client_config(
    spec: &ProxmoxClusterSpec,
    credentials: Credentials,
    tls: TlsVerify,
    metrics: Option<ClientMetrics>,
) -> ClientConfig {
    let endpoints = spec
        .endpoints
        .iter()
        .map(|e| {
            let endpoint = Endpoint::new(e.url.clone(), e.priority());
            match &e.fingerprint {
                Some(fp) => endpoint.with_tls(TlsVerify::Fingerprint(fp.clone())),
                None => endpoint,
            }
        })
        .collect();
    let request = Duration::from_secs(u64::try_from(spec.request_timeout_seconds.max(1)).unwrap_or(30));
    let mut config = ClientConfig::new(endpoints, credentials, tls);
    config.timeouts = Timeouts {
        connect: request.min(Timeouts::default().connect),
        request,
    };
    config.metrics = metrics;
    config
}

/// The version a cached client was built from: the cluster's generation and the
/// resourceVersions of the objects it read, so any edit or credentials rotation rebuilds it.
pub fn cache_version(generation: Option<i64>, secret_rv: Option<&str>, ca_rv: Option<&str>) -> String {
    format!(
        "{}/{}/{}",
        generation.unwrap_or_default(),
        secret_rv.unwrap_or("-"),
        ca_rv.unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn spec(yaml: &str) -> ProxmoxClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str = "endpoints: [{url: 'https://pve1:8006', priority: 5}, {url: 'https://pve2:8006'}]\n\
                        credentialsSecretRef: {name: pve}\nrequestTimeoutSeconds: 12\n";

    #[test]
    fn credentials_token_pair_is_read_and_secret_stays_hidden() {
        let creds = credentials(
            "lab",
            "pve",
            Some(&data(&[("tokenId", "a@pve!op"), ("tokenSecret", "s3cr3t\n")])),
        )
        .unwrap();
        let Credentials::ApiToken { token_id, secret } = &creds else {
            panic!("{creds:?}")
        };
        assert_eq!((token_id.as_str(), secret.expose()), ("a@pve!op", "s3cr3t"));
        assert!(!format!("{creds:?}").contains("s3cr3t"));
    }

    #[test]
    fn credentials_password_pair_is_read() {
        let creds = credentials(
            "lab",
            "pve",
            Some(&data(&[("username", "root@pam"), ("password", "pw")])),
        )
        .unwrap();
        assert!(matches!(creds, Credentials::Password { ref username, .. } if username == "root@pam"));
    }

    #[test]
    fn credentials_missing_secret_or_key_names_the_key_and_never_the_value() {
        let e = credentials("lab", "pve", None).unwrap_err();
        assert_eq!(e.reason, "SecretNotFound");
        assert!(
            e.message.contains("\"pve\"") && e.message.contains("namespace lab"),
            "{e}"
        );
        let e = credentials("lab", "pve", Some(&data(&[("tokenId", "a@pve!op")]))).unwrap_err();
        assert_eq!(e.reason, "SecretInvalid");
        assert!(e.message.contains("no key tokenSecret"), "{e}");
        let e = credentials("lab", "pve", Some(&data(&[("tokenSecret", "hunter2")]))).unwrap_err();
        assert!(
            e.message.contains("no key tokenId") && !e.message.contains("hunter2"),
            "{e}"
        );
        let e = credentials("lab", "pve", Some(&data(&[("token", "hunter2")]))).unwrap_err();
        assert!(
            e.message.contains("its keys: token") && !e.message.contains("hunter2"),
            "{e}"
        );
        let e = credentials(
            "lab",
            "pve",
            Some(&data(&[("tokenId", "a@pve"), ("tokenSecret", "x")])),
        )
        .unwrap_err();
        assert!(e.message.contains("user@realm!tokenname"), "{e}");
        let e = credentials(
            "lab",
            "pve",
            Some(&data(&[("tokenId", " "), ("tokenSecret", "x")])),
        )
        .unwrap_err();
        assert!(e.message.contains("key tokenId is empty"), "{e}");
    }

    #[test]
    fn tls_verify_follows_the_spec() {
        assert_eq!(tls_verify(&spec(BASE), None).unwrap(), TlsVerify::SystemRoots);
        let pinned = spec(&format!(
            "{BASE}tls: {{fingerprint: '{}'}}\n",
            ["AB"; 32].join(":")
        ));
        assert!(matches!(
            tls_verify(&pinned, None).unwrap(),
            TlsVerify::Fingerprint(_)
        ));
        let insecure = spec(&format!("{BASE}tls: {{insecureSkipVerify: true}}\n"));
        assert_eq!(
            tls_verify(&insecure, None).unwrap(),
            TlsVerify::InsecureSkipVerify
        );
        let by_ref = spec(&format!(
            "{BASE}tls: {{caSecretRef: {{name: ca, key: ca.crt}}}}\n"
        ));
        let selected = ca_secret(&by_ref).expect("a CA Secret");
        assert_eq!((selected.name.as_str(), selected.key.as_str()), ("ca", "ca.crt"));
        assert_eq!(tls_verify(&by_ref, None).unwrap_err().reason, "CaNotFound");
        assert_eq!(
            tls_verify(&by_ref, Some("PEM")).unwrap(),
            TlsVerify::CaPem("PEM".into())
        );
        assert_eq!(ca_secret(&pinned), None);
    }

    #[test]
    fn ca_bundle_reads_the_key_and_names_what_is_missing() {
        let selector = SecretKeySelector {
            name: "pve-ca".into(),
            key: "ca.crt".into(),
        };
        let pem = data(&[("ca.crt", "-----BEGIN CERTIFICATE-----")]);
        assert_eq!(
            ca_bundle(&selector, Some((&pem, "7"))).unwrap(),
            CaBundle {
                pem: "-----BEGIN CERTIFICATE-----".into(),
                version: "7".into()
            }
        );
        let e = ca_bundle(&selector, None).unwrap_err();
        assert_eq!(e.reason, "CaNotFound");
        assert_eq!(
            e.message,
            "spec.tls.caSecretRef: Secret \"pve-ca\" does not exist"
        );
        let other = data(&[("tls.crt", "x")]);
        let e = ca_bundle(&selector, Some((&other, "7"))).unwrap_err();
        assert!(e.message.ends_with("has no key ca.crt"), "{e}");
        let mut binary = SecretData::new();
        binary.insert("ca.crt".into(), vec![0xff, 0xfe]);
        let e = ca_bundle(&selector, Some((&binary, "7"))).unwrap_err();
        assert!(e.message.contains("is not PEM text"), "{e}");
    }

    #[test]
    fn client_config_orders_endpoints_and_uses_the_spec_timeout() {
        let creds = Credentials::Password {
            username: "root@pam".into(),
            password: Secret::new("pw"),
        };
        let c = client_config(&spec(BASE), creds, TlsVerify::InsecureSkipVerify, None);
        let eps: Vec<_> = c.endpoints.iter().map(|e| (e.url.as_str(), e.priority)).collect();
        assert_eq!(eps, [("https://pve1:8006", 5), ("https://pve2:8006", 0)]);
        assert_eq!(c.endpoints[0].tls, None);
        let own = spec(&BASE.replace(
            "{url: 'https://pve2:8006'}",
            &format!(
                "{{url: 'https://pve2:8006', fingerprint: '{}'}}",
                ["CD"; 32].join(":")
            ),
        ));
        let creds = Credentials::Password {
            username: "root@pam".into(),
            password: Secret::new("pw"),
        };
        let c = client_config(&own, creds, TlsVerify::SystemRoots, None);
        assert_eq!(c.endpoints[0].tls, None, "pve1 uses spec.tls");
        assert_eq!(
            c.endpoints[1].tls,
            Some(TlsVerify::Fingerprint(["CD"; 32].join(":"))),
            "pve2's own pin wins"
        );
        assert_eq!(c.timeouts.request, Duration::from_secs(12));
        assert_eq!(c.timeouts.connect, Duration::from_secs(5));
    }

    #[test]
    fn cache_version_changes_with_generation_and_secret() {
        assert_eq!(cache_version(Some(3), Some("100"), None), "3/100/-");
        assert_ne!(
            cache_version(Some(3), Some("100"), None),
            cache_version(Some(3), Some("101"), None)
        );
    }
}
