//! Runtime validation of specs: the backstop for what the CRD schema and its CEL rules cannot
//! express (full cron parsing, time zones, rendered names, IPv4 arithmetic when CEL is skipped
//! by an old apiserver). Controllers call [`Validate::validate`] before acting and report the
//! errors in a condition; every error names the field and the fix.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use std::sync::LazyLock;

use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use regex::Regex;

use super::common::{CRON_FIELDS, CRON_PATTERN};

/// One invalid field: `path` is the JSON path from the object root (e.g. `spec.retention.keepDaily`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, from the object root.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// A condition reason more specific than `InvalidSpec` (e.g. `InvalidTimeZone`), if any.
    pub reason: Option<&'static str>,
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
    /// The condition reason for these errors: the specific reason they all share (for example
    /// `InvalidTimeZone`), else `InvalidSpec`.
    pub fn reason(&self) -> &'static str {
        let mut reasons = self.0.iter().map(|e| e.reason);
        match reasons.next().flatten() {
            Some(first) if reasons.all(|r| r == Some(first)) => first,
            _ => "InvalidSpec",
        }
    }

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
            reason: None,
        });
    }

    /// Records that `path` is invalid, with a condition reason more specific than `InvalidSpec`.
    pub fn add_with_reason(
        &mut self,
        path: impl Into<String>,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
            reason: Some(reason),
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

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week, or one of
/// `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@hourly`) with the parser the
/// controllers use. It accepts exactly what the CRD's [`CRON_PATTERN`] admits, so an object
/// that predates a stricter CRD gets the same verdict at runtime; the error names the bad
/// cron field and what it allows.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    static WHOLE: LazyLock<Regex> = LazyLock::new(|| compiled(CRON_PATTERN));
    static FIELDS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        CRON_FIELDS
            .iter()
            .map(|(_, pattern, _)| compiled(pattern))
            .collect()
    });
    let usage = "use 5 fields \"minute hour day-of-month month day-of-week\", e.g. \"30 2 * * *\" \
                 for 02:30 every day, or @hourly, @daily, @weekly, @monthly, @yearly";
    if !WHOLE.is_match(expr) {
        if expr.starts_with('@') {
            return Err(format!(
                "{expr:?} is not a schedule macro this operator knows; {usage}"
            ));
        }
        let fields: Vec<&str> = expr.split(' ').filter(|f| !f.is_empty()).collect();
        if fields.len() != CRON_FIELDS.len() || expr.trim_matches(' ') != expr {
            return Err(format!(
                "{expr:?} is not a cron schedule: it needs 5 fields separated by spaces; {usage}"
            ));
        }
        let bad = fields
            .iter()
            .zip(CRON_FIELDS.iter().zip(FIELDS.iter()))
            .find(|(field, (_, regex))| !regex.is_match(field));
        return Err(match bad {
            Some((field, ((name, _, allowed), _))) => format!(
                "{expr:?} is not a valid cron schedule: the {name} field {field:?} is out of range; \
                 it takes {allowed}, `*`, ranges a-b, lists a,b and steps /n; {usage}"
            ),
            None => format!("{expr:?} is not a valid cron schedule; {usage}"),
        });
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a valid cron schedule ({e}); {usage}"))?;
    // Every field in range can still name no real date (`0 0 30 2 *`). A leap year start
    // makes a February 29 schedule match in the first year searched.
    let leap_year = jiff::civil::date(2000, 1, 1).at(0, 0, 0, 0);
    cron.find_next_occurrence(&leap_year, true).map_err(|_| {
        format!(
            "{expr:?} never runs: no date matches its day-of-month and month (e.g. February 30); \
             pick a day that exists"
        )
    })?;
    Ok(cron)
}

/// Compiles one of the crate's own constant patterns.
fn compiled(pattern: &str) -> Regex {
    // The patterns are constants of this crate, and `cron_patterns_compile` compiles each.
    Regex::new(pattern).expect("the crate's cron patterns compile")
}

/// Condition and Event reason for a time zone the operator does not know.
pub const REASON_INVALID_TIME_ZONE: &str = "InvalidTimeZone";

/// A `timeZone` field names no zone in the operator's time zone database. Every scheduled kind
/// reports it the same way: condition reason [`REASON_INVALID_TIME_ZONE`], message naming the
/// field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {}", self.message())]
pub struct UnknownTimeZone {
    /// Path of the field, e.g. `spec.timeZone`.
    pub field: String,
    /// The name as written.
    pub name: String,
    /// Whether the process found no time zone database at all (then only `UTC` works).
    pub no_database: bool,
}

impl UnknownTimeZone {
    /// The condition reason: always [`REASON_INVALID_TIME_ZONE`].
    pub fn reason(&self) -> &'static str {
        REASON_INVALID_TIME_ZONE
    }

    /// What is wrong and the fix, without the field path.
    pub fn message(&self) -> String {
        let mut message = format!(
            "{:?} is not a time zone this operator knows; use an IANA name such as Europe/Berlin",
            self.name
        );
        if self.no_database {
            message.push_str(
                " (the operator found no time zone database, so only UTC works: \
                 give its container /usr/share/zoneinfo)",
            );
        }
        message
    }
}

/// The one time zone check every scheduled kind uses: resolves `name` (the value of the field
/// at `field`) in the operator's time zone database. `UTC` always resolves, even without a
/// database.
pub fn time_zone(field: &str, name: &str) -> Result<TimeZone, UnknownTimeZone> {
    let db = jiff::tz::db();
    match db.get(name) {
        Ok(tz) => Ok(tz),
        Err(_) if name == "UTC" => Ok(TimeZone::UTC),
        Err(_) => Err(UnknownTimeZone {
            field: field.to_string(),
            name: name.to_string(),
            no_database: db.is_definitively_empty(),
        }),
    }
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
    fn cron_patterns_compile() {
        compiled(CRON_PATTERN);
        for (_, pattern, _) in CRON_FIELDS {
            compiled(pattern);
        }
    }

    #[test]
    fn parse_cron_accepts_five_bounded_fields_and_macros() {
        for ok in [
            "30 2 * * *",
            "0 */6 * * *",
            "0 3 * * MON-FRI",
            "0 3 * * mon-fri",
            "@daily",
            "@annually",
            "@weekly",
            "0 4 1 JAN *",
            "59 23 31 12 7",
            "00 00 01 01 0",
            "0,15,30,45 8-18/2 1-7 */3 SUN,SAT",
            "5-59/15 *  *   *  *",
            "*/59 */23 */31 */12 */7",
            "0 0 29 2 *",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}: {:?}", parse_cron(ok).err());
        }
    }

    #[test]
    fn parse_cron_names_the_field_out_of_range() {
        for (bad, field) in [
            ("60 * * * *", "minute field \"60\""),
            ("0 25 * * *", "hour field \"25\""),
            ("0 0 32 * *", "day-of-month field \"32\""),
            ("0 0 0 * *", "day-of-month field \"0\""),
            ("0 0 * 13 *", "month field \"13\""),
            ("0 0 * * 8", "day-of-week field \"8\""),
            ("0 0 * * Mon", "day-of-week field \"Mon\""),
            ("0 0 L * *", "day-of-month field \"L\""),
            ("0 0 * * 1#2", "day-of-week field \"1#2\""),
            ("*/0 * * * *", "minute field \"*/0\""),
            ("5/15 * * * *", "minute field \"5/15\""),
        ] {
            let err = parse_cron(bad).unwrap_err();
            assert!(err.contains(field), "{bad}: {err}");
            assert!(err.contains("minute hour day-of-month"), "{bad}: {err}");
        }
    }

    #[test]
    fn parse_cron_rejects_wrong_field_counts_and_unknown_macros() {
        for bad in ["* * * *", "0 0 2 * * *", "every day", " 0 2 * * *", "0 2 * * * "] {
            let err = parse_cron(bad).unwrap_err();
            assert!(err.contains("needs 5 fields"), "{bad}: {err}");
        }
        for bad in ["0 0 30 2 *", "0 0 31 4,6 *"] {
            let err = parse_cron(bad).unwrap_err();
            assert!(err.contains("never runs"), "{bad}: {err}");
        }
        for bad in ["@reboot", "@Daily", "@midnight"] {
            let err = parse_cron(bad).unwrap_err();
            assert!(err.contains("not a schedule macro"), "{bad}: {err}");
        }
    }

    #[test]
    fn time_zone_names_the_field_and_gives_the_reason() {
        assert_eq!(time_zone("spec.timeZone", "UTC").unwrap(), TimeZone::UTC);
        let err = time_zone("spec.timeZone", "Europe/Berln").unwrap_err();
        assert_eq!(err.reason(), "InvalidTimeZone");
        assert!(
            err.to_string().starts_with(
                "spec.timeZone: \"Europe/Berln\" is not a time zone this operator knows; \
                 use an IANA name such as Europe/Berlin"
            ),
            "{err}"
        );
        assert!(
            time_zone("spec.timeZone", "Europe/Berlin").is_ok(),
            "this test needs a time zone database (/usr/share/zoneinfo)"
        );
    }

    #[test]
    fn invalid_spec_reason_is_the_shared_specific_one_else_invalid_spec() {
        let mut only_zone = Errors::new();
        crate::crd::common::validate_schedule("spec.", "30 2 * * *", "Europe/Berln", &mut only_zone);
        assert_eq!(only_zone.finish().unwrap_err().reason(), "InvalidTimeZone");
        let mut both = Errors::new();
        crate::crd::common::validate_schedule("spec.", "30 25 * * *", "Europe/Berln", &mut both);
        assert_eq!(both.finish().unwrap_err().reason(), "InvalidSpec");
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
