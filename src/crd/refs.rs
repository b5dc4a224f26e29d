//! References from one object to another. All references are namespace-local: an object can
//! only point at Secrets and autopilot resources in its own namespace, so granting someone a
//! namespace never hands them another namespace's credentials. There is deliberately no
//! ConfigMap reference: the chart grants the operator no access to ConfigMaps.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest Kubernetes object name (a DNS subdomain).
pub const MAX_NAME_LEN: u32 = 253;
/// Shape of a Kubernetes object name (DNS subdomain, RFC 1123).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Shape of a key in a Secret.
pub const KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// A reference to another object in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

impl LocalObjectReference {
    /// A reference to `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A reference to a Secret in the same namespace. Which keys it must hold is documented on the
/// field that uses it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

impl SecretReference {
    /// A reference to the Secret `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// One key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Key inside the Secret, e.g. `ca.crt`.
    #[schemars(length(min = 1, max = 253), regex(pattern = KEY_PATTERN))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_through_yaml() {
        let yaml = "name: pve-token\nkey: tokenSecret\n";
        let sel: SecretKeySelector = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(sel.name, "pve-token");
        assert_eq!(serde_yaml::to_string(&sel).unwrap(), yaml);
        let r = LocalObjectReference::new("homelab");
        let back: LocalObjectReference = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(SecretReference::new("x").name, "x");
    }

    #[test]
    fn name_pattern_accepts_dns_subdomains_only() {
        let re = regex_lite(NAME_PATTERN);
        assert!(re("pve-token"));
        assert!(re("a.b-c"));
        assert!(!re("Pve"));
        assert!(!re("-x"));
    }

    /// The patterns are written for Kubernetes (RE2); they only use syntax the
    /// `jsonschema` crate's engine also accepts, so tests exercise them through it.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let validator = jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": pattern}))
            .expect("pattern compiles");
        move |s| validator.is_valid(&serde_json::json!(s))
    }
}
