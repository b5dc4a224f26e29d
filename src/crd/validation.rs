//! Runtime validation of specs: the backstop for what the CRD schema and its CEL rules cannot
//! express (full cron parsing, time zones, rendered names, IPv4 arithmetic when CEL is skipped
//! by an old apiserver). Controllers call [`Validate::validate`] before acting and report the
//! errors in a condition; every error names the field and the fix.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};

/// One invalid field: `path` is the JSON path from the object root (e.g. `spec.retention.keepDaily`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, from the object root.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A spec that failed validation: one or more [`FieldError`]s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct InvalidSpec(pub Vec<FieldError>);

fn render(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl InvalidSpec {
    /// The individual field errors.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

/// A spec that can check itself beyond what the CRD schema enforces.
pub trait Validate {
    /// `Ok` when the spec is usable; otherwise every problem found, each naming its field.
    fn validate(&self) -> Result<(), InvalidSpec>;
}

/// Collects [`FieldError`]s while walking a spec.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `path` is invalid.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records the error if `result` is one.
    pub fn check(&mut self, path: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(path, message);
        }
    }

    /// `Ok` if nothing was recorded.
    pub fn finish(self) -> Result<(), InvalidSpec> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(self.0))
        }
    }
}

/// Parses a standard 5-field cron expression (minute hour day-of-month month day-of-week, or
/// `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`) with the parser the controllers use.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser.parse(expr).map_err(|e| {
        format!(
            "{expr:?} is not a valid cron schedule ({e}); use 5 fields \
             \"minute hour day-of-month month day-of-week\", e.g. \"30 2 * * *\" for 02:30 every day"
        )
    })
}

/// Checks that `name` is an IANA time zone the operator can resolve (e.g. `Europe/Berlin`).
/// When the process has no time zone database at all, only the shape is checked.
pub fn check_time_zone(name: &str) -> Result<(), String> {
    let db = jiff::tz::db();
    if db.is_definitively_empty() {
        return Ok(());
    }
    db.get(name).map(|_| ()).map_err(|_| {
        format!("{name:?} is not a known IANA time zone; use a name like \"UTC\" or \"Europe/Berlin\"")
    })
}

/// Parses a dotted-quad IPv4 address.
pub fn parse_ipv4(value: &str) -> Result<Ipv4Addr, String> {
    Ipv4Addr::from_str(value)
        .map_err(|_| format!("{value:?} is not an IPv4 address; write it as four numbers, e.g. 192.168.1.10"))
}

/// An IPv4 network parsed from `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    /// First address of the network.
    pub network: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/len`; the address must be the network address (host bits zero).
    pub fn parse(value: &str) -> Result<Self, String> {
        let err = || format!("{value:?} is not an IPv4 subnet in CIDR form; write e.g. 192.168.1.0/24");
        let (addr, len) = value.split_once('/').ok_or_else(err)?;
        let network = Ipv4Addr::from_str(addr).map_err(|_| err())?;
        let prefix: u8 = len.parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        let net = Self { network, prefix };
        if u32::from(network) & !net.mask() != 0 {
            let fixed = Ipv4Addr::from(u32::from(network) & net.mask());
            return Err(format!(
                "{value:?} has host bits set; the subnet address is {fixed}/{prefix}"
            ));
        }
        Ok(net)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// Whether `addr` lies inside this network (network and broadcast addresses included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// Whether `addr` is the network or the broadcast address of a subnet with room for hosts.
    pub fn is_network_or_broadcast(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.prefix < 31 && (a == u32::from(self.network) || a == u32::from(self.network) | !self.mask())
    }
}

/// Whether `s` is a DNS label Proxmox accepts as a guest name or node name
/// (letters, digits and `-`, not starting or ending with `-`, at most 63 characters).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Two inclusive ranges overlap.
pub fn ranges_overlap<T: Ord>(a: (T, T), b: (T, T)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cron_accepts_five_fields_and_nicknames() {
        for ok in [
            "30 2 * * *",
            "0 */6 * * *",
            "0 3 * * MON-FRI",
            "@daily",
            "@weekly",
            "0 4 1 JAN *",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn parse_cron_rejects_out_of_range_and_seconds() {
        for bad in ["61 * * * *", "0 25 * * *", "* * * *", "0 0 2 * * *", "every day"] {
            let err = parse_cron(bad).unwrap_err();
            assert!(err.contains("minute hour day-of-month"), "{bad}: {err}");
        }
    }

    #[test]
    fn check_time_zone_rejects_typos() {
        assert!(check_time_zone("UTC").is_ok());
        if !jiff::tz::db().is_definitively_empty() {
            assert!(check_time_zone("Europe/Berlin").is_ok());
            assert!(check_time_zone("Europe/Berln").unwrap_err().contains("IANA"));
        }
    }

    #[test]
    fn ipv4_net_parse_checks_host_bits_and_membership() {
        let net = Ipv4Net::parse("192.168.1.0/24").unwrap();
        assert!(net.contains("192.168.1.200".parse().unwrap()));
        assert!(!net.contains("192.168.2.1".parse().unwrap()));
        assert!(net.is_network_or_broadcast("192.168.1.255".parse().unwrap()));
        assert!(net.is_network_or_broadcast("192.168.1.0".parse().unwrap()));
        assert!(!net.is_network_or_broadcast("192.168.1.1".parse().unwrap()));
        let err = Ipv4Net::parse("192.168.1.5/24").unwrap_err();
        assert!(err.contains("192.168.1.0/24"), "{err}");
        assert!(Ipv4Net::parse("192.168.1.0").is_err());
        assert!(Ipv4Net::parse("192.168.1.0/33").is_err());
        assert!(
            Ipv4Net::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(parse_ipv4("192.168.001.1").is_err());
    }

    #[test]
    fn errors_render_with_paths() {
        let mut e = Errors::new();
        e.add("spec.a", "is bad; fix it");
        e.check("spec.b", Err("also bad".into()));
        e.check("spec.c", Ok(()));
        let err = e.finish().unwrap_err();
        assert_eq!(err.to_string(), "spec.a: is bad; fix it; spec.b: also bad");
        assert_eq!(err.errors().len(), 2);
        assert!(Errors::new().finish().is_ok());
    }

    #[test]
    fn dns_label_and_overlap_helpers() {
        assert!(is_dns_label("pve-node1-vm-01"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label("a_b"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(ranges_overlap((1, 5), (5, 9)));
        assert!(!ranges_overlap((1, 4), (5, 9)));
    }
}
