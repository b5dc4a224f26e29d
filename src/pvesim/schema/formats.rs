//! Named formats (`register_format` in PVE): the validators the operator's calls hit, with the
//! `die` messages of pve-common's JSONSchema.pm (and pve-storage / pve-access-control for the
//! few defined there). `-list` (split on `,;` and whitespace, or `\0`) and `-opt` (empty is fine)
//! suffixes work for every name. Formats not listed here are accepted unchecked.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use regex::Regex;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| match Regex::new(pattern) {
        Ok(r) => r,
        // The patterns are literals below and covered by unit tests.
        Err(_) => Regex::new("$^").unwrap_or_else(|_| unreachable!("empty-match regex compiles")),
    })
}

/// `PVE::Tools::split_list`.
pub(crate) fn split_list(text: &str) -> Vec<String> {
    if text.contains('\0') {
        return text
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks `value` against the named format; `Err` is the Perl `die` text (with its newline).
pub(crate) fn check_named(format: &str, value: &str) -> Result<(), String> {
    if format == "regex" || format == "string" {
        return Ok(());
    }
    if let Some(base) = format.strip_suffix("-list") {
        for item in split_list(value) {
            check_single(base, &item)?;
        }
        return Ok(());
    }
    if let Some(base) = format.strip_suffix("-opt") {
        return if value.is_empty() {
            Ok(())
        } else {
            check_single(base, value)
        };
    }
    check_single(format, value)
}

fn fail(msg: String) -> Result<(), String> {
    Err(format!("{msg}\n"))
}

fn check_single(format: &str, v: &str) -> Result<(), String> {
    static NODE: OnceLock<Regex> = OnceLock::new();
    static CONFIGID: OnceLock<Regex> = OnceLock::new();
    static ID: OnceLock<Regex> = OnceLock::new();
    static VMID: OnceLock<Regex> = OnceLock::new();
    static MAC: OnceLock<Regex> = OnceLock::new();
    static TAG: OnceLock<Regex> = OnceLock::new();
    static BRIDGE: OnceLock<Regex> = OnceLock::new();
    static IFACE: OnceLock<Regex> = OnceLock::new();
    static VOLID: OnceLock<Regex> = OnceLock::new();
    static URLENC: OnceLock<Regex> = OnceLock::new();
    static POOL: OnceLock<Regex> = OnceLock::new();
    static SID: OnceLock<Regex> = OnceLock::new();
    static USERID: OnceLock<Regex> = OnceLock::new();
    static SIZE: OnceLock<Regex> = OnceLock::new();
    let node = || re(&NODE, r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$");
    match format {
        "pve-node" if !node().is_match(v) => fail("value does not look like a valid node name".into()),
        "pve-vmid" if !re(&VMID, r"^[1-9][0-9]{2,8}$").is_match(v) => {
            fail("value does not look like a valid VM ID".into())
        }
        "pve-configid" if !re(&CONFIGID, r"(?i)^[a-z][a-z0-9_-]+$").is_match(v) => {
            fail(format!("invalid configuration ID '{v}'"))
        }
        "pve-storage-id" if !re(&ID, r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$").is_match(v) => {
            fail(format!("storage ID '{v}' contains illegal characters"))
        }
        "pve-bridge-id" if !re(&BRIDGE, r"^[-_.\w\d]+$").is_match(v) => {
            fail(format!("invalid bridge ID '{v}'"))
        }
        "mac-addr" if !re(&MAC, r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$").is_match(v) => {
            fail("value does not look like a valid unicast MAC address".into())
        }
        "pve-tag" if !re(&TAG, r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$").is_match(v) => {
            fail("invalid characters in tag".into())
        }
        "pve-iface" if !re(&IFACE, r"(?i)^[a-z][a-z0-9_]{1,20}([:.]\d+)?$").is_match(v) => {
            fail(format!("invalid network interface name '{v}'"))
        }
        "ipv4" if v.parse::<Ipv4Addr>().is_err() => {
            fail("value does not look like a valid IPv4 address".into())
        }
        "ipv6" if v.parse::<Ipv6Addr>().is_err() => {
            fail("value does not look like a valid IPv6 address".into())
        }
        "ip" if v.parse::<std::net::IpAddr>().is_err() => {
            fail("value does not look like a valid IP address".into())
        }
        "CIDRv4" if !cidr(v, false) => fail("value does not look like a valid IPv4 CIDR network".into()),
        "CIDRv6" if !cidr(v, true) => fail("value does not look like a valid IPv6 CIDR network".into()),
        "CIDR" if !cidr(v, false) && !cidr(v, true) => {
            fail("value does not look like a valid CIDR network".into())
        }
        "pve-ipv4-config" if !(v == "dhcp" || v == "manual" || cidr(v, false)) => {
            fail("value does not look like a valid ipv4 network configuration".into())
        }
        "pve-ipv6-config" if !(matches!(v, "auto" | "dhcp" | "manual") || cidr(v, true)) => {
            fail("value does not look like a valid ipv6 network configuration".into())
        }
        "dns-name" if !dns_name(v) => fail("value does not look like a valid DNS name".into()),
        "address" if v.parse::<std::net::IpAddr>().is_err() && !dns_name(v) => {
            fail(format!("value does not look like a valid address: {v}"))
        }
        "urlencoded" if !re(&URLENC, r"^[-%a-zA-Z0-9_.!~*'()]*$").is_match(v) => {
            fail(format!("invalid urlencoded string: {v}"))
        }
        "disk-size" if !re(&SIZE, r"^\d+(\.\d+)?[KMGT]?$").is_match(v) => {
            fail(format!("value does not look like a valid disk size: {v}"))
        }
        "pve-startup-order" if !startup_order(v) => fail("unable to parse startup options".into()),
        "pve-task-status-type"
            if !matches!(
                v.to_ascii_lowercase().as_str(),
                "ok" | "error" | "warning" | "unknown"
            ) =>
        {
            fail(format!("invalid status '{v}'"))
        }
        // pve-storage: PVE::Storage::parse_volume_id
        "pve-volume-id" if !re(&VOLID, r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]:.+$").is_match(v) => {
            fail(format!("unable to parse volume ID '{v}'"))
        }
        // pve-access-control: pool names and user ids
        "pve-poolid" if !re(&POOL, r"^[A-Za-z0-9.\-_]+$").is_match(v) => {
            fail(format!("pool name '{v}' contains invalid characters"))
        }
        "pve-userid" if !re(&USERID, r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$").is_match(v) => {
            fail(format!("value '{v}' does not look like a valid user name"))
        }
        "pve-tokenid" if crate::pvesim::auth::split_tokenid(v).is_none() => {
            fail(format!("value '{v}' does not look like a valid token ID"))
        }
        // pve-ha-manager: `vm:100`, `ct:101` or a bare VMID
        "pve-ha-resource-or-vm-id" if !re(&SID, r"^(?:(?:vm|ct):)?[1-9][0-9]{2,8}$").is_match(v) => {
            fail(format!("unable to parse service id '{v}'"))
        }
        "pve-storage-content" if !STORAGE_CONTENT.contains(&v) => fail(format!("invalid content type '{v}'")),
        _ => Ok(()),
    }
}

const STORAGE_CONTENT: &[&str] = &[
    "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none",
];

fn cidr(v: &str, v6: bool) -> bool {
    let Some((addr, bits)) = v.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    if v6 {
        addr.parse::<Ipv6Addr>().is_ok() && bits > 7 && bits <= 128
    } else {
        addr.parse::<Ipv4Addr>().is_ok() && bits > 7 && bits <= 32
    }
}

fn dns_name(v: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !v.is_empty() && v.split('.').all(label_ok)
}

fn startup_order(v: &str) -> bool {
    !v.is_empty()
        && v.split(',').filter(|p| !p.trim().is_empty()).all(|p| {
            let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            num(p)
                || p.strip_prefix("order=").is_some_and(num)
                || p.strip_prefix("up=").is_some_and(num)
                || p.strip_prefix("down=").is_some_and(num)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_formats_accept_good_and_reject_bad_with_pve_messages() {
        assert!(check_named("pve-node", "pve-1").is_ok());
        assert_eq!(
            check_named("pve-node", "pve_1"),
            Err("value does not look like a valid node name\n".into())
        );
        assert_eq!(check_named("pve-vmid-list", "100,101 102"), Ok(()));
        assert_eq!(
            check_named("pve-configid", "1abc"),
            Err("invalid configuration ID '1abc'\n".into())
        );
        assert_eq!(
            check_named("pve-storage-id", "local-"),
            Err("storage ID 'local-' contains illegal characters\n".into())
        );
        assert_eq!(check_named("pve-tag-list", "prod;web"), Ok(()));
        assert_eq!(
            check_named("pve-tag-list", "prod;we b!"),
            Err("invalid characters in tag\n".into())
        );
        assert_eq!(
            check_named("pve-volume-id", "local:backup/vzdump-qemu-100.vma.zst"),
            Ok(())
        );
        assert_eq!(
            check_named("pve-volume-id", "nocolon"),
            Err("unable to parse volume ID 'nocolon'\n".into())
        );
        assert!(check_named("mac-addr", "BC:24:11:00:00:01").is_ok());
        assert!(check_named("mac-addr", "01:00:00:00:00:01").is_err());
        assert!(check_named("dns-name", "web-1.example.org").is_ok());
        assert!(check_named("dns-name", "-web").is_err());
        assert!(check_named("pve-startup-order", "order=1,up=30").is_ok());
        assert!(check_named("pve-storage-content-list", "backup,images").is_ok());
        assert!(check_named("pve-node-opt", "").is_ok());
        assert!(check_named("some-unknown-format", "anything").is_ok());
        assert_eq!(split_list("a\0b c"), vec!["a", "b c"]);
    }
}
