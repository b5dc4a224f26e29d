//! Guest naming patterns such as `pve-{node}-{type}-{seq:02d}`: checking and rendering.
//!
//! Placeholders: `{node}` (target node), `{type}` (`vm` or `lxc`), `{source}` (name of the
//! guest cloned from), `{vmid}` (the new guest's VMID), `{seq}` (per-node sequence number,
//! starting at one) and `{seq:0Nd}` (the same, zero-padded to N digits, N = 1..9). A pattern
//! must contain `{seq...}` or `{vmid}` so names stay unique.

/// Default naming pattern.
pub const DEFAULT_NAMING_PATTERN: &str = "pve-{node}-{type}-{seq:02d}";
/// Shape of a naming pattern in the CRD schema.
pub const NAMING_PATTERN_PATTERN: &str = r"^([A-Za-z0-9-]|\{(node|type|source|vmid|seq|seq:0[1-9]d)\})+$";
/// CEL rule: the pattern yields unique names.
pub const NAMING_PATTERN_UNIQUE_RULE: &str = "self.contains('{seq') || self.contains('{vmid}')";
/// Message of [`NAMING_PATTERN_UNIQUE_RULE`].
pub const NAMING_PATTERN_UNIQUE_MESSAGE: &str = "namingPattern must contain {seq}, {seq:0Nd} or {vmid} so every guest gets its own name, e.g. pve-{node}-{type}-{seq:02d}";

/// Values substituted into a naming pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameParts<'a> {
    /// Target node name.
    pub node: &'a str,
    /// `vm` or `lxc`.
    pub type_: &'a str,
    /// Name of the source guest.
    pub source: &'a str,
    /// VMID of the new guest.
    pub vmid: i32,
    /// Sequence number (from 1).
    pub seq: u32,
}

enum Token<'p> {
    Text(&'p str),
    Node,
    Type,
    Source,
    Vmid,
    Seq(usize),
}

fn tokenize(pattern: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            tokens.push(Token::Text(rest));
            break;
        };
        if open > 0 {
            tokens.push(Token::Text(&rest[..open]));
        }
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("{pattern:?} has a '{{' without a closing '}}'"))?;
        let name = &rest[open + 1..close];
        tokens.push(match name {
            "node" => Token::Node,
            "type" => Token::Type,
            "source" => Token::Source,
            "vmid" => Token::Vmid,
            "seq" => Token::Seq(1),
            _ => parse_padded_seq(name).ok_or_else(|| {
                format!(
                    "{pattern:?} uses unknown placeholder {{{name}}}; use {{node}}, {{type}}, {{source}}, \
                     {{vmid}}, {{seq}} or {{seq:0Nd}}"
                )
            })?,
        });
        rest = &rest[close + 1..];
    }
    Ok(tokens)
}

fn parse_padded_seq(name: &str) -> Option<Token<'static>> {
    let width = name.strip_prefix("seq:0")?.strip_suffix('d')?;
    match width.parse::<usize>() {
        Ok(w @ 1..=9) => Some(Token::Seq(w)),
        _ => None,
    }
}

/// Renders `pattern` with `parts`.
pub fn render(pattern: &str, parts: &NameParts<'_>) -> Result<String, String> {
    let mut out = String::new();
    for token in tokenize(pattern)? {
        match token {
            Token::Text(t) => out.push_str(t),
            Token::Node => out.push_str(parts.node),
            Token::Type => out.push_str(parts.type_),
            Token::Source => out.push_str(parts.source),
            Token::Vmid => out.push_str(&parts.vmid.to_string()),
            Token::Seq(width) => out.push_str(&format!("{:0width$}", parts.seq)),
        }
    }
    Ok(out)
}

/// Checks a pattern: known placeholders, unique names, and that names rendered for the given
/// nodes (worst case: longest values) are valid Proxmox guest names (DNS labels, at most 63
/// characters).
pub fn check_pattern(pattern: &str, nodes: &[&str]) -> Result<(), String> {
    let tokens = tokenize(pattern)?;
    if !tokens.iter().any(|t| matches!(t, Token::Seq(_) | Token::Vmid)) {
        return Err(NAMING_PATTERN_UNIQUE_MESSAGE.to_string());
    }
    let longest_node = nodes.iter().copied().max_by_key(|n| n.len()).unwrap_or("pve1");
    let sample = NameParts {
        node: longest_node,
        type_: "lxc",
        source: "template",
        vmid: 999_999_999,
        seq: 1,
    };
    let name = render(pattern, &sample)?;
    if !super::validation::is_dns_label(&name) {
        return Err(format!(
            "{pattern:?} renders names like {name:?}, which Proxmox rejects: use letters, digits and '-', \
             no '-' at either end, at most 63 characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(seq: u32) -> NameParts<'static> {
        NameParts {
            node: "node-02",
            type_: "vm",
            source: "db",
            vmid: 201,
            seq,
        }
    }

    #[test]
    fn render_default_pattern_pads_sequence() {
        assert_eq!(
            render(DEFAULT_NAMING_PATTERN, &parts(3)).unwrap(),
            "pve-node-02-vm-03"
        );
        assert_eq!(
            render(DEFAULT_NAMING_PATTERN, &parts(123)).unwrap(),
            "pve-node-02-vm-123"
        );
        assert_eq!(render("{source}-{vmid}", &parts(1)).unwrap(), "db-201");
        assert_eq!(render("x{seq}", &parts(7)).unwrap(), "x7");
    }

    #[test]
    fn check_pattern_rejects_unknown_placeholders_and_non_unique_patterns() {
        assert!(check_pattern(DEFAULT_NAMING_PATTERN, &["pve1"]).is_ok());
        assert!(check_pattern("web-{seq:05d}", &[]).is_ok());
        assert!(
            check_pattern("pve-{host}-{seq}", &[])
                .unwrap_err()
                .contains("unknown placeholder {host}")
        );
        assert!(
            check_pattern("pve-{node}", &[])
                .unwrap_err()
                .contains("must contain {seq}")
        );
        assert!(
            check_pattern("pve-{seq:00d}", &[])
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            check_pattern("pve-{seq", &[])
                .unwrap_err()
                .contains("without a closing")
        );
        assert!(
            check_pattern("{seq}-", &[])
                .unwrap_err()
                .contains("Proxmox rejects")
        );
        let long = "n".repeat(60);
        assert!(
            check_pattern(DEFAULT_NAMING_PATTERN, &[long.as_str()])
                .unwrap_err()
                .contains("at most 63")
        );
    }
}
