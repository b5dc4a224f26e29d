//! Validated newtypes for the identifiers PVE uses: [`Vmid`], [`NodeName`], [`GuestType`],
//! [`GuestRef`], [`SnapshotName`] and [`Upid`].
//!
//! Each parses from a string with an error that names the value and the rule it broke, and
//! (de)serializes as PVE writes it. Patterns come from `pve-apischema.json` formats
//! (`pve-vmid`, `pve-node`, `pve-configid`) and pve-common's `PVE::UPID`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::decode;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {rule}")]
pub struct ParseIdError {
    /// Which kind of identifier (`VMID`, `node name`, ...).
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The rule it broke, phrased as the fix.
    pub rule: &'static str,
}

fn invalid(what: &'static str, value: &str, rule: &'static str) -> ParseIdError {
    ParseIdError {
        what,
        value: value.to_owned(),
        rule,
    }
}

/// `as_str`, `Display`, `FromStr` (validating through `new`) and serde as a plain string.
macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A guest id (`pve-vmid`: an integer from 100 to 999999999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u32);

impl Vmid {
    /// The smallest id PVE accepts.
    pub const MIN: u32 = 100;
    /// The largest id PVE accepts.
    pub const MAX: u32 = 999_999_999;

    /// Checks the range.
    pub fn new(id: u32) -> Result<Self, ParseIdError> {
        if (Self::MIN..=Self::MAX).contains(&id) {
            Ok(Self(id))
        } else {
            Err(invalid(
                "VMID",
                &id.to_string(),
                "must be between 100 and 999999999",
            ))
        }
    }

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Vmid {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u32 = s
            .trim()
            .parse()
            .map_err(|_| invalid("VMID", s, "must be an integer"))?;
        Self::new(n)
    }
}

impl Serialize for Vmid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Vmid {
    /// Accepts a number or a numeric string (PVE sends both).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = decode::u64_lenient(d)?;
        let n = u32::try_from(n).map_err(|_| serde::de::Error::custom("VMID out of range"))?;
        Self::new(n).map_err(serde::de::Error::custom)
    }
}

/// A cluster node name (`pve-node`: letters, digits and inner dashes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Validates `name` against the `pve-node` format.
    pub fn new(name: impl Into<String>) -> Result<Self, ParseIdError> {
        let name = name.into();
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 253
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if ok {
            Ok(Self(name))
        } else {
            Err(invalid(
                "node name",
                &name,
                "use letters, digits and dashes, not starting or ending with a dash",
            ))
        }
    }
}

string_newtype!(NodeName);

/// The two kinds of guest: QEMU virtual machines and LXC containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// A QEMU/KVM virtual machine (`/nodes/{node}/qemu/...`).
    Qemu,
    /// An LXC container (`/nodes/{node}/lxc/...`).
    Lxc,
}

impl GuestType {
    /// The path segment and `/cluster/resources` type: `qemu` or `lxc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Lxc => "lxc",
        }
    }

    /// The HA resource id prefix: `vm` or `ct`.
    pub fn ha_prefix(self) -> &'static str {
        match self {
            Self::Qemu => "vm",
            Self::Lxc => "ct",
        }
    }
}

impl fmt::Display for GuestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestType {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(Self::Qemu),
            "lxc" => Ok(Self::Lxc),
            _ => Err(invalid("guest type", s, "must be `qemu` or `lxc`")),
        }
    }
}

/// Where a guest lives: node, type and id. Every per-guest call takes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GuestRef {
    /// The node that owns the guest's config (ask [`locate_guest`](super::PveClient::locate_guest)).
    pub node: NodeName,
    /// QEMU or LXC.
    pub guest_type: GuestType,
    /// The guest id.
    pub vmid: Vmid,
}

impl GuestRef {
    /// Bundles the three parts.
    pub fn new(node: NodeName, guest_type: GuestType, vmid: Vmid) -> Self {
        Self {
            node,
            guest_type,
            vmid,
        }
    }

    /// The HA resource id of this guest (`vm:100`, `ct:101`).
    pub fn ha_sid(&self) -> String {
        format!("{}:{}", self.guest_type.ha_prefix(), self.vmid)
    }
}

impl fmt::Display for GuestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} on {}", self.guest_type, self.vmid, self.node)
    }
}

/// A snapshot name (`pve-configid`: a letter, then letters, digits, `_` or `-`; 2 to 40 chars).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName(String);

impl SnapshotName {
    /// The schema's `maxLength` for `snapname`.
    pub const MAX_LEN: usize = 40;

    /// Validates `name` against `pve-configid` (case-insensitive `[a-z][a-z0-9_-]+`, at most 40).
    pub fn new(name: impl Into<String>) -> Result<Self, ParseIdError> {
        let name = name.into();
        let b = name.as_bytes();
        let ok = b.len() >= 2
            && b.len() <= Self::MAX_LEN
            && b[0].is_ascii_alphabetic()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
        if !ok {
            return Err(invalid(
                "snapshot name",
                &name,
                "use 2 to 40 characters: a letter, then letters, digits, `_` or `-`",
            ));
        }
        if name == "current" {
            return Err(invalid(
                "snapshot name",
                &name,
                "`current` is reserved by PVE; pick another",
            ));
        }
        Ok(Self(name))
    }
}

string_newtype!(SnapshotName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_range_is_enforced() {
        assert!(Vmid::new(99).is_err());
        assert_eq!(Vmid::new(100).map(Vmid::get), Ok(100));
        assert!(Vmid::new(999_999_999).is_ok());
        assert!(Vmid::new(1_000_000_000).is_err());
        assert!("abc".parse::<Vmid>().is_err());
    }

    #[test]
    fn vmid_deserializes_from_number_or_string() {
        let a: Vmid = serde_json::from_str("\"105\"").unwrap();
        let b: Vmid = serde_json::from_str("105").unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Vmid>("\"7\"").is_err());
    }

    #[test]
    fn node_name_pattern_rejects_bad_names() {
        for ok in ["pve", "pve-1", "A1", "x"] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-pve", "pve-", "pve.local", "pve 1", "pve/1"] {
            let err = NodeName::new(bad).unwrap_err();
            assert!(err.to_string().contains("node name"), "{err}");
        }
    }

    #[test]
    fn snapshot_name_follows_pve_configid() {
        for ok in ["ap-pre-update", "Snap_1", "ab", &"a".repeat(40)] {
            assert!(SnapshotName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "1abc",
            "-ab",
            "ab.c",
            "ab c",
            "current",
            &"a".repeat(41),
            "äb",
        ] {
            assert!(SnapshotName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn guest_ref_builds_ha_sid() {
        let node = NodeName::new("pve1").unwrap();
        let vm = GuestRef::new(node.clone(), GuestType::Qemu, Vmid::new(100).unwrap());
        let ct = GuestRef::new(node, GuestType::Lxc, Vmid::new(101).unwrap());
        assert_eq!(vm.ha_sid(), "vm:100");
        assert_eq!(ct.ha_sid(), "ct:101");
        assert_eq!("lxc".parse::<GuestType>(), Ok(GuestType::Lxc));
        assert!("vm".parse::<GuestType>().is_err());
    }
}
